//! Shared harness for the end-to-end tests: runs the real `eswifi-emu` binary on a pty, talks to it
//! like a host driver would, and provides small loopback servers on 127.0.0.1 for it to reach.
//!
//! Everything here is bounded in time: reads use poll(2) with deadlines, servers stop on drop or
//! after [`SERVER_LIFETIME`], and a still-running emulator is killed when its [`Emu`] is dropped.
//! On a failing test the emulator's log file path (and its tail) is printed.

use eswifi_core::iwin::reply::parse::{Output, Parser, Unit};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---- where things are ----------------------------------------------------------------------------

/// Cargo's target directory for this build profile (`target/debug`): the test binary runs from its
/// `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("deps/");
    deps.parent().expect("the profile directory").to_path_buf()
}

/// Cargo's target directory (`target`): its `tmp/` holds the tests' directories.
fn target_dir() -> PathBuf {
    let p = profile_dir();
    p.parent().map_or(p.clone(), Path::to_path_buf)
}

/// The `eswifi-emu` binary under test: `$ESWIFI_EMU_BIN`, else the one cargo built beside the test
/// binary (`cargo test` builds it for the integration tests of the workspace's root package).
pub fn binary() -> PathBuf {
    match std::env::var_os("ESWIFI_EMU_BIN") {
        Some(p) => PathBuf::from(p),
        None => profile_dir().join("eswifi-emu"),
    }
}

// ---- reply bytes ---------------------------------------------------------------------------------

/// The prompt that ends every reply.
pub const PROMPT: &[u8] = b"\r\n> ";
/// The prompt that ends an odd-length reply on the SPI bus (padded to a 16-bit word).
pub const SPI_PADDED_PROMPT: &[u8] = b"\r\n> \x15";
/// Success without payload.
pub const OK: &[u8] = b"\r\n\r\nOK\r\n> ";
/// Closed socket (R0/S3 after the peer went away).
pub const CLOSED: &[u8] = b"\r\n-1\r\nERROR\r\n> ";
/// Any error with MT=1.
pub const ERR1: &[u8] = b"\r\n\r\nERROR\r\n> ";
/// Unknown command (lowercase, junk).
pub const UNKNOWN_COMMAND: &[u8] = b"\r\n\r\nERROR: Unknown Command\r\n> ";
/// The tail of the boot banner, right before the prompt.
pub const BANNER_END: &[u8] = b"Copyright (c)2011-2020\r\n> ";
/// `P6=1` on a TCP client that reached 127.0.0.1, as the C3.5.2.x firmware (the default) answers.
pub const CONNECTING: &[u8] = b"\r\n[TCP  RC] Connecting to 127.0.0.1\r\nOK\r\n> ";

/// `\r\n<payload>\r\nOK\r\n> `.
pub fn ok(payload: impl AsRef<[u8]>) -> Vec<u8> {
    [b"\r\n", payload.as_ref(), b"\r\nOK\r\n> "].concat()
}

/// MT=0 error without payload: `\r\n\r\nERROR: <reason>\r\nUsage: <cmd> <usage>\r\n> `.
pub fn err0(reason: &str, cmd: &str, usage: &str) -> Vec<u8> {
    format!("\r\n\r\nERROR: {reason}\r\nUsage: {cmd} {usage}\r\n> ").into_bytes()
}

/// MT=0 error with a payload line: `\r\n<payload>\r\nERROR: <reason>\r\nUsage: <cmd> <usage>\r\n> `.
pub fn err0_with(payload: &str, reason: &str, cmd: &str, usage: &str) -> Vec<u8> {
    format!("\r\n{payload}\r\nERROR: {reason}\r\nUsage: {cmd} {usage}\r\n> ").into_bytes()
}

/// `S3=%04d\r` followed by `data` (ST's zero-padded header).
pub fn s3(data: &[u8]) -> Vec<u8> {
    assert!(
        !data.is_empty() && data.len() <= 9999,
        "S3 of {} bytes",
        data.len()
    );
    let mut v = format!("S3={:04}\r", data.len()).into_bytes();
    v.extend_from_slice(data);
    v
}

/// The data of a successful R0 reply (`\r\n<data>\r\nOK\r\n> `), `None` for anything else.
pub fn r0_payload(reply: &[u8]) -> Option<&[u8]> {
    reply
        .strip_prefix(b"\r\n")?
        .strip_suffix(b"\r\nOK\r\n> ".as_slice())
}

