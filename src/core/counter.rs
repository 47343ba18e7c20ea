//! Byte counters: `u64` inside a session, 32 bits on the wire.
//!
//! The paper sends counts as 32-bit numbers that wrap at 2^32. A count on the wire is
//! unambiguous because the receiver always knows a window `[low, high]` it must fall in,
//! and that window is far narrower than 2^32 (the send buffer is at most 1 GiB).

/// The 32 bits of `count` that go on the wire.
pub fn to_wire(count: u64) -> u32 {
    // Truncation is the wire format: the counter wraps at 2^32.
    count as u32
}

/// The absolute count in `[low, high]` whose low 32 bits are `wire`, if there is one.
///
/// Needs `high - low < 2^32`, which holds for every window a session checks.
pub fn from_wire(wire: u32, low: u64, high: u64) -> Option<u64> {
    let distance = wire.wrapping_sub(to_wire(low));
    let candidate = low.checked_add(u64::from(distance))?;
    (candidate <= high).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_inside_the_window() {
        assert_eq!(from_wire(15, 10, 20), Some(15));
        assert_eq!(from_wire(10, 10, 10), Some(10));
        assert_eq!(from_wire(9, 10, 20), None);
        assert_eq!(from_wire(21, 10, 20), None);
    }

    #[test]
    fn recovers_counts_across_the_wrap() {
        let low = (1u64 << 32) - 2;
        let high = (1u64 << 32) + 100;
        assert_eq!(from_wire(3, low, high), Some((1u64 << 32) + 3));
        assert_eq!(from_wire(u32::MAX, low, high), Some((1u64 << 32) - 1));
        let five_gib = 5 * (1u64 << 30);
        assert_eq!(
            from_wire(to_wire(five_gib), five_gib - 7, five_gib),
            Some(five_gib)
        );
    }

    #[test]
    fn never_overflows() {
        assert_eq!(from_wire(5, u64::MAX - 1, u64::MAX), None);
        assert_eq!(
            from_wire(to_wire(u64::MAX), u64::MAX, u64::MAX),
            Some(u64::MAX)
        );
    }
}
