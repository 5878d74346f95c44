//! TLS client sockets in memory and in virtual time: the test plays the driver between the module
//! and a rustls server, as rustls's own tests do. No sockets, no clock; every handshake outcome the
//! module distinguishes has its own case.

use eswifi_core::config::Config;
use eswifi_core::item::Item;
use eswifi_core::module::certs::CertSets;
use eswifi_core::module::io::{CloseHow, ConnId, NetEvent, NetOp};
use eswifi_core::module::Module;
use rustls::{ServerConfig, ServerConnection};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eswifi_test_support::pki::{any_client_cert_server, pki, server_config, Identity, Versions};

const OK: &[u8] = b"\r\n\r\nOK\r\n> ";
const SIMPLE_FAIL: &[u8] = b"\r\n[TCP SSL] Simple context, failed to connect\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> ";
const CONN_ISSUE: &[u8] =
    b"\r\n[TCP SSL] Connection issue\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> ";
const UNABLE: &[u8] = b"\r\n[TCP SSL] Unable to enable TLS!\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> ";

fn ok(p: &[u8]) -> Vec<u8> {
    [b"\r\n", p, b"\r\nOK\r\n> "].concat()
}

fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
}

/// What plays the other end.
enum Peer {
    Tls(Box<ServerConnection>),
    /// Answers the first bytes it gets with this, then nothing (not a TLS server).
    Plain(Option<Vec<u8>>),
}

/// A module joined to a network, with one TLS server behind the test's hands.
struct Link {
    m: Module,
    now: Instant,
    peer: Peer,
    conn: Option<ConnId>,
    /// What the server's application read.
    server_got: Vec<u8>,
    /// The server's own verdict on the handshake, if it failed.
    server_error: Option<rustls::Error>,
    closed: Vec<CloseHow>,
}

impl Link {
    fn new(sets: CertSets, peer: Peer, unix: Duration) -> Link {
        let now = Instant::now();
        let mut m = Module::new(&Config::default(), now, unix);
        m.set_cert_sets(sets);
        m.take_serial();
        let mut l = Link {
            m,
            now,
            peer,
            conn: None,
            server_got: Vec::new(),
            server_error: None,
            closed: Vec::new(),
        };
        l.send(b"C1=lab\rC0\r");
        l
    }

    fn tls(sets: CertSets, config: Arc<ServerConfig>) -> Link {
        let server = ServerConnection::new(config).expect("server connection");
        Link::new(sets, Peer::Tls(Box::new(server)), unix_now())
    }

    fn send(&mut self, b: &[u8]) -> Vec<u8> {
        self.m.handle_serial(b, self.now);
        self.pump();
        self.m.take_serial()
    }

    fn advance(&mut self, ms: u64) -> Vec<u8> {
        self.now += Duration::from_millis(ms);
        if self.m.poll_timeout().is_some_and(|t| t <= self.now) {
            self.m.handle_timeout(self.now);
        }
        self.pump();
        self.m.take_serial()
    }

    /// `P6=1` on a TLS socket with verification level `p9`.
    fn open(&mut self, p9: u8) -> Vec<u8> {
        self.send(format!("P1=3\rP3=127.0.0.1\rP4=8443\rP9={p9}\r").as_bytes());
        self.send(b"P6=1\r")
    }

