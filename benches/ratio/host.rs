//! The host's side of every figure: the processes under test (the emulator, a floor program), the
//! serial line a host driver holds, and what `/proc` says about a process. The same code drives
//! the emulator and its floor, so only the program on the other end of the line differs.

use eswifi_core::iwin::reply::parse::Parser;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long any one reply may take before the benchmark gives up (a hung emulator must not hang
/// `cargo bench`).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// A child process that prints what a host opens (one line per module) on stdout; killed on drop.
pub struct Proc {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    pub lines: Vec<String>,
    _dir: Option<TempDir>,
}

impl Proc {
    fn spawn(mut cmd: Command, nlines: usize, dir: Option<TempDir>) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning a benchmark process");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut lines = Vec::new();
        for _ in 0..nlines {
            let mut l = String::new();
            // The child prints its lines at once or exits (closing stdout): no unbounded wait.
            if out.read_line(&mut l).expect("reading stdout") == 0 {
                let _ = child.kill();
                panic!("the process exited before printing its {nlines} lines");
            }
            lines.push(l.trim_end().to_string());
        }
        Proc {
            child,
            _stdout: out,
            lines,
            _dir: dir,
        }
    }

    /// The emulator (`--certsets` in a fresh directory, `-q`) with `args`.
    pub fn emulator(args: &[&str], config: Option<&str>, nlines: usize) -> Proc {
        let dir = tempfile::Builder::new()
            .prefix("eswifi-bench-")
            .tempdir()
            .expect("a temporary directory");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eswifi-emu"));
        cmd.arg("-q")
            .arg("--certsets")
            .arg(dir.path().join("certsets"));
        if let Some(toml) = config {
            let p = dir.path().join("config.toml");
            std::fs::write(&p, toml).expect("writing the config");
            cmd.arg("--config").arg(p);
        }
        cmd.args(args).stderr(Stdio::null());
        Proc::spawn(cmd, nlines, Some(dir))
    }

    /// This benchmark binary as a floor program (see `floor.rs`), configured by `env`.
    pub fn floor(env: &[(&str, String)], nlines: usize) -> Proc {
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.env(crate::floor::ENV, "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::spawn(cmd, nlines, None)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time of every thread of the process so far, in nanoseconds (`/proc/PID/task/*/schedstat`,
    /// first field: time spent on a CPU; nanosecond resolution, unlike `stat`'s clock ticks).
    pub fn cpu_ns(&self) -> u64 {
        let mut total = 0;
        let dir = format!("/proc/{}/task", self.pid());
        for e in std::fs::read_dir(&dir)
            .expect("reading /proc/PID/task")
            .flatten()
        {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        total
    }

    /// Resident set size in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    /// The line of module 0, opened by a host.
    pub fn line(&self) -> Line {
        Line::open(Path::new(&self.lines[0]))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The host end of a serial line (a pty slave), raw, as pyserial or a driver opens it. Reads wait
/// with poll(2) so nothing waits forever; both sides of every figure pay for the same calls.
pub struct Line {
    f: File,
    /// Cuts what arrives into replies (the core's parser, as every host of ours uses).
    parser: Parser,
    /// The last reply (or the replies since the last call).
    acc: Vec<u8>,
    buf: Vec<u8>,
}

impl Line {
    pub fn open(path: &Path) -> Line {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let mut t = nix::sys::termios::tcgetattr(&f).expect("tcgetattr");
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(&f, nix::sys::termios::SetArg::TCSANOW, &t).expect("raw");
        Line {
            f,
            parser: Parser::new(),
            acc: Vec::with_capacity(1 << 16),
            buf: vec![0; 1 << 16],
        }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.f.write_all(b).expect("writing the line");
    }

    /// Read once (after waiting at most [`REPLY_TIMEOUT`]) into the parser.
    fn read_some(&mut self) {
        let ready = eswifi_test_support::harness::poll_fd(
            self.f.as_fd(),
            nix::poll::PollFlags::POLLIN,
            REPLY_TIMEOUT,
        )
        .expect("poll");
        if !ready {
            panic!(
                "no reply within {REPLY_TIMEOUT:?}; so far \"{}\"",
                self.acc.escape_ascii()
            );
        }
        match self.f.read(&mut self.buf) {
            Ok(n) => self.parser.push(&self.buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the line: {e}"),
        }
    }

    /// Read up to the end of the next reply and return its length, keeping it until the next
    /// call.
    pub fn reply_len(&mut self) -> usize {
        self.acc.clear();
        loop {
            if let Some(o) = self.parser.next() {
                self.acc = o.raw;
                return self.acc.len();
            }
            self.read_some();
        }
    }

    /// The last reply read.
    pub fn last(&self) -> &[u8] {
        &self.acc
    }

    /// Send a command and return its reply.
    pub fn cmd(&mut self, b: &[u8]) -> Vec<u8> {
        self.send(b);
        self.reply_len();
        self.acc.clone()
    }

    /// Send a command and check its reply ends in OK.
    pub fn ok(&mut self, b: &[u8]) {
        let r = self.cmd(b);
        assert!(
            r.ends_with(b"OK\r\n> "),
            "{} answered \"{}\"",
            b.escape_ascii(),
            r.escape_ascii()
        );
    }

    /// Read until `n` replies have come; returns their bytes and when the last one arrived.
    pub fn read_prompts(&mut self, n: usize) -> (usize, Instant) {
        self.acc.clear();
        let mut seen = 0;
        while seen < n {
            match self.parser.next() {
                Some(o) => {
                    self.acc.extend(o.raw);
                    seen += 1;
                }
                None => self.read_some(),
            }
        }
        (self.acc.len(), Instant::now())
    }
}
