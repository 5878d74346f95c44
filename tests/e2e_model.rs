//! Host-behaviour model test (issue 16): proptest drives each front end of the real binary (pty,
//! `--listen`, `--connect`, `--stdio`) through random host behaviour — attach, detach, overlap,
//! reopen with and without a flush, half-close, leaving with a reply unread, end of input,
//! reset, slow reads — against a model of the module (its product name, set with `ZN`, which
//! `I?` shows). Invariants:
//! - every command a host sent while attached gets exactly one reply, delivered to that host
//!   while it is attached (exact bytes, nothing before or after it);
//! - a host that attaches finds a quiet line (nothing meant for a host that left), except the
//!   first, which gets the power-up banner; a host attached alone is always served;
//! - the module's state survives a detach and an attach (and a reset brings the power-up one);
//! - the emulator neither panics nor exits (it stops with status 0).
//!
//! Cases and seed are fixed so `cargo test` stays short and repeatable; `MODEL_CASES=N` and
//! `MODEL_SEED=N` run more, or others.

use eswifi_test_support::harness::*;
use nix::poll::PollFlags;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(15);
/// How long a line must stay silent to count as quiet.
const QUIET: Duration = Duration::from_millis(60);
const DEFAULT_NAME: &str = "Inventek eS-WiFi";
const PINNED: &str = "[network]\nip = \"127.0.0.1\"\n";
/// How long after a pty host's close the next one opens, at the least, in the model: the
/// emulator drops the output the departed host left unread as soon as it sees the close (within a
/// millisecond on a quiet machine); a host opening before that can read it (README, "What a host
/// finds on the line").
const PTY_CLOSE_SEEN: Duration = Duration::from_millis(50);

/// What a host does next.
#[derive(Debug, Clone)]
enum Op {
    /// `I?`: the identity, with the current name.
    Info,
    /// `ZN=<name>`.
    Name(u8),
    /// `CS`.
    Status,
    /// Several commands in one write.
    Burst(u8),
    /// `I?`, its reply read a few bytes at a time.
    SlowInfo,
    /// Close and open again; flush the input after opening, or not; speak at once (`I?` right
    /// after opening, before the emulator has seen the open), or not.
    Reopen { flush: bool, speak: bool },
    /// Send `I?` and leave without reading the reply; a new host attaches.
    Leave,
    /// A second host attaches while the first is there; the first leaves; the second goes on.
    Overlap,
    /// Send `I?`, end the input (shutdown of the write side), read the reply (TCP).
    HalfClose,
    /// The control socket's `reset`: one banner, the power-up name.
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Info),
        2 => (0u8..8).prop_map(Op::Name),
        1 => Just(Op::Status),
        2 => (2u8..6).prop_map(Op::Burst),
        1 => Just(Op::SlowInfo),
        2 => (any::<bool>(), any::<bool>()).prop_map(|(flush, speak)| Op::Reopen { flush, speak }),
        2 => Just(Op::Leave),
        2 => Just(Op::Overlap),
        1 => Just(Op::HalfClose),
        1 => Just(Op::Reset),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Front {
    Pty,
    Listen,
    Connect,
}

/// One host's end of the line.
struct Host {
    f: File,
    /// The TCP stream, to shut its write side.
    tcp: Option<TcpStream>,
}

impl Host {
    fn pty(path: &Path) -> Host {
        Host {
            f: open_line(path),
            tcp: None,
        }
    }

    fn tcp(s: TcpStream) -> Host {
        let keep = s.try_clone().unwrap();
        Host {
            f: tcp_line(s),
            tcp: Some(keep),
        }
    }

