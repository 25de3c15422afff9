//! Compiles `bpf/couic.bpf.c` and generates its skeleton into OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/couic.bpf.c";
const HEADERS: &[&str] = &["bpf/parsing.h", "include/couic.h"];

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch_include = format!("-I/usr/include/{}-linux-gnu", env::consts::ARCH);
    SkeletonBuilder::new()
        .source(SRC)
        .clang_args(["-Iinclude", "-Ibpf", arch_include.as_str(), "-O2", "-Wall"])
        .build_and_generate(out.join("couic.skel.rs"))?;
    println!("cargo:rerun-if-changed={SRC}");
    for header in HEADERS {
        println!("cargo:rerun-if-changed={header}");
    }
    Ok(())
}
