//! The control socket (`--control PATH`, layer: edge): a Unix socket, mode 0600, that takes one-line
//! commands and answers one line each. Parsing and the client bookkeeping live here; the driver
//! carries the commands out (it owns the modules).
//!
//! Commands: `reset [MODULE]` power-cycles one module or all of them (`ok`); `status` answers one
//! line of JSON, an array with a summary per module; `fault add <rule>` (`ok <id>`), `fault clear
//! [ID]` (`ok`) and `fault list` (one line per rule, then `ok <count>`) manage faults. Anything
//! else: `error <reason>`.

use crate::net::WriteQueue;
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest command line; a longer one is answered with one error and discarded up to its newline.
pub(crate) const MAX_LINE: usize = 1024;

/// Clients served at once; more are refused.
pub(crate) const MAX_CLIENTS: usize = 16;

/// Answer bytes a client may leave unread before it is dropped (its input stops being read at
/// [`PAUSE_ANSWERS`] already; the answers of one turn can go beyond that).
pub(crate) const MAX_PENDING_ANSWER: usize = 1 << 20;

/// A parsed control command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// Power-cycle one module (by index) or all.
    Reset(Option<usize>),
    Status,
    /// `fault add <rule>`: answered `ok <id>`.
    FaultAdd(crate::faults::Rule),
    /// `fault clear [ID]`.
    FaultClear(Option<usize>),
    /// `fault list`: one line per rule, then `ok <count>`.
    FaultList,
}

/// Parse one line.
pub(crate) fn parse(line: &str) -> Result<Command, String> {
    if let Some(rest) = line.trim().strip_prefix("fault") {
        let rest = rest.trim();
        let (verb, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        let arg = arg.trim();
        return match verb {
            "add" => crate::faults::parse(arg).map(Command::FaultAdd),
            "clear" if arg.is_empty() => Ok(Command::FaultClear(None)),
            "clear" => arg
                .parse()
                .map(|id| Command::FaultClear(Some(id)))
                .map_err(|_| format!("not a fault id: {arg:?}")),
            "list" if arg.is_empty() => Ok(Command::FaultList),
            _ => Err("fault add <rule> | fault clear [ID] | fault list".into()),
        };
    }
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("reset"), None, None) => Ok(Command::Reset(None)),
        (Some("reset"), Some(n), None) => n
            .parse()
            .map(|n| Command::Reset(Some(n)))
            .map_err(|_| format!("not a module number: {n:?}")),
        (Some("status"), None, None) => Ok(Command::Status),
        (Some(w), _, _) => Err(format!(
            "unknown command {w:?} (reset [MODULE], status, fault add|clear|list)"
        )),
        (None, _, _) => Err("empty command".into()),
    }
}

/// Bytes read from one client per loop turn: a client that floods the socket gets its share of
/// the turn, and the serial lines theirs.
pub(crate) const READ_BUDGET: usize = 4096;

/// Commands carried out for one client per loop turn.
pub(crate) const LINES_PER_TURN: usize = 16;

/// Answer bytes a client may leave unread before its input is no longer read (it is dropped at
/// [`MAX_PENDING_ANSWER`]).
pub(crate) const PAUSE_ANSWERS: usize = 64 * 1024;

/// A client that sent nothing and read nothing for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// With every slot taken, a client idle this long makes room for a new one.
pub(crate) const EVICT_AFTER: Duration = Duration::from_secs(1);

struct Client {
    stream: UnixStream,
    /// Read, not yet split into lines (at most [`READ_BUDGET`]).
    inbuf: Vec<u8>,
    /// Lines split off `inbuf` so far.
    pos: usize,
    /// The line being received (at most [`MAX_LINE`] bytes).
    line: Vec<u8>,
    /// Discarding the rest of an overlong line, up to its newline.
    skipping: bool,
    out: WriteQueue,
    writable: bool,
    /// The socket may hold input not yet read.
    readable: bool,
    /// The client finished sending (`echo status | socat …` shuts its side): it goes once its
    /// answers are out.
    eof: bool,
    /// When it last sent or read something.
    active: Instant,
}

impl Client {
    fn new(stream: UnixStream, now: Instant) -> Client {
        Client {
            stream,
            inbuf: Vec::new(),
            pos: 0,
            line: Vec::new(),
            skipping: false,
            out: WriteQueue::default(),
            writable: false,
            readable: true,
            eof: false,
            active: now,
        }
    }

    /// Input not yet looked at, or not yet read while the client has room for answers.
    fn pending(&self) -> bool {
        self.pos < self.inbuf.len()
            || (self.readable && !self.eof && self.out.len() < PAUSE_ANSWERS)
    }

