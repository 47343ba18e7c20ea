//! The bounded buffer of bytes written but not yet acknowledged, and the numbers of the
//! policy that sizes it: each defined here once; [`crate::Config`]'s documentation states
//! the policy for users (`SendSide::may_grow` and `SendSide::shrink_at` apply it).

use std::time::Duration;

/// The capacity a send buffer starts with, and returns to once idle, by default
/// (`Config::send_buffer_size`): the paper's fixed buffer, all `Config::paper` allows.
pub const INITIAL_CAPACITY: usize = 16 * 1024;
/// The most a send buffer grows to by default (`Config::send_buffer_max`), unless its
/// initial capacity is more: Linux's default maximum for a TCP socket's own send buffer
/// (`tcp_wmem`), enough for a gigabit path of 30 ms.
pub const DEFAULT_MAX_CAPACITY: usize = 4 << 20;
/// How long a grown send buffer stays empty before it goes back to its initial capacity.
/// Long against acknowledgement round trips and the pauses inside a transfer or between
/// the requests of a busy session (which would otherwise pay for growing again: a copy of
/// the buffer per doubling), short enough that memory comes back soon after a session
/// goes quiet; the heartbeat interval is of the same order, so an idle session wakes
/// about as often for this as it would anyway.
pub const SHRINK_AFTER: Duration = Duration::from_secs(1);
/// Up to this capacity a full buffer grows whenever the kernel has taken every byte (see
/// `SendSide::may_grow`); past it, only over a path whose round trip is long
/// ([`LONG_ROUND_TRIP`]) or not measured yet. Half of it goes out between two
/// acknowledgement requests: at 1 MiB that is one request per half megabyte, too rare to
/// cost a stream anything measurable, and enough for 500 MB/s over a [`LONG_ROUND_TRIP`].
/// On loopback a larger buffer gains nothing: it only lets more of the stream wait in the
/// kernels' buffers (their autotuning lets a loopback connection hold several megabytes),
/// and that costs CPU, since the bytes then drop out of the caches between their write and
/// their read (measured in `docs/PERFORMANCE.md`). A path under [`LONG_ROUND_TRIP`] that
/// carries more than half of this per round trip (above 1 GB/s at 0.5 ms) is held to it:
/// the price of a rule that needs no rate estimate; `Config::send_buffer_size` can start
/// such a buffer larger.
pub const GROWS_FREELY_UPTO: usize = 1 << 20;
/// A round trip at least this long lets a buffer grow past [`GROWS_FREELY_UPTO`], and
/// grow sooner ([`LONG_PATH_START`], [`LONG_PATH_ACK_STEPS`]): a loopback or LAN round trip
/// is well below it, most WAN paths above it.
pub const LONG_ROUND_TRIP: Duration = Duration::from_millis(1);
/// Over a path measured long, a full buffer (every byte taken by the kernel) grows up to
/// this without waiting for the peer to acknowledge anything. A new session's first
/// acknowledgement comes two round trips after its first bytes (the control path is
/// learnt in the opening's round trip), while TCP's congestion window has doubled after
/// one: a 16 KiB buffer would hold the stream to TCP's first flight for a round trip more.
/// Any peer's kernel takes 64 KiB without closing its window (Linux's default receive
/// buffer is 128 KiB), so a reader that pauses costs nothing more than with the paper's
/// buffer; memory is the price, on long paths only, until the buffer shrinks back.
pub const LONG_PATH_START: usize = 64 * 1024;
/// Over a path measured long, while a stream grows the buffer (from its first growth until
/// its maximum), the writer asks for an acknowledgement at each quarter of it (each half
/// otherwise), and a full buffer grows once the peer acknowledged a quarter since it last
/// changed size. Requests and replies that never fill the initial buffer keep halves: for
/// them quarters would only add datagrams. With a request each half, an acknowledgement frees
/// half the buffer a round trip after it was sent, so the buffer must be twice the bytes
/// a round trip carries and trails TCP's slow start (which doubles every round trip) by
/// about a round trip at each doubling: 5% of a 32 MiB transfer at 40 ms. Quarters let
/// it double twice a round trip until TCP's window, not the buffer, holds the stream back
/// (the writer then blocks in the kernel and growth stops). One request and one
/// acknowledgement more per buffer; the buffer still grows only while the peer's
/// application reads (to at most eight times what it read since the last change).
pub const LONG_PATH_ACK_STEPS: u64 = 4;
/// Elsewhere, requests go at each half of the buffer, and it grows once half was
/// acknowledged since it last changed size: short round trips catch up fast enough.
pub const ACK_STEPS: u64 = 2;

