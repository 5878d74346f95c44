//! End-to-end tests of the core command set: the real binary on a pty, real sockets on 127.0.0.1.
//! Expected bytes follow the core table tests in `src/module/tests.rs`.

use eswifi_test_support::harness::*;
use std::io::{Read, Write};
use std::time::Duration;

const SECS: Duration = Duration::from_secs(20);

const I_REPLY: &str =
    "ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi";

#[test]
fn boot_prints_banner_then_prompt() {
    let mut emu = Emu::start();
    let boot = emu.boot.clone();
    assert!(
        boot.starts_with(b"\r\n                eS-WiFi\r\n            Inventek Systems\r\n"),
        "boot output \"{}\"",
        esc(&boot)
    );
    assert!(boot.ends_with(BANNER_END), "boot output \"{}\"", esc(&boot));
    // Exactly one prompt, at the very end.
    assert_eq!(
        boot.windows(PROMPT.len()).filter(|w| *w == PROMPT).count(),
        1,
        "boot output \"{}\"",
        esc(&boot)
    );
    assert_bytes(&emu.read_for(Duration::from_millis(200)), b"", "after boot");
    emu.expect(b"\r", PROMPT);
    emu.stop();
}

#[test]
fn boot_without_banner_is_just_the_prompt() {
    let mut emu = Emu::start_with(Some("[identity]\nbanner = false\n"), &[]);
    assert_bytes(&emu.boot, PROMPT, "boot output");
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    emu.stop();
}

#[test]
fn identity_query() {
    let mut emu = Emu::start();
    emu.expect(
        b"I?\r",
        b"\r\nISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi\r\nOK\r\n> ",
    );
    // ST sends I?\r\n: the LF is ignored.
    emu.expect_ok(b"I?\r\n", I_REPLY.as_bytes());
    emu.expect(b"Z5\r", &ok("C4:7F:51:01:12:31"));
    emu.stop();
}

#[test]
fn join_and_station_status() {
    let mut emu = Emu::start();
    emu.expect(b"CS\r", &ok("0"));
    emu.expect(b"C1=lab net\r", OK);
    emu.expect(b"C2=secret123\r", OK);
    emu.expect(b"C3=3\r", OK);
    emu.expect(b"C0\r", b"\r\n[JOIN   ] lab net,127.0.0.1,0,0\r\nOK\r\n> ");
    emu.expect(
        b"C?\r",
        &ok("lab net,secret123,3,1,0,127.0.0.1,255.0.0.0,127.0.0.1,127.0.0.1,0.0.0.0,5,0,0,US,1"),
    );
    emu.expect(b"CS\r", b"\r\n1\r\nOK\r\n> ");
    emu.stop();
}

#[test]
fn dns_lookup_sets_host_ip() {
    let mut emu = Emu::start();
    join(&mut emu);
    emu.expect(b"D0=localhost\r", &ok("127.0.0.1"));
    let reply = emu.cmd(b"P?\r");
    let fields: Vec<&[u8]> = parse_r0(&reply).split(|&b| b == b',').collect();
    assert_eq!(fields.len(), 10, "P? \"{}\"", esc(&reply));
    assert_bytes(fields[3], b"127.0.0.1", "P? field 4 (HostIP)");
    assert_bytes(&reply, &ok("0,0.0.0.0,5024,127.0.0.1,5025,0,0,8,0,0"), "P?");
    emu.stop();
}

/// 1000 bytes: every byte value, the reply framing sequences, and filler.
fn tricky_payload() -> Vec<u8> {
    let mut p: Vec<u8> = (0..=255u8).collect();
    for _ in 0..3 {
        p.extend_from_slice(b"\r\n> ");
        p.extend_from_slice(b"\r\nOK\r\n> ");
        p.extend_from_slice(b"ERROR");
        p.extend_from_slice(b"\r\n-1\r\nERROR\r\n> ");
    }
    p.extend(pattern(1000 - p.len() - 4, 7));
    // Ends like a reply would, to stress the framing of the R0 carrying it.
    p.extend_from_slice(b"\r\n> ");
    assert_eq!(p.len(), 1000);
    p
}

