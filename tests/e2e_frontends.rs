//! End-to-end tests of the ways a host attaches (issue 8): a real tty (`--serial`, on a pty pair the
//! test opens itself), TCP in both directions (`--listen`, `--connect`), stdio, the reset line
//! (SIGUSR1, `--reset-on-open`, the control socket), many modules in one process and in parallel
//! processes, and the byte transcript. The real binary; peers on 127.0.0.0/8 the tests start.

use eswifi_test_support::harness::*;
use nix::pty::openpty;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(20);

const I_REPLY: &str =
    "ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi";

/// Pinned to 127.0.0.1, as [`Emu::start_with`] does.
const PINNED: &str = "[network]\nip = \"127.0.0.1\"\n";

#[test]
fn serial_port_on_a_pty_pair_switches_its_rate_at_u0() {
    let pair = openpty(None, None).expect("openpty");
    let slave = nix::unistd::ttyname(pair.slave.as_fd()).expect("ttyname");
    let slave_arg = slave.to_str().unwrap().to_string();
    let master = File::from(pair.master);
    set_nonblocking(&master);
    let host = master.try_clone().expect("clone master");
    let mut emu = Emu::launch_full(
        Some(PINNED),
        &["--serial", &slave_arg, "--baud", "115200"],
        1,
        |lines| {
            assert_eq!(
                lines[0], slave_arg,
                "the device is what the emulator prints"
            );
            Some(host)
        },
    );
    assert!(emu.boot.ends_with(BANNER_END), "boot: {}", esc(&emu.boot));
    let speed = || line_speed(&pair.slave);
    assert_eq!(speed(), 115_200);
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    emu.expect(b"U2=921600\r", OK);
    assert_eq!(speed(), 115_200, "U2 only stages the rate");
    emu.expect(b"U0\r", OK);
    let switched = wait_for(SECS, speed, |s| *s == 921_600);
    assert_eq!(switched, 921_600, "U0 switched the line");
    emu.expect_ok(b"U?\r", b"0,921600,8,None,1,Normal");
    emu.stop();
}

/// The output speed of a tty, as the kernel has it (TCGETS2: serialport sets rates that way, and
/// termios' Bxxx constants cannot say every rate).
fn line_speed(fd: &impl std::os::fd::AsRawFd) -> u32 {
    let mut t: libc::termios2 = unsafe { std::mem::zeroed() };
    // SAFETY: TCGETS2 fills a termios2 we own.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCGETS2, &mut t) };
    assert_eq!(r, 0, "TCGETS2: {}", std::io::Error::last_os_error());
    t.c_ospeed
}

fn set_nonblocking(f: &File) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL).unwrap());
    fcntl(f, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).unwrap();
}

#[test]
fn listen_takes_one_host_at_a_time_and_keeps_the_module_between_them() {
    let mut emu = Emu::launch_full(Some(PINNED), &["--listen", "127.0.0.1:0"], 1, |lines| {
        let addr = &lines[0];
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        Some(tcp_line(TcpStream::connect(addr).expect("connect")))
    });
    assert!(emu.boot.ends_with(BANNER_END));
    emu.expect(b"ZN=Still Here\r", OK);
    // The host goes away and another comes: the module is as it was, no banner.
    let addr = emu.lines[0].clone();
    emu.close_pty();
    let second = TcpStream::connect(&addr).expect("reconnect");
    emu.attach(tcp_line(second));
    assert_bytes(
        &emu.cmd(b"I?\r"),
        &ok(I_REPLY.replace("Inventek eS-WiFi", "Still Here")),
        "I? on the next connection",
    );
    emu.stop();
}

