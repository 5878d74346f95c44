//! Host networking for the emulated modules (layer: edge). [`NetStack`] performs the cores'
//! [`NetOp`]s with real non-blocking sockets registered in the driver's `mio::Poll`, and turns what
//! happens on them into [`NetEvent`]s, following the contract in [`eswifi_core::module::io`]. DNS runs on
//! worker threads ([`dns`]). May touch sockets, threads and the mio registry; knows nothing of IWIN
//! or TLS (the core encrypts) and never blocks or times anything out.

pub(crate) mod claim;
mod dns;
mod ping;
mod queue;
mod workers;

pub(crate) use queue::WriteQueue;

use eswifi_core::module::io::{
    CloseHow, CloseReason, ConnId, ConnectError, NetEvent, NetOp, SendSeq, ACCEPTED_BIT,
};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, TcpKeepalive, Type};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

/// Which emulated module (index in the driver) an op came from and its events go to.
pub(crate) type ModuleIdx = usize;

/// Largest single read; also the UDP receive buffer (a datagram can be up to 64 KiB).
const READ_BUF: usize = 65536;

/// All host sockets of all modules, and the token bookkeeping for the poll they live in.
pub(crate) struct NetStack {
    /// Token allocator for every source in the poll (the driver takes its own tokens here too), so
    /// tokens are unique across modules and never reused.
    next_token: usize,
    conns: HashMap<Token, Conn>,
    by_id: HashMap<(ModuleIdx, ConnId), Token>,
    events: VecDeque<(ModuleIdx, NetEvent)>,
    dns: dns::Dns,
    scratch: Vec<u8>,
    /// The number of the next accepted connection (its id has [`ACCEPTED_BIT`] set, so it is
    /// disjoint from the cores' ids).
    next_accepted: u64,
    /// Results of ping workers; they wake the loop with the DNS waker.
    ping_tx: std::sync::mpsc::Sender<(ModuleIdx, NetEvent)>,
    ping_rx: std::sync::mpsc::Receiver<(ModuleIdx, NetEvent)>,
}

struct Conn {
    module: ModuleIdx,
    id: ConnId,
    /// Readable (or possibly at EOF/error) and not yet read to `WouldBlock`. Edge-triggered mio will
    /// not say so again, so this is retried whenever the module may have room.
    want_read: bool,
    kind: Kind,
}

enum Kind {
    Tcp(Tcp),
    Udp(UdpSocket),
    Listener(TcpListener),
}

struct Tcp {
    stream: TcpStream,
    connecting: bool,
    /// Bytes of `Send`s not yet taken by the kernel; the core's send window bounds it.
    out: WriteQueue,
    /// For each unanswered `Send`, the `out.pushed()` total at its last byte, and its number.
    sends: VecDeque<(u64, SendSeq)>,
    /// Whether WRITABLE is in the registered interest (wanted while connecting or while `out` has
    /// bytes, dropped otherwise to avoid a wake-up per ACK).
    writable: bool,
    /// `Close { Drain }` asked: deliver `out`, send FIN, read and discard until the peer's FIN.
    draining: bool,
    /// FIN sent.
    shut: bool,
}

impl Tcp {
    fn new(stream: TcpStream, connecting: bool) -> Tcp {
        Tcp {
            stream,
            connecting,
            out: WriteQueue::default(),
            sends: VecDeque::new(),
            writable: true,
            draining: false,
            shut: false,
        }
    }
}

impl NetStack {
    pub(crate) fn new(registry: &Registry) -> io::Result<NetStack> {
        let mut next_token = 0;
        let (ping_tx, ping_rx) = std::sync::mpsc::channel();
        let dns_token = Token(next_token);
        next_token += 1;
        Ok(NetStack {
            next_token,
            conns: HashMap::new(),
            by_id: HashMap::new(),
            events: VecDeque::new(),
            dns: dns::Dns::new(registry, dns_token)?,
            scratch: vec![0; READ_BUF],
            next_accepted: 1,
            ping_tx,
            ping_rx,
        })
    }

    /// The loop's waker: worker threads wake the poll with it (its events go to `handle_event`, which
    /// ignores them unless DNS answered; other workers' owners check their channels every turn).
    pub(crate) fn waker(&self) -> std::sync::Arc<mio::Waker> {
        self.dns.waker()
    }

