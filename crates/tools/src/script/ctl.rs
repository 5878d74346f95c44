//! The client side of an emulator's control socket (layer: edge): what the runner's and the
//! terminal's `fault …` directives go through. One connection per request, every wait bounded.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest answer read (a `fault list` of the 64 rules allowed fits many times over).
const MAX_ANSWER: usize = 64 * 1024;

/// Send one command line and read its answer: every line up to and including the final `ok…` or
/// `error …` line (`fault list` sends one line per rule before it). A line holding CR or LF is
/// refused (it would be two commands).
pub(super) fn request(path: &Path, line: &str, timeout: Duration) -> io::Result<Vec<String>> {
    if line.contains(['\r', '\n']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a control command is one line (it holds a line break)",
        ));
    }
    let deadline = Instant::now() + timeout;
    let silent = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} ms", timeout.as_millis()),
        )
    };
    let mut s = UnixStream::connect(path)?;
    s.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut got: Vec<u8> = Vec::new();
    let mut lines = Vec::new();
    let mut buf = [0u8; 1024];
    // Bounded by the deadline and by MAX_ANSWER: each turn reads at least one byte or stops.
    loop {
        while let Some(i) = got.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = got.drain(..=i).collect();
            let l = String::from_utf8_lossy(&l[..i]).trim_end().to_string();
            let last = l == "ok" || l.starts_with("ok ") || l.starts_with("error");
            lines.push(l);
            if last {
                return Ok(lines);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(silent());
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the control socket closed without an answer",
                ))
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(silent())
            }
            Err(e) => return Err(e),
        }
        if got.len() + lines.iter().map(String::len).sum::<usize>() > MAX_ANSWER {
            return Err(io::Error::other("the answer is longer than 64 KiB"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn serve_once(answer: &'static [u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let l = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut b = [0u8; 256];
                let _ = s.read(&mut b);
                let _ = s.write_all(answer);
            }
        });
        (dir, path)
    }

    #[test]
    fn reads_up_to_the_final_line() {
        let (_d, p) = serve_once(b"1 serial.stall 3s fired=0\n2 wifi.down fired=1\nok 2\n");
        let got = request(&p, "fault list", Duration::from_secs(5)).unwrap();
        assert_eq!(
            got,
            ["1 serial.stall 3s fired=0", "2 wifi.down fired=1", "ok 2"]
        );
        let (_d, p) = serve_once(b"error unknown fault kind\n");
        let got = request(&p, "fault add x", Duration::from_secs(5)).unwrap();
        assert_eq!(got, ["error unknown fault kind"]);
    }

    #[test]
    fn a_line_break_is_refused_and_silence_times_out() {
        let (_d, p) = serve_once(b"");
        let e = request(&p, "fault add a\nfault clear", Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = request(&p, "fault list", Duration::from_secs(5)).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::TimedOut
            ),
            "{e}"
        );
    }
}