/// Edges issue, bug 1: a host that connects while another is attached waits (told nothing, its
/// bytes kept) and is served as soon as the first leaves; so is every later host.
#[test]
fn listen_serves_the_waiting_host_when_the_attached_one_leaves() {
    let mut emu = Emu::launch_full(Some(PINNED), &["--listen", "127.0.0.1:0"], 1, |lines| {
        Some(tcp_line(TcpStream::connect(&lines[0]).expect("connect")))
    });
    assert!(emu.boot.ends_with(BANNER_END));
    let addr = emu.lines[0].clone();
    // Host 2 connects and sends its command at once, while host 1 is attached.
    let mut second = TcpStream::connect(&addr).expect("second host");
    second.write_all(b"I?\r").expect("second host writes");
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(second.read(&mut buf), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a waiting host is told nothing"
    );
    // Host 1 still has the module to itself; the log says someone waits.
    emu.expect(b"ZN=First\r", OK);
    let log = emu.log_path().expect("log").to_path_buf();
    let waiting = wait_for(
        SECS,
        || std::fs::read_to_string(&log).unwrap_or_default(),
        |l| l.contains("a host is waiting to connect"),
    );
    assert!(
        waiting.contains("a host is waiting to connect"),
        "{waiting}"
    );
    emu.close_pty();
    // Host 2's bytes were kept: its I? is answered as soon as host 1 is gone.
    emu.attach(tcp_line(second));
    assert_bytes(
        &emu.read_until_prompt(SECS),
        &ok(I_REPLY.replace("Inventek eS-WiFi", "First")),
        "the waiting host's command",
    );
    emu.close_pty();
    // And every later host too.
    for k in 3..=4 {
        emu.attach(tcp_line(TcpStream::connect(&addr).expect("later host")));
        assert_bytes(
            &emu.cmd(b"I?\r"),
            &ok(I_REPLY.replace("Inventek eS-WiFi", "First")),
            &format!("I? from host {k}"),
        );
        emu.close_pty();
    }
    emu.stop();
}

#[test]
fn connect_reaches_the_host_and_reconnects_when_dropped() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap().to_string();
    let accept = |l: &TcpListener| {
        l.set_nonblocking(false).unwrap();
        let (s, _) = l.accept().expect("the emulator connects");
        tcp_line(s)
    };
    let mut emu = Emu::launch_full(Some(PINNED), &["--connect", &addr], 1, |lines| {
        assert_eq!(lines[0], addr);
        Some(accept(&listener))
    });
    assert!(emu.boot.ends_with(BANNER_END));
    emu.expect(b"ZN=Renode\r", OK);
    emu.close_pty();
    // Dropped: the emulator comes back by itself (backoff from 100 ms).
    let again = accept(&listener);
    emu.attach(again);
    assert_bytes(
        &emu.cmd(b"I?\r"),
        &ok(I_REPLY.replace("Inventek eS-WiFi", "Renode")),
        "I? after the reconnect",
    );
    emu.stop();
}

#[test]
fn stdio_serves_a_pipe_and_ends_with_stdin() {
    let dir = TempDir::new("stdio");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, PINNED).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_eswifi-emu"))
        .args(["--stdio", "--config", cfg.to_str().unwrap()])
        .arg("--certsets")
        .arg(dir.path().join("certs"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"I?\rCS\r").unwrap();
    drop(stdin);
    // stdout ends when the emulator exits after stdin's end.
    let mut out = Vec::new();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + SECS;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the emulator did not end with stdin"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    let out = reader.join().unwrap();
    let want = [BANNER_END, &ok(I_REPLY), &ok("0")].concat();
    assert!(out.ends_with(&want), "stdout: {}", esc(&out));
}

#[test]
fn sigusr1_power_cycles_the_module() {
    let mut emu = Emu::start();
    join(&mut emu);
    emu.expect(b"ZN=Unsaved\r", OK);
    emu.signal(libc::SIGUSR1);
    let boot = emu.read_until_prompt(SECS);
    assert!(
        boot.starts_with(b"\r\n                eS-WiFi"),
        "{}",
        esc(&boot)
    );
    assert!(boot.ends_with(BANNER_END));
    emu.expect_ok(b"CS\r", b"0");
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    emu.stop();
}

#[test]
fn reset_on_open_prints_the_banner_to_the_host_that_opened_the_line() {
    let mut emu = Emu::start_with(None, &["--reset-on-open"]);
    emu.expect(b"ZN=Unsaved\r", OK);
    // A host that opens the line and flushes it at once (as Zephyr's driver and Python's
    // tty.setraw do) still gets the banner: the module boots after the open.
    emu.close_pty();
    let host = open_line(emu.pty_path());
    nix::sys::termios::tcflush(host.as_fd(), nix::sys::termios::FlushArg::TCIOFLUSH).unwrap();
    emu.attach(host);
    let boot = emu.read_until_prompt(SECS);
    assert!(boot.ends_with(BANNER_END), "{}", esc(&boot));
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    emu.stop();
}

