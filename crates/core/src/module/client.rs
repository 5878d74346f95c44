//! Client-socket area (layer: core): the per-socket settings commands (`P0`..`P4`, `P8`, `P9`, `PB`,
//! `PK`, `P?`, `R1`..`R3`, `R?`, `S1`, `S2`, `S?`), `P6` (TCP connect, TLS handshake, UDP bind), and
//! the network events that move a socket's state. `R0`/`S3` are in `data`, servers in `server`.
//! Pure: operations go out as [`NetOp`]s.

use super::error::{Error, SocketError, TlsError};
use super::io::{CloseHow, CloseReason, ConnId, ConnectError, NetOp, SendSeq};
use super::recent::Recent;
use super::socket::{Opening, SocketState, Stream, UdpSock};
use super::tls::{SetupError, TlsFailure, TlsSession};
use super::{ok, payload, Answer, Busy, Module, PayloadFor, Step};
use crate::iwin::command::{Protocol, SocketCmd, TlsVerify};
use crate::iwin::reply::Reply;
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// A connection a transition let go of, for the module to close ([`Module::release`]).
pub(super) enum Release {
    /// A stream: a TLS one that closes gracefully says close_notify first.
    Stream(Box<Stream>),
    Conn(ConnId),
}

/// What an open under way became (see [`Module::on_connected`]).
enum Opened {
    Tcp,
    Tls,
    Udp { server: bool },
    Server { tls: bool },
}

/// What a broken TLS session took down (see [`Module::tls_failed`]).
enum Broke {
    /// A client's handshake: `P6=1` fails.
    Handshake {
        conn: ConnId,
        set: usize,
    },
    /// An established client connection.
    Connection(ConnId),
    /// A TLS server's candidate client, never announced.
    Candidate {
        conn: ConnId,
        set: usize,
        peer: SocketAddrV4,
    },
    /// A TLS server's current client.
    Client(ConnId),
    Nothing,
}

/// Where a connection id lives in the module.
pub(super) enum Owner {
    /// The socket's stream (client, TLS client, or a server's current client).
    Stream(usize),
    Udp(usize),
    Opening(usize),
    Listener(usize),
    /// A client waiting behind a server's current one.
    Waiting(usize),
}

impl Module {
    pub(super) fn socket_command(&mut self, cmd: SocketCmd, now: Instant) -> Step {
        use SocketCmd::*;
        let cur = self.current;
        let s = &mut self.sockets[cur];
        match cmd {
            Select(None) => return payload(cur.to_string()),
            Select(Some(i)) => self.current = i as usize,
            SetProtocol(p) => s.protocol = p,
            SetLocalPort(p) => {
                s.local_port = p;
                s.local_port_set = true;
            }
            SetRemoteIp(ip) => s.remote_ip = ip,
            SetRemotePort(p) => s.remote_port = p,
            Client(true) => return self.start_client(cur, now),
            Client(false) => self.stop_client(cur, now),
            SetBacklog(b) => s.backlog = b,
            SetTlsVerify(v) => s.tls_verify = v,
            SetVerifyReportOnly(v) => s.verify_report_only = v,
            SetKeepAlive(on, ms) => s.keepalive = (on, ms),
            Query => return payload(s.transport_line(self.profile.transport_fields())),
            Read { counted } => return self.read(cur, counted, now),
            SetReadSize(v) => s.read_size = v,
            SetReadTimeout(v) => s.read_timeout_ms = v,
            SetReadMode(v) => s.read_mode = v,
            ReadQuery => {
                return payload(format!(
                    "{},{},{}",
                    s.read_size, s.read_timeout_ms, s.read_mode
                ))
            }
            SetSendSize(v) => s.send_size = v,
            SetSendTimeout(v) => s.send_timeout_ms = v,
            Send(len) => {
                self.framer.expect_payload(len);
                let deadline = now + Duration::from_millis(self.cfg.timing.payload_timeout_ms);
                return Ok(Answer::Wait(Busy::Payload {
                    to: PayloadFor::Send { socket: cur },
                    deadline,
                }));
            }
            LegacySend => {
                self.framer.expect_payload(s.send_size as usize);
                let wait = match s.send_timeout_ms {
                    0 => super::data::S2_MAX_MS,
                    ms => ms,
                };
                return Ok(Answer::Wait(Busy::Payload {
                    to: PayloadFor::LegacySend { socket: cur },
                    deadline: now + Duration::from_millis(wait as u64),
                }));
            }
            SendQuery => return payload(format!("{},{}", s.send_size, s.send_timeout_ms)),
        }
        ok()
    }

