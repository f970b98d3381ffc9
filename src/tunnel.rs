//! The forward and reverse threads after `101 Switching Protocols`: an upgraded connection (a WebSocket, say)
//! as a raw two-way tunnel.
//!
//! Once the backend accepts an upgrade, HTTP is over on both connections: the forward thread
//! copies client → backend and the reverse thread copies backend → client, byte for byte, each
//! with [`relay`], until either side closes. A side that finishes sending half-closes its
//! destination, so the other direction can still drain (as a WebSocket close handshake needs).
//! The tunnel is idle only when neither direction has moved a byte for `tunnelIdleTimeout`; then
//! both connections are shut and both threads end.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::http::buffer::Inbound;
use crate::http::framing::is_timeout;
use crate::stream::Stream;

/// When either direction of a tunnel last moved bytes.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    last_millis: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity { origin: Instant::now(), last_millis: AtomicU64::new(0) }
    }
}

impl Activity {
    pub fn touch(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last_millis.fetch_max(now, Ordering::Relaxed);
    }

    pub fn idle_for(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_millis.load(Ordering::Relaxed)))
    }
}

/// The forward thread's half of an upgrade: it learns from reverse whether the backend switched
/// protocols (`true`) or answered normally (`false`; a closed channel means reverse failed).
pub struct UpgradeWait {
    pub switched: Receiver<bool>,
    pub idle_timeout: Duration,
    pub activity: std::sync::Arc<Activity>,
}

/// The reverse thread's half of an upgrade.
pub struct UpgradeSignal {
    pub switched: Sender<bool>,
    pub idle_timeout: Duration,
    pub activity: std::sync::Arc<Activity>,
}

/// A pair of halves for one upgrade attempt.
pub fn upgrade_pair(idle_timeout: Duration) -> (UpgradeWait, UpgradeSignal) {
    let (sender, receiver) = crossbeam_channel::bounded(1);
    let activity = std::sync::Arc::new(Activity::default());
    (
        UpgradeWait { switched: receiver, idle_timeout, activity: std::sync::Arc::clone(&activity) },
        UpgradeSignal { switched: sender, idle_timeout, activity },
    )
}

/// Copies `from` → `to` until `from` ends (then half-closes `to`), either side fails, or the
/// tunnel has been idle both ways for `idle_timeout` (then shuts both). Bytes already read past
/// the HTTP head (`pending`) go first. Returns the bytes copied.
pub fn relay(
    from: &Stream,
    pending: &mut Inbound,
    mut to: &Stream,
    idle_timeout: Duration,
    activity: &Activity,
) -> u64 {
    let mut copied = 0u64;
    if !pending.is_empty() {
        if to.write_all(pending.buffered()).is_err() {
            shut_both(from, to);
            return 0;
        }
        copied += pending.buffered().len() as u64;
        pending.consume(pending.buffered().len());
    }
    let _ = from.socket().set_read_timeout(Some(idle_timeout));
    let mut reader = from;
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => {
                to.finish_sending();
                return copied;
            }
            Ok(count) => {
                activity.touch();
                if to.write_all(&buffer[..count]).is_err() {
                    shut_both(from, to);
                    return copied;
                }
                copied += count as u64;
            }
            Err(error) if is_timeout(&error) && activity.idle_for() < idle_timeout => {}
            Err(_) => {
                shut_both(from, to);
                return copied;
            }
        }
    }
}

fn shut_both(from: &Stream, to: &Stream) {
    let _ = from.socket().shutdown(Shutdown::Both);
    let _ = to.socket().shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::socket_pair as pair;
    use std::thread;

    #[test]
    fn copies_both_ways_and_propagates_half_close() {
        let (mut client, client_inside) = pair();
        let (mut backend, backend_inside) = pair();
        let activity = std::sync::Arc::new(Activity::default());
        let idle = Duration::from_secs(5);
        let up = {
            let (from, to, activity) =
                (client_inside.try_clone().unwrap(), backend_inside.try_clone().unwrap(), activity.clone());
            thread::spawn(move || relay(&Stream::Plain(from), &mut Inbound::new(), &Stream::Plain(to), idle, &activity))
        };
        let down = {
            let mut pending = Inbound::new();
            pending.fill(&b"early"[..]).unwrap();
            let activity = activity.clone();
            let (from, to) = (Stream::Plain(backend_inside), Stream::Plain(client_inside));
            thread::spawn(move || relay(&from, &mut pending, &to, idle, &activity))
        };
        client.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        backend.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        client.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        backend.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "the client's half-close reached the backend");
        backend.write_all(b" world").unwrap();
        backend.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"early world", "bytes read past the head go first");
        assert_eq!(up.join().unwrap(), 5);
        assert_eq!(down.join().unwrap(), 11);
    }

    #[test]
    fn an_idle_tunnel_is_closed_both_ways() {
        let (mut client, client_inside) = pair();
        let (mut backend, backend_inside) = pair();
        let activity = std::sync::Arc::new(Activity::default());
        let idle = Duration::from_millis(200);
        let started = Instant::now();
        let up = {
            let (from, to, activity) =
                (client_inside.try_clone().unwrap(), backend_inside.try_clone().unwrap(), activity.clone());
            thread::spawn(move || relay(&Stream::Plain(from), &mut Inbound::new(), &Stream::Plain(to), idle, &activity))
        };
        let (from, to) = (Stream::Plain(backend_inside), Stream::Plain(client_inside));
        let down = thread::spawn(move || relay(&from, &mut Inbound::new(), &to, idle, &activity));
        up.join().unwrap();
        down.join().unwrap();
        assert!(started.elapsed() >= idle);
        let mut byte = [0u8; 1];
        assert_eq!(client.read(&mut byte).unwrap_or(0), 0);
        assert_eq!(backend.read(&mut byte).unwrap_or(0), 0);
    }
}
