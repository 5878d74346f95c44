//! The small, bounded pool of threads that does the network work which blocks (layer: edge): DNS
//! lookups ([`super::dns`]) and ICMP echo ([`super::ping`]). [`WORKERS`] threads take jobs from one
//! queue that holds at most [`QUEUE`] waiting jobs. A job offered while the queue is full is refused
//! at once ([`Refused::Busy`]), so the caller answers its request with an error instead of blocking
//! the event loop or starting another thread. Jobs report back on their own (a channel and the loop's
//! waker); the pool knows nothing of them. The threads end once the pool is dropped and the jobs still
//! queued have run (their answers go nowhere); nobody waits for them, as a lookup or a ping can take
//! seconds.

use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Worker threads of the pool: at most this many lookups and pings run at once, over all modules.
/// Each core has at most one `D0` or `T0` pending, so a handful of emulated modules rarely wait.
pub(super) const WORKERS: usize = 4;

/// Jobs that may wait for a free worker. One more is refused: its request is answered at once with an
/// error ("resolver busy: …", or a ping error, which the module answers with `Timeout` lines).
pub(super) const QUEUE: usize = 64;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A job the pool did not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Every worker is busy and the queue is full.
    Busy { workers: usize, queue: usize },
    /// No worker thread is left (cannot happen while the pool lives: jobs that panic are caught).
    Gone,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Busy { workers, queue } => write!(
                f,
                "all {workers} network workers are busy and {queue} jobs already wait"
            ),
            Refused::Gone => f.write_str("no network worker thread is left"),
        }
    }
}

pub(super) struct Pool {
    /// Dropping it (with the pool) ends the workers: their `recv` fails once the queue is empty.
    jobs: SyncSender<Job>,
    workers: usize,
    queue: usize,
    /// Only tests join them: the stack never waits, as a worker may be inside a lookup that takes
    /// seconds.
    #[cfg_attr(not(test), allow(dead_code))]
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// The pool with [`WORKERS`] threads and room for [`QUEUE`] waiting jobs, all threads started.
    pub(super) fn new() -> io::Result<Pool> {
        Pool::with_bounds(WORKERS, QUEUE)
    }

    fn with_bounds(workers: usize, queue: usize) -> io::Result<Pool> {
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let rx = Arc::clone(&rx);
            // On failure `jobs` drops on return, which ends the threads already started.
            let t = std::thread::Builder::new()
                .name(format!("net-worker-{i}"))
                .spawn(move || work(&rx))?;
            threads.push(t);
        }
        Ok(Pool {
            jobs,
            workers,
            queue,
            threads,
        })
    }

    /// Queue `job` for the next free worker, or refuse it at once; never blocks.
    pub(super) fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<(), Refused> {
        match self.jobs.try_send(Box::new(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Refused::Busy {
                workers: self.workers,
                queue: self.queue,
            }),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Gone),
        }
    }
}

/// A worker: run jobs until the pool is dropped.
fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting (one idle worker waits on the queue, the others on the
        // lock) and is released before the job runs.
        let next = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else {
            return; // the pool is gone and the queue empty
        };
        // A panicking job must not take its worker with it, or the pool would shrink for good.
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            log::error!("a network worker job panicked; its request stays unanswered");
        }
    }
}

#[cfg(test)]
pub(super) mod test_support {
    use super::Pool;
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::time::Duration;

    /// Long enough for idle threads to pick up a job on a loaded 2-core machine; only a failing test
    /// waits this long.
    pub(crate) const WAIT: Duration = Duration::from_secs(10);

    /// Jobs that hold a pool's workers and queue slots. Dropping it lets them finish; [`Gate::open`]
    /// also waits until they have.
    pub(crate) struct Gate {
        release: Vec<Sender<()>>,
        finished: Receiver<()>,
    }

    impl Gate {
        /// Let every held job finish and wait until all have, so the pool is idle and empty again.
        pub(crate) fn open(self) {
            let n = self.release.len();
            drop(self.release);
            for _ in 0..n {
                self.finished
                    .recv_timeout(WAIT)
                    .expect("every held job finishes");
            }
        }
    }

