//! End-to-end tests of how hosts attach and leave (issue 16, "make the edges as solid as the
//! core"): what a host gets when it opens the line, overlaps another, reopens without a flush,
//! ends its input, or waits silently for a prompt; lines ended with LF alone; two emulators on one
//! link or control path; port ranges. The real binary, hosts on ptys and loopback sockets.

use eswifi_test_support::harness::*;
use std::time::Duration;

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
