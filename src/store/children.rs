//! A chain's children: HAMMER2's block table, a radix tree of INDIRECT blocks.
//!
//! The chain itself holds a blockset of [`SET_COUNT`](media::SET_COUNT) (4) blockrefs, as an
//! inode does (`u.blockset`). When a table is full and one more child arrives, it gets an
//! indirect block the way `hammer2_chain_create_indirect` makes one:
//!
//! - **Size** (fan-out). Below a directory inode's blockset the block is 4 KiB, 32 blockrefs
//!   (`HAMMER2_IND_BYTES_MIN`); below a file inode's blockset, and below any indirect block,
//!   16 KiB, 128 blockrefs (`HAMMER2_IND_BYTES_NOM`); never smaller than the full table itself.
//!   HAMMER2 never picks 64 KiB (`HAMMER2_IND_BYTES_MAX`) for directories or files.
//! - **Key range.** Picked by the type of the child being inserted: for directory entries and
//!   inodes, `hammer2_chain_indkey_dir`: the smallest aligned range covering the new key and
//!   every blockref of the table, cut in half, keeping the half with more blockrefs, then
//!   widened ("expanded") until it spans at least as many keys as the block has blockrefs, so
//!   dense keys (inode numbers) fill their blocks; for data blocks,
//!   `hammer2_chain_indkey_file`: the aligned range of as many blocks as the indirect block
//!   holds around the lowest, smallest blockref. Every blockref of the table whose key lies in
//!   the range moves into the new block, which takes their place.
//!
//! A blockref's range always nests strictly in its parent's, ranges in one table never
//! overlap, and keybits strictly shrink going down (at most [`MAX_DEPTH`] levels).
//!
//! After a removal, the indirect blocks on the removed child's path get
//! `hammer2_chain_indirect_maintenance`, as the next flush would give them: an empty one goes
//! away, and one that is at most 3/4 full and whose blockrefs fit in its parent's table in its
//! stead is collapsed into the parent. HAMMER2 never merges sibling indirect blocks, and
//! neither does this store. Where this differs from HAMMER2 (maintenance at removal rather than
//! at flush, and not on insert paths; an expansion bounded by the parent's range; the
//! directory rule for a sparse file's split) is marked DEVIATION below and in
//! [`media::indkey`].
//!
//! Every indirect block carries, as HAMMER2's blockref does, the highest `modify_tid` beneath it,
//! and (see [`RangeSum`]) a summary of the children beneath it: their count and a multiset hash
//! of their (key, keybits, modify_tid). The summary is what the pruned scan compares: it depends
//! only on the set of children in a key range, never on the tree's shape, so two nodes whose
//! trees grew in different orders still compare equal where they hold the same children, and a
//! summary of any key range can be computed on either side (whole indirect blocks inside the
//! range are added as they are; only the blocks straddling its two ends are descended into).
//! Splits and collapses move whole blockrefs between tables, so they never change a summary.
//!
//! Every allocation is fallible and made before anything changes; nothing recurses.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::ChainId;
use crate::media::indkey::{self, Ranged};
use crate::media::{self, key_end, Blockref, IND_RADIX_MIN, IND_RADIX_NOM};
use crate::mem::try_box;
use crate::{Error, Result};

/// Size radix of the blockset: 4 blockrefs of 128 bytes.
const SET_RADIX: u8 = 9;
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
    /// Size radix of the block: [`SET_RADIX`] for the blockset, 12 or 14 (4 or 16 KiB) for an
    /// indirect block. Its fan-out, [`Node::cap`], follows.
    radix: u8,
    /// The highest modify_tid beneath (never lowered by a removal: HAMMER2 modifies the
    /// indirect block in the removing transaction, whose TID is higher still).
    tid: u64,
    /// The summary of every child beneath.
    sum: RangeSum,
    slots: Vec<Slot>,
}

/// What one blockref of a table takes in memory.
pub(crate) const SLOT_BYTES: usize = core::mem::size_of::<Slot>();

/// One blockref of a table: a child, an indirect block, or a stub.
#[derive(Debug)]
enum Slot {
    Leaf(Entry),
    Ind(Ind),
    Stub(Stub),
}

/// An indirect block whose children are not in memory: one that held only children and
/// stubs, the children all clean, dropped with them ([`Children::stub_out`]) and read back from the media when a walk
/// needs them ([`Children::fill`]). It keeps what the tables above and the pruned scan look at
/// (the summary and highest modify_tid beneath), so a walk that only compares it never reads
/// it. Its range is kept inline as an [`Ind`]'s is; the rest is boxed so a slot stays small.
#[derive(Debug)]
struct Stub {
    key: u64,
    end: u64,
    info: Box<StubInfo>,
}

#[derive(Debug)]
struct StubInfo {
    keybits: u8,
    radix: u8,
    tid: u64,
    sum: RangeSum,
    /// The stubs the block held besides its children: they come back as stubs.
    inner: Vec<Stub>,
    /// The tables of its inodes that held stubs (by the inode's key), without their
    /// blockset's children, and the summary of those children: the tables come back as they
    /// were, those children read back from the media and checked against that summary.
    kept: Vec<Kept>,
}

/// A table that left memory with its inode in a stub (see [`StubInfo::kept`]): the inode's
/// key, the table, and the summary of its blockset's children taken out of it.
pub(crate) type Kept = (u64, Children, RangeSum);

/// The key range of a stub a walk must see into: the caller reads its children back
/// ([`Children::fill`]) and asks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Miss {
    /// First key of the stub.
    pub(crate) key: u64,
    /// Last key of the stub.
    pub(crate) end: u64,
}

impl Stub {
    fn miss(&self) -> Miss {
        Miss {
            key: self.key,
            end: self.end,
        }
    }
}

/// A child as a table is filled with it: (key, keybits, modify_tid, id).
pub(crate) type Filled = (u64, u8, u64, ChainId);

/// What a walk answers, or the stub it must see into first.
pub(crate) type Seen<T> = core::result::Result<T, Miss>;

/// Why a table operation did not happen: an error, or a stub it must see into first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TabErr {
    /// Read this stub back and try again.
    Miss(Miss),
    /// Failed; nothing changed.
    Err(Error),
}

impl From<Error> for TabErr {
    fn from(e: Error) -> TabErr {
        TabErr::Err(e)
    }
}

