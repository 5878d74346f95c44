//! End-to-end tests of the emulator under abuse of its files (issue 21): reads that must be bounded
//! and refuse FIFOs and devices, output files that must not follow symbolic links, the certificate
//! store's repair paths. Each runs the real binary on real files in a private directory.

use eswifi_test_support::harness::*;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOOL: Duration = Duration::from_secs(30);

/// Run the binary with `args` in `cwd` under umask 000 and a 2 GiB address-space limit (an
/// unbounded read fails there instead of taking the machine's memory); at most `timeout`, then
/// killed. Returns (exit code, stdout, stderr, how long it took).
fn run_limited(args: &[&str], cwd: &Path, timeout: Duration) -> (Option<i32>, String, String) {
    let out = TempDir::new("abuse-run");
    let (o, e) = (out.path().join("out"), out.path().join("err"));
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 2097152; umask 000; exec \"$0\" \"$@\"")
        .arg(binary())
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .expect("spawning sh");
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(st) => break st,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "eswifi-emu {args:?} still running after {timeout:?}; stderr: {}",
                    std::fs::read_to_string(&e).unwrap_or_default()
                );
            }
        }
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status.code(), read(&o), read(&e))
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_runner_refuses_devices_fifos_and_huge_expansions_at_once() {
    let dir = TempDir::new("abuse-runner");
    let d = dir.path();
    mkfifo(&d.join("fifo"));
    let script = |name: &str, text: &str| {
        std::fs::write(d.join(name), text).unwrap();
        name.to_string()
    };
    // The script itself a device: refused before anything runs.
    let (code, out, err) = run_limited(&["run", "/dev/zero"], d, TOOL);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("a character device, not a regular file"),
        "{out}{err}"
    );
    for (name, text, want) in [
        (
            "inc-zero.iwin",
            "include /dev/zero\n",
            "/dev/zero: cannot read it: a character device, not a regular file",
        ),
        (
            "inc-fifo.iwin",
            "include fifo\n",
            "fifo: cannot read it: a FIFO, not a regular file",
        ),
        (
            "s3-fifo.iwin",
            "S3=@fifo\n",
            "fifo: a FIFO, not a regular file",
        ),
        (
            "double.iwin",
            "set A 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
             set A ${A}${A}${A}${A}${A}${A}${A}${A}\n\
             set A ${A}${A}${A}${A}${A}${A}${A}${A}\n\
             set A ${A}${A}${A}${A}${A}${A}${A}${A}\n\
             set A ${A}${A}${A}${A}${A}${A}${A}${A}\n\
             set A ${A}${A}${A}${A}${A}${A}${A}${A}\n\
             set A ${A}${A}${A}${A}${A}${A}${A}${A}\n\
             set A ${A}${A}${A}${A}${A}${A}${A}${A}\n",
            "expands to more than 64 KiB",
        ),
    ] {
        let s = script(name, text);
        let (code, out, err) = run_limited(&["run", &s], d, TOOL);
        assert_eq!(code, Some(1), "{name}: {out}{err}");
        assert!(out.contains(want), "{name}: want {want:?} in:\n{out}{err}");
        assert!(out.contains("0 passed, 1 failed"), "{name}: {out}");
    }
    // A script over the cap is refused by size.
    let big = "// padding\n".repeat(100_000);
    let s = script("big.iwin", &big);
    let (code, out, _) = run_limited(&["run", &s], d, TOOL);
    assert_eq!(code, Some(1));
    assert!(out.contains("larger than 1 MiB"), "{out}");
    // The configuration too, for the emulator and for the runner.
    for args in [
        &["--config", "/dev/zero", "--certsets", "c"][..],
        &["run", "--config", "fifo", "x.iwin"][..],
    ] {
        let (code, out, err) = run_limited(args, d, TOOL);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(err.contains("not a regular file"), "{args:?}: {err}");
    }
}

