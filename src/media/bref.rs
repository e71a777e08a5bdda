//! The block reference (`hammer2_blockref_t`, 128 bytes).

use core::mem::{offset_of, size_of};

use super::check::{self, CHECK_BYTES};
use super::consts::*;
use super::le::{get, put};
use crate::{Error, Result};

/// A HAMMER2 block reference: what a block table slot says about one child chain.
///
/// Plain integers and byte arrays only, so the `#[repr(C)]` layout has no padding and matches
/// HAMMER2-FACTS §4 (asserted at compile time below). Bytes from outside go through
/// [`Blockref::decode`], which validates them.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blockref {
    /// `BREF_TYPE_*`.
    pub btype: u8,
    /// Check method (high nibble) and compression method (low nibble); see [`enc_methods`].
    pub methods: u8,
    /// Copy id (unused by the port, kept on media).
    pub copyid: u8,
    /// The key range this reference covers is `key ..= key + 2^keybits - 1`.
    pub keybits: u8,
    /// Size radix of the referenced data before compression, for data blocks.
    pub vradix: u8,
    /// [`BrefFlags`] bits.
    pub flags: u8,
    /// Leaf count hint (indirect blocks).
    pub leaf_count: u16,
    /// The lowest key of the covered range (inode number, name hash or file offset).
    pub key: u64,
    /// The highest transaction synchronized below this reference.
    pub mirror_tid: u64,
    /// The transaction that last modified the chain (propagated up to the PFS root).
    pub modify_tid: u64,
    /// Media offset; the low 6 bits are the block's size radix (0: no data).
    pub data_off: u64,
    /// Transaction of the last update of this reference.
    pub update_tid: u64,
    /// Embedded data: a directory entry (inum u64, namlen u16, type u8) or statistics.
    pub embed: [u8; 16],
    /// The check code of the referenced payload (method per `methods`).
    pub check: [u8; CHECK_BYTES],
}

const _: () = {
    assert!(size_of::<Blockref>() == BREF_BYTES);
    assert!(offset_of!(Blockref, btype) == 0x00);
    assert!(offset_of!(Blockref, methods) == 0x01);
    assert!(offset_of!(Blockref, copyid) == 0x02);
    assert!(offset_of!(Blockref, keybits) == 0x03);
    assert!(offset_of!(Blockref, vradix) == 0x04);
    assert!(offset_of!(Blockref, flags) == 0x05);
    assert!(offset_of!(Blockref, leaf_count) == 0x06);
    assert!(offset_of!(Blockref, key) == 0x08);
    assert!(offset_of!(Blockref, mirror_tid) == 0x10);
    assert!(offset_of!(Blockref, modify_tid) == 0x18);
    assert!(offset_of!(Blockref, data_off) == 0x20);
    assert!(offset_of!(Blockref, update_tid) == 0x28);
    assert!(offset_of!(Blockref, embed) == 0x30);
    assert!(offset_of!(Blockref, check) == 0x40);
};

macro_rules! off {
    ($f:ident) => {
        offset_of!(Blockref, $f)
    };
}

impl Default for Blockref {
    /// The all-zero EMPTY reference (an unused block table slot).
    fn default() -> Self {
        Blockref {
            methods: 0,
            ..Blockref::new(BREF_TYPE_EMPTY, 0, 0)
        }
    }
}

impl Blockref {
    /// A reference of type `btype` covering `key` with `keybits`, default check method, no
    /// compression, everything else zero.
    pub const fn new(btype: u8, key: u64, keybits: u8) -> Blockref {
        Blockref {
            btype,
            methods: enc_methods(CHECK_DEFAULT, COMP_NONE),
            copyid: 0,
            keybits,
            vradix: 0,
            flags: 0,
            leaf_count: 0,
            key,
            mirror_tid: 0,
            modify_tid: 0,
            data_off: 0,
            update_tid: 0,
            embed: [0; 16],
            check: [0; CHECK_BYTES],
        }
    }

    /// Decode and validate 128 bytes. Rules (each failure is [`Error::Invalid`]):
    /// - exactly [`BREF_BYTES`] bytes;
    /// - a known `BREF_TYPE_*`; check and compression methods known;
    /// - only known [`BrefFlags`] bits;
    /// - `keybits <= 64` and `key` aligned to it (the range must not wrap past [`KEY_MAX`]);
    /// - `data_off` size radix 0 (no data) or [`RADIX_MIN`]..=[`RADIX_MAX`]; an EMPTY reference
    ///   has `data_off == 0`; an INODE reference has radix 0 or [`INODE_RADIX`].
    pub fn decode(bytes: &[u8]) -> Result<Blockref> {
        let b = Blockref::decode_fields(bytes)?;
        b.validate()?;
        Ok(b)
    }