    /// `P6=1`: connect (TCP, TLS) or bind (UDP) with the socket's settings.
    fn start_client(&mut self, i: usize, now: Instant) -> Step {
        let s = &self.sockets[i];
        if s.state().is_busy() {
            log::warn!(
                "socket {i}: P6=1 on a socket that is {} (P6=0 / P5=0 first)",
                s.state().name()
            );
            return Err(SocketError::AlreadyConnected.into());
        }
        let proto = s.protocol;
        if !self.network_up() {
            log::warn!(
                "socket {i}: P6=1 while neither joined to a network nor running the soft AP"
            );
            return Err(if proto.is_datagram() {
                SocketError::UdpFailed
            } else {
                SocketError::ConnectFailed
            }
            .into());
        }
        let src = self.server_ip();
        let conn = self.next_id(ConnId);
        let s = &self.sockets[i];
        let (op, what) = match proto {
            Protocol::Tcp | Protocol::Tls => {
                if s.remote_ip.is_unspecified() || s.remote_ip.is_broadcast() {
                    log::warn!("socket {i}: P6=1 with remote host {}", s.remote_ip);
                    return Err(SocketError::InvalidIp.into());
                }
                let what = if proto == Protocol::Tls {
                    let params = self.tls_params(i)?;
                    let client = TlsSession::start_client(
                        &params,
                        s.remote_ip,
                        self.clock.unix(now),
                        &self.cfg.key_log,
                    )
                    .map_err(|e| {
                        log::warn!("socket {i}: TLS cannot start: {e:?}");
                        match e {
                            SetupError::RootCa(_) => TlsError::RootCa,
                            SetupError::ClientCert(_) | SetupError::Other(_) => TlsError::Unable,
                        }
                    })?;
                    Opening::Tls(Box::new(client))
                } else {
                    Opening::Tcp
                };
                let op = NetOp::Connect {
                    conn,
                    local: SocketAddrV4::new(src, 0),
                    remote: SocketAddrV4::new(s.remote_ip, s.remote_port),
                    keepalive: s
                        .keepalive
                        .0
                        .then(|| Duration::from_millis(s.keepalive.1 as u64)),
                };
                (op, what)
            }
            Protocol::Udp | Protocol::UdpLite => {
                // Honour P2 only when the host set it; otherwise (spec §4 quirk, what Mbed's driver
                // relies on) the P4 value present now is the local port, ephemeral if taken.
                let (port, fallback) = if s.local_port_set && s.local_port != 0 {
                    (s.local_port, false)
                } else if self.cfg.quirks.udp_local_port_from_p4 {
                    (s.remote_port, true)
                } else {
                    (0, false)
                };
                let op = NetOp::OpenUdp {
                    conn,
                    local: SocketAddrV4::new(src, port),
                    ephemeral_fallback: fallback,
                };
                (op, Opening::Udp)
            }
            Protocol::Mqtt => {
                log::warn!("socket {i}: MQTT (P1=4) is not emulated");
                return Err(SocketError::ModeNotSupported.into());
            }
        };
        log::info!("socket {i}: {op:?}");
        self.sockets[i].transition(i, "P6=1", |_| (SocketState::Opening { conn, what }, ()));
        self.ops.push_back(op);
        let deadline = now + Duration::from_millis(self.cfg.timing.connect_timeout_ms);
        Ok(Answer::Wait(Busy::Connect {
            socket: i,
            deadline,
        }))
    }

