//! Check codes of block payloads: CRC-32C (`CHECK_ISCSI32`) and XXH64 (`CHECK_XXHASH64`).
//!
//! Both are written here (no dependency), table-driven / word-at-a-time, without panics.

use super::consts::{CHECK_DISABLED, CHECK_ISCSI32, CHECK_NONE, CHECK_XXHASH64, XXH_HAMMER2_SEED};

use crate::{Error, Result};

/// Bytes of a blockref's check area.
pub const CHECK_BYTES: usize = 64;

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) lookup tables for slicing by 8,
/// built at compile time: `CRC32C_TABLES[0]` is the byte-at-a-time table, and entry `i` of
/// table `k` is the CRC of byte `i` followed by `k` zero bytes. Eight bytes then cost eight
/// independent lookups instead of eight dependent ones (a 64 KiB volume header or freemap
/// leaf is checked on every read and write).
const CRC32C_TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            i += 1;
        }
        k += 1;
    }
    t
};

/// Table `k`'s entry for the low byte of `x`.
#[inline(always)]
fn crc_at(k: usize, x: u32) -> u32 {
    CRC32C_TABLES[k & 7][x as u8 as usize]
}

/// CRC-32C of `data` as iSCSI (and HAMMER2's `hammer2_icrc32`) define it: initial value and
/// final xor all ones.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    let words = data.chunks_exact(8);
    let rest = words.remainder();
    for w in words {
        let lo = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) ^ crc;
        let hi = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
        crc = crc_at(7, lo)
            ^ crc_at(6, lo >> 8)
            ^ crc_at(5, lo >> 16)
            ^ crc_at(4, lo >> 24)
            ^ crc_at(3, hi)
            ^ crc_at(2, hi >> 8)
            ^ crc_at(1, hi >> 16)
            ^ crc_at(0, hi >> 24);
    }
    for &b in rest {
        crc = crc_at(0, crc ^ u32::from(b)) ^ (crc >> 8);
    }
    !crc
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn xxh_round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn xxh_merge(hash: u64, acc: u64) -> u64 {
    (hash ^ xxh_round(0, acc)).wrapping_mul(P1).wrapping_add(P4)
}

fn le64(chunk: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(chunk);
    u64::from_le_bytes(b)
}

/// Bytes XXH64 consumes per round of its four accumulators.
const STRIPE: usize = 32;

/// XXH64's four accumulators over whole 32-byte stripes (inputs of 32 bytes or more).
struct Stripes([u64; 4]);

impl Stripes {
    fn new(seed: u64) -> Stripes {
        Stripes([
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ])
    }

    #[inline(always)]
    fn eat(&mut self, stripe: &[u8; STRIPE]) {
        for (a, lane) in self.0.iter_mut().zip(stripe.chunks_exact(8)) {
            *a = xxh_round(*a, le64(lane));
        }
    }

    fn merge(self) -> u64 {
        let acc = self.0;
        let mut h = acc[0]
            .rotate_left(1)
            .wrapping_add(acc[1].rotate_left(7))
            .wrapping_add(acc[2].rotate_left(12))
            .wrapping_add(acc[3].rotate_left(18));
        for a in acc {
            h = xxh_merge(h, a);
        }
        h
    }
}

/// The 32-byte stripes of `data` (the rest, under 32 bytes, is `tail` below).
fn stripes(data: &[u8]) -> impl Iterator<Item = &[u8; STRIPE]> {
    data.chunks_exact(STRIPE)
        .filter_map(|s| <&[u8; STRIPE]>::try_from(s).ok())
}

/// The bytes after the last whole stripe.
fn tail(data: &[u8]) -> &[u8] {
    data.chunks_exact(STRIPE).remainder()
}

/// XXH64 of `data` with `seed` (the reference xxHash 64-bit algorithm).
pub fn xxh64(data: &[u8], seed: u64) -> u64 {
    let hash = if data.len() >= STRIPE {
        let mut st = Stripes::new(seed);
        for s in stripes(data) {
            st.eat(s);
        }
        st.merge()
    } else {
        seed.wrapping_add(P5)
    };
    xxh_finish(hash, data.len(), tail(data))
}

/// XXH64's length, tail and avalanche steps.
fn xxh_finish(mut hash: u64, len: usize, tail: &[u8]) -> u64 {
    hash = hash.wrapping_add(len as u64);
    let words = tail.chunks_exact(8);
    let rest = words.remainder();
    for w in words {
        hash ^= xxh_round(0, le64(w));
        hash = hash.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
    }
    let bytes = if rest.len() >= 4 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&rest[..4]);
        hash ^= u64::from(u32::from_le_bytes(b)).wrapping_mul(P1);
        hash = hash.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        &rest[4..]
    } else {
        rest
    };
    for &b in bytes {
        hash ^= u64::from(b).wrapping_mul(P5);
        hash = hash.rotate_left(11).wrapping_mul(P1);
    }

    hash ^= hash >> 33;
    hash = hash.wrapping_mul(P2);
    hash ^= hash >> 29;
    hash = hash.wrapping_mul(P3);
    hash ^ (hash >> 32)
}

