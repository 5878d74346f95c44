//! Secure WebSockets through the emulated module, as in the ESP8266 article (a pinned root CA,
//! `wss://`): the test plays the host MCU, which runs the WebSocket client itself over a TLS socket
//! (`P1=3`, `P9=1`) — the HTTP/1.1 Upgrade goes out with `S3`, the 101 and the frames come back with
//! `R0` — against a loopback wss echo server (rustls + a minimal RFC 6455 server) the test starts.

use eswifi_test_support::harness::*;
use eswifi_test_support::tls::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(30);

/// The key and accept value of the article's secure run (Sec-WebSocket-Key / -Accept).
const ARTICLE_KEY: &str = "tawLOtLL9KAplr+Y67mjcQ==";
const ARTICLE_ACCEPT: &str = "avZJ3xQqsxynXMlG+8FLvVAsWGs=";

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2).
fn ws_accept(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(ctx.finish().as_ref())
}

#[test]
fn websocket_accept_and_base64_known_values() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    // RFC 6455's example and the two handshakes in the article.
    assert_eq!(
        ws_accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(ws_accept(ARTICLE_KEY), ARTICLE_ACCEPT);
    assert_eq!(
        ws_accept("v8umjt63l/fKbljxLZqtOw=="),
        "lJ/edyvQ6g6zrdp3L3YKcwUU+8k="
    );
}

/// One frame as a server sends it (unmasked).
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// One frame as a client must send it (masked).
fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = server_frame(opcode, &[]);
    f.truncate(1);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend(mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// What the wss server received: (opcode, unmasked payload) per frame, and protocol violations.
#[derive(Default, Debug)]
struct WsLog {
    request: Vec<u8>,
    frames: Vec<(u8, Vec<u8>)>,
    violations: Vec<String>,
}

/// A minimal RFC 6455 echo server behind TLS: one Upgrade, then text/binary echo, ping → pong,
/// close → close + close_notify.
struct WsEcho {
    upgraded: bool,
    buf: Vec<u8>,
    log: Arc<Mutex<WsLog>>,
}

impl WsEcho {
    fn handshake(&mut self) -> Action {
        let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Action::default();
        };
        let req: Vec<u8> = self.buf.drain(..end + 4).collect();
        let text = String::from_utf8_lossy(&req).into_owned();
        self.log.lock().unwrap().request = req;
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let header = |name: &str| -> Option<String> {
            text.split("\r\n").skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let ok = request_line == "GET / HTTP/1.1"
            && header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
            && header("Connection").is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
            && header("Sec-WebSocket-Version").as_deref() == Some("13")
            && header("Host").is_some();
        let key = header("Sec-WebSocket-Key");
        match (ok, key) {
            (true, Some(key)) => {
                self.upgraded = true;
                let mut resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
                    ws_accept(&key)
                );
                if let Some(p) = header("Sec-WebSocket-Protocol") {
                    let first = p.split(',').next().unwrap_or_default().trim().to_string();
                    resp.push_str(&format!("Sec-WebSocket-Protocol: {first}\r\n"));
                }
                resp.push_str("\r\n");
                let mut a = Action::send(resp.into_bytes());
                // Frames may have come with the request.
                let more = self.frames();
                a.send.extend(more.send);
                a.close |= more.close;
                a
            }
            _ => {
                self.log
                    .lock()
                    .unwrap()
                    .violations
                    .push(format!("bad upgrade request: {text:?}"));
                Action::send_and_close(
                    &b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"[..],
                )
            }
        }
    }

    /// Parse every complete frame in the buffer.
    fn frames(&mut self) -> Action {
        let mut out = Action::default();
        loop {
            let b = &self.buf;
            if b.len() < 2 {
                return out;
            }
            let (fin, opcode, masked) = (b[0] & 0x80 != 0, b[0] & 0x0f, b[1] & 0x80 != 0);
            let (len, mut at) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => return out,
                n => (n as usize, 2),
            };
            let mask = if masked {
                if b.len() < at + 4 {
                    return out;
                }
                at += 4;
                Some([b[at - 4], b[at - 3], b[at - 2], b[at - 1]])
            } else {
                None
            };
            if b.len() < at + len {
                return out;
            }
            let payload: Vec<u8> = b[at..at + len]
                .iter()
                .enumerate()
                .map(|(i, &x)| mask.map_or(x, |m| x ^ m[i % 4]))
                .collect();
            self.buf.drain(..at + len);
            let mut log = self.log.lock().unwrap();
            if mask.is_none() {
                log.violations.push("unmasked client frame".into());
            }
            if !fin {
                log.violations.push("fragmented frame".into());
            }
            log.frames.push((opcode, payload.clone()));
            drop(log);
            match opcode {
                1 | 2 => out.send.extend(server_frame(opcode, &payload)),
                9 => out.send.extend(server_frame(10, &payload)),
                8 => {
                    out.send.extend(server_frame(8, &payload));
                    out.close = true;
                    return out;
                }
                _ => {}
            }
        }
    }
}