/// Data that holds the reply envelopes themselves: no parser can tell where such an `R0` reply
/// ends (a real driver reading to `\r\nOK\r\n> ` could not either), so the server sends the echo
/// in one write (one segment on loopback: `R0` returns all of it) and the test reads exactly the
/// bytes of the whole reply.
#[test]
fn tcp_echo_of_binary_payload_with_framing_sequences() {
    let payload = tricky_payload();
    let n = payload.len();
    let server = Server::tcp(move |mut s, ctl| {
        s.set_read_timeout(Some(SECS)).unwrap();
        let mut got = vec![0u8; n];
        if s.read_exact(&mut got).is_err() || s.write_all(&got).is_err() {
            return;
        }
        // Open until the module closes.
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        while ctl.running() {
            match s.read(&mut got) {
                Ok(0) => break,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => break,
                _ => {}
            }
        }
    });
    let mut emu = Emu::start();
    join(&mut emu);
    emu.expect(b"R1=1460\r", OK);
    emu.expect(b"R2=3000\r", OK);
    emu.connect_tcp(0, server.port());
    emu.expect(&s3(&payload), &ok("1000"));
    emu.write(b"R0\r");
    let want = ok(&payload);
    assert_bytes(&emu.read_total(want.len()), &want, "R0 of the echoed data");
    // Nothing more is queued.
    emu.expect(b"R2=1\r", OK);
    emu.expect(b"R0\r", OK);
    emu.expect(b"P6=0\r", OK);
    emu.stop();
}

#[test]
fn tcp_echo_of_3000_bytes_in_several_s3_and_r0() {
    let server = Server::tcp_echo();
    let mut emu = Emu::start();
    join(&mut emu);
    emu.expect(b"R1=1460\r", OK);
    emu.expect(b"R2=300\r", OK);
    emu.connect_tcp(0, server.port());
    let payload = pattern(3000, 42);
    emu.send_chunked(&payload, 1460);
    let (back, rounds) = emu.recv_exact(payload.len(), SECS);
    assert_bytes(&back, &payload, "echoed data");
    assert!(rounds >= 3, "3000 bytes in {rounds} R0 with R1=1460");

    // Smaller R1 and S3 chunks, interleaved send/receive.
    emu.expect(b"R1=700\r", OK);
    let payload = pattern(3000, 43);
    let mut back = Vec::new();
    for part in payload.chunks(1000) {
        emu.send(part);
        back.extend(emu.recv_exact(part.len(), SECS).0);
    }
    assert_bytes(&back, &payload, "echoed data with R1=700");
    emu.stop();
}

#[test]
fn udp_echo_datagram() {
    let server = Server::udp_echo();
    let mut emu = Emu::start();
    join(&mut emu);
    emu.expect(b"R2=300\r", OK);
    emu.expect(b"P1=1\r", OK);
    emu.expect(b"P2=0\r", OK);
    emu.expect(b"P3=127.0.0.1\r", OK);
    emu.expect(format!("P4={}\r", server.port()).as_bytes(), OK);
    emu.expect(b"P6=1\r", OK);
    let datagram: Vec<u8> = [b"udp \r\n> \0\xff ".as_slice(), &pattern(200, 3)].concat();
    emu.expect(&s3(&datagram), &ok(datagram.len().to_string()));
    // One datagram per R0: the first non-empty R0 returns it whole.
    let mut got = Vec::new();
    for _ in 0..50 {
        got = parse_r0(&emu.cmd(b"R0\r")).to_vec();
        if !got.is_empty() {
            break;
        }
    }
    assert_bytes(&got, &datagram, "echoed datagram");
    // A second datagram comes back separately.
    emu.expect(&s3(b"second"), &ok("6"));
    let (back, _) = emu.recv_exact(6, SECS);
    assert_bytes(&back, b"second", "second datagram");
    emu.expect(b"P6=0\r", OK);
    emu.stop();
}

