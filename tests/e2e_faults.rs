//! End-to-end tests of fault injection (`[faults]`, `--seed`, the control socket's `fault`
//! commands): for each fault, what the host sees on the real pty, byte for byte, or how long it
//! waited (lower bounds only: a fault can make things slower, never a busy machine faster), and
//! what the log and the transcript say. Servers are the tests' own, on 127.0.0.1.

use eswifi_test_support::harness::*;
use eswifi_test_support::tls::*;
use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECS: Duration = Duration::from_secs(30);

const I_REPLY: &str =
    "ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi";

const CONNECT_FAILED: &[u8] =
    b"\r\n[TCP  RC] Failed to connect\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> ";

const LINK_DOWN: &str = "[INFO   ] Link Down";

/// An emulator with a control socket (and a transcript), its rules in `[faults]`.
struct Faulty {
    emu: Emu,
    ctl: PathBuf,
    trace: PathBuf,
    _dir: TempDir,
}

impl Faulty {
    fn start(rules: &[&str], extra_config: &str, args: &[&str]) -> Faulty {
        let dir = TempDir::new("faults");
        // A Unix socket path must be short (SUN_LEN); the test's directory name is not.
        let ctl = short_socket_path();
        let trace = dir.path().join("trace.log");
        let rules: Vec<String> = rules.iter().map(|r| format!("{r:?}")).collect();
        let config = format!("{extra_config}\n[faults]\nrules = [{}]\n", rules.join(", "));
        let mut all = vec![
            "--control",
            ctl.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let emu = Emu::start_with(Some(&config), &all);
        Faulty {
            emu,
            ctl,
            trace,
            _dir: dir,
        }
    }

    fn add(&self, rule: &str) -> usize {
        let answer = control(&self.ctl, &format!("fault add {rule}"));
        answer
            .strip_prefix("ok ")
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("fault add {rule}: {answer}"))
    }

    fn clear(&self) {
        assert_eq!(control(&self.ctl, "fault clear"), "ok");
    }

    /// `fault list` without its final `ok <n>` line.
    fn list(&self) -> Vec<String> {
        let mut lines = control_lines(&self.ctl, "fault list");
        let last = lines.pop().unwrap();
        assert_eq!(last, format!("ok {}", lines.len()));
        lines
    }

    fn transcript(&self) -> String {
        std::fs::read_to_string(&self.trace).expect("reading the transcript")
    }

    /// The transcript's fault notes.
    fn fault_notes(&self) -> Vec<String> {
        notes(&self.transcript())
    }

    fn log(&self) -> String {
        emu_log(&self.emu)
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ctl);
    }
}

fn short_socket_path() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("eswifi-f{}-{n}.sock", std::process::id()))
}

/// Fault notes of a transcript, without time and module.
fn notes(transcript: &str) -> Vec<String> {
    transcript
        .lines()
        .filter_map(|l| {
            l.split_once(" * fault #")
                .map(|(_, n)| format!("fault #{n}"))
        })
        .collect()
}

/// Send a command and wait for its reply, returning the reply and how long the host waited.
fn timed(emu: &mut Emu, req: &[u8]) -> (Vec<u8>, Duration) {
    let t = Instant::now();
    emu.write(req);
    let reply = emu.read_until_prompt(SECS);
    (reply, t.elapsed())
}

/// Poll the transcript until `pred` holds (bounded).
fn wait_transcript(f: &Faulty, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let t = wait_for(SECS, || f.transcript(), |t| pred(t));
    assert!(pred(&t), "transcript never showed {what}:\n{t}");
    t
}

// ---- the control socket and the syntax ----------------------------------------------------------

