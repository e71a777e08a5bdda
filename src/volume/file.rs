//! An image file or block device as a [`BlockDev`] (userland, feature `std`): what the CLI
//! and the bench put volumes on.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::BlockDev;
use crate::{Error, Result};

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

impl BlockDev for FileDev {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.file.read_exact_at(buf, off).map_err(|_| Error::Io)
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
}
