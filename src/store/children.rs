//! A chain's children: HAMMER2's block table, a radix tree of INDIRECT blocks.
//!
//! The chain itself holds a blockset of [`SET_COUNT`] (4) blockrefs, as an inode does
//! (`u.blockset`). When a fifth child arrives, the table overflows the way
//! `hammer2_chain_create_indirect` handles it: the full table's key range is computed
//! (`hammer2_chain_indkey_normal`: the smallest power-of-two aligned range covering every
//! blockref in it), cut in half, and the half holding more blockrefs moves into a new INDIRECT
//! block covering exactly that half (`key`/`keybits`), which takes its place in the table. An
//! indirect block holds up to [`IND_COUNT`] (512) blockrefs, HAMMER2's largest indirect block
//! (64 KiB of 128-byte blockrefs); one that overflows splits the same way inside itself. So a
//! blockref's range always nests in its parent's, ranges in one table never overlap, and keybits
//! strictly shrink going down (at most 65 levels). An indirect block that loses its last child
//! goes away.
//!
//! Every indirect block carries, as HAMMER2's blockref does, the highest `modify_tid` beneath it,
//! and (see [`RangeSum`]) a summary of the children beneath it: their count and a multiset hash
//! of their (key, keybits, modify_tid). The summary is what the pruned scan compares: it depends
//! only on the set of children in a key range, never on the tree's shape, so two nodes whose
//! trees grew in different orders still compare equal where they hold the same children, and a
//! summary of any key range can be computed on either side (whole indirect blocks inside the
//! range are added as they are; only the blocks straddling its two ends are descended into).
//!
//! Every allocation is fallible and made before anything changes; nothing recurses.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::ChainId;
use crate::media::{self, Blockref, SET_COUNT};
use crate::mem::try_box;
use crate::{Error, Result};

/// Blockrefs in one indirect block: 64 KiB / 128 bytes (`HAMMER2_IND_BYTES_MAX`).
pub const IND_COUNT: usize = 512;
/// Size radix of an indirect block (64 KiB).
pub const IND_RADIX: u8 = 16;
/// Levels of indirect blocks below the blockset, at most (keybits shrink by one at least).
pub const MAX_DEPTH: usize = 65;

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
    /// The summary as it is kept in an indirect blockref's check area (24 bytes, little endian:
    /// count, then the two hash sums).
    pub fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.count.to_le_bytes());
        out[8..16].copy_from_slice(&self.h1.to_le_bytes());
        out[16..].copy_from_slice(&self.h2.to_le_bytes());
        out
    }
    /// The summary kept in an indirect blockref's check area (see [`RangeSum::encode`]).
    pub fn from_bref(b: &Blockref) -> RangeSum {
        let w = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b.check[i..i + 8]);
            u64::from_le_bytes(x)
        };
        RangeSum {
            count: w(0),
            h1: w(8),
            h2: w(16),
        }
    }
}

/// The last key of the range `key`/`keybits` (as [`crate::media::Blockref::key_end`]).
fn range_end(key: u64, keybits: u8) -> u64 {
    if keybits >= 64 {
        u64::MAX
    } else {
        key.saturating_add((1u64 << keybits) - 1)
    }
}

/// Whether `key`/`keybits` is a power-of-two aligned range, as every blockref's is.
fn aligned(key: u64, keybits: u8) -> bool {
    keybits <= 64 && (keybits == 64 || key & ((1u64 << keybits) - 1) == 0)
}

/// A child's entry in the block table.
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

/// A blockset or an indirect block: its blockrefs sorted by key, with non-overlapping ranges.
#[derive(Debug)]
struct Node {
    key: u64,
    keybits: u8,
    /// The highest modify_tid beneath (never lowered by a removal: HAMMER2 modifies the
    /// indirect block in the removing transaction, whose TID is higher still).
    tid: u64,
    /// The summary of every child beneath.
    sum: RangeSum,
    slots: Vec<Slot>,
}

/// One blockref of a table: a child, or an indirect block.
#[derive(Debug)]
enum Slot {
    Leaf(Entry),
    Ind(Box<Node>),
}

