//! One of the module's four sockets (layer: core, pure data): the settings set by `P1`..`P9`, `PK`,
//! `R*`, `S*`, and its one `SocketState`, changed only through `Socket::transition`, which maps
//! the old state to the new one and logs it as it is. Receive queues, send windows and the client a
//! server serves live inside the states that have them, so no flag can disagree with the state.

use super::io::{ConnId, SendSeq, SEND_WINDOW};
use super::recent::Recent;
use super::tls::{TlsServerParams, TlsSession};
use crate::iwin::command::{Protocol, TlsVerify};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Receive queue limit per connection; beyond it the driver stops reading (TCP window closes).
pub(crate) const RX_LIMIT: usize = 64 * 1024;

/// UDP senders a server remembers having announced (`[UDP SVR] Accepted`); the least recently heard
/// one is forgotten first, and announced again if it comes back.
pub(crate) const UDP_SENDERS: usize = 64;

/// Received data: a byte stream (TCP/TLS) or whole datagrams (UDP).
#[derive(Debug, Default)]
pub(crate) struct RxQueue {
    stream: VecDeque<u8>,
    datagrams: VecDeque<(Vec<u8>, SocketAddrV4)>,
    datagram_bytes: usize,
}

impl RxQueue {
    pub(crate) fn len(&self) -> usize {
        self.stream.len() + self.datagram_bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.stream.is_empty() && self.datagrams.is_empty()
    }

    pub(crate) fn push_stream(&mut self, data: &[u8]) {
        self.stream.extend(data);
    }

    pub(crate) fn push_datagram(&mut self, data: Vec<u8>, from: SocketAddrV4) {
        self.datagram_bytes += data.len();
        self.datagrams.push_back((data, from));
    }

    /// Up to `max` bytes: a stream chunk, or one datagram cut to `max` (the rest is discarded, as on
    /// the module). Returns the sender for datagrams.
    pub(crate) fn take(&mut self, max: usize) -> Option<(Vec<u8>, Option<SocketAddrV4>)> {
        if let Some((mut d, from)) = self.datagrams.pop_front() {
            self.datagram_bytes -= d.len();
            d.truncate(max);
            return Some((d, Some(from)));
        }
        if self.stream.is_empty() {
            return None;
        }
        let n = max.min(self.stream.len());
        let (a, b) = self.stream.as_slices();
        let mut out = Vec::with_capacity(n);
        let from_a = n.min(a.len());
        out.extend_from_slice(&a[..from_a]);
        out.extend_from_slice(&b[..n - from_a]);
        self.stream.drain(..n);
        Some((out, None))
    }
}

/// Bytes handed to the driver and not yet confirmed written (`Sent`), per connection: the emulated
/// socket send buffer, bounded by [`SEND_WINDOW`].
#[derive(Debug, Default)]
pub(crate) struct TxWindow {
    in_flight: VecDeque<(SendSeq, usize)>,
    bytes: usize,
}

impl TxWindow {
    /// How many more bytes may be handed to the driver now.
    pub(crate) fn room(&self) -> usize {
        SEND_WINDOW.saturating_sub(self.bytes)
    }

    pub(crate) fn push(&mut self, seq: SendSeq, len: usize) {
        self.in_flight.push_back((seq, len));
        self.bytes += len;
    }

    /// The driver wrote the send `seq` (sends complete in order). False if `seq` is not the oldest
    /// one in flight: a contract violation the caller logs.
    pub(crate) fn ack(&mut self, seq: SendSeq) -> bool {
        match self.in_flight.front() {
            Some(&(s, len)) if s == seq => {
                self.in_flight.pop_front();
                self.bytes -= len;
                true
            }
            _ => false,
        }
    }
}

/// An open stream: a TCP or TLS client connection, or the current client of a TCP server.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) conn: ConnId,
    pub(crate) rx: RxQueue,
    pub(crate) tx: TxWindow,
    /// TLS session riding on the connection (the driver sees only ciphertext).
    pub(crate) tls: Option<Box<TlsSession>>,
}

impl Stream {
    pub(crate) fn new(conn: ConnId, tls: Option<Box<TlsSession>>) -> Stream {
        Stream {
            conn,
            rx: RxQueue::default(),
            tx: TxWindow::default(),
            tls,
        }
    }
}

