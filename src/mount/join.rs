//! Loaded PFSs made into one cluster's nodes: each node's role from its PFS's `pfs_type`, one
//! cluster id for all, at least one master, masters that agree wherever their TIDs do, and
//! non-masters marked where they hold other contents under a master's TID ([`mark_foreign`]).
//! Every host that syncs volumes (the CLI's `sync`, the kernel's debugfs `volume sync`) goes
//! through [`Join`], so they accept and refuse the same PFSs with the same words.

use core::fmt;

use crate::media::{
    PFSTYPE_CACHE, PFSTYPE_MASTER, PFSTYPE_SLAVE, PFSTYPE_SOFT_MASTER, PFSTYPE_SOFT_SLAVE,
};
use crate::role::{Role, MAX_NODES};
use crate::store::Store;
use crate::volume::show::Uuid;
use crate::Error;

use super::{conflicts, mark_foreign};

/// The cluster role a PFS of type `pfs_type` plays, if it is one.
pub fn role_of(pfs_type: u8) -> Option<Role> {
    Some(match pfs_type {
        PFSTYPE_MASTER => Role::Master,
        PFSTYPE_SLAVE => Role::Slave,
        PFSTYPE_SOFT_MASTER => Role::SoftMaster,
        PFSTYPE_SOFT_SLAVE => Role::SoftSlave,
        PFSTYPE_CACHE => Role::Cache,
        _ => return None,
    })
}

/// Why PFSs cannot be one cluster; nodes are named by their index in the order added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// More than [`MAX_NODES`] nodes.
    TooMany,
    /// Node `node`'s PFS type is no cluster role.
    NotARole {
        /// The node.
        node: usize,
        /// Its `pfs_type`.
        pfs_type: u8,
    },
    /// Node `node`'s cluster id is not node 0's.
    Clid {
        /// The node.
        node: usize,
        /// Its `pfs_clid`.
        ours: [u8; 16],
        /// Node 0's.
        first: [u8; 16],
    },
    /// No node is a master: nothing to sync from.
    NoMaster,
    /// Masters `a` and `b` hold different trees under the same TIDs.
    Masters {
        /// One master.
        a: usize,
        /// The other.
        b: usize,
    },
    /// Reading node `node`'s store failed.
    Store {
        /// The node.
        node: usize,
        /// The error.
        error: Error,
    },
}

impl JoinError {
    /// The error with each node named by `names[i]`, as the CLI and the kernel print it.
    pub fn named<'a>(&'a self, names: &'a [&'a str]) -> Named<'a> {
        Named { e: self, names }
    }
}

/// A [`JoinError`] with its nodes' names, for display.
pub struct Named<'a> {
    e: &'a JoinError,
    names: &'a [&'a str],
}

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |i: usize| self.names.get(i).copied().unwrap_or("?");
        match *self.e {
            JoinError::TooMany => write!(
                f,
                "more than {MAX_NODES} PFSs: a cluster has at most {MAX_NODES} nodes"
            ),
            JoinError::NotARole { node, pfs_type } => {
                write!(
                    f,
                    "{}: pfs_type {pfs_type} is not a cluster role",
                    name(node)
                )
            }
            JoinError::Clid { node, ours, first } => write!(
                f,
                "{}: cluster id {} differs from {}'s {}: not one cluster (make the nodes with \
                 one newfs --clid)",
                name(node),
                Uuid(&ours),
                name(0),
                Uuid(&first)
            ),
            JoinError::NoMaster => write!(f, "no master among the PFSs: nothing to sync from"),
            JoinError::Masters { a, b } => write!(
                f,
                "masters {} and {} hold different trees under the same TIDs (filled apart?): no \
                 quorum can tell which is newer; make one of them a slave, or fill only one \
                 master and sync the others from it",
                name(a),
                name(b)
            ),
            JoinError::Store { node, error } => write!(f, "{}: {error}", name(node)),
        }
    }
}

/// The nodes of a cluster on volumes, checked as each is added.
#[derive(Debug, Default)]
pub struct Join {
    roles: heapless::Vec<Role, MAX_NODES>,
    clid: [u8; 16],
}

impl Join {
    /// No node yet.
    pub fn new() -> Join {
        Join::default()
    }

    /// Add the next node, `store` as loaded from its PFS: its role, or why it cannot join.
    pub fn add(&mut self, store: &Store) -> Result<Role, JoinError> {
        let node = self.roles.len();
        let meta = store
            .meta(store.root())
            .map_err(|error| JoinError::Store { node, error })?;
        let role = role_of(meta.pfs_type).ok_or(JoinError::NotARole {
            node,
            pfs_type: meta.pfs_type,
        })?;
        if node == 0 {
            self.clid = meta.pfs_clid;
        } else if meta.pfs_clid != self.clid {
            return Err(JoinError::Clid {
                node,
                ours: meta.pfs_clid,
                first: self.clid,
            });
        }
        self.roles.push(role).map_err(|_| JoinError::TooMany)?;
        Ok(role)
    }

