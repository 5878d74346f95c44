//! The control socket (`--control PATH`, layer: edge): a Unix socket, mode 0600, that takes one-line
//! commands and answers one line each. Parsing and the client bookkeeping live here; the driver
//! carries the commands out (it owns the modules).
//!
//! Commands: `reset [MODULE]` power-cycles one module or all of them (`ok`); `status` answers one
//! line of JSON, an array with a summary per module; `fault add <rule>` (`ok <id>`), `fault clear
//! [ID]` (`ok`) and `fault list` (one line per rule, then `ok <count>`) manage faults. Anything
//! else: `error <reason>`.

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Longest command line; a longer one is answered with an error and dropped.
pub(crate) const MAX_LINE: usize = 1024;

/// Clients served at once; more are refused.
pub(crate) const MAX_CLIENTS: usize = 16;

/// Answer bytes a client may leave unread before it is dropped.
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

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    writable: bool,
    /// The client finished sending (`echo status | socat …` shuts its side): it goes once its
    /// answers are out.
    eof: bool,
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
    listener: UnixListener,
    token: Token,
    clients: HashMap<Token, Client>,
}

impl ControlServer {
    /// Bind `path` (a stale socket there is replaced; anything else is refused) with mode 0600.
    pub(crate) fn bind(
        path: &Path,
        registry: &Registry,
        token: Token,
    ) -> io::Result<ControlServer> {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let mut listener = bind_private(path)?;
        registry.register(&mut listener, token, Interest::READABLE)?;
        Ok(ControlServer {
            path: path.to_owned(),
            listener,
            token,
            clients: HashMap::new(),
        })
    }

    pub(crate) fn owns(&self, token: Token) -> bool {
        token == self.token || self.clients.contains_key(&token)
    }

    /// Handle readiness for `token`; returns the commands that arrived, each with the client to
    /// answer (`answer` with the same token).
    pub(crate) fn handle_event(
        &mut self,
        registry: &Registry,
        token: Token,
        alloc: &mut dyn FnMut() -> Token,
    ) -> Vec<(Token, Result<Command, String>)> {
        let mut got = Vec::new();
        if token == self.token {
            loop {
                match self.listener.accept() {
                    Ok((mut stream, _)) => {
                        if self.clients.len() >= MAX_CLIENTS {
                            let _ = stream.write_all(b"error too many control clients\n");
                            continue;
                        }
                        let t = alloc();
                        if registry
                            .register(&mut stream, t, Interest::READABLE)
                            .is_ok()
                        {
                            self.clients.insert(
                                t,
                                Client {
                                    stream,
                                    inbuf: Vec::new(),
                                    out: Vec::new(),
                                    writable: false,
                                    eof: false,
                                },
                            );
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
            return got;
        }
        let Some(c) = self.clients.get_mut(&token) else {
            return got;
        };
        let mut gone = false;
        let mut buf = [0u8; 1024];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    gone = true;
                    break;
                }
            }
            if c.inbuf.len() > MAX_LINE && !c.inbuf[..MAX_LINE].contains(&b'\n') {
                c.inbuf.clear();
                got.push((token, Err(format!("line longer than {MAX_LINE} bytes"))));
            }
        }
        while let Some(i) = c.inbuf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = c.inbuf.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if !text.is_empty() {
                got.push((token, parse(text)));
            }
        }
        c.eof |= gone;
        if got.is_empty() {
            self.done(registry, token);
        }
        got
    }

    /// All answers to what a client sent are queued: send them, and let a client that finished go.
    pub(crate) fn done(&mut self, registry: &Registry, token: Token) {
        self.flush(registry, token);
        if self
            .clients
            .get(&token)
            .is_some_and(|c| c.eof && c.out.is_empty())
        {
            self.drop_client(registry, token);
        }
    }

    /// Send one answer line to a client (then [`ControlServer::done`]).
    pub(crate) fn answer(&mut self, registry: &Registry, token: Token, line: &str) {
        if let Some(c) = self.clients.get_mut(&token) {
            c.out.extend_from_slice(line.as_bytes());
            c.out.push(b'\n');
            if c.out.len() > MAX_PENDING_ANSWER {
                log::warn!("control client does not read its answers; dropped");
                self.drop_client(registry, token);
                return;
            }
        }
        self.flush(registry, token);
    }

    fn flush(&mut self, registry: &Registry, token: Token) {
        let Some(c) = self.clients.get_mut(&token) else {
            return;
        };
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_client(registry, token);
                    return;
                }
            }
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
        let _ = std::fs::remove_file(&self.path);
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