#[test]
fn control_socket_adds_lists_and_clears_rules() {
    let f = Faulty::start(&["net.refuse 127.0.0.1:7001"], "", &[]);
    assert_eq!(f.add("serial.latency 1ms"), 2);
    assert_eq!(f.add("dns.fail example.com  module=0"), 3);
    let bad = control(&f.ctl, "fault add serial.latency fast");
    assert!(bad.starts_with("error "), "{bad}");
    let bad = control(&f.ctl, "fault add teleport.now");
    assert!(bad.starts_with("error "), "{bad}");
    assert_eq!(
        f.list(),
        [
            "1 net.refuse 127.0.0.1:7001 fired=0",
            "2 serial.latency 1ms fired=0",
            "3 dns.fail example.com module=0 fired=0"
        ]
    );
    assert_eq!(control(&f.ctl, "fault clear 2"), "ok");
    assert_eq!(control(&f.ctl, "fault clear 2"), "error no fault 2");
    assert_eq!(f.list().len(), 2);
    f.clear();
    assert!(f.list().is_empty());
    // The next id is not reused.
    assert_eq!(f.add("serial.stall 1ms"), 4);
    // A bad rule in the configuration is refused at start-up, saying which.
    let dir = TempDir::new("badrule");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[faults]\nrules = [\"net.refuse 127.0.0.1\"]\n").unwrap();
    let (code, _, err) = run_binary(
        &["--config", cfg.to_str().unwrap(), "--stdio"],
        dir.path(),
        SECS,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("net.refuse 127.0.0.1"), "{err}");
}

#[test]
fn the_seed_is_printed_when_not_given_and_used_when_given() {
    // Only a run with a fault rule logs its seed (the first rule added logs it).
    let mut none = Faulty::start(&[], "", &[]);
    assert!(!none.log().contains("fault seed"), "{}", none.log());
    none.emu.stop();
    let mut f = Faulty::start(&["serial.latency 1ms"], "", &[]);
    let log = f.log();
    let seed = log
        .split("fault seed ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no seed in the log:\n{log}"));
    assert!(
        log.contains(&format!("(replay with --seed {seed})")),
        "{log}"
    );
    f.emu.stop();
    let mut g = Faulty::start(&["serial.latency 1ms"], "", &["--seed", "1234"]);
    assert!(g.log().contains("fault seed 1234 "), "{}", g.log());
    g.emu.stop();
}

// ---- serial line ----------------------------------------------------------------------------------

#[test]
fn split_replies_arrive_in_pieces_that_reassemble_exactly() {
    let mut f = Faulty::start(&["serial.split 1..3 gap=20ms"], "", &["--seed", "7"]);
    let want = ok(I_REPLY);
    f.emu.write(b"I?\r");
    let pieces = f.emu.read_pieces_until_prompt(SECS);
    assert_bytes(&pieces.concat(), &want, "I? reassembled");
    // 20 ms between fragments of at most 3 bytes: the host needs many reads.
    assert!(pieces.len() > 4, "{} reads: {pieces:?}", pieces.len());
    // The transcript says how the reply was cut: sizes within 1..3 adding up to the reply.
    let t = wait_transcript(&f, "the split", |t| t.contains("serial.split"));
    // The last cut is I?'s (the first was the boot banner's).
    let note = notes(&t)
        .into_iter()
        .rfind(|n| n.contains("fragments"))
        .expect("split note");
    let sizes: Vec<usize> = note
        .split(" fragments (")
        .nth(1)
        .and_then(|s| s.split(" bytes)").next())
        .expect("sizes")
        .split('+')
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(sizes.iter().all(|n| (1..=3).contains(n)), "{note}");
    assert_eq!(sizes.iter().sum::<usize>(), want.len(), "{note}");
    // No read held more than its fragments (a read never straddles a gap it did not wait for).
    assert!(pieces.len() <= sizes.len(), "{pieces:?} vs {note}");
    assert!(
        f.log().contains("fault #1 serial.split: "),
        "logged at info"
    );
    f.emu.stop();
}

#[test]
fn latency_delays_every_reply_and_a_stall_holds_only_the_next_command() {
    let mut f = Faulty::start(&["serial.latency 150ms..250ms"], "", &[]);
    for _ in 0..3 {
        let (reply, waited) = timed(&mut f.emu, b"I?\r");
        assert_bytes(&reply, &ok(I_REPLY), "I? with latency");
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
    }
    // The boot banner was late too.
    assert_eq!(f.list(), ["1 serial.latency 150ms..250ms fired=4"]);
    f.clear();
    let id = f.add("serial.stall 700ms");
    let (reply, waited) = timed(&mut f.emu, b"I?\r");
    assert_bytes(&reply, &ok(I_REPLY), "stalled I?");
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    // One-shot: the next command is not held, and the rule says it fired once.
    f.emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    assert_eq!(f.list(), [format!("{id} serial.stall 700ms fired=1")]);
    let n = f.fault_notes();
    assert!(
        n.iter().any(|n| n.contains("next command held 700ms")),
        "{n:?}"
    );
    f.emu.stop();
}

