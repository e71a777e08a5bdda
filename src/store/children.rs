//! A chain's children: a block table sorted by key, with non-overlapping key ranges, plus a
//! radix tree of key-range summaries over it (what the pruned scan compares).
//!
//! Stored as a sorted list of bounded chunks, so an insert or removal at any key moves at most
//! one chunk's entries (a directory of a million names is built in any key order in linear-ish
//! time), and every allocation is fallible and made before anything changes.
//!
//! The summaries play the role of HAMMER2's indirect blocks with their `mirror_tid`: a node of
//! the radix covers the power-of-two aligned key range fixed by the top `4 · level` bits of the
//! key (fan-out 16) and carries a [`RangeSum`] of the children whose *key* lies in it. A node
//! splits into its 16 sub-ranges once it holds more than [`BUCKET`] children; below that, a
//! sub-range's summary is computed from the (at most [`BUCKET`]) entries themselves. The value of
//! a range's summary depends only on the set of children in it, never on the shape of the tree
//! or the order of inserts, so two nodes' summaries of the same range can be compared directly.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::ChainId;
use crate::mem::try_box;
use crate::{Error, Result};

/// Fan-out of the summary radix: one level consumes 4 bits of key.
pub const FANOUT: usize = 16;
/// The deepest level: a level-`l` range covers `2^(64 - 4l)` keys; level 16 is one key.
pub const MAX_LEVEL: u8 = 16;
/// A summary node holding more children than this is split into its sub-ranges.
pub const BUCKET: u64 = 16;

/// The key mask below a level-`level` range's fixed prefix.
fn low_mask(level: u8) -> u64 {
    match level {
        0 => u64::MAX,
        l if l >= MAX_LEVEL => 0,
        l => (1u64 << (64 - 4 * u32::from(l))) - 1,
    }
}

/// The first and last key of the level-`level` range containing `base`.
pub fn range_of(base: u64, level: u8) -> (u64, u64) {
    let m = low_mask(level);
    (base & !m, (base & !m) | m)
}

/// Which of the 16 sub-ranges of its level-`level` range `key` falls in (`level < MAX_LEVEL`).
pub fn digit(key: u64, level: u8) -> usize {
    ((key >> (60 - 4 * u32::from(level.min(MAX_LEVEL - 1)))) & 0xf) as usize
}

/// The summary of the children whose key lies in one key range: their number and a 128-bit
/// multiset hash of their (key, keybits, modify_tid), summed so it can be updated in O(1) by
/// adding or subtracting one child. Equal summaries mean the same children up to a hash
/// collision (two 64-bit mixes summed independently; see `crate::sync::slaves` for the use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeSum {
    /// Children in the range.
    pub count: u64,
    h1: u64,
    h2: u64,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RangeSum {
    /// The summary of the single child `key`/`keybits`/`tid`.
    pub fn leaf(key: u64, keybits: u8, tid: u64) -> RangeSum {
        let a = mix(key ^ 0x9e37_79b9_7f4a_7c15);
        let b = mix(a ^ tid);
        let h1 = mix(b ^ u64::from(keybits).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let h2 = mix(h1 ^ key.rotate_left(29) ^ tid.rotate_left(41) ^ 0xd6e8_feb8_6659_fd93);
        RangeSum { count: 1, h1, h2 }
    }
    /// Add `o`'s children.
    pub fn add(&mut self, o: &RangeSum) {
        self.count = self.count.wrapping_add(o.count);
        self.h1 = self.h1.wrapping_add(o.h1);
        self.h2 = self.h2.wrapping_add(o.h2);
    }
    fn sub(&mut self, o: &RangeSum) {
        self.count = self.count.wrapping_sub(o.count);
        self.h1 = self.h1.wrapping_sub(o.h1);
        self.h2 = self.h2.wrapping_sub(o.h2);
    }
}

/// One node of the summary radix.
#[derive(Debug, Default)]
struct SumNode {
    sum: RangeSum,
    kids: Option<Box<[Option<Box<SumNode>>; FANOUT]>>,
}

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
    keybits: u8,
    tid: u64,
}

impl Entry {
    fn leaf(&self) -> RangeSum {
        RangeSum::leaf(self.key, self.keybits, self.tid)
    }
}

/// The entries whose key lies in `beg ..= end`, in key order.
fn entries_in(chunks: &[Vec<Entry>], beg: u64, end: u64) -> impl Iterator<Item = &Entry> {
    let ci = chunks.partition_point(|c| c.last().is_some_and(|e| e.end < beg));
    chunks
        .get(ci..)
        .unwrap_or(&[])
        .iter()
        .flatten()
        .skip_while(move |e| e.key < beg)
        .take_while(move |e| e.key <= end)
}