/// A ring of the stream bytes `[acked, end)`: everything written that the peer has not yet
/// acknowledged, kept so it can be resent after a reconnection.
///
/// Positions are absolute stream offsets (`u64`, never wrapping in practice). The capacity
/// can change ([`grow`](Self::grow), [`shrink`](Self::shrink)); the bytes held and their
/// positions stay as they are.
#[derive(Debug)]
pub struct SendBuffer {
    /// Storage, allocated for `capacity` bytes and filled as the first lap of writes goes
    /// round (never zeroed: a new session would otherwise clear its whole buffer, 16 KiB
    /// by default, which cost a short session more than anything but its key
    /// derivation). Its length is `capacity` once the writes have wrapped; before, the
    /// bytes held end at its length. Replaced, never resized in place, when the capacity
    /// changes.
    ring: Vec<u8>,
    /// How many bytes it holds at most.
    capacity: usize,
    /// Index in `ring` of the byte at stream position `acked`.
    head: usize,
    /// Bytes held: `end() - acked`. Always `<= ring.len()`; before the first lap is
    /// complete, `head + len == ring.len()`.
    len: usize,
    /// Stream position of the first byte held: everything before it was acknowledged.
    acked: u64,
}

impl SendBuffer {
    /// An empty buffer that holds up to `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        SendBuffer {
            ring: Vec::with_capacity(capacity),
            capacity,
            head: 0,
            len: 0,
            acked: 0,
        }
    }

    /// How many bytes it holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
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
        if tail == self.ring.len() {
            // The first lap: the bytes go after the last ones ever stored, and reach at
            // most the end of the capacity; nothing wraps before the lap is complete.
            self.ring.extend_from_slice(&data[..first]);
        } else {
            self.ring[tail..tail + first].copy_from_slice(&data[..first]);
        }
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

    /// The capacity [`grow`](Self::grow) makes: twice this one, at most `max`, and never
    /// less than this one.
    pub fn next_capacity(&self, max: usize) -> usize {
        self.capacity()
            .saturating_mul(2)
            .min(max)
            .max(self.capacity())
    }

    /// Doubles the capacity, or raises it to `max` if that is less; returns whether it
    /// grew (not if it is already at `max` or beyond).
    pub fn grow(&mut self, max: usize) -> bool {
        let target = self.next_capacity(max);
        if target == self.capacity() {
            return false;
        }
        self.reallocate(target);
        true
    }

    /// Lowers the capacity to `to`, or to what it holds if that is more; returns whether
    /// it shrank.
    pub fn shrink(&mut self, to: usize) -> bool {
        let target = to.max(self.len);
        if target >= self.capacity() {
            return false;
        }
        self.reallocate(target);
        true
    }

    /// Moves the bytes held into a new ring of `capacity` bytes (at least `len`), from its
    /// start: the positions stay, the ring's wrap goes.
    fn reallocate(&mut self, capacity: usize) {
        let mut ring = Vec::with_capacity(capacity);
        let (a, b) = self.slices_from(self.acked);
        ring.extend_from_slice(a);
        ring.extend_from_slice(b);
        self.ring = ring;
        self.capacity = capacity;
        self.head = 0;
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

    /// A buffer of `capacity` whose bytes wrap around the end of the ring: it holds the
    /// stream bytes 6..6+held, whose values are their positions.
    fn wrapped(capacity: usize, held: usize) -> SendBuffer {
        let mut b = SendBuffer::new(capacity);
        let bytes: Vec<u8> = (0..(6 + held) as u8).collect();
        assert_eq!(b.push(&bytes[..6]), 6);
        assert!(b.ack(6));
        assert_eq!(b.push(&bytes[6..]), held);
        let (first, second) = b.slices_from(6);
        assert!(!second.is_empty() && !first.is_empty(), "the bytes wrap");
        b
    }

    #[test]
    fn grows_by_doubling_up_to_the_max_keeping_bytes_and_positions() {
        let mut b = wrapped(8, 8);
        assert_eq!(b.space(), 0);
        assert!(b.grow(100));
        assert_eq!((b.capacity(), b.len(), b.acked(), b.end()), (16, 8, 6, 14));
        assert_eq!(b.copy_from(0, usize::MAX), (6..14).collect::<Vec<u8>>());
        assert_eq!(b.copy_from(10, 2), [10, 11]);
        // The new room is usable, and wraps correctly later on.
        assert_eq!(b.push(&[14, 15, 16, 17]), 4);
        assert!(b.ack(12));
        assert_eq!(b.push(&(18..28).collect::<Vec<u8>>()), 10);
        assert_eq!(b.copy_from(0, usize::MAX), (12..28).collect::<Vec<u8>>());
        assert!(b.grow(20), "to the max, not past it");
        assert_eq!(b.capacity(), 20);
        assert!(!b.grow(20), "at the max already");
        assert!(!b.grow(4), "a max below the capacity never shrinks it");
        assert_eq!(b.capacity(), 20);
        assert_eq!(b.copy_from(0, usize::MAX), (12..28).collect::<Vec<u8>>());
    }

    #[test]
    fn shrinks_to_the_target_or_to_what_it_holds() {
        let mut b = wrapped(8, 5);
        assert!(b.grow(64));
        assert!(b.grow(64));
        assert_eq!(b.capacity(), 32);
        assert!(b.shrink(4), "no lower than what it holds");
        assert_eq!((b.capacity(), b.len(), b.acked()), (5, 5, 6));
        assert_eq!(b.copy_from(0, usize::MAX), (6..11).collect::<Vec<u8>>());
        assert!(!b.shrink(2));
        assert!(b.ack(11));
        assert!(b.is_empty());
        assert!(b.grow(64));
        assert!(b.shrink(8));
        assert_eq!((b.capacity(), b.len(), b.end()), (8, 0, 11));
        assert!(!b.shrink(8), "already there");
        assert_eq!(b.push(&[11; 9]), 8);
        assert_eq!(b.end(), 19);
    }

    #[test]
    fn any_sequence_of_pushes_acks_and_resizes_keeps_the_bytes() {
        // Against a model of the bytes held, from a fresh buffer (whose storage fills as
        // the first lap goes round) through wraps, growth and shrinking.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |bound: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % bound
        };
        for _ in 0..50 {
            let mut b = SendBuffer::new(1 + next(12) as usize);
            let mut model = std::collections::VecDeque::new();
            let mut written = 0u64;
            for _ in 0..200 {
                match next(4) {
                    0 | 1 => {
                        let data: Vec<u8> = (0..next(9)).map(|i| (written + i) as u8).collect();
                        let n = b.push(&data);
                        assert_eq!(n, data.len().min(b.capacity() - model.len()));
                        model.extend(&data[..n]);
                        written += n as u64;
                    }
                    2 => {
                        let upto = b.acked() + next(model.len() as u64 + 1);
                        b.ack(upto);
                        model.drain(..(upto - (written - model.len() as u64)) as usize);
                    }
                    _ if next(2) == 0 => {
                        b.grow(b.capacity() + next(8) as usize);
                    }
                    _ => {
                        b.shrink(next(16) as usize);
                    }
                }
                assert_eq!((b.len(), b.end()), (model.len(), written));
                let all: Vec<u8> = model.iter().copied().collect();
                assert_eq!(b.copy_from(0, usize::MAX), all);
            }
        }
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
