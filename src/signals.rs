//! Thread `signals`: turns the process's signals into messages for the main thread.
//!
//! SIGHUP asks for the config file to be reread (as `POST /lb-reload` does); SIGTERM and SIGINT
//! ask for a graceful shutdown. The handlers are `signal-hook`'s: they only note that the signal
//! arrived, and this thread, woken by that note, sends [`Signal`]s down a channel that the main
//! thread waits on. Nothing else runs in signal context.
//!
//! The handlers are installed by [`listen`] before anything listens, so a signal that arrives
//! while the load balancer starts is kept for the main thread rather than killing the process.

use std::io;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// What a signal asks of the main thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reread the config file.
    Reload,
    /// SIGTERM or SIGINT (named): stop accepting, finish the requests in flight, exit.
    Stop(&'static str),
}

/// Signals that wait for the main thread. More than a few pending reloads mean the same thing.
const PENDING: usize = 8;

/// Installs the handlers and starts the `signals` thread; its messages come out of the receiver.
pub fn listen() -> io::Result<Receiver<Signal>> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    let (sender, receiver) = crossbeam_channel::bounded(PENDING);
    thread::Builder::new().name("signals".to_string()).spawn(move || forward(&mut signals, &sender))?;
    Ok(receiver)
}

/// The thread's loop: each signal as it arrives, until the main thread stops listening.
fn forward(signals: &mut Signals, sender: &Sender<Signal>) {
    for number in signals.forever() {
        let Some(signal) = meaning(number) else { continue };
        if sender.send(signal).is_err() {
            return;
        }
    }
}

/// What a signal number asks for, for the signals this module installs handlers for.
fn meaning(number: i32) -> Option<Signal> {
    match number {
        SIGHUP => Some(Signal::Reload),
        SIGTERM => Some(Signal::Stop("SIGTERM")),
        SIGINT => Some(Signal::Stop("SIGINT")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hang_up_reloads_and_terminate_and_interrupt_stop() {
        assert_eq!(meaning(SIGHUP), Some(Signal::Reload));
        assert_eq!(meaning(SIGTERM), Some(Signal::Stop("SIGTERM")));
        assert_eq!(meaning(SIGINT), Some(Signal::Stop("SIGINT")));
        assert_eq!(meaning(signal_hook::consts::SIGUSR1), None);
    }
}
