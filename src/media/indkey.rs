//! HAMMER2's choice of the indirect block a full block table gets
//! (`hammer2_chain_create_indirect`): its key range by the type of the child being inserted
//! (`hammer2_chain_indkey_dir`, `hammer2_chain_indkey_file`) and which blockrefs of the table
//! move into it. Shared by the node store's in-memory tables and by a commit splitting a
//! table on the media: both shape their tables by the same rules.

use super::{key_end, Blockref, BREF_TYPE_DATA};

/// A blockref's key range, as the rules look at it.
pub trait Ranged {
    /// First key of the range.
    fn key(&self) -> u64;
    /// Last key of the range.
    fn end(&self) -> u64;
    /// log2 of the range's size.
    fn keybits(&self) -> u8;
}

impl Ranged for Blockref {
    fn key(&self) -> u64 {
        self.key
    }
    fn end(&self) -> u64 {
        self.key_end()
    }
    fn keybits(&self) -> u8 {
        self.keybits
    }
}

/// The key bits below an aligned `bits` range (all ones for 64).
pub fn low_mask(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// The child being inserted into a full table: its range and blockref type.
#[derive(Debug, Clone, Copy)]
pub struct Child {
    /// First key.
    pub key: u64,
    /// log2 of the range's size.
    pub keybits: u8,
    /// Blockref type (DATA picks the file rule; anything else the directory rule).
    pub btype: u8,
}

impl Child {
    fn end(&self) -> u64 {
        key_end(self.key, self.keybits)
    }
}

/// The full table being split: its range's key bits and how many blockrefs it holds at most.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// Key bits of its range (64 for an inode's blockset).
    pub keybits: u8,
    /// Blockrefs it holds at most.
    pub cap: usize,
}

/// An indirect block planned for a full table: its range and the blockrefs moving into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// First key of its range.
    pub key: u64,
    /// Key bits of its range.
    pub keybits: u8,
    /// Blockrefs of the table moving into it.
    pub moving: usize,
    /// Whether the new child lies in its range.
    pub child_in: bool,
}

/// `hammer2_chain_indkey_dir`, for directory entries and inodes: starting from the range of the
/// key being created (`ckey`/`cbits`), the smallest aligned range covering it and every
/// blockref of the table, counting how many blockrefs lie in each half; cut in half, then
/// expanded one keybit at a time until it spans at least `ncount` keys (each widening moves
/// every count to the side `ckey` lies on), and the side with more blockrefs kept (the low one
/// on a tie). Returns the new block's key and keybits.
///
/// DEVIATION: the expansion stops one keybit below the table's own range (`limit`). HAMMER2
/// lets an expanded block cover more than its parent (its lookups recurse through every
/// matching key space); lookups here rely on ranges nesting strictly. Where the cap stops a
/// widening, every count has moved to the new key's side already, so the block takes the new
/// key and the split still makes room.
pub fn indkey_dir<R: Ranged>(
    slots: &[R],
    ckey: u64,
    cbits: u8,
    ncount: usize,
    limit: u8,
) -> (u64, u8) {
    let top = |bits: u8, k: u64| bits > 0 && bits <= 64 && k & (1u64 << (bits - 1)) != 0;
    let (mut bits, mut lo, mut hi) = (cbits.min(64), 0usize, 0usize);
    for s in slots {
        let mut nbits = bits.max(s.keybits());
        while nbits < 64 && (ckey ^ s.key()) & !low_mask(nbits) != 0 {
            nbits += 1;
        }
        // A wider range: the blockrefs counted so far all lie in the half `ckey` lies in.
        if nbits != bits {
            if top(nbits, ckey) {
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
    // Half of the covering range, then the expansion.
    let mut bits = bits.saturating_sub(1).min(63);
    while bits < limit && bits < 63 && (1u64 << bits) < ncount as u64 {
        bits += 1;
        if ckey & (1u64 << bits) != 0 {
            hi += lo;
            lo = 0;
        } else {
            lo += hi;
            hi = 0;
        }
    }
    let key = if hi > lo {
        ckey | 1u64 << bits
    } else {
        ckey & !(1u64 << bits)
    };
    (key & !low_mask(bits), bits)
}

/// `hammer2_chain_indkey_file`, for data blocks: the aligned range of `ncount` blocks of the
/// table's smallest blockref (the lowest-keyed one among equals), at most 63 keybits. Returns
/// the new block's key and keybits.
pub fn indkey_file<R: Ranged>(slots: &[R], ckey: u64, ncount: usize) -> (u64, u8) {
    let (mut key, mut bits) = (ckey, 64u8);
    for s in slots {
        if s.keybits() < bits || (s.keybits() == bits && s.key() < key) {
            (key, bits) = (s.key(), s.keybits());
        }
    }
    let bits = bits.saturating_add(ncount.trailing_zeros() as u8).min(63);
    (key & !low_mask(bits), bits)
}

/// How a split of the full table `t` (blockrefs `slots`, sorted) by the range `key`/`keybits`
/// goes for the child `c`. `None` unless the range nests strictly in `t`'s, every blockref
/// lies wholly inside or outside it (one inside narrower than it), the block of `ncount`
/// blockrefs holds what it gets, and the table has room for `c` afterwards.
fn moves<R: Ranged>(
    slots: &[R],
    t: Table,
    c: &Child,
    (key, keybits): (u64, u8),
    ncount: usize,
) -> Option<Plan> {
    let end = key_end(key, keybits);
    let inside = |k: u64, kend: u64, bits: u8| -> Option<bool> {
        if k > end || kend < key {
            Some(false)
        } else if k >= key && kend <= end && bits < keybits {
            Some(true)
        } else {
            // Straddles the range's edge, covers it, or is as wide.
            None
        }
    };
    if keybits >= t.keybits {
        return None;
    }
    let mut moving = 0;
    for s in slots {
        if inside(s.key(), s.end(), s.keybits())? {
            moving += 1;
        }
    }
    let child_in = inside(c.key, c.end(), c.keybits)?;
    let fits = moving + usize::from(child_in) <= ncount;
    // The table loses `moving` blockrefs, gains the new block's, and `c`'s unless it moved.
    let room = slots.len() + 1 + usize::from(!child_in) <= t.cap + moving;
    (fits && room).then_some(Plan {
        key,
        keybits,
        moving,
        child_in,
    })
}

/// The indirect block of `ncount` blockrefs the full table `t` (blockrefs `slots`, sorted by
/// key, ranges disjoint) gets for the child `c` (`hammer2_chain_create_indirect`); `None` when
/// no range makes room.
///
/// DEVIATION: when the data-block range would not make room in one step (a sparse file: the
/// range around the smallest block holds no other), HAMMER2 wraps what it holds and tries
/// again, one indirect block per pass; here the directory rule is used for that split, which
/// makes room, so an insert makes at most one indirect block.
pub fn plan<R: Ranged>(slots: &[R], t: Table, c: &Child, ncount: usize) -> Option<Plan> {
    let limit = t.keybits.saturating_sub(1);
    let file = (c.btype == BREF_TYPE_DATA).then(|| indkey_file(slots, c.key, ncount));
    let dir = || indkey_dir(slots, c.key, c.keybits, ncount, limit);
    file.into_iter()
        .chain(core::iter::once_with(dir))
        .find_map(|range| moves(slots, t, c, range, ncount))
}
