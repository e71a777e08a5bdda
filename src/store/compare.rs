//! Whole-tree comparison of two nodes (or of a node and a snapshot of it).
//!
//! Compared: keys, types, key ranges, sizes, methods, flags, modify_tid, inode meta (for a PFS
//! root only the fields the synchronizer copies, §3.6), file names, embedded and block data,
//! directory entries' heads and embedded names.
//! Not compared: mirror_tid and check codes (they depend on flushes and media).

use alloc::vec::Vec;
use core::cmp::Ordering;
use core::fmt::{self, Write};

use super::inode;
use super::{Body, ChainId, Layout, Store, TableWalk};
use crate::host::Host;
use crate::media::{self, Blockref, DirentHead};
use crate::mem::{try_push, try_to_vec};
use crate::{Error, Result};

/// One chain, copied: where it is, its header, its payload (a
/// [`Snapshot`](crate::cluster::Snapshot)'s unit).
#[derive(Debug, Clone)]
pub struct Record {
    keys: Vec<u64>,
    path: Vec<u8>,
    bref: Blockref,
    body: Body,
}

/// One chain as a comparison sees it, borrowed from a [`Walk`].
#[derive(Clone, Copy)]
struct View<'r> {
    /// The keys from the PFS root down to the chain (empty for the root itself).
    keys: &'r [u64],
    /// The file names of the inodes on the way (`/a/b`), empty for the root.
    path: &'r [u8],
    bref: &'r Blockref,
    body: &'r Body,
}

/// A walk over a tree in pre-order (parents before children, children in key order), one
/// chain at a time, so a comparison holds two chains' payloads at most, never two trees.
trait Walk {
    /// The chain the walk is at (None: the walk is over).
    fn current(&self) -> Option<View<'_>>;
    /// Move on: into the current chain's children when `descend`, else past its whole subtree.
    fn advance(&mut self, descend: bool) -> Result<()>;
}

/// A [`Walk`] over a live store that keeps only the path from the root to the current chain
/// (a cursor per level) and the current chain's payload.
struct StoreWalk<'s> {
    store: &'s Store,
    /// `(header, path length before its name, the walk of its children)` from the root down
    /// to the current chain: each table is walked child after child, stepping from the last
    /// child's place.
    stack: Vec<(Blockref, usize, TableWalk<ChainId>)>,
    /// The keys of `stack` below the root.
    keys: Vec<u64>,
    path: Vec<u8>,
    body: Option<Body>,
}

impl<'s> StoreWalk<'s> {
    fn new(store: &'s Store) -> Result<Self> {
        let mut w = StoreWalk {
            store,
            stack: Vec::new(),
            keys: Vec::new(),
            path: Vec::new(),
            body: None,
        };
        w.enter(store.root())?;
        Ok(w)
    }

    /// Make `id` (a child of the current chain, or the root) the current chain.
    fn enter(&mut self, id: ChainId) -> Result<()> {
        let (bref, body) = self.store.read(id)?;
        let plen = self.path.len();
        if !self.stack.is_empty() {
            try_push(&mut self.keys, bref.key)?;
        }
        if bref.btype == media::BREF_TYPE_INODE && !self.stack.is_empty() {
            let name = body.inode().ok_or(Error::Invalid)?.filename();
            self.path.try_reserve(1 + name.len())?;
            self.path.push(b'/');
            self.path.extend_from_slice(name);
        }
        let children = TableWalk::new(id, 0, media::KEY_MAX);
        try_push(&mut self.stack, (bref, plen, children))?;
        self.body = Some(body);
        Ok(())
    }
}

impl Walk for StoreWalk<'_> {
    fn current(&self) -> Option<View<'_>> {
        let (bref, _, _) = self.stack.last()?;
        Some(View {
            keys: &self.keys,
            path: &self.path,
            bref,
            body: self.body.as_ref()?,
        })
    }

    fn advance(&mut self, descend: bool) -> Result<()> {
        let store = self.store;
        store.host().relax();
        if descend {
            if let Some((_, _, children)) = self.stack.last_mut() {
                if let Some((c, _)) = children.step(store)? {
                    return self.enter(c);
                }
            }
        }
        self.body = None;
        while let Some((_, plen, _)) = self.stack.pop() {
            self.path.truncate(plen);
            let Some((_, _, siblings)) = self.stack.last_mut() else {
                break;
            };
            self.keys.pop();
            if let Some((c, _)) = siblings.step(store)? {
                return self.enter(c);
            }
        }
        Ok(())
    }
}

/// A [`Walk`] over copied records (a snapshot).
struct SliceWalk<'r> {
    recs: &'r [Record],
    at: usize,
}

