//! Payloads on demand: a store given a [`PayloadSource`] keeps the block of a clean DATA
//! chain or inode (one whose bytes are where its blockref says on the media) only while it
//! fits in a byte budget, and reads it again through the source when it is asked for.
//!
//! Every chain's header and tree links stay resident; DATA payloads and inode bodies (but
//! the PFS root's) come and go. Of an inode whose body is on the media the store keeps only
//! its [`super::inode::InodeSummary`]: whether it is a directory (read under its lock: the
//! shape of its table depends on it) and a digest of its body (by which a cluster join
//! compares clean inodes of two volumes); everything else (`meta`, a name lookup) reads the
//! body outside the lock. A clean
//! inode's header holds the check code of its block on the media, table included, by which
//! a read verifies it; the body read is decoded and its table cleared (the store holds the
//! table in its chains), so a copy of it carries no check code. A chain is in one of three
//! states ([`Where`]):
//! - `Pinned`: its payload is in memory and never evicted: every chain of a store without a
//!   source, every payload that is neither DATA nor an inode, the PFS root, and a payload
//!   changed by an insert, replace or modify until a commit has written it (the commit's
//!   [`Store::set_flushed`] then releases it when the chain still holds the very payload
//!   written, by its payload version: a DATA payload written as the whole block, or one the
//!   commit padded with zeros to a whole block, which reads back as that prefix of the block,
//!   verified against the chain's own check code, the padding zeros; an inode, always 1 KiB,
//!   is released and takes the check code of the block written, as a clean inode whose table
//!   a commit rewrote does);
//! - `Cached`: its clean payload is in memory, counted against the budget, on the CLOCK ring;
//! - `OnMedia`: its payload is not in memory; a read goes to the source.
//!
//! A miss reads the block outside the arena lock (the source may sleep on device I/O) and
//! installs it only if the chain is still `OnMedia` at the payload version the read was
//! started for: a chain replaced meanwhile never gets the stale bytes. Before an install the
//! ring evicts until the new block fits, so the cached bytes never pass the budget; a block
//! larger than the whole budget is handed to the reader without being cached. Eviction is
//! CLOCK: a hit sets the chain's reference bit (under the shared lock), and the hand gives a
//! referenced chain one more turn, at most [`SWEEP`] of them per victim, so the work under the
//! lock is bounded whatever the ring's length.
//!
//! Changed (pinned) DATA payloads and inodes are outside the budget. A host learns when they
//! pass it ([`Store::set_pinned_alarm`], to commit) and may bound them: past a pinned limit
//! ([`Store::set_pinned_limit`]) the node's sync passes end at their next chain operation
//! until a commit releases the bytes.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Arena, Body, ChainId, Sealed, Store};
use crate::media::{self, Blockref, InodeData, InodeMeta};
use crate::{Error, Result};

/// Where a store reads the payloads of clean chains it does not keep in memory.
pub trait PayloadSource: Send + Sync {
    /// The block `bref` names, as stored (compressed data stay compressed), its check code
    /// verified: [`Error::Io`] for a failed device read or damaged bytes, [`Error::NoMem`]
    /// when the buffer cannot be allocated. May sleep (device I/O); never called under a
    /// store's spin lock.
    fn read(&self, bref: &Blockref) -> Result<Vec<u8>>;
}

/// A store's payload cache, as [`Store::cache_stats`] reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// The budget: cached (clean, evictable) payload bytes never exceed it.
    pub budget: usize,
    /// Clean payload bytes in memory now.
    pub used: usize,
    /// The most clean payload bytes ever in memory at once.
    pub peak: usize,
    /// Blocks read through the source.
    pub reads: u64,
    /// Bytes read through the source.
    pub read_bytes: u64,
    /// Reads answered from memory by a cached payload.
    pub hits: u64,
    /// Payloads evicted to make room.
    pub evictions: u64,
    /// Bytes of DATA payloads and inodes pinned in memory now (changed, not yet written by
    /// a commit), outside the budget.
    pub pinned: usize,
    /// The most DATA payload and inode bytes ever pinned at once.
    pub pinned_peak: usize,
    /// Reads through the source that failed (a device error or a damaged block: EIO for
    /// the chain that needed it).
    pub read_errors: u64,
    /// The `data_off` (offset and size radix) of the block of the last failed read; 0 when
    /// none failed.
    pub last_error: u64,
}

/// What one chain in memory costs, as [`Store::chain_bytes`] counts it: its arena slot, its
/// blockref in its parent's table, and its host lock (an estimate: a host's lock is its own).
pub const CHAIN_BYTES: usize =
    core::mem::size_of::<super::Slot>() + super::children::SLOT_BYTES + LOCK_BYTES;

/// The least chain budget ([`Store::set_chain_budget`]): room for 4096 chains. Reading back
/// one stub brings at most an indirect block's 128 children and their tables (640 chains),
/// and a pass reads back at most a few on its way to the next difference: after an eviction
/// to half the budget, a pass has 1.5 budgets before it holds, well past that.
pub const MIN_CHAIN_BUDGET: usize = 4096 * CHAIN_BYTES;

/// What a host's chain lock is counted as.
const LOCK_BYTES: usize = 64;

/// The bytes `live` chains are counted as.
pub(super) fn chain_bytes(live: usize) -> usize {
    live.saturating_mul(CHAIN_BYTES)
}

/// Referenced chains the hand passes over, at most, before it evicts the one it stands on.
pub(super) const SWEEP: usize = 64;

/// The smallest block a cached payload has (1 KiB): bounds the evictions one install needs.
const BLOCK_MIN: usize = 1 << media::RADIX_MIN;

/// No chain (an empty ring, an unlinked chain).
const NIL: u32 = u32::MAX;

/// A payload version ([`Store::read_versioned`]): 64 bits, so that it never wraps (a commit
/// must not mistake a newer payload for the one it wrote).
pub type PayVer = u64;

/// Where a chain's payload is (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Where {
    Pinned,
    Cached,
    OnMedia,
}

/// A chain's payload state: where it is, its version, and its links on the CLOCK ring.
pub(super) struct Pay {
    pub(super) at: Where,
    /// Moves with every install of a new payload (insert, replace, modify): a commit
    /// releases the payload it wrote only while the chain still holds that version.
    pub(super) ver: PayVer,
    prev: u32,
    next: u32,
    /// The payload's length when the block on the media is longer (a commit padded it to a
    /// whole block); 0: the payload is the whole block.
    pub(super) trim: u32,
    /// Set by a hit, cleared by the passing hand.
    referenced: AtomicBool,
}

impl Pay {
    /// A payload in memory, not evictable, at version `ver`.
    pub(super) fn pinned(ver: PayVer) -> Pay {
        Pay::new(Where::Pinned, ver)
    }
    /// A payload left on the media, at version `ver`.
    pub(super) fn on_media(ver: PayVer) -> Pay {
        Pay::new(Where::OnMedia, ver)
    }
    fn new(at: Where, ver: PayVer) -> Pay {
        Pay {
            at,
            ver,
            prev: NIL,
            next: NIL,
            trim: 0,
            referenced: AtomicBool::new(false),
        }
    }
}

/// A DATA payload lent out of its store ([`Store::lend_data`]): while the loan lasts, the
/// buffer at `addr` is neither changed nor freed. A modify of its chain waits for the loan's
/// end; a replace, a release or a free of its chain parks the buffer here instead of freeing
/// it, and the loan's end frees it.
pub(super) struct Loan {
    /// The address of the lent bytes (a DATA payload's first byte).
    addr: usize,
    /// The lent buffer once its chain let go of it.
    parked: Option<Body>,
}

/// The bytes of a DATA payload borrowed from a store without copying them
/// ([`Store::lend_data`]): they stay as they were lent, and in memory, until this is
/// dropped, whatever happens to the chain meanwhile. One at a time per store.
pub struct DataLoan<'a> {
    store: &'a Store,
    ptr: *const u8,
    len: usize,
}

impl DataLoan<'_> {
    /// The lent bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr .. ptr + len` is the buffer of a DATA payload the store held when the
        // loan began. Until this loan is dropped the store neither changes it (a modify of
        // its chain waits) nor frees it (a replace, a release or a free of its chain parks it
        // with the loan: `Arena::surrender`); moving the vector that owns it moves no byte.
        // The bytes were written before the arena lock that began the loan was taken.
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for DataLoan<'_> {
    fn drop(&mut self) {
        let parked = self.store.arena.write().loan.take();
        // Freed outside the lock.
        drop(parked);
    }
}

