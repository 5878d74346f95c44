//! The WICED Wi-Fi Example Protocol (WWEP, WW101 chapter 6) for the end-to-end tests: the protocol
//! engine (a register database answering `A…`/`X`), a packet framer for byte streams, and a WWEP
//! server on 127.0.0.1 serving the plain protocol on one port and TLS on another, both on the same
//! database (as the class server does on 27708 and 40508).
//!
//! Protocol (ASCII): `W<dev 4 hex><reg 2 hex><value 4 hex>` writes, `R<dev 4 hex><reg 2 hex>` reads.
//! The server answers `A` followed by the request's fields (for a read: with the stored value as
//! 4 upper-case hex digits), or `X` alone for an illegal packet or a read of a register never
//! written. Each device id has its own 256 registers.
//!
//! The TLS side reuses `eswifi_test_support::tls` (its test PKI, rustls server configuration and
//! server loop). Used as `mod wwep;` from the WWEP test files. Everything is
//! bounded in time: servers stop on drop or after [`WWEP_LIFETIME`] (TLS: `TLS_SERVER_LIFETIME`).

#![allow(dead_code)]

use eswifi_test_support::tls::{Action, App, ServerLog, TlsServer, Versions};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---- protocol engine ----------------------------------------------------------------------------

/// Length of a write request (`W` + 4 + 2 + 4).
pub const WRITE_LEN: usize = 11;
/// Length of a read request (`R` + 4 + 2).
pub const READ_LEN: usize = 7;
/// The answer to an illegal packet or a read of a register never written.
pub const FAILED: &[u8] = b"X";

/// A legal WWEP request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Write { dev: u16, reg: u8, value: u16 },
    Read { dev: u16, reg: u8 },
}

fn hex_field(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
}

/// Parse one packet; `None` when it is not a legal request.
pub fn parse(packet: &[u8]) -> Option<Request> {
    match packet.first()? {
        b'W' if packet.len() == WRITE_LEN => Some(Request::Write {
            dev: hex_field(&packet[1..5])? as u16,
            reg: hex_field(&packet[5..7])? as u8,
            value: hex_field(&packet[7..11])? as u16,
        }),
        b'R' if packet.len() == READ_LEN => Some(Request::Read {
            dev: hex_field(&packet[1..5])? as u16,
            reg: hex_field(&packet[5..7])? as u8,
        }),
        _ => None,
    }
}

/// `W<dev><reg><value>` in upper-case hex.
pub fn write_req(dev: u16, reg: u8, value: u16) -> Vec<u8> {
    format!("W{dev:04X}{reg:02X}{value:04X}").into_bytes()
}

/// `R<dev><reg>` in upper-case hex.
pub fn read_req(dev: u16, reg: u8) -> Vec<u8> {
    format!("R{dev:04X}{reg:02X}").into_bytes()
}

/// The `A` answer carrying `dev`, `reg` and `value` (what a write and a successful read return).
pub fn accepted(dev: u16, reg: u8, value: u16) -> Vec<u8> {
    format!("A{dev:04X}{reg:02X}{value:04X}").into_bytes()
}

/// The WW101 device id: the 16-bit sum of the six MAC bytes, from `Z5`'s `AA:BB:CC:DD:EE:FF`.
pub fn device_id_from_mac(mac: &str) -> u16 {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("MAC {mac:?}: {e}")))
        .collect();
    assert_eq!(bytes.len(), 6, "MAC {mac:?}");
    bytes.iter().fold(0u16, |s, &b| s.wrapping_add(b as u16))
}

/// The register database: a separate 256-register set per device id, empty at first.
#[derive(Default, Debug, Clone)]
pub struct Registers {
    map: HashMap<(u16, u8), u16>,
}

impl Registers {
    pub fn new() -> Registers {
        Registers::default()
    }

    /// Answer one packet: store a write, look up a read, `X` for anything else.
    pub fn answer(&mut self, packet: &[u8]) -> Vec<u8> {
        match parse(packet) {
            Some(Request::Write { dev, reg, value }) => {
                self.map.insert((dev, reg), value);
                // `A` and the request's fields, exactly as sent.
                [b"A", &packet[1..]].concat()
            }
            Some(Request::Read { dev, reg }) => match self.map.get(&(dev, reg)) {
                Some(v) => {
                    let mut a = [b"A", &packet[1..]].concat();
                    a.extend_from_slice(format!("{v:04X}").as_bytes());
                    a
                }
                None => FAILED.to_vec(),
            },
            None => FAILED.to_vec(),
        }
    }

