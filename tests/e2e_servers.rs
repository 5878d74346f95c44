//! End-to-end tests of module-side servers (`P5`), asynchronous events (UART and poll delivery),
//! ping (`T0`), the soft AP and saved settings (`Z1`/`ZR`): the real binary on a pty, clients and
//! servers the tests run on 127.0.0.1. Expected bytes follow the core tests in
//! `src/module/tests.rs` ("servers and asynchronous events", "saved settings, soft AP, ping").

use eswifi_test_support::harness::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(20);

fn joined() -> Emu {
    let mut emu = Emu::start();
    join(&mut emu);
    emu
}

/// `\r\n[TCP SVR] Accepted 127.0.0.1:<port>\r\n> `.
fn tcp_event(port: u16) -> Vec<u8> {
    format!("\r\n[TCP SVR] Accepted 127.0.0.1:{port}\r\n> ").into_bytes()
}

/// `\r\n[UDP SVR] Accepted 127.0.0.1:<port>\r\n> `.
fn udp_event(port: u16) -> Vec<u8> {
    format!("\r\n[UDP SVR] Accepted 127.0.0.1:{port}\r\n> ").into_bytes()
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .expect("bind udp")
        .local_addr()
        .unwrap()
        .port()
}

/// Write `req` and read exactly as many bytes as `want` holds, then compare.
#[track_caller]
fn expect_total(emu: &mut Emu, req: &[u8], want: &[u8]) {
    emu.write(req);
    let got = emu.read_total(want.len());
    assert_bytes(&got, want, &format!("reply to \"{}\"", esc(req)));
}

/// A TCP client of the module's server, with bounded blocking reads.
fn client(port: u16) -> TcpStream {
    client_to("127.0.0.1", port)
}

fn client_to(ip: &str, port: u16) -> TcpStream {
    let s = TcpStream::connect((ip, port)).unwrap_or_else(|e| panic!("connect {ip}:{port}: {e}"));
    s.set_read_timeout(Some(SECS)).unwrap();
    s.set_write_timeout(Some(SECS)).unwrap();
    let _ = s.set_nodelay(true);
    s
}

fn local_port(s: &TcpStream) -> u16 {
    s.local_addr().unwrap().port()
}

/// Whether the peer closed `s` (EOF or reset) within the read timeout.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Start a TCP server on socket `sock` at `port` with backlog `backlog` (`P5=<mode>`).
fn tcp_server(emu: &mut Emu, sock: u8, port: u16, backlog: u8, mode: u8) {
    emu.expect(format!("P0={sock}\r").as_bytes(), OK);
    emu.expect(b"P1=0\r", OK);
    emu.expect(format!("P2={port}\r").as_bytes(), OK);
    emu.expect(format!("P8={backlog}\r").as_bytes(), OK);
    emu.expect(format!("P5={mode}\r").as_bytes(), OK);
}

/// Start a UDP server on socket `sock` at `port`.
fn udp_server(emu: &mut Emu, sock: u8, port: u16) {
    emu.expect(format!("P0={sock}\r").as_bytes(), OK);
    emu.expect(b"P1=1\r", OK);
    emu.expect(format!("P2={port}\r").as_bytes(), OK);
    emu.expect(b"P5=1\r", OK);
}

/// R0 until a non-empty reply (a datagram), at most `rounds` times.
fn r0_datagram(emu: &mut Emu, rounds: usize) -> Vec<u8> {
    for _ in 0..rounds {
        let reply = emu.cmd(b"R0\r");
        match r0_payload(&reply) {
            Some(d) if !d.is_empty() => return d.to_vec(),
            Some(_) => {}
            None => emu.fail(&format!("R0 answered \"{}\"", esc(&reply))),
        }
    }
    emu.fail(&format!("no datagram after {rounds} R0"));
}

fn udp_test_socket() -> UdpSocket {
    let u = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    u.set_read_timeout(Some(SECS)).unwrap();
    u
}

// ---- four sockets ---------------------------------------------------------------------------------

