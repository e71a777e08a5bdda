# The front door. `make run` is the main job; `make test` runs every test.
#
#   make run        install what is missing, build, boot Debian's kernel in QEMU, load the module,
#                   run the demonstration scenario (qemu-tests/demo.scn) showing `status` while
#                   the sync threads work, then sync volumes the CLI made (virtio disks) with the
#                   module's threads, `status` shown meanwhile, unload, halt; the host then
#                   checks the volumes (fsck, export against the master's tree)
#   make test       cargo tests (and tests/scale.rs's 10^6 inodes in release mode, about a
#                   minute and 3.5 GB) + format/lint checks + the kernel build checks + the QEMU suite
#   make kmod       build target/kmod/hammer2_synchro.ko (installs headers, Rust target, cbindgen)
#   make qemu-test  only the QEMU suite (qemu-tests/run --help for its options)
#   make qemu-test-negative  the suite must fail when a kernel WARNING is in the log
#   make qemu-test-debug  the QEMU suite on the debug kernel (lockdep, KASAN, kmemleak)
#   make loom       model-check the thread protocol with loom (own target dir, release)
#   make header     regenerate ffi/include/hammer2_synchro.h with cbindgen
#   make build      the userland CLI, target/release/hammer2-synchro
#   make fixtures-test  the volume reader on the real HAMMER2 volumes of ../shared/fixtures/hammer2
#                   (not part of `make test`: a fresh clone has no fixtures; .ci/run calls it
#                   when the folder is there)
SHELL := /bin/bash
CARGO ?= cargo
KTARGET := x86_64-unknown-none
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build run test cargo-test loom lint kernel-target kmod header header-check qemu-test qemu-test-negative qemu-test-debug clean-kmod fixtures-test

all: build

build:
	$(CARGO) build --release

run:
	qemu-tests/run --demo qemu-tests/demo.scn --demo-volumes

test: cargo-test loom lint kmod qemu-test qemu-test-negative qemu-test-debug

cargo-test:
	$(CARGO) test --workspace
	$(CARGO) test --release --test scale

# Every interleaving of requester and sync thread, and of concurrent requesters; the original's
# non-interlocked idle sleep must be caught (src/thread/loom.rs).
loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test --release --lib thread::loom

lint: kernel-target
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build -p hammer2-synchro --target $(KTARGET)

# MANIFEST reproduced from each image, every check code verified, damaged copies refused
# (tests/fixtures.rs); the images are unpacked with zstd into a temporary directory.
fixtures-test:
	@command -v zstd >/dev/null || (apt-get update -qq && apt-get install -y -qq zstd)
	H2_FIXTURES=$${H2_FIXTURES:-$(CURDIR)/../shared/fixtures/hammer2} \
		$(CARGO) test --features fixtures --test fixtures
	H2_FIXTURES=$${H2_FIXTURES:-$(CURDIR)/../shared/fixtures/hammer2} \
		$(CARGO) test -p hammer2-synchro-cli --features fixtures --test export_fixtures

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

# The suite's negative control: a kernel WARNING in the console log must fail the run.
qemu-test-negative:
	qemu-tests/negative-control

# The QEMU suite on the debug kernel (lockdep, KASAN, kmemleak, ...): builds that kernel from
# Debian's linux-source the first time (cached, see qemu-tests/debug-kernel/build) and the module
# against it; then its negative control (a module whose every bad act must be reported).
qemu-test-debug:
	qemu-tests/run --debug-kernel
	qemu-tests/debug-kernel/negative-control

clean-kmod:
	rm -rf target/kmod

# ---- Benchmark (owned by the bench crate, bench/) ----
#   make bench         the kernel round trips in QEMU (as bench-kernel), then the userland
#                      bench (release build, ~10 min): regenerates BENCHMARKS.md and
#                      docs/bench-resync.svg, ends with one `target ...` line per goal
#   make bench-quick   the userland bench at smoke-test sizes, report written under $$TMPDIR
#   make bench-kernel  only the kernel round trips, pool lock and store bytes per chain
#                      (qemu-tests/run --bench); a successful run
#                      leaves its output in target/bench-kernel.txt for the report
.PHONY: bench bench-quick bench-kernel rsync-dep

rsync-dep:
	@bash -c '. kmod/linux/deps.sh && h2s_apt_install rsync'

# The bench crate's tests resync real files with rsync too.
cargo-test: rsync-dep

bench: rsync-dep
	@$(MAKE) --no-print-directory bench-kernel || \
		echo "bench: the kernel bench failed; kernel_round_trips is reported as not measured"
	$(CARGO) run --release -p hammer2-synchro-bench --

bench-quick: rsync-dep
	$(CARGO) run --release -p hammer2-synchro-bench -- --quick

bench-kernel:
	@mkdir -p target && rm -f target/bench-kernel.txt
	set -o pipefail; qemu-tests/run --bench | tee target/bench-kernel.tmp
	@mv target/bench-kernel.tmp target/bench-kernel.txt
