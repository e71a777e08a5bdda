//! The one error type of the core, with the errno each maps to on a kernel host.

use core::fmt;

/// Result with the core's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

/// Every failure the core reports. Kernel hosts return `-errno()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Allocation failed (ENOMEM). Nothing was changed by the failing operation.
    NoMem,
    /// A node's read or write failed (EIO).
    Io,
    /// Too many deferrals: sync the deferred inodes and call again (EAGAIN).
    Again,
    /// Interrupted by a thread request, or masters still scanning (EINPROGRESS).
    InProgress,
    /// No such key, path or object (ENOENT).
    NotFound,
    /// Already exists (EEXIST).
    Exists,
    /// A path component is not a directory (ENOTDIR).
    NotDir,
    /// Is a directory where a file was needed (EISDIR).
    IsDir,
    /// Malformed input: bad bytes, bad argument, bad handle (EINVAL).
    Invalid,
    /// Masters hold the key but disagree: no quorum is possible (EDEADLK).
    Deadlock,
    /// Fewer than a quorum of masters hold the key (ESRCH).
    NoQuorum,
    /// The object is busy (EBUSY), e.g. a thread already running.
    Busy,
    /// Input larger than a bound allows (E2BIG).
    TooBig,
    /// Timed out waiting (ETIMEDOUT).
    TimedOut,
    /// The run was told to stop by its host, e.g. its process was killed (EINTR).
    Interrupted,
    /// No space left on a volume (ENOSPC). Nothing committed was changed.
    NoSpace,
    /// A write to a device opened read-only (EROFS).
    ReadOnly,
}

impl Error {
    /// The Linux errno (positive) for this error.
    pub const fn errno(self) -> i32 {
        match self {
            Error::NoMem => 12,
            Error::Io => 5,
            Error::Again => 11,
            Error::InProgress => 115,
            Error::NotFound => 2,
            Error::Exists => 17,
            Error::NotDir => 20,
            Error::IsDir => 21,
            Error::Invalid => 22,
            Error::Deadlock => 35,
            Error::NoQuorum => 3,
            Error::Busy => 16,
            Error::TooBig => 7,
            Error::TimedOut => 110,
            Error::Interrupted => 4,
            Error::NoSpace => 28,
            Error::ReadOnly => 30,
        }
    }

    /// A short lower-case description, as used in scenario output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Error::NoMem => "out of memory",
            Error::Io => "i/o error",
            Error::Again => "try again",
            Error::InProgress => "in progress",
            Error::NotFound => "not found",
            Error::Exists => "already exists",
            Error::NotDir => "not a directory",
            Error::IsDir => "is a directory",
            Error::Invalid => "invalid argument",
            Error::Deadlock => "no quorum possible",
            Error::NoQuorum => "no quorum",
            Error::Busy => "busy",
            Error::TooBig => "too big",
            Error::TimedOut => "timed out",
            Error::Interrupted => "interrupted",
            Error::NoSpace => "no space left",
            Error::ReadOnly => "read-only device",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<alloc::collections::TryReserveError> for Error {
    fn from(_: alloc::collections::TryReserveError) -> Self {
        Error::NoMem
    }
}
