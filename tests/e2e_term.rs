//! `eswifi-emu term` as a person uses it: the test opens a pseudo-terminal, runs `term` on it as
//! its controlling terminal (TERM=xterm-256color, 40x160), answers the cursor-position queries a
//! terminal answers, types lines with Enter, and reads the screen. `--record` is checked by
//! replaying the recording with `eswifi-emu run`.

use eswifi_test_support::harness::*;
use nix::pty::{openpty, Winsize};
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCREEN_TIMEOUT: Duration = Duration::from_secs(20);

/// A `term` process on a pty of ours.
struct Screen {
    master: File,
    child: Child,
    /// Everything the terminal showed so far.
    out: Vec<u8>,
    /// Bytes of `out` already searched by `wait_for`.
    seen: usize,
    dsr_answered: usize,
}

impl Screen {
    fn spawn(args: &[&str], cwd: &Path) -> Screen {
        let ws = Winsize {
            ws_row: 40,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&ws), None).expect("openpty");
        let slave = File::from(pty.slave);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eswifi-emu"));
        cmd.arg("term")
            .args(args)
            .current_dir(cwd)
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning eswifi-emu term");
        drop(cmd);
        Screen {
            master: File::from(pty.master),
            child,
            out: Vec::new(),
            seen: 0,
            dsr_answered: 0,
        }
    }

    /// Read what the terminal shows for up to `wait`.
    fn pump(&mut self, wait: Duration) {
        let mut pfd = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) };
        if n <= 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(n) => self.out.extend_from_slice(&buf[..n]),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
        // Answer "where is the cursor?" as a terminal does.
        let asked = self.out.windows(4).filter(|w| w == b"\x1b[6n").count();
        while self.dsr_answered < asked {
            let _ = self.master.write_all(b"\x1b[1;1R");
            self.dsr_answered += 1;
        }
    }

    /// Wait until the screen shows `needle` after what earlier waits consumed.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            if let Some(p) = find(&self.out[self.seen..], needle.as_bytes()) {
                self.seen += p + needle.len();
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the screen never showed {needle:?}; it shows:\n{}",
                    String::from_utf8_lossy(&self.out)
                );
            }
            self.pump(Duration::from_millis(50));
        }
    }

    /// Type a line and press Enter, once the prompt is there.
    fn type_line(&mut self, text: &str) {
        self.wait_for("> ");
        self.master.write_all(text.as_bytes()).unwrap();
        self.master.write_all(b"\r").unwrap();
    }

    /// Ctrl-D at the prompt, then the exit status.
    fn quit(&mut self) -> Option<i32> {
        self.wait_for("> ");
        self.master.write_all(b"\x04").unwrap();
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        while Instant::now() < deadline {
            self.pump(Duration::from_millis(20));
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
        }
        panic!("term did not exit after Ctrl-D");
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn term_as_a_person_uses_it_and_record_replays() {
    let echo = Server::tcp_echo();
    let dir = TempDir::new("term");
    std::fs::write(dir.path().join("hello.txt"), b"hello from a file\n").unwrap();
    let rec = dir.path().join("session.iwin");
    let mut s = Screen::spawn(&["--record", rec.to_str().unwrap()], dir.path());
    s.wait_for("eswifi-emu term on embedded emulator");
    s.type_line("I?");
    s.wait_for("ISM43362-M3G-L44-UART,C3.5.2.3.STM");
    // The reply's \r\n shown as a line break, OK in green.
    s.wait_for("Inventek eS-WiFi\r\n\x1b[32;1mOK\x1b[0m");
    s.type_line("C1=lab");
    s.type_line("C2=hunter2hunter2");
    s.type_line("C0");
    // The embedded module claims a loopback address of its own.
    s.wait_for("[JOIN   ] lab,127.0.");
    s.type_line("C?");
    s.wait_for("lab,********,");
    s.type_line("XX");
    s.wait_for("\x1b[31;1mERROR: Unknown Command\x1b[0m");
    for line in [
        "P0=0".to_string(),
        "P1=0".into(),
        "P3=127.0.0.1".into(),
        format!("P4={}", echo.port()),
        "P6=1".into(),
    ] {
        s.type_line(&line);
        s.wait_for("OK");
    }
    s.type_line("S3 @hello.txt");
    s.wait_for("\r\n18\r\n");
    s.type_line("R0");
    s.wait_for("hello from a file");
    s.type_line("S3=\"two\\r\\nlines\"");
    s.wait_for("\r\n10\r\n");
    s.type_line("R0");
    s.wait_for("two\r\nlines");
    assert_eq!(s.quit(), Some(0), "screen:\n{}", s.text());
    assert!(!s.text().contains("hunter2hunter2\r\n\x1b"), "{}", s.text());

    let recorded = std::fs::read_to_string(&rec).unwrap();
    assert!(!recorded.contains("hunter2"), "{recorded}");
    for want in [
        "I?\nexpect OK\n",
        "C2=${PASSPHRASE}",
        "XX\nexpect ERROR\n",
        &format!(
            "S3=@{}\nexpect OK\n",
            dir.path().join("hello.txt").display()
        ),
        "S3=\"two\\r\\nlines\"\nexpect OK\n",
    ] {
        assert!(recorded.contains(want), "{want:?} not in:\n{recorded}");
    }
    // The recording is a script: replay it (the passphrase from the environment).
    let out = Command::new(env!("CARGO_BIN_EXE_eswifi-emu"))
        .args(["run", rec.to_str().unwrap()])
        .env("PASSPHRASE", "hunter2hunter2")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}

#[test]
fn term_on_a_port_shows_an_asynchronous_message_while_idle() {
    let mut emu = Emu::start();
    emu.close_pty();
    let dir = TempDir::new("term-port");
    let rec = dir.path().join("events.iwin");
    let port = closed_port();
    let path = emu.pty_path().display().to_string();
    let mut s = Screen::spawn(
        &["--port", &path, "--record", rec.to_str().unwrap()],
        dir.path(),
    );
    s.wait_for(&format!("eswifi-emu term on {path}"));
    for line in [
        "C1=lab".to_string(),
        "C0".into(),
        "P0=0".into(),
        "P1=0".into(),
        format!("P2={port}"),
        "P5=1".into(),
    ] {
        s.type_line(&line);
        s.wait_for("OK");
    }
    s.wait_for("> ");
    // Nothing typed: the message must show on its own.
    let _client = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the module");
    s.wait_for(&format!("[TCP SVR] Accepted 127.0.0.1:{port}"));
    s.master.write_all(b"P?\r").unwrap();
    s.wait_for(&format!("0,127.0.0.1,{port},"));
    assert_eq!(s.quit(), Some(0), "screen:\n{}", s.text());
    let recorded = std::fs::read_to_string(&rec).unwrap();
    assert!(
        recorded.contains("P5=1\nexpect OK\nwait \"[TCP SVR] Accepted\"\nP?\nexpect OK\n"),
        "{recorded}"
    );
}

#[test]
fn term_sends_fault_lines_to_the_control_socket_and_records_them() {
    let dir = TempDir::new("term-fault");
    let rec = dir.path().join("faults.iwin");
    let mut s = Screen::spawn(&["--record", rec.to_str().unwrap()], dir.path());
    s.wait_for("eswifi-emu term on embedded emulator");
    s.type_line("fault wifi.join-fail p=1");
    s.wait_for("ok 1");
    s.type_line("C1=lab");
    s.wait_for("OK");
    s.type_line("C0");
    s.wait_for("[JOIN   ] Failed");
    s.type_line("fault list");
    s.wait_for("1 wifi.join-fail p=1 fired=1");
    s.type_line("fault bogus.rule");
    s.wait_for("error unknown fault kind");
    s.type_line("fault clear");
    s.wait_for("ok");
    assert_eq!(s.quit(), Some(0), "screen:\n{}", s.text());
    let recorded = std::fs::read_to_string(&rec).unwrap();
    assert!(
        recorded.contains("fault wifi.join-fail p=1\nC1=lab\nexpect OK\nC0\nexpect ERROR\n"),
        "{recorded}"
    );
    assert!(recorded.ends_with("fault clear\n"), "{recorded}");
    assert!(!recorded.contains("fault list"), "{recorded}");
    assert!(!recorded.contains("bogus"), "{recorded}");
    // The recording replays, its fault included.
    let out = Command::new(env!("CARGO_BIN_EXE_eswifi-emu"))
        .args(["run", rec.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");

    // On a port without --control there is nowhere to send it.
    let mut emu = Emu::start();
    emu.close_pty();
    let path = emu.pty_path().display().to_string();
    let mut s = Screen::spawn(&["--port", &path], dir.path());
    s.wait_for(&format!("eswifi-emu term on {path}"));
    s.type_line("fault wifi.down");
    s.wait_for("fault needs --control PATH when running against a port");
    assert_eq!(s.quit(), Some(0), "screen:\n{}", s.text());
}

// ---- what a new user meets first (issue 18) ------------------------------------------------------

#[test]
fn ctrl_c_stops_a_wait_and_keeps_the_session_and_lowercase_goes_to_the_module() {
    let dir = TempDir::new("term-ctrl-c");
    let cfg = dir.path().join("slow.toml");
    // A join that takes long enough to be interrupted.
    std::fs::write(&cfg, "[timing]\njoin_ms = 3000\n").unwrap();
    let rec = dir.path().join("session.iwin");
    let mut s = Screen::spawn(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--record",
            rec.to_str().unwrap(),
        ],
        dir.path(),
    );
    s.wait_for("eswifi-emu term on embedded emulator");
    // Lowercase is sent as typed, and the module answers it.
    s.type_line("i?");
    s.wait_for("ERROR: Unknown Command");
    s.type_line("C1=lab");
    s.wait_for("OK");
    s.type_line("C0");
    // Ctrl-C until the terminal says it stopped waiting (the first may reach the line editor
    // before it has handed the terminal back; it clears an empty line then). Bounded.
    let mut stopped = false;
    for _ in 0..20 {
        s.master.write_all(b"\x03").unwrap();
        let until = Instant::now() + Duration::from_millis(150);
        while Instant::now() < until {
            s.pump(Duration::from_millis(20));
        }
        if find(&s.out[s.seen..], b"no longer waiting").is_some() {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "Ctrl-C did not stop the wait:\n{}", s.text());
    assert_eq!(
        s.child.try_wait().unwrap(),
        None,
        "term exited:\n{}",
        s.text()
    );
    let stopped_at = s.seen + find(&s.out[s.seen..], b"no longer waiting").unwrap();
    s.seen = stopped_at;
    // The module kept its state: the join's reply comes late (before or after CS is typed), and
    // CS gets its own reply after it.
    s.type_line("CS");
    s.wait_for("\r\n1\r\n");
    let after = &s.out[stopped_at..];
    let join = find(after, b"[JOIN   ] lab,").expect("the late join reply is shown");
    let cs = find(after, b"\r\n1\r\n").unwrap();
    assert!(join < cs, "the join's reply taken for CS's:\n{}", s.text());
    s.type_line("C?");
    s.wait_for("lab,");
    assert_eq!(s.quit(), Some(0), "screen:\n{}", s.text());
    let recorded = std::fs::read_to_string(&rec).unwrap();
    assert!(
        recorded.contains("send \"i?\\r\"\nexpect ERROR\n"),
        "{recorded}"
    );
    assert!(recorded.contains("C0\n// interrupted"), "{recorded}");
}
