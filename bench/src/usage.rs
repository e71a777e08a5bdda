//! What the process took from the kernel over a measured span: minor page faults and CPU time,
//! from Linux's `/proc/self/stat` (all threads of the process).

use std::time::Duration;

/// `/proc/self/stat` counts CPU time in clock ticks of `USER_HZ`, 100 on every Linux the bench
/// runs on (x86 and arm64 fix it there).
const TICK: Duration = Duration::from_millis(10);

/// Counters of the whole process at one moment, or their difference over a span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Minor page faults: every first touch of a fresh anonymous page is one.
    pub faults: u64,
    /// CPU time in user mode.
    pub user: Duration,
    /// CPU time in the kernel (on a first touch of fresh memory, mostly clearing pages).
    pub sys: Duration,
}

impl Usage {
    /// The process's counters now, None where `/proc/self/stat` cannot be read.
    pub fn now() -> Option<Usage> {
        parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// What the process took since `before` (a [`Usage::now`] reading), None if either is.
    pub fn since(before: Option<Usage>) -> Option<Usage> {
        let (b, n) = (before?, Usage::now()?);
        Some(Usage {
            faults: n.faults.saturating_sub(b.faults),
            user: n.user.saturating_sub(b.user),
            sys: n.sys.saturating_sub(b.sys),
        })
    }
}

/// Fields after the parenthesized command name (which may hold spaces): state is the first,
/// minflt the 8th, utime the 12th and stime the 13th.
fn parse(stat: &str) -> Option<Usage> {
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let num = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let ticks = |i: usize| Some(TICK * u32::try_from(num(i)?).ok()?);
    Some(Usage {
        faults: num(7)?,
        user: ticks(11)?,
        sys: ticks(12)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let line = "42 (a b) c) R 1 42 42 0 -1 4194560 1234 0 5 0 250 30 0 0 20 0 9 0 7 0";
        assert_eq!(
            parse(line),
            Some(Usage {
                faults: 1234,
                user: Duration::from_millis(2500),
                sys: Duration::from_millis(300),
            })
        );
        assert_eq!(parse("42 (x) R 1"), None);
    }

    #[test]
    fn fresh_pages_show_as_faults() {
        let before = Usage::now();
        let mut v = vec![0u8; 16 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        std::hint::black_box(&mut v);
        let u = Usage::since(before).expect("/proc/self/stat is readable on Linux");
        assert!(u.faults >= 4096 / 2, "{u:?}");
    }
}
