//! Directory entries of today's layout: a DIRENT blockref (`HAMMER2_BREF_TYPE_DIRENT`) whose
//! `embed` holds the dirent head (`hammer2_dirent_head_t`: inum, name length, type) and
//! whose name sits in the blockref's check area when it fits (at most 64 bytes, no data
//! block), else at the start of a 1 KiB data block.

use super::bref::Blockref;
use super::check::CHECK_BYTES;
use super::consts::{is_known_objtype, BREF_TYPE_DIRENT, NAME_MAX, RADIX_MIN};
use super::error::MediaError;
use super::le::{get, put};

/// The dirent head embedded in a DIRENT blockref (`embed`, 16 bytes: inum u64 at 0, namlen
/// u16 at 8, type u8 at 10, 5 bytes of padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirentHead {
    /// The inode number the entry names (found in the PFS's inode index).
    pub inum: u64,
    /// Bytes of the name, 1..=255.
    pub namlen: u16,
    /// The `OBJTYPE_*` of the target inode.
    pub objtype: u8,
}

impl DirentHead {
    /// Decode the head of a DIRENT blockref: the blockref must be a DIRENT, `namlen`
    /// 1..=[`NAME_MAX`], the type a known `OBJTYPE_*` ([`MediaError::Field`] otherwise).
    pub fn decode(bref: &Blockref) -> Result<DirentHead, MediaError> {
        if bref.btype != BREF_TYPE_DIRENT {
            return Err(MediaError::Field("type"));
        }
        let e = &bref.embed;
        let head = DirentHead {
            inum: u64::from_le_bytes(get(e, 0)),
            namlen: u16::from_le_bytes(get(e, 8)),
            objtype: get::<1>(e, 10)[0],
        };
        if head.namlen == 0 || usize::from(head.namlen) > NAME_MAX {
            return Err(MediaError::Field("namlen"));
        }
        if !is_known_objtype(head.objtype) {
            return Err(MediaError::Field("dirent.type"));
        }
        Ok(head)
    }

    /// The 16 `embed` bytes of this head.
    pub fn encode(&self) -> [u8; 16] {
        let mut e = [0u8; 16];
        put(&mut e, 0, &self.inum.to_le_bytes());
        put(&mut e, 8, &self.namlen.to_le_bytes());
        put(&mut e, 10, &[self.objtype]);
        e
    }

    /// Whether the name lives in the blockref's check area (at most 64 bytes) rather than in
    /// a data block (`hammer2_xop_inode_mkdirent`).
    pub const fn name_is_embedded(&self) -> bool {
        self.namlen as usize <= CHECK_BYTES
    }

    /// The entry's name: from the check area for a short name (the blockref must then have
    /// no data block), else from the start of `block`, the entry's data block (at least 1 KiB,
    /// already read and verified by the caller). [`MediaError::Field`] if the blockref's
    /// `data_off` does not match where the name must be, [`MediaError::Length`] if `block` is
    /// missing or too short.
    pub fn name<'a>(
        &self,
        bref: &'a Blockref,
        block: Option<&'a [u8]>,
    ) -> Result<&'a [u8], MediaError> {
        let n = usize::from(self.namlen);
        if self.name_is_embedded() {
            if bref.size_radix() != 0 {
                return Err(MediaError::Field("data_off"));
            }
            bref.check.get(..n).ok_or(MediaError::Length)
        } else {
            if bref.size_radix() < RADIX_MIN {
                return Err(MediaError::Field("data_off"));
            }
            block.and_then(|b| b.get(..n)).ok_or(MediaError::Length)
        }
    }
}

