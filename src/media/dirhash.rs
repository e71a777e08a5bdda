//! The directory hash: the key a directory entry (a child inode in the seed era) is stored
//! under, HAMMER2-style.
//!
//! Layout of the 64-bit key:
//! - bits 63..32: the sum of the CRC-32C of each name segment between the separators
//!   `.` `-` `_` `~`, with bit 63 ([`DIRHASH_VISIBLE`]) forced on. Names that differ only in
//!   segment order or separators land close, as in HAMMER2;
//! - bits 31..16: a CRC-32C of the whole name folded onto itself (`crc ^ crc << 16`), which
//!   separates those near-collisions;
//! - bit 15 ([`DIRHASH_FORCED`]) set, so keys 0..=0x7FFF stay free for artificial entries;
//! - bits 14..0 ([`DIRHASH_LOMASK`](super::consts::DIRHASH_LOMASK)) zero: a store resolves a collision by trying
//!   `key + 1`, `key + 2`, ... within the mask.

use super::check::crc32c;
use super::consts::{DIRHASH_FORCED, DIRHASH_VISIBLE};

/// Bytes that split a name into hashed segments.
const fn is_separator(b: u8) -> bool {
    matches!(b, b'.' | b'-' | b'_' | b'~')
}

/// The directory-hash key of `name` (see the module documentation for its layout).
pub fn dirhash(name: &[u8]) -> u64 {
    let segments = name
        .split(|&b| is_separator(b))
        .filter(|s| !s.is_empty())
        .fold(0u32, |sum, s| sum.wrapping_add(crc32c(s)));
    let whole = crc32c(name);
    let folded = (whole ^ (whole << 16)) & 0xFFFF_0000;
    (u64::from(segments) << 32) | DIRHASH_VISIBLE | u64::from(folded) | DIRHASH_FORCED
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::consts::{DIRHASH_HIMASK, DIRHASH_LOMASK};

    #[test]
    fn layout_bits() {
        for name in [&b""[..], b"a", b"readme", b"a.b.c", &[0xFFu8; 255][..]] {
            let k = dirhash(name);
            assert_ne!(k & DIRHASH_VISIBLE, 0);
            assert_ne!(k & DIRHASH_FORCED, 0);
            assert_eq!(k & DIRHASH_LOMASK, 0);
            assert_eq!(k, dirhash(name), "deterministic");
        }
    }

    #[test]
    fn known_answer() {
        // One segment: the high half is its CRC-32C with bit 63 set; the whole-name CRC
        // folded gives bits 31..16.
        let c = crc32c(b"readme");
        let expect =
            (u64::from(c | 0x8000_0000) << 32) | u64::from((c ^ (c << 16)) & 0xFFFF_0000) | 0x8000;
        assert_eq!(dirhash(b"readme"), expect);
        assert_eq!(dirhash(b""), 0x8000_0000_0000_8000);
    }

    #[test]
    fn segments_share_high_bits_but_full_name_separates() {
        // Same segments in another order: same high 32 bits (a commutative sum)...
        let a = dirhash(b"foo.bar");
        let b = dirhash(b"bar.foo");
        assert_eq!(a >> 32, b >> 32);
        // ...and the whole-name CRC makes the keys differ.
        assert_ne!(a & DIRHASH_HIMASK, b & DIRHASH_HIMASK);
        // Separators themselves do not count in the segment sum.
        assert_eq!(dirhash(b"foo-bar") >> 32, dirhash(b"foo__bar") >> 32);
    }

    #[test]
    fn distinct_names_mostly_distinct_keys() {
        let mut keys: [u64; 500] = [0; 500];
        for (i, k) in keys.iter_mut().enumerate() {
            let name = [
                b'f',
                b'0' + (i / 100) as u8,
                b'0' + (i / 10 % 10) as u8,
                b'0' + (i % 10) as u8,
            ];
            *k = dirhash(&name);
        }
        keys.sort_unstable();
        let dups = keys.windows(2).filter(|w| w[0] == w[1]).count();
        assert_eq!(dups, 0);
    }
}
