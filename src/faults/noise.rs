//! What `serial.noise` notes may say (layer: middleware, pure). A note about a byte inside a secret
//! says where and how many, never the value; other notes name the byte and what it became.
//!
//! Input: [`InStream`] follows what the host sent as the module frames it (lines ended by CR, the
//! raw payload a `PG`/`S3` header announces) and asks the core which part is secret
//! ([`command::secrecy`], [`command::announced_payload`]): the same rule as the log and the
//! transcript, not a second one. A line's notes wait for its CR (only then is it known whether it
//! was a command); a `PG` payload's come as one note at its end, an `S3` payload's at once.
//!
//! Output: the module's secrets on the wire (the passphrase in `C?`/`A?` replies) cannot be told
//! from other bytes here, so output notes give positions only (the transcript shows what the
//! module sent, secrets masked): one note per piece of output.

use eswifi_core::iwin::command::{self, Secrecy};

/// What noise did to one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hit {
    Dropped(u8),
    Corrupted(u8, u8),
}

/// Positions listed in one note at most (the counts are always complete).
const MAX_LISTED: usize = 16;

/// Bytes of a line kept to decide what it is (the module's framer refuses longer lines; their
/// head decides there too).
const MAX_KEPT: usize = 256;

/// A byte as the transcript escapes it, quoted.
fn show(b: u8) -> String {
    format!("'{}'", [b].escape_ascii())
}

/// The note for one byte that may be shown.
pub(super) fn shown(way: &str, hit: Hit) -> String {
    match hit {
        Hit::Dropped(b) => format!("{way}: byte {} dropped", show(b)),
        Hit::Corrupted(b, c) => format!("{way}: byte {} corrupted to {}", show(b), show(c)),
    }
}

/// Hits whose values are not shown: counted, and their first positions listed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Counted {
    dropped: usize,
    corrupted: usize,
    at: Vec<usize>,
}

impl Counted {
    pub(super) fn add(&mut self, at: usize, hit: Hit) {
        match hit {
            Hit::Dropped(_) => self.dropped += 1,
            Hit::Corrupted(..) => self.corrupted += 1,
        }
        if self.at.len() < MAX_LISTED {
            self.at.push(at);
        }
    }

    fn is_empty(&self) -> bool {
        self.dropped + self.corrupted == 0
    }

    /// `in: 2 bytes corrupted, 1 dropped in <place> (bytes 0, 4, 9 of 20); values not shown`.
    pub(super) fn note(&self, way: &str, place: &str, of: usize) -> String {
        let n = |k: usize| {
            if k == 1 {
                "1 byte".into()
            } else {
                format!("{k} bytes")
            }
        };
        let what = match (self.corrupted, self.dropped) {
            (c, 0) => format!("{} corrupted", n(c)),
            (0, d) => format!("{} dropped", n(d)),
            (c, d) => format!("{} corrupted, {d} dropped", n(c)),
        };
        let mut at: Vec<String> = self.at.iter().map(usize::to_string).collect();
        if self.dropped + self.corrupted > self.at.len() {
            at.push("…".into());
        }
        let word = if at.len() == 1 { "byte" } else { "bytes" };
        format!(
            "{way}: {what} in {place} ({word} {} of {of}); values not shown",
            at.join(", ")
        )
    }
}

/// Where the host's stream is.
#[derive(Debug)]
enum Frame {
    /// A command line: its first bytes (LF and NUL left out, as the framer does), how many bytes
    /// of it came (its CR not counted), and the hits in it.
    Line {
        kept: Vec<u8>,
        len: usize,
        hits: Vec<(usize, Hit)>,
        more: Counted,
    },
    /// The raw payload a header announced.
    Payload {
        len: usize,
        left: usize,
        secret: bool,
        hits: Counted,
    },
}

impl Default for Frame {
    fn default() -> Frame {
        Frame::Line {
            kept: Vec::new(),
            len: 0,
            hits: Vec::new(),
            more: Counted::default(),
        }
    }
}

/// One module's input as one noise rule sees it.
#[derive(Debug, Default)]
pub(super) struct InStream {
    frame: Frame,
}

impl InStream {
    /// One byte the host sent and what noise did to it; notes that are ready go to `notes`.
    pub(super) fn byte(&mut self, b: u8, hit: Option<Hit>, notes: &mut Vec<String>) {
        match &mut self.frame {
            Frame::Payload {
                len,
                left,
                secret,
                hits,
            } => {
                let at = *len - *left;
                match hit {
                    Some(h) if *secret => hits.add(at, h),
                    Some(h) => notes.push(shown("in", h)),
                    None => {}
                }
                *left -= 1;
                if *left == 0 {
                    if !hits.is_empty() {
                        notes.push(hits.note("in", "a PG payload", *len));
                    }
                    self.frame = Frame::default();
                }
            }
            Frame::Line {
                kept,
                len,
                hits,
                more,
            } => {
                if let Some(h) = hit {
                    if hits.len() < MAX_KEPT {
                        hits.push((*len, h));
                    } else {
                        more.add(*len, h);
                    }
                }
                if b != b'\r' {
                    if !matches!(b, b'\n' | 0) && kept.len() < MAX_KEPT {
                        kept.push(b);
                    }
                    *len += 1;
                    return;
                }
                let line = std::mem::take(kept);
                let (len, hits, more) = (*len, std::mem::take(hits), std::mem::take(more));
                self.line_done(&line, len, hits, more, notes);
            }
        }
    }