    /// A fresh token for a source that is not a socket (a pty, the signal pipe).
    pub(crate) fn alloc_token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    /// Next event for a module. Events come out in the order they happened.
    pub(crate) fn pop_event(&mut self) -> Option<(ModuleIdx, NetEvent)> {
        self.events.pop_front()
    }

    /// Perform one op of `module`. Failures become events (e.g. `ConnectFailed`), never errors; some
    /// ops are answered at once (a `Sent` for a small send, a refused connect).
    pub(crate) fn perform(&mut self, registry: &Registry, module: ModuleIdx, op: NetOp) {
        match op {
            NetOp::Resolve { query, name } => {
                log::debug!("m{module} resolve #{query} {name:?}");
                self.dns.resolve(module, query, name, &mut self.events);
            }
            NetOp::Connect {
                conn,
                local,
                remote,
                keepalive,
            } => {
                log::debug!(
                    "m{module} connect #{conn} {local} -> {remote} keepalive {keepalive:?}"
                );
                match tcp_connect(local, remote, keepalive) {
                    Ok(stream) => {
                        self.insert(registry, module, conn, Kind::Tcp(Tcp::new(stream, true)));
                    }
                    Err(e) => self.connect_failed(module, conn, &e),
                }
            }
            NetOp::OpenUdp {
                conn,
                local,
                ephemeral_fallback,
            } => {
                log::debug!("m{module} udp #{conn} bind {local} fallback {ephemeral_fallback}");
                match udp_bind(local, ephemeral_fallback) {
                    Ok(sock) => match sock.local_addr() {
                        Ok(SocketAddr::V4(bound)) => {
                            if self.insert(registry, module, conn, Kind::Udp(sock)) {
                                let ev = NetEvent::Connected {
                                    conn,
                                    local: bound,
                                    peer: None,
                                };
                                self.push(module, ev);
                            }
                        }
                        Ok(SocketAddr::V6(a)) => self.connect_failed(
                            module,
                            conn,
                            &io::Error::other(format!("bound to IPv6 {a}")),
                        ),
                        Err(e) => self.connect_failed(module, conn, &e),
                    },
                    Err(e) => self.connect_failed(module, conn, &e),
                }
            }
            NetOp::Send {
                conn,
                seq,
                data,
                to,
            } => {
                log::debug!(
                    "m{module} send #{conn} seq {seq}: {} bytes to {to:?}",
                    data.len()
                );
                log::trace!("m{module} send #{conn} {}", data.escape_ascii());
                self.send(registry, module, conn, seq, &data, to);
            }
            NetOp::Listen {
                conn,
                local,
                backlog,
            } => {
                log::debug!("m{module} listen #{conn} on {local} backlog {backlog}");
                match tcp_listen(local, backlog) {
                    Ok(l) => {
                        if self.insert(registry, module, conn, Kind::Listener(l)) {
                            let ev = NetEvent::Connected {
                                conn,
                                local,
                                peer: None,
                            };
                            self.push(module, ev);
                        }
                    }
                    Err(e) => self.connect_failed(module, conn, &e),
                }
            }
            NetOp::Ping {
                query,
                target,
                count,
                interval,
                timeout,
            } => {
                log::debug!("m{module} ping #{query} {target} x{count}");
                let req = ping::Request {
                    module,
                    query,
                    target,
                    count,
                    interval,
                    timeout,
                };
                let (done, waker) = (self.ping_tx.clone(), self.dns.waker());
                ping::submit(req, self.dns.workers(), done, waker, &mut self.events);
            }
            NetOp::Close { conn, how } => {
                log::debug!("m{module} close #{conn} ({how:?})");
                // Whatever was already queued for it is stale now: the core asked for silence.
                self.events
                    .retain(|(m, ev)| *m != module || ev.conn() != Some(conn));
                let Some(&token) = self.by_id.get(&(module, conn)) else {
                    return;
                };
                match (how, self.conns.get_mut(&token).map(|c| &mut c.kind)) {
                    (CloseHow::Drain, Some(Kind::Tcp(tcp))) if !tcp.connecting => {
                        tcp.draining = true;
                        if let Some(c) = self.conns.get_mut(&token) {
                            // Reads go on (and are discarded) until the peer's FIN.
                            c.want_read = true;
                        }
                        self.flush_tcp(registry, token);
                    }
                    (CloseHow::Reset, Some(Kind::Tcp(tcp))) => {
                        // Linger 0: the kernel answers the close with an RST.
                        if let Err(e) = socket2::SockRef::from(&tcp.stream)
                            .set_linger(Some(std::time::Duration::ZERO))
                        {
                            log::debug!("m{module} #{conn}: linger 0: {e}");
                        }
                        self.remove(registry, token);
                    }
                    _ => self.remove(registry, token),
                }
            }
        }
    }