/// Whether a chain of header `b` may leave its payload on the media: a DATA chain with a
/// block, or an inode but the PFS root (which a commit keeps in memory and changes under the
/// lock). A DIRENT's long name stays resident: the store reads it under its lock.
pub(super) fn evictable(b: &Blockref) -> bool {
    match b.btype {
        media::BREF_TYPE_DATA => b.size_radix() != 0,
        media::BREF_TYPE_INODE => {
            b.size_radix() == media::INODE_RADIX && b.flags & media::BrefFlags::PFSROOT.bits() == 0
        }
        _ => false,
    }
}

/// The payload the block `bytes` of header `bref` holds, as the store keeps it: a DATA
/// block as stored; an inode decoded with its block table cleared, as
/// [`super::inode::clear_table`] leaves it (the store holds the table in its chains): EIO
/// when its meta does not decode, as for a block failing its check. The table is not
/// decoded, only dropped; the inode is built zeroed on the heap and filled section by
/// section, so that no whole inode sits in the frame of a sync thread's read (a kernel
/// stack is small).
#[inline(never)]
pub(super) fn decode(bref: &Blockref, bytes: Vec<u8>) -> Result<Body> {
    if bref.btype != media::BREF_TYPE_INODE {
        return Ok(Body::Data(bytes));
    }
    if bytes.len() != media::INODE_BYTES {
        return Err(Error::Io);
    }
    let (meta_at, name_at) = (
        media::INODE_META_BYTES,
        media::INODE_META_BYTES + media::FILENAME_BYTES,
    );
    let section = |from: usize, to: usize| bytes.get(from..to).ok_or(Error::Io);
    let meta = InodeMeta::decode(section(0, meta_at)?).map_err(|_| Error::Io)?;
    let mut ino = InodeData::try_zeroed_box()?;
    ino.meta = meta;
    ino.filename.copy_from_slice(section(meta_at, name_at)?);
    if meta.is_directdata() {
        ino.u.copy_from_slice(section(name_at, media::INODE_BYTES)?);
    }
    Ok(Body::Inode(ino))
}

/// The cache's state under the arena lock: the CLOCK ring (through the chains' [`Pay`]
/// links) and its byte counts.
pub(super) struct Ring {
    hand: u32,
    budget: usize,
    used: usize,
    peak: usize,
    evictions: u64,
    pinned: usize,
    pinned_peak: usize,
    /// The pinned bytes past which the node's sync passes hold ([`Store::set_pinned_limit`]);
    /// 0: none.
    limit: usize,
    /// Called when the pinned bytes pass the budget ([`Store::set_pinned_alarm`]), and when
    /// the chains in memory pass theirs.
    alarm: Option<alloc::boxed::Box<dyn Fn() + Send + Sync>>,
    /// The bytes of chains in memory past which the alarm rings; past twice that every
    /// node's sync passes hold ([`Store::set_chain_budget`]). 0: none.
    pub(super) chain_budget: usize,
    /// The bytes of chains the last eviction left in memory (chains it could not take):
    /// both bounds are counted above that too, so what no eviction can take never holds
    /// the passes for good.
    pub(super) chain_floor: usize,
}

impl Ring {
    pub(super) fn new(budget: usize) -> Ring {
        Ring {
            hand: NIL,
            budget,
            used: 0,
            peak: 0,
            evictions: 0,
            pinned: 0,
            pinned_peak: 0,
            limit: 0,
            alarm: None,
            chain_budget: 0,
            chain_floor: 0,
        }
    }
}

/// The source of a store's payloads and its counters (outside the arena lock).
pub(super) struct Source {
    pub(super) src: alloc::boxed::Box<dyn PayloadSource>,
    reads: AtomicU64,
    read_bytes: AtomicU64,
    hits: AtomicU64,
    read_errors: AtomicU64,
    last_error: AtomicU64,
}

impl Source {
    pub(super) fn new(src: alloc::boxed::Box<dyn PayloadSource>) -> Source {
        Source {
            src,
            reads: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            last_error: AtomicU64::new(0),
        }
    }

    /// Count a failed read of the block `bref` names.
    fn failed(&self, bref: &Blockref) {
        self.read_errors.fetch_add(1, Ordering::Relaxed);
        self.last_error.store(bref.data_off, Ordering::Relaxed);
    }
}

impl Arena {
    /// Whether the chains in memory are past twice the budget of
    /// [`Store::set_chain_budget`].
    pub(super) fn past_chain_limit(&self) -> bool {
        self.ring.as_ref().is_some_and(|r| {
            let b = r.chain_budget;
            b != 0 && chain_bytes(self.live) > (b * 2).max(r.chain_floor.saturating_add(b))
        })
    }

    /// The bytes of chains in memory past which the alarm rings and a host evicts: the
    /// budget, or half a budget above what the last eviction could not take.
    pub(super) fn chain_alarm_at(&self) -> Option<usize> {
        let r = self.ring.as_ref()?;
        let b = r.chain_budget;
        (b != 0).then(|| b.max(r.chain_floor.saturating_add(b / 2)))
    }

    /// `live` chains were in memory before this change: ring the alarm if the chains pass
    /// [`Arena::chain_alarm_at`] now.
    pub(super) fn chains_grew(&self, before: usize) {
        let (Some(r), Some(at)) = (self.ring.as_ref(), self.chain_alarm_at()) else {
            return;
        };
        let (was, now) = (chain_bytes(before), chain_bytes(self.live));
        if was <= at && now > at {
            if let Some(alarm) = r.alarm.as_ref() {
                alarm();
            }
        }
    }

    /// Whether the pinned bytes are past the limit of [`Store::set_pinned_limit`].
    pub(super) fn past_pinned_limit(&self) -> bool {
        self.ring
            .as_ref()
            .is_some_and(|r| r.limit != 0 && r.pinned > r.limit)
    }

    /// The payload state of the chain in slot `idx` (it is alive: it is on the ring).
    fn pay_at(&mut self, idx: u32) -> Result<&mut Pay> {
        match self.slots.get_mut(idx as usize) {
            Some(super::Slot { chain: Some(c), .. }) => Ok(&mut c.pay),
            _ => Err(Error::Invalid),
        }
    }

    /// Put slot `idx` on the ring, just behind the hand (the last the hand will reach).
    fn link(&mut self, idx: u32) -> Result<()> {
        let Some(ring) = self.ring.as_ref() else {
            return Err(Error::Invalid);
        };
        let hand = ring.hand;
        if hand == NIL {
            let p = self.pay_at(idx)?;
            (p.prev, p.next) = (idx, idx);
            if let Some(r) = self.ring.as_mut() {
                r.hand = idx;
            }
            return Ok(());
        }
        let last = self.pay_at(hand)?.prev;
        let p = self.pay_at(idx)?;
        (p.prev, p.next) = (last, hand);
        self.pay_at(last)?.next = idx;
        self.pay_at(hand)?.prev = idx;
        Ok(())
    }

    /// Take slot `idx` off the ring.
    fn unlink(&mut self, idx: u32) -> Result<()> {
        let p = self.pay_at(idx)?;
        let (prev, next) = (p.prev, p.next);
        (p.prev, p.next) = (NIL, NIL);
        let ring = self.ring.as_mut().ok_or(Error::Invalid)?;
        if next == idx {
            ring.hand = NIL;
            return Ok(());
        }
        if ring.hand == idx {
            ring.hand = next;
        }
        self.pay_at(prev)?.next = next;
        self.pay_at(next)?.prev = prev;
        Ok(())
    }

    /// Take chain `id`'s payload off the ring, if it is cached: it leaves the budget and is
    /// pinned (its bytes stay). A payload on the media stays there.
    pub(super) fn unring(&mut self, id: ChainId) -> Result<()> {
        if self.off_ring(id)? {
            self.count_pinned(id, true)?;
        }
        Ok(())
    }