#[test]
fn four_sockets_two_clients_a_tcp_server_and_a_udp_server_interleaved() {
    let echo_a = Server::tcp_echo();
    let echo_b = Server::tcp_echo();
    let (tcp_port, udp_port) = (closed_port(), free_udp_port());
    let mut emu = joined();
    for (sock, srv) in [(0u8, &echo_a), (1, &echo_b)] {
        emu.connect_tcp(sock, srv.port());
        emu.expect(b"R1=1460\r", OK);
        emu.expect(b"R2=1000\r", OK);
    }
    tcp_server(&mut emu, 2, tcp_port, 1, 1);
    emu.expect(b"R1=1460\r", OK);
    emu.expect(b"R2=1000\r", OK);
    let mut peer = client(tcp_port);
    assert_bytes(&emu.read_until_prompt(SECS), &tcp_event(tcp_port), "accept");
    udp_server(&mut emu, 3, udp_port);
    emu.expect(b"R1=1460\r", OK);
    emu.expect(b"R2=1000\r", OK);
    let udp = udp_test_socket();
    let udp_from = udp.local_addr().unwrap().port();

    // Per socket: bytes that went towards the module's peer / came back.
    let mut sent: Vec<Vec<u8>> = vec![Vec::new(); 4];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); 4];
    for round in 0..5u32 {
        // `len` bytes: a readable tag, then pseudo-random filler.
        let data = |sock: usize, len: usize| {
            let mut v = [
                format!("s{sock}r{round}:").as_bytes(),
                &pattern(len, round * 8 + sock as u32),
            ]
            .concat();
            v.truncate(len);
            v
        };
        // Towards the network: S3 on the two clients, the TCP peer and the UDP sender write.
        for sock in [0usize, 1] {
            let d = data(sock, 300 + 250 * sock + 50 * round as usize);
            emu.expect(format!("P0={sock}\r").as_bytes(), OK);
            emu.send(&d);
            sent[sock].extend_from_slice(&d);
        }
        let to_module = data(2, 700 + 100 * round as usize);
        peer.write_all(&to_module).unwrap();
        let dgram = data(3, 100 + 200 * round as usize);
        udp.send_to(&dgram, ("127.0.0.1", udp_port)).unwrap();
        if round == 0 {
            assert_bytes(
                &emu.read_until_prompt(SECS),
                &udp_event(udp_port),
                "first datagram's sender announced",
            );
        }
        // The module reads the UDP server (one datagram) and answers its sender.
        emu.expect(b"P0=3\r", OK);
        assert_bytes(&r0_datagram(&mut emu, 20), &dgram, "datagram");
        emu.expect(
            b"P?\r",
            &ok(format!(
                "1,0.0.0.0,{udp_port},127.0.0.1,{udp_from},0,1,8,0,0"
            )),
        );
        let answer = data(30, 50 + round as usize);
        emu.send(&answer);
        // The TCP server's client: the module reads it, then writes to it.
        emu.expect(b"P0=2\r", OK);
        let (back, _) = emu.recv_exact(to_module.len(), SECS);
        assert_bytes(&back, &to_module, "TCP server received");
        let from_module = data(20, 1460);
        emu.send(&from_module);
        // The echoes, in another order.
        for sock in [1usize, 0] {
            emu.expect(format!("P0={sock}\r").as_bytes(), OK);
            let want = sent[sock].len() - got[sock].len();
            let (d, _) = emu.recv_exact(want, SECS);
            got[sock].extend(d);
        }
        let mut buf = vec![0u8; from_module.len()];
        peer.read_exact(&mut buf)
            .expect("client of the TCP server reads");
        assert_bytes(&buf, &from_module, "TCP server sent");
        let mut ubuf = [0u8; 2048];
        let (n, from) = udp.recv_from(&mut ubuf).expect("UDP answer");
        assert_eq!(from.port(), udp_port, "answer comes from the server port");
        assert_bytes(&ubuf[..n], &answer, "UDP server answered");
    }
    for sock in [0usize, 1] {
        assert_bytes(&got[sock], &sent[sock], &format!("socket {sock} stream"));
    }
    // Nothing left anywhere, nothing unsolicited.
    for sock in 0..4 {
        emu.expect(format!("P0={sock}\r").as_bytes(), OK);
        emu.expect(b"R2=0\r", OK);
        emu.expect(b"R0\r", OK);
    }
    assert_eq!(echo_a.peers().len(), 1);
    assert_eq!(echo_b.peers().len(), 1);
    emu.stop();
}

// ---- backlog, multi-accept -------------------------------------------------------------------------