    /// Occupy every worker of `pool` (waiting until each has started its job) and then every queue
    /// slot, with jobs that wait for the returned gate.
    pub(crate) fn fill(pool: &Pool) -> Gate {
        let (started_tx, started) = channel();
        let (finished_tx, finished) = channel();
        let mut release = Vec::new();
        let mut hold = |started_tx: Option<Sender<()>>| {
            let (tx, rx) = channel::<()>();
            release.push(tx);
            let finished_tx = finished_tx.clone();
            pool.submit(move || {
                if let Some(s) = started_tx {
                    let _ = s.send(());
                }
                let _ = rx.recv();
                let _ = finished_tx.send(());
            })
            .expect("the pool has room");
        };
        for _ in 0..pool.workers {
            hold(Some(started_tx.clone()));
        }
        for _ in 0..pool.workers {
            started
                .recv_timeout(WAIT)
                .expect("every worker starts a job");
        }
        for _ in 0..pool.queue {
            hold(None);
        }
        Gate { release, finished }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{fill, WAIT};
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::{channel, TryRecvError};

    #[test]
    fn runs_at_most_its_workers_at_once_and_refuses_beyond_the_queue_at_once() {
        const N: usize = 2;
        const CAP: usize = 3;
        let pool = Pool::with_bounds(N, CAP).expect("pool");
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (started_tx, started) = channel();
        let (done_tx, done) = channel();
        let mut gates = Vec::new();
        let submit = |gates: &mut Vec<_>| {
            let (gate, wait) = channel::<()>();
            gates.push(gate);
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            let (started_tx, done_tx) = (started_tx.clone(), done_tx.clone());
            pool.submit(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                started_tx.send(()).unwrap();
                let _ = wait.recv();
                running.fetch_sub(1, Ordering::SeqCst);
                done_tx.send(()).unwrap();
            })
        };

        // N jobs run, CAP wait behind them, and the next is refused without waiting for anything.
        for _ in 0..N {
            submit(&mut gates).expect("a worker is free");
        }
        for _ in 0..N {
            started.recv_timeout(WAIT).expect("the first N jobs start");
        }
        for _ in 0..CAP {
            submit(&mut gates).expect("the queue has room");
        }
        assert_eq!(
            submit(&mut gates),
            Err(Refused::Busy {
                workers: N,
                queue: CAP
            })
        );
        gates.pop(); // the refused job's gate
        assert_eq!(
            started.try_recv(),
            Err(TryRecvError::Empty),
            "a queued job started while every worker was busy"
        );

        // Released, every accepted job runs, never more than N at once, and the queue takes jobs again.
        gates.clear();
        for _ in 0..N + CAP {
            done.recv_timeout(WAIT)
                .expect("every accepted job finishes");
        }
        assert_eq!(most.load(Ordering::SeqCst), N);
        submit(&mut gates).expect("room again");
        gates.clear();
        done.recv_timeout(WAIT).expect("the late job finishes");
        assert_eq!(
            done.try_recv(),
            Err(TryRecvError::Empty),
            "the refused job ran"
        );

        // Dropping the pool ends its threads (a test may join them; the stack never does).
        let Pool { jobs, threads, .. } = pool;
        drop(jobs);
        for t in threads {
            t.join().expect("a worker ends cleanly");
        }
    }

    #[test]
    fn fill_holds_every_worker_and_slot_until_the_gate_drops() {
        let pool = Pool::with_bounds(3, 5).expect("pool");
        let gate = fill(&pool);
        let (tx, rx) = channel();
        let late = tx.clone();
        assert!(matches!(
            pool.submit(move || late.send(()).unwrap()),
            Err(Refused::Busy { .. })
        ));
        gate.open();
        pool.submit(move || tx.send(()).unwrap())
            .expect("room after the gate");
        rx.recv_timeout(WAIT).expect("the job runs");
    }

    #[test]
    fn a_panicking_job_does_not_cost_a_worker() {
        // One worker, and room in the queue for both jobs whether or not it has started the first.
        let pool = Pool::with_bounds(1, 2).expect("pool");
        pool.submit(|| panic!("a job that panics (expected in this test)"))
            .expect("room");
        let (tx, rx) = channel();
        pool.submit(move || tx.send(()).unwrap()).expect("room");
        rx.recv_timeout(WAIT)
            .expect("the single worker still runs jobs");
    }
}