/// The first child from a key on, as a walk of a table with stubs finds it.
enum First<'a> {
    /// That child.
    Child(&'a Entry),
    /// It lies in this stub.
    InStub(Miss),
    /// There is none.
    Nothing,
}

/// An indirect block's blockref in its parent's table. Its key range is kept here as well as in
/// the block: every lookup compares the range of each blockref it passes, and reading it from
/// the block would cost a pointer chase (a cache miss in a large table) per comparison. A
/// block's range never changes once it sits in a table.
#[derive(Debug)]
struct Ind {
    key: u64,
    end: u64,
    node: Box<Node>,
}

impl Ind {
    fn new(node: Box<Node>) -> Ind {
        Ind {
            key: node.key,
            end: node.end(),
            node,
        }
    }
}

impl core::ops::Deref for Ind {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl core::ops::DerefMut for Ind {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}

impl Ranged for Slot {
    fn key(&self) -> u64 {
        match self {
            Slot::Leaf(e) => e.key,
            Slot::Ind(n) => n.key,
            Slot::Stub(t) => t.key,
        }
    }
    fn end(&self) -> u64 {
        match self {
            Slot::Leaf(e) => e.end,
            Slot::Ind(n) => n.end,
            Slot::Stub(t) => t.end,
        }
    }
    fn keybits(&self) -> u8 {
        match self {
            Slot::Leaf(e) => e.keybits,
            Slot::Ind(n) => n.keybits,
            Slot::Stub(t) => t.info.keybits,
        }
    }
}

impl Slot {
    fn sum(&self) -> RangeSum {
        match self {
            Slot::Leaf(e) => e.leaf(),
            Slot::Ind(n) => n.sum,
            Slot::Stub(t) => t.info.sum,
        }
    }
    fn tid(&self) -> u64 {
        match self {
            Slot::Leaf(e) => e.tid,
            Slot::Ind(n) => n.tid,
            Slot::Stub(t) => t.info.tid,
        }
    }
}

impl Node {
    /// The number of its children, if it holds only children and stubs and at least one
    /// child: what [`Children::stub_out`] takes.
    fn outable(&self) -> Option<usize> {
        let mut leaves = 0;
        for s in &self.slots {
            match s {
                Slot::Leaf(_) => leaves += 1,
                Slot::Stub(_) => {}
                Slot::Ind(_) => return None,
            }
        }
        (leaves > 0).then_some(leaves)
    }

    /// An indirect block for `split`, with room for `capacity` blockrefs reserved (its block
    /// holds [`Node::cap`]; the vector grows like any table's, as a kernel's bounded pool
    /// holds thousands of small directories).
    fn empty(split: Split, capacity: usize) -> Result<Box<Node>> {
        let mut slots = Vec::new();
        slots.try_reserve_exact(capacity)?;
        try_box(Node {
            key: split.key,
            keybits: split.keybits,
            radix: split.radix,
            tid: 0,
            sum: RangeSum::default(),
            slots,
        })
    }
    fn end(&self) -> u64 {
        key_end(self.key, self.keybits)
    }
    /// Blockrefs the block holds (4 for the blockset, 32 or 128 for an indirect block).
    fn cap(&self) -> usize {
        media::ind_count(self.radix)
    }
    /// Index of the first blockref whose range ends at or after `key`.
    fn find(&self, key: u64) -> usize {
        self.slots.partition_point(|s| s.end() < key)
    }
    /// The indirect block at `i` if it covers `key ..= end`.
    fn covering(&self, i: usize, key: u64, end: u64) -> Option<&Node> {
        match self.slots.get(i) {
            Some(Slot::Ind(n)) if n.key <= key && n.end >= end => Some(n),
            _ => None,
        }
    }
    /// Where `key` would be inserted among the blockrefs.
    fn insert_at(&self, key: u64) -> usize {
        self.slots.partition_point(|s| s.key() < key)
    }
}

/// What HAMMER2 looks at when a full table gets an indirect block
/// (`hammer2_chain_create_indirect`): the type of the chain being inserted (its `for_type`,
/// which picks the key-range rule) and whether the table is a directory inode's (which sizes
/// a block right below the blockset).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Creating {
    /// The inserted child's blockref type.
    pub(crate) btype: u8,
    /// The table belongs to a directory inode.
    pub(crate) in_dir: bool,
}

/// The indirect block a full table gets: its key range and size radix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Split {
    key: u64,
    keybits: u8,
    radix: u8,
}

/// The size radix of an indirect block created in the full table `t` at `depth`
/// (`hammer2_chain_create_indirect`): 4 KiB right below a directory inode, 16 KiB right below
/// any other inode and below an indirect block, and never smaller than `t`'s own block.
fn split_radix(t: &Node, depth: usize, how: Creating) -> u8 {
    let nominal = if depth == 0 && how.in_dir {
        IND_RADIX_MIN
    } else {
        IND_RADIX_NOM
    };
    nominal.max(t.radix)
}

/// The indirect block the full table `t` at `depth` gets for the child `e`, and how many of
/// its blockrefs move into it (`hammer2_chain_create_indirect`, by the rules of
/// [`media::indkey`]).
fn plan_split(t: &Node, depth: usize, e: &Entry, how: Creating) -> Result<(Split, usize)> {
    let radix = split_radix(t, depth, how);
    let table = indkey::Table {
        keybits: t.keybits,
        cap: t.cap(),
    };
    let child = indkey::Child {
        key: e.key,
        keybits: e.keybits,
        btype: how.btype,
    };
    let p = indkey::plan(&t.slots, table, &child, media::ind_count(radix)).ok_or(Error::Invalid)?;
    let split = Split {
        key: p.key,
        keybits: p.keybits,
        radix,
    };
    Ok((split, p.moving))
}

