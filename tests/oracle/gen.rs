//! Random cases: a cluster's roles and a divergent history of frontend changes.
//!
//! proptest generates *raw* cases (plain numbers), and [`resolve`] turns them into valid
//! histories by replaying them in the model: each raw op picks its path among the candidates
//! valid on every node of its set, and is dropped when there is none. Shrinking removes raw ops
//! and lowers numbers; whatever the shrinker produces still resolves to a valid history.

use hammer2_synchro::role::Role;
use hammer2_synchro::store::Layout;
use proptest::prelude::*;

use super::model::{self, check, join, Inode, Kind, Op, World, BLOCK, DIRECT_MAX};

/// One raw frontend change.
#[derive(Clone, Debug)]
pub struct RawOp {
    /// Which change (mkdir, write, rm, chmod, link), by weight.
    pub kind: u8,
    /// Index into the candidate paths.
    pub pick: u16,
    /// Index into the link-target candidates.
    pub pick2: u16,
    /// Node mask (arbitrary class); 0 means every node.
    pub mask: u8,
    /// Size class and size within it, and the content seed.
    pub size: u8,
    /// Size within the class.
    pub size_fine: u32,
    /// Content seed.
    pub seed: u8,
    /// Committed (goes to the quorum set) or not, in the committed class.
    pub commit: bool,
}

/// A raw case.
#[derive(Clone, Debug)]
pub struct RawCase {
    /// Roles (first `n` used), by weight.
    pub roles: Vec<u8>,
    /// Node count, 1..=8.
    pub n: u8,
    /// History class: arbitrary subsets, or a committed quorum plus lagging nodes.
    pub committed: bool,
    /// Masters forced into the committed quorum set.
    pub qmask: u8,
    /// Per node, where (in op index) a node outside the quorum set stops receiving committed
    /// changes.
    pub cuts: Vec<u8>,
    /// The changes.
    pub ops: Vec<RawOp>,
    /// Roles given after the history, before sync (arbitrary class only), if any.
    pub reroles: Option<Vec<u8>>,
}

/// How the history was built, which decides which properties must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Class {
    /// Arbitrary node subsets: only the model's exact prediction is asserted.
    Arbitrary,
    /// Every committed change reached the quorum set `q` (a quorum of masters); every other
    /// node got a prefix of the committed changes and then only uncommitted ones. Then every
    /// node must end up equal to the replay of the committed changes.
    Committed { q: u8 },
}

/// A resolved, valid case.
#[derive(Clone, Debug)]
pub struct Case {
    /// Roles by node.
    pub roles: Vec<Role>,
    /// (node mask, change, committed?) in order; TIDs are assigned by applying them.
    pub ops: Vec<(u8, Op, bool)>,
    /// How it was built.
    pub class: Class,
    /// Roles set (`role <idx> <role>`) after the history, before sync.
    pub new_roles: Option<Vec<Role>>,
    /// Nodes in catch-up mode (a mask), set before sync.
    pub catchup: u8,
    /// Read delays of synchronization, (node, milliseconds), set before sync.
    pub stalls: Vec<(usize, u64)>,
    /// The layout the model replays the history in and the cluster is built in (the seed's
    /// unless a property asks for today's with [`Case::on_index`]).
    pub layout: Layout,
}

/// Names used for directories and files, and (separately) for hardlink pointers.
const NAMES: [&[u8]; 3] = [b"a", b"b", b"c"];
const LINK_NAMES: [&[u8]; 2] = [b"l", b"m"];
const MODES: [u32; 5] = [0o700, 0o755, 0o644, 0o600, 0o711];

/// Every path directories and files may take (depth 1..=3) and every hardlink path.
pub fn path_pool() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut dirs: Vec<Vec<u8>> = vec![b"/".to_vec()];
    let mut all = Vec::new();
    let mut frontier = vec![b"/".to_vec()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for p in &frontier {
            for n in NAMES {
                next.push(join(p, n));
            }
        }
        all.extend(next.iter().cloned());
        frontier = next;
    }
    dirs.extend(
        all.iter()
            .filter(|p| model::components(p).count() <= 2)
            .cloned(),
    );
    let links = dirs
        .iter()
        .flat_map(|d| LINK_NAMES.iter().map(move |l| join(d, l)))
        .collect();
    (all, links)
}

fn role_of(w: u8) -> Role {
    match w % 16 {
        0..=8 => Role::Master,
        9..=11 => Role::Slave,
        12 => Role::SoftMaster,
        13 => Role::SoftSlave,
        _ => Role::Cache,
    }
}

fn size_of(class: u8, fine: u32) -> usize {
    match class % 16 {
        0..=6 => (fine % 64) as usize,
        7..=9 => DIRECT_MAX - 8 + (fine % 16) as usize,
        10..=14 => 1000 + (fine % 9000) as usize,
        _ => BLOCK - 64 + (fine % (BLOCK as u32 + 4096)) as usize,
    }
}