#[test]
fn output_noise_flips_one_bit_per_hit_byte_and_drops_lose_the_reply() {
    let mut f = Faulty::start(&[], "", &["--seed", "3"]);
    let want = ok(I_REPLY);
    f.add("serial.noise corrupt=1 dir=out");
    f.emu.write(b"I?\r");
    let got = f.emu.read_exact_n(want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!((g ^ w).count_ones(), 1, "byte {i}: {g:#04x} for {w:#04x}");
    }
    f.clear();
    // The module itself was fine all along.
    f.emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    f.add("serial.noise drop=1 dir=out");
    f.emu.write(b"I?\r");
    assert_bytes(&f.emu.read_for(Duration::from_millis(300)), b"", "dropped");
    f.clear();
    f.emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    // One note per piece of output, positions only: a reply may hold a passphrase (C?).
    let n = f.fault_notes();
    let listed = "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, …";
    let of = want.len();
    assert_eq!(
        n,
        [
            format!("fault #1 serial.noise: out: {of} bytes corrupted in a piece of output (bytes {listed} of {of}); values not shown"),
            format!("fault #2 serial.noise: out: {of} bytes dropped in a piece of output (bytes {listed} of {of}); values not shown"),
        ]
    );
    f.emu.stop();
}

#[test]
fn input_noise_garbles_the_command_and_the_module_answers_with_its_error() {
    let mut f = Faulty::start(&[], "", &["--seed", "11"]);
    // Every byte the host sends loses: nothing reaches the module, nothing comes back.
    f.add("serial.noise drop=1 dir=in");
    f.emu.write(b"I?\r");
    assert_bytes(&f.emu.read_for(Duration::from_millis(300)), b"", "dropped");
    f.clear();
    f.emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    // One corrupted byte in `C?`: `C` becomes another letter, the command is unknown. (Noise
    // notes about a line wait for its CR, which tells whether it holds a secret; this one is
    // cleared first, so its note comes then, and without the byte's value.)
    let id = f.add("serial.noise corrupt=1 dir=in");
    f.emu.write(b"C");
    let fired = format!("{id} serial.noise corrupt=1 dir=in fired=1");
    let list = wait_for(SECS, || f.list(), |l| l[0] == fired);
    assert_eq!(list[0], fired);
    f.clear();
    f.emu.write(b"?\r");
    let reply = f.emu.read_until_prompt(SECS);
    let t = wait_transcript(&f, "the corrupted byte", |t| t.contains("1 byte corrupted"));
    let note = notes(&t)
        .into_iter()
        .find(|n| n.contains("corrupted"))
        .unwrap();
    assert!(
        note.ends_with(
            "in: 1 byte corrupted in an unfinished line (byte 0 of 1); values not shown"
        ),
        "{note}"
    );
    assert_bytes(&reply, UNKNOWN_COMMAND, &format!("reply after {note}"));
    f.emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    f.emu.stop();
}

#[test]
fn brown_out_after_n_commands_reboots_mid_session_and_forgets_everything() {
    let mut f = Faulty::start(&["module.reset after=3cmds"], "", &[]);
    let boot = f.emu.boot.clone();
    let fresh = f.emu.cmd(b"C?\r");
    f.emu.expect(b"C1=lab\r", OK);
    // The third command is answered, then the module reboots: banner and prompt.
    f.emu.write(b"C2=secret123\r");
    let got = f.emu.read_total(OK.len() + boot.len());
    assert_bytes(
        &got,
        &[OK, &boot[..]].concat(),
        "third reply, then the banner",
    );
    // All state is gone (the SSID was never saved), and it happens once.
    f.emu.expect(b"C?\r", &fresh);
    for _ in 0..3 {
        f.emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    }
    assert_eq!(f.list(), ["1 module.reset after=3cmds fired=1"]);
    let t = f.transcript();
    let brown = t.find("module.reset: brown-out").expect("fault note");
    let cycle = t.find("power cycle (fault)").expect("power cycle note");
    assert!(brown < cycle, "{t}");
    // A time-based brown-out, from the control socket.
    f.add("module.reset at=300ms");
    let got = f.emu.read_until_prompt(SECS);
    assert_bytes(&got, &boot, "banner at T");
    f.emu.stop();
}

