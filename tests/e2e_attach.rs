//! End-to-end tests of how hosts attach and leave (issue 16, "make the edges as solid as the
//! core"): what a host gets when it opens the line, overlaps another, reopens without a flush,
//! ends its input, or waits silently for a prompt; lines ended with LF alone; two emulators on one
//! link or control path; port ranges. The real binary, hosts on ptys and loopback sockets.

use eswifi_test_support::harness::*;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(20);

const I_REPLY: &str =
    "ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi";

/// The emulator's log so far.
fn log_of(emu: &Emu) -> String {
    std::fs::read_to_string(emu.log_path().expect("a log file")).unwrap_or_default()
}

/// Bug 8: a host that ends its lines with LF alone gets no reply (the module waits for CR), and
/// the log says so once, at info level.
#[test]
fn a_line_ended_with_lf_alone_is_noted_once_in_the_log() {
    let mut emu = Emu::start_with(None, &[]);
    emu.write(b"I?\n");
    emu.write(b"CS\n");
    assert_bytes(
        &emu.read_for(Duration::from_millis(300)),
        b"",
        "no reply without CR",
    );
    let note = "the module ends a command at CR";
    let log = wait_for(SECS, || log_of(&emu), |l| l.contains(note));
    assert_eq!(log.matches(note).count(), 1, "{log}");
    assert!(
        log.lines().any(|l| l.contains(note) && l.contains("INFO")),
        "{log}"
    );
    // The CR ends what came before it; the module goes on as usual.
    emu.cmd(b"\r");
    emu.write(b"I?\n");
    emu.expect_ok(b"\r", I_REPLY.as_bytes());
    assert_eq!(log_of(&emu).matches(note).count(), 1, "once");
    emu.stop();
}

/// Pinned to 127.0.0.1, as [`Emu::start_with`] does.
const PINNED: &str = "[network]\nip = \"127.0.0.1\"\n";

/// How often `b` holds the banner's last line.
fn banners(b: &[u8]) -> usize {
    b.windows(BANNER_END.len())
        .filter(|w| *w == BANNER_END)
        .count()
}

/// A small xorshift for the moments hosts pick: seeded from the clock, printed on failure.
struct Moments(u64);

impl Moments {
    fn new() -> Moments {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Moments(t | 1)
    }

    /// A moment in [0, max).
    fn below(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        max.mul_f64((self.0 % 10_000) as f64 / 10_000.0)
    }
}

/// Run the emulator with `--stdio` and `stdin`, to its exit: (status, stdout).
fn stdio_run(stdin: Stdio, feed: Option<&[u8]>) -> (Option<i32>, Vec<u8>) {
    let dir = TempDir::new("stdio");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, PINNED).unwrap();
    let mut child = Command::new(binary())
        .args(["--stdio", "--config", cfg.to_str().unwrap()])
        .arg("--certsets")
        .arg(dir.path().join("certs"))
        .env_remove("RUST_LOG")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    if let Some(bytes) = feed {
        let mut input = child.stdin.take().unwrap();
        input.write_all(bytes).unwrap();
    }
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + SECS;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the emulator did not end with its input");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code(), reader.join().unwrap())
}

/// Bug 2: at the end of stdin, every command already received is finished (a lookup too) and
/// answered before the emulator exits 0.
#[test]
fn stdio_answers_every_command_received_before_the_end_of_input() {
    let (code, out) = stdio_run(
        Stdio::piped(),
        Some(b"C1=lab\rC3=0\rC0\rD0=localhost\rI?\r"),
    );
    assert_eq!(code, Some(0));
    let want = [
        OK,
        OK,
        &ok("[JOIN   ] lab,127.0.0.1,0,0"),
        &ok("127.0.0.1"),
        &ok(I_REPLY),
    ]
    .concat();
    assert!(out.ends_with(&want), "stdout: {}", esc(&out));
    assert_eq!(banners(&out), 1, "{}", esc(&out));
}

/// Issue 21, item 12: a regular file or /dev/null on stdin is a finite line, read without epoll.
#[test]
fn stdio_reads_a_regular_file_and_dev_null() {
    let dir = TempDir::new("stdin");
    let file = dir.path().join("commands");
    std::fs::write(&file, b"I?\rCS\r").unwrap();
    let (code, out) = stdio_run(Stdio::from(File::open(&file).unwrap()), None);
    assert_eq!(code, Some(0));
    let want = [BANNER_END, &ok(I_REPLY), &ok("0")].concat();
    assert!(out.ends_with(&want), "stdout: {}", esc(&out));
    let (code, out) = stdio_run(Stdio::from(File::open("/dev/null").unwrap()), None);
    assert_eq!(code, Some(0));
    assert!(out.ends_with(BANNER_END), "stdout: {}", esc(&out));
}