/// Split the bucket `node` (the level-`level` range containing `key`) into its sub-ranges.
/// Best effort: on an allocation failure it stays a bucket, which is only slower to query.
fn split(chunks: &[Vec<Entry>], node: &mut SumNode, key: u64, level: u8) {
    let Ok(mut kids) = try_box(<[Option<Box<SumNode>>; FANOUT]>::default()) else {
        return;
    };
    let (beg, end) = range_of(key, level);
    for e in entries_in(chunks, beg, end) {
        let slot = &mut kids[digit(e.key, level)];
        if slot.is_none() {
            match try_box(SumNode::default()) {
                Ok(n) => *slot = Some(n),
                Err(_) => return,
            }
        }
        if let Some(n) = slot.as_deref_mut() {
            n.sum.add(&e.leaf());
        }
    }
    node.kids = Some(kids);
}

/// The sorted children of one chain.
#[derive(Debug, Default)]
pub(crate) struct Children {
    /// Non-empty chunks, sorted and non-overlapping across chunks.
    chunks: Vec<Vec<Entry>>,
    len: usize,
    /// The summary radix's root (level 0: every key).
    sums: SumNode,
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

    /// Add a child covering `key`/`keybits` with modify_tid `tid`. `Exists` if the range
    /// overlaps a present child.
    pub(crate) fn insert(&mut self, key: u64, keybits: u8, tid: u64, id: ChainId) -> Result<()> {
        // The one summary node this insert may need, allocated before anything changes.
        let spare = try_box(SumNode::default())?;
        self.insert_entry(key, keybits, tid, id)?;
        self.sum_add(key, RangeSum::leaf(key, keybits, tid), spare);
        Ok(())
    }

    fn insert_entry(&mut self, key: u64, keybits: u8, tid: u64, id: ChainId) -> Result<()> {
        let end = range_end(key, keybits);
        if self.first_overlapping(key, end).is_some() {
            return Err(Error::Exists);
        }
        let entry = Entry {
            key,
            end,
            id,
            keybits,
            tid,
        };
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
        self.sum_sub(key, e.leaf());
        Some(e.id)
    }

    /// Change the entry at `key` to `keybits` and modify_tid `tid` (after a replace or a TID
    /// stamp). `Exists` (nothing changed) if the new range would overlap the next child.
    pub(crate) fn update(&mut self, key: u64, keybits: u8, tid: u64) -> Result<()> {
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
        let e = &mut self.chunks[ci][i];
        let old = e.leaf();
        (e.end, e.keybits, e.tid) = (end, keybits, tid);
        let new = e.leaf();
        // Same key, same path: every node on it trades the old leaf for the new one.
        let mut node = &mut self.sums;
        let mut level = 0;
        loop {
            node.sum.sub(&old);
            node.sum.add(&new);
            let Some(kids) = node.kids.as_mut() else {
                break;
            };
            match kids[digit(key, level)].as_deref_mut() {
                Some(n) => node = n,
                None => break,
            }
            level += 1;
        }
        Ok(())
    }

    fn sum_add(&mut self, key: u64, leaf: RangeSum, spare: Box<SumNode>) {
        let Children { chunks, sums, .. } = self;
        let mut spare = Some(spare);
        let mut node = sums;
        let mut level = 0u8;
        loop {
            node.sum.add(&leaf);
            if node.kids.is_none() {
                if node.sum.count > BUCKET && level < MAX_LEVEL {
                    split(chunks, node, key, level);
                }
                return;
            }
            let Some(kids) = node.kids.as_mut() else {
                return;
            };
            let slot = &mut kids[digit(key, level)];
            if slot.is_none() {
                // A new, empty sub-range: at most once per insert, so `spare` is there.
                *slot = spare.take();
            }
            match slot.as_deref_mut() {
                Some(n) => node = n,
                None => return,
            }
            level += 1;
        }
    }

    fn sum_sub(&mut self, key: u64, leaf: RangeSum) {
        let mut node = &mut self.sums;
        let mut level = 0u8;
        loop {
            node.sum.sub(&leaf);
            if node.sum.count == 0 {
                node.kids = None;
            }
            let Some(kids) = node.kids.as_mut() else {
                return;
            };
            let d = digit(key, level);
            // A sub-range whose last child this was goes away whole.
            if kids[d].as_ref().map_or(true, |n| n.sum.count <= 1) {
                kids[d] = None;
                return;
            }
            match kids[d].as_deref_mut() {
                Some(n) => node = n,
                None => return,
            }
            level += 1;
        }
    }

