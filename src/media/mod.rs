//! HAMMER2 on-media types and constants (`hammer2_disk.h`), HAMMER2-FACTS §4.
//!
//! - [`consts`]: block reference / object / PFS types, flag sets, keys, methods, radixes;
//! - [`Blockref`] (128 bytes), [`InodeMeta`] (256), [`InodeData`] (1024): `#[repr(C)]` with the
//!   on-media offsets asserted at compile time, encoded and decoded field by field
//!   (little-endian); decoding validates and never panics;
//! - [`check`]: check codes (CRC-32C, XXH64) of block payloads;
//! - [`dirhash()`]: the directory-entry key of a name;
//! - [`VolumeHeader`] (64 KiB, [`volhdr`]): fields, CRC sections, the choice of header copy;
//! - [`DirentHead`] ([`dirent`]): today's directory entries;
//! - [`freemap`]: the freemap's blockrefs and bitmaps (`hammer2_bmap_data`);
//! - [`indkey`]: the key range of the indirect block a full table gets;
//! - [`compress`]: HAMMER2's LZ4 and zlib framing of data blocks, bounded decoding;
//! - [`MediaError`]: what exactly is wrong with bytes read from media.

pub mod bref;
pub mod check;
pub mod compress;
pub mod consts;
pub mod dirent;
pub mod dirhash;
pub mod error;
pub mod freemap;
pub mod indkey;
pub mod inode;
pub mod volhdr;

pub use bref::{key_end, Blockref};
pub use consts::*;
pub use dirent::DirentHead;
pub use dirhash::dirhash;
pub use error::MediaError;
pub use inode::{InodeData, InodeMeta};
pub use volhdr::VolumeHeader;

/// Panic-free little-endian byte access at fixed offsets. Decoders check the total length
/// first, so the bounds checks here only guard against a layout mistake, never fire on input.
mod le {
    /// `K` bytes of `buf` at `off` (zeros for any part out of range).
    pub(super) fn get<const K: usize>(buf: &[u8], off: usize) -> [u8; K] {
        let mut out = [0u8; K];
        if let Some(src) = off.checked_add(K).and_then(|end| buf.get(off..end)) {
            out.copy_from_slice(src);
        }
        out
    }

    /// Write `src` into `buf` at `off` (nothing if out of range).
    pub(super) fn put(buf: &mut [u8], off: usize, src: &[u8]) {
        if let Some(dst) = off
            .checked_add(src.len())
            .and_then(|end| buf.get_mut(off..end))
        {
            dst.copy_from_slice(src);
        }
    }
}
