//! Focus selection by a quorum of masters (`hammer2_cluster_check`) and cluster status words
//! (HAMMER2-FACTS §2).
//!
//! Quorum rule: `nquorum = max(recorded_nmasters, visible masters) / 2 + 1`. Every node with
//! role [`Role::Master`] in the slice is a visible master, whatever its answer; only masters
//! that answered [`NodeAnswer::Holds`] vote. Two disjoint sets of more than half the masters
//! cannot exist, so at most one TID can reach quorum: the search from the highest TID down
//! finds it if it exists.

use bitflags::bitflags;

use crate::role::Role;
use crate::Error;

/// What one node answers for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAnswer {
    /// Not asked (`xop_start_except`: the node being synchronized). Still counts toward
    /// `pfs_nmasters` when it is a master, but never votes.
    Excluded,
    /// Still scanning: may yet answer.
    Pending,
    /// Scanned and does not hold the key.
    Absent,
    /// Holds the key with this modify_tid.
    Holds(u64),
    /// Its read failed (EIO): it counts as errored, never as absent.
    Failed,
}

/// One node's role and answer; the slice index is the node index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Voter {
    /// The node's role.
    pub role: Role,
    /// The node's answer.
    pub answer: NodeAnswer,
}

/// The outcome of a quorum check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumResult {
    /// A quorum agrees: the focus node and its modify_tid.
    Focus {
        /// Index of the focus node.
        node: usize,
        /// The agreed transaction id.
        tid: u64,
    },
    /// No focus: `InProgress` (masters still scanning could reach quorum), `NoQuorum` (ESRCH:
    /// fewer than a quorum hold the key), `Deadlock` (EDEADLK: they hold it but disagree), or
    /// `Io` (failed masters could decide it: neither absence nor disagreement is proven).
    None(crate::Error),
}

/// Counts over the masters of one answer set.
struct Tally {
    /// Visible masters (any answer).
    visible: usize,
    /// The quorum size.
    nquorum: usize,
    /// Masters still scanning.
    pending: usize,
    /// Masters whose read failed.
    failed: usize,
    /// Masters holding the key (any TID).
    holders: usize,
}

impl Tally {
    fn new(voters: &[Voter], recorded_nmasters: u8) -> Tally {
        let mut t = Tally {
            visible: 0,
            nquorum: 0,
            pending: 0,
            failed: 0,
            holders: 0,
        };
        for v in voters.iter().filter(|v| v.role == Role::Master) {
            t.visible += 1;
            match v.answer {
                NodeAnswer::Pending => t.pending += 1,
                NodeAnswer::Failed => t.failed += 1,
                NodeAnswer::Holds(_) => t.holders += 1,
                NodeAnswer::Excluded | NodeAnswer::Absent => {}
            }
        }
        t.nquorum = t.visible.max(usize::from(recorded_nmasters)) / 2 + 1;
        t
    }
}

/// The TID a master votes for, if it votes.
fn vote(v: &Voter) -> Option<u64> {
    match (v.role, v.answer) {
        (Role::Master, NodeAnswer::Holds(tid)) => Some(tid),
        _ => None,
    }
}