/// A bound UDP socket: a client (`P6=1`) or a server (`P5=1`).
#[derive(Debug)]
pub(crate) struct UdpSock {
    pub(crate) conn: ConnId,
    pub(crate) rx: RxQueue,
    pub(crate) tx: TxWindow,
    /// Servers: the senders already announced.
    pub(crate) server: Option<Recent<SocketAddrV4>>,
}

impl UdpSock {
    /// Note a datagram from `from`; true when the sender is new (to be announced).
    pub(crate) fn heard(&mut self, from: SocketAddrV4) -> bool {
        self.server
            .as_mut()
            .is_some_and(|seen| seen.touch(from, ()))
    }
}

/// A client accepted by a TCP server but not yet made current.
#[derive(Debug)]
pub(crate) struct Waiting {
    pub(crate) conn: ConnId,
    pub(crate) peer: SocketAddrV4,
    pub(crate) rx: RxQueue,
    /// The client already disconnected (its data is still delivered, then `-1`).
    pub(crate) closed: bool,
}

/// A listening TCP server (`P5`/`P7`).
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) conn: ConnId,
    /// Multi-accept (`P5=11`) or the legacy accept loop (`P7=1`): after a client ends and its `-1`
    /// is read, the next waiting client becomes current by itself.
    pub(crate) accept_loop: bool,
    /// Clients waiting behind the current one (at most `P8`).
    pub(crate) waiting: VecDeque<Waiting>,
    /// A TLS server (`P1=3`, `[tls] server`): each client's handshake runs when it becomes
    /// current; until then its ciphertext waits in its receive queue.
    pub(crate) tls: Option<Box<TlsServerParams>>,
    /// `P?` ClientIP: the last client made current, until the server stops.
    pub(crate) last_client: Option<Ipv4Addr>,
}

impl Listener {
    /// Waiting clients whose connection is still up.
    pub(crate) fn live_waiting(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.waiting.iter().filter(|w| !w.closed).map(|w| w.conn)
    }
}

/// What a `P6=1`/`P5=1` under way will become.
#[derive(Debug)]
pub(crate) enum Opening {
    Tcp,
    Tls(Box<TlsSession>),
    Udp,
    UdpServer,
    TcpServer {
        accept_loop: bool,
        tls: Option<Box<TlsServerParams>>,
    },
}

/// Where the socket is. The reply to `R0`, `S3`, `P6` and `P5` follows from this alone.
#[derive(Debug, Default)]
pub(crate) enum SocketState {
    /// Nothing open.
    #[default]
    Idle,
    /// Waiting for the driver to connect, bind or listen.
    Opening { conn: ConnId, what: Opening },
    /// TLS client: TCP is up, the handshake runs (the stream's `tls` is set).
    Handshaking(Box<Stream>),
    /// A client connection (TCP or TLS).
    Open(Box<Stream>),
    /// The client connection ended; what it received is still readable, then `-1`.
    Ended(RxQueue),
    /// A bound UDP client or server.
    Udp(Box<UdpSock>),
    /// A TCP server without a current client.
    Listening(Box<Listener>),
    /// A TLS server and the client that is to be current once its handshake completes (only then
    /// is it announced and readable).
    Accepting(Box<Listener>, Box<Stream>, SocketAddrV4),
    /// A TCP server and its current client.
    Serving(Box<Listener>, Box<Stream>),
    /// A TCP server whose current client ended: its data, then `-1`, then the server moves on.
    ServingEnded(Box<Listener>, RxQueue),
}

