//! Where a request's forward and reverse threads come from (`pairThreads`).
//!
//! Every request attempt is carried by a pair of threads running [`pipe::forward`] and
//! [`pipe::reverse`]; the worker hands them their jobs and waits for both reports. Only the origin
//! of the threads differs:
//!
//! - `spawn` (the default, as designed): a new pair per attempt, `req-N-fwd` and `req-N-rev`,
//!   joined at the end. Simple to read and to see in `top -H`, and costs a thread spawn and join
//!   per request.
//! - `pooled`: each worker owns one forward and one reverse thread (`worker-N-fwd`,
//!   `worker-N-rev`), started once, each parked on a one-slot mailbox until its next job. The
//!   worker posts the two jobs and waits for the two reports, as it would join spawned threads;
//!   whichever of the pair finishes last wakes it, so a request costs three wake-ups in all
//!   (a general-purpose channel, which spins and yields before it sleeps, measured slower on two
//!   cores).
//!
//! Either way a panic in a pair thread reaches the worker as a panic (the worker's panic boundary
//! then answers 500), and a pooled thread survives it to take the next job.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use parking_lot::{Condvar, Mutex};

use crate::config::PairThreads;
use crate::pipe::{self, ForwardJob, ForwardReport, ReverseJob, ReverseReport};

/// A worker's source of pair threads.
pub enum PairRunner {
    Spawn,
    Pooled(PooledPair),
}

impl PairRunner {
    /// The runner for worker `worker_index`; in pooled mode this starts its two threads.
    pub fn new(mode: PairThreads, worker_index: usize) -> io::Result<PairRunner> {
        Ok(match mode {
            PairThreads::Spawn => PairRunner::Spawn,
            PairThreads::Pooled => PairRunner::Pooled(PooledPair::start(worker_index)?),
        })
    }

    /// Runs one attempt on a pair and returns both reports once both threads are done. A panic in
    /// either is re-raised here, on the worker, after both have finished.
    pub fn run(
        &self,
        request_id: u64,
        forward_job: ForwardJob,
        reverse_job: ReverseJob,
    ) -> io::Result<(ForwardReport, ReverseReport)> {
        let sockets = (Arc::clone(&forward_job.client), Arc::clone(&forward_job.backend));
        let (forward_result, reverse_result) = match self {
            PairRunner::Spawn => {
                let forward = spawn(format!("req-{request_id}-fwd"), move || pipe::forward(forward_job))?;
                let reverse = match spawn(format!("req-{request_id}-rev"), move || pipe::reverse(reverse_job)) {
                    Ok(handle) => handle,
                    Err(error) => {
                        pipe::abort_both(&sockets.0, &sockets.1);
                        let _ = forward.join();
                        return Err(error);
                    }
                };
                (forward.join(), reverse.join())
            }
            PairRunner::Pooled(pair) => {
                pair.forward_jobs.put(forward_job);
                pair.reverse_jobs.put(reverse_job);
                pair.done.wait_both()
            }
        };
        match (forward_result, reverse_result) {
            (Ok(forward_report), Ok(reverse_report)) => Ok((forward_report, reverse_report)),
            (Err(panic), _) | (_, Err(panic)) => resume_unwind(panic),
        }
    }
}

fn spawn<T: Send + 'static>(name: String, body: impl FnOnce() -> T + Send + 'static) -> io::Result<JoinHandle<T>> {
    thread::Builder::new().name(name).spawn(body)
}

/// A worker's own forward and reverse threads, and the slots through which it talks to them.
pub struct PooledPair {
    forward_jobs: Arc<Mailbox<ForwardJob>>,
    reverse_jobs: Arc<Mailbox<ReverseJob>>,
    done: Arc<Completion<ForwardReport, ReverseReport>>,
    threads: Vec<JoinHandle<()>>,
}