    /// Take chain `id`'s payload out of both the budget and the pinned bytes, for a caller
    /// that replaces or frees it under this lock: a cached one leaves the ring pinned but not
    /// counted (counting it in and out again would ring the alarm and raise the peak for
    /// bytes about to go), a pinned one is counted out. Undone by `count_pinned(id, true)`.
    pub(super) fn uncount(&mut self, id: ChainId) -> Result<()> {
        if self.off_ring(id)? {
            return Ok(());
        }
        self.count_pinned(id, false)
    }

    /// Take chain `id`'s payload off the ring and the budget, pinned but not counted, if it
    /// is cached (whether it was).
    fn off_ring(&mut self, id: ChainId) -> Result<bool> {
        let c = self.get(id)?;
        if c.pay.at != Where::Cached {
            return Ok(false);
        }
        let len = payload_len(&c.body);
        self.unlink(id.idx)?;
        if let Some(r) = self.ring.as_mut() {
            r.used -= len;
        }
        self.get_mut(id)?.pay.at = Where::Pinned;
        Ok(true)
    }

    /// Count chain `id`'s payload into (`add`) or out of the pinned bytes, when it is a
    /// pinned evictable payload (DATA, an inode) of a store with a cache.
    pub(super) fn count_pinned(&mut self, id: ChainId, add: bool) -> Result<()> {
        let len = self.pinned_len(id)?;
        if add {
            self.repin(0, len);
        } else {
            self.repin(len, 0);
        }
        Ok(())
    }

    /// The bytes chain `id` counts in the pinned bytes: its payload's when it is a pinned
    /// evictable payload (DATA, an inode), else 0.
    pub(super) fn pinned_len(&self, id: ChainId) -> Result<usize> {
        let c = self.get(id)?;
        if c.pay.at != Where::Pinned || !evictable(&c.bref) {
            return Ok(0);
        }
        Ok(payload_len(&c.body))
    }

    /// A counted payload went from `was` to `now` pinned bytes, as one step: the alarm rings
    /// only when the step itself passes the budget (a change in place counted out and in
    /// again would ring it anew while the store stays past it).
    pub(super) fn repin(&mut self, was: usize, now: usize) {
        let Some(r) = self.ring.as_mut() else {
            return;
        };
        let before = r.pinned;
        r.pinned = r.pinned.saturating_sub(was).saturating_add(now);
        r.pinned_peak = r.pinned_peak.max(r.pinned);
        if before <= r.budget && r.pinned > r.budget {
            if let Some(alarm) = r.alarm.as_ref() {
                alarm();
            }
        }
    }

    /// Put chain `id`'s pinned payload back on the media (it is the block its header names:
    /// clean), in a store with a cache. Returns the payload to free outside the lock.
    pub(super) fn unpin(&mut self, id: ChainId) -> Option<Body> {
        self.ring.as_ref()?;
        let c = self.get(id).ok()?;
        if c.pay.at != Where::Pinned || !evictable(&c.bref) {
            return None;
        }
        self.count_pinned(id, false).ok()?;
        let c = self.get_mut(id).ok()?;
        c.pay.at = Where::OnMedia;
        let body = c.leave_memory();
        Some(self.surrender(body))
    }

    /// Whether `body` is the buffer lent out ([`Store::lend_data`]), still held by a chain:
    /// it must neither change nor be freed until the loan ends.
    pub(super) fn is_lent(&self, body: &Body) -> bool {
        match (&self.loan, body) {
            (Some(l), Body::Data(d)) => {
                l.parked.is_none() && !d.is_empty() && d.as_ptr() as usize == l.addr
            }
            _ => false,
        }
    }

    /// `body`, leaving its chain (replaced, released, freed): the buffer lent out is kept
    /// with its loan, to be freed when the loan ends, and an empty payload handed back in
    /// its place; any other payload is handed back to be freed.
    pub(super) fn surrender(&mut self, body: Body) -> Body {
        if self.is_lent(&body) {
            if let Some(l) = self.loan.as_mut() {
                l.parked = Some(body);
                return Body::Data(Vec::new());
            }
        }
        body
    }

    /// Evict until `need` more bytes fit in the budget, the evicted payloads moved to `out`
    /// (to be freed outside the lock) without growing it: false when they cannot fit (more
    /// than the budget, at once: nothing is evicted for it; or `out` full first).
    fn make_room(&mut self, need: usize, out: &mut Vec<Body>) -> Result<bool> {
        if !self.ring.as_ref().is_some_and(|r| need <= r.budget) {
            return Ok(false);
        }
        loop {
            let Some(r) = self.ring.as_ref() else {
                return Ok(false);
            };
            if r.used + need <= r.budget {
                return Ok(true);
            }
            if r.hand == NIL || out.len() == out.capacity() {
                return Ok(false);
            }
            let mut victim = r.hand;
            for _ in 0..SWEEP {
                let p = self.pay_at(victim)?;
                if !p.referenced.swap(false, Ordering::Relaxed) {
                    break;
                }
                victim = p.next;
            }
            // The hand moves past the victim (unlinking it from under the hand does).
            if let Some(r) = self.ring.as_mut() {
                r.hand = victim;
            }
            self.unlink(victim)?;
            let c = match self.slots.get_mut(victim as usize) {
                Some(super::Slot { chain: Some(c), .. }) => c,
                _ => return Err(Error::Invalid),
            };
            let body = c.leave_memory();
            c.pay.at = Where::OnMedia;
            let len = payload_len(&body);
            out.push(body);
            if let Some(r) = self.ring.as_mut() {
                r.used -= len;
                r.evictions += 1;
            }
        }
    }
}

/// Bytes of a payload.
fn payload_len(b: &Body) -> usize {
    match b {
        Body::Data(d) => d.len(),
        Body::Inode(_) => media::INODE_BYTES,
    }
}

impl Store {
    /// Read payloads of clean DATA chains and inodes on demand from `src`, keeping at most
    /// `budget` bytes of them in memory (see [`crate::store::cache`]). For a store that is
    /// being loaded: chains inserted with [`Store::insert_on_media`] or
    /// [`Store::insert_inode_on_media`] from now on leave their payload on the media.
    pub fn set_payload_source(&mut self, src: alloc::boxed::Box<dyn PayloadSource>, budget: usize) {
        self.source = Some(Source::new(src));
        self.arena.with_mut(|a| a.ring = Some(Ring::new(budget)));
    }

    /// Call `alarm` whenever the pinned DATA and inode bytes (changed, waiting for a commit)
    /// pass the cache budget, so that a host can commit without polling. It is called under the
    /// store's spin lock, once per crossing: it must not sleep nor touch the store (set a
    /// flag, wake a waiter). No effect on a store without a source.
    pub fn set_pinned_alarm(&mut self, alarm: alloc::boxed::Box<dyn Fn() + Send + Sync>) {
        self.arena.with_mut(|a| {
            if let Some(r) = a.ring.as_mut() {
                r.alarm = Some(alarm);
            }
        });
    }

    /// Hold this node's sync passes while its pinned bytes (changed DATA payloads and
    /// inodes) are past `limit` (0: never): a pass that finds them so at one of its chain
    /// operations ends there (as at a break request: `Error::InProgress`, its finished chains
    /// kept), and a new pass ends at once until a commit releases them. With the pinned alarm
    /// ringing at the budget, a host that commits when it rings keeps the sync's pinned bytes
    /// within `limit` plus one chain's payload (64 KiB at most), whatever the threads' speed.
    /// No effect on a store without a source.
    pub fn set_pinned_limit(&mut self, limit: usize) {
        self.arena.with_mut(|a| {
            if let Some(r) = a.ring.as_mut() {
                r.limit = limit;
            }
        });
    }

    /// Whether the pinned bytes (changed DATA payloads and inodes) are past the limit of
    /// [`Store::set_pinned_limit`]. Asked at every chain operation of a pass: it reads a flag
    /// kept beside the arena lock, not the lock.
    pub fn past_pinned_limit(&self) -> bool {
        self.arena.past_pinned_limit()
    }

