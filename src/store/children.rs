//! A chain's children: a block table sorted by key, with non-overlapping key ranges.
//!
//! Encapsulated so a later version can turn it into a radix tree of indirect blocks without
//! touching the callers (which only ask for "the first child overlapping a key range").
//!
//! Stored as a sorted list of bounded chunks, so an insert or removal at any key moves at most
//! one chunk's entries (a directory of a million names is built in any key order in linear-ish
//! time), and every allocation is fallible and made before anything changes.

use alloc::vec::Vec;

use super::ChainId;
use crate::{Error, Result};

/// Entries per chunk before it splits in two.
const CHUNK_MAX: usize = 512;

/// The last key of the range `key`/`keybits` (as [`crate::media::Blockref::key_end`]).
fn range_end(key: u64, keybits: u8) -> u64 {
    crate::media::Blockref::new(0, key, keybits).key_end()
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: u64,
    end: u64,
    id: ChainId,
}

/// The sorted children of one chain.
#[derive(Debug, Default)]
pub(crate) struct Children {
    /// Non-empty chunks, sorted and non-overlapping across chunks.
    chunks: Vec<Vec<Entry>>,
    len: usize,
}

impl Children {
    /// Index of the first chunk whose last entry ends at or after `key` (may be `chunks.len()`).
    fn chunk_for(&self, key: u64) -> usize {
        self.chunks
            .partition_point(|c| c.last().is_some_and(|e| e.end < key))
    }

    /// The first child whose range overlaps `beg ..= end`, with its key.
    pub(crate) fn first_overlapping(&self, beg: u64, end: u64) -> Option<(u64, ChainId)> {
        // Ranges do not overlap and are sorted, so their ends are sorted too.
        let chunk = self.chunks.get(self.chunk_for(beg))?;
        let e = chunk.get(chunk.partition_point(|e| e.end < beg))?;
        (e.key <= end).then_some((e.key, e.id))
    }

    /// Add a child covering `key`/`keybits`. `Exists` if the range overlaps a present child.
    pub(crate) fn insert(&mut self, key: u64, keybits: u8, id: ChainId) -> Result<()> {
        let end = range_end(key, keybits);
        if self.first_overlapping(key, end).is_some() {
            return Err(Error::Exists);
        }
        let entry = Entry { key, end, id };
        if self.chunks.is_empty() {
            let mut c = Vec::new();
            c.try_reserve(8)?;
            self.chunks.try_reserve(1)?;
            c.push(entry);
            self.chunks.push(c);
            self.len = 1;
            return Ok(());
        }
        // Past the last chunk's end: it goes at the end of the last chunk.
        let ci = self.chunk_for(key).min(self.chunks.len() - 1);
        let full = self.chunks[ci].len() >= CHUNK_MAX;
        // Reserve everything first, so a failure changes nothing.
        let mut upper = Vec::new();
        if full {
            upper.try_reserve(CHUNK_MAX)?;
            self.chunks.try_reserve(1)?;
        }
        self.chunks[ci].try_reserve(1)?;
        let chunk = &mut self.chunks[ci];
        let pos = chunk.partition_point(|e| e.end < key);
        chunk.insert(pos, entry);
        if full {
            let mid = chunk.len() / 2;
            upper.extend(chunk.drain(mid..));
            self.chunks.insert(ci + 1, upper);
        }
        self.len += 1;
        Ok(())
    }

    /// The chunk and position of the entry with exactly `key`.
    fn find(&self, key: u64) -> Option<(usize, usize)> {
        let ci = self.chunk_for(key);
        let i = self
            .chunks
            .get(ci)?
            .binary_search_by(|e| e.key.cmp(&key))
            .ok()?;
        Some((ci, i))
    }

    /// Remove the child with exactly this key; its id, if it was present.
    pub(crate) fn remove(&mut self, key: u64) -> Option<ChainId> {
        let (ci, i) = self.find(key)?;
        let chunk = &mut self.chunks[ci];
        let e = chunk.remove(i);
        if chunk.is_empty() {
            self.chunks.remove(ci);
        }
        self.len -= 1;
        Some(e.id)
    }

    /// Change the range of the entry at `key` to `keybits` (after a replace copied keybits).
    pub(crate) fn set_keybits(&mut self, key: u64, keybits: u8) -> Result<()> {
        let (ci, i) = self.find(key).ok_or(Error::NotFound)?;
        let end = range_end(key, keybits);
        let next = match self.chunks[ci].get(i + 1) {
            Some(n) => Some(n.key),
            None => self
                .chunks
                .get(ci + 1)
                .and_then(|c| c.first())
                .map(|n| n.key),
        };
        if next.is_some_and(|n| n <= end) {
            return Err(Error::Exists);
        }
        self.chunks[ci][i].end = end;
        Ok(())
    }

    /// The first child, if any.
    pub(crate) fn first(&self) -> Option<ChainId> {
        self.chunks.first().and_then(|c| c.first()).map(|e| e.id)
    }

    /// Number of children.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn id(i: u32) -> ChainId {
        ChainId { idx: i, gen: 0 }
    }

    #[test]
    fn overlap_lookup_and_order() {
        let mut c = Children::default();
        c.insert(0x20000, 16, id(2)).unwrap();
        c.insert(0, 16, id(0)).unwrap();
        c.insert(0x10000, 16, id(1)).unwrap();
        assert_eq!(c.insert(0x10005, 0, id(9)), Err(Error::Exists));
        assert_eq!(c.first_overlapping(0, u64::MAX), Some((0, id(0))));
        assert_eq!(
            c.first_overlapping(0x1ffff, u64::MAX),
            Some((0x10000, id(1)))
        );
        assert_eq!(
            c.first_overlapping(0x20000, 0x20000),
            Some((0x20000, id(2)))
        );
        assert_eq!(c.first_overlapping(0x30000, u64::MAX), None);
        assert_eq!(c.remove(0x10000), Some(id(1)));
        assert_eq!(c.first_overlapping(0x10000, 0x1ffff), None);
        assert_eq!(c.len(), 2);
        assert_eq!(c.first(), Some(id(0)));
        assert_eq!(c.set_keybits(0, 20), Err(Error::Exists));
        c.set_keybits(0, 8).unwrap();
        assert_eq!(c.first_overlapping(0x100, 0x100), None);
        assert_eq!(c.first_overlapping(0xff, 0x100), Some((0, id(0))));
    }

    #[test]
    fn many_keys_in_any_order_match_a_model() {
        let mut c = Children::default();
        let mut model = BTreeMap::new();
        let mut x: u64 = 12345;
        for i in 0..20_000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (x >> 20) % 50_000;
            if i % 3 == 2 {
                assert_eq!(c.remove(key).is_some(), model.remove(&key).is_some());
            } else {
                let r = c.insert(key, 0, id(i));
                assert_eq!(r.is_ok(), !model.contains_key(&key));
                if r.is_ok() {
                    model.insert(key, id(i));
                }
            }
            assert_eq!(c.len(), model.len());
        }
        assert!(c.chunks.len() > 2, "chunks split");
        assert!(c
            .chunks
            .iter()
            .all(|ch| !ch.is_empty() && ch.len() <= CHUNK_MAX));
        // A full walk by "first overlapping from the last key + 1" sees exactly the model.
        let mut k = 0;
        let mut seen = Vec::new();
        while let Some((key, i)) = c.first_overlapping(k, u64::MAX) {
            seen.push((key, i));
            k = key + 1;
        }
        assert_eq!(seen, model.into_iter().collect::<Vec<_>>());
    }
}
