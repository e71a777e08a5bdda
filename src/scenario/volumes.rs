//! `cluster volumes=on`: every node a PFS on a volume image of its own (userland only for
//! now: a sparse image in memory), made by `newfs` and loaded with [`crate::mount::load`];
//! `remount <idx>` commits the node to its image and loads it back, `crash <idx>` loads it
//! back without committing, so what the node had not committed is gone.

// Errors carry a fixed-capacity reason on purpose (see `lex::Reason`): never allocates.
#![allow(clippy::result_large_err)]

#[cfg(feature = "std")]
use alloc::vec::Vec;
use core::pin::Pin;

use alloc::boxed::Box;

use super::lex::Reason;
use crate::cluster::Cluster;
use crate::host::Host;
use crate::role::Role;

type R<T> = Result<T, Reason>;

/// The volume side of each node of a cluster on volumes (none for a cluster in memory).
#[derive(Default)]
pub(super) struct Volumes {
    #[cfg(feature = "std")]
    nodes: Vec<imp::VolNode>,
}

/// A cluster of `roles` whose nodes are PFSs on fresh volume images.
#[cfg(not(feature = "std"))]
pub(super) fn cluster(_: &'static dyn Host, _: &[Role]) -> R<(Pin<Box<Cluster>>, Volumes)> {
    Err(super::lex::reason!(
        "volumes=on: this host cannot put nodes on volumes yet"
    ))
}

/// Commit (`commit`) then reload node `idx` from its volume.
#[cfg(not(feature = "std"))]
pub(super) fn reload(_: &Cluster, _: &mut Volumes, _: usize, _: bool) -> R<()> {
    Err(super::lex::reason!(
        "the cluster is not on volumes (cluster volumes=on ...)"
    ))
}

#[cfg(feature = "std")]
pub(super) use imp::{cluster, reload};

#[cfg(feature = "std")]
mod imp {
    use super::super::lex::reason;
    use super::*;
    use crate::host::LockMode;
    use crate::mount::{self, image::MemImage, Mounted};
    use crate::store::Layout;
    use crate::thread::{Request, ThreadState};
    use crate::volume::{newfs, NewPfs, NewfsOptions, Volume};

    /// Bytes of each node's image (sparse: only what is written takes memory).
    const IMAGE_BYTES: u64 = 256 << 20;
    /// The PFS label every node's volume holds.
    const LABEL: &[u8] = b"DATA";

    pub(in super::super) struct VolNode {
        image: MemImage,
        mounted: Mounted,
    }

    /// A cluster of `roles` whose nodes are PFSs on fresh volume images: newfs, load, the
    /// root's TID set to 0 (where a cluster in memory begins, so the TIDs a scenario expects
    /// are the same) and committed.
    pub(in super::super) fn cluster(
        host: &'static dyn Host,
        roles: &[Role],
    ) -> R<(Pin<Box<Cluster>>, Volumes)> {
        let nmasters = roles.iter().filter(|r| **r == Role::Master).count() as u8;
        let mut nodes = Vec::new();
        let mut stores = Vec::new();
        for (idx, role) in roles.iter().enumerate() {
            let e =
                |what: &str, err: crate::Error| reason!("volumes: node {}: {}: {}", idx, what, err);
            let image = MemImage::new(IMAGE_BYTES);
            let id = [idx as u8 + 1; 16];
            let pfs = [NewPfs {
                label: LABEL,
                pfs_type: role.pfs_type(),
                clid: *b"hammer2-synchro\0",
                fsid: id,
                nmasters,
            }];
            let opts = NewfsOptions {
                size: IMAGE_BYTES,
                fsid: id,
                sroot_ids: (id, id),
                pfs: &pfs,
                now_us: 0,
            };
            newfs(&image, &opts).map_err(|x| e("newfs", x))?;
            let vol = Volume::open(&image).map_err(|x| e("open", x.into()))?;
            let (store, mut mounted) = mount::load(host, &vol, LABEL).map_err(|x| e("load", x))?;
            {
                let g = store.lock_root(LockMode::Exclusive);
                store.set_modify_tid(&g, 0).map_err(|x| e("load", x))?;
            }
            mount::commit(&vol, &store, &mut mounted).map_err(|x| e("commit", x))?;
            crate::mem::try_push(&mut stores, store).map_err(|x| e("load", x))?;
            crate::mem::try_push(&mut nodes, VolNode { image, mounted })
                .map_err(|x| e("load", x))?;
        }
        let c = Cluster::from_stores(host, roles, stores, Layout::Index)
            .map_err(|x| reason!("cluster: {}", x))?;
        Ok((c, Volumes { nodes }))
    }

    /// Commit node `idx` to its image when `commit`, then load it back in place. Every running
    /// sync thread is frozen around it (a pass must not read a tree being replaced) and
    /// unfrozen after.
    pub(in super::super) fn reload(
        c: &Cluster,
        v: &mut Volumes,
        idx: usize,
        commit: bool,
    ) -> R<()> {
        let verb = if commit { "remount" } else { "crash" };
        let Some(node) = v.nodes.get_mut(idx) else {
            return Err(reason!(
                "{}: the cluster is not on volumes (cluster volumes=on ...)",
                verb
            ));
        };
        let mut frozen = Vec::new();
        for i in 0..c.len() {
            if c.thread_state(i) == ThreadState::Running {
                c.thread_request(i, Request::Freeze)
                    .map_err(|e| reason!("{}: freeze node {}: {}", verb, i, e))?;
                crate::mem::try_push(&mut frozen, i).map_err(|e| reason!("{}: {}", verb, e))?;
            }
        }
        let r = (|| {
            let store = c.store(idx)?;
            if commit {
                let vol = Volume::open(&node.image).map_err(crate::Error::from)?;
                mount::commit(&vol, store, &mut node.mounted)?;
            }
            let vol = Volume::open(&node.image).map_err(crate::Error::from)?;
            mount::reload(&vol, store, &mut node.mounted)
        })();
        for i in frozen {
            let _ = c.thread_request(i, Request::Unfreeze);
        }
        r.map_err(|e| reason!("{} {}: {}", verb, idx, e))
    }
}
