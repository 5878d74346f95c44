//! Server area (layer: core): `P5`/`P7` on a socket that listens for TCP clients or receives UDP
//! datagrams. The current client of a TCP server is the socket's stream (`R0`/`S3` use it); clients
//! accepted meanwhile wait in the listener (up to the backlog, `P8`) with their own receive queues.
//! A waiting client becomes current only by `P5=10`/`P7=3`, by an accept while none is current, or
//! — with the accept loop (`P5=11`/`P7=1`) — right after the `-1` of the previous one was read.
//!
//! Extension (`[tls] server`): a `P1=3` server speaks TLS. A client's handshake runs when it is
//! about to become current (`Accepting`); only an established session is announced and readable.
//! A client that fails its handshake (or does not finish it within `connect_timeout_ms`) is
//! closed unannounced, the reason logged, and the next waiting client gets its turn. Pure.

use super::client::Release;
use super::error::{ServerError, TlsError};
use super::io::{CloseHow, ConnId, NetOp};
use super::socket::{Listener, Opening, RxQueue, SocketState, Stream, Waiting};
use super::tls::{SetupError, TlsSession};
use super::{ok, Answer, Busy, EventClass, Module, Step};
use crate::config::KeyLogSink;
use crate::iwin::command::{AcceptLoop, Protocol, ServerCmd, ServerMode};
use rustls::pki_types::UnixTime;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// What stopping a server let go of (see [`Module::stop_server`]).
enum Stopped {
    /// A TCP server: its listener (waiting clients inside) and its current client (or TLS
    /// candidate), if any, with how it closes.
    Tcp(Box<Listener>, Option<(Release, CloseHow)>),
    Udp(ConnId),
    Nothing,
}

/// What became of the next waiting client (see [`Module::promote`]).
enum Promoted {
    /// No client waits (or the server has one already).
    Nobody,
    /// It is current now (to be announced).
    Current(SocketAddrV4),
    /// A TLS client that left before its turn.
    Gone(SocketAddrV4),
    /// A TLS client whose session could not be set up (its connection is to be closed).
    NoSession {
        conn: ConnId,
        peer: SocketAddrV4,
        error: SetupError,
    },
    /// A TLS client whose handshake runs now: `rx` holds what it sent while it waited.
    Handshake {
        conn: ConnId,
        peer: SocketAddrV4,
        set: usize,
        rx: RxQueue,
    },
}

impl Module {
    pub(super) fn server_command(&mut self, cmd: ServerCmd, now: Instant) -> Step {
        let i = self.current;
        match cmd {
            ServerCmd::Server(ServerMode::Stop) => {
                self.stop_server(i, now);
                ok()
            }
            ServerCmd::Server(ServerMode::NextClient) => {
                self.next_client(i, now);
                ok()
            }
            ServerCmd::Server(ServerMode::Start) => self.start_server(i, false, now),
            ServerCmd::Server(ServerMode::StartMulti) => self.start_server(i, true, now),
            ServerCmd::AcceptLoop(v) => {
                let state = self.sockets[i].state_mut();
                let is_udp_server = matches!(state, SocketState::Udp(u) if u.server.is_some());
                let Some(l) = state.listener_mut() else {
                    if is_udp_server {
                        return ok();
                    }
                    return Err(ServerError::NotServing.into());
                };
                match v {
                    AcceptLoop::Off => l.accept_loop = false,
                    AcceptLoop::On => l.accept_loop = true,
                    AcceptLoop::CloseClient => self.close_current(i, now),
                    AcceptLoop::NextClient => self.next_client(i, now),
                }
                ok()
            }
        }
    }

    fn start_server(&mut self, i: usize, multi: bool, now: Instant) -> Step {
        let s = &mut self.sockets[i];
        match s.state_mut() {
            st if st.listener().is_some() => {
                if let Some(l) = st.listener_mut() {
                    l.accept_loop |= multi;
                }
                return ok();
            }
            SocketState::Udp(u) if u.server.is_some() => return ok(),
            st if st.is_busy() => {
                log::warn!(
                    "socket {i}: P5 while the socket is {} (P6=0 first)",
                    st.name()
                );
                return Err(ServerError::StartFailed.into());
            }
            _ => {}
        }
        if !self.network_up() {
            log::warn!("socket {i}: P5 while neither joined to a network nor running the soft AP");
            return Err(ServerError::StartFailed.into());
        }
        let local = SocketAddrV4::new(self.server_ip(), self.sockets[i].local_port);
        let conn = self.next_id(ConnId);
        let s = &self.sockets[i];
        let (op, what) = match s.protocol {
            Protocol::Tcp => (
                NetOp::Listen {
                    conn,
                    local,
                    backlog: s.backlog.max(1) as u32,
                },
                Opening::TcpServer {
                    accept_loop: multi,
                    tls: None,
                },
            ),
            Protocol::Tls if self.cfg.tls.server => {
                let params = self.tls_server_params(i).map_err(ServerError::Tls)?;
                TlsSession::check_server(&params, self.clock.unix(now)).map_err(|e| {
                    log::warn!("socket {i}: cannot serve TLS: {e:?}");
                    ServerError::Tls(match e {
                        SetupError::RootCa(_) => TlsError::RootCa,
                        SetupError::ClientCert(_) | SetupError::Other(_) => TlsError::Unable,
                    })
                })?;
                let s = &self.sockets[i];
                (
                    NetOp::Listen {
                        conn,
                        local,
                        backlog: s.backlog.max(1) as u32,
                    },
                    Opening::TcpServer {
                        accept_loop: multi,
                        tls: Some(Box::new(params)),
                    },
                )
            }
            Protocol::Udp | Protocol::UdpLite => (
                NetOp::OpenUdp {
                    conn,
                    local,
                    ephemeral_fallback: false,
                },
                Opening::UdpServer,
            ),
            Protocol::Tls | Protocol::Mqtt => {
                log::warn!(
                    "socket {i}: servers are TCP (P1=0) or UDP (P1=1), as on the module ([tls] server = true adds TLS servers)"
                );
                return Err(ServerError::ModeNotSupported.into());
            }
        };
        log::info!("socket {i}: {op:?}");
        self.sockets[i].transition(i, "P5", |_| (SocketState::Opening { conn, what }, ()));
        self.ops.push_back(op);
        let deadline = now + Duration::from_millis(self.cfg.timing.connect_timeout_ms);
        Ok(Answer::Wait(Busy::Listen {
            socket: i,
            deadline,
        }))
    }