/// Whether the indirect block `n`, a blockref of `parent`, goes into `parent` in its stead
/// (`hammer2_chain_indirect_maintenance`): when its blockrefs fit in the parent's table in
/// place of its own, and it is at most 3/4 full (the hysteresis that keeps a table from
/// flapping between splits and collapses). A block just split off never collapses back: with
/// the new child, the two tables hold one blockref more than the full one could.
fn collapses(parent: &Node, n: &Node) -> bool {
    parent.slots.len() + n.slots.len() <= parent.cap() + 1 && n.slots.len() <= n.cap() * 3 / 4
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

/// The blockref of an indirect block as it would be written: INDIRECT, its size, its range, the
/// highest modify_tid beneath, the number of children beneath (`leaf_count`, saturating) and
/// the summary of the children beneath.
fn indirect_bref(n: &Node) -> Blockref {
    summary_bref(n.key, n.keybits, n.radix, n.tid, &n.sum)
}

/// The blockref a stub stands for, as [`indirect_bref`] gives an indirect block's.
fn stub_bref(t: &Stub) -> Blockref {
    let i = &t.info;
    summary_bref(t.key, i.keybits, i.radix, i.tid, &i.sum)
}

/// The INDIRECT blockref of a block of range `key`/`keybits`, size `radix`, highest
/// modify_tid `tid` and summary `sum` (see [`indirect_bref`]).
fn summary_bref(key: u64, keybits: u8, radix: u8, tid: u64, sum: &RangeSum) -> Blockref {
    let mut b = Blockref::new(media::BREF_TYPE_INDIRECT, key, keybits);
    b.set_size_radix(radix);
    b.modify_tid = tid;
    b.mirror_tid = tid;
    b.leaf_count = u16::try_from(sum.count).unwrap_or(u16::MAX);
    // DEVIATION: HAMMER2 stores the check code of the indirect block's bytes here. This store
    // keeps indirect blocks in memory only, so the check area carries the range summary the
    // pruned scan compares instead (check method NONE).
    b.methods = 0;
    b.check.fill(0);
    b.check[..24].copy_from_slice(&sum.encode());
    b
}

/// Where a walk of one table stood: the slot indices from the blockset down to the last child
/// it returned, and that child's range.
/// [`ChainStore::lookup_from`](super::ChainStore::lookup_from) steps from there to the next
/// child instead of searching from the top. It is checked, not trusted: the path is followed
/// only while it still leads to a child with exactly that range (any table, any change since),
/// and the next child in tree order is then the next in key order. Otherwise the lookup
/// searches as it always does and the hint is taken again.
#[derive(Debug, Clone, Copy)]
pub struct Hint {
    /// Tables on the path (0: no position).
    depth: u8,
    path: [u8; MAX_DEPTH + 1],
    key: u64,
    end: u64,
    /// Lookups that could not step from the hint.
    #[cfg(test)]
    misses: u32,
}

#[cfg(test)]
impl Hint {
    /// Lookups through this hint that searched from the top instead of stepping.
    pub(crate) fn misses(&self) -> u32 {
        self.misses
    }

    /// Check a randomized walk through this hint of `steps` steps, interleaved with `changes`
    /// changes of the table and restarted `restarts` times at its end: enough of each
    /// happened, changes on the walk's path sent it back to a search, and most steps still
    /// stepped.
    pub(crate) fn assert_walk(&self, steps: u32, changes: u32, restarts: u32) {
        let misses = self.misses;
        assert!(
            restarts > 3 && changes > 5000,
            "{restarts} walks, {changes} changes"
        );
        assert!(
            misses > restarts && misses < steps / 4,
            "{misses} searches in {steps} steps"
        );
    }
}

impl Default for Hint {
    fn default() -> Hint {
        Hint {
            depth: 0,
            path: [0; MAX_DEPTH + 1],
            key: 0,
            end: 0,
            #[cfg(test)]
            misses: 0,
        }
    }
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
                radix: SET_RADIX,
                tid: 0,
                sum: RangeSum::default(),
                slots: Vec::new(),
            },
            len: 0,
        }
    }
}