/// Choose the focus among `voters` (HAMMER2-FACTS §2). `recorded_nmasters` is the PFS root's
/// recorded master count; the quorum uses the larger of it and the visible masters.
///
/// - Candidates are the TIDs voting masters hold, tried from the highest down; the first one
///   held by `nquorum` masters wins, and the focus is the lowest-indexed master holding it.
/// - Otherwise, in this order: `InProgress` if the best candidate's count plus the pending
///   masters reaches the quorum (pending masters could still decide it); `Io` if counting the
///   failed masters too would reach it (a failed read must never read as "absent", so nothing
///   may be destroyed or stamped on this answer); `NoQuorum` if fewer than a quorum of masters
///   hold the key at all; `Deadlock` if enough hold it but disagree.
///
/// Slaves, soft masters/slaves and caches never vote and never focus; an excluded master
/// raises the quorum but does not vote; a failed master raises it and never votes.
pub fn check(voters: &[Voter], recorded_nmasters: u8) -> QuorumResult {
    let tally = Tally::new(voters, recorded_nmasters);
    // DEVIATION (bug 11): the seed kept `quorum_tid` and the agreement count across retries,
    // so with masters at 10, 5, 5 it re-selected 10 forever, and it could keep a focus from an
    // earlier TID. Here each round takes the highest TID strictly below the previous
    // candidate (so at most one round per distinct TID), recounts from zero, and the focus is
    // chosen only among masters holding the winning TID.
    let mut ceiling: Option<u64> = None;
    let mut best_count = 0usize;
    loop {
        let candidate = voters
            .iter()
            .filter_map(vote)
            .filter(|&tid| ceiling.map_or(true, |c| tid < c))
            .max();
        let Some(tid) = candidate else { break };
        let mut count = 0usize;
        let mut focus = None;
        for (idx, v) in voters.iter().enumerate() {
            if vote(v) == Some(tid) {
                count += 1;
                focus.get_or_insert(idx);
            }
        }
        if let (true, Some(node)) = (count >= tally.nquorum, focus) {
            return QuorumResult::Focus { node, tid };
        }
        best_count = best_count.max(count);
        ceiling = Some(tid);
    }
    let error = if best_count + tally.pending >= tally.nquorum {
        Error::InProgress
    } else if best_count + tally.pending + tally.failed >= tally.nquorum {
        Error::Io
    } else if tally.holders < tally.nquorum {
        Error::NoQuorum
    } else {
        Error::Deadlock
    };
    QuorumResult::None(error)
}

bitflags! {
    /// Cluster status flags (`HAMMER2_CLUSTER_*`), computed by [`status`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct StatusFlags: u32 {
        /// Hard (quorum) writes possible: `quorum/rw`.
        const WRHARD = 0x100;
        /// Hard (quorum) reads possible: `quorum/ro` when without WRHARD.
        const RDHARD = 0x200;
        /// A master that answered does not hold the quorum's TID, or there is no quorum:
        /// `out-of-sync-masters`.
        const UNHARD = 0x400;
        /// No master visible: `no-masters-visible`.
        const NOHARD = 0x800;
        /// A soft master is reachable: `soft/rw`.
        const WRSOFT = 0x1000;
        /// A soft slave (or soft master) is reachable: `soft/ro` when without WRSOFT.
        const RDSOFT = 0x2000;
        /// A slave that answered does not hold the quorum's TID: `out-of-sync-slaves`.
        const UNSOFT = 0x4000;
        /// No slave visible: `no-slaves-visible`.
        const NOSOFT = 0x8000;
        /// Every master (failed ones included) holds the quorum's TID: `masters-all-good`.
        const MSYNCED = 0x10000;
        /// Every slave (failed ones included) holds the quorum's TID: `slaves-all-good`.
        const SSYNCED = 0x20000;
    }
}

/// The status words in the order the seed's `hammer2_update_pfs_status` prints them. A pair
/// `(a, b)` prints `a` if its flag is set, else `b` if its flag is set.
/// A status flag and the word it prints.
type Word = (StatusFlags, &'static str);

const WORD_GROUPS: [(Option<Word>, Word); 6] = [
    (None, (StatusFlags::MSYNCED, "masters-all-good")),
    (None, (StatusFlags::SSYNCED, "slaves-all-good")),
    (
        Some((StatusFlags::WRHARD, "quorum/rw")),
        (StatusFlags::RDHARD, "quorum/ro"),
    ),
    (
        Some((StatusFlags::UNHARD, "out-of-sync-masters")),
        (StatusFlags::NOHARD, "no-masters-visible"),
    ),
    (
        Some((StatusFlags::WRSOFT, "soft/rw")),
        (StatusFlags::RDSOFT, "soft/ro"),
    ),
    (
        Some((StatusFlags::UNSOFT, "out-of-sync-slaves")),
        (StatusFlags::NOSOFT, "no-slaves-visible"),
    ),
];

impl StatusFlags {
    /// The status words these flags print, in the seed's order. Within a pair only the first
    /// applicable word prints (`quorum/rw` hides `quorum/ro`, `soft/rw` hides `soft/ro`,
    /// `out-of-sync-*` hides `no-*-visible`), so test a word's presence with this or
    /// [`StatusFlags::has_word`], not with `contains`.
    pub fn words(self) -> impl Iterator<Item = &'static str> {
        WORD_GROUPS
            .into_iter()
            .filter_map(move |(first, second)| match first {
                Some((flag, word)) if self.contains(flag) => Some(word),
                _ if self.contains(second.0) => Some(second.1),
                _ => None,
            })
    }

    /// Whether `word` is among [`StatusFlags::words`].
    pub fn has_word(self, word: &str) -> bool {
        self.words().any(|w| w == word)
    }
}

