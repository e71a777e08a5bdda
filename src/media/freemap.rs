//! The freemap's on-media structures (`hammer2_disk.h`, HAMMER2-MEDIA §10): its blockrefs
//! (FREEMAP_NODE / FREEMAP_LEAF, check method [`CHECK_FREEMAP`]) and the leaves' 128-byte
//! `hammer2_bmap_data` entries, one per 4 MiB, two bits per 16 KiB granule.

use super::bref::Blockref;
use super::check::crc32c;
use super::consts::*;
use super::error::MediaError;
use super::le::get;

/// Size radix of every freemap block (nodes and leaves: 32 KiB).
pub const FREEMAP_BLOCK_RADIX: u8 = 15;
/// Bytes of a freemap block.
pub const FREEMAP_BLOCK_BYTES: usize = 1 << FREEMAP_BLOCK_RADIX;
/// Key bits of a leaf: one leaf maps 1 GiB.
pub const LEAF_KEYBITS: u8 = 30;
/// Key bits of the node levels above the leaves (256 entries each: 256 GiB, 64 TiB, 16 PiB,
/// 4 EiB).
pub const NODE_KEYBITS: [u8; 4] = [38, 46, 54, 62];
/// Bytes one bmap entry maps (`HAMMER2_FREEMAP_LEVEL0_SIZE`).
pub const BMAP_SPAN: u64 = 4 << 20;
/// Bytes of one `hammer2_bmap_data`.
pub const BMAP_BYTES: usize = 128;
/// Entries of a leaf.
pub const BMAP_COUNT: usize = FREEMAP_BLOCK_BYTES / BMAP_BYTES;
/// Bytes of a granule, the unit of the bitmaps (`HAMMER2_FREEMAP_BLOCK_SIZE`).
pub const GRANULE_BYTES: u64 = 16 << 10;
/// Granules of one bmap entry.
pub const GRANULES: usize = (BMAP_SPAN / GRANULE_BYTES) as usize;

/// The state of a granule (its two bitmap bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granule {
    /// 00: free.
    Free,
    /// 01: never written by HAMMER2 (bulkfree reports it).
    Illegal,
    /// 10: staged by a first bulkfree pass, not yet allocatable.
    Staged,
    /// 11: allocated.
    Allocated,
}

/// One `hammer2_bmap_data`: the allocation state of 4 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BmapData {
    /// Where the next sub-16 KiB allocation may go inside the 4 MiB.
    pub linear: i32,
    /// `(bref type << 8) | radix` of the first allocation (0: unclassified).
    pub class: u16,
    /// Free bytes of the 4 MiB (16 KiB granular; a hint).
    pub avail: u32,
    /// Two bits per granule, 32 granules per word.
    pub bitmapq: [u64; 8],
}

impl BmapData {
    /// Decode 128 bytes (only the length is checked: every bit pattern is a map).
    pub fn decode(bytes: &[u8]) -> Result<BmapData, MediaError> {
        if bytes.len() != BMAP_BYTES {
            return Err(MediaError::Length);
        }
        Ok(BmapData {
            linear: i32::from_le_bytes(get(bytes, 0x00)),
            class: u16::from_le_bytes(get(bytes, 0x04)),
            avail: u32::from_le_bytes(get(bytes, 0x1C)),
            bitmapq: core::array::from_fn(|i| u64::from_le_bytes(get(bytes, 0x40 + 8 * i))),
        })
    }

    /// The state of granule `g` (0..[`GRANULES`]; [`Granule::Free`] past the end).
    pub fn granule(&self, g: usize) -> Granule {
        let word = self.bitmapq.get(g / 32).copied().unwrap_or(0);
        match (word >> ((g % 32) * 2)) & 3 {
            0 => Granule::Free,
            1 => Granule::Illegal,
            2 => Granule::Staged,
            _ => Granule::Allocated,
        }
    }
}

/// The check area of a freemap blockref (`check.freemap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreemapCheck {
    /// CRC-32C of the whole 32 KiB block.
    pub icrc32: u32,
    /// Hint: radixes that may still be allocatable below.
    pub bigmask: u32,
    /// Hint: free bytes below.
    pub avail: u64,
}

impl FreemapCheck {
    /// The check area of `bref`, decoded.
    pub fn of(bref: &Blockref) -> FreemapCheck {
        FreemapCheck {
            icrc32: u32::from_le_bytes(get(&bref.check, 0)),
            bigmask: u32::from_le_bytes(get(&bref.check, 4)),
            avail: u64::from_le_bytes(get(&bref.check, 8)),
        }
    }
}

