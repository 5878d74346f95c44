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