// ---- Wi-Fi ------------------------------------------------------------------------------------------

/// A joined module with a TCP client on socket 0 to an echo server.
fn joined_with_client(f: &mut Faulty, server: &Server) {
    join(&mut f.emu);
    f.emu.connect_tcp(0, server.port());
    f.emu.send(b"ping");
    f.emu.expect(b"R2=300\r", OK);
    f.emu.expect(b"R1=4\r", OK);
    assert_eq!(f.emu.recv_exact(4, SECS).0, b"ping");
}

#[test]
fn link_loss_ends_the_sockets_and_says_link_down_on_the_line() {
    let server = Server::tcp_echo();
    let mut f = Faulty::start(&[], "", &[]);
    joined_with_client(&mut f, &server);
    f.emu.expect_ok(b"CS\r", b"1");
    f.add("wifi.down after=200ms");
    let t = Instant::now();
    let event = f.emu.read_until_prompt(SECS);
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_bytes(&event, format!("\r\n{LINK_DOWN}\r\n> ").as_bytes(), "event");
    f.emu.expect_ok(b"CS\r", b"0");
    f.emu.expect(b"R0\r", CLOSED);
    f.emu.expect(&s3(b"lost"), CLOSED);
    // Join again: the access point is back (the fault was one-shot).
    f.emu.expect(b"P6=0\r", OK);
    join(&mut f.emu);
    f.emu.connect_tcp(0, server.port());
    f.emu.stop();
}

#[test]
fn link_loss_in_poll_mode_is_read_with_mr() {
    let server = Server::tcp_echo();
    let mut f = Faulty::start(&[], "", &["--events", "poll"]);
    joined_with_client(&mut f, &server);
    f.add("wifi.down");
    let got = (0..200)
        .map(|_| {
            let r = f.emu.cmd(b"CS\r");
            if r == ok("1") {
                std::thread::sleep(Duration::from_millis(10));
            }
            r
        })
        .find(|r| *r != ok("1"))
        .expect("CS never turned 0");
    assert_bytes(&got, &ok("0"), "CS");
    assert_bytes(
        &f.emu.read_for(Duration::from_millis(200)),
        b"",
        "nothing unasked",
    );
    f.emu
        .expect_ok(b"MR\r", format!("[SOMA]{LINK_DOWN}[EOMA]").as_bytes());
    f.emu.expect_ok(b"MR\r", b"[SOMA][EOMA]");
    f.emu.expect(b"R0\r", CLOSED);
    f.emu.stop();
}

#[test]
fn joins_fail_by_probability_and_the_same_seed_fails_the_same_joins() {
    let mut f = Faulty::start(&["wifi.join-fail p=1"], "", &[]);
    f.emu.expect(b"C1=eswifi-e2e\r", OK);
    f.emu.expect(b"C2=secret123\r", OK);
    f.emu.expect(b"C3=3\r", OK);
    let failed =
        b"\r\n[JOIN   ] eswifi-e2e\r\n[JOIN   ] Failed\r\nERROR: Unknown Error\r\nUsage: C0 \r\n> ";
    for _ in 0..3 {
        f.emu.expect(b"C0\r", failed);
    }
    f.emu.expect_ok(b"CS\r", b"0");
    f.clear();
    f.emu
        .expect(b"C0\r", &ok("[JOIN   ] eswifi-e2e,127.0.0.1,0,0"));
    f.emu.stop();

    // p=0.5: which joins fail is the seed's choice, the same in two runs.
    let outcomes = |seed: &str| -> Vec<bool> {
        let mut f = Faulty::start(&["wifi.join-fail p=0.5"], "", &["--seed", seed]);
        f.emu.expect(b"C1=eswifi-e2e\r", OK);
        let mut v = Vec::new();
        for _ in 0..16 {
            let r = f.emu.cmd(b"C0\r");
            let joined = r == ok("[JOIN   ] eswifi-e2e,127.0.0.1,0,0");
            assert!(joined || r == failed, "{}", esc(&r));
            if joined {
                f.emu.expect(b"CD\r", OK);
            }
            v.push(joined);
        }
        f.emu.stop();
        v
    };
    let a = outcomes("99");
    assert_eq!(a, outcomes("99"));
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
}

