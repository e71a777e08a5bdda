//! Focus selection by a quorum of masters (`hammer2_cluster_check`) and cluster status words.
//! SKELETON: signatures are the contract; bodies to be completed.

use crate::cluster::Role;

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
    /// fewer than a quorum hold the key), `Deadlock` (EDEADLK: they hold it but disagree).
    None(crate::Error),
}

/// Choose the focus among `voters` (HAMMER2-FACTS §2). `recorded_nmasters` is the PFS root's
/// recorded master count; the quorum uses the larger of it and the visible masters.
pub fn check(voters: &[Voter], recorded_nmasters: u8) -> QuorumResult {
    let _ = (voters, recorded_nmasters);
    todo!()
}