    /// The fields of 128 bytes, only their length checked: for blockrefs that follow other
    /// rules than [`Blockref::validate`]'s (the freemap's, see `media::freemap`).
    pub fn decode_fields(bytes: &[u8]) -> Result<Blockref> {
        if bytes.len() != BREF_BYTES {
            return Err(Error::Invalid);
        }
        Ok(Blockref {
            btype: get::<1>(bytes, off!(btype))[0],
            methods: get::<1>(bytes, off!(methods))[0],
            copyid: get::<1>(bytes, off!(copyid))[0],
            keybits: get::<1>(bytes, off!(keybits))[0],
            vradix: get::<1>(bytes, off!(vradix))[0],
            flags: get::<1>(bytes, off!(flags))[0],
            leaf_count: u16::from_le_bytes(get(bytes, off!(leaf_count))),
            key: u64::from_le_bytes(get(bytes, off!(key))),
            mirror_tid: u64::from_le_bytes(get(bytes, off!(mirror_tid))),
            modify_tid: u64::from_le_bytes(get(bytes, off!(modify_tid))),
            data_off: u64::from_le_bytes(get(bytes, off!(data_off))),
            update_tid: u64::from_le_bytes(get(bytes, off!(update_tid))),
            embed: get(bytes, off!(embed)),
            check: get(bytes, off!(check)),
        })
    }

    /// The 128 on-media bytes (little-endian).
    pub fn encode(&self) -> [u8; BREF_BYTES] {
        let mut out = [0u8; BREF_BYTES];
        put(&mut out, off!(btype), &[self.btype]);
        put(&mut out, off!(methods), &[self.methods]);
        put(&mut out, off!(copyid), &[self.copyid]);
        put(&mut out, off!(keybits), &[self.keybits]);
        put(&mut out, off!(vradix), &[self.vradix]);
        put(&mut out, off!(flags), &[self.flags]);
        put(&mut out, off!(leaf_count), &self.leaf_count.to_le_bytes());
        put(&mut out, off!(key), &self.key.to_le_bytes());
        put(&mut out, off!(mirror_tid), &self.mirror_tid.to_le_bytes());
        put(&mut out, off!(modify_tid), &self.modify_tid.to_le_bytes());
        put(&mut out, off!(data_off), &self.data_off.to_le_bytes());
        put(&mut out, off!(update_tid), &self.update_tid.to_le_bytes());
        put(&mut out, off!(embed), &self.embed);
        put(&mut out, off!(check), &self.check);
        out
    }

    /// Check the rules listed at [`Blockref::decode`].
    pub fn validate(&self) -> Result<()> {
        let ok = is_known_bref_type(self.btype)
            && is_known_check(self.check_method())
            && is_known_comp(self.comp_method())
            && BrefFlags::from_bits(self.flags).is_some()
            && self.keybits <= 64
            && self.key & key_low_mask(self.keybits) == 0
            && self.radix_ok();
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid)
        }
    }

    fn radix_ok(&self) -> bool {
        let radix = self.size_radix();
        match self.btype {
            BREF_TYPE_EMPTY => self.data_off == 0,
            BREF_TYPE_INODE => radix == 0 || radix == INODE_RADIX,
            _ => radix == 0 || (RADIX_MIN..=RADIX_MAX).contains(&radix),
        }
    }

    /// The check method (high nibble of `methods`).
    pub const fn check_method(&self) -> u8 {
        self.methods >> 4
    }

    /// The compression method (low nibble of `methods`).
    pub const fn comp_method(&self) -> u8 {
        self.methods & 0x0F
    }

    /// The flags as a set (unknown bits dropped).
    pub const fn bref_flags(&self) -> BrefFlags {
        BrefFlags::from_bits_truncate(self.flags)
    }

    /// The size radix in `data_off`'s low 6 bits (0: no data).
    pub const fn size_radix(&self) -> u8 {
        (self.data_off & DATA_OFF_RADIX_MASK) as u8
    }

    /// Bytes of the referenced block per its size radix (0 for radix 0 or an invalid radix).
    pub const fn data_bytes(&self) -> usize {
        match radix_bytes(self.size_radix()) {
            Some(n) => n,
            None => 0,
        }
    }

    /// Set the size radix in `data_off`, keeping its offset bits.
    pub fn set_size_radix(&mut self, radix: u8) {
        self.data_off =
            (self.data_off & !DATA_OFF_RADIX_MASK) | (u64::from(radix) & DATA_OFF_RADIX_MASK);
    }

    /// The last key of the covered range, `key + 2^keybits - 1` (saturating at [`KEY_MAX`]).
    pub const fn key_end(&self) -> u64 {
        key_end(self.key, self.keybits)
    }

    /// Whether the covered range and `beg..=end` overlap.
    pub const fn overlaps(&self, beg: u64, end: u64) -> bool {
        self.key <= end && beg <= self.key_end()
    }

    /// Store the check code of `payload` under this reference's check method.
    pub fn set_check(&mut self, payload: &[u8]) -> Result<()> {
        self.check = check::compute(self.check_method(), payload)?;
        Ok(())
    }

    /// Verify `payload` against the stored check code ([`Error::Io`] on mismatch).
    pub fn verify_check(&self, payload: &[u8]) -> Result<()> {
        check::verify(self.check_method(), payload, &self.check)
    }
}