    fn write(&mut self, b: &[u8]) {
        let deadline = Instant::now() + SECS;
        let mut rest = b;
        while !rest.is_empty() {
            assert!(Instant::now() < deadline, "write stalled");
            let _ = poll_fd(self.f.as_fd(), PollFlags::POLLOUT, SECS);
            match self.f.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("host write: {e}"),
            }
        }
    }

    /// Exactly `n` bytes, `chunk` at a time with `gap` between reads (fewer at the deadline).
    fn read_n(&mut self, n: usize, chunk: usize, gap: Duration) -> Vec<u8> {
        let deadline = Instant::now() + SECS;
        let mut got = Vec::new();
        let mut buf = vec![0u8; chunk];
        while got.len() < n && Instant::now() < deadline {
            let want = chunk.min(n - got.len());
            if !poll_fd(self.f.as_fd(), PollFlags::POLLIN, Duration::from_millis(50)).unwrap() {
                continue;
            }
            match self.f.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("host read: {e}"),
            }
            std::thread::sleep(gap);
        }
        got
    }

    /// Whatever arrives within `d` (EOF ends it).
    fn read_for(&mut self, d: Duration) -> Vec<u8> {
        let deadline = Instant::now() + d;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !poll_fd(self.f.as_fd(), PollFlags::POLLIN, left).unwrap() {
                return got;
            }
            match self.f.read(&mut buf) {
                Ok(0) => return got,
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("host read: {e}"),
            }
        }
    }
}

/// The model: the module's name, and what its replies are.
struct Model {
    name: String,
}

impl Model {
    fn info(&self) -> Vec<u8> {
        let id = "ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000";
        ok(format!("{id},{}", self.name))
    }
}

/// The emulator, its front end and the host attached now.
struct World {
    emu: Emu,
    front: Front,
    ctl: PathBuf,
    /// `--connect`'s server.
    server: Option<TcpListener>,
    host: Host,
    model: Model,
    /// The power-up banner (the first host's).
    banner: Vec<u8>,
}

