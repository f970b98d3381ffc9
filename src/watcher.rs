//! Thread `watcher`: Holds every client connection that has nothing to read, so workers never wait on one.
//!
//! A fixed pool of blocking workers cannot park a thread on each idle keep-alive connection: a
//! hundred idle clients would hold a hundred workers. As in Apache httpd's event MPM, a worker
//! that finds nothing to read on its connection (after a response, or on a new connection whose
//! request has not arrived yet) hands it to this one thread instead, and takes other work. The
//! watcher waits on all of them at once with `epoll`; when bytes (or the end of the connection)
//! arrive, the connection goes back to the workers through the `ready` channel, ahead of new
//! connections. A connection that stays silent past its deadline (`idleTimeout` after a
//! response, `headerReadTimeout` for a new one) is closed here.
//!
//! Parking costs an `epoll_ctl` and a map entry; an idle connection costs no thread and a few
//! dozen bytes, so thousands can wait while the workers serve the busy ones.

use std::collections::HashMap;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use rustix::event::epoll;

/// How often the watcher wakes with nothing to report, to close expired connections and to
/// notice shutdown.
const TICK: Duration = Duration::from_millis(250);
/// Most readiness events taken from one `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

/// What a non-blocking look at a connection finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Bytes are waiting.
    Readable,
    /// Nothing yet: the connection is idle.
    Idle,
    /// The peer closed the connection, or it failed.
    Closed,
}

/// Looks at `stream` without blocking and without consuming anything.
pub fn readiness(stream: &TcpStream) -> Readiness {
    let mut probe = [0u8; 1];
    match rustix::net::recv(stream, &mut probe, rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT) {
        Ok((_, 0)) => Readiness::Closed,
        Ok(_) => Readiness::Readable,
        Err(error) if error == rustix::io::Errno::AGAIN || error == rustix::io::Errno::INTR => Readiness::Idle,
        Err(_) => Readiness::Closed,
    }
}

struct Parked {
    stream: TcpStream,
    deadline: Instant,
}

/// The idle connections and the epoll instance watching them. Workers park connections here;
/// the watcher thread ([`Watcher::run`]) hands them back when they become readable.
pub struct Watcher {
    epoll: OwnedFd,
    parked: Mutex<HashMap<RawFd, Parked>>,
    ready: Sender<TcpStream>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("parked", &self.parked.lock().len()).finish()
    }
}

impl Watcher {
    /// A watcher, and the channel on which it returns readable connections.
    pub fn new() -> io::Result<(Watcher, Receiver<TcpStream>)> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let (ready, returned) = crossbeam_channel::unbounded();
        Ok((Watcher { epoll, parked: Mutex::new(HashMap::new()), ready }, returned))
    }

    /// Takes an idle connection until it becomes readable or `deadline` passes. Fails (handing
    /// the connection back) only if epoll refuses it.
    pub fn park(&self, stream: TcpStream, deadline: Instant) -> Result<(), TcpStream> {
        let fd = stream.as_raw_fd();
        let interest = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT;
        // Registered and recorded under one lock, so the watcher never sees an event for a
        // connection it cannot find.
        let mut parked = self.parked.lock();
        if epoll::add(&self.epoll, &stream, epoll::EventData::new_u64(fd as u64), interest).is_err() {
            return Err(stream);
        }
        parked.insert(fd, Parked { stream, deadline });
        Ok(())
    }

    /// Connections parked now.
    pub fn parked(&self) -> usize {
        self.parked.lock().len()
    }

    /// The watcher thread's loop: waits for readiness, returns readable connections, closes
    /// expired ones (calling `closed` for each), until `stop()` says so; then closes all that
    /// are left.
    pub fn run(&self, stop: impl Fn() -> bool, closed: impl Fn()) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS_PER_WAIT);
        let tick = rustix::event::Timespec { tv_sec: 0, tv_nsec: TICK.as_nanos() as i64 };
        let mut next_sweep = Instant::now() + TICK;
        while !stop() {
            events.clear();
            if let Err(error) = epoll::wait(&self.epoll, rustix::buffer::spare_capacity(&mut events), Some(&tick))
                && error != rustix::io::Errno::INTR
            {
                log::error!("epoll_wait failed: {error}");
                std::thread::sleep(TICK);
            }
            for event in &events {
                let fd = event.data.u64() as RawFd;
                let Some(entry) = self.parked.lock().remove(&fd) else { continue };
                let _ = epoll::delete(&self.epoll, &entry.stream);
                if self.ready.send(entry.stream).is_err() {
                    closed();
                }
            }
            let now = Instant::now();
            if now >= next_sweep {
                next_sweep = now + TICK;
                let expired = self.take_where(|entry| entry.deadline <= now);
                for _ in expired {
                    closed();
                }
            }
        }
        for _ in self.take_where(|_| true) {
            closed();
        }
    }

    /// Removes (and unregisters) the parked connections that match; dropping them closes them.
    fn take_where(&self, matches: impl Fn(&Parked) -> bool) -> Vec<TcpStream> {
        let mut parked = self.parked.lock();
        let fds: Vec<RawFd> = parked.iter().filter(|(_, entry)| matches(entry)).map(|(&fd, _)| fd).collect();
        fds.into_iter()
            .filter_map(|fd| parked.remove(&fd))
            .map(|entry| {
                let _ = epoll::delete(&self.epoll, &entry.stream);
                entry.stream
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::socket_pair as pair;
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[test]
    fn readiness_tells_idle_readable_and_closed_apart() {
        let (mut outside, inside) = pair();
        assert_eq!(readiness(&inside), Readiness::Idle);
        outside.write_all(b"x").unwrap();
        crate::tests_support::wait_for(|| readiness(&inside) == Readiness::Readable);
        assert_eq!(readiness(&inside), Readiness::Readable, "peeking consumes nothing");
        let (outside, inside) = pair();
        drop(outside);
        crate::tests_support::wait_for(|| readiness(&inside) == Readiness::Closed);
    }

    #[test]
    fn parked_connections_come_back_when_readable_and_expire_otherwise() {
        let (watcher, returned) = Watcher::new().unwrap();
        let watcher = Arc::new(watcher);
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (watcher, stop, closed) = (Arc::clone(&watcher), Arc::clone(&stop), Arc::clone(&closed));
            std::thread::spawn(move || {
                watcher.run(
                    || stop.load(Ordering::Relaxed),
                    || {
                        closed.fetch_add(1, Ordering::Relaxed);
                    },
                )
            })
        };
        let (mut talker, talker_inside) = pair();
        let (_silent, silent_inside) = pair();
        watcher.park(talker_inside, Instant::now() + Duration::from_secs(30)).unwrap();
        watcher.park(silent_inside, Instant::now() + Duration::from_millis(100)).unwrap();
        assert_eq!(watcher.parked(), 2);
        talker.write_all(b"GET").unwrap();
        let back = returned.recv_timeout(Duration::from_secs(5)).expect("the readable connection comes back");
        assert_eq!(readiness(&back), Readiness::Readable);
        crate::tests_support::wait_for(|| closed.load(Ordering::Relaxed) == 1);
        assert_eq!(watcher.parked(), 0, "the silent one expired and was closed");
        // Once its bytes are read, the same socket can be parked again.
        let mut request = [0u8; 3];
        std::io::Read::read_exact(&mut &back, &mut request).unwrap();
        watcher.park(back, Instant::now() + Duration::from_secs(30)).unwrap();
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        assert_eq!(closed.load(Ordering::Relaxed), 2, "stopping closes what is left");
    }
}
