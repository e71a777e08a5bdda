//! What the bench ran on: CPU model, cores, memory, kernel.

use std::fs;

/// The machine description for the report.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub cpu: String,
    /// CPUs this process may use.
    pub nproc: usize,
    /// `MemTotal` in bytes.
    pub mem_total: u64,
    /// `MemAvailable` in bytes at start.
    pub mem_available: u64,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// The 1, 5 and 15 minute load averages at start (other work shares these CPUs).
    pub loadavg: String,
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
pub fn loadavg() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<&str> = text.split_whitespace().take(3).collect();
    if v.len() == 3 {
        v.join(" ")
    } else {
        "unknown".into()
    }
}

/// A `/proc/meminfo` field in bytes.
fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let rest = line.get(key.len()..)?.trim_start_matches(':').trim();
    let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

fn cpu_model(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// Bytes of memory available now (`MemAvailable`), 0 when unknown.
pub fn mem_available() -> u64 {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo_field(&text, "MemAvailable").unwrap_or(0)
}

impl Machine {
    /// Read the machine description from `/proc`.
    pub fn probe() -> Machine {
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            cpu: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_total: meminfo_field(&meminfo, "MemTotal").unwrap_or(0),
            mem_available: meminfo_field(&meminfo, "MemAvailable").unwrap_or(0),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            loadavg: loadavg(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        let mi = "MemTotal:       24000000 kB\nMemAvailable:   1000 kB\n";
        assert_eq!(meminfo_field(mi, "MemTotal"), Some(24_000_000 * 1024));
        assert_eq!(meminfo_field(mi, "MemAvailable"), Some(1_024_000));
        assert_eq!(meminfo_field(mi, "SwapTotal"), None);
        let ci = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: x\n";
        assert_eq!(cpu_model(ci).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("nothing"), None);
    }

    #[test]
    fn probe_sees_this_machine() {
        let m = Machine::probe();
        assert!(m.nproc >= 1);
        assert!(m.mem_total > 0);
    }
}
