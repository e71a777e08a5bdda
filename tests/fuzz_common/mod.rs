//! A small deterministic fuzzing engine for stable Rust (cargo-fuzz needs nightly): xorshift
//! randomness, a checked-in seed corpus, byte-level mutations, and crash capture that saves
//! the failing input under `target/fuzz-crashes/` so it can be added to the corpus.
//!
//! Knobs (environment): `FUZZ_ITERS` (inputs per target), `FUZZ_SEED` (xorshift seed).

#![allow(dead_code)] // each fuzz test binary uses a subset

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// xorshift64*: deterministic, seedable, good enough to drive mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// `FUZZ_ITERS` or `default`.
pub fn iterations(default: usize) -> usize {
    std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `FUZZ_SEED` or a fixed seed, so a run is reproducible.
pub fn seed(default: u64) -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Every file of a corpus directory (relative to the crate), sorted by name.
pub fn corpus(dir: &str, ext: Option<&str>) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file() && ext.map_or(true, |x| p.extension().is_some_and(|e| e == x)))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("corpus file"))
        .collect()
}

const INTERESTING_BYTES: [u8; 12] = [0, 1, 2, 3, 9, 10, 16, 17, 0x3F, 0x7F, 0x80, 0xFF];
const INTERESTING_U64: [u64; 9] = [
    0,
    1,
    10,
    16,
    0x7FFF,
    0x8000_0000_0000_8000,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

/// Apply 1 to 8 random byte-level mutations to `buf`, taking splice material from `corpus`.
pub fn mutate(rng: &mut Rng, buf: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let n = 1 + rng.below(8);
    for _ in 0..n {
        let len = buf.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                buf[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                buf[i] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
            }
            2 if len > 0 => {
                let i = rng.below(len);
                buf[i] = rng.next() as u8;
            }
            3 if len >= 8 => {
                // An aligned little-endian u64 field.
                let i = rng.below(len / 8) * 8;
                let v = INTERESTING_U64[rng.below(INTERESTING_U64.len())];
                buf[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            4 if len > 0 => buf.truncate(rng.below(len)),
            5 => {
                let extra = rng.below(64);
                for _ in 0..extra {
                    buf.push(rng.next() as u8);
                }
            }
            6 if !corpus.is_empty() && len > 0 => {
                // Splice a run from another corpus item at the same offset.
                let other = &corpus[rng.below(corpus.len())];
                let start = rng.below(len);
                let run = rng.below(len - start + 1);
                let end = (start + run).min(other.len());
                if start < end {
                    buf[start..end].copy_from_slice(&other[start..end]);
                }
            }
            7 if len >= 256 => {
                // Copy one 128-byte block over another (blockrefs inside an inode's table).
                let blocks = len / 128;
                let (a, b) = (rng.below(blocks) * 128, rng.below(blocks) * 128);
                let tmp: Vec<u8> = buf[a..a + 128].to_vec();
                buf[b..b + 128].copy_from_slice(&tmp);
            }
            _ if len > 0 => {
                // Zero a run: many fields must be zero to be valid.
                let start = rng.below(len);
                let run = rng.below(32).min(len - start);
                buf[start..start + run].fill(0);
            }
            _ => {}
        }
    }
}

/// Random bytes of a random length up to `max`, or of one of `sizes`.
pub fn random_input(rng: &mut Rng, sizes: &[usize], max: usize) -> Vec<u8> {
    let len = if rng.chance(4) {
        rng.below(max + 1)
    } else {
        sizes[rng.below(sizes.len())]
    };
    (0..len).map(|_| rng.next() as u8).collect()
}

/// Run `target` on `input`; on a panic save the input and fail with where it is.
pub fn run_one(name: &str, iter: usize, input: &[u8], target: impl FnOnce(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{name}-{iter}.bin"));
        let _ = std::fs::write(&path, input);
        panic!("{name}: input {iter} panicked; saved to {}", path.display());
    }
}
