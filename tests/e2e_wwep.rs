//! End-to-end tests after the WICED WW101 chapter-6 exercises (WWEP, the WICED Wi-Fi Example
//! Protocol): the test plays the host MCU firmware on the real pty, the module talks to a WWEP server
//! on 127.0.0.1 (plain and TLS), or serves WWEP itself (`P5`) to a client the test runs.
//!
//! Exercise map: 6.1 write the LED register (`W<dev>05<state>`, dev = sum of the MAC bytes);
//! 6.2 check the `A`/`X` answer, legal and illegal packets; 6.3 the same over TLS verified against
//! the root CA programmed with `PG`; 6.4 the module as WWEP server, the host answering with
//! `R0`/`S3`, the accept announced in both event modes; 6.6 a plain and a TLS client at once;
//! 6.5 a secure WWEP server and 6.7 a plain and a secure server at once. The module's firmware
//! serves TCP and UDP only; 6.5 and 6.7 use the emulator's extension `[tls] server = true`, which
//! serves `P1=3` with the active set's certificate and key.

mod wwep;

use eswifi_test_support::harness::*;
use eswifi_test_support::tls::{pg, pki, program, program_set, tls_start, MATCH, SIMPLE_FAIL};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use wwep::*;

const SECS: Duration = Duration::from_secs(20);

/// The LED characteristic of exercise 6.1.
const LED_REG: u8 = 0x05;

/// `\r\n[TCP SVR] Accepted 127.0.0.1:<port>\r\n> ` (UART event mode).
fn accepted_event(port: u16) -> Vec<u8> {
    format!("\r\n[TCP SVR] Accepted 127.0.0.1:{port}\r\n> ").into_bytes()
}

/// The `MR` reply carrying the accept event (poll event mode).
fn accepted_mr(port: u16) -> Vec<u8> {
    ok(format!("[SOMA][TCP SVR] Accepted 127.0.0.1:{port}[EOMA]"))
}

/// `MR` with nothing queued.
fn empty_mr() -> Vec<u8> {
    ok("[SOMA][EOMA]")
}

fn joined() -> Emu {
    let mut emu = Emu::start();
    join(&mut emu);
    emu
}

/// The WW101 device number of the module: the 16-bit sum of the MAC bytes `Z5` reports.
fn device_id(emu: &mut Emu) -> u16 {
    let reply = emu.cmd(b"Z5\r");
    let mac = String::from_utf8(parse_r0(&reply).to_vec()).expect("Z5 is ASCII");
    device_id_from_mac(&mac)
}

/// Host firmware, client side: send `request` with S3 on the current socket and read the server's
/// answer with R0 until it is complete (`X`, or `A` and 10 more characters).
fn host_transact(emu: &mut Emu, request: &[u8]) -> Vec<u8> {
    emu.send(request);
    let deadline = Instant::now() + SECS;
    let mut answer = Vec::new();
    for _ in 0..200 {
        let complete = match answer.first() {
            Some(b'A') => answer.len() >= WRITE_LEN,
            Some(_) => true,
            None => false,
        };
        if complete || Instant::now() >= deadline {
            break;
        }
        let reply = emu.cmd(b"R0\r");
        match r0_payload(&reply) {
            Some(d) => answer.extend_from_slice(d),
            None => emu.fail(&format!(
                "R0 for the answer to \"{}\" answered \"{}\"",
                esc(request),
                esc(&reply)
            )),
        }
    }
    answer
}

/// Exercise 6.2: what the host firmware concludes from an answer.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// `A` echoing the request (for a read: with this value).
    Accepted(u16),
    Failed,
}

fn check_answer(request: &[u8], answer: &[u8]) -> Outcome {
    if answer == FAILED {
        return Outcome::Failed;
    }
    assert_eq!(
        answer.first(),
        Some(&b'A'),
        "answer \"{}\" to \"{}\"",
        esc(answer),
        esc(request)
    );
    assert_eq!(answer.len(), WRITE_LEN, "answer \"{}\"", esc(answer));
    assert_bytes(
        &answer[1..request.len()],
        &request[1..],
        "echoed request fields",
    );
    let value = u16::from_str_radix(std::str::from_utf8(&answer[7..]).unwrap(), 16)
        .unwrap_or_else(|e| panic!("answer \"{}\": {e}", esc(answer)));
    Outcome::Accepted(value)
}

// ---- the protocol engine itself ---------------------------------------------------------------------

