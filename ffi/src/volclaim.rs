//! The module's one writing volume command at a time: `sync` and `blockcheck` both write to
//! devices, and two at once could interleave on one device (a `blockcheck` putting its scratch
//! bytes back over a header copy a `sync` just committed, two commits into one volume). A
//! second one fails at once as busy: a caller never waits.

use core::sync::atomic::{AtomicU8, Ordering};

/// Who holds the claim: 0 nobody, otherwise an index + 1 into [`NAMES`].
static HOLDER: AtomicU8 = AtomicU8::new(0);

/// The writing commands, as the busy message names them.
const NAMES: [&str; 2] = ["sync", "blockcheck"];

/// A writing volume command.
#[derive(Clone, Copy)]
pub(crate) enum Writer {
    /// `sync`.
    Sync = 1,
    /// `blockcheck`.
    BlockCheck = 2,
}

/// The module's claim on writing volumes, released when dropped.
pub(crate) struct Claim;

impl Claim {
    /// Claim writing volumes for `who`, or give the name of the command that holds them.
    pub(crate) fn take(who: Writer) -> Result<Claim, &'static str> {
        match HOLDER.compare_exchange(0, who as u8, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => Ok(Claim),
            Err(h) => Err(NAMES
                .get(usize::from(h).wrapping_sub(1))
                .copied()
                .unwrap_or("volume command")),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        HOLDER.store(0, Ordering::Release);
    }
}
