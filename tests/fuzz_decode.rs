//! Fuzzing the on-media decoders on stable Rust: a bounded number of random
//! and mutated inputs, from the seed corpus in `fuzz/corpus/decode/`, go through
//! `Blockref::decode`, `InodeMeta::decode` and `InodeData::decode`. No input may panic, and
//! every input that decodes must re-encode to exactly the same bytes (every byte of these
//! layouts is a field, so decoding loses nothing) and decode again to the same value.
//!
//! `FUZZ_ITERS=2000000 cargo test --release --test fuzz_decode` runs a longer campaign;
//! `FUZZ_SEED=n` varies it.

mod fuzz_common;

use fuzz_common::{corpus, iterations, mutate, random_input, run_one, seed, Rng};
use hammer2_synchro::media::{
    Blockref, InodeData, InodeMeta, BREF_BYTES, INODE_BYTES, INODE_META_BYTES, SET_COUNT,
};

#[derive(Default)]
struct Hits {
    bref: usize,
    meta: usize,
    inode: usize,
}

/// Every decoder on `bytes`, checking round-trip stability of what decodes.
fn decode_all(bytes: &[u8], hits: &mut Hits) {
    if let Ok(b) = Blockref::decode(bytes) {
        hits.bref += 1;
        assert_eq!(b.encode()[..], *bytes, "blockref re-encodes differently");
        assert_eq!(Blockref::decode(&b.encode()), Ok(b));
        assert!(b.validate().is_ok());
        // Accessors on validated values must not panic either.
        let _ = (
            b.key_end(),
            b.data_bytes(),
            b.overlaps(0, u64::MAX),
            b.bref_flags(),
        );
        let _ = b.verify_check(bytes);
    }
    if let Ok(m) = InodeMeta::decode(bytes) {
        hits.meta += 1;
        assert_eq!(m.encode()[..], *bytes, "inode meta re-encodes differently");
        assert_eq!(InodeMeta::decode(&m.encode()), Ok(m));
    }
    if let Ok(d) = InodeData::decode(bytes) {
        hits.inode += 1;
        assert_eq!(d.encode()[..], *bytes, "inode re-encodes differently");
        assert_eq!(InodeData::decode(&d.encode()), Ok(d));
        assert!(d.filename().len() <= 255);
        assert!(d.embedded_file().len() <= 512);
        if d.meta.is_directdata() {
            assert!(d.meta.size <= 512);
        } else {
            let set = d.blockset().expect("a decoded inode's block table decodes");
            assert_eq!(set.len(), SET_COUNT);
        }
    }
}

/// The whole input, plus the exact-size windows a real reader would cut from it, so that
/// mutations of longer inputs still reach the decoders' validation paths.
fn exercise(input: &[u8], hits: &mut Hits) {
    decode_all(input, hits);
    for size in [BREF_BYTES, INODE_META_BYTES, INODE_BYTES] {
        if input.len() > size {
            decode_all(&input[..size], hits);
        }
    }
    if input.len() >= INODE_BYTES {
        for chunk in input[0x200..INODE_BYTES].chunks_exact(BREF_BYTES) {
            decode_all(chunk, hits);
        }
    }
}

#[test]
fn corpus_decodes_and_round_trips() {
    let seeds = corpus("fuzz/corpus/decode", Some("bin"));
    assert!(seeds.len() >= 8, "seed corpus too small: {}", seeds.len());
    for s in &seeds {
        let mut hits = Hits::default();
        exercise(s, &mut hits);
        assert!(
            hits.bref + hits.meta + hits.inode > 0,
            "a seed that decodes nowhere: {} bytes",
            s.len()
        );
    }
}

#[test]
fn random_and_mutated_inputs_never_panic() {
    let seeds = corpus("fuzz/corpus/decode", Some("bin"));
    let mut rng = Rng::new(seed(0x4841_4d4d_4552_3221));
    let iters = iterations(200_000);
    let mut hits = Hits::default();
    for iter in 0..iters {
        let mut input = if rng.chance(5) {
            random_input(&mut rng, &[BREF_BYTES, INODE_META_BYTES, INODE_BYTES], 1100)
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        mutate(&mut rng, &mut input, &seeds);
        run_one("decode", iter, &input, |i| exercise(i, &mut hits));
    }
    eprintln!(
        "{iters} inputs: {} blockrefs, {} metas, {} inodes decoded",
        hits.bref, hits.meta, hits.inode
    );
    // The mutations must keep reaching the success paths, or the round-trip checks above
    // would check nothing.
    let floor = iters / 100;
    assert!(hits.bref > floor, "blockref successes: {}", hits.bref);
    assert!(hits.meta > floor, "meta successes: {}", hits.meta);
    assert!(hits.inode > floor / 2, "inode successes: {}", hits.inode);
}

/// Negative control: the harness does catch a decoder that panics on some input (here a
/// stand-in target that panics on a mutated inode type byte), and names the saved input.
#[test]
#[should_panic(expected = "input")]
fn harness_catches_a_panicking_target() {
    let seeds = corpus("fuzz/corpus/decode", Some("bin"));
    let mut rng = Rng::new(7);
    for iter in 0..100_000 {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut input, &seeds);
        run_one("control", iter, &input, |i| {
            if i.len() == INODE_BYTES && i[0x50] == 0xFF {
                panic!("planted bug");
            }
        });
    }
}
