//! Cluster handles: the C side names clusters by a `u32` that is validated on every call, so a
//! stale, forged or zero handle is an error code, never a wild pointer.
//!
//! A handle is `generation << 8 | (slot + 1)`. A call holds a use count on its slot while it runs
//! (thread operations sleep, so the table's spin lock is never held across them); destroy marks
//! the slot dying, waits for the uses to drain, then drops the cluster.

use alloc::boxed::Box;
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, Ordering};

use hammer2_synchro::cluster::Cluster;
use hammer2_synchro::host::Host;
use hammer2_synchro::{Error, Result};

use crate::host::KERNEL_HOST;

/// Most clusters that may exist at once through the C API.
pub const H2S_MAX_CLUSTERS: usize = 32;

struct Slot {
    generation: u32,
    cluster: Option<Pin<Box<Cluster>>>,
    dying: bool,
}

struct Table {
    slots: [Slot; H2S_MAX_CLUSTERS],
}

static TABLE: spin::Mutex<Table> = spin::Mutex::new(Table {
    slots: [const {
        Slot {
            generation: 0,
            cluster: None,
            dying: false,
        }
    }; H2S_MAX_CLUSTERS],
});

/// Per-slot count of running calls; a word the destroyer sleeps on.
static USERS: [AtomicU32; H2S_MAX_CLUSTERS] = [const { AtomicU32::new(0) }; H2S_MAX_CLUSTERS];

fn split(handle: u32) -> Option<(usize, u32)> {
    let idx = (handle & 0xff) as usize;
    if idx == 0 || idx > H2S_MAX_CLUSTERS {
        return None;
    }
    Some((idx - 1, handle >> 8))
}

/// Register a new cluster; returns its handle, or `Error::Busy` when the table is full.
pub fn insert(cluster: Pin<Box<Cluster>>) -> Result<u32> {
    let mut t = TABLE.lock();
    let (i, slot) = t
        .slots
        .iter_mut()
        .enumerate()
        .find(|(_, s)| s.cluster.is_none() && !s.dying)
        .ok_or(Error::Busy)?;
    slot.cluster = Some(cluster);
    Ok((slot.generation << 8) | (i as u32 + 1))
}

/// A use of a live cluster; the cluster cannot be destroyed while this exists.
pub struct Use {
    idx: usize,
    ptr: *const Cluster,
}

impl Use {
    /// The cluster.
    pub fn cluster(&self) -> &Cluster {
        // SAFETY: the slot's use count is held, so `destroy` waits before dropping the pinned
        // box this points into; the box never moves.
        unsafe { &*self.ptr }
    }
    /// The cluster, pinned (it lives in a `Pin<Box<Cluster>>` until destroyed).
    pub fn pinned(&self) -> Pin<&Cluster> {
        // SAFETY: `ptr` points into the table's `Pin<Box<Cluster>>`, which is never moved out
        // while a use is held (see `cluster`).
        unsafe { Pin::new_unchecked(self.cluster()) }
    }
}

impl Drop for Use {
    fn drop(&mut self) {
        USERS[self.idx].fetch_sub(1, Ordering::AcqRel);
        KERNEL_HOST.wake_word(&USERS[self.idx]);
    }
}

/// Take a use of the cluster named by `handle`; `Error::Invalid` for a bad or stale handle.
pub fn get(handle: u32) -> Result<Use> {
    let (idx, generation) = split(handle).ok_or(Error::Invalid)?;
    let t = TABLE.lock();
    let s = &t.slots[idx];
    match &s.cluster {
        Some(c) if s.generation == generation && !s.dying => {
            USERS[idx].fetch_add(1, Ordering::AcqRel);
            Ok(Use {
                idx,
                ptr: &**c as *const Cluster,
            })
        }
        _ => Err(Error::Invalid),
    }
}

/// Remove the cluster named by `handle`, waiting for running calls on it, and drop it (which
/// stops and joins its threads). `Error::Invalid` for a bad or stale handle.
pub fn destroy(handle: u32) -> Result<()> {
    let (idx, generation) = split(handle).ok_or(Error::Invalid)?;
    {
        let mut t = TABLE.lock();
        let s = &mut t.slots[idx];
        if s.cluster.is_none() || s.generation != generation || s.dying {
            return Err(Error::Invalid);
        }
        s.dying = true;
    }
    drain(idx);
    let cluster = {
        let mut t = TABLE.lock();
        let s = &mut t.slots[idx];
        s.dying = false;
        s.generation = (s.generation + 1) & 0x00ff_ffff;
        s.cluster.take()
    };
    drop(cluster);
    Ok(())
}

fn drain(idx: usize) {
    loop {
        let n = USERS[idx].load(Ordering::Acquire);
        if n == 0 {
            return;
        }
        KERNEL_HOST.sleep_on_word(&USERS[idx], n, None);
    }
}

/// Destroy every remaining cluster (module unload); returns how many there were.
pub fn destroy_all() -> usize {
    let mut n = 0;
    for idx in 0..H2S_MAX_CLUSTERS {
        let handle = {
            let t = TABLE.lock();
            let s = &t.slots[idx];
            if s.cluster.is_none() || s.dying {
                continue;
            }
            (s.generation << 8) | (idx as u32 + 1)
        };
        if destroy(handle).is_ok() {
            n += 1;
        }
    }
    n
}

/// Handles of every live cluster, in slot order, into `out`; returns how many were written.
pub fn live(out: &mut [u32]) -> usize {
    let t = TABLE.lock();
    let mut n = 0;
    for (i, s) in t.slots.iter().enumerate() {
        if s.cluster.is_some() && !s.dying && n < out.len() {
            out[n] = (s.generation << 8) | (i as u32 + 1);
            n += 1;
        }
    }
    n
}