#[test]
fn slow_joins_and_scans_and_a_hidden_access_point() {
    let aps: String = ["alpha", "beta", "gamma"]
        .iter()
        .map(|s| format!("[[access_point]]\nssid = \"{s}\"\npassword = \"secret123\"\n"))
        .collect();
    let mut f = Faulty::start(&[], &aps, &[]);
    let before = f.emu.cmd(b"F0\r");
    let text = String::from_utf8_lossy(&before).to_string();
    assert!(text.contains("\"beta\""), "{text}");
    f.add("wifi.hide beta");
    f.add("wifi.slow join=400ms scan=300ms");
    let (after, waited) = timed(&mut f.emu, b"F0\r");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    // beta is gone and the others are numbered 1, 2 as the firmware numbers its list.
    let lines: Vec<&str> = text.split("\r\n").filter(|l| l.starts_with('#')).collect();
    assert_eq!(lines.len(), 3, "{text}");
    let renumber = |l: &str, n: usize| format!("#{n:03}{}", &l[l.find(',').unwrap()..]);
    let want = format!(
        "\r\n{}\r\n{}\r\nOK\r\n> ",
        renumber(lines[0], 1),
        renumber(lines[2], 2)
    );
    assert_bytes(&after, want.as_bytes(), "F0 without beta");
    f.emu.expect(b"C1=alpha\r", OK);
    f.emu.expect(b"C2=secret123\r", OK);
    f.emu.expect(b"C3=3\r", OK);
    let (reply, waited) = timed(&mut f.emu, b"C0\r");
    assert_bytes(&reply, &ok("[JOIN   ] alpha,127.0.0.1,0,0"), "slow join");
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    // Joining the hidden one fails as a vanished access point does.
    f.emu.expect(b"CD\r", OK);
    f.emu.expect(b"C1=beta\r", OK);
    let r = f.emu.cmd(b"C0\r");
    assert_bytes(
        &r,
        b"\r\n[JOIN   ] beta\r\n[JOIN   ] Failed\r\nERROR: Unknown Error\r\nUsage: C0 \r\n> ",
        "join of a hidden AP",
    );
    f.emu.stop();
}

// ---- network -------------------------------------------------------------------------------------

#[test]
fn refused_and_black_holed_connects_never_reach_the_server() {
    let server = Server::tcp_echo();
    let port = server.port();
    let mut f = Faulty::start(
        &[&format!("net.refuse 127.0.0.1:{port}")],
        "[timing]\nconnect_timeout_ms = 700\n",
        &[],
    );
    join(&mut f.emu);
    f.emu.expect(b"P1=0\r", OK);
    f.emu.expect(b"P3=127.0.0.1\r", OK);
    f.emu.expect(format!("P4={port}\r").as_bytes(), OK);
    f.emu.expect(b"P6=1\r", CONNECT_FAILED);
    f.clear();
    f.add(&format!("net.blackhole *:{port}"));
    let (reply, waited) = timed(&mut f.emu, b"P6=1\r");
    assert_bytes(&reply, CONNECT_FAILED, "black-holed connect");
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    assert!(server.peers().is_empty(), "{:?}", server.peers());
    // Cleared: the same connect goes through.
    f.clear();
    f.emu.expect(b"P6=1\r", CONNECTING);
    // The server's accept thread sees it a moment later.
    let peers = wait_for(SECS, || server.peers(), |p| !p.is_empty());
    assert_eq!(peers.len(), 1);
    let n = f.fault_notes();
    assert!(n.iter().any(|n| n.contains("refused")), "{n:?}");
    assert!(n.iter().any(|n| n.contains("black-holed")), "{n:?}");
    f.emu.stop();
}