    /// React to a readiness event from the poll. Tokens that are not ours (or of sockets closed
    /// meanwhile) are ignored.
    pub(crate) fn handle_event(&mut self, registry: &Registry, event: &Event) {
        let token = event.token();
        if token == self.dns.token() {
            self.dns.drain(&mut self.events);
            while let Ok(ev) = self.ping_rx.try_recv() {
                self.events.push_back(ev);
            }
            return;
        }
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let (module, id) = (conn.module, conn.id);
        match &mut conn.kind {
            Kind::Listener(_) => self.accept_all(registry, token),
            Kind::Udp(_) => {
                if event.is_readable() || event.is_error() {
                    conn.want_read = true;
                }
            }
            Kind::Tcp(tcp) if tcp.connecting => match connect_result(&tcp.stream) {
                Ok(None) => {}
                Ok(Some((local, peer))) => {
                    log::debug!("m{module} connected #{id} from {local} to {peer}");
                    tcp.connecting = false;
                    // Data may have arrived with the handshake; the event that said so is used up.
                    conn.want_read = true;
                    let ev = NetEvent::Connected {
                        conn: id,
                        local,
                        peer: Some(peer),
                    };
                    self.events.push_back((module, ev));
                    self.flush_tcp(registry, token);
                }
                Err(e) => {
                    self.remove(registry, token);
                    self.connect_failed(module, id, &e);
                }
            },
            Kind::Tcp(_) => {
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    conn.want_read = true;
                }
                if event.is_writable() || event.is_error() {
                    self.flush_tcp(registry, token);
                }
            }
        }
    }

    /// Whether some socket has unread input and its module has room for it, i.e. the loop must not
    /// sleep.
    pub(crate) fn has_pending_reads(&self, room: impl Fn(ModuleIdx, ConnId) -> usize) -> bool {
        self.conns
            .values()
            .any(|c| c.want_read && room(c.module, c.id) > 0)
    }

    /// Read every socket that has input, at most `room(module, conn)` bytes each (the module's
    /// backpressure); call after each module step, since room may have opened up.
    pub(crate) fn pump_reads(
        &mut self,
        registry: &Registry,
        room: impl Fn(ModuleIdx, ConnId) -> usize,
    ) {
        let ready: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.want_read)
            .map(|(t, _)| *t)
            .collect();
        for token in ready {
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            let draining = matches!(&conn.kind, Kind::Tcp(t) if t.draining);
            // A draining connection is read (and its data discarded) whatever the module's room.
            let budget = if draining {
                READ_BUF
            } else {
                room(conn.module, conn.id)
            };
            if budget == 0 {
                continue;
            }
            let (module, id) = (conn.module, conn.id);
            let mut sink = Sink {
                module,
                id,
                want_read: &mut conn.want_read,
                events: &mut self.events,
                discard: draining,
            };
            let end = match &mut conn.kind {
                Kind::Listener(_) => {
                    *sink.want_read = false;
                    None
                }
                Kind::Tcp(tcp) => read_tcp(&mut tcp.stream, budget, &mut self.scratch, &mut sink),
                Kind::Udp(sock) => {
                    read_udp(sock, budget, &mut self.scratch, &mut sink);
                    None
                }
            };
            if let Some(reason) = end {
                self.remove(registry, token);
                let reason = if draining {
                    match reason {
                        CloseReason::PeerClosed => CloseReason::Drained,
                        other => other,
                    }
                } else {
                    reason
                };
                log::debug!("m{module} closed #{id}: {reason:?}");
                self.push(module, NetEvent::Closed { conn: id, reason });
            }
        }
    }

    /// Accept every pending client of a listener; each becomes a connection of its own.
    fn accept_all(&mut self, registry: &Registry, token: Token) {
        loop {
            let Some(Conn {
                module,
                id,
                kind: Kind::Listener(l),
                ..
            }) = self.conns.get(&token)
            else {
                return;
            };
            let (module, listener) = (*module, *id);
            match l.accept() {
                Ok((stream, SocketAddr::V4(peer))) => {
                    let conn = ConnId(ACCEPTED_BIT | self.next_accepted);
                    self.next_accepted += 1;
                    log::debug!("m{module} listener #{listener} accepted #{conn} from {peer}");
                    if self.insert(registry, module, conn, Kind::Tcp(Tcp::new(stream, false))) {
                        if let Some(c) = self.conns.get_mut(&self.by_id[&(module, conn)]) {
                            // Data may already be waiting; no edge will announce it again.
                            c.want_read = true;
                        }
                        self.push(
                            module,
                            NetEvent::Accepted {
                                listener,
                                conn,
                                peer,
                            },
                        );
                    }
                }
                Ok((_, peer)) => {
                    log::debug!("m{module} listener #{listener}: dropped IPv6 client {peer}")
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("m{module} listener #{listener}: accept: {e}");
                    return;
                }
            }
        }
    }

    fn push(&mut self, module: ModuleIdx, ev: NetEvent) {
        self.events.push_back((module, ev));
    }

    fn connect_failed(&mut self, module: ModuleIdx, conn: ConnId, e: &io::Error) {
        let error = connect_error(e);
        log::debug!("m{module} connect #{conn} failed: {e} ({error:?})");
        self.push(module, NetEvent::ConnectFailed { conn, error });
    }

    /// Register a new socket; false (and a `ConnectFailed`) if the poll refuses it.
    fn insert(
        &mut self,
        registry: &Registry,
        module: ModuleIdx,
        id: ConnId,
        mut kind: Kind,
    ) -> bool {
        if let Some(&old) = self.by_id.get(&(module, id)) {
            log::warn!("m{module} conn #{id} opened twice; dropping the old socket");
            self.remove(registry, old);
        }
        let token = self.alloc_token();
        let registered = match &mut kind {
            Kind::Tcp(tcp) => registry.register(
                &mut tcp.stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ),
            Kind::Udp(sock) => registry.register(sock, token, Interest::READABLE),
            Kind::Listener(l) => registry.register(l, token, Interest::READABLE),
        };
        if let Err(e) = registered {
            self.connect_failed(module, id, &e);
            return false;
        }
        self.by_id.insert((module, id), token);
        self.conns.insert(
            token,
            Conn {
                module,
                id,
                want_read: false,
                kind,
            },
        );
        true
    }

    fn remove(&mut self, registry: &Registry, token: Token) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        self.by_id.remove(&(conn.module, conn.id));
        let r = match &mut conn.kind {
            Kind::Tcp(tcp) => registry.deregister(&mut tcp.stream),
            Kind::Udp(sock) => registry.deregister(sock),
            Kind::Listener(l) => registry.deregister(l),
        };
        if let Err(e) = r {
            log::debug!("deregister #{}: {e}", conn.id);
        }
    }

    fn send(
        &mut self,
        registry: &Registry,
        module: ModuleIdx,
        id: ConnId,
        seq: SendSeq,
        data: &[u8],
        to: Option<SocketAddrV4>,
    ) {
        let Some(&token) = self.by_id.get(&(module, id)) else {
            // Gone already (peer closed, failed): the core learns or has learnt that from `Closed`.
            log::debug!("m{module} send #{id}: no such connection; dropped");
            return;
        };
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        match &mut conn.kind {
            Kind::Tcp(tcp) => {
                tcp.out.push(data);
                tcp.sends.push_back((tcp.out.pushed(), seq));
                self.flush_tcp(registry, token);
            }
            Kind::Listener(_) => {
                log::warn!("m{module} #{id}: send on a listening socket dropped");
                self.push(module, NetEvent::Sent { conn: id, seq });
            }
            Kind::Udp(sock) => {
                match to {
                    Some(to) => loop {
                        match sock.send_to(data, SocketAddr::V4(to)) {
                            Ok(_) => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            // A datagram that does not fit now is lost, as on any UDP stack.
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                log::debug!(
                                    "m{module} udp #{id}: send buffer full, datagram dropped"
                                );
                                break;
                            }
                            Err(e) => {
                                log::warn!(
                                    "m{module} udp #{id}: send to {to}: {e}; datagram dropped"
                                );
                                break;
                            }
                        }
                    },
                    None => log::warn!("m{module} udp #{id}: send without destination dropped"),
                }
                self.push(module, NetEvent::Sent { conn: id, seq });
            }
        }
    }

    /// Write what a TCP connection has buffered, answer the `Send`s that are now accepted, and keep
    /// WRITABLE interest only while bytes wait. A write error closes the connection.
    fn flush_tcp(&mut self, registry: &Registry, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let (module, id) = (conn.module, conn.id);
        let Kind::Tcp(tcp) = &mut conn.kind else {
            return;
        };
        if tcp.connecting {
            return;
        }
        let stream = &mut tcp.stream;
        if let Err(e) = tcp.out.flush(|b| io::Write::write(stream, b)) {
            log::debug!("m{module} write #{id}: {e}");
            self.remove(registry, token);
            self.push(
                module,
                NetEvent::Closed {
                    conn: id,
                    reason: CloseReason::Error(e.to_string()),
                },
            );
            return;
        }
        let written = tcp.out.written();
        while let Some(&(end, seq)) = tcp.sends.front() {
            if end > written {
                break;
            }
            tcp.sends.pop_front();
            if !tcp.draining {
                self.events
                    .push_back((module, NetEvent::Sent { conn: id, seq }));
            }
        }
        if tcp.draining && tcp.out.is_empty() && !tcp.shut {
            // Everything the host sent is with the kernel: FIN follows it.
            tcp.shut = true;
            if let Err(e) = tcp.stream.shutdown(std::net::Shutdown::Write) {
                log::debug!("m{module} shutdown #{id}: {e}");
            }
        }
        let want_writable = !tcp.out.is_empty();
        if want_writable != tcp.writable {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            match registry.reregister(&mut tcp.stream, token, interest) {
                Ok(()) => tcp.writable = want_writable,
                Err(e) => log::warn!("m{module} reregister #{id}: {e}"),
            }
        }
    }
}