    /// A line ended: its notes, as secret as the line is; then its payload, if it announced one.
    fn line_done(
        &mut self,
        line: &[u8],
        len: usize,
        hits: Vec<(usize, Hit)>,
        more: Counted,
        notes: &mut Vec<String>,
    ) {
        let place = match command::secrecy(line) {
            Secrecy::Public => None,
            Secrecy::Argument { mnemonic, .. } => Some(format!("a line with {mnemonic}'s secret")),
            Secrecy::NotACommand => Some("a line that is not a command".to_string()),
        };
        match place {
            None => {
                notes.extend(hits.into_iter().map(|(_, h)| shown("in", h)));
                if !more.is_empty() {
                    notes.push(more.note("in", "the rest of a long line", len + 1));
                }
            }
            Some(place) => {
                let mut all = Counted::default();
                for (at, h) in hits {
                    all.add(at, h);
                }
                all.dropped += more.dropped;
                all.corrupted += more.corrupted;
                if !all.is_empty() {
                    // The CR is byte `len` of `len + 1`.
                    notes.push(all.note("in", &place, len + 1));
                }
            }
        }
        self.frame = match command::announced_payload(line) {
            Some((n, secret)) if n > 0 => Frame::Payload {
                len: n,
                left: n,
                secret,
                hits: Counted::default(),
            },
            _ => Frame::default(),
        };
    }

    /// The line or payload under way ends unfinished (the rule is cleared, the module reset):
    /// what hit it is told without values, since what it was is not known.
    pub(super) fn abandon(&mut self, notes: &mut Vec<String>) {
        let (all, of, place) = match std::mem::take(&mut self.frame) {
            Frame::Line {
                len, hits, more, ..
            } => {
                let mut all = more;
                for (at, h) in hits {
                    all.add(at, h);
                }
                (all, len, "an unfinished line")
            }
            Frame::Payload {
                len, hits, secret, ..
            } => (
                hits,
                len,
                if secret {
                    "an unfinished PG payload"
                } else {
                    "an unfinished payload"
                },
            ),
        };
        if !all.is_empty() {
            notes.push(all.note("in", place, of));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `bytes`, corrupting (bit 0) those at `hit` positions; the notes.
    fn feed(bytes: &[u8], hit: impl Fn(usize) -> bool) -> Vec<String> {
        let mut s = InStream::default();
        let mut notes = Vec::new();
        for (i, &b) in bytes.iter().enumerate() {
            let h = hit(i).then_some(Hit::Corrupted(b, b ^ 1));
            s.byte(b, h, &mut notes);
        }
        notes
    }

    #[test]
    fn secrets_are_counted_never_shown() {
        let all = |_| true;
        assert_eq!(
            feed(b"C2=Sup3rSecret\r", all),
            [
                "in: 15 bytes corrupted in a line with C2's secret (bytes 0, 1, 2, 3, 4, 5, 6, 7, \
              8, 9, 10, 11, 12, 13, 14 of 15); values not shown"
            ]
        );
        assert_eq!(
            feed(b"C2 Sup3rSecret\r", |i| i == 5),
            [
                "in: 1 byte corrupted in a line that is not a command (byte 5 of 15); values not \
              shown"
            ]
        );
        let mut pg = b"PG=0,2,0020\r".to_vec();
        pg.extend_from_slice(b"-----BEGIN KEY-----\n");
        pg.extend_from_slice(b"I?\r");
        let notes = feed(&pg, |i| i == 2 || i >= 12);
        assert_eq!(
            notes,
            [
                "in: byte '=' corrupted to '<'".to_string(),
                "in: 20 bytes corrupted in a PG payload (bytes 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, \
                 11, 12, 13, 14, 15, … of 20); values not shown"
                    .to_string(),
                "in: byte 'I' corrupted to 'H'".to_string(),
                "in: byte '?' corrupted to '>'".to_string(),
                "in: byte '\\r' corrupted to '\\x0c'".to_string(),
            ]
        );
        // S3 data is shown (as the transcript shows it), and the line after it is a line again.
        let notes = feed(b"S3=0002\rab\rC2=x\r", |i| i == 8 || i == 14);
        assert_eq!(
            notes,
            [
                "in: byte 'a' corrupted to '`'",
                "in: 1 byte corrupted in a line with C2's secret (byte 3 of 5); values not shown"
            ]
        );
        let joined = feed(b"C2=hunter22\rA2=hunter22\r-----BEGIN\r", all).join("\n");
        for secret in ["hunter", "'h'", "'u'", "BEGIN", "'B'"] {
            assert!(!joined.contains(secret), "{secret} in {joined}");
        }
    }

    #[test]
    fn an_unfinished_line_is_told_without_values() {
        let mut s = InStream::default();
        let mut notes = Vec::new();
        s.byte(b'M', Some(Hit::Dropped(b'M')), &mut notes);
        s.byte(b'I', None, &mut notes);
        assert!(notes.is_empty(), "a line's notes wait for its CR");
        s.abandon(&mut notes);
        assert_eq!(
            notes,
            ["in: 1 byte dropped in an unfinished line (byte 0 of 2); values not shown"]
        );
        notes.clear();
        s.abandon(&mut notes);
        assert!(notes.is_empty());
    }
}
