//! TLS servers (`[tls] server`, issue 10) in memory and in virtual time: the test plays the driver
//! and rustls clients connecting to a `P1=3` server; accepted connections reach the module as plain
//! TCP, and the module drives the server sessions. No sockets, no clock.

use eswifi_core::config::Config;
use eswifi_core::item::Item;
use eswifi_core::module::certs::CertSets;
use eswifi_core::module::io::{CloseHow, ConnId, NetEvent, NetOp, ACCEPTED_BIT};
use eswifi_core::module::Module;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eswifi_test_support::pki::{pki, Identity};

const OK: &[u8] = b"\r\n\r\nOK\r\n> ";
const PORT: u16 = 8443;

fn ok(p: &str) -> Vec<u8> {
    format!("\r\n{p}\r\nOK\r\n> ").into_bytes()
}

fn p5_fail(line: &str) -> Vec<u8> {
    format!("\r\n{line}\r\nERROR: Unknown Error\r\nUsage: P5 <0=Stop/1=Start/10=Next client/11=Start multi-accept>\r\n> ").into_bytes()
}

fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
}

/// A rustls client of the module's server, as a host on the network would run it.
struct Client {
    tls: ClientConnection,
    /// Plaintext the client read.
    got: Vec<u8>,
    error: Option<rustls::Error>,
}

/// A client trusting the test CA, presenting `cert` if given.
fn client(cert: Option<&Identity>) -> Client {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki().ca.cert_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = ClientConfig::builder().with_root_certificates(roots);
    let config = match cert {
        None => b.with_no_client_auth(),
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
    };
    let name = ServerName::try_from("localhost").unwrap();
    Client {
        tls: ClientConnection::new(Arc::new(config), name).unwrap(),
        got: Vec::new(),
        error: None,
    }
}

/// A joined module with a set 0 holding the test server's identity (and the CA), and the clients
/// the test connects to its server.
struct Srv {
    m: Module,
    now: Instant,
    listener: Option<ConnId>,
    clients: BTreeMap<ConnId, Client>,
    closed: Vec<(ConnId, CloseHow)>,
}

fn set0(ca: bool, cert: bool, key: bool) -> CertSets {
    let p = pki();
    let mut sets = CertSets::default();
    if ca {
        sets.put(0, Item::Ca, p.ca.cert_pem.clone().into_bytes());
    }
    if cert {
        sets.put(0, Item::Cert, p.server.cert_pem.clone().into_bytes());
    }
    if key {
        sets.put(0, Item::Key, p.server.key_pem.clone().into_bytes());
    }
    sets
}

impl Srv {
    fn new(server: bool, sets: CertSets) -> Srv {
        let mut cfg = Config::default();
        cfg.tls.server = server;
        cfg.timing.connect_timeout_ms = 2000;
        let now = Instant::now();
        let mut m = Module::new(&cfg, now, unix_now());
        m.set_cert_sets(sets);
        m.take_serial();
        let mut s = Srv {
            m,
            now,
            listener: None,
            clients: BTreeMap::new(),
            closed: Vec::new(),
        };
        assert!(s.send(b"C1=lab\rC0\r").ends_with(b"0,0\r\nOK\r\n> "));
        s
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

    /// `P1=3`, `P9=<p9>`, `P5=1` on socket 0; the reply to `P5=1`.
    fn listen(&mut self, p9: u8) -> Vec<u8> {
        assert_eq!(
            self.send(format!("P0=0\rP1=3\rP2={PORT}\rP8=3\rP9={p9}\r").as_bytes()),
            OK.repeat(5)
        );
        self.send(b"P5=1\r")
    }

    /// A client connects (TCP) and sends its ClientHello; returns its connection id.
    fn connect(&mut self, n: u64, c: Client) -> ConnId {
        let conn = ConnId(ACCEPTED_BIT | n);
        self.clients.insert(conn, c);
        let listener = self.listener.expect("listening");
        let peer = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 20), 50000 + n as u16);
        self.m.handle_net(
            NetEvent::Accepted {
                listener,
                conn,
                peer,
            },
            self.now,
        );
        self.pump();
        conn
    }

    /// Be the driver until nothing moves.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(op) = self.m.poll_op() {
                moved = true;
                match op {
                    NetOp::Listen { conn, local, .. } => {
                        assert_eq!(local.port(), PORT);
                        self.listener = Some(conn);
                        self.m.handle_net(
                            NetEvent::Connected {
                                conn,
                                local,
                                peer: None,
                            },
                            self.now,
                        );
                    }
                    NetOp::Send {
                        conn, seq, data, ..
                    } => {
                        if let Some(c) = self.clients.get_mut(&conn) {
                            c.deliver(&data);
                        }
                        self.m.handle_net(NetEvent::Sent { conn, seq }, self.now);
                    }
                    NetOp::Close { conn, how } => {
                        self.closed.push((conn, how));
                        self.clients.remove(&conn);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            let out: Vec<(ConnId, Vec<u8>)> = self
                .clients
                .iter_mut()
                .map(|(&conn, c)| (conn, c.output()))
                .filter(|(_, d)| !d.is_empty())
                .collect();
            for (conn, data) in out {
                moved = true;
                self.m.handle_net(NetEvent::Data { conn, data }, self.now);
            }
            if !moved {
                return;
            }
        }
        panic!("never settled");
    }

    fn client(&mut self, conn: ConnId) -> &mut Client {
        self.clients.get_mut(&conn).expect("client still connected")
    }
}

