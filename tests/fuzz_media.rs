//! Fuzzing the read side's codecs of today's HAMMER2 layout on stable Rust, from seeds the
//! project's own encoders make (see [`seeds`]; the real volumes stay outside the project): the
//! volume header (64 KiB;
//! mutations are re-sealed with correct CRCs half of the time so they reach the field rules),
//! DIRENT blockrefs and their heads, freemap blockrefs and bmap entries, and LZ4 / zlib data
//! blocks. No input may panic; a header
//! that decodes re-encodes to a header that decodes equal; decompression never produces more
//! than the 64 KiB logical block.
//!
//! `FUZZ_ITERS=200000 cargo test --release --test fuzz_media` runs a longer campaign.

mod fuzz_common;

use fuzz_common::{iterations, mutate, run_one, seed, Rng};
use hammer2_synchro::media::compress::{decompress, Inflater};
use hammer2_synchro::media::dirent::short_dirent;
use hammer2_synchro::media::freemap;
use hammer2_synchro::media::volhdr::{self, VOLUME_BYTES};
use hammer2_synchro::media::{
    dirhash, Blockref, DirentHead, VolumeHeader, BREF_BYTES, BREF_TYPE_DIRENT, BREF_TYPE_INODE,
    COMP_LZ4, COMP_NONE, COMP_ZLIB, DATA_BLOCK_BYTES, OBJTYPE_REGFILE,
};

/// A data block's stored bytes: `payload` zero padded to 1 KiB, HAMMER2's smallest block.
fn block(payload: &[u8]) -> Vec<u8> {
    let mut b = payload.to_vec();
    b.resize(b.len().next_multiple_of(1024), 0);
    b
}

/// The seed corpus, made with the project's encoders: a header's first 4 KiB (the rest is
/// zero on media but for the whole-header CRC at the end, recomputed by `header_of`), a DIRENT
/// with its name in the check area and one whose name lives in a data block, and one block of
/// each compression method as HAMMER2 frames them.
fn seeds() -> Vec<Vec<u8>> {
    let text: Vec<u8> = (0..3000u32)
        .flat_map(|i| format!("line {i} of a compressible HAMMER2 file\n").into_bytes())
        .take(DATA_BLOCK_BYTES / 4)
        .collect();
    // The super-root inode: 1 KiB (size radix 10) at the first block past the reserved area.
    let mut sroot = Blockref::new(BREF_TYPE_INODE, 0, 0);
    sroot.data_off = (4 << 20) | 10;
    let mut header = vec![0u8; VOLUME_BYTES];
    VolumeHeader::new_single(2 << 30, [7; 16], sroot, 42)
        .encode_into(&mut header)
        .expect("a 64 KiB buffer");
    header.truncate(4096);
    let short = short_dirent(dirhash(b"hello.txt"), 1025, OBJTYPE_REGFILE, b"hello.txt")
        .expect("a short name");
    let long_name = [b'n'; 200];
    let mut long = Blockref::new(BREF_TYPE_DIRENT, dirhash(&long_name), 0);
    long.embed = DirentHead {
        inum: 1026,
        namlen: 200,
        objtype: OBJTYPE_REGFILE,
    }
    .encode();
    let packed = lz4_flex::block::compress(&text);
    let mut lz4 = (packed.len() as i32).to_le_bytes().to_vec();
    lz4.extend_from_slice(&packed);
    let zlib = miniz_oxide::deflate::compress_to_vec_zlib(&text, 6);
    vec![
        header,
        short.encode().to_vec(),
        long.encode().to_vec(),
        block(&lz4),
        block(&zlib),
    ]
}

/// A header-sized buffer from `input` (zero padded), its CRCs recomputed when `seal`
/// (without, padding loses the whole-header CRC: the CRC-rejection paths).
fn header_of(input: &[u8], seal: bool) -> Vec<u8> {
    let mut h = input.to_vec();
    h.resize(VOLUME_BYTES, 0);
    if seal {
        volhdr::seal(&mut h).expect("a 64 KiB buffer");
    }
    h
}

#[derive(Default)]
struct Hits {
    header: usize,
    dirent: usize,
    data: usize,
}

fn exercise(input: &[u8], seal: bool, inf: &mut Inflater, out: &mut [u8], hits: &mut Hits) {
    if let Ok(h) = VolumeHeader::decode(&header_of(input, seal)) {
        hits.header += 1;
        let mut again = vec![0u8; VOLUME_BYTES];
        h.encode_into(&mut again).expect("a 64 KiB buffer");
        assert_eq!(VolumeHeader::decode(&again), Ok(h));
    }
    if let Some(raw) = input.get(..BREF_BYTES) {
        if let Ok(b) = freemap::decode_bref(raw) {
            assert_eq!(freemap::decode_bref(&b.encode()), Ok(b));
        }
        let m = freemap::BmapData::decode(raw).expect("any 128 bytes are a bmap entry");
        for g in 0..=freemap::GRANULES {
            let _ = m.granule(g);
        }
        if let Ok(b) = Blockref::decode(raw) {
            if let Ok(head) = DirentHead::decode(&b) {
                hits.dirent += 1;
                let block = [0u8; 1024];
                if let Ok(name) = head.name(&b, Some(&block)) {
                    assert_eq!(name.len(), usize::from(head.namlen));
                }
            }
        }
    }
    for comp in [COMP_LZ4, COMP_ZLIB, COMP_NONE] {
        if let Ok(n) = decompress(comp, input, out, inf) {
            assert!(n <= DATA_BLOCK_BYTES);
            if comp != COMP_NONE {
                hits.data += 1;
            }
        }
    }
}

#[test]
fn seeds_decode() {
    let seeds = seeds();
    let mut inf = Inflater::new().unwrap();
    let mut out = vec![0u8; DATA_BLOCK_BYTES];
    let mut hits = Hits::default();
    for s in &seeds {
        exercise(s, true, &mut inf, &mut out, &mut hits);
    }
    // The header, two dirents, an LZ4 and a zlib block.
    assert_eq!((hits.header, hits.dirent, hits.data), (1, 2, 2));
}

#[test]
fn mutated_inputs_never_panic() {
    let seeds = seeds();
    let mut rng = Rng::new(seed(0x6d65_6469_615f_667a));
    let iters = iterations(3_000);
    let mut inf = Inflater::new().unwrap();
    let mut out = vec![0u8; DATA_BLOCK_BYTES];
    let mut hits = Hits::default();
    for iter in 0..iters {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut input, &seeds);
        let seal = rng.chance(2);
        run_one("media", iter, &input, |i| {
            exercise(i, seal, &mut inf, &mut out, &mut hits)
        });
    }
    eprintln!(
        "{iters} inputs: {} headers, {} dirents, {} data blocks decoded",
        hits.header, hits.dirent, hits.data
    );
    // Mutations must keep reaching the success paths too.
    let floor = iters / 200;
    assert!(hits.header > floor, "header successes: {}", hits.header);
    assert!(hits.dirent > floor, "dirent successes: {}", hits.dirent);
    assert!(hits.data > floor, "data successes: {}", hits.data);
}