#[test]
fn wwep_engine_answers_like_the_ww101_examples() {
    let mut r = Registers::new();
    assert_bytes(&r.answer(b"W0FAC0B1234"), b"A0FAC0B1234", "write");
    assert_bytes(&r.answer(b"W01234"), b"X", "illegal packet");
    assert_bytes(&r.answer(b"R0FAC0B"), b"A0FAC0B1234", "read back");
    assert_bytes(&r.answer(b"R0BAC0B"), b"X", "device never written");
    assert_bytes(&r.answer(b"R0FAC0C"), b"X", "register never written");
    assert_bytes(&r.answer(b"W0FAC0G1234"), b"X", "not hex");
    assert_bytes(&r.answer(b"Q0FAC0B"), b"X", "unknown command");
    // Devices have separate register sets.
    assert_bytes(&r.answer(b"WABCD0B0001"), b"AABCD0B0001", "other device");
    assert_bytes(
        &r.answer(b"R0FAC0B"),
        b"A0FAC0B1234",
        "first device unchanged",
    );
    assert_eq!(r.get(0xABCD, 0x0B), Some(1));
    assert_eq!(device_id_from_mac("C4:7F:51:01:12:31"), 0x01D8);

    let t0 = Instant::now();
    let mut f = Framer::default();
    f.push(b"W0FAC0B1234R0FAC0B\r\nW01", t0);
    assert_eq!(f.next(t0, false).as_deref(), Some(&b"W0FAC0B1234"[..]));
    assert_eq!(f.next(t0, false).as_deref(), Some(&b"R0FAC0B"[..]));
    assert_eq!(f.next(t0, false), None, "partial packet waits");
    f.push(b"234\n", t0);
    assert_eq!(f.next(t0, false).as_deref(), Some(&b"W01234"[..]));
    f.push(b"W01234", t0);
    assert_eq!(
        f.next(t0 + IDLE_END, false).as_deref(),
        Some(&b"W01234"[..]),
        "a partial packet ends when the line goes idle"
    );
    assert_eq!(f.next(t0 + IDLE_END, true), None);
}

// ---- 6.1 / 6.2: the module as a plain WWEP client ------------------------------------------------------

#[test]
fn ex6_1_and_6_2_led_register_written_and_answers_checked() {
    let server = WwepServer::start();
    let mut emu = joined();
    let dev = device_id(&mut emu);
    assert_eq!(dev, 0x01D8, "sum of C4:7F:51:01:12:31");

    // 6.1: four button presses toggle the LED; each opens a socket, writes, reads the answer, closes.
    let mut led = 0u16;
    for press in 0..4 {
        led ^= 1;
        emu.connect_tcp(0, server.plain_port());
        emu.expect(b"R2=2000\r", OK);
        let req = write_req(dev, LED_REG, led);
        assert_bytes(&req, format!("W01D805000{led}").as_bytes(), "request");
        let answer = host_transact(&mut emu, &req);
        assert_bytes(&answer, &accepted(dev, LED_REG, led), "answer to the write");
        assert_eq!(
            check_answer(&req, &answer),
            Outcome::Accepted(led),
            "press {press}"
        );
        emu.expect(b"P6=0\r", OK);
        assert_eq!(server.register(dev, LED_REG), Some(led), "press {press}");
    }

    // 6.2 on one connection: a legal read back, an illegal packet, a read of an unwritten register,
    // a read of a device never written, then a legal write again.
    emu.connect_tcp(0, server.plain_port());
    emu.expect(b"R2=2000\r", OK);
    let cases: Vec<(Vec<u8>, Vec<u8>, Outcome)> = vec![
        (
            read_req(dev, LED_REG),
            accepted(dev, LED_REG, led),
            Outcome::Accepted(led),
        ),
        (b"W01234".to_vec(), b"X".to_vec(), Outcome::Failed),
        (read_req(dev, 0x06), b"X".to_vec(), Outcome::Failed),
        (b"R0BAC0B".to_vec(), b"X".to_vec(), Outcome::Failed),
        (
            write_req(dev, 0x06, 0xBEEF),
            accepted(dev, 0x06, 0xBEEF),
            Outcome::Accepted(0xBEEF),
        ),
        (
            read_req(dev, 0x06),
            accepted(dev, 0x06, 0xBEEF),
            Outcome::Accepted(0xBEEF),
        ),
    ];
    for (req, want, outcome) in &cases {
        let answer = host_transact(&mut emu, req);
        assert_bytes(&answer, want, &format!("answer to \"{}\"", esc(req)));
        assert_eq!(&check_answer(req, &answer), outcome);
    }
    // Nothing more came.
    emu.expect(b"R2=0\r", OK);
    emu.expect(b"R0\r", OK);
    emu.expect(b"P6=0\r", OK);

    // The server's console: every transaction, in order, all plain.
    let log = server.wait_log(SECS, |l| l.transactions.len() >= 4 + cases.len());
    let seen: Vec<(Vec<u8>, Vec<u8>)> = log
        .transactions
        .iter()
        .map(|t| (t.request.clone(), t.reply.clone()))
        .collect();
    let mut want: Vec<(Vec<u8>, Vec<u8>)> = [1u16, 0, 1, 0]
        .iter()
        .map(|&v| (write_req(dev, LED_REG, v), accepted(dev, LED_REG, v)))
        .collect();
    want.extend(cases.iter().map(|(r, a, _)| (r.clone(), a.clone())));
    assert_eq!(seen, want, "server transactions");
    assert!(log.transactions.iter().all(|t| !t.secure));
    assert_eq!(
        log.plain_connections, 5,
        "one connection per press, one more"
    );
    assert!(log.errors.is_empty(), "server errors: {:?}", log.errors);
    emu.stop();
}

