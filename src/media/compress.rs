//! Compressed data blocks as HAMMER2 frames them (`hammer2_compress_and_write` and the
//! decompress callbacks of `hammer2_strategy.c`):
//! - LZ4: a 4-byte little-endian signed length of the payload, then one raw LZ4 *block*
//!   (no frame header); the rest of the stored block is zero padding;
//! - zlib: one zlib stream (RFC 1950 header, deflate, adler32), no length prefix, padded with
//!   zeros after its end;
//! - NONE and AUTOZERO: the stored bytes as they are (AUTOZERO only means all-zero blocks are
//!   not stored).
//!
//! Decoding never writes past the caller's buffer, the block's logical size: compressed data
//! that would decode to more is [`MediaError::Overflow`], never a larger allocation.

use alloc::boxed::Box;

use miniz_oxide::inflate::core::inflate_flags::{
    TINFL_FLAG_PARSE_ZLIB_HEADER, TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
};
use miniz_oxide::inflate::core::{decompress as inflate, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

use super::consts::{COMP_AUTOZERO, COMP_LZ4, COMP_NONE, COMP_ZLIB};
use super::error::MediaError;
use crate::Result;

/// Bytes of the LZ4 length prefix.
pub const LZ4_HEADER_BYTES: usize = 4;

/// A reusable zlib decoder: its state is about 10 KiB, too much to keep on a kernel stack, so
/// it lives on the heap, allocated once by its owner (a volume reader, at open).
pub struct Inflater(Box<DecompressorOxide>);

impl Inflater {
    /// A new decoder, or [`crate::Error::NoMem`].
    pub fn new() -> Result<Inflater> {
        let layout = core::alloc::Layout::new::<DecompressorOxide>();
        // SAFETY: the layout has a non-zero size (the decoder's tables).
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) }.cast::<DecompressorOxide>();
        if p.is_null() {
            return Err(crate::Error::NoMem);
        }
        // SAFETY: `p` is a fresh, zeroed allocation of the decoder's own layout, and zero
        // bytes are the decoder `DecompressorOxide::new()` makes ("all fields set to 0":
        // integers, integer arrays, and a fieldless state enum whose `Start` is 0); `init()`
        // sets the state to `Start` all the same. `Box::from_raw` frees it with that layout.
        // Built in place because the kernel build put `try_box(DecompressorOxide::new())`'s
        // 10 KiB value on the stack.
        unsafe {
            (*p).init();
            Ok(Inflater(Box::from_raw(p)))
        }
    }
}

/// Decode `stored` (a data block as read from media, compression method `comp`) into the
/// start of `out`, whose length is the block's logical size. Returns the bytes produced; the
/// caller zero-fills the rest of the logical block, as HAMMER2 does. Errors:
/// [`MediaError::CompMethod`] for an unknown method, [`MediaError::Field`] for an LZ4 length
/// prefix that is negative or larger than the block, [`MediaError::Decompress`] for data that
/// do not decode (a zlib stream must also end inside the block, with a correct adler32),
/// [`MediaError::Overflow`] when the result would not fit in `out`.
pub fn decompress(
    comp: u8,
    stored: &[u8],
    out: &mut [u8],
    inflater: &mut Inflater,
) -> core::result::Result<usize, MediaError> {
    match comp {
        COMP_NONE | COMP_AUTOZERO => {
            let dst = out.get_mut(..stored.len()).ok_or(MediaError::Overflow)?;
            dst.copy_from_slice(stored);
            Ok(stored.len())
        }
        COMP_LZ4 => lz4(stored, out),
        COMP_ZLIB => zlib(stored, out, inflater),
        m => Err(MediaError::CompMethod(m)),
    }
}

fn lz4(stored: &[u8], out: &mut [u8]) -> core::result::Result<usize, MediaError> {
    let mut len = [0u8; LZ4_HEADER_BYTES];
    len.copy_from_slice(stored.get(..LZ4_HEADER_BYTES).ok_or(MediaError::Length)?);
    let len =
        usize::try_from(i32::from_le_bytes(len)).map_err(|_| MediaError::Field("lz4 length"))?;
    let payload = LZ4_HEADER_BYTES
        .checked_add(len)
        .and_then(|end| stored.get(LZ4_HEADER_BYTES..end))
        .ok_or(MediaError::Field("lz4 length"))?;
    lz4_flex::block::decompress_into(payload, out).map_err(|e| match e {
        lz4_flex::block::DecompressError::OutputTooSmall { .. } => MediaError::Overflow,
        _ => MediaError::Decompress,
    })
}

