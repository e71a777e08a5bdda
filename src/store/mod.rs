//! The in-memory HAMMER2-shaped node store: one PFS of one cluster node.
//!
//! Chains live in an arena and are named by [`ChainId`] (slot index + generation, so a stale id
//! is detected instead of reaching a reused slot). Each chain has a blockref-like header
//! ([`Blockref`]), a payload ([`Body`]: an inode's 1024 bytes or up to 64 KiB of file data) and its
//! children sorted by key. Directories hold child inodes keyed by the name hash; regular files
//! hold DATA chains keyed by file offset, or up to 512 bytes inside the inode (DIRECTDATA). A
//! store given a payload source keeps clean DATA payloads and inode bodies on the media and
//! reads them on demand within a byte budget ([`cache`]).
//!
//! Two kinds of locks, with distinct jobs:
//! - the arena's `spin::RwLock` makes each single read or write memory-safe; it is held only for
//!   the few instructions of that access, never while sleeping, and never two nodes' at once;
//! - one host chain lock per chain ([`Host::lock`]) gives HAMMER2's discipline: a modifier holds
//!   the chain exclusively, and a chain is only ever locked while its parent is held (lock
//!   coupling, top-down), so whoever frees a chain (holding parent and chain exclusively) knows
//!   nobody waits on its lock, and locks are taken in parent-before-child order (no deadlock).
//!
//! Reads made by other nodes' synchronizers and by checks take only the arena lock: a node never
//! waits on another node's chain locks, so no lock cycle can form across nodes.

pub mod api;
mod arena_lock;
pub mod cache;
pub mod children;
pub mod compare;
pub mod evict;
pub mod flush;
pub mod frontend;
pub mod index;
pub mod inode;
mod slab;

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::host::{Host, LockMode, RawLock};
use crate::media::{self, Blockref, InodeData, InodeMeta};
use crate::mem::{try_box, try_push};
use crate::{Error, Result};
pub use api::{ChainStore, HeldChain, TableWalk};
pub use cache::{CacheStats, DataLoan, PayloadSource};
use cache::{Pay, Where};
use children::TabErr;
use children::Visit;
use children::{Children, Creating};
pub use children::{Hint, RangeSum, Span, RUN};

impl From<TabErr> for Error {
    /// A stub met where the caller read back none first: a store reads back what a change
    /// reaches before it makes it ([`evict`]), so only a modify growing a chain's range over a
    /// stub gets here, and fails as a read of the media that could not be made would.
    fn from(e: TabErr) -> Error {
        match e {
            TabErr::Err(e) => e,
            TabErr::Miss(_) => Error::Io,
        }
    }
}

/// How a node lays its PFS out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// The seed era's: child inodes embedded in their directory keyed by name hash, hardlinks
    /// as OBJTYPE_HARDLINK pointer inodes. Kept for the seed's bugs that today's layout
    /// cannot show (HAMMER2-FACTS §6).
    Seed,
    /// Today's HAMMER2 (HAMMER2-FACTS §4a), the default: every inode in the PFS root's index
    /// keyed by inode number, directories holding DIRENTs, hardlinks as several DIRENTs naming
    /// one inode.
    #[default]
    Index,
}

impl Layout {
    /// The layout named `name` in the scenario language and the C API (`seed`, `index`).
    pub fn parse(name: &str) -> Option<Layout> {
        match name {
            "seed" => Some(Layout::Seed),
            "index" => Some(Layout::Index),
            _ => None,
        }
    }

    /// The name [`Layout::parse`] takes.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Seed => "seed",
            Layout::Index => "index",
        }
    }
}

/// One blockref of a chain's block table ([`Store::block_table`]).
#[derive(Debug, Clone, Copy)]
pub struct TableRef {
    /// 0 for the chain's own blockset, 1 for an indirect block it points to, and so on.
    pub depth: u8,
    /// The blockref: type INDIRECT for an indirect block, else the child's own.
    pub bref: Blockref,
    /// The child, for a child's blockref.
    pub child: Option<ChainId>,
}

/// A chain's name in its node's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainId {
    pub(crate) idx: u32,
    pub(crate) gen: u32,
}

/// A chain's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// An inode's 1024 bytes.
    Inode(Box<InodeData>),
    /// File data, exactly `bref.data_bytes()` bytes.
    Data(Vec<u8>),
}

impl Body {
    /// A fallible deep copy.
    pub fn try_clone(&self) -> Result<Body> {
        Ok(match self {
            Body::Inode(ip) => Body::Inode(try_box(**ip)?),
            Body::Data(d) => Body::Data(crate::mem::try_to_vec(d)?),
        })
    }
    /// Store this payload's check code in `b` (by `b`'s check method), as a flush would. A
    /// DIRENT without a data block keeps its check area: it holds the entry's name.
    pub fn seal(&self, b: &mut Blockref) -> Result<()> {
        if b.btype == media::BREF_TYPE_DIRENT && b.size_radix() == 0 {
            return Ok(());
        }
        match self {
            Body::Inode(ip) => b.set_check(&ip.encode()),
            Body::Data(d) => b.set_check(d),
        }
    }
    /// The inode, if this is one.
    pub fn inode(&self) -> Option<&InodeData> {
        match self {
            Body::Inode(ip) => Some(ip),
            Body::Data(_) => None,
        }
    }
}

/// A payload on its way into a chain, with the check code its copy computed on the way, if any.
///
/// [`Store::read_sealed`] copies a payload (DATA, or the inode of any chain but the PFS root)
/// together with the check code its chain's header holds for it (every install seals, so that
/// code is the bytes' own), and installing it
/// ([`Store::insert_sealed`], [`Store::replace_sealed`]) stores that code instead of hashing the
/// bytes again. The payload cannot be changed once sealed (the fields are private), so the code
/// always belongs to these bytes; a header of another check method gets its code computed as
/// usual.
#[derive(Debug)]
pub struct Sealed {
    body: Body,
    /// (check method, check area) of `body`.
    check: Option<(u8, [u8; media::check::CHECK_BYTES])>,
    /// Whether `check` came into its chain with these bytes, as a sealed copy installed
    /// unchanged (see [`Sealed::carried_check`]).
    carried: bool,
}

impl Sealed {
    /// A payload whose check code is computed when it is installed.
    pub fn new(body: Body) -> Sealed {
        Sealed {
            body,
            check: None,
            carried: false,
        }
    }
    /// The check code (method, area) of a DATA payload that came into its chain with its
    /// bytes: a sealed copy (a sync's copy of a focus block as it is, whose code its read
    /// verified or its node computed) installed unchanged, and not changed since. `None` for
    /// a payload this store sealed itself (a frontend write, a modify) and for one read
    /// from the media. A commit writing such a payload as a whole block keeps this code.
    pub fn carried_check(&self) -> Option<(u8, [u8; media::check::CHECK_BYTES])> {
        self.check.filter(|_| self.carried)
    }
    /// A sealed payload claiming `check` as its code, carried with it: tests install a
    /// wrong one to see where it is trusted.
    #[cfg(test)]
    pub(crate) fn carrying(body: Body, check: (u8, [u8; media::check::CHECK_BYTES])) -> Sealed {
        Sealed {
            body,
            check: Some(check),
            carried: true,
        }
    }
    /// The payload.
    pub fn body(&self) -> &Body {
        &self.body
    }
    /// The payload, its precomputed check code dropped (to change it).
    pub fn into_body(self) -> Body {
        self.body
    }
    /// Store the payload's check code in `b` by `b`'s check method (reusing the precomputed
    /// one when it was computed with that method) and hand back the payload, and whether
    /// the code was reused (carried in with the bytes).
    fn seal(self, b: &mut Blockref) -> Result<(Body, bool)> {
        let carried = match self.check {
            Some((method, check)) if method == b.check_method() => {
                b.check = check;
                true
            }
            _ => {
                self.body.seal(b)?;
                false
            }
        };
        Ok((self.body, carried))
    }
}

struct Chain {
    bref: Blockref,
    body: Body,
    children: Children,
    parent: Option<ChainId>,
    depth: u8,
    lock: usize,
    /// The settled generation this chain was inserted in, 0 once a commit put its block
    /// where its header says: it is flushed unless this equals the arena's ([`flush`]).
    unflushed_in: u64,
    /// Where its payload is ([`cache`]).
    pay: Pay,
    /// What the store keeps of an inode while its payload is on the media
    /// ([`inode::InodeSummary`]): whether it is a directory (read under its lock: its
    /// table's shape depends on it) and the digest of its body, apart so that the flag packs
    /// with the other small fields. Meaningless while the payload is in memory, which is
    /// read instead.
    dir: bool,
    digest: u64,
    /// Whether the header's check code came in with the payload now in memory, a sealed
    /// copy installed unchanged ([`Sealed::carried_check`]); cleared by a change of it.
    carried: bool,
    /// The inode block this chain's table was last committed in, kept for a table with
    /// indirect blocks (whose clean ranges can leave memory and are read back from there,
    /// see [`evict`]).
    home: Option<Box<Blockref>>,
}

