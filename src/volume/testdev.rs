//! Unit-test support: an in-memory device and a small volume in today's layout built by
//! hand (fixture-independent), plus the reader's tests on it and on damaged copies of it.

use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::media::volhdr::VolumeHeader;
use crate::media::*;

/// A device in memory; reads past its end fail, and so does any read at `fail_at`. With
/// `high`, a sparse device of `high.0` bytes whose 64 KiB at `2 GiB` are `high.1` and whose
/// other bytes past `bytes` are zeros.
pub(crate) struct MemDev {
    pub bytes: Vec<u8>,
    pub fail_at: Option<u64>,
    pub high: Option<(u64, Vec<u8>)>,
}

impl BlockDev for MemDev {
    fn size(&self) -> u64 {
        self.high.as_ref().map_or(self.bytes.len() as u64, |h| h.0)
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> crate::Result<()> {
        if self.fail_at == Some(off) {
            return Err(Error::Io);
        }
        if let Some((size, zone1)) = &self.high {
            if off == volhdr::ZONE_BYTES && buf.len() == zone1.len() {
                buf.copy_from_slice(zone1);
                return Ok(());
            }
            if off >= self.bytes.len() as u64 && off + buf.len() as u64 <= *size {
                buf.fill(0);
                return Ok(());
            }
        }
        let start = usize::try_from(off).map_err(|_| Error::Io)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.bytes.get(start..end))
            .ok_or(Error::Io)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Builds an image: blocks are placed from 1 MiB up, never across 64 KiB.
pub(crate) struct Builder {
    pub img: Vec<u8>,
    next: u64,
}

/// Where the interesting blocks of [`sample`] landed, for tests that damage them.
pub(crate) struct Layout {
    pub file_data0: u64,
    pub long_name: u64,
    pub pfs_root: u64,
}

/// The content of [`sample`]'s file `/file` (140,000 bytes; 64 KiB..128 KiB is a hole).
pub(crate) fn file_bytes() -> Vec<u8> {
    let mut v: Vec<u8> = (0..140_000u32).map(|i| (i % 251) as u8).collect();
    v[65536..131072].fill(0);
    v
}

/// The 100-byte name of the hardlink in `/sub`.
pub(crate) const LONG: [u8; 100] = [b'L'; 100];

impl Builder {
    pub fn new(size: usize) -> Builder {
        Builder {
            img: vec![0; size],
            next: 1 << 20,
        }
    }

    /// Where the next block of `1 << radix` bytes will go.
    pub fn peek(&mut self, radix: u8) -> u64 {
        let len = 1u64 << radix;
        if self.next / 65536 != (self.next + len - 1) / 65536 {
            self.next = (self.next / 65536 + 1) * 65536;
        }
        self.next
    }

    /// Place `data` (padded to `1 << radix`) and return a blockref of `btype` to it.
    pub fn put(&mut self, btype: u8, key: u64, keybits: u8, radix: u8, data: &[u8]) -> Blockref {
        let len = 1u64 << radix;
        let off = self.peek(radix);
        self.next += len;
        let mut block = vec![0u8; len as usize];
        block[..data.len()].copy_from_slice(data);
        self.img[off as usize..(off + len) as usize].copy_from_slice(&block);
        let mut b = Blockref::new(btype, key, keybits);
        b.data_off = off | u64::from(radix);
        b.set_check(&block).unwrap();
        b
    }

    pub fn inode(&mut self, key: u64, d: &InodeData) -> Blockref {
        self.put(BREF_TYPE_INODE, key, 0, INODE_RADIX, &d.encode())
    }

    pub fn table(&mut self, key: u64, keybits: u8, radix: u8, brefs: &[Blockref]) -> Blockref {
        self.table_raw(key, keybits, radix, brefs, &|_, _| ())
    }

    /// [`Builder::table`] with `edit` applied to the encoded table first (it also gets the
    /// block's offset).
    pub fn table_raw(
        &mut self,
        key: u64,
        keybits: u8,
        radix: u8,
        brefs: &[Blockref],
        edit: &dyn Fn(&mut Vec<u8>, u64),
    ) -> Blockref {
        let mut raw: Vec<u8> = brefs.iter().flat_map(|b| b.encode()).collect();
        raw.resize(1 << radix, 0);
        let at = self.peek(radix);
        edit(&mut raw, at);
        self.put(BREF_TYPE_INDIRECT, key, keybits, radix, &raw)
    }

    /// Write header copy `zone` around `sroot`.
    pub fn header(&mut self, zone: usize, sroot: Blockref, tid: u64) {
        let h = VolumeHeader::new_single(self.img.len() as u64, [1; 16], sroot, tid);
        let at = volhdr::copy_offset(zone) as usize;
        h.encode_into(&mut self.img[at..at + volhdr::VOLUME_BYTES])
            .unwrap();
    }
}

pub(crate) fn inode(objtype: u8, inum: u64, name: &[u8]) -> InodeData {
    let mut m = InodeMeta::new(objtype, inum, 0o644);
    m.nlinks = 1;
    m.iparent = 1;
    InodeData::new(m, name).unwrap()
}

pub(crate) fn set(brefs: &[Blockref]) -> [Blockref; SET_COUNT] {
    let mut s = [Blockref::default(); SET_COUNT];
    s[..brefs.len()].copy_from_slice(brefs);
    s
}

/// An 8 MiB volume: PFS "DATA" with `/file` (LZ4 block, hole, raw short block, under an
/// indirect block; two names), `/link` (a DIRECTDATA symlink), `/sub/LLL…` (a 100-byte
/// name in a data block naming `/file`'s inode).
pub(crate) fn sample() -> (Vec<u8>, Layout) {
    sample_with(&|_, _| ())
}

/// [`sample`] with `edit` applied to the encoded indirect table of `/file` (two DATA
/// blockrefs; `edit` also gets the table's offset); every check code above stays right.
pub(crate) fn sample_with(edit: &dyn Fn(&mut Vec<u8>, u64)) -> (Vec<u8>, Layout) {
    let mut bld = Builder::new(8 << 20);
    let data = file_bytes();
    // Block 0: LZ4 as HAMMER2 frames it.
    let payload = lz4_flex::block::compress(&data[..65536]);
    let mut framed = (payload.len() as i32).to_le_bytes().to_vec();
    framed.extend_from_slice(&payload);
    let mut d0 = bld.put(BREF_TYPE_DATA, 0, 16, 12, &framed);
    d0.methods = enc_methods(CHECK_XXHASH64, COMP_LZ4);
    // Block 2: 8928 bytes stored raw in 16 KiB.
    let d2 = bld.put(BREF_TYPE_DATA, 131072, 16, 14, &data[131072..]);
    let ind = bld.table_raw(0, 23, 12, &[d0, d2], edit);
    let mut file = inode(OBJTYPE_REGFILE, 0x400, b"0x0000000000000400");
    file.meta.size = data.len() as u64;
    file.meta.nlinks = 2;
    file.set_blockset(&set(&[ind]));
    let file_b = bld.inode(0x400, &file);

    let mut link = inode(OBJTYPE_SOFTLINK, 0x401, b"0x0000000000000401");
    link.set_embedded_file(b"file").unwrap();
    let link_b = bld.inode(0x401, &link);

    let mut long = Blockref::new(BREF_TYPE_DIRENT, dirhash(&LONG) + 1, 0);
    long.embed = DirentHead {
        inum: 0x400,
        namlen: 100,
        objtype: OBJTYPE_REGFILE,
    }
    .encode();
    let name_block = bld.put(BREF_TYPE_DIRENT, 0, 0, 10, &LONG);
    long.data_off = name_block.data_off;
    long.check = name_block.check;
    let mut sub = inode(OBJTYPE_DIRECTORY, 0x402, b"0x0000000000000402");
    sub.set_blockset(&set(&[long]));
    let sub_b = bld.inode(0x402, &sub);

    let ent = |name: &[u8], inum, t| dirent::short_dirent(dirhash(name) + 1, inum, t, name);
    let mut dirents = [
        ent(b"file", 0x400, OBJTYPE_REGFILE).unwrap(),
        ent(b"link", 0x401, OBJTYPE_SOFTLINK).unwrap(),
        ent(b"sub", 0x402, OBJTYPE_DIRECTORY).unwrap(),
    ];
    dirents.sort_by_key(|b| b.key);
    let dir_ind = bld.table(DIRHASH_VISIBLE, 63, 12, &dirents);
    let mut root = inode(OBJTYPE_DIRECTORY, 1, b"DATA");
    root.meta.op_flags = OpFlags::PFSROOT.bits();
    root.meta.pfs_type = PFSTYPE_MASTER;
    root.set_blockset(&set(&[file_b, link_b, sub_b, dir_ind]));
    let root_b = bld.inode(dirhash(b"DATA"), &root);

    let mut sroot = inode(OBJTYPE_DIRECTORY, 0, b"SUPROOT");
    sroot.meta.pfs_type = PFSTYPE_SUPROOT;
    sroot.set_blockset(&set(&[root_b]));
    let sroot_b = bld.inode(0, &sroot);
    bld.header(0, sroot_b, 0x11);
    let layout = Layout {
        file_data0: d0.data_off & !0x3F,
        long_name: long.data_off & !0x3F,
        pfs_root: root_b.data_off & !0x3F,
    };
    (bld.img, layout)
}

/// Rewrite header copy 0 of `img` with `edit` applied.
pub(crate) fn edit_header(img: &mut [u8], edit: &dyn Fn(&mut VolumeHeader)) {
    let hdr = &mut img[..volhdr::VOLUME_BYTES];
    let mut h = VolumeHeader::decode(hdr).unwrap();
    edit(&mut h);
    h.encode_into(hdr).unwrap();
}

/// Where [`add_freemap`] puts the leaf: the first slot of GiB 0's reserved segment.
pub(crate) const LEAF_AT: u64 = 0x10000;

/// Give a [`sample`] image the freemap the kernel would write for it with `allocator_beg`
/// at 1 MiB (HAMMER2-MEDIA §10): one leaf for GiB 0 whose entry 0 (below `allocator_beg`
/// rounded up to 4 MiB, where every block of the sample lies) and entries past the
/// volume's end are all allocated, and entry 1 is free. `edit` changes the leaf's bytes
/// before its CRC is taken.
pub(crate) fn add_freemap(img: &mut [u8], edit: &dyn Fn(&mut [u8])) {
    use crate::media::freemap::*;
    let mut leaf = vec![0u8; FREEMAP_BLOCK_BYTES];
    for (n, e) in leaf.chunks_exact_mut(BMAP_BYTES).enumerate() {
        if n == 1 {
            e[0x1C..0x20].copy_from_slice(&(BMAP_SPAN as u32).to_le_bytes());
        } else {
            e[0..4].copy_from_slice(&(BMAP_SPAN as u32).to_le_bytes());
            e[0x40..].fill(0xFF);
        }
    }
    edit(&mut leaf);
    let at = LEAF_AT as usize;
    img[at..at + FREEMAP_BLOCK_BYTES].copy_from_slice(&leaf);
    let mut b = Blockref::new(BREF_TYPE_FREEMAP_LEAF, 0, LEAF_KEYBITS);
    b.methods = enc_methods(CHECK_FREEMAP, COMP_NONE);
    b.data_off = LEAF_AT | u64::from(FREEMAP_BLOCK_RADIX);
    b.check[..4].copy_from_slice(&check::crc32c(&leaf).to_le_bytes());
    b.check[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    b.check[8..16].copy_from_slice(&BMAP_SPAN.to_le_bytes());
    edit_header(img, &|h| {
        h.allocator_beg = 1 << 20;
        h.freemap_blockset[0] = b.encode();
    });
}

/// Give `f` `rounds` copies of `img`, each with four bytes damaged at offsets `pick` makes of
/// pseudo-random numbers (a xorshift64 sequence from `seed`).
pub(crate) fn each_damaged(
    img: &[u8],
    rounds: usize,
    mut seed: u64,
    pick: &dyn Fn(u64) -> usize,
    f: &mut dyn FnMut(Vec<u8>),
) {
    for _ in 0..rounds {
        let mut bad = img.to_vec();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bad[pick(seed)] ^= (seed >> 40) as u8 | 1;
        }
        f(bad);
    }
}

pub(crate) fn open(img: Vec<u8>) -> ReadResult<Volume<MemDev>> {
    Volume::open(MemDev {
        bytes: img,
        fail_at: None,
        high: None,
    })
}

fn contents(pfs: &Pfs, vol: &Volume<MemDev>, path: &[u8]) -> ReadResult<Vec<u8>> {
    let ino = pfs.resolve(vol, path)?;
    let mut out = Vec::new();
    pfs.read_file(vol, &ino, &mut |p| {
        out.extend_from_slice(p);
        Ok(())
    })?;
    Ok(out)
}

mod tests {
    use super::*;

    #[test]
    fn reads_the_sample() {
        let (img, _) = sample();
        let vol = open(img).unwrap();
        assert_eq!(vol.zone(), 0);
        let pfs = vol.pfs(b"DATA").unwrap();
        assert_eq!(vol.pfs(b"LOCAL").unwrap_err().cause, Cause::NotFound);
        let mut names = Vec::new();
        pfs.readdir(&vol, &pfs.root, &mut |e| {
            names.push((e.name.to_vec(), e.inum, e.objtype));
            Ok(Flow::Continue)
        })
        .unwrap();
        names.sort();
        assert_eq!(
            names,
            [
                (b"file".to_vec(), 0x400, OBJTYPE_REGFILE),
                (b"link".to_vec(), 0x401, OBJTYPE_SOFTLINK),
                (b"sub".to_vec(), 0x402, OBJTYPE_DIRECTORY)
            ]
        );
        assert_eq!(contents(&pfs, &vol, b"/file").unwrap(), file_bytes());
        let mut path = b"sub/".to_vec();
        path.extend_from_slice(&LONG);
        assert_eq!(contents(&pfs, &vol, &path).unwrap(), file_bytes());
        assert_eq!(pfs.resolve(&vol, &path).unwrap().meta.inum, 0x400);
        let link = pfs.resolve(&vol, b"link").unwrap();
        assert_eq!(pfs.readlink(&vol, &link).unwrap(), b"file");
        assert_eq!(
            pfs.resolve(&vol, b"nope").unwrap_err().cause,
            Cause::NotFound
        );
        assert_eq!(
            pfs.resolve(&vol, b"file/x").unwrap_err().cause,
            Cause::NotDir
        );
        let sub = pfs.resolve(&vol, b"sub").unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            pfs.read_file(&vol, &sub, &mut |p| {
                buf.extend_from_slice(p);
                Ok(())
            })
            .unwrap_err()
            .cause,
            Cause::NotFile
        );
        let r = vol.verify_all().unwrap();
        // super-root, DATA root, file, link, sub; two indirect blocks; two data blocks;
        // four dirents, one with its name in a block.
        assert_eq!(
            r,
            VerifyReport {
                inodes: 5,
                indirect: 2,
                data: 2,
                dirents: 4,
                name_blocks: 1
            }
        );
    }

    /// The pieces of `ino` as (data length, hole length) pairs, one of them zero.
    fn pieces(pfs: &Pfs, vol: &Volume<MemDev>, ino: &InodeData) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        pfs.read_pieces(vol, ino, &mut |p| {
            out.push(match p {
                Piece::Data(d) => (d.len(), 0),
                Piece::Hole(n) => (0, n),
            });
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn holes_are_reported_not_filled() {
        let (img, _) = sample();
        let vol = open(img).unwrap();
        let pfs = vol.pfs(b"DATA").unwrap();
        let mut file = pfs.resolve(&vol, b"file").unwrap();
        assert_eq!(
            pieces(&pfs, &vol, &file),
            [(65536, 0), (0, 65536), (140_000 - 131_072, 0)]
        );
        // A crafted size far past the last block: the tail is one hole, handed over at once
        // (a reader writing its zeros would need a petabyte).
        file.meta.size = 1 << 50;
        assert_eq!(
            pieces(&pfs, &vol, &file),
            [
                (65536, 0),
                (0, 65536),
                (65536, 0),
                (0, (1 << 50) - 3 * 65536)
            ]
        );
        // A file with no blocks at all is a single hole.
        file.set_blockset(&set(&[]));
        assert_eq!(pieces(&pfs, &vol, &file), [(0, 1 << 50)]);
        // DIRECTDATA is data, and directories are not files.
        let link = pfs.resolve(&vol, b"link").unwrap();
        assert_eq!(pieces(&pfs, &vol, &link), [(4, 0)]);
        let sub = pfs.resolve(&vol, b"sub").unwrap();
        let err = pfs.read_pieces(&vol, &sub, &mut |_| Ok(())).unwrap_err();
        assert_eq!(err.cause, Cause::NotFile);
    }

    #[test]
    fn names_unsafe_as_path_components_are_refused() {
        assert_eq!(check_name(b"file"), Ok(()));
        assert_eq!(check_name(b"..."), Ok(()));
        assert_eq!(check_name(&LONG), Ok(()));
        assert_eq!(check_name(b""), Err(BadName::Empty));
        assert_eq!(check_name(b"."), Err(BadName::Dot));
        assert_eq!(check_name(b".."), Err(BadName::Dot));
        assert_eq!(check_name(b"a/b"), Err(BadName::Slash));
        assert_eq!(check_name(b"/"), Err(BadName::Slash));
        assert_eq!(check_name(b"a\0b"), Err(BadName::Nul));
    }

    fn flip(img: &mut [u8], at: u64) {
        img[at as usize + 5] ^= 0x40;
    }

    #[test]
    fn damaged_blocks_are_errors_for_that_block() {
        let (mut img, l) = sample();
        flip(&mut img, l.file_data0);
        let vol = open(img).unwrap();
        let pfs = vol.pfs(b"DATA").unwrap();
        let e = contents(&pfs, &vol, b"file").unwrap_err();
        assert_eq!(e.cause, Cause::Media(MediaError::CheckMismatch));
        assert_eq!(e.at & !0x3F, l.file_data0);
        assert_eq!(Error::from(e), Error::Io);
        // The rest of the volume still reads.
        assert_eq!(contents(&pfs, &vol, b"link").unwrap(), b"file");
        assert_eq!(vol.verify_all().unwrap_err().at & !0x3F, l.file_data0);

        let (mut img, l) = sample();
        flip(&mut img, l.long_name);
        let vol = open(img).unwrap();
        let pfs = vol.pfs(b"DATA").unwrap();
        let sub = pfs.resolve(&vol, b"sub").unwrap();
        let e = pfs.readdir(&vol, &sub, &mut |_| Ok(Flow::Continue));
        assert_eq!(
            e.unwrap_err().cause,
            Cause::Media(MediaError::CheckMismatch)
        );

        let (mut img, l) = sample();
        flip(&mut img, l.pfs_root);
        let vol = open(img).unwrap();
        let e = vol.pfs(b"DATA").unwrap_err();
        assert_eq!(e.cause, Cause::Media(MediaError::CheckMismatch));
    }

    /// The sample with `/file`'s indirect table replaced by `brefs`.
    fn with_file_table(brefs: &[Blockref]) -> Volume<MemDev> {
        let raw: Vec<u8> = brefs.iter().flat_map(|b| b.encode()).collect();
        let (img, _) = sample_with(&|t, _| {
            t.fill(0);
            t[..raw.len()].copy_from_slice(&raw);
        });
        open(img).unwrap()
    }

    #[test]
    fn malformed_tables_are_refused() {
        let (img, _) = sample();
        let vol = open(img).unwrap();
        let pfs = vol.pfs(b"DATA").unwrap();
        let file = pfs.resolve(&vol, b"file").unwrap();
        let ind = file.blockset().unwrap()[0];
        let good = vol.read_table(&ind).unwrap();
        let (d0, d2) = (good[0], good[1]);

        let read = |vol: &Volume<MemDev>| {
            let pfs = vol.pfs(b"DATA").unwrap();
            let f = pfs.resolve(vol, b"file").unwrap();
            pfs.read_file(vol, &f, &mut |_| Ok(())).map_err(|e| e.cause)
        };
        assert_eq!(read(&with_file_table(&[d0, d2])), Ok(()));
        // Keys out of order.
        assert_eq!(read(&with_file_table(&[d2, d0])), Err(Cause::KeyOrder));
        // The same key twice.
        assert_eq!(read(&with_file_table(&[d0, d0])), Err(Cause::KeyOrder));
        // A key outside the indirect block's range (0..2^23).
        let mut far = d2;
        far.key = 1 << 23;
        assert_eq!(read(&with_file_table(&[d0, far])), Err(Cause::KeyOrder));
        // A block past the end of the volume; one crossing 64 KiB; one in the first 64 KiB.
        for off in [(16u64 << 20) | 14, 0x10_F000 | 14, 0x8000 | 10] {
            let mut b = d2;
            b.data_off = off;
            assert_eq!(
                read(&with_file_table(&[d0, b])),
                Err(Cause::OutOfRange),
                "{off:#x}"
            );
        }
        // An inode where data belong.
        let mut odd = d2;
        odd.btype = BREF_TYPE_INODE;
        odd.keybits = 0;
        odd.set_size_radix(INODE_RADIX);
        assert_eq!(
            read(&with_file_table(&[d0, odd])),
            Err(Cause::WrongType(BREF_TYPE_INODE))
        );
        // An indirect block that names itself (no check code, so it can): bounded by the
        // depth cap.
        let (img, _) = sample_with(&|t, at| {
            let mut selfref = Blockref::new(BREF_TYPE_INDIRECT, 0, 23);
            selfref.methods = enc_methods(CHECK_NONE, COMP_NONE);
            selfref.data_off = at | 12;
            t.fill(0);
            t[..128].copy_from_slice(&selfref.encode());
        });
        assert_eq!(read(&open(img).unwrap()), Err(Cause::TooDeep));
        // An undecodable entry.
        let (img, _) = sample_with(&|t, _| t[0] = 7);
        assert_eq!(read(&open(img).unwrap()), Err(Cause::BadBlockref));
    }

    #[test]
    fn header_choice_and_bad_devices() {
        // Valid copies at zones 0 and 1 of a 4 GiB device: the higher mirror_tid wins.
        let (mut img, _) = sample();
        let sroot = VolumeHeader::decode(&img[..65536]).unwrap().sroot_blockset[0];
        let size = 4u64 << 30;
        let mut h = VolumeHeader::new_single(size, [1; 16], sroot, 0x20);
        let mut zone1 = vec![0u8; 65536];
        h.encode_into(&mut zone1).unwrap();
        h.mirror_tid = 0x11;
        h.encode_into(&mut img[..65536]).unwrap();
        let dev = |img: &Vec<u8>, zone1: &Vec<u8>| MemDev {
            bytes: img.clone(),
            fail_at: None,
            high: Some((size, zone1.clone())),
        };
        let vol = Volume::open(dev(&img, &zone1)).unwrap();
        assert_eq!((vol.zone(), vol.header().mirror_tid), (1, 0x20));
        assert!(vol.pfs(b"DATA").is_ok());
        // Zone 1 damaged: zone 0 is used.
        zone1[0x100] ^= 1;
        let vol = Volume::open(dev(&img, &zone1)).unwrap();
        assert_eq!((vol.zone(), vol.header().mirror_tid), (0, 0x11));
        // Zone 0 damaged, zone 1 valid: zone 1 is used (no panic, unlike libhammer2).
        zone1[0x100] ^= 1;
        img[0x100] ^= 1;
        let vol = Volume::open(dev(&img, &zone1)).unwrap();
        assert_eq!(vol.zone(), 1);

        let (img, _) = sample();
        let mut bad = img.clone();
        bad[0] ^= 1;
        assert_eq!(
            open(bad).unwrap_err().cause,
            Cause::Media(MediaError::BadMagic)
        );
        // Truncated: the header claims more than the device holds.
        let mut short = img.clone();
        short.truncate(4 << 20);
        assert_eq!(
            open(short).unwrap_err().cause,
            Cause::Media(MediaError::Field("volu_size"))
        );
        let mut tiny = img.clone();
        tiny.truncate(1000);
        assert_eq!(
            open(tiny).unwrap_err().cause,
            Cause::Media(MediaError::Length)
        );
        // A device error on the header, then on a block.
        let dev = MemDev {
            bytes: img.clone(),
            fail_at: Some(0),
            high: None,
        };
        assert_eq!(
            Volume::open(dev).err().map(|e| e.cause),
            Some(Cause::Device(Error::Io))
        );
        let (_, l) = sample();
        let dev = MemDev {
            bytes: img,
            fail_at: Some(l.file_data0),
            high: None,
        };
        let vol = Volume::open(dev).unwrap();
        let pfs = vol.pfs(b"DATA").unwrap();
        let f = pfs.resolve(&vol, b"file").unwrap();
        assert_eq!(
            pfs.read_file(&vol, &f, &mut |_| Ok(())).unwrap_err().cause,
            Cause::Device(Error::Io)
        );
    }

    #[test]
    fn random_damage_never_panics() {
        let (img, _) = sample();
        // Damage the used part: the header and the blocks from 1 MiB.
        let pick = |x: u64| {
            if x & 1 == 0 {
                (x >> 8) as usize % 1024
            } else {
                (1 << 20) + (x >> 8) as usize % 65536
            }
        };
        each_damaged(&img, 300, 0x9E37_79B9_7F4A_7C15, &pick, &mut |bad| {
            if let Ok(vol) = open(bad) {
                let _ = vol.verify_all();
                if let Ok(pfs) = vol.pfs(b"DATA") {
                    let _ = contents(&pfs, &vol, b"file");
                    let _ = pfs.readdir(&vol, &pfs.root, &mut |_| Ok(Flow::Continue));
                }
            }
        });
    }
}

/// A sparse read-write device in memory (64 KiB chunks, unwritten bytes read as zeros);
/// with `fail_write_after`, every write after that many fails; with `fail_read_at`, every
/// read covering that byte fails.
pub(crate) struct SparseDev {
    pub size: u64,
    pub chunks: core::cell::RefCell<alloc::collections::BTreeMap<u64, Vec<u8>>>,
    pub writes: core::cell::Cell<u64>,
    pub fail_write_after: Option<u64>,
    pub fail_read_at: core::cell::Cell<Option<u64>>,
}

const CHUNK: u64 = 65536;

impl SparseDev {
    pub fn new(size: u64) -> SparseDev {
        SparseDev {
            size,
            chunks: Default::default(),
            writes: Default::default(),
            fail_write_after: None,
            fail_read_at: Default::default(),
        }
    }

    /// Flip one bit of the byte at `off`.
    pub fn flip(&self, off: u64) {
        let mut b = [0u8];
        self.read_at(off, &mut b).unwrap();
        b[0] ^= 1;
        self.put(off, &b);
    }

    fn put(&self, off: u64, buf: &[u8]) {
        let mut chunks = self.chunks.borrow_mut();
        let mut done = 0;
        while done < buf.len() {
            let at = off + done as u64;
            let inner = (at % CHUNK) as usize;
            let n = (CHUNK as usize - inner).min(buf.len() - done);
            let c = chunks
                .entry(at - at % CHUNK)
                .or_insert_with(|| vec![0; CHUNK as usize]);
            c[inner..inner + n].copy_from_slice(&buf[done..done + n]);
            done += n;
        }
    }
}

impl BlockDev for SparseDev {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> crate::Result<()> {
        if off + buf.len() as u64 > self.size {
            return Err(Error::Io);
        }
        if let Some(bad) = self.fail_read_at.get() {
            if (off..off + buf.len() as u64).contains(&bad) {
                return Err(Error::Io);
            }
        }
        let chunks = self.chunks.borrow();
        let mut done = 0;
        while done < buf.len() {
            let at = off + done as u64;
            let inner = (at % CHUNK) as usize;
            let n = (CHUNK as usize - inner).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match chunks.get(&(at - at % CHUNK)) {
                Some(c) => dst.copy_from_slice(&c[inner..inner + n]),
                None => dst.fill(0),
            }
            done += n;
        }
        Ok(())
    }
    fn write_at(&self, off: u64, buf: &[u8]) -> crate::Result<()> {
        if off + buf.len() as u64 > self.size {
            return Err(Error::Io);
        }
        let n = self.writes.get();
        if self.fail_write_after.is_some_and(|k| n >= k) {
            return Err(Error::Io);
        }
        self.writes.set(n + 1);
        self.put(off, buf);
        Ok(())
    }
    fn flush(&self) -> crate::Result<()> {
        Ok(())
    }
}

impl SparseDev {
    /// A copy of the device's bytes (not its fault settings).
    pub fn snapshot(&self) -> SparseDev {
        let d = SparseDev::new(self.size);
        *d.chunks.borrow_mut() = self.chunks.borrow().clone();
        d
    }
}

/// One operation [`LogDev`] recorded.
#[derive(Clone)]
pub(crate) enum Op {
    Write(u64, Vec<u8>),
    Flush,
}

/// A [`SparseDev`] that records every write and flush, so that every state a crash could
/// leave can be rebuilt after ([`each_crash`]).
pub(crate) struct LogDev {
    pub dev: SparseDev,
    pub log: core::cell::RefCell<Vec<Op>>,
}

impl LogDev {
    pub fn new(dev: SparseDev) -> LogDev {
        LogDev {
            dev,
            log: Default::default(),
        }
    }
}

impl BlockDev for LogDev {
    fn size(&self) -> u64 {
        self.dev.size
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> crate::Result<()> {
        self.dev.read_at(off, buf)
    }
    fn write_at(&self, off: u64, buf: &[u8]) -> crate::Result<()> {
        self.dev.write_at(off, buf)?;
        self.log.borrow_mut().push(Op::Write(off, buf.to_vec()));
        Ok(())
    }
    fn flush(&self) -> crate::Result<()> {
        self.log.borrow_mut().push(Op::Flush);
        Ok(())
    }
}

/// Call `f` on every device state a crash during `log` (run on `base`) may leave, as the
/// [`BlockDev`] contract allows: every write before the last flush that returned is
/// durable, any subset of the writes after it is (all subsets of up to 8 writes, else a
/// fixed sample), and the last write kept may be torn (its first half only). A crash just
/// before each flush, or at the end, covers every earlier crash point too.
pub(crate) fn each_crash(base: &SparseDev, log: &[Op], f: &mut dyn FnMut(&SparseDev)) {
    let durable = base.snapshot();
    let mut pending: Vec<(u64, &[u8])> = Vec::new();
    for op in log.iter().map(Some).chain([None]) {
        if matches!(op, Some(Op::Write(..))) {
            if let Some(Op::Write(off, bytes)) = op {
                pending.push((*off, bytes));
            }
            continue;
        }
        let n = pending.len();
        let mut subsets: Vec<u64> = if n <= 8 {
            (0..1u64 << n).collect()
        } else {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            let mut v = vec![0, u64::MAX];
            for _ in 0..32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x);
            }
            v
        };
        subsets.dedup();
        for mask in subsets {
            let kept: Vec<usize> = (0..n).filter(|&i| mask >> (i % 64) & 1 == 1).collect();
            for tear in [false, true] {
                if tear && kept.is_empty() {
                    continue;
                }
                let d = durable.snapshot();
                for (j, &i) in kept.iter().enumerate() {
                    let (off, bytes) = pending[i];
                    let len = if tear && j + 1 == kept.len() {
                        bytes.len() / 2
                    } else {
                        bytes.len()
                    };
                    d.put(off, &bytes[..len]);
                }
                f(&d);
            }
        }
        for (off, bytes) in pending.drain(..) {
            durable.put(off, bytes);
        }
    }
}

/// A fresh sparse volume of `size` bytes with one master PFS, `DATA`.
pub(crate) fn data_volume(size: u64) -> SparseDev {
    newfs_sparse(
        size,
        &[NewPfs {
            label: b"DATA",
            pfs_type: crate::media::PFSTYPE_MASTER,
            clid: [7; 16],
            fsid: [1; 16],
            nmasters: 1,
        }],
    )
}

/// A sparse device of `size` bytes holding a fresh volume with `pfs`, made by newfs with fixed
/// ids and time so every test's volume is the same.
pub(crate) fn newfs_sparse(size: u64, pfs: &[NewPfs<'_>]) -> SparseDev {
    let dev = SparseDev::new(size);
    newfs(
        &dev,
        &NewfsOptions {
            size,
            fsid: [9; 16],
            sroot_ids: ([3; 16], [4; 16]),
            pfs,
            now_us: 1_700_000_000_000_000,
        },
    )
    .unwrap();
    dev
}