#[test]
fn backlog_is_walked_in_connect_order_with_p5_10() {
    let port = closed_port();
    let mut emu = joined();
    tcp_server(&mut emu, 1, port, 3, 1);
    emu.expect(b"R2=2000\r", OK);
    // Three clients connect, each says who it is, before the host reads anything.
    let mut clients: Vec<TcpStream> = (1..=3)
        .map(|n| {
            let mut c = client(port);
            c.write_all(format!("client{n}").as_bytes()).unwrap();
            c
        })
        .collect();
    // Only the current (first) client is announced.
    assert_bytes(
        &emu.read_until_prompt(SECS),
        &tcp_event(port),
        "first accept",
    );
    assert_bytes(
        &emu.read_for(Duration::from_millis(200)),
        b"",
        "waiting clients are not announced",
    );
    for n in 1..=3usize {
        if n > 1 {
            // The previous client is closed, the next one current and announced.
            expect_total(&mut emu, b"P5=10\r", &[OK, &tcp_event(port)].concat());
            assert!(
                closed_by_peer(&mut clients[n - 2]),
                "client {} closed by P5=10",
                n - 1
            );
        }
        emu.expect(
            b"P?\r",
            &ok(format!(
                "0,127.0.0.1,{port},0.0.0.0,{},1,0,3,0,0",
                local_port(&clients[n - 1])
            )),
        );
        let (first, _) = emu.recv_exact(7, SECS);
        assert_bytes(&first, format!("client{n}").as_bytes(), "current client");
        emu.send(format!("hello{n}").as_bytes());
        let mut b = [0u8; 6];
        clients[n - 1].read_exact(&mut b).unwrap();
        assert_bytes(
            &b,
            format!("hello{n}").as_bytes(),
            "reply to the current client",
        );
    }
    // Nobody waiting: P5=10 just closes the current client; the next to connect is announced.
    emu.expect(b"P5=10\r", OK);
    assert!(closed_by_peer(&mut clients[2]), "client 3 closed by P5=10");
    let mut c4 = client(port);
    assert_bytes(
        &emu.read_until_prompt(SECS),
        &tcp_event(port),
        "fourth accept",
    );
    c4.write_all(b"client4").unwrap();
    let (first, _) = emu.recv_exact(7, SECS);
    assert_bytes(&first, b"client4", "fourth client");
    emu.expect(b"P5=0\r", OK);
    assert!(closed_by_peer(&mut c4), "P5=0 closes the current client");
    emu.stop();
}

#[test]
fn backlog_beyond_p8_is_refused() {
    let port = closed_port();
    let mut emu = joined();
    tcp_server(&mut emu, 0, port, 1, 1);
    let c1 = client(port);
    assert_bytes(&emu.read_until_prompt(SECS), &tcp_event(port), "accept");
    let mut c2 = client(port);
    c2.write_all(b"second").unwrap();
    // P8=1: one client may wait behind the current one; the next is closed at once.
    let mut c3 = client(port);
    assert!(closed_by_peer(&mut c3), "third client refused");
    expect_total(&mut emu, b"P5=10\r", &[OK, &tcp_event(port)].concat());
    emu.expect(
        b"P?\r",
        &ok(format!(
            "0,127.0.0.1,{port},0.0.0.0,{},1,0,1,0,0",
            local_port(&c2)
        )),
    );
    let (d, _) = emu.recv_exact(6, SECS);
    assert_bytes(&d, b"second", "the waiting client's data");
    drop(c1);
    emu.stop();
}

