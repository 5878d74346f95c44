//! Holding under abuse at the edges (issue 21): a control client flooding the socket while
//! another module answers `I?`, overlong and unterminated control lines, idle control clients, a
//! pty host that stops reading with input pending, `accept()` out of file descriptors. The short
//! forms run in `cargo test`; `SOAK_SECS=N` makes the flood last N seconds (README, "Bounds").
//! Figures are measured and printed; the assertions only hold generous bounds (a timed figure is
//! the README's, from a quiet machine).

use eswifi_test_support::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(20);

const I_REPLY: &str =
    "ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi";

/// CPU time a process has used (user + system), from /proc.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// A control socket path short enough to bind (SUN_LEN).
fn short_socket() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("eswifi-k{}-{n}.sock", std::process::id()))
}

/// Issue 21, item 3: a pty host that wrote commands until the line was full and then stopped
/// reading costs the emulator no CPU (it spun at 85-100 % of a core).
#[test]
fn a_pty_host_that_stops_reading_with_input_pending_costs_no_cpu() {
    let mut emu = Emu::start();
    let mut sent = 0;
    let deadline = Instant::now() + SECS;
    // Until the emulator stops reading (its replies fill the line) and the pty is full.
    let mut idle_since = Instant::now();
    while Instant::now() < deadline && idle_since.elapsed() < Duration::from_millis(500) {
        let n = emu.try_write(b"I?\r");
        if n > 0 {
            sent += n;
            idle_since = Instant::now();
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert!(sent > 10_000, "the line took only {sent} bytes");
    let before = cpu(emu.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu(emu.pid()) - before;
    eprintln!("stuck pty host: {used:?} of emulator CPU in 2 s ({sent} bytes written first)");
    assert!(used < Duration::from_millis(200), "{used:?} of CPU in 2 s");
    emu.stop();
}

/// One control line and its answers until the client shuts its side (bounded).
fn ask(sock: &std::path::Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(SECS)).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answers");
    answer
}

/// Issue 21, items 5 and 9: the tail of an overlong line is discarded (one error per line, it
/// never runs); a line ended by the end of input is a line.
#[test]
fn overlong_control_lines_are_one_error_and_an_unterminated_line_is_a_line() {
    let sock = short_socket();
    let mut emu = Emu::start_with(None, &["--control", sock.to_str().unwrap()]);
    let mut line = vec![b'A'; 2048];
    line.extend_from_slice(b"reset 0\nstatus\n");
    let answer = ask(&sock, &line);
    let lines: Vec<&str> = answer.lines().collect();
    assert_eq!(lines.len(), 2, "{answer}");
    assert_eq!(lines[0], "error line longer than 1024 bytes");
    assert!(lines[1].starts_with("[{"), "{answer}");
    assert_bytes(&emu.read_for(Duration::from_millis(300)), b"", "no reset");
    // `printf status | socat - UNIX-CONNECT:…`: no newline at the end.
    assert!(ask(&sock, b"status").starts_with("[{\""));
    assert_eq!(ask(&sock, b"reset 0").trim(), "ok");
    assert!(emu.read_until_prompt(SECS).ends_with(BANNER_END));
    emu.stop();
}

/// Issue 21, item 9: sixteen idle clients do not lock everyone out: the one idle longest makes
/// room for a new one.
#[test]
fn idle_control_clients_make_room_for_a_new_one() {
    let sock = short_socket();
    let mut emu = Emu::start_with(None, &["--control", sock.to_str().unwrap()]);
    let idle: Vec<UnixStream> = (0..16)
        .map(|_| UnixStream::connect(&sock).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(1200));
    assert!(ask(&sock, b"status\n").starts_with("[{\""));
    // The evicted one was told why.
    let mut told = String::new();
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 128];
        if let Ok(n) = s.read(&mut buf) {
            told.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(told.contains("error closed: idle"), "{told:?}");
    emu.stop();
}

/// Percentile `p` (0-100) of `v` (sorted here).
fn percentile(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// Issue 21, item 1, and its soak: one control client floods the socket with newlines, another
/// asks `status` as fast as it reads the answers, while a host on the other module asks `I?`.
/// The module keeps answering (99th percentile printed; the README has the quiet-machine
/// figure), memory stays bounded, and `status` is answered at once after the flood.
#[test]
fn a_flooding_control_client_does_not_hold_up_the_modules() {
    let flood = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_secs);
    let sock = short_socket();
    let mut emu = Emu::launch_full(
        Some("[network]\nip = \"127.0.0.1\"\n"),
        &["--modules", "2", "--control", sock.to_str().unwrap()],
        2,
        |lines| Some(open_line(std::path::Path::new(&lines[1]))),
    );
    let rss_before = emu.rss();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let newlines = {
        let (sock, stop) = (sock.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let chunk = vec![b'\n'; 64 * 1024];
            let mut sent = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = s.write(&chunk) {
                    sent += n;
                }
            }
            sent
        })
    };
    let statuses = {
        let (sock, stop) = (sock.clone(), stop.clone());
        std::thread::spawn(move || {
            let s = UnixStream::connect(&sock).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut r = s.try_clone().unwrap();
            let reader = std::thread::spawn(move || {
                let mut n = 0usize;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) => return n,
                        Ok(k) => n += buf[..k].iter().filter(|&&b| b == b'\n').count(),
                        Err(_) if n > 0 => return n,
                        Err(_) => {}
                    }
                }
            });
            let mut w = s;
            w.set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = w.write(&b"status\n".repeat(64));
            }
            let _ = w.shutdown(std::net::Shutdown::Write);
            reader.join().unwrap()
        })
    };
    let mut rtts = Vec::new();
    let want = ok(I_REPLY);
    let end = Instant::now() + flood;
    while Instant::now() < end {
        // Read exactly the reply: no quiet period after the prompt in the figure.
        let t = Instant::now();
        emu.write(b"I?\r");
        let got = emu.read_exact_n(want.len());
        rtts.push(t.elapsed());
        assert_bytes(&got, &want, "I? during the flood");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rss_after = emu.rss();
    let t = Instant::now();
    let status = control(&sock, "status");
    let status_took = t.elapsed();
    let (sent, answered) = (newlines.join().unwrap(), statuses.join().unwrap());
    let n = rtts.len();
    let (p50, p99, max) = (
        percentile(&mut rtts, 50),
        percentile(&mut rtts, 99),
        percentile(&mut rtts, 100),
    );
    eprintln!(
        "control flood for {flood:?}: {} MB of newlines, {answered} status answers; \
         I? on the other module x{n}: median {p50:?}, 99th percentile {p99:?}, max {max:?}; \
         RSS {} -> {} KiB; status after the flood in {status_took:?}",
        sent / 1_000_000,
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(status.starts_with("[{"), "{status}");
    assert!(n >= 10, "only {n} I? in {flood:?}");
    assert!(p99 < Duration::from_millis(500), "99th percentile {p99:?}");
    assert!(status_took < Duration::from_secs(2), "{status_took:?}");
    assert!(
        rss_after < rss_before + 16 * 1024 * 1024,
        "RSS {rss_before} -> {rss_after}"
    );
    emu.stop();
}

/// Issue 21, item 4: `accept()` failing for want of file descriptors on `--listen` is logged and
/// retried; the emulator keeps serving, and the waiting host is served once descriptors are
/// free again.
#[test]
fn accept_out_of_file_descriptors_backs_off_and_keeps_serving() {
    let mut emu = Emu::launch_full(
        Some("[network]\nip = \"127.0.0.1\"\n"),
        &["--listen", "127.0.0.1:0"],
        1,
        |_| None,
    );
    let pid = emu.pid() as libc::pid_t;
    // The lowest free descriptor number: with the limit there, no new one can be made.
    let fds: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let open = (0..).find(|n| !fds.contains(n)).unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit writes `old`, ours and alive for the call.
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    let low = libc::rlimit {
        rlim_cur: open,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit reads `low`, ours and alive for the call.
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &low, std::ptr::null_mut()) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    let host = TcpStream::connect(&emu.lines[0]).unwrap();
    let log = emu.log_path().unwrap().to_path_buf();
    let said = wait_for(
        SECS,
        || std::fs::read_to_string(&log).unwrap_or_default(),
        |l| l.contains("accepting a host"),
    );
    assert!(said.contains("Too many open files"), "{said}");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above; the old limit back.
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &old, std::ptr::null_mut()) };
    assert_eq!(r, 0);
    emu.attach(tcp_line(host));
    assert!(emu.read_until_prompt(SECS).ends_with(BANNER_END));
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    emu.stop();
}