/// Bug 3: with `--reset-on-open`, a host that opens the line and writes at once, without a
/// flush, gets exactly one banner; what it sent while the module was in reset is lost (its `C1`
/// is neither answered nor applied).
#[test]
fn reset_on_open_gives_one_banner_and_hears_nothing_during_the_reset() {
    let mut emu = Emu::start_with(None, &["--reset-on-open"]);
    assert_eq!(banners(&emu.boot), 1, "{}", esc(&emu.boot));
    for round in 0..3 {
        emu.expect(b"ZN=Unsaved\r", OK);
        emu.close_pty();
        emu.attach(open_line(emu.pty_path()));
        emu.write(b"C1=mynet\r");
        let got = emu.read_until_prompt(SECS);
        let more = emu.read_for(Duration::from_millis(300));
        let all = [got, more].concat();
        assert!(all.ends_with(BANNER_END), "round {round}: {}", esc(&all));
        assert_eq!(banners(&all), 1, "round {round}: {}", esc(&all));
        assert!(!all.windows(2).any(|w| w == b"OK"), "{}", esc(&all));
        emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
        let c = emu.cmd(b"C?\r");
        assert!(c.starts_with(b"\r\n,"), "C1 was lost: {}", esc(&c));
    }
    emu.stop();
}

/// Bug 3 over `--listen`: the same for each connection.
#[test]
fn reset_on_open_over_tcp_gives_one_banner_and_hears_nothing_during_the_reset() {
    let mut emu = Emu::launch_full(
        Some(PINNED),
        &["--listen", "127.0.0.1:0", "--reset-on-open"],
        1,
        |lines| Some(tcp_line(TcpStream::connect(&lines[0]).unwrap())),
    );
    assert_eq!(banners(&emu.boot), 1, "{}", esc(&emu.boot));
    for _ in 0..2 {
        emu.expect(b"ZN=Gone\r", OK);
        emu.close_pty();
        emu.attach(tcp_line(TcpStream::connect(&emu.lines[0]).unwrap()));
        emu.write(b"C1=mynet\r");
        let all = [
            emu.read_until_prompt(SECS),
            emu.read_for(Duration::from_millis(300)),
        ]
        .concat();
        assert_bytes(&all[all.len() - BANNER_END.len()..], BANNER_END, "banner");
        assert_eq!(banners(&all), 1, "{}", esc(&all));
        assert!(!all.windows(2).any(|w| w == b"OK"), "{}", esc(&all));
        assert!(emu.cmd(b"C?\r").starts_with(b"\r\n,"), "C1 was lost");
    }
    emu.stop();
}

/// `[module] attach = "prompt"` with a short quiet time.
fn prompt_config(quiet_ms: u64) -> String {
    format!("{PINNED}[module]\nattach = \"prompt\"\n[timing]\nquiet_ms = {quiet_ms}\n")
}

/// Bug 4: a pty host that flushes its input at a random moment after opening the line (before
/// or after the module's prompt) and then waits silently for the prompt gets one, every time.
#[test]
fn prompt_mode_prompts_a_silent_pty_host_after_its_flush_whenever_it_comes() {
    let quiet = Duration::from_millis(200);
    let mut emu = Emu::launch_full(Some(&prompt_config(200)), &[], 1, |_| None);
    let path = emu.pty_path().to_path_buf();
    let mut m = Moments::new();
    let seed = m.0;
    for round in 0..8 {
        let host = open_line(&path);
        // A moment before the prompt is due, or well after it went out.
        let at = m.below(quiet * 3);
        std::thread::sleep(at);
        nix::sys::termios::tcflush(host.as_fd(), nix::sys::termios::FlushArg::TCIFLUSH).unwrap();
        emu.attach(host);
        let got = emu.read_until_prompt(SECS);
        let more = emu.read_for(quiet * 2);
        let all = [got, more].concat();
        let what = format!("round {round}, flush after {at:?} (seed {seed})");
        assert!(all.ends_with(BANNER_END), "{what}: {}", esc(&all));
        assert_eq!(banners(&all), 1, "{what}: {}", esc(&all));
        // It is a fresh module, and it answers.
        emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
        emu.expect(b"ZN=Changed\r", OK);
        emu.close_pty();
    }
    emu.stop();
}