impl Slot {
    fn key(&self) -> u64 {
        match self {
            Slot::Leaf(e) => e.key,
            Slot::Ind(n) => n.key,
        }
    }
    fn end(&self) -> u64 {
        match self {
            Slot::Leaf(e) => e.end,
            Slot::Ind(n) => n.end(),
        }
    }
    fn keybits(&self) -> u8 {
        match self {
            Slot::Leaf(e) => e.keybits,
            Slot::Ind(n) => n.keybits,
        }
    }
    fn sum(&self) -> RangeSum {
        match self {
            Slot::Leaf(e) => e.leaf(),
            Slot::Ind(n) => n.sum,
        }
    }
    fn tid(&self) -> u64 {
        match self {
            Slot::Leaf(e) => e.tid,
            Slot::Ind(n) => n.tid,
        }
    }
}

impl Node {
    fn empty(key: u64, keybits: u8, capacity: usize) -> Result<Box<Node>> {
        let mut slots = Vec::new();
        slots.try_reserve_exact(capacity)?;
        try_box(Node {
            key,
            keybits,
            tid: 0,
            sum: RangeSum::default(),
            slots,
        })
    }
    fn end(&self) -> u64 {
        range_end(self.key, self.keybits)
    }
    /// Index of the first blockref whose range ends at or after `key`.
    fn find(&self, key: u64) -> usize {
        self.slots.partition_point(|s| s.end() < key)
    }
    /// The indirect block at `i` if it covers `key ..= end`.
    fn covering(&self, i: usize, key: u64, end: u64) -> Option<&Node> {
        match self.slots.get(i) {
            Some(Slot::Ind(n)) if n.key <= key && n.end() >= end => Some(n),
            _ => None,
        }
    }
    /// Where `key` would be inserted among the blockrefs.
    fn insert_at(&self, key: u64) -> usize {
        self.slots.partition_point(|s| s.key() < key)
    }
}

/// Blockrefs a table at `depth` holds: the inode's blockset at 0, an indirect block below.
fn capacity(depth: usize) -> usize {
    if depth == 0 {
        SET_COUNT
    } else {
        IND_COUNT
    }
}

fn low_mask(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// The key range of the indirect block a full table gets (`hammer2_chain_indkey_normal`): the
/// smallest aligned range covering all its blockrefs, cut in half at its top bit, keeping the
/// half with more blockrefs (so at least half of a full table moves down and room is made).
/// Returns the new block's key and keybits.
fn indkey_normal(slots: &[Slot]) -> (u64, u8) {
    let key = slots.first().map_or(0, Slot::key);
    let (mut bits, mut lo, mut hi) = (0u8, 0usize, 0usize);
    let top = |bits: u8, k: u64| bits > 0 && k & (1u64 << (bits - 1)) != 0;
    for s in slots {
        let mut nbits = bits.max(s.keybits());
        while nbits < 64 && (key ^ s.key()) & !low_mask(nbits) != 0 {
            nbits += 1;
        }
        // A wider range: the keys counted so far all lie in the half `key` lies in.
        if nbits != bits {
            if top(nbits, key) {
                hi += lo;
                lo = 0;
            } else {
                lo += hi;
                hi = 0;
            }
            bits = nbits;
        }
        if top(nbits, s.key()) {
            hi += 1;
        } else {
            lo += 1;
        }
    }
    let bits = bits.saturating_sub(1);
    let mut k = key & !low_mask(bits);
    if bits < 64 {
        if hi > lo {
            k |= 1u64 << bits;
        } else {
            k &= !(1u64 << bits);
        }
    }
    (k, bits)
}

/// How a pruned walk sees one step of a block table (see [`Children::span`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First key of the span.
    pub beg: u64,
    /// Last key of the span.
    pub end: u64,
    /// The summary of this node's children whose key lies in the span.
    pub sum: RangeSum,
    /// The span is one indirect block (it can be descended into), not a run of children.
    pub indirect: bool,
}

/// Children per run a [`Children::span`] returns outside indirect blocks.
pub const RUN: usize = 16;