/// Like [`r0_payload`] but panics (with the escaped reply) unless the reply is a successful R0.
pub fn parse_r0(reply: &[u8]) -> &[u8] {
    match r0_payload(reply) {
        Some(d) => d,
        None => panic!("not an R0 data reply: \"{}\"", esc(reply)),
    }
}

/// Bytes as an escaped string, for assertion messages.
pub fn esc(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// Assert two byte strings are equal, showing both escaped.
#[track_caller]
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(esc(got), esc(want), "{what}");
}

// ---- temporary directories -----------------------------------------------------------------------

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under cargo's per-target tmp dir. Removed on drop, except when the test is
/// failing (so its logs stay around).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let test = std::thread::current()
            .name()
            .unwrap_or("test")
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_");
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = target_dir()
            .join("tmp")
            .join("e2e")
            .join(format!("{test}-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Open a serial line (a pty path, a tty) as a host does: non-blocking, not as controlling tty.
pub fn open_line(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// A TCP connection used as a host's serial line (non-blocking, as the harness reads it).
pub fn tcp_line(s: TcpStream) -> File {
    s.set_nonblocking(true).expect("nonblocking");
    let _ = s.set_nodelay(true);
    File::from(std::os::fd::OwnedFd::from(s))
}

// ---- poll helpers ---------------------------------------------------------------------------------

/// Wait until `fd` is ready for `events` (POLLIN/POLLOUT) or `timeout` passed (a signal does not
/// cut the wait short). False on timeout.
pub fn poll_fd(fd: BorrowedFd<'_>, events: PollFlags, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_micros().div_ceil(1000);
        let mut fds = [PollFd::new(fd, events)];
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) if Instant::now() < deadline => {}
            Err(e) => return Err(e.into()),
        }
    }
}

// ---- the emulator under test ----------------------------------------------------------------------

/// Default time allowed for one command's reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the emulator may take to print its pty path.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the emulator may take to exit after a signal.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `eswifi-emu` and the host side of its pty.
pub struct Emu {
    child: Option<Child>,
    /// Kept open so a late write to stdout never fails in the emulator.
    _stdout: Option<ChildStdout>,
    pty: Option<File>,
    pty_path: PathBuf,
    log_path: Option<PathBuf>,
    /// What the emulator printed on stdout: what a host opens, one line per module.
    pub lines: Vec<String>,
    /// Everything the emulator printed at boot, up to and including the first prompt.
    pub boot: Vec<u8>,
    /// Cuts what the module writes into units (replies, messages, prompts, boot output); bytes
    /// after a unit wait in it for the next read.
    parser: Parser,
    /// Reply timeout used by [`Emu::cmd`] and [`Emu::expect`].
    pub timeout: Duration,
    dir: TempDir,
}

impl Emu {
    /// Default configuration, fresh certificate directory.
    pub fn start() -> Emu {
        Emu::start_with(None, &[])
    }

    /// Start the emulator with an optional TOML configuration (written to a temp file and passed
    /// as `--config`) and extra command-line arguments. Unless `extra_args` has `--certsets`, a
    /// fresh empty directory is passed. Reads the boot output (into [`Emu::boot`]) before
    /// returning, so the next read is the reply to the first command.
    ///
    /// The module's address is pinned to 127.0.0.1 (the expected bytes say so), unless the
    /// configuration has a `[network]` table; [`Emu::start_unpinned`] lets it claim its own.
    pub fn start_with(config_toml: Option<&str>, extra_args: &[&str]) -> Emu {
        let toml = config_toml.unwrap_or_default();
        let pinned = if toml.contains("[network]") {
            toml.to_string()
        } else {
            format!("{toml}\n[network]\nip = \"127.0.0.1\"\n")
        };
        Emu::launch(Some(&pinned), extra_args)
    }

    /// Like [`Emu::start_with`], but the module claims a free loopback address of its own, as it
    /// does by default outside the tests.
    pub fn start_unpinned(config_toml: Option<&str>, extra_args: &[&str]) -> Emu {
        Emu::launch(config_toml, extra_args)
    }