/// Bug 4 over TCP (QEMU's `-serial tcp:`): nothing at all reaches the host before it has been
/// quiet for `quiet_ms`, whenever it discards what it received, then exactly one banner; a host
/// that speaks first gets its reply and no banner.
#[test]
fn prompt_mode_sends_nothing_before_the_quiet_time_then_one_banner_over_tcp() {
    let quiet = Duration::from_millis(400);
    let mut emu = Emu::launch_full(
        Some(&prompt_config(400)),
        &["--listen", "127.0.0.1:0"],
        1,
        |_| None,
    );
    let addr = emu.lines[0].clone();
    let mut m = Moments::new();
    let seed = m.0;
    for round in 0..4 {
        let host = TcpStream::connect(&addr).unwrap();
        let connected = Instant::now();
        emu.attach(tcp_line(host));
        // The guest's UART flush: whatever came until then is thrown away (nothing may have).
        let at = m.below(quiet.mul_f64(0.75));
        let early = emu.read_for(at);
        assert_bytes(
            &early,
            b"",
            &format!("round {round}: before {at:?} (seed {seed})"),
        );
        let all = [emu.read_until_prompt(SECS), emu.read_for(quiet / 2)].concat();
        assert!(connected.elapsed() >= quiet, "the prompt came early");
        assert_bytes(&all[all.len() - BANNER_END.len()..], BANNER_END, "banner");
        assert_eq!(banners(&all), 1, "round {round}: {}", esc(&all));
        emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
        emu.close_pty();
    }
    // A host that speaks first: its reply, no banner, then or later.
    emu.attach(tcp_line(TcpStream::connect(&addr).unwrap()));
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    assert_bytes(
        &emu.read_for(quiet * 2),
        b"",
        "no banner after the host spoke",
    );
    emu.stop();
}

/// Bug 5: a second emulator refuses a live emulator's `--link` and `--control` paths, names
/// them and exits non-zero; the first keeps both. Stale ones (a link to a pty that is gone, a
/// socket nobody listens on) are taken over.
#[test]
fn a_second_emulator_refuses_live_link_and_control_paths_and_takes_stale_ones() {
    let dir = TempDir::new("paths");
    let link = dir.path().join("esw");
    let ctl = short_socket();
    let (l, c) = (link.to_str().unwrap(), ctl.to_str().unwrap());
    let mut first = Emu::start_with(None, &["--link", l, "--control", c]);
    let certs = dir.path().join("certs2");
    let certs = certs.to_str().unwrap();
    let other = dir.path().join("other");
    let other_ctl = short_socket();
    for (args, path) in [
        (vec!["--link", l, "--certsets", certs], l),
        (
            vec![
                "--link",
                other.to_str().unwrap(),
                "--control",
                c,
                "--certsets",
                certs,
            ],
            c,
        ),
    ] {
        let (code, _, err) = run_binary(&args, dir.path(), SECS);
        assert_ne!(code, Some(0), "{err}");
        assert!(err.contains(path), "the error names {path}: {err}");
    }
    assert!(!other.exists(), "the refused emulator removed its own link");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        first.pty_path(),
        "the first keeps its link"
    );
    assert!(
        control(&ctl, "status").starts_with("[{"),
        "and its control socket"
    );
    first.expect_ok(b"I?\r", I_REPLY.as_bytes());
    first.stop();

    // What a killed emulator leaves: a link to a pty that is gone, a socket nobody listens on.
    std::os::unix::fs::symlink("/dev/pts/eswifi-test-gone", &link).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&other_ctl).unwrap());
    assert!(other_ctl.exists());
    let mut second = Emu::start_with(
        None,
        &["--link", l, "--control", other_ctl.to_str().unwrap()],
    );
    assert_eq!(std::fs::read_link(&link).unwrap(), second.pty_path());
    assert!(control(&other_ctl, "status").starts_with("[{"));
    second.stop();
    assert!(!link.exists() && !other_ctl.exists(), "removed at exit");
}

/// A control socket path short enough to bind (SUN_LEN).
fn short_socket() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("eswifi-a{}-{n}.sock", std::process::id()))
}

/// Bug 6: a port range past 65535 is an error that says so (no panic, no port 0), and
/// `--listen PORT0` with several modules gives consecutive ports, each printed and serving.
#[test]
fn listen_ports_of_several_modules_are_consecutive_and_must_fit() {
    let dir = TempDir::new("ports");
    let certs = dir.path().join("c");
    let certs = certs.to_str().unwrap();
    let (code, _, err) = run_binary(
        &[
            "--listen",
            "127.0.0.1:65535",
            "--modules",
            "2",
            "--certsets",
            certs,
        ],
        dir.path(),
        SECS,
    );
    assert_eq!(code, Some(2), "nothing was served: {err}");
    assert!(err.contains("65535 to 65536 do not fit"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let mut emu = Emu::launch_full(
        Some(PINNED),
        &["--listen", "127.0.0.1:0", "--modules", "3"],
        3,
        |_| None,
    );
    let ports: Vec<u16> = emu
        .lines
        .iter()
        .map(|l| l.parse::<std::net::SocketAddr>().expect(l).port())
        .collect();
    assert_eq!(ports[1], ports[0] + 1, "{ports:?}");
    assert_eq!(ports[2], ports[0] + 2, "{ports:?}");
    for line in emu.lines.clone() {
        emu.attach(tcp_line(TcpStream::connect(&line).unwrap()));
        assert!(emu.read_until_prompt(SECS).ends_with(BANNER_END));
        emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    }
    emu.stop();
}