/// One blockref of a table, as [`Children::visit`] shows it.
#[derive(Debug, Clone, Copy)]
pub enum Visit {
    /// An indirect block's blockref (type INDIRECT, its key range, highest modify_tid beneath,
    /// leaf count, and the summary in the check area).
    Indirect(Blockref),
    /// A child chain.
    Child(ChainId),
}

/// The blockref of an indirect block as it would be written: INDIRECT, 64 KiB, its range, the
/// highest modify_tid beneath, the number of children beneath (`leaf_count`, saturating) and
/// the summary of the children beneath.
fn indirect_bref(n: &Node) -> Blockref {
    let mut b = Blockref::new(media::BREF_TYPE_INDIRECT, n.key, n.keybits);
    b.set_size_radix(IND_RADIX);
    b.modify_tid = n.tid;
    b.mirror_tid = n.tid;
    b.leaf_count = u16::try_from(n.sum.count).unwrap_or(u16::MAX);
    // DEVIATION: HAMMER2 stores the check code of the indirect block's 64 KiB here. This store
    // keeps indirect blocks in memory only, so the check area carries the range summary the
    // pruned scan compares instead (check method NONE).
    b.methods = 0;
    b.check.fill(0);
    b.check[..24].copy_from_slice(&n.sum.encode());
    b
}

/// The sorted children of one chain.
#[derive(Debug)]
pub(crate) struct Children {
    /// The blockset (every key, [`SET_COUNT`] blockrefs).
    root: Node,
    len: usize,
}

impl Default for Children {
    fn default() -> Children {
        Children {
            root: Node {
                key: 0,
                keybits: 64,
                tid: 0,
                sum: RangeSum::default(),
                slots: Vec::new(),
            },
            len: 0,
        }
    }
}

impl Children {
    /// The first child whose range ends at or after `beg`.
    fn first_from(&self, beg: u64) -> Option<&Entry> {
        let mut node = &self.root;
        // The nearest blockref after the path, should the path hold nothing at or after `beg`.
        let mut after: Option<&Slot> = None;
        let first = loop {
            let i = node.find(beg);
            match node.slots.get(i) {
                None => break after,
                Some(Slot::Leaf(e)) => return Some(e),
                Some(s @ Slot::Ind(n)) => {
                    if n.key > beg {
                        break Some(s);
                    }
                    if let Some(s) = node.slots.get(i + 1) {
                        after = Some(s);
                    }
                    node = n;
                }
            }
        };
        // The leftmost child under `first` (indirect blocks are never empty).
        let mut s = first?;
        loop {
            match s {
                Slot::Leaf(e) => return Some(e),
                Slot::Ind(n) => s = n.slots.first()?,
            }
        }
    }

    /// The first child whose range overlaps `beg ..= end`, with its key.
    pub(crate) fn first_overlapping(&self, beg: u64, end: u64) -> Option<(u64, ChainId)> {
        let e = self.first_from(beg)?;
        (e.key <= end).then_some((e.key, e.id))
    }

    /// The table depth (0: the blockset) where a child covering `key ..= end` belongs: below
    /// every indirect block covering it.
    fn target_depth(&self, key: u64, end: u64) -> usize {
        let mut node = &self.root;
        let mut depth = 0;
        while let Some(n) = node.covering(node.find(key), key, end) {
            node = n;
            depth += 1;
        }
        depth
    }

    /// The table at `depth` on the path to `key`.
    fn node_mut(&mut self, key: u64, depth: usize) -> Result<&mut Node> {
        let mut node = &mut self.root;
        for _ in 0..depth {
            let i = node.find(key);
            node = match node.slots.get_mut(i) {
                Some(Slot::Ind(n)) => n,
                _ => return Err(Error::Invalid),
            };
        }
        Ok(node)
    }

    fn node_at(&self, key: u64, depth: usize) -> Result<&Node> {
        let mut node = &self.root;
        for _ in 0..depth {
            node = match node.slots.get(node.find(key)) {
                Some(Slot::Ind(n)) => n,
                _ => return Err(Error::Invalid),
            };
        }
        Ok(node)
    }