#[test]
fn refused_connect_reports_failure() {
    let port = closed_port();
    let mut emu = Emu::start();
    join(&mut emu);
    emu.expect(b"P1=0\r", OK);
    emu.expect(b"P3=127.0.0.1\r", OK);
    emu.expect(format!("P4={port}\r").as_bytes(), OK);
    emu.expect(
        b"P6=1\r",
        b"\r\n[TCP  RC] Failed to connect\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> ",
    );
    emu.expect(b"R0\r", CLOSED);
    // The module keeps answering.
    emu.expect(b"P0\r", &ok("0"));
    emu.stop();
}

#[test]
fn r0_without_data_returns_empty_ok_after_r2() {
    let server = Server::tcp_echo();
    let mut emu = Emu::start();
    join(&mut emu);
    emu.connect_tcp(0, server.port());
    emu.expect(b"R2=100\r", OK);
    emu.expect(b"R0\r", b"\r\n\r\nOK\r\n> ");
    emu.expect(b"R2=0\r", OK);
    emu.expect(b"R0\r", OK);
    emu.stop();
}

#[test]
fn r0_returns_data_then_minus_one_after_server_closes() {
    let server = Server::tcp_send_then_close(b"bye");
    let mut emu = Emu::start();
    join(&mut emu);
    emu.expect(b"R2=1000\r", OK);
    emu.connect_tcp(0, server.port());
    let (data, _) = emu.recv_exact(3, SECS);
    assert_bytes(&data, b"bye", "data before close");
    // The FIN may still be on its way: an empty OK is allowed until -1 arrives.
    let mut reply = emu.cmd(b"R0\r");
    for _ in 0..30 {
        if reply != OK {
            break;
        }
        reply = emu.cmd(b"R0\r");
    }
    assert_bytes(&reply, b"\r\n-1\r\nERROR\r\n> ", "R0 after close");
    emu.expect(b"R0\r", CLOSED);
    emu.expect(&s3(b"x"), CLOSED);
    emu.expect(b"P6=0\r", OK);
    emu.stop();
}

#[test]
fn four_sockets_at_once() {
    let servers: Vec<Server> = (0..4).map(|_| Server::tcp_echo()).collect();
    let mut emu = Emu::start();
    join(&mut emu);
    for (i, s) in servers.iter().enumerate() {
        emu.connect_tcp(i as u8, s.port());
        // R1/R2 may be per socket (spec §4): set them on each.
        emu.expect(b"R2=200\r", OK);
    }
    let mut sent: Vec<Vec<u8>> = vec![Vec::new(); 4];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); 4];
    for round in 0..4u32 {
        // Send on every socket, then read on every socket in another order.
        for (sock, sent) in sent.iter_mut().enumerate() {
            let data = [
                format!("sock{sock}-round{round}:").as_bytes(),
                &pattern(100 + 150 * sock, round * 4 + sock as u32),
            ]
            .concat();
            emu.expect(format!("P0={sock}\r").as_bytes(), OK);
            emu.send(&data);
            sent.extend_from_slice(&data);
        }
        for sock in [2usize, 0, 3, 1] {
            emu.expect(format!("P0={sock}\r").as_bytes(), OK);
            let want = sent[sock].len() - got[sock].len();
            let t0 = std::time::Instant::now();
            let (data, r) = emu.recv_exact(want, SECS);
            eprintln!("sock {sock} want {want} rounds {r} in {:?}", t0.elapsed());
            got[sock].extend(data);
        }
    }
    for sock in 0..4 {
        assert_bytes(&got[sock], &sent[sock], &format!("socket {sock} stream"));
        emu.expect(format!("P0={sock}\r").as_bytes(), OK);
        emu.expect(b"R0\r", OK);
    }
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(s.peers().len(), 1, "server {i} connections");
    }
    emu.stop();
}

/// How the log shows the module answering `CS` while joined.
const CS_ANSWER: &str = r"rsp  \r\n1\r\nOK";
/// How the log (-v) shows the driver seeing a host close the line.
const HOST_CLOSED: &str = "(Closed)";