impl Client {
    fn deliver(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.tls.read_tls(&mut data) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if let Err(e) = self.tls.process_new_packets() {
                self.error.get_or_insert(e);
                return;
            }
            let mut buf = Vec::new();
            let _ = self.tls.reader().read_to_end(&mut buf);
            self.got.extend(buf);
        }
    }

    fn output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut out).unwrap();
        }
        out
    }

    fn write(&mut self, data: &[u8]) {
        self.tls.writer().write_all(data).unwrap();
    }
}

/// The accept event: the client's address and the server's (listening) port.
fn accepted() -> Vec<u8> {
    format!("\r\n[TCP SVR] Accepted 127.0.0.20:{PORT}\r\n> ").into_bytes()
}

#[test]
fn off_by_default_a_tls_server_is_not_supported() {
    let mut s = Srv::new(false, set0(true, true, true));
    assert_eq!(s.listen(0), p5_fail("Mode not supported."));
    assert!(s.listener.is_none(), "nothing listens");
}

#[test]
fn serves_tls_and_announces_a_client_once_its_handshake_is_done() {
    let mut s = Srv::new(true, set0(false, true, true));
    assert_eq!(s.listen(0), OK);
    assert_eq!(
        s.send(b"P?\r"),
        ok(&format!("3,0.0.0.0,{PORT},0.0.0.0,5025,1,0,3,0,0"))
    );
    // The ClientHello arrives, the handshake runs, then the host is told.
    let conn = s.connect(1, client(None));
    assert!(s.client(conn).error.is_none());
    assert!(!s.client(conn).tls.is_handshaking(), "handshake done");
    assert_eq!(s.m.take_serial(), accepted());
    assert_eq!(
        s.send(b"P?\r"),
        ok(&format!("3,127.0.0.20,{PORT},0.0.0.0,50001,1,0,3,0,0"))
    );
    // Data both ways, in the clear for the host.
    s.client(conn).write(b"W0FAC0B1234");
    s.pump();
    assert_eq!(s.send(b"R0\r"), ok("W0FAC0B1234"));
    assert_eq!(s.send(b"S3=11\rA0FAC0B1234"), ok("11"));
    assert_eq!(s.client(conn).got, b"A0FAC0B1234");
    // The client says goodbye: its data is drained, then -1, and the server keeps listening.
    s.client(conn).write(b"R0FAC0B");
    s.client(conn).tls.send_close_notify();
    s.pump();
    assert_eq!(s.send(b"R0\r"), ok("R0FAC0B"));
    assert_eq!(s.send(b"R0\r"), b"\r\n-1\r\nERROR\r\n> ");
    assert_eq!(
        s.closed,
        vec![(conn, CloseHow::Drain)],
        "close_notify answered"
    );
    let next = s.connect(2, client(None));
    assert_eq!(s.m.take_serial(), accepted());
    s.client(next).write(b"again");
    s.pump();
    assert_eq!(s.send(b"R0\r"), ok("again"));
    // P5=0: the current client gets close_notify, the listener goes.
    assert_eq!(s.send(b"P5=0\r"), OK);
    assert!(s.closed.contains(&(next, CloseHow::Drain)));
}