impl Walk for SliceWalk<'_> {
    fn current(&self) -> Option<View<'_>> {
        let r = self.recs.get(self.at)?;
        Some(View {
            keys: &r.keys,
            path: &r.path,
            bref: &r.bref,
            body: &r.body,
        })
    }

    fn advance(&mut self, descend: bool) -> Result<()> {
        let Some(cur) = self.recs.get(self.at) else {
            return Ok(());
        };
        self.at += 1;
        if !descend {
            while self
                .recs
                .get(self.at)
                .is_some_and(|r| r.keys.starts_with(&cur.keys))
            {
                self.at += 1;
            }
        }
        Ok(())
    }
}

/// Every chain of `store`, parents before children, children in key order.
pub fn flatten(store: &Store) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut w = StoreWalk::new(store)?;
    while let Some(v) = w.current() {
        if store.host().should_stop() {
            return Err(Error::Interrupted);
        }
        let r = Record {
            keys: try_to_vec(v.keys)?,
            path: try_to_vec(v.path)?,
            bref: *v.bref,
            body: v.body.try_clone()?,
        };
        try_push(&mut out, r)?;
        w.advance(true)?;
    }
    Ok(out)
}

/// A digest of everything [`diff`] compares in `store`'s tree (and of the rest of each inode's
/// bytes, so it errs towards "changed"): equal digests taken before and after a step mean the
/// step left the tree as it was, up to a 64-bit hash collision. Reads one chain at a time, so it
/// needs memory for the walk's stack of chain ids only, not for a copy of the tree.
pub fn digest(store: &Store) -> Result<u64> {
    let mut h = 0u64;
    // Pre-order with each chain's depth, children in key order: the sequence of (depth, key)
    // determines the tree's shape.
    let mut stack: Vec<(ChainId, u32)> = Vec::new();
    try_push(&mut stack, (store.root(), 0))?;
    while let Some((id, depth)) = stack.pop() {
        store.host().relax();
        let (b, body) = store.read(id)?;
        let mut head = [0u8; 40];
        head[0..4].copy_from_slice(&depth.to_le_bytes());
        head[4..8].copy_from_slice(&[b.btype, b.methods, b.keybits, b.flags]);
        head[8..16].copy_from_slice(&b.key.to_le_bytes());
        head[16..24].copy_from_slice(&b.modify_tid.to_le_bytes());
        head[24..32].copy_from_slice(&u64::from(b.size_radix()).to_le_bytes());
        head[32..40].copy_from_slice(&u64::from(b.vradix).to_le_bytes());
        h = media::check::xxh64(&head, h);
        if b.btype == media::BREF_TYPE_DIRENT {
            let (embed, name) = dirent_bytes(&b);
            h = media::check::xxh64(&embed, h);
            if let Some(name) = name {
                h = media::check::xxh64(&name, h);
            }
        }
        h = match &body {
            Body::Inode(ip) => media::check::xxh64(&ip.encode(), h),
            Body::Data(d) => media::check::xxh64(d, h),
        };
        let first = stack.len();
        let mut children = TableWalk::new(id, 0, media::KEY_MAX);
        while let Some((c, _)) = children.step(store)? {
            try_push(&mut stack, (c, depth.saturating_add(1)))?;
        }
        // Popped lowest key first.
        stack[first..].reverse();
    }
    Ok(h)
}

/// Where a chain is, for a difference line: by its file path in the seed's layout; in today's,
/// an inode of the index (and what lies under it) by a path naming it in `store`, else by its
/// inode number (its file name there is only that number).
struct Path<'a> {
    view: View<'a>,
    /// In today's layout, an index inode's path, or its number when no path names it.
    index: Option<core::result::Result<Vec<u8>, u64>>,
}