impl Chain {
    /// What HAMMER2 looks at when this chain's block table gets an indirect block for a child
    /// of type `btype` (see [`Creating`]).
    fn creating(&self, btype: u8) -> Creating {
        Creating {
            btype,
            in_dir: self.is_dir(),
        }
    }

    /// Whether this chain is a directory inode, from its payload or, when that is on the
    /// media, from its resident summary.
    fn is_dir(&self) -> bool {
        match &self.body {
            Body::Inode(ip) => ip.meta.objtype == media::OBJTYPE_DIRECTORY,
            Body::Data(_) if self.pay.at == Where::OnMedia => self.dir,
            Body::Data(_) => false,
        }
    }

    /// Take the payload out of memory (the caller puts it on the media), keeping the
    /// summary of an inode; the payload, to free outside the arena lock.
    fn leave_memory(&mut self) -> Body {
        if let Body::Inode(ip) = &self.body {
            let summary = inode::InodeSummary::of(ip);
            (self.dir, self.digest) = (summary.dir, summary.digest);
        }
        // What is read back is the media's block, verified by its read, not a carried copy.
        self.carried = false;
        core::mem::replace(&mut self.body, Body::Data(Vec::new()))
    }
}

struct Slot {
    gen: u32,
    chain: Option<Chain>,
}

struct Arena {
    slots: slab::Slab<Slot>,
    free: Vec<u32>,
    live: usize,
    /// The places changed since the last commit, when tracked ([`flush`]).
    journal: Option<Vec<flush::Touch>>,
    /// Journal entries a running commit took (its snapshot): never merged with a later one.
    taken: usize,
    /// The settled generation: a chain inserted since it began is not flushed ([`flush`]).
    /// Starts at 1, past every chain's 0.
    settled: u64,
    /// The last payload version given out ([`cache`]).
    pay_seq: cache::PayVer,
    /// The payload cache, in a store with a payload source.
    ring: Option<cache::Ring>,
    /// The DATA payload lent out, if any ([`Store::lend_data`]).
    loan: Option<cache::Loan>,
    /// For tests: the next journal note fails as an allocation failure would.
    #[cfg(test)]
    note_fails: bool,
}

impl Arena {
    /// Install `bref` as chain `id`'s header. Its key must not change (`Invalid`); a new keybits
    /// or modify_tid re-keys the parent's block table, whose range summaries follow it.
    fn set_bref(&mut self, id: ChainId, bref: Blockref) -> Result<&mut Chain> {
        let c = self.get(id)?;
        let (old, parent) = (c.bref, c.parent);
        if bref.key != old.key {
            return Err(Error::Invalid);
        }
        if bref.keybits != old.keybits || bref.modify_tid != old.modify_tid {
            if let Some(p) = parent {
                let pc = self.get_mut(p)?;
                let how = pc.creating(bref.btype);
                pc.children
                    .update(old.key, bref.keybits, bref.modify_tid, how)?;
            }
        }
        let c = self.get_mut(id)?;
        c.bref = bref;
        Ok(c)
    }

    /// Add an empty slot at the end of the slot table, which has room for it; its index.
    fn push_empty_slot(&mut self) -> Result<u32> {
        let i = u32::try_from(self.slots.len()).map_err(|_| Error::NoMem)?;
        self.slots
            .push(Slot {
                gen: 0,
                chain: None,
            })
            .map_err(|_| Error::NoMem)?;
        Ok(i)
    }

    fn get(&self, id: ChainId) -> Result<&Chain> {
        match self.slots.get(id.idx as usize) {
            Some(Slot {
                gen,
                chain: Some(c),
            }) if *gen == id.gen => Ok(c),
            _ => Err(Error::NotFound),
        }
    }
    fn get_mut(&mut self, id: ChainId) -> Result<&mut Chain> {
        match self.slots.get_mut(id.idx as usize) {
            Some(Slot {
                gen,
                chain: Some(c),
            }) if *gen == id.gen => Ok(c),
            _ => Err(Error::NotFound),
        }
    }
}

/// One node's store.
pub struct Store {
    host: &'static dyn Host,
    arena: arena_lock::ArenaLock,
    root: ChainId,
    root_lock: usize,
    layout: Layout,
    /// Bumped by every frontend change, while it holds its path locked.
    gen: core::sync::atomic::AtomicU64,
    /// Bumped by every change of a chain ([`Store::changes`]).
    changes: core::sync::atomic::AtomicU64,
    /// Where clean payloads are read from, when they are not kept ([`cache`]).
    source: Option<cache::Source>,
}

/// A held chain lock; released on drop.
#[must_use = "the chain is unlocked when the guard is dropped"]
pub struct ChainGuard<'a> {
    store: &'a Store,
    id: ChainId,
    raw: usize,
    mode: LockMode,
}

impl ChainGuard<'_> {
    /// The locked chain.
    pub fn id(&self) -> ChainId {
        self.id
    }
    /// The mode it is held in.
    pub fn mode(&self) -> LockMode {
        self.mode
    }
}

impl Drop for ChainGuard<'_> {
    fn drop(&mut self) {
        self.store
            .host
            .unlock(&RawLock::from_raw(self.raw), self.mode);
    }
}

impl Store {
    /// A store in the default layout ([`Layout::Index`]) holding only a PFS root inode made
    /// from `root` (type, meta fields).
    pub fn new(host: &'static dyn Host, root: InodeData) -> Result<Store> {
        Store::with_layout(host, root, Layout::default())
    }

    /// [`Store::new`] in `layout`.
    pub fn with_layout(host: &'static dyn Host, root: InodeData, layout: Layout) -> Result<Store> {
        let body = Body::Inode(try_box(root)?);
        let lock = host.lock_create()?;
        let root_lock = lock.as_raw();
        let mut slots = match slab::Slab::new() {
            Ok(s) => s,
            Err(e) => {
                host.lock_destroy(lock);
                return Err(e);
            }
        };
        if let Some(n) = slots.wanted() {
            let mut chunk = Vec::new();
            if let Err(e) = chunk.try_reserve_exact(n) {
                host.lock_destroy(lock);
                return Err(e.into());
            }
            slots.install(chunk);
        }
        let pushed = slots.push(Slot {
            gen: 0,
            chain: Some(Chain {
                bref: {
                    let mut b = Blockref::new(media::BREF_TYPE_INODE, 0, 0);
                    b.flags = media::BrefFlags::PFSROOT.bits();
                    b.set_size_radix(media::INODE_RADIX);
                    b
                },
                body,
                children: Children::default(),
                parent: None,
                depth: 0,
                lock: lock.as_raw(),
                unflushed_in: 1,
                pay: Pay::pinned(0),
                dir: false,
                digest: 0,
                carried: false,
                home: None,
            }),
        });
        if pushed.is_err() {
            // The first chunk was installed above: cannot be.
            host.lock_destroy(lock);
            return Err(Error::NoMem);
        }
        Ok(Store {
            host,
            arena: arena_lock::ArenaLock::new(Arena {
                slots,
                free: Vec::new(),
                live: 1,
                journal: None,
                taken: 0,
                settled: 1,
                pay_seq: 0,
                ring: None,
                loan: None,
                #[cfg(test)]
                note_fails: false,
            }),
            root: ChainId { idx: 0, gen: 0 },
            root_lock,
            layout,
            gen: core::sync::atomic::AtomicU64::new(0),
            changes: core::sync::atomic::AtomicU64::new(0),
            source: None,
        })
    }

    /// A store on the test host in `layout` whose PFS root is an empty directory, inode 1.
    #[cfg(test)]
    pub(crate) fn for_test(layout: Layout) -> Store {
        let mut root = InodeData::default();
        root.meta.objtype = media::OBJTYPE_DIRECTORY;
        root.meta.inum = 1;
        Store::with_layout(crate::host::testhost::host(), root, layout).unwrap()
    }

    /// The PFS root inode.
    pub fn root(&self) -> ChainId {
        self.root
    }