/// Read up to `budget` bytes into one `Data` event. Returns why the stream ended, if it did (after the
/// data read before the end). Leaves `want_read` set when it stopped for lack of budget.
fn read_tcp(
    stream: &mut TcpStream,
    budget: usize,
    scratch: &mut [u8],
    sink: &mut Sink,
) -> Option<CloseReason> {
    let mut data = Vec::new();
    let mut end = None;
    while data.len() < budget {
        let n = (budget - data.len()).min(scratch.len());
        match stream.read(&mut scratch[..n]) {
            Ok(0) => {
                end = Some(CloseReason::PeerClosed);
                break;
            }
            Ok(n) => data.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *sink.want_read = false;
                break;
            }
            Err(e) => {
                end = Some(CloseReason::Error(e.to_string()));
                break;
            }
        }
    }
    sink.data(data);
    end
}

/// Where a read reports what it found, for one connection.
struct Sink<'a> {
    module: ModuleIdx,
    id: ConnId,
    /// Cleared once the socket has been read to `WouldBlock`.
    want_read: &'a mut bool,
    events: &'a mut VecDeque<(ModuleIdx, NetEvent)>,
    /// The connection is draining: what arrives is read and dropped.
    discard: bool,
}

impl Sink<'_> {
    fn push(&mut self, ev: NetEvent) {
        self.events.push_back((self.module, ev));
    }

    /// Stream bytes received (nothing if empty).
    fn data(&mut self, data: Vec<u8>) {
        if data.is_empty() {
            return;
        }
        if self.discard {
            log::trace!(
                "m{} #{}: {} bytes after close dropped",
                self.module,
                self.id,
                data.len()
            );
            return;
        }
        log::debug!("m{} recv #{} {} bytes", self.module, self.id, data.len());
        log::trace!("m{} recv #{} {}", self.module, self.id, data.escape_ascii());
        let conn = self.id;
        self.push(NetEvent::Data { conn, data });
    }
}

