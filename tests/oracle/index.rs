//! What a committed history leaves visible in today's layout, replayed independently of both
//! the store and the seed-era model: names map to inodes, a hardlink is a second name of the
//! same inode (a change through either name is seen through both), a removed name takes its
//! inode only with its last name, a removed directory takes every name below it.

use std::collections::BTreeMap;

use super::gen::Case;
use super::model::{prng_bytes, Op, OBJ_DIR, OBJ_FILE};
use super::real::Seen;

/// One inode: a directory, or a file's bytes; its mode once chmod set it.
#[derive(Clone)]
struct Ino {
    dir: bool,
    mode: Option<u32>,
    data: Vec<u8>,
}

/// Every name (full path) and the inode it names.
#[derive(Default)]
pub struct Names {
    paths: BTreeMap<Vec<u8>, usize>,
    inodes: Vec<Ino>,
}

impl Names {
    /// The committed changes of `case`, in order.
    pub fn committed(case: &Case) -> Names {
        let mut n = Names::default();
        for (_, op, committed) in &case.ops {
            if *committed {
                n.apply(op);
            }
        }
        n
    }

    fn new_inode(&mut self, path: &[u8], ino: Ino) {
        self.inodes.push(ino);
        self.paths.insert(path.to_vec(), self.inodes.len() - 1);
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Mkdir(p) => self.new_inode(
                p,
                Ino {
                    dir: true,
                    mode: None,
                    data: Vec::new(),
                },
            ),
            Op::Write { path, bytes, seed } => {
                let data = prng_bytes(*bytes, *seed);
                match self.paths.get(path) {
                    Some(&i) => self.inodes[i].data = data,
                    None => self.new_inode(
                        path,
                        Ino {
                            dir: false,
                            mode: None,
                            data,
                        },
                    ),
                }
            }
            Op::Rm(p) => {
                let below =
                    |q: &Vec<u8>| q == p || (q.starts_with(p) && q.get(p.len()) == Some(&b'/'));
                self.paths.retain(|q, _| !below(q));
            }
            Op::Chmod(p, mode) => {
                if let Some(&i) = self.paths.get(p) {
                    self.inodes[i].mode = Some(*mode);
                }
            }
            Op::Link(target, p) => {
                if let Some(&i) = self.paths.get(target) {
                    self.paths.insert(p.clone(), i);
                }
            }
        }
    }

    /// What `path` (not the root) must show (its modify_tid 0: not compared), with `dir_perm`
    /// and `file_perm` the modes of a fresh directory and file.
    pub fn expect(&self, path: &[u8], dir_perm: u32, file_perm: u32) -> Seen {
        let Some(&i) = self.paths.get(path) else {
            return Seen::Missing;
        };
        let ino = &self.inodes[i];
        if ino.dir {
            Seen::Inode {
                objtype: OBJ_DIR,
                perm: ino.mode.unwrap_or(dir_perm),
                size: 0,
                tid: 0,
                data: None,
            }
        } else {
            Seen::Inode {
                objtype: OBJ_FILE,
                perm: ino.mode.unwrap_or(file_perm),
                size: ino.data.len() as u64,
                tid: 0,
                data: Some(ino.data.clone()),
            }
        }
    }
}
