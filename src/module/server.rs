//! Module-side servers (layer: core): the `P5`/`P7` state of a socket that listens for TCP clients or
//! receives UDP datagrams. Pure data; the module issues the operations. The current client of a TCP
//! server lives in the socket's connection state; clients accepted while one is current wait here
//! (up to the backlog, `P8`) with their own receive queues.

use super::io::ConnId;
use super::socket::RxQueue;
use std::collections::VecDeque;
use std::net::SocketAddrV4;

/// A client accepted by the host's TCP server but not yet made current.
#[derive(Debug)]
pub struct Waiting {
    pub conn: ConnId,
    pub peer: SocketAddrV4,
    pub rx: RxQueue,
    /// The client already disconnected (its data is still delivered, then `-1`).
    pub closed: bool,
}

#[derive(Debug)]
pub struct Server {
    /// The listening socket (TCP) or the bound socket (UDP).
    pub listener: ConnId,
    pub udp: bool,
    /// Bound and serving (the driver confirmed).
    pub bound: bool,
    /// Multi-accept (`P5=11`) or the legacy accept loop (`P7=1`): after a client ends and its data is
    /// read, the next waiting client becomes current by itself.
    pub accept_loop: bool,
    pub waiting: VecDeque<Waiting>,
    /// UDP: senders already announced with `[UDP SVR] Accepted`.
    pub seen: Vec<SocketAddrV4>,
}

impl Server {
    pub fn new(listener: ConnId, udp: bool, accept_loop: bool) -> Server {
        Server {
            listener,
            udp,
            bound: false,
            accept_loop,
            waiting: VecDeque::new(),
            seen: Vec::new(),
        }
    }

    pub fn waiting_mut(&mut self, conn: ConnId) -> Option<&mut Waiting> {
        self.waiting.iter_mut().find(|w| w.conn == conn)
    }

    /// Every connection this server owns (for closing it all).
    pub fn conns(&self) -> Vec<ConnId> {
        std::iter::once(self.listener)
            .chain(self.waiting.iter().map(|w| w.conn))
            .collect()
    }
}