#[test]
fn reset_on_open_over_tcp_boots_for_each_connection() {
    let mut emu = Emu::launch_full(
        Some(PINNED),
        &["--listen", "127.0.0.1:0", "--reset-on-open"],
        1,
        |lines| Some(tcp_line(TcpStream::connect(&lines[0]).unwrap())),
    );
    assert!(emu.boot.ends_with(BANNER_END));
    emu.expect(b"ZN=Gone\r", OK);
    emu.close_pty();
    let again = TcpStream::connect(&emu.lines[0]).unwrap();
    emu.attach(tcp_line(again));
    assert!(emu.read_until_prompt(SECS).ends_with(BANNER_END));
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    emu.stop();
}

#[test]
fn control_socket_resets_and_reports_status() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("control");
    let sock = dir.path().join("ctl.sock");
    let mut emu = Emu::start_with(None, &["--control", sock.to_str().unwrap()]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    join(&mut emu);
    let status = control(&sock, "status");
    let v: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    assert_eq!(v[0]["joined"], true, "{status}");
    assert_eq!(v[0]["ip"], "127.0.0.1");
    assert_eq!(v[0]["sockets"][0], "idle");
    assert_eq!(control(&sock, "reset 0"), "ok");
    assert!(emu.read_until_prompt(SECS).ends_with(BANNER_END));
    emu.expect_ok(b"CS\r", b"0");
    assert!(control(&sock, "reset 5").starts_with("error no module 5"));
    assert!(control(&sock, "frobnicate").starts_with("error unknown command"));
    // A client that sends and shuts its side at once (`echo status | socat - UNIX-CONNECT:…`)
    // still gets every answer.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(b"reset 0\nstatus\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.set_read_timeout(Some(SECS)).unwrap();
    let mut answers = String::new();
    s.read_to_string(&mut answers).unwrap();
    let lines: Vec<&str> = answers.lines().collect();
    assert_eq!(lines.len(), 2, "{answers}");
    assert_eq!(lines[0], "ok");
    assert!(lines[1].starts_with("[{"), "{answers}");
    assert!(emu.read_until_prompt(SECS).ends_with(BANNER_END));
    emu.stop();
    assert!(!sock.exists(), "the socket is removed at exit");
}

/// `[JOIN   ] <ssid>,<ip>,0,0` → ip.
fn joined_ip(emu: &mut Emu) -> String {
    emu.expect(b"C1=lab\r", OK);
    let reply = emu.cmd(b"C0\r");
    let text = String::from_utf8_lossy(&reply).to_string();
    let ip = text
        .strip_prefix("\r\n[JOIN   ] lab,")
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("join reply {text:?}"));
    ip.to_string()
}

/// Open a UDP client with power-up settings to `echo` and a TCP server on `port`, check both, and
/// reach the server at the module's own address.
fn udp_client_and_server_work(emu: &mut Emu, ip: &str, echo: u16, port: u16) {
    // UDP client: only P1/P3/P4 set, the rest as at power-up.
    emu.expect(b"P0=0\rP1=1\rP3=127.0.0.1\r", &OK.repeat(3));
    emu.expect(format!("P4={echo}\rP6=1\r").as_bytes(), &OK.repeat(2));
    emu.send(b"ping");
    let (back, _) = emu.recv_exact(4, SECS);
    assert_eq!(back, b"ping");
    // A TCP server on the same port as every other module's.
    emu.expect(
        format!("P0=1\rP1=0\rP2={port}\rP5=1\r").as_bytes(),
        &OK.repeat(4),
    );
    let mut c = TcpStream::connect((ip, port)).expect("reach the module's server at its address");
    let event = emu.read_until_prompt(SECS);
    assert!(
        event.starts_with(b"\r\n[TCP SVR] Accepted "),
        "{}",
        esc(&event)
    );
    c.write_all(b"hello").unwrap();
    let (got, _) = emu.recv_exact(5, SECS);
    assert_eq!(got, b"hello");
}

#[test]
fn eight_emulator_processes_never_collide() {
    let echo = Server::udp_echo();
    let port = closed_port();
    // All eight are alive at once (an address is free again once its emulator has exited).
    let up = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let echo = echo.port();
            let up = up.clone();
            std::thread::spawn(move || {
                let mut emu = Emu::start_unpinned(None, &[]);
                let ip = joined_ip(&mut emu);
                up.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let n = wait_for(
                    SECS,
                    || up.load(std::sync::atomic::Ordering::SeqCst),
                    |n| *n == 8,
                );
                assert_eq!(n, 8, "all eight emulators joined");
                udp_client_and_server_work(&mut emu, &ip, echo, port);
                emu.stop();
                ip
            })
        })
        .collect();
    let mut ips: Vec<String> = runs
        .into_iter()
        .map(|t| t.join().expect("an emulator failed"))
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 8, "each module its own address: {ips:?}");
}

