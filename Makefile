# The front door. `make run` is the main job; `make test` runs every test.
#
#   make run        install what is missing, build, boot Debian's kernel in QEMU, load the module,
#                   run the demonstration scenario (qemu-tests/demo.scn) showing `status` while
#                   the sync threads work, unload
#   make test       cargo tests + format/lint checks + the kernel build checks + the QEMU suite
#   make kmod       build target/kmod/hammer2_synchro.ko (installs headers, Rust target, cbindgen)
#   make qemu-test  only the QEMU suite (qemu-tests/run --help for its options)
#   make header     regenerate ffi/include/hammer2_synchro.h with cbindgen
#   make build      the userland CLI, target/release/hammer2-synchro
SHELL := /bin/bash
CARGO ?= cargo
KTARGET := x86_64-unknown-none
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build run test cargo-test lint kernel-target kmod header header-check qemu-test clean-kmod

all: build

build:
	$(CARGO) build --release

run:
	qemu-tests/run --demo qemu-tests/demo.scn

test: cargo-test lint kmod qemu-test

cargo-test:
	$(CARGO) test --workspace

lint: kernel-target
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build -p hammer2-synchro --target $(KTARGET)

kernel-target:
	@rustup target list --installed | grep -qx $(KTARGET) || rustup target add $(KTARGET)

kmod:
	kmod/linux/build

header:
	kmod/linux/header-check --write

header-check:
	kmod/linux/header-check

qemu-test:
	qemu-tests/run --no-build

clean-kmod:
	rm -rf target/kmod