impl App for WsEcho {
    fn on_data(&mut self, data: &[u8]) -> Action {
        self.buf.extend_from_slice(data);
        if self.upgraded {
            self.frames()
        } else {
            self.handshake()
        }
    }
}

/// R0 until `want` bytes came back or the reply holds the end of the HTTP header; bounded.
fn read_http_header(emu: &mut Emu) -> Vec<u8> {
    let deadline = Instant::now() + SECS;
    let mut got = Vec::new();
    for _ in 0..200 {
        if got.windows(4).any(|w| w == b"\r\n\r\n") || Instant::now() > deadline {
            break;
        }
        let reply = emu.cmd(b"R0\r");
        got.extend_from_slice(parse_r0(&reply));
    }
    got
}

#[test]
fn secure_websocket_echo_with_pinned_root_ca() {
    let pki = pki();
    let log = Arc::new(Mutex::new(WsLog::default()));
    let server = {
        let log = log.clone();
        TlsServer::start(
            server_config(&pki.server, None, Versions::Both),
            move || {
                Box::new(WsEcho {
                    upgraded: false,
                    buf: Vec::new(),
                    log: log.clone(),
                })
            },
        )
    };
    let port = server.port();
    let mut emu = Emu::start();
    join(&mut emu);

    // The pinned root CA (the article's ENDPOINT_CA_CERT), programmed once into set 0.
    emu.expect(b"PF=0,0\r", OK);
    program(&mut emu, 0, 0, pki.ca.cert_pem.as_bytes());
    emu.expect(b"PE=0\r", &pe("0,1,1"));

    // beginSslWithCA("localhost", port, "/", CA): resolve, TLS with root-CA verification.
    emu.expect(b"P0=0\r", OK);
    emu.expect(b"P1=3\r", OK);
    emu.expect(b"D0=localhost\r", &ok("127.0.0.1"));
    emu.expect(format!("P4={port}\r").as_bytes(), OK);
    emu.expect(b"P9=1\r", OK);
    emu.expect(b"P6=1\r", OK);
    emu.expect(b"R1=1460\r", OK);
    emu.expect(b"R2=300\r", OK);

    // The client's handshake, header for header as in the article's log.
    let request = format!(
        "GET / HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {ARTICLE_KEY}\r\nSec-WebSocket-Protocol: arduino\r\nOrigin: file://\r\nUser-Agent: arduino-WebSocket-Client\r\n\r\n"
    );
    emu.send(request.as_bytes());
    let header = read_http_header(&mut emu);
    let text = String::from_utf8_lossy(&header).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 101 "),
        "upgrade response: {text:?}"
    );
    assert!(
        text.ends_with("\r\n\r\n"),
        "nothing after the header yet: {text:?}"
    );
    let accept = text
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Accept: "))
        .unwrap_or_else(|| panic!("no Sec-WebSocket-Accept in {text:?}"));
    assert_eq!(accept, ws_accept(ARTICLE_KEY), "Sec-WebSocket-Accept");
    assert_eq!(accept, ARTICLE_ACCEPT, "the article's accept value");
    assert!(
        text.contains("\r\nSec-WebSocket-Protocol: arduino\r\n"),
        "{text:?}"
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("\r\nupgrade: websocket\r\n"),
        "{text:?}"
    );

    // webSocket.sendTXT("Hi there!\n"): one masked text frame of 16 bytes.
    let hi = client_frame(1, b"Hi there!\n", [0x37, 0xfa, 0x21, 0x3d]);
    assert_eq!(hi.len(), 16);
    emu.send(&hi);
    let (back, _) = emu.recv_exact(12, SECS);
    assert_bytes(
        &back,
        b"\x81\x0aHi there!\n",
        "echoed text frame (unmasked)",
    );

    // A binary frame larger than one S3 (16-bit length), split over two S3 like a driver would.
    let blob: Vec<u8> = (0..=255u8).cycle().take(2000).collect();
    let frame = client_frame(2, &blob, [0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(frame.len(), 2 + 2 + 4 + 2000);
    emu.send_chunked(&frame, 1460);
    let (back, _) = emu.recv_exact(4 + 2000, SECS);
    assert_bytes(&back, &server_frame(2, &blob), "echoed binary frame");

    // A ping is answered with a pong.
    emu.send(&client_frame(9, b"ping?", [1, 2, 3, 4]));
    let (back, _) = emu.recv_exact(7, SECS);
    assert_bytes(&back, b"\x8a\x05ping?", "pong");

    // Close handshake: status 1000; the server answers and ends TLS with close_notify.
    emu.send(&client_frame(8, &1000u16.to_be_bytes(), [9, 8, 7, 6]));
    let (back, _) = emu.recv_exact(4, SECS);
    assert_bytes(&back, b"\x88\x02\x03\xe8", "close frame");
    assert_bytes(
        &r0_until_not_empty(&mut emu, 30),
        CLOSED,
        "R0 after the server closed",
    );
    emu.expect(b"P6=0\r", OK);

    let ws = log.lock().unwrap();
    assert_bytes(
        &ws.request,
        request.as_bytes(),
        "request as the server got it",
    );
    assert_eq!(ws.violations, Vec::<String>::new(), "protocol violations");
    let frames: Vec<(u8, &[u8])> = ws.frames.iter().map(|(o, p)| (*o, p.as_slice())).collect();
    assert_eq!(
        frames,
        vec![
            (1, b"Hi there!\n".as_slice()),
            (2, blob.as_slice()),
            (9, b"ping?".as_slice()),
            (8, b"\x03\xe8".as_slice()),
        ],
        "frames the server received"
    );
    let sessions = server.log().sessions;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].sni.as_deref(), Some("localhost"), "SNI from D0");
    drop(ws);
    emu.stop();
}

#[test]
fn secure_websocket_refused_when_the_pinned_ca_does_not_match() {
    let pki = pki();
    // A server whose certificate the pinned CA did not sign (the article's "not the correct server").
    let server = TlsServer::start(
        server_config(&pki.self_signed, None, Versions::Both),
        || {
            Box::new(WsEcho {
                upgraded: false,
                buf: Vec::new(),
                log: Arc::new(Mutex::new(WsLog::default())),
            })
        },
    );
    let mut emu = Emu::start();
    join(&mut emu);
    emu.expect(b"PF=0,0\r", OK);
    program(&mut emu, 0, 0, pki.ca.cert_pem.as_bytes());
    emu.expect(b"P1=3\r", OK);
    emu.expect(b"D0=localhost\r", &ok("127.0.0.1"));
    emu.expect(format!("P4={}\r", server.port()).as_bytes(), OK);
    emu.expect(b"P9=1\r", OK);
    emu.expect(b"P6=1\r", SIMPLE_FAIL);
    // Nothing can be sent on it.
    emu.expect(&s3(b"GET / HTTP/1.1\r\n\r\n"), CLOSED);
    assert!(server.log().sessions.is_empty());
    emu.stop();
}
