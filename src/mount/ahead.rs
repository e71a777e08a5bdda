//! Writing a store's new DATA blocks ahead of its commit, while the sync threads still run.
//!
//! A commit writes every changed DATA block, then the tables above them and a volume header.
//! In a first sync almost all of its time is those DATA blocks, and none of it can start
//! before the sync passes are done. Copy-on-write lets them go earlier: a block written to
//! space the last commit does not reach changes nothing any header names, so it may be
//! written at any time before the header that names it. [`WriteAhead`] opens the commit's
//! transaction when the sync starts; [`WriteAhead::place`], called on a thread of the host's
//! while the sync threads run, writes the DATA blocks the store's journal names as changed,
//! each allocated in that transaction, and remembers each block with the chain's header and
//! payload version. [`commit_ahead`] then commits in the same transaction: a DATA chain
//! still at the header and version its block was written for takes that block unwritten;
//! one changed since is written again, and the block written ahead is given back to the
//! transaction's free space, as is the block of a chain deleted meanwhile.
//!
//! DEVIATION: HAMMER2 writes a chain's block when its flush reaches the chain. The blocks
//! are the same (a DATA payload is written as it is held, with the check code carried with
//! it or computed as the flush would), only written earlier; a crash before the header
//! leaves them in free space, where a crash in HAMMER2's flush leaves its blocks too.
//!
//! The transaction is the volume's one writer until it commits or is dropped: no other
//! commit may run on the volume meanwhile (two PFSs of one volume synced together commit
//! without it). Dropping a [`WriteAhead`] without committing loses nothing: the blocks it
//! wrote are in free space, and the next commit learns the volume's space anew.

use alloc::vec::Vec;

use super::{begin, place_carried, Mounted};
use crate::media::{Blockref, BREF_TYPE_DATA};
use crate::store::cache::PayVer;
use crate::store::{ChainId, Store};
use crate::volume::{BlockDev, Txn, Volume};
use crate::Result;

/// Blocks written ahead of one commit at most: past them the commit writes the rest (a
/// host commits when its changed data pass its cache budget, far below this).
pub const MAX_AHEAD: usize = 1 << 20;

/// A DATA block written ahead: the chain, its header and payload version it was written
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

/// A commit's transaction opened ahead of it, writing DATA blocks while the store changes
/// (see the module).
pub struct WriteAhead<'v, D: BlockDev> {
    pub(super) txn: Txn<'v, D>,
    pub(super) placed: Vec<Placed>,
    /// Journal entries looked at so far.
    seen: usize,
    bytes: u64,
}

/// Open the transaction of the next commit of `m` on `vol`, to write DATA blocks ahead of
/// it ([`WriteAhead::place`]) and commit with [`commit_ahead`]. The space cache of `m` moves
/// into the transaction: dropped without committing, the next commit reads the volume's
/// space again.
pub fn write_ahead<'v, D: BlockDev>(
    vol: &'v Volume<D>,
    m: &mut Mounted,
) -> Result<WriteAhead<'v, D>> {
    Ok(WriteAhead {
        txn: begin(vol, m)?,
        placed: Vec::new(),
        seen: 0,
        bytes: 0,
    })
}

impl<D: BlockDev> WriteAhead<'_, D> {
    /// Look at up to `max` journal entries of `store` not looked at yet and write the DATA
    /// block of each changed chain they name whose payload is in memory. Returns how many
    /// entries were looked at (0: none new). A chain that cannot be looked at now (gone,
    /// being read back, or lent to another writer) is left to the commit. Safe while sync
    /// threads change the store; never while a commit or an eviction of it runs. A device
    /// error, or a full volume, is returned: the host then drops this and commits as usual.
    pub fn place(&mut self, store: &Store, max: usize) -> Result<usize> {
        let touches = store.journal_from(self.seen, max)?;
        for (i, t) in touches.iter().enumerate() {
            if i % 64 == 63 {
                store.host().relax();
            }
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
            let now = place_carried(&mut self.txn, &was, loan.bytes(), carried)?;
            drop(loan);
            self.bytes += 1u64 << now.size_radix();
            self.placed.push(Placed {
                id,
                ver,
                was,
                now,
                used: false,
            });
        }
        Ok(touches.len())
    }

    /// Blocks written ahead so far, and their bytes.
    pub fn written(&self) -> (usize, u64) {
        (self.placed.len(), self.bytes)
    }

    /// Give up without committing (the store did not change, or a write failed): the blocks
    /// written stay in free space, and `m` (the mount this was opened on, not committed
    /// since) takes back the space its transaction knew, so the next commit does not read
    /// the volume's trees again.
    pub fn abandon(self, m: &mut Mounted) {
        if m.space.is_none() {
            m.space = self.txn.space;
        }
    }
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
