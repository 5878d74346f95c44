//! Data on sockets (layer: core): `R0` reads what a socket's state holds, `S3` hands bytes to the
//! driver through the connection's bounded send window ([`SEND_WINDOW`]). Pure.
//!
//! `S3` answers as soon as its payload is in the send window, like a socket `send()` returning once
//! the data is in the kernel's buffer. When the window is full (a peer that does not read), `S3`
//! waits for room up to `S2` ms (`S2=0`: the maximum, 30 000 ms) and then answers with the number of
//! bytes it accepted — possibly 0, which CMSIS reads as "try again" — never more than went out. If
//! the connection ends meanwhile, the answer is what went out before, or `-1` if nothing did.

use super::error::Error;
use super::io::{ConnId, SendSeq, SEND_WINDOW};
use super::socket::{SocketState, Stream};
use super::{payload, Answer, Busy, EventClass, Module, Step};
use crate::iwin::command::Mnemonic;
use crate::iwin::reply::Reply;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// An `S3` whose payload does not fit the send window yet: `rest` goes out as room opens; at the
/// deadline (`S2`) the reply is what was accepted.
#[derive(Debug)]
pub(super) struct Sending {
    pub(super) socket: usize,
    pub(super) conn: ConnId,
    pub(super) rest: Vec<u8>,
    pub(super) accepted: usize,
    pub(super) deadline: Instant,
}

/// Most bytes a TLS record adds to the plaintext it carries (header, nonce, tag, content type).
const TLS_RECORD_OVERHEAD: usize = 64;

/// What `S2=0` means: the longest `S3` wait the module allows.
pub(crate) const S2_MAX_MS: u32 = 30_000;

impl Module {
    /// `R0` (`R4`: `counted`): data at once if there is some, else wait up to `R2`.
    pub(super) fn read(&mut self, i: usize, counted: bool, now: Instant) -> Step {
        if self.read_ready(i) {
            return Ok(Answer::Reply(self.answer_read(i, counted, now)));
        }
        let wait = self.sockets[i].read_timeout_ms;
        if wait == 0 {
            return Ok(Answer::Reply(count(Reply::ok(), counted)));
        }
        Ok(Answer::Wait(Busy::Read {
            socket: i,
            counted,
            deadline: now + Duration::from_millis(wait as u64),
        }))
    }

    /// Whether `R0` on socket `i` has something to say now (data, or the end). Pure.
    pub(super) fn read_ready(&self, i: usize) -> bool {
        let state = self.sockets[i].state();
        match state {
            SocketState::Idle | SocketState::Ended(_) | SocketState::ServingEnded(..) => true,
            SocketState::Open(_) | SocketState::Serving(..) | SocketState::Udp(_) => {
                state.rx().is_some_and(|rx| !rx.is_empty())
            }
            // A serving socket between clients waits for one.
            SocketState::Opening { .. }
            | SocketState::Handshaking(_)
            | SocketState::Listening(_)
            | SocketState::Accepting(..) => false,
        }
    }

    /// The reply to an `R0` that is ready (see [`Module::read_ready`]); takes the data, and once a
    /// server's client has said its `-1` the server moves on — after this reply, so one `R0` never
    /// gets two.
    pub(super) fn answer_read(&mut self, i: usize, counted: bool, now: Instant) -> Reply {
        let r = self.answer_read_data(i, now);
        count(r, counted)
    }

    fn answer_read_data(&mut self, i: usize, now: Instant) -> Reply {
        let s = &mut self.sockets[i];
        let max = s.read_size as usize;
        let udp_server = matches!(s.state(), SocketState::Udp(u) if u.server.is_some());
        if let Some((data, from)) = s.state_mut().rx_mut().and_then(|rx| rx.take(max)) {
            if let (Some(from), true) = (from, udp_server) {
                // A UDP server answers (S3) and reports (P?) the sender of the last datagram read.
                s.remote_ip = *from.ip();
                s.remote_port = from.port();
            }
            return match from {
                Some(_) => Reply::Datagram(data),
                None => Reply::Ok(data),
            };
        }
        match s.state() {
            // A UDP socket that is not open has nothing to say; a stream that ended says -1.
            SocketState::Idle if s.protocol.is_datagram() => Reply::ok(),
            SocketState::Idle | SocketState::Ended(_) => Reply::Closed(Mnemonic::R0),
            SocketState::ServingEnded(..) => {
                let accept_loop = s.transition(i, "-1 read", |old| match old {
                    SocketState::ServingEnded(l, _) => {
                        let accept_loop = l.accept_loop;
                        (SocketState::Listening(l), accept_loop)
                    }
                    other => (other, false),
                });
                if accept_loop {
                    self.promote(i, now);
                }
                Reply::Closed(Mnemonic::R0)
            }
            _ => Reply::ok(),
        }
    }

    /// The `S3` (or `S0`, `m`) payload arrived.
    pub(super) fn send_payload(
        &mut self,
        i: usize,
        data: Vec<u8>,
        m: Mnemonic,
        now: Instant,
    ) -> Step {
        let s = &self.sockets[i];
        let to = s
            .protocol
            .is_datagram()
            .then(|| SocketAddrV4::new(s.remote_ip, s.remote_port));
        let conn = match s.state() {
            SocketState::Open(st) | SocketState::Serving(_, st) => st.conn,
            SocketState::Udp(u) => u.conn,
            other => {
                log::warn!(
                    "socket {i}: {} of {} bytes on a socket that is {}",
                    m.text(),
                    data.len(),
                    other.name()
                );
                return Err(Error::Closed(m));
            }
        };
        let len = data.len();
        let wait = match s.send_timeout_ms {
            0 => S2_MAX_MS,
            ms => ms,
        };
        let job = Sending {
            socket: i,
            conn,
            rest: data,
            accepted: 0,
            deadline: now + Duration::from_millis(wait as u64),
        };
        match self.push_send(job, to) {
            Ok(accepted) => {
                debug_assert_eq!(accepted, len);
                payload(accepted.to_string())
            }
            Err(job) => {
                log::debug!("socket {i}: send window full; S3 waits up to {wait} ms");
                Ok(Answer::Wait(Busy::Send(job)))
            }
        }
    }