impl PooledPair {
    fn start(worker_index: usize) -> io::Result<PooledPair> {
        let forward_jobs = Arc::new(Mailbox::default());
        let reverse_jobs = Arc::new(Mailbox::default());
        let done = Arc::new(Completion::default());
        let forward = {
            let (jobs, done) = (Arc::clone(&forward_jobs), Arc::clone(&done));
            spawn(format!("worker-{worker_index}-fwd"), move || {
                while let Some(job) = jobs.take() {
                    done.first(catch_unwind(AssertUnwindSafe(|| pipe::forward(job))));
                }
            })?
        };
        let reverse = {
            let (jobs, done) = (Arc::clone(&reverse_jobs), Arc::clone(&done));
            spawn(format!("worker-{worker_index}-rev"), move || {
                while let Some(job) = jobs.take() {
                    done.second(catch_unwind(AssertUnwindSafe(|| pipe::reverse(job))));
                }
            })?
        };
        Ok(PooledPair { forward_jobs, reverse_jobs, done, threads: vec![forward, reverse] })
    }
}

impl Drop for PooledPair {
    fn drop(&mut self) {
        self.forward_jobs.close();
        self.reverse_jobs.close();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A one-slot hand-off to a parked thread: `put` fills the slot and wakes the taker; `take`
/// sleeps until the slot is filled, or returns `None` once the mailbox is closed.
struct Mailbox<T> {
    slot: Mutex<(Option<T>, bool)>,
    filled: Condvar,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Mailbox { slot: Mutex::new((None, false)), filled: Condvar::new() }
    }
}

impl<T> Mailbox<T> {
    fn put(&self, item: T) {
        self.slot.lock().0 = Some(item);
        self.filled.notify_one();
    }

    fn take(&self) -> Option<T> {
        let mut slot = self.slot.lock();
        loop {
            if let Some(item) = slot.0.take() {
                return Some(item);
            }
            if slot.1 {
                return None;
            }
            self.filled.wait(&mut slot);
        }
    }

    fn close(&self) {
        self.slot.lock().1 = true;
        self.filled.notify_one();
    }
}

/// Where the two threads of a pair leave their results; the waiter is woken once, by whichever
/// finishes last.
struct Completion<A, B> {
    results: Mutex<Results<A, B>>,
    both: Condvar,
}

/// The first and second thread's results, each once delivered.
type Results<A, B> = (Option<thread::Result<A>>, Option<thread::Result<B>>);

impl<A, B> Default for Completion<A, B> {
    fn default() -> Self {
        Completion { results: Mutex::new((None, None)), both: Condvar::new() }
    }
}

impl<A, B> Completion<A, B> {
    fn first(&self, result: thread::Result<A>) {
        let mut results = self.results.lock();
        results.0 = Some(result);
        if results.1.is_some() {
            self.both.notify_one();
        }
    }

    fn second(&self, result: thread::Result<B>) {
        let mut results = self.results.lock();
        results.1 = Some(result);
        if results.0.is_some() {
            self.both.notify_one();
        }
    }

    fn wait_both(&self) -> (thread::Result<A>, thread::Result<B>) {
        let mut results = self.results.lock();
        loop {
            if results.0.is_some() && results.1.is_some() {
                let (first, second) = (results.0.take(), results.1.take());
                return (first.expect("present"), second.expect("present"));
            }
            self.both.wait(&mut results);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for mode in PairThreads::ALL {
            assert_eq!(PairThreads::from_name(mode.name()), Ok(mode));
        }
        assert_eq!(PairThreads::from_name("forked").unwrap_err(), "must be \"spawn\" or \"pooled\", got \"forked\"");
    }

    #[test]
    fn a_mailbox_hands_over_items_and_closes() {
        let mailbox = Arc::new(Mailbox::default());
        let taker = {
            let mailbox = Arc::clone(&mailbox);
            thread::spawn(move || {
                let mut taken = Vec::new();
                while let Some(item) = mailbox.take() {
                    taken.push(item);
                }
                taken
            })
        };
        for item in 0..3u32 {
            mailbox.put(item);
            while mailbox.slot.lock().0.is_some() {
                thread::yield_now();
            }
        }
        mailbox.close();
        assert_eq!(taker.join().unwrap(), [0, 1, 2]);
    }

    #[test]
    fn completion_waits_for_both_results_and_keeps_panics() {
        let completion: Arc<Completion<u32, u32>> = Arc::new(Completion::default());
        let second = {
            let completion = Arc::clone(&completion);
            thread::spawn(move || completion.second(catch_unwind(|| panic!("reverse failed"))))
        };
        completion.first(Ok(7));
        second.join().unwrap();
        let (first, second) = completion.wait_both();
        assert_eq!(first.unwrap(), 7);
        assert!(second.is_err(), "a panic is delivered as a result, for the worker to re-raise");
    }
}
