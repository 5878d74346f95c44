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

use super::error::{ServerError, TlsError};
use super::io::{CloseHow, ConnId, NetOp};
use super::socket::{Opening, SocketState, Stream, Waiting};
use super::tls::{SetupError, TlsSession};
use super::{ok, Answer, Busy, EventClass, Module, Step};
use crate::iwin::command::{AcceptLoop, Protocol, ServerCmd, ServerMode};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

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
        self.sockets[i].set_state(i, SocketState::Opening { conn, what }, "P5");
        self.ops.push_back(op);
        let deadline = now + Duration::from_millis(self.cfg.timing.connect_timeout_ms);
        Ok(Answer::Wait(Busy::Listen {
            socket: i,
            deadline,
        }))
    }

    /// `P5=0`: stop serving; the current client is closed gracefully, the rest at once.
    fn stop_server(&mut self, i: usize, now: Instant) {
        let old = self.sockets[i].set_state(i, SocketState::Idle, "P5=0");
        let (listener, current) = match old {
            SocketState::Listening(l) | SocketState::ServingEnded(l, _) => (l, None),
            SocketState::Serving(l, s) => (l, Some(s)),
            SocketState::Accepting(l, s, _) => {
                self.close_conn(s.conn, CloseHow::Abort, now);
                (l, None)
            }
            SocketState::Udp(u) if u.server.is_some() => {
                log::info!("socket {i}: UDP server stopped");
                self.close_conn(u.conn, CloseHow::Abort, now);
                return;
            }
            other => {
                // Not a server: nothing to stop.
                self.sockets[i].set_state(i, other, "P5=0 on no server");
                return;
            }
        };
        log::info!("socket {i}: server stopped");
        if let Some(s) = current {
            self.close_stream(*s, CloseHow::Drain, now);
        }
        for conn in listener.live_waiting() {
            self.close_conn(conn, CloseHow::Abort, now);
        }
        self.close_conn(listener.conn, CloseHow::Abort, now);
        self.sockets[i].client_ip = Ipv4Addr::UNSPECIFIED;
    }

    /// Close the current client of a TCP server (the server keeps listening).
    fn close_current(&mut self, i: usize, now: Instant) {
        let old = self.sockets[i].set_state(i, SocketState::Idle, "client closed");
        let l = match old {
            SocketState::Serving(l, s) => {
                log::info!("socket {i}: current client closed");
                self.close_stream(*s, CloseHow::Drain, now);
                l
            }
            SocketState::Accepting(l, s, peer) => {
                log::info!("socket {i}: TLS client {peer} closed during its handshake");
                self.close_conn(s.conn, CloseHow::Abort, now);
                l
            }
            SocketState::ServingEnded(l, _) | SocketState::Listening(l) => l,
            other => {
                self.sockets[i].set_state(i, other, "no client to close");
                return;
            }
        };
        self.sockets[i].set_state(i, SocketState::Listening(l), "client closed");
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
        // Each round takes one waiting client off the (bounded) queue.
        while let Some((l, w)) = self.next_waiting(i) {
            let Waiting {
                conn,
                peer,
                mut rx,
                closed,
            } = w;
            let Some(params) = l.tls.clone() else {
                let new = if closed {
                    SocketState::ServingEnded(l, rx)
                } else {
                    let mut stream = Stream::new(conn, None);
                    stream.rx = rx;
                    SocketState::Serving(l, Box::new(stream))
                };
                self.sockets[i].set_state(i, new, "client is current");
                self.announce(i, peer);
                return;
            };
            if closed {
                log::info!("socket {i}: TLS client {peer} left before its handshake");
                self.sockets[i].set_state(i, SocketState::Listening(l), "client gone");
                continue;
            }
            let deadline = now + Duration::from_millis(self.cfg.timing.connect_timeout_ms);
            let session = match TlsSession::start_server(&params, self.clock.unix(now), deadline) {
                Ok(t) => t,
                Err(e) => {
                    log::warn!("socket {i}: no TLS session for client {peer}: {e:?}");
                    self.ops.push_back(NetOp::Close {
                        conn,
                        how: CloseHow::Abort,
                    });
                    self.sockets[i].set_state(i, SocketState::Listening(l), "TLS setup failed");
                    continue;
                }
            };
            log::info!(
                "socket {i}: TLS handshake with client {peer} (set {})",
                params.set
            );
            self.note_socket(i, format!("TLS handshake with client {peer}"));
            let stream = Box::new(Stream::new(conn, Some(Box::new(session))));
            let new = SocketState::Accepting(l, stream, peer);
            self.sockets[i].set_state(i, new, "TLS handshake");
            // What the client sent while it waited is its ClientHello (and more).
            let hello: Vec<u8> = rx.take(usize::MAX).map(|(d, _)| d).unwrap_or_default();
            if !hello.is_empty() {
                self.on_data(conn, &hello, now);
            }
            return;
        }
    }

    /// Take the oldest waiting client of a server with no current client.
    fn next_waiting(&mut self, i: usize) -> Option<(Box<super::socket::Listener>, Waiting)> {
        let s = &mut self.sockets[i];
        let SocketState::Listening(l) = s.state_mut() else {
            return None;
        };
        let w = l.waiting.pop_front()?;
        let SocketState::Listening(l) = s.set_state(i, SocketState::Idle, "promote") else {
            unreachable!("matched above")
        };
        Some((l, w))
    }

    /// The current client (`peer`) is ready: `P?` reports it (ClientIP and, as ST and CMSIS read
    /// it, RemotePort) and the host is told.
    fn announce(&mut self, i: usize, peer: SocketAddrV4) {
        let s = &mut self.sockets[i];
        s.client_ip = *peer.ip();
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
        let old = self.sockets[i].set_state(i, SocketState::Idle, "TLS client accepted");
        let SocketState::Accepting(l, stream, peer) = old else {
            self.sockets[i].set_state(i, old, "not accepting");
            return;
        };
        self.sockets[i].set_state(i, SocketState::Serving(l, stream), "TLS client accepted");
        self.announce(i, peer);
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
