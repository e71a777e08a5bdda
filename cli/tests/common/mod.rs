//! Helpers the CLI's end-to-end tests share.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Run the CLI with `args`; it must succeed (its output is shown when it does not).
pub fn cli(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_hammer2-synchro"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh, empty scratch directory for test `name` of this process.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("h2cli-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// A generator of pseudo-random bytes (xorshift32) seeded by `seed`: each call returns the
/// next `n` bytes.
pub fn bytes(seed: u32) -> impl FnMut(usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    move |n| {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }
}