    pub fn get(&self, dev: u16, reg: u8) -> Option<u16> {
        self.map.get(&(dev, reg)).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

// ---- framing on a byte stream ---------------------------------------------------------------------

/// How long a partial packet may sit without more bytes before it counts as complete (and illegal).
pub const IDLE_END: Duration = Duration::from_millis(150);

/// Cuts a TCP byte stream into WWEP packets: a `W` packet is 11 bytes and an `R` packet 7; CR/LF
/// between packets is skipped and ends a shorter packet; a packet starting with anything else runs
/// to the next CR/LF or to the end of what arrived; a partial packet ends after [`IDLE_END`]
/// without more bytes, or at EOF.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    last: Instant,
}

impl Default for Framer {
    fn default() -> Self {
        Framer {
            buf: Vec::new(),
            last: Instant::now(),
        }
    }
}

fn is_eol(b: &u8) -> bool {
    *b == b'\r' || *b == b'\n'
}

impl Framer {
    pub fn push(&mut self, data: &[u8], now: Instant) {
        self.buf.extend_from_slice(data);
        self.last = now;
    }

    /// The next complete packet. With `eof`, a partial packet is complete.
    pub fn next(&mut self, now: Instant, eof: bool) -> Option<Vec<u8>> {
        let skip = self.buf.iter().take_while(|b| is_eol(b)).count();
        self.buf.drain(..skip);
        let first = *self.buf.first()?;
        let need = match first {
            b'W' => WRITE_LEN,
            b'R' => READ_LEN,
            _ => usize::MAX,
        };
        let eol = self.buf.iter().position(is_eol);
        let end = match eol {
            Some(e) if e < need => e,
            _ if self.buf.len() >= need => need,
            _ if eof || now.duration_since(self.last) >= IDLE_END => self.buf.len(),
            _ => return None,
        };
        Some(self.buf.drain(..end).collect())
    }
}

// ---- the server ---------------------------------------------------------------------------------

/// Longest a WWEP server runs, even if never dropped.
pub const WWEP_LIFETIME: Duration = Duration::from_secs(150);

/// One request and its answer, as the server's console would show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub secure: bool,
    /// The client (plain connections; the TLS server loop does not tell).
    pub peer: Option<SocketAddr>,
    pub request: Vec<u8>,
    pub reply: Vec<u8>,
}

/// What the server saw.
#[derive(Default, Clone, Debug)]
pub struct WwepLog {
    pub transactions: Vec<Transaction>,
    /// Connections accepted on the plain port.
    pub plain_connections: usize,
    /// Errors on plain connections, one line each (TLS: see [`WwepServer::tls_log`]).
    pub errors: Vec<String>,
}

/// Shared state of a running server.
#[derive(Clone)]
pub struct Shared {
    pub db: Arc<Mutex<Registers>>,
    pub log: Arc<Mutex<WwepLog>>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
}

impl Shared {
    pub fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline
    }

    pub fn note_error(&self, e: String) {
        self.log.lock().unwrap().errors.push(e);
    }
}

/// One WWEP conversation: frames received bytes, answers from the shared database, logs.
pub struct Conversation {
    framer: Framer,
    shared: Shared,
    peer: Option<SocketAddr>,
    secure: bool,
}

impl Conversation {
    pub fn new(shared: Shared, peer: Option<SocketAddr>, secure: bool) -> Conversation {
        Conversation {
            framer: Framer::default(),
            shared,
            peer,
            secure,
        }
    }

    /// Feed received bytes (empty on a tick without data); returns the answers to send.
    pub fn on_bytes(&mut self, data: &[u8], eof: bool) -> Vec<u8> {
        let now = Instant::now();
        if !data.is_empty() {
            self.framer.push(data, now);
        }
        let mut out = Vec::new();
        while let Some(packet) = self.framer.next(now, eof) {
            let reply = self.shared.db.lock().unwrap().answer(&packet);
            self.shared
                .log
                .lock()
                .unwrap()
                .transactions
                .push(Transaction {
                    secure: self.secure,
                    peer: self.peer,
                    request: packet,
                    reply: reply.clone(),
                });
            out.extend_from_slice(&reply);
        }
        out
    }
}