fn zlib(
    stored: &[u8],
    out: &mut [u8],
    inflater: &mut Inflater,
) -> core::result::Result<usize, MediaError> {
    let d = &mut *inflater.0;
    d.init();
    let flags = TINFL_FLAG_PARSE_ZLIB_HEADER | TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, _read, written) = inflate(d, stored, out, 0, flags);
    match status {
        TINFLStatus::Done => Ok(written),
        TINFLStatus::HasMoreOutput => Err(MediaError::Overflow),
        _ => Err(MediaError::Decompress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    const LOGICAL: usize = 65536;

    fn text() -> Vec<u8> {
        (0..LOGICAL)
            .map(|i| b"abcdefgh"[i % 8] ^ (i / 4096) as u8)
            .collect()
    }

    /// HAMMER2's LZ4 framing of `data`, padded to `stored` bytes.
    fn lz4_framed(data: &[u8], stored: usize) -> Vec<u8> {
        let payload = lz4_flex::block::compress(data);
        let mut out = vec![0u8; stored];
        out[..4].copy_from_slice(&(payload.len() as i32).to_le_bytes());
        out[4..4 + payload.len()].copy_from_slice(&payload);
        out
    }

    fn zlib_framed(data: &[u8], stored: usize) -> Vec<u8> {
        let mut z = miniz_oxide::deflate::compress_to_vec_zlib(data, 6);
        z.resize(stored, 0);
        z
    }

    fn run(comp: u8, stored: &[u8], cap: usize) -> core::result::Result<Vec<u8>, MediaError> {
        let mut inf = Inflater::new().unwrap();
        let mut out = vec![0u8; cap];
        let n = decompress(comp, stored, &mut out, &mut inf)?;
        out.truncate(n);
        Ok(out)
    }

    #[test]
    fn round_trips() {
        let data = text();
        assert_eq!(
            run(COMP_LZ4, &lz4_framed(&data, 4096), LOGICAL).unwrap(),
            data
        );
        assert_eq!(
            run(COMP_ZLIB, &zlib_framed(&data, 4096), LOGICAL).unwrap(),
            data
        );
        assert_eq!(
            run(COMP_NONE, &data[..1024], LOGICAL).unwrap(),
            &data[..1024]
        );
        assert_eq!(run(COMP_AUTOZERO, &data, LOGICAL).unwrap(), data);
        // The decoder is reusable after a failure.
        let mut inf = Inflater::new().unwrap();
        let mut out = vec![0u8; LOGICAL];
        assert!(decompress(COMP_ZLIB, &[0x78, 0x9c, 0xFF], &mut out, &mut inf).is_err());
        let z = zlib_framed(&data, 4096);
        assert_eq!(decompress(COMP_ZLIB, &z, &mut out, &mut inf), Ok(LOGICAL));
        assert_eq!(out, data);
    }

    #[test]
    fn bounded_output() {
        let data = text();
        // One byte less room than the data need: refused, nothing beyond `out` touched.
        assert_eq!(
            run(COMP_LZ4, &lz4_framed(&data, 4096), LOGICAL - 1),
            Err(MediaError::Overflow)
        );
        assert_eq!(
            run(COMP_ZLIB, &zlib_framed(&data, 4096), LOGICAL - 1),
            Err(MediaError::Overflow)
        );
        assert_eq!(
            run(COMP_NONE, &data, LOGICAL - 1),
            Err(MediaError::Overflow)
        );
        // 128 KiB of zeros compresses to a few hundred bytes: still bounded to 64 KiB.
        let big = vec![0u8; 2 * LOGICAL];
        assert_eq!(
            run(COMP_LZ4, &lz4_framed(&big, 1024), LOGICAL),
            Err(MediaError::Overflow)
        );
        assert_eq!(
            run(COMP_ZLIB, &zlib_framed(&big, 1024), LOGICAL),
            Err(MediaError::Overflow)
        );
    }

    #[test]
    fn malformed_framing() {
        let data = text();
        let good = lz4_framed(&data, 4096);
        let mut neg = good.clone();
        neg[..4].copy_from_slice(&(-1i32).to_le_bytes());
        assert_eq!(
            run(COMP_LZ4, &neg, LOGICAL),
            Err(MediaError::Field("lz4 length"))
        );
        let mut long = good.clone();
        long[..4].copy_from_slice(&4093i32.to_le_bytes());
        assert_eq!(
            run(COMP_LZ4, &long, LOGICAL),
            Err(MediaError::Field("lz4 length"))
        );
        assert_eq!(run(COMP_LZ4, &good[..3], LOGICAL), Err(MediaError::Length));
        // A corrupt LZ4 body: a match offset pointing before the output's start.
        let mut bad = vec![0u8; 1024];
        bad[..4].copy_from_slice(&3i32.to_le_bytes());
        bad[4..7].copy_from_slice(&[0x0F, 0xFF, 0xFF]);
        assert_eq!(run(COMP_LZ4, &bad, LOGICAL), Err(MediaError::Decompress));
        // zlib: a wrong adler32, a stream cut short, not zlib at all.
        let z = miniz_oxide::deflate::compress_to_vec_zlib(&data, 6);
        let mut adler = z.clone();
        let last = adler.len() - 1;
        adler[last] ^= 1;
        assert_eq!(run(COMP_ZLIB, &adler, LOGICAL), Err(MediaError::Decompress));
        assert_eq!(
            run(COMP_ZLIB, &z[..z.len() / 2], LOGICAL),
            Err(MediaError::Decompress)
        );
        assert_eq!(
            run(COMP_ZLIB, &[0u8; 1024], LOGICAL),
            Err(MediaError::Decompress)
        );
        assert_eq!(run(4, &good, LOGICAL), Err(MediaError::CompMethod(4)));
    }

    #[test]
    fn random_inputs_never_panic() {
        let mut inf = Inflater::new().unwrap();
        let mut out = vec![0u8; LOGICAL];
        let mut x = 0x1234_5678_9abc_def0u64;
        for round in 0..2000 {
            let mut buf = vec![0u8; 64 + round % 1500];
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            if round % 2 == 0 {
                let len = (buf.len() - 4) as i32;
                buf[..4].copy_from_slice(&len.to_le_bytes());
            } else {
                buf[0] = 0x78;
                buf[1] = 0x9c;
            }
            for comp in [COMP_LZ4, COMP_ZLIB] {
                if let Ok(n) = decompress(comp, &buf, &mut out, &mut inf) {
                    assert!(n <= LOGICAL);
                }
            }
        }
    }
}
