# couic: `make run` starts a demo, `make test` runs every test.
# (Minimal version; the full deps/run/bench targets are being written.)
APT_PACKAGES := clang llvm libelf-dev zlib1g-dev pkg-config make gcc linux-libc-dev iproute2

.PHONY: deps build test

deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

build: deps
	cargo build --workspace

test: deps
	cargo test --workspace