/// A WWEP server on 127.0.0.1: plain on [`WwepServer::plain_port`], TLS (the test PKI's server
/// certificate, signed by [`WwepServer::ca_pem`]) on [`WwepServer::tls_port`], one database. Every
/// connection runs on its own thread.
pub struct WwepServer {
    plain: SocketAddr,
    tls: TlsServer,
    ca_pem: String,
    shared: Shared,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptors: Vec<JoinHandle<()>>,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn acceptor<F>(
    listener: TcpListener,
    shared: Shared,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    f: F,
) -> JoinHandle<()>
where
    F: Fn(TcpStream, SocketAddr, Shared) + Send + Sync + 'static,
{
    let f = Arc::new(f);
    std::thread::spawn(move || {
        while shared.running() {
            match listener.accept() {
                Ok((stream, peer)) => {
                    let (f, s) = (f.clone(), shared.clone());
                    let t = std::thread::spawn(move || f(stream, peer, s));
                    threads.lock().unwrap().push(t);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => {
                    shared.note_error(format!("accept: {e}"));
                    std::thread::sleep(Duration::from_millis(5))
                }
            }
        }
    })
}

/// Plain WWEP on one accepted connection, until the client closes or the server stops.
fn serve_plain(mut sock: TcpStream, peer: SocketAddr, shared: Shared) {
    shared.log.lock().unwrap().plain_connections += 1;
    if !eswifi_test_support::harness::blocking_with_tick(&sock, Duration::from_millis(20)) {
        return;
    }
    let mut conv = Conversation::new(shared.clone(), Some(peer), false);
    let mut buf = [0u8; 4096];
    while shared.running() {
        let (data, eof): (&[u8], bool) = match sock.read(&mut buf) {
            Ok(0) => (&[], true),
            Ok(n) => (&buf[..n], false),
            Err(e) if is_timeout(&e) => (&[], false),
            Err(e) => {
                shared.note_error(format!("plain {peer}: read: {e}"));
                return;
            }
        };
        let out = conv.on_bytes(data, eof);
        if !out.is_empty() {
            if let Err(e) = sock.write_all(&out) {
                shared.note_error(format!("plain {peer}: write: {e}"));
                return;
            }
        }
        if eof {
            return;
        }
    }
}

/// Secure WWEP on one TLS connection (run by `eswifi_test_support::tls`'s server loop). A TLS record is a
/// message: the end of the plaintext that arrived also ends a partial packet.
struct SecureWwep(Conversation);

impl App for SecureWwep {
    fn on_data(&mut self, data: &[u8]) -> Action {
        let mut out = self.0.on_bytes(data, false);
        out.extend(self.0.on_bytes(&[], true));
        Action::send(out)
    }
}

impl WwepServer {
    pub fn start() -> WwepServer {
        let plain = TcpListener::bind("127.0.0.1:0").expect("bind WWEP plain port");
        plain.set_nonblocking(true).expect("nonblocking listener");
        let shared = Shared {
            db: Arc::new(Mutex::new(Registers::new())),
            log: Arc::new(Mutex::new(WwepLog::default())),
            stop: Arc::new(AtomicBool::new(false)),
            deadline: Instant::now() + WWEP_LIFETIME,
        };
        let threads = Arc::new(Mutex::new(Vec::new()));
        let pki = eswifi_test_support::tls::pki();
        let tls = {
            let shared = shared.clone();
            TlsServer::start(
                eswifi_test_support::tls::server_config(&pki.server, None, Versions::Both),
                move || Box::new(SecureWwep(Conversation::new(shared.clone(), None, true))),
            )
        };
        WwepServer {
            plain: plain.local_addr().unwrap(),
            ca_pem: pki.ca.cert_pem.clone(),
            acceptors: vec![acceptor(
                plain,
                shared.clone(),
                threads.clone(),
                serve_plain,
            )],
            tls,
            shared,
            threads,
        }
    }

    pub fn plain_port(&self) -> u16 {
        self.plain.port()
    }

    pub fn tls_port(&self) -> u16 {
        self.tls.port()
    }

    /// What the TLS port saw: handshakes (sessions), errors.
    pub fn tls_log(&self) -> ServerLog {
        self.tls.log()
    }

    /// [`WwepServer::tls_log`] once `pred` holds (polled, at most `timeout`).
    pub fn wait_tls_log(&self, timeout: Duration, pred: impl Fn(&ServerLog) -> bool) -> ServerLog {
        self.tls.wait_log(timeout, pred)
    }

    /// The root CA (PEM) that signed the TLS port's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn log(&self) -> WwepLog {
        self.shared.log.lock().unwrap().clone()
    }

    /// The stored value of a register, as the server's database has it.
    pub fn register(&self, dev: u16, reg: u8) -> Option<u16> {
        self.shared.db.lock().unwrap().get(dev, reg)
    }

    /// Poll the log (every 10 ms, at most `timeout`) until `pred` holds; returns the last log. For
    /// waiting on something certain to happen, never for timing assertions.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&WwepLog) -> bool) -> WwepLog {
        eswifi_test_support::harness::wait_for(timeout, || self.log(), pred)
    }
}