impl<'a> Path<'a> {
    /// The label of `view`; `names` names index inodes (None in the seed's layout). Running out
    /// of memory (or being told to stop) while finding the path is an error, not a different
    /// line: a line must not change without saying why.
    fn new(view: View<'a>, names: Option<&dyn Namer>) -> Result<Path<'a>> {
        let index = match (names, view.keys.first()) {
            (Some(n), Some(&inum)) if inum < media::DIRHASH_VISIBLE => {
                Some(match index_path(n, inum) {
                    Ok(Some(p)) => Ok(p),
                    Err(e @ (Error::NoMem | Error::Interrupted)) => return Err(e),
                    Ok(None) | Err(_) => Err(inum),
                })
            }
            _ => None,
        };
        Ok(Path { view, index })
    }
}

/// Write `bytes` printable, escaping the rest.
fn write_escaped(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for &b in bytes {
        if b.is_ascii_graphic() || b == b' ' {
            f.write_char(b as char)?;
        } else {
            write!(f, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.view;
        if let Some(at) = &self.index {
            match at {
                Ok(p) => write_escaped(f, p)?,
                Err(inum) => write!(f, "inode {inum}")?,
            }
        } else if r.path.is_empty() {
            f.write_str("/")?;
        } else {
            write_escaped(f, r.path)?;
        }
        if r.bref.btype == media::BREF_TYPE_DATA {
            write!(f, " (block at {})", r.bref.key)?;
        }
        if r.bref.btype == media::BREF_TYPE_DIRENT {
            write!(f, " (entry at key {:#x})", r.bref.key)?;
        }
        Ok(())
    }
}

/// What a difference line needs to name an index inode by a path, from a live store or a
/// snapshot of one.
trait Namer {
    /// The PFS root's inode number.
    fn root_inum(&self) -> Result<u64>;
    /// Index inode `inum`'s nominal parent (`iparent`), None when the index lacks it.
    fn iparent(&self, inum: u64) -> Result<Option<u64>>;
    /// The name of the first entry of directory `dir` (None: the PFS root) naming `inum`.
    fn entry_naming(&self, dir: Option<u64>, inum: u64) -> Result<Option<Vec<u8>>>;
}

/// The name a DIRENT (`b`, with its data block if any) carries, if it names `inum`.
fn dirent_naming(b: &Blockref, body: Option<&Body>, inum: u64) -> Result<Option<Vec<u8>>> {
    let Ok(h) = DirentHead::decode(b) else {
        return Ok(None);
    };
    if h.inum != inum {
        return Ok(None);
    }
    let block = match body {
        Some(Body::Data(d)) => Some(d.as_slice()),
        _ => None,
    };
    match h.name(b, block) {
        Ok(n) => try_to_vec(n).map(Some),
        Err(_) => Ok(None),
    }
}

impl Namer for Store {
    fn root_inum(&self) -> Result<u64> {
        Ok(self.meta(self.root())?.inum)
    }
    fn iparent(&self, inum: u64) -> Result<Option<u64>> {
        match self.index_inode(inum)? {
            Some(id) => Ok(Some(self.meta(id)?.iparent)),
            None => Ok(None),
        }
    }
    fn entry_naming(&self, dir: Option<u64>, inum: u64) -> Result<Option<Vec<u8>>> {
        let dir = match dir {
            None => self.root(),
            Some(d) => match self.index_inode(d)? {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        // Entries' keys have bit 63 set: in the PFS root this skips the index half of its table.
        let mut entries = TableWalk::new(dir, media::DIRHASH_VISIBLE, media::KEY_MAX);
        while let Some((id, b)) = entries.step(self)? {
            self.host().relax();
            if b.btype == media::BREF_TYPE_DIRENT {
                let body = if b.size_radix() != 0 {
                    Some(self.read(id)?.1)
                } else {
                    None
                };
                if let Some(n) = dirent_naming(&b, body.as_ref(), inum)? {
                    return Ok(Some(n));
                }
            }
        }
        Ok(None)
    }
}

/// A snapshot's records, in key order (pre-order with children in key order).
struct Records<'r>(&'r [Record]);

impl Records<'_> {
    fn at(&self, keys: &[u64]) -> Option<&Record> {
        let i = self
            .0
            .binary_search_by(|r| r.keys.as_slice().cmp(keys))
            .ok()?;
        self.0.get(i)
    }
}

impl Namer for Records<'_> {
    fn root_inum(&self) -> Result<u64> {
        let root = self.at(&[]).ok_or(Error::NotFound)?;
        Ok(root.body.inode().ok_or(Error::Invalid)?.meta.inum)
    }
    fn iparent(&self, inum: u64) -> Result<Option<u64>> {
        Ok(self
            .at(&[inum])
            .and_then(|r| r.body.inode())
            .map(|ip| ip.meta.iparent))
    }
    fn entry_naming(&self, dir: Option<u64>, inum: u64) -> Result<Option<Vec<u8>>> {
        let prefix: &[u64] = match &dir {
            None => &[],
            Some(d) => core::slice::from_ref(d),
        };
        for r in self.0 {
            let under = r.keys.len() == prefix.len() + 1 && r.keys.starts_with(prefix);
            if under && r.bref.btype == media::BREF_TYPE_DIRENT {
                if let Some(n) = dirent_naming(&r.bref, Some(&r.body), inum)? {
                    return Ok(Some(n));
                }
            }
        }
        Ok(None)
    }
}

/// Most directories between an index inode and the PFS root a difference line names.
const NAME_DEPTH_MAX: usize = 64;

/// A path naming index inode `inum`: the entry naming it in its nominal parent (`iparent`),
/// that directory's entry in its own, and so on up to the PFS root. None when a step is missing
/// (a hardlink whose name in `iparent` went, a node mid-convergence) or the parents run deeper
/// than [`NAME_DEPTH_MAX`].
fn index_path(n: &dyn Namer, inum: u64) -> Result<Option<Vec<u8>>> {
    let root_inum = n.root_inum()?;
    let mut names: Vec<Vec<u8>> = Vec::new();
    let mut cur = inum;
    for _ in 0..NAME_DEPTH_MAX {
        let Some(up) = n.iparent(cur)? else {
            return Ok(None);
        };
        let dir = (up != root_inum).then_some(up);
        let Some(name) = n.entry_naming(dir, cur)? else {
            return Ok(None);
        };
        try_push(&mut names, name)?;
        if dir.is_none() {
            let mut p = Vec::new();
            for n in names.iter().rev() {
                p.try_reserve(1 + n.len())?;
                p.push(b'/');
                p.extend_from_slice(n);
            }
            return Ok(Some(p));
        }
        cur = up;
    }
    Ok(None)
}

/// What differs between `a` (expected) and `b`, if anything (`is_root`: PFS root rule).
fn differs(a: &View<'_>, b: &View<'_>, is_root: bool) -> Option<DiffWhat> {
    let (x, y) = (&a.bref, &b.bref);
    if x.btype != y.btype {
        return Some(DiffWhat::Num("chain type", y.btype as u64, x.btype as u64));
    }
    match (a.body, b.body) {
        (Body::Inode(ia), Body::Inode(ib)) => {
            let (ma, mb) = (&ia.meta, &ib.meta);
            if ma.objtype != mb.objtype {
                return Some(DiffWhat::Num(
                    "object type",
                    mb.objtype as u64,
                    ma.objtype as u64,
                ));
            }
            if ma.mode != mb.mode {
                return Some(DiffWhat::Mode(mb.mode, ma.mode));
            }
            if ma.size != mb.size {
                return Some(DiffWhat::Num("size", mb.size, ma.size));
            }
            if x.modify_tid != y.modify_tid {
                return Some(DiffWhat::Num("modify_tid", y.modify_tid, x.modify_tid));
            }
            if is_root {
                if !inode::pfsroot_fields_eq(ma, mb) {
                    return Some(DiffWhat::Text("PFS root meta differs"));
                }
            } else {
                if ia.filename() != ib.filename() {
                    return Some(DiffWhat::Text("file name differs"));
                }
                if ma != mb {
                    return Some(DiffWhat::Text("inode meta differs"));
                }
                if ia.u != ib.u {
                    return Some(DiffWhat::Text("embedded data differs"));
                }
            }
        }
        (Body::Data(da), Body::Data(db)) => {
            if da.len() != db.len() {
                return Some(DiffWhat::Num(
                    "block bytes",
                    db.len() as u64,
                    da.len() as u64,
                ));
            }
            if let Some(i) = da.iter().zip(db.iter()).position(|(p, q)| p != q) {
                return Some(DiffWhat::At(i));
            }
        }
        _ => return Some(DiffWhat::Text("payload kind differs")),
    }
    let fields = |b: &Blockref| (b.keybits, b.size_radix(), b.methods, b.flags, b.vradix);
    if fields(x) != fields(y) {
        return Some(DiffWhat::Text("blockref fields differ"));
    }
    if x.btype == media::BREF_TYPE_DIRENT && dirent_bytes(x) != dirent_bytes(y) {
        return Some(DiffWhat::Text("directory entry differs"));
    }
    if x.modify_tid != y.modify_tid {
        return Some(DiffWhat::Num("modify_tid", y.modify_tid, x.modify_tid));
    }
    None
}

/// What a DIRENT's header carries beyond the common fields: its head, and its name when it
/// has no data block (then its check area holds the name, not a check code).
fn dirent_bytes(b: &Blockref) -> ([u8; 16], Option<[u8; media::check::CHECK_BYTES]>) {
    (b.embed, (b.size_radix() == 0).then_some(b.check))
}

enum DiffWhat {
    Num(&'static str, u64, u64),
    Mode(u32, u32),
    Text(&'static str),
    At(usize),
}

impl fmt::Display for DiffWhat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiffWhat::Num(what, got, want) => write!(f, "{what} {got}, expected {want}"),
            DiffWhat::Mode(got, want) => write!(f, "mode {got:o}, expected {want:o}"),
            DiffWhat::Text(t) => f.write_str(t),
            DiffWhat::At(i) => write!(f, "data differs at byte {i}"),
        }
    }
}

/// Most difference lines written by one comparison.
pub const MAX_DIFF_LINES: usize = 8;

/// Compare node `node_b`'s tree (`b`) with `a`'s; write `node B: /path: <what differs>` lines
/// for the first differences. True when they are the same. Walks both trees in step, holding one
/// chain of each, so it needs no memory in proportion to the trees; ends with
/// [`Error::Interrupted`] when the host says to stop.
pub fn compare(a: &Store, b: &Store, node_b: usize, out: &mut dyn fmt::Write) -> Result<bool> {
    let index = b.layout() == Layout::Index;
    let names = index.then_some((a as &dyn Namer, b as &dyn Namer));
    diff(
        &mut StoreWalk::new(a)?,
        &mut StoreWalk::new(b)?,
        b.host(),
        names,
        node_b,
        out,
    )
}

/// [`compare`] of a live store (node `node_b`) against a snapshot of it.
pub fn compare_snapshot(
    snap: &[Record],
    b: &Store,
    node_b: usize,
    out: &mut dyn fmt::Write,
) -> Result<bool> {
    let mut a = SliceWalk { recs: snap, at: 0 };
    let recs = Records(snap);
    let index = b.layout() == Layout::Index;
    let names = index.then_some((&recs as &dyn Namer, b as &dyn Namer));
    diff(
        &mut a,
        &mut StoreWalk::new(b)?,
        b.host(),
        names,
        node_b,
        out,
    )
}

/// The comparison of two walks; `names` name `a`'s and `b`'s index inodes in the difference
/// lines (today's layout; see [`Path`]).
fn diff(
    a: &mut dyn Walk,
    b: &mut dyn Walk,
    host: &dyn Host,
    names: Option<(&dyn Namer, &dyn Namer)>,
    node_b: usize,
    out: &mut dyn fmt::Write,
) -> Result<bool> {
    let lines = core::cell::Cell::new(0usize);
    let mut say = |args: fmt::Arguments<'_>| {
        let n = lines.get();
        if n < MAX_DIFF_LINES {
            let _ = writeln!(out, "node {node_b}: {args}");
        } else if n == MAX_DIFF_LINES {
            let _ = writeln!(out, "node {node_b}: ... more differences");
        }
        lines.set(n + 1);
    };
    // Paths are looked up only for lines that are printed.
    let printed = || lines.get() < MAX_DIFF_LINES;
    loop {
        if host.should_stop() {
            return Err(Error::Interrupted);
        }
        let ord = match (a.current(), b.current()) {
            (None, None) => break,
            (Some(x), Some(y)) => x.keys.cmp(y.keys),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                if let Some(x) = a.current() {
                    say(format_args!(
                        "{}: missing",
                        Path::new(x, names.map(|n| n.0).filter(|_| printed()))?
                    ));
                }
                // Skip the whole missing subtree: one line is enough.
                a.advance(false)?;
            }
            Ordering::Greater => {
                if let Some(y) = b.current() {
                    say(format_args!(
                        "{}: unexpected",
                        Path::new(y, names.map(|n| n.1).filter(|_| printed()))?
                    ));
                }
                b.advance(false)?;
            }
            Ordering::Equal => {
                if let (Some(x), Some(y)) = (a.current(), b.current()) {
                    if let Some(w) = differs(&x, &y, x.keys.is_empty()) {
                        say(format_args!(
                            "{}: {}",
                            Path::new(y, names.map(|n| n.1).filter(|_| printed()))?,
                            w
                        ));
                    }
                }
                a.advance(true)?;
                b.advance(true)?;
            }
        }
    }
    Ok(lines.get() == 0)
}

