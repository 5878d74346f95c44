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

use eswifi_core::module::{TraceKind, TraceRecord};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::Instant;

pub(crate) struct Tracer {
    file: File,
    start: Instant,
}

impl Tracer {
    pub(crate) fn create(path: &Path, start: Instant) -> io::Result<Tracer> {
        Ok(Tracer {
            file: eswifi_tools::files::create_private(path)?,
            start,
        })
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
        let line = format!("{ms:.3} m{idx} {tag} {text}\n");
        if let Err(e) = self.file.write_all(line.as_bytes()) {
            log::warn!("trace: {e}");
        }
    }
}
