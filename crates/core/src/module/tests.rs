//! Core tests: exact request/reply bytes for every command (both message types), malformed input,
//! and socket behaviour in virtual time. No pty, no sockets: net events are fed by hand.

use super::*;
use crate::config::{AccessPoint, Config, Security};
use crate::item::Item;
use crate::module::io::{
    CloseReason, ConnectError, PingError, ResolveError, SendSeq, StoreOp, WriteError,
};
use crate::module::socket::RX_LIMIT;
use std::net::SocketAddrV4;

/// Issue 10: firmware profiles, the SPI bus, scanning one by one, the legacy and stub commands.
mod firmware;
/// Issue 17: every socket transition is logged as it is (old -> new, never through idle).
mod transitions;

/// The wall clock the test modules believe in (certificate validity is checked against it).
fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

fn module(cfg: &Config) -> Module {
    Module::new(cfg, Instant::now(), unix_now())
}

fn drain(conn: ConnId) -> NetOp {
    NetOp::Close {
        conn,
        how: CloseHow::Drain,
    }
}

fn abort(conn: ConnId) -> NetOp {
    NetOp::Close {
        conn,
        how: CloseHow::Abort,
    }
}

struct H {
    m: Module,
    now: Instant,
    /// Line changes the module asked for, as the driver would have made them.
    line_ops: Vec<LineOp>,
}

impl H {
    fn new() -> H {
        H::with(Config::default())
    }

    fn with(cfg: Config) -> H {
        let now = Instant::now();
        let mut m = Module::new(&cfg, now, unix_now());
        m.take_serial();
        H {
            m,
            now,
            line_ops: Vec::new(),
        }
    }

    /// Joined to a network with the default configuration.
    fn joined() -> H {
        let mut h = H::new();
        h.send(b"C1=home\rC2=secret123\rC3=3\rC0\r");
        h
    }

    fn send(&mut self, b: &[u8]) -> Vec<u8> {
        self.m.handle_serial(b, self.now);
        self.take()
    }

    /// Take the output as the driver does: bytes, then line changes, then let held commands run.
    fn take(&mut self) -> Vec<u8> {
        let mut out = self.m.take_serial();
        while let Some(op) = self.m.poll_line_op() {
            self.line_ops.push(op);
            self.m.handle_output_taken(self.now);
            out.extend(self.m.take_serial());
        }
        out
    }

    fn ops(&mut self) -> Vec<NetOp> {
        std::iter::from_fn(|| self.m.poll_op()).collect()
    }

    fn net(&mut self, ev: NetEvent) -> Vec<u8> {
        self.m.handle_net(ev, self.now);
        self.take()
    }

    fn advance(&mut self, ms: u64) -> Vec<u8> {
        self.now += Duration::from_millis(ms);
        if self.m.poll_timeout().is_some_and(|t| t <= self.now) {
            self.m.handle_timeout(self.now);
        }
        self.take()
    }

    /// Open a TCP client on the current socket to 127.0.0.1:port and return its connection id.
    fn connect_tcp(&mut self, port: u16) -> ConnId {
        self.connect_tcp_with(port, CONNECTING)
    }