    /// The host this store's locks come from.
    pub fn host(&self) -> &'static dyn Host {
        self.host
    }

    /// The frontend change generation: it moves whenever a frontend change (mkdir, write, rm,
    /// chmod, link) locks its path, before it changes anything under it.
    pub fn frontend_gen(&self) -> u64 {
        self.gen.load(core::sync::atomic::Ordering::SeqCst)
    }

    /// The change count: it moves with every change of a chain (insert, modify, replace,
    /// a new modify_tid, delete), whoever makes it (frontend or synchronizer). Equal counts
    /// read at two times mean the store did not change between them, without looking at
    /// its chains.
    pub fn changes(&self) -> u64 {
        self.changes.load(core::sync::atomic::Ordering::SeqCst)
    }

    /// Count one change.
    fn count_change(&self) {
        self.changes
            .fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    }

    /// Number of chains in memory (the PFS root included; see [`evict`]).
    pub fn chain_count(&self) -> usize {
        self.arena.read().live
    }

    // ----- reads (arena lock only) -----

    /// A chain's header.
    pub fn bref(&self, id: ChainId) -> Result<Blockref> {
        Ok(self.arena.read().get(id)?.bref)
    }

    /// A chain's parent (None for the PFS root).
    pub fn parent(&self, id: ChainId) -> Result<Option<ChainId>> {
        Ok(self.arena.read().get(id)?.parent)
    }

    /// Number of children of a chain in memory (a table's ranges that left memory hold
    /// more, see [`evict`]).
    pub fn child_count(&self, id: ChainId) -> Result<usize> {
        Ok(self.arena.read().get(id)?.children.len())
    }

    /// An inode's meta-data (`Invalid` for a DATA chain). An inode on the media is read
    /// through the store's source (EIO when that read fails or is damaged).
    pub fn meta(&self, id: ChainId) -> Result<InodeMeta> {
        let (bref, ver) = {
            let a = self.arena.read();
            let c = a.get(id)?;
            match &c.body {
                Body::Inode(ip) => {
                    self.hit(&c.pay);
                    return Ok(ip.meta);
                }
                Body::Data(_) if c.pay.at == Where::OnMedia => {}
                Body::Data(_) => return Err(Error::Invalid),
            }
            if c.bref.btype != media::BREF_TYPE_INODE {
                return Err(Error::Invalid);
            }
            (c.bref, c.pay.ver)
        };
        match self.read_on_media(id, bref, ver, 0, true)?.into_body() {
            Body::Inode(ip) => Ok(ip.meta),
            Body::Data(_) => Err(Error::Invalid),
        }
    }

    /// Whether chain `id` is a directory inode. Never reads the media: an inode whose
    /// payload is there answers from its resident summary.
    pub fn is_directory(&self, id: ChainId) -> Result<bool> {
        Ok(self.arena.read().get(id)?.is_dir())
    }

    /// The summary of inode `id` ([`inode::InodeSummary`]), `None` for a DATA chain. Never
    /// reads the media: an inode whose payload is there answers from its resident summary.
    pub fn inode_summary(&self, id: ChainId) -> Result<Option<inode::InodeSummary>> {
        let a = self.arena.read();
        let c = a.get(id)?;
        Ok(match &c.body {
            Body::Inode(ip) => Some(inode::InodeSummary::of(ip)),
            Body::Data(_)
                if c.pay.at == Where::OnMedia && c.bref.btype == media::BREF_TYPE_INODE =>
            {
                Some(inode::InodeSummary {
                    dir: c.dir,
                    digest: c.digest,
                })
            }
            Body::Data(_) => None,
        })
    }

    /// Chain `id`'s header and payload version when its payload is on the media (the block
    /// the header names holds it), `None` when it is in memory: one look under the lock.
    pub fn on_media_at(&self, id: ChainId) -> Result<Option<(Blockref, cache::PayVer)>> {
        let a = self.arena.read();
        let c = a.get(id)?;
        Ok((c.pay.at == Where::OnMedia).then_some((c.bref, c.pay.ver)))
    }

    /// Chain `id`'s header and payload version, read together: what a block written for it
    /// ahead of a commit is checked against (every change of a payload takes a new version).
    pub fn versioned_bref(&self, id: ChainId) -> Result<(Blockref, cache::PayVer)> {
        let a = self.arena.read();
        let c = a.get(id)?;
        Ok((c.bref, c.pay.ver))
    }

    /// A copy of a chain's header and payload.
    pub fn read(&self, id: ChainId) -> Result<(Blockref, Body)> {
        self.read_sealed(id)
            .map(|(bref, sealed)| (bref, sealed.into_body()))
    }

    /// A copy of a chain's header and payload, with the check code the header holds for it
    /// (but the PFS root's): installing the copy elsewhere unchanged then costs the copy alone,
    /// not a hash too.
    pub fn read_sealed(&self, id: ChainId) -> Result<(Blockref, Sealed)> {
        self.read_versioned(id).map(|(b, sealed, _)| (b, sealed))
    }

    /// [`Store::read_sealed`] with the payload version copied ([`cache`]): what a commit
    /// hands back to [`Store::set_flushed`] once the copy is on the media. A payload on the
    /// media is read through the store's source (EIO when that read fails or is damaged).
    pub fn read_versioned(&self, id: ChainId) -> Result<(Blockref, Sealed, cache::PayVer)> {
        self.read_copy(id, true, Vec::new())
    }

    /// [`Store::read_versioned`] copying a DATA payload in memory into `spare` (emptied
    /// first, grown if short) instead of a fresh buffer: a commit writes each block from one
    /// buffer it hands back here, which stays in the CPU's cache for the device write that
    /// reads it next, and takes no fresh memory per block. A payload read from the media
    /// comes in its own buffer (`spare` is dropped). The copy's buffer may be larger than
    /// its payload: it is meant to be written and passed on, not installed.
    pub fn read_versioned_into(
        &self,
        id: ChainId,
        spare: Vec<u8>,
    ) -> Result<(Blockref, Sealed, cache::PayVer)> {
        self.read_copy(id, true, spare)
    }

    /// [`Store::read_sealed`] for a copy that leaves this store (a sync installing it on
    /// another node): a DATA block on the media is read for the copy alone and does not
    /// enter the payload cache. A sync copies such a block once; caching it would cost a
    /// second buffer of fresh memory and a copy per block (a first sync streams every block
    /// of the master through here), and push out what this store's own readers use. An
    /// inode is still offered to the cache: the sync reads a deferred inode again once its
    /// children are done.
    pub fn read_passing(&self, id: ChainId) -> Result<(Blockref, Sealed)> {
        self.read_copy(id, false, Vec::new())
            .map(|(bref, sealed, _)| (bref, sealed))
    }

    /// [`Store::read_versioned`]; a DATA block read from the media is offered to the
    /// payload cache only when `cache_data` is set (any other payload always is). A DATA
    /// payload in memory is copied into `spare` when it has room (see
    /// [`Store::read_versioned_into`]).
    fn read_copy(
        &self,
        id: ChainId,
        cache_data: bool,
        mut spare: Vec<u8>,
    ) -> Result<(Blockref, Sealed, cache::PayVer)> {
        // A buffer written moments ago is in the cache: copying through the cache is cheaper
        // than streaming past it (see the copy below).
        let warm = spare.capacity() > 0;
        // Allocation may fail and may sleep: size the copy first, then fill it under the lock.
        loop {
            let len = {
                let a = self.arena.read();
                let c = a.get(id)?;
                if c.pay.at == Where::OnMedia {
                    let (bref, ver, trim) = (c.bref, c.pay.ver, c.pay.trim);
                    drop(a);
                    let cache = cache_data || bref.btype != media::BREF_TYPE_DATA;
                    return Ok((bref, self.read_on_media(id, bref, ver, trim, cache)?, ver));
                }
                match &c.body {
                    Body::Inode(_) => None,
                    Body::Data(d) => Some(d.len()),
                }
            };
            let mut body = match len {
                None => Body::Inode(InodeData::try_zeroed_box()?),
                Some(n) => {
                    let mut v = core::mem::take(&mut spare);
                    v.clear();
                    v.try_reserve_exact(n)?;
                    Body::Data(v)
                }
            };
            let a = self.arena.read();
            let c = a.get(id)?;
            if c.pay.at == Where::OnMedia {
                // Evicted between the two looks: read it through the source.
                continue;
            }
            self.hit(&c.pay);
            let mut sum = None;
            let mut carried = false;
            match (&c.body, &mut body) {
                (Body::Inode(src), Body::Inode(dst)) => {
                    **dst = **src;
                    // DEVIATION (not a bug fix), as for DATA below: an inode is sealed by
                    // every install and every change of its payload. Not the PFS root's: the
                    // store is created with it, unsealed. Not in a store with a source: a
                    // clean inode's header holds the code of its block on the media, whose
                    // table the payload has cleared.
                    if c.parent.is_some() && self.source.is_none() {
                        sum = Some((c.bref.check_method(), c.bref.check));
                    }
                }
                (Body::Data(src), Body::Data(dst)) if dst.capacity() >= src.len() => {
                    // Room is reserved: no allocation under the arena lock.
                    if warm {
                        dst.extend_from_slice(src);
                    } else {
                        crate::mem::extend_streaming(dst, src);
                    }
                    // DEVIATION (not a bug fix): HAMMER2 computes the copy's check code again
                    // when it flushes it (`hammer2_chain_setcheck`). Every install here seals
                    // its payload, so the header read under this lock already holds the code
                    // of exactly these bytes by its method: the copy carries it and the bytes
                    // are read once, by the copy alone.
                    sum = Some((c.bref.check_method(), c.bref.check));
                    carried = c.carried;
                }
                // Resized between the two looks: size it again.
                _ => continue,
            }
            let sealed = Sealed {
                body,
                check: sum,
                carried,
            };
            return Ok((c.bref, sealed, c.pay.ver));
        }
    }

    /// The first child of `parent` whose key range overlaps `beg ..= end` (`hammer2_chain_lookup`;
    /// `next` is a lookup from the returned range's end + 1).
    pub fn lookup(
        &self,
        parent: ChainId,
        beg: u64,
        end: u64,
    ) -> Result<Option<(ChainId, Blockref)>> {
        self.walk_table(parent, |a, p| {
            Ok(match p.children.first_overlapping(beg, end) {
                Ok(Some((_, id))) => Ok(Some((id, a.get(id)?.bref))),
                Ok(None) => Ok(None),
                Err(m) => Err(m),
            })
        })
    }

    /// The child after `prev` (whose header was `prev_bref`) within `..= end`, or None.
    pub fn next(
        &self,
        parent: ChainId,
        prev_bref: &Blockref,
        end: u64,
    ) -> Result<Option<(ChainId, Blockref)>> {
        match prev_bref.key_end().checked_add(1) {
            Some(k) if k <= end => self.lookup(parent, k, end),
            _ => Ok(None),
        }
    }

    /// The summary of `parent`'s children whose key lies in `beg ..= end` (see [`children`]):
    /// equal summaries on two nodes mean the same children there.
    pub fn key_sum(&self, parent: ChainId, beg: u64, end: u64) -> Result<RangeSum> {
        self.walk_table(parent, |_, p| match p.children.key_sum(beg, end) {
            Ok(sum) => Ok(Ok(sum)),
            Err(TabErr::Miss(m)) => Ok(Err(m)),
            Err(TabErr::Err(e)) => Err(e),
        })
    }

    /// The next step of a pruned walk over `parent`'s block table (see
    /// [`children::Children::span`]).
    pub fn span(&self, parent: ChainId, from: u64, open: Option<(u64, u64)>) -> Result<Span> {
        self.walk_table(parent, |_, p| Ok(p.children.span(from, open)))
    }

    /// `parent`'s block table as HAMMER2 would lay it out, depth first in key order: the
    /// blockrefs of its blockset (depth 0) and of its indirect blocks (depth 1 and below). An
    /// indirect block appears as its INDIRECT blockref, a child as the child's own blockref.
    pub fn block_table(&self, parent: ChainId) -> Result<Vec<TableRef>> {
        let a = self.arena.read();
        let p = a.get(parent)?;
        let mut out = Vec::new();
        out.try_reserve(p.children.len())?;
        let mut err = Ok(());
        p.children.visit(|depth, v| {
            let (bref, child) = match v {
                Visit::Indirect(b) => (b, None),
                Visit::Child(id) => match a.get(id) {
                    Ok(c) => (c.bref, Some(id)),
                    Err(e) => {
                        err = Err(e);
                        return;
                    }
                },
            };
            if let Err(e) = try_push(
                &mut out,
                TableRef {
                    depth: depth as u8,
                    bref,
                    child,
                },
            ) {
                err = Err(e);
            }
        })?;
        err.map(|_| out)
    }

    /// The child of `parent` with exactly `key`.
    pub fn child_at(&self, parent: ChainId, key: u64) -> Result<Option<ChainId>> {
        Ok(self
            .lookup(parent, key, key)?
            .filter(|(_, b)| b.key == key)
            .map(|(id, _)| id))
    }

    /// The keys from the PFS root down to `id` (empty for the root).
    pub fn key_path(&self, id: ChainId) -> Result<Vec<u64>> {
        let a = self.arena.read();
        let mut keys = Vec::new();
        let mut cur = a.get(id)?;
        while let Some(p) = cur.parent {
            try_push(&mut keys, cur.bref.key)?;
            cur = a.get(p)?;
        }
        keys.reverse();
        Ok(keys)
    }

    /// The chain reached from the PFS root by following `keys`.
    pub fn resolve_keys(&self, keys: &[u64]) -> Result<Option<ChainId>> {
        let mut cur = self.root;
        for &k in keys {
            let found = self.walk_table(cur, |_, p| Ok(p.children.first_overlapping(k, k)))?;
            match found {
                Some((key, id)) if key == k => cur = id,
                _ => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    // ----- chain locks -----

    fn raw_lock(&self, id: ChainId, parent: Option<ChainId>) -> Result<(usize, u8)> {
        let a = self.arena.read();
        let c = a.get(id)?;
        if c.parent != parent {
            return Err(Error::NotFound);
        }
        Ok((c.lock, c.depth))
    }

    fn acquire(&self, id: ChainId, raw: usize, depth: u8, mode: LockMode) -> ChainGuard<'_> {
        self.host.lock(&RawLock::from_raw(raw), mode, depth);
        ChainGuard {
            store: self,
            id,
            raw,
            mode,
        }
    }

    /// Lock the PFS root.
    pub fn lock_root(&self, mode: LockMode) -> ChainGuard<'_> {
        // The root is never freed while the store lives: its lock handle is fixed.
        self.acquire(self.root, self.root_lock, 0, mode)
    }

    /// Lock `child` of the chain `parent` holds. `NotFound` if it is no longer that child.
    pub fn lock_child(
        &self,
        parent: &ChainGuard<'_>,
        child: ChainId,
        mode: LockMode,
    ) -> Result<ChainGuard<'_>> {
        // Holding the parent keeps the child alive: freeing it needs the parent exclusively.
        let (raw, depth) = self.raw_lock(child, Some(parent.id))?;
        Ok(self.acquire(child, raw, depth, mode))
    }

    /// Lock any chain by coupling down from the PFS root (shared on the way, `mode` at the end).
    /// `NotFound` if the chain was freed.
    pub fn lock(&self, id: ChainId, mode: LockMode) -> Result<ChainGuard<'_>> {
        let mut path = Vec::new();
        {
            let a = self.arena.read();
            let mut cur = id;
            loop {
                try_push(&mut path, cur)?;
                match a.get(cur)?.parent {
                    Some(p) => cur = p,
                    None => break,
                }
            }
        }
        if path.last() != Some(&self.root) {
            return Err(Error::NotFound);
        }
        let n = path.len();
        let mut held = self.lock_root(if n == 1 { mode } else { LockMode::Shared });
        for (i, &c) in path.iter().rev().enumerate().skip(1) {
            let m = if i + 1 == n { mode } else { LockMode::Shared };
            let g = self.lock_child(&held, c, m)?;
            held = g;
        }
        Ok(held)
    }

    // ----- modifications (caller holds the locks named in each doc) -----

    /// Create a child of the chain `parent` holds exclusively.
    /// The check code is computed here.
    pub fn insert(&self, parent: &ChainGuard<'_>, bref: Blockref, body: Body) -> Result<ChainId> {
        self.insert_sealed(parent, bref, Sealed::new(body))
    }

    /// [`Store::insert`] of a payload whose check code may be computed already.
    pub fn insert_sealed(
        &self,
        parent: &ChainGuard<'_>,
        mut bref: Blockref,
        body: Sealed,
    ) -> Result<ChainId> {
        let (body, carried) = body.seal(&mut bref)?;
        self.see_range(parent.id, bref.key, bref.key_end())?;
        self.journal_room()?;
        let lock = self.host.lock_create()?;
        let raw = lock.as_raw();
        let r = self.insert_locked(
            parent.id,
            bref,
            (body, carried),
            raw,
            (Where::Pinned, inode::InodeSummary::default()),
        );
        match r {
            Ok(_) => self.count_change(),
            Err(_) => self.host.lock_destroy(lock),
        }
        r
    }

    /// Give the slot table its next chunk, allocated outside the arena lock: the chunks of a
    /// big store are megabytes, and a kernel allocator may sleep for that much memory, which
    /// must not happen while other threads spin on the lock. Under the lock the chunk is only
    /// installed; one another insert installed meanwhile is freed after it.
    fn grow_slots(&self) -> Result<()> {
        let Some(n) = self.arena.read().slots.wanted() else {
            return Ok(());
        };
        let mut chunk: Vec<Slot> = Vec::new();
        chunk.try_reserve_exact(n)?;
        let unused = self.arena.write().slots.install(chunk);
        drop(unused);
        Ok(())
    }

    /// Create a child of the chain `parent` holds exclusively whose payload is the block
    /// `bref` names on the media, left there: a DATA chain with a block, as a load finds it
    /// (`Invalid` for any other). Its bytes are read through the store's payload source
    /// when asked for ([`cache`]); `bref`'s check code is the block's, kept as it is.
    pub fn insert_on_media(&self, parent: &ChainGuard<'_>, bref: Blockref) -> Result<ChainId> {
        if bref.btype != media::BREF_TYPE_DATA {
            return Err(Error::Invalid);
        }
        self.insert_left(parent, bref, inode::InodeSummary::default())
    }

    /// [`Store::insert_on_media`] of an inode (not a PFS root), as a load finds it:
    /// `summary` is all the store keeps of it until it is read ([`inode::InodeSummary::of`]
    /// its body). Read back, its block table is cleared ([`inode::clear_table`]): its
    /// children are chains.
    pub fn insert_inode_on_media(
        &self,
        parent: &ChainGuard<'_>,
        bref: Blockref,
        summary: inode::InodeSummary,
    ) -> Result<ChainId> {
        if bref.btype != media::BREF_TYPE_INODE {
            return Err(Error::Invalid);
        }
        self.insert_left(parent, bref, summary)
    }

    /// Insert a chain of header `bref` (and inode summary `summary`) whose payload stays on
    /// the media.
    fn insert_left(
        &self,
        parent: &ChainGuard<'_>,
        bref: Blockref,
        summary: inode::InodeSummary,
    ) -> Result<ChainId> {
        if !cache::evictable(&bref) {
            return Err(Error::Invalid);
        }
        self.see_range(parent.id, bref.key, bref.key_end())?;
        self.journal_room()?;
        let lock = self.host.lock_create()?;
        let raw = lock.as_raw();
        let body = Body::Data(Vec::new());
        let r = self.insert_locked(
            parent.id,
            bref,
            (body, false),
            raw,
            (Where::OnMedia, summary),
        );
        match r {
            Ok(_) => self.count_change(),
            Err(_) => self.host.lock_destroy(lock),
        }
        r
    }

    /// Link a new chain `bref` with its payload (and whether its check code was carried in
    /// with it) under `parent`.
    fn insert_locked(
        &self,
        parent: ChainId,
        bref: Blockref,
        (body, carried): (Body, bool),
        lock: usize,
        (at, summary): (Where, inode::InodeSummary),
    ) -> Result<ChainId> {
        let mut a = loop {
            let a = self.arena.write();
            if !a.free.is_empty() || a.slots.wanted().is_none() {
                break a;
            }
            drop(a);
            self.grow_slots()?;
        };
        // Capped below HOST_LOCK_DEPTH: a validator must never take a chain for a host lock.
        let depth = a
            .get(parent)?
            .depth
            .saturating_add(1)
            .min(crate::host::CHAIN_DEPTH_MAX);
        a.free.try_reserve(1)?;
        a.note(Some(parent), bref.key)?;
        let idx = match a.free.pop() {
            Some(i) => i,
            // Room was made above: this push does not allocate (it fails only when the
            // table is at its largest).
            None => a.push_empty_slot()?,
        };
        let gen = a.slots.get(idx as usize).ok_or(Error::Invalid)?.gen;
        let id = ChainId { idx, gen };
        a.pay_seq = a.pay_seq.wrapping_add(1);
        let ver = a.pay_seq;
        let pc = a.get_mut(parent)?;
        let how = pc.creating(bref.btype);
        if let Err(e) = pc
            .children
            .insert(bref.key, bref.keybits, bref.modify_tid, id, how)
        {
            a.free.push(idx);
            return Err(e.into());
        }
        // The slot's generation was read above: it exists.
        a.slots.get_mut(idx as usize).ok_or(Error::Invalid)?.chain = Some(Chain {
            bref,
            body,
            children: Children::default(),
            parent: Some(parent),
            depth,
            lock,
            unflushed_in: a.settled,
            pay: match at {
                Where::OnMedia => Pay::on_media(ver),
                _ => Pay::pinned(ver),
            },
            dir: summary.dir,
            digest: summary.digest,
            carried,
            home: None,
        });
        a.live += 1;
        a.chains_grew(a.live - 1);
        a.count_pinned(id, true)?;
        Ok(id)
    }

    /// Change a chain the caller holds exclusively: `f` gets its header and payload. A changed
    /// key is refused (`Invalid`); a changed keybits re-keys the parent's block table; the check
    /// code is recomputed. A payload on the media is read first (`Io` if that fails), and
    /// stays pinned in memory until a commit writes it ([`cache`]).
    pub fn modify<R>(
        &self,
        g: &ChainGuard<'_>,
        f: impl FnOnce(&mut Blockref, &mut Body) -> Result<R>,
    ) -> Result<R> {
        self.journal_room()?;
        // Whether this call pinned a clean payload, on any round: nobody else changes it
        // meanwhile (the caller holds the chain), so it is still clean if this call fails.
        let mut was_clean = false;
        let mut a = loop {
            // `f` changes the payload in place: it must be in memory, and stay.
            was_clean |= self.pin_payload(g.id)?;
            let a = self.arena.write();
            // A commit may have released it since (it was clean): read it again.
            let c = a.get(g.id)?;
            if c.pay.at == Where::Pinned {
                if a.is_lent(&c.body) {
                    // A commit is writing these very bytes: they change once it is done
                    // (one block's device write). Slept, not spun: a userland host's
                    // `relax` does not yield.
                    drop(a);
                    let never = core::sync::atomic::AtomicU32::new(0);
                    self.host
                        .sleep_on_word(&never, 0, Some(core::time::Duration::from_micros(50)));
                    continue;
                }
                break a;
            }
        };
        if let Err(e) = a.note_chain(g.id) {
            // Unchanged and not journaled: a payload pinned just now for the change goes
            // back to the media, or nothing (no commit) would ever release it.
            let freed = if was_clean { a.unpin(g.id) } else { None };
            drop(a);
            drop(freed);
            return Err(e);
        }
        a.pay_seq = a.pay_seq.wrapping_add(1);
        let ver = a.pay_seq;
        // Counted again after `f`, which may resize it, as one step.
        let counted = a.pinned_len(g.id)?;
        let c = a.get_mut(g.id)?;
        c.pay.ver = ver;
        let mut bref = c.bref;
        // Counted before `f` runs: a failure after it may leave the payload changed.
        self.count_change();
        c.carried = false;
        let r = f(&mut bref, &mut c.body).and_then(|r| {
            c.body.seal(&mut bref)?;
            Ok(r)
        });
        let r = r.and_then(|r| {
            a.set_bref(g.id, bref)?;
            Ok(r)
        });
        if r.is_err() {
            // `f` may have changed the payload before the failure: the header's check code
            // must still describe the bytes held, or a copy would carry a wrong code to
            // another node's media (a synced copy keeps the code it came with).
            let c = a.get_mut(g.id)?;
            let mut held = c.bref;
            if c.body.seal(&mut held).is_ok() {
                c.bref.check = held.check;
            }
        }
        let now = a.pinned_len(g.id)?;
        a.repin(counted, now);
        r
    }

    /// Give the chain the caller holds exclusively a new header and payload (same key). The
    /// check code is computed, and the old payload freed, outside the arena lock.
    pub fn replace(&self, g: &ChainGuard<'_>, bref: Blockref, body: Body) -> Result<()> {
        self.replace_sealed(g, bref, Sealed::new(body))
    }

    /// [`Store::replace`] with a payload whose check code may be computed already.
    pub fn replace_sealed(
        &self,
        g: &ChainGuard<'_>,
        mut bref: Blockref,
        body: Sealed,
    ) -> Result<()> {
        let (body, carried) = body.seal(&mut bref)?;
        self.see_growth(g.id, &bref)?;
        self.journal_room()?;
        let old_body = {
            let mut a = self.arena.write();
            a.note_chain(g.id)?;
            // Counted first: a failed re-key may have moved the parent's summaries already.
            self.count_change();
            // The new payload is pinned until a commit writes it.
            a.uncount(g.id)?;
            a.pay_seq = a.pay_seq.wrapping_add(1);
            let ver = a.pay_seq;
            let c = match a.set_bref(g.id, bref) {
                Ok(c) => c,
                Err(e) => {
                    // Unchanged: counted in again.
                    a.count_pinned(g.id, true)?;
                    return Err(e);
                }
            };
            c.pay.at = Where::Pinned;
            c.pay.ver = ver;
            c.carried = carried;
            let old = core::mem::replace(&mut c.body, body);
            // A buffer lent out stays until its loan ends.
            let old = a.surrender(old);
            a.count_pinned(g.id, true)?;
            old
        };
        drop(old_body);
        Ok(())
    }

    /// Set a held chain's modify_tid.
    pub fn set_modify_tid(&self, g: &ChainGuard<'_>, tid: u64) -> Result<()> {
        self.journal_room()?;
        let mut a = self.arena.write();
        a.note_chain(g.id)?;
        let c = a.get_mut(g.id)?;
        let (key, keybits, btype, parent) = (c.bref.key, c.bref.keybits, c.bref.btype, c.parent);
        // Counted first: a failed update may have moved some of the parent's summaries.
        self.count_change();
        if let Some(p) = parent {
            // The parent's range summaries follow its children's TIDs.
            let pc = a.get_mut(p)?;
            let how = pc.creating(btype);
            pc.children.update(key, keybits, tid, how)?;
        }
        a.get_mut(g.id)?.bref.modify_tid = tid;
        Ok(())
    }

    /// Delete `child` (held exclusively, its parent held exclusively too) and everything under
    /// it, destroying every chain lock. Descendants are locked top-down before being freed, so
    /// anyone still holding one is waited for. Uses an explicit stack, not recursion.
    pub fn delete(&self, parent: &ChainGuard<'_>, child: ChainGuard<'_>) -> Result<usize> {
        // Detach first: from here on the subtree is unreachable from the root.
        self.journal_room()?;
        {
            let mut a = self.arena.write();
            let key = {
                let c = a.get(child.id)?;
                if c.parent != Some(parent.id) {
                    return Err(Error::NotFound);
                }
                c.bref.key
            };
            a.note(Some(parent.id), key)?;
            a.get_mut(parent.id)?.children.remove(key);
            self.count_change();
            // Unreachable by key and by parent pointer: a stale id inside it can no longer be
            // locked through the PFS root ([`Store::lock`] answers `NotFound`).
            a.get_mut(child.id)?.parent = None;
        }
        let mut stack: Vec<ChainGuard<'_>> = Vec::new();
        stack.try_reserve(8)?;
        stack.push(child);
        let mut freed = 0;
        while let Some(top) = stack.last() {
            self.host.relax();
            let first = self.arena.read().get(top.id)?.children.first_resident();
            match first {
                Some(c) => {
                    let g = self.lock_child(top, c, LockMode::Exclusive)?;
                    // The stack is as deep as the tree; growth may fail cleanly mid-way, leaving
                    // a detached, partly freed subtree that `Drop` still reclaims.
                    try_push(&mut stack, g)?;
                }
                None => {
                    let g = stack.pop().ok_or(Error::Invalid)?;
                    self.free_leaf(g)?;
                    freed += 1;
                }
            }
        }
        Ok(freed)
    }

    fn free_leaf(&self, g: ChainGuard<'_>) -> Result<()> {
        let (id, raw) = (g.id, g.raw);
        {
            let mut a = self.arena.write();
            let c = a.get(id)?;
            if let Some(p) = c.parent {
                let key = c.bref.key;
                if let Ok(pc) = a.get_mut(p) {
                    // Only its own entry: the parent may have been re-keyed meanwhile.
                    if matches!(pc.children.first_overlapping(key, key), Ok(Some((_, i))) if i == id)
                    {
                        pc.children.remove(key);
                    }
                }
            }
            a.free.try_reserve(1)?;
            a.uncount(id)?;
            if a.is_lent(&a.get(id)?.body) {
                // Freed when its loan ends, not with the chain.
                let lent = core::mem::replace(&mut a.get_mut(id)?.body, Body::Data(Vec::new()));
                let rest = a.surrender(lent);
                drop(rest);
            }
            let slot = a.slots.get_mut(id.idx as usize).ok_or(Error::Invalid)?;
            slot.chain = None;
            slot.gen = slot.gen.wrapping_add(1);
            a.free.push(id.idx);
            a.live -= 1;
        }
        drop(g);
        self.host.lock_destroy(RawLock::from_raw(raw));
        Ok(())
    }
}

