//! The sync-thread side of the kernel round-trip benchmark (`make bench-kernel`): a one-master
//! cluster whose idle sync thread the C side freezes, unfreezes, stops and restarts one round
//! trip at a time, timing each call itself so that these round trips and the `kthread_park` /
//! `kthread_unpark` / `kthread_stop` baselines go through the same clock, in interleaved batches.

use core::pin::Pin;
use core::time::Duration;

use alloc::boxed::Box;

use hammer2_synchro::cluster::Cluster;
use hammer2_synchro::host::{self, Host};
use hammer2_synchro::role::Role;
use hammer2_synchro::thread::flags::ThreadFlags;
use hammer2_synchro::thread::Request;
use hammer2_synchro::{Error, Result};

/// A cluster whose node 0 runs the sync thread the round trips act on.
pub struct BenchSession {
    host: &'static dyn Host,
    cluster: Pin<Box<Cluster>>,
}

/// How long a restarted thread is left idle before a stop is timed, so that the stop finds it
/// in its idle sleep like the baseline kthread.
const SETTLE: Duration = Duration::from_millis(2);

impl BenchSession {
    /// A one-master cluster with its sync thread started and idle.
    pub fn open(host: &'static dyn Host) -> Result<Self> {
        let cluster = Cluster::new(host, &[Role::Master])?;
        let s = BenchSession { host, cluster };
        s.start()?;
        Ok(s)
    }

    /// Start the sync thread (after a [`BenchSession::stop`]) and wait until it is idle.
    pub fn start(&self) -> Result<()> {
        self.cluster.as_ref().thread_start(0)?;
        self.wait_idle()
    }

    /// Wait (at most 10 s) until the thread finished a pass and sleeps in its idle poll, then
    /// let it settle there.
    fn wait_idle(&self) -> Result<()> {
        let c = &self.cluster;
        let t0 = self.host.now_ns();
        while c.stats(0).passes == 0 || c.thread_flags(0) & ThreadFlags::WAITING.bits() == 0 {
            if self.host.now_ns() - t0 > 10_000_000_000 {
                return Err(Error::TimedOut);
            }
            host::sleep(self.host, Duration::from_millis(1));
        }
        host::sleep(self.host, SETTLE);
        Ok(())
    }

    /// One freeze + unfreeze round trip, each acknowledged.
    pub fn freeze_unfreeze(&self) -> Result<()> {
        self.cluster.thread_request(0, Request::Freeze)?;
        self.cluster.thread_request(0, Request::Unfreeze)
    }

    /// Stop the thread and join it.
    pub fn stop(&self) -> Result<()> {
        self.cluster.thread_request(0, Request::Stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_on_a_session() {
        crate::testhost::ensure_init();
        let s = BenchSession::open(&crate::host::KERNEL_HOST).unwrap();
        for _ in 0..20 {
            s.freeze_unfreeze().unwrap();
        }
        let t = s.host.now_ns();
        s.stop().unwrap();
        // The stop of an idle thread must not wait out the 5 s idle poll.
        assert!(s.host.now_ns() - t < 2_000_000_000);
        // Stopped: requests are no-ops instead of waits.
        let t = s.host.now_ns();
        assert_eq!(s.freeze_unfreeze(), Ok(()));
        assert!(s.host.now_ns() - t < 2_000_000_000);
        s.start().unwrap();
        s.freeze_unfreeze().unwrap();
        s.stop().unwrap();
    }
}