    fn launch(config_toml: Option<&str>, extra_args: &[&str]) -> Emu {
        Emu::launch_full(config_toml, extra_args, 1, |lines| {
            assert!(
                lines[0].starts_with('/'),
                "first stdout line is not a path: {:?}",
                lines[0]
            );
            Some(open_line(Path::new(&lines[0])))
        })
    }

    /// Start the emulator as it is (no pinning), read `nlines` lines from its stdout (what a host
    /// opens, one per module), and attach the host `attach` returns (None: no host yet); then read
    /// the boot output if a host is attached.
    pub fn launch_full(
        config_toml: Option<&str>,
        extra_args: &[&str],
        nlines: usize,
        attach: impl FnOnce(&[String]) -> Option<File>,
    ) -> Emu {
        let dir = TempDir::new("emu");
        let mut cmd = Command::new(binary());
        if let Some(toml) = config_toml {
            let cfg = dir.path().join("config.toml");
            std::fs::write(&cfg, toml).expect("writing config");
            cmd.arg("--config").arg(&cfg);
        }
        let has = |flag: &str| {
            extra_args
                .iter()
                .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
        };
        if !has("--certsets") {
            let certs = dir.path().join("certsets");
            std::fs::create_dir_all(&certs).expect("creating certsets dir");
            cmd.arg("--certsets").arg(&certs);
        }
        let verbosity_given = extra_args.iter().any(|a| {
            matches!(*a, "-q" | "--quiet" | "--verbose")
                || (a.starts_with("-v") && !a.starts_with("--"))
        });
        if !verbosity_given {
            cmd.arg("-v");
        }
        cmd.args(extra_args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let log_path = if std::env::var_os("RUST_LOG").is_some() {
            cmd.stderr(Stdio::inherit());
            None
        } else {
            let p = dir.path().join("emu.log");
            cmd.stderr(File::create(&p).expect("creating log file"));
            Some(p)
        };
        // The SPI bus pads odd units with 0x15: the parser takes the pad with its unit.
        let spi = config_toml
            .and_then(|t| eswifi_core::config::Config::from_toml(t).ok())
            .is_some_and(|c| c.module.bus == eswifi_core::config::Bus::Spi);
        let child = cmd.spawn().expect("spawning eswifi-emu");
        let mut emu = Emu {
            child: Some(child),
            _stdout: None,
            pty: None,
            pty_path: PathBuf::new(),
            log_path,
            lines: Vec::new(),
            boot: Vec::new(),
            parser: Parser::new().spi(spi),
            timeout: REPLY_TIMEOUT,
            dir,
        };
        let mut stdout = emu.child.as_mut().unwrap().stdout.take().unwrap();
        for _ in 0..nlines {
            let line = emu.read_stdout_line(&mut stdout, START_TIMEOUT);
            emu.lines.push(line);
        }
        emu._stdout = Some(stdout);
        emu.pty_path = PathBuf::from(emu.lines.first().cloned().unwrap_or_default());
        emu.pty = attach(&emu.lines);
        if emu.pty.is_some() {
            emu.parser.expect_boot();
            emu.boot = emu.read_until_prompt(START_TIMEOUT);
        }
        emu
    }

    fn read_stdout_line(&mut self, out: &mut ChildStdout, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\n") {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.fail(&format!(
                    "no pty path on stdout within {timeout:?} (got \"{}\")",
                    esc(&line)
                ));
            }
            if !poll_fd(out.as_fd(), PollFlags::POLLIN, left).expect("poll stdout") {
                continue;
            }
            match out.read(&mut byte) {
                Ok(0) => self.fail(&format!(
                    "emulator closed stdout before printing a path (got \"{}\")",
                    esc(&line)
                )),
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.fail(&format!("reading stdout: {e}")),
            }
        }
        line.pop();
        String::from_utf8(line).expect("pty path is not UTF-8")
    }

    fn open_pty(&mut self) {
        self.attach(open_line(&self.pty_path));
    }

    /// Talk to the emulator through `host` from now on (another module's pty, a TCP connection…).
    /// What the previous host had read and not used is gone with it.
    pub fn attach(&mut self, host: File) {
        self.parser.take_buffered();
        self.pty = Some(host);
    }

    /// The module is coming back from a reset: the next unit outside a reply is its boot output
    /// (whatever its banner says).
    pub fn expect_boot(&mut self) {
        self.parser.expect_boot();
    }

    /// The pty slave path the emulator printed.
    pub fn pty_path(&self) -> &Path {
        &self.pty_path
    }

    /// This emulator's private temp directory (config, certsets, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The log file (stderr), unless RUST_LOG was set and stderr is inherited.
    pub fn log_path(&self) -> Option<&Path> {
        self.log_path.as_deref()
    }

    /// Wait (bounded by [`Emu::timeout`]) until the emulator's log holds `needle` at least `n`
    /// times: how a test knows the module has reached a state the wire does not show (a command
    /// taken, a connection accepted) without guessing with a sleep.
    #[track_caller]
    pub fn wait_log(&mut self, needle: &str, n: usize) {
        if self.log_path.is_none() {
            panic!("wait_log needs the log file (RUST_LOG is set: stderr is inherited)");
        }
        let got = wait_for(self.timeout, || self.log_count(needle), |c| *c >= n);
        if got < n {
            self.fail(&format!("the log shows {needle:?} {got} times, not {n}"));
        }
    }

    /// How many times the emulator's log holds `needle` so far (0 when stderr is inherited).
    pub fn log_count(&self, needle: &str) -> usize {
        let log = self.log_path.as_ref().and_then(|p| std::fs::read(p).ok());
        String::from_utf8_lossy(&log.unwrap_or_default())
            .matches(needle)
            .count()
    }

    /// The emulator's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("emulator already reaped").id()
    }

    /// Panic with `msg`, the log path and the tail of the log.
    #[track_caller]
    pub fn fail(&mut self, msg: &str) -> ! {
        let status = match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(st))) => format!("emulator exited: {st}"),
            Some(Ok(None)) => "emulator still running".to_string(),
            Some(Err(e)) => format!("emulator status unknown: {e}"),
            None => "emulator already reaped".to_string(),
        };
        panic!("{msg}\n({status}; log: {})", self.log_hint());
    }

    fn log_hint(&self) -> String {
        match &self.log_path {
            None => "stderr inherited".to_string(),
            Some(p) => p.display().to_string(),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.pty.as_ref().expect("pty is closed").as_fd()
    }

    /// Write all of `data` to the pty (bounded by the reply timeout).
    pub fn write(&mut self, data: &[u8]) {
        let deadline = Instant::now() + self.timeout;
        let mut rest = data;
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let n = data.len() - rest.len();
                self.fail(&format!(
                    "pty write stalled after {n} of {} bytes",
                    data.len()
                ));
            }
            if let Err(e) = poll_fd(self.fd(), PollFlags::POLLOUT, left) {
                self.fail(&format!("poll pty for writing: {e}"));
            }
            match self.pty.as_ref().unwrap().write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.fail(&format!("pty write: {e}")),
            }
        }
    }

    /// Write what the pty takes now without waiting (0 when the host would block: the line is
    /// full because the emulator stopped reading it).
    pub fn try_write(&mut self, data: &[u8]) -> usize {
        match self.pty.as_ref().expect("pty is closed").write(data) {
            Ok(n) => n,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                0
            }
            Err(e) => self.fail(&format!("pty write: {e}")),
        }
    }

    /// The emulator's resident memory (VmRSS), in bytes.
    pub fn rss(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/<pid>/status");
        let kb: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kb * 1024
    }

    /// Read what is available within `wait` into `buf`. Ok(false) when nothing came.
    fn read_some(&mut self, buf: &mut Vec<u8>, wait: Duration) -> io::Result<bool> {
        if !poll_fd(self.fd(), PollFlags::POLLIN, wait)? {
            return Ok(false);
        }
        let mut chunk = [0u8; 4096];
        let mut got = false;
        loop {
            match self.pty.as_ref().unwrap().read(&mut chunk) {
                Ok(0) => {
                    return if got {
                        Ok(true)
                    } else {
                        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "pty EOF"))
                    }
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    got = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return if got { Ok(true) } else { Err(e) },
            }
        }
    }

    /// Read until the module has written one whole unit — a reply, an asynchronous message, a
    /// prompt or boot output, cut by the core's reply parser — and return its bytes; what came
    /// after it waits for the next read. `Err` with what arrived on timeout or when the line fails.
    pub fn try_read_until_prompt(
        &mut self,
        timeout: Duration,
    ) -> Result<Vec<u8>, (Vec<u8>, String)> {
        self.try_next_unit(timeout).map(|o| o.raw)
    }

    /// The next whole unit the module wrote, with what it is.
    fn try_next_unit(&mut self, timeout: Duration) -> Result<Output, (Vec<u8>, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(o) = self.parser.next() {
                return Ok(o);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let got = self.parser.buffered().to_vec();
                return Err((got, format!("no whole reply within {timeout:?}")));
            }
            let mut buf = Vec::new();
            let r = self.read_some(&mut buf, left);
            self.parser.push(&buf);
            if let Err(e) = r {
                return Err((self.parser.buffered().to_vec(), format!("pty read: {e}")));
            }
        }
    }

    /// [`Emu::try_read_until_prompt`], panicking (with the bytes received and the log path) on
    /// failure.
    pub fn read_until_prompt(&mut self, timeout: Duration) -> Vec<u8> {
        match self.try_read_until_prompt(timeout) {
            Ok(b) => b,
            Err((got, why)) => self.fail(&format!("{why}; received \"{}\"", esc(&got))),
        }
    }

    /// The next reply (or prompt, or boot output), and the asynchronous messages the module wrote
    /// before it, each with its `\r\n` and prompt (UART event mode writes them between replies).
    pub fn read_reply_after_events(&mut self, timeout: Duration) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut events = Vec::new();
        loop {
            match self.try_next_unit(timeout) {
                Ok(o) if o.unit == Unit::Event => events.push(o.raw),
                Ok(o) => return (o.raw, events),
                Err((got, why)) => self.fail(&format!("{why}; received \"{}\"", esc(&got))),
            }
        }
    }

    /// Read whole units until exactly `n` bytes arrived; fails with the tail of what came on
    /// timeout ([`Emu::timeout`]).
    pub fn read_total(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + self.timeout;
        let mut buf = Vec::new();
        while buf.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_read_until_prompt(left) {
                Ok(unit) => buf.extend(unit),
                Err((more, why)) => {
                    buf.extend(more);
                    let tail = esc(&buf[buf.len().saturating_sub(300)..]);
                    self.fail(&format!(
                        "{why}; {} of {n} bytes, ending \"{tail}\"",
                        buf.len()
                    ));
                }
            }
        }
        buf
    }

    /// Read until one whole unit has come, returning what each `read` of the line gave, cut at
    /// the unit's end: how the reply was cut on the way. (Bytes already read before count as
    /// one piece.)
    pub fn read_pieces_until_prompt(&mut self, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        let held = self.parser.take_buffered();
        if !held.is_empty() {
            pieces.push(held.clone());
            self.parser.push(&held);
        }
        loop {
            if let Some(o) = self.parser.next() {
                // Keep the pieces that made the unit; what followed it stays in the parser.
                let mut left = o.raw.len();
                let mut out = Vec::new();
                for p in pieces {
                    if left == 0 {
                        break;
                    }
                    let take = p.len().min(left);
                    out.push(p[..take].to_vec());
                    left -= take;
                }
                return out;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let all = pieces.concat();
                self.fail(&format!(
                    "no whole reply within {timeout:?}; got \"{}\"",
                    esc(&all)
                ));
            }
            match poll_fd(self.fd(), PollFlags::POLLIN, left) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => self.fail(&format!("poll pty: {e}")),
            }
            let mut chunk = [0u8; 4096];
            match self.pty.as_ref().unwrap().read(&mut chunk) {
                Ok(0) => self.fail("pty EOF"),
                Ok(n) => {
                    pieces.push(chunk[..n].to_vec());
                    self.parser.push(&chunk[..n]);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.fail(&format!("pty read: {e}")),
            }
        }
    }

    /// Read exactly `n` bytes, whatever they are (no prompt needed: line noise may have hit it).
    pub fn read_exact_n(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + self.timeout;
        let mut buf = self.parser.take_buffered();
        while buf.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.fail(&format!("{} of {n} bytes: \"{}\"", buf.len(), esc(&buf)));
            }
            if let Err(e) = self.read_some(&mut buf, left) {
                self.fail(&format!("pty read: {e}; received \"{}\"", esc(&buf)));
            }
        }
        if buf.len() > n {
            self.fail(&format!("more than {n} bytes: \"{}\"", esc(&buf)));
        }
        buf
    }

    /// Collect whatever arrives within `wait`, and what was already read (for asserting that
    /// nothing does, or reading what is not a whole unit).
    pub fn read_for(&mut self, wait: Duration) -> Vec<u8> {
        let deadline = Instant::now() + wait;
        let mut buf = self.parser.take_buffered();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return buf;
            }
            if let Err(e) = self.read_some(&mut buf, left) {
                self.fail(&format!("pty read: {e}; received \"{}\"", esc(&buf)));
            }
        }
    }

    /// Write a request and read its reply.
    pub fn cmd(&mut self, req: &[u8]) -> Vec<u8> {
        self.write(req);
        self.read_until_prompt(self.timeout)
    }

    /// Send `req` and assert the reply is exactly `want`: whole units are read while what came is
    /// still the start of `want` (a request of several commands gets several replies).
    #[track_caller]
    pub fn expect(&mut self, req: &[u8], want: &[u8]) {
        self.write(req);
        let mut got = Vec::new();
        while got.len() < want.len() && want.starts_with(&got) {
            let unit = self.read_until_prompt(self.timeout);
            got.extend(unit);
        }
        if got != want {
            let log = self.log_hint();
            assert_eq!(
                esc(&got),
                esc(want),
                "reply to \"{}\" (log: {log})",
                esc(req)
            );
        }
    }

    /// Send `req` and assert the reply is a success with `payload`.
    #[track_caller]
    pub fn expect_ok(&mut self, req: &[u8], payload: &[u8]) {
        self.expect(req, &ok(payload));
    }

    /// Close the pty device and open it again (like a host program exiting and a new one starting).
    pub fn reopen(&mut self) {
        self.close_pty();
        self.open_pty();
    }

    /// Close the host side of the pty (it stays closed until [`Emu::reopen`]).
    pub fn close_pty(&mut self) {
        self.pty = None;
    }

    /// Send a signal (e.g. `libc::SIGTERM`) to the emulator.
    pub fn signal(&mut self, sig: i32) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        let r = unsafe { libc::kill(pid, sig) };
        assert_eq!(r, 0, "kill: {}", io::Error::last_os_error());
    }

    /// Wait (bounded) for the emulator to exit and reap it.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("emulator already reaped");
            match child.try_wait() {
                Ok(Some(st)) => {
                    self.child = None;
                    return st;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => self.fail(&format!("emulator did not exit within {timeout:?}")),
                Err(e) => self.fail(&format!("waiting for the emulator: {e}")),
            }
        }
    }

    /// SIGTERM, then assert the emulator exits with status 0 within [`EXIT_TIMEOUT`].
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let st = self.wait_exit(EXIT_TIMEOUT);
        if st.code() != Some(0) {
            self.fail(&format!(
                "emulator exited with {st} after SIGTERM, expected 0"
            ));
        }
    }

    // ---- protocol conveniences ----

    /// Select socket `sock` and open a client of protocol `proto` (0 TCP, 1 UDP, 3 TLS) to
    /// 127.0.0.1:`port`, asserting every reply is OK (TCP's names the address, as C3.5.2.x does).
    pub fn open_client(&mut self, sock: u8, proto: u8, port: u16) {
        self.expect(format!("P0={sock}\r").as_bytes(), OK);
        self.expect(format!("P1={proto}\r").as_bytes(), OK);
        self.expect(b"P3=127.0.0.1\r", OK);
        self.expect(format!("P4={port}\r").as_bytes(), OK);
        self.expect(b"P6=1\r", if proto == 0 { CONNECTING } else { OK });
    }

    /// Select socket `sock` and open a TCP client to 127.0.0.1:`port`.
    pub fn connect_tcp(&mut self, sock: u8, port: u16) {
        self.open_client(sock, 0, port);
    }

    /// S3 of `data` (zero-padded header) on the current socket, asserting `\r\n<len>\r\nOK\r\n> `.
    #[track_caller]
    pub fn send(&mut self, data: &[u8]) {
        let want = ok(data.len().to_string());
        self.expect(&s3(data), &want);
    }

    /// Send `data` in S3 commands of at most `chunk` bytes.
    #[track_caller]
    pub fn send_chunked(&mut self, data: &[u8], chunk: usize) {
        for part in data.chunks(chunk) {
            self.send(part);
        }
    }

    /// R0 until exactly `n` bytes came back (panics on an error/-1 reply, on more than `n` bytes,
    /// or after `timeout`). Returns the data and the number of R0 commands it took.
    pub fn recv_exact(&mut self, n: usize, timeout: Duration) -> (Vec<u8>, usize) {
        let deadline = Instant::now() + timeout;
        let mut data = Vec::new();
        let mut rounds = 0;
        while data.len() < n {
            if Instant::now() >= deadline || rounds >= 10_000 {
                self.fail(&format!(
                    "only {} of {n} bytes after {rounds} R0 commands",
                    data.len()
                ));
            }
            let reply = self.cmd(b"R0\r");
            rounds += 1;
            match r0_payload(&reply) {
                Some(d) => data.extend_from_slice(d),
                None => self.fail(&format!(
                    "R0 after {} of {n} bytes answered \"{}\"",
                    data.len(),
                    esc(&reply)
                )),
            }
        }
        if data.len() != n {
            self.fail(&format!("got {} bytes, expected {n}", data.len()));
        }
        (data, rounds)
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        self.pty = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            if let Some(p) = &self.log_path {
                let log = std::fs::read(p).unwrap_or_default();
                let tail = &log[log.len().saturating_sub(6000)..];
                eprintln!(
                    "---- eswifi-emu log {} (tail) ----\n{}\n---- end of log ----",
                    p.display(),
                    String::from_utf8_lossy(tail)
                );
            }
        }
    }
}