/// How a server's connection ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    Open,
    Fin(usize),
    Reset(usize),
}

/// A server that counts what it receives and records how the connection ended.
fn recording_server() -> (Server, Arc<Mutex<End>>) {
    let end = Arc::new(Mutex::new(End::Open));
    let e = end.clone();
    let server = Server::tcp(move |mut s: TcpStream, ctl| {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut n = 0;
        let mut buf = [0u8; 4096];
        while ctl.running() {
            match s.read(&mut buf) {
                Ok(0) => {
                    *e.lock().unwrap() = End::Fin(n);
                    return;
                }
                Ok(k) => n += k,
                Err(err) if err.kind() == ErrorKind::ConnectionReset => {
                    *e.lock().unwrap() = End::Reset(n);
                    return;
                }
                Err(_) => {}
            }
        }
    });
    (server, end)
}

#[test]
fn reset_and_close_after_n_bytes_cut_the_stream_where_they_say() {
    for (kind, reset) in [("net.close", false), ("net.reset", true)] {
        let (server, end) = recording_server();
        let port = server.port();
        let mut f = Faulty::start(&[&format!("{kind} 127.0.0.1:{port} after=1000B")], "", &[]);
        join(&mut f.emu);
        f.emu.connect_tcp(0, port);
        let data = pattern(1500, 5);
        // The module takes all 1500 bytes; the peer gets the first 1000, then the cut.
        f.emu.send(&data[..700]);
        f.emu.send(&data[700..]);
        let e = wait_for(SECS, || end.lock().unwrap().clone(), |e| *e != End::Open);
        let want = if reset {
            End::Reset(1000)
        } else {
            End::Fin(1000)
        };
        assert_eq!(e, want, "{kind}");
        // The host learns on its next read: the connection is gone.
        let mut r = f.emu.cmd(b"R0\r");
        for _ in 0..500 {
            if r != OK {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            r = f.emu.cmd(b"R0\r");
        }
        assert_bytes(&r, CLOSED, kind);
        let n = f.fault_notes();
        let what = if reset { "reset" } else { "closed" };
        assert!(
            n.iter()
                .any(|n| n.contains(&format!("connection {what} after 1000 bytes"))),
            "{n:?}"
        );
        f.emu.stop();
    }
}

#[test]
fn close_after_n_bytes_delivers_exactly_n_to_the_host() {
    let data = pattern(5000, 9);
    let server = Server::tcp_send_then_close(&data);
    let port = server.port();
    let mut f = Faulty::start(&[&format!("net.close *:{port} after=1kB")], "", &[]);
    join(&mut f.emu);
    f.emu.connect_tcp(0, port);
    f.emu.expect(b"R1=600\r", OK);
    f.emu.expect(b"R2=300\r", OK);
    let (got, _) = f.emu.recv_exact(1000, SECS);
    assert_bytes(&got, &data[..1000], "first kB");
    f.emu.expect(b"R0\r", CLOSED);
    f.emu.stop();
}

#[test]
fn latency_and_bandwidth_slow_the_connection_both_ways() {
    let server = Server::tcp_echo();
    let port = server.port();
    let mut f = Faulty::start(&[&format!("net.latency 127.0.0.1:{port} 200ms")], "", &[]);
    join(&mut f.emu);
    f.emu.connect_tcp(0, port);
    f.emu.expect(b"R2=100\r", OK);
    let t = Instant::now();
    f.emu.send(b"echo");
    let (got, _) = f.emu.recv_exact(4, SECS);
    assert_eq!(got, b"echo");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    f.emu.expect(b"P6=0\r", OK);
    f.clear();
    f.add("net.bandwidth *:* 20kB/s");
    f.emu.expect(b"P6=1\r", CONNECTING);
    let data = pattern(10_000, 2);
    let t = Instant::now();
    f.emu.send_chunked(&data, 1460);
    f.emu.expect(b"R1=1460\r", OK);
    let (got, _) = f.emu.recv_exact(data.len(), SECS);
    assert_bytes(&got, &data, "echo at 20 kB/s");
    // 10 kB up and 10 kB back at 20 kB/s each way; the way back overlaps all but the last chunk.
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    f.emu.stop();
}

#[test]
fn dns_failure_and_slow_dns_per_name() {
    let mut f = Faulty::start(&["dns.fail localhost"], "", &[]);
    join(&mut f.emu);
    f.emu.expect(
        b"D0=localhost\r",
        b"\r\n[DNS  LU] Host not found localhost:4\r\nERROR: Unknown Error\r\nUsage: D0 <host name>\r\n> ",
    );
    f.clear();
    f.add("dns.delay local* 500ms");
    let (reply, waited) = timed(&mut f.emu, b"D0=localhost\r");
    assert_bytes(&reply, &ok("127.0.0.1"), "slow lookup");
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    // Another name is not delayed (its lookup fails fast: it is not in /etc/hosts).
    let n = f.fault_notes();
    assert!(
        n.iter().any(|n| n.contains("lookup of localhost fails")),
        "{n:?}"
    );
    assert!(
        n.iter()
            .any(|n| n.contains("lookup of localhost delayed 500ms")),
        "{n:?}"
    );
    f.emu.stop();
}

#[test]
fn tls_alert_fails_the_handshake_as_the_server_refusing_would() {
    let pki = pki();
    let server = TlsServer::echo(server_config(&pki.self_signed, None, Versions::Both));
    let port = server.port();
    let mut f = Faulty::start(
        &[&format!("tls.alert 127.0.0.1:{port} handshake_failure")],
        "",
        &[],
    );
    join(&mut f.emu);
    assert_bytes(
        &tls_start(&mut f.emu, 0, port, 0),
        SIMPLE_FAIL,
        "alerted handshake",
    );
    assert!(f.log().contains("HandshakeFailure"), "{}", f.log());
    f.clear();
    tls_connect(&mut f.emu, 0, port, 0);
    f.emu.expect(b"R2=300\r", OK);
    echo_roundtrip(&mut f.emu, b"after the alert");
    f.emu.stop();
}

// ---- reproducibility ----------------------------------------------------------------------------

/// One session with random faults; returns what the host received and the transcript without its
/// time column.
fn seeded_session(seed: &str) -> (Vec<u8>, Vec<String>) {
    let rules = [
        "serial.split 1..9 gap=1ms",
        "serial.latency 0ms..5ms",
        "serial.noise corrupt=0.02 dir=out",
        "wifi.join-fail p=0.5",
    ];
    let mut f = Faulty::start(&rules, "", &["--seed", seed]);
    let mut host = Vec::new();
    let session: [&[u8]; 12] = [
        b"I?\r",
        b"C1=eswifi-e2e\r",
        b"C0\r",
        b"CS\r",
        b"CD\r",
        b"C0\r",
        b"CD\r",
        b"C0\r",
        b"C?\r",
        b"Z?\r",
        b"P?\r",
        b"I?\r",
    ];
    for req in session {
        f.emu.write(req);
        // A corrupted prompt is no prompt: wait for the line to go quiet instead.
        let mut got = Vec::new();
        for _ in 0..100 {
            let more = f.emu.read_for(Duration::from_millis(150));
            if more.is_empty() && !got.is_empty() {
                break;
            }
            got.extend(more);
        }
        host.extend(got);
    }
    f.emu.stop();
    let t = f.transcript();
    let lines = t
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest).to_string())
        .collect();
    (host, lines)
}

#[test]
fn the_same_seed_gives_the_same_transcript_byte_for_byte() {
    let (host_a, a) = seeded_session("2026");
    let (host_b, b) = seeded_session("2026");
    assert!(notes(&a.join("\n")).len() > 12, "{a:#?}");
    assert_eq!(a, b, "transcripts of two runs with seed 2026");
    assert_bytes(&host_a, &host_b, "what the host received");
    let (host_c, c) = seeded_session("2027");
    assert_ne!(a, c, "another seed, other faults");
    assert_ne!(host_a, host_c);
}