impl HeldChain<ChainId> for ChainGuard<'_> {
    fn id(&self) -> ChainId {
        self.id
    }
}

impl ChainStore for Store {
    type Id = ChainId;
    type Guard<'a> = ChainGuard<'a>;

    fn root(&self) -> ChainId {
        self.root
    }
    fn bref(&self, id: ChainId) -> Result<Blockref> {
        Store::bref(self, id)
    }
    fn read(&self, id: ChainId) -> Result<(Blockref, Body)> {
        Store::read(self, id)
    }
    fn payload_on_media(&self, id: ChainId) -> Result<bool> {
        Store::is_on_media(self, id)
    }
    fn lookup(&self, parent: ChainId, beg: u64, end: u64) -> Result<Option<(ChainId, Blockref)>> {
        Store::lookup(self, parent, beg, end)
    }
    fn lookup_from(
        &self,
        parent: ChainId,
        beg: u64,
        end: u64,
        hint: &mut Hint,
    ) -> Result<Option<(ChainId, Blockref)>> {
        self.walk_table(parent, |a, p| {
            Ok(match p.children.first_overlapping_hinted(beg, end, hint) {
                Ok(Some((_, id))) => Ok(Some((id, a.get(id)?.bref))),
                Ok(None) => Ok(None),
                Err(m) => Err(m),
            })
        })
    }
    fn key_path(&self, id: ChainId) -> Result<Vec<u64>> {
        Store::key_path(self, id)
    }
    fn resolve_keys(&self, keys: &[u64]) -> Result<Option<ChainId>> {
        Store::resolve_keys(self, keys)
    }
    fn lock(&self, id: ChainId, mode: LockMode) -> Result<ChainGuard<'_>> {
        Store::lock(self, id, mode)
    }
    fn lock_child<'a>(
        &'a self,
        parent: &ChainGuard<'a>,
        child: ChainId,
        mode: LockMode,
    ) -> Result<ChainGuard<'a>> {
        Store::lock_child(self, parent, child, mode)
    }
    fn read_sealed(&self, id: ChainId) -> Result<(Blockref, Sealed)> {
        Store::read_passing(self, id)
    }
    fn insert(&self, parent: &ChainGuard<'_>, bref: Blockref, body: Body) -> Result<ChainId> {
        Store::insert(self, parent, bref, body)
    }
    fn insert_sealed(
        &self,
        parent: &ChainGuard<'_>,
        bref: Blockref,
        body: Sealed,
    ) -> Result<ChainId> {
        Store::insert_sealed(self, parent, bref, body)
    }
    fn replace(&self, g: &ChainGuard<'_>, bref: Blockref, body: Body) -> Result<()> {
        Store::replace(self, g, bref, body)
    }
    fn replace_sealed(&self, g: &ChainGuard<'_>, bref: Blockref, body: Sealed) -> Result<()> {
        Store::replace_sealed(self, g, bref, body)
    }
    fn delete<'a>(&'a self, parent: &ChainGuard<'a>, child: ChainGuard<'a>) -> Result<usize> {
        Store::delete(self, parent, child)
    }
    fn frontend_gen(&self) -> u64 {
        Store::frontend_gen(self)
    }
    fn past_pinned_limit(&self) -> bool {
        Store::past_pinned_limit(self)
    }
    fn past_chain_limit(&self) -> bool {
        Store::past_chain_limit(self)
    }
    fn key_sum(&self, parent: ChainId, beg: u64, end: u64) -> Result<RangeSum> {
        Store::key_sum(self, parent, beg, end)
    }
    fn span(&self, parent: ChainId, from: u64, open: Option<(u64, u64)>) -> Result<Span> {
        Store::span(self, parent, from, open)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let host = self.host;
        self.arena.with_mut(|a| {
            for s in a.slots.iter_mut() {
                if let Some(c) = s.chain.take() {
                    host.lock_destroy(RawLock::from_raw(c.lock));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::testhost::host;

    fn data_bref(key: u64, tid: u64) -> Blockref {
        let mut b = Blockref::new(media::BREF_TYPE_DATA, key, 16);
        b.set_size_radix(10);
        b.modify_tid = tid;
        b
    }

    #[test]
    fn every_kind_of_change_moves_the_change_count() {
        let s = Store::new(host(), InodeData::default()).unwrap();
        let mut last = s.changes();
        let mut moved = |what: &str| {
            let now = s.changes();
            assert!(now > last, "{what} did not count");
            last = now;
        };
        let g = s.lock_root(LockMode::Exclusive);
        let id = s
            .insert(&g, data_bref(0, 1), Body::Data(alloc::vec![1; 1024]))
            .unwrap();
        moved("insert");
        let c = s.lock_child(&g, id, LockMode::Exclusive).unwrap();
        s.modify(&c, |b, _| {
            b.data_off = 0x10_000a;
            Ok(())
        })
        .unwrap();
        moved("modify");
        s.replace(&c, data_bref(0, 2), Body::Data(alloc::vec![2; 1024]))
            .unwrap();
        moved("replace");
        s.set_modify_tid(&c, 3).unwrap();
        moved("set_modify_tid");
        s.delete(&g, c).unwrap();
        moved("delete");
        drop(g);
        // Reads and locks are no change.
        let _ = s.lookup(s.root(), 0, media::KEY_MAX).unwrap();
        drop(s.lock_root(LockMode::Shared));
        assert_eq!(s.changes(), last);
    }

    #[test]
    fn insert_lookup_next_delete_and_locks() {
        let h = host();
        let s = Store::new(h, InodeData::default()).unwrap();
        let root = s.root();
        {
            let g = s.lock_root(LockMode::Exclusive);
            for k in [0x20000u64, 0, 0x10000] {
                s.insert(
                    &g,
                    data_bref(k, k + 1),
                    Body::Data(alloc::vec![k as u8; 1024]),
                )
                .unwrap();
            }
            assert_eq!(
                s.insert(&g, data_bref(0x10000, 1), Body::Data(alloc::vec![0; 1024])),
                Err(Error::Exists)
            );
        }
        assert_eq!(s.chain_count(), 4);
        let (a, ab) = s.lookup(root, 0, media::KEY_MAX).unwrap().unwrap();
        assert_eq!(ab.key, 0);
        let (b, bb) = s.next(root, &ab, media::KEY_MAX).unwrap().unwrap();
        assert_eq!((bb.key, bb.modify_tid), (0x10000, 0x10001));
        let (_, cb) = s.next(root, &bb, media::KEY_MAX).unwrap().unwrap();
        assert!(s.next(root, &cb, media::KEY_MAX).unwrap().is_none());
        assert_eq!(s.lookup(root, 0x10010, 0x10010).unwrap().unwrap().0, b);
        assert_eq!(s.key_path(b).unwrap(), [0x10000]);
        assert_eq!(s.resolve_keys(&[0x10000]).unwrap(), Some(b));
        assert_eq!(s.resolve_keys(&[0x10001]).unwrap(), None);
        match s.read(b).unwrap() {
            (br, Body::Data(d)) => assert_eq!((br.key, d.len(), d[0]), (0x10000, 1024, 0)),
            _ => panic!("wrong body"),
        }
        {
            let g = s.lock_root(LockMode::Exclusive);
            let c = s.lock_child(&g, a, LockMode::Exclusive).unwrap();
            assert_eq!(s.delete(&g, c).unwrap(), 1);
        }
        assert_eq!(s.bref(a), Err(Error::NotFound), "a stale id is refused");
        assert!(s.lock(a, LockMode::Shared).is_err());
        assert_eq!(s.lookup(root, 0, media::KEY_MAX).unwrap().unwrap().0, b);
        assert_eq!(h.live_locks(), 3);
        drop(s);
        assert_eq!(h.live_locks(), 0, "every chain lock is destroyed");
    }

    #[test]
    fn chain_lock_depth_never_reaches_the_host_lock_depth() {
        let h = host();
        let s = Store::new(h, InodeData::default()).unwrap();
        let mut id = s.root();
        for d in 1..=300usize {
            let g = s.lock(id, LockMode::Exclusive).unwrap();
            id = s
                .insert(&g, data_bref(0, 1), Body::Data(Vec::new()))
                .unwrap();
            let (_, depth) = s.raw_lock(id, Some(g.id)).unwrap();
            let want = d.min(usize::from(crate::host::CHAIN_DEPTH_MAX));
            assert_eq!(usize::from(depth), want, "chain {d} below the root");
        }
    }

    #[test]
    fn lent_bytes_outlive_a_replace_and_a_delete_of_their_chain() {
        let h = host();
        let s = Store::new(h, InodeData::default()).unwrap();
        let g = s.lock_root(LockMode::Exclusive);
        let old: Vec<u8> = (0..65536u32).map(|i| (i % 249) as u8).collect();
        let a = s
            .insert(&g, data_bref(0, 1), Body::Data(old.clone()))
            .unwrap();
        let b = s
            .insert(&g, data_bref(0x10000, 2), Body::Data(vec![3; 4096]))
            .unwrap();
        let (ab, loan, carried, ver) = s.lend_data(a).unwrap().unwrap();
        assert_eq!(
            (ab, ver),
            (s.bref(a).unwrap(), s.read_versioned(a).unwrap().2)
        );
        assert_eq!(carried, s.read_sealed(a).unwrap().1.carried_check());
        assert_eq!(loan.bytes(), &old[..]);
        // One loan at a time: the next caller copies.
        assert!(s.lend_data(b).unwrap().is_none());
        // Replaced: the chain has its new bytes, the loan still the old ones.
        let ag = s.lock_child(&g, a, LockMode::Exclusive).unwrap();
        s.replace(&ag, data_bref(0, 3), Body::Data(vec![9; 65536]))
            .unwrap();
        drop(ag);
        // Memory freed meanwhile, of the same size, would be handed out again here.
        let fill = vec![0x5au8; 65536];
        assert_eq!(loan.bytes(), &old[..]);
        assert_eq!(s.read(a).unwrap().1, Body::Data(vec![9; 65536]));
        drop((loan, fill));
        // Deleted while lent: the bytes stay until the loan ends.
        let (_, loan, _, _) = s.lend_data(b).unwrap().unwrap();
        let bg = s.lock_child(&g, b, LockMode::Exclusive).unwrap();
        assert_eq!(s.delete(&g, bg).unwrap(), 1);
        let fill = vec![0x5au8; 4096];
        assert_eq!(loan.bytes(), &[3u8; 4096][..]);
        drop((loan, fill));
        // The loan ended: another may begin; an empty payload is never lent.
        assert!(s.lend_data(a).unwrap().is_some());
        let e = s
            .insert(&g, data_bref(0x20000, 4), Body::Data(Vec::new()))
            .unwrap();
        assert!(s.lend_data(e).unwrap().is_none());
    }

    #[test]
    fn a_modify_of_a_lent_payload_waits_for_the_loan() {
        let h = host();
        let s = Store::new(h, InodeData::default()).unwrap();
        let a = {
            let g = s.lock_root(LockMode::Exclusive);
            s.insert(&g, data_bref(0, 1), Body::Data(vec![1; 1024]))
                .unwrap()
        };
        let (_, loan, _, _) = s.lend_data(a).unwrap().unwrap();
        let done = core::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|t| {
            t.spawn(|| {
                let g = s.lock(a, LockMode::Exclusive).unwrap();
                s.modify(&g, |_, body| {
                    if let Body::Data(d) = body {
                        d.fill(2);
                    }
                    Ok(())
                })
                .unwrap();
                done.store(true, core::sync::atomic::Ordering::SeqCst);
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(
                !done.load(core::sync::atomic::Ordering::SeqCst),
                "modified while lent"
            );
            assert_eq!(loan.bytes(), &[1u8; 1024][..]);
            drop(loan);
        });
        assert!(done.load(core::sync::atomic::Ordering::SeqCst));
        assert_eq!(s.read(a).unwrap().1, Body::Data(vec![2; 1024]));
    }

    #[test]
    fn a_copy_into_a_spare_buffer_is_exactly_the_payload() {
        let h = host();
        let s = Store::new(h, InodeData::default()).unwrap();
        let g = s.lock_root(LockMode::Exclusive);
        let long: Vec<u8> = (0..65536u32).map(|i| (i % 253) as u8).collect();
        let short = vec![7u8; 1000];
        let a = s
            .insert(&g, data_bref(0, 1), Body::Data(long.clone()))
            .unwrap();
        let b = s
            .insert(&g, data_bref(0x10000, 2), Body::Data(short.clone()))
            .unwrap();
        // A spare longer than the payload, full of other bytes: none of them show.
        let (bb, sealed, ver) = s.read_versioned_into(b, vec![0xa5; 65536]).unwrap();
        assert_eq!(
            (bb, ver),
            (s.bref(b).unwrap(), s.read_versioned(b).unwrap().2)
        );
        assert_eq!(sealed.body(), &Body::Data(short.clone()));
        // The same buffer passed on: the long payload, then the short one again.
        let Body::Data(spare) = sealed.into_body() else {
            panic!("a DATA payload")
        };
        let (_, sealed, _) = s.read_versioned_into(a, spare).unwrap();
        assert_eq!(sealed.body(), &Body::Data(long.clone()));
        let Body::Data(spare) = sealed.into_body() else {
            panic!("a DATA payload")
        };
        let (_, sealed, _) = s.read_versioned_into(b, spare).unwrap();
        assert_eq!(sealed.body(), &Body::Data(short));
        // The check code travels with the copy as with a fresh one.
        let (_, fresh, _) = s.read_versioned(b).unwrap();
        assert_eq!(sealed.carried_check(), fresh.carried_check());
        s.bref(b).unwrap().verify_check(&[7u8; 1000]).unwrap();
    }

    #[test]
    fn sealed_copy_installs_the_check_of_its_bytes() {
        let h = host();
        let s = Store::new(h, InodeData::default()).unwrap();
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let g = s.lock_root(LockMode::Exclusive);
        let a = s
            .insert(&g, data_bref(0, 1), Body::Data(data[..1024].to_vec()))
            .unwrap();
        let (ab, sealed) = s.read_sealed(a).unwrap();
        assert_eq!(sealed.body(), &Body::Data(data[..1024].to_vec()));
        // Same method: the code computed during the copy is installed, and it is the right one.
        let b = s.insert_sealed(&g, data_bref(0x10000, 2), sealed).unwrap();
        let bb = s.bref(b).unwrap();
        assert_eq!(bb.check, ab.check);
        bb.verify_check(&data[..1024]).unwrap();
        // Another method on the new header: computed by that method, not copied.
        let (_, sealed) = s.read_sealed(a).unwrap();
        let mut crc = data_bref(0x20000, 3);
        crc.methods = media::enc_methods(media::CHECK_ISCSI32, media::COMP_NONE);
        let c = s.insert_sealed(&g, crc, sealed).unwrap();
        let cb = s.bref(c).unwrap();
        assert_ne!(cb.check, ab.check);
        cb.verify_check(&data[..1024]).unwrap();
        // Replace with a sealed copy of another size.
        let cg = s.lock_child(&g, c, LockMode::Exclusive).unwrap();
        let big = s
            .insert(&g, data_bref(0x30000, 4), Body::Data(data.clone()))
            .unwrap();
        let (_, sealed) = s.read_sealed(big).unwrap();
        s.replace_sealed(&cg, crc, sealed).unwrap();
        let (rb, rbody) = s.read(c).unwrap();
        assert_eq!(rbody, Body::Data(data.clone()));
        rb.verify_check(&data).unwrap();
    }

    #[test]
    fn sealed_inode_copy_carries_its_check_but_the_roots_does_not() {
        let s = Store::new(host(), InodeData::default()).unwrap();
        let g = s.lock_root(LockMode::Exclusive);
        let mut ip = InodeData::default();
        ip.meta.mode = 0o644;
        ip.filename[..3].copy_from_slice(b"abc");
        let mut b = Blockref::new(media::BREF_TYPE_INODE, 7, 0);
        b.set_size_radix(10);
        let a = s.insert(&g, b, Body::Inode(Box::new(ip))).unwrap();
        let ab = s.bref(a).unwrap();
        ab.verify_check(&ip.encode()).unwrap();
        let (_, sealed) = s.read_sealed(a).unwrap();
        assert_eq!(sealed.check, Some((ab.check_method(), ab.check)));
        b.key = 8;
        let c = s.insert_sealed(&g, b, sealed).unwrap();
        assert_eq!(s.bref(c).unwrap().check, ab.check);
        // The PFS root is created unsealed: its copy is hashed when installed.
        let (_, root) = s.read_sealed(s.root()).unwrap();
        assert_eq!(root.check, None);
    }

    /// `ChainStore::lookup_from` and `next_from`, and a `TableWalk`, walk a table exactly as
    /// `lookup` and `next` do, whatever changes between their steps (inserts, deletes, widening and narrowing
    /// replaces: indirect blocks split and collapse), and step without searching while
    /// nothing changes.
    #[test]
    fn hinted_walks_answer_as_lookup_and_next_under_changes() {
        let s = Store::new(host(), InodeData::default()).unwrap();
        let root = s.root();
        let mut r = crate::scenario::prng::Stream::new(7);
        let g = s.lock_root(LockMode::Exclusive);
        let chain = |key: u64, keybits: u8, tid: u64| {
            let mut b = Blockref::new(media::BREF_TYPE_DATA, key, keybits);
            b.set_size_radix(10);
            b.modify_tid = tid;
            (b, Body::Data(alloc::vec![tid as u8; 1024]))
        };
        let key = |w: u64| (w % 4000) * 16 + if w % 3 == 0 { 0 } else { (w >> 20) % 16 };
        let mut tid = 0;
        for _ in 0..2000 {
            tid += 1;
            let (b, body) = chain(key(r.next_u64()), 0, tid);
            let _ = s.insert(&g, b, body);
        }
        let depth = |s: &Store| s.block_table(root).unwrap().iter().map(|t| t.depth).max();
        assert!(depth(&s) >= Some(2), "too shallow to test a path");
        // A `TableWalk` steps along, restarted with each walk.
        let step = |prev: Option<Blockref>, hint: &mut Hint, walk: &mut TableWalk<ChainId>| {
            let want = match prev {
                None => s.lookup(root, 0, media::KEY_MAX).unwrap(),
                Some(p) => s.next(root, &p, media::KEY_MAX).unwrap(),
            };
            let got = match prev {
                None => ChainStore::lookup_from(&s, root, 0, media::KEY_MAX, hint),
                Some(p) => ChainStore::next_from(&s, root, &p, media::KEY_MAX, hint),
            };
            assert_eq!(got.unwrap(), want, "after {prev:?}");
            if prev.is_none() {
                *walk = TableWalk::new(root, 0, media::KEY_MAX);
            }
            assert_eq!(walk.step(&s).unwrap(), want, "walk after {prev:?}");
            want.map(|(_, b)| b)
        };
        let mut walk = TableWalk::new(root, 0, media::KEY_MAX);
        // Nothing changing: one search, at the first step.
        let (mut hint, mut prev, mut walked) = (Hint::default(), None, 0);
        while let Some(b) = step(prev, &mut hint, &mut walk) {
            (prev, walked) = (Some(b), walked + 1);
        }
        let all = s.child_count(root).unwrap();
        assert_eq!((walked, hint.misses(), walk.searches()), (all, 1, 1));
        // Steps interleaved with changes, the table growing then shrinking.
        let (mut hint, mut prev) = (Hint::default(), None);
        let (mut steps, mut changes, mut restarts) = (0u32, 0u32, 0u32);
        for i in 0..30_000u32 {
            let w = r.next_u64();
            let grow = (i / 5000) % 2 == 0;
            tid += 1;
            let at = s.lookup(root, key(w >> 3), media::KEY_MAX).unwrap();
            match (w % 8, at) {
                (0 | 1, _) if grow => {
                    let (b, body) = chain(key(w >> 3), 0, tid);
                    let _ = s.insert(&g, b, body);
                }
                (0 | 1, Some((c, _))) => {
                    let cg = s.lock_child(&g, c, LockMode::Exclusive).unwrap();
                    s.delete(&g, cg).unwrap();
                }
                (2, Some((c, cb))) => {
                    // Widened to 16 keys where its key is aligned (refused over a neighbour),
                    // or narrowed back.
                    let kb = if cb.keybits == 0 && cb.key % 16 == 0 {
                        4
                    } else {
                        0
                    };
                    let (b, body) = chain(cb.key, kb, tid);
                    let cg = s.lock_child(&g, c, LockMode::Exclusive).unwrap();
                    let _ = s.replace(&cg, b, body);
                }
                (0..=2, None) => continue,
                _ => {
                    steps += 1;
                    prev = step(prev, &mut hint, &mut walk);
                    restarts += u32::from(prev.is_none());
                    continue;
                }
            }
            changes += 1;
        }
        hint.assert_walk(steps, changes, restarts);
    }

    #[test]
    fn deep_delete_uses_no_recursion_and_frees_locks() {
        let h = host();
        let s = Store::new(h, InodeData::default()).unwrap();
        let mut ids = Vec::new();
        let mut g = s.lock_root(LockMode::Exclusive);
        for i in 0..3000u64 {
            let mut b = Blockref::new(media::BREF_TYPE_INODE, i, 0);
            b.set_size_radix(10);
            let c = s.insert(&g, b, Body::Inode(Box::default())).unwrap();
            ids.push(c);
            g = s.lock_child(&g, c, LockMode::Exclusive).unwrap();
        }
        drop(g);
        let cur = *ids.last().unwrap();
        assert_eq!(s.key_path(cur).unwrap().len(), 3000);
        let g = s.lock(cur, LockMode::Shared).unwrap();
        drop(g);
        {
            let r = s.lock_root(LockMode::Exclusive);
            let c = s.lock_child(&r, ids[0], LockMode::Exclusive).unwrap();
            assert_eq!(s.delete(&r, c).unwrap(), 3000);
        }
        assert_eq!(s.chain_count(), 1);
        assert_eq!(h.live_locks(), 1);
        drop(s);
        assert_eq!(h.live_locks(), 0);
    }
}