    /// Add a child covering `key`/`keybits` (an aligned range, else `Invalid`) with modify_tid
    /// `tid`. `Exists` if the range overlaps a present child.
    pub(crate) fn insert(&mut self, key: u64, keybits: u8, tid: u64, id: ChainId) -> Result<()> {
        if !aligned(key, keybits) {
            return Err(Error::Invalid);
        }
        let end = range_end(key, keybits);
        if self.first_overlapping(key, end).is_some() {
            return Err(Error::Exists);
        }
        let depth = self.target_depth(key, end);
        // Everything this insert needs, allocated before anything changes: room in the target
        // table, or the indirect block its overflow creates.
        let t = self.node_mut(key, depth)?;
        let spare = if t.slots.len() < capacity(depth) {
            t.slots.try_reserve(1)?;
            None
        } else {
            // Room for the blockrefs moving into the new block and the new child; it grows
            // like any table later (a 64 KiB block per overflow would exhaust a kernel pool).
            let (ik, ikb) = indkey_normal(&t.slots);
            let ie = range_end(ik, ikb);
            let moving = t
                .slots
                .iter()
                .filter(|s| s.key() >= ik && s.key() <= ie)
                .count();
            Some(Node::empty(0, 0, moving + 1)?)
        };
        let e = Entry {
            key,
            end,
            id,
            keybits,
            tid,
        };
        self.apply_insert(e, depth, spare)
    }

    /// Insert `e` into the table at `depth`, which has room reserved or is full with `spare`
    /// given (capacity for the blockrefs moving into it and one more): cannot fail once it
    /// starts changing.
    fn apply_insert(&mut self, e: Entry, depth: usize, spare: Option<Box<Node>>) -> Result<()> {
        let t = self.node_at(e.key, depth)?;
        let full = t.slots.len() >= capacity(depth);
        let room = match &spare {
            Some(ind) if full => {
                let (ik, ikb) = indkey_normal(&t.slots);
                let ie = range_end(ik, ikb);
                let moving = t.slots.iter().filter(|s| s.key() >= ik && s.key() <= ie);
                ind.slots.capacity() > moving.count()
            }
            _ => !full && t.slots.capacity() > t.slots.len(),
        };
        if !room {
            return Err(Error::NoMem);
        }
        let leaf = e.leaf();
        let Children { root, len } = self;
        let mut node = root;
        for d in 0..=depth {
            node.sum.add(&leaf);
            node.tid = node.tid.max(e.tid);
            if d == depth {
                break;
            }
            let i = node.find(e.key);
            node = match node.slots.get_mut(i) {
                Some(Slot::Ind(n)) => n,
                _ => return Err(Error::Invalid),
            };
        }
        *len += 1;
        if let (true, Some(mut ind)) = (full, spare) {
            // hammer2_chain_create_indirect: half of the table moves into a new block.
            let (ik, ikb) = indkey_normal(&node.slots);
            let ie = range_end(ik, ikb);
            let a = node.slots.partition_point(|s| s.key() < ik);
            let b = node.slots.partition_point(|s| s.key() <= ie);
            (ind.key, ind.keybits) = (ik, ikb);
            for s in node.slots.drain(a..b) {
                ind.sum.add(&s.sum());
                ind.tid = ind.tid.max(s.tid());
                ind.slots.push(s);
            }
            if e.key >= ik && e.end <= ie {
                ind.sum.add(&leaf);
                ind.tid = ind.tid.max(e.tid);
                let at = ind.insert_at(e.key);
                ind.slots.insert(at, Slot::Leaf(e));
                node.slots.insert(a, Slot::Ind(ind));
            } else {
                node.slots.insert(a, Slot::Ind(ind));
                let at = node.insert_at(e.key);
                node.slots.insert(at, Slot::Leaf(e));
            }
        } else {
            let at = node.insert_at(e.key);
            node.slots.insert(at, Slot::Leaf(e));
        }
        Ok(())
    }