    /// The same, the connect answered with `reply` (it depends on the firmware and the bus).
    fn connect_tcp_with(&mut self, port: u16, reply: &[u8]) -> ConnId {
        assert_eq!(
            self.send(format!("P1=0\rP3=127.0.0.1\rP4={port}\r").as_bytes()),
            OK.repeat(3)
        );
        assert_eq!(self.send(b"P6=1\r"), b"");
        let conn = match self.ops().as_slice() {
            [NetOp::Connect { conn, remote, .. }] => {
                assert_eq!(*remote, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
                *conn
            }
            other => panic!("{other:?}"),
        };
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
        let peer = Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let got = self.net(NetEvent::Connected { conn, local, peer });
        assert_eq!(
            got.escape_ascii().to_string(),
            reply.escape_ascii().to_string()
        );
        conn
    }
}

const OK: &[u8] = b"\r\n\r\nOK\r\n> ";
/// `P6=1` on a TCP client that reached 127.0.0.1, as the C3.5.2.x firmware answers it.
const CONNECTING: &[u8] = b"\r\n[TCP  RC] Connecting to 127.0.0.1\r\nOK\r\n> ";

fn ok(p: &str) -> Vec<u8> {
    format!("\r\n{p}\r\nOK\r\n> ").into_bytes()
}

fn err0(reason: &str, cmd: &str, usage: &str) -> Vec<u8> {
    format!("\r\n\r\nERROR: {reason}\r\nUsage: {cmd} {usage}\r\n> ").into_bytes()
}

const ERR1: &[u8] = b"\r\n\r\nERROR\r\n> ";
const CLOSED: &[u8] = b"\r\n-1\r\nERROR\r\n> ";

/// Run a table of (request, exact reply) through one module, in order.
fn table(h: &mut H, rows: &[(&[u8], Vec<u8>)]) {
    for (req, want) in rows {
        let got = h.send(req);
        assert_eq!(
            got.escape_ascii().to_string(),
            want.escape_ascii().to_string(),
            "request {}",
            req.escape_ascii()
        );
    }
}

#[test]
fn boot_prints_banner_then_prompt() {
    let mut m = module(&Config::default());
    let out = m.take_serial();
    assert!(out.starts_with(b"\r\n                eS-WiFi\r\n            Inventek Systems\r\n"));
    assert!(out.ends_with(b"Copyright (c)2011-2020\r\n> "));
    let mut cfg = Config::default();
    cfg.identity.banner = false;
    assert_eq!(module(&cfg).take_serial(), b"\r\n> ");
}

#[test]
fn system_commands() {
    let mut h = H::new();
    table(
        &mut h,
        &[
            (b"I?\r\n", ok("ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi")),
            (b"\r", b"\r\n> ".to_vec()),
            (b"$$$\r", OK.to_vec()),
            (b"---\r", OK.to_vec()),
            (b"Z5\r", ok("C4:7F:51:01:12:31")),
            (b"Z4=C4:7F:51:1:2:3\r", OK.to_vec()),
            (b"Z5\r", ok("C4:7F:51:01:02:03")),
            (b"ZN=My Module\r", OK.to_vec()),
            (b"I?\r", ok("ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,My Module")),
            // Z? shows the soft-AP address, as Z6 set it (issue 10).
            (b"Z?\r", ok("1,12345678,0483,5740,C4:7F:51:01:02:03,127.0.10.1,0,1,0,0,My Module")),
            (b"Z6=192.168.10.1\r", OK.to_vec()),
            (b"Z?\r", ok("1,12345678,0483,5740,C4:7F:51:01:02:03,192.168.10.1,0,1,0,0,My Module")),
            (b"MS=3\r", OK.to_vec()),
            (b"U?\r", ok("0,115200,8,None,1,Normal")),
            (b"U2=921600\r", OK.to_vec()),
            (b"U0\r", OK.to_vec()),
            (b"U?\r", ok("0,921600,8,None,1,Normal")),
            (b"B?\r", ok("UART,0,0")),
            (b"PR=0\r", OK.to_vec()),
            (b"MT=1\r", OK.to_vec()),
            (b"MT=0\r", OK.to_vec()),
        ],
    );
}

#[test]
fn reset_answers_then_reboots_and_forgets_unsaved_settings() {
    let mut h = H::new();
    h.send(b"ZN=Other\rMT=1\rP0=2\r");
    let out = h.send(b"ZR\r");
    let head = b"\r\n[MODULE ] Resetting...\r\nOK\r\n> ";
    assert!(out.starts_with(head));
    assert!(out[head.len()..].starts_with(b"\r\n                eS-WiFi"));
    assert!(out.ends_with(b"\r\n> "));
    table(
        &mut h,
        &[
            (b"P0\r", ok("0")),
            (b"I?\r", ok("ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi")),
            (b"P0=9\r", err0("Bad Argument", "P0", "<0-3>")),
        ],
    );
}

/// Edges issue, bug 7: ZR and a power cycle rebuild every volatile setting from its power-up
/// value (the ping settings were kept) and count commands from power-up again.
#[test]
fn reset_and_power_cycle_forget_ping_settings_and_the_command_count() {
    let mut h = H::new();
    h.send(b"T1=10.9.9.9\rT2=7\rT3=20\r");
    assert_eq!(h.send(b"T?\r"), ok("10.9.9.9,7,20"));
    assert_eq!(h.m.commands(), 4);
    h.send(b"ZR\r");
    assert_eq!(h.m.commands(), 0, "commands since power-up");
    assert_eq!(h.send(b"T?\r"), ok("0.0.0.0,0,0"), "after ZR");
    h.send(b"T2=7\r");
    h.m.power_cycle(h.now);
    h.take();
    assert_eq!(h.m.commands(), 0);
    assert_eq!(h.send(b"T?\r"), ok("0.0.0.0,0,0"), "after a power cycle");
}

#[test]
fn station_commands_and_join() {
    let mut h = H::new();
    table(
        &mut h,
        &[
            (b"CS\r", ok("0")),
            (b"CR\r", ok("0")),
            (b"C?\r", ok(",,0,1,0,0.0.0.0,0.0.0.0,0.0.0.0,255.255.255.255,255.255.255.255,5,0,0,US,0")),
            (b"C0\r", b"\r\n[JOIN   ] \r\n[JOIN   ] Failed\r\nERROR: Unknown Error\r\nUsage: C0 \r\n> ".to_vec()),
            (b"C1=my net, 2\r", OK.to_vec()),
            (b"C2=\r", OK.to_vec()),
            (b"C3=4\r", OK.to_vec()),
            (b"C4=1\r", OK.to_vec()),
            (b"C5=0\r", OK.to_vec()),
            (b"C6=192.168.1.50\r", OK.to_vec()),
            (b"C7=255.255.255.0\r", OK.to_vec()),
            (b"C8=192.168.1.1\r", OK.to_vec()),
            (b"C9=8.8.8.8\r", OK.to_vec()),
            (b"CA=1.1.1.1\r", OK.to_vec()),
            (b"CB=3\r", OK.to_vec()),
            (b"CC=0\r", OK.to_vec()),
            (b"CN=US/0\r", OK.to_vec()),
            (b"CN\r", ok("US/0")),
            (b"C0\r", ok("[JOIN   ] my net, 2,127.0.0.1,0,0")),
            (b"CS\r", ok("1")),
            (b"CR\r", ok("-45")),
            (b"C?\r", ok("my net, 2,,4,1,0,127.0.0.1,255.0.0.0,127.0.0.1,127.0.0.1,0.0.0.0,3,0,0,US,1")),
            (b"C0\r", b"\r\nAlready connected!\r\nERROR: Unknown Error\r\nUsage: C0 \r\n> ".to_vec()),
            (b"CD\r", OK.to_vec()),
            (b"CS\r", ok("0")),
            (b"C4=0\r", OK.to_vec()),
            (b"C0\r", ok("[JOIN   ] my net, 2,192.168.1.50,0,0")),
            (b"C?\r", ok("my net, 2,,4,0,0,192.168.1.50,255.255.255.0,192.168.1.1,8.8.8.8,1.1.1.1,3,0,0,US,1")),
        ],
    );
}

fn configured() -> Config {
    Config {
        access_points: vec![
            AccessPoint {
                ssid: "home".into(),
                security: Security::Wpa2Aes,
                password: "secret123".into(),
                bssid: "08:86:3b:2b:7e:2e".into(),
                rssi: -51,
                channel: 1,
            },
            AccessPoint {
                ssid: "cafe".into(),
                security: Security::Open,
                password: String::new(),
                bssid: "02:11:22:33:44:55".into(),
                rssi: -70,
                channel: 11,
            },
        ],
        ..Config::default()
    }
}

#[test]
fn configured_access_points_fail_like_the_module() {
    let mut h = H::with(configured());
    let failed = |ssid: &str| {
        format!(
            "\r\n[JOIN   ] {ssid}\r\n[JOIN   ] Failed\r\nERROR: Unknown Error\r\nUsage: C0 \r\n> "
        )
        .into_bytes()
    };
    table(
        &mut h,
        &[
            (b"F0\r", ok("#001,\"home\",08:86:3B:2B:7E:2E,-51,72.2,Infrastructure,WPA2 AES,2.4GHz,1\r\n#002,\"cafe\",02:11:22:33:44:55,-70,54.0,Infrastructure,Open,2.4GHz,11")),
            (b"C1=nowhere\rC2=secret123\rC3=3\r", OK.repeat(3)),
            (b"C0\r", failed("nowhere")),
            (b"C1=home\rC2=wrong\r", OK.repeat(2)),
            (b"C0\r", failed("home")),
            (b"C2=secret123\rC3=0\r", OK.repeat(2)),
            (b"C0\r", failed("home")),
            (b"C3=4\r", OK.to_vec()),
            (b"C0\r", ok("[JOIN   ] home,127.0.0.1,0,0")),
            (b"CR\r", ok("-51")),
        ],
    );
    h.send(b"MT=1\r");
    h.send(b"CD\rC1=cafe\rC3=1\r");
    assert_eq!(
        h.send(b"C0\r"),
        b"\r\n[JOIN   ] cafe\r\n[JOIN   ] Failed\r\nERROR\r\n> "
    );
}

#[test]
fn scan_without_configured_aps_shows_c1_network_and_samples() {
    let mut h = H::new();
    h.send(b"C1=lab\rC3=3\r");
    assert_eq!(
        h.send(b"F0\r"),
        ok("#001,\"lab\",02:00:5E:10:00:01,-45,72.2,Infrastructure,WPA2 AES,2.4GHz,6\r\n#002,\"eswifi-emu-sample\",02:00:5E:10:00:02,-67,72.2,Infrastructure,WPA2 AES,2.4GHz,1\r\n#003,\"eswifi-emu-open\",02:00:5E:10:00:03,-78,54.0,Infrastructure,Open,2.4GHz,11")
    );
}

#[test]
fn join_and_scan_take_emulated_time() {
    let mut cfg = Config::default();
    cfg.timing.join_ms = 1500;
    cfg.timing.scan_ms = 800;
    let mut h = H::with(cfg);
    h.send(b"C1=x\r");
    assert_eq!(h.send(b"C0\rCS\r"), b"");
    assert_eq!(h.advance(1499), b"");
    let mut want = ok("[JOIN   ] x,127.0.0.1,0,0");
    want.extend(ok("1"));
    assert_eq!(
        h.advance(1),
        want,
        "CS queued behind C0 runs right after it"
    );
    assert_eq!(h.send(b"F0\r"), b"");
    assert!(h.advance(800).starts_with(b"\r\n#001,\"x\""));
}

#[test]
fn transport_settings() {
    let mut h = H::new();
    table(
        &mut h,
        &[
            (b"P?\r", ok("0,0.0.0.0,5024,0.0.0.0,5025,0,0,8,0,0")),
            (b"P0\r", ok("0")),
            (b"P0=3\r", OK.to_vec()),
            (b"P0\r", ok("3")),
            (
                b"P1=1\rP2=0007\rP3=10.0.0.9\rP4=80\rP8=6\rP9=2\rPK=1,3000\r",
                OK.repeat(7),
            ),
            (b"P?\r", ok("1,0.0.0.0,7,10.0.0.9,80,0,0,6,0,0")),
            (b"P0=0\r", OK.to_vec()),
            (b"P?\r", ok("0,0.0.0.0,5024,0.0.0.0,5025,0,0,8,0,0")),
            (b"R?\r", ok("1460,5000,0")),
            (b"R1=1200\rR2=30\rR3=1\r", OK.repeat(3)),
            (b"R?\r", ok("1200,30,1")),
            (b"S?\r", ok("1460,5000")),
            (b"S1=100\rS2=0\r", OK.repeat(2)),
            (b"S?\r", ok("100,0")),
            (b"PK=0,0\r", OK.to_vec()),
        ],
    );
}

#[test]
fn malformed_commands_mt0_and_mt1() {
    let rows: &[(&[u8], Vec<u8>)] = &[
        (b"i?\r", b"\r\n\r\nERROR: Unknown Command\r\n> ".to_vec()),
        (b"XY\r", b"\r\n\r\nERROR: Unknown Command\r\n> ".to_vec()),
        (b"P\r", b"\r\n\r\nERROR: Unknown Command\r\n> ".to_vec()),
        (b"P0=4\r", err0("Bad Argument", "P0", "<0-3>")),
        (b"P0=x\r", err0("Bad Argument", "P0", "<0-3>")),
        (b"P4=65536\r", err0("Bad Argument", "P4", "<0-65535>")),
        (
            b"P1\r",
            err0(
                "Insufficient Arguments",
                "P1",
                "<0=TCP/1=UDP/2=UDP-Lite/3=TCP-SSL/4=MQTT>",
            ),
        ),
        (b"P6=1,2\r", err0("Bad Argument", "P6", "<0=Stop/1=Start>")),
        (
            b"PK=1\r",
            err0("Insufficient Arguments", "PK", "<0=Off/1=On>,<250-7200000>"),
        ),
        (
            b"PK=1,3000,5\r",
            err0("Too Many Arguments", "PK", "<0=Off/1=On>,<250-7200000>"),
        ),
        (b"I?=1\r", err0("Too Many Arguments", "I?", "")),
        (
            b"P3=1.2.3\r",
            err0("Bad Address Value", "P3", "<xxx.xxx.xxx.xxx>"),
        ),
        (
            b"C6=300.1.1.1\r",
            err0("Bad Address Value", "C6", "<xxx.xxx.xxx.xxx>"),
        ),
        (
            b"Z4=11:22\r",
            err0("Bad Address Value", "Z4", "<XX:XX:XX:XX:XX:XX>"),
        ),
        (
            b"C3=6\r",
            err0(
                "Bad Argument",
                "C3",
                "<0=Open/1=WEP/2=WPA/3=WPA2 AES/4=WPA2 Mixed/5=WPA2 TKIP>",
            ),
        ),
        (b"S3=0\r", err0("Bad Argument", "S3", "<1-1460>")),
        (b"S3=1461\r", err0("Bad Argument", "S3", "<1-1460>")),
        (b"R1=0\r", err0("Bad Argument", "R1", "<1-1460>")),
        (b"R2=30001\r", err0("Bad Argument", "R2", "<0-30000>")),
        (b"MT=2\r", err0("Bad Argument", "MT", "<0=Normal/1=Simple>")),
        (
            b"D0=\r",
            err0("Insufficient Arguments", "D0", "<host name>"),
        ),
    ];
    let mut h = H::new();
    table(&mut h, rows);
    // The module keeps answering after each error.
    table(&mut h, &[(b"P0\r", ok("0"))]);

    let mut h = H::new();
    h.send(b"MT=1\r");
    for (req, _) in rows {
        assert_eq!(h.send(req), ERR1, "MT=1 {}", req.escape_ascii());
    }
    assert_eq!(h.send(b"P0\r"), ok("0"));
}

#[test]
fn overlong_line_is_rejected_and_framer_resyncs() {
    let mut h = H::new();
    let mut line = b"C1=".to_vec();
    line.extend(std::iter::repeat_n(b'a', 300));
    line.push(b'\r');
    assert_eq!(h.send(&line), err0("Bad Argument", "C1", "<SSID>"));
    assert_eq!(
        h.send(b"C?\r"),
        ok(",,0,1,0,0.0.0.0,0.0.0.0,0.0.0.0,255.255.255.255,255.255.255.255,5,0,0,US,0")
    );
    let junk = vec![b'q'; 400];
    assert_eq!(h.send(&junk), b"\r\n\r\nERROR: Unknown Command\r\n> ");
    assert_eq!(h.send(b"more junk\rP0\r"), ok("0"));
}

#[test]
fn socket_index_4_is_rejected() {
    let mut h = H::new();
    assert_eq!(h.send(b"P0=4\r"), err0("Bad Argument", "P0", "<0-3>"));
    h.send(b"MT=1\r");
    assert_eq!(h.send(b"P0=4\r"), ERR1);
}

#[test]
fn dns_lookup_sets_remote_host_of_current_socket() {
    let mut h = H::joined();
    h.send(b"P0=2\r");
    assert_eq!(h.send(b"D0=localhost\r"), b"");
    let query = match h.ops().as_slice() {
        [NetOp::Resolve { query, name }] if name == "localhost" => *query,
        other => panic!("{other:?}"),
    };
    // Commands sent meanwhile wait; other sockets' traffic keeps being accepted.
    assert_eq!(h.send(b"P?\r"), b"");
    let mut want = ok("127.0.0.1");
    want.extend(ok("0,0.0.0.0,5024,127.0.0.1,5025,0,0,8,0,0"));
    assert_eq!(
        h.net(NetEvent::Resolved {
            query,
            result: Ok(Ipv4Addr::LOCALHOST)
        }),
        want
    );

    assert_eq!(h.send(b"D0=10.1.2.3\r"), ok("10.1.2.3"));
    assert!(h.ops().is_empty(), "a dotted address needs no lookup");
    h.send(b"D0=nonexistent.invalid\r");
    let query = match h.ops().as_slice() {
        [NetOp::Resolve { query, .. }] => *query,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        h.net(NetEvent::Resolved { query, result: Err(ResolveError::Lookup("no such host".into())) }),
        b"\r\n[DNS  LU] Host not found nonexistent.invalid:4\r\nERROR: Unknown Error\r\nUsage: D0 <host name>\r\n> "
    );
}

#[test]
fn dns_completion_after_timeout_is_ignored_while_other_commands_run() {
    let mut h = H::joined();
    h.connect_tcp(7000);
    h.send(b"P0=1\r");
    assert_eq!(h.send(b"D0=slow.example\r"), b"");
    let query = match h.ops().as_slice() {
        [NetOp::Resolve { query, .. }] => *query,
        other => panic!("{other:?}"),
    };
    let out = h.advance(10_000);
    assert!(
        out.starts_with(b"\r\n[DNS  LU] Host not found slow.example:2"),
        "{}",
        out.escape_ascii()
    );
    // Socket 0 keeps receiving while socket 1 is used.
    let conn0 = h.m.sockets[0].state().conns()[0];
    h.net(NetEvent::Data {
        conn: conn0,
        data: b"abc".to_vec(),
    });
    assert_eq!(h.send(b"P?\r"), ok("0,0.0.0.0,5024,0.0.0.0,5025,0,0,8,0,0"));
    assert_eq!(
        h.net(NetEvent::Resolved {
            query,
            result: Ok(Ipv4Addr::new(10, 0, 0, 1))
        }),
        b""
    );
    assert_eq!(
        h.send(b"P?\r"),
        ok("0,0.0.0.0,5024,0.0.0.0,5025,0,0,8,0,0"),
        "late result changed nothing"
    );
    assert_eq!(h.send(b"P0=0\rR0\r"), [OK.to_vec(), ok("abc")].concat());
}

#[test]
fn dns_and_sockets_need_a_network() {
    let mut h = H::new();
    assert_eq!(
        h.send(b"D0=localhost\r"),
        b"\r\n[DNS  LU] Host not found localhost:4\r\nERROR: Unknown Error\r\nUsage: D0 <host name>\r\n> "
    );
    h.send(b"P3=127.0.0.1\r");
    assert_eq!(
        h.send(b"P6=1\r"),
        b"\r\n[TCP  RC] Failed to connect\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> "
    );
    assert!(h.ops().is_empty());
}

#[test]
fn tcp_client_connect_send_receive_close() {
    let mut h = H::joined();
    let conn = h.connect_tcp(7000);
    // S3: payload is binary, reply is the count once it is in the send window.
    assert_eq!(h.send(b"S3=0005\r\r\n> \0"), ok("5"));
    let seq = match h.ops().as_slice() {
        [NetOp::Send {
            conn: c,
            seq,
            data,
            to: None,
        }] => {
            assert_eq!(*c, conn);
            assert_eq!(data, b"\r\n> \0");
            *seq
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(h.net(NetEvent::Sent { conn, seq }), b"");
    // R0 returns queued data at once, up to R1.
    h.net(NetEvent::Data {
        conn,
        data: b"0123456789".to_vec(),
    });
    assert_eq!(h.send(b"R1=4\rR0\r"), [OK.to_vec(), ok("0123")].concat());
    assert_eq!(
        h.send(b"R1=1460\rR0\r"),
        [OK.to_vec(), ok("456789")].concat()
    );
    assert_eq!(h.send(b"P6=0\r"), OK);
    assert_eq!(h.ops(), vec![drain(conn)]);
    assert_eq!(h.send(b"R0\r"), CLOSED);
    assert_eq!(h.send(b"S3=1\rx"), CLOSED);
}

#[test]
fn r0_waits_up_to_r2_then_returns_empty_ok() {
    let mut h = H::joined();
    let conn = h.connect_tcp(7000);
    h.send(b"R2=300\r");
    assert_eq!(h.send(b"R0\r"), b"");
    assert_eq!(h.advance(299), b"");
    assert_eq!(h.advance(1), OK);
    // Data arriving during the wait answers at once.
    assert_eq!(h.send(b"R0\r"), b"");
    assert_eq!(h.advance(100), b"");
    assert_eq!(
        h.net(NetEvent::Data {
            conn,
            data: b"hi".to_vec()
        }),
        ok("hi")
    );
    assert_eq!(h.advance(1000), b"", "no second reply");
    // R2=0 never waits.
    assert_eq!(h.send(b"R2=0\rR0\r"), [OK, OK].concat());
}

#[test]
fn minus_one_only_after_queued_data_is_drained() {
    let mut h = H::joined();
    let conn = h.connect_tcp(7000);
    h.net(NetEvent::Data {
        conn,
        data: b"abcdef".to_vec(),
    });
    h.net(NetEvent::Closed {
        conn,
        reason: CloseReason::PeerClosed,
    });
    h.send(b"R1=4\r");
    assert_eq!(h.send(b"R0\r"), ok("abcd"));
    assert_eq!(h.send(b"R0\r"), ok("ef"));
    assert_eq!(h.send(b"R0\r"), CLOSED);
    assert_eq!(h.send(b"R0\r"), CLOSED);
    assert_eq!(h.send(b"S3=2\rab"), CLOSED);
    // A waiting R0 is answered with -1 when the peer closes.
    let conn = {
        h.send(b"P6=0\r");
        h.ops();
        h.connect_tcp(7001)
    };
    assert_eq!(h.send(b"R0\r"), b"");
    assert_eq!(
        h.net(NetEvent::Closed {
            conn,
            reason: CloseReason::Error("reset".into())
        }),
        CLOSED
    );
}

#[test]
fn connect_failures() {
    let mut h = H::joined();
    h.send(b"P3=127.0.0.1\rP4=1\r");
    assert_eq!(h.send(b"P6=1\r"), b"");
    let conn = match h.ops().as_slice() {
        [NetOp::Connect { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    let failed = b"\r\n[TCP  RC] Failed to connect\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> ";
    assert_eq!(
        h.net(NetEvent::ConnectFailed {
            conn,
            error: ConnectError::Refused
        }),
        failed
    );
    assert_eq!(h.send(b"R0\r"), CLOSED);
    // Timeout: the module gives up and closes the attempt.
    h.send(b"P6=1\r");
    let conn = match h.ops().as_slice() {
        [NetOp::Connect { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    assert_eq!(h.advance(9_999), b"");
    assert_eq!(h.advance(1), failed);
    assert_eq!(h.ops(), vec![abort(conn)]);
    // A late success for the abandoned attempt is ignored.
    let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1234);
    let peer = Some(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1));
    assert_eq!(h.net(NetEvent::Connected { conn, local, peer }), b"");
    assert_eq!(h.send(b"R0\r"), CLOSED);
    // P3 unset.
    h.send(b"P0=1\r");
    assert_eq!(
        h.send(b"P6=1\r"),
        b"\r\n[P6     ] Invalid IP Address\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> "
    );
}

#[test]
fn refused_connect_can_answer_ok_as_some_firmware_does() {
    let mut cfg = Config::default();
    cfg.quirks.refused_connect_ok = true;
    let mut h = H::with(cfg);
    h.send(b"C1=x\rC0\rP3=127.0.0.1\rP4=1\r");
    h.send(b"P6=1\r");
    let conn = match h.ops().as_slice() {
        [NetOp::Connect { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        h.net(NetEvent::ConnectFailed {
            conn,
            error: ConnectError::Refused
        }),
        OK
    );
    assert_eq!(h.send(b"R0\r"), CLOSED);
}

#[test]
fn udp_client_local_port_quirk_and_datagrams() {
    let mut h = H::joined();
    h.send(b"P1=1\rP2=0\rP3=127.0.0.1\rP4=9000\r");
    assert_eq!(h.send(b"P6=1\r"), b"");
    let conn = match h.ops().as_slice() {
        [NetOp::OpenUdp {
            conn,
            local,
            ephemeral_fallback: true,
        }] => {
            assert_eq!(*local, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000));
            *conn
        }
        other => panic!("{other:?}"),
    };
    let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000);
    let peer = None;
    assert_eq!(h.net(NetEvent::Connected { conn, local, peer }), OK);
    // Later P4 changes retarget S3.
    h.send(b"P4=9001\r");
    assert_eq!(h.send(b"S3=3\rabc"), ok("3"));
    let seq = match h.ops().as_slice() {
        [NetOp::Send {
            to: Some(to),
            data,
            seq,
            ..
        }] => {
            assert_eq!(*to, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001));
            assert_eq!(data, b"abc");
            *seq
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(h.net(NetEvent::Sent { conn, seq }), b"");
    // One datagram per R0; bytes beyond R1 are dropped.
    let from = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9001);
    h.net(NetEvent::Datagram {
        conn,
        data: b"first datagram".to_vec(),
        from,
    });
    h.net(NetEvent::Datagram {
        conn,
        data: b"second".to_vec(),
        from,
    });
    assert_eq!(h.send(b"R1=5\rR0\r"), [OK.to_vec(), ok("first")].concat());
    assert_eq!(h.send(b"R0\r"), ok("secon"));
    assert_eq!(h.send(b"R2=0\rR0\r"), [OK, OK].concat());
    // With P2 set, P2 is the local port and no fallback is allowed.
    h.send(b"P6=0\rP2=5555\r");
    h.ops();
    h.send(b"P6=1\r");
    assert!(matches!(
        h.ops().as_slice(),
        [NetOp::OpenUdp { local, ephemeral_fallback: false, .. }] if local.port() == 5555
    ));
}

#[test]
fn send_fills_the_window_then_waits_up_to_s2_and_answers_what_was_accepted() {
    let mut h = H::joined();
    let conn = h.connect_tcp(7000);
    h.send(b"S2=200\r");
    // 44 sends of 1460 bytes fill the 64 KiB window but for 1136 bytes.
    let chunk = vec![b'x'; 1460];
    let mut seqs = Vec::new();
    for _ in 0..44 {
        let mut req = b"S3=1460\r".to_vec();
        req.extend_from_slice(&chunk);
        assert_eq!(h.send(&req), ok("1460"));
        seqs.extend(h.ops().iter().map(|op| match op {
            NetOp::Send { seq, .. } => *seq,
            other => panic!("{other:?}"),
        }));
    }
    let room = io::SEND_WINDOW - 44 * 1460;
    // The next one: what fits goes out now, the rest waits for room.
    let mut req = b"S3=1460\r".to_vec();
    req.extend_from_slice(&chunk);
    assert_eq!(h.send(&req), b"");
    match h.ops().as_slice() {
        [NetOp::Send { data, .. }] => assert_eq!(data.len(), room),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.advance(199), b"");
    assert_eq!(
        h.advance(1),
        ok(&room.to_string()),
        "S2 expired: what was accepted"
    );
    assert!(h.ops().is_empty(), "nothing more goes out for that S3");
    // Room opens as the driver writes: the next S3 goes out whole again.
    assert_eq!(h.net(NetEvent::Sent { conn, seq: seqs[0] }), b"");
    assert_eq!(h.send(&req), ok("1460"));
    // A window full with nothing acknowledged within S2: 0 (CMSIS reads it as "try again").
    let mut small = b"S3=1460\r".to_vec();
    small.extend_from_slice(&chunk);
    assert_eq!(h.send(&small), b"");
    h.ops();
    assert_eq!(h.advance(200), ok("0"));
    // A waiting S3 completes when the driver catches up.
    assert_eq!(h.send(&small), b"");
    assert_eq!(h.net(NetEvent::Sent { conn, seq: seqs[1] }), ok("1460"));
    // Peer gone while a send waits: -1.
    assert_eq!(h.send(&small), b"");
    assert_eq!(
        h.net(NetEvent::Closed {
            conn,
            reason: CloseReason::Error("broken pipe".into())
        }),
        CLOSED
    );
}

#[test]
fn s2_zero_waits_at_most_30_seconds() {
    let mut h = H::joined();
    h.connect_tcp(7000);
    h.send(b"S2=0\r");
    let mut req = b"S3=1460\r".to_vec();
    req.extend_from_slice(&[b'y'; 1460]);
    for _ in 0..44 {
        assert_eq!(h.send(&req), ok("1460"));
    }
    assert_eq!(h.send(&req), b"");
    assert_eq!(h.advance(29_999), b"");
    let room = io::SEND_WINDOW - 44 * 1460;
    assert_eq!(h.advance(1), ok(&room.to_string()));
    // And the module answers again.
    assert_eq!(
        h.send(b"ZR\r")[..32],
        b"\r\n[MODULE ] Resetting...\r\nOK\r\n> "[..]
    );
}

#[test]
fn a_late_sent_never_completes_a_later_s3() {
    // Defect 2 of issue 7: after an S3 answered at its S2 timeout, the old Sent must not answer
    // the next S3 (sends are matched by sequence number, and S3 answers from the window).
    let mut h = H::joined();
    let conn = h.connect_tcp(7000);
    h.send(b"S2=100\r");
    let mut req = b"S3=1460\r".to_vec();
    req.extend_from_slice(&[b'z'; 1460]);
    let mut seqs = Vec::new();
    for _ in 0..45 {
        h.send(&req);
        for op in h.ops() {
            if let NetOp::Send { seq, .. } = op {
                seqs.push(seq);
            }
        }
    }
    let timed_out = h.advance(100);
    assert!(
        timed_out.starts_with(b"\r\n"),
        "{}",
        timed_out.escape_ascii()
    );
    // The next S3 waits for room; an ack for a send other than the oldest changes nothing.
    assert_eq!(h.send(&req), b"");
    assert_eq!(h.net(NetEvent::Sent { conn, seq: seqs[5] }), b"");
    assert_eq!(
        h.net(NetEvent::Sent {
            conn,
            seq: SendSeq(999_999)
        }),
        b""
    );
    // The oldest one frees room: exactly one reply.
    assert_eq!(h.net(NetEvent::Sent { conn, seq: seqs[0] }), ok("1460"));
    assert_eq!(h.net(NetEvent::Sent { conn, seq: seqs[1] }), b"");
    assert_eq!(h.advance(1000), b"");
}

#[test]
fn incomplete_payload_times_out_and_module_keeps_answering() {
    let mut h = H::joined();
    h.connect_tcp(7000);
    assert_eq!(h.send(b"S3=10\rabc"), b"");
    assert_eq!(h.advance(29_999), b"");
    assert_eq!(h.advance(1), err0("Unknown Error", "S3", "<1-1460>"));
    assert_eq!(h.send(b"P0\r"), ok("0"));
}

#[test]
fn disconnect_closes_every_socket() {
    let mut h = H::joined();
    let a = h.connect_tcp(7000);
    h.send(b"P0=1\r");
    let b = h.connect_tcp(7001);
    assert_eq!(h.send(b"CD\r"), OK);
    let mut ops = h.ops();
    ops.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(ops, vec![abort(a), abort(b)]);
    assert_eq!(h.send(b"R0\r"), CLOSED);
    assert_eq!(h.send(b"P0=0\rR0\r"), [OK, CLOSED].concat());
    // Events for closed connections are ignored.
    assert_eq!(
        h.net(NetEvent::Data {
            conn: a,
            data: b"late".to_vec()
        }),
        b""
    );
}

#[test]
fn receive_queue_limit_gives_backpressure() {
    let mut h = H::joined();
    let conn = h.connect_tcp(7000);
    assert_eq!(h.m.rx_room(conn), RX_LIMIT);
    h.net(NetEvent::Data {
        conn,
        data: vec![7; 1000],
    });
    assert_eq!(h.m.rx_room(conn), RX_LIMIT - 1000);
    assert_eq!(h.m.rx_room(ConnId(999_999)), 0);
}

#[test]
fn four_sockets_are_independent() {
    let mut h = H::joined();
    let mut conns = Vec::new();
    for i in 0..4u16 {
        h.send(format!("P0={i}\r").as_bytes());
        conns.push(h.connect_tcp(7000 + i));
    }
    for (i, c) in conns.iter().enumerate() {
        h.net(NetEvent::Data {
            conn: *c,
            data: format!("sock{i}").into_bytes(),
        });
    }
    for i in (0..4).rev() {
        assert_eq!(
            h.send(format!("P0={i}\rR0\r").as_bytes()),
            [OK.to_vec(), ok(&format!("sock{i}"))].concat()
        );
    }
}

// ---- certificate sets (PF/PG/PE) ------------------------------------------------------------

const PEM_CERT: &[u8] =
    b"-----BEGIN CERTIFICATE-----\r\nMAMCAQA=\r\n-----END CERTIFICATE-----\r\n\0";

impl H {
    /// Send `PG=<set>,<item>,<len>` with `data` (ST's `%04d` header) and complete the store write.
    fn program(&mut self, set: u8, item: u8, data: &[u8], store_ok: bool) -> Vec<u8> {
        let mut out = self.send(format!("PG={set},{item},{:04}\r", data.len()).as_bytes());
        out.extend(self.send(data));
        if let Some(op) = self.m.poll_store() {
            let StoreOp::Item {
                set: s,
                item: i,
                data: d,
                ..
            } = &op
            else {
                panic!("{op:?}")
            };
            assert_eq!(*s, set as usize);
            assert_eq!(*i as u8, item);
            assert_eq!(d, data);
            let result = if store_ok {
                Ok(())
            } else {
                Err(WriteError::Io {
                    path: "set1/ca.otp".into(),
                    why: "disk full".into(),
                })
            };
            self.m.handle_stored(op.req(), result, self.now);
            out.extend(self.m.take_serial());
        }
        out
    }
}

#[test]
fn certificate_sets_are_one_time_programmable() {
    let mut h = H::new();
    table(
        &mut h,
        &[
            (b"PE\r", ok("1,1,1")),
            (b"PE=0\r", ok("1,1,1")),
            (b"PF\r", ok("0,2")),
            (b"PF=0,1\r", OK.to_vec()),
            (b"PF\r", ok("1,2")),
            (b"PF=2\r", OK.to_vec()),
            (b"PF\r", ok("2,2")),
            (
                b"PF=0,3\r",
                err0("Bad Argument", "PF", "<0=TLS/1=AWS>,<set>"),
            ),
            (
                b"PG=3,0,0010\r",
                err0(
                    "Bad Argument",
                    "PG",
                    "<set>,<0=Root CA/1=Certificate/2=Key>,<length>",
                ),
            ),
            (b"PG=1,2,0000\r", OK.to_vec()),
            (b"PE=1\r", ok("1,1,1")),
        ],
    );
    assert_eq!(h.program(1, 0, PEM_CERT, true), OK);
    assert_eq!(h.m.certs.sets.get(1, Item::Ca), Some(PEM_CERT));
    table(&mut h, &[(b"PE\r", ok("1,0,1")), (b"PE=1\r", ok("0,1,1"))]);
    // Identical bytes: Match, nothing written.
    assert_eq!(h.program(1, 0, PEM_CERT, true), ok("[CERTS   ] Match"));
    // Different bytes: the slot is used.
    let mut other = PEM_CERT.to_vec();
    other.pop();
    assert_eq!(
        h.program(1, 0, &other, true),
        b"\r\n[CERTS   ] Selected item unavailable (used)\r\nERROR: Unknown Error\r\nUsage: PG <set>,<0=Root CA/1=Certificate/2=Key>,<length>\r\n> "
    );
    assert_eq!(h.m.certs.sets.get(1, Item::Ca), Some(PEM_CERT));
    // Items larger than one S3 payload are accepted.
    let big = [
        b"-----BEGIN CERTIFICATE-----\n".to_vec(),
        vec![b'A'; 8000],
        b"\n-----END CERTIFICATE-----\n".to_vec(),
    ]
    .concat();
    assert_eq!(h.program(2, 1, &big, true), OK);
    // The sets survive a reset (flash), the selection does not.
    h.send(b"ZR\r");
    assert_eq!(h.send(b"PE\r"), ok("1,0,0"));
    assert_eq!(h.send(b"PF\r"), ok("0,2"));
}

#[test]
fn failed_store_write_leaves_the_slot_free() {
    let mut h = H::new();
    assert_eq!(
        h.program(0, 2, b"-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n", false),
        b"\r\n[CERTS  ] Failed to write to iFlash: 1\r\nERROR: Unknown Error\r\nUsage: PG <set>,<0=Root CA/1=Certificate/2=Key>,<length>\r\n> "
    );
    assert_eq!(h.send(b"PE=0\r"), ok("1,1,1"));
}

#[test]
fn non_pem_is_stored_with_a_warning_or_refused_by_option() {
    let mut h = H::new();
    assert_eq!(h.program(0, 0, b"not a certificate", true), OK);
    assert_eq!(h.send(b"PE=0\r"), ok("0,1,1"));
    let mut cfg = Config::default();
    cfg.tls.refuse_non_pem = true;
    let mut h = H::with(cfg);
    assert_eq!(
        h.program(0, 0, b"not a certificate", true),
        err0(
            "Bad Argument",
            "PG",
            "<set>,<0=Root CA/1=Certificate/2=Key>,<length>"
        )
    );
    assert_eq!(h.send(b"PE=0\r"), ok("1,1,1"));
}

#[test]
fn set_3_is_rewritable_on_the_c6_profile() {
    let mut cfg = Config::default();
    cfg.tls.rewritable_set3 = true;
    let mut h = H::with(cfg);
    assert_eq!(h.send(b"PE\r"), ok("1,1,1,1"));
    assert_eq!(h.program(3, 0, PEM_CERT, true), OK);
    assert_eq!(
        h.program(
            3,
            0,
            b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
            true
        ),
        OK
    );
    assert_eq!(h.send(b"PE=3\r"), ok("1,1,1"));
    assert_eq!(h.send(b"PF=0,3\r"), OK);
}

#[test]
fn pem_check_accepts_what_drivers_send() {
    assert!(pem_check(Item::Ca, PEM_CERT).is_ok());
    assert!(pem_check(Item::Ca, b"garbage").is_err());
    assert!(pem_check(
        Item::Key,
        b"-----BEGIN EC PRIVATE KEY-----\r\nMAMCAQA=\r\n-----END EC PRIVATE KEY-----\r\n\0"
    )
    .is_ok());
    assert!(pem_check(Item::Key, PEM_CERT).is_err());
}

// ---- servers and asynchronous events -------------------------------------------------------

impl H {
    /// Start a TCP server on socket `sock`, port `port`; returns the listener id.
    fn tcp_server(&mut self, sock: u8, port: u16, mode: u8) -> ConnId {
        self.send(format!("P0={sock}\rP1=0\rP2={port}\rP8=3\r").as_bytes());
        assert_eq!(self.send(format!("P5={mode}\r").as_bytes()), b"");
        let listener = match self.ops().as_slice() {
            [NetOp::Listen {
                conn,
                local,
                backlog: 3,
            }] => {
                assert_eq!(*local, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
                *conn
            }
            other => panic!("{other:?}"),
        };
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        assert_eq!(
            self.net(NetEvent::Connected {
                conn: listener,
                local,
                peer: None,
            }),
            OK
        );
        listener
    }
}

fn peer(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), port)
}

#[test]
fn tcp_server_accepts_announces_and_serves_the_client() {
    let mut h = H::joined();
    let l = h.tcp_server(0, 8080, 1);
    assert_eq!(h.send(b"P?\r"), ok("0,0.0.0.0,8080,0.0.0.0,5025,1,0,3,0,0"));
    let c = accepted(1);
    assert_eq!(
        h.net(NetEvent::Accepted {
            listener: l,
            conn: c,
            peer: peer(40001)
        }),
        b"\r\n[TCP SVR] Accepted 127.0.0.9:8080\r\n> "
    );
    assert_eq!(
        h.send(b"P?\r"),
        ok("0,127.0.0.9,8080,0.0.0.0,40001,1,0,3,0,0")
    );
    h.net(NetEvent::Data {
        conn: c,
        data: b"W0FAC0B1234".to_vec(),
    });
    assert_eq!(h.send(b"R0\r"), ok("W0FAC0B1234"));
    assert_eq!(h.send(b"S3=11\rA0FAC0B1234"), ok("11"));
    match h.ops().as_slice() {
        [NetOp::Send {
            conn,
            data,
            to: None,
            ..
        }] => {
            assert_eq!(*conn, c);
            assert_eq!(data, b"A0FAC0B1234");
        }
        other => panic!("{other:?}"),
    }
    // The client leaves: its data first, then -1; the server keeps listening.
    h.net(NetEvent::Data {
        conn: c,
        data: b"bye".to_vec(),
    });
    h.net(NetEvent::Closed {
        conn: c,
        reason: CloseReason::PeerClosed,
    });
    assert_eq!(h.send(b"R0\r"), ok("bye"));
    assert_eq!(h.send(b"R0\r"), CLOSED);
    assert_eq!(
        h.send(b"R2=0\rR0\r"),
        [OK, OK].concat(),
        "between clients: no data, no -1"
    );
    let c2 = accepted(2);
    assert_eq!(
        h.net(NetEvent::Accepted {
            listener: l,
            conn: c2,
            peer: peer(40002)
        }),
        b"\r\n[TCP SVR] Accepted 127.0.0.9:8080\r\n> "
    );
    assert_eq!(h.send(b"P5=0\r"), OK);
    assert_eq!(h.ops(), vec![drain(c2), abort(l)]);
    assert_eq!(
        h.send(b"P?\r"),
        ok("0,0.0.0.0,8080,0.0.0.0,40002,0,0,3,0,0")
    );
}

/// The id the driver gives its `n`th accepted connection.
fn accepted(n: u64) -> ConnId {
    ConnId(io::ACCEPTED_BIT | n)
}

#[test]
fn backlog_is_walked_in_order_with_p5_10() {
    let mut h = H::joined();
    let l = h.tcp_server(1, 9000, 1);
    let mut out = Vec::new();
    for n in 1..=3u16 {
        out.extend(h.net(NetEvent::Accepted {
            listener: l,
            conn: accepted(n as u64),
            peer: peer(50000 + n),
        }));
        h.net(NetEvent::Data {
            conn: accepted(n as u64),
            data: format!("client{n}").into_bytes(),
        });
    }
    assert_eq!(
        out, b"\r\n[TCP SVR] Accepted 127.0.0.9:9000\r\n> ",
        "only the current client is announced"
    );
    // P8 bounds the clients waiting behind the current one: a fourth waits, a fifth is refused.
    h.net(NetEvent::Accepted {
        listener: l,
        conn: accepted(4),
        peer: peer(50004),
    });
    assert_eq!(h.ops(), vec![]);
    h.net(NetEvent::Accepted {
        listener: l,
        conn: accepted(5),
        peer: peer(50005),
    });
    assert_eq!(h.ops(), vec![abort(accepted(5))]);
    assert_eq!(h.send(b"R0\r"), ok("client1"));
    for n in 2..=3u64 {
        assert_eq!(
            h.send(b"P5=10\r"),
            [
                OK.to_vec(),
                b"\r\n[TCP SVR] Accepted 127.0.0.9:9000\r\n> ".to_vec()
            ]
            .concat()
        );
        assert_eq!(h.ops(), vec![drain(accepted(n - 1))]);
        assert_eq!(
            h.send(b"P?\r"),
            ok(&format!("0,127.0.0.9,9000,0.0.0.0,{},1,0,3,0,0", 50000 + n))
        );
        assert_eq!(h.send(b"R0\r"), ok(&format!("client{n}")));
    }
}

impl H {
    /// Two clients of listener `l`: the first becomes current, the second waits with `data` sent.
    fn two_clients_second_with_data(&mut self, l: ConnId, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for n in 1..=2 {
            out.extend(self.net(NetEvent::Accepted {
                listener: l,
                conn: accepted(n),
                peer: peer(n as u16),
            }));
        }
        out.extend(self.net(NetEvent::Data {
            conn: accepted(2),
            data: data.to_vec(),
        }));
        out
    }
}

#[test]
fn multi_accept_moves_to_the_next_client_after_minus_one() {
    let mut h = H::joined();
    let l = h.tcp_server(0, 9001, 11);
    h.two_clients_second_with_data(l, b"second");
    h.net(NetEvent::Closed {
        conn: accepted(1),
        reason: CloseReason::PeerClosed,
    });
    assert_eq!(
        h.send(b"R0\r"),
        [
            CLOSED.to_vec(),
            b"\r\n[TCP SVR] Accepted 127.0.0.9:9001\r\n> ".to_vec()
        ]
        .concat()
    );
    assert_eq!(h.send(b"R0\r"), ok("second"));
}

#[test]
fn events_wait_for_the_reply_in_progress_and_ms_suppresses_them() {
    let mut h = H::joined();
    let l = h.tcp_server(0, 9002, 1);
    h.send(b"P0=1\r");
    let conn = h.connect_tcp(7000);
    h.send(b"R2=1000\r");
    assert_eq!(h.send(b"R0\r"), b"");
    // A client arrives while R0 waits: the event follows the reply, never inside it.
    assert_eq!(
        h.net(NetEvent::Accepted {
            listener: l,
            conn: accepted(1),
            peer: peer(3)
        }),
        b""
    );
    assert_eq!(
        h.net(NetEvent::Data {
            conn,
            data: b"\r\nOK\r\n> ".to_vec()
        }),
        [
            ok("\r\nOK\r\n> "),
            b"\r\n[TCP SVR] Accepted 127.0.0.9:9002\r\n> ".to_vec()
        ]
        .concat()
    );
    h.send(b"P0=0\rP5=10\r");
    h.send(b"MS=2\r");
    h.net(NetEvent::Accepted {
        listener: l,
        conn: accepted(2),
        peer: peer(4),
    });
    assert_eq!(
        h.send(b"P5=10\r"),
        OK,
        "MS bit 1 suppresses server messages"
    );
}

#[test]
fn poll_mode_queues_events_for_mr() {
    let mut cfg = Config::default();
    cfg.module.events = crate::config::EventMode::Poll;
    let mut h = H::with(cfg);
    h.send(b"C1=x\rC0\r");
    let l = h.tcp_server(0, 9003, 1);
    assert_eq!(h.send(b"MR\r"), ok("[SOMA][EOMA]"));
    assert_eq!(
        h.net(NetEvent::Accepted {
            listener: l,
            conn: accepted(1),
            peer: peer(5)
        }),
        b""
    );
    assert_eq!(
        h.send(b"MR\r"),
        ok("[SOMA][TCP SVR] Accepted 127.0.0.9:9003[EOMA]")
    );
    assert_eq!(h.send(b"MR\r"), ok("[SOMA][EOMA]"));
}

#[test]
fn udp_server_answers_the_last_sender() {
    let mut h = H::joined();
    h.send(b"P0=2\rP1=1\rP2=7777\r");
    assert_eq!(h.send(b"P5=1\r"), b"");
    let conn = match h.ops().as_slice() {
        [NetOp::OpenUdp {
            conn,
            local,
            ephemeral_fallback: false,
        }] => {
            assert_eq!(local.port(), 7777);
            *conn
        }
        other => panic!("{other:?}"),
    };
    let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7777);
    assert_eq!(
        h.net(NetEvent::Connected {
            conn,
            local,
            peer: None
        }),
        OK
    );
    assert_eq!(
        h.net(NetEvent::Datagram {
            conn,
            data: b"ping".to_vec(),
            from: peer(6000)
        }),
        b"\r\n[UDP SVR] Accepted 127.0.0.9:7777\r\n> "
    );
    assert_eq!(h.send(b"R0\r"), ok("ping"));
    assert_eq!(
        h.send(b"P?\r"),
        ok("1,0.0.0.0,7777,127.0.0.9,6000,0,1,8,0,0")
    );
    h.send(b"S3=4\rpong");
    assert!(matches!(h.ops().as_slice(), [NetOp::Send { to: Some(to), .. }] if *to == peer(6000)));
}

#[test]
fn server_needs_network_and_a_free_port() {
    let mut h = H::new();
    assert_eq!(
        h.send(b"P5=1\r"),
        err0(
            "Unknown Error",
            "P5",
            "<0=Stop/1=Start/10=Next client/11=Start multi-accept>"
        )
    );
    let mut h = H::joined();
    h.send(b"P2=80\rP5=1\r");
    let l = match h.ops().as_slice() {
        [NetOp::Listen { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        h.net(NetEvent::ConnectFailed {
            conn: l,
            error: ConnectError::AddrInUse
        }),
        err0(
            "Unknown Error",
            "P5",
            "<0=Stop/1=Start/10=Next client/11=Start multi-accept>"
        )
    );
    assert_eq!(h.send(b"P?\r"), ok("0,0.0.0.0,80,0.0.0.0,5025,0,0,8,0,0"));
}

// ---- saved settings, soft AP, ping -------------------------------------------------------------

impl H {
    /// Complete the pending settings write and return the saved bytes.
    fn complete_save(&mut self) -> (Vec<u8>, Vec<u8>) {
        let op = self.m.poll_store().expect("a store op");
        let StoreOp::Settings { req, data } = op else {
            panic!("{op:?}")
        };
        self.m.handle_stored(req, Ok(()), self.now);
        (data, self.m.take_serial())
    }
}

#[test]
fn saved_settings_survive_reset_unsaved_ones_do_not() {
    let mut h = H::new();
    h.send(b"C1=saved net\rC2=pw123456\rC3=3\rCC=1\rZN=Saved Name\rMT=1\r");
    assert_eq!(h.send(b"Z1\r"), b"", "Z1 answers once durable");
    let (data, out) = h.complete_save();
    assert_eq!(out, OK);
    h.send(b"C1=not saved\rZN=Temp\r");
    let out = h.send(b"ZR\r");
    // CC=1: the module joins at boot and says so after the prompt.
    assert!(
        out.ends_with(b"\r\n> \r\n[JOIN   ] saved net,127.0.0.1,0,0\r\n> "),
        "{}",
        out.escape_ascii()
    );
    assert_eq!(
        h.send(b"C?\r"),
        ok("saved net,pw123456,3,1,0,127.0.0.1,255.0.0.0,127.0.0.1,127.0.0.1,0.0.0.0,5,1,0,US,1")
    );
    assert_eq!(
        h.send(b"I?\r"),
        ok("ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Saved Name")
    );
    assert_eq!(h.send(b"P0=9\r"), ERR1, "MT=1 was saved too");
    // A fresh module given the saved bytes (a restart) comes up the same way.
    let mut m = module(&Config::default());
    m.load_saved(Some(data));
    assert!(m
        .take_serial()
        .ends_with(b"\r\n[JOIN   ] saved net,127.0.0.1,0,0\r\n> "));
}

#[test]
fn factory_reset_is_refused_while_connected() {
    let mut h = H::joined();
    assert_eq!(
        h.send(b"Z0\r"),
        b"\r\nPlease shutdown network before resetting to factory configuration.\r\nERROR: Unknown Error\r\nUsage: Z0 \r\n> "
    );
    h.send(b"CD\r");
    assert_eq!(h.send(b"Z0\r"), OK);
    assert_eq!(
        h.send(b"C?\r"),
        ok(",,0,1,0,0.0.0.0,0.0.0.0,0.0.0.0,255.255.255.255,255.255.255.255,5,0,0,US,0")
    );
}

#[test]
fn corrupt_saved_settings_fall_back_to_defaults_with_the_boot_message() {
    let mut m = module(&Config::default());
    m.load_saved(Some(b"eswifi-emu-settings 1\nip=bogus\n".to_vec()));
    let out = m.take_serial();
    assert!(
        out.starts_with(b"\r\n[BOOT   ] Invalid CONFIG, restoring defaults\r\n"),
        "{}",
        out.escape_ascii()
    );
    assert!(out.ends_with(b"\r\n> "));
}

#[test]
fn corrupt_toml_settings_fall_back_to_defaults_too() {
    let mut m = module(&Config::default());
    m.load_saved(Some(b"[station]\nssid = [\"not\", \"bytes\"]\n".to_vec()));
    let out = m.take_serial();
    assert!(
        out.starts_with(b"\r\n[BOOT   ] Invalid CONFIG, restoring defaults\r\n"),
        "{}",
        out.escape_ascii()
    );
    assert!(m.poll_store().is_none(), "nothing to rewrite");
}

#[test]
fn settings_saved_in_the_first_format_apply_and_are_rewritten_as_toml_once() {
    let file = include_bytes!("../../../../tests/fixtures/settings-v1.saved");
    let legacy = crate::item::decode_item(file).expect("a complete item");
    let mut h = H::new();
    h.m.load_saved(Some(legacy));
    let boot = h.m.take_serial();
    assert!(
        boot.ends_with(b"\r\n> \r\n[JOIN   ] old net, with comma,127.0.0.1,0,0\r\n> "),
        "CC=1 was saved: {}",
        boot.escape_ascii()
    );
    // The driver is asked to store them again, as TOML; the host sees nothing of it.
    let (data, out) = h.complete_save();
    assert_eq!(out, b"");
    let text = String::from_utf8(data.clone()).expect("text");
    assert!(text.contains("ssid = \"old net, with comma\""), "{text}");
    assert!(!text.contains("eswifi-emu-settings 1"), "{text}");
    assert_eq!(
        h.send(b"C?\r"),
        ok("old net, with comma,pw123456,3,1,0,127.0.0.1,255.0.0.0,127.0.0.1,127.0.0.1,0.0.0.0,5,1,0,US,1")
    );
    assert_eq!(h.send(b"Z5\r"), ok("02:11:22:33:44:55"));
    assert_eq!(h.send(b"P0=9\r"), ERR1, "MT=1");
    // ZR reads what the module now holds (TOML) and asks for no second rewrite.
    h.send(b"ZR\r");
    assert!(h.m.poll_store().is_none());
    assert_eq!(h.send(b"Z5\r"), ok("02:11:22:33:44:55"));
    // Nor does a restart from the rewritten file.
    let mut m = module(&Config::default());
    m.load_saved(Some(data));
    assert!(m
        .take_serial()
        .ends_with(b"\r\n[JOIN   ] old net, with comma,127.0.0.1,0,0\r\n> "));
    assert!(m.poll_store().is_none());
}

#[test]
fn soft_ap_settings_and_servers_on_its_address() {
    let mut h = H::new();
    table(
        &mut h,
        &[
            (
                b"A?\r",
                ok("eS-WiFi_AP_C47F51011231,127.0.10.1,1,0,,1,24,0"),
            ),
            (b"AS=0, lab ap\r", OK.to_vec()),
            (b"A1=3\rA2=appass99\rAC=6\rAL=2\rAT=2\r", OK.repeat(5)),
            (
                b"A1=1\r",
                err0("Bad Argument", "A1", "<0=Open/2=WPA/3=WPA2/4=WPA+WPA2>"),
            ),
            (b"A2=short\r", err0("Bad Argument", "A2", "<key>")),
            (b"A0\r", ok("[AP     ] SSID:  lab ap,127.0.10.1")),
            (b"A0\r", ok("[AP     ] Already running")),
            (b"A?\r", ok(" lab ap,127.0.10.1,6,3,appass99,1,2,1")),
        ],
    );
    // A server in AP mode listens on the AP address; a station joining gets a DHCP message.
    h.send(b"P1=0\rP2=80\r");
    h.send(b"P5=1\r");
    let l = match h.ops().as_slice() {
        [NetOp::Listen { conn, local, .. }] => {
            assert_eq!(*local, SocketAddrV4::new(Ipv4Addr::new(127, 0, 10, 1), 80));
            *conn
        }
        other => panic!("{other:?}"),
    };
    h.net(NetEvent::Connected {
        conn: l,
        local: SocketAddrV4::new(Ipv4Addr::new(127, 0, 10, 1), 80),
        peer: None,
    });
    assert_eq!(
        h.net(NetEvent::Accepted { listener: l, conn: accepted(1), peer: peer(4444) }),
        b"\r\n[AP DHCP] Assigned 02:00:7F:00:00:09 has 127.0.0.9\r\n> \r\n[TCP SVR] Accepted 127.0.0.9:80\r\n> "
    );
    h.send(b"MS=1\rP5=10\r");
    assert_eq!(
        h.send(b"AE\rZ6=127.0.20.1\rAD\r"),
        [
            OK.to_vec(),
            OK.to_vec(),
            ok("[AP     ] SSID:  lab ap,127.0.20.1\r\n[WEB SVR] CSO Server started")
        ]
        .concat()
    );
}

#[test]
fn ping_reports_each_echo_and_timeouts() {
    let mut h = H::joined();
    table(
        &mut h,
        &[
            (b"T?\r", ok("0.0.0.0,0,0")),
            (b"T1=127.0.0.1\rT2=2\rT3=100\r", OK.repeat(3)),
            (b"T?\r", ok("127.0.0.1,2,100")),
        ],
    );
    assert_eq!(h.send(b"T0=\r"), b"");
    let query = match h.ops().as_slice() {
        [NetOp::Ping {
            query,
            target,
            count: 3,
            interval,
            ..
        }] => {
            assert_eq!(*target, Ipv4Addr::LOCALHOST);
            assert_eq!(*interval, Duration::from_millis(100));
            *query
        }
        other => panic!("{other:?}"),
    };
    let rtts = vec![
        Some(Duration::from_millis(3)),
        None,
        Some(Duration::from_micros(400)),
    ];
    assert_eq!(
        h.net(NetEvent::PingDone {
            query,
            result: Ok(rtts)
        }),
        ok("127.0.0.1,3\r\nTimeout\r\n127.0.0.1,0")
    );
    // No ICMP socket available: Timeout per echo.
    h.send(b"T2=0\rT0\r");
    let query = match h.ops().as_slice() {
        [NetOp::Ping { query, .. }] => *query,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        h.net(NetEvent::PingDone {
            query,
            result: Err(PingError::NoSocket("neither datagram nor raw".into()))
        }),
        ok("Timeout")
    );
}

#[test]
fn client_commands_on_a_serving_socket_leave_the_server_intact() {
    let mut h = H::joined();
    h.send(b"P0=2\rP1=1\rP2=7778\rP5=1\r");
    let conn = match h.ops().as_slice() {
        [NetOp::OpenUdp { conn, .. }] => *conn,
        other => panic!("{other:?}"),
    };
    h.net(NetEvent::Connected {
        conn,
        local: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7778),
        peer: None,
    });
    assert_eq!(h.send(b"P6=0\r"), OK);
    assert!(h.ops().is_empty(), "the UDP server keeps its socket");
    assert_eq!(
        h.send(b"P6=1\r"),
        b"\r\n[TCP  RC] Already Connected\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> "
    );
    h.net(NetEvent::Datagram {
        conn,
        data: b"still here".to_vec(),
        from: peer(1),
    });
    assert_eq!(h.send(b"R0\r"), ok("still here"));
}

#[test]
fn legacy_p7_accept_loop() {
    let mut h = H::joined();
    assert_eq!(
        h.send(b"P7=1\r"),
        err0(
            "Unknown Error",
            "P7",
            "<0=Stop/1=Start/2=Close client/3=Next client>"
        ),
        "no server to loop on"
    );
    let l = h.tcp_server(0, 9004, 1);
    assert_eq!(h.send(b"P7=1\r"), OK);
    assert_eq!(h.send(b"P?\r"), ok("0,0.0.0.0,9004,0.0.0.0,5025,1,0,3,1,0"));
    h.net(NetEvent::Accepted {
        listener: l,
        conn: accepted(1),
        peer: peer(1),
    });
    h.net(NetEvent::Accepted {
        listener: l,
        conn: accepted(2),
        peer: peer(2),
    });
    h.net(NetEvent::Accepted {
        listener: l,
        conn: accepted(3),
        peer: peer(3),
    });
    // P7=3: next client; P7=2: close the current one without taking another.
    assert_eq!(
        h.send(b"P7=3\r"),
        [
            OK.to_vec(),
            b"\r\n[TCP SVR] Accepted 127.0.0.9:9004\r\n> ".to_vec()
        ]
        .concat()
    );
    assert_eq!(h.ops(), vec![drain(accepted(1))]);
    assert_eq!(h.send(b"P7=2\r"), OK);
    assert_eq!(h.ops(), vec![drain(accepted(2))]);
    assert_eq!(
        h.send(b"R2=0\rR0\r"),
        [OK, OK].concat(),
        "no current client until the next is taken"
    );
    // The third client is taken the same way; P7=0 then stops the loop.
    assert_eq!(
        h.send(b"P7=3\r"),
        [
            OK.to_vec(),
            b"\r\n[TCP SVR] Accepted 127.0.0.9:9004\r\n> ".to_vec()
        ]
        .concat()
    );
    assert_eq!(h.send(b"P7=0\r"), OK);
    assert_eq!(h.send(b"P?\r"), ok("0,127.0.0.9,9004,0.0.0.0,3,1,0,3,0,0"));
}

#[test]
fn poll_mode_keeps_the_newest_events_when_mr_is_never_sent() {
    let mut cfg = Config::default();
    cfg.module.events = crate::config::EventMode::Poll;
    let mut h = H::with(cfg);
    h.send(b"C1=x\rC0\r");
    let l = h.tcp_server(0, 9005, 11);
    for n in 1..=40u64 {
        h.net(NetEvent::Accepted {
            listener: l,
            conn: accepted(n),
            peer: peer(n as u16),
        });
        h.send(b"P5=10\r");
    }
    let mut got = 0;
    while h.send(b"MR\r") != ok("[SOMA][EOMA]") {
        got += 1;
        assert!(got <= 40, "MR never ran dry");
    }
    assert_eq!(got, MAX_EVENTS);
}

// ---- bounds ----------------------------------------------------------------------------------

#[test]
fn a_full_output_holds_commands_until_the_driver_takes_it() {
    let mut h = H::new();
    let reply = ok(
        "ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi",
    );
    let n = 1000;
    h.m.handle_serial(&b"I?\r".repeat(n), h.now);
    // Commands ran until the output reached its limit; the rest wait in the framer.
    let first = h.m.take_serial();
    let done = first.len() / reply.len();
    assert_eq!(first.len() % reply.len(), 0);
    assert_eq!(done, SERIAL_OUT_LIMIT.div_ceil(reply.len()));
    assert!(done < n);
    assert_eq!(h.m.serial_room(), SERIAL_IN_LIMIT - 3 * (n - done));
    // Nothing runs by itself; taking the output lets the next batch run.
    assert_eq!(h.m.take_serial(), b"");
    let mut total = done;
    for _ in 0..n {
        h.m.handle_output_taken(h.now);
        let out = h.m.take_serial();
        if out.is_empty() {
            break;
        }
        total += out.len() / reply.len();
    }
    assert_eq!(total, n, "every command answered exactly once");
}

#[test]
fn input_beyond_the_serial_limit_is_refused_while_a_command_waits() {
    let mut h = H::joined();
    h.connect_tcp(7000);
    assert_eq!(h.send(b"R2=30000\rR0\r"), OK);
    assert_eq!(h.m.serial_room(), SERIAL_IN_LIMIT);
    h.send(&vec![b'x'; 1000]);
    assert_eq!(h.m.serial_room(), SERIAL_IN_LIMIT - 1000);
    h.send(&vec![b'x'; SERIAL_IN_LIMIT - 1000]);
    assert_eq!(h.m.serial_room(), 0, "the driver stops reading the line");
    assert_eq!(
        h.advance(30_000),
        OK.to_vec()
            .into_iter()
            .chain(b"\r\n\r\nERROR: Unknown Command\r\n> ".iter().copied())
            .collect::<Vec<u8>>()
    );
    assert_eq!(h.m.serial_room(), SERIAL_IN_LIMIT);
}

#[test]
fn r0_gets_one_reply_when_the_current_client_leaves_and_the_next_one_has_data() {
    // Issue 7, defect 1, in virtual time: P5=11 and the legacy P7=1 loop.
    for (mode, more) in [(11, &b""[..]), (1, b"P7=1\r")] {
        let mut h = H::joined();
        let l = h.tcp_server(0, 9100, mode);
        assert_eq!(h.send(more), OK.repeat(more.len() / 5));
        h.two_clients_second_with_data(l, b"second");
        assert_eq!(h.send(b"R2=10000\rR0\r"), OK, "R0 waits");
        let out = h.net(NetEvent::Closed {
            conn: accepted(1),
            reason: CloseReason::PeerClosed,
        });
        let want = [CLOSED, b"\r\n[TCP SVR] Accepted 127.0.0.9:9100\r\n> "].concat();
        assert_eq!(
            out.escape_ascii().to_string(),
            want.escape_ascii().to_string()
        );
        assert_eq!(h.advance(20_000), b"", "no second reply");
        assert_eq!(h.send(b"R0\r"), ok("second"));
    }
}

#[test]
fn an_s3_cut_short_by_the_peer_reports_what_went_out() {
    let mut h = H::joined();
    let conn = h.connect_tcp(7000);
    let mut req = b"S3=1460\r".to_vec();
    req.extend_from_slice(&[b'q'; 1460]);
    for _ in 0..44 {
        assert_eq!(h.send(&req), ok("1460"));
    }
    h.ops();
    // 1136 bytes fit; the rest waits for room, then the peer resets the connection.
    assert_eq!(h.send(&req), b"");
    let room = io::SEND_WINDOW - 44 * 1460;
    match h.ops().as_slice() {
        [NetOp::Send { data, .. }] => assert_eq!(data.len(), room),
        other => panic!("{other:?}"),
    }
    let reset = CloseReason::Error("reset".into());
    assert_eq!(
        h.net(NetEvent::Closed {
            conn,
            reason: reset
        }),
        ok(&room.to_string())
    );
    assert_eq!(h.send(&req), CLOSED);
}

#[test]
fn a_store_write_confirmed_after_its_timeout_still_programs_the_item() {
    let mut h = H::new();
    let out = h.send(format!("PG=0,0,{:04}\r", PEM_CERT.len()).as_bytes());
    assert_eq!(out, b"");
    assert_eq!(h.send(PEM_CERT), b"");
    let op = h.m.poll_store().expect("a store op");
    assert_eq!(
        h.advance(30_000),
        b"\r\n[CERTS  ] Failed to write to iFlash: 1\r\nERROR: Unknown Error\r\nUsage: PG <set>,<0=Root CA/1=Certificate/2=Key>,<length>\r\n> "
    );
    assert_eq!(h.send(b"PE=0\r"), ok("1,1,1"));
    // The disk was slow, not broken: the one-time slot is used after all.
    h.m.handle_stored(op.req(), Ok(()), h.now);
    assert_eq!(
        h.m.take_serial(),
        b"",
        "no reply for a command already answered"
    );
    assert_eq!(h.send(b"PE=0\r"), ok("0,1,1"));
}

// ---- line, power, transcript -------------------------------------------------------------------

#[test]
fn u0_switches_the_line_after_its_reply_and_holds_later_commands() {
    let mut h = H::new();
    assert_eq!(h.m.line_baud(), 115_200);
    assert_eq!(h.send(b"U2=921600\r"), OK);
    assert!(h.line_ops.is_empty(), "U2 only stages the rate");
    // U0 answers at the old rate; what follows waits until the driver has switched.
    h.m.handle_serial(b"U0\rI?\r", h.now);
    assert_eq!(h.m.take_serial(), OK);
    assert_eq!(h.m.take_serial(), b"", "I? waits for the switch");
    assert_eq!(h.m.poll_line_op(), Some(LineOp::SetBaud(921_600)));
    assert_eq!(h.m.line_baud(), 921_600);
    h.m.handle_output_taken(h.now);
    assert!(h.m.take_serial().starts_with(b"\r\nISM43362"));
    assert_eq!(h.send(b"U?\r"), ok("0,921600,8,None,1,Normal"));
    // ZR restores the power-up rate (nothing was saved): the line goes back too.
    h.send(b"ZR\r");
    assert_eq!(h.line_ops, vec![LineOp::SetBaud(115_200)]);
}

#[test]
fn power_cycle_forgets_the_line_and_everything_unsaved() {
    let mut h = H::joined();
    let conn = h.connect_tcp(7000);
    h.send(b"ZN=Temp\r");
    // Half a command in flight is lost with the power.
    h.send(b"I");
    h.m.power_cycle(h.now);
    assert_eq!(h.ops(), vec![abort(conn)]);
    let out = h.m.take_serial();
    assert!(
        out.starts_with(b"\r\n                eS-WiFi"),
        "{}",
        out.escape_ascii()
    );
    assert!(out.ends_with(b"\r\n> "));
    // "?" alone (the help table, issue 10), not "I?": the "I" was lost.
    assert!(h.send(b"?\r").starts_with(b"\r\nConsole Commands:\r\n"));
    assert_eq!(h.send(b"CS\r"), ok("0"));
    assert!(h.send(b"I?\r").ends_with(b",Inventek eS-WiFi\r\nOK\r\n> "));
}

#[test]
fn transcript_records_both_directions_and_redacts_secrets() {
    let mut h = H::new();
    h.m.enable_trace();
    h.send(b"C2=hunter22\rC?\rPG=0,2,0005\rk3y!!");
    let op = h.m.poll_store().expect("a store write");
    h.m.handle_stored(op.req(), Ok(()), h.now);
    h.m.take_serial();
    h.send(b"\x02junk\r");
    let recs: Vec<(TraceKind, String)> = std::iter::from_fn(|| h.m.poll_trace())
        .map(|r| (r.kind, r.text))
        .collect();
    let all = format!("{recs:?}");
    assert!(!all.contains("hunter22"), "{all}");
    assert!(!all.contains("k3y"), "{all}");
    let ins: Vec<&str> = recs
        .iter()
        .filter(|(k, _)| *k == TraceKind::In)
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(
        ins,
        vec![
            "C2=<8 bytes hidden>\\r",
            "C?\\r",
            "PG=0,2,0005\\r",
            "[payload of 5 bytes redacted]",
            // Not a command: shown by its length (it may be key material, or `C2 secret`).
            "<5 bytes hidden: not a command>\\r",
        ]
    );
    let outs: Vec<&str> = recs
        .iter()
        .filter(|(k, _)| *k == TraceKind::Out)
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(outs[0], "\\r\\n\\r\\nOK\\r\\n> ");
    assert!(
        outs[1].starts_with("\\r\\n,<passphrase hidden>,0,1"),
        "{}",
        outs[1]
    );
    assert_eq!(
        outs.last().unwrap(),
        &"\\r\\n\\r\\nERROR: Unknown Command\\r\\n> "
    );
}

#[test]
fn status_summarises_the_module() {
    let mut h = H::joined();
    h.connect_tcp(7000);
    h.send(b"R2=1000\rR0\r");
    let s = h.m.status();
    assert!(s.joined);
    assert_eq!(s.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(s.sockets, vec!["open", "idle", "idle", "idle"]);
    assert_eq!(s.busy, Some("read"));
}