/// Build the valid op a raw op asks for on the nodes of `mask`, if any.
fn pick_op(w: &World, mask: u8, r: &RawOp, pool: &(Vec<Vec<u8>>, Vec<Vec<u8>>)) -> Option<Op> {
    let on_all = |op: &Op| {
        (0..w.trees.len())
            .filter(|i| mask & (1 << i) != 0)
            .all(|i| check(&w.trees[i], op).is_ok())
    };
    let choose = |cands: Vec<Op>, pick: u16| -> Option<Op> {
        if cands.is_empty() {
            None
        } else {
            Some(cands[pick as usize % cands.len()].clone())
        }
    };
    let (paths, links) = pool;
    let cands: Vec<Op> = match r.kind % 10 {
        0..=2 => paths
            .iter()
            .map(|p| Op::Mkdir(p.clone()))
            .filter(on_all)
            .collect(),
        3..=5 => {
            let bytes = size_of(r.size, r.size_fine);
            let seed = u64::from(r.seed);
            paths
                .iter()
                .map(|p| Op::Write {
                    path: p.clone(),
                    bytes,
                    seed,
                })
                .filter(on_all)
                .collect()
        }
        6 => paths
            .iter()
            .chain(links.iter())
            .map(|p| Op::Rm(p.clone()))
            .filter(on_all)
            .collect(),
        7..=8 => {
            let m = MODES[r.size as usize % MODES.len()];
            paths
                .iter()
                .map(|p| Op::Chmod(p.clone(), m))
                .filter(on_all)
                .collect()
        }
        _ => {
            let targets: Vec<&Vec<u8>> = paths
                .iter()
                .filter(|t| {
                    (0..w.trees.len())
                        .filter(|i| mask & (1 << i) != 0)
                        .all(|i| {
                            matches!(w.trees[i].get(t).map(|x| &x.kind), Some(Kind::File { .. }))
                        })
                })
                .collect();
            if targets.is_empty() {
                return None;
            }
            let t = targets[r.pick2 as usize % targets.len()];
            links
                .iter()
                .map(|p| Op::Link(t.clone(), p.clone()))
                .filter(on_all)
                .collect()
        }
    };
    choose(cands, r.pick)
}

/// Turn a raw case into a valid history (see the module doc).
pub fn resolve(raw: &RawCase) -> Case {
    let n = (raw.n as usize).clamp(1, 8);
    let roles: Vec<Role> = (0..n)
        .map(|i| role_of(*raw.roles.get(i).unwrap_or(&0)))
        .collect();
    let all: u8 = ((1u16 << n) - 1) as u8;
    let masters: Vec<usize> = (0..n).filter(|&i| roles[i] == Role::Master).collect();
    let pool = path_pool();
    let mut w = World::new(&roles);
    let mut ops = Vec::new();

    let class = if raw.committed && !masters.is_empty() {
        let nq = masters.len() / 2 + 1;
        let mut q: u8 = 0;
        for &m in &masters {
            if raw.qmask & (1 << m) != 0 {
                q |= 1 << m;
            }
        }
        for &m in &masters {
            if q.count_ones() as usize >= nq {
                break;
            }
            q |= 1 << m;
        }
        Class::Committed { q }
    } else {
        Class::Arbitrary
    };

    let nops = raw.ops.len().max(1);
    let mut tid = 0;
    for (i, r) in raw.ops.iter().enumerate() {
        let mask = match class {
            Class::Arbitrary => {
                let m = r.mask & all;
                if m == 0 {
                    all
                } else {
                    m
                }
            }
            Class::Committed { q } => {
                // A node outside q follows the committed history up to its cut, then only
                // receives uncommitted changes.
                let cut_passed = |j: usize| {
                    let c = *raw.cuts.get(j).unwrap_or(&255) as usize;
                    i >= c * nops / 255
                };
                let outside: u8 = (0..n)
                    .filter(|&j| q & (1 << j) == 0)
                    .fold(0, |m, j| m | (1 << j));
                let lagging: u8 = (0..n)
                    .filter(|&j| outside & (1 << j) != 0 && cut_passed(j))
                    .fold(0, |m, j| m | (1 << j));
                if r.commit {
                    q | (outside & !lagging)
                } else {
                    let m = r.mask & lagging;
                    if m == 0 {
                        continue;
                    }
                    m
                }
            }
        };
        let Some(op) = pick_op(&w, mask, r, &pool) else {
            continue;
        };
        tid += 1;
        for j in 0..n {
            if mask & (1 << j) != 0 {
                model::apply(&mut w.trees[j], &op, tid);
            }
        }
        let committed = match class {
            Class::Committed { .. } => r.commit,
            Class::Arbitrary => false,
        };
        ops.push((mask, op, committed));
    }
    let new_roles = match (&class, &raw.reroles) {
        (Class::Arbitrary, Some(r)) => {
            Some((0..n).map(|i| role_of(*r.get(i).unwrap_or(&0))).collect())
        }
        _ => None,
    };
    Case {
        roles,
        ops,
        class,
        new_roles,
        catchup: 0,
        stalls: Vec::new(),
        layout: Layout::Seed,
    }
}