impl World {
    fn start(front: Front, ctl: PathBuf) -> World {
        let c = ctl.to_str().unwrap().to_string();
        let server = (front == Front::Connect).then(|| TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = server.as_ref().map(|s| s.local_addr().unwrap().to_string());
        let mut args = vec!["--control".to_string(), c];
        match front {
            Front::Pty => {}
            Front::Listen => args.extend(["--listen".into(), "127.0.0.1:0".into()]),
            Front::Connect => args.extend(["--connect".into(), addr.unwrap()]),
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let emu = Emu::launch_full(Some(PINNED), &args, 1, |_| None);
        let mut w = World {
            host: Host {
                f: File::open("/dev/null").unwrap(),
                tcp: None,
            },
            emu,
            front,
            ctl,
            server,
            model: Model {
                name: DEFAULT_NAME.into(),
            },
            banner: Vec::new(),
        };
        w.host = w.new_host();
        // The first host gets what the module printed at power-up.
        let banner = w.read_until(BANNER_END);
        assert!(banner.starts_with(b"\r\n"), "{}", esc(&banner));
        w.banner = banner;
        w
    }

    fn new_host(&mut self) -> Host {
        match self.front {
            Front::Pty => Host::pty(self.emu.pty_path()),
            Front::Listen => Host::tcp(TcpStream::connect(&self.emu.lines[0]).unwrap()),
            Front::Connect => {
                let l = self.server.as_ref().unwrap();
                l.set_nonblocking(false).unwrap();
                Host::tcp(l.accept().expect("the emulator connects").0)
            }
        }
    }

    /// Read until the bytes end with `end` (bounded).
    fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + SECS;
        let mut got = Vec::new();
        while !got.ends_with(end) && Instant::now() < deadline {
            got.extend(self.host.read_for(Duration::from_millis(20)));
        }
        got
    }

    /// Send a command and check its exact reply, then a quiet line.
    fn exchange(&mut self, req: &[u8], want: &[u8], chunk: usize) {
        self.host.write(req);
        let gap = if chunk < 64 {
            Duration::from_millis(2)
        } else {
            Duration::ZERO
        };
        let got = self.host.read_n(want.len(), chunk, gap);
        assert_bytes(&got, want, &format!("reply to {}", esc(req)));
    }

    /// A new host attaches: it finds a quiet line.
    fn attach(&mut self, flush: bool) {
        self.host = self.new_host();
        if flush {
            if self.front == Front::Pty {
                nix::sys::termios::tcflush(
                    self.host.f.as_fd(),
                    nix::sys::termios::FlushArg::TCIFLUSH,
                )
                .unwrap();
            } else {
                self.host.read_for(Duration::from_millis(5));
            }
        }
        let stale = self.host.read_for(QUIET);
        assert_bytes(&stale, b"", "a host that attaches finds a quiet line");
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Info => {
                let want = self.model.info();
                self.exchange(b"I?\r", &want, 4096);
            }
            Op::Name(k) => {
                self.model.name = format!("name-{k}");
                self.exchange(format!("ZN={}\r", self.model.name).as_bytes(), OK, 4096);
            }
            Op::Status => self.exchange(b"CS\r", &ok("0"), 4096),
            Op::Burst(n) => {
                let (mut req, mut want) = (Vec::new(), Vec::new());
                for i in 0..n {
                    if i % 2 == 0 {
                        req.extend_from_slice(b"I?\r");
                        want.extend(self.model.info());
                    } else {
                        req.extend_from_slice(b"CS\r");
                        want.extend(ok("0"));
                    }
                }
                self.exchange(&req, &want, 4096);
            }
            Op::SlowInfo => {
                let want = self.model.info();
                self.exchange(b"I?\r", &want, 5);
            }
            Op::Reopen {
                flush,
                speak: false,
            } => {
                self.host = Host::pty(Path::new("/dev/null"));
                self.attach(flush);
            }
            Op::Reopen { speak: true, .. } => {
                self.host = Host::pty(Path::new("/dev/null"));
                self.host = self.new_host();
                let want = self.model.info();
                self.exchange(b"I?\r", &want, 4096);
                assert_bytes(&self.host.read_for(QUIET), b"", "one reply");
            }
            Op::Leave => {
                self.host.write(b"I?\r");
                self.host = Host::pty(Path::new("/dev/null"));
                if self.front == Front::Pty {
                    // Every opener of a pty reads one kernel buffer: a reply the module wrote
                    // before it saw the close stays there until it does (see `PTY_CLOSE_SEEN`).
                    std::thread::sleep(PTY_CLOSE_SEEN);
                }
                self.attach(false);
            }
            Op::Overlap => self.overlap(),
            Op::HalfClose => match self.host.tcp.as_ref().map(|s| s.try_clone().unwrap()) {
                Some(s) => {
                    self.host.write(b"I?\r");
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    let want = self.model.info();
                    let got = self.host.read_for(Duration::from_millis(500));
                    assert_bytes(&got, &want, "the reply after the end of input, then EOF");
                    self.attach(false);
                }
                None => self.apply(&Op::Reopen {
                    flush: false,
                    speak: false,
                }),
            },
            Op::Reset => {
                assert_eq!(control(&self.ctl, "reset"), "ok");
                let banner = self.read_until(BANNER_END);
                let want = self.banner.clone();
                assert_bytes(&banner, &want, "one banner after reset");
                self.model.name = DEFAULT_NAME.into();
                assert_bytes(&self.host.read_for(QUIET), b"", "one banner only");
            }
        }
    }

    /// A second host while the first is attached.
    fn overlap(&mut self) {
        match self.front {
            Front::Connect => self.apply(&Op::Reopen {
                flush: false,
                speak: false,
            }),
            Front::Listen => {
                // It connects and speaks at once; it is told nothing until the first leaves.
                let mut second = Host::tcp(TcpStream::connect(&self.emu.lines[0]).unwrap());
                second.write(b"I?\r");
                assert_bytes(
                    &second.read_for(QUIET),
                    b"",
                    "a waiting host is told nothing",
                );
                self.exchange(b"CS\r", &ok("0"), 4096);
                self.host = second;
                let want = self.model.info();
                let got = self.host.read_n(want.len(), 4096, Duration::ZERO);
                assert_bytes(
                    &got,
                    &want,
                    "the waiting host's command, once it has the line",
                );
            }
            Front::Pty => {
                // Two openers share the line; the first reads its reply and goes.
                let second = Host::pty(self.emu.pty_path());
                self.exchange(b"CS\r", &ok("0"), 4096);
                self.host = second;
                assert_bytes(&self.host.read_for(QUIET), b"", "nothing stale");
            }
        }
    }

