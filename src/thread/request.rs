//! The requests a requester makes of a sync thread, named once for every front end: the
//! [`super::Threads`] protocol, the cluster, the scenario language and the C API.

/// One request to a running sync thread. Every request but [`Request::Signal`] returns only
/// once the thread acknowledged it; a request to a slot whose thread never started or has
/// stopped is a successful no-op, as in HAMMER2 (a thread reads the roles when it starts).
///
/// The discriminant is the request's value in the C API (`h2s_thread_op`); 0 is left to that
/// API's start, which is not a request (it makes the thread the requests go to).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `freeze`: stop passes; returns once the thread is frozen (it leaves a running pass
    /// within one chain operation).
    Freeze = 1,
    /// `unfreeze`: returns once the thread left the frozen state.
    Unfreeze = 2,
    /// `remaster`: re-read the roles and reset the sync state (`SyncWork::remaster`); returns
    /// once the reset ran. A frozen thread runs it too and stays frozen.
    Remaster = 3,
    /// `stop`: returns once the thread exited and was joined.
    Stop = 4,
    /// `signal`: wake the thread for a pass now (a frozen one runs it once unfrozen); does not
    /// wait for the pass.
    Signal = 5,
}

impl Request {
    /// Every request, in C-value order.
    pub const ALL: [Request; 5] = [
        Request::Freeze,
        Request::Unfreeze,
        Request::Remaster,
        Request::Stop,
        Request::Signal,
    ];

    /// The request's name: its command word in the scenario language and the test console.
    pub const fn name(self) -> &'static str {
        match self {
            Request::Freeze => "freeze",
            Request::Unfreeze => "unfreeze",
            Request::Remaster => "remaster",
            Request::Stop => "stop",
            Request::Signal => "signal",
        }
    }

    /// The request named `word`, if any.
    pub fn parse(word: &str) -> Option<Request> {
        Request::ALL.into_iter().find(|r| r.name() == word)
    }

    /// The request's C value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The request whose C value is `v`, if any.
    pub fn from_raw(v: u32) -> Option<Request> {
        Request::ALL.into_iter().find(|r| r.raw() == v)
    }
}

#[cfg(test)]
mod tests {
    use super::Request;

    #[test]
    fn names_and_c_values_round_trip() {
        for r in Request::ALL {
            assert_eq!(Request::parse(r.name()), Some(r));
            assert_eq!(Request::from_raw(r.raw()), Some(r));
        }
        assert_eq!(Request::parse("start"), None);
        assert_eq!(Request::parse("Freeze"), None);
        assert_eq!(Request::from_raw(0), None);
        assert_eq!(Request::from_raw(6), None);
        // The C values are ABI: they must never change.
        let raw: [u32; 5] = Request::ALL.map(Request::raw);
        assert_eq!(raw, [1, 2, 3, 4, 5]);
    }
}