    /// Room opened (or the connection went away): go on with a waiting `S3`.
    pub(super) fn continue_send(&mut self) {
        let job = match self.busy.take() {
            Some(Busy::Send(job)) => job,
            other => {
                self.busy = other;
                return;
            }
        };
        let (i, conn, accepted) = (job.socket, job.conn, job.accepted);
        let s = &self.sockets[i];
        let alive = match s.state() {
            SocketState::Open(st) | SocketState::Serving(_, st) => st.conn == conn,
            SocketState::Udp(u) => u.conn == conn,
            _ => false,
        };
        if !alive {
            log::warn!(
                "socket {i}: connection ended while S3 waited for room ({accepted} bytes had gone out)"
            );
            // What went out is reported, as a short send() would; the next S3 says -1.
            let step = if accepted > 0 {
                payload(accepted.to_string())
            } else {
                Err(Error::Closed(Mnemonic::S3))
            };
            return self.finish(step);
        }
        let to = s
            .protocol
            .is_datagram()
            .then(|| SocketAddrV4::new(s.remote_ip, s.remote_port));
        match self.push_send(job, to) {
            Ok(accepted) => self.conclude(payload(accepted.to_string())),
            Err(job) => self.busy = Some(Busy::Send(job)),
        }
    }

    /// Hand as much of `job` to the driver as the window takes: `Ok(total accepted)` when all of
    /// it went, else the rest to wait with.
    fn push_send(&mut self, mut job: Sending, to: Option<SocketAddrV4>) -> Result<usize, Sending> {
        let i = job.socket;
        let (room, tls) = match self.sockets[i].state() {
            SocketState::Open(st) | SocketState::Serving(_, st) => (st.tx.room(), st.tls.is_some()),
            SocketState::Udp(u) => (u.tx.room(), false),
            _ => (0, false),
        };
        let rest = &mut job.rest;
        let take = if to.is_some() {
            // A datagram goes whole or not at all.
            if room >= rest.len() {
                rest.len()
            } else {
                0
            }
        } else if tls {
            room.saturating_sub(TLS_RECORD_OVERHEAD).min(rest.len())
        } else {
            room.min(rest.len())
        };
        if take > 0 {
            let chunk: Vec<u8> = rest.drain(..take).collect();
            let wire = match self.sockets[i].state_mut().stream_mut() {
                Some(Stream { tls: Some(t), .. }) => {
                    t.encrypt(&chunk);
                    t.output()
                }
                _ => chunk,
            };
            self.transmit(i, wire, to);
            job.accepted += take;
        }
        if job.rest.is_empty() {
            Ok(job.accepted)
        } else {
            Err(job)
        }
    }

    /// The driver wrote a send: its bytes leave the window.
    pub(super) fn on_sent(&mut self, conn: ConnId, seq: SendSeq) {
        let tx = self.sockets.iter_mut().find_map(|s| match s.state_mut() {
            SocketState::Handshaking(st)
            | SocketState::Open(st)
            | SocketState::Accepting(_, st, _)
            | SocketState::Serving(_, st)
                if st.conn == conn =>
            {
                Some(&mut st.tx)
            }
            SocketState::Udp(u) if u.conn == conn => Some(&mut u.tx),
            _ => None,
        });
        match tx {
            Some(tx) => {
                if !tx.ack(seq) {
                    log::error!("#{conn}: Sent #{seq} out of order (contract violation); ignored");
                }
            }
            // A connection closed meanwhile: nothing waits for it.
            None => log::trace!("#{conn}: Sent #{seq} for a closed connection"),
        }
    }

    /// A datagram arrived: a UDP server announces a sender it has not heard lately.
    pub(super) fn on_datagram(&mut self, conn: ConnId, data: Vec<u8>, from: SocketAddrV4) {
        let Some((port, u)) = self.sockets.iter_mut().find_map(|s| {
            let port = s.local_port;
            match s.state_mut() {
                SocketState::Udp(u) if u.conn == conn => Some((port, u)),
                _ => None,
            }
        }) else {
            return;
        };
        let new_sender = u.heard(from);
        u.rx.push_datagram(data, from);
        if new_sender {
            self.emit_event(
                EventClass::Server,
                format!("[UDP SVR] Accepted {}:{}", from.ip(), port),
            );
        }
    }
}

/// `R4`: the data (or nothing) prefixed by its length as `%04d`; other replies unchanged.
fn count(r: Reply, counted: bool) -> Reply {
    let prefix = |d: Vec<u8>| [format!("{:04}", d.len()).into_bytes(), d].concat();
    match (r, counted) {
        (Reply::Ok(d), true) => Reply::Ok(prefix(d)),
        (Reply::Datagram(d), true) => Reply::Datagram(prefix(d)),
        (Reply::Closed(_), true) => Reply::Closed(Mnemonic::R4),
        (r, _) => r,
    }
}

/// Keep the window constant in the docs in sync with io.
const _: () = assert!(SEND_WINDOW > TLS_RECORD_OVERHEAD + crate::iwin::command::MAX_PAYLOAD);