/// How a file's content compares with what was expected ([`compare_file`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCmp {
    /// Same size, same bytes.
    Same,
    /// The first byte that differs, within the shorter of the two.
    DiffersAt(u64),
    /// The bytes both hold agree, but the file holds this many bytes.
    Size(u64),
}

/// Bytes of expected content produced and compared at a time.
const FILE_CHUNK: usize = 16 << 10;

/// Compare regular file `id` of `store` (a hardlink pointer is followed) with `want_len`
/// expected bytes, which `want` writes in order into each buffer it is given. Goes block by
/// block, so it needs one data block and one chunk of expected bytes, whatever the file's size.
pub fn compare_file(
    store: &Store,
    id: ChainId,
    want_len: u64,
    want: &mut dyn FnMut(&mut [u8]),
) -> Result<FileCmp> {
    let id = store.follow(id)?;
    let m = store.meta(id)?;
    match m.objtype {
        media::OBJTYPE_REGFILE => {}
        media::OBJTYPE_DIRECTORY => return Err(Error::IsDir),
        _ => return Err(Error::Invalid),
    }
    let common = m.size.min(want_len);
    let mut cmp = Expected {
        want,
        buf: Vec::new(),
        pos: 0,
        end: common,
    };
    cmp.buf.try_reserve_exact(FILE_CHUNK)?;
    cmp.buf.resize(FILE_CHUNK, 0);
    let differs = if m.is_directdata() {
        let (_, body) = store.read(id)?;
        let ip = body.inode().ok_or(Error::Invalid)?;
        cmp.next(Some(&ip.u))?
    } else {
        let mut found = None;
        let mut blocks = TableWalk::new(id, 0, media::KEY_MAX);
        while let Some((c, b)) = blocks.step(store)? {
            if b.key >= common || found.is_some() {
                break;
            }
            // Holes (missing blocks) read as zeros.
            found = cmp.until(b.key)?;
            if found.is_none() {
                if let (_, Body::Data(d)) = store.read(c)? {
                    // Blocks do not overlap; were one to, the bytes already compared stand.
                    let skip = usize::try_from(cmp.pos.saturating_sub(b.key))
                        .map_or(d.len(), |n| n.min(d.len()));
                    found = cmp.next(Some(&d[skip..]))?;
                }
            }
            store.host().relax();
        }
        found
    };
    let differs = match differs {
        Some(at) => Some(at),
        None => cmp.until(common)?,
    };
    Ok(match differs {
        Some(at) => FileCmp::DiffersAt(at),
        None if m.size != want_len => FileCmp::Size(m.size),
        None => FileCmp::Same,
    })
}

