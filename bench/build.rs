//! Compiles the load generator `bpf/gen.bpf.c` and generates its skeleton.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/gen.bpf.c";

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch_include = format!("-I/usr/include/{}-linux-gnu", env::consts::ARCH);
    SkeletonBuilder::new()
        .source(SRC)
        .clang_args([arch_include.as_str(), "-O2", "-Wall"])
        .build_and_generate(out.join("gen.skel.rs"))?;
    println!("cargo:rerun-if-changed={SRC}");
    Ok(())
}
