//! The module's model-based check, shared by the property test (`src/module/prop_tests.rs`,
//! proptest strategies) and the `module` fuzz target ([`super::module`], actions decoded from
//! bytes): random interleavings of host commands (split into random chunks, fed only as the module
//! has room, as the driver does), network events that follow the driver's contract, and time.
//! Whatever happens:
//! - every command gets exactly one reply, and no reply comes without a command;
//! - every reply ends with the prompt;
//! - the bytes `S3` replies report as accepted are exactly the bytes handed to the network, in
//!   order (nothing more, nothing less, nothing reordered);
//! - no operation names a connection after the module closed it.

use crate::config::{Config, EventMode};
use crate::iwin::command::{self, Command, Mnemonic, Protocol, SocketCmd};
use crate::iwin::reply::parse::Parser;
use crate::module::io::{
    self, CloseHow, CloseReason, ConnId, ConnectError, NetEvent, NetOp, QueryId, SendSeq,
};
use crate::module::Module;
use std::collections::{HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// A host command; each gets exactly one reply.
#[derive(Debug, Clone)]
pub(crate) enum Cmd {
    Select(u8),
    Protocol(u8),
    Remote(u16),
    Start,
    Stop,
    ReadWait(u32),
    Read,
    SendWait(u32),
    Send(usize, u8),
    /// This many full-size `S3`s in a row: enough to fill the send window.
    Burst(u8),
    Server(u8),
    Loop(u8),
    Info,
    Status,
    Lookup,
    Ping,
    Message,
    Empty,
    Junk(u8),
    /// Any other command line, as a host wrote it (without its CR; see [`Cmd::line`]).
    Line(Vec<u8>),
}

/// Payload bytes: `S3` payloads are slices of this (no `>`, so replies split at prompts).
fn pattern() -> &'static [u8] {
    static P: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        (0..command::MAX_PAYLOAD + 256)
            .map(|k| ((k as u8).wrapping_mul(31) % 61) + b'@')
            .collect()
    })
}

impl Cmd {
    /// A command line from arbitrary bytes, made one the model can account for: CRs are taken out
    /// (the line ends at its own), a valid `S3` header becomes [`Cmd::Send`] with its payload, and
    /// what the model cannot follow (a payload it does not track: `S0`, `PG`; a reset: `ZR`,
    /// whose banner is a prompt of its own) becomes an unknown command. `seed` fills a payload.
    pub(crate) fn line(raw: &[u8], seed: u8) -> Cmd {
        // No '>' either: a value the module prints back (an SSID set with `AS`, shown by `A?`)
        // could put a prompt in a reply, and replies are split at prompts (the `parser` target
        // has '>' in its lines).
        let line: Vec<u8> = raw
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'>')
            .collect();
        // What the module parses: the framer drops LF and NUL.
        let seen: Vec<u8> = line
            .iter()
            .copied()
            .filter(|&b| b != b'\n' && b != 0)
            .collect();
        if seen.len() > crate::iwin::framer::MAX_LINE {
            return Cmd::Line(line);
        }
        match command::parse(&seen) {
            Ok(Command::Socket(SocketCmd::Send(len))) => return Cmd::Send(len, seed),
            Ok(Command::Socket(SocketCmd::LegacySend)) => {}
            Ok(Command::Cert(command::CertCmd::Program { .. })) => {}
            _ => match command::split(&seen) {
                Ok((Mnemonic::ZR | Mnemonic::S0 | Mnemonic::PG, _)) => {}
                _ => return Cmd::Line(line),
            },
        }
        let mut v = b"XX".to_vec();
        v.extend_from_slice(&seen);
        Cmd::Line(v)
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        let s = match self {
            Cmd::Select(i) => format!("P0={i}\r"),
            Cmd::Protocol(p) => format!("P1={p}\r"),
            Cmd::Remote(port) => format!("P3=127.0.0.1\rP4={port}\r"),
            Cmd::Start => "P6=1\r".into(),
            Cmd::Stop => "P6=0\r".into(),
            Cmd::ReadWait(ms) => format!("R2={ms}\r"),
            Cmd::Read => "R0\r".into(),
            Cmd::SendWait(ms) => format!("S2={ms}\r"),
            Cmd::Send(len, seed) => {
                let mut v = format!("S3={len:04}\r").into_bytes();
                // A slice of one pattern, not a byte loop: the fuzzer instruments every loop.
                v.extend_from_slice(&pattern()[*seed as usize..][..*len]);
                return v;
            }
            Cmd::Burst(n) => {
                let mut v = Vec::new();
                for k in 0..*n {
                    v.extend_from_slice(&Cmd::Send(1460, k).bytes());
                }
                return v;
            }
            Cmd::Server(m) => format!("P5={m}\r"),
            Cmd::Loop(m) => format!("P7={m}\r"),
            Cmd::Info => "I?\r".into(),
            Cmd::Status => "CS\r".into(),
            Cmd::Lookup => "D0=peer.test\r".into(),
            Cmd::Ping => "T1=127.0.0.1\rT0\r".into(),
            Cmd::Message => "MR\r".into(),
            Cmd::Empty => "\r".into(),
            Cmd::Junk(n) => format!("{}\r", "qz".repeat(*n as usize)),
            Cmd::Line(l) => return [l.as_slice(), b"\r"].concat(),
        };
        s.into_bytes()
    }

    /// For each reply the bytes produce, the payload if that command is an `S3` (`Remote` and
    /// `Ping` are two commands, a burst is many).
    fn replies(&self) -> Vec<Option<Vec<u8>>> {
        match self {
            Cmd::Remote(_) | Cmd::Ping => vec![None, None],
            Cmd::Send(..) => vec![Some(self.bytes()[8..].to_vec())],
            Cmd::Burst(n) => (0..*n)
                .map(|k| Some(Cmd::Send(1460, k).bytes()[8..].to_vec()))
                .collect(),
            _ => vec![None],
        }
    }
}