    /// Read at most [`READ_BUDGET`] bytes (once what was read before is used up).
    fn read(&mut self, now: Instant) {
        if self.pos < self.inbuf.len()
            || !self.readable
            || self.eof
            || self.out.len() >= PAUSE_ANSWERS
        {
            return;
        }
        self.inbuf.clear();
        self.pos = 0;
        let mut chunk = [0u8; 1024];
        while self.inbuf.len() < READ_BUDGET {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    self.active = now;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    break;
                }
                Err(_) => {
                    self.eof = true;
                    break;
                }
            }
        }
    }

    /// The next complete line (or error), at most `left` of them; a line ended by the end of
    /// input is a line. An overlong line is one error, its rest discarded up to its newline.
    fn next_line(&mut self) -> Option<Result<Command, String>> {
        while self.pos < self.inbuf.len() {
            let rest = &self.inbuf[self.pos..];
            let (take, ended) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (rest.len(), false),
            };
            self.pos += take + usize::from(ended);
            let overlong = !self.skipping && self.line.len() + take > MAX_LINE;
            if !self.skipping && !overlong {
                self.line.extend_from_slice(&rest[..take]);
            }
            if overlong {
                self.line.clear();
                self.skipping = !ended;
                return Some(Err(format!("line longer than {MAX_LINE} bytes")));
            }
            if ended {
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                if let Some(cmd) = self.complete() {
                    return Some(cmd);
                }
            }
        }
        if self.eof && !self.skipping && !self.line.is_empty() {
            return self.complete();
        }
        None
    }

    /// The line received, parsed (an empty one is no command).
    fn complete(&mut self) -> Option<Result<Command, String>> {
        let line = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        (!text.is_empty()).then(|| parse(text))
    }

    /// Done: it sent its last byte, every line is handled and every answer out.
    fn finished(&self) -> bool {
        self.eof && self.pos >= self.inbuf.len() && self.out.is_empty()
    }
}

/// Bind a listening socket at `path` that no one else can connect to at any moment, whatever the
/// umask: it is bound inside a fresh 0700 directory beside `path`, made 0600 there, and renamed
/// into place (a `chmod` after a `bind` at `path` leaves a window where it is connectable).
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = tempfile::Builder::new()
        .prefix(".")
        .rand_bytes(6)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)?;
    // A socket path has at most 107 bytes: keep the path as given (relative stays relative, where
    // tempfile made it absolute), 10 bytes longer at most.
    let name = dir.path().file_name().unwrap_or_default();
    let tmp = parent.join(name).join("s");
    let listener = UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(listener)
}

/// The listening socket and its clients.
pub(crate) struct ControlServer {
    path: PathBuf,
    /// The socket file we made (device and inode): removed at exit only if it is still ours.
    made: (u64, u64),
    listener: UnixListener,
    token: Token,
    clients: HashMap<Token, Client>,
}