#[test]
fn multi_accept_moves_to_the_next_client_after_minus_one() {
    let port = closed_port();
    let mut emu = joined();
    tcp_server(&mut emu, 0, port, 2, 11);
    emu.expect(b"R2=2000\r", OK);
    let mut c1 = client(port);
    assert_bytes(&emu.read_until_prompt(SECS), &tcp_event(port), "accept 1");
    let mut c2 = client(port);
    c2.write_all(b"second").unwrap();
    emu.expect(
        b"P?\r",
        &ok(format!(
            "0,127.0.0.1,{port},0.0.0.0,{},1,0,2,1,0",
            local_port(&c1)
        )),
    );
    c1.write_all(b"first").unwrap();
    c1.shutdown(std::net::Shutdown::Write).unwrap();
    let (d, _) = emu.recv_exact(5, SECS);
    assert_bytes(&d, b"first", "first client's data");
    // The end of the first client: -1, and right after it the next client is current.
    let mut reply = emu.cmd(b"R0\r");
    for _ in 0..10 {
        if reply != OK {
            break;
        }
        reply = emu.cmd(b"R0\r");
    }
    let want = [CLOSED, &tcp_event(port)].concat();
    if reply.len() < want.len() {
        reply.extend(emu.read_total(want.len() - reply.len()));
    }
    assert_bytes(&reply, &want, "R0 after the first client left");
    emu.expect(
        b"P?\r",
        &ok(format!(
            "0,127.0.0.1,{port},0.0.0.0,{},1,0,2,1,0",
            local_port(&c2)
        )),
    );
    let (d, _) = emu.recv_exact(6, SECS);
    assert_bytes(&d, b"second", "second client's data");
    emu.send(b"bye2");
    let mut b = [0u8; 4];
    c2.read_exact(&mut b).unwrap();
    assert_bytes(&b, b"bye2", "second client received");
    emu.stop();
}

// ---- events never split a reply ---------------------------------------------------------------------

/// Accept one connection on `l` within [`SECS`].
fn accept_within(l: &TcpListener) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + SECS;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_write_timeout(Some(SECS)).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// `got` must be exactly `reply` then `event`, or `event` then `reply`.
#[track_caller]
fn assert_reply_and_event(got: &[u8], reply: &[u8], event: &[u8], what: &str) {
    let after = [reply, event].concat();
    let before = [event, reply].concat();
    eprintln!(
        "{what}: {}",
        if got == after {
            "reply, then event"
        } else {
            "event, then reply"
        }
    );
    assert!(
        got == after || got == before,
        "{what}: got \"{}\"\nwant \"{}\"\n  or \"{}\"",
        esc(got),
        esc(&after),
        esc(&before)
    );
}

#[test]
fn accept_event_never_splits_a_long_r0_reply() {
    let feeder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed_port();
    let mut emu = joined();
    tcp_server(&mut emu, 0, port, 3, 1);
    emu.connect_tcp(1, feeder.local_addr().unwrap().port());
    let mut feed = accept_within(&feeder);
    emu.expect(b"R1=1460\r", OK);
    emu.expect(b"R2=10000\r", OK);
    let mut clients = Vec::new();
    for round in 0..4u32 {
        // R0 on socket 1 waits for data; meanwhile a client reaches the server on socket 0.
        emu.write(b"R0\r");
        emu.wait_log("cmd  R0", round as usize + 1);
        clients.push(client(port));
        emu.wait_log(" accepted #", round as usize + 1);
        let data = pattern(1460, 100 + round);
        feed.write_all(&data).unwrap();
        let reply = ok(&data);
        let event = tcp_event(port);
        let got = emu.read_total(reply.len() + event.len());
        assert_reply_and_event(&got, &reply, &event, &format!("round {round}"));
        // Free socket 0 for the next client: close the current one (nobody waits).
        emu.expect(b"P0=0\r", OK);
        emu.expect(b"P5=10\r", OK);
        emu.expect(b"P0=1\r", OK);
    }
    emu.stop();
}

#[test]
fn accept_event_never_splits_an_f0_reply() {
    let port = closed_port();
    let mut emu = Emu::start_with(Some("[timing]\nscan_ms = 400\n"), &[]);
    join(&mut emu);
    let scan = emu.cmd(b"F0\r");
    assert!(
        scan.starts_with(b"\r\n#001,\"eswifi-e2e\",") && scan.ends_with(b"\r\nOK\r\n> "),
        "F0 \"{}\"",
        esc(&scan)
    );
    tcp_server(&mut emu, 0, port, 3, 1);
    let mut clients = Vec::new();
    for round in 0..3 {
        emu.write(b"F0\r");
        emu.wait_log("cmd  F0", round + 2);
        clients.push(client(port));
        let event = tcp_event(port);
        let got = emu.read_total(scan.len() + event.len());
        assert_reply_and_event(&got, &scan, &event, &format!("round {round}"));
        emu.expect(b"P5=10\r", OK);
    }
    emu.stop();
}

/// How many of `events` are `event`; any other message fails the test.
fn count_events(events: &[Vec<u8>], event: &[u8]) -> usize {
    for e in events {
        assert_bytes(e, event, "an asynchronous message between replies");
    }
    events.len()
}