/// Something the test does.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Host bytes, split at these fractions (per mille).
    Host(Cmd, Vec<u16>),
    Net(NetAction),
    Advance(u32),
}

/// A network event, aimed at the `n`th candidate.
#[derive(Debug, Clone)]
pub(crate) enum NetAction {
    ConnectOk(u8),
    ConnectFail(u8),
    Data(u8, u8),
    PeerClose(u8),
    Ack(u8),
    Accept(u8),
    Answer(u8, bool),
    FinishDrain(u8),
}

/// The driver's side: the module's operations and what the test answers them with.
#[derive(Default)]
struct World {
    /// Connects, binds and listens waiting for an answer: (conn, is_listener).
    /// Connections being opened: listener or not, and the peer a TCP connect reaches.
    opening: Vec<(ConnId, bool, Option<SocketAddrV4>)>,
    /// Streams and UDP sockets that are up.
    open: Vec<ConnId>,
    listeners: Vec<ConnId>,
    unacked: VecDeque<(ConnId, SendSeq)>,
    queries: Vec<(QueryId, bool)>,
    draining: Vec<ConnId>,
    closed: HashSet<ConnId>,
    next_accepted: u64,
    /// Every byte handed to the network, in order.
    sent: Vec<u8>,
}

fn pick<T: Copy>(v: &[T], n: u8) -> Option<T> {
    (!v.is_empty()).then(|| v[n as usize % v.len()])
}

impl World {
    /// Take the module's operations; checks the contract on the way.
    fn collect(&mut self, m: &mut Module) {
        while let Some(op) = m.poll_op() {
            match op {
                NetOp::Connect { conn, remote, .. } => {
                    self.opening.push((conn, false, Some(remote)))
                }
                NetOp::OpenUdp { conn, .. } => self.opening.push((conn, false, None)),
                NetOp::Listen { conn, .. } => self.opening.push((conn, true, None)),
                NetOp::Send {
                    conn, seq, data, ..
                } => {
                    assert!(!self.closed.contains(&conn), "send on closed #{conn}");
                    self.sent.extend_from_slice(&data);
                    self.unacked.push_back((conn, seq));
                }
                NetOp::Close { conn, how } => {
                    // A graceful close that takes too long may be escalated to an abort, once.
                    let escalated = how == CloseHow::Abort && self.draining.contains(&conn);
                    self.draining.retain(|&c| c != conn);
                    assert!(
                        self.closed.insert(conn) || escalated,
                        "#{conn} closed twice"
                    );
                    self.opening.retain(|&(c, ..)| c != conn);
                    self.open.retain(|&c| c != conn);
                    self.listeners.retain(|&c| c != conn);
                    self.unacked.retain(|&(c, _)| c != conn);
                    if how == CloseHow::Drain {
                        self.draining.push(conn);
                    }
                }
                NetOp::Resolve { query, .. } => self.queries.push((query, true)),
                NetOp::Ping { query, .. } => self.queries.push((query, false)),
            }
        }
    }