/// Join with the default configuration: `C1=<ssid>`, `C2`, `C3=3`, `C0`, asserting exact replies.
pub fn join(emu: &mut Emu) {
    join_as(emu, "eswifi-e2e");
}

/// [`join`] with a chosen SSID.
pub fn join_as(emu: &mut Emu, ssid: &str) {
    emu.expect(format!("C1={ssid}\r").as_bytes(), OK);
    emu.expect(b"C2=secret123\r", OK);
    emu.expect(b"C3=3\r", OK);
    emu.expect(b"C0\r", &ok(format!("[JOIN   ] {ssid},127.0.0.1,0,0")));
}

// ---- the control socket ----------------------------------------------------------------------

/// Send one command line to the control socket (`--control PATH`) and read its answer: every line
/// up to and including the final `ok…`/`error…` line (`fault list` sends rules before it).
pub fn control_lines(path: &Path, line: &str) -> Vec<String> {
    use std::os::unix::net::UnixStream;
    let mut s = UnixStream::connect(path).expect("control socket");
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut lines = Vec::new();
    let mut cur = Vec::new();
    let mut b = [0u8; 1];
    // Bounded: at most a few hundred answer lines.
    for _ in 0..1_000_000 {
        assert_eq!(
            s.read(&mut b).expect("control answer"),
            1,
            "answer cut short"
        );
        if b[0] != b'\n' {
            cur.push(b[0]);
            continue;
        }
        let l = String::from_utf8(std::mem::take(&mut cur)).unwrap();
        let last =
            l == "ok" || l.starts_with("ok ") || l.starts_with("error ") || l.starts_with('[');
        lines.push(l);
        if last {
            return lines;
        }
    }
    panic!("control answer too long: {lines:?}");
}