    /// Be the driver until nothing moves: ops to the server, the server's bytes to the module.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(op) = self.m.poll_op() {
                moved = true;
                match op {
                    NetOp::Connect { conn, remote, .. } => {
                        self.conn = Some(conn);
                        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
                        let peer = Some(remote);
                        self.m
                            .handle_net(NetEvent::Connected { conn, local, peer }, self.now);
                    }
                    NetOp::Send {
                        conn, seq, data, ..
                    } => {
                        self.deliver_to_server(&data);
                        self.m.handle_net(NetEvent::Sent { conn, seq }, self.now);
                    }
                    NetOp::Close { how, .. } => self.closed.push(how),
                    other => panic!("unexpected {other:?}"),
                }
            }
            let back = self.server_output();
            if let (false, Some(conn)) = (back.is_empty(), self.conn) {
                moved = true;
                self.m
                    .handle_net(NetEvent::Data { conn, data: back }, self.now);
            }
            if !moved {
                return;
            }
        }
        panic!("the link never settled");
    }

    fn deliver_to_server(&mut self, mut data: &[u8]) {
        match &mut self.peer {
            Peer::Tls(s) => {
                while !data.is_empty() {
                    if s.read_tls(&mut data).expect("server read_tls") == 0 {
                        return;
                    }
                    if let Err(e) = s.process_new_packets() {
                        self.server_error.get_or_insert(e);
                        return;
                    }
                    let mut buf = Vec::new();
                    let _ = s.reader().read_to_end(&mut buf);
                    self.server_got.extend(buf);
                }
            }
            Peer::Plain(answer) => {
                if let Some(a) = answer.take() {
                    self.server_got.extend_from_slice(data);
                    *answer = Some(a);
                }
            }
        }
    }

    fn server_output(&mut self) -> Vec<u8> {
        match &mut self.peer {
            Peer::Tls(s) => {
                let mut out = Vec::new();
                while s.wants_write() {
                    s.write_tls(&mut out).expect("server write_tls");
                }
                out
            }
            Peer::Plain(answer) if !self.server_got.is_empty() => answer.take().unwrap_or_default(),
            Peer::Plain(_) => Vec::new(),
        }
    }

    fn server(&mut self) -> &mut ServerConnection {
        match &mut self.peer {
            Peer::Tls(s) => s,
            Peer::Plain(_) => panic!("not a TLS peer"),
        }
    }
}

fn set0(ca: Option<&Identity>, client: Option<(&[u8], &[u8])>) -> CertSets {
    let mut sets = CertSets::default();
    if let Some(ca) = ca {
        sets.put(0, Item::Ca, ca.cert_pem.clone().into_bytes());
    }
    if let Some((cert, key)) = client {
        sets.put(0, Item::Cert, cert.to_vec());
        sets.put(0, Item::Key, key.to_vec());
    }
    sets
}

fn full_set0() -> CertSets {
    let p = pki();
    set0(
        Some(&p.ca),
        Some((p.client.cert_pem.as_bytes(), p.client.key_pem.as_bytes())),
    )
}

#[test]
fn unverified_handshake_then_data_both_ways_and_a_clean_close() {
    let p = pki();
    let mut l = Link::tls(
        CertSets::default(),
        server_config(&p.self_signed, None, Versions::Both),
    );
    assert_eq!(l.open(0), OK);
    assert_eq!(l.send(b"S3=5\rhello"), ok(b"5"));
    assert_eq!(l.server_got, b"hello");
    l.server().writer().write_all_plain(b"world\r\n> binary");
    l.pump();
    assert_eq!(l.send(b"R0\r"), ok(b"world\r\n> binary"));
    assert_eq!(l.send(b"P6=0\r"), OK);
    assert_eq!(
        l.closed,
        vec![CloseHow::Drain],
        "graceful, after close_notify"
    );
    l.pump();
    assert!(
        matches!(l.server().reader().read(&mut [0u8; 1]), Ok(0),),
        "the server saw close_notify"
    );
}

#[test]
fn unknown_issuer_fails_with_the_simple_context_reply() {
    let p = pki();
    // P9=1 verifies against set 0's CA; the server's certificate is self-signed.
    let mut l = Link::tls(
        set0(Some(&p.ca), None),
        server_config(&p.self_signed, None, Versions::Both),
    );
    assert_eq!(l.open(1), SIMPLE_FAIL);
    assert_eq!(l.closed, vec![CloseHow::Abort]);
    assert_eq!(l.send(b"P?\r")[..6], b"\r\n3,0."[..], "still answering");
}

#[test]
fn certificate_validity_follows_the_module_clock() {
    let p = pki();
    // The server certificate is valid from 2020 to 2099; a module whose wall clock says 2100
    // finds it expired, one that says today accepts it.
    let in_2100 = Duration::from_secs(4_102_444_800);
    let server = ServerConnection::new(server_config(&p.server, None, Versions::Both)).unwrap();
    let mut l = Link::new(
        set0(Some(&p.ca), None),
        Peer::Tls(Box::new(server)),
        in_2100,
    );
    assert_eq!(l.open(1), SIMPLE_FAIL);
    let mut l = Link::tls(
        set0(Some(&p.ca), None),
        server_config(&p.server, None, Versions::Both),
    );
    assert_eq!(l.open(1), OK);
}

