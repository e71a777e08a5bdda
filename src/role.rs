//! Node roles and node sets: the vocabulary every layer above the media types shares (quorum,
//! synchronizer, thread slots, cluster, scenario language). A leaf module, so those layers can
//! name a role without reaching up into the cluster.

/// Most nodes a cluster may have (`HAMMER2_MAXCLUSTER`).
pub const MAX_NODES: usize = 8;

/// A node's role in the PFS (`HAMMER2_PFSTYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Votes in the quorum (`PFSTYPE_MASTER` 6).
    Master,
    /// Validated against the focus, never votes (`PFSTYPE_SLAVE` 3).
    Slave,
    /// Soft read/write status (`PFSTYPE_SOFT_MASTER` 5).
    SoftMaster,
    /// Soft read status (`PFSTYPE_SOFT_SLAVE` 4).
    SoftSlave,
    /// Ignored by the quorum (`PFSTYPE_CACHE` 1).
    Cache,
}

impl Role {
    /// The on-media `pfs_type` value.
    pub const fn pfs_type(self) -> u8 {
        match self {
            Role::Master => 6,
            Role::Slave => 3,
            Role::SoftMaster => 5,
            Role::SoftSlave => 4,
            Role::Cache => 1,
        }
    }
    /// The scenario-language name (`master`, `slave`, `soft_master`, `soft_slave`, `cache`).
    pub const fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Slave => "slave",
            Role::SoftMaster => "soft_master",
            Role::SoftSlave => "soft_slave",
            Role::Cache => "cache",
        }
    }
    /// Parse a scenario-language role name.
    pub fn from_name(s: &str) -> Option<Role> {
        Some(match s {
            "master" => Role::Master,
            "slave" => Role::Slave,
            "soft_master" => Role::SoftMaster,
            "soft_slave" => Role::SoftSlave,
            "cache" => Role::Cache,
            _ => return None,
        })
    }
}

/// A set of node indices (bit i = node i).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeSet(pub u8);

impl NodeSet {
    /// Iterate the indices in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_NODES).filter(move |i| self.0 & (1 << i) != 0)
    }
    /// Whether `idx` is in the set.
    pub fn contains(self, idx: usize) -> bool {
        idx < MAX_NODES && self.0 & (1 << idx) != 0
    }
}
