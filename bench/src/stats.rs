//! Small statistics and unit helpers for the report.

use std::time::Duration;

/// Nearest-rank percentile `p` (0..=100) of `samples` (any order); `None` when empty.
pub fn percentile(samples: &[u64], p: u32) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let n = v.len() as u64;
    // rank = ceil(p/100 * n), at least 1.
    let rank = (u64::from(p.min(100)) * n).div_ceil(100).max(1);
    v.get((rank - 1) as usize).copied()
}

/// Whole nanoseconds of a duration (saturating).
pub fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// A duration in seconds, with a unit that keeps 3 significant digits readable.
pub fn fmt_secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// Nanoseconds as a readable duration.
pub fn fmt_ns(n: u64) -> String {
    fmt_secs(n as f64 / 1e9)
}

/// Bytes as KiB/MiB/GiB.
pub fn fmt_bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let f = b as f64;
    if f >= K * K * K {
        format!("{:.2} GiB", f / (K * K * K))
    } else if f >= K * K {
        format!("{:.2} MiB", f / (K * K))
    } else if f >= K {
        format!("{:.1} KiB", f / K)
    } else {
        format!("{b} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 99), Some(99));
        assert_eq!(percentile(&v, 100), Some(100));
        assert_eq!(percentile(&v, 0), Some(1));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
        // 3 samples: p50 is the 2nd, p99 the 3rd.
        assert_eq!(percentile(&[30, 10, 20], 50), Some(20));
        assert_eq!(percentile(&[30, 10, 20], 99), Some(30));
    }

    #[test]
    fn units() {
        assert_eq!(fmt_secs(2.5), "2.500 s");
        assert_eq!(fmt_secs(0.0025), "2.500 ms");
        assert_eq!(fmt_secs(0.0000025), "2.5 µs");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(4 << 20), "4.00 MiB");
        assert_eq!(ns(Duration::from_micros(3)), 3000);
    }
}