/// Decode and validate a freemap blockref (a slot of the volume header's freemap blockset or
/// of a FREEMAP_NODE). Rules, each failure [`MediaError::Field`]:
/// - EMPTY: all of `data_off` zero;
/// - otherwise FREEMAP_LEAF with [`LEAF_KEYBITS`] or FREEMAP_NODE with one of
///   [`NODE_KEYBITS`], `key` aligned to them, check method [`CHECK_FREEMAP`], no
///   compression, a [`FREEMAP_BLOCK_RADIX`] block.
pub fn decode_bref(bytes: &[u8]) -> Result<Blockref, MediaError> {
    let b = Blockref::decode_fields(bytes).map_err(|_| MediaError::Length)?;
    let bad = Err(MediaError::Field("freemap blockref"));
    let keybits_ok = match b.btype {
        BREF_TYPE_EMPTY => return if b.data_off == 0 { Ok(b) } else { bad },
        BREF_TYPE_FREEMAP_LEAF => b.keybits == LEAF_KEYBITS,
        BREF_TYPE_FREEMAP_NODE => NODE_KEYBITS.contains(&b.keybits),
        _ => false,
    };
    // Only after the key bits are known to be a freemap level's: below 64, the shift is defined.
    let aligned = keybits_ok && b.key & ((1u64 << b.keybits) - 1) == 0;
    let methods = b.check_method() == CHECK_FREEMAP && b.comp_method() == COMP_NONE;
    if keybits_ok && aligned && methods && b.size_radix() == FREEMAP_BLOCK_RADIX {
        Ok(b)
    } else {
        bad
    }
}

/// Verify a freemap block against its blockref's CRC-32C ([`MediaError::CheckMismatch`]).
pub fn verify_block(bref: &Blockref, block: &[u8]) -> Result<(), MediaError> {
    if crc32c(block) == FreemapCheck::of(bref).icrc32 {
        Ok(())
    } else {
        Err(MediaError::CheckMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::consts::enc_methods;

    fn leaf() -> Blockref {
        let mut b = Blockref::new(BREF_TYPE_FREEMAP_LEAF, 1 << 30, LEAF_KEYBITS);
        b.methods = enc_methods(CHECK_FREEMAP, COMP_NONE);
        b.data_off = 0x4001_0000 | u64::from(FREEMAP_BLOCK_RADIX);
        b
    }

    #[test]
    fn bmap_layout_and_granules() {
        // The observed entry of HAMMER2-MEDIA §10: bitmapq[0] = 0xff03.
        let mut raw = [0u8; BMAP_BYTES];
        raw[0..4].copy_from_slice(&0x11400i32.to_le_bytes());
        raw[4..6].copy_from_slice(&0x0110u16.to_le_bytes());
        raw[0x1C..0x20].copy_from_slice(&0x3d_c000u32.to_le_bytes());
        raw[0x40..0x48].copy_from_slice(&0xff03u64.to_le_bytes());
        raw[0x78..0x80].copy_from_slice(&(2u64 << 62).to_le_bytes());
        let m = BmapData::decode(&raw).unwrap();
        assert_eq!((m.linear, m.class, m.avail), (0x11400, 0x0110, 0x3d_c000));
        assert_eq!(m.granule(0), Granule::Allocated);
        assert_eq!(m.granule(1), Granule::Free);
        assert_eq!(m.granule(3), Granule::Free);
        for g in 4..8 {
            assert_eq!(m.granule(g), Granule::Allocated);
        }
        assert_eq!(m.granule(8), Granule::Free);
        assert_eq!(m.granule(255), Granule::Staged);
        assert_eq!(m.granule(256), Granule::Free);
        let mut one = raw;
        one[0x40] = 0x01;
        assert_eq!(BmapData::decode(&one).unwrap().granule(0), Granule::Illegal);
        assert_eq!(BmapData::decode(&raw[..127]), Err(MediaError::Length));
    }

    #[test]
    fn freemap_brefs() {
        let mut b = leaf();
        let block = [0x5Au8; FREEMAP_BLOCK_BYTES];
        b.check[..4].copy_from_slice(&crc32c(&block).to_le_bytes());
        b.check[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        b.check[8..16].copy_from_slice(&931_135_488u64.to_le_bytes());
        assert_eq!(decode_bref(&b.encode()), Ok(b));
        let c = FreemapCheck::of(&b);
        assert_eq!((c.bigmask, c.avail), (u32::MAX, 931_135_488));
        assert_eq!(verify_block(&b, &block), Ok(()));
        let mut bad = block;
        bad[100] ^= 1;
        assert_eq!(verify_block(&b, &bad), Err(MediaError::CheckMismatch));
        // A normal blockref decoder refuses the FREEMAP check method.
        assert!(Blockref::decode(&b.encode()).is_err());

        let mut node = Blockref::new(BREF_TYPE_FREEMAP_NODE, 0, 38);
        node.methods = b.methods;
        node.data_off = b.data_off;
        assert!(decode_bref(&node.encode()).is_ok());
        assert_eq!(
            decode_bref(&Blockref::default().encode()),
            Ok(Blockref::default())
        );
        let refused = |f: &dyn Fn(&mut Blockref)| {
            let mut x = leaf();
            f(&mut x);
            assert_eq!(
                decode_bref(&x.encode()),
                Err(MediaError::Field("freemap blockref"))
            );
        };
        refused(&|x| x.keybits = 31);
        refused(&|x| x.keybits = 64);
        refused(&|x| x.keybits = 200);
        refused(&|x| x.key = 1 << 20);
        refused(&|x| x.btype = BREF_TYPE_INDIRECT);
        refused(&|x| x.methods = enc_methods(CHECK_XXHASH64, COMP_NONE));
        refused(&|x| x.set_size_radix(16));
        refused(&|x| {
            *x = Blockref::default();
            x.data_off = 0x10000;
        });
        assert_eq!(decode_bref(&[0u8; 12]), Err(MediaError::Length));
    }
}
