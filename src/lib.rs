//! hammer2-synchro: DragonFly BSD's HAMMER2 cluster synchronizer as a portable `no_std` core.
//!
//! Layers, bottom up (a module uses only its own layer and those below; `tests/layers.rs`
//! checks it, `docs/ARCHITECTURE.md` draws it):
//! - [`error`], [`mem`], [`text`]: the error type, fallible allocation, and fixed-capacity
//!   messages for reports that must not allocate;
//! - [`host`]: the porting surface, the only thing a kernel must provide;
//! - [`media`]: HAMMER2 on-media types (blockref, inode) and constants;
//! - [`volume`]: a read-only reader of HAMMER2 volumes (today's layout) over a block device;
//! - [`role`]: node roles and node sets;
//! - [`thread`]: the `HAMMER2_THREAD_*` flag word, requester operations and the sync loop;
//! - [`quorum`]: focus selection by a quorum of masters, cluster status words;
//! - [`store`]: the in-memory HAMMER2-shaped node store;
//! - [`sync`]: the per-inode synchronizer (`hammer2_sync_slaves`);
//! - [`cluster`]: up to 8 nodes with roles, frontend changes, sync entry points;
//! - [`scenario`]: the `.scn` language every host runs;
//! - [`testkit`]: the tests every host runs on itself (conformance, protocol, stress);
//! - `userland`: the std host (feature `std`).
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

extern crate alloc;

pub mod cluster;
pub mod error;
pub mod host;
pub mod media;
pub mod mem;
pub mod mount;
pub mod quorum;
pub mod role;
pub mod scenario;
pub mod store;
pub mod sync;
pub mod testkit;
pub mod text;
pub mod thread;
pub mod volume;

#[cfg(feature = "std")]
pub mod userland;

pub use error::{Error, Result};
