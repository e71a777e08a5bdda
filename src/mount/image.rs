//! A volume image in memory, sparse: 64 KiB chunks allocated on their first non-zero write
//! (a chunk never written reads as zeros, and writing zeros there allocates nothing, so
//! newfs's zeroed boot and aux areas cost no memory). What a scenario cluster on volumes
//! puts each node on.

use alloc::vec::Vec;

use crate::volume::BlockDev;
use crate::{Error, Result};

const CHUNK: u64 = 65536;

/// A sparse in-memory block device of a fixed size.
pub struct MemImage {
    size: u64,
    /// (chunk offset, bytes), sorted by offset (a `Vec`, so growing it is fallible).
    chunks: spin::Mutex<Vec<(u64, Vec<u8>)>>,
}

impl MemImage {
    /// An image of `size` bytes, all zeros.
    pub fn new(size: u64) -> MemImage {
        MemImage {
            size,
            chunks: spin::Mutex::new(Vec::new()),
        }
    }

    /// Bytes of memory its chunks hold.
    pub fn resident(&self) -> u64 {
        self.chunks.lock().len() as u64 * CHUNK
    }

    /// Split `off..off + len` into (chunk base, offset in chunk, bytes) pieces.
    fn pieces(off: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize, usize)> {
        let mut done = 0usize;
        core::iter::from_fn(move || {
            if done >= len {
                return None;
            }
            let at = off + done as u64;
            let inner = (at % CHUNK) as usize;
            let n = (CHUNK as usize - inner).min(len - done);
            let piece = (at - at % CHUNK, inner, done, n);
            done += n;
            Some(piece)
        })
    }

    fn in_range(&self, off: u64, len: usize) -> Result<()> {
        match off.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::Io),
        }
    }
}

impl BlockDev for MemImage {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.in_range(off, buf.len())?;
        let chunks = self.chunks.lock();
        for (base, inner, done, n) in MemImage::pieces(off, buf.len()) {
            let dst = &mut buf[done..done + n];
            match find(&chunks, base) {
                Ok(i) => dst.copy_from_slice(&chunks[i].1[inner..inner + n]),
                Err(_) => dst.fill(0),
            }
        }
        Ok(())
    }
    fn write_at(&self, off: u64, buf: &[u8]) -> Result<()> {
        self.in_range(off, buf.len())?;
        for (base, inner, done, n) in MemImage::pieces(off, buf.len()) {
            let src = &buf[done..done + n];
            let mut chunks = self.chunks.lock();
            if let Ok(i) = find(&chunks, base) {
                chunks[i].1[inner..inner + n].copy_from_slice(src);
                continue;
            }
            if src.iter().all(|&b| b == 0) {
                continue;
            }
            drop(chunks);
            // Allocated outside the lock: it may sleep on a kernel host.
            let mut c = Vec::new();
            c.try_reserve_exact(CHUNK as usize)?;
            c.resize(CHUNK as usize, 0);
            c[inner..inner + n].copy_from_slice(src);
            let mut chunks = self.chunks.lock();
            match find(&chunks, base) {
                Ok(i) => chunks[i].1[inner..inner + n].copy_from_slice(src),
                Err(i) => {
                    chunks.try_reserve(1)?;
                    chunks.insert(i, (base, c));
                }
            }
        }
        Ok(())
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// Where chunk `base` is in `chunks` (or would go).
fn find(chunks: &[(u64, Vec<u8>)], base: u64) -> core::result::Result<usize, usize> {
    chunks.binary_search_by_key(&base, |c| c.0)
}