// ---- 6.3: the same over TLS ---------------------------------------------------------------------------

#[test]
fn ex6_3_wwep_over_tls_verified_against_the_programmed_root_ca() {
    let server = WwepServer::start();
    let pki = pki();
    let mut emu = joined();
    let dev = device_id(&mut emu);

    // Set 1 holds the WWEP root CA, set 2 an unrelated one.
    emu.expect(b"PF=0,2\r", OK);
    program(&mut emu, 2, 0, pki.other_ca.cert_pem.as_bytes());
    emu.expect(b"PF=0,1\r", OK);
    program(&mut emu, 1, 0, server.ca_pem().as_bytes());
    // The vendor's way to verify a set: programming the same bytes again matches.
    assert_bytes(
        &pg(&mut emu, 1, 0, server.ca_pem().as_bytes()),
        MATCH,
        "PG of the same root CA again",
    );
    emu.expect(b"PE=1\r", &ok("0,1,1"));

    // Verified against the wrong root: the handshake fails and nothing is sent.
    emu.expect(b"PF=0,2\r", OK);
    assert_bytes(
        &tls_start(&mut emu, 0, server.tls_port(), 1),
        SIMPLE_FAIL,
        "P6=1 with an unrelated root CA",
    );
    emu.expect(b"R0\r", CLOSED);

    // Verified against the right root.
    emu.expect(b"PF=0,1\r", OK);
    assert_bytes(
        &tls_start(&mut emu, 0, server.tls_port(), 1),
        OK,
        "P6=1 (TLS)",
    );
    emu.expect(b"R2=3000\r", OK);
    let steps: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (write_req(dev, LED_REG, 1), accepted(dev, LED_REG, 1)),
        (read_req(dev, LED_REG), accepted(dev, LED_REG, 1)),
        (b"W01234".to_vec(), b"X".to_vec()),
        (read_req(dev, 0x77), b"X".to_vec()),
        (write_req(dev, LED_REG, 0), accepted(dev, LED_REG, 0)),
        (read_req(dev, LED_REG), accepted(dev, LED_REG, 0)),
    ];
    for (req, want) in &steps {
        let answer = host_transact(&mut emu, req);
        assert_bytes(&answer, want, &format!("TLS answer to \"{}\"", esc(req)));
    }
    emu.expect(b"P6=0\r", OK);
    assert_eq!(server.register(dev, LED_REG), Some(0));

    let log = server.wait_log(SECS, |l| l.transactions.len() >= steps.len());
    let seen: Vec<(Vec<u8>, Vec<u8>)> = log
        .transactions
        .iter()
        .map(|t| (t.request.clone(), t.reply.clone()))
        .collect();
    assert_eq!(seen, steps, "server transactions");
    assert!(log.transactions.iter().all(|t| t.secure), "all over TLS");
    assert_eq!(log.plain_connections, 0);
    let tls = server.wait_tls_log(SECS, |l| !l.errors.is_empty() && !l.sessions.is_empty());
    assert_eq!(tls.accepted, 2, "TLS port connections: {tls:?}");
    assert_eq!(
        tls.sessions.len(),
        1,
        "only the verified handshake completed: {tls:?}"
    );
    assert_eq!(
        tls.errors.len(),
        1,
        "the rejected handshake, as the server saw it: {tls:?}"
    );
    emu.stop();
}

