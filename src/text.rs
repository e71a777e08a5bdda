//! [`Text`]: a message of fixed capacity, for reporting where allocation may fail.

use core::fmt;

/// A short text of at most `N` bytes; longer writes are cut (never a panic, never an
/// allocation), so a failure can be reported however exhausted the heap is.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Text<const N: usize>(heapless::String<N>);

impl<const N: usize> Text<N> {
    /// An empty text.
    pub const fn new() -> Self {
        Text(heapless::String::new())
    }
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const N: usize> fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.0.push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> core::ops::Deref for Text<N> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn long_writes_are_cut_at_a_char_boundary() {
        let mut t = Text::<4>::new();
        let tail = "cdé";
        let _ = write!(t, "ab{tail}");
        assert_eq!(t.as_str(), "abcd");
        let mut t = Text::<4>::new();
        let _ = write!(t, "abcé");
        assert_eq!(&*t, "abc");
    }
}