#[test]
fn trace_and_junit_files_are_private_and_never_written_through_links() {
    let dir = TempDir::new("abuse-files");
    let d = dir.path();
    std::fs::write(d.join("ok.iwin"), "I?\n").unwrap();
    let victim = d.join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    symlink(&victim, d.join("link.xml")).unwrap();
    symlink(d.join("absent.xml"), d.join("dangling.xml")).unwrap();
    for target in ["link.xml", "dangling.xml"] {
        let (code, out, err) = run_limited(&["run", "ok.iwin", "--junit", target], d, TOOL);
        assert_eq!(code, Some(2), "{target}: {out}{err}");
        assert!(err.contains("symbolic link"), "{target}: {err}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(
        !d.join("absent.xml").exists(),
        "a dangling link's target created"
    );
    // A plain file name: written, 0600 even under umask 000.
    let (code, out, err) = run_limited(&["run", "ok.iwin", "--junit", "r.xml"], d, TOOL);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(mode(&d.join("r.xml")), 0o600);

    // The emulator's transcript: a link is refused at start, naming it.
    symlink(&victim, d.join("link.trace")).unwrap();
    symlink(d.join("absent.trace"), d.join("dangling.trace")).unwrap();
    // Refused at start: nothing was served, exit status 2 (issue 18, item 13).
    for target in ["link.trace", "dangling.trace"] {
        let (code, _, err) = run_limited(&["--trace", target, "--certsets", "c"], d, TOOL);
        assert_eq!(code, Some(2), "{target}: {err}");
        assert!(
            err.contains(target) && err.contains("symbolic link"),
            "{err}"
        );
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(
        !d.join("absent.trace").exists(),
        "a dangling link's target created"
    );
    // A plain name: 0600 (it holds the module's traffic), a stale 0644 file there replaced.
    let trace = d.join("t.trace");
    std::fs::write(&trace, "old").unwrap();
    std::fs::set_permissions(&trace, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut emu = Emu::start_with(None, &["--trace", trace.to_str().unwrap()]);
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    assert_eq!(mode(&trace), 0o600);
    assert!(!std::fs::read_to_string(&trace).unwrap().starts_with("old"));
}

/// The exact bytes of a complete item file (certsets/README.md).
fn item_file(data: &[u8]) -> Vec<u8> {
    use eswifi_test_support::pki::{hex, sha256};
    let mut v = format!("eswifi-emu-otp 1 {} {}\n", data.len(), hex(&sha256(data))).into_bytes();
    v.extend_from_slice(data);
    v
}

const REMEDY: &str = "remove it or run `eswifi-emu flash --erase`";

#[test]
fn the_store_refuses_fifos_devices_and_oversized_items_by_name() {
    let dir = TempDir::new("abuse-store");
    let d = dir.path();
    // Paths as the tools name them: relative to the working directory, as given.
    let ca = d.join("c/set1/ca.otp");
    std::fs::create_dir_all(ca.parent().unwrap()).unwrap();
    let refused = |why: &str| {
        let want = format!("c/set1/ca.otp is not an item file: {why}; {REMEDY}");
        let (code, out, err) = run_limited(&["--certsets", "c"], d, TOOL);
        assert_eq!(code, Some(2), "start: {out}{err}");
        assert!(err.contains(&want), "start: want {want:?} in:\n{err}");
        let (code, out, err) = run_limited(&["--certsets", "c", "certs"], d, TOOL);
        assert_eq!(code, Some(2), "certs: {out}{err}");
        assert!(err.contains(&want), "certs: want {want:?} in:\n{err}");
    };
    mkfifo(&ca);
    refused("a FIFO, not a regular file");
    std::fs::remove_file(&ca).unwrap();
    symlink("/dev/zero", &ca).unwrap();
    refused("a character device, not a regular file");
    // Well-formed items larger than PG programs (16 KiB): one over the file cap, one just over.
    std::fs::remove_file(&ca).unwrap();
    std::fs::write(&ca, item_file(&vec![b'A'; 1 << 20])).unwrap();
    refused("larger than 16512 bytes, the most read");
    std::fs::write(&ca, item_file(&vec![b'A'; 16 * 1024 + 1])).unwrap();
    refused("it holds 16385 bytes, more than PG programs (16384)");
    // Exactly 16 KiB is an item.
    std::fs::write(&ca, item_file(&vec![b'A'; 16 * 1024])).unwrap();
    let (code, out, err) = run_limited(&["--certsets", "c", "certs"], d, TOOL);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("16384 bytes"), "{out}");
    // `flash --erase` is the repair it names: a FIFO and a link go (never the link's target).
    std::fs::remove_file(&ca).unwrap();
    mkfifo(&ca);
    let key = d.join("c/set2/key.otp");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    symlink("/dev/null", &key).unwrap();
    let (code, out, err) = run_limited(&["--certsets", "c", "flash", "--erase"], d, TOOL);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(std::fs::symlink_metadata(&ca).is_err() && std::fs::symlink_metadata(&key).is_err());
    assert!(Path::new("/dev/null").exists());
    // And `flash` takes no more than PG would, nor a FIFO.
    std::fs::write(d.join("big.pem"), vec![b'A'; 16 * 1024 + 1]).unwrap();
    mkfifo(&d.join("fifo.pem"));
    for (file, why) in [
        ("big.pem", "larger than 16 KiB, the most read"),
        ("fifo.pem", "a FIFO, not a regular file"),
    ] {
        let args = ["--certsets", "c", "flash", "--set", "0", "--ca", file];
        let (code, out, err) = run_limited(&args, d, TOOL);
        assert_eq!(code, Some(2), "{file}: {out}{err}");
        assert!(err.contains(&format!("{file}: {why}")), "{file}: {err}");
    }
}

#[test]
fn the_store_repair_paths_do_what_they_say() {
    let dir = TempDir::new("abuse-repair");
    let d = dir.path();
    let store = d.join("c");
    std::fs::create_dir_all(store.join("set0")).unwrap();
    std::fs::create_dir_all(store.join("set1/cert.otp")).unwrap();
    std::fs::write(store.join("set0/ca.otp"), item_file(b"a CA")).unwrap();

    // A directory at an item's name: erase refuses before it erases anything.
    let (code, out, err) = run_limited(&["--certsets", "c", "flash", "--erase"], d, TOOL);
    assert_eq!(code, Some(2), "{out}{err}");
    let want =
        "c/set1/cert.otp is a directory, not an item; nothing was erased (remove it, then erase)";
    assert!(err.contains(want), "{err}");
    assert!(
        store.join("set0/ca.otp").exists(),
        "set 0 erased before the refusal"
    );
    std::fs::remove_dir(store.join("set1/cert.otp")).unwrap();

    // A corrupt settings file: the start names the remedy, and the remedy works.
    std::fs::write(store.join("settings.saved"), b"eswifi-emu-otp 1 3 00\nabc").unwrap();
    let (code, _, err) = run_limited(&["--certsets", "c"], d, TOOL);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("settings.saved") && err.contains(REMEDY),
        "{err}"
    );
    let (code, out, err) = run_limited(&["--certsets", "c", "flash", "--erase"], d, TOOL);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(!store.join("settings.saved").exists());
    assert!(!store.join("set0/ca.otp").exists());

    // Left by a kill: the settings' temp file (the passphrase) goes at start; a directory at a
    // temp name cannot, and the log says so rather than claim it was removed.
    std::fs::write(store.join(".settings.saved.tmp"), b"C2 passphrase").unwrap();
    std::fs::create_dir_all(store.join("set0/.ca.otp.tmp")).unwrap();
    let c = store.to_str().unwrap();
    let mut emu = Emu::start_with(None, &["--certsets", c]);
    assert!(
        !store.join(".settings.saved.tmp").exists(),
        "passphrase left on disk"
    );
    let log = std::fs::read_to_string(emu.log_path().unwrap()).unwrap();
    let tmp_dir = store.join("set0/.ca.otp.tmp").display().to_string();
    assert!(
        log.contains(&format!(
            "{tmp_dir} is left from an interrupted write but cannot be removed"
        )),
        "{log}"
    );
    assert!(!log.contains(&format!("removed {tmp_dir}")), "{log}");

    // A PG into a set that cannot be written: the slot is not called used before the write.
    let _ = std::fs::remove_dir_all(store.join("set1"));
    std::fs::write(store.join("set1"), b"not a directory").unwrap();
    emu.write(b"PG=1,0,5\rhello");
    let reply = emu.read_until_prompt(Duration::from_secs(30));
    assert!(
        esc(&reply).contains("Failed to write to iFlash"),
        "{}",
        esc(&reply)
    );
    let log = std::fs::read_to_string(emu.log_path().unwrap()).unwrap();
    assert!(log.contains("set 1: writing the root CA failed"), "{log}");
    assert!(!log.contains("now used"), "{log}");
}

#[test]
fn the_control_socket_is_never_connectable_by_others_under_umask_000() {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    // A short directory: a socket path has at most 107 bytes.
    let dir = tempfile::Builder::new()
        .prefix("esw-ctl")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).unwrap();
    ino.add_watch(
        d,
        AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_MOVED_TO,
    )
    .unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(binary())
        .args(["--control", "ctl", "--certsets", "c", "-q"])
        .current_dir(d)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ctl = d.join("ctl");
    let got = wait_for(
        Duration::from_secs(30),
        || std::fs::symlink_metadata(&ctl).ok(),
        Option::is_some,
    );
    assert!(got.is_some(), "no control socket within 30 s");
    assert_eq!(mode(&ctl), 0o600);
    assert_eq!(control(&ctl, "status").chars().next(), Some('['));
    let _ = child.kill();
    let _ = child.wait();
    // What happened to the name `ctl`: it must appear already private (moved into place), never
    // be created by `bind` (mode 0777 under umask 000) and then changed.
    let mut seen = Vec::new();
    while let Ok(events) = ino.read_events() {
        if events.is_empty() {
            break;
        }
        for e in events {
            if e.name.as_deref() == Some(std::ffi::OsStr::new("ctl")) {
                seen.push(e.mask);
            }
        }
    }
    assert_eq!(
        seen,
        [AddWatchFlags::IN_MOVED_TO],
        "events on the socket's name"
    );
}