    /// `P6=0`: close the client connection (gracefully: what was sent is delivered). A server's
    /// listener is left alone; its current client is closed.
    fn stop_client(&mut self, i: usize, now: Instant) {
        use SocketState as S;
        // What to close, how, and whether the transcript notes it.
        let closing = self.sockets[i].transition(i, "P6=0", |old| match old {
            S::Open(stream) => {
                log::info!("socket {i}: closed by host");
                (
                    S::Idle,
                    Some((Release::Stream(stream), CloseHow::Drain, true)),
                )
            }
            S::Udp(u) if u.server.is_none() => (
                S::Idle,
                Some((Release::Conn(u.conn), CloseHow::Abort, false)),
            ),
            S::Serving(l, stream) => {
                log::info!("socket {i}: current client closed by host");
                let release = Release::Stream(stream);
                (S::Listening(l), Some((release, CloseHow::Drain, false)))
            }
            S::Accepting(l, stream, peer) => {
                log::info!("socket {i}: TLS client {peer} closed by host during its handshake");
                let release = Release::Stream(stream);
                (S::Listening(l), Some((release, CloseHow::Abort, false)))
            }
            S::ServingEnded(l, _) => (S::Listening(l), None),
            // A UDP server's socket is its listener: only P5=0 stops it.
            other @ (S::Udp(_) | S::Listening(_)) => (other, None),
            S::Idle | S::Ended(_) => (S::Idle, None),
            other @ (S::Opening { .. } | S::Handshaking(_)) => {
                log::error!("socket {i}: P6=0 while opening (a command was in flight)");
                (other, None)
            }
        });
        if let Some((release, how, note)) = closing {
            if note {
                self.note_socket(i, "closed by host".to_string());
            }
            self.release(release, how, now);
        }
    }

    /// Close what a transition let go of.
    pub(super) fn release(&mut self, what: Release, how: CloseHow, now: Instant) {
        match what {
            Release::Stream(stream) => self.close_stream(*stream, how, now),
            Release::Conn(conn) => self.close_conn(conn, how, now),
        }
    }

    /// A transcript note about socket `i`.
    pub(super) fn note_socket(&mut self, i: usize, what: String) {
        self.note(self.last_now, format!("socket {i}: {what}"));
    }

    /// Close a stream; a TLS stream closing gracefully says close_notify first.
    pub(super) fn close_stream(&mut self, mut stream: Stream, how: CloseHow, now: Instant) {
        if let (CloseHow::Drain, Some(tls)) = (how, stream.tls.as_mut()) {
            tls.close_notify();
            let bytes = tls.output();
            let seq = self.next_id(SendSeq);
            self.ops.push_back(NetOp::Send {
                conn: stream.conn,
                seq,
                data: bytes,
                to: None,
            });
        }
        self.close_conn(stream.conn, how, now);
    }

    /// The network went away under socket `i`: its connections are dropped and it reads `-1`
    /// (what it had received still comes first).
    pub(super) fn end_socket(&mut self, i: usize) {
        let conns = self.sockets[i].transition(i, "link down", |old| {
            let conns = old.conns();
            let new = match old {
                SocketState::Idle => SocketState::Idle,
                mut other => {
                    SocketState::Ended(other.rx_mut().map(std::mem::take).unwrap_or_default())
                }
            };
            (new, conns)
        });
        for conn in conns {
            self.ops.push_back(NetOp::Close {
                conn,
                how: CloseHow::Abort,
            });
        }
    }

    /// Drop everything socket `i` has open (reset, `CD`, a failed open).
    pub(super) fn abort_socket(&mut self, i: usize, why: &str) {
        let conns = self.sockets[i].transition(i, why, |old| (SocketState::Idle, old.conns()));
        for conn in conns {
            self.ops.push_back(NetOp::Close {
                conn,
                how: CloseHow::Abort,
            });
        }
    }

    /// Hand bytes to the driver on socket `i`'s stream (TLS records, S3 data), counting them in its
    /// send window.
    pub(super) fn transmit(&mut self, i: usize, data: Vec<u8>, to: Option<SocketAddrV4>) {
        if data.is_empty() {
            return;
        }
        let seq = self.next_id(SendSeq);
        let conn = match self.sockets[i].state_mut() {
            SocketState::Handshaking(s)
            | SocketState::Open(s)
            | SocketState::Accepting(_, s, _)
            | SocketState::Serving(_, s) => {
                s.tx.push(seq, data.len());
                s.conn
            }
            SocketState::Udp(u) => {
                u.tx.push(seq, data.len());
                u.conn
            }
            other => {
                log::error!(
                    "socket {i}: {} bytes to send in state {}",
                    data.len(),
                    other.name()
                );
                return;
            }
        };
        self.ops.push_back(NetOp::Send {
            conn,
            seq,
            data,
            to,
        });
    }

