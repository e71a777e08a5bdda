//! Fallible allocation helpers: no allocation on a data path may abort on exhaustion.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::Layout;

use crate::{Error, Result};

/// `Box::new` that returns [`Error::NoMem`] instead of aborting.
pub fn try_box<T>(value: T) -> Result<Box<T>> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(Box::new(value));
    }
    // SAFETY: the layout has a non-zero size, as `alloc` requires.
    let ptr = unsafe { alloc::alloc::alloc(layout) } as *mut T;
    if ptr.is_null() {
        return Err(Error::NoMem);
    }
    // SAFETY: `ptr` is a fresh, non-null allocation with `T`'s layout from the global allocator,
    // which is exactly what `Box::from_raw` requires; `write` initialises it first.
    unsafe {
        ptr.write(value);
        Ok(Box::from_raw(ptr))
    }
}

/// `Vec::push` that returns [`Error::NoMem`] instead of aborting.
pub fn try_push<T>(v: &mut Vec<T>, value: T) -> Result<()> {
    v.try_reserve(1)?;
    v.push(value);
    Ok(())
}

/// A copy of `src` in a new vector, or [`Error::NoMem`].
pub fn try_to_vec<T: Clone>(src: &[T]) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(src.len())?;
    v.extend_from_slice(src);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_work() {
        assert_eq!(*try_box(7u32).unwrap(), 7);
        let mut v = Vec::new();
        try_push(&mut v, 1).unwrap();
        assert_eq!(try_to_vec(&v).unwrap(), [1]);
        assert_eq!(*try_box(()).unwrap(), ());
    }
}