// ---- 6.4: the module as WWEP server ----------------------------------------------------------------------

/// Host firmware, server side: R0 the next request from the current client (one R0 chunk is one
/// packet: the client waits for each answer), answer it from `regs` with S3. Returns the request.
fn host_serve_one(emu: &mut Emu, regs: &mut Registers) -> Vec<u8> {
    let mut request = Vec::new();
    for _ in 0..20 {
        let reply = emu.cmd(b"R0\r");
        match r0_payload(&reply) {
            Some(d) if !d.is_empty() => {
                request = d.to_vec();
                break;
            }
            Some(_) => {}
            None => emu.fail(&format!("R0 for a request answered \"{}\"", esc(&reply))),
        }
    }
    assert!(!request.is_empty(), "no request arrived");
    let answer = regs.answer(&request);
    emu.send(&answer);
    request
}

/// Start a TCP server on socket 0 at `port`, backlog 2; asserts the replies.
fn start_wwep_server(emu: &mut Emu, port: u16) {
    emu.expect(b"P0=0\r", OK);
    emu.expect(b"P1=0\r", OK);
    emu.expect(format!("P2={port}\r").as_bytes(), OK);
    emu.expect(b"P8=2\r", OK);
    emu.expect(b"P5=1\r", OK);
    emu.expect(b"R2=3000\r", OK);
    emu.expect(
        b"P?\r",
        &ok(format!("0,0.0.0.0,{port},0.0.0.0,5025,1,0,2,0,0")),
    );
}

/// Client requests and the answers the host firmware must produce, for device `dev`.
fn server_session(dev: u16) -> Vec<(Vec<u8>, Vec<u8>)> {
    vec![
        (write_req(dev, 0x0B, 0x1234), accepted(dev, 0x0B, 0x1234)),
        (read_req(dev, 0x0B), accepted(dev, 0x0B, 0x1234)),
        (b"W01234".to_vec(), b"X".to_vec()),
        (b"R0BAC0B".to_vec(), b"X".to_vec()),
        (b"w0FAC0B1234".to_vec(), b"X".to_vec()),
        (
            write_req(0x0FAC, 0x0B, 0xFFFF),
            accepted(0x0FAC, 0x0B, 0xFFFF),
        ),
        (read_req(dev, 0x0B), accepted(dev, 0x0B, 0x1234)),
    ]
}

/// Run `session` from `client` against the host firmware on the pty.
fn run_session(
    emu: &mut Emu,
    regs: &mut Registers,
    client: &mut WwepClient,
    session: &[(Vec<u8>, Vec<u8>)],
) {
    for (req, want) in session {
        client.send(req);
        let got_req = host_serve_one(emu, regs);
        assert_bytes(&got_req, req, "request as the host read it");
        let answer = client.answer_to(req);
        assert_bytes(&answer, want, &format!("answer to \"{}\"", esc(req)));
    }
}

/// After the client left: R0 gives -1 (once the FIN is in), then the server keeps listening.
fn expect_client_gone(emu: &mut Emu) {
    let mut reply = emu.cmd(b"R0\r");
    for _ in 0..10 {
        if reply != OK {
            break;
        }
        reply = emu.cmd(b"R0\r");
    }
    assert_bytes(&reply, CLOSED, "R0 after the client closed");
}

