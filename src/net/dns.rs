//! Name resolution off the event loop (layer: edge). Each query runs the system resolver on a worker
//! thread, which can block for seconds; the answer comes back over a channel and a `mio::Waker` wakes
//! the loop. Nothing here touches the serial line or the cores.

use super::ModuleIdx;
use crate::module::io::{NetEvent, QueryId};
use mio::{Registry, Token, Waker};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

type Answer = (ModuleIdx, QueryId, Result<Ipv4Addr, String>);

pub(super) struct Dns {
    token: Token,
    waker: Arc<Waker>,
    tx: Sender<Answer>,
    rx: Receiver<Answer>,
}

impl Dns {
    pub(super) fn new(registry: &Registry, token: Token) -> std::io::Result<Dns> {
        let (tx, rx) = channel();
        Ok(Dns {
            token,
            waker: Arc::new(Waker::new(registry, token)?),
            tx,
            rx,
        })
    }

    pub(super) fn token(&self) -> Token {
        self.token
    }

    /// Start resolving `name`; the answer arrives through [`Dns::drain`]. A worker that cannot be
    /// started is answered at once with an error.
    pub(super) fn resolve(
        &self,
        module: ModuleIdx,
        query: QueryId,
        name: String,
        events: &mut VecDeque<(ModuleIdx, NetEvent)>,
    ) {
        let tx = self.tx.clone();
        let waker = Arc::clone(&self.waker);
        let spawned = std::thread::Builder::new()
            .name(format!("dns-{query}"))
            .spawn(move || {
                let result = lookup(&name);
                log::debug!("m{module} dns {name:?} -> {result:?}");
                // The loop may be gone already (shutdown); then nobody wants the answer.
                if tx.send((module, query, result)).is_ok() {
                    if let Err(e) = waker.wake() {
                        log::warn!("dns: waking the event loop: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("dns: cannot start a resolver thread: {e}");
            events.push_back((
                module,
                NetEvent::Resolved {
                    query,
                    result: Err(format!("resolver unavailable: {e}")),
                },
            ));
        }
    }

    /// The loop's one waker (mio allows a single `Waker` per poll), for other worker threads.
    pub fn waker(&self) -> Arc<Waker> {
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
fn lookup(name: &str) -> Result<Ipv4Addr, String> {
    if name.is_empty() {
        return Err("empty host name".into());
    }
    let addrs = (name, 0)
        .to_socket_addrs()
        .map_err(|e| format!("{name}: {e}"))?;
    addrs
        .into_iter()
        .find_map(|a| match a {
            SocketAddr::V4(a) => Some(*a.ip()),
            SocketAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("{name}: no IPv4 address"))
}
