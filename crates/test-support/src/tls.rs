//! TLS support for the end-to-end tests: a small PKI generated with rcgen (once per test binary),
//! rustls servers on 127.0.0.1 that the tests start (threads, bounded in time, stopped on drop), and
//! host-side helpers for the certificate commands (`PG`, `PE`) and TLS sockets (`P1=3` … `P6=1`).
//!
//! Used as `use eswifi_test_support::{harness::*, tls::*};` from each TLS test file.

use crate::harness::*;
use rustls::{ProtocolVersion, ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---- wire replies of the TLS and certificate commands -----------------------------------------

/// `[CERTS   ] Match`: a PG of the bytes an item already holds.
pub const MATCH: &[u8] = b"\r\n[CERTS   ] Match\r\nOK\r\n> ";
/// A PG of different bytes on a one-time-programmable item that is already used.
pub const USED: &[u8] = b"\r\n[CERTS   ] Selected item unavailable (used)\r\nERROR: Unknown Error\r\nUsage: PG <set>,<0=Root CA/1=Certificate/2=Key>,<length>\r\n> ";
/// P6=1 with P9=2 and an item of the active set missing.
pub const NO_CERT: &[u8] = b"\r\n[TCP SSL] No cert and/or key found.\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> ";
/// A failed handshake with P9=0 or P9=1.
pub const SIMPLE_FAIL: &[u8] = b"\r\n[TCP SSL] Simple context, failed to connect\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> ";
/// A failed handshake with P9=2.
pub const CONN_ISSUE: &[u8] =
    b"\r\n[TCP SSL] Connection issue\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> ";

/// P6=1 of a second TLS socket while socket `n` holds the only one.
pub fn in_use(n: u8) -> Vec<u8> {
    err0_with(
        &format!("[TCP SSL] In use by socket {n}"),
        "Unknown Error",
        "P6",
        "<0=Stop/1=Start>",
    )
}

/// `PE` / `PE=<set>` reply.
pub fn pe(fields: impl AsRef<str>) -> Vec<u8> {
    ok(fields.as_ref())
}

pub use crate::pki::*;

/// What a server connection does next.
#[derive(Default, Debug)]
pub struct Action {
    /// Plaintext to send.
    pub send: Vec<u8>,
    /// Send close_notify after `send` (the connection then only drains until the peer closes).
    pub close: bool,
}

impl Action {
    pub fn send(data: impl Into<Vec<u8>>) -> Action {
        Action {
            send: data.into(),
            close: false,
        }
    }
    pub fn send_and_close(data: impl Into<Vec<u8>>) -> Action {
        Action {
            send: data.into(),
            close: true,
        }
    }
}

/// The application a server connection runs once its handshake is done.
pub trait App: Send {
    fn on_open(&mut self) -> Action {
        Action::default()
    }
    fn on_data(&mut self, data: &[u8]) -> Action;
}

/// Echo every byte back.
pub struct Echo;

impl App for Echo {
    fn on_data(&mut self, data: &[u8]) -> Action {
        Action::send(data)
    }
}

/// After the first request bytes (or at once, with `at_open`), send `reply`, then close_notify.
pub struct ReplyThenClose {
    pub reply: Vec<u8>,
    pub at_open: bool,
    done: bool,
}

impl ReplyThenClose {
    pub fn new(reply: &[u8], at_open: bool) -> ReplyThenClose {
        ReplyThenClose {
            reply: reply.to_vec(),
            at_open,
            done: false,
        }
    }
}

impl App for ReplyThenClose {
    fn on_open(&mut self) -> Action {
        if self.at_open {
            self.done = true;
            Action::send_and_close(self.reply.clone())
        } else {
            Action::default()
        }
    }
    fn on_data(&mut self, _data: &[u8]) -> Action {
        if self.done {
            return Action::default();
        }
        self.done = true;
        Action::send_and_close(self.reply.clone())
    }
}

/// A completed server handshake, as the server saw it.
#[derive(Clone, Debug)]
pub struct Session {
    pub sni: Option<String>,
    pub version: Option<ProtocolVersion>,
    /// Subject of the client's end-entity certificate, if one was presented.
    pub client_subject: Option<String>,
    pub client_chain_len: usize,
}

/// What a server observed, for assertions.
#[derive(Default, Clone, Debug)]
pub struct ServerLog {
    /// TCP connections accepted.
    pub accepted: usize,
    pub sessions: Vec<Session>,
    /// Handshake or protocol errors, one line each.
    pub errors: Vec<String>,
    /// Connections that saw the client's close_notify.
    pub close_notify_received: usize,
    /// Connections on which the server sent close_notify.
    pub close_notify_sent: usize,
    /// Plaintext bytes received over all connections.
    pub bytes_in: usize,
}

/// Longest a TLS test server runs, even if never dropped.
pub const TLS_SERVER_LIFETIME: Duration = Duration::from_secs(180);

type AppFactory = Arc<dyn Fn() -> Box<dyn App> + Send + Sync>;

/// A rustls server on 127.0.0.1; every connection runs a fresh [`App`] on its own thread. Stops on
/// drop (or after [`TLS_SERVER_LIFETIME`]).
pub struct TlsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<ServerLog>>,
    acceptor: Option<JoinHandle<()>>,
}

