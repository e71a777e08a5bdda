//! What is wrong with bytes read from HAMMER2 media: one variant per kind of fault, so a reader
//! can say exactly which field of which structure it refused.

use core::fmt;

use crate::Error;

/// A malformed or damaged on-media structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaError {
    /// Fewer (or more) bytes than the structure's size.
    Length,
    /// A volume header whose magic is not `HAMMER2_VOLUME_ID_HBO`.
    BadMagic,
    /// A volume header written in the other byte order (`HAMMER2_VOLUME_ID_ABO`), which
    /// HAMMER2 itself refuses to mount.
    SwappedMagic,
    /// A volume header CRC-32C that does not match: the named section.
    HeaderCrc(HeaderSect),
    /// A field outside the values HAMMER2 accepts (the field's C name).
    Field(&'static str),
    /// A block's check code does not match its bytes.
    CheckMismatch,
    /// A check method this port does not compute (SHA192, FREEMAP, unknown).
    CheckMethod(u8),
    /// A compression method this port does not read.
    CompMethod(u8),
    /// Compressed data that does not decode.
    Decompress,
    /// Decompressed data larger than the block's logical size.
    Overflow,
}

/// The three CRC-32C sections of a volume header (`HAMMER2_VOLUME_ICRC*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderSect {
    /// `icrc_sects[7]`: bytes 0x000..0x1FC.
    Sect0,
    /// `icrc_sects[6]`: the super-root blockset, bytes 0x200..0x400.
    Sect1,
    /// `icrc_volheader`: bytes 0x0000..0xFFFC.
    Whole,
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaError::Length => f.write_str("wrong length for the structure"),
            MediaError::BadMagic => f.write_str("bad volume header magic"),
            MediaError::SwappedMagic => f.write_str("volume header in the wrong byte order"),
            MediaError::HeaderCrc(s) => write!(f, "volume header CRC mismatch ({s:?})"),
            MediaError::Field(name) => write!(f, "invalid field `{name}`"),
            MediaError::CheckMismatch => f.write_str("check code mismatch"),
            MediaError::CheckMethod(m) => write!(f, "unsupported check method {m}"),
            MediaError::CompMethod(m) => write!(f, "unsupported compression method {m}"),
            MediaError::Decompress => f.write_str("compressed data do not decode"),
            MediaError::Overflow => f.write_str("decompressed data exceed the block size"),
        }
    }
}

impl From<MediaError> for Error {
    /// Damage (a check code or CRC that fails) is [`Error::Io`], as HAMMER2 reports it;
    /// everything malformed or unsupported is [`Error::Invalid`].
    fn from(e: MediaError) -> Error {
        match e {
            MediaError::CheckMismatch | MediaError::HeaderCrc(_) => Error::Io,
            _ => Error::Invalid,
        }
    }
}
