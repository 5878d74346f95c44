//! NetStack against real loopback sockets the tests start themselves. Every wait is bounded.

use super::*;
use eswifi_core::module::io::QueryId;
use mio::{Events, Poll};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::time::Instant;

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;
const WAIT: Duration = Duration::from_secs(5);

struct Harness {
    poll: Poll,
    net: NetStack,
    events: Events,
    /// What every connection's module has room for.
    room: usize,
}

impl Harness {
    fn new() -> Harness {
        let poll = Poll::new().expect("poll");
        let net = NetStack::new(poll.registry()).expect("netstack");
        Harness {
            poll,
            net,
            events: Events::with_capacity(64),
            room: usize::MAX,
        }
    }

    fn op(&mut self, module: ModuleIdx, op: NetOp) {
        self.net.perform(self.poll.registry(), module, op);
    }

    /// Pump the stack until `done` holds for the events gathered so far, or `limit` passes.
    fn run(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&[(ModuleIdx, NetEvent)]) -> bool,
    ) -> Vec<(ModuleIdx, NetEvent)> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let room = self.room;
            self.net.pump_reads(self.poll.registry(), |_, _| room);
            while let Some(ev) = self.net.pop_event() {
                got.push(ev);
            }
            if done(&got) || Instant::now() >= deadline {
                return got;
            }
            self.poll
                .poll(&mut self.events, Some(Duration::from_millis(10)))
                .expect("poll");
            for ev in self.events.iter() {
                self.net.handle_event(self.poll.registry(), ev);
            }
        }
    }

    /// Run until an event matching `pred` arrives; panics with what came instead.
    fn expect(&mut self, what: &str, pred: impl Fn(&NetEvent) -> bool) -> Vec<NetEvent> {
        let got = self.run(WAIT, |evs| evs.iter().any(|(_, e)| pred(e)));
        assert!(
            got.iter().any(|(_, e)| pred(e)),
            "no {what} within {WAIT:?}; got {got:?}"
        );
        got.into_iter().map(|(_, e)| e).collect()
    }

    fn connect(&mut self, module: ModuleIdx, conn: ConnId, remote: SocketAddrV4) -> SocketAddrV4 {
        self.op(
            module,
            NetOp::Connect {
                conn,
                local: SocketAddrV4::new(LO, 0),
                remote,
                keepalive: None,
            },
        );
        let evs = self.expect("Connected", |e| matches!(e, NetEvent::Connected { .. }));
        match evs.last() {
            Some(NetEvent::Connected {
                conn: c,
                local,
                peer,
            }) if *c == conn => {
                assert_eq!(*peer, Some(remote), "the peer a TCP connect reached");
                *local
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn listener() -> (TcpListener, SocketAddrV4) {
    let l = TcpListener::bind((LO, 0)).expect("listen");
    let SocketAddr::V4(addr) = l.local_addr().expect("addr") else {
        unreachable!()
    };
    (l, addr)
}

fn data_of(evs: &[NetEvent], conn: ConnId) -> Vec<u8> {
    evs.iter()
        .filter_map(|e| match e {
            NetEvent::Data { conn: c, data } if *c == conn => Some(data.as_slice()),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}

#[test]
fn tcp_connect_send_receive_peer_close() {
    let mut h = Harness::new();
    let (l, addr) = listener();
    h.op(
        0,
        NetOp::Connect {
            conn: ConnId(7),
            local: SocketAddrV4::new(LO, 0),
            remote: addr,
            keepalive: Some(Duration::from_secs(30)),
        },
    );
    let evs = h.expect("Connected", |e| matches!(e, NetEvent::Connected { .. }));
    let NetEvent::Connected {
        conn: ConnId(7),
        local,
        peer: reached,
    } = evs[0]
    else {
        panic!("got {evs:?}")
    };
    assert_eq!(reached, Some(addr), "the address the connection reached");
    let (mut peer, peer_sees) = l.accept().expect("accept");
    assert_eq!(peer_sees, SocketAddr::V4(local));

    // Keep-alive reached the socket.
    let token = h.net.by_id[&(0, ConnId(7))];
    let Kind::Tcp(tcp) = &h.net.conns[&token].kind else {
        panic!("not tcp")
    };
    let sock = socket2::SockRef::from(&tcp.stream);
    assert!(sock.keepalive().expect("SO_KEEPALIVE"));
    assert_eq!(
        sock.tcp_keepalive_time().expect("idle"),
        Duration::from_secs(30)
    );

    // A small send is answered at once.
    h.op(
        0,
        NetOp::Send {
            conn: ConnId(7),
            seq: SendSeq(1),
            data: b"hello".to_vec(),
            to: None,
        },
    );
    assert_eq!(
        h.net.pop_event(),
        Some((
            0,
            NetEvent::Sent {
                conn: ConnId(7),
                seq: SendSeq(1)
            }
        ))
    );
    let mut buf = [0u8; 5];
    peer.read_exact(&mut buf).expect("peer read");
    assert_eq!(&buf, b"hello");

    peer.write_all(b"world").expect("peer write");
    peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let evs = h.expect("Closed", |e| matches!(e, NetEvent::Closed { .. }));
    assert_eq!(data_of(&evs, ConnId(7)), b"world");
    assert_eq!(
        evs.last(),
        Some(&NetEvent::Closed {
            conn: ConnId(7),
            reason: CloseReason::PeerClosed
        })
    );
    assert!(h.net.conns.is_empty() && h.net.by_id.is_empty());
}

#[test]
fn tcp_refused() {
    let mut h = Harness::new();
    let (l, addr) = listener();
    drop(l);
    h.op(
        0,
        NetOp::Connect {
            conn: ConnId(1),
            local: SocketAddrV4::new(LO, 0),
            remote: addr,
            keepalive: None,
        },
    );
    let evs = h.expect("ConnectFailed", |e| {
        matches!(e, NetEvent::ConnectFailed { .. })
    });
    assert_eq!(
        evs,
        vec![NetEvent::ConnectFailed {
            conn: ConnId(1),
            error: ConnectError::Refused
        }]
    );
    assert!(h.net.conns.is_empty());
}

#[test]
fn tcp_local_port_in_use() {
    let mut h = Harness::new();
    let (_l, addr) = listener();
    let (_l2, remote) = listener();
    h.op(
        0,
        NetOp::Connect {
            conn: ConnId(1),
            local: addr,
            remote,
            keepalive: None,
        },
    );
    assert_eq!(
        h.net.pop_event(),
        Some((
            0,
            NetEvent::ConnectFailed {
                conn: ConnId(1),
                error: ConnectError::AddrInUse
            }
        ))
    );
}

#[test]
fn reads_respect_room() {
    let mut h = Harness::new();
    let (l, addr) = listener();
    h.connect(0, ConnId(1), addr);
    let (mut peer, _) = l.accept().expect("accept");
    peer.write_all(b"0123456789").expect("peer write");

    // No room: nothing is read, however long we wait.
    h.room = 0;
    let evs = h.run(Duration::from_millis(200), |_| false);
    assert!(evs.is_empty(), "read without room: {evs:?}");
    assert!(!h.net.has_pending_reads(|_, _| 0));
    assert!(h.net.has_pending_reads(|_, _| 1));

    // Room opens: the bytes come without any new readiness event, never more than room at a time.
    h.room = 3;
    let evs = h.run(WAIT, |evs| {
        evs.iter()
            .map(|(_, e)| match e {
                NetEvent::Data { data, .. } => data.len(),
                _ => 0,
            })
            .sum::<usize>()
            >= 10
    });
    for (_, e) in &evs {
        match e {
            NetEvent::Data { data, .. } => assert!(data.len() <= 3, "chunk {data:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let evs: Vec<NetEvent> = evs.into_iter().map(|(_, e)| e).collect();
    assert_eq!(data_of(&evs, ConnId(1)), b"0123456789");
}

#[test]
fn sent_comes_only_once_the_kernel_has_every_byte() {
    let mut h = Harness::new();
    let (l, addr) = listener();
    h.connect(0, ConnId(1), addr);
    let (mut peer, _) = l.accept().expect("accept");

    // Fill the kernel buffers: at some point a Send stays unanswered.
    let chunk = vec![0x5a; 16 * 1024];
    let mut sends = 0u64;
    let mut answered = 0u64;
    while answered == sends && sends < 4096 {
        sends += 1;
        h.op(
            0,
            NetOp::Send {
                conn: ConnId(1),
                seq: SendSeq(sends),
                data: chunk.clone(),
                to: None,
            },
        );
        while let Some((_, ev)) = h.net.pop_event() {
            answered += 1;
            assert_eq!(
                ev,
                NetEvent::Sent {
                    conn: ConnId(1),
                    seq: SendSeq(answered)
                },
                "in order"
            );
        }
    }
    assert_eq!(answered + 1, sends, "the peer never pushed back");
    let token = h.net.by_id[&(0, ConnId(1))];
    let Kind::Tcp(tcp) = &h.net.conns[&token].kind else {
        panic!("not tcp")
    };
    assert!(!tcp.out.is_empty() && tcp.out.len() <= chunk.len());

    // The peer drains everything: the last Send is answered and every byte arrives.
    let total = sends as usize * chunk.len();
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        let mut buf = vec![0u8; 65536];
        while got < total {
            match peer.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        got
    });
    let evs = h.expect("Sent", |e| matches!(e, NetEvent::Sent { .. }));
    assert_eq!(
        evs,
        vec![NetEvent::Sent {
            conn: ConnId(1),
            seq: SendSeq(sends)
        }]
    );
    assert_eq!(reader.join().expect("reader"), total);
}

#[test]
fn abort_silences_the_connection() {
    let mut h = Harness::new();
    let (l, addr) = listener();
    h.connect(0, ConnId(1), addr);
    let (mut peer, _) = l.accept().expect("accept");
    h.op(
        0,
        NetOp::Send {
            conn: ConnId(1),
            seq: SendSeq(1),
            data: b"x".to_vec(),
            to: None,
        },
    );
    // The Sent is still queued; Close drops it too.
    h.op(
        0,
        NetOp::Close {
            conn: ConnId(1),
            how: CloseHow::Abort,
        },
    );
    let _ = peer.write_all(b"late");
    let evs = h.run(Duration::from_millis(200), |_| false);
    assert!(evs.is_empty(), "events after Close: {evs:?}");
    let mut buf = [0u8; 8];
    assert_eq!(peer.read(&mut buf).expect("read"), 1);

    // Sending on it now is dropped quietly (the core was told, or is about to be).
    h.op(
        0,
        NetOp::Send {
            conn: ConnId(1),
            seq: SendSeq(2),
            data: b"y".to_vec(),
            to: None,
        },
    );
    assert_eq!(h.net.pop_event(), None);
}

#[test]
fn drain_delivers_every_byte_then_fin_and_reports_once() {
    let mut h = Harness::new();
    let (l, addr) = listener();
    h.connect(0, ConnId(1), addr);
    let (mut peer, _) = l.accept().expect("accept");
    // More than the kernel buffers take while the peer does not read.
    let chunk = vec![0xa5; 64 * 1024];
    let n = 64u64;
    for seq in 1..=n {
        h.op(
            0,
            NetOp::Send {
                conn: ConnId(1),
                seq: SendSeq(seq),
                data: chunk.clone(),
                to: None,
            },
        );
    }
    h.op(
        0,
        NetOp::Close {
            conn: ConnId(1),
            how: CloseHow::Drain,
        },
    );
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        // Until FIN: read_to_end fails on a reset, so it proves a clean end.
        peer.read_to_end(&mut got).expect("clean end of stream");
        peer.write_all(b"ignored").ok();
        got.len()
    });
    let evs = h.expect("Closed", |e| matches!(e, NetEvent::Closed { .. }));
    assert_eq!(
        evs,
        vec![NetEvent::Closed {
            conn: ConnId(1),
            reason: CloseReason::Drained
        }],
        "no Sent or Data after Close, one Closed"
    );
    assert_eq!(reader.join().expect("reader"), n as usize * chunk.len());
    assert!(h.net.conns.is_empty());
}

#[test]
fn udp_send_and_receive() {
    let mut h = Harness::new();
    let peer = std::net::UdpSocket::bind((LO, 0)).expect("peer");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    let SocketAddr::V4(peer_addr) = peer.local_addr().expect("addr") else {
        unreachable!()
    };
    h.op(
        0,
        NetOp::OpenUdp {
            conn: ConnId(3),
            local: SocketAddrV4::new(LO, 0),
            ephemeral_fallback: false,
        },
    );
    let Some((
        0,
        NetEvent::Connected {
            conn: ConnId(3),
            local,
            peer: None,
        },
    )) = h.net.pop_event()
    else {
        panic!("not bound")
    };
    assert_ne!(local.port(), 0);

    h.op(
        0,
        NetOp::Send {
            conn: ConnId(3),
            seq: SendSeq(9),
            data: b"ping".to_vec(),
            to: Some(peer_addr),
        },
    );
    assert_eq!(
        h.net.pop_event(),
        Some((
            0,
            NetEvent::Sent {
                conn: ConnId(3),
                seq: SendSeq(9)
            }
        ))
    );
    let mut buf = [0u8; 16];
    let (n, from) = peer.recv_from(&mut buf).expect("peer recv");
    assert_eq!((&buf[..n], from), (&b"ping"[..], SocketAddr::V4(local)));

    peer.send_to(b"pong", local).expect("peer send");
    peer.send_to(b"", local).expect("peer send empty");
    let evs = h.run(WAIT, |evs| evs.len() >= 2);
    assert_eq!(
        evs,
        vec![
            (
                0,
                NetEvent::Datagram {
                    conn: ConnId(3),
                    data: b"pong".to_vec(),
                    from: peer_addr
                }
            ),
            (
                0,
                NetEvent::Datagram {
                    conn: ConnId(3),
                    data: Vec::new(),
                    from: peer_addr
                }
            ),
        ]
    );
}

#[test]
fn udp_port_in_use_falls_back_only_when_asked() {
    let mut h = Harness::new();
    let taken = std::net::UdpSocket::bind((LO, 0)).expect("taken");
    let SocketAddr::V4(taken) = taken.local_addr().expect("addr") else {
        unreachable!()
    };
    h.op(
        0,
        NetOp::OpenUdp {
            conn: ConnId(1),
            local: taken,
            ephemeral_fallback: false,
        },
    );
    assert_eq!(
        h.net.pop_event(),
        Some((
            0,
            NetEvent::ConnectFailed {
                conn: ConnId(1),
                error: ConnectError::AddrInUse
            }
        ))
    );
    h.op(
        0,
        NetOp::OpenUdp {
            conn: ConnId(2),
            local: taken,
            ephemeral_fallback: true,
        },
    );
    match h.net.pop_event() {
        Some((
            0,
            NetEvent::Connected {
                conn: ConnId(2),
                local,
                peer: None,
            },
        )) => {
            assert_eq!(*local.ip(), LO);
            assert_ne!(local.port(), taken.port());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn modules_are_kept_apart() {
    let mut h = Harness::new();
    let (l, addr) = listener();
    let a = h.connect(0, ConnId(1), addr);
    let b = h.connect(1, ConnId(1), addr);
    let (mut pa, sa) = l.accept().expect("accept a");
    let (mut pb, sb) = l.accept().expect("accept b");
    assert_eq!((sa, sb), (SocketAddr::V4(a), SocketAddr::V4(b)));
    let owners: Vec<_> = h.net.conns.values().map(|c| (c.module, c.id)).collect();
    assert!(owners.contains(&(0, ConnId(1))) && owners.contains(&(1, ConnId(1))));

    pa.write_all(b"A").expect("write");
    pb.write_all(b"B").expect("write");
    let evs = h.run(WAIT, |evs| evs.len() >= 2);
    let mut evs = evs;
    evs.sort_by_key(|(m, _)| *m);
    assert_eq!(
        evs,
        vec![
            (
                0,
                NetEvent::Data {
                    conn: ConnId(1),
                    data: b"A".to_vec()
                }
            ),
            (
                1,
                NetEvent::Data {
                    conn: ConnId(1),
                    data: b"B".to_vec()
                }
            ),
        ]
    );
}

#[test]
fn dns_resolves_off_the_loop() {
    let mut h = Harness::new();
    h.op(
        2,
        NetOp::Resolve {
            query: QueryId(1),
            name: "localhost".into(),
        },
    );
    h.op(
        2,
        NetOp::Resolve {
            query: QueryId(2),
            name: "127.0.0.9".into(),
        },
    );
    h.op(
        2,
        NetOp::Resolve {
            query: QueryId(3),
            name: String::new(),
        },
    );
    let mut evs = h.run(WAIT, |evs| evs.len() >= 3);
    evs.sort_by_key(|(_, e)| match e {
        NetEvent::Resolved { query, .. } => *query,
        _ => QueryId(0),
    });
    assert_eq!(evs.len(), 3, "{evs:?}");
    assert_eq!(
        evs[0],
        (
            2,
            NetEvent::Resolved {
                query: QueryId(1),
                result: Ok(LO)
            }
        )
    );
    assert_eq!(
        evs[1],
        (
            2,
            NetEvent::Resolved {
                query: QueryId(2),
                result: Ok(Ipv4Addr::new(127, 0, 0, 9))
            }
        )
    );
    assert!(matches!(
        &evs[2],
        (
            2,
            NetEvent::Resolved {
                query: QueryId(3),
                result: Err(_)
            }
        )
    ));
}