    /// The last host is served; the emulator stops cleanly.
    fn finish(mut self) {
        let want = self.model.info();
        self.exchange(b"I?\r", &want, 4096);
        assert_bytes(&self.host.read_for(QUIET), b"", "nothing more");
        self.emu.stop();
    }
}

/// Runs `cases` random host behaviours against front end `front`.
fn model(front: Front, tag: u8) {
    let cases = std::env::var("MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let mut key = [tag; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 32,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &key),
    );
    let n = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&proptest::collection::vec(op(), 1..12), |ops| {
            let k = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ctl =
                std::env::temp_dir().join(format!("eswifi-m{}-{tag}-{k}.sock", std::process::id()));
            let mut w = World::start(front, ctl);
            for op in &ops {
                w.apply(op);
            }
            w.finish();
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{front:?} (MODEL_SEED={seed}): {e}"));
}

#[test]
fn model_pty() {
    model(Front::Pty, 1);
}

#[test]
fn model_listen() {
    model(Front::Listen, 2);
}

#[test]
fn model_connect() {
    model(Front::Connect, 3);
}

/// `--stdio`: a join, then random commands (a lookup among them, which takes a worker's round
/// trip) written
/// in random pieces, then the end of input: every reply, in order, then exit 0.
#[test]
fn model_stdio() {
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 12,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[4; 32]),
    );
    let cmds = proptest::collection::vec((0u8..4, 1usize..9), 1..10);
    runner
        .run(&cmds, |cmds| {
            let mut model = Model {
                name: DEFAULT_NAME.into(),
            };
            // Joined first: a lookup needs the network.
            let mut input = b"C1=lab\rC0\r".to_vec();
            let mut want = [OK, &ok("[JOIN   ] lab,127.0.0.1,0,0")].concat();
            let mut cuts = Vec::new();
            for (k, (c, cut)) in cmds.iter().enumerate() {
                match c {
                    0 => {
                        input.extend_from_slice(b"I?\r");
                        want.extend(model.info());
                    }
                    1 => {
                        model.name = format!("s{k}");
                        input.extend_from_slice(format!("ZN={}\r", model.name).as_bytes());
                        want.extend_from_slice(OK);
                    }
                    2 => {
                        input.extend_from_slice(b"D0=localhost\r");
                        want.extend(ok("127.0.0.1"));
                    }
                    _ => {
                        input.extend_from_slice(b"CS\r");
                        want.extend(ok("1"));
                    }
                }
                cuts.push(input.len().saturating_sub(*cut));
            }
            let out = stdio(&input, &cuts);
            assert!(
                out.ends_with(&want),
                "stdout {}\nwant end {}",
                esc(&out),
                esc(&want)
            );
            assert_eq!(
                out.len(),
                want.len() + BANNER_END.len() + banner_head(),
                "{}",
                esc(&out)
            );
            Ok(())
        })
        .unwrap();
}

/// Length of the banner before its last line.
fn banner_head() -> usize {
    "\r\n                eS-WiFi\r\n            Inventek Systems\r\n    Embedding Connectivity Everywhere\r\n         "
        .len()
}

/// Run `--stdio` with `input` written in pieces cut at `cuts`; its stdout at exit (status 0).
fn stdio(input: &[u8], cuts: &[usize]) -> Vec<u8> {
    use std::process::{Command, Stdio};
    let dir = TempDir::new("model-stdio");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, PINNED).unwrap();
    let mut child = Command::new(binary())
        .args(["--stdio", "--config", cfg.to_str().unwrap()])
        .arg("--certsets")
        .arg(dir.path().join("certs"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.to_vec();
    cuts.sort();
    for c in cuts.into_iter().chain([input.len()]) {
        if c > at {
            stdin.write_all(&input[at..c]).unwrap();
            at = c;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    drop(stdin);
    let deadline = Instant::now() + SECS;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("--stdio did not end with its input");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(status.code(), Some(0));
    reader.join().unwrap()
}
