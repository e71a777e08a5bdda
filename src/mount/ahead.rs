//! Writing a store's new DATA blocks ahead of its commit, while the sync threads still run.
//!
//! A commit writes every changed DATA block, then the tables above them and a volume header.
//! In a first sync almost all of its time is those DATA blocks, and none of it can start
//! before the sync passes are done. Copy-on-write lets them go earlier: a block written to
//! space no header copy reaches changes nothing any header names, so it may be written at
//! any time before the header that names it. [`write_ahead`] takes a PFS's mount for the
//! next commit; [`WriteAhead::place`], called on a thread of the host's while the sync
//! threads run, opens that commit's transaction and writes the DATA blocks the store's
//! journal names as changed, each allocated in it, remembering each block with the chain's
//! header and payload version. [`commit_ahead`] then commits in the same transaction: a
//! DATA chain still at the header and version its block was written for takes that block
//! unwritten; one changed since is written again, and the block written ahead is given back
//! to the transaction's free space, as is the block of a chain deleted meanwhile.
//!
//! DEVIATION: HAMMER2 writes a chain's block when its flush reaches the chain. The blocks
//! are the same (a DATA payload is written as it is held, with the check code carried with
//! it or computed as the flush would), only written earlier; a crash before the header
//! leaves them in free space, where a crash in HAMMER2's flush leaves its blocks too.
//!
//! The transaction must be the volume's one writer until it commits or is given up: a
//! [`WriteAhead`] holds its mount (no other commit of that PFS can run meanwhile), and the
//! host must not commit another PFS of the same volume in between (the CLI syncs one PFS
//! per volume and locks each image). Another writer's commit meanwhile is found before each
//! batch of writes and before the commit ([`Txn::still_current`]: `Busy`, nothing more
//! written), as a commit finds one at its begin. Given up ([`WriteAhead::abandon`], or
//! dropped), nothing is lost: the blocks written are in free space.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{begin, commit_in, place_carried, Mounted};
use crate::media::{Blockref, VolumeHeader, BREF_TYPE_DATA};
use crate::store::cache::PayVer;
use crate::store::{ChainId, Store};
use crate::volume::{BlockDev, Txn, Volume};
use crate::Result;

/// Blocks written ahead of one commit at most (a few MiB of [`Placed`]): past them the
/// commit writes the rest. A host commits when its changed data pass its cache budget
/// (4096 blocks of 64 KiB at the CLI's default), far below this.
pub const MAX_AHEAD: usize = 1 << 15;

/// Bytes one [`WriteAhead::place`] writes at most: a host loop calling it between its own
/// checks stays responsive on a slow device.
pub const PLACE_BYTES: u64 = 4 << 20;

/// A DATA block written ahead: the chain, the header and payload version it was written
/// for, and the blockref written.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placed {
    pub(super) id: ChainId,
    pub(super) ver: PayVer,
    pub(super) was: Blockref,
    pub(super) now: Blockref,
    /// Taken by the commit's walk.
    pub(super) used: bool,
}

/// The next commit of one PFS, its DATA blocks written while the store changes (see the
/// module).
pub struct WriteAhead<'a, D: BlockDev> {
    vol: &'a Volume<D>,
    store: &'a Store,
    m: &'a mut Mounted,
    /// Opened by the first block written.
    txn: Option<Txn<'a, D>>,
    placed: Vec<Placed>,
    /// Journal entries looked at so far.
    seen: usize,
    bytes: u64,
}

/// Take `m`, the mount of `store`'s PFS on `vol`, for a commit whose DATA blocks are written
/// ahead of it ([`WriteAhead::place`]); commit with [`commit_ahead`].
pub fn write_ahead<'a, D: BlockDev>(
    vol: &'a Volume<D>,
    store: &'a Store,
    m: &'a mut Mounted,
) -> WriteAhead<'a, D> {
    WriteAhead {
        vol,
        store,
        m,
        txn: None,
        placed: Vec::new(),
        seen: 0,
        bytes: 0,
    }
}