#[test]
fn p9_2_requires_a_client_certificate_signed_by_the_sets_root_ca() {
    let p = pki();
    let mut s = Srv::new(true, set0(true, true, true));
    assert_eq!(s.listen(2), OK);
    // No certificate, then one from another CA: refused, unannounced, closed.
    let none = s.connect(1, client(None));
    assert!(s.closed.contains(&(none, CloseHow::Abort)));
    let other = s.connect(2, client(Some(&p.other_client)));
    assert!(s.closed.contains(&(other, CloseHow::Abort)));
    assert_eq!(s.m.take_serial(), b"", "neither was announced");
    assert_eq!(s.send(b"R2=0\rR0\r"), OK.repeat(2), "nothing to read");
    // The right one is served.
    let good = s.connect(3, client(Some(&p.client)));
    assert_eq!(s.m.take_serial(), accepted());
    s.client(good).write(b"hello");
    s.pump();
    assert_eq!(s.send(b"R0\r"), ok("hello"));
}

#[test]
fn p9_1_verifies_a_client_certificate_only_if_one_is_presented() {
    let p = pki();
    let mut s = Srv::new(true, set0(true, true, true));
    assert_eq!(s.listen(1), OK);
    s.connect(1, client(None));
    assert_eq!(s.m.take_serial(), accepted());
    assert_eq!(s.send(b"P5=10\r"), OK);
    let bad = s.connect(2, client(Some(&p.other_client)));
    assert!(s.closed.contains(&(bad, CloseHow::Abort)));
    s.connect(3, client(Some(&p.client)));
    assert_eq!(s.m.take_serial(), accepted());
}

#[test]
fn a_failed_handshake_gives_the_next_waiting_client_its_turn() {
    let p = pki();
    let mut s = Srv::new(true, set0(true, true, true));
    assert_eq!(s.listen(2), OK);
    // A client connects but says nothing: it holds the server until the handshake deadline.
    let idle = ConnId(ACCEPTED_BIT | 7);
    let listener = s.listener.unwrap();
    let peer = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 20), 50007);
    s.m.handle_net(
        NetEvent::Accepted {
            listener,
            conn: idle,
            peer,
        },
        s.now,
    );
    let good = s.connect(8, client(Some(&p.client)));
    assert!(
        s.client(good).tls.is_handshaking(),
        "waits behind the silent one"
    );
    assert_eq!(s.advance(1999), b"");
    assert_eq!(s.advance(1), accepted());
    assert!(s.closed.contains(&(idle, CloseHow::Abort)));
    assert!(!s.client(good).tls.is_handshaking());
}

#[test]
fn starting_needs_the_sets_certificate_and_key_and_for_p9_2_its_root_ca() {
    let mut s = Srv::new(true, set0(true, true, false));
    assert_eq!(s.listen(0), p5_fail("[TCP SSL] No cert and/or key found."));
    let mut s = Srv::new(true, set0(false, true, true));
    assert_eq!(s.listen(2), p5_fail("[TCP SSL] No cert and/or key found."));
    // A key that is not the certificate's.
    let mut sets = set0(true, true, false);
    sets.put(0, Item::Key, pki().client.key_pem.clone().into_bytes());
    let mut s = Srv::new(true, sets);
    assert_eq!(s.listen(0), p5_fail("[TCP SSL] Unable to enable TLS!"));
}

#[test]
fn a_tls_server_holds_the_one_tls_socket() {
    let mut s = Srv::new(true, set0(true, true, true));
    assert_eq!(s.listen(0), OK);
    assert_eq!(
        s.send(b"P0=1\rP1=3\rP3=127.0.0.1\rP4=443\rP6=1\r"),
        [
            OK.repeat(4),
            b"\r\n[TCP SSL] In use by socket 0\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> ".to_vec()
        ]
        .concat()
    );
}
