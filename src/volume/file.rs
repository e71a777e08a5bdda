//! An image file or block device as a [`BlockDev`] (userland, feature `std`): what the CLI
//! and the bench put volumes on.

use std::ffi::{c_int, c_void};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::BlockDev;
use crate::{Error, Result};

extern "C" {
    /// POSIX `pread` with 64-bit offsets: glibc names it `pread64` (musl's `pread` takes a
    /// 64-bit `off_t` already).
    #[cfg_attr(all(target_os = "linux", target_env = "gnu"), link_name = "pread64")]
    fn pread(fd: c_int, buf: *mut c_void, count: usize, offset: i64) -> isize;
}

/// An open image file or block device, its size fixed when it was opened.
pub struct FileDev {
    file: File,
    size: u64,
}

impl FileDev {
    /// Open `path` read-only.
    pub fn open(path: &Path) -> io::Result<FileDev> {
        FileDev::sized(File::open(path)?)
    }

    /// Open `path` for reading and writing.
    pub fn open_rw(path: &Path) -> io::Result<FileDev> {
        FileDev::sized(OpenOptions::new().read(true).write(true).open(path)?)
    }

    /// Create (or truncate) `path` as a sparse file of `size` bytes, open for reading and
    /// writing.
    pub fn create(path: &Path, size: u64) -> io::Result<FileDev> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(size)?;
        Ok(FileDev { file, size })
    }

    /// A second handle on the same device (a duplicated descriptor): a reader on other
    /// threads (a store's payload source) while the volume keeps this one.
    pub fn try_clone(&self) -> io::Result<FileDev> {
        Ok(FileDev {
            file: self.file.try_clone()?,
            size: self.size,
        })
    }

    fn sized(mut file: File) -> io::Result<FileDev> {
        // A block device's metadata says 0 bytes: its size is where a seek to the end lands.
        let size = file.seek(SeekFrom::End(0))?;
        Ok(FileDev { file, size })
    }
}

impl AsRawFd for FileDev {
    /// The open descriptor, for what a host does beside the block I/O (an advisory lock);
    /// the device keeps it open.
    fn as_raw_fd(&self) -> std::os::unix::io::RawFd {
        self.file.as_raw_fd()
    }
}

impl BlockDev for FileDev {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, off).map_err(|_| Error::Io)
    }
    fn read_new(&self, off: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        // `read_exact_at` wants initialized bytes: clearing the room first would cost a pass
        // over it as long as the kernel's copy. `pread` fills memory never written.
        if !buf.is_empty() || buf.capacity() < len {
            return Err(Error::Invalid);
        }
        let mut done = 0;
        while done < len {
            let at = off
                .checked_add(done as u64)
                .and_then(|at| i64::try_from(at).ok())
                .ok_or(Error::Io)?;
            // SAFETY: the buffer has room for `len` bytes (checked above), so `done .. len` is
            // writable memory the vector owns; `pread` writes at most `len - done` bytes there
            // and reads nothing from it.
            let n = unsafe {
                pread(
                    self.file.as_raw_fd(),
                    buf.as_mut_ptr().add(done).cast(),
                    len - done,
                    at,
                )
            };
            match usize::try_from(n) {
                // The end of the file before the bytes asked for, as `read_exact_at` fails.
                Ok(0) => return Err(Error::Io),
                Ok(n) => done += n.min(len - done),
                Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Error::Io),
            }
        }
        // SAFETY: `pread` wrote every byte of `0 .. len` (the loop ends only with `done` at
        // `len`), within the capacity checked.
        unsafe { buf.set_len(len) };
        Ok(())
    }
    fn write_at(&self, off: u64, buf: &[u8]) -> Result<()> {
        self.file
            .write_all_at(buf, off)
            .map_err(|e| match e.kind() {
                io::ErrorKind::StorageFull => Error::NoSpace,
                _ => Error::Io,
            })
    }
    fn flush(&self) -> Result<()> {
        self.file.sync_data().map_err(|_| Error::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_dev_reads_back_what_it_wrote_and_keeps_its_size() {
        let path = std::env::temp_dir().join(format!("h2s-filedev-{}", std::process::id()));
        let dev = FileDev::create(&path, 1 << 20).unwrap();
        assert_eq!(dev.size(), 1 << 20);
        dev.write_at(4096, b"hammer2").unwrap();
        dev.flush().unwrap();
        drop(dev);
        let dev = FileDev::open(&path).unwrap();
        assert_eq!(dev.size(), 1 << 20);
        let mut buf = [0u8; 7];
        dev.read_at(4096, &mut buf).unwrap();
        assert_eq!(&buf, b"hammer2");
        // Past the end is an I/O error, not a short read of zeros.
        assert_eq!(dev.read_at((1 << 20) - 3, &mut buf), Err(Error::Io));
        // A read-only device refuses writes.
        assert_eq!(dev.write_at(0, b"x"), Err(Error::Io));
        let _ = std::fs::remove_file(&path);
    }

    fn read_new(dev: &FileDev, off: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len);
        dev.read_new(off, len, &mut buf).map(|()| buf)
    }

    #[test]
    fn file_dev_reads_new_buffers_exactly() {
        let path = std::env::temp_dir().join(format!("h2s-filedev-new-{}", std::process::id()));
        let dev = FileDev::create(&path, 1 << 20).unwrap();
        let block: Vec<u8> = (0..65536u32).map(|i| (i * 7 + i / 251) as u8).collect();
        dev.write_at(65536, &block).unwrap();
        for len in [1usize, 1024, 4096 + 3, 65536] {
            // Freed memory full of other bytes, which the allocator may hand out again.
            drop(std::hint::black_box(vec![0xa5u8; len]));
            let got = read_new(&dev, 65536, len).unwrap();
            assert_eq!(got.len(), len);
            assert_eq!(got, block[..len]);
        }
        // The unwritten part of a sparse file reads as zeros.
        assert_eq!(read_new(&dev, 0, 4096).unwrap(), vec![0u8; 4096]);
        // Past the end is an I/O error, as for `read_at`.
        assert_eq!(read_new(&dev, (1 << 20) - 3, 7), Err(Error::Io));
        assert_eq!(read_new(&dev, u64::MAX - 1, 7), Err(Error::Io));
        // Room short, or a buffer not empty: refused, nothing allocated.
        let mut short = Vec::with_capacity(10);
        assert_eq!(dev.read_new(0, 11, &mut short), Err(Error::Invalid));
        let mut full = vec![1u8; 1];
        full.reserve(64);
        assert_eq!(dev.read_new(0, 8, &mut full), Err(Error::Invalid));
        let _ = std::fs::remove_file(&path);
    }
}
