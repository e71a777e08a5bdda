//! Text output into a caller-owned byte buffer.

use core::fmt;

/// A `fmt::Write` over a caller buffer: keeps what fits, remembers whether anything was cut.
pub struct OutBuf<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl<'a> OutBuf<'a> {
    /// An empty writer over `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        OutBuf {
            buf,
            len: 0,
            overflow: false,
        }
    }
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Whether some output did not fit.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }
    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for OutBuf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            self.overflow = true;
            return Err(fmt::Error);
        }
        Ok(())
    }
}

/// A fixed-size on-stack line for log and panic messages (cut at `N` bytes; line breaks become
/// spaces, so one message stays one kernel log line).
pub struct Line<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Line<N> {
    /// An empty line.
    pub const fn new() -> Self {
        Line {
            buf: [0; N],
            len: 0,
        }
    }
    /// The bytes written (possibly cut).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl<const N: usize> Default for Line<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for Line<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == N {
                break;
            }
            self.buf[self.len] = if b == b'\n' { b' ' } else { b };
            self.len += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn outbuf_cuts_and_reports_overflow() {
        let mut b = [0u8; 5];
        let mut w = OutBuf::new(&mut b);
        assert!(w.write_str("abc").is_ok());
        assert!(!w.overflowed());
        assert!(w.write_str("defg").is_err());
        assert!(w.overflowed());
        assert_eq!(w.as_bytes(), b"abcde");
    }

    #[test]
    fn line_truncates_silently() {
        let mut l = Line::<4>::new();
        write!(l, "{}-{}", 123, 456).unwrap();
        assert_eq!(l.as_bytes(), b"123-");
        let mut l = Line::<8>::new();
        write!(l, "a\nb").unwrap();
        assert_eq!(l.as_bytes(), b"a b");
    }
}
