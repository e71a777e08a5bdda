//! The C ABI of the HAMMER2 synchronizer core, for kernel hosts.
//!
//! A kernel links this crate as a static library (`x86_64-unknown-none`, static relocations, fat
//! LTO) and talks to it only through `include/hammer2_synchro.h`, which cbindgen generates from
//! this crate. The direction of every call is explicit:
//!
//! - **imports**: the host fills an [`ops::H2sHostOps`] table of C functions (word sleep/wake,
//!   chain locks, kthreads, clock, log, panic, the pool lock, block I/O) and passes it to
//!   [`api::h2s_init`] with the memory pool the core's heap lives in; [`host::KernelHost`]
//!   implements the core's porting surface on that table, [`block::HostDev`] the volume code's
//!   block device;
//! - **exports**: the `h2s_*` functions in [`api`] (clusters by handle, thread operations,
//!   scenarios, status, self-tests, volume commands), plus [`api::h2s_thread_main`], the body
//!   every thread the core spawns runs. They only convert raw arguments; what they do is in
//!   [`cmd`], which the test console [`ctl`] (`h2s_ctl`) shares, and [`volcmd`].
//!
//! On the kernel target the crate is `no_std`: the global allocator is the bounded pool of
//! [`pool`], and a panic ends in the host's panic import. Host builds (tests) use std.
#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

extern crate alloc;

pub mod api;
pub mod bench;
pub mod bench_memory;
pub mod block;
pub mod buf;
pub mod cmd;
pub mod ctl;
pub mod handles;
pub mod host;
pub mod hostcheck;
pub mod ops;
pub mod pool;
pub mod volclaim;
pub mod volcmd;
pub mod volread;
pub mod volsync;

#[cfg(target_os = "none")]
mod kernel_rt;

#[cfg(test)]
mod testhost;