impl Children {
    /// The first child whose range ends at or after `beg`, or the stub it lies in.
    fn first_from(&self, beg: u64) -> First<'_> {
        let mut node = &self.root;
        // The nearest blockref after the path, should the path hold nothing at or after `beg`.
        let mut after: Option<&Slot> = None;
        let first = loop {
            let i = node.find(beg);
            match node.slots.get(i) {
                None => break after,
                Some(Slot::Leaf(e)) => return First::Child(e),
                // Stubs are never empty: something at or after `beg` lies in it.
                Some(Slot::Stub(t)) => return First::InStub(t.miss()),
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
        let Some(mut s) = first else {
            return First::Nothing;
        };
        loop {
            match s {
                Slot::Leaf(e) => return First::Child(e),
                Slot::Stub(t) => return First::InStub(t.miss()),
                Slot::Ind(n) => match n.slots.first() {
                    Some(f) => s = f,
                    None => return First::Nothing,
                },
            }
        }
    }

    /// The first child at or after `beg` if it starts at or before `end`; a stub met first
    /// that may hold one is the miss.
    fn first_within(&self, beg: u64, end: u64) -> Seen<Option<&Entry>> {
        match self.first_from(beg) {
            First::Child(e) if e.key <= end => Ok(Some(e)),
            First::InStub(m) if m.key <= end => Err(m),
            _ => Ok(None),
        }
    }

    /// [`Children::first_overlapping`], stepping from `hint` when `beg` is the end + 1 of the
    /// child it holds (a walk's next step); `hint` then holds the child returned.
    pub(crate) fn first_overlapping_hinted(
        &self,
        beg: u64,
        end: u64,
        hint: &mut Hint,
    ) -> Seen<Option<(u64, ChainId)>> {
        let e = match self.step(beg, hint) {
            Some(found) => found,
            None => {
                #[cfg(test)]
                {
                    hint.misses += 1;
                }
                let e = self.first_within(beg, end);
                if !matches!(e, Ok(Some(e)) if self.record(e, hint)) {
                    hint.depth = 0;
                }
                e?
            }
        };
        Ok(e.filter(|e| e.key <= end).map(|e| (e.key, e.id)))
    }

    /// The child after the one `hint` holds, if `beg` follows it and the hint's path still
    /// leads to it: `Some(None)` when it was the last child. `None`: search instead.
    fn step(&self, beg: u64, hint: &mut Hint) -> Option<Option<&Entry>> {
        let depth = usize::from(hint.depth);
        if depth == 0 || hint.end.checked_add(1) != Some(beg) {
            return None;
        }
        // Down the path; the deepest table with a blockref after the path's is where the next
        // child's path turns off.
        let mut node = &self.root;
        let mut turn: Option<(usize, &Node)> = None;
        for d in 0..depth {
            let i = usize::from(*hint.path.get(d)?);
            if i + 1 < node.slots.len() {
                turn = Some((d, node));
            }
            match node.slots.get(i)? {
                Slot::Ind(n) if d + 1 < depth => node = n,
                Slot::Leaf(e) if d + 1 == depth && e.key == hint.key && e.end == hint.end => {}
                _ => return None,
            }
        }
        let Some((d, node)) = turn else {
            return Some(None);
        };
        // The leftmost child after the turn (indirect blocks are never empty).
        let i = usize::from(*hint.path.get(d)?) + 1;
        *hint.path.get_mut(d)? = u8::try_from(i).ok()?;
        let mut s = node.slots.get(i)?;
        let mut d = d + 1;
        let e = loop {
            match s {
                Slot::Leaf(e) => break e,
                Slot::Ind(n) => {
                    *hint.path.get_mut(d)? = 0;
                    d += 1;
                    s = n.slots.first()?;
                }
                // The search reports the stub.
                Slot::Stub(_) => return None,
            }
        };
        hint.depth = u8::try_from(d).ok()?;
        (hint.key, hint.end) = (e.key, e.end);
        Some(Some(e))
    }

    /// Take `e`'s path into `hint`; false if it cannot be kept (an index past a `u8`).
    fn record(&self, e: &Entry, hint: &mut Hint) -> bool {
        let mut node = &self.root;
        for d in 0..=MAX_DEPTH {
            let i = node.find(e.key);
            let Some(slot) = hint.path.get_mut(d) else {
                return false;
            };
            let Ok(i8) = u8::try_from(i) else {
                return false;
            };
            *slot = i8;
            match node.slots.get(i) {
                Some(Slot::Leaf(l)) if l.key == e.key => {
                    hint.depth = (d + 1) as u8;
                    (hint.key, hint.end) = (e.key, e.end);
                    return true;
                }
                Some(Slot::Ind(n)) if n.key <= e.key => node = n,
                _ => return false,
            }
        }
        false
    }

    /// The first child whose range overlaps `beg ..= end`, with its key.
    pub(crate) fn first_overlapping(&self, beg: u64, end: u64) -> Seen<Option<(u64, ChainId)>> {
        Ok(self.first_within(beg, end)?.map(|e| (e.key, e.id)))
    }

    /// The first stub whose range meets `beg ..= end`, if any: what must be read back before a
    /// child is inserted there or a child's range grows over it.
    pub(crate) fn stub_over(&self, beg: u64, end: u64) -> Result<Option<Miss>> {
        let mut stack: Vec<&Node> = Vec::new();
        stack.try_reserve(MAX_DEPTH + 1)?;
        stack.push(&self.root);
        while let Some(node) = stack.pop() {
            for s in node.slots.get(node.find(beg)..).unwrap_or(&[]) {
                if s.key() > end {
                    break;
                }
                match s {
                    Slot::Stub(t) => return Ok(Some(t.miss())),
                    Slot::Leaf(_) => {}
                    Slot::Ind(n) => crate::mem::try_push(&mut stack, &**n)?,
                }
            }
        }
        Ok(None)
    }

    /// Whether a child overlaps `key ..= end` ([`Children::first_overlapping`]), and the table
    /// depth where a child covering the range belongs ([`Children::target_depth`]), in one
    /// descent: both follow the blockrefs covering the range, and an insert needs both.
    /// A stub that may hold a child overlapping the range is the miss.
    fn probe(&self, key: u64, end: u64) -> Seen<(bool, usize)> {
        let (mut node, mut depth) = (&self.root, 0);
        loop {
            match node.slots.get(node.find(key)) {
                Some(Slot::Ind(n)) if n.key <= key && n.end >= end => {
                    node = n;
                    depth += 1;
                }
                // A block after `key`: its leftmost child is the first one after `key` (the
                // blocks covering the range hold everything of it that lies on this path).
                Some(Slot::Ind(n)) if n.key > key => {
                    let mut first = n.slots.first();
                    while let Some(Slot::Ind(m)) = first {
                        first = m.slots.first();
                    }
                    return match first {
                        Some(Slot::Leaf(e)) => Ok((e.key <= end, depth)),
                        Some(Slot::Stub(t)) if t.key <= end => Err(t.miss()),
                        _ => Ok((false, depth)),
                    };
                }
                // A block straddling `end`: its children may lie either side of `end`.
                Some(Slot::Ind(_)) => return Ok((self.first_within(key, end)?.is_some(), depth)),
                Some(Slot::Leaf(e)) => return Ok((e.key <= end, depth)),
                Some(Slot::Stub(t)) if t.key <= end => return Err(t.miss()),
                // Whatever follows in the tables above lies past the covering block's end.
                Some(Slot::Stub(_)) | None => return Ok((false, depth)),
            }
        }
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
    /// `tid`; `how` says what HAMMER2 would look at should a table overflow. `Exists` if the
    /// range overlaps a present child.
    pub(crate) fn insert(
        &mut self,
        key: u64,
        keybits: u8,
        tid: u64,
        id: ChainId,
        how: Creating,
    ) -> core::result::Result<(), TabErr> {
        if !aligned(key, keybits) {
            return Err(Error::Invalid.into());
        }
        let end = key_end(key, keybits);
        let (overlap, depth) = self.probe(key, end).map_err(TabErr::Miss)?;
        if overlap {
            return Err(Error::Exists.into());
        }
        let e = Entry {
            key,
            end,
            id,
            keybits,
            tid,
        };
        // Everything this insert needs, allocated before anything changes: room in the target
        // table, or the indirect block its overflow creates (room for the blockrefs moving
        // into it and the new child).
        let t = self.node_mut(key, depth)?;
        if t.slots.len() < t.cap() {
            t.slots.try_reserve(1).map_err(Error::from)?;
            return Ok(self.link(e, depth, None)?);
        }
        let (split, moving) = plan_split(t, depth, &e, how)?;
        let spare = Node::empty(split, moving + 1)?;
        Ok(self.link(e, depth, Some((split, spare)))?)
    }

    /// Insert `e` into the table at `depth`, which has room reserved, or is full with `spare`
    /// given (room for the blockrefs moving into it and one more): cannot fail once it starts
    /// changing. The split is planned again here (the same plan, unless the table changed
    /// since the spare was sized, which the room check catches).
    fn apply_insert(
        &mut self,
        e: Entry,
        depth: usize,
        spare: Option<Box<Node>>,
        how: Creating,
    ) -> Result<()> {
        let t = self.node_at(e.key, depth)?;
        let full = t.slots.len() >= t.cap();
        let split = match &spare {
            Some(ind) if full => {
                let (split, moving) = plan_split(t, depth, &e, how)?;
                if ind.slots.capacity() <= moving {
                    return Err(Error::NoMem);
                }
                Some(split)
            }
            _ if full || t.slots.capacity() <= t.slots.len() => return Err(Error::NoMem),
            _ => None,
        };
        self.link(e, depth, split.zip(spare))
    }

    /// Insert `e` into the table at `depth` on its path, which has room reserved, or, with
    /// `split`, gets that indirect block (whose room was reserved for the blockrefs moving into
    /// it and one more): allocates nothing, and cannot fail once it starts changing.
    fn link(&mut self, e: Entry, depth: usize, split: Option<(Split, Box<Node>)>) -> Result<()> {
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
                // The callers found the table at `depth` on this path (nothing changed since).
                _ => return Err(Error::Invalid),
            };
        }
        *len += 1;
        if let Some((split, mut ind)) = split {
            // hammer2_chain_create_indirect: the blockrefs in the planned range move into the
            // new block, which takes their place.
            (ind.key, ind.keybits, ind.radix) = (split.key, split.keybits, split.radix);
            let ie = ind.end();
            let a = node.slots.partition_point(|s| s.key() < split.key);
            let b = node.slots.partition_point(|s| s.key() <= ie);
            for s in node.slots.drain(a..b) {
                ind.sum.add(&s.sum());
                ind.tid = ind.tid.max(s.tid());
                ind.slots.push(s);
            }
            if e.key >= split.key && e.end <= ie {
                ind.sum.add(&leaf);
                ind.tid = ind.tid.max(e.tid);
                let at = ind.insert_at(e.key);
                ind.slots.insert(at, Slot::Leaf(e));
                node.slots.insert(a, Slot::Ind(Ind::new(ind)));
            } else {
                node.slots.insert(a, Slot::Ind(Ind::new(ind)));
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

    /// Remove the child with exactly this key; its id, if it was present. The indirect blocks
    /// left on its path are then maintained (see [`Children::maintain`]).
    pub(crate) fn remove(&mut self, key: u64) -> Option<ChainId> {
        let id = self.unlink(key)?;
        self.maintain(key);
        Some(id)
    }

    /// Take the child with exactly this key out of its table (and the indirect blocks that
    /// held only it), nothing else.
    fn unlink(&mut self, key: u64) -> Option<ChainId> {
        let (depth, _, e) = self.locate(key)?;
        let leaf = e.leaf();
        let Children { root, len } = self;
        let mut node = root;
        for d in 0..=depth {
            node.sum.sub(&leaf);
            let i = node.find(key);
            // The last child beneath an indirect block: the block goes with it (the first
            // case of hammer2_chain_indirect_maintenance, an empty block).
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

    /// `hammer2_chain_indirect_maintenance` on the indirect blocks on the path to `key`,
    /// deepest first (as the flush reaches them): each one that [`collapses`] is replaced by
    /// its blockrefs. Summaries stay as they are: the same children lie beneath every table.
    /// Should the parent's table not grow (no memory), the block stays, as HAMMER2 leaves it
    /// when it cannot modify the parent.
    ///
    /// DEVIATION: HAMMER2 maintains indirect blocks when the flush writes them
    /// (`hammer2_flush_core`: every indirect block on a modified path, bottom-up, inserts'
    /// paths included), not when a child is deleted. This store has no flush: a removal
    /// maintains the blocks on its path right away, which is what the next flush would do to
    /// them. Insert paths are left as the splits made them (the shape HAMMER2 has between
    /// flushes): maintaining them too flattens the two-slot blocks repeated splits leave at the
    /// top of a hashed directory, but makes the pruned scan visit more spans and runs and take
    /// longer (see "Measured while designing" in BENCHMARKS.md), and that scan is the store's
    /// reason to have these trees.
    fn maintain(&mut self, key: u64) {
        let mut depth = 0;
        let mut node = &self.root;
        while let Some(n) = node.covering(node.find(key), key, key) {
            node = n;
            depth += 1;
        }
        // `depth`: the parent's depth plus one. After a collapse the parent is looked at
        // again, as the block now on the path in it came up from the collapsed one.
        while depth > 0 {
            let Ok(parent) = self.node_mut(key, depth - 1) else {
                return;
            };
            let i = parent.find(key);
            let fold = match parent.slots.get(i) {
                Some(Slot::Ind(n)) if n.key <= key => {
                    collapses(parent, n) && parent.slots.try_reserve(n.slots.len()).is_ok()
                }
                _ => false,
            };
            if !fold {
                depth -= 1;
                continue;
            }
            if let Slot::Ind(n) = parent.slots.remove(i) {
                // Room was reserved: the splice moves the blockrefs without allocating.
                parent.slots.splice(i..i, n.node.slots);
            }
        }
    }

    /// Change the entry at `key` to `keybits` and modify_tid `tid` (after a replace or a TID
    /// stamp). `Exists` (nothing changed) if the new range would overlap the next child.
    /// A stub the wider range would reach is the miss.
    pub(crate) fn update(
        &mut self,
        key: u64,
        keybits: u8,
        tid: u64,
        how: Creating,
    ) -> core::result::Result<(), TabErr> {
        if !aligned(key, keybits) {
            return Err(Error::Invalid.into());
        }
        let (depth, holder, old) = self.locate(key).ok_or(Error::NotFound)?;
        let end = key_end(key, keybits);
        if end > old.end
            && self
                .first_overlapping(old.end + 1, end)
                .map_err(TabErr::Miss)?
                .is_some()
        {
            return Err(Error::Exists.into());
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
                    _ => return Err(Error::Invalid.into()),
                }
            }
            return Err(Error::Invalid.into());
        }
        // A wider range than its indirect block: it moves up to the table covering it, which
        // is on its present path. Room on every table of the path and a spare block as large
        // as any split could need first; the blocks left behind are maintained after.
        let mut node = &mut self.root;
        let mut most = 0;
        for _ in 0..=depth {
            node.slots.try_reserve(1).map_err(Error::from)?;
            most = most.max(node.cap());
            let i = node.find(key);
            match node.slots.get_mut(i) {
                Some(Slot::Ind(n)) => node = n,
                _ => break,
            }
        }
        let blank = Split {
            key: 0,
            keybits: 0,
            radix: IND_RADIX_NOM,
        };
        let spare = Node::empty(blank, most.max(media::ind_count(IND_RADIX_NOM)) + 1)?;
        self.unlink(key).ok_or(Error::NotFound)?;
        let depth = self.target_depth(key, end);
        self.apply_insert(new, depth, Some(spare), how)?;
        self.maintain(key);
        Ok(())
    }

    /// The summary of the children whose key lies in `beg ..= end`: whole indirect blocks
    /// and stubs inside the range as they are, only the (at most two) blocks straddling an
    /// end descended; a stub straddling one is the miss.
    pub(crate) fn key_sum(&self, beg: u64, end: u64) -> core::result::Result<RangeSum, TabErr> {
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
                    Slot::Ind(n) if n.key >= beg && n.end <= end => out.add(&n.sum),
                    Slot::Ind(n) => {
                        // Only the blocks holding `beg` or `end` straddle: two at a time.
                        *stack.get_mut(sp).ok_or(Error::Invalid)? = Some(n);
                        sp += 1;
                    }
                    Slot::Stub(t) if t.key >= beg && t.end <= end => out.add(&t.info.sum),
                    Slot::Stub(t) => return Err(TabErr::Miss(t.miss())),
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
    ///
    /// A stub is a span as the indirect block it stands for is; one that would be descended
    /// into is the miss.
    pub(crate) fn span(&self, from: u64, open: Option<(u64, u64)>) -> Seen<Span> {
        let mut node = &self.root;
        loop {
            let i = node.find(from);
            match node.slots.get(i) {
                Some(Slot::Ind(n)) if n.key <= from => {
                    let end = n.end;
                    if n.key < from || open.is_some_and(|(b, e)| n.key <= b && end >= e) {
                        node = n;
                        continue;
                    }
                    return Ok(Span {
                        beg: n.key,
                        end,
                        sum: n.sum,
                        indirect: true,
                    });
                }
                Some(Slot::Stub(t)) if t.key <= from => {
                    let end = t.end;
                    if t.key < from || open.is_some_and(|(b, e)| t.key <= b && end >= e) {
                        return Err(t.miss());
                    }
                    return Ok(Span {
                        beg: t.key,
                        end,
                        sum: t.info.sum,
                        indirect: true,
                    });
                }
                _ => {}
            }
            let (mut sum, mut end, mut run) = (RangeSum::default(), node.end(), 0);
            for s in node.slots.get(i..).unwrap_or(&[]) {
                match s {
                    // Keys after `from` (the first one was not descended into).
                    Slot::Ind(_) | Slot::Stub(_) => {
                        end = s.key().saturating_sub(1);
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
            return Ok(Span {
                beg: from,
                end,
                sum,
                indirect: false,
            });
        }
    }

    /// Every blockref of the table, depth first in key order, with its depth (0: the
    /// blockset).
    pub(crate) fn visit(&self, mut f: impl FnMut(usize, Visit)) -> Result<()> {
        self.walk(|depth, s| {
            match s {
                Slot::Leaf(e) => f(depth, Visit::Child(e.id)),
                Slot::Ind(n) => f(depth, Visit::Indirect(indirect_bref(n))),
                Slot::Stub(t) => f(depth, Visit::Indirect(stub_bref(t))),
            }
            true
        })
    }

    /// The ranges of the indirect blocks that hold only children and stubs, at least one
    /// child, in key order, with their children's count: what [`Children::stub_out`] can take
    /// out of memory (a block holding blocks can once those are stubs).
    pub(crate) fn leaf_blocks(&self, mut f: impl FnMut(Miss, usize)) -> Result<()> {
        self.walk(|_, s| match s {
            Slot::Ind(n) => match n.outable() {
                Some(leaves) => {
                    let range = Miss {
                        key: n.key,
                        end: n.end,
                    };
                    f(range, leaves);
                    false
                }
                None => true,
            },
            _ => false,
        })
    }

    /// Every slot of the table, depth first in key order, with its depth (0: the blockset);
    /// `f` says whether to descend into an indirect block. No recursion: a stack as deep as
    /// the table.
    fn walk(&self, mut f: impl FnMut(usize, &Slot) -> bool) -> Result<()> {
        let mut stack: Vec<(&Node, usize)> = Vec::new();
        stack.try_reserve(MAX_DEPTH + 1)?;
        stack.push((&self.root, 0));
        while let Some((node, i)) = stack.pop() {
            let Some(s) = node.slots.get(i) else {
                continue;
            };
            let depth = stack.len();
            crate::mem::try_push(&mut stack, (node, i + 1))?;
            if let (true, Slot::Ind(n)) = (f(depth, s), s) {
                crate::mem::try_push(&mut stack, (&**n, 0))?;
            }
        }
        Ok(())
    }

    /// Take the indirect block of exactly `range`, which holds only children and stubs, out
    /// of memory: it becomes a stub keeping its summary, highest modify_tid and the stubs it
    /// held, and its children's ids are pushed on `out` (the caller frees those chains).
    /// `NotFound` if there is no such block; nothing changes on an error.
    ///
    /// `kept`: the tables of children that held only stubs, by the child's key, to keep with
    /// the stub; taken only once nothing can fail (left as they are on an error).
    pub(crate) fn stub_out(
        &mut self,
        range: Miss,
        out: &mut Vec<ChainId>,
        kept: &mut Vec<Kept>,
    ) -> Result<()> {
        let (key, depth) = (range.key, self.block_depth(range)?);
        let parent = self.node_mut(key, depth)?;
        let i = parent.find(key);
        let Some(Slot::Ind(n)) = parent.slots.get(i) else {
            return Err(Error::NotFound);
        };
        let leaves = n.outable().ok_or(Error::NotFound)?;
        out.try_reserve(leaves)?;
        let mut inner = Vec::new();
        inner.try_reserve_exact(n.slots.len() - leaves)?;
        let info = try_box(StubInfo {
            keybits: n.keybits,
            radix: n.radix,
            tid: n.tid,
            sum: n.sum,
            inner,
            kept: Vec::new(),
        })?;
        let stub = Slot::Stub(Stub {
            key: n.key,
            end: n.end,
            info,
        });
        let Some(Slot::Ind(n)) = parent.slots.get_mut(i).map(|s| core::mem::replace(s, stub))
        else {
            return Err(Error::Invalid);
        };
        let Some(Slot::Stub(t)) = parent.slots.get_mut(i) else {
            return Err(Error::Invalid);
        };
        t.info.kept = core::mem::take(kept);
        for s in n.node.slots {
            match s {
                Slot::Leaf(e) => out.push(e.id),
                Slot::Stub(inner) => t.info.inner.push(inner),
                Slot::Ind(_) => {}
            }
        }
        self.len -= leaves;
        Ok(())
    }

    /// The children of the indirect block of exactly `range` that [`Children::stub_out`]
    /// can take, pushed on `out`. `NotFound` if there is no such block.
    pub(crate) fn block_leaves(&self, range: Miss, out: &mut Vec<ChainId>) -> Result<()> {
        let depth = self.block_depth(range)?;
        let Some(Slot::Ind(n)) = self
            .node_at(range.key, depth)?
            .slots
            .get(self.node_at(range.key, depth)?.find(range.key))
        else {
            return Err(Error::NotFound);
        };
        out.try_reserve(n.slots.len())?;
        out.extend(n.slots.iter().filter_map(|s| match s {
            Slot::Leaf(e) => Some(e.id),
            _ => None,
        }));
        Ok(())
    }

    /// The depth of the table holding the indirect block of exactly `range` that
    /// [`Children::stub_out`] can take. `NotFound` if there is none.
    fn block_depth(&self, range: Miss) -> Result<usize> {
        let mut node = &self.root;
        for depth in 0..=MAX_DEPTH {
            match node.slots.get(node.find(range.key)) {
                Some(Slot::Ind(n)) if n.key == range.key && n.end == range.end => {
                    return match n.outable() {
                        Some(_) => Ok(depth),
                        None => Err(Error::NotFound),
                    };
                }
                Some(Slot::Ind(n)) if n.key <= range.key && n.end >= range.end => node = n,
                _ => return Err(Error::NotFound),
            }
        }
        Err(Error::NotFound)
    }

    /// The ranges of the stubs the stub of exactly `range` holds (its children read back
    /// are those outside them), and the keys of its children whose tables it keeps, each
    /// with the ranges of its blockset no stub of it covers (where that table's children
    /// that left with it lay).
    /// `NotFound` if there is no such stub.
    pub(crate) fn stub_inner(
        &self,
        range: Miss,
        out: &mut Vec<Miss>,
        kept: &mut Vec<(u64, Vec<(u64, u64)>)>,
    ) -> Result<()> {
        let t = self.stub_at(range)?.0;
        out.try_reserve(t.info.inner.len())?;
        out.extend(t.info.inner.iter().map(Stub::miss));
        kept.try_reserve(t.info.kept.len())?;
        for (k, table, _) in &t.info.kept {
            let mut gaps = Vec::new();
            table.gaps(&mut gaps)?;
            kept.push((*k, gaps));
        }
        Ok(())
    }

    /// The stub of exactly `range`, and the depth of the table holding it.
    fn stub_at(&self, range: Miss) -> Result<(&Stub, usize)> {
        let mut depth = 0;
        let mut node = &self.root;
        loop {
            match node.slots.get(node.find(range.key)) {
                Some(Slot::Stub(t)) if t.key == range.key && t.end == range.end => {
                    return Ok((t, depth));
                }
                Some(Slot::Ind(n)) if n.key <= range.key && n.end >= range.end => {
                    node = n;
                    depth += 1;
                }
                _ => return Err(Error::NotFound),
            }
        }
    }

    /// Put the children read back for the stub of exactly `range` in its place, as the
    /// indirect block it stood for, with the stubs it held. `children` are (key, keybits,
    /// modify_tid, id) in key order, outside those stubs, and must be exactly the children
    /// the stub summarized (the same summary and highest modify_tid, with its stubs'):
    /// anything else is `Invalid` (the media do not hold what was taken out), with nothing
    /// changed. `NotFound` if there is no such stub. The tables it kept are handed back, by
    /// key, for their chains.
    ///
    /// `kids`: for a kept table (by its child's key), the children of its blockset read back
    /// (they left with it), put back in it.
    pub(crate) fn fill(
        &mut self,
        range: Miss,
        children: &[Filled],
        kids: &[(u64, &[Filled])],
    ) -> Result<Vec<Kept>> {
        {
            let Slot::Stub(t) = self.stub_slot_mut(range)? else {
                return Err(Error::NotFound);
            };
            // Every kept table gets back exactly the children it lost (else the media do not
            // hold what left), room for them reserved first.
            for (key, _, lost) in &t.info.kept {
                let put = kids
                    .iter()
                    .find(|(k, _)| k == key)
                    .map_or(&[][..], |(_, p)| p);
                let mut sum = RangeSum::default();
                for &(k, kb, tid, _) in put {
                    sum.add(&RangeSum::leaf(k, kb, tid));
                }
                if sum != *lost {
                    return Err(Error::Invalid);
                }
            }
            for &(key, put) in kids {
                let Some((_, table, _)) = t.info.kept.iter_mut().find(|(k, ..)| *k == key) else {
                    return Err(Error::Invalid);
                };
                table.reserve_root(put.len())?;
            }
        }
        let (t, depth) = self.stub_at(range)?;
        let info = &t.info;
        let split = Split {
            key: range.key,
            keybits: info.keybits,
            radix: info.radix,
        };
        let mut block = Node::empty(split, children.len() + info.inner.len())?;
        if children.len() + info.inner.len() > block.cap() {
            return Err(Error::Invalid);
        }
        // Merged in key order with the inner stubs, checked as they go.
        let mut inner = info.inner.iter().peekable();
        let mut next = range.key;
        let mut order = Vec::new();
        order.try_reserve_exact(children.len() + info.inner.len())?;
        for &(key, keybits, tid, id) in children {
            while let Some(s) = inner.next_if(|s| s.key < key) {
                order.push(Err(s.miss()));
            }
            order.push(Ok((key, keybits, tid, id)));
        }
        order.extend(inner.map(|s| Err(s.miss())));
        for (i, o) in order.iter().enumerate() {
            let (key, end, whole) = match *o {
                Ok((key, keybits, _, _)) => (key, key_end(key, keybits), aligned(key, keybits)),
                Err(m) => (m.key, m.end, true),
            };
            if !whole || key < next || end > range.end {
                return Err(Error::Invalid);
            }
            next = match end.checked_add(1) {
                Some(n) => n,
                None if i + 1 == order.len() => end,
                None => return Err(Error::Invalid),
            };
            match *o {
                Ok((key, keybits, tid, _)) => {
                    block.sum.add(&RangeSum::leaf(key, keybits, tid));
                    block.tid = block.tid.max(tid);
                }
                Err(m) => {
                    let s = info
                        .inner
                        .iter()
                        .find(|s| s.key == m.key)
                        .ok_or(Error::Invalid)?;
                    block.sum.add(&s.info.sum);
                    block.tid = block.tid.max(s.info.tid);
                }
            }
        }
        if block.sum != info.sum || block.tid != info.tid {
            return Err(Error::Invalid);
        }
        // Nothing fails from here on: the stubs move into the block.
        let parent = self.node_mut(range.key, depth)?;
        let i = parent.find(range.key);
        let slot = parent.slots.get_mut(i).ok_or(Error::Invalid)?;
        let Slot::Stub(t) = core::mem::replace(slot, Slot::Ind(Ind::new(block))) else {
            return Err(Error::Invalid);
        };
        let Some(Slot::Ind(n)) = parent.slots.get_mut(i) else {
            return Err(Error::Invalid);
        };
        let info = *t.info;
        let mut inner = info.inner.into_iter();
        for o in order {
            match o {
                Ok((key, keybits, tid, id)) => n.slots.push(Slot::Leaf(Entry {
                    key,
                    end: key_end(key, keybits),
                    id,
                    keybits,
                    tid,
                })),
                Err(_) => {
                    if let Some(s) = inner.next() {
                        n.slots.push(Slot::Stub(s));
                    }
                }
            }
        }
        self.len += children.len();
        let mut kept = info.kept;
        for &(key, put) in kids {
            if let Some((_, table, _)) = kept.iter_mut().find(|(k, ..)| *k == key) {
                for &e in put {
                    table.put_root_leaf(e);
                }
            }
        }
        Ok(kept)
    }

    /// The slot of the stub of exactly `range`.
    fn stub_slot_mut(&mut self, range: Miss) -> Result<&mut Slot> {
        let depth = self.stub_at(range)?.1;
        let node = self.node_mut(range.key, depth)?;
        let i = node.find(range.key);
        node.slots.get_mut(i).ok_or(Error::NotFound)
    }

    /// The first child in memory, if any: stubs are passed over (what is dropped with its
    /// parent needs no freeing of chains beneath them).
    pub(crate) fn first_resident(&self) -> Option<ChainId> {
        let mut from = 0;
        loop {
            match self.first_from(from) {
                First::Child(e) => return Some(e.id),
                First::Nothing => return None,
                First::InStub(m) => from = m.end.checked_add(1)?,
            }
        }
    }

    /// Whether the table holds nothing: no child, no stub.
    pub(crate) fn is_bare(&self) -> bool {
        self.root.slots.is_empty()
    }

    /// Whether the table holds a stub.
    pub(crate) fn has_stubs(&self) -> bool {
        self.root.slots.iter().any(|s| matches!(s, Slot::Stub(_)))
            || self.len < self.root.sum.count as usize
    }

    /// The children of the blockset, if they are all its children in memory (its indirect
    /// blocks hold only stubs): what goes with a table that leaves memory with its inode.
    pub(crate) fn root_leaves(&self) -> Option<impl Iterator<Item = ChainId> + '_> {
        let at_root = self
            .root
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Leaf(_)))
            .count();
        (at_root == self.len).then(|| {
            self.root.slots.iter().filter_map(|s| match s {
                Slot::Leaf(e) => Some(e.id),
                _ => None,
            })
        })
    }

    /// Take the blockset's children out (a table of stubs and children leaving memory with
    /// its inode keeps the stubs; the children are read back), onto `out`, which has room
    /// for a blockset's worth ([`media::SET_COUNT`]): no allocation.
    pub(crate) fn drop_root_leaves(&mut self, out: &mut Vec<Filled>) -> RangeSum {
        let root = &mut self.root;
        let before = root.slots.len();
        let mut gone = RangeSum::default();
        root.slots.retain(|s| match s {
            Slot::Leaf(e) if out.len() < out.capacity() => {
                gone.add(&e.leaf());
                out.push((e.key, e.keybits, e.tid, e.id));
                false
            }
            _ => true,
        });
        root.sum.sub(&gone);
        self.len -= before - root.slots.len();
        gone
    }

    /// Put back the children [`Children::drop_root_leaves`] took out of this table onto
    /// `from`: their room in the blockset is still reserved, nothing is allocated.
    pub(crate) fn put_back_root_leaves(&mut self, from: &mut Vec<Filled>) {
        for e in from.drain(..) {
            self.put_root_leaf(e);
        }
    }

    /// The key ranges of the blockset that no stub or indirect block covers: where the
    /// children [`Children::drop_root_leaves`] took out lay.
    pub(crate) fn gaps(&self, out: &mut Vec<(u64, u64)>) -> Result<()> {
        let mut next = Some(0u64);
        for s in &self.root.slots {
            if let (Some(n), Slot::Stub(_) | Slot::Ind(_)) = (next, s) {
                if s.key() > n {
                    crate::mem::try_push(out, (n, s.key() - 1))?;
                }
                next = s.end().checked_add(1);
            }
        }
        if let Some(n) = next {
            crate::mem::try_push(out, (n, u64::MAX))?;
        }
        Ok(())
    }

    /// Room for `n` more children in the blockset, reserved.
    fn reserve_root(&mut self, n: usize) -> Result<()> {
        if self.root.slots.len() + n > self.root.cap() {
            return Err(Error::Invalid);
        }
        self.root.slots.try_reserve(n)?;
        Ok(())
    }

    /// Put back in the blockset a child [`Children::drop_root_leaves`] took out, room
    /// reserved ([`Children::reserve_root`]): no allocation.
    fn put_root_leaf(&mut self, (key, keybits, tid, id): Filled) {
        let e = Entry {
            key,
            end: key_end(key, keybits),
            id,
            keybits,
            tid,
        };
        self.root.sum.add(&e.leaf());
        self.root.tid = self.root.tid.max(tid);
        let at = self.root.insert_at(key);
        self.root.slots.insert(at, Slot::Leaf(e));
        self.len += 1;
    }

    /// Number of children in memory (stubs hold more).
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests;