    /// Keep the chains in memory near `bytes` (as [`Store::chain_bytes`] counts them; 0:
    /// no bound): the pinned alarm also rings when they pass it, so the host commits and
    /// calls [`Store::evict_to`], and past twice that every node's sync passes hold (they
    /// read this store's chains back too) until it did. No effect on a store without a
    /// source.
    ///
    /// A budget below [`MIN_CHAIN_BUDGET`] is raised to it: a pass must be able
    /// to read back the stubs on its path and copy something before it holds, or it would
    /// hold again at every start.
    pub fn set_chain_budget(&mut self, bytes: usize) {
        let bytes = match bytes {
            0 => 0,
            b => b.max(MIN_CHAIN_BUDGET),
        };
        self.arena.with_mut(|a| {
            if let Some(r) = a.ring.as_mut() {
                r.chain_budget = bytes;
            }
        });
    }

    /// The chain budget in force ([`Store::set_chain_budget`]; 0: none).
    pub fn chain_budget(&self) -> usize {
        self.arena
            .read()
            .ring
            .as_ref()
            .map_or(0, |r| r.chain_budget)
    }

    /// Whether the chains in memory are past twice the budget of
    /// [`Store::set_chain_budget`] (or a budget past what the last eviction could not take):
    /// every node's passes hold. A flag beside the arena lock.
    pub fn past_chain_limit(&self) -> bool {
        self.arena.past_chain_limit()
    }

    /// Whether the chains in memory are past the budget of [`Store::set_chain_budget`] (or
    /// half a budget past what the last eviction could not take): the host commits and
    /// evicts ([`Store::evict_to`] half the budget) with every thread frozen.
    pub fn chains_over(&self) -> bool {
        let a = self.arena.read();
        a.chain_alarm_at()
            .is_some_and(|at| chain_bytes(a.live) > at)
    }

    /// Whether this store reads payloads on demand (it has a [`PayloadSource`]).
    pub fn has_payload_source(&self) -> bool {
        self.source.is_some()
    }

    /// Whether chain `id`'s payload is on the media, not in memory.
    pub fn is_on_media(&self, id: ChainId) -> Result<bool> {
        Ok(self.arena.read().get(id)?.pay.at == Where::OnMedia)
    }

