//! Output pacing (layer: edge helper, pure): how many bytes a serial line at a given baud rate can
//! have taken by a given time, counting 10 bits per byte (8N1: a start bit, 8 data bits, a stop
//! bit). With `--pace`, the driver writes no faster than this on any front end, so host timing bugs
//! that only show on a real UART show on a pty or TCP too. No clock: time comes in as arguments.

use std::time::{Duration, Instant};

/// Bits on the wire per byte (8N1).
pub(crate) const BITS_PER_BYTE: u64 = 10;

/// How far ahead of the wire the driver may hand bytes to the OS: small enough that the bytes
/// leave the OS within this much of their wire time, large enough not to wake up for every byte.
pub(crate) const HORIZON: Duration = Duration::from_millis(2);

/// A serial line's transmitter: when it is done with what it was given. Time is counted from the
/// start of the current burst, so rounding never accumulates.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    baud: u32,
    /// Start of the current burst of back-to-back bytes.
    origin: Instant,
    /// Bytes handed over since `origin`.
    queued: u64,
    /// When the last byte handed over has left the wire.
    busy_until: Instant,
}

impl Pacer {
    pub(crate) fn new(baud: u32, now: Instant) -> Pacer {
        Pacer {
            baud: baud.max(1),
            origin: now,
            queued: 0,
            busy_until: now,
        }
    }

    /// Change the rate (after what was sent at the old one has left, as a UART does).
    pub(crate) fn set_baud(&mut self, baud: u32) {
        self.origin = self.busy_until;
        self.queued = 0;
        self.baud = baud.max(1);
    }

    /// The wire time of `n` bytes.
    pub(crate) fn wire_time(&self, n: usize) -> Duration {
        Duration::from_nanos(n as u64 * BITS_PER_BYTE * 1_000_000_000 / self.baud as u64)
    }

    /// How far ahead of the wire bytes may be handed over: the horizon, or one byte on a slow line.
    fn ahead(&self) -> Duration {
        HORIZON.max(self.wire_time(1))
    }

    /// How many bytes may be handed over at `now` (0: wait until [`Pacer::next_at`]): as many as
    /// leave the wire within [`HORIZON`] of now.
    pub(crate) fn allowance(&self, now: Instant) -> usize {
        let start = self.busy_until.max(now);
        let limit = now + self.ahead();
        let per_byte = self.wire_time(1).max(Duration::from_nanos(1));
        match limit.checked_duration_since(start) {
            Some(room) => (room.as_nanos() / per_byte.as_nanos()) as usize,
            None => 0,
        }
    }

    /// `n` bytes were handed over at `now`.
    pub(crate) fn sent(&mut self, n: usize, now: Instant) {
        if n == 0 {
            return;
        }
        if now >= self.busy_until {
            // The line was idle: a new burst starts now.
            self.origin = now;
            self.queued = 0;
        }
        self.queued += n as u64;
        self.busy_until = self.origin + self.wire_time(self.queued as usize);
    }

    /// When more bytes may be handed over: when one more byte fits the horizon, or `now` if one
    /// fits already (time passed since the last write). Always an instant, so a caller cannot
    /// mistake "now" for "no deadline" and stall the line.
    pub(crate) fn next_at(&self, now: Instant) -> Instant {
        if self.allowance(now) > 0 {
            return now;
        }
        self.busy_until - self.ahead() + self.wire_time(1).max(Duration::from_nanos(1))
    }

    /// When the line has sent everything it was given.
    pub(crate) fn idle_at(&self) -> Instant {
        self.busy_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive a pacer like the driver does, in virtual time: write what it allows, sleep until
    /// `next_at`, until `total` bytes are out. Returns when the last byte left the wire.
    fn send_all(p: &mut Pacer, start: Instant, total: usize) -> Instant {
        let mut now = start;
        let mut left = total;
        for _ in 0..1_000_000 {
            if left == 0 {
                return p.idle_at();
            }
            let n = p.allowance(now).min(left);
            p.sent(n, now);
            left -= n;
            let t = p.next_at(now);
            if left > 0 {
                assert!(t > now, "a full line's next_at must move forward");
            }
            now = t;
        }
        panic!("never finished");
    }

    #[test]
    fn output_takes_its_wire_time_at_115200() {
        let start = Instant::now();
        let mut p = Pacer::new(115_200, start);
        let done = send_all(&mut p, start, 11_520);
        // 11 520 bytes × 10 bits at 115 200 baud: one second.
        assert_eq!(done - start, Duration::from_secs(1));
    }

    #[test]
    fn allowance_is_one_horizon_of_bytes_and_never_zero_when_idle() {
        let now = Instant::now();
        let p = Pacer::new(115_200, now);
        // 2 ms at 115 200 baud: 23 bytes.
        assert_eq!(p.allowance(now), 23);
        let slow = Pacer::new(1200, now);
        // One byte takes 8.3 ms at 1200 baud: still one at a time.
        assert_eq!(slow.allowance(now), 1);
    }

    #[test]
    fn a_busy_line_says_when_to_come_back() {
        let now = Instant::now();
        let mut p = Pacer::new(9600, now);
        p.sent(96, now); // 100 ms of wire time
        assert_eq!(p.allowance(now), 0);
        let back = p.next_at(now);
        // 100 ms of bytes, less the 2 ms horizon, plus one byte's 1.04 ms.
        assert_eq!(back - now, Duration::from_nanos(99_041_666));
        assert_eq!(p.allowance(back), 1);
        assert_eq!(p.allowance(back - Duration::from_nanos(1)), 0);
    }

    #[test]
    fn a_line_that_drained_meanwhile_says_now() {
        // The driver computes its deadline a while after its last write: if a byte fits by then,
        // the answer must be "now", not "nothing to wait for" (a stalled reply under load).
        let start = Instant::now();
        let mut p = Pacer::new(9600, start);
        p.sent(96, start);
        let later = start + Duration::from_millis(100);
        assert!(p.allowance(later) > 0);
        assert_eq!(p.next_at(later), later);
    }

    #[test]
    fn a_rate_change_applies_to_later_bytes() {
        let start = Instant::now();
        let mut p = Pacer::new(115_200, start);
        let mid = send_all(&mut p, start, 1152);
        assert_eq!(mid - start, Duration::from_millis(100));
        p.set_baud(921_600);
        let end = send_all(&mut p, mid, 9216);
        assert_eq!(end - mid, Duration::from_millis(100));
    }
}
