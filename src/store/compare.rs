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
use super::{Body, ChainId, Store};
use crate::media::{self, Blockref};
use crate::mem::{try_push, try_to_vec};
use crate::{Error, Result};

/// One chain, flattened: where it is, its header, its payload.
#[derive(Debug, Clone)]
pub struct Record {
    keys: Vec<u64>,
    path: Vec<u8>,
    bref: Blockref,
    body: Body,
}

/// Every chain of `store`, parents before children, children in key order.
pub fn flatten(store: &Store) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut stack: Vec<(ChainId, Vec<u64>, Vec<u8>)> = Vec::new();
    try_push(&mut stack, (store.root(), Vec::new(), Vec::new()))?;
    while let Some((id, keys, path)) = stack.pop() {
        let (bref, body) = store.read(id)?;
        let mut kids = Vec::new();
        let mut next = store.lookup(id, 0, media::KEY_MAX)?;
        while let Some((c, b)) = next {
            try_push(&mut kids, c)?;
            next = store.next(id, &b, media::KEY_MAX)?;
        }
        for &c in kids.iter().rev() {
            let cb = store.bref(c)?;
            let mut ck = try_to_vec(&keys)?;
            try_push(&mut ck, cb.key)?;
            let mut cp = try_to_vec(&path)?;
            if cb.btype == media::BREF_TYPE_INODE {
                let name = store.read(c)?.1;
                cp.try_reserve(1 + media::NAME_MAX)?;
                cp.push(b'/');
                cp.extend_from_slice(name.inode().ok_or(Error::Invalid)?.filename());
            }
            try_push(&mut stack, (c, ck, cp))?;
        }
        try_push(
            &mut out,
            Record {
                keys,
                path,
                bref,
                body,
            },
        )?;
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
        let mut next = store.lookup(id, 0, media::KEY_MAX)?;
        while let Some((c, cb)) = next {
            try_push(&mut stack, (c, depth.saturating_add(1)))?;
            next = store.next(id, &cb, media::KEY_MAX)?;
        }
        // Popped lowest key first.
        stack[first..].reverse();
    }
    Ok(h)
}

struct Path<'a>(&'a Record);

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        if r.path.is_empty() {
            f.write_str("/")?;
        }
        for &b in &r.path {
            if b.is_ascii_graphic() || b == b' ' {
                f.write_char(b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
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

/// What differs between `a` (expected) and `b`, if anything (`is_root`: PFS root rule).
fn differs(a: &Record, b: &Record, is_root: bool) -> Option<DiffWhat> {
    let (x, y) = (&a.bref, &b.bref);
    if x.btype != y.btype {
        return Some(DiffWhat::Num("chain type", y.btype as u64, x.btype as u64));
    }
    match (&a.body, &b.body) {
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

/// Compare `b` (node `node_b`) against `a`; write `node B: /path: <what differs>` lines for the
/// first differences. True when they are the same.
pub fn diff(a: &[Record], b: &[Record], node_b: usize, out: &mut dyn fmt::Write) -> Result<bool> {
    let (mut i, mut j, mut lines) = (0, 0, 0usize);
    let mut same = true;
    let mut say = |args: fmt::Arguments<'_>| {
        same = false;
        if lines < MAX_DIFF_LINES {
            let _ = writeln!(out, "node {node_b}: {args}");
        } else if lines == MAX_DIFF_LINES {
            let _ = writeln!(out, "node {node_b}: ... more differences");
        }
        lines += 1;
    };
    while i < a.len() || j < b.len() {
        let ord = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.keys.cmp(&y.keys),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                let x = &a[i];
                say(format_args!("{}: missing", Path(x)));
                // Skip the whole missing subtree: one line is enough.
                i += 1;
                while a.get(i).is_some_and(|r| r.keys.starts_with(&x.keys)) {
                    i += 1;
                }
            }
            Ordering::Greater => {
                let y = &b[j];
                say(format_args!("{}: unexpected", Path(y)));
                j += 1;
                while b.get(j).is_some_and(|r| r.keys.starts_with(&y.keys)) {
                    j += 1;
                }
            }
            Ordering::Equal => {
                let (x, y) = (&a[i], &b[j]);
                if let Some(w) = differs(x, y, x.keys.is_empty()) {
                    say(format_args!("{}: {}", Path(y), w));
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(same)
}

#[cfg(test)]
mod tests {
    use super::super::InodeData;
    use super::*;
    use crate::host::testhost::host;
    use alloc::string::String;

    fn store() -> Store {
        let mut root = InodeData::default();
        root.meta.objtype = media::OBJTYPE_DIRECTORY;
        Store::new(host(), root).unwrap()
    }

    fn cmp(a: &Store, b: &Store) -> (bool, String) {
        let mut s = String::new();
        let same = diff(&flatten(a).unwrap(), &flatten(b).unwrap(), 1, &mut s).unwrap();
        (same, s)
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
}
