# couic: `make run` starts a demo, `make test` runs every check CI runs.
# Both install what a fresh Debian lacks first (`make deps`, needs root).

# Build: clang, libelf, zlib, kernel UAPI headers. Tests: iproute2 (netns,
# veth). Bench: iptables + ipset for the comparison. nftables, nginx and
# openssl serve the API tests; python3 and python3-venv hold schemathesis;
# clang-format checks the C style. Packages:
# dpkg-dev (cargo-deb's dependency lookup); their test: mmdebstrap and
# debian-archive-keyring (the throw-away root), lintian, strace, systemd
# (systemd-analyze), vagrant and vagrant-libvirt (vagrant validate),
# prometheus (promtool); the fleet tests and bench: nats-server.
APT_PACKAGES := clang llvm libelf-dev zlib1g-dev pkg-config make gcc linux-libc-dev \
	iproute2 iptables ipset nftables nginx openssl python3 python3-venv clang-format util-linux \
	iputils-ping dpkg-dev mmdebstrap debian-archive-keyring lintian strace systemd vagrant vagrant-libvirt \
	prometheus nats-server
APT_OPTIONAL := bpftool
# Schemathesis (tests/api_schemathesis.rs) runs from a virtualenv of its own
# under target/, at this exact version, installed with pip from PyPI.
SCHEMATHESIS_VERSION := 4.32.5
SCHEMATHESIS_VENV := target/schemathesis
PYTHON ?= python3

C_SOURCES := $(wildcard bpf/*.c bpf/*.h include/*.h bench/bpf/*.c)
CARGO ?= cargo
CONFIG ?=

.PHONY: deps apt-deps python-deps build run test test-packages lint fmt bench man deb clean-run

deps: apt-deps python-deps

apt-deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "missing packages:$$missing (run make deps as root on Debian)" >&2; exit 1; \
	fi; \
	echo "installing:$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	for p in $(APT_OPTIONAL); do \
		apt-cache show $$p >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends $$p >/dev/null || true; \
	done

python-deps:
	@$(SCHEMATHESIS_VENV)/bin/schemathesis --version 2>/dev/null | grep -qx "schemathesis, version $(SCHEMATHESIS_VERSION)" || { \
		echo "installing schemathesis $(SCHEMATHESIS_VERSION) into $(SCHEMATHESIS_VENV)"; \
		$(PYTHON) -m venv $(SCHEMATHESIS_VENV) && \
		$(SCHEMATHESIS_VENV)/bin/pip install -q --disable-pip-version-check "schemathesis==$(SCHEMATHESIS_VERSION)"; }

build: deps
	$(CARGO) build --workspace

# `make run` alone: a demo namespace, veth, working directory and config,
# removed on Ctrl-C. `make run CONFIG=/etc/couic/couic.toml`: that config.
run: build
ifeq ($(CONFIG),)
	./scripts/with-bpffs.sh ./scripts/demo.sh
else
	./target/debug/couic -c $(CONFIG)
endif

lint:
	$(CARGO) fmt --all --check
	clang-format --dry-run --Werror $(C_SOURCES)
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# couic pins its links in bpffs, which systemd mounts at boot: the tests,
# the demo and the bench run with it mounted, mounted only for them on a
# machine that booted without it (scripts/with-bpffs.sh).
test: deps lint
	./scripts/with-bpffs.sh $(CARGO) test --workspace
	$(MAKE) test-packages

# Builds both packages, then installs, runs, upgrades and purges them in a
# throw-away Debian root; lintian, the units' scores, the Vagrant files and
# the Prometheus rules too (see tests/packages.sh).
test-packages: deb
	./tests/packages.sh

# Man pages of couicctl, generated from its command-line definitions.
man:
	$(CARGO) run -q -p couicctl -- man target/man

# The Debian packages couic and couic-report, into target/debian/. One
# release build of the three binaries and couicctl's man pages and
# completions, then cargo-deb packs each package without building again.
CARGO_DEB_VERSION := 3.8.0
DEB_ASSETS := target/deb-assets

deb: deps
	@command -v cargo-deb >/dev/null || \
		$(CARGO) install --locked --version $(CARGO_DEB_VERSION) cargo-deb
	$(CARGO) build --release -p couic -p couicctl -p couic-report
	rm -rf $(DEB_ASSETS)
	mkdir -p $(DEB_ASSETS)/completions
	./target/release/couicctl man $(DEB_ASSETS)/man
	./target/release/couicctl completions bash >$(DEB_ASSETS)/completions/couicctl
	./target/release/couicctl completions zsh >$(DEB_ASSETS)/completions/_couicctl
	./target/release/couicctl completions fish >$(DEB_ASSETS)/completions/couicctl.fish
	$(CARGO) deb --no-build -p couic
	$(CARGO) deb --no-build -p couic-report

# Formats Rust and C in place.
fmt:
	$(CARGO) fmt --all
	clang-format -i $(C_SOURCES)

# Not part of `make test`: takes several minutes and wants an idle machine.
bench: deps
	$(CARGO) build --release -p couic-bench
	./scripts/with-bpffs.sh ./target/release/couic-bench --write BENCHMARKS.md