    /// `P5=0`: stop serving; the current client is closed gracefully, the rest at once.
    fn stop_server(&mut self, i: usize, now: Instant) {
        use SocketState as S;
        let stopped = self.sockets[i].transition(i, "P5=0", |old| match old {
            S::Listening(l) | S::ServingEnded(l, _) => (S::Idle, Stopped::Tcp(l, None)),
            S::Serving(l, s) => {
                let current = (Release::Stream(s), CloseHow::Drain);
                (S::Idle, Stopped::Tcp(l, Some(current)))
            }
            S::Accepting(l, s, _) => {
                let candidate = (Release::Conn(s.conn), CloseHow::Abort);
                (S::Idle, Stopped::Tcp(l, Some(candidate)))
            }
            S::Udp(u) if u.server.is_some() => (S::Idle, Stopped::Udp(u.conn)),
            // Not a server: nothing to stop.
            other => (other, Stopped::Nothing),
        });
        let (listener, current) = match stopped {
            Stopped::Tcp(l, current) => (l, current),
            Stopped::Udp(conn) => {
                log::info!("socket {i}: UDP server stopped");
                self.close_conn(conn, CloseHow::Abort, now);
                return;
            }
            Stopped::Nothing => return,
        };
        log::info!("socket {i}: server stopped");
        if let Some((what, how)) = current {
            self.release(what, how, now);
        }
        for conn in listener.live_waiting() {
            self.close_conn(conn, CloseHow::Abort, now);
        }
        self.close_conn(listener.conn, CloseHow::Abort, now);
    }

    /// Close the current client of a TCP server (the server keeps listening).
    fn close_current(&mut self, i: usize, now: Instant) {
        use SocketState as S;
        let closing = self.sockets[i].transition(i, "client closed", |old| match old {
            S::Serving(l, s) => {
                log::info!("socket {i}: current client closed");
                (S::Listening(l), Some((Release::Stream(s), CloseHow::Drain)))
            }
            S::Accepting(l, s, peer) => {
                log::info!("socket {i}: TLS client {peer} closed during its handshake");
                (
                    S::Listening(l),
                    Some((Release::Conn(s.conn), CloseHow::Abort)),
                )
            }
            S::ServingEnded(l, _) => (S::Listening(l), None),
            other => (other, None),
        });
        if let Some((what, how)) = closing {
            self.release(what, how, now);
        }
    }

    /// `P5=10`/`P7=3`: close the current client and make the next waiting one current.
    fn next_client(&mut self, i: usize, now: Instant) {
        if self.sockets[i].state().listener().is_none() {
            return;
        }
        self.close_current(i, now);
        self.promote(i, now);
    }