impl ControlServer {
    /// Bind `path` with mode 0600. A socket nobody listens on (left by an emulator that was
    /// killed) is replaced; a live one (another emulator's) or anything else there is refused.
    pub(crate) fn bind(
        path: &Path,
        registry: &Registry,
        token: Token,
    ) -> io::Result<ControlServer> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "{}: another emulator is serving its control socket there",
                            path.display()
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    log::info!("{}: replacing a stale control socket", path.display());
                    std::fs::remove_file(path)?;
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            }
        }
        let mut listener = bind_private(path)?;
        let meta = std::fs::symlink_metadata(path)?;
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(ControlServer {
            path: path.to_owned(),
            made: (meta.dev(), meta.ino()),
            listener,
            token,
            clients: HashMap::new(),
        })
    }

    pub(crate) fn owns(&self, token: Token) -> bool {
        token == self.token || self.clients.contains_key(&token)
    }

    /// Readiness for `token`: accept new clients, or note that a client may be read or written.
    pub(crate) fn handle_event(
        &mut self,
        registry: &Registry,
        token: Token,
        alloc: &mut dyn FnMut() -> Token,
    ) {
        let now = Instant::now();
        if token != self.token {
            if let Some(c) = self.clients.get_mut(&token) {
                c.readable = true;
            }
            self.flush(registry, token);
            return;
        }
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.clients.len() >= MAX_CLIENTS && !self.evict_idle(registry, now) {
                        let _ = stream.write_all(b"error too many control clients\n");
                        continue;
                    }
                    let t = alloc();
                    if registry
                        .register(&mut stream, t, Interest::READABLE)
                        .is_ok()
                    {
                        self.clients.insert(t, Client::new(stream, now));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("control socket: {e}");
                    break;
                }
            }
        }
    }

    /// Close the client idle longest, if it has been idle [`EVICT_AFTER`]: room for a new one.
    fn evict_idle(&mut self, registry: &Registry, now: Instant) -> bool {
        let oldest = self
            .clients
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.active) >= EVICT_AFTER)
            .min_by_key(|(_, c)| c.active)
            .map(|(t, _)| *t);
        let Some(t) = oldest else {
            return false;
        };
        log::info!("control client idle; closed to make room for another");
        if let Some(c) = self.clients.get_mut(&t) {
            let _ = c
                .stream
                .write(b"error closed: idle while another client waited\n");
        }
        self.drop_client(registry, t);
        true
    }

    /// The commands clients completed this turn, each with the client to answer: at most
    /// [`READ_BUDGET`] bytes read and [`LINES_PER_TURN`] commands per client. Idle clients are
    /// closed here.
    pub(crate) fn take_requests(
        &mut self,
        registry: &Registry,
        now: Instant,
    ) -> Vec<(Token, Result<Command, String>)> {
        let mut got = Vec::new();
        let mut idle = Vec::new();
        for (&t, c) in self.clients.iter_mut() {
            c.read(now);
            for _ in 0..LINES_PER_TURN {
                match c.next_line() {
                    Some(req) => got.push((t, req)),
                    None => break,
                }
            }
            if now.saturating_duration_since(c.active) >= IDLE_TIMEOUT {
                idle.push(t);
            }
        }
        for t in idle {
            log::info!("control client idle for {IDLE_TIMEOUT:?}; closed");
            if let Some(c) = self.clients.get_mut(&t) {
                let _ = c.stream.write(b"error idle; closed\n");
            }
            self.drop_client(registry, t);
        }
        got
    }

    /// Some client has input this turn did not get to (the loop must not sleep).
    pub(crate) fn pending(&self) -> bool {
        self.clients.values().any(Client::pending)
    }

    /// When the next idle client is due to be closed.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.clients.values().map(|c| c.active + IDLE_TIMEOUT).min()
    }

    /// Queue one answer line for a client (sent by [`ControlServer::flush_all`]).
    pub(crate) fn answer(&mut self, registry: &Registry, token: Token, line: &str) {
        if let Some(c) = self.clients.get_mut(&token) {
            c.out.push(line.as_bytes());
            c.out.push(b"\n");
            if c.out.len() > MAX_PENDING_ANSWER {
                log::warn!("control client does not read its answers; dropped");
                self.drop_client(registry, token);
            }
        }
    }

    /// Send what waits for every client, and let those that finished go.
    pub(crate) fn flush_all(&mut self, registry: &Registry) {
        let tokens: Vec<Token> = self.clients.keys().copied().collect();
        for t in tokens {
            self.flush(registry, t);
        }
    }

    fn flush(&mut self, registry: &Registry, token: Token) {
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        let before = c.out.written();
        let stream = &mut c.stream;
        if c.out.flush(|b| stream.write(b)).is_err() {
            self.drop_client(registry, token);
            return;
        }
        if c.out.written() > before {
            c.active = Instant::now();
        }
        if c.finished() {
            self.drop_client(registry, token);
            return;
        }
        let want = !c.out.is_empty();
        if want != c.writable {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry.reregister(&mut c.stream, token, interest).is_ok() {
                c.writable = want;
            }
        }
    }

    fn drop_client(&mut self, registry: &Registry, token: Token) {
        if let Some(mut c) = self.clients.remove(&token) {
            let _ = registry.deregister(&mut c.stream);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        // Another emulator may have taken the path over since (ours was stale to it): leave its.
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.made);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse("reset"), Ok(Command::Reset(None)));
        assert_eq!(parse("  reset 3 "), Ok(Command::Reset(Some(3))));
        assert_eq!(parse("status"), Ok(Command::Status));
        assert!(parse("reset x").unwrap_err().contains("module number"));
        assert!(parse("reboot").unwrap_err().contains("unknown command"));
        assert!(parse("status now").is_err());
        assert!(matches!(
            parse("fault add serial.stall 3s"),
            Ok(Command::FaultAdd(_))
        ));
        assert!(parse("fault add serial.stall")
            .unwrap_err()
            .contains("serial.stall"));
        assert_eq!(parse("fault clear 2"), Ok(Command::FaultClear(Some(2))));
        assert_eq!(parse("fault clear"), Ok(Command::FaultClear(None)));
        assert_eq!(parse("fault list"), Ok(Command::FaultList));
    }
}