#[test]
fn udp_sender_events_between_busy_replies_never_inside_them() {
    let echo = Server::tcp_echo();
    let udp_port = free_udp_port();
    let mut emu = joined();
    udp_server(&mut emu, 2, udp_port);
    emu.connect_tcp(1, echo.port());
    emu.expect(b"R1=1460\r", OK);
    emu.expect(b"R2=1000\r", OK);
    let event = udp_event(udp_port);

    // New senders keep arriving (each announced once) while the host moves 1460-byte blocks.
    let stop = Arc::new(AtomicBool::new(false));
    let senders = Arc::new(AtomicUsize::new(0));
    let thread = {
        let (stop, senders) = (stop.clone(), senders.clone());
        std::thread::spawn(move || {
            let mut keep = Vec::new();
            for i in 0..40 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let u = UdpSocket::bind("127.0.0.1:0").unwrap();
                if u.send_to(format!("d{i}").as_bytes(), ("127.0.0.1", udp_port))
                    .is_ok()
                {
                    senders.fetch_add(1, Ordering::Relaxed);
                }
                keep.push(u); // distinct source ports: every sender is new
                std::thread::sleep(Duration::from_millis(15));
            }
            keep
        })
    };
    let mut events = 0;
    let mut sent = Vec::new();
    let mut back = Vec::new();
    for round in 0..15u32 {
        let data = pattern(1460, 500 + round);
        let req = s3(&data);
        emu.write(&req);
        let (core, evs) = emu.read_reply_after_events(SECS);
        events += count_events(&evs, &event);
        assert_bytes(&core, &ok("1460"), &format!("S3 reply, round {round}"));
        sent.extend_from_slice(&data);
        let mut reads = 0;
        while back.len() < sent.len() {
            reads += 1;
            assert!(reads <= 50, "echo of round {round} incomplete");
            emu.write(b"R0\r");
            let (core, evs) = emu.read_reply_after_events(SECS);
            events += count_events(&evs, &event);
            let Some(d) = r0_payload(&core) else {
                panic!("R0 reply \"{}\"", esc(&core));
            };
            assert!(
                sent[back.len()..].starts_with(d),
                "round {round}: R0 data is not the next echoed bytes: \"{}\"",
                esc(&core)
            );
            back.extend_from_slice(d);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let keep = thread.join().unwrap();
    let total = senders.load(Ordering::Relaxed);
    assert!(total > 0 && total == keep.len());
    eprintln!("{events} of {total} sender announcements arrived around busy replies");
    // Announcements still on their way.
    let deadline = Instant::now() + SECS;
    while events < total && Instant::now() < deadline {
        let got = emu.read_until_prompt(SECS);
        assert_bytes(&got, &event, "only events while idle");
        events += 1;
    }
    assert_eq!(events, total, "one announcement per sender");
    assert_bytes(&back, &sent, "echoed stream");
    emu.stop();
}

#[test]
fn ms_2_suppresses_server_events_in_both_modes() {
    for poll in [false, true] {
        let port = closed_port();
        let udp_port = free_udp_port();
        let mut emu = if poll {
            Emu::start_with(None, &["--events", "poll"])
        } else {
            Emu::start()
        };
        join(&mut emu);
        emu.expect(b"MS=2\r", OK);
        tcp_server(&mut emu, 0, port, 3, 1);
        udp_server(&mut emu, 1, udp_port);
        let c = client(port);
        let u = udp_test_socket();
        u.send_to(b"quiet", ("127.0.0.1", udp_port)).unwrap();
        emu.expect(b"R2=3000\r", OK);
        assert_bytes(&r0_datagram(&mut emu, 10), b"quiet", "datagram");
        // The client is current (P? shows it) but was never announced.
        emu.expect(b"P0=0\r", OK);
        let want = ok(format!(
            "0,127.0.0.1,{port},0.0.0.0,{},1,0,3,0,0",
            local_port(&c)
        ));
        let mut p = emu.cmd(b"P?\r");
        for _ in 0..100 {
            if p == want {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            p = emu.cmd(b"P?\r");
        }
        assert_bytes(&p, &want, "P? with the client");
        assert_bytes(&emu.read_for(Duration::from_millis(200)), b"", "no event");
        if poll {
            emu.expect(b"MR\r", &ok("[SOMA][EOMA]"));
        }
        // Unsuppressed again: the next client is announced.
        emu.expect(b"MS=0\r", OK);
        emu.expect(b"P5=10\r", OK);
        let _c2 = client(port);
        if poll {
            let mut r = emu.cmd(b"MR\r");
            for _ in 0..200 {
                if r != ok("[SOMA][EOMA]") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
                r = emu.cmd(b"MR\r");
            }
            assert_bytes(
                &r,
                &ok(format!("[SOMA][TCP SVR] Accepted 127.0.0.1:{port}[EOMA]")),
                "MR",
            );
        } else {
            assert_bytes(&emu.read_until_prompt(SECS), &tcp_event(port), "event");
        }
        emu.stop();
    }
}

// ---- UDP server ---------------------------------------------------------------------------------------

#[test]
fn udp_server_answers_the_sender_shown_by_p_query() {
    let port = free_udp_port();
    let mut emu = joined();
    udp_server(&mut emu, 2, port);
    emu.expect(b"R2=3000\r", OK);
    emu.expect(
        b"P?\r",
        &ok(format!("1,0.0.0.0,{port},0.0.0.0,5025,0,1,8,0,0")),
    );
    let a = udp_test_socket();
    let b = udp_test_socket();
    let (pa, pb) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    let mut buf = [0u8; 2048];
    for (round, (sock, sport)) in [(&a, pa), (&b, pb), (&a, pa), (&b, pb)].iter().enumerate() {
        let msg = format!("ping {round} from {sport}");
        sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
        if round < 2 {
            // Each sender is announced once, on its first datagram.
            assert_bytes(&emu.read_until_prompt(SECS), &udp_event(port), "new sender");
        }
        assert_bytes(&r0_datagram(&mut emu, 10), msg.as_bytes(), "datagram");
        emu.expect(
            b"P?\r",
            &ok(format!("1,0.0.0.0,{port},127.0.0.1,{sport},0,1,8,0,0")),
        );
        let answer = format!("pong {round} to {sport}");
        emu.send(answer.as_bytes());
        let (n, from) = sock.recv_from(&mut buf).expect("answer");
        assert_eq!(from.port(), port, "answered from the server's port");
        assert_bytes(&buf[..n], answer.as_bytes(), "answer to the sender");
    }
    assert_bytes(
        &emu.read_for(Duration::from_millis(200)),
        b"",
        "no more events",
    );
    emu.expect(b"P5=0\r", OK);
    emu.stop();
}

// ---- soft AP --------------------------------------------------------------------------------------------

#[test]
fn soft_ap_server_listens_on_the_ap_address_and_announces_the_station() {
    let port = closed_port();
    let mut emu = Emu::start();
    emu.expect(
        b"A0\r",
        &ok("[AP     ] SSID: eS-WiFi_AP_C47F51011231,127.0.10.1"),
    );
    tcp_server(&mut emu, 0, port, 2, 1);
    let mut c = client_to("127.0.10.1", port);
    let ip = c.local_addr().unwrap().ip().to_string();
    let o: Vec<u8> = ip.split('.').map(|x| x.parse().unwrap()).collect();
    let dhcp = format!(
        "\r\n[AP DHCP] Assigned 02:00:{:02X}:{:02X}:{:02X}:{:02X} has {ip}\r\n> ",
        o[0], o[1], o[2], o[3]
    );
    let accept = format!("\r\n[TCP SVR] Accepted {ip}:{port}\r\n> ");
    let got = emu.read_total(dhcp.len() + accept.len());
    assert_bytes(&got, format!("{dhcp}{accept}").as_bytes(), "AP events");
    emu.expect(b"R2=2000\r", OK);
    c.write_all(b"via ap").unwrap();
    let (d, _) = emu.recv_exact(6, SECS);
    assert_bytes(&d, b"via ap", "data from the station");
    // The same station again: no second lease message.
    emu.expect(b"P5=10\r", OK);
    let _c2 = client_to("127.0.10.1", port);
    assert_bytes(
        &emu.read_until_prompt(SECS),
        accept.as_bytes(),
        "second client",
    );
    emu.expect(b"P5=0\r", OK);
    emu.stop();
}

// ---- ping -------------------------------------------------------------------------------------------------

/// Whether this process may open an ICMP socket (datagram, or raw with CAP_NET_RAW), as the
/// emulator's ping worker tries.
fn icmp_available() -> bool {
    for ty in [libc::SOCK_DGRAM, libc::SOCK_RAW] {
        // SAFETY: plain socket(2); the descriptor is closed right away.
        let fd = unsafe { libc::socket(libc::AF_INET, ty, libc::IPPROTO_ICMP) };
        if fd >= 0 {
            unsafe { libc::close(fd) };
            return true;
        }
    }
    false
}

#[test]
fn ping_loopback_twice() {
    let mut emu = Emu::start();
    emu.expect(b"T1=127.0.0.1\r", OK);
    emu.expect(b"T2=1\r", OK);
    emu.expect(b"T3=100\r", OK);
    emu.expect(b"T?\r", &ok("127.0.0.1,1,100"));
    // Not joined: no network, every echo is lost.
    emu.expect(b"T0\r", &ok("Timeout\r\nTimeout"));
    join(&mut emu);
    let reply = emu.cmd(b"T0\r");
    eprintln!("T0 answered \"{}\"", esc(&reply));
    let payload = String::from_utf8(parse_r0(&reply).to_vec()).unwrap();
    let lines: Vec<&str> = payload.split("\r\n").collect();
    assert_eq!(lines.len(), 2, "T2=1: two echoes: \"{}\"", esc(&reply));
    if icmp_available() {
        for l in &lines {
            let ms = l.strip_prefix("127.0.0.1,").unwrap_or_else(|| {
                panic!("ping line {l:?} in \"{}\"", esc(&reply));
            });
            assert!(
                !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()),
                "ping line {l:?}"
            );
        }
    } else {
        eprintln!("no ICMP socket available here: expecting Timeout lines");
        assert_eq!(lines, ["Timeout", "Timeout"]);
    }
    emu.stop();
}

// ---- saved settings ------------------------------------------------------------------------------------------

#[test]
fn saved_settings_survive_reset_and_restart_unsaved_ones_do_not() {
    let certs = TempDir::new("certs");
    let dir = certs.path().to_str().unwrap().to_string();
    let args = ["--certsets", dir.as_str()];
    let mut emu = Emu::start_with(None, &args);
    let fresh_boot = emu.boot.clone();
    assert!(fresh_boot.ends_with(BANNER_END), "{}", esc(&fresh_boot));
    let join_line = b"\r\n[JOIN   ] saved net,127.0.0.1,0,0\r\n> ";
    let c_query =
        ok("saved net,pw123456,3,1,0,127.0.0.1,255.0.0.0,127.0.0.1,127.0.0.1,0.0.0.0,5,1,0,US,1");
    let i_query =
        ok("ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Saved Name");

    for req in [
        &b"C1=saved net\r"[..],
        b"C2=pw123456\r",
        b"C3=3\r",
        b"CC=1\r",
        b"ZN=Saved Name\r",
        b"Z4=02:11:22:33:44:55\r",
        b"AS=0,saved ap\r",
        b"MS=2\r",
    ] {
        emu.expect(req, OK);
    }
    emu.expect(b"Z1\r", OK);
    assert!(
        certs.path().join("settings.saved").is_file(),
        "Z1 wrote settings.saved"
    );
    // Changed after Z1: lost on reset.
    emu.expect(b"C1=not saved\r", OK);
    emu.expect(b"ZN=Temp\r", OK);
    emu.expect(b"Z4=02:00:00:00:00:09\r", OK);
    let want = [
        ok("[MODULE ] Resetting...").as_slice(),
        &fresh_boot,
        join_line,
    ]
    .concat();
    expect_total(&mut emu, b"ZR\r", &want);
    let check = |emu: &mut Emu| {
        emu.expect(b"CS\r", &ok("1"));
        emu.expect(b"C?\r", &c_query);
        emu.expect(b"I?\r", &i_query);
        emu.expect(b"Z5\r", &ok("02:11:22:33:44:55"));
        emu.expect(b"A?\r", &ok("saved ap,127.0.10.1,1,0,,1,24,0"));
    };
    check(&mut emu);

    // MT is saved too.
    emu.expect(b"MT=1\r", OK);
    emu.expect(b"Z1\r", OK);
    emu.expect(b"P0=9\r", ERR1);
    // Unsaved again, then the process ends.
    emu.expect(b"ZN=Lost Name\r", OK);
    emu.expect(b"CC=0\r", OK);
    emu.stop();

    // A new process on the same directory boots with the saved settings and joins.
    let mut emu = Emu::start_with(None, &args);
    let mut boot = emu.boot.clone();
    if !boot.ends_with(join_line) {
        boot.extend(emu.read_until_prompt(SECS));
    }
    assert_bytes(&boot, &[fresh_boot.as_slice(), join_line].concat(), "boot");
    check(&mut emu);
    emu.expect(b"P0=9\r", ERR1);
    // MS=2 was saved: a server's client is not announced.
    let port = closed_port();
    tcp_server(&mut emu, 0, port, 1, 1);
    let _c = client(port);
    assert_bytes(&emu.read_for(Duration::from_millis(300)), b"", "MS=2 saved");
    emu.stop();

    // Without saved settings a fresh directory boots plainly.
    let mut emu = Emu::start();
    assert_bytes(&emu.boot, &fresh_boot, "fresh boot");
    emu.expect(b"CS\r", &ok("0"));
    emu.stop();
}

/// A store whose `settings.saved` an emulator wrote before saved settings were TOML (`Z1` after
/// `C1=old net, with comma`, `C2=pw123456`, `C3=3`, `CC=1`, `ZN=Old Name`, `Z4=02:11:22:33:44:55`,
/// `AS=0,old ap`, `MS=2`, `MT=1`): the module boots with those settings, the file is rewritten as
/// TOML, and the next boot reads that.
#[test]
fn settings_saved_in_the_first_format_are_kept_and_rewritten_as_toml() {
    let certs = TempDir::new("certs-v1");
    let path = certs.path().join("settings.saved");
    std::fs::write(&path, include_bytes!("fixtures/settings-v1.saved")).unwrap();
    let dir = certs.path().to_str().unwrap().to_string();
    let args = ["--certsets", dir.as_str()];
    let join_line = b"\r\n[JOIN   ] old net, with comma,127.0.0.1,0,0\r\n> ";
    let check = |emu: &mut Emu| {
        let mut boot = emu.boot.clone();
        if !boot.ends_with(join_line) {
            boot.extend(emu.read_until_prompt(SECS));
        }
        assert!(boot.ends_with(join_line), "CC=1 saved: {}", esc(&boot));
        emu.expect(
            b"C?\r",
            &ok("old net, with comma,pw123456,3,1,0,127.0.0.1,255.0.0.0,127.0.0.1,127.0.0.1,0.0.0.0,5,1,0,US,1"),
        );
        emu.expect(
            b"I?\r",
            &ok("ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Old Name"),
        );
        emu.expect(b"Z5\r", &ok("02:11:22:33:44:55"));
        emu.expect(b"A?\r", &ok("old ap,127.0.10.2,1,0,,1,24,0"));
        emu.expect(b"P0=9\r", ERR1);
    };
    let mut emu = Emu::start_with(None, &args);
    check(&mut emu);
    // The store writes on a worker thread: wait (bounded) until the file is no longer the first
    // format. It is a complete item at every moment.
    let deadline = Instant::now() + SECS;
    let text = loop {
        let data = eswifi_core::item::decode_item(&std::fs::read(&path).unwrap())
            .expect("settings.saved is a complete item");
        if !data.starts_with(b"eswifi-emu-settings 1\n") {
            break String::from_utf8(data).expect("text");
        }
        assert!(Instant::now() < deadline, "settings.saved not rewritten");
        std::thread::sleep(Duration::from_millis(10));
    };
    for line in [
        "[system]\nmac = \"02:11:22:33:44:55\"\nproduct_name = \"Old Name\"\n",
        "message_type = 1\nsuppress = 2\n",
        "[station]\nssid = \"old net, with comma\"\npassphrase = \"pw123456\"\nsecurity = 3\n",
        "auto_connect = 1\n",
        "[ap]\nssid = \"old ap\"\nappend_mac = false\n",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    emu.stop();
    // The next boot reads the TOML, and leaves the file as it is.
    let mut emu = Emu::start_with(None, &args);
    check(&mut emu);
    emu.stop();
    let data = eswifi_core::item::decode_item(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(String::from_utf8(data).unwrap(), text);
}