/// The expected side of [`compare_file`]: a cursor into the expected bytes.
struct Expected<'w> {
    want: &'w mut dyn FnMut(&mut [u8]),
    buf: Vec<u8>,
    /// Bytes compared so far.
    pos: u64,
    /// Bytes to compare in all.
    end: u64,
}

impl Expected<'_> {
    /// Compare the file's next bytes, `got` (None: zeros, a hole), up to `end`; the offset of
    /// the first that differs, if any.
    fn next(&mut self, got: Option<&[u8]>) -> Result<Option<u64>> {
        let len = got.map_or(0, |g| g.len() as u64);
        let stop = self.pos.saturating_add(len).min(self.end);
        self.compare_to(stop, got)
    }

    /// Compare zeros (a hole) up to offset `to` (at most `end`).
    fn until(&mut self, to: u64) -> Result<Option<u64>> {
        self.compare_to(to.min(self.end), None)
    }

    fn compare_to(&mut self, stop: u64, got: Option<&[u8]>) -> Result<Option<u64>> {
        let start = self.pos;
        while self.pos < stop {
            let k = (stop - self.pos).min(self.buf.len() as u64) as usize;
            let chunk = &mut self.buf[..k];
            (self.want)(chunk);
            let from = (self.pos - start) as usize;
            let at = match got {
                Some(g) => chunk
                    .iter()
                    .zip(&g[from..from + k])
                    .position(|(w, x)| w != x),
                None => chunk.iter().position(|&w| w != 0),
            };
            if let Some(j) = at {
                return Ok(Some(self.pos + j as u64));
            }
            self.pos += k as u64;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{InodeData, Layout};
    use super::*;
    use crate::host::testhost::host;
    use alloc::string::String;

    /// A store in the seed's layout.
    fn store() -> Store {
        let mut root = InodeData::default();
        root.meta.objtype = media::OBJTYPE_DIRECTORY;
        Store::with_layout(host(), root, Layout::Seed).unwrap()
    }

    fn cmp(a: &Store, b: &Store) -> (bool, String) {
        let mut s = String::new();
        let same = compare(a, b, 1, &mut s).unwrap();
        let mut s2 = String::new();
        let same2 = compare_snapshot(&flatten(a).unwrap(), b, 1, &mut s2).unwrap();
        assert_eq!(
            (same, &s),
            (same2, &s2),
            "live and snapshot comparisons agree"
        );
        (same, s)
    }

    /// Today's layout: every inode sits in the PFS root's index under a file name that is only
    /// its number, so a difference names it by a path (through the entry naming it in its
    /// nominal parent, up to the root), and by its number when no such path is left.
    #[test]
    fn index_inodes_are_named_by_a_path() {
        let (a, b) = (
            Store::for_test(Layout::Index),
            Store::for_test(Layout::Index),
        );
        for s in [&a, &b] {
            s.mkdir(b"/d", 1).unwrap();
            s.write(b"/d/f", b"f", 2).unwrap();
        }
        assert_eq!(cmp(&a, &b), (true, String::new()));
        b.chmod(b"/d/f", 0o600, 3).unwrap();
        a.chmod(b"/d/f", 0o644, 3).unwrap();
        let text = cmp(&a, &b).1;
        assert!(
            text.contains("node 1: /d/f: mode 600, expected 644"),
            "{text}"
        );
        // A chain `b` lacks is named from `a` (live) or the snapshot of it.
        a.write(b"/d/g", b"g", 4).unwrap();
        let text = cmp(&a, &b).1;
        assert!(text.contains("node 1: /d/g: missing"), "{text}");
        assert!(text.contains("node 1: /d (entry at key 0x"), "{text}");
        // A hardlink whose name in its nominal parent went: by its number.
        for s in [&a, &b] {
            s.link(b"/d/f", b"/h", 5).unwrap();
            s.rm(b"/d/f", 6).unwrap();
        }
        b.chmod(b"/h", 0o600, 7).unwrap();
        a.chmod(b"/h", 0o644, 7).unwrap();
        let text = cmp(&a, &b).1;
        assert!(
            text.contains("node 1: inode 1025: mode 600, expected 644"),
            "{text}"
        );
    }

    #[test]
    fn finds_each_kind_of_difference() {
        let (a, b) = (store(), store());
        for s in [&a, &b] {
            s.mkdir(b"/d", 1).unwrap();
            s.write(b"/d/f", &[7u8; 70_000], 2).unwrap();
        }
        assert_eq!(cmp(&a, &b), (true, String::new()));
        b.chmod(b"/d/f", 0o600, 3).unwrap();
        let (same, text) = cmp(&a, &b);
        assert!(!same);
        assert!(
            text.contains("node 1: /d/f: mode 600, expected 644"),
            "{text}"
        );
        a.chmod(b"/d/f", 0o600, 3).unwrap();
        assert!(cmp(&a, &b).0);
        let mut data = [7u8; 70_000];
        data[66_000] = 1;
        b.write(b"/d/f", &data, 4).unwrap();
        a.write(b"/d/f", &[7u8; 70_000], 4).unwrap();
        let text = cmp(&a, &b).1;
        assert!(
            text.contains("/d/f (block at 65536): data differs at byte 464"),
            "{text}"
        );
        a.write(b"/d/f", &data, 4).unwrap();
        assert!(cmp(&a, &b).0);
        a.mkdir(b"/e", 5).unwrap();
        let text = cmp(&a, &b).1;
        assert!(text.contains("node 1: /e: missing"), "{text}");
        assert!(
            text.contains("node 1: /: modify_tid 4, expected 5"),
            "{text}"
        );
        b.mkdir(b"/e", 6).unwrap();
        let text = cmp(&a, &b).1;
        assert!(text.contains("/e: modify_tid 6, expected 5"), "{text}");
        b.rm(b"/e", 7).unwrap();
        b.mkdir(b"/g", 7).unwrap();
        let text = cmp(&a, &b).1;
        assert!(text.contains("node 1: /g: unexpected"), "{text}");
    }

    fn file_cmp(s: &Store, path: &[u8], want: &[u8]) -> FileCmp {
        let mut rest = want;
        let mut fill = |out: &mut [u8]| {
            let (now, later) = rest.split_at(out.len());
            out.copy_from_slice(now);
            rest = later;
        };
        compare_file(s, s.resolve(path).unwrap(), want.len() as u64, &mut fill).unwrap()
    }

    #[test]
    fn files_compare_block_by_block_as_a_whole_read_would() {
        let s = store();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        s.write(b"/big", &big, 1).unwrap();
        assert_eq!(file_cmp(&s, b"/big", &big), FileCmp::Same);
        let mut other = big.clone();
        other[150_001] ^= 1;
        assert_eq!(file_cmp(&s, b"/big", &other), FileCmp::DiffersAt(150_001));
        assert_eq!(file_cmp(&s, b"/big", &big[..1000]), FileCmp::Size(200_000));
        let mut longer = big.clone();
        longer.push(0);
        assert_eq!(file_cmp(&s, b"/big", &longer), FileCmp::Size(200_000));
        // Embedded data (DIRECTDATA) and the empty file.
        s.write(b"/small", b"hello", 2).unwrap();
        assert_eq!(file_cmp(&s, b"/small", b"hello"), FileCmp::Same);
        assert_eq!(file_cmp(&s, b"/small", b"help"), FileCmp::DiffersAt(3));
        assert_eq!(file_cmp(&s, b"/small", b"hello!"), FileCmp::Size(5));
        s.write(b"/empty", b"", 3).unwrap();
        assert_eq!(file_cmp(&s, b"/empty", b""), FileCmp::Same);
        assert_eq!(file_cmp(&s, b"/empty", b"a"), FileCmp::Size(0));
        // The same verdicts as a whole read, on every file.
        for p in [&b"/big"[..], b"/small", b"/empty"] {
            let whole = s.read_file(s.resolve(p).unwrap()).unwrap();
            assert_eq!(file_cmp(&s, p, &whole), FileCmp::Same);
        }
        s.mkdir(b"/d", 4).unwrap();
        let d = s.resolve(b"/d").unwrap();
        assert_eq!(compare_file(&s, d, 0, &mut |_| {}), Err(Error::IsDir));
    }

    #[test]
    fn walks_relax_and_stop_when_told() {
        let h = host();
        let mut root = InodeData::default();
        root.meta.objtype = media::OBJTYPE_DIRECTORY;
        let (a, b) = (
            Store::new(h, root).unwrap(),
            Store::new(h, InodeData { ..root }).unwrap(),
        );
        for s in [&a, &b] {
            for i in 0..50u32 {
                s.write(std::format!("/f{i}").as_bytes(), b"x", 1).unwrap();
            }
        }
        let before = h.relaxed();
        assert!(cmp(&a, &b).0);
        assert!(
            h.relaxed() - before >= 100,
            "a comparison of 2x51 chains never relaxed"
        );
        h.stop_after(10);
        let mut out = String::new();
        assert_eq!(compare(&a, &b, 1, &mut out), Err(Error::Interrupted));
        h.stop_after(10);
        assert_eq!(flatten(&a).map(|_| ()), Err(Error::Interrupted));
        h.stop_after(usize::MAX);
    }

    /// The walk `StoreWalk` made before it stepped through hints: a search from the top of each
    /// table for every child (`lookup`, then `next` from the last child). Pre-order, `descend`
    /// as in [`Walk::advance`].
    struct SearchWalk<'s> {
        store: &'s Store,
        stack: Vec<(ChainId, Blockref)>,
    }

    impl SearchWalk<'_> {
        fn current(&self) -> Option<ChainId> {
            self.stack.last().map(|&(id, _)| id)
        }

        fn advance(&mut self, descend: bool) -> Result<()> {
            let s = self.store;
            if descend {
                let &(id, _) = self.stack.last().unwrap();
                if let Some(c) = s.lookup(id, 0, media::KEY_MAX)? {
                    self.stack.push(c);
                    return Ok(());
                }
            }
            while let Some((_, b)) = self.stack.pop() {
                let Some(&(parent, _)) = self.stack.last() else {
                    break;
                };
                if let Some(c) = s.next(parent, &b, media::KEY_MAX)? {
                    self.stack.push(c);
                    break;
                }
            }
            Ok(())
        }
    }

    /// The tree walk behind `flatten` and `compare` steps through every table child after
    /// child (one search per table, at its first child, while nothing changes) and visits
    /// exactly the chains a walk searching each step from the top visits, with files created
    /// and removed between its steps (the PFS root's index splitting and collapsing indirect
    /// blocks under it) and subtrees skipped at random.
    #[test]
    fn store_walk_steps_through_hints_and_visits_what_searches_visit() {
        let s = Store::for_test(Layout::Index);
        let dirs: [&[u8]; 3] = [b"/a", b"/b", b"/a/c"];
        let mut tid = 1;
        for d in dirs {
            s.mkdir(d, tid).unwrap();
            tid += 1;
        }
        let file = |w: u64| {
            alloc::format!(
                "{}/f{}",
                core::str::from_utf8(dirs[(w % 3) as usize]).unwrap(),
                (w >> 8) % 400
            )
        };
        let mut r = crate::scenario::prng::Stream::new(11);
        for _ in 0..600 {
            let w = r.next_u64();
            let _ = s.write(file(w).as_bytes(), &[w as u8; 8], tid);
            tid += 1;
        }
        let deep = s
            .block_table(s.root())
            .unwrap()
            .iter()
            .map(|t| t.depth)
            .max();
        assert!(deep >= Some(2), "the index is too shallow to test a path");

        // Nothing changing: every table is searched once, at its first step.
        let mut w = StoreWalk::new(&s).unwrap();
        let mut want = SearchWalk {
            store: &s,
            stack: alloc::vec![(s.root(), s.bref(s.root()).unwrap())],
        };
        let (mut visited, mut stepped) = (0usize, 0u32);
        while let Some(v) = w.current() {
            let at = w.stack.last().map(|(b, _, _)| *b);
            assert_eq!(Some(*v.bref), at);
            assert_eq!(want.current(), s.resolve_keys(v.keys).unwrap());
            for (_, _, t) in &w.stack {
                assert!(t.searches() <= 1, "a step searched in an unchanged table");
            }
            stepped = stepped.max(w.stack.first().map_or(0, |(_, _, t)| t.searches()));
            visited += 1;
            w.advance(true).unwrap();
            want.advance(true).unwrap();
        }
        assert_eq!(
            (visited, want.current(), stepped),
            (s.chain_count(), None, 1)
        );

        // Changes between steps, subtrees skipped now and then: the same chains, in order.
        let (mut restarts, mut failed) = (0, 0);
        let (mut w, mut want) = (StoreWalk::new(&s).unwrap(), None::<SearchWalk<'_>>);
        for _ in 0..20_000 {
            let x = r.next_u64();
            match x % 4 {
                0 => {
                    let _ = s.write(file(x >> 2).as_bytes(), &[x as u8; 8], tid);
                }
                1 => {
                    let _ = s.rm(file(x >> 2).as_bytes(), tid);
                }
                _ => {
                    let descend = x % 16 != 2;
                    let want = want.get_or_insert_with(|| SearchWalk {
                        store: &s,
                        stack: alloc::vec![(s.root(), s.bref(s.root()).unwrap())],
                    });
                    // A chain removed under the walk fails both the same way.
                    let got = w.advance(descend);
                    assert_eq!(got, want.advance(descend));
                    if got.is_err() {
                        failed += 1;
                        w.stack.clear();
                    } else {
                        let got = w.current().map(|v| *v.bref);
                        assert_eq!(got, want.stack.last().map(|(_, b)| *b));
                        assert_eq!(
                            w.stack.len(),
                            want.stack.len(),
                            "the walks stand at the same depth"
                        );
                    }
                }
            }
            tid += 1;
            if w.current().is_none() {
                restarts += 1;
                (w, want) = (StoreWalk::new(&s).unwrap(), None);
            }
        }
        assert!(restarts > 3, "{restarts} walks, {failed} failed");
    }
}
