//! Round trips of the sync-thread protocol on the host, for the kernel comparison of issue 5
//! (`make bench-kernel`): the C side times `kthread_park`+`kthread_unpark` and `kthread_stop` of
//! a plain kthread the same way and prints the ratios.

use core::time::Duration;

use hammer2_synchro::cluster::{Cluster, Role};
use hammer2_synchro::host::{self, Host};
use hammer2_synchro::thread::flags::ThreadFlags;
use hammer2_synchro::{Error, Result};

/// Most stop samples (their median is taken on the stack).
pub const MAX_STOPS: usize = 64;

/// What [`measure`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadBench {
    /// Mean of one freeze + unfreeze pair on an idle sync thread, each acknowledged.
    pub freeze_unfreeze_ns: u64,
    /// Median time to stop (and join) an idle sync thread.
    pub stop_ns: u64,
}

/// Wait (at most 10 s) until node 0's thread sleeps in its idle poll after a pass.
fn wait_idle(host: &dyn Host, c: &Cluster) -> Result<()> {
    let t0 = host.now_ns();
    while c.stats(0).passes == 0 || c.thread_flags(0) & ThreadFlags::WAITING.bits() == 0 {
        if host.now_ns() - t0 > 10_000_000_000 {
            return Err(Error::TimedOut);
        }
        host::sleep(host, Duration::from_millis(1));
    }
    Ok(())
}

/// Time `pairs` freeze+unfreeze round trips and `stops` (at most [`MAX_STOPS`]) stops of the
/// idle sync thread of a one-master cluster.
pub fn measure(host: &'static dyn Host, pairs: u32, stops: usize) -> Result<ThreadBench> {
    let stops = stops.clamp(1, MAX_STOPS);
    let c = Cluster::new(host, &[Role::Master])?;
    c.as_ref().thread_start(0)?;
    wait_idle(host, &c)?;
    let t0 = host.now_ns();
    for _ in 0..pairs {
        c.thread_freeze(0)?;
        c.thread_unfreeze(0)?;
    }
    let freeze_unfreeze_ns = (host.now_ns() - t0) / u64::from(pairs.max(1));
    c.thread_stop(0)?;
    let mut samples = [0u64; MAX_STOPS];
    for s in samples.iter_mut().take(stops) {
        c.as_ref().thread_start(0)?;
        wait_idle(host, &c)?;
        host::sleep(host, Duration::from_millis(5));
        let t = host.now_ns();
        c.thread_stop(0)?;
        *s = host.now_ns() - t;
    }
    let used = &mut samples[..stops];
    used.sort_unstable();
    Ok(ThreadBench {
        freeze_unfreeze_ns,
        stop_ns: used[stops / 2],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_positive_round_trips() {
        crate::testhost::ensure_init();
        let b = measure(&crate::host::KERNEL_HOST, 20, 3).unwrap();
        assert!(b.freeze_unfreeze_ns > 0 && b.stop_ns > 0, "{b:?}");
        // The stop of an idle thread must not wait out the 5 s idle poll.
        assert!(b.stop_ns < 2_000_000_000, "{b:?}");
    }
}
