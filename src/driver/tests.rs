//! The loop with small fake cores, a real pty and loopback sockets the tests start themselves.

use super::core::Core;
use super::*;
use crate::serial::Pty;
use eswifi_core::module::io::{ConnId, NetEvent, NetOp, SendSeq};
use eswifi_core::module::{Input, Output};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::unix::fs::OpenOptionsExt;

const WAIT: Duration = Duration::from_secs(5);

/// Echoes the host's bytes upper-cased, says "hi" at boot and "T" when its timer fires.
struct Echo {
    out: Vec<u8>,
    timer: Option<Instant>,
}

impl Core for Echo {
    fn handle(&mut self, input: Input<'_>, now: Instant) {
        match input {
            Input::Serial(data) => self.out.extend(data.to_ascii_uppercase()),
            Input::Timeout if self.timer.is_some_and(|t| t <= now) => {
                self.timer = None;
                self.out.extend_from_slice(b"T");
            }
            _ => {}
        }
    }
    fn poll_output(&mut self, take_serial: bool) -> Option<Output> {
        (take_serial && !self.out.is_empty()).then(|| Output::Serial(std::mem::take(&mut self.out)))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }
    fn serial_room(&self) -> usize {
        usize::MAX
    }
    fn rx_room(&self, _conn: ConnId) -> usize {
        0
    }
    fn idle(&self) -> bool {
        self.out.is_empty()
    }
}

fn open_host(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .expect("open slave")
}

/// Step the driver until the host has read `want` bytes or `limit` passed; returns them.
fn host_read_for<M: Core>(
    d: &mut Driver<M>,
    host: &mut File,
    want: usize,
    limit: Duration,
) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want && Instant::now() < deadline {
        assert_eq!(
            d.step(Some(Duration::from_millis(10))).expect("step"),
            Flow::Continue
        );
        match host.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("host read: {e}"),
        }
    }
    got
}

fn host_read<M: Core>(d: &mut Driver<M>, host: &mut File, want: usize) -> Vec<u8> {
    host_read_for(d, host, want, WAIT)
}

#[test]
fn serial_round_trip_across_host_reopen() {
    let mut d = Driver::new().expect("driver");
    let pty = Pty::open().expect("pty");
    let path = pty.slave_path().to_owned();
    let boot = Echo {
        out: b"hi".to_vec(),
        timer: None,
    };
    d.add(boot, Port::pty(pty), LineSetup::default())
        .expect("add");
    // Output made before any host opened the line waits in the pty for the first one.
    for _ in 0..3 {
        d.step(Some(Duration::from_millis(1))).expect("step");
    }
    let mut host = open_host(&path);
    assert_eq!(host_read(&mut d, &mut host, 2), b"hi");
    for round in 0..3 {
        host.write_all(b"i?\r\n").expect("host write");
        assert_eq!(host_read(&mut d, &mut host, 4), b"I?\r\n", "round {round}");
        drop(host);
        // With no host attached the loop must sleep, not spin on hang-ups (the first step sees
        // the close).
        let t = Instant::now();
        for _ in 0..3 {
            d.step(Some(Duration::from_millis(100))).expect("step");
        }
        assert!(t.elapsed() >= Duration::from_millis(150), "loop spun");
        host = open_host(&path);
    }
}

#[test]
fn timer_fires_on_time() {
    let mut d = Driver::new().expect("driver");
    let pty = Pty::open().expect("pty");
    let mut host = open_host(pty.slave_path());
    let start = Instant::now();
    let core = Echo {
        out: Vec::new(),
        timer: Some(start + Duration::from_millis(80)),
    };
    d.add(core, Port::pty(pty), LineSetup::default())
        .expect("add");
    // One long step: the poll must wake itself for the timer.
    d.step(Some(WAIT)).expect("step");
    assert_eq!(host_read(&mut d, &mut host, 1), b"T");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(80) && took < Duration::from_secs(2),
        "timer fired after {took:?}"
    );
}

/// Connects at boot, sends "hello", and passes received bytes to the serial line. It takes at
/// most `room` bytes until the host writes "+", which grants `room` more.
struct Relay {
    ops: Vec<NetOp>,
    out: Vec<u8>,
    room: usize,
    grant: usize,
}

impl Core for Relay {
    fn handle(&mut self, input: Input<'_>, _now: Instant) {
        match input {
            Input::Serial(data) => {
                self.room += self.grant * data.iter().filter(|&&b| b == b'+').count()
            }
            Input::Net(ev) => match ev {
                NetEvent::Connected { conn, .. } => self.ops.push(NetOp::Send {
                    conn,
                    seq: SendSeq(1),
                    data: b"hello".to_vec(),
                    to: None,
                }),
                NetEvent::Sent { .. } => self.out.extend_from_slice(b"<sent>"),
                NetEvent::Data { data, .. } => {
                    assert!(data.len() <= self.room, "read past the room");
                    self.room -= data.len();
                    self.out.extend(data);
                }
                NetEvent::Closed { .. } => self.out.extend_from_slice(b"<closed>"),
                other => panic!("unexpected {other:?}"),
            },
            _ => {}
        }
    }
    fn poll_output(&mut self, take_serial: bool) -> Option<Output> {
        if !self.ops.is_empty() {
            return Some(Output::Net(self.ops.remove(0)));
        }
        (take_serial && !self.out.is_empty()).then(|| Output::Serial(std::mem::take(&mut self.out)))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn serial_room(&self) -> usize {
        usize::MAX
    }
    fn rx_room(&self, _conn: ConnId) -> usize {
        self.room
    }
    fn idle(&self) -> bool {
        self.out.is_empty()
    }
}

#[test]
fn net_relay_with_backpressure() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
    let SocketAddr::V4(remote) = listener.local_addr().expect("addr") else {
        unreachable!()
    };
    let mut d = Driver::new().expect("driver");
    let pty = Pty::open().expect("pty");
    let mut host = open_host(pty.slave_path());
    let core = Relay {
        ops: vec![NetOp::Connect {
            conn: ConnId(1),
            local: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            remote,
            keepalive: None,
        }],
        out: Vec::new(),
        room: 4,
        grant: 4,
    };
    d.add(core, Port::pty(pty), LineSetup::default())
        .expect("add");
    assert_eq!(host_read(&mut d, &mut host, 6), b"<sent>");
    let (mut peer, _) = listener.accept().expect("accept");
    let mut buf = [0u8; 5];
    peer.read_exact(&mut buf).expect("peer read");
    assert_eq!(&buf, b"hello");

    peer.write_all(b"0123456789").expect("peer write");
    peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert_eq!(host_read(&mut d, &mut host, 4), b"0123");
    // The socket has more, but the core has no room: nothing more comes.
    assert_eq!(
        host_read_for(&mut d, &mut host, 1, Duration::from_millis(200)),
        b""
    );
    // Room opens through the serial line; the paused socket is read again without any new
    // readiness from it.
    host.write_all(b"+").expect("host write");
    assert_eq!(host_read(&mut d, &mut host, 4), b"4567");
    host.write_all(b"+").expect("host write");
    assert_eq!(host_read(&mut d, &mut host, 10), b"89<closed>");
}