impl<'a, D: BlockDev> WriteAhead<'a, D> {
    /// Look at up to `max` journal entries of the store not looked at yet and write the DATA
    /// block of each changed chain they name whose payload is in memory, at most
    /// [`PLACE_BYTES`] (the first opens the commit's transaction, which takes the mount's
    /// space cache). Returns how many entries were looked at (0: none new). A chain that
    /// cannot be looked at now (gone, being read back, lent) is left to the commit. Safe
    /// while sync threads change the store; never while an eviction of it runs. A device
    /// error, a full volume or another writer's commit since the transaction began (`Busy`)
    /// is returned: the host then gives this up ([`WriteAhead::abandon`]) and commits as
    /// usual.
    pub fn place(&mut self, max: usize) -> Result<usize> {
        let store = self.store;
        let touches = store.journal_from(self.seen, max)?;
        let (mut looked, mut wrote, mut checked) = (0, 0u64, false);
        for (i, t) in touches.iter().enumerate() {
            if i % 64 == 63 {
                store.host().relax();
            }
            if wrote >= PLACE_BYTES {
                break;
            }
            looked += 1;
            self.seen += 1;
            if self.placed.len() >= MAX_AHEAD {
                continue;
            }
            let Some(table) = t.table else { continue };
            let Ok(Some(id)) = store.child_at(table, t.key) else {
                continue;
            };
            let Ok(Some((was, loan, carried, ver))) = store.lend_data(id) else {
                continue;
            };
            if was.btype != BREF_TYPE_DATA || was.size_radix() == 0 {
                continue;
            }
            self.placed.try_reserve(1)?;
            let txn = match &mut self.txn {
                // Checked once a batch: another writer may have committed since.
                Some(txn) if !checked => {
                    txn.still_current()?;
                    txn
                }
                Some(txn) => txn,
                // Its begin checks.
                None => self.txn.insert(begin(self.vol, self.m)?),
            };
            checked = true;
            let now = place_carried(txn, &was, loan.bytes(), carried)?;
            drop(loan);
            wrote += 1u64 << now.size_radix();
            self.bytes += 1u64 << now.size_radix();
            self.placed.push(Placed {
                id,
                ver,
                was,
                now,
                used: false,
            });
        }
        Ok(looked)
    }

    /// Blocks written ahead so far, and their bytes.
    pub fn written(&self) -> (usize, u64) {
        (self.placed.len(), self.bytes)
    }

    /// The mount taken.
    pub fn mounted(&self) -> &Mounted {
        self.m
    }

    /// Give up without committing (the store did not change, or a write failed): the blocks
    /// written stay in free space, and the mount, given back, takes back the space its
    /// transaction knew (the next commit does not read the volume's trees again).
    pub fn abandon(self) -> &'a mut Mounted {
        if let Some(txn) = self.txn {
            if self.m.space.is_none() {
                self.m.space = txn.space;
            }
        }
        self.m
    }
}

/// Commit the store `ahead` was taken for, in its transaction, taking the DATA blocks it
/// wrote where their chains did not change since (a [`super::commit_with_progress`]
/// otherwise: `progress` as there). Gives the mount back, with the commit's result: on an
/// error the volume keeps its last commit, as with [`super::commit`], and a plain commit may
/// follow (after a full volume, it has the space the blocks written ahead held).
pub fn commit_ahead<'a, D: BlockDev>(
    ahead: WriteAhead<'a, D>,
    progress: &mut dyn FnMut(u64),
) -> (&'a mut Mounted, Result<Box<VolumeHeader>>) {
    let WriteAhead {
        vol,
        store,
        m,
        txn,
        placed,
        ..
    } = ahead;
    let r = commit_in(vol, store, &mut *m, txn.map(|t| (t, placed)), progress);
    (m, r)
}

/// The block written ahead for chain `id` of `store`, if one was written for the header and
/// payload version the chain holds now (`placed` sorted by chain); it is marked taken.
pub(super) fn take_placed(
    placed: &mut [Placed],
    store: &Store,
    id: ChainId,
) -> Result<Option<(Blockref, PayVer)>> {
    let key = (id.idx, id.gen);
    let from = placed.partition_point(|p| (p.id.idx, p.id.gen) < key);
    let (was, ver) = match placed.get(from) {
        Some(p) if p.id == id => store.versioned_bref(id)?,
        _ => return Ok(None),
    };
    for p in placed[from..].iter_mut().take_while(|p| p.id == id) {
        if !p.used && p.ver == ver && p.was == was {
            p.used = true;
            return Ok(Some((p.now, ver)));
        }
    }
    Ok(None)
}