// ---- fault rules ------------------------------------------------------------------------------

/// A Unix socket path short enough for SUN_LEN (the tests' directories are long).
fn short_socket_path() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("eswifi-a{}-{n}.sock", std::process::id()))
}

const I_REPLY: &str =
    "ISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi";

#[test]
fn fault_rules_refuse_what_they_do_not_understand_and_clear_releases_a_stall() {
    let ctl = short_socket_path();
    let mut emu = Emu::start_with(None, &["--control", ctl.to_str().unwrap()]);
    for (rule, why) in [
        (
            "serial.split 1..7 unknown=1",
            "error serial.split: unknown option unknown= (it takes gap=; usage: serial.split \
             MIN..MAX [gap=DUR])",
        ),
        (
            "serial.split 1..7 gap=1ms gap=2ms",
            "error serial.split: gap= given twice",
        ),
        (
            "serial.stall 3s 4s",
            "error serial.stall: unexpected \"4s\" (usage: serial.stall DUR)",
        ),
    ] {
        assert_eq!(control(&ctl, &format!("fault add {rule}")), why);
    }
    assert_eq!(
        control(&ctl, "fault list"),
        "ok 0",
        "a refused rule was added"
    );
    // A brown-out countless commands away never comes.
    assert_eq!(
        control(
            &ctl,
            "fault add module.reset after=18446744073709551615cmds"
        ),
        "ok 1"
    );
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    assert_eq!(control(&ctl, "fault clear"), "ok");
    // A stalled command goes on when its fault is cleared, not 60 s later.
    assert_eq!(control(&ctl, "fault add serial.stall 60s"), "ok 2");
    emu.write(b"I?\r");
    assert_eq!(emu.read_for(Duration::from_millis(300)), b"", "not held");
    assert_eq!(control(&ctl, "fault clear 2"), "ok");
    // (Well under the stall's 60 s.)
    let reply = emu.read_until_prompt(Duration::from_secs(20));
    assert_bytes(&reply, &ok(I_REPLY), "I? released by fault clear");
}