/// [`control_lines`] for a command answered in one line.
pub fn control(path: &Path, line: &str) -> String {
    let mut lines = control_lines(path, line);
    assert_eq!(lines.len(), 1, "one-line answer expected: {lines:?}");
    lines.pop().unwrap()
}

// ---- loopback servers ---------------------------------------------------------------------------

/// Longest a test server runs, even if never dropped.
pub const SERVER_LIFETIME: Duration = Duration::from_secs(120);

/// Passed to connection handlers: whether the server should keep going.
#[derive(Clone)]
pub struct Ctl {
    stop: Arc<AtomicBool>,
    deadline: Instant,
}

impl Ctl {
    pub fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline
    }
}

/// A server thread on 127.0.0.1 (TCP or UDP). Stops on drop.
pub struct Server {
    addr: SocketAddr,
    ctl: Ctl,
    accepted: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// A TCP server accepting any number of connections; each runs `handler` on its own thread.
    /// Handlers must return once `ctl.running()` turns false.
    pub fn tcp<F>(handler: F) -> Server
    where
        F: Fn(TcpStream, &Ctl) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind tcp server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().unwrap();
        let ctl = Ctl {
            stop: Arc::new(AtomicBool::new(false)),
            deadline: Instant::now() + SERVER_LIFETIME,
        };
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let thread = {
            let ctl = ctl.clone();
            let accepted = accepted.clone();
            std::thread::spawn(move || {
                while ctl.running() {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            accepted.lock().unwrap().push(peer);
                            stream.set_nonblocking(false).expect("blocking stream");
                            let (h, c) = (handler.clone(), ctl.clone());
                            std::thread::spawn(move || h(stream, &c));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            })
        };
        Server {
            addr,
            ctl,
            accepted,
            thread: Some(thread),
        }
    }