    /// The roles of the nodes added, in order.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Once every node is added (`stores` in the same order): refuse a cluster without a
    /// master or with masters that disagree under equal TIDs, then mark each non-master's
    /// chains that differ from a master's under an equal TID ([`mark_foreign`]), calling
    /// `marked(node, master, chains)` for each pair with marks.
    pub fn reconcile(
        &self,
        stores: &[Store],
        marked: &mut dyn FnMut(usize, usize, usize),
    ) -> Result<(), JoinError> {
        if stores.len() != self.roles.len() {
            return Err(JoinError::Store {
                node: 0,
                error: Error::Invalid,
            });
        }
        let is_master = |i: &usize| self.roles[*i] == Role::Master;
        let masters: heapless::Vec<usize, MAX_NODES> =
            (0..stores.len()).filter(is_master).collect();
        if masters.is_empty() {
            return Err(JoinError::NoMaster);
        }
        for (k, &a) in masters.iter().enumerate() {
            for &b in &masters[k + 1..] {
                let c = conflicts(&stores[a], &stores[b])
                    .map_err(|error| JoinError::Store { node: a, error })?;
                if !c.is_empty() {
                    return Err(JoinError::Masters { a, b });
                }
            }
        }
        for node in (0..stores.len()).filter(|i| !is_master(i)) {
            for &m in &masters {
                let n = mark_foreign(&stores[node], &stores[m])
                    .map_err(|error| JoinError::Store { node, error })?;
                if n > 0 {
                    marked(node, m, n);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;
    use alloc::vec::Vec;

    use super::*;
    use crate::host::testhost;
    use crate::media::{InodeData, InodeMeta, OBJTYPE_DIRECTORY};
    use crate::store::Layout;

    /// An empty PFS of `pfs_type` in cluster `clid`.
    fn pfs(pfs_type: u8, clid: u8) -> Store {
        let mut meta = InodeMeta::new(OBJTYPE_DIRECTORY, 1, 0o755);
        meta.pfs_type = pfs_type;
        meta.pfs_clid = [clid; 16];
        let root = InodeData::new(meta, b"DATA").unwrap();
        Store::with_layout(testhost::host(), root, Layout::Index).unwrap()
    }

    const NAMES: [&str; 9] = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];

    #[test]
    fn roles_come_from_pfs_types_and_one_cluster_id() {
        let mut j = Join::new();
        assert_eq!(j.add(&pfs(PFSTYPE_MASTER, 1)), Ok(Role::Master));
        assert_eq!(j.add(&pfs(PFSTYPE_SOFT_SLAVE, 1)), Ok(Role::SoftSlave));
        let e = j.add(&pfs(0x55, 1)).unwrap_err();
        assert_eq!(
            e,
            JoinError::NotARole {
                node: 2,
                pfs_type: 0x55
            }
        );
        assert_eq!(
            e.named(&NAMES).to_string(),
            "c: pfs_type 85 is not a cluster role"
        );
        let e = j.add(&pfs(PFSTYPE_SLAVE, 2)).unwrap_err();
        let text = e.named(&NAMES).to_string();
        assert!(
            text.starts_with("c: cluster id 02020202-")
                && text.contains("differs from a's 01010101-"),
            "{text}"
        );
        assert_eq!(j.roles(), &[Role::Master, Role::SoftSlave]);
        for _ in 2..MAX_NODES {
            j.add(&pfs(PFSTYPE_CACHE, 1)).unwrap();
        }
        assert_eq!(j.add(&pfs(PFSTYPE_CACHE, 1)), Err(JoinError::TooMany));
    }

    #[test]
    fn a_cluster_needs_a_master_and_the_same_number_of_stores() {
        let mut j = Join::new();
        let stores: Vec<Store> = [PFSTYPE_SLAVE, PFSTYPE_CACHE]
            .iter()
            .map(|&t| pfs(t, 1))
            .collect();
        for s in &stores {
            j.add(s).unwrap();
        }
        let mut marks = 0;
        assert_eq!(
            j.reconcile(&stores, &mut |_, _, _| marks += 1),
            Err(JoinError::NoMaster)
        );
        assert_eq!(
            j.reconcile(&stores[..1], &mut |_, _, _| marks += 1),
            Err(JoinError::Store {
                node: 0,
                error: Error::Invalid
            })
        );
        assert_eq!(marks, 0);
        let mut j = Join::new();
        let stores = [pfs(PFSTYPE_MASTER, 1), pfs(PFSTYPE_SLAVE, 1)];
        for s in &stores {
            j.add(s).unwrap();
        }
        assert_eq!(j.reconcile(&stores, &mut |_, _, _| marks += 1), Ok(()));
        assert_eq!(marks, 0, "equal empty PFSs: nothing to mark");
    }
}