    /// The event for `a`, if the network is in a state to produce it.
    fn event(&mut self, a: &NetAction) -> Option<NetEvent> {
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
        Some(match *a {
            NetAction::ConnectOk(n) => {
                let (conn, listener, peer) = pick(&self.opening, n)?;
                self.opening.retain(|&(c, ..)| c != conn);
                if listener {
                    self.listeners.push(conn);
                } else {
                    self.open.push(conn);
                }
                NetEvent::Connected { conn, local, peer }
            }
            NetAction::ConnectFail(n) => {
                let (conn, ..) = pick(&self.opening, n)?;
                self.opening.retain(|&(c, ..)| c != conn);
                NetEvent::ConnectFailed {
                    conn,
                    error: ConnectError::Refused,
                }
            }
            NetAction::Data(n, len) => {
                let conn = pick(&self.open, n)?;
                // No '>' in peer data, so replies can be split at prompts.
                let data = (0..len).map(|k| b'a' + k % 26).collect();
                NetEvent::Data { conn, data }
            }
            NetAction::PeerClose(n) => {
                let conn = pick(&self.open, n)?;
                self.open.retain(|&c| c != conn);
                self.unacked.retain(|&(c, _)| c != conn);
                self.closed.insert(conn);
                NetEvent::Closed {
                    conn,
                    reason: CloseReason::PeerClosed,
                }
            }
            NetAction::Ack(_) => {
                let (conn, seq) = self.unacked.pop_front()?;
                NetEvent::Sent { conn, seq }
            }
            NetAction::Accept(n) => {
                let listener = pick(&self.listeners, n)?;
                self.next_accepted += 1;
                let conn = ConnId(io::ACCEPTED_BIT | self.next_accepted);
                self.open.push(conn);
                let peer = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), n as u16 + 1000);
                NetEvent::Accepted {
                    listener,
                    conn,
                    peer,
                }
            }
            NetAction::Answer(n, ok) => {
                let (query, dns) = pick(&self.queries, n)?;
                self.queries.retain(|&(q, _)| q != query);
                if dns {
                    let result = if ok {
                        Ok(Ipv4Addr::LOCALHOST)
                    } else {
                        Err(io::ResolveError::Lookup("no such host".into()))
                    };
                    NetEvent::Resolved { query, result }
                } else {
                    NetEvent::PingDone {
                        query,
                        result: Ok(vec![Some(Duration::from_millis(1))]),
                    }
                }
            }
            NetAction::FinishDrain(n) => {
                let conn = pick(&self.draining, n)?;
                self.draining.retain(|&c| c != conn);
                NetEvent::Closed {
                    conn,
                    reason: CloseReason::Drained,
                }
            }
        })
    }
}

/// The host's side: bytes not yet taken by the module, replies expected and received, and the
/// `S3` payloads whose replies will say how much of them went out.
struct Host {
    queue: VecDeque<u8>,
    expected: usize,
    /// Everything the module wrote (for messages), and the same cut into replies.
    out: Vec<u8>,
    parser: Parser,
    replies: Vec<Vec<u8>>,
    /// For each reply expected, in order: the payload if the command was an `S3`.
    payloads: Vec<Option<Vec<u8>>>,
}

impl Host {
    /// Feed what the module has room for, as the driver does; returns with the output taken.
    fn feed(&mut self, m: &mut Module, now: Instant, cuts: &[u16]) {
        loop {
            // Output the module holds may be what keeps it from taking more: the driver writes
            // it out first (without this, a host stalled behind two long replies and its `S3`
            // payload timed out: found by the `module` fuzz target).
            self.take(m, now);
            let room = m.serial_room().min(self.queue.len());
            if room == 0 {
                return;
            }
            // Split at the given fractions, to exercise the framer.
            let mut n = room;
            for &c in cuts {
                let at = (room * c as usize / 1000).max(1);
                n = n.min(at);
            }
            let (a, b) = self.queue.as_slices();
            if n <= a.len() {
                m.handle_serial(&a[..n], now);
            } else {
                let chunk = [a, &b[..n - a.len()]].concat();
                m.handle_serial(&chunk, now);
            }
            self.queue.drain(..n);
        }
    }

    fn take(&mut self, m: &mut Module, now: Instant) {
        loop {
            let out = m.take_serial();
            if out.is_empty() {
                return;
            }
            self.out.extend_from_slice(&out);
            self.parser.push(&out);
            self.replies.extend(self.parser.by_ref().map(|o| o.raw));
            // A rate switch (`U0`) and store writes (`Z1`) are the driver's to carry out.
            while m.poll_line_op().is_some() {}
            while let Some(op) = m.poll_store() {
                m.handle_stored(op.req(), Ok(()), now);
            }
            m.handle_output_taken(now);
        }
    }
}

/// What a run did, for tests that a seed reaches where it should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Replies (one per command).
    pub(crate) replies: usize,
    /// Bytes handed to the network by `S3`.
    pub(crate) sent: usize,
}

