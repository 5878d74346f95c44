//! Network faults (layer: middleware): every [`NetOp`] a core issues and every [`NetEvent`] the
//! network stack reports passes through [`NetFaults`], which refuses, black-holes, resets or
//! closes connections, delays and rate-limits their bytes, fails or slows DNS, and answers a TLS
//! handshake with an alert, as the active rules say. Delayed deliveries keep their order per
//! connection and are bounded (a connection holding [`MAX_HELD`] bytes stops being read). No IO.

use super::rule::{name_matches, Kind};
use super::FaultSet;
use eswifi_core::module::io::{
    CloseHow, CloseReason, ConnId, ConnectError, NetEvent, NetOp, ResolveError,
};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// Received bytes a delayed connection may hold before the stack stops reading it.
pub(crate) const MAX_HELD: usize = 64 * 1024;

/// Something released later.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// To the core of `module`.
    Event(usize, NetEvent),
    /// To the network stack, on behalf of `module`.
    Op(usize, NetOp),
}

/// What the rules decided for one connection, when it was opened.
#[derive(Debug, Default)]
struct ConnFault {
    /// Bytes both ways so far, and the limit: (limit, reset rather than close, rule index).
    counted: u64,
    cut: Option<(u64, bool, usize)>,
    latency: Duration,
    /// Bytes per second, and the rule.
    rate: Option<(u64, usize)>,
    /// When the connection's last delivery in each direction is released (order is kept).
    last_in: Option<Instant>,
    last_out: Option<Instant>,
    /// When each direction's link has finished sending what it was given (bandwidth).
    free_in: Option<Instant>,
    free_out: Option<Instant>,
    /// Received bytes held for later delivery.
    held: usize,
    /// The connection is gone as far as the core knows (a fault closed it).
    cut_done: bool,
    /// A TLS alert replaces what the server says.
    alert: Option<(u8, usize)>,
}

/// The network middleware.
#[derive(Debug, Default)]
pub(crate) struct NetFaults {
    conns: HashMap<(usize, ConnId), ConnFault>,
    /// Connections swallowed by a black hole (their `Close` is swallowed too).
    blackholed: Vec<(usize, ConnId)>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Delivery>,
    seq: u64,
}

fn alert_record(code: u8) -> Vec<u8> {
    // A plaintext TLS alert record: type 21, TLS 1.2 framing, fatal level.
    vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, code]
}

fn delivery_conn(d: &Delivery) -> Option<(usize, ConnId)> {
    match d {
        Delivery::Event(m, ev) => ev.conn().map(|c| (*m, c)),
        Delivery::Op(m, op) => match op {
            NetOp::Send { conn, .. } | NetOp::Close { conn, .. } | NetOp::Connect { conn, .. } => {
                Some((*m, *conn))
            }
            _ => None,
        },
    }
}

impl NetFaults {
    fn schedule(&mut self, at: Instant, d: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.pending.insert(self.seq, d);
    }

    /// What is due by `now`, in order.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Delivery> {
        let mut out = Vec::new();
        while let Some(&Reverse((at, seq))) = self.queue.peek() {
            if at > now {
                break;
            }
            self.queue.pop();
            if let Some(d) = self.pending.remove(&seq) {
                if let Delivery::Event(m, NetEvent::Data { conn, data }) = &d {
                    if let Some(c) = self.conns.get_mut(&(*m, *conn)) {
                        c.held = c.held.saturating_sub(data.len());
                    }
                }
                out.push(d);
            }
        }
        out
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// How many more bytes the stack may read for `conn` (0 while delayed bytes pile up).
    pub(crate) fn room(&self, module: usize, conn: ConnId, inner: usize) -> usize {
        match self.conns.get(&(module, conn)) {
            Some(c) if c.held >= MAX_HELD => 0,
            _ => inner,
        }
    }