    /// TCP echo: every connection gets back what it sends, until EOF.
    pub fn tcp_echo() -> Server {
        Server::tcp(|mut s, ctl| {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = [0u8; 8192];
            while ctl.running() {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => break,
                }
            }
        })
    }

    /// Sends `payload` on each connection, then closes its sending side (FIN) and drains what the
    /// client sends until it closes too (or the server stops).
    pub fn tcp_send_then_close(payload: &[u8]) -> Server {
        let payload = payload.to_vec();
        Server::tcp(move |mut s, ctl| {
            if s.write_all(&payload).is_err() {
                return;
            }
            let _ = s.shutdown(std::net::Shutdown::Write);
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = [0u8; 4096];
            while ctl.running() {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => break,
                }
            }
        })
    }

    /// UDP echo: every datagram is sent back to its source.
    pub fn udp_echo() -> Server {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp server");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let ctl = Ctl {
            stop: Arc::new(AtomicBool::new(false)),
            deadline: Instant::now() + SERVER_LIFETIME,
        };
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let ctl = ctl.clone();
            let accepted = accepted.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while ctl.running() {
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            accepted.lock().unwrap().push(from);
                            let _ = sock.send_to(&buf[..n], from);
                        }
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => {}
                    }
                }
            })
        };
        Server {
            addr,
            ctl,
            accepted,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Peers accepted so far (TCP) or datagram sources seen (UDP).
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.accepted.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.ctl.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
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

/// Run the emulator binary with `args` to completion (a tool, or a start expected to fail) in
/// `cwd`, with RUST_LOG unset, for at most `timeout` (then it is killed and the test fails).
/// Returns (exit status code, stdout, stderr).
pub fn run_binary(args: &[&str], cwd: &Path, timeout: Duration) -> (Option<i32>, String, String) {
    let out = TempDir::new("run");
    let out_path = out.path().join("stdout");
    let err_path = out.path().join("stderr");
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("creating stdout file"))
        .stderr(File::create(&err_path).expect("creating stderr file"))
        .spawn()
        .expect("spawning eswifi-emu");
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(st) => break st,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let err = std::fs::read_to_string(&err_path).unwrap_or_default();
                panic!("eswifi-emu {args:?} still running after {timeout:?}; stderr: {err}");
            }
        }
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status.code(), read(&out_path), read(&err_path))
}

/// A TCP port on 127.0.0.1 with (very likely) nothing listening: bind, take the port, close.
/// Make an accepted test-server socket blocking with the given read timeout (the server's polling
/// tick) and a 20 s write timeout; false if the socket is already unusable.
pub fn blocking_with_tick(sock: &TcpStream, tick: Duration) -> bool {
    let ok = sock.set_nonblocking(false).is_ok()
        && sock.set_read_timeout(Some(tick)).is_ok()
        && sock
            .set_write_timeout(Some(Duration::from_secs(20)))
            .is_ok();
    let _ = sock.set_nodelay(true);
    ok
}

/// Poll `get` every 10 ms, at most `timeout`, until `pred` holds; returns the last value. For waiting
/// on something certain to happen (a server noticing a connection), never for timing assertions.
pub fn wait_for<T>(timeout: Duration, get: impl Fn() -> T, pred: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let v = get();
        if pred(&v) || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

/// Deterministic pseudo-random bytes (xorshift), for payloads.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}
