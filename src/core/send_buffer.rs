//! The bounded buffer of bytes written but not yet acknowledged.

/// A ring of the stream bytes `[acked, end)`: everything written that the peer has not yet
/// acknowledged, kept so it can be resent after a reconnection.
///
/// Positions are absolute stream offsets (`u64`, never wrapping in practice).
#[derive(Debug)]
pub struct SendBuffer {
    /// Storage; its length is the capacity. Never reallocated.
    ring: Box<[u8]>,
    /// Index in `ring` of the byte at stream position `acked`.
    head: usize,
    /// Bytes held: `end() - acked`. Always `<= ring.len()`.
    len: usize,
    /// Stream position of the first byte held: everything before it was acknowledged.
    acked: u64,
}

impl SendBuffer {
    /// An empty buffer that holds up to `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        SendBuffer {
            ring: vec![0; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
            acked: 0,
        }
    }

    /// How many bytes it holds at most.
    pub fn capacity(&self) -> usize {
        self.ring.len()
    }

    /// How many unacknowledged bytes it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether every byte written has been acknowledged.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many more bytes fit.
    pub fn space(&self) -> usize {
        self.capacity() - self.len
    }

    /// Stream position of the first unacknowledged byte.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Stream position one past the last byte written: the total written so far.
    pub fn end(&self) -> u64 {
        self.acked + self.len as u64
    }

    /// Appends as much of `data` as fits and returns how much that was.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.space());
        let cap = self.capacity();
        if n == 0 {
            return 0;
        }
        let tail = (self.head + self.len) % cap;
        let first = n.min(cap - tail);
        self.ring[tail..tail + first].copy_from_slice(&data[..first]);
        self.ring[..n - first].copy_from_slice(&data[first..n]);
        self.len += n;
        n
    }

    /// Drops the bytes before stream position `upto`. A position outside
    /// `(acked, end]` is ignored, so that no acknowledgement can drop unsent data or go
    /// backwards. Returns whether anything was dropped.
    pub fn ack(&mut self, upto: u64) -> bool {
        if upto <= self.acked || upto > self.end() {
            return false;
        }
        // In range, so the difference is at most `len`, which is a usize.
        let n = (upto - self.acked) as usize;
        self.head = (self.head + n) % self.capacity();
        self.len -= n;
        self.acked = upto;
        true
    }

    /// The bytes from stream position `from` to the end, as at most two slices (the ring may
    /// wrap). `from` is clamped into `[acked, end]`.
    pub fn slices_from(&self, from: u64) -> (&[u8], &[u8]) {
        let cap = self.capacity();
        let skip = from.clamp(self.acked, self.end()) - self.acked;
        let skip = skip as usize; // at most `len`
        let n = self.len - skip;
        if n == 0 {
            return (&[], &[]);
        }
        let start = (self.head + skip) % cap;
        let first = n.min(cap - start);
        (&self.ring[start..start + first], &self.ring[..n - first])
    }

    /// Copies at most `max` bytes from stream position `from` on into a new vector.
    pub fn copy_from(&self, from: u64, max: usize) -> Vec<u8> {
        let (a, b) = self.slices_from(from);
        let a = a.get(..max).unwrap_or(a);
        let b = b.get(..max - a.len()).unwrap_or(b);
        let mut out = Vec::with_capacity(a.len() + b.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_is_bounded_and_ack_frees_space() {
        let mut b = SendBuffer::new(8);
        assert_eq!(b.push(b"abcdef"), 6);
        assert_eq!(b.push(b"ghijk"), 2);
        assert_eq!(b.space(), 0);
        assert!(b.ack(3));
        assert_eq!(b.copy_from(0, usize::MAX), b"defgh");
        assert_eq!(b.push(b"ijk"), 3);
        assert_eq!(b.copy_from(3, usize::MAX), b"defghijk");
        assert_eq!(b.copy_from(9, usize::MAX), b"jk");
        assert_eq!(b.copy_from(3, 4), b"defg", "bounded across the wrap");
        assert_eq!(b.copy_from(3, 2), b"de");
        assert_eq!(b.end(), 11);
    }

    #[test]
    fn acks_outside_the_window_are_ignored() {
        let mut b = SendBuffer::new(16);
        b.push(b"0123456789");
        assert!(!b.ack(11), "ack beyond what was written");
        assert!(b.ack(4));
        assert!(!b.ack(3), "ack going backwards");
        assert!(!b.ack(4), "duplicate ack");
        assert_eq!(b.copy_from(0, usize::MAX), b"456789");
    }

    #[test]
    fn wraps_around_the_ring() {
        let mut b = SendBuffer::new(5);
        let mut expect = Vec::new();
        let mut pos = 0u64;
        for round in 0..50u8 {
            let chunk = [round, round.wrapping_add(1), round.wrapping_add(2)];
            let n = b.push(&chunk);
            expect.extend_from_slice(&chunk[..n]);
            let (x, y) = b.slices_from(b.acked());
            assert_eq!([x, y].concat(), expect[(b.acked() - pos) as usize..]);
            let upto = b.acked() + 2.min(b.len() as u64);
            b.ack(upto);
            let drop = (upto - pos) as usize;
            expect.drain(..drop);
            pos = upto;
        }
    }
}