// ---- secrets in fault notes and the transcript ----------------------------------------------

/// Whether `text` holds any 8-byte run of `secret` (key material, a passphrase).
fn leaks(text: &str, secret: &[u8]) -> Option<String> {
    secret
        .windows(8)
        .filter(|w| w.iter().all(|b| b.is_ascii_alphanumeric()))
        .find(|w| text.contains(std::str::from_utf8(w).unwrap()))
        .map(|w| String::from_utf8_lossy(w).into_owned())
}

#[test]
fn noise_notes_and_the_transcript_never_show_a_key_or_a_passphrase() {
    let pki = eswifi_test_support::pki::pki();
    let key = pki.client.key_pem.replace('\n', "\r\n");
    let pass = "Sup3rSecretPassphrase";
    let ctl = short_socket_path();
    let dir = TempDir::new("abuse-noise");
    let trace = dir.path().join("trace.log");
    let mut emu = Emu::start_with(
        None,
        &[
            "--control",
            ctl.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
            "--seed",
            "5",
        ],
    );
    // Without noise: a passphrase with a space for `=` is not a command, and not shown.
    emu.write(format!("C2 {pass}\r").as_bytes());
    assert_bytes(
        &emu.read_until_prompt(Duration::from_secs(20)),
        UNKNOWN_COMMAND,
        "C2 with a space",
    );
    // Every byte the host sends corrupted: a key sent with PG, a passphrase with C2.
    assert_eq!(
        control(&ctl, "fault add serial.noise corrupt=1.0 dir=in"),
        "ok 1"
    );
    let mut host = format!("PG=0,2,{}\r{key}", key.len()).into_bytes();
    host.extend_from_slice(format!("C2={pass}\rC2 {pass}\r").as_bytes());
    host.extend_from_slice(b"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\r");
    emu.write(&host);
    let sent = host.len();
    let fired = wait_for(
        Duration::from_secs(20),
        || control_lines(&ctl, "fault list"),
        |l| l[0].ends_with(&format!("fired={sent}")),
    );
    assert!(fired[0].ends_with(&format!("fired={sent}")), "{fired:?}");
    assert_eq!(control(&ctl, "fault clear"), "ok");
    // The module is still there.
    emu.write(b"\r");
    let _ = emu.read_for(Duration::from_millis(300));
    emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    let log = std::fs::read_to_string(emu.log_path().unwrap()).unwrap();
    let t = std::fs::read_to_string(&trace).unwrap();
    for (name, text) in [("log", &log), ("transcript", &t)] {
        assert!(
            !text.contains("Sup3r"),
            "the passphrase in the {name}:\n{text}"
        );
        if let Some(run) = leaks(text, key.as_bytes()) {
            panic!("key material {run:?} in the {name}:\n{text}");
        }
        assert!(
            text.contains("in a line with C2's secret (") && text.contains("values not shown"),
            "{name}:\n{text}"
        );
    }
    let hidden = format!("> <{} bytes hidden: not a command>\\r\n", pass.len() + 3);
    assert!(t.contains(&hidden), "{t}");
}

