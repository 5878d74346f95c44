//! End-to-end tests of the command line itself: shutdown on SIGHUP, what `--link` may replace, and
//! the global options (`--certsets`, `--config`, `-v`, `-q`) on either side of a subcommand. Runs
//! the real binary; every wait is bounded.

use eswifi_test_support::harness::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a one-shot run (a tool, or a refused start) may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a finished run of the binary left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run `eswifi-emu args…` in `cwd` (so a default relative `certsets/` would land there, not in the
/// repository), with RUST_LOG unset, and wait at most [`RUN_TIMEOUT`] for it to exit.
fn run_in(cwd: &Path, args: &[&str]) -> Run {
    let (code, stdout, stderr) = run_binary(args, cwd, RUN_TIMEOUT);
    Run {
        code,
        stdout,
        stderr,
    }
}

/// Assert a run exited 0, showing its output otherwise.
#[track_caller]
fn assert_ok(run: &Run, what: &str) {
    assert_eq!(
        run.code,
        Some(0),
        "{what}: exit status\nstdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
}

/// A self-signed CA certificate in PEM, written to `dir/ca.pem`.
fn write_ca(dir: &Path, cn: &str) -> (PathBuf, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    let pem = params.self_signed(&key).expect("certificate").pem();
    let path = dir.join("ca.pem");
    std::fs::write(&path, &pem).expect("writing ca.pem");
    (path, pem)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

// ---- signals -------------------------------------------------------------------------------------

#[test]
fn sighup_exits_zero_and_link_is_removed() {
    let links = TempDir::new("link");
    let link = links.path().join("eswifi-tty");
    let mut emu = Emu::start_with(None, &["--link", s(&link)]);
    assert_eq!(
        std::fs::read_link(&link).expect("--link symlink exists while serving"),
        emu.pty_path()
    );
    emu.expect(b"P0\r", &ok("0"));
    // What a closing terminal sends: a clean shutdown, not a kill.
    emu.signal(libc::SIGHUP);
    let st = emu.wait_exit(EXIT_TIMEOUT);
    assert_eq!(st.code(), Some(0), "exit status after SIGHUP: {st}");
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "{} still exists after SIGHUP",
        link.display()
    );
}

// ---- --link --------------------------------------------------------------------------------------

#[test]
fn link_at_regular_file_is_refused_and_file_kept() {
    let dir = TempDir::new("cwd");
    let file = dir.path().join("notes.txt");
    let content = b"the user's data, not a stale link\n";
    std::fs::write(&file, content).expect("writing the user's file");
    let certs = dir.path().join("certsets");

    let run = run_in(dir.path(), &["--certsets", s(&certs), "--link", s(&file)]);
    assert_ne!(run.code, Some(0), "exit status; stderr: {}", run.stderr);
    assert!(
        run.code.is_some(),
        "killed by a signal; stderr: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains(s(&file)),
        "stderr does not name {}: {}",
        file.display(),
        run.stderr
    );
    assert!(run.stdout.is_empty(), "printed a pty path: {}", run.stdout);
    let meta = std::fs::symlink_metadata(&file).expect("the file is still there");
    assert!(meta.file_type().is_file(), "{:?}", meta.file_type());
    assert_eq!(std::fs::read(&file).expect("reading the file"), content);
    // Nothing was left beside it either (the temporary link is made only once the path is ok).
    let beside: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.contains("notes.txt") && n != "notes.txt")
        .collect();
    assert!(beside.is_empty(), "left beside the file: {beside:?}");
}

// ---- global options after the subcommand --------------------------------------------------------

#[test]
fn flash_and_certs_take_certsets_after_the_subcommand() {
    let dir = TempDir::new("cwd");
    let certs = dir.path().join("my-sets");
    let (ca, pem) = write_ca(dir.path(), "CLI Test Root CA");

    let run = run_in(
        dir.path(),
        &[
            "flash",
            "--certsets",
            s(&certs),
            "--set",
            "1",
            "--ca",
            s(&ca),
        ],
    );
    assert_ok(&run, "flash --certsets DIR");
    let stored =
        std::fs::read_to_string(certs.join("set1").join("ca.otp")).expect("set 1 CA in DIR");
    assert!(stored.ends_with(&pem), "set 1 CA file: {stored}");
    assert!(
        !dir.path().join("certsets").exists(),
        "flash also wrote the default certsets/"
    );

    let run = run_in(dir.path(), &["certs", "--certsets", s(&certs)]);
    assert_ok(&run, "certs --certsets DIR");
    assert!(
        run.stdout.contains("CLI Test Root CA"),
        "listing does not show the CA flashed into DIR:\n{}",
        run.stdout
    );

    // The old order keeps working, and reads the same directory (not the default).
    let before = run_in(dir.path(), &["--certsets", s(&certs), "certs"]);
    assert_ok(&before, "--certsets DIR certs");
    assert_eq!(before.stdout, run.stdout, "listing by option order");
    assert!(
        !dir.path().join("certsets").exists(),
        "default certsets/ made"
    );
}

#[test]
fn verbosity_and_config_after_the_subcommand() {
    let dir = TempDir::new("cwd");
    let certs = dir.path().join("sets");
    std::fs::create_dir(&certs).expect("creating the store (certs lists an existing one)");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[module]\nmessage_type = 0\n").expect("writing config");

    for flags in [&["-v"][..], &["-vv"], &["--verbose"], &["-q"], &["--quiet"]] {
        let mut args = vec!["certs", "--certsets", s(&certs)];
        args.extend_from_slice(flags);
        assert_ok(&run_in(dir.path(), &args), &format!("{args:?}"));
    }
    let run = run_in(
        dir.path(),
        &["certs", "--config", s(&config), "--certsets", s(&certs)],
    );
    assert_ok(&run, "certs --config FILE");

    // -q after the subcommand takes effect: flashing a non-PEM CA warns, unless quiet.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("writing junk");
    let flash = |extra: &[&str]| {
        let mut args = vec!["flash", "--certsets", s(&certs), "--set", "2"];
        args.extend_from_slice(&["--ca", s(&junk)]);
        args.extend_from_slice(extra);
        let run = run_in(dir.path(), &args);
        assert_ok(&run, &format!("{args:?}"));
        run
    };
    let loud = flash(&[]);
    assert!(
        loud.stderr.contains("stored as given"),
        "no warning without -q: {}",
        loud.stderr
    );
    let quiet = flash(&["-q"]);
    assert!(
        !quiet.stderr.contains("stored as given"),
        "warning despite -q after the subcommand: {}",
        quiet.stderr
    );

    // -v and -q still exclude each other, whichever side each is on.
    for args in [
        ["-v", "certs", "-q"],
        ["-q", "certs", "-v"],
        ["certs", "-v", "-q"],
    ] {
        let run = run_in(
            dir.path(),
            &[&args[..], &["--certsets", s(&certs)]].concat(),
        );
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("cannot be used with"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn certs_into_a_closed_pipe_exits_quietly() {
    use std::os::fd::FromRawFd;
    use std::process::{Command, Stdio};
    let dir = TempDir::new("cli-pipe");
    std::fs::create_dir(dir.path().join("c")).expect("creating the store");
    let mut fds = [0i32; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // The reader is gone before the tool writes (`eswifi-emu certs | head -0`).
    unsafe { libc::close(fds[0]) };
    let out = unsafe { Stdio::from_raw_fd(fds[1]) };
    let mut child = Command::new(env!("CARGO_BIN_EXE_eswifi-emu"))
        .args(["--certsets", s(&dir.path().join("c")), "certs"])
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("certs did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

// ---- what a new user meets first (issue 18) ------------------------------------------------------

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The preset files: the one definition of each.
fn preset_file(name: &str) -> String {
    std::fs::read_to_string(
        repo()
            .join("crates/core/presets")
            .join(format!("{name}.toml")),
    )
    .expect("preset file")
}

const PRESETS: [&str; 6] = ["zephyr", "st", "cmsis", "mbed", "mongoose", "teach"];

#[test]
fn presets_are_shown_as_the_toml_they_stand_for_and_the_readme_shows_the_same() {
    let dir = TempDir::new("presets");
    let all = run_in(dir.path(), &["presets"]);
    assert_ok(&all, "presets");
    for name in PRESETS {
        let toml = preset_file(name);
        assert!(
            all.stdout.contains(&format!("## --preset {name}: ")),
            "{name} not listed:\n{}",
            all.stdout
        );
        assert!(all.stdout.contains(toml.trim_end()), "{name}'s TOML");
        let one = run_in(dir.path(), &["presets", name]);
        assert_ok(&one, name);
        assert_eq!(one.stdout, toml, "presets {name}");
        let printed = run_in(dir.path(), &["--preset", name, "--print-config"]);
        assert_ok(&printed, name);
        assert_eq!(printed.stdout, format!("# {name}\n{toml}"));
    }
    // The README's section shows each preset as its file, byte for byte.
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let section = &readme[readme
        .find("### Quirk presets per driver")
        .expect("the presets section")..];
    let section = &section[..section[4..].find("\n## ").map_or(section.len(), |e| e + 4)];
    for name in PRESETS {
        let at = section
            .find(&format!("**`{name}`**"))
            .unwrap_or_else(|| panic!("README lacks preset {name}"));
        let open = at + section[at..].find("```toml\n").expect("a toml block") + 8;
        let close = open + section[open..].find("\n  ```").expect("closing fence") + 1;
        let shown: String = section[open..close]
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
            .collect();
        assert_eq!(shown, preset_file(name), "README's {name} block");
    }
    // An unknown name is a usage error that lists the known ones.
    let bad = run_in(dir.path(), &["--preset", "nope", "--print-config"]);
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("zephyr"), "{}", bad.stderr);
}

#[test]
fn presets_layer_in_order_and_the_config_file_wins() {
    let dir = TempDir::new("layers");
    let config = dir.path().join("mine.toml");
    std::fs::write(&config, "[identity]\nfirmware = \"C3.5.2.3.STM\"\n").unwrap();
    let run = run_in(
        dir.path(),
        &[
            "--preset",
            "zephyr",
            "--preset",
            "cmsis",
            "--config",
            s(&config),
            "--print-config",
        ],
    );
    assert_ok(&run, "--print-config");
    assert!(
        run.stdout.contains("drop_byte_after_payload = true"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("bus = \"spi\""), "{}", run.stdout);
    assert!(
        run.stdout.contains("firmware = \"C3.5.2.3.STM\""),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("C3.5.2.5"),
        "the file wins: {}",
        run.stdout
    );
    // And the module behaves so: cmsis puts it on the SPI bus (B? answers SPI, padded).
    let mut emu = Emu::start_with(Some("[module]\nbus = \"spi\"\n"), &["--preset", "cmsis"]);
    emu.expect(b"B?\r", b"\r\nSPI,0,0\r\nOK\r\n> \x15");
}

#[test]
fn help_teaches_examples_exit_statuses_and_shows_the_link_placeholder() {
    let dir = TempDir::new("help");
    let main = run_in(dir.path(), &["--help"]);
    assert_ok(&main, "--help");
    for needle in [
        "Examples:",
        "Exit status:",
        "  0 ",
        "  1 ",
        "  2 ",
        "  130 ",
        "--link /tmp/eswifi{n} makes /tmp/eswifi0",
        "[possible values: zephyr, st, cmsis, mbed, mongoose, teach]",
    ] {
        assert!(main.stdout.contains(needle), "--help lacks {needle:?}");
    }
    assert!(!main.stdout.contains("{ n }"), "{}", main.stdout);
    for sub in ["run", "term", "peers", "flash", "certs", "presets"] {
        let h = run_in(dir.path(), &[sub, "--help"]);
        assert_ok(&h, sub);
        assert!(
            h.stdout.contains("Examples:\n  eswifi-emu "),
            "{sub} --help has no examples:\n{}",
            h.stdout
        );
    }
    let term = run_in(dir.path(), &["term", "--help"]);
    assert!(
        !term.stdout.contains("for `wait`"),
        "term has no `wait`:\n{}",
        term.stdout
    );
    let peers = run_in(dir.path(), &["peers", "--help"]);
    for unused in ["--config", "--certsets", "--preset"] {
        assert!(
            !peers.stdout.contains(unused),
            "peers --help lists {unused}"
        );
        let given = run_in(dir.path(), &["peers", unused, "x"]);
        assert_eq!(given.code, Some(2), "peers {unused}: {}", given.stderr);
    }
}

#[test]
fn errors_name_what_the_user_typed_and_exit_2_when_nothing_ran() {
    let dir = TempDir::new("errors");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let run = run_in(dir.path(), &["--listen", &port]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "--listen 127.0.0.1:{port}: address already in use"
        )),
        "{}",
        run.stderr
    );
    // Not a local address: the bind fails, and nothing claimed it was listening.
    let run = run_in(dir.path(), &["--listen", "192.0.2.1:5558"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("--listen 192.0.2.1:5558: "),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("listening"), "{}", run.stderr);

    let run = run_in(dir.path(), &["--baud", "12345"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .contains("--baud 12345: not a rate the module offers")
            && run.stderr.contains("9600, 19200")
            && !run.stderr.contains("module.baud"),
        "{}",
        run.stderr
    );
    for args in [&["--modules", "0"][..], &["--serial", "/nonexistent/tty"]] {
        let run = run_in(dir.path(), args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(args[0]), "{args:?}: {}", run.stderr);
    }
    // `certs` of a store that is not there is an error, not three empty sets; `flash` makes it.
    let missing = dir.path().join("nonexistent");
    let run = run_in(dir.path(), &["certs", "--certsets", s(&missing)]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--certsets "), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);

    // `run`: a missing script, and a report with nowhere to go, are refused before anything runs.
    let script = dir.path().join("ok.iwin");
    std::fs::write(&script, "I?\n").unwrap();
    let run = run_in(dir.path(), &["run", s(&script), "/nonexistent/x.iwin"]);
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(
        run.stderr.contains("/nonexistent/x.iwin: "),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "nothing ran: {}", run.stdout);
    let run = run_in(
        dir.path(),
        &["run", s(&script), "--junit", "/nonexistent/r.xml"],
    );
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("--junit /nonexistent/r.xml: "),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "nothing ran: {}", run.stdout);
    // `term --record` somewhere unwritable: named, and no banner after it.
    let run = run_in(dir.path(), &["term", "--record", "/nonexistent/x.iwin"]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("--record /nonexistent/x.iwin: "),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("eswifi-emu term on"), "{}", run.stdout);
}

#[test]
fn start_up_log_says_what_matters() {
    // No fault rule: no fault seed in the log.
    let mut emu = Emu::start();
    emu.expect(b"CS\r", b"\r\n0\r\nOK\r\n> ");
    emu.stop();
    let log = std::fs::read_to_string(emu.log_path().expect("log")).unwrap();
    assert!(!log.contains("fault seed"), "{log}");
    // A rule: the seed, to replay it.
    let mut emu = Emu::start_with(
        Some("[faults]\nrules = [\"serial.latency 1ms\"]\n"),
        &["--seed", "7"],
    );
    emu.expect(b"CS\r", b"\r\n0\r\nOK\r\n> ");
    emu.wait_log("fault seed 7 (replay with --seed 7)", 1);
    emu.stop();
    // --connect says when it has connected.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let mut emu = Emu::launch_full(None, &["--connect", &addr], 1, |_| None);
    let (_host, _) = server.accept().expect("the emulator connects");
    emu.wait_log(&format!("connected to {addr}"), 1);
    emu.stop();
}

#[test]
fn the_teach_preset_echoes_and_backspace_erases_and_the_default_does_neither() {
    let mut emu = Emu::start_with(None, &["--preset", "teach"]);
    // Typed one key at a time, as a person at picocom: each comes back.
    emu.write(b"IX");
    assert_bytes(&emu.read_exact_n(2), b"IX", "echo");
    emu.write(b"\x7f");
    assert_bytes(&emu.read_exact_n(3), b"\x08 \x08", "Backspace erases");
    emu.write(b"?");
    assert_bytes(&emu.read_exact_n(1), b"?", "echo");
    emu.write(b"\r");
    let reply = emu.read_until_prompt(emu.timeout);
    assert!(
        reply.starts_with(b"\r\nISM43362-M3G-L44-UART,"),
        "{}",
        esc(&reply)
    );
    // A passphrase comes back as stars.
    emu.write(b"C2=hunter22");
    assert_bytes(&emu.read_exact_n(11), b"C2=********", "passphrase echo");
    emu.write(b"\r");
    assert_bytes(
        &emu.read_until_prompt(emu.timeout),
        b"\r\n\r\nOK\r\n> ",
        "C2 reply",
    );
    emu.stop();

    // The real module neither echoes nor edits: 0x7f is part of the command.
    let mut emu = Emu::start();
    emu.expect(b"IX\x7f?\r", b"\r\n\r\nERROR: Unknown Command\r\n> ");
}