    /// Which socket (and in what role) owns `conn`.
    pub(super) fn owner(&self, conn: ConnId) -> Option<Owner> {
        self.sockets
            .iter()
            .enumerate()
            .find_map(|(i, s)| match s.state() {
                SocketState::Opening { conn: c, .. } if *c == conn => Some(Owner::Opening(i)),
                SocketState::Handshaking(st) | SocketState::Open(st) if st.conn == conn => {
                    Some(Owner::Stream(i))
                }
                SocketState::Serving(_, st) | SocketState::Accepting(_, st, _)
                    if st.conn == conn =>
                {
                    Some(Owner::Stream(i))
                }
                SocketState::Udp(u) if u.conn == conn => Some(Owner::Udp(i)),
                st => {
                    let l = st.listener()?;
                    if l.conn == conn {
                        Some(Owner::Listener(i))
                    } else if l.waiting.iter().any(|w| w.conn == conn) {
                        Some(Owner::Waiting(i))
                    } else {
                        None
                    }
                }
            })
    }

    /// Bytes queued for `conn` (None if the module does not read it).
    pub(super) fn rx_len(&self, conn: ConnId) -> Option<usize> {
        match self.owner(conn)? {
            Owner::Stream(i) | Owner::Udp(i) => self.sockets[i].state().rx().map(|rx| rx.len()),
            Owner::Waiting(i) => self.sockets[i]
                .state()
                .listener()?
                .waiting
                .iter()
                .find(|w| w.conn == conn)
                .map(|w| w.rx.len()),
            Owner::Opening(_) | Owner::Listener(_) => None,
        }
    }

    pub(super) fn on_connected(
        &mut self,
        conn: ConnId,
        local: SocketAddrV4,
        peer: Option<SocketAddrV4>,
        now: Instant,
    ) {
        let Some(Owner::Opening(i)) = self.owner(conn) else {
            // A late answer for an attempt the module gave up on (it closed it then).
            return;
        };
        let opened = self.sockets[i].transition(i, "opened", |old| match old {
            SocketState::Opening { what, .. } => {
                let (new, opened) = Self::opened(conn, what);
                (new, Some(opened))
            }
            other => (other, None),
        });
        match opened {
            None => {}
            Some(Opened::Tcp) => {
                let to = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
                log::info!("socket {i}: connected from {local} to {to}");
                self.note_socket(i, format!("connected from {local} to {to}"));
                // C3.5.2.x names the address the connection reached; the others say OK.
                let reply = match peer {
                    Some(p) if self.profile.announces_tcp_connect() => {
                        Reply::TcpConnecting(*p.ip())
                    }
                    Some(_) => Reply::ok(),
                    None => {
                        log::error!("socket {i}: a TCP connect reported without its peer");
                        Reply::ok()
                    }
                };
                self.finish_connect(i, Ok(Answer::Reply(reply)));
            }
            Some(Opened::Tls) => {
                log::info!("socket {i}: connected from {local}; TLS handshake");
                self.note_socket(i, format!("connected from {local}; TLS handshake"));
                self.flush_tls(i, now);
            }
            Some(Opened::Udp { server }) => {
                log::info!(
                    "socket {i}: UDP {} on {local}",
                    if server { "server" } else { "socket" }
                );
                self.note_socket(i, format!("UDP bound on {local}"));
                if server {
                    self.finish_listen(i, ok());
                } else {
                    self.finish_connect(i, ok());
                }
            }
            Some(Opened::Server { tls }) => {
                let kind = if tls { "TLS" } else { "TCP" };
                log::info!("socket {i}: {kind} server on {local}");
                self.note_socket(i, format!("{kind} server listening on {local}"));
                self.finish_listen(i, ok());
            }
        }
    }

    /// The state an open under way becomes once the driver has done it.
    fn opened(conn: ConnId, what: Opening) -> (SocketState, Opened) {
        match what {
            Opening::Tcp => (
                SocketState::Open(Box::new(Stream::new(conn, None))),
                Opened::Tcp,
            ),
            Opening::Tls(client) => (
                SocketState::Handshaking(Box::new(Stream::new(conn, Some(client)))),
                Opened::Tls,
            ),
            Opening::Udp | Opening::UdpServer => {
                let server = matches!(what, Opening::UdpServer);
                let u = UdpSock {
                    conn,
                    rx: Default::default(),
                    tx: Default::default(),
                    server: server.then(|| Recent::new(super::socket::UDP_SENDERS)),
                };
                (SocketState::Udp(Box::new(u)), Opened::Udp { server })
            }
            Opening::TcpServer { accept_loop, tls } => {
                let opened = Opened::Server { tls: tls.is_some() };
                let l = super::socket::Listener {
                    conn,
                    accept_loop,
                    waiting: VecDeque::new(),
                    tls,
                    last_client: None,
                };
                (SocketState::Listening(Box::new(l)), opened)
            }
        }
    }