/// A DIRENT blockref for a short name (at most 64 bytes) at `key`, the name in the check
/// area; [`MediaError::Length`] for a longer or empty name.
pub fn short_dirent(key: u64, inum: u64, objtype: u8, name: &[u8]) -> Result<Blockref, MediaError> {
    if name.is_empty() || name.len() > CHECK_BYTES {
        return Err(MediaError::Length);
    }
    let head = DirentHead {
        inum,
        namlen: name.len() as u16,
        objtype,
    };
    let mut b = Blockref::new(BREF_TYPE_DIRENT, key, 0);
    b.embed = head.encode();
    put(&mut b.check, 0, name);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::consts::{OBJTYPE_REGFILE, OBJTYPE_SOFTLINK};
    use crate::media::dirhash;

    #[test]
    fn short_name_round_trip() {
        let key = dirhash(b"symlink") + 1;
        let b = short_dirent(key, 0x402, OBJTYPE_SOFTLINK, b"symlink").unwrap();
        let raw = b.encode();
        assert_eq!(raw[0x30..0x38], 0x402u64.to_le_bytes());
        assert_eq!(raw[0x38..0x3A], [7, 0]);
        assert_eq!(raw[0x3A], OBJTYPE_SOFTLINK);
        assert_eq!(raw[0x40..0x47], *b"symlink");
        let back = Blockref::decode(&raw).unwrap();
        let head = DirentHead::decode(&back).unwrap();
        assert_eq!(
            head,
            DirentHead {
                inum: 0x402,
                namlen: 7,
                objtype: OBJTYPE_SOFTLINK
            }
        );
        assert!(head.name_is_embedded());
        assert_eq!(head.name(&back, None), Ok(&b"symlink"[..]));
        let full = [b'n'; 64];
        let b = short_dirent(key, 1, OBJTYPE_REGFILE, &full).unwrap();
        let h = DirentHead::decode(&b).unwrap();
        assert_eq!(h.name(&b, None), Ok(&full[..]));
        assert_eq!(
            short_dirent(key, 1, OBJTYPE_REGFILE, &[b'n'; 65]),
            Err(MediaError::Length)
        );
        assert_eq!(
            short_dirent(key, 1, OBJTYPE_REGFILE, b""),
            Err(MediaError::Length)
        );
    }

    #[test]
    fn long_name_in_block() {
        let name = [b'L'; 200];
        let mut b = Blockref::new(BREF_TYPE_DIRENT, dirhash(&name) + 1, 0);
        b.embed = DirentHead {
            inum: 9,
            namlen: 200,
            objtype: OBJTYPE_REGFILE,
        }
        .encode();
        let mut block = [0u8; 1024];
        block[..200].copy_from_slice(&name);
        b.data_off = 0x940_0000 | 10;
        b.set_check(&block).unwrap();
        let h = DirentHead::decode(&b).unwrap();
        assert!(!h.name_is_embedded());
        assert_eq!(h.name(&b, Some(&block)), Ok(&name[..]));
        assert_eq!(h.name(&b, None), Err(MediaError::Length));
        assert_eq!(h.name(&b, Some(&block[..100])), Err(MediaError::Length));
        b.data_off = 0;
        assert_eq!(h.name(&b, Some(&block)), Err(MediaError::Field("data_off")));
    }

    #[test]
    fn malformed_heads() {
        let good = short_dirent(dirhash(b"a"), 5, OBJTYPE_REGFILE, b"a").unwrap();
        let mut b = good;
        b.btype = crate::media::BREF_TYPE_INODE;
        assert_eq!(DirentHead::decode(&b), Err(MediaError::Field("type")));
        let mut b = good;
        b.embed[8] = 0;
        assert_eq!(DirentHead::decode(&b), Err(MediaError::Field("namlen")));
        let mut b = good;
        b.embed[8..10].copy_from_slice(&256u16.to_le_bytes());
        assert_eq!(DirentHead::decode(&b), Err(MediaError::Field("namlen")));
        let mut b = good;
        b.embed[10] = 3;
        assert_eq!(
            DirentHead::decode(&b),
            Err(MediaError::Field("dirent.type"))
        );
        // A short name whose blockref claims a data block.
        let mut b = good;
        b.data_off = 0x1_0000 | 10;
        let h = DirentHead::decode(&b).unwrap();
        assert_eq!(h.name(&b, None), Err(MediaError::Field("data_off")));
    }
}
