//! The chain arena's slot table: a vector that grows by adding chunks, each twice as large as
//! the one before, instead of moving everything to a table twice as large.
//!
//! A store of 10^6 chains holds hundreds of megabytes of slots. Grown as one vector, every
//! doubling copied the whole table under the arena's write lock (every reader of the store
//! spinning meanwhile) and touched twice its size in fresh pages. Here a slot never moves: a
//! new chunk is allocated outside the lock and installed under it, and an index finds its chunk
//! with one `ilog2`. The first chunk holds [`FIRST`] slots, so an empty store stays small.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::Result;

/// Slots of the first chunk; chunk `c` holds `FIRST << c`.
const FIRST: usize = 16;
/// Chunks, enough for every `u32` index (16 · (2^29 - 1) > 2^32 - 1).
const CHUNKS: usize = 29;

/// The chunk holding index `i`, and `i`'s offset in it.
fn locate(i: usize) -> (usize, usize) {
    let c = ((i + FIRST) / FIRST).ilog2() as usize;
    (c, i - FIRST * ((1 << c) - 1))
}

/// A growable table whose elements never move (see the module docs).
pub(crate) struct Slab<T> {
    /// Boxed: the chunk headers take 700 bytes, which every frame holding a store by value
    /// (a kernel's small stack among them) would carry.
    chunks: Box<[Vec<T>; CHUNKS]>,
    len: usize,
}

impl<T> Slab<T> {
    /// An empty table (one allocation: the chunk headers).
    pub(crate) fn new() -> Result<Slab<T>> {
        Ok(Slab {
            chunks: crate::mem::try_box(core::array::from_fn(|_| Vec::new()))?,
            len: 0,
        })
    }

    /// Elements in the table.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Element `i`.
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        let (c, o) = locate(i);
        self.chunks.get(c)?.get(o)
    }

    /// Element `i`, mutably.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let (c, o) = locate(i);
        self.chunks.get_mut(c)?.get_mut(o)
    }

    /// The capacity of the chunk the next push needs, when it is not allocated yet (None: the
    /// push has room, or the table is at its largest and the push fails).
    pub(crate) fn wanted(&self) -> Option<usize> {
        let (c, o) = locate(self.len);
        let chunk = self.chunks.get(c)?;
        (chunk.capacity() <= o).then_some(FIRST << c)
    }

    /// Install `chunk` (empty, with the capacity [`Slab::wanted`] asked for) as the chunk the
    /// next push needs. Hands it back when it is not needed (any more), for the caller to free
    /// outside its lock.
    ///
    /// The caller allocated `chunk` outside the lock, so the table may have moved on meanwhile:
    /// another insert may have installed and filled the chunk it was meant for. Only a chunk of
    /// the full size of the chunk now needed goes in, and only where no chunk is yet: a smaller
    /// one would fill early and the next install would then drop the live slots it held.
    pub(crate) fn install(&mut self, chunk: Vec<T>) -> Option<Vec<T>> {
        let (c, _) = locate(self.len);
        match self.chunks.get_mut(c) {
            Some(slot)
                if slot.capacity() == 0 && chunk.is_empty() && chunk.capacity() >= FIRST << c =>
            {
                Some(core::mem::replace(slot, chunk))
            }
            _ => Some(chunk),
        }
    }

    /// Append `v` without allocating; `Err(v)` when its chunk is not installed.
    pub(crate) fn push(&mut self, v: T) -> core::result::Result<(), T> {
        let (c, o) = locate(self.len);
        match self.chunks.get_mut(c) {
            Some(chunk) if chunk.len() == o && chunk.capacity() > o => {
                chunk.push(v);
                self.len += 1;
                Ok(())
            }
            _ => Err(v),
        }
    }

    /// Every element, in index order.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.chunks.iter_mut().flat_map(|c| c.iter_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_map_to_consecutive_chunks() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(15), (0, 15));
        assert_eq!(locate(16), (1, 0));
        assert_eq!(locate(47), (1, 31));
        assert_eq!(locate(48), (2, 0));
        assert_eq!(locate(u32::MAX as usize).0, CHUNKS - 1);
    }

    #[test]
    fn grows_by_installed_chunks_and_never_moves_an_element() {
        let mut s: Slab<u64> = Slab::new().unwrap();
        assert_eq!(s.push(7), Err(7), "no chunk yet");
        let mut first = None;
        for i in 0..1000u64 {
            if let Some(n) = s.wanted() {
                let mut v = Vec::new();
                v.try_reserve_exact(n).unwrap();
                assert!(
                    s.install(v).unwrap().capacity() == 0,
                    "the old empty chunk comes back"
                );
                // A second chunk for the same place is handed back unused.
                let mut w = Vec::new();
                w.try_reserve_exact(n).unwrap();
                assert!(s.install(w).unwrap().capacity() >= n);
            }
            s.push(i).unwrap();
            if i == 0 {
                first = s.get(0).map(|p| p as *const u64);
            }
        }
        assert_eq!(s.len(), 1000);
        assert_eq!(
            s.get(0).map(|p| p as *const u64),
            first,
            "element 0 never moved"
        );
        assert!((0..1000).all(|i| s.get(i as usize) == Some(&i)));
        assert_eq!(s.get(1000), None);
        *s.get_mut(999).unwrap() = 1;
        assert_eq!(s.iter_mut().map(|v| *v).sum::<u64>(), 999 * 998 / 2 + 1);
    }

    fn chunk<T>(n: usize) -> Vec<T> {
        let mut v = Vec::new();
        v.try_reserve_exact(n).unwrap();
        v
    }

    /// Two inserters race to grow the table: A asks what chunk is wanted, B installs that chunk
    /// and fills it, then A installs its chunk late. A's chunk, sized for the chunk B filled,
    /// must be refused as the next one (twice as large), or it fills early and the install
    /// after it drops the slots it held.
    #[test]
    fn a_late_chunk_sized_for_a_filled_one_is_refused() {
        let mut s: Slab<u64> = Slab::new().unwrap();
        s.install(chunk(s.wanted().unwrap()));
        for i in 0..16 {
            s.push(i).unwrap();
        }
        let a_wants = s.wanted().unwrap();
        s.install(chunk(s.wanted().unwrap()));
        for i in 16..48 {
            s.push(i).unwrap();
        }
        let back = s.install(chunk::<u64>(a_wants));
        assert!(
            back.is_some_and(|v| v.capacity() >= a_wants),
            "the late chunk comes back"
        );
        for i in 48..200u64 {
            if let Some(n) = s.wanted() {
                s.install(chunk(n));
            }
            s.push(i).unwrap();
        }
        assert!((0..200u64).all(|i| s.get(i as usize) == Some(&i)));
    }
}