    pub(super) fn on_connect_failed(&mut self, conn: ConnId, error: ConnectError) {
        let Some(Owner::Opening(i)) = self.owner(conn) else {
            return;
        };
        // GH80 behaviour: a refused TCP connect says OK now, -1 on the first read or send.
        let refused_ok = error == ConnectError::Refused && self.cfg.quirks.refused_connect_ok;
        let what = self.sockets[i].transition(i, "open failed", |old| match old {
            SocketState::Opening {
                what: what @ (Opening::Tcp | Opening::Tls(_)),
                ..
            } if refused_ok => (SocketState::Ended(Default::default()), Some(what)),
            SocketState::Opening { what, .. } => (SocketState::Idle, Some(what)),
            other => (other, None),
        });
        let Some(what) = what else {
            return;
        };
        self.note_socket(i, format!("open failed: {error:?}"));
        let s = &self.sockets[i];
        match what {
            Opening::TcpServer { .. } | Opening::UdpServer => {
                log::warn!(
                    "socket {i}: cannot serve on port {}: {error:?}",
                    s.local_port
                );
                self.finish_listen(i, Err(super::error::ServerError::StartFailed.into()));
            }
            Opening::Udp => {
                log::warn!("socket {i}: UDP bind failed: {error:?}");
                self.finish_connect(i, Err(SocketError::UdpFailed.into()));
            }
            Opening::Tcp | Opening::Tls(_) => {
                log::warn!(
                    "socket {i}: connect to {}:{} failed: {error:?}",
                    s.remote_ip,
                    s.remote_port
                );
                if refused_ok {
                    self.finish_connect(i, ok());
                } else {
                    self.finish_connect(i, Err(SocketError::ConnectFailed.into()));
                }
            }
        }
    }

    /// Ciphertext (TLS) or plain bytes arrived on a stream.
    pub(super) fn on_data(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        match self.owner(conn) {
            Some(Owner::Stream(i)) => {
                let Some(stream) = self.sockets[i].state_mut().stream_any_mut() else {
                    return;
                };
                let Some(tls) = stream.tls.as_mut() else {
                    stream.rx.push_stream(data);
                    return;
                };
                match tls.input(data, &mut stream.rx, now) {
                    Ok(input) => {
                        self.flush_tls(i, now);
                        if input.established_now {
                            match self.sockets[i].state() {
                                SocketState::Handshaking(_) => self.tls_established(i),
                                SocketState::Accepting(..) => self.tls_accepted(i),
                                _ => {}
                            }
                        }
                        if input.peer_closed {
                            self.tls_peer_closed(i, now);
                        }
                    }
                    Err(why) => self.tls_failed(i, &why, now),
                }
            }
            Some(Owner::Waiting(i)) => {
                if let Some(w) = self.sockets[i]
                    .state_mut()
                    .listener_mut()
                    .and_then(|l| l.waiting.iter_mut().find(|w| w.conn == conn))
                {
                    w.rx.push_stream(data);
                }
            }
            _ => log::trace!("#{conn}: {} bytes for no socket dropped", data.len()),
        }
    }

    /// Send what the TLS session has to say (handshake messages, alerts, records).
    fn flush_tls(&mut self, i: usize, _now: Instant) {
        let out = match self.sockets[i].state_mut().stream_any_mut() {
            Some(Stream { tls: Some(tls), .. }) => tls.output(),
            _ => return,
        };
        self.transmit(i, out, None);
    }

    /// The handshake (and any client-certificate grace) is over: `P6=1` answers OK.
    fn tls_established(&mut self, i: usize) {
        let done = self.sockets[i].transition(i, "TLS established", |old| match old {
            SocketState::Handshaking(stream) => (SocketState::Open(stream), true),
            other => (other, false),
        });
        if done {
            self.note_socket(i, "TLS established".to_string());
            self.finish_connect(i, ok());
        }
    }