/// The flag a status word names (`"quorum/ro"` is [`StatusFlags::RDHARD`], ...), or `None` for
/// an unknown word.
pub fn word_from_name(name: &str) -> Option<StatusFlags> {
    WORD_GROUPS
        .into_iter()
        .flat_map(|(first, second)| first.into_iter().chain(core::iter::once(second)))
        .find(|(_, word)| *word == name)
        .map(|(flag, _)| flag)
}

/// The cluster status from every node's answer for the PFS root, as pass 3 of HAMMER2's
/// `hammer2_cluster_check` sets it (HAMMER2-FACTS §2). A node's answer is *valid* when it is
/// in and not errored ([`NodeAnswer::Holds`] or [`NodeAnswer::Absent`]); a failed node sets no
/// flag of its own, and neither does a pending or excluded one (not known either way).
///
/// - A valid MASTER holding the quorum's TID (only when [`check`] finds a focus) sets
///   **WRHARD | RDHARD** (`quorum/rw`) and counts in `nmasters`; any other valid MASTER sets
///   **UNHARD** (`out-of-sync-masters`), with or without a quorum.
/// - A valid SLAVE holding the quorum's TID sets **RDHARD** and counts in `nslaves`; any other
///   valid SLAVE sets **UNSOFT** (`out-of-sync-slaves`).
/// - **NOHARD** (`no-masters-visible`) when there is no MASTER, **NOSOFT**
///   (`no-slaves-visible`) when there is no SLAVE; **MSYNCED** (`masters-all-good`) iff
///   `nmasters` is the number of MASTERs, **SSYNCED** (`slaves-all-good`) iff `nslaves` is the
///   number of SLAVEs (errored ones included in both totals, so vacuously true with none).
/// - **WRSOFT | RDSOFT** (`soft/rw`): a SOFT_MASTER that has not failed. **RDSOFT** alone
///   (`soft/ro`): only SOFT_SLAVEs that have not failed.
///
/// Soft slaves and caches count in neither total.
pub fn status(voters: &[Voter], recorded_nmasters: u8) -> StatusFlags {
    let mut flags = StatusFlags::empty();
    let focus_tid = match check(voters, recorded_nmasters) {
        QuorumResult::Focus { tid, .. } => Some(tid),
        QuorumResult::None(_) => None,
    };
    let (mut ttlmasters, mut nmasters, mut ttlslaves, mut nslaves) = (0usize, 0, 0usize, 0);
    for v in voters {
        // DEVIATION: HAMMER2 resolves a cluster whose every element has answered, so a NULL
        // chain there means "absent". Here a node's answer may not be in yet (a stalled node as
        // seen from another, the syncing node itself): like an errored one it sets no flag of
        // its own, since it is not known to be out of sync.
        let valid = matches!(v.answer, NodeAnswer::Holds(_) | NodeAnswer::Absent);
        let current = matches!((focus_tid, v.answer), (Some(t), NodeAnswer::Holds(h)) if h == t);
        match v.role {
            Role::Master => {
                ttlmasters += 1;
                if current {
                    nmasters += 1;
                    flags |= StatusFlags::WRHARD | StatusFlags::RDHARD;
                } else if valid {
                    flags |= StatusFlags::UNHARD;
                }
            }
            Role::Slave => {
                ttlslaves += 1;
                if current {
                    nslaves += 1;
                    flags |= StatusFlags::RDHARD;
                } else if valid {
                    flags |= StatusFlags::UNSOFT;
                }
            }
            Role::SoftMaster if v.answer != NodeAnswer::Failed => {
                flags |= StatusFlags::WRSOFT | StatusFlags::RDSOFT;
            }
            Role::SoftSlave if v.answer != NodeAnswer::Failed => flags |= StatusFlags::RDSOFT,
            _ => {}
        }
    }
    if ttlmasters == 0 {
        flags |= StatusFlags::NOHARD;
    }
    if ttlslaves == 0 {
        flags |= StatusFlags::NOSOFT;
    }
    if nmasters == ttlmasters {
        flags |= StatusFlags::MSYNCED;
    }
    if nslaves == ttlslaves {
        flags |= StatusFlags::SSYNCED;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use NodeAnswer::*;
    use Role::*;

    fn v(role: Role, answer: NodeAnswer) -> Voter {
        Voter { role, answer }
    }

    fn masters(answers: &[NodeAnswer]) -> [Voter; 8] {
        let mut out = [v(Cache, Absent); 8];
        for (o, &a) in out.iter_mut().zip(answers) {
            *o = v(Master, a);
        }
        out
    }

    fn check_m(answers: &[NodeAnswer], recorded: u8) -> QuorumResult {
        let vs = masters(answers);
        check(&vs[..answers.len()], recorded)
    }

    fn focus(node: usize, tid: u64) -> QuorumResult {
        QuorumResult::Focus { node, tid }
    }

    fn none(e: Error) -> QuorumResult {
        QuorumResult::None(e)
    }

    #[test]
    fn unanimous_and_majority() {
        assert_eq!(check_m(&[Holds(7), Holds(7), Holds(7)], 0), focus(0, 7));
        assert_eq!(check_m(&[Holds(7), Holds(9), Holds(9)], 0), focus(1, 9));
        assert_eq!(check_m(&[Holds(3)], 1), focus(0, 3));
        // TID 0 is a TID like any other.
        assert_eq!(check_m(&[Holds(0), Holds(0)], 0), focus(0, 0));
    }

    /// The seed-era retry loop, modelled from HAMMER2-FACTS §6 bug 11: `quorum_tid` survives
    /// between rounds, so a round can never move below it. Returns `None` when it has not finished in `cap` rounds.
    fn seed_check(tids: &[u64], nquorum: usize, cap: usize) -> Option<u64> {
        let mut last_best = u64::MAX;
        let mut quorum_tid = 0u64;
        let mut nmasters = 0usize;
        for _ in 0..cap {
            if nmasters >= nquorum || last_best == 0 {
                return Some(quorum_tid);
            }
            for &t in tids {
                if t < last_best && quorum_tid < t {
                    nmasters = 0;
                    quorum_tid = t;
                }
                if quorum_tid == t {
                    nmasters += 1;
                }
            }
            if nmasters >= nquorum {
                return Some(quorum_tid);
            }
            last_best = quorum_tid;
            nmasters = 0;
        }
        None
    }

    #[test]
    fn bug11_retry_terminates_at_lower_tid() {
        // Negative control: the seed's loop never finishes on 10, 5, 5.
        assert_eq!(seed_check(&[10, 5, 5], 2, 10_000), None);
        assert_eq!(seed_check(&[7, 7, 7], 2, 10_000), Some(7));
        // Fixed: the highest TID below 10 with a quorum is 5; focus the first holder.
        assert_eq!(check_m(&[Holds(10), Holds(5), Holds(5)], 0), focus(1, 5));
        assert_eq!(check_m(&[Holds(5), Holds(10), Holds(5)], 0), focus(0, 5));
        // Several rounds down: 9, 8 fail; 4 has the quorum of 3 out of 5.
        assert_eq!(
            check_m(&[Holds(9), Holds(4), Holds(8), Holds(4), Holds(4)], 0),
            focus(1, 4)
        );
        // Every TID distinct: terminates with a disagreement, never loops.
        assert_eq!(
            check_m(&[Holds(3), Holds(2), Holds(1)], 0),
            none(Error::Deadlock)
        );
        assert_eq!(seed_check(&[3, 2, 1], 2, 10_000), None);
    }

    #[test]
    fn counters_reset_and_no_stale_focus() {
        // A higher TID seen first must not leave its count or node behind: 10 is held by one
        // master, 6 by two of three: the focus is a holder of 6.
        let r = check_m(&[Holds(10), Holds(6), Holds(6)], 0);
        assert_eq!(r, focus(1, 6));
        // A failed master at index 0 is never the focus.
        assert_eq!(check_m(&[Failed, Holds(6), Holds(6)], 0), focus(1, 6));
    }

    #[test]
    fn recorded_masters_raise_the_quorum() {
        // Two visible masters agree, but five are recorded: 3 needed.
        assert_eq!(check_m(&[Holds(4), Holds(4)], 5), none(Error::NoQuorum));
        assert_eq!(check_m(&[Holds(4), Holds(4), Holds(4)], 5), focus(0, 4));
        // The recorded count never lowers the quorum below the visible masters' majority.
        assert_eq!(
            check_m(&[Holds(4), Holds(5), Holds(6)], 1),
            none(Error::Deadlock)
        );
    }

    #[test]
    fn excluded_masters_count_but_do_not_vote() {
        // Node 0 is being synchronized: 3 masters, quorum 2, nodes 1 and 2 must agree.
        assert_eq!(check_m(&[Excluded, Holds(8), Holds(8)], 0), focus(1, 8));
        assert_eq!(
            check_m(&[Excluded, Holds(8), Holds(7)], 0),
            none(Error::Deadlock)
        );
        assert_eq!(
            check_m(&[Excluded, Holds(8), Absent], 0),
            none(Error::NoQuorum)
        );
        assert_eq!(check_m(&[Excluded, Excluded], 0), none(Error::NoQuorum));
    }

    #[test]
    fn pending_masters_mean_in_progress() {
        assert_eq!(
            check_m(&[Holds(8), Pending, Absent], 0),
            none(Error::InProgress)
        );
        assert_eq!(
            check_m(&[Pending, Pending, Absent], 0),
            none(Error::InProgress)
        );
        assert_eq!(
            check_m(&[Holds(8), Holds(7), Pending], 0),
            none(Error::InProgress)
        );
        // A quorum already found is final: pending masters cannot form another one.
        assert_eq!(check_m(&[Holds(8), Holds(8), Pending], 0), focus(0, 8));
        // Pending that cannot reach quorum: 5 masters, quorum 3, best 1 + 1 pending.
        assert_eq!(
            check_m(&[Holds(1), Holds(2), Holds(3), Absent, Pending], 0),
            none(Error::Deadlock)
        );
        assert_eq!(
            check_m(&[Absent, Absent, Absent, Absent, Pending], 0),
            none(Error::NoQuorum)
        );
    }

    #[test]
    fn failed_masters_never_count_as_absent() {
        // One holder, two failed reads: the key may well be there; never ESRCH.
        assert_eq!(check_m(&[Holds(8), Failed, Failed], 0), none(Error::Io));
        assert_eq!(check_m(&[Absent, Failed, Failed], 0), none(Error::Io));
        // Disagreement that a failed master could settle is not a proven deadlock either.
        assert_eq!(check_m(&[Holds(8), Holds(7), Failed], 0), none(Error::Io));
        // Failed masters that cannot change the outcome leave it as it is.
        assert_eq!(
            check_m(&[Absent, Absent, Absent, Absent, Failed], 0),
            none(Error::NoQuorum)
        );
        // Pending outranks failed: the pending master alone could complete the quorum.
        assert_eq!(
            check_m(&[Holds(8), Pending, Failed], 0),
            none(Error::InProgress)
        );
    }

    #[test]
    fn non_masters_never_vote_or_focus() {
        let vs = [
            v(Slave, Holds(9)),
            v(SoftMaster, Holds(9)),
            v(SoftSlave, Holds(9)),
            v(Cache, Holds(9)),
            v(Master, Holds(5)),
        ];
        assert_eq!(check(&vs, 0), focus(4, 5));
        let only_slaves = [
            v(Slave, Holds(9)),
            v(Slave, Holds(9)),
            v(SoftMaster, Holds(9)),
        ];
        assert_eq!(check(&only_slaves, 0), none(Error::NoQuorum));
        assert_eq!(check(&[], 0), none(Error::NoQuorum));
    }

    fn words(f: StatusFlags) -> alloc::vec::Vec<&'static str> {
        f.words().collect()
    }

    #[test]
    fn status_all_good() {
        let vs = [v(Master, Holds(4)), v(Master, Holds(4)), v(Slave, Holds(4))];
        let s = status(&vs, 0);
        assert_eq!(
            s,
            StatusFlags::WRHARD | StatusFlags::RDHARD | StatusFlags::MSYNCED | StatusFlags::SSYNCED
        );
        assert_eq!(
            words(s),
            ["masters-all-good", "slaves-all-good", "quorum/rw"]
        );
    }

    #[test]
    fn status_masters_out_of_sync_beside_a_quorum() {
        // Three masters, two ahead: a quorum, and the third (valid, behind) sets UNHARD.
        let vs = [
            v(Master, Holds(4)),
            v(Master, Holds(4)),
            v(Master, Holds(2)),
            v(Slave, Holds(1)),
        ];
        let s = status(&vs, 0);
        assert_eq!(
            s,
            StatusFlags::WRHARD | StatusFlags::RDHARD | StatusFlags::UNHARD | StatusFlags::UNSOFT
        );
        assert_eq!(
            words(s),
            ["quorum/rw", "out-of-sync-masters", "out-of-sync-slaves"]
        );
        // A master that answered "absent" is valid and out of sync too.
        let vs = [v(Master, Holds(4)), v(Master, Holds(4)), v(Master, Absent)];
        assert!(status(&vs, 0).contains(StatusFlags::UNHARD));
    }

    #[test]
    fn status_slaves_in_and_out_of_sync() {
        // A slave holding the quorum's TID counts in nslaves and sets RDHARD.
        let vs = [v(Master, Holds(4)), v(Slave, Holds(4)), v(Slave, Holds(4))];
        let s = status(&vs, 0);
        assert!(s.contains(StatusFlags::SSYNCED | StatusFlags::RDHARD));
        assert!(!s.intersects(StatusFlags::UNSOFT | StatusFlags::NOSOFT));
        // One behind: UNSOFT, not SSYNCED.
        let vs = [v(Master, Holds(4)), v(Slave, Holds(4)), v(Slave, Holds(3))];
        let s = status(&vs, 0);
        assert!(s.contains(StatusFlags::UNSOFT) && !s.contains(StatusFlags::SSYNCED));
        // A soft slave is no slave: it counts in neither total.
        let vs = [v(Master, Holds(4)), v(SoftSlave, Holds(3))];
        let s = status(&vs, 0);
        assert!(s.contains(StatusFlags::SSYNCED | StatusFlags::NOSOFT | StatusFlags::RDSOFT));
        assert!(!s.contains(StatusFlags::UNSOFT));
    }

    #[test]
    fn status_without_quorum_or_masters() {
        // No quorum: every valid master and slave is out of sync, nothing is synced.
        let split = [v(Master, Holds(4)), v(Master, Holds(3)), v(Slave, Holds(4))];
        let s = status(&split, 0);
        assert_eq!(s, StatusFlags::UNHARD | StatusFlags::UNSOFT);
        assert_eq!(words(s), ["out-of-sync-masters", "out-of-sync-slaves"]);
        // Recorded masters not visible: two of five agree, no quorum.
        let vs = [v(Master, Holds(1)), v(Master, Holds(1))];
        assert_eq!(
            status(&vs, 5),
            StatusFlags::UNHARD | StatusFlags::NOSOFT | StatusFlags::SSYNCED
        );

        // No master: NOHARD, and MSYNCED as 0 of 0 masters hold it (as in HAMMER2).
        let no_masters = [v(Slave, Holds(4)), v(SoftSlave, Holds(4))];
        let s = status(&no_masters, 0);
        assert_eq!(
            s,
            StatusFlags::NOHARD | StatusFlags::MSYNCED | StatusFlags::UNSOFT | StatusFlags::RDSOFT
        );
        assert_eq!(
            words(s),
            [
                "masters-all-good",
                "no-masters-visible",
                "soft/ro",
                "out-of-sync-slaves"
            ]
        );
        assert_eq!(
            words(status(&[], 0)),
            [
                "masters-all-good",
                "slaves-all-good",
                "no-masters-visible",
                "no-slaves-visible"
            ]
        );
    }

    #[test]
    fn status_failed_pending_and_soft_nodes() {
        // A failed master sets nothing of its own (the others keep quorum/rw) but counts in the
        // total, so MSYNCED is clear; a failed cache changes nothing.
        let vs = [
            v(Master, Holds(4)),
            v(Master, Holds(4)),
            v(Master, Failed),
            v(SoftMaster, Holds(1)),
            v(Cache, Failed),
        ];
        let s = status(&vs, 0);
        assert_eq!(
            s,
            StatusFlags::WRHARD
                | StatusFlags::RDHARD
                | StatusFlags::WRSOFT
                | StatusFlags::RDSOFT
                | StatusFlags::NOSOFT
                | StatusFlags::SSYNCED
        );
        assert_eq!(
            words(s),
            [
                "slaves-all-good",
                "quorum/rw",
                "soft/rw",
                "no-slaves-visible"
            ]
        );
        // A failed slave: no UNSOFT, but not all slaves are good.
        let vs = [v(Master, Holds(4)), v(Slave, Failed)];
        let s = status(&vs, 0);
        assert!(!s.intersects(StatusFlags::UNSOFT | StatusFlags::SSYNCED | StatusFlags::NOSOFT));
        // Pending and excluded masters are not known either way.
        for a in [Pending, Excluded] {
            let vs = [v(Master, a), v(Master, Holds(1)), v(Master, Holds(1))];
            let s = status(&vs, 0);
            assert!(s.contains(StatusFlags::WRHARD), "{a:?}");
            assert!(
                !s.intersects(StatusFlags::UNHARD | StatusFlags::MSYNCED),
                "{a:?}"
            );
        }
        // A failed soft master gives no soft status; a soft slave still gives soft/ro.
        let vs = [
            v(Master, Holds(1)),
            v(SoftMaster, Failed),
            v(SoftSlave, Holds(1)),
        ];
        assert!(status(&vs, 0).has_word("soft/ro"));
        let vs = [v(Master, Holds(1)), v(SoftMaster, Failed)];
        let s = status(&vs, 0);
        assert!(!s.intersects(StatusFlags::WRSOFT | StatusFlags::RDSOFT));
    }

    #[test]
    fn word_names() {
        let all = [
            ("masters-all-good", StatusFlags::MSYNCED),
            ("slaves-all-good", StatusFlags::SSYNCED),
            ("quorum/rw", StatusFlags::WRHARD),
            ("quorum/ro", StatusFlags::RDHARD),
            ("out-of-sync-masters", StatusFlags::UNHARD),
            ("no-masters-visible", StatusFlags::NOHARD),
            ("soft/rw", StatusFlags::WRSOFT),
            ("soft/ro", StatusFlags::RDSOFT),
            ("out-of-sync-slaves", StatusFlags::UNSOFT),
            ("no-slaves-visible", StatusFlags::NOSOFT),
        ];
        for (name, flag) in all {
            assert_eq!(word_from_name(name), Some(flag), "{name}");
        }
        assert_eq!(word_from_name("quorum"), None);
        assert_eq!(word_from_name(""), None);
        assert_eq!(StatusFlags::WRHARD.bits(), 0x100);
        assert_eq!(StatusFlags::SSYNCED.bits(), 0x20000);
        // Within a pair the first word hides the second.
        assert_eq!(
            words(StatusFlags::WRHARD | StatusFlags::RDHARD),
            ["quorum/rw"]
        );
        assert_eq!(words(StatusFlags::RDHARD), ["quorum/ro"]);
        assert_eq!(
            words(StatusFlags::WRSOFT | StatusFlags::RDSOFT),
            ["soft/rw"]
        );
    }
}
