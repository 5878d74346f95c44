//! Name resolution off the event loop (layer: edge). Each query runs the system resolver, which can
//! block for seconds, as a job of the stack's bounded worker pool ([`super::workers`]), which this
//! owns; the answer comes back over a channel and a `mio::Waker` wakes the loop. When the pool's queue
//! is full the query is answered at once with an error. Nothing here touches the serial line or the
//! cores.

use super::workers::Pool;
use super::ModuleIdx;
use eswifi_core::module::io::{NetEvent, QueryId, ResolveError};
use mio::{Registry, Token, Waker};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

type Answer = (ModuleIdx, QueryId, Result<Ipv4Addr, ResolveError>);

pub(super) struct Dns {
    token: Token,
    waker: Arc<Waker>,
    tx: Sender<Answer>,
    rx: Receiver<Answer>,
    /// The stack's one worker pool, shared with ping (see [`Dns::workers`]).
    workers: Pool,
}

impl Dns {
    pub(super) fn new(registry: &Registry, token: Token) -> std::io::Result<Dns> {
        let (tx, rx) = channel();
        Ok(Dns {
            token,
            waker: Arc::new(Waker::new(registry, token)?),
            tx,
            rx,
            workers: Pool::new()?,
        })
    }

    pub(super) fn token(&self) -> Token {
        self.token
    }

    /// Start resolving `name`; the answer arrives through [`Dns::drain`]. A query the worker pool
    /// refuses (its queue is full) is answered at once with an error.
    pub(super) fn resolve(
        &self,
        module: ModuleIdx,
        query: QueryId,
        name: String,
        events: &mut VecDeque<(ModuleIdx, NetEvent)>,
    ) {
        let tx = self.tx.clone();
        let waker = Arc::clone(&self.waker);
        let submitted = self.workers.submit(move || {
            let result = lookup(&name);
            log::debug!("m{module} dns #{query} {name:?} -> {result:?}");
            // The loop may be gone already (shutdown); then nobody wants the answer.
            if tx.send((module, query, result)).is_ok() {
                if let Err(e) = waker.wake() {
                    log::warn!("dns: waking the event loop: {e}");
                }
            }
        });
        if let Err(e) = submitted {
            log::warn!("m{module} dns #{query}: {e}");
            let result = Err(ResolveError::Refused(e.to_string()));
            events.push_back((module, NetEvent::Resolved { query, result }));
        }
    }

    /// The stack's worker pool, for the other blocking work (ping); its threads end with this `Dns`.
    pub(super) fn workers(&self) -> &Pool {
        &self.workers
    }

    /// The loop's one waker (mio allows a single `Waker` per poll), for other worker threads.
    pub(super) fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Move finished answers into `events` (called when the waker's token fires).
    pub(super) fn drain(&self, events: &mut VecDeque<(ModuleIdx, NetEvent)>) {
        while let Ok((module, query, result)) = self.rx.try_recv() {
            events.push_back((module, NetEvent::Resolved { query, result }));
        }
    }
}

/// The first IPv4 address the system resolver gives for `name`.
fn lookup(name: &str) -> Result<Ipv4Addr, ResolveError> {
    if name.is_empty() {
        return Err(ResolveError::Lookup("empty host name".into()));
    }
    let addrs = (name, 0)
        .to_socket_addrs()
        .map_err(|e| ResolveError::Lookup(e.to_string()))?;
    addrs
        .into_iter()
        .find_map(|a| match a {
            SocketAddr::V4(a) => Some(*a.ip()),
            SocketAddr::V6(_) => None,
        })
        .ok_or(ResolveError::NoIpv4)
}

#[cfg(test)]
mod tests {
    use super::super::workers::test_support::{fill, WAIT};
    use super::super::workers::{QUEUE, WORKERS};
    use super::*;
    use mio::{Events, Poll};
    use std::time::Instant;

    /// Poll until `n` answers came through the waker (or [`WAIT`] passes), sorted by query.
    fn answers(poll: &mut Poll, dns: &Dns, n: usize) -> Vec<(ModuleIdx, NetEvent)> {
        let deadline = Instant::now() + WAIT;
        let mut events = Events::with_capacity(8);
        let mut got = VecDeque::new();
        while got.len() < n {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            poll.poll(&mut events, Some(left)).expect("poll");
            if events.iter().any(|e| e.token() == dns.token()) {
                dns.drain(&mut got);
            }
        }
        let mut got = Vec::from(got);
        got.sort_by_key(|(_, e)| match e {
            NetEvent::Resolved { query, .. } => *query,
            _ => QueryId(0),
        });
        got
    }

    fn resolved(module: ModuleIdx, query: QueryId, ip: Ipv4Addr) -> (ModuleIdx, NetEvent) {
        let result = Ok(ip);
        (module, NetEvent::Resolved { query, result })
    }

    #[test]
    fn lookups_run_on_the_pool_and_wake_the_loop() {
        let mut poll = Poll::new().expect("poll");
        let dns = Dns::new(poll.registry(), Token(0)).expect("dns");
        let mut events = VecDeque::new();
        // More lookups than workers: the rest wait in the queue and are answered all the same.
        for query in 1..=WORKERS as u64 + 2 {
            dns.resolve(1, QueryId(query), "localhost".into(), &mut events);
        }
        dns.resolve(1, QueryId(10), "127.0.0.9".into(), &mut events);
        assert!(events.is_empty(), "nothing is answered at once: {events:?}");
        let got = answers(&mut poll, &dns, WORKERS + 3);
        let mut want: Vec<_> = (1..=WORKERS as u64 + 2)
            .map(|q| resolved(1, QueryId(q), Ipv4Addr::LOCALHOST))
            .collect();
        want.push(resolved(1, QueryId(10), Ipv4Addr::new(127, 0, 0, 9)));
        assert_eq!(got, want);
    }

    #[test]
    fn a_lookup_beyond_the_queue_is_answered_at_once_with_busy() {
        let mut poll = Poll::new().expect("poll");
        let dns = Dns::new(poll.registry(), Token(0)).expect("dns");
        let gate = fill(dns.workers());
        let mut events = VecDeque::new();
        dns.resolve(3, QueryId(7), "localhost".into(), &mut events);
        let Some((
            3,
            NetEvent::Resolved {
                query: QueryId(7),
                result: Err(ResolveError::Refused(why)),
            },
        )) = events.pop_front()
        else {
            panic!("no busy answer: {events:?}");
        };
        assert!(why.contains(&format!("{QUEUE} jobs")), "{why}");
        assert!(events.is_empty());

        // Once the workers are free again the next lookup goes through.
        gate.open();
        dns.resolve(3, QueryId(8), "127.0.0.1".into(), &mut events);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(
            answers(&mut poll, &dns, 1),
            vec![resolved(3, QueryId(8), Ipv4Addr::LOCALHOST)]
        );
    }
}