#[test]
fn sixteen_modules_in_one_process_each_echo_through_their_own_socket() {
    let echo = Server::tcp_echo();
    let dir = TempDir::new("m16");
    let link = dir.path().join("line{n}");
    let mut emu = Emu::launch_full(
        None,
        &["--modules", "16", "--link", link.to_str().unwrap()],
        16,
        |_| None,
    );
    let mut macs = Vec::new();
    let mut ips = Vec::new();
    for k in 0..16 {
        let path = dir.path().join(format!("line{k}"));
        assert_eq!(
            std::fs::read_link(&path).unwrap().to_str().unwrap(),
            emu.lines[k],
            "the link of module {k}"
        );
        emu.attach(open_line(&path));
        assert!(emu.read_until_prompt(SECS).ends_with(BANNER_END));
        let mac = emu.cmd(b"Z5\r");
        macs.push(mac);
        let ip = joined_ip(&mut emu);
        ips.push(ip.clone());
        emu.connect_tcp(0, echo.port());
        let data = format!("module {k} at {ip}");
        emu.send(data.as_bytes());
        let (back, _) = emu.recv_exact(data.len(), SECS);
        assert_eq!(back, data.as_bytes());
        assert!(
            echo.peers().iter().any(|p| p.ip().to_string() == ip),
            "module {k} connected from its own address {ip}"
        );
    }
    macs.dedup();
    assert_eq!(macs.len(), 16, "16 MACs");
    assert!(
        ips.windows(2).all(|w| w[0] != w[1]),
        "16 addresses: {ips:?}"
    );
    emu.stop();
}

#[test]
fn transcript_has_both_directions_notes_and_no_secrets() {
    let dir = TempDir::new("trace");
    let trace = dir.path().join("t.log");
    let echo = Server::tcp_echo();
    let mut emu = Emu::start_with(None, &["--trace", trace.to_str().unwrap()]);
    emu.expect(b"C2=hunter2-passphrase\r", OK);
    emu.expect(
        b"C1=lab\rC0\r",
        &[OK, &ok("[JOIN   ] lab,127.0.0.1,0,0")].concat(),
    );
    emu.cmd(b"C?\r");
    let key = b"-----BEGIN PRIVATE KEY-----\r\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\r\n-----END PRIVATE KEY-----\r\n";
    let mut pg = format!("PG=0,2,{:04}\r", key.len()).into_bytes();
    pg.extend_from_slice(key);
    emu.cmd(&pg);
    emu.connect_tcp(0, echo.port());
    emu.send(b"abc");
    emu.stop();
    let text = std::fs::read_to_string(&trace).expect("trace file");
    let has = |needle: &str| text.lines().any(|l| l.contains(needle));
    assert!(has(" m0 > I?") || has(" m0 > C1=lab\\r"), "{text}");
    assert!(
        has(" m0 < \\r\\n[JOIN   ] lab,127.0.0.1,0,0\\r\\nOK\\r\\n> "),
        "{text}"
    );
    assert!(has(" m0 > [payload] abc"), "{text}");
    assert!(has(" m0 * socket 0: connected from 127.0.0.1:"), "{text}");
    let redacted = format!(" m0 > [payload of {} bytes redacted]", key.len());
    assert!(has(&redacted), "{text}");
    assert!(
        has(" m0 < \\r\\n                eS-WiFi"),
        "the boot banner: {text}"
    );
    assert!(!text.contains("hunter2"), "passphrase in the transcript");
    assert!(!text.contains("MIGHAgEAMBMG"), "key in the transcript");
    for l in text.lines() {
        let mut f = l.splitn(4, ' ');
        let ms: f64 = f.next().unwrap().parse().expect("ms first");
        assert!(ms >= 0.0);
        assert_eq!(f.next(), Some("m0"));
        assert!(matches!(f.next(), Some(">" | "<" | "*")), "{l}");
    }
}

#[test]
fn paced_output_is_still_exact() {
    let mut emu = Emu::start_with(None, &["--pace", "--baud", "9600"]);
    // 96 bytes at 9600 baud take 100 ms on the wire; the bytes are the same.
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    emu.expect(b"U2=115200\rU0\r", &OK.repeat(2));
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    emu.stop();
}
