//! Node roles and node sets: the vocabulary every layer above the media types shares (quorum,
//! synchronizer, thread slots, cluster, scenario language). A leaf module, so those layers can
//! name a role without reaching up into the cluster. Role lists and node sets are parsed here
//! once for every front end (the scenario language, the C API's test console).

use core::fmt;

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

    /// Parse a cluster's roles, one name per word: 1 to [`MAX_NODES`] of them. The count is
    /// checked before any name, so a list of the wrong length is reported as such.
    pub fn parse_list<'a, I>(words: I) -> Result<RoleList, ParseError<'a>>
    where
        I: IntoIterator<Item = &'a str>,
        I::IntoIter: Clone,
    {
        let words = words.into_iter();
        let n = words.clone().count();
        if n == 0 || n > MAX_NODES {
            return Err(ParseError::RoleCount(n));
        }
        let mut roles = RoleList::new();
        for (index, word) in words.enumerate() {
            let role = Role::from_name(word).ok_or(ParseError::UnknownRole { index, word })?;
            // Cannot fail: at most MAX_NODES words were counted above.
            let _ = roles.push(role);
        }
        Ok(roles)
    }
}

/// A cluster's roles, node 0 first.
pub type RoleList = heapless::Vec<Role, MAX_NODES>;

/// Why a role list, node set or node index did not parse. Displays as the scenario language
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError<'a> {
    /// A role list of this many names (none, or more than [`MAX_NODES`]).
    RoleCount(usize),
    /// The `index`-th word of a role list names no role.
    UnknownRole {
        /// Its position in the list.
        index: usize,
        /// The word.
        word: &'a str,
    },
    /// A node set with an empty element (`0,,1`, a trailing comma, nothing at all).
    EmptyElement(&'a str),
    /// A node index that is not a decimal number.
    NotIndex(&'a str),
    /// A node index too large for a `u64`.
    TooLarge(&'a str),
    /// A node index of at least the cluster's size.
    OutOfRange {
        /// The index.
        index: u64,
        /// The cluster's size.
        nodes: usize,
    },
}

impl fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ParseError::RoleCount(n) => write!(f, "cluster needs 1 to {MAX_NODES} roles, got {n}"),
            ParseError::UnknownRole { word, .. } => write!(
                f,
                "unknown role '{word}' (master, slave, soft_master, soft_slave, cache)"
            ),
            ParseError::EmptyElement(set) => write!(f, "bad node set '{set}'"),
            ParseError::NotIndex(w) => write!(f, "bad node index '{w}'"),
            ParseError::TooLarge(w) => write!(f, "bad node index '{w}' (too large)"),
            ParseError::OutOfRange { index, nodes } => {
                write!(f, "bad node index {index} (cluster has {nodes} nodes)")
            }
        }
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

    /// Every node of a cluster of `nodes` (at most [`MAX_NODES`]).
    pub fn all(nodes: usize) -> NodeSet {
        NodeSet(((1u16 << nodes.min(MAX_NODES)) - 1) as u8)
    }

    /// Parse a node set of a cluster of `nodes`: `*` (every node) or a comma list of indices
    /// (`0,2`).
    pub fn parse(w: &str, nodes: usize) -> Result<NodeSet, ParseError<'_>> {
        if w == "*" {
            return Ok(NodeSet::all(nodes));
        }
        let mut set = NodeSet(0);
        for part in w.split(',') {
            if part.is_empty() {
                return Err(ParseError::EmptyElement(w));
            }
            set.0 |= 1 << NodeSet::parse_index(part, nodes)?;
        }
        Ok(set)
    }

    /// Parse one node index of a cluster of `nodes`: decimal digits only, below `nodes` and
    /// [`MAX_NODES`].
    pub fn parse_index(w: &str, nodes: usize) -> Result<usize, ParseError<'_>> {
        if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::NotIndex(w));
        }
        let index = w
            .bytes()
            .try_fold(0u64, |acc, d| {
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
            .ok_or(ParseError::TooLarge(w))?;
        let nodes = nodes.min(MAX_NODES);
        if index >= nodes as u64 {
            return Err(ParseError::OutOfRange { index, nodes });
        }
        Ok(index as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_lists_parse_and_are_bounded() {
        let r = Role::parse_list("master slave cache".split(' ')).unwrap();
        assert_eq!(r[..], [Role::Master, Role::Slave, Role::Cache]);
        assert_eq!(Role::parse_list([]), Err(ParseError::RoleCount(0)));
        assert_eq!(
            Role::parse_list(["master"; 9]),
            Err(ParseError::RoleCount(9))
        );
        assert_eq!(
            Role::parse_list(["master", "boss"]),
            Err(ParseError::UnknownRole {
                index: 1,
                word: "boss"
            })
        );
        // The count is checked first.
        assert_eq!(Role::parse_list(["boss"; 9]), Err(ParseError::RoleCount(9)));
    }

    #[test]
    fn node_sets_parse_and_are_bounded() {
        assert_eq!(NodeSet::parse("*", 3), Ok(NodeSet(0b111)));
        assert_eq!(NodeSet::parse("*", 8), Ok(NodeSet(0xff)));
        assert_eq!(NodeSet::parse("0,2", 3), Ok(NodeSet(0b101)));
        assert_eq!(NodeSet::parse("2,0,2", 3), Ok(NodeSet(0b101)));
        let out = ParseError::OutOfRange { index: 3, nodes: 3 };
        assert_eq!(NodeSet::parse("3", 3), Err(out));
        assert_eq!(
            NodeSet::parse("8", 9).unwrap_err().to_string(),
            "bad node index 8 (cluster has 8 nodes)"
        );
        assert_eq!(
            NodeSet::parse("1,,2", 3),
            Err(ParseError::EmptyElement("1,,2"))
        );
        assert_eq!(NodeSet::parse("", 3), Err(ParseError::EmptyElement("")));
        assert_eq!(NodeSet::parse("+1", 3), Err(ParseError::NotIndex("+1")));
        assert_eq!(NodeSet::parse("-1", 3), Err(ParseError::NotIndex("-1")));
        let big = "99999999999999999999";
        assert_eq!(NodeSet::parse(big, 3), Err(ParseError::TooLarge(big)));
    }
}
