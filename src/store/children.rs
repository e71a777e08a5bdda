//! A chain's children: a block table sorted by key, with non-overlapping key ranges.
//!
//! Encapsulated so a later version can turn it into a radix tree of indirect blocks without
//! touching the callers (which only ask for "the first child overlapping a key range").

use alloc::vec::Vec;

use super::ChainId;
use crate::{Error, Result};

/// The last key of the range `key`/`keybits` (as [`crate::media::Blockref::key_end`]).
fn range_end(key: u64, keybits: u8) -> u64 {
    let mut b = crate::media::Blockref::new(0, key, keybits);
    b.key = key;
    b.key_end()
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
    v: Vec<Entry>,
}

impl Children {
    /// The first child whose range overlaps `beg ..= end`, with its key.
    pub(crate) fn first_overlapping(&self, beg: u64, end: u64) -> Option<(u64, ChainId)> {
        // Ranges do not overlap and are sorted, so their ends are sorted too.
        let i = self.v.partition_point(|e| e.end < beg);
        let e = self.v.get(i)?;
        (e.key <= end).then_some((e.key, e.id))
    }

    /// Add a child covering `key`/`keybits`. `Exists` if the range overlaps a present child.
    pub(crate) fn insert(&mut self, key: u64, keybits: u8, id: ChainId) -> Result<()> {
        let end = range_end(key, keybits);
        if self.first_overlapping(key, end).is_some() {
            return Err(Error::Exists);
        }
        self.v.try_reserve(1)?;
        let i = self.v.partition_point(|e| e.end < key);
        self.v.insert(i, Entry { key, end, id });
        Ok(())
    }

    /// Remove the child with exactly this key; its id, if it was present.
    pub(crate) fn remove(&mut self, key: u64) -> Option<ChainId> {
        let i = self.v.binary_search_by(|e| e.key.cmp(&key)).ok()?;
        Some(self.v.remove(i).id)
    }

    /// Re-key the entry of `id` at `key` to a new `keybits` (after a replace copied keybits).
    pub(crate) fn set_keybits(&mut self, key: u64, keybits: u8) -> Result<()> {
        let i = self
            .v
            .binary_search_by(|e| e.key.cmp(&key))
            .map_err(|_| Error::NotFound)?;
        let end = range_end(key, keybits);
        if let Some(n) = self.v.get(i + 1) {
            if n.key <= end {
                return Err(Error::Exists);
            }
        }
        self.v[i].end = end;
        Ok(())
    }

    /// The first child, if any.
    pub(crate) fn first(&self) -> Option<ChainId> {
        self.v.first().map(|e| e.id)
    }

    /// Number of children.
    pub(crate) fn len(&self) -> usize {
        self.v.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