impl TlsServer {
    pub fn start<F>(config: Arc<ServerConfig>, app: F) -> TlsServer
    where
        F: Fn() -> Box<dyn App> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind TLS server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let deadline = Instant::now() + TLS_SERVER_LIFETIME;
        let app: AppFactory = Arc::new(app);
        let acceptor = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            log.lock().unwrap().accepted += 1;
                            let (cfg, app, stop, log) =
                                (config.clone(), app.clone(), stop.clone(), log.clone());
                            // Each connection's thread sees `stop` within a read tick.
                            std::thread::spawn(move || {
                                serve_conn(sock, cfg, app(), &stop, deadline, &log)
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            })
        };
        TlsServer {
            addr,
            stop,
            log,
            acceptor: Some(acceptor),
        }
    }

    /// An echo server.
    pub fn echo(config: Arc<ServerConfig>) -> TlsServer {
        TlsServer::start(config, || Box::new(Echo))
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn log(&self) -> ServerLog {
        self.log.lock().unwrap().clone()
    }

    /// Poll the log (every 10 ms, at most `timeout`) until `pred` holds; returns the last log.
    /// For waiting on events that are certain to come, not for timing assertions.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&ServerLog) -> bool) -> ServerLog {
        crate::harness::wait_for(timeout, || self.log(), pred)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Write everything rustls has queued (blocking, with the socket's write timeout).
fn flush(conn: &mut ServerConnection, sock: &mut TcpStream) -> io::Result<()> {
    let mut rounds = 0;
    while conn.wants_write() {
        rounds += 1;
        if rounds > 100_000 {
            return Err(io::Error::other("flush did not finish"));
        }
        match conn.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn session_of(conn: &ServerConnection) -> Session {
    let chain = conn.peer_certificates().unwrap_or(&[]);
    let client_subject =
        chain.first().map(
            |der| match x509_parser::parse_x509_certificate(der.as_ref()) {
                Ok((_, c)) => c.subject().to_string(),
                Err(e) => format!("<unparseable client certificate: {e}>"),
            },
        );
    Session {
        sni: conn.server_name().map(str::to_string),
        version: conn.protocol_version(),
        client_subject,
        client_chain_len: chain.len(),
    }
}

fn serve_conn(
    mut sock: TcpStream,
    config: Arc<ServerConfig>,
    mut app: Box<dyn App>,
    stop: &AtomicBool,
    deadline: Instant,
    log: &Mutex<ServerLog>,
) {
    let note = |f: &dyn Fn(&mut ServerLog)| f(&mut log.lock().unwrap());
    if !crate::harness::blocking_with_tick(&sock, Duration::from_millis(50)) {
        return;
    }
    let mut conn = match ServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => {
            note(&|l| l.errors.push(format!("ServerConnection::new: {e}")));
            return;
        }
    };
    let mut opened = false;
    let mut closing = false;
    let mut buf = vec![0u8; 65536];
    let apply = |conn: &mut ServerConnection, a: Action, closing: &mut bool| {
        if *closing {
            return;
        }
        if !a.send.is_empty() {
            let _ = conn.writer().write_all(&a.send);
        }
        if a.close {
            *closing = true;
            conn.send_close_notify();
            note(&|l| l.close_notify_sent += 1);
        }
    };
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if let Err(e) = flush(&mut conn, &mut sock) {
            note(&|l| l.errors.push(format!("write: {e}")));
            return;
        }
        match conn.read_tls(&mut sock) {
            Ok(0) => {
                if conn.is_handshaking() {
                    note(&|l| l.errors.push("peer closed during the handshake".into()));
                }
                return;
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => continue,
            Err(e) => {
                note(&|l| l.errors.push(format!("read: {e}")));
                return;
            }
        }
        let state = match conn.process_new_packets() {
            Ok(st) => st,
            Err(e) => {
                note(&|l| l.errors.push(format!("tls: {e}")));
                // Send the alert rustls queued for this error.
                let _ = flush(&mut conn, &mut sock);
                return;
            }
        };
        if !opened && !conn.is_handshaking() {
            opened = true;
            let s = session_of(&conn);
            note(&|l| l.sessions.push(s.clone()));
            let a = app.on_open();
            apply(&mut conn, a, &mut closing);
        }
        let mut n = state.plaintext_bytes_to_read();
        let peer_closed = state.peer_has_closed();
        let mut data = Vec::new();
        while n > 0 {
            let m = n.min(buf.len());
            match conn.reader().read(&mut buf[..m]) {
                Ok(0) => break,
                Ok(k) => {
                    data.extend_from_slice(&buf[..k]);
                    n -= k.min(n);
                }
                Err(_) => break,
            }
        }
        if !data.is_empty() {
            let len = data.len();
            note(&|l| l.bytes_in += len);
            if !closing {
                let a = app.on_data(&data);
                apply(&mut conn, a, &mut closing);
            }
        }
        if peer_closed {
            note(&|l| l.close_notify_received += 1);
            let _ = flush(&mut conn, &mut sock);
            return;
        }
    }
    let _ = flush(&mut conn, &mut sock);
}

// ---- host side: certificate commands and TLS sockets ----------------------------------------------

/// `PG=<set>,<item>,<%04d len>\r` + the bytes; returns the reply.
pub fn pg(emu: &mut Emu, set: u8, item: u8, data: &[u8]) -> Vec<u8> {
    let mut req = format!("PG={set},{item},{:04}\r", data.len()).into_bytes();
    req.extend_from_slice(data);
    emu.cmd(&req)
}

/// [`pg`], asserting the first-programming reply.
#[track_caller]
pub fn program(emu: &mut Emu, set: u8, item: u8, data: &[u8]) {
    let got = pg(emu, set, item, data);
    assert_bytes(
        &got,
        OK,
        &format!("PG={set},{item},{} ({} bytes)", data.len(), data.len()),
    );
}

/// Program CA, certificate and key of `set` (any of them may be None).
#[track_caller]
pub fn program_set(
    emu: &mut Emu,
    set: u8,
    ca: Option<&[u8]>,
    cert: Option<&[u8]>,
    key: Option<&[u8]>,
) {
    for (item, data) in [(0u8, ca), (1, cert), (2, key)] {
        if let Some(d) = data {
            program(emu, set, item, d);
        }
    }
}

/// Select socket `sock`, make it a TLS client of 127.0.0.1:`port` with verification `p9`, asserting
/// OK for each setting; returns the reply to `P6=1`.
pub fn tls_start(emu: &mut Emu, sock: u8, port: u16, p9: u8) -> Vec<u8> {
    emu.expect(format!("P0={sock}\r").as_bytes(), OK);
    emu.expect(b"P1=3\r", OK);
    emu.expect(b"P3=127.0.0.1\r", OK);
    emu.expect(format!("P4={port}\r").as_bytes(), OK);
    emu.expect(format!("P9={p9}\r").as_bytes(), OK);
    emu.cmd(b"P6=1\r")
}

/// [`tls_start`], asserting the connection came up.
#[track_caller]
pub fn tls_connect(emu: &mut Emu, sock: u8, port: u16, p9: u8) {
    let got = tls_start(emu, sock, port, p9);
    if got != OK {
        emu.fail(&format!(
            "P6=1 (TLS, P9={p9}, port {port}) answered \"{}\"",
            esc(&got)
        ));
    }
}

/// Send `data` on the current socket and read the echo back, asserting it is identical.
#[track_caller]
pub fn echo_roundtrip(emu: &mut Emu, data: &[u8]) {
    emu.send(data);
    if data.windows(PROMPT.len()).any(|w| w == PROMPT) {
        // Data holding the reply envelopes: no parser can tell where its `R0` reply ends, so it
        // must come back whole, in one TLS record and one `R0`, and is read as that many bytes.
        emu.write(b"R0\r");
        let want = ok(data);
        assert_bytes(&emu.read_total(want.len()), &want, "echoed data in one R0");
        return;
    }
    let (back, _) = emu.recv_exact(data.len(), Duration::from_secs(30));
    assert_bytes(&back, data, "echoed data");
}

/// R0 until it answers something other than an empty OK (at most `rounds` times); returns that reply.
pub fn r0_until_not_empty(emu: &mut Emu, rounds: usize) -> Vec<u8> {
    let mut reply = emu.cmd(b"R0\r");
    for _ in 0..rounds {
        if reply != OK {
            break;
        }
        reply = emu.cmd(b"R0\r");
    }
    reply
}

/// Run the emulator binary with `args` (not serving: `certs`, `flash`, or a start expected to fail),
/// bounded by `timeout`, in a scratch directory. Returns (exit status code, stdout, stderr).
pub fn run_tool(args: &[&str], timeout: Duration) -> (Option<i32>, String, String) {
    let cwd = TempDir::new("tool");
    run_binary(args, cwd.path(), timeout)
}

/// `eswifi-emu --certsets DIR certs`, asserting exit status 0; returns stdout.
pub fn certs_listing(dir: &Path) -> String {
    let d = dir.to_str().unwrap();
    let (code, out, err) = run_tool(&["--certsets", d, "certs"], Duration::from_secs(30));
    assert_eq!(
        code,
        Some(0),
        "certs exit status; stdout {out}\nstderr {err}"
    );
    out
}

/// The emulator's log so far (empty when RUST_LOG made it inherit stderr).
pub fn emu_log(emu: &Emu) -> String {
    emu.log_path()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
        .unwrap_or_default()
}

/// Assert the emulator's log says `needle` (case-insensitive): the README promises the precise
/// reason of every TLS failure in the log. Skipped when RUST_LOG sends the log elsewhere.
#[track_caller]
pub fn assert_log_mentions(emu: &Emu, needle: &str) {
    if emu.log_path().is_none() {
        return;
    }
    let log = emu_log(emu);
    assert!(
        log.to_lowercase().contains(&needle.to_lowercase()),
        "the emulator log does not mention {needle:?}; log:\n{log}"
    );
}