    /// The depth of the table holding the child with exactly `key`, and that child.
    fn locate(&self, key: u64) -> Option<(usize, &Node, Entry)> {
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node.slots.get(node.find(key)) {
                Some(Slot::Leaf(e)) if e.key == key => return Some((depth, node, *e)),
                Some(Slot::Ind(n)) if n.key <= key => {
                    node = n;
                    depth += 1;
                }
                _ => return None,
            }
        }
    }

    /// Remove the child with exactly this key; its id, if it was present.
    pub(crate) fn remove(&mut self, key: u64) -> Option<ChainId> {
        let (depth, _, e) = self.locate(key)?;
        let leaf = e.leaf();
        let Children { root, len } = self;
        let mut node = root;
        for d in 0..=depth {
            node.sum.sub(&leaf);
            let i = node.find(key);
            // The last child beneath an indirect block: the block goes with it.
            let last =
                d == depth || matches!(node.slots.get(i), Some(Slot::Ind(n)) if n.sum.count <= 1);
            if last {
                node.slots.remove(i);
                *len -= 1;
                return Some(e.id);
            }
            node = match node.slots.get_mut(i) {
                Some(Slot::Ind(n)) => n,
                _ => return None,
            };
        }
        None
    }

    /// Change the entry at `key` to `keybits` and modify_tid `tid` (after a replace or a TID
    /// stamp). `Exists` (nothing changed) if the new range would overlap the next child.
    pub(crate) fn update(&mut self, key: u64, keybits: u8, tid: u64) -> Result<()> {
        if !aligned(key, keybits) {
            return Err(Error::Invalid);
        }
        let (depth, holder, old) = self.locate(key).ok_or(Error::NotFound)?;
        let end = range_end(key, keybits);
        if end > old.end && self.first_overlapping(old.end + 1, end).is_some() {
            return Err(Error::Exists);
        }
        let new = Entry {
            end,
            keybits,
            tid,
            ..old
        };
        if end <= holder.end() {
            // Still inside its table: trade the old summary for the new one on the path.
            let (ol, nl) = (old.leaf(), new.leaf());
            let mut node = &mut self.root;
            for d in 0..=depth {
                node.sum.sub(&ol);
                node.sum.add(&nl);
                node.tid = node.tid.max(tid);
                let i = node.find(key);
                match node.slots.get_mut(i) {
                    Some(Slot::Leaf(e)) if d == depth => {
                        *e = new;
                        return Ok(());
                    }
                    Some(Slot::Ind(n)) => node = n,
                    _ => return Err(Error::Invalid),
                }
            }
            return Err(Error::Invalid);
        }
        // A wider range than its indirect block: it moves up to the table covering it, which
        // is on its present path. Room on every table of the path and a spare block first.
        let mut node = &mut self.root;
        for _ in 0..=depth {
            node.slots.try_reserve(1)?;
            let i = node.find(key);
            match node.slots.get_mut(i) {
                Some(Slot::Ind(n)) => node = n,
                _ => break,
            }
        }
        let spare = Node::empty(0, 0, IND_COUNT)?;
        self.remove(key).ok_or(Error::NotFound)?;
        let depth = self.target_depth(key, end);
        self.apply_insert(new, depth, Some(spare))
    }

    /// The summary of the children whose key lies in `beg ..= end`: whole indirect blocks
    /// inside the range as they are, only the (at most two) blocks straddling an end descended.
    pub(crate) fn key_sum(&self, beg: u64, end: u64) -> Result<RangeSum> {
        let mut out = RangeSum::default();
        let mut stack: [Option<&Node>; 4] = [None; 4];
        stack[0] = Some(&self.root);
        let mut sp = 1;
        while sp > 0 {
            sp -= 1;
            let Some(node) = stack[sp].take() else {
                break;
            };
            for s in node.slots.get(node.find(beg)..).unwrap_or(&[]) {
                if s.key() > end {
                    break;
                }
                match s {
                    Slot::Leaf(e) if e.key >= beg => out.add(&e.leaf()),
                    Slot::Leaf(_) => {}
                    Slot::Ind(n) if n.key >= beg && n.end() <= end => out.add(&n.sum),
                    Slot::Ind(n) => {
                        // Only the blocks holding `beg` or `end` straddle: two at a time.
                        *stack.get_mut(sp).ok_or(Error::Invalid)? = Some(n);
                        sp += 1;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The next step of a pruned walk from key `from`, following the path to it. An indirect
    /// block starting at `from` is returned whole unless it covers `open` (a range already
    /// known to differ); one covering `from` otherwise is descended into. Anywhere else the
    /// span is a run from `from` of at most [`RUN`] children, up to the next indirect block or
    /// the end of the table.
    pub(crate) fn span(&self, from: u64, open: Option<(u64, u64)>) -> Span {
        let mut node = &self.root;
        loop {
            let i = node.find(from);
            if let Some(Slot::Ind(n)) = node.slots.get(i) {
                if n.key <= from {
                    let end = n.end();
                    if n.key < from || open.is_some_and(|(b, e)| n.key <= b && end >= e) {
                        node = n;
                        continue;
                    }
                    return Span {
                        beg: n.key,
                        end,
                        sum: n.sum,
                        indirect: true,
                    };
                }
            }
            let (mut sum, mut end, mut run) = (RangeSum::default(), node.end(), 0);
            for s in node.slots.get(i..).unwrap_or(&[]) {
                match s {
                    // Keys after `from` (the first one was not descended into).
                    Slot::Ind(n) => {
                        end = n.key.saturating_sub(1);
                        break;
                    }
                    Slot::Leaf(e) if e.key >= from => {
                        if run == RUN {
                            end = e.key.saturating_sub(1);
                            break;
                        }
                        sum.add(&e.leaf());
                        run += 1;
                    }
                    Slot::Leaf(_) => {}
                }
            }
            return Span {
                beg: from,
                end,
                sum,
                indirect: false,
            };
        }
    }

    /// Every blockref of the table, depth first in key order, with its depth (0: the
    /// blockset).
    pub(crate) fn visit(&self, mut f: impl FnMut(usize, Visit)) -> Result<()> {
        let mut stack: Vec<(&Node, usize)> = Vec::new();
        stack.try_reserve(MAX_DEPTH + 1)?;
        stack.push((&self.root, 0));
        while let Some((node, i)) = stack.pop() {
            let Some(s) = node.slots.get(i) else {
                continue;
            };
            let depth = stack.len();
            crate::mem::try_push(&mut stack, (node, i + 1))?;
            match s {
                Slot::Leaf(e) => f(depth, Visit::Child(e.id)),
                Slot::Ind(n) => {
                    f(depth, Visit::Indirect(indirect_bref(n)));
                    crate::mem::try_push(&mut stack, (n, 0))?;
                }
            }
        }
        Ok(())
    }

    /// The first child, if any.
    pub(crate) fn first(&self) -> Option<ChainId> {
        self.first_from(0).map(|e| e.id)
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

    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 11
        }
    }

    /// Check every structural rule of the table; returns (children, indirect blocks, depth).
    fn check(c: &Children) -> (usize, usize, usize) {
        let (mut leaves, mut inds, mut deepest) = (0, 0, 0);
        let mut stack = vec![(&c.root, 0usize)];
        while let Some((n, depth)) = stack.pop() {
            deepest = deepest.max(depth);
            assert!(n.slots.len() <= capacity(depth), "fan-out at depth {depth}");
            assert!(depth == 0 || !n.slots.is_empty(), "empty indirect block");
            assert!(aligned(n.key, n.keybits));
            let (mut sum, mut tid, mut prev_end) = (RangeSum::default(), 0, None);
            for s in &n.slots {
                // Sorted, non-overlapping, nested in this block's range.
                assert!(prev_end.map_or(true, |p: u64| s.key() > p));
                prev_end = Some(s.end());
                assert!(s.key() >= n.key && s.end() <= n.end());
                sum.add(&s.sum());
                tid = tid.max(s.tid());
                match s {
                    Slot::Leaf(_) => leaves += 1,
                    Slot::Ind(m) => {
                        inds += 1;
                        assert!(m.keybits < n.keybits, "keybits shrink going down");
                        stack.push((m, depth + 1));
                    }
                }
            }
            assert_eq!(sum, n.sum, "summary equals its recomputation");
            assert!(n.tid >= tid, "modify_tid covers every child's");
        }
        assert_eq!(leaves, c.len());
        (leaves, inds, deepest)
    }

    fn model_sum(m: &BTreeMap<u64, (u8, u64)>, beg: u64, end: u64) -> RangeSum {
        let mut s = RangeSum::default();
        for (&k, &(kb, t)) in m.range(beg..=end) {
            s.add(&RangeSum::leaf(k, kb, t));
        }
        s
    }

    #[test]
    fn overlap_lookup_and_order() {
        let mut c = Children::default();
        c.insert(0x20000, 16, 1, id(2)).unwrap();
        c.insert(0, 16, 1, id(0)).unwrap();
        c.insert(0x10000, 16, 1, id(1)).unwrap();
        assert_eq!(c.insert(0x10005, 0, 1, id(9)), Err(Error::Exists));
        assert_eq!(c.insert(0x10005, 4, 1, id(9)), Err(Error::Invalid));
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
        check(&c);
    }

    #[test]
    fn overflow_makes_indirect_blocks_like_hammer2() {
        let mut c = Children::default();
        for i in 0..4u64 {
            c.insert(i << 16, 16, i, id(i as u32)).unwrap();
        }
        assert!(c.root.slots.iter().all(|s| matches!(s, Slot::Leaf(_))));
        // A fifth: the covering range of 0..0x3ffff is keybits 18, halves of 17 bits hold two
        // each; the lower half moves into an indirect block (key 0, keybits 17).
        c.insert(4 << 16, 16, 9, id(4)).unwrap();
        let mut seen = Vec::new();
        c.visit(|d, v| {
            if let Visit::Indirect(b) = v {
                seen.push((d, b.key, b.keybits, b.modify_tid, b.leaf_count));
            }
        })
        .unwrap();
        assert_eq!(seen, vec![(0, 0, 17, 1, 2)]);
        assert_eq!(check(&c), (5, 1, 1));
        // The block is sized to what it holds, not to 512 blockrefs: a kernel's bounded pool
        // holds thousands of small directories.
        match &c.root.slots[0] {
            Slot::Ind(n) => assert!(n.slots.capacity() <= 8, "{}", n.slots.capacity()),
            Slot::Leaf(_) => panic!("expected the indirect block first"),
        }
    }

    #[test]
    fn a_child_outgrowing_its_indirect_block_moves_up() {
        let mut c = Children::default();
        for k in 0..600u64 {
            c.insert(k, 0, 1, id(k as u32)).unwrap();
        }
        c.insert(1 << 40, 0, 1, id(999)).unwrap();
        for k in 1..600u64 {
            c.remove(k).unwrap();
        }
        let (_, _, depth) = check(&c);
        assert!(depth >= 2, "key 0 sits in a small indirect block");
        c.update(0, 12, 5).unwrap();
        assert_eq!(check(&c), (2, 0, 0));
        assert_eq!(c.first_overlapping(4095, 4095), Some((0, id(0))));
        assert_eq!(c.key_sum(0, 10).unwrap(), RangeSum::leaf(0, 12, 5));
        assert_eq!(c.update(0, 41, 5), Err(Error::Exists));
    }

    #[test]
    fn many_keys_in_any_order_match_a_model() {
        let mut rnd = rng(12345);
        let mut c = Children::default();
        let mut model: BTreeMap<u64, (u8, u64)> = BTreeMap::new();
        // Clustered keys of two sizes, so deep levels split and ranges mix.
        let key = |r: u64| {
            (
                ((r % 4) << 62) | ((r >> 8) % 5000) << 16,
                (r % 2) as u8 * 16,
            )
        };
        for i in 0..40_000u32 {
            let (k, kb) = key(rnd());
            match i % 5 {
                0 | 1 => {
                    let r = c.remove(k);
                    assert_eq!(r.is_some(), model.remove(&k).is_some());
                }
                2 if model.contains_key(&k) => {
                    let (t, nkb) = (rnd() % 50, (rnd() % 3) as u8 * 8);
                    let fits = model
                        .range(k + 1..)
                        .next()
                        .map_or(true, |(&n, _)| n > range_end(k, nkb));
                    assert_eq!(c.update(k, nkb, t).is_ok(), fits, "{k:x} {nkb}");
                    if fits {
                        model.insert(k, (nkb, t));
                    }
                }
                _ => {
                    let t = rnd() % 50;
                    let end = range_end(k, kb);
                    let free = model
                        .range(..=end)
                        .next_back()
                        .map_or(true, |(&p, &(pkb, _))| range_end(p, pkb) < k);
                    assert_eq!(c.insert(k, kb, t, id(i)).is_ok(), free);
                    if free {
                        model.insert(k, (kb, t));
                    }
                }
            }
            if i % 2000 == 0 {
                check(&c);
                for _ in 0..50 {
                    let (a, b) = (key(rnd()).0, key(rnd()).0);
                    let (a, b) = (a.min(b), a.max(b));
                    assert_eq!(c.key_sum(a, b).unwrap(), model_sum(&model, a, b));
                }
            }
        }
        let (n, inds, depth) = check(&c);
        assert!(inds > 10 && depth >= 2, "{n} {inds} {depth}");
        // A walk by "first overlapping from the last end + 1" sees exactly the model.
        let mut k = 0;
        let mut seen = Vec::new();
        while let Some((key, _)) = c.first_overlapping(k, u64::MAX) {
            seen.push(key);
            k = range_end(key, model[&key].0) + 1;
        }
        assert_eq!(seen, model.keys().copied().collect::<Vec<_>>());
        // Emptied, no indirect block is left behind.
        for k in model.keys() {
            c.remove(*k).unwrap();
        }
        assert_eq!(check(&c), (0, 0, 0));
    }

    #[test]
    fn shape_follows_history_summaries_do_not() {
        let mut rnd = rng(7);
        let keys: Vec<(u64, u64)> = (0..20_000)
            .map(|_| (rnd() << 15 | 0x8000_0000_0000_0000, rnd() % 100))
            .collect();
        let (mut a, mut b) = (Children::default(), Children::default());
        for (i, &(k, t)) in keys.iter().enumerate() {
            let _ = a.insert(k, 0, t, id(i as u32));
        }
        for (i, &(k, t)) in keys.iter().enumerate().rev() {
            let _ = b.insert(k, 0, t, id(i as u32));
        }
        let shape = |c: &Children| {
            let mut v = Vec::new();
            c.visit(|d, x| {
                if let Visit::Indirect(r) = x {
                    v.push((d, r.key, r.keybits));
                }
            })
            .unwrap();
            v
        };
        assert_ne!(
            shape(&a),
            shape(&b),
            "different insert orders, different trees"
        );
        check(&a);
        check(&b);
        for _ in 0..500 {
            let (x, y) = (rnd() << 15, rnd() << 15);
            let (x, y) = (x.min(y), x.max(y));
            assert_eq!(a.key_sum(x, y).unwrap(), b.key_sum(x, y).unwrap());
        }
        // Every indirect block of one tree summarizes the same as that range of the other.
        a.visit(|_, x| {
            if let Visit::Indirect(r) = x {
                let s = RangeSum::from_bref(&r);
                assert_eq!(s, b.key_sum(r.key, r.key_end()).unwrap());
            }
        })
        .unwrap();
    }

    #[test]
    fn spans_partition_the_key_space() {
        let mut rnd = rng(3);
        let mut c = Children::default();
        let mut model = BTreeMap::new();
        for i in 0..5_000u32 {
            let k = rnd() << 20;
            if c.insert(k, 0, 1, id(i)).is_ok() {
                model.insert(k, (0u8, 1u64));
            }
        }
        // With nothing known to differ, the walk sees indirect blocks whole.
        let (mut from, mut total, mut steps) = (0u64, RangeSum::default(), 0);
        loop {
            let s = c.span(from, None);
            assert_eq!(s.beg, from);
            assert_eq!(s.sum, model_sum(&model, s.beg, s.end));
            total.add(&s.sum);
            steps += 1;
            match s.end.checked_add(1) {
                Some(n) => from = n,
                None => break,
            }
        }
        assert_eq!(total, c.root.sum);
        assert!(steps <= 4 * (RUN + 1), "{steps}");
        // Known to differ, the root's first block is descended into.
        let first = c.span(0, None);
        assert!(first.indirect);
        let inner = c.span(0, Some((first.beg, first.end)));
        assert!(inner.end < first.end);
    }
}