impl Case {
    /// A hand-made case: these changes (none committed) on these roles, nothing else set.
    pub fn arbitrary(roles: Vec<Role>, ops: Vec<(u8, model::Op)>) -> Case {
        Case {
            roles,
            ops: ops
                .into_iter()
                .map(|(mask, op)| (mask, op, false))
                .collect(),
            class: Class::Arbitrary,
            new_roles: None,
            catchup: 0,
            stalls: Vec::new(),
            layout: Layout::Seed,
        }
    }

    /// The same case in today's layout: the same changes, valid there as they are in the
    /// seed's (a name, a hardlink and a removal mean the same in both).
    pub fn on_index(self) -> Case {
        Case {
            layout: Layout::Index,
            ..self
        }
    }

    /// The model world after the history (TIDs 1, 2, ... in order), and every path any node
    /// ever held.
    pub fn replay(&self) -> (World, Vec<Vec<u8>>) {
        let mut w = World::new(&self.roles);
        let mut seen = std::collections::BTreeSet::new();
        seen.insert(b"/".to_vec());
        if self.layout == Layout::Index {
            for t in &mut w.trees {
                t.stamps.pfs_inum = model::INDEX_ROOT_INUM;
            }
        }
        for (i, (mask, op, _)) in self.ops.iter().enumerate() {
            let tid = i as u64 + 1;
            let inum = model::frontend_inum(&w.trees, op);
            for j in 0..self.roles.len() {
                if mask & (1 << j) != 0 {
                    match self.layout {
                        Layout::Seed => model::apply(&mut w.trees[j], op, tid),
                        Layout::Index => model::apply_index(&mut w.trees[j], op, tid, inum),
                    }
                }
            }
            seen.insert(op.path().to_vec());
        }
        if let Some(r) = &self.new_roles {
            w.roles = r.clone();
        }
        for (j, c) in w.catchup.iter_mut().enumerate() {
            *c = self.catchup & (1 << j) != 0;
        }
        (w, seen.into_iter().collect())
    }

    /// The replay of the committed changes alone (one tree): what every node must hold in the
    /// committed class, by the simple root-level rule "the quorum's history wins".
    pub fn committed_tree(&self) -> Inode {
        let mut t = Inode::root();
        for (i, (_, op, c)) in self.ops.iter().enumerate() {
            if *c {
                model::apply(&mut t, op, i as u64 + 1);
            }
        }
        t
    }
}

fn raw_op() -> impl Strategy<Value = RawOp> {
    (
        any::<u8>(),
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        any::<u8>(),
        prop::bool::weighted(0.8),
    )
        .prop_map(
            |(kind, pick, pick2, mask, size, size_fine, seed, commit)| RawOp {
                kind,
                pick,
                pick2,
                mask,
                size,
                size_fine,
                seed,
                commit,
            },
        )
}

/// Raw cases with up to `max_ops` changes.
pub fn raw_case(max_ops: usize) -> impl Strategy<Value = RawCase> {
    (
        prop::collection::vec(any::<u8>(), 8),
        1u8..=8,
        any::<bool>(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 8),
        prop::collection::vec(raw_op(), 0..=max_ops),
        prop::option::weighted(0.2, prop::collection::vec(any::<u8>(), 8)),
    )
        .prop_map(|(roles, n, committed, qmask, cuts, ops, reroles)| RawCase {
            roles,
            n,
            committed,
            qmask,
            cuts,
            ops,
            reroles,
        })
}

/// Raw cases with up to `max_ops` changes, one node in catch-up mode (an index, reduced modulo
/// the node count) and a read delay of 0 to 3 ms per node.
pub fn raw_catchup_case(max_ops: usize) -> impl Strategy<Value = (RawCase, u8, Vec<u8>)> {
    (
        raw_case(max_ops),
        any::<u8>(),
        prop::collection::vec(0u8..=3, 8),
    )
}

/// [`resolve`], with the catch-up node and the stalls of [`raw_catchup_case`].
/// Histories are of the arbitrary class: catch-up acts only where the masters disagree.
pub fn resolve_catchup((raw, node, stalls): &(RawCase, u8, Vec<u8>)) -> Case {
    let raw = RawCase {
        committed: false,
        ..raw.clone()
    };
    let mut case = resolve(&raw);
    let n = case.roles.len();
    case.catchup = 1 << (usize::from(*node) % n);
    case.stalls = stalls
        .iter()
        .take(n)
        .enumerate()
        .filter(|(_, &ms)| ms > 0)
        .map(|(j, &ms)| (j, u64::from(ms)))
        .collect();
    case
}
