//! The floor under a client's transfer rate, for the bytes no worker waits for in the watcher: a
//! request body too large to keep, which the `req-N-fwd` thread streams from the client, and the
//! response, which the `req-N-rev` thread (and at the end the worker) writes to it.
//!
//! Modelled on Apache's `mod_reqtimeout` (`MinRate`) and Kestrel's `MinRequestBodyDataRate` /
//! `MinResponseDataRate`: a client may take `grace`, plus one second for every `bytesPerSecond`
//! bytes moved. Only the time spent *blocked on the client* counts: a read that waits for the
//! client's next body bytes, or a write that waits for the client to take the last ones. Time spent
//! waiting on the backend (a slow upstream, a server-sent event stream that is quiet for minutes)
//! is not the client's, and costs it nothing.
//!
//! [`Floored`] wraps a socket for one transfer. Before each blocking call it lowers the socket's
//! timeout to what the client has left, but only when that is less than the usual timeout
//! (`bodyReadTimeout` or `writeTimeout`), so a transfer well above the floor makes no extra system
//! call. A client below the floor gets a `TimedOut` error, as a stalled one would.

use crate::stream::Stream;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// A minimum transfer rate: `bytes_per_second` on average, after `grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    pub bytes_per_second: u64,
    pub grace: Duration,
}

impl MinRate {
    /// Apache's `mod_reqtimeout` defaults for a body: 500 bytes/s after 20 s.
    pub const DEFAULT: MinRate = MinRate { bytes_per_second: 500, grace: Duration::from_secs(20) };
}

/// How one transfer stands against its floor: bytes moved, and time spent blocked on the client.
/// The default has no floor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateClock {
    rate: Option<MinRate>,
    moved: u64,
    blocked: Duration,
}

impl RateClock {
    /// A transfer that has moved nothing yet; `None` is no floor.
    pub fn new(rate: Option<MinRate>) -> RateClock {
        RateClock { rate, moved: 0, blocked: Duration::ZERO }
    }

    /// How long the client may still keep the transfer blocked, or `None` without a floor.
    pub fn allowance(&self) -> Option<Duration> {
        let rate = self.rate?;
        let earned = Duration::from_secs_f64(self.moved as f64 / rate.bytes_per_second.max(1) as f64);
        Some((rate.grace + earned).saturating_sub(self.blocked))
    }

    pub fn record(&mut self, bytes: usize, blocked: Duration) {
        self.moved += bytes as u64;
        self.blocked += blocked;
    }
}

/// Which direction a [`Floored`] socket is timed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Reading,
    Writing,
}

/// A socket whose reads (or writes) must keep up with a [`RateClock`]'s floor.
pub struct Floored<'a> {
    stream: &'a Stream,
    clock: &'a mut RateClock,
    direction: Direction,
    /// The socket's usual timeout for this direction, restored when this is dropped.
    usual: Duration,
    /// The timeout set on the socket now.
    applied: Duration,
}

impl<'a> Floored<'a> {
    pub fn new(stream: &'a Stream, clock: &'a mut RateClock, direction: Direction, usual: Duration) -> Self {
        Floored { stream, clock, direction, usual, applied: usual }
    }

    /// Sets the socket's timeout for the next blocking call; fails once the client is out of time.
    fn arm(&mut self) -> io::Result<()> {
        let Some(left) = self.clock.allowance() else { return Ok(()) };
        if left.is_zero() {
            return Err(below_floor());
        }
        // Never zero: a zero timeout means "block forever" to the socket.
        let timeout = left.min(self.usual).max(Duration::from_millis(1));
        if timeout != self.applied {
            self.set_timeout(timeout)?;
            self.applied = timeout;
        }
        Ok(())
    }

    fn set_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self.direction {
            Direction::Reading => self.stream.socket().set_read_timeout(Some(timeout)),
            Direction::Writing => self.stream.socket().set_write_timeout(Some(timeout)),
        }
    }
}

/// The error of a client cut for being below its floor: a timeout, that [`is_below_floor`] tells
/// apart from a plain stall.
fn below_floor() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, BelowFloor)
}

#[derive(Debug)]
struct BelowFloor;

impl std::fmt::Display for BelowFloor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client is below the minimum transfer rate")
    }
}

impl std::error::Error for BelowFloor {}

/// Whether `error` is a client cut for being below its minimum transfer rate.
pub fn is_below_floor(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<BelowFloor>())
}

impl Floored<'_> {
    /// A timeout while the socket's timeout was lowered to the client's allowance is the floor.
    fn blame(&self, error: io::Error) -> io::Error {
        if self.applied < self.usual && crate::http::framing::is_timeout(&error) { below_floor() } else { error }
    }
}

impl Drop for Floored<'_> {
    fn drop(&mut self) {
        if self.applied != self.usual {
            let _ = self.set_timeout(self.usual);
        }
    }
}

impl Read for Floored<'_> {
    fn read(&mut self, into: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        let started = Instant::now();
        let result = (&mut &*self.stream).read(into);
        self.clock.record(*result.as_ref().unwrap_or(&0), started.elapsed());
        result.map_err(|error| self.blame(error))
    }
}

impl Write for Floored<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.arm()?;
        let started = Instant::now();
        let result = (&mut &*self.stream).write(bytes);
        self.clock.record(*result.as_ref().unwrap_or(&0), started.elapsed());
        result.map_err(|error| self.blame(error))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_is_the_grace_plus_what_the_bytes_earned_less_the_time_blocked() {
        let mut clock = RateClock::new(Some(MinRate { bytes_per_second: 100, grace: Duration::from_secs(2) }));
        assert_eq!(clock.allowance(), Some(Duration::from_secs(2)));
        clock.record(300, Duration::from_secs(1));
        assert_eq!(clock.allowance(), Some(Duration::from_secs(4)));
        clock.record(0, Duration::from_secs(10));
        assert_eq!(clock.allowance(), Some(Duration::ZERO));
        assert_eq!(RateClock::new(None).allowance(), None);
    }

    #[test]
    fn a_reader_below_the_floor_times_out_and_the_usual_timeout_comes_back() {
        let (mut outside, inside) = crate::tests_support::socket_pair();
        let inside = Stream::Plain(inside);
        let usual = Duration::from_secs(30);
        inside.socket().set_read_timeout(Some(usual)).unwrap();
        let rate = MinRate { bytes_per_second: 1000, grace: Duration::from_millis(100) };
        let mut clock = RateClock::new(Some(rate));
        let started = Instant::now();
        {
            let mut floored = Floored::new(&inside, &mut clock, Direction::Reading, usual);
            outside.write_all(b"abc").unwrap();
            let mut buffer = [0u8; 16];
            assert_eq!(floored.read(&mut buffer).unwrap(), 3);
            let mut failure = None;
            for _ in 0..100 {
                match floored.read(&mut buffer) {
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                    Ok(count) => assert!(count > 0, "the peer is still open"),
                }
            }
            let failure = failure.expect("a silent client is cut");
            assert!(crate::http::framing::is_timeout(&failure), "{failure:?}");
            assert!(is_below_floor(&failure), "{failure:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(5), "cut at the floor, not the usual timeout");
        assert_eq!(inside.socket().read_timeout().unwrap(), Some(usual));
    }
}