/// A command line that makes the current socket TLS (`P1=3`) or MQTT (`P1=4`): the network
/// then carries records of the module's own besides what `S3` reports (a ClientHello first).
fn adds_own_bytes(line: &[u8]) -> bool {
    let seen: Vec<u8> = line
        .iter()
        .copied()
        .filter(|&b| b != b'\n' && b != 0)
        .collect();
    matches!(
        command::parse(&seen),
        Ok(Command::Socket(SocketCmd::SetProtocol(
            Protocol::Tls | Protocol::Mqtt
        )))
    )
}

/// Run `actions` against a fresh module and check the invariants (panics on a violation).
pub(crate) fn run(actions: &[Action]) -> Outcome {
    let plaintext = !actions
        .iter()
        .any(|a| matches!(a, Action::Host(Cmd::Line(l), _) if adds_own_bytes(l)));
    let mut cfg = Config::default();
    // Events go to MR (poll mode), so every prompt on the line ends a reply.
    cfg.module.events = EventMode::Poll;
    let mut now = Instant::now();
    let mut m = Module::new(&cfg, now, Duration::from_secs(1_800_000_000));
    m.take_serial();
    m.handle_serial(b"C1=net\rC0\r", now);
    m.take_serial();
    let mut world = World::default();
    let mut host = Host {
        queue: VecDeque::new(),
        expected: 0,
        out: Vec::new(),
        parser: Parser::new(),
        replies: Vec::new(),
        payloads: Vec::new(),
    };
    for a in actions {
        match a {
            Action::Host(c, cuts) => {
                host.queue.extend(c.bytes());
                let replies = c.replies();
                host.expected += replies.len();
                host.payloads.extend(replies);
                host.feed(&mut m, now, cuts);
            }
            Action::Net(n) => {
                // An Ack stands for a batch of writes going out.
                let times = if let NetAction::Ack(k) = n {
                    1 + *k as usize % 8
                } else {
                    1
                };
                for _ in 0..times {
                    if let Some(ev) = world.event(n) {
                        m.handle_net(ev, now);
                    }
                }
            }
            Action::Advance(ms) => {
                now += Duration::from_millis(*ms as u64);
                if m.poll_timeout().is_some_and(|t| t <= now) {
                    m.handle_timeout(now);
                }
            }
        }
        // Room may have opened: the driver reads the line at once.
        host.feed(&mut m, now, &[]);
        world.collect(&mut m);
        assert!(
            host.replies.len() <= host.expected,
            "{} replies to {} commands: {}",
            host.replies.len(),
            host.expected,
            host.out.escape_ascii()
        );
    }
    // Let everything finish: answer the network, then let every deadline pass.
    for _ in 0..200 {
        while let Some((conn, seq)) = world.unacked.pop_front() {
            m.handle_net(NetEvent::Sent { conn, seq }, now);
        }
        while let Some(ev) = world.event(&NetAction::Answer(0, true)) {
            m.handle_net(ev, now);
        }
        host.feed(&mut m, now, &[]);
        world.collect(&mut m);
        now += Duration::from_secs(31);
        m.handle_timeout(now);
        host.feed(&mut m, now, &[]);
        world.collect(&mut m);
        if host.queue.is_empty() && !m.is_busy() && world.unacked.is_empty() {
            break;
        }
    }
    assert!(
        host.queue.is_empty() && !m.is_busy(),
        "the module never finished"
    );
    assert_eq!(
        host.replies.len(),
        host.expected,
        "one reply per command: {}",
        host.out.escape_ascii()
    );
    assert!(
        host.parser.buffered().is_empty(),
        "the last reply ends with the prompt"
    );
    // S3 replies, in order, say how much of each payload went out: together that is exactly what
    // the network got.
    let mut accepted = Vec::new();
    for (reply, payload) in host.replies.iter().zip(&host.payloads) {
        let Some(payload) = payload else {
            continue;
        };
        match s3_count(reply) {
            Some(n) => accepted.extend_from_slice(&payload[..n]),
            // `-1` (the default form), or another error form after `MT=1`: nothing accepted.
            None => assert!(
                reply.windows(5).any(|w| w == b"ERROR"),
                "S3 answered neither a count nor an error: {}",
                reply.escape_ascii()
            ),
        }
    }
    if plaintext {
        assert_eq!(
            accepted.len(),
            world.sent.len(),
            "bytes reported as sent vs handed to the network"
        );
        assert!(
            accepted == world.sent,
            "the network got other bytes than reported"
        );
    }
    Outcome {
        replies: host.expected,
        sent: world.sent.len(),
    }
}

/// The count of an S3 reply (`\r\n<digits>\r\nOK\r\n> `).
fn s3_count(reply: &[u8]) -> Option<usize> {
    let digits = reply.strip_prefix(b"\r\n")?.strip_suffix(b"\r\nOK\r\n> ")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || digits.len() > 5 {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}
