//! The byte transcript (`--trace FILE`, layer: edge). One line per record, each written with its
//! own `write` so the file survives a crash:
//!
//! ```text
//! <ms since start> m<module> <tag> <text>
//! ```
//!
//! with tag `>` for what the host sent (as the module framed it: a command line with its CR, or a
//! payload), `<` for what the module wrote, `*` for a note (network, TLS, line and power events).
//! Texts are escaped as Rust byte strings (`\r`, `\n`, `\xNN`); PG payloads, passphrases and
//! lines that are not commands are redacted by the module (fault notes by the fault layer)
//! before they get here. The file is created
//! without following a symbolic link, mode 0600: it holds the module's traffic.

//!
//! A file that cannot be written (a full disk) costs one warning, not one per record: the records
//! lost are counted, and when writing works again the transcript itself and the log say how many
//! were lost (and the log says so at exit if it never does).

use eswifi_core::module::{TraceKind, TraceRecord};
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

pub(crate) struct Tracer {
    out: Box<dyn Write + Send>,
    /// The file's name, for the log.
    name: String,
    start: Instant,
    /// Writing fails: records lost since, and why.
    lost: Option<Lost>,
}

struct Lost {
    records: u64,
    why: String,
    /// A record was cut by the failure: the next write starts a new line.
    torn: bool,
}

impl Tracer {
    pub(crate) fn create(path: &Path, start: Instant) -> io::Result<Tracer> {
        let file = eswifi_tools::files::create_private(path)?;
        Ok(Tracer::to(
            Box::new(file),
            &path.display().to_string(),
            start,
        ))
    }

    /// A transcript written to `out` (a file; a failing sink in tests).
    fn to(out: Box<dyn Write + Send>, name: &str, start: Instant) -> Tracer {
        Tracer {
            out,
            name: name.to_string(),
            start,
            lost: None,
        }
    }

    /// Write a record of module `idx`.
    pub(crate) fn record(&mut self, idx: usize, r: &TraceRecord) {
        let tag = match r.kind {
            TraceKind::In => '>',
            TraceKind::Out => '<',
            TraceKind::Note => '*',
        };
        self.line(idx, r.at, tag, &r.text);
    }

    /// A note of the driver's own (host attached, line speed, signals).
    pub(crate) fn note(&mut self, idx: usize, at: Instant, text: &str) {
        self.line(idx, at, '*', text);
    }

    fn line(&mut self, idx: usize, at: Instant, tag: char, text: &str) {
        let ms = at.saturating_duration_since(self.start).as_secs_f64() * 1000.0;
        let mut line = format!("{ms:.3} m{idx} {tag} {text}\n");
        if let Some(lost) = &self.lost {
            // Writing failed before: say first, in the transcript, what is missing.
            line = format!(
                "{}{ms:.3} m{idx} * trace: {} records lost ({})\n{line}",
                if lost.torn { "\n" } else { "" },
                lost.records,
                lost.why
            );
        }
        let (written, result) = write_counted(&mut *self.out, line.as_bytes());
        match (result, self.lost.take()) {
            (Ok(()), None) => {}
            (Ok(()), Some(lost)) => log::warn!(
                "trace {}: written again; {} records lost ({})",
                self.name,
                lost.records,
                lost.why
            ),
            (Err(e), None) => {
                log::warn!(
                    "trace {}: {e}; records are lost until it can be written again",
                    self.name
                );
                self.lost = Some(Lost {
                    records: 1,
                    why: e.to_string(),
                    torn: written > 0,
                });
            }
            (Err(_), Some(lost)) => {
                self.lost = Some(Lost {
                    records: lost.records + 1,
                    torn: lost.torn || written > 0,
                    ..lost
                })
            }
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(lost) = &self.lost {
            log::warn!(
                "trace {}: {} records lost ({})",
                self.name,
                lost.records,
                lost.why
            );
        }
    }
}

/// `write_all`, also telling how many bytes went out before an error.
fn write_counted(out: &mut dyn Write, mut buf: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while !buf.is_empty() {
        match out.write(buf) {
            Ok(0) => return (written, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                written += n;
                buf = &buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A disk that fills up: writes fail while `full`, a record may be cut where it fills.
    #[derive(Clone, Default)]
    struct Disk {
        data: Arc<Mutex<Vec<u8>>>,
        /// Bytes that still fit (None: no limit).
        room: Arc<Mutex<Option<usize>>>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut room = self.room.lock().unwrap();
            let n = room.map_or(buf.len(), |r| r.min(buf.len()));
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            if let Some(r) = room.as_mut() {
                *r -= n;
            }
            self.data.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_loses_records_counted_and_says_so_when_space_returns() {
        let disk = Disk::default();
        let start = Instant::now();
        let mut t = Tracer::to(Box::new(disk.clone()), "t", start);
        t.note(0, start, "one");
        *disk.room.lock().unwrap() = Some(10);
        for _ in 0..5 {
            t.note(0, start, "lost");
        }
        assert_eq!(
            t.lost.as_ref().map(|l| (l.records, l.torn)),
            Some((5, true))
        );
        *disk.room.lock().unwrap() = None;
        t.note(1, start, "back");
        assert!(t.lost.is_none());
        let text = String::from_utf8(disk.data.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "0.000 m0 * one\n\
             0.000 m0 *\n\
             0.000 m1 * trace: 5 records lost (No space left on device (os error 28))\n\
             0.000 m1 * back\n"
        );
    }
}