    /// An operation from a core: what to perform now (the rest is scheduled or swallowed).
    pub(crate) fn op(
        &mut self,
        set: &mut FaultSet,
        module: usize,
        op: NetOp,
        now: Instant,
    ) -> Vec<NetOp> {
        match op {
            NetOp::Resolve { query, ref name } => {
                for (k, r) in set.net_rules() {
                    if r.module.is_some_and(|m| m != module) {
                        continue;
                    }
                    match &r.kind {
                        Kind::DnsFail(n) if name_matches(n, name) => {
                            let name = name.clone();
                            set.fire(k, module, format!("lookup of {name} fails"));
                            let ev = NetEvent::Resolved {
                                query,
                                result: Err(ResolveError::Fault),
                            };
                            self.schedule(now, Delivery::Event(module, ev));
                            return vec![];
                        }
                        Kind::DnsDelay { name: n, delay } if name_matches(n, name) => {
                            let delay = *delay;
                            set.fire(k, module, format!("lookup of {name} delayed {delay:?}"));
                            self.schedule(now + delay, Delivery::Op(module, op));
                            return vec![];
                        }
                        _ => {}
                    }
                }
                vec![op]
            }
            NetOp::Connect { conn, remote, .. } => self.connect(set, module, conn, remote, op, now),
            NetOp::Send {
                conn,
                seq,
                ref data,
                to,
            } => {
                let Some(c) = self.conns.get_mut(&(module, conn)) else {
                    return vec![op];
                };
                if c.cut_done {
                    return vec![];
                }
                let mut out = op.clone();
                let mut cut_now = None;
                if let Some((limit, reset, k)) = c.cut {
                    let left = limit.saturating_sub(c.counted) as usize;
                    if data.len() >= left {
                        out = NetOp::Send {
                            conn,
                            seq,
                            data: data[..left].to_vec(),
                            to,
                        };
                        cut_now = Some((reset, k));
                    }
                }
                c.counted += data.len() as u64;
                let at = Self::release(c, now, data.len(), true);
                let late = at > now || c.last_out.is_some_and(|l| l > now);
                c.last_out = Some(at);
                let mut perform = vec![];
                if late {
                    self.schedule(at, Delivery::Op(module, out));
                } else {
                    perform.push(out);
                }
                if let Some((reset, k)) = cut_now {
                    self.cut(set, module, conn, reset, k, at);
                }
                perform
            }
            NetOp::Close { conn, .. } => {
                if let Some(i) = self.blackholed.iter().position(|&b| b == (module, conn)) {
                    self.blackholed.remove(i);
                    return vec![];
                }
                if let Some(c) = self.conns.remove(&(module, conn)) {
                    // Nothing more is delivered for it; a close the fault already made stands.
                    self.forget(module, conn);
                    if c.cut_done {
                        return vec![];
                    }
                }
                vec![op]
            }
            other => vec![other],
        }
    }

    fn connect(
        &mut self,
        set: &mut FaultSet,
        module: usize,
        conn: ConnId,
        remote: SocketAddrV4,
        op: NetOp,
        now: Instant,
    ) -> Vec<NetOp> {
        let mut c = ConnFault::default();
        let mut matched = false;
        for (k, r) in set.net_rules() {
            if r.module.is_some_and(|m| m != module) {
                continue;
            }
            match r.kind {
                Kind::NetRefuse(t) if t.matches(remote) => {
                    set.fire(k, module, format!("connect to {remote} refused"));
                    let ev = NetEvent::ConnectFailed {
                        conn,
                        error: ConnectError::Refused,
                    };
                    self.schedule(now, Delivery::Event(module, ev));
                    return vec![];
                }
                Kind::NetBlackhole(t) if t.matches(remote) => {
                    set.fire(k, module, format!("connect to {remote} black-holed"));
                    self.blackholed.push((module, conn));
                    return vec![];
                }
                Kind::NetReset { target, after } if target.matches(remote) => {
                    c.cut = Some((after, true, k));
                    matched = true;
                }
                Kind::NetClose { target, after } if target.matches(remote) => {
                    c.cut = Some((after, false, k));
                    matched = true;
                }
                Kind::NetLatency { target, delay } if target.matches(remote) => {
                    c.latency = delay;
                    set.fire(k, module, format!("{remote}: {delay:?} each way"));
                    matched = true;
                }
                Kind::NetBandwidth {
                    target,
                    bytes_per_sec,
                } if target.matches(remote) => {
                    c.rate = Some((bytes_per_sec, k));
                    set.fire(k, module, format!("{remote}: {bytes_per_sec} B/s each way"));
                    matched = true;
                }
                Kind::TlsAlert { target, alert, .. } if target.matches(remote) => {
                    c.alert = Some((alert, k));
                    matched = true;
                }
                _ => {}
            }
        }
        if matched {
            self.conns.insert((module, conn), c);
        }
        vec![op]
    }

    /// When `n` bytes one way may be delivered: once the link has sent them at its rate (after
    /// what it was sending), plus the latency, and never before what came earlier.
    fn release(c: &mut ConnFault, now: Instant, n: usize, out: bool) -> Instant {
        let (free, last) = if out {
            (&mut c.free_out, c.last_out)
        } else {
            (&mut c.free_in, c.last_in)
        };
        let wire = match c.rate {
            Some((rate, _)) => Duration::from_nanos(n as u64 * 1_000_000_000 / rate),
            None => Duration::ZERO,
        };
        let sent = free.map_or(now, |f| f.max(now)) + wire;
        *free = Some(sent);
        let at = sent + c.latency;
        last.map_or(at, |l| l.max(at))
    }

