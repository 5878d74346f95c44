//! End-to-end test of a real firmware on an emulated MCU (issue 19): `scripts/qemu-firmware/run.sh`
//! builds our bare-metal C firmware for QEMU's mps2-an385, starts `eswifi-emu peers` and this
//! build's emulator (`--listen`), runs QEMU with the module on UART1 and checks the firmware's own
//! verdict. Needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm (`.ci/run`
//! installs them): without them the test says that it skipped and why, except under CI=true, where
//! a missing tool is a failure (a green CI must not hide a missing install step).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// run.sh bounds every wait itself (QEMU 60 s, each start 10 s); this only catches a hung script.
const DEADLINE: Duration = Duration::from_secs(240);

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Why the firmware cannot be built or run here, if it cannot.
fn missing_tools() -> Option<String> {
    let mut missing: Vec<&str> = ["arm-none-eabi-gcc", "qemu-system-arm", "timeout"]
        .into_iter()
        .filter(|t| !on_path(t))
        .collect();
    if on_path("arm-none-eabi-gcc") {
        // gcc echoes the bare name back when newlib's nano libc is not installed.
        let newlib = Command::new("arm-none-eabi-gcc")
            .args(["--specs=nano.specs", "-print-file-name=libc_nano.a"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() != "libc_nano.a")
            .unwrap_or(false);
        if !newlib {
            missing.push("newlib (libnewlib-arm-none-eabi)");
        }
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

#[test]
fn our_firmware_on_qemu_mps2_an385_passes_every_check() {
    if let Some(missing) = missing_tools() {
        let why = format!(
            "not found: {missing} (Debian: apt-get install gcc-arm-none-eabi \
             libnewlib-arm-none-eabi qemu-system-arm)"
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the QEMU firmware test, but {why}"
        );
        // Straight to stderr: libtest captures eprintln! of a passing test, and this must show.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED our_firmware_on_qemu_mps2_an385_passes_every_check: {why}"
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/qemu-firmware/run.sh");
    let mut child = Command::new("bash")
        .arg(&script)
        .env("ESWIFI_EMU", env!("CARGO_BIN_EXE_eswifi-emu"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0) // so that a hung run can be ended with everything it started
        .spawn()
        .expect("spawning run.sh");
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for run.sh") {
            break Some(status);
        }
        if start.elapsed() > DEADLINE {
            // SIGTERM to the group: run.sh's trap stops the peers and the emulator.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(2));
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    println!("{out}");
    eprintln!("{err}");
    eprintln!("run.sh took {:.1} s", start.elapsed().as_secs_f64());
    let status = status.unwrap_or_else(|| panic!("run.sh did not finish within {DEADLINE:?}"));
    let last = out.lines().last().unwrap_or("").trim_end_matches('\r');
    let counts: Vec<u32> = last
        .strip_suffix(" failed")
        .and_then(|l| l.split_once(" passed, "))
        .and_then(|(p, f)| Some(vec![p.parse().ok()?, f.parse().ok()?]))
        .unwrap_or_else(|| {
            panic!("the firmware's last line is not `N passed, M failed`: {last:?}")
        });
    assert_eq!(counts[1], 0, "the firmware reported failures: {last}");
    assert!(counts[0] >= 8, "too few checks ran: {last}");
    assert!(status.success(), "run.sh exited {status}");
    for check in [
        "ok   prompt",
        "ok   TCP echo",
        "ok   UDP echo",
        "ok   mutual TLS echo",
        "ok   peer close seen as -1: R0 -> \"\\r\\n-1\\r\\nERROR\\r\\n> \"",
    ] {
        assert!(out.contains(check), "no `{check}` line");
    }
    assert!(
        !out.contains("PRIVATE KEY") && !err.contains("PRIVATE KEY"),
        "key material reached the output"
    );
}

/// `scripts/qemu-uart-demo/run.sh`, as the README shows it: the same bytes every run (the banner
/// QEMU would cut at random is read away first), nothing on stderr (no `ld` warning), exit 0 (the
/// firmware ends QEMU itself), and the README's copy of the output is what it prints.
#[test]
fn the_qemu_uart_demo_prints_the_same_reply_every_run() {
    let missing: Vec<&str> = [
        "arm-none-eabi-as",
        "arm-none-eabi-ld",
        "arm-none-eabi-objcopy",
        "qemu-system-arm",
        "timeout",
    ]
    .into_iter()
    .filter(|t| !on_path(t))
    .collect();
    if !missing.is_empty() {
        let why = format!(
            "not found: {} (Debian: apt-get install binutils-arm-none-eabi qemu-system-arm)",
            missing.join(", ")
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the QEMU demo, but {why}"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the_qemu_uart_demo_prints_the_same_reply_every_run: {why}"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let want = "\r\nISM43362-M3G-L44-UART,C3.5.2.3.STM,v3.5.2,v1.4.0.rc1,v8.2.1,120000000,\
                Inventek eS-WiFi\r\nOK\r\n> \n";
    for run in 0..3 {
        let out = Command::new("timeout")
            .args(["60", "bash", "scripts/qemu-uart-demo/run.sh"])
            .current_dir(root)
            .env("ESWIFI_EMU", env!("CARGO_BIN_EXE_eswifi-emu"))
            .stdin(Stdio::null())
            .output()
            .expect("running the demo");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "run {run}: {}\n{stdout}\n{stderr}",
            out.status
        );
        assert_eq!(stderr, "", "run {run}: stderr");
        let (first, rest) = stdout.split_once('\n').expect("a first line");
        assert!(
            first.starts_with("eswifi-emu serves the UART at 127.0.0.1:"),
            "{first}"
        );
        assert_eq!(rest, want, "run {run}: the console");
    }
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let shown = "QEMU's console (USART2) follows:\n\nISM43362-M3G-L44-UART,C3.5.2.3.STM,\
                 v3.5.2,v1.4.0.rc1,v8.2.1,120000000,Inventek eS-WiFi\nOK\n>\n```";
    assert!(readme.contains(shown), "the README shows the demo's output");
}