#[test]
fn ex6_4_module_as_wwep_server_uart_events() {
    let port = closed_port();
    let mut emu = joined();
    let dev = device_id(&mut emu);
    start_wwep_server(&mut emu, port);
    let mut regs = Registers::new();

    let mut client = WwepClient::connect(port);
    // Unsolicited, between replies: the host is idle, so it comes at once.
    assert_bytes(
        &emu.read_until_prompt(SECS),
        &accepted_event(port),
        "accept event",
    );
    emu.expect(
        b"P?\r",
        &ok(format!(
            "0,127.0.0.1,{port},0.0.0.0,{},1,0,2,0,0",
            client.local_port()
        )),
    );
    run_session(&mut emu, &mut regs, &mut client, &server_session(dev));
    drop(client);
    expect_client_gone(&mut emu);

    // The next client is announced the same way; the host's registers persist.
    let mut client = WwepClient::connect(port);
    assert_bytes(
        &emu.read_until_prompt(SECS),
        &accepted_event(port),
        "second accept event",
    );
    run_session(
        &mut emu,
        &mut regs,
        &mut client,
        &[
            (read_req(dev, 0x0B), accepted(dev, 0x0B, 0x1234)),
            (read_req(0x0FAC, 0x0B), accepted(0x0FAC, 0x0B, 0xFFFF)),
        ],
    );
    assert_eq!(regs.get(dev, 0x0B), Some(0x1234));
    emu.expect(b"P5=0\r", OK);
    // The server is gone: the client's connection ends and nobody listens any more.
    let mut buf = [0u8; 8];
    let n = client.stream.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "client connection after P5=0");
    // The listener closes right after the client (same batch of operations); allow it a moment.
    let refused = (0..100).any(|_| {
        let r = TcpStream::connect(("127.0.0.1", port)).is_err();
        if !r {
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    });
    assert!(refused, "port {port} still accepts after P5=0");
    assert_bytes(
        &emu.read_for(Duration::from_millis(200)),
        b"",
        "no more events",
    );
    emu.stop();
}

#[test]
fn ex6_4_module_as_wwep_server_poll_events() {
    let port = closed_port();
    let mut emu = Emu::start_with(None, &["--events", "poll"]);
    join(&mut emu);
    let dev = device_id(&mut emu);
    start_wwep_server(&mut emu, port);
    emu.expect(b"MR\r", &empty_mr());
    let mut regs = Registers::new();

    for round in 0..2 {
        let mut client = WwepClient::connect(port);
        // Nothing unsolicited in poll mode: MR fetches the event once the accept happened.
        let mut reply = emu.cmd(b"MR\r");
        for _ in 0..200 {
            if reply != empty_mr() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            reply = emu.cmd(b"MR\r");
        }
        assert_bytes(&reply, &accepted_mr(port), &format!("MR, client {round}"));
        emu.expect(b"MR\r", &empty_mr());
        emu.expect(
            b"P?\r",
            &ok(format!(
                "0,127.0.0.1,{port},0.0.0.0,{},1,0,2,0,0",
                client.local_port()
            )),
        );
        let session = if round == 0 {
            server_session(dev)
        } else {
            vec![(read_req(dev, 0x0B), accepted(dev, 0x0B, 0x1234))]
        };
        run_session(&mut emu, &mut regs, &mut client, &session);
        drop(client);
        expect_client_gone(&mut emu);
        emu.expect(b"MR\r", &empty_mr());
    }
    emu.expect(b"P5=0\r", OK);
    assert_bytes(
        &emu.read_for(Duration::from_millis(200)),
        b"",
        "nothing unsolicited",
    );
    emu.stop();
}

// ---- 6.6: a plain and a secure client at once ------------------------------------------------------------