    /// A fault ends the connection at `at`: the core hears `Closed`, the real socket is dropped.
    fn cut(
        &mut self,
        set: &mut FaultSet,
        module: usize,
        conn: ConnId,
        reset: bool,
        k: usize,
        at: Instant,
    ) {
        let Some(c) = self.conns.get_mut(&(module, conn)) else {
            return;
        };
        c.cut_done = true;
        let (what, reason) = if reset {
            (
                "reset",
                CloseReason::Error("connection reset (fault)".into()),
            )
        } else {
            ("closed", CloseReason::PeerClosed)
        };
        set.fire(
            k,
            module,
            format!(
                "connection {what} after {} bytes",
                c.counted.min(c.cut.map_or(0, |x| x.0))
            ),
        );
        self.schedule(
            at,
            Delivery::Event(module, NetEvent::Closed { conn, reason }),
        );
        let how = if reset {
            CloseHow::Reset
        } else {
            CloseHow::Drain
        };
        self.schedule(at, Delivery::Op(module, NetOp::Close { conn, how }));
    }

    /// Drop every scheduled delivery of a connection.
    fn forget(&mut self, module: usize, conn: ConnId) {
        self.pending
            .retain(|_, d| delivery_conn(d) != Some((module, conn)));
    }

    /// An event from the stack: what reaches the core now (the rest is scheduled or dropped).
    pub(crate) fn event(
        &mut self,
        set: &mut FaultSet,
        module: usize,
        ev: NetEvent,
        now: Instant,
    ) -> Vec<NetEvent> {
        let Some(conn) = ev.conn() else {
            return vec![ev];
        };
        let Some(c) = self.conns.get_mut(&(module, conn)) else {
            return vec![ev];
        };
        if c.cut_done {
            // The fault closed it already; what the real socket says next is not news.
            if let NetEvent::Closed {
                reason: CloseReason::Drained,
                ..
            } = ev
            {
                return vec![];
            }
            return vec![];
        }
        if let (NetEvent::Connected { .. }, Some((code, k))) = (&ev, c.alert) {
            // The server's answer is replaced by an alert, then the connection ends.
            let at = now + c.latency;
            c.cut_done = true;
            self.schedule(at, Delivery::Event(module, ev));
            let data = alert_record(code);
            self.schedule(at, Delivery::Event(module, NetEvent::Data { conn, data }));
            let closed = NetEvent::Closed {
                conn,
                reason: CloseReason::PeerClosed,
            };
            self.schedule(at, Delivery::Event(module, closed));
            self.schedule(
                at,
                Delivery::Op(
                    module,
                    NetOp::Close {
                        conn,
                        how: CloseHow::Abort,
                    },
                ),
            );
            set.fire(
                k,
                module,
                format!("the TLS server answers with alert {code}"),
            );
            return vec![];
        }
        let mut ev = ev;
        let mut cut_now = None;
        let n = match &mut ev {
            NetEvent::Data { data, .. } | NetEvent::Datagram { data, .. } => {
                if let Some((limit, reset, k)) = c.cut {
                    let left = limit.saturating_sub(c.counted) as usize;
                    if data.len() >= left {
                        data.truncate(left);
                        cut_now = Some((reset, k));
                    }
                }
                c.counted += data.len() as u64;
                data.len()
            }
            _ => 0,
        };
        let at = Self::release(c, now, n, false);
        let late = at > now || c.last_in.is_some_and(|l| l > now);
        c.last_in = Some(at.max(c.last_in.unwrap_or(at)));
        let mut now_events = vec![];
        if late {
            c.held += n;
            self.schedule(at, Delivery::Event(module, ev));
        } else {
            now_events.push(ev);
        }
        if let Some((reset, k)) = cut_now {
            self.cut(set, module, conn, reset, k, at);
        }
        now_events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::parse;
    use eswifi_core::module::io::QueryId;
    use std::net::Ipv4Addr;

    fn set(rules: &[&str]) -> FaultSet {
        let mut s = FaultSet::new(1);
        for r in rules {
            s.add(parse(r).unwrap(), Instant::now(), &[0]).unwrap();
        }
        s
    }

    fn connect(conn: u64, port: u16) -> NetOp {
        NetOp::Connect {
            conn: ConnId(conn),
            local: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            remote: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            keepalive: None,
        }
    }

    #[test]
    fn refuse_and_blackhole() {
        let mut s = set(&["net.refuse 127.0.0.1:7001", "net.blackhole *:443"]);
        let mut f = NetFaults::default();
        let now = Instant::now();
        assert!(f.op(&mut s, 0, connect(1, 7001), now).is_empty());
        assert!(matches!(
            f.due(now).as_slice(),
            [Delivery::Event(
                0,
                NetEvent::ConnectFailed {
                    conn: ConnId(1),
                    error: ConnectError::Refused
                }
            )]
        ));
        assert!(f.op(&mut s, 0, connect(2, 443), now).is_empty());
        assert!(
            f.due(now + Duration::from_secs(60)).is_empty(),
            "never answered"
        );
        let close = NetOp::Close {
            conn: ConnId(2),
            how: CloseHow::Abort,
        };
        assert!(f.op(&mut s, 0, close, now).is_empty());
        assert_eq!(f.op(&mut s, 0, connect(3, 80), now).len(), 1, "others pass");
    }

    #[test]
    fn reset_after_n_bytes_cuts_the_data_and_tells_the_core() {
        let mut s = set(&["net.reset *:7001 after=10B"]);
        let mut f = NetFaults::default();
        let now = Instant::now();
        f.op(&mut s, 0, connect(1, 7001), now);
        let got = f.event(
            &mut s,
            0,
            NetEvent::Data {
                conn: ConnId(1),
                data: b"0123456789abc".to_vec(),
            },
            now,
        );
        assert_eq!(
            got,
            vec![NetEvent::Data {
                conn: ConnId(1),
                data: b"0123456789".to_vec()
            }]
        );
        let due = f.due(now);
        assert!(matches!(
            &due[0],
            Delivery::Event(
                0,
                NetEvent::Closed {
                    conn: ConnId(1),
                    reason: CloseReason::Error(_)
                }
            )
        ));
        assert!(matches!(
            &due[1],
            Delivery::Op(
                0,
                NetOp::Close {
                    conn: ConnId(1),
                    how: CloseHow::Reset
                }
            )
        ));
        assert!(f
            .event(
                &mut s,
                0,
                NetEvent::Data {
                    conn: ConnId(1),
                    data: b"x".to_vec()
                },
                now
            )
            .is_empty());
    }

    #[test]
    fn latency_and_bandwidth_delay_in_order() {
        let mut s = set(&["net.latency *:* 50ms", "net.bandwidth *:* 1kB/s"]);
        let mut f = NetFaults::default();
        let now = Instant::now();
        f.op(&mut s, 0, connect(1, 80), now);
        assert!(f
            .event(
                &mut s,
                0,
                NetEvent::Connected {
                    conn: ConnId(1),
                    local: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1),
                    peer: None,
                },
                now
            )
            .is_empty());
        assert!(f
            .event(
                &mut s,
                0,
                NetEvent::Data {
                    conn: ConnId(1),
                    data: vec![0; 100]
                },
                now
            )
            .is_empty());
        assert!(f
            .event(
                &mut s,
                0,
                NetEvent::Data {
                    conn: ConnId(1),
                    data: vec![1; 100]
                },
                now
            )
            .is_empty());
        // Connected after the latency; each 100 B take 100 ms on the link, then the latency.
        assert_eq!(f.next_deadline(), Some(now + Duration::from_millis(50)));
        assert_eq!(f.due(now + Duration::from_millis(49)).len(), 0);
        assert_eq!(f.due(now + Duration::from_millis(50)).len(), 1);
        assert_eq!(f.due(now + Duration::from_millis(149)).len(), 0);
        assert_eq!(f.due(now + Duration::from_millis(150)).len(), 1);
        assert_eq!(f.due(now + Duration::from_millis(249)).len(), 0);
        assert_eq!(f.due(now + Duration::from_millis(250)).len(), 1);
    }

    #[test]
    fn dns_fail_and_delay() {
        let mut s = set(&["dns.fail bad.test", "dns.delay * 2s"]);
        let mut f = NetFaults::default();
        let now = Instant::now();
        let q = |n: &str| NetOp::Resolve {
            query: QueryId(1),
            name: n.into(),
        };
        assert!(f.op(&mut s, 0, q("bad.test"), now).is_empty());
        assert!(matches!(
            f.due(now).as_slice(),
            [Delivery::Event(
                0,
                NetEvent::Resolved { result: Err(_), .. }
            )]
        ));
        assert!(f.op(&mut s, 0, q("ok.test"), now).is_empty());
        assert!(f.due(now + Duration::from_millis(1999)).is_empty());
        assert!(matches!(
            f.due(now + Duration::from_secs(2)).as_slice(),
            [Delivery::Op(0, NetOp::Resolve { .. })]
        ));
        // `module=K` is honoured, as by every other rule.
        let mut s = set(&["dns.fail * module=1"]);
        assert_eq!(f.op(&mut s, 0, q("a.test"), now).len(), 1);
        assert!(f.op(&mut s, 1, q("a.test"), now).is_empty());
    }
}