// ---- the transcript on a full disk ----------------------------------------------------------

#[test]
fn a_transcript_on_a_full_disk_warns_once_and_counts_what_it_lost() {
    // /dev/full: every write fails with ENOSPC, as on a full disk.
    let mut emu = Emu::start_with(None, &["--trace", "/dev/full"]);
    for _ in 0..50 {
        emu.expect_ok(b"I?\r", I_REPLY.as_bytes());
    }
    emu.stop();
    let log = std::fs::read_to_string(emu.log_path().unwrap()).unwrap();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("trace")).collect();
    assert_eq!(
        warnings.len(),
        2,
        "one warning when writing fails, one count at the end:\n{}",
        warnings.join("\n")
    );
    assert!(
        warnings[0].ends_with(
            "trace /dev/full: No space left on device (os error 28); records are lost until it \
             can be written again"
        ),
        "{}",
        warnings[0]
    );
    // The boot banner, 50 commands and 50 replies at least.
    let lost: u64 = warnings[1]
        .split("trace /dev/full: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", warnings[1]));
    assert!(lost >= 101, "{}", warnings[1]);
    assert!(
        warnings[1].ends_with(&format!(
            "{lost} records lost (No space left on device (os error 28))"
        )),
        "{}",
        warnings[1]
    );
}