impl SocketState {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            SocketState::Idle => "idle",
            SocketState::Opening { .. } => "opening",
            SocketState::Handshaking(_) => "tls-handshake",
            SocketState::Open(_) => "open",
            SocketState::Ended(_) => "ended",
            SocketState::Udp(u) if u.server.is_some() => "udp-server",
            SocketState::Udp(_) => "udp",
            SocketState::Listening(_) => "listening",
            SocketState::Accepting(..) => "tls-accepting",
            SocketState::Serving(..) => "serving",
            SocketState::ServingEnded(..) => "serving-ended",
        }
    }

    /// The listener of a TCP server.
    pub(crate) fn listener(&self) -> Option<&Listener> {
        match self {
            SocketState::Listening(l)
            | SocketState::Accepting(l, ..)
            | SocketState::Serving(l, _)
            | SocketState::ServingEnded(l, _) => Some(l),
            _ => None,
        }
    }

    pub(crate) fn listener_mut(&mut self) -> Option<&mut Listener> {
        match self {
            SocketState::Listening(l)
            | SocketState::Accepting(l, ..)
            | SocketState::Serving(l, _)
            | SocketState::ServingEnded(l, _) => Some(l),
            _ => None,
        }
    }

    /// The stream whose data `R0`/`S3` use: a client connection or a server's current client.
    pub(crate) fn stream_mut(&mut self) -> Option<&mut Stream> {
        match self {
            SocketState::Open(s) | SocketState::Serving(_, s) => Some(s),
            _ => None,
        }
    }

    /// The receive queue `R0` reads, if the state has one.
    pub(crate) fn rx(&self) -> Option<&RxQueue> {
        match self {
            SocketState::Handshaking(s)
            | SocketState::Open(s)
            | SocketState::Accepting(_, s, _)
            | SocketState::Serving(_, s) => Some(&s.rx),
            SocketState::Ended(rx) | SocketState::ServingEnded(_, rx) => Some(rx),
            SocketState::Udp(u) => Some(&u.rx),
            _ => None,
        }
    }

    pub(crate) fn rx_mut(&mut self) -> Option<&mut RxQueue> {
        match self {
            SocketState::Handshaking(s)
            | SocketState::Open(s)
            | SocketState::Accepting(_, s, _)
            | SocketState::Serving(_, s) => Some(&mut s.rx),
            SocketState::Ended(rx) | SocketState::ServingEnded(_, rx) => Some(rx),
            SocketState::Udp(u) => Some(&mut u.rx),
            _ => None,
        }
    }

    /// Every live connection of this state (for closing it all); a waiting client that already
    /// left is gone on the driver's side too.
    pub(crate) fn conns(&self) -> Vec<ConnId> {
        match self {
            SocketState::Idle | SocketState::Ended(_) => vec![],
            SocketState::Opening { conn, .. } => vec![*conn],
            SocketState::Handshaking(s) | SocketState::Open(s) => vec![s.conn],
            SocketState::Udp(u) => vec![u.conn],
            SocketState::Listening(l) | SocketState::ServingEnded(l, _) => {
                std::iter::once(l.conn).chain(l.live_waiting()).collect()
            }
            SocketState::Serving(l, s) | SocketState::Accepting(l, s, _) => std::iter::once(s.conn)
                .chain(std::iter::once(l.conn))
                .chain(l.live_waiting())
                .collect(),
        }
    }

    /// True while a client or server connection is live (what `P6=1` must not start over).
    pub(crate) fn is_busy(&self) -> bool {
        !matches!(self, SocketState::Idle | SocketState::Ended(_))
    }
}

/// A socket's settings and state.
#[derive(Debug)]
pub(crate) struct Socket {
    pub(crate) protocol: Protocol,
    pub(crate) local_port: u16,
    /// `P2` was set by the host since power-up (the UDP client's local port follows it then).
    pub(crate) local_port_set: bool,
    pub(crate) remote_ip: Ipv4Addr,
    pub(crate) remote_port: u16,
    pub(crate) backlog: u8,
    pub(crate) tls_verify: TlsVerify,
    /// `PB=1`: a failed CA verification is reported but the connection proceeds.
    pub(crate) verify_report_only: bool,
    pub(crate) keepalive: (bool, u32),
    pub(crate) read_size: u16,
    pub(crate) read_timeout_ms: u32,
    pub(crate) read_mode: u8,
    pub(crate) send_size: u16,
    pub(crate) send_timeout_ms: u32,
    state: SocketState,
}

impl Default for Socket {
    /// Power-up defaults (M46 / T20).
    fn default() -> Self {
        Socket {
            protocol: Protocol::Tcp,
            local_port: 5024,
            local_port_set: false,
            remote_ip: Ipv4Addr::UNSPECIFIED,
            remote_port: 5025,
            backlog: 8,
            tls_verify: TlsVerify::None,
            verify_report_only: false,
            keepalive: (false, 7_200_000),
            read_size: 1460,
            read_timeout_ms: 5000,
            read_mode: 0,
            send_size: 1460,
            send_timeout_ms: 5000,
            state: SocketState::Idle,
        }
    }
}

impl Socket {
    pub(crate) fn state(&self) -> &SocketState {
        &self.state
    }

    pub(crate) fn state_mut(&mut self) -> &mut SocketState {
        &mut self.state
    }