    /// The TLS session broke: during the handshake `P6=1` fails; later the stream ends (`-1`). A
    /// TLS server's candidate client is dropped unannounced and the next one gets its turn.
    fn tls_failed(&mut self, i: usize, why: &TlsFailure, now: Instant) {
        use SocketState as S;
        let set_of = |s: &Stream| s.tls.as_ref().map_or(0, |t| t.set());
        let broke = self.sockets[i].transition(i, "TLS failed", |old| match old {
            S::Handshaking(stream) => {
                let set = set_of(&stream);
                (
                    S::Idle,
                    Broke::Handshake {
                        conn: stream.conn,
                        set,
                    },
                )
            }
            S::Open(stream) => (S::Ended(stream.rx), Broke::Connection(stream.conn)),
            S::Accepting(l, stream, peer) => {
                let set = set_of(&stream);
                let conn = stream.conn;
                (S::Listening(l), Broke::Candidate { conn, set, peer })
            }
            S::Serving(l, stream) => (S::ServingEnded(l, stream.rx), Broke::Client(stream.conn)),
            other => (other, Broke::Nothing),
        });
        let conn = match broke {
            Broke::Handshake { conn, set } => {
                log::warn!("socket {i}: TLS handshake with set {set} failed: {why}");
                self.note_socket(i, format!("TLS handshake with set {set} failed: {why}"));
                conn
            }
            Broke::Connection(conn) => {
                log::info!("socket {i}: TLS connection ended: {why}");
                self.note_socket(i, format!("TLS connection ended: {why}"));
                conn
            }
            Broke::Candidate { conn, set, peer } => {
                log::warn!(
                    "socket {i}: TLS client {peer} failed the handshake with set {set}: {why}; not announced"
                );
                self.note_socket(
                    i,
                    format!("TLS client {peer} failed the handshake with set {set}: {why}"),
                );
                conn
            }
            Broke::Client(conn) => {
                log::info!("socket {i}: TLS client connection ended: {why}");
                self.note_socket(i, format!("TLS client connection ended: {why}"));
                conn
            }
            Broke::Nothing => return,
        };
        self.ops.push_back(NetOp::Close {
            conn,
            how: CloseHow::Abort,
        });
        match broke {
            Broke::Handshake { .. } => {
                let advanced = self.sockets[i].tls_verify == TlsVerify::Required;
                self.finish_connect(i, Err(TlsError::Handshake { advanced }.into()));
            }
            Broke::Candidate { .. } => self.promote(i, now),
            _ => {}
        }
    }

    /// The peer sent close_notify: its data is read, then `-1`; our side closes too.
    fn tls_peer_closed(&mut self, i: usize, now: Instant) {
        use SocketState as S;
        if matches!(
            self.sockets[i].state(),
            S::Handshaking(_) | S::Accepting(..)
        ) {
            self.tls_failed(i, &TlsFailure::ClosedInHandshake, now);
            return;
        }
        // What was received stays readable; the rest of the stream closes, answering the peer's
        // close_notify with ours.
        let split = |stream: Box<Stream>| {
            let Stream { conn, rx, tls, .. } = *stream;
            let closing = Stream {
                conn,
                rx: Default::default(),
                tx: Default::default(),
                tls,
            };
            (rx, closing)
        };
        let closing = self.sockets[i].transition(i, "TLS close_notify", |old| match old {
            S::Open(stream) => {
                log::info!("socket {i}: peer closed the TLS session");
                let (rx, closing) = split(stream);
                (S::Ended(rx), Some(closing))
            }
            S::Serving(l, stream) => {
                log::info!("socket {i}: the current client closed its TLS session");
                let (rx, closing) = split(stream);
                (S::ServingEnded(l, rx), Some(closing))
            }
            other => (other, None),
        });
        if let Some(closing) = closing {
            self.close_stream(closing, CloseHow::Drain, now);
        }
    }

    /// When the next TLS client-certificate grace or server handshake deadline ends.
    pub(super) fn tls_graces(&self) -> Option<Instant> {
        self.sockets
            .iter()
            .filter_map(|s| match s.state() {
                SocketState::Handshaking(st) => st.tls.as_ref()?.grace_until(),
                SocketState::Accepting(_, st, _) => st.tls.as_ref()?.handshake_deadline(),
                _ => None,
            })
            .min()
    }