/// The last key of the range `key`/`keybits`, `key + 2^keybits - 1` (saturating at
/// [`KEY_MAX`]).
pub const fn key_end(key: u64, keybits: u8) -> u64 {
    if keybits >= 64 {
        KEY_MAX
    } else {
        key.saturating_add((1u64 << keybits) - 1)
    }
}

/// The key bits below an aligned `keybits` range (all ones for 64).
const fn key_low_mask(keybits: u8) -> u64 {
    if keybits >= 64 {
        u64::MAX
    } else {
        (1u64 << keybits) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Blockref {
        let mut b = Blockref::new(BREF_TYPE_DATA, 0x30000, 16);
        b.copyid = 2;
        b.vradix = 16;
        b.flags = BrefFlags::PFSROOT.bits();
        b.leaf_count = 0x1234;
        b.mirror_tid = 0x1111_2222_3333_4444;
        b.modify_tid = 0x5555_6666_7777_8888;
        b.data_off = 0xABC0_0000 | 16;
        b.update_tid = 9;
        b.embed = core::array::from_fn(|i| i as u8 + 1);
        b.set_check(b"payload").unwrap();
        b
    }

    #[test]
    fn round_trip_and_offsets() {
        let b = sample();
        let e = b.encode();
        assert_eq!(e[0x00], BREF_TYPE_DATA);
        assert_eq!(e[0x01], 0x30);
        assert_eq!(e[0x02], 2);
        assert_eq!(e[0x03], 16);
        assert_eq!(e[0x04], 16);
        assert_eq!(e[0x05], 1);
        assert_eq!(e[0x06..0x08], [0x34, 0x12]);
        assert_eq!(e[0x08..0x10], 0x30000u64.to_le_bytes());
        assert_eq!(e[0x10..0x18], b.mirror_tid.to_le_bytes());
        assert_eq!(e[0x18..0x20], b.modify_tid.to_le_bytes());
        assert_eq!(e[0x20..0x28], b.data_off.to_le_bytes());
        assert_eq!(e[0x28..0x30], 9u64.to_le_bytes());
        assert_eq!(e[0x30], 1);
        assert_eq!(e[0x3F], 16);
        assert_eq!(e[0x40..0x48], b.check[..8]);
        assert_eq!(Blockref::decode(&e), Ok(b));
        assert_eq!(
            Blockref::decode(&Blockref::default().encode()),
            Ok(Blockref::default())
        );
    }

    #[test]
    fn accessors() {
        let b = sample();
        assert_eq!(b.check_method(), CHECK_XXHASH64);
        assert_eq!(b.comp_method(), COMP_NONE);
        assert_eq!(b.size_radix(), 16);
        assert_eq!(b.data_bytes(), 65536);
        assert_eq!(b.key_end(), 0x3FFFF);
        assert!(b.overlaps(0x3FFFF, 0x50000));
        assert!(!b.overlaps(0x40000, 0x50000));
        assert!(b.bref_flags().contains(BrefFlags::PFSROOT));
        assert!(b.verify_check(b"payload").is_ok());
        assert_eq!(b.verify_check(b"Payload"), Err(Error::Io));
        let mut c = b;
        c.set_size_radix(10);
        assert_eq!(c.data_off, 0xABC0_0000 | 10);
        let all = Blockref::new(BREF_TYPE_INDIRECT, 0, 64);
        assert_eq!(all.key_end(), KEY_MAX);
        let one = Blockref::new(BREF_TYPE_INODE, 77, 0);
        assert_eq!(one.key_end(), 77);
    }

    fn rejects(mutate: impl Fn(&mut [u8; BREF_BYTES])) {
        let mut e = sample().encode();
        mutate(&mut e);
        assert_eq!(Blockref::decode(&e), Err(Error::Invalid));
    }

    #[test]
    fn every_validation_error() {
        let e = sample().encode();
        assert_eq!(Blockref::decode(&e[..127]), Err(Error::Invalid));
        let mut long = [0u8; 129];
        long[..128].copy_from_slice(&e);
        assert_eq!(Blockref::decode(&long), Err(Error::Invalid));
        assert_eq!(Blockref::decode(&[]), Err(Error::Invalid));
        rejects(|e| e[0] = 7); // unknown type
        rejects(|e| e[1] = 0x50); // unknown check method
        rejects(|e| e[1] = 0x34); // unknown compression
        rejects(|e| e[3] = 65); // keybits > 64
        rejects(|e| e[0x08] = 1); // key not aligned to keybits
        rejects(|e| e[0x05] = 0x02); // unknown flag
        rejects(|e| e[0x20] = 9); // radix below minimum
        rejects(|e| e[0x20] = 17); // radix above maximum
        rejects(|e| {
            e[0] = BREF_TYPE_INODE; // inode with a 64 KiB radix
        });
        rejects(|e| {
            e.fill(0);
            e[0x20] = 0x40; // EMPTY with a data offset
        });
        // keybits 64 needs key 0.
        let mut all = Blockref::new(BREF_TYPE_INDIRECT, 0, 64).encode();
        assert!(Blockref::decode(&all).is_ok());
        all[0x08] = 0x80;
        assert_eq!(Blockref::decode(&all), Err(Error::Invalid));
    }
}