    /// The one place a socket changes state: `step` maps the old state to the new one (taking it
    /// by value, so what it holds moves along) and returns what the caller still has to do with
    /// what it let go of (a stream to close, a client to announce). The log says `old -> new`.
    pub(crate) fn transition<R>(
        &mut self,
        index: usize,
        why: &str,
        step: impl FnOnce(SocketState) -> (SocketState, R),
    ) -> R {
        let old = std::mem::take(&mut self.state);
        let from = old.name();
        let (new, rest) = step(old);
        if from != new.name() {
            log::debug!("socket {index}: {from} -> {} ({why})", new.name());
        }
        self.state = new;
        rest
    }

    /// Holds (or is setting up) a TLS session, or serves TLS: what `[tls] max_sockets` counts.
    pub(crate) fn uses_tls(&self) -> bool {
        match &self.state {
            SocketState::Opening {
                what: Opening::Tls(_),
                ..
            }
            | SocketState::Handshaking(_) => true,
            SocketState::Open(s) => s.tls.is_some(),
            other => other.listener().is_some_and(|l| l.tls.is_some()),
        }
    }

    /// `P?` — `Protocol,ClientIP,LocalPort,HostIP,RemotePort,TCPServer,UDPServer,Backlogs,AcceptLoop,ReadMode`
    /// and, with `fields` = 12 (C6), `TCPKeepAlive,KATimeToIdle`.
    pub(crate) fn transport_line(&self, fields: usize) -> String {
        let (tcp_server, udp_server, accept_loop) = match &self.state {
            SocketState::Udp(u) if u.server.is_some() => (0, 1, 0),
            s => match s.listener() {
                Some(l) => (1, 0, l.accept_loop as u8),
                None => (0, 0, 0),
            },
        };
        let client_ip = self
            .state
            .listener()
            .and_then(|l| l.last_client)
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mut line = format!(
            "{},{},{},{},{},{},{},{},{},{}",
            self.protocol.code(),
            client_ip,
            self.local_port,
            self.remote_ip,
            self.remote_port,
            tcp_server,
            udp_server,
            self.backlog,
            accept_loop,
            self.read_mode
        );
        if fields >= 12 {
            line.push_str(&format!(",{},{}", self.keepalive.0 as u8, self.keepalive.1));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_beyond_read_size_is_discarded() {
        let mut q = RxQueue::default();
        let from = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
        q.push_datagram(b"abcdef".to_vec(), from);
        q.push_datagram(b"gh".to_vec(), from);
        assert_eq!(q.len(), 8);
        assert_eq!(q.take(4), Some((b"abcd".to_vec(), Some(from))));
        assert_eq!(q.take(4), Some((b"gh".to_vec(), Some(from))));
        assert_eq!(q.take(4), None);
        assert!(q.is_empty());
    }

    #[test]
    fn stream_chunks_across_the_ring_seam() {
        let mut q = RxQueue::default();
        q.push_stream(b"hello world");
        assert_eq!(q.take(5).unwrap().0, b"hello");
        q.push_stream(b"!!");
        assert_eq!(q.take(100).unwrap().0, b" world!!");
        assert_eq!(q.take(1), None);
    }

    #[test]
    fn send_window_acks_in_order_only() {
        let mut w = TxWindow::default();
        w.push(SendSeq(1), 1000);
        w.push(SendSeq(2), 500);
        assert_eq!(w.room(), SEND_WINDOW - 1500);
        assert!(!w.ack(SendSeq(2)), "out of order");
        assert!(w.ack(SendSeq(1)));
        assert!(w.ack(SendSeq(2)));
        assert!(!w.ack(SendSeq(2)), "twice");
        assert_eq!(w.room(), SEND_WINDOW);
    }

    #[test]
    fn udp_server_remembers_a_bounded_set_of_senders() {
        let mut u = UdpSock {
            conn: ConnId(1),
            rx: RxQueue::default(),
            tx: TxWindow::default(),
            server: Some(Recent::new(UDP_SENDERS)),
        };
        let a = |p: u16| SocketAddrV4::new(Ipv4Addr::LOCALHOST, p);
        assert!(u.heard(a(1)));
        assert!(!u.heard(a(1)));
        for p in 2..=UDP_SENDERS as u16 {
            assert!(u.heard(a(p)));
            // The first sender keeps talking: it stays remembered.
            assert!(!u.heard(a(1)));
        }
        assert!(u.heard(a(9999)), "a new sender beyond the bound");
        assert!(!u.heard(a(1)), "the busy sender was not evicted");
        assert!(u.heard(a(2)), "the least recently heard one was");
    }
}