    /// Client-certificate graces that ended without a rejection: those sessions are established.
    /// Server handshakes still running at their deadline fail.
    pub(super) fn expire_tls_graces(&mut self, now: Instant) {
        for i in 0..self.sockets.len() {
            let late = match self.sockets[i].state() {
                SocketState::Accepting(_, st, _) => st
                    .tls
                    .as_ref()
                    .and_then(|t| t.handshake_deadline())
                    .is_some_and(|d| d <= now),
                _ => false,
            };
            if late {
                let ms = self.cfg.timing.connect_timeout_ms;
                self.tls_failed(i, &TlsFailure::HandshakeTimeout { ms }, now);
            }
            let due = match self.sockets[i].state_mut() {
                SocketState::Handshaking(st) => match st.tls.as_mut() {
                    Some(t) if t.grace_until().is_some_and(|g| g <= now) => {
                        t.end_grace();
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
            if due {
                log::info!("socket {i}: the server kept quiet about our certificate: accepted");
                self.tls_established(i);
            }
        }
    }

    pub(super) fn on_closed(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        if self.drained(conn) {
            log::debug!("#{conn}: closed ({reason:?})");
            return;
        }
        match self.owner(conn) {
            Some(Owner::Stream(i)) => {
                use SocketState as S;
                if matches!(
                    self.sockets[i].state(),
                    S::Handshaking(_) | S::Accepting(..)
                ) {
                    self.tls_failed(i, &TlsFailure::DroppedInHandshake, now);
                    // The network has closed it already: no Close names it (found by the
                    // `module` fuzz target).
                    self.ops
                        .retain(|op| !matches!(op, NetOp::Close { conn: c, .. } if *c == conn));
                    return;
                }
                let note = self.sockets[i].transition(i, "peer closed", |old| match old {
                    S::Open(stream) => {
                        log::info!("socket {i}: connection ended: {reason:?}");
                        (S::Ended(stream.rx), Some("connection ended"))
                    }
                    S::Serving(l, stream) => {
                        log::info!("socket {i}: current client left: {reason:?}");
                        (S::ServingEnded(l, stream.rx), Some("client left"))
                    }
                    other => (other, None),
                });
                if let Some(what) = note {
                    self.note_socket(i, format!("{what}: {reason:?}"));
                }
            }
            Some(Owner::Udp(i)) => {
                log::info!("socket {i}: UDP socket ended: {reason:?}");
                self.sockets[i].transition(i, "closed", |old| match old {
                    SocketState::Udp(u) => (SocketState::Ended(u.rx), ()),
                    other => (other, ()),
                });
            }
            Some(Owner::Waiting(i)) => {
                if let Some(w) = self.sockets[i]
                    .state_mut()
                    .listener_mut()
                    .and_then(|l| l.waiting.iter_mut().find(|w| w.conn == conn))
                {
                    log::info!("waiting client {} disconnected", w.peer);
                    w.closed = true;
                }
            }
            Some(Owner::Listener(i)) => {
                log::warn!("socket {i}: listener closed: {reason:?}");
                self.abort_socket(i, "listener closed");
            }
            Some(Owner::Opening(_)) | None => {}
        }
    }

    /// Complete `P6=1` on socket `i` if that is the command in flight.
    fn finish_connect(&mut self, i: usize, step: Step) {
        if matches!(self.busy, Some(Busy::Connect { socket, .. }) if socket == i) {
            self.finish(step);
        } else if let Err(e) = step {
            log::debug!("socket {i}: open finished after its command ended: {e:?}");
        }
    }

    /// Complete `P5=1` on socket `i` if that is the command in flight.
    pub(super) fn finish_listen(&mut self, i: usize, step: Step) {
        if matches!(self.busy, Some(Busy::Listen { socket, .. }) if socket == i) {
            self.finish(step);
        }
    }

    /// `P6=1` ran out of time: give up the attempt.
    pub(super) fn connect_timed_out(&mut self, i: usize) -> Step {
        let handshaking = matches!(self.sockets[i].state(), SocketState::Handshaking(_));
        let proto = self.sockets[i].protocol;
        log::warn!("socket {i}: connect timed out");
        self.abort_socket(i, "connect timed out");
        Err(if handshaking {
            TlsError::Handshake {
                advanced: self.sockets[i].tls_verify == TlsVerify::Required,
            }
            .into()
        } else if proto.is_datagram() {
            Error::Socket(SocketError::UdpFailed)
        } else {
            Error::Socket(SocketError::ConnectFailed)
        })
    }
}

impl SocketState {
    /// The stream of any state that has one, handshaking included.
    fn stream_any_mut(&mut self) -> Option<&mut Stream> {
        match self {
            SocketState::Handshaking(s)
            | SocketState::Open(s)
            | SocketState::Accepting(_, s, _)
            | SocketState::Serving(_, s) => Some(s),
            _ => None,
        }
    }
}