    /// The payload cache's budget, bytes and counters; `None` for a store without a source.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        let s = self.source.as_ref()?;
        let a = self.arena.read();
        let r = a.ring.as_ref()?;
        Some(CacheStats {
            budget: r.budget,
            used: r.used,
            peak: r.peak,
            reads: s.reads.load(Ordering::Relaxed),
            read_bytes: s.read_bytes.load(Ordering::Relaxed),
            hits: s.hits.load(Ordering::Relaxed),
            evictions: r.evictions,
            pinned: r.pinned,
            pinned_peak: r.pinned_peak,
            read_errors: s.read_errors.load(Ordering::Relaxed),
            last_error: s.last_error.load(Ordering::Relaxed),
        })
    }

    /// Count a hit on a chain whose payload state is `pay`, if it is cached (under the
    /// shared lock).
    pub(super) fn hit(&self, pay: &Pay) {
        if pay.at == Where::Cached {
            pay.referenced.store(true, Ordering::Relaxed);
            if let Some(s) = self.source.as_ref() {
                s.hits.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The block `bref` names, read through the source (no lock held), counted; a failed
    /// read (not a failed allocation) counted apart, with the block it was for.
    pub(super) fn fetch(&self, bref: &Blockref) -> Result<Vec<u8>> {
        let s = self.source.as_ref().ok_or(Error::Io)?;
        let bytes = s.src.read(bref).inspect_err(|e| {
            if *e != Error::NoMem {
                s.failed(bref);
            }
        })?;
        s.reads.fetch_add(1, Ordering::Relaxed);
        s.read_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// The payload of a chain of header `bref` on the media: the whole block, or, for one a
    /// commit padded (`trim` bytes of it: [`Store::release`]), those bytes, verified against
    /// the chain's own check code (the block's covers the padding), the padding zeros.
    fn fetch_payload(&self, bref: &Blockref, trim: u32) -> Result<Vec<u8>> {
        if trim == 0 {
            return self.fetch(bref);
        }
        let mut block = *bref;
        block.methods = media::enc_methods(media::CHECK_NONE, bref.comp_method());
        let mut bytes = self.fetch(&block)?;
        let n = trim as usize;
        let padded = bytes
            .get(n..)
            .is_some_and(|pad| pad.iter().all(|&x| x == 0));
        let verified = bytes.get(..n).is_some_and(|p| bref.verify_check(p).is_ok());
        if !padded || !verified {
            if let Some(s) = self.source.as_ref() {
                s.failed(bref);
            }
            return Err(Error::Io);
        }
        bytes.truncate(n);
        Ok(bytes)
    }

    /// Chain `id`'s payload read through the source (it was on the media at version `ver`
    /// with header `bref`; `trim` as [`Store::fetch_payload`] takes it), a copy installed in
    /// the cache when `cache` is set, it fits and the chain did not change meanwhile (a block
    /// that will not be cached is handed over as read, not copied). No lock is held during
    /// the read. A DATA copy carries the header's check code (the block's own); an inode's
    /// does not: the header's is that of the block on the media, whose table the store's copy
    /// has cleared.
    pub(super) fn read_on_media(
        &self,
        id: ChainId,
        bref: Blockref,
        ver: PayVer,
        trim: u32,
        cache: bool,
    ) -> Result<Sealed> {
        let body = decode(&bref, self.fetch_payload(&bref, trim)?)?;
        let cacheable = cache && {
            let a = self.arena.read();
            let fresh =
                matches!(a.get(id), Ok(c) if c.pay.at == Where::OnMedia && c.pay.ver == ver);
            fresh
                && a.ring
                    .as_ref()
                    .is_some_and(|r| payload_len(&body) <= r.budget)
        };
        let body = match cacheable.then(|| body.try_clone()) {
            Some(Ok(copy)) => {
                self.install(id, ver, body);
                copy
            }
            // Not cached (a copy that cannot be allocated is only a cache miss).
            _ => body,
        };
        let check = match body {
            Body::Data(_) => Some((bref.check_method(), bref.check)),
            Body::Inode(_) => None,
        };
        Ok(Sealed {
            body,
            check,
            carried: false,
        })
    }

    /// Keep `body`, chain `id`'s payload as its caller read it from the media (a load reads
    /// every inode for its table; an inode's table cleared as [`decode`] leaves it), in the
    /// cache if it fits there without evicting anything: the first sync would read it again.
    /// Dropped otherwise, or when the chain is not on the media at the block `read` names,
    /// the one the caller read (a chain changed and written elsewhere since keeps its block).
    pub fn offer(&self, id: ChainId, read: &Blockref, body: Body) {
        let ver = {
            let a = self.arena.read();
            let fits = a
                .ring
                .as_ref()
                .is_some_and(|r| r.used + payload_len(&body) <= r.budget);
            match a.get(id) {
                Ok(c)
                    if fits
                        && c.pay.at == Where::OnMedia
                        && c.bref.data_off == read.data_off
                        && c.bref.check == read.check =>
                {
                    c.pay.ver
                }
                _ => return,
            }
        };
        self.install(id, ver, body);
    }

    /// Cache `bytes` as chain `id`'s payload if it is still on the media at version `ver`
    /// and room can be made; otherwise they are dropped (the cache is best effort: a chain
    /// not installed is read again next time).
    fn install(&self, id: ChainId, ver: PayVer, body: Body) {
        let need = payload_len(&body);
        let mut evicted: Vec<Body> = Vec::new();
        if evicted.try_reserve_exact(need / BLOCK_MIN + 1).is_err() {
            return;
        }
        let mut spare = Some(body);
        {
            let mut a = self.arena.write();
            let fresh =
                matches!(a.get(id), Ok(c) if c.pay.at == Where::OnMedia && c.pay.ver == ver);
            if fresh && a.make_room(need, &mut evicted) == Ok(true) && a.link(id.idx).is_ok() {
                if let (Ok(c), Some(b)) = (a.get_mut(id), spare.take()) {
                    c.body = b;
                    c.pay.at = Where::Cached;
                }
                if let Some(r) = a.ring.as_mut() {
                    r.used += need;
                    r.peak = r.peak.max(r.used);
                }
            }
        }
        // Freed outside the lock.
        drop(evicted);
        drop(spare);
    }

    /// Make chain `id`'s payload resident and pinned (the caller holds it exclusively and is
    /// about to change it in place): read through the source if it is on the media. Whether
    /// it was clean (cached or on the media) before: a caller that then fails before the
    /// change puts it back with [`Arena::unpin`].
    pub(super) fn pin_payload(&self, id: ChainId) -> Result<bool> {
        loop {
            if self.arena.read().get(id)?.pay.at == Where::Pinned {
                return Ok(false);
            }
            let (bref, ver, trim) = {
                let mut a = self.arena.write();
                let c = a.get(id)?;
                if c.pay.at != Where::OnMedia {
                    return a.unring(id).map(|()| true);
                }
                (c.bref, c.pay.ver, c.pay.trim)
            };
            let body = decode(&bref, self.fetch_payload(&bref, trim)?)?;
            let mut a = self.arena.write();
            let c = a.get_mut(id)?;
            if c.pay.at == Where::OnMedia && c.pay.ver == ver {
                c.body = body;
                c.pay.at = Where::Pinned;
                return a.count_pinned(id, true).map(|()| true);
            }
            // Cached by a reader meanwhile: pinned on the next turn.
        }
    }

    /// Lend chain `id`'s DATA payload without copying it, when it is pinned (changed, in
    /// memory until a commit writes it) and no other loan is out: its header, the loan, the
    /// check code that came in with the bytes ([`Sealed::carried_check`]) and the payload
    /// version, as [`Store::read_versioned`] gives them. `None` otherwise: the caller copies.
    /// A commit writes the block from the loan; a modify of the chain meanwhile waits for
    /// the loan's end, so it must not be held across anything that waits for such a modify.
    #[allow(clippy::type_complexity)]
    pub fn lend_data(
        &self,
        id: ChainId,
    ) -> Result<
        Option<(
            Blockref,
            DataLoan<'_>,
            Option<(u8, [u8; media::check::CHECK_BYTES])>,
            PayVer,
        )>,
    > {
        let mut a = self.arena.write();
        if a.loan.is_some() {
            return Ok(None);
        }
        let c = a.get(id)?;
        let (bref, ver, carried) = (c.bref, c.pay.ver, c.carried);
        let (ptr, len) = match &c.body {
            Body::Data(d) if c.pay.at == Where::Pinned && !d.is_empty() => (d.as_ptr(), d.len()),
            _ => return Ok(None),
        };
        a.loan = Some(Loan {
            addr: ptr as usize,
            parked: None,
        });
        let check = carried.then_some((bref.check_method(), bref.check));
        Ok(Some((
            bref,
            DataLoan {
                store: self,
                ptr,
                len,
            },
            check,
            ver,
        )))
    }

    /// Record that a commit wrote chain `id`'s payload at version `ver` as the block
    /// `written` names: if the chain still holds that version, its pinned payload is clean
    /// now and leaves memory (it is read back on demand). A DATA payload is either the block
    /// byte for byte (a whole block, the check code the store holds), or one the commit padded
    /// with zeros to a whole block: the chain then remembers the payload's length, and a read
    /// takes those bytes of the block, verified against the chain's own check code (the header
    /// keeps the payload's, which the sync copies and compares), the rest zeros; an empty one
    /// stays pinned. An inode at that version is the block written but for the block table
    /// the commit filled in (which a read back clears): it is clean whatever its state, and
    /// its header takes the block's check code, by which a read through the source verifies
    /// it. Returns the payload to free outside the lock.
    pub(super) fn release(
        a: &mut Arena,
        id: ChainId,
        written: &Blockref,
        ver: PayVer,
    ) -> Option<Body> {
        a.ring.as_ref()?;
        let c = a.get_mut(id).ok()?;
        if c.pay.ver != ver || !evictable(&c.bref) {
            return None;
        }
        if c.bref.btype == media::BREF_TYPE_INODE {
            c.bref.check = written.check;
            c.pay.trim = 0;
        } else {
            let (len, block) = (payload_len(&c.body), written.data_bytes());
            let trim = match len {
                _ if c.bref.check_method() != written.check_method() => return None,
                n if n == block && c.bref.check == written.check => 0,
                n if 0 < n && n < block => u32::try_from(n).ok()?,
                _ => return None,
            };
            c.pay.trim = trim;
        }
        a.unpin(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::testhost::host;
    use crate::host::LockMode;
    use crate::media::InodeData;
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;

    /// Something done while a read is under way, before it finds its block.
    type Hook = Box<dyn FnOnce() + Send>;

    /// Blocks by `data_off`; every read counted, and refused while `fail` is set; `hook`
    /// run by the next read.
    #[derive(Default)]
    struct MapSource {
        blocks: spin::Mutex<BTreeMap<u64, Vec<u8>>>,
        fail: AtomicBool,
        reads: AtomicU64,
        hook: spin::Mutex<Option<Hook>>,
    }

    impl PayloadSource for &'static MapSource {
        fn read(&self, bref: &Blockref) -> Result<Vec<u8>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let hook = self.hook.lock().take();
            if let Some(f) = hook {
                f();
            }
            if self.fail.load(Ordering::Relaxed) {
                return Err(Error::Io);
            }
            self.blocks
                .lock()
                .get(&bref.data_off)
                .cloned()
                .ok_or(Error::Io)
        }
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8 ^ seed).collect()
    }

    /// A store with a source of `n` blocks of `len` bytes on its "media", each a DATA chain
    /// under the root left there, and `budget` bytes of cache.
    fn store(n: u64, len: usize, budget: usize) -> (Store, &'static MapSource, Vec<ChainId>) {
        let src: &'static MapSource = Box::leak(Box::default());
        let mut s = Store::new(host(), InodeData::default()).unwrap();
        s.set_payload_source(Box::new(src), budget);
        let radix = len.trailing_zeros() as u8;
        let mut ids = Vec::new();
        let g = s.lock_root(LockMode::Exclusive);
        for i in 0..n {
            let data = bytes(len, i as u8);
            let mut b = Blockref::new(media::BREF_TYPE_DATA, i << 16, 16);
            b.data_off = ((i + 1) << 16) | u64::from(radix);
            b.set_check(&data).unwrap();
            src.blocks.lock().insert(b.data_off, data);
            ids.push(s.insert_on_media(&g, b).unwrap());
        }
        drop(g);
        s.settle_all().unwrap();
        (s, src, ids)
    }

    fn data(s: &Store, id: ChainId) -> Vec<u8> {
        match s.read(id).unwrap().1 {
            Body::Data(d) => d,
            Body::Inode(_) => panic!("an inode"),
        }
    }

    #[test]
    fn reads_go_to_the_source_and_the_cache_stays_within_its_budget() {
        let (s, src, ids) = store(32, 1024, 4096);
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(data(&s, id), bytes(1024, i as u8));
            let st = s.cache_stats().unwrap();
            assert!(st.used <= st.budget && st.peak <= st.budget, "{st:?}");
        }
        let st = s.cache_stats().unwrap();
        assert_eq!((st.reads, st.used, st.peak), (32, 4096, 4096));
        assert_eq!(st.evictions, 28);
        // The last one read is cached: a hit, no read.
        assert_eq!(data(&s, ids[31]), bytes(1024, 31));
        let st = s.cache_stats().unwrap();
        assert_eq!((st.reads, st.hits), (32, 1));
        assert_eq!(src.reads.load(Ordering::Relaxed), 32);
        // An evicted one is read again.
        assert_eq!(data(&s, ids[0]), bytes(1024, 0));
        assert_eq!(s.cache_stats().unwrap().reads, 33);
    }

    #[test]
    fn a_copy_for_another_store_is_read_from_the_media_and_not_cached() {
        use crate::store::api::ChainStore;
        let (s, src, ids) = store(2, 1024, 4096);
        // What a sync copies to another node: read, verified by the source, handed over.
        let (_, sealed) = ChainStore::read_sealed(&s, ids[0]).unwrap();
        assert!(matches!(sealed.body(), Body::Data(d) if *d == bytes(1024, 0)));
        let st = s.cache_stats().unwrap();
        assert_eq!((st.reads, st.used, st.peak), (1, 0, 0));
        assert!(s.is_on_media(ids[0]).unwrap());
        // Read again, it goes to the media again.
        ChainStore::read_sealed(&s, ids[0]).unwrap();
        assert_eq!(src.reads.load(Ordering::Relaxed), 2);
        // A cached payload is copied from memory, as before.
        assert_eq!(data(&s, ids[1]), bytes(1024, 1));
        let (_, sealed) = ChainStore::read_sealed(&s, ids[1]).unwrap();
        assert!(matches!(sealed.body(), Body::Data(d) if *d == bytes(1024, 1)));
        let st = s.cache_stats().unwrap();
        assert_eq!((st.reads, st.hits, st.used), (3, 1, 1024));
    }

    #[test]
    fn clock_keeps_a_referenced_payload_over_one_read_once() {
        let (s, _, ids) = store(8, 1024, 2048);
        data(&s, ids[0]);
        data(&s, ids[1]);
        // A hit on 0: the hand spares it and evicts 1 for 2.
        data(&s, ids[0]);
        data(&s, ids[2]);
        assert!(!s.is_on_media(ids[0]).unwrap());
        assert!(s.is_on_media(ids[1]).unwrap());
        assert!(!s.is_on_media(ids[2]).unwrap());
    }

    #[test]
    fn a_block_larger_than_the_budget_is_read_but_not_cached() {
        let (s, _, ids) = store(2, 4096, 2048);
        assert_eq!(data(&s, ids[0]), bytes(4096, 0));
        let st = s.cache_stats().unwrap();
        assert_eq!((st.reads, st.used, st.peak), (1, 0, 0));
        assert!(s.is_on_media(ids[0]).unwrap());
    }

    #[test]
    fn a_failed_read_is_eio_for_that_chain_and_is_not_remembered() {
        let (s, src, ids) = store(2, 1024, 4096);
        src.fail.store(true, Ordering::Relaxed);
        assert_eq!(s.read(ids[0]).err(), Some(Error::Io));
        let g = s.lock(ids[1], LockMode::Exclusive).unwrap();
        assert_eq!(s.modify(&g, |_, _| Ok(())).err(), Some(Error::Io));
        drop(g);
        src.fail.store(false, Ordering::Relaxed);
        assert_eq!(data(&s, ids[0]), bytes(1024, 0));
        assert_eq!(s.cache_stats().unwrap().used, 1024);
    }

    #[test]
    fn a_changed_payload_is_pinned_until_a_commit_of_that_version() {
        let (s, _, ids) = store(16, 1024, 2048);
        let root = s.lock_root(LockMode::Exclusive);
        // Changed: 0 replaced, 1 modified in place (read first), both cached before.
        data(&s, ids[0]);
        let g = s.lock_child(&root, ids[0], LockMode::Exclusive).unwrap();
        let b = s.bref(ids[0]).unwrap();
        s.replace(&g, b, Body::Data(bytes(1024, 100))).unwrap();
        let g1 = s.lock_child(&root, ids[1], LockMode::Exclusive).unwrap();
        s.modify(&g1, |_, body| {
            let Body::Data(d) = body else {
                return Err(Error::Invalid);
            };
            d[0] ^= 0xff;
            Ok(())
        })
        .unwrap();
        let st = s.cache_stats().unwrap();
        assert_eq!((st.used, st.pinned), (0, 2048), "pinned is not cached");
        // Pressure: every other chain read twice.
        for _ in 0..2 {
            for &id in &ids[2..] {
                data(&s, id);
            }
        }
        assert!(s.cache_stats().unwrap().evictions >= 14);
        assert_eq!(data(&s, ids[0]), bytes(1024, 100));
        let mut want1 = bytes(1024, 1);
        want1[0] ^= 0xff;
        assert_eq!(data(&s, ids[1]), want1);
        // A commit wrote version v of 0, then 0 changed again: still pinned, new bytes.
        let (_, _, v) = s.read_versioned(ids[0]).unwrap();
        s.replace(&g, b, Body::Data(bytes(1024, 101))).unwrap();
        let mut w = s.bref(ids[0]).unwrap();
        w.mirror_tid = 9;
        s.set_flushed(ids[0], &w, v).unwrap();
        assert!(!s.is_on_media(ids[0]).unwrap());
        assert_eq!(data(&s, ids[0]), bytes(1024, 101));
        // The commit of the version it holds releases it.
        let (_, _, v) = s.read_versioned(ids[1]).unwrap();
        let mut w = s.bref(ids[1]).unwrap();
        (w.data_off, w.mirror_tid) = ((1 << 16) | 10, 9);
        s.set_flushed(ids[1], &w, v).unwrap();
        assert!(s.is_on_media(ids[1]).unwrap());
        let st = s.cache_stats().unwrap();
        assert_eq!((st.pinned, st.pinned_peak), (1024, 2048));
        // Freed pinned: counted out.
        drop(g1);
        s.delete(&root, g).unwrap();
        assert_eq!(s.cache_stats().unwrap().pinned, 0);
    }

    #[test]
    fn a_read_finishing_after_a_replace_installs_nothing() {
        let (s, _, ids) = store(1, 1024, 4096);
        let (_, ver) = {
            let a = s.arena.read();
            let c = a.get(ids[0]).unwrap();
            (c.bref, c.pay.ver)
        };
        let root = s.lock_root(LockMode::Exclusive);
        let g = s.lock_child(&root, ids[0], LockMode::Exclusive).unwrap();
        let b = s.bref(ids[0]).unwrap();
        s.replace(&g, b, Body::Data(bytes(1024, 7))).unwrap();
        // The old bytes arrive now, for the version read: refused.
        s.install(ids[0], ver, Body::Data(bytes(1024, 0)));
        assert_eq!(data(&s, ids[0]), bytes(1024, 7));
        assert_eq!(s.cache_stats().unwrap().used, 0);
    }

    #[test]
    fn freeing_a_cached_chain_takes_it_off_the_ring() {
        let (s, _, ids) = store(4, 1024, 2048);
        data(&s, ids[0]);
        data(&s, ids[1]);
        let root = s.lock_root(LockMode::Exclusive);
        let g = s.lock_child(&root, ids[0], LockMode::Exclusive).unwrap();
        s.delete(&root, g).unwrap();
        drop(root);
        assert_eq!(s.cache_stats().unwrap().used, 1024);
        data(&s, ids[2]);
        data(&s, ids[3]);
        let st = s.cache_stats().unwrap();
        assert_eq!((st.used, st.evictions), (2048, 1));
    }

    /// Replace chain `id` (a child of the root) by `new` and commit it to a fresh block
    /// of `src`, as a commit does: it is released, on the media at a new version.
    fn replace_and_commit(s: &Store, src: &MapSource, id: ChainId, new: &[u8]) {
        let root = s.lock_root(LockMode::Exclusive);
        let g = s.lock_child(&root, id, LockMode::Exclusive).unwrap();
        let b = s.bref(id).unwrap();
        s.replace(&g, b, Body::Data(new.to_vec())).unwrap();
        let (mut w, _, v) = s.read_versioned(id).unwrap();
        w.data_off = (0x7f << 16) | (b.data_off & 0x3f);
        src.blocks.lock().insert(w.data_off, new.to_vec());
        s.set_flushed(id, &w, v).unwrap();
        assert!(s.is_on_media(id).unwrap(), "released");
    }

    #[test]
    fn a_read_of_an_older_version_finishing_after_a_commit_installs_nothing() {
        let (s, src, ids) = store(1, 1024, 4096);
        let old = s.arena.read().get(ids[0]).unwrap().pay.ver;
        replace_and_commit(&s, src, ids[0], &bytes(1024, 7));
        // On the media again, but at a newer version: the old bytes are refused.
        s.install(ids[0], old, Body::Data(bytes(1024, 0)));
        assert_eq!(s.cache_stats().unwrap().used, 0);
        assert_eq!(data(&s, ids[0]), bytes(1024, 7));
    }

    #[test]
    fn a_pin_racing_a_replace_and_commit_pins_the_new_payload() {
        let (s, src, ids) = store(1, 1024, 4096);
        let s: &'static Store = Box::leak(Box::new(s));
        let id = ids[0];
        *src.hook.lock() = Some(Box::new(move || {
            replace_and_commit(s, src, id, &bytes(1024, 9));
        }));
        // The first read brings the old bytes, for a version gone meanwhile: read again.
        s.pin_payload(id).unwrap();
        assert!(!s.is_on_media(id).unwrap());
        assert_eq!(data(s, id), bytes(1024, 9));
        assert_eq!(src.reads.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_block_larger_than_the_budget_evicts_nothing() {
        let (s, src, ids) = store(2, 1024, 2048);
        data(&s, ids[0]);
        data(&s, ids[1]);
        let big = bytes(4096, 3);
        let mut b = Blockref::new(media::BREF_TYPE_DATA, 9 << 16, 16);
        b.data_off = (0x70 << 16) | 12;
        b.set_check(&big).unwrap();
        src.blocks.lock().insert(b.data_off, big.clone());
        let g = s.lock_root(LockMode::Exclusive);
        let id = s.insert_on_media(&g, b).unwrap();
        drop(g);
        let ver = s.arena.read().get(id).unwrap().pay.ver;
        s.install(id, ver, Body::Data(big.clone()));
        let st = s.cache_stats().unwrap();
        assert_eq!((st.used, st.evictions), (2048, 0), "{st:?}");
        assert_eq!(data(&s, id), big);
        assert_eq!(s.cache_stats().unwrap().evictions, 0);
    }

    #[test]
    fn a_failed_read_is_counted_with_its_block() {
        let (s, src, ids) = store(2, 1024, 4096);
        assert_eq!(s.cache_stats().unwrap().read_errors, 0);
        src.fail.store(true, Ordering::Relaxed);
        assert_eq!(s.read(ids[1]).err(), Some(Error::Io));
        let st = s.cache_stats().unwrap();
        assert_eq!(st.read_errors, 1);
        assert_eq!(st.last_error, s.bref(ids[1]).unwrap().data_off);
    }

    #[test]
    fn the_alarm_rings_when_changed_data_passes_the_budget() {
        let (mut s, _, ids) = store(4, 1024, 2048);
        let rung: &'static AtomicU64 = Box::leak(Box::default());
        s.set_pinned_alarm(Box::new(|| {
            rung.fetch_add(1, Ordering::Relaxed);
        }));
        let root = s.lock_root(LockMode::Exclusive);
        for (i, &id) in ids.iter().enumerate() {
            let g = s.lock_child(&root, id, LockMode::Exclusive).unwrap();
            let b = s.bref(id).unwrap();
            s.replace(&g, b, Body::Data(bytes(1024, 50 + i as u8)))
                .unwrap();
            // 1 and 2 KiB pinned: within; 3 KiB: past it once, 4 KiB: still past.
            assert_eq!(rung.load(Ordering::Relaxed), u64::from(i >= 2), "{i}");
        }
    }

    /// A payload released by its commit while it is lent out (the commit's own write of it)
    /// keeps its bytes until the loan ends; the chain reads back from the media meanwhile.
    #[test]
    fn a_payload_released_while_lent_keeps_its_bytes_for_the_loan() {
        let (s, src, ids) = store(1, 1024, 4096);
        let root = s.lock_root(LockMode::Exclusive);
        let g = s.lock_child(&root, ids[0], LockMode::Exclusive).unwrap();
        let b = s.bref(ids[0]).unwrap();
        s.replace(&g, b, Body::Data(bytes(1024, 77))).unwrap();
        drop(g);
        let (cb, loan, _, ver) = s.lend_data(ids[0]).unwrap().unwrap();
        // The commit wrote it: the block is on the media, and the chain is released.
        let mut w = cb;
        (w.data_off, w.mirror_tid) = ((9 << 16) | 10, 5);
        src.blocks.lock().insert(w.data_off, bytes(1024, 77));
        s.set_flushed(ids[0], &w, ver).unwrap();
        assert!(s.is_on_media(ids[0]).unwrap());
        // Parked with the loan, not freed with the release (an allocator need not hand freed
        // memory out again at once, so the bytes below alone might not tell).
        let parked = |s: &Store| s.arena.read().loan.as_ref().map(|l| l.parked.is_some());
        assert_eq!(parked(&s), Some(true));
        let fill = vec![0x5au8; 1024];
        assert_eq!(loan.bytes(), &bytes(1024, 77)[..]);
        assert_eq!(data(&s, ids[0]), bytes(1024, 77));
        drop((loan, fill));
        assert_eq!(parked(&s), None, "the loan ended");
        assert_eq!(s.cache_stats().unwrap().pinned, 0);
    }

    /// A change in place to a payload already counted pinned is one step: past the budget,
    /// it rings no new alarm (counted out and in again, it did); growing past it rings once.
    #[test]
    fn a_change_in_place_past_the_budget_rings_no_new_alarm() {
        let (mut s, _, ids) = store(3, 1024, 2048);
        let rung: &'static AtomicU64 = Box::leak(Box::default());
        s.set_pinned_alarm(Box::new(|| {
            rung.fetch_add(1, Ordering::Relaxed);
        }));
        let root = s.lock_root(LockMode::Exclusive);
        for &id in &ids {
            let g = s.lock_child(&root, id, LockMode::Exclusive).unwrap();
            let b = s.bref(id).unwrap();
            s.replace(&g, b, Body::Data(bytes(1024, 3))).unwrap();
        }
        assert_eq!(rung.load(Ordering::Relaxed), 1, "3 KiB of 2 KiB");
        let g = s.lock_child(&root, ids[0], LockMode::Exclusive).unwrap();
        for len in [1024, 512, 1500] {
            s.modify(&g, |_, body| {
                if let Body::Data(d) = body {
                    d.resize(len, 4);
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(rung.load(Ordering::Relaxed), 1, "modified to {len} bytes");
        }
        assert_eq!(s.cache_stats().unwrap().pinned, 1500 + 2048);
        drop(g);
        // Back within the budget, then past it again by a change in place: it rings.
        for &id in &ids[1..] {
            let g = s.lock_child(&root, id, LockMode::Exclusive).unwrap();
            s.modify(&g, |_, body| {
                if let Body::Data(d) = body {
                    d.truncate(100);
                }
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(s.cache_stats().unwrap().pinned, 1700);
        let g = s.lock_child(&root, ids[1], LockMode::Exclusive).unwrap();
        s.modify(&g, |_, body| {
            if let Body::Data(d) = body {
                d.resize(1000, 5);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(rung.load(Ordering::Relaxed), 2, "2600 bytes of 2048");
    }

    /// The pinned limit is passed when the changed bytes pass it, and no longer once some
    /// go; a limit set afterwards counts at once.
    #[test]
    fn the_pinned_limit_follows_the_changed_bytes() {
        let (mut s, _, ids) = store(4, 1024, 4096);
        s.set_pinned_limit(2048);
        let root = s.lock_root(LockMode::Exclusive);
        for (i, &id) in ids.iter().take(3).enumerate() {
            let g = s.lock_child(&root, id, LockMode::Exclusive).unwrap();
            let b = s.bref(id).unwrap();
            s.replace(&g, b, Body::Data(bytes(1024, 9))).unwrap();
            assert_eq!(s.past_pinned_limit(), i == 2, "{i}");
        }
        let g = s.lock_child(&root, ids[0], LockMode::Exclusive).unwrap();
        s.delete(&root, g).unwrap();
        assert!(!s.past_pinned_limit(), "2048 bytes are not past 2048");
        drop(root);
        s.set_pinned_limit(1024);
        assert!(s.past_pinned_limit());
        s.set_pinned_limit(0);
        assert!(!s.past_pinned_limit(), "0: no limit");
    }

    /// A cached payload that a change replaces, or that is freed, goes without being counted
    /// as pinned on its way out: no alarm nor peak for bytes that never stay.
    #[test]
    fn a_replaced_or_freed_cached_payload_is_never_counted_pinned() {
        for free in [false, true] {
            let (mut s, _, ids) = store(1, 1024, 4096);
            let rung: &'static AtomicU64 = Box::leak(Box::default());
            s.set_pinned_alarm(Box::new(|| {
                rung.fetch_add(1, Ordering::Relaxed);
            }));
            assert_eq!(data(&s, ids[0]), bytes(1024, 0));
            assert_eq!(s.cache_stats().unwrap().used, 1024, "cached");
            let root = s.lock_root(LockMode::Exclusive);
            let mut b = Blockref::new(media::BREF_TYPE_DATA, 1 << 16, 16);
            b.data_off = (5 << 16) | 12;
            s.insert(&root, b, Body::Data(bytes(3500, 7))).unwrap();
            let g = s.lock_child(&root, ids[0], LockMode::Exclusive).unwrap();
            let want = if free {
                s.delete(&root, g).unwrap();
                3500
            } else {
                let b = s.bref(ids[0]).unwrap();
                s.replace(&g, b, Body::Data(vec![2; 1])).unwrap();
                3501
            };
            let st = s.cache_stats().unwrap();
            assert_eq!(
                (st.used, st.pinned, st.pinned_peak),
                (0, want, want),
                "{st:?}"
            );
            assert_eq!(
                rung.load(Ordering::Relaxed),
                0,
                "within the budget ({free})"
            );
        }
    }

    /// An inode left on the media reads back with its block table cleared, its copy
    /// carrying no check code (the header's is the block's, table included); a directory
    /// keeps saying so while evicted; once changed it is pinned, and the commit of its
    /// version releases it with the check code of the block written.
    #[test]
    fn an_inode_on_the_media_reads_back_without_its_table() {
        let (s, src, _) = store(0, 1024, 1024);
        let mut ip = InodeData::default();
        ip.meta.objtype = media::OBJTYPE_DIRECTORY;
        ip.meta.inum = 77;
        let mut set = [Blockref::default(); media::SET_COUNT];
        set[0] = Blockref::new(media::BREF_TYPE_DATA, 0, 16);
        set[0].data_off = (9 << 16) | 10;
        ip.set_blockset(&set);
        let on_disk = ip.encode();
        let mut b = Blockref::new(media::BREF_TYPE_INODE, 77, 0);
        b.set_size_radix(media::INODE_RADIX);
        b.data_off = (5 << 16) | u64::from(media::INODE_RADIX);
        b.set_check(&on_disk).unwrap();
        src.blocks.lock().insert(b.data_off, on_disk.to_vec());
        let root = s.lock_root(LockMode::Exclusive);
        let summary = super::super::inode::InodeSummary::of(&ip);
        let id = s.insert_inode_on_media(&root, b, summary).unwrap();
        assert!(s.is_directory(id).unwrap() && s.is_on_media(id).unwrap());
        assert_eq!(s.inode_summary(id).unwrap(), Some(summary));
        let mut cleared = ip;
        cleared.u = [0; media::EMBEDDED_BYTES];
        let (rb, sealed, ver) = s.read_versioned(id).unwrap();
        assert_eq!((rb.check, sealed.check), (b.check, None));
        assert_eq!(sealed.body().inode(), Some(&cleared));
        assert_eq!(s.meta(id).unwrap().inum, 77);
        // Cached, then evicted by another inode: still a directory.
        let mut other = b;
        (other.key, other.data_off) = (78, (6 << 16) | u64::from(media::INODE_RADIX));
        src.blocks.lock().insert(other.data_off, on_disk.to_vec());
        let o = s
            .insert_inode_on_media(&root, other, Default::default())
            .unwrap();
        assert!(!s.is_on_media(id).unwrap());
        s.meta(o).unwrap();
        assert!(s.is_on_media(id).unwrap() && s.is_directory(id).unwrap());
        assert_eq!(
            s.inode_summary(id).unwrap(),
            Some(summary),
            "kept by the eviction"
        );
        // Changed: pinned, whatever the pressure; the commit of a version gone keeps it.
        let g = s.lock_child(&root, id, LockMode::Exclusive).unwrap();
        s.modify(&g, |_, body| {
            let Body::Inode(ip) = body else {
                return Err(Error::Invalid);
            };
            ip.meta.mode = 0o700;
            Ok(())
        })
        .unwrap();
        s.meta(o).unwrap();
        assert!(!s.is_on_media(id).unwrap());
        assert_eq!(s.cache_stats().unwrap().pinned, media::INODE_BYTES);
        let mut written = s.bref(id).unwrap();
        (written.data_off, written.check) = ((7 << 16) | 10, [3; media::check::CHECK_BYTES]);
        s.set_flushed(id, &written, ver).unwrap();
        assert!(
            !s.is_on_media(id).unwrap(),
            "changed since the version written"
        );
        let (_, _, now) = s.read_versioned(id).unwrap();
        s.set_flushed(id, &written, now).unwrap();
        assert!(s.is_on_media(id).unwrap());
        assert_eq!(s.bref(id).unwrap().check, written.check);
        assert_eq!(s.cache_stats().unwrap().pinned, 0);
        assert!(s.is_directory(id).unwrap());
        let summary = s.inode_summary(id).unwrap().unwrap();
        assert!(summary.dir && summary.digest != super::super::inode::InodeSummary::of(&ip).digest);
    }

    #[test]
    fn a_modify_failing_before_the_change_leaves_a_clean_payload_on_the_media() {
        let (s, src, ids) = store(2, 1024, 4096);
        data(&s, ids[1]);
        let root = s.lock_root(LockMode::Exclusive);
        for &id in &ids {
            let g = s.lock_child(&root, id, LockMode::Exclusive).unwrap();
            s.arena.write().note_fails = true;
            let r = s.modify(&g, |_, body| {
                let Body::Data(d) = body else {
                    return Err(Error::Invalid);
                };
                d[0] ^= 1;
                Ok(())
            });
            assert_eq!(r.err(), Some(Error::NoMem));
            assert!(s.is_on_media(id).unwrap(), "not left pinned");
        }
        let st = s.cache_stats().unwrap();
        assert_eq!((st.pinned, st.used), (0, 0), "{st:?}");
        assert_eq!(s.journal_len(), 0);
        drop(root);
        // Read again, unchanged: 1 was cached, 0 read by the modify and once more now.
        assert_eq!(data(&s, ids[0]), bytes(1024, 0));
        assert_eq!(src.reads.load(Ordering::Relaxed), 3);
    }

    /// An inode the load offers is kept only if the chain is still on the media at the block
    /// it was read from: one written elsewhere since keeps its own.
    #[test]
    fn an_offered_inode_is_kept_only_for_the_block_it_was_read_from() {
        let (s, src, _) = store(0, 1024, 4096);
        let ip = InodeData::default();
        let mut b = Blockref::new(media::BREF_TYPE_INODE, 5, 0);
        b.set_size_radix(media::INODE_RADIX);
        b.data_off = (5 << 16) | u64::from(media::INODE_RADIX);
        b.set_check(&ip.encode()).unwrap();
        src.blocks.lock().insert(b.data_off, ip.encode().to_vec());
        let root = s.lock_root(LockMode::Exclusive);
        let summary = super::super::inode::InodeSummary::of(&ip);
        let id = s.insert_inode_on_media(&root, b, summary).unwrap();
        drop(root);
        let mut moved = b;
        moved.data_off = (6 << 16) | u64::from(media::INODE_RADIX);
        s.arena.write().get_mut(id).unwrap().bref.data_off = moved.data_off;
        s.offer(id, &b, Body::Inode(crate::mem::try_box(ip).unwrap()));
        assert_eq!(s.cache_stats().unwrap().used, 0, "an older block's body");
        s.offer(id, &moved, Body::Inode(crate::mem::try_box(ip).unwrap()));
        assert_eq!(s.cache_stats().unwrap().used, media::INODE_BYTES);
    }

    /// A modify whose change fails after it changed the payload leaves a header whose check
    /// code describes the bytes held: a copy carries the header's code to another node.
    #[test]
    fn a_modify_failing_after_its_change_reseals_the_header() {
        let (s, _src, ids) = store(1, 1024, 4096);
        let root = s.lock_root(LockMode::Exclusive);
        let g = s.lock_child(&root, ids[0], LockMode::Exclusive).unwrap();
        let r: Result<()> = s.modify(&g, |_, body| {
            let Body::Data(d) = body else {
                return Err(Error::Invalid);
            };
            d[0] ^= 1;
            Err(Error::Invalid)
        });
        assert_eq!(r.err(), Some(Error::Invalid));
        drop(g);
        drop(root);
        let (b, body) = s.read(ids[0]).unwrap();
        let Body::Data(d) = body else {
            panic!("an inode")
        };
        assert_eq!(
            d[0],
            bytes(1024, 0)[0] ^ 1,
            "the change stays, as documented"
        );
        assert!(
            b.verify_check(&d).is_ok(),
            "the header's code is the held bytes'"
        );
    }
}
