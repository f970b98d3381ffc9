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
//!   `worker-N-rev`), started once, each waiting on a channel for its next job. The worker sends
//!   the two jobs and waits for the two reports, as it would join spawned threads.
//!
//! Either way a panic in a pair thread reaches the worker as a panic (the worker's panic boundary
//! then answers 500), and a pooled thread survives it to take the next job.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use crate::pipe::{self, ForwardJob, ForwardReport, ReverseJob, ReverseReport};

/// How pair threads are provided, from the `pairThreads` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairThreads {
    Spawn,
    Pooled,
}

impl PairThreads {
    pub const ALL: [PairThreads; 2] = [PairThreads::Spawn, PairThreads::Pooled];

    pub fn name(self) -> &'static str {
        match self {
            PairThreads::Spawn => "spawn",
            PairThreads::Pooled => "pooled",
        }
    }

    pub fn from_name(name: &str) -> Result<PairThreads, String> {
        PairThreads::ALL
            .into_iter()
            .find(|mode| mode.name() == name)
            .ok_or_else(|| format!("must be \"spawn\" or \"pooled\", got {name:?}"))
    }
}

/// A worker's source of pair threads.
pub enum PairRunner {
    Spawn,
    Pooled { forward: Resident<ForwardJob, ForwardReport>, reverse: Resident<ReverseJob, ReverseReport> },
}

impl PairRunner {
    /// The runner for worker `worker_index`; in pooled mode this starts its two threads.
    pub fn new(mode: PairThreads, worker_index: usize) -> io::Result<PairRunner> {
        Ok(match mode {
            PairThreads::Spawn => PairRunner::Spawn,
            PairThreads::Pooled => PairRunner::Pooled {
                forward: Resident::start(format!("worker-{worker_index}-fwd"), pipe::forward)?,
                reverse: Resident::start(format!("worker-{worker_index}-rev"), pipe::reverse)?,
            },
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
            PairRunner::Pooled { forward, reverse } => {
                forward.send(forward_job)?;
                if let Err(error) = reverse.send(reverse_job) {
                    pipe::abort_both(&sockets.0, &sockets.1);
                    let _ = forward.wait();
                    return Err(error);
                }
                (forward.wait()?, reverse.wait()?)
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

/// A thread that runs one kind of job at a time, for as long as its owner lives.
pub struct Resident<J, R> {
    jobs: Option<Sender<J>>,
    reports: Receiver<thread::Result<R>>,
    thread: Option<JoinHandle<()>>,
}

impl<J: Send + 'static, R: Send + 'static> Resident<J, R> {
    fn start(name: String, work: fn(J) -> R) -> io::Result<Self> {
        let (jobs, job_queue) = crossbeam_channel::bounded::<J>(1);
        let (report_sender, reports) = crossbeam_channel::bounded(1);
        let thread = spawn(name, move || {
            for job in job_queue {
                let report = catch_unwind(AssertUnwindSafe(|| work(job)));
                if report_sender.send(report).is_err() {
                    break;
                }
            }
        })?;
        Ok(Resident { jobs: Some(jobs), reports, thread: Some(thread) })
    }

    fn send(&self, job: J) -> io::Result<()> {
        let jobs = self.jobs.as_ref().expect("jobs sender lives until drop");
        jobs.send(job).map_err(|_| io::Error::other("a pooled pair thread has stopped"))
    }

    fn wait(&self) -> io::Result<thread::Result<R>> {
        self.reports.recv().map_err(|_| io::Error::other("a pooled pair thread has stopped"))
    }
}

impl<J, R> Drop for Resident<J, R> {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
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
    fn a_resident_thread_survives_a_panicking_job() {
        fn work(value: u32) -> u32 {
            assert!(value != 13, "unlucky");
            value * 2
        }
        let resident = Resident::start("test-resident".to_string(), work).unwrap();
        resident.send(2).unwrap();
        assert_eq!(resident.wait().unwrap().unwrap(), 4);
        resident.send(13).unwrap();
        assert!(resident.wait().unwrap().is_err(), "the panic comes back as a report");
        resident.send(21).unwrap();
        assert_eq!(resident.wait().unwrap().unwrap(), 42, "and the thread takes the next job");
    }
}