/// Receive whole datagrams while the module has room (a datagram is never split, so the last one may
/// exceed the room; the core decides what to keep).
fn read_udp(sock: &UdpSocket, budget: usize, scratch: &mut [u8], sink: &mut Sink) {
    let (module, id) = (sink.module, sink.id);
    let mut used = 0;
    while used < budget {
        match sock.recv_from(scratch) {
            Ok((n, SocketAddr::V4(from))) => {
                log::debug!("m{module} recv #{id} datagram {n} bytes from {from}");
                log::trace!("m{module} recv #{id} {}", scratch[..n].escape_ascii());
                sink.push(NetEvent::Datagram {
                    conn: id,
                    data: scratch[..n].to_vec(),
                    from,
                });
                // Empty datagrams count too, so a flood of them cannot keep us here.
                used += n.max(1);
            }
            Ok((_, from)) => log::debug!("m{module} udp #{id}: dropped datagram from {from}"),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *sink.want_read = false;
                return;
            }
            Err(e) => {
                // UDP errors (e.g. a reported ICMP error) do not end the socket.
                log::debug!("m{module} udp #{id}: recv: {e}");
                *sink.want_read = false;
                return;
            }
        }
    }
}

/// Start a non-blocking TCP connect from `local`. `Err` only for failures known at once.
fn tcp_connect(
    local: SocketAddrV4,
    remote: SocketAddrV4,
    keepalive: Option<Duration>,
) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    if let Some(idle) = keepalive {
        // TCP_KEEPIDLE counts whole seconds and rejects 0.
        let idle = idle.max(Duration::from_secs(1));
        if let Err(e) = socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle)) {
            log::warn!("keepalive {idle:?} on connect to {remote}: {e}");
        }
    }
    socket.bind(&SockAddr::from(local))?;
    match socket.connect(&SockAddr::from(remote)) {
        Ok(()) => {}
        // EINTR on a non-blocking connect also means "continues in the background".
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == io::ErrorKind::WouldBlock
                || e.kind() == io::ErrorKind::Interrupted => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Whether a connect in progress has finished: `Ok(Some((local, peer)))` connected, `Ok(None)` not yet
/// (spurious wake-up), `Err` failed.
fn connect_result(stream: &TcpStream) -> io::Result<Option<(SocketAddrV4, SocketAddrV4)>> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(SocketAddr::V4(peer)) => match stream.local_addr()? {
            SocketAddr::V4(local) => Ok(Some((local, peer))),
            SocketAddr::V6(a) => Err(io::Error::other(format!("connected from IPv6 {a}"))),
        },
        Ok(SocketAddr::V6(a)) => Err(io::Error::other(format!("connected to IPv6 {a}"))),
        Err(e)
            if e.kind() == io::ErrorKind::NotConnected
                || e.raw_os_error() == Some(libc::EINPROGRESS) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A non-blocking listening socket on `local` (SO_REUSEADDR, so a restarted server can rebind a port
/// whose old connections are in TIME_WAIT).
fn tcp_listen(local: SocketAddrV4, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SockAddr::from(local))?;
    socket.listen(backlog.clamp(1, 128) as i32)?;
    Ok(TcpListener::from_std(socket.into()))
}

fn udp_bind(local: SocketAddrV4, ephemeral_fallback: bool) -> io::Result<UdpSocket> {
    match UdpSocket::bind(SocketAddr::V4(local)) {
        Err(e)
            if ephemeral_fallback
                && local.port() != 0
                && e.raw_os_error() == Some(libc::EADDRINUSE) =>
        {
            log::debug!("udp {local} in use; binding an ephemeral port");
            UdpSocket::bind(SocketAddr::V4(SocketAddrV4::new(*local.ip(), 0)))
        }
        r => r,
    }
}

/// The kind of a connect/bind failure, as the core distinguishes them.
fn connect_error(e: &io::Error) -> ConnectError {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => ConnectError::Refused,
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => ConnectError::Unreachable,
        Some(libc::ETIMEDOUT) => ConnectError::TimedOut,
        Some(libc::EADDRINUSE) => ConnectError::AddrInUse,
        _ => ConnectError::Other(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