#[test]
fn pty_close_and_reopen_preserves_state() {
    let server = Server::tcp_echo();
    let mut emu = Emu::start();
    join(&mut emu);
    emu.connect_tcp(1, server.port());
    emu.expect(b"R2=300\r", OK);
    emu.send(b"before");
    emu.reopen();
    // Still joined, socket 1 still selected and connected; the echo waited in its queue.
    emu.expect(b"CS\r", &ok("1"));
    emu.expect(b"P0\r", &ok("1"));
    let (back, _) = emu.recv_exact(6, SECS);
    assert_bytes(&back, b"before", "echo queued across reopen");
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());

    // A host that leaves without reading its reply: the next host finds a quiet line (the
    // reply was for the host that left), and the module as it was.
    // Both seen by the emulator before the next host opens: the reply made, the host gone (a pty
    // host opening while a close is still unseen could read the reply: README, "one limit").
    let (answered, closes) = (emu.log_count(CS_ANSWER), emu.log_count(HOST_CLOSED));
    emu.write(b"CS\r");
    emu.close_pty();
    emu.wait_log(CS_ANSWER, answered + 1);
    emu.wait_log(HOST_CLOSED, closes + 1);
    emu.reopen();
    assert_bytes(
        &emu.read_for(Duration::from_millis(300)),
        b"",
        "a reply for the host that left",
    );
    emu.expect(b"CS\r", &ok("1"));
    emu.send(b"after");
    let (back, _) = emu.recv_exact(5, SECS);
    assert_bytes(&back, b"after", "echo after reopen");
    for _ in 0..3 {
        emu.reopen();
        emu.expect(b"P0\r", &ok("1"));
    }
    emu.stop();
}

#[test]
fn malformed_input_gets_errors_and_module_keeps_answering() {
    let mut emu = Emu::start();
    emu.expect(b"i?\r", UNKNOWN_COMMAND);
    emu.expect(b"c0\r", UNKNOWN_COMMAND);
    emu.expect(b"P0\r", &ok("0"));
    let mut line = b"C1=".to_vec();
    line.extend(std::iter::repeat_n(b'a', 297));
    line.push(b'\r');
    assert_eq!(line.len(), 301);
    emu.expect(&line, &err0("Bad Argument", "C1", "<SSID>"));
    emu.expect(
        b"C?\r",
        &ok(",,0,1,0,0.0.0.0,0.0.0.0,0.0.0.0,255.255.255.255,255.255.255.255,5,0,0,US,0"),
    );
    emu.expect(b"S3=1461\r", &err0("Bad Argument", "S3", "<1-1460>"));
    emu.expect(b"P0=4\r", &err0("Bad Argument", "P0", "<0-3>"));
    let junk = vec![b'q'; 400];
    emu.expect(&junk, UNKNOWN_COMMAND);
    emu.expect(b"more junk\rP0\r", &ok("0"));
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    emu.expect(b"MT=1\r", OK);
    emu.expect(b"S3=1461\r", ERR1);
    emu.expect(b"P0\r", &ok("0"));
    emu.stop();
}

#[test]
fn sigterm_exits_zero_and_link_is_removed() {
    let links = TempDir::new("link");
    let link = links.path().join("eswifi-tty");
    let link_arg = link.to_str().unwrap().to_string();
    let mut emu = Emu::start_with(None, &["--link", &link_arg]);
    let target = std::fs::read_link(&link).expect("--link symlink exists while serving");
    assert_eq!(target, emu.pty_path());
    emu.expect(b"P0\r", &ok("0"));
    emu.stop();
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "{} still exists after exit",
        link.display()
    );
}

#[test]
fn sigint_exits_zero() {
    let mut emu = Emu::start();
    emu.expect(b"CS\r", &ok("0"));
    emu.signal(libc::SIGINT);
    let st = emu.wait_exit(EXIT_TIMEOUT);
    assert_eq!(st.code(), Some(0), "exit status after SIGINT: {st}");
}