    /// Make the oldest waiting client current, announcing it (only from `Listening`). A TLS
    /// server starts the client's handshake instead; it is announced when that completes.
    pub(super) fn promote(&mut self, i: usize, now: Instant) {
        let unix = self.clock.unix(now);
        let deadline = now + Duration::from_millis(self.cfg.timing.connect_timeout_ms);
        let key_log = self.cfg.key_log.clone();
        // Each round takes one waiting client off the (bounded) queue.
        loop {
            let next = self.sockets[i].transition(i, "next client", |old| match old {
                SocketState::Listening(mut l) => match l.waiting.pop_front() {
                    Some(w) => Self::next_current(l, w, unix, deadline, &key_log),
                    None => (SocketState::Listening(l), Promoted::Nobody),
                },
                other => (other, Promoted::Nobody),
            });
            match next {
                Promoted::Nobody => return,
                Promoted::Current(peer) => {
                    self.announce(i, peer);
                    return;
                }
                Promoted::Gone(peer) => {
                    log::info!("socket {i}: TLS client {peer} left before its handshake");
                }
                Promoted::NoSession { conn, peer, error } => {
                    log::warn!("socket {i}: no TLS session for client {peer}: {error:?}");
                    self.ops.push_back(NetOp::Close {
                        conn,
                        how: CloseHow::Abort,
                    });
                }
                Promoted::Handshake {
                    conn,
                    peer,
                    set,
                    mut rx,
                } => {
                    log::info!("socket {i}: TLS handshake with client {peer} (set {set})");
                    self.note_socket(i, format!("TLS handshake with client {peer}"));
                    // What the client sent while it waited is its ClientHello (and more).
                    let hello: Vec<u8> = rx.take(usize::MAX).map(|(d, _)| d).unwrap_or_default();
                    if !hello.is_empty() {
                        self.on_data(conn, &hello, now);
                    }
                    return;
                }
            }
        }
    }

    /// What a server with no current client becomes when `w` is next: serving it (a plain server),
    /// or running its handshake (TLS, which must be done by `deadline`, with certificates judged
    /// at wall time `unix`).
    fn next_current(
        mut l: Box<Listener>,
        w: Waiting,
        unix: UnixTime,
        deadline: Instant,
        key_log: &KeyLogSink,
    ) -> (SocketState, Promoted) {
        let Waiting {
            conn,
            peer,
            rx,
            closed,
        } = w;
        let Some(params) = l.tls.clone() else {
            l.last_client = Some(*peer.ip());
            let new = if closed {
                SocketState::ServingEnded(l, rx)
            } else {
                let mut stream = Stream::new(conn, None);
                stream.rx = rx;
                SocketState::Serving(l, Box::new(stream))
            };
            return (new, Promoted::Current(peer));
        };
        if closed {
            return (SocketState::Listening(l), Promoted::Gone(peer));
        }
        match TlsSession::start_server(&params, unix, deadline, key_log) {
            Ok(t) => {
                let stream = Box::new(Stream::new(conn, Some(Box::new(t))));
                let promoted = Promoted::Handshake {
                    conn,
                    peer,
                    set: params.set,
                    rx,
                };
                (SocketState::Accepting(l, stream, peer), promoted)
            }
            Err(error) => (
                SocketState::Listening(l),
                Promoted::NoSession { conn, peer, error },
            ),
        }
    }

    /// The current client (`peer`) is ready: `P?` reports it (ClientIP and, as ST and CMSIS read
    /// it, RemotePort) and the host is told.
    fn announce(&mut self, i: usize, peer: SocketAddrV4) {
        let s = &mut self.sockets[i];
        s.remote_port = peer.port();
        let local_port = s.local_port;
        log::info!("socket {i}: client {peer} is current");
        self.note_socket(i, format!("client {peer} is current"));
        self.emit_event(
            EventClass::Server,
            format!("[TCP SVR] Accepted {}:{}", peer.ip(), local_port),
        );
    }

    /// A TLS server's client completed its handshake: it is the current client now.
    pub(super) fn tls_accepted(&mut self, i: usize) {
        let accepted = self.sockets[i].transition(i, "TLS client accepted", |old| match old {
            SocketState::Accepting(mut l, stream, peer) => {
                l.last_client = Some(*peer.ip());
                (SocketState::Serving(l, stream), Some(peer))
            }
            other => (other, None),
        });
        if let Some(peer) = accepted {
            self.announce(i, peer);
        }
    }

    pub(super) fn on_accepted(
        &mut self,
        listener: ConnId,
        conn: ConnId,
        peer: SocketAddrV4,
        now: Instant,
    ) {
        let found = self
            .sockets
            .iter()
            .position(|s| s.state().listener().is_some_and(|l| l.conn == listener));
        let Some(i) = found else {
            self.ops.push_back(NetOp::Close {
                conn,
                how: CloseHow::Abort,
            });
            return;
        };
        let backlog = self.sockets[i].backlog.max(1) as usize;
        let waiting = self.sockets[i]
            .state()
            .listener()
            .map_or(0, |l| l.waiting.len());
        if waiting >= backlog {
            log::warn!("socket {i}: backlog of {backlog} full; client {peer} refused");
            self.ops.push_back(NetOp::Close {
                conn,
                how: CloseHow::Abort,
            });
            return;
        }
        log::info!("socket {i}: client {peer} connected");
        self.ap_client(*peer.ip());
        let state = self.sockets[i].state_mut();
        let idle = matches!(state, SocketState::Listening(_));
        if let Some(l) = state.listener_mut() {
            l.waiting.push_back(Waiting {
                conn,
                peer,
                rx: Default::default(),
                closed: false,
            });
        }
        if idle {
            self.promote(i, now);
        }
    }

    /// `P5=1` ran out of time.
    pub(super) fn listen_timed_out(&mut self, i: usize) -> Step {
        log::warn!("socket {i}: listener not ready in time");
        self.abort_socket(i, "listen timed out");
        Err(ServerError::StartFailed.into())
    }
}