/// The check area for `data` under check method `method`: NONE and DISABLED give all zeros;
/// ISCSI32 and XXHASH64 store their value little-endian at the start. Any other method
/// (SHA192, unknown) is [`Error::Invalid`]: this port cannot compute it.
pub fn compute(method: u8, data: &[u8]) -> Result<[u8; CHECK_BYTES]> {
    let mut check = [0u8; CHECK_BYTES];
    match method {
        CHECK_NONE | CHECK_DISABLED => {}
        CHECK_ISCSI32 => check[..4].copy_from_slice(&crc32c(data).to_le_bytes()),
        CHECK_XXHASH64 => check[..8].copy_from_slice(&xxh64(data, XXH_HAMMER2_SEED).to_le_bytes()),
        _ => return Err(Error::Invalid),
    }
    Ok(check)
}

/// Verify `data` against a stored check area. NONE and DISABLED always pass; a mismatch is
/// [`Error::Io`] (a media error, as HAMMER2 reports it); a method this port cannot compute is
/// [`Error::Invalid`]. Only the bytes the method defines are compared.
pub fn verify(method: u8, data: &[u8], check: &[u8; CHECK_BYTES]) -> Result<()> {
    let want = compute(method, data)?;
    let used = match method {
        CHECK_ISCSI32 => 4,
        CHECK_XXHASH64 => 8,
        _ => 0,
    };
    if want[..used] == check[..used] {
        Ok(())
    } else {
        Err(Error::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::consts::CHECK_SHA192;

    #[test]
    fn crc32c_known_answers() {
        // The CRC-32C check value from the catalogue of parametrised CRCs.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn crc32c_by_eight_is_the_bitwise_crc() {
        fn bitwise(data: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &b in data {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ 0x82F6_3B78
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        let data: alloc::vec::Vec<u8> = (0..300u32).map(|i| (i * 37 + 11) as u8).collect();
        // Every length and start offset around the 8-byte words and their tails.
        for start in 0..9 {
            for end in start..data.len() {
                assert_eq!(crc32c(&data[start..end]), bitwise(&data[start..end]));
            }
        }
    }

    #[test]
    fn xxh64_known_answers() {
        // Reference values of the xxHash project (seed 0).
        assert_eq!(xxh64(b"", 0), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(b"a", 0), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxh64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
        // Values checked against libxxhash 0.8 with HAMMER2's seed, covering the 32-byte
        // stripe loop, the 8- and 4-byte tails and single bytes.
        let long: [u8; 100] = core::array::from_fn(|i| i as u8);
        assert_eq!(xxh64(&long, XXH_HAMMER2_SEED), XXH_LONG);
        assert_eq!(xxh64(b"hello, world", XXH_HAMMER2_SEED), XXH_HELLO);
    }

    const XXH_LONG: u64 = 0x209E_4318_78F6_0FA4;
    const XXH_HELLO: u64 = 0x3A85_A770_3848_E993;

    #[test]
    fn compute_and_verify() {
        let data = b"some payload";
        let none = compute(CHECK_NONE, data).unwrap();
        assert_eq!(none, [0u8; CHECK_BYTES]);
        assert!(verify(CHECK_DISABLED, data, &[7u8; CHECK_BYTES]).is_ok());

        let c = compute(CHECK_ISCSI32, data).unwrap();
        assert_eq!(c[..4], crc32c(data).to_le_bytes());
        assert!(c[4..].iter().all(|&b| b == 0));
        assert!(verify(CHECK_ISCSI32, data, &c).is_ok());
        assert_eq!(verify(CHECK_ISCSI32, b"other", &c), Err(Error::Io));

        let x = compute(CHECK_XXHASH64, data).unwrap();
        assert_eq!(x[..8], xxh64(data, XXH_HAMMER2_SEED).to_le_bytes());
        assert!(verify(CHECK_XXHASH64, data, &x).is_ok());
        let mut bad = x;
        bad[3] ^= 1;
        assert_eq!(verify(CHECK_XXHASH64, data, &bad), Err(Error::Io));

        assert_eq!(compute(CHECK_SHA192, data), Err(Error::Invalid));
        assert_eq!(compute(9, data), Err(Error::Invalid));
        assert_eq!(verify(CHECK_SHA192, data, &x), Err(Error::Invalid));
    }
}