// ---- a WWEP client for the module-side server -----------------------------------------------------

/// A byte stream a WWEP client talks over: plain TCP, or TLS over TCP.
pub trait Duplex: Read + Write + Send {}

impl<T: Read + Write + Send> Duplex for T {}

/// A WWEP client, plain or TLS (the test's side of exercises 6.4, 6.5 and 6.7).
pub struct WwepClient {
    pub stream: Box<dyn Duplex>,
    local_port: u16,
}

fn tcp_to(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = stream.set_nodelay(true);
    stream
}

impl WwepClient {
    pub fn connect(port: u16) -> WwepClient {
        let stream = tcp_to(port);
        let local_port = stream.local_addr().unwrap().port();
        WwepClient {
            stream: Box::new(stream),
            local_port,
        }
    }

    /// Connect over TLS, trusting `ca_pem` for the server (named `localhost`) and presenting
    /// `cert` if given; the handshake is done before this returns. `Err` when the handshake fails
    /// as far as the client can tell (with TLS 1.3 a server's refusal of the client certificate
    /// shows only on the first read).
    pub fn connect_tls(
        port: u16,
        ca_pem: &str,
        cert: Option<&eswifi_test_support::tls::Identity>,
    ) -> io::Result<WwepClient> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.expect("CA PEM")).expect("CA");
        }
        let b = rustls::ClientConfig::builder().with_root_certificates(roots);
        let config = match cert {
            None => b.with_no_client_auth(),
            Some(id) => {
                let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client certificate PEM");
                let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("key PEM");
                b.with_client_auth_cert(chain, key)
                    .expect("client certificate")
            }
        };
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut sock = tcp_to(port);
        let local_port = sock.local_addr().unwrap().port();
        for _ in 0..100 {
            if !conn.is_handshaking() {
                break;
            }
            conn.complete_io(&mut sock)?;
        }
        Ok(WwepClient {
            stream: Box::new(rustls::StreamOwned::new(conn, sock)),
            local_port,
        })
    }

    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    pub fn send(&mut self, packet: &[u8]) {
        self.stream.write_all(packet).expect("WWEP client send");
    }

    /// Read one answer: `X`, or `A` and the rest of an answer to `request`.
    pub fn answer_to(&mut self, request: &[u8]) -> Vec<u8> {
        let mut first = [0u8; 1];
        self.stream
            .read_exact(&mut first)
            .unwrap_or_else(|e| panic!("reading the answer to {:?}: {e}", esc(request)));
        if first[0] != b'A' {
            return first.to_vec();
        }
        let rest = match request.first() {
            Some(b'W') | Some(b'R') => WRITE_LEN - 1,
            _ => 0,
        };
        let mut v = vec![0u8; rest];
        self.stream
            .read_exact(&mut v)
            .unwrap_or_else(|e| panic!("reading the answer to {:?}: {e}", esc(request)));
        [&first[..], &v].concat()
    }

    /// Send `request` and read its answer.
    pub fn transact(&mut self, request: &[u8]) -> Vec<u8> {
        self.send(request);
        self.answer_to(request)
    }
}

fn esc(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}