    /// The summary of the children whose key lies in the level-`level` range containing `base`.
    pub(crate) fn range_sum(&self, base: u64, level: u8) -> RangeSum {
        let (beg, end) = range_of(base, level);
        let mut node = &self.sums;
        for l in 0..level {
            match node.kids.as_ref() {
                Some(kids) => match kids[digit(base, l)].as_deref() {
                    Some(n) => node = n,
                    None => return RangeSum::default(),
                },
                // A bucket (at most BUCKET children): add up the ones in range.
                None => {
                    let mut s = RangeSum::default();
                    entries_in(&self.chunks, beg, end).for_each(|e| s.add(&e.leaf()));
                    return s;
                }
            }
        }
        node.sum
    }

    /// The summaries of the 16 sub-ranges of the level-`level` range containing `base`
    /// (`level < MAX_LEVEL`).
    pub(crate) fn sub_sums(&self, base: u64, level: u8) -> [RangeSum; FANOUT] {
        let mut out = [RangeSum::default(); FANOUT];
        let (beg, end) = range_of(base, level);
        let mut node = &self.sums;
        let mut l = 0;
        while l <= level {
            match node.kids.as_ref() {
                Some(kids) if l == level => {
                    for (o, k) in out.iter_mut().zip(kids.iter()) {
                        if let Some(n) = k {
                            *o = n.sum;
                        }
                    }
                    return out;
                }
                Some(kids) => match kids[digit(base, l)].as_deref() {
                    Some(n) => node = n,
                    None => return out,
                },
                None => break,
            }
            l += 1;
        }
        for e in entries_in(&self.chunks, beg, end) {
            out[digit(e.key, level)].add(&e.leaf());
        }
        out
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
        c.insert(0x20000, 16, 1, id(2)).unwrap();
        c.insert(0, 16, 1, id(0)).unwrap();
        c.insert(0x10000, 16, 1, id(1)).unwrap();
        assert_eq!(c.insert(0x10005, 0, 1, id(9)), Err(Error::Exists));
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
        assert_eq!(c.update(0, 20, 1), Err(Error::Exists));
        c.update(0, 8, 1).unwrap();
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
                let r = c.insert(key, 0, 7, id(i));
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

    /// Brute force: the summary of the model's children with key in the range.
    fn model_sum(m: &BTreeMap<u64, (u8, u64)>, base: u64, level: u8) -> RangeSum {
        let (beg, end) = range_of(base, level);
        let mut s = RangeSum::default();
        for (&k, &(kb, t)) in m.range(beg..=end) {
            s.add(&RangeSum::leaf(k, kb, t));
        }
        s
    }

    #[test]
    fn range_summaries_match_a_model_and_ignore_history() {
        let mut x: u64 = 99;
        let mut rnd = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 11
        };
        let mut c = Children::default();
        let mut model: BTreeMap<u64, (u8, u64)> = BTreeMap::new();
        // Clustered keys, so deep levels split too.
        let key = |r: u64| ((r % 4) << 62) | (r % 3000);
        for i in 0..30_000u32 {
            let k = key(rnd());
            match i % 4 {
                0 => {
                    c.remove(k);
                    model.remove(&k);
                }
                1 if model.contains_key(&k) => {
                    let t = rnd() % 50;
                    c.update(k, 0, t).unwrap();
                    model.insert(k, (0, t));
                }
                _ => {
                    let t = rnd() % 50;
                    if c.insert(k, 0, t, id(i)).is_ok() {
                        model.insert(k, (0, t));
                    }
                }
            }
            if i % 1000 == 0 {
                for _ in 0..50 {
                    let base = key(rnd());
                    let level = (rnd() % u64::from(MAX_LEVEL)) as u8;
                    assert_eq!(c.range_sum(base, level), model_sum(&model, base, level));
                    let subs = c.sub_sums(base, level);
                    let (beg, _) = range_of(base, level);
                    for (d, s) in subs.iter().enumerate() {
                        let sb = beg | ((d as u64) << (60 - 4 * u32::from(level)));
                        assert_eq!(*s, model_sum(&model, sb, level + 1), "{base:x} {level} {d}");
                    }
                }
            }
        }
        assert!(c.sums.kids.is_some(), "the radix split");
        // The same children inserted in another order summarize identically at every level.
        let mut d = Children::default();
        for (i, (&k, &(kb, t))) in model.iter().rev().enumerate() {
            d.insert(k, kb, t, id(i as u32)).unwrap();
        }
        for _ in 0..500 {
            let base = key(rnd());
            let level = (rnd() % u64::from(MAX_LEVEL + 1)) as u8;
            assert_eq!(c.range_sum(base, level), d.range_sum(base, level));
        }
        // One TID change anywhere changes the summary of every range holding it.
        let (&k, &(kb, t)) = model.iter().nth(model.len() / 2).unwrap();
        let before = d.range_sum(k, 3);
        d.update(k, kb, t + 1).unwrap();
        assert_ne!(d.range_sum(k, 3), before);
        assert_ne!(d.range_sum(0, 0), c.range_sum(0, 0));
    }
}