#[test]
fn ex6_6_dual_plain_and_tls_clients_interleaved() {
    let server = WwepServer::start();
    let mut emu = joined();
    let dev = device_id(&mut emu);
    program(&mut emu, 0, 0, server.ca_pem().as_bytes());

    // Button 0: socket 0, plain. Button 1: socket 1, TLS. Both stay open.
    emu.connect_tcp(0, server.plain_port());
    emu.expect(b"R2=3000\r", OK);
    assert_bytes(
        &tls_start(&mut emu, 1, server.tls_port(), 1),
        OK,
        "P6=1 (TLS)",
    );
    emu.expect(b"R2=3000\r", OK);

    let mut want_log: Vec<(bool, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut run = |emu: &mut Emu, sock: u8, req: Vec<u8>, want: Vec<u8>| {
        emu.expect(format!("P0={sock}\r").as_bytes(), OK);
        let answer = host_transact(emu, &req);
        assert_bytes(
            &answer,
            &want,
            &format!("socket {sock}: answer to \"{}\"", esc(&req)),
        );
        want_log.push((sock == 1, req, want));
    };
    for i in 0..6u8 {
        let (a, b) = (0x20 + i, 0x40 + i);
        let (va, vb) = (0x1000 + i as u16, 0xB000 + i as u16);
        // Written in the clear, read back securely, and the other way round.
        run(&mut emu, 0, write_req(dev, a, va), accepted(dev, a, va));
        run(&mut emu, 1, write_req(dev, b, vb), accepted(dev, b, vb));
        run(&mut emu, 1, read_req(dev, a), accepted(dev, a, va));
        run(&mut emu, 0, read_req(dev, b), accepted(dev, b, vb));
        if i % 2 == 0 {
            run(&mut emu, 1, b"W01234".to_vec(), b"X".to_vec());
            run(&mut emu, 0, read_req(dev, 0x80 + i), b"X".to_vec());
        } else {
            run(&mut emu, 0, b"W01234".to_vec(), b"X".to_vec());
            run(&mut emu, 1, read_req(dev, 0x80 + i), b"X".to_vec());
        }
    }
    for sock in [0u8, 1] {
        emu.expect(format!("P0={sock}\r").as_bytes(), OK);
        emu.expect(b"R2=0\r", OK);
        emu.expect(b"R0\r", OK);
        emu.expect(b"P6=0\r", OK);
    }
    let log = server.wait_log(SECS, |l| l.transactions.len() >= want_log.len());
    let seen: Vec<(bool, Vec<u8>, Vec<u8>)> = log
        .transactions
        .iter()
        .map(|t| (t.secure, t.request.clone(), t.reply.clone()))
        .collect();
    assert_eq!(
        seen, want_log,
        "server transactions (secure, request, answer)"
    );
    assert_eq!(log.plain_connections, 1);
    assert!(log.errors.is_empty(), "server errors: {:?}", log.errors);
    let tls = server.tls_log();
    assert_eq!(tls.sessions.len(), 1, "TLS sessions: {tls:?}");
    assert!(tls.errors.is_empty(), "TLS server errors: {tls:?}");
    emu.stop();
}

// ---- 6.5 / 6.7: the module as a secure WWEP server (extension: [tls] server) -----------------------

/// A joined module that serves TLS, with set 0 holding the test PKI's server identity and root CA.
fn secure_server_module() -> Emu {
    let pki = pki();
    let mut emu = Emu::start_with(Some("[tls]\nserver = true\n"), &[]);
    join(&mut emu);
    program_set(
        &mut emu,
        0,
        Some(pki.ca.cert_pem.as_bytes()),
        Some(pki.server.cert_pem.as_bytes()),
        Some(pki.server.key_pem.as_bytes()),
    );
    emu
}

/// Start a server of protocol `proto` (0 TCP, 3 TLS) on socket `sock` at `port`, verification
/// `p9`, backlog 2; asserts the replies and `P?`.
fn start_server(emu: &mut Emu, sock: u8, proto: u8, port: u16, p9: u8) {
    for c in [
        format!("P0={sock}\r"),
        format!("P1={proto}\r"),
        format!("P2={port}\r"),
        "P8=2\r".into(),
        format!("P9={p9}\r"),
        "P5=1\r".into(),
        "R2=3000\r".into(),
    ] {
        emu.expect(c.as_bytes(), OK);
    }
    emu.expect(
        b"P?\r",
        &ok(format!("{proto},0.0.0.0,{port},0.0.0.0,5025,1,0,2,0,0")),
    );
}

/// A TLS client that the server refused: it learns so (an alert, or the connection ends) instead
/// of an answer, and without waiting for its read timeout.
fn refused(client: std::io::Result<WwepClient>, what: &str) {
    let Ok(mut c) = client else {
        return; // refused during the handshake (TLS 1.2)
    };
    let _ = c.stream.write_all(b"R0BAC0B");
    let mut b = [0u8; 1];
    match c.stream.read(&mut b) {
        Ok(0) => {}
        Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{what}: read {other:?} from a server that should refuse the client"),
    }
}

#[test]
fn ex6_5_secure_wwep_server_requires_a_client_certificate() {
    let pki = pki();
    let port = closed_port();
    let mut emu = secure_server_module();
    let dev = device_id(&mut emu);
    start_server(&mut emu, 0, 3, port, 2);
    let mut regs = Registers::new();

    // Without a certificate, and with one from another CA: refused, and the host hears nothing.
    refused(
        WwepClient::connect_tls(port, &pki.ca.cert_pem, None),
        "no client certificate",
    );
    refused(
        WwepClient::connect_tls(port, &pki.ca.cert_pem, Some(&pki.other_client)),
        "client certificate of another CA",
    );
    assert_bytes(
        &emu.read_for(Duration::from_millis(300)),
        b"",
        "refused clients are not announced",
    );

    // With the right certificate: announced once the handshake is done, then served in the clear.
    for round in 0..2 {
        let mut client = WwepClient::connect_tls(port, &pki.ca.cert_pem, Some(&pki.client))
            .expect("TLS handshake with a client certificate");
        assert_bytes(
            &emu.read_until_prompt(SECS),
            &accepted_event(port),
            &format!("accept event, client {round}"),
        );
        emu.expect(
            b"P?\r",
            &ok(format!(
                "3,127.0.0.1,{port},0.0.0.0,{},1,0,2,0,0",
                client.local_port()
            )),
        );
        let session = if round == 0 {
            server_session(dev)
        } else {
            vec![(read_req(dev, 0x0B), accepted(dev, 0x0B, 0x1234))]
        };
        run_session(&mut emu, &mut regs, &mut client, &session);
        drop(client);
        expect_client_gone(&mut emu);
    }
    assert_eq!(regs.get(dev, 0x0B), Some(0x1234));
    emu.expect(b"P5=0\r", OK);
    emu.stop();
}

#[test]
fn ex6_7_dual_plain_and_secure_wwep_servers() {
    let pki = pki();
    let plain_port = closed_port();
    let tls_port = (0..20)
        .map(|_| closed_port())
        .find(|&p| p != plain_port)
        .expect("a second free port");
    let mut emu = secure_server_module();
    let dev = device_id(&mut emu);
    start_server(&mut emu, 0, 0, plain_port, 0);
    start_server(&mut emu, 1, 3, tls_port, 0);
    let mut regs = Registers::new();

    let mut plain = WwepClient::connect(plain_port);
    assert_bytes(
        &emu.read_until_prompt(SECS),
        &accepted_event(plain_port),
        "plain accept",
    );
    let mut secure = WwepClient::connect_tls(tls_port, &pki.ca.cert_pem, None)
        .expect("TLS handshake without a client certificate (P9=0)");
    assert_bytes(
        &emu.read_until_prompt(SECS),
        &accepted_event(tls_port),
        "secure accept",
    );
    // The host serves both from one register database: written in the clear, read securely, and
    // the other way round.
    let mut serve =
        |emu: &mut Emu, sock: u8, client: &mut WwepClient, req: Vec<u8>, want: Vec<u8>| {
            client.send(&req);
            emu.expect(format!("P0={sock}\r").as_bytes(), OK);
            let got = host_serve_one(emu, &mut regs);
            assert_bytes(&got, &req, &format!("socket {sock}: request"));
            assert_bytes(
                &client.answer_to(&req),
                &want,
                &format!("socket {sock}: answer"),
            );
        };
    for i in 0..4u8 {
        let (a, b) = (0x30 + i, 0x50 + i);
        let (va, vb) = (0x2000 + i as u16, 0xC000 + i as u16);
        serve(
            &mut emu,
            0,
            &mut plain,
            write_req(dev, a, va),
            accepted(dev, a, va),
        );
        serve(
            &mut emu,
            1,
            &mut secure,
            write_req(dev, b, vb),
            accepted(dev, b, vb),
        );
        serve(
            &mut emu,
            1,
            &mut secure,
            read_req(dev, a),
            accepted(dev, a, va),
        );
        serve(
            &mut emu,
            0,
            &mut plain,
            read_req(dev, b),
            accepted(dev, b, vb),
        );
        serve(
            &mut emu,
            1 - i % 2,
            if i % 2 == 0 { &mut secure } else { &mut plain },
            b"W01234".to_vec(),
            b"X".to_vec(),
        );
    }
    emu.expect(b"P0=0\r", OK);
    emu.expect_ok(
        b"P?\r",
        format!(
            "0,127.0.0.1,{plain_port},0.0.0.0,{},1,0,2,0,0",
            plain.local_port()
        )
        .as_bytes(),
    );
    emu.expect(b"P0=1\r", OK);
    emu.expect_ok(
        b"P?\r",
        format!(
            "3,127.0.0.1,{tls_port},0.0.0.0,{},1,0,2,0,0",
            secure.local_port()
        )
        .as_bytes(),
    );
    drop(secure);
    expect_client_gone(&mut emu);
    emu.expect(b"P0=0\r", OK);
    drop(plain);
    expect_client_gone(&mut emu);
    for sock in [0u8, 1] {
        emu.expect(format!("P0={sock}\r").as_bytes(), OK);
        emu.expect(b"P5=0\r", OK);
    }
    emu.stop();
}