#[test]
fn server_rejecting_the_client_certificate_fails_p6_in_both_versions() {
    let p = pki();
    for v in [Versions::Tls13, Versions::Tls12] {
        // The server wants a client certificate from the other CA.
        let config = server_config(&p.server, Some(&p.other_ca.cert_pem), v);
        let mut l = Link::tls(full_set0(), config);
        assert_eq!(l.open(2), CONN_ISSUE, "{v:?}");
        assert!(l.server_error.is_some(), "{v:?}: the server refused us");
        assert_eq!(l.closed, vec![CloseHow::Abort]);
    }
}

#[test]
fn tls13_client_auth_waits_for_the_server_or_one_second() {
    let p = pki();
    // This server accepts the certificate and then says nothing (no session tickets): the module
    // cannot know it was accepted until the grace ends.
    let mut config = (*server_config(&p.server, Some(&p.ca.cert_pem), Versions::Tls13)).clone();
    config.send_tls13_tickets = 0;
    let mut l = Link::tls(full_set0(), Arc::new(config));
    assert_eq!(l.open(2), b"");
    assert!(l.server_error.is_none());
    assert_eq!(l.advance(999), b"");
    assert_eq!(l.advance(1), OK);
    // With tickets, the server's answer ends the wait at once.
    let config = server_config(&p.server, Some(&p.ca.cert_pem), Versions::Tls13);
    let mut l = Link::tls(full_set0(), config);
    assert_eq!(l.open(2), OK);
}

#[test]
fn a_peer_that_does_not_speak_tls_fails_the_handshake() {
    let peer = Peer::Plain(Some(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()));
    let mut l = Link::new(CertSets::default(), peer, unix_now());
    assert_eq!(l.open(0), SIMPLE_FAIL);
    assert!(
        l.server_got.starts_with(&[0x16, 0x03]),
        "a ClientHello went out"
    );
}

#[test]
fn a_peer_closing_during_the_handshake_fails_it() {
    let p = pki();
    let mut l = Link::tls(
        CertSets::default(),
        server_config(&p.server, None, Versions::Both),
    );
    l.send(b"P1=3\rP3=127.0.0.1\rP4=8443\rP9=0\r");
    // Let the ClientHello out but hold the server's answer: the TCP connection ends instead.
    l.m.handle_serial(b"P6=1\r", l.now);
    let conn = match l.m.poll_op() {
        Some(NetOp::Connect { conn, remote, .. }) => (conn, remote),
        other => panic!("{other:?}"),
    };
    let (conn, remote) = conn;
    let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
    let peer = Some(remote);
    l.m.handle_net(NetEvent::Connected { conn, local, peer }, l.now);
    l.m.handle_net(
        NetEvent::Closed {
            conn,
            reason: eswifi_core::module::io::CloseReason::PeerClosed,
        },
        l.now,
    );
    assert_eq!(l.m.take_serial(), SIMPLE_FAIL);
}

#[test]
fn an_x509_v1_client_certificate_is_presented() {
    let p = pki();
    let client = eswifi_test_support::v1::v1_cert("eswifi v1 client", None);
    assert_eq!(
        x509_parser::parse_x509_certificate(&client.cert_der)
            .unwrap()
            .1
            .version()
            .0,
        0,
        "really version 1"
    );
    for v in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let sets = set0(
            Some(&p.ca),
            Some((client.cert_pem().as_bytes(), client.key_pem().as_bytes())),
        );
        let mut l = Link::tls(sets, any_client_cert_server(&p.server, v));
        let r = l.open(2);
        assert_eq!(r, OK, "{v:?} {:?}", l.server_error);
        let seen = l
            .server()
            .peer_certificates()
            .expect("a client certificate");
        assert_eq!(seen[0].as_ref(), client.cert_der.as_slice());
    }
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused_before_connecting() {
    let p = pki();
    let sets = set0(
        Some(&p.ca),
        Some((
            p.client.cert_pem.as_bytes(),
            p.other_client.key_pem.as_bytes(),
        )),
    );
    let mut l = Link::tls(sets, server_config(&p.server, None, Versions::Both));
    assert_eq!(l.open(2), UNABLE);
    assert!(l.conn.is_none(), "no connection attempted");
}

/// Plaintext written by the test's server application.
trait WritePlain {
    fn write_all_plain(&mut self, data: &[u8]);
}

impl WritePlain for rustls::Writer<'_> {
    fn write_all_plain(&mut self, data: &[u8]) {
        std::io::Write::write_all(self, data).expect("server write");
    }
}
