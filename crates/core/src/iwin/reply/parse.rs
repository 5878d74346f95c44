//! The host's side of `Wire` (layer: wire, pure): cuts what a module writes into units —
//! replies, asynchronous messages, prompts, boot output — by the envelopes the encoder writes
//! (spec §2.3, §2.4), so a host never has to wait for quiet to know a reply has ended. Used by the
//! script runner, the terminal, the tests, the fuzz model and the benchmarks.
//!
//! - A reply ends at the prompt after `\r\nOK` (`\r\n<payload>\r\nOK\r\n> `) or after an error
//!   line (any unit holding `\r\nERROR`, the `-1` forms included).
//! - An asynchronous message is one line in brackets: `\r\n[TCP SVR] Accepted …\r\n> `.
//! - A bare prompt is the answer to an empty line or the end of a boot; the power-up banner is
//!   boot output.
//! - Anything else that ends in a prompt is the start of a reply whose data holds `\r\n> ` (binary
//!   `R0` data): it is kept, and the reply runs to the next OK or error prompt.
//! - On the SPI bus ([`Parser::spi`]) a unit of odd length is followed by one 0x15 pad, which
//!   belongs to it; the boot cursor is `\x15\x15\r\n> `.

use super::{OK_TAIL, PROMPT, SPI_PAD};

/// What one unit of module output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A reply ending with OK (a `-1` given as data, `\r\n-1\r\nOK\r\n> `, is one too).
    Ok,
    /// A reply ending in an error: `ERROR` with or without reason and usage.
    Error,
    /// `-1` and an error: a read or send on a closed connection.
    Closed,
    /// An asynchronous message `\r\n[…]\r\n> `.
    Event,
    /// A prompt alone: the answer to an empty line, or the end of a boot without banner.
    Prompt,
    /// Power-up output ending in a prompt (the banner), or the SPI boot cursor.
    Boot,
}

/// One unit, with every byte it took from the line (prompt and SPI pads included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub unit: Unit,
    pub raw: Vec<u8>,
}

impl Output {
    /// A reply to a command (OK, error, `-1`), not a message, a prompt or boot output.
    pub fn is_reply(&self) -> bool {
        matches!(self.unit, Unit::Ok | Unit::Error | Unit::Closed)
    }

    /// The bytes without SPI pads.
    fn body(&self) -> &[u8] {
        let start = self.raw.iter().take_while(|&&b| b == SPI_PAD).count();
        let raw = &self.raw[start..];
        raw.strip_suffix(&[SPI_PAD]).unwrap_or(raw)
    }

    /// What a check looks at: for OK, the bytes between the leading `\r\n` and `\r\nOK\r\n> `;
    /// otherwise the unit without its leading `\r\n` and its prompt (so an error's text counts).
    pub fn payload(&self) -> &[u8] {
        let body = self.body();
        let body = match self.unit {
            Unit::Ok => body.strip_suffix(OK_TAIL),
            _ => body.strip_suffix(PROMPT),
        }
        .unwrap_or(body);
        body.strip_prefix(b"\r\n").unwrap_or(body)
    }

    /// The text of an asynchronous message (`[TCP SVR] Accepted 1.2.3.4:80`).
    pub fn message(&self) -> Option<&[u8]> {
        (self.unit == Unit::Event).then(|| self.payload())
    }
}

/// Cuts a byte stream from the module into [`Output`]s; bytes of an unfinished unit wait.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    spi: bool,
    booting: bool,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn is_reply_end(unit: &[u8]) -> bool {
    unit.ends_with(OK_TAIL) || find(unit, b"\r\nERROR", 0).is_some()
}

/// The power-up banner (every firmware's names the product).
fn is_banner(unit: &[u8]) -> bool {
    find(unit, b"eS-WiFi", 0).is_some() || find(unit, b"Inventek", 0).is_some()
}

/// `\r\n[…] text\r\n> `: one line, in brackets.
fn is_event(unit: &[u8]) -> bool {
    unit.strip_prefix(b"\r\n")
        .and_then(|b| b.strip_suffix(PROMPT))
        .is_some_and(|body| body.first() == Some(&b'[') && find(body, b"\r\n", 0).is_none())
}

fn reply_unit(unit: &[u8]) -> Unit {
    if unit.ends_with(OK_TAIL) {
        Unit::Ok
    } else if unit.starts_with(b"\r\n-1\r\n") {
        Unit::Closed
    } else {
        Unit::Error
    }
}

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// The SPI bus: a unit of odd length has its 0x15 pad after the prompt.
    pub fn spi(mut self, on: bool) -> Parser {
        self.spi = on;
        self
    }

    /// The module is coming back from a reset: the next unit that is neither a reply nor a
    /// message is its boot output, whatever it says (an old firmware's ASCII-art logo names no
    /// product), until one has been taken.
    pub fn expect_boot(&mut self) {
        self.booting = true;
    }

    /// Bytes read from the line.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes not yet part of a whole unit.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Take the bytes not yet part of a whole unit (the line is read some other way from here).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Cut the unit ending at `end` (with its pad, on SPI, once it is here).
    fn take(&mut self, unit: Unit, mut end: usize) -> Option<Output> {
        if self.spi && end % 2 == 1 {
            match self.buf.get(end) {
                None => return None,
                Some(&SPI_PAD) => end += 1,
                // Not the pad the module writes: leave it to the next unit.
                Some(_) => {}
            }
        }
        if unit == Unit::Boot {
            self.booting = false;
        }
        let raw = self.buf.drain(..end).collect();
        Some(Output { unit, raw })
    }
}

impl Iterator for Parser {
    type Item = Output;

    /// The next whole unit, if the bytes for one are here (`None` says: push more).
    fn next(&mut self) -> Option<Output> {
        // Pads before a unit (the boot cursor's, or a pad a non-SPI parser was not told of).
        let start = self.buf.iter().take_while(|&&b| b == SPI_PAD).count();
        let first = find(&self.buf, PROMPT, start)? + PROMPT.len();
        let head = &self.buf[start..first];
        let unit = if head == PROMPT {
            // `\x15\x15\r\n> `: the SPI boot cursor.
            if start >= 2 {
                Unit::Boot
            } else {
                Unit::Prompt
            }
        } else if is_reply_end(head) {
            reply_unit(head)
        } else if is_event(head) {
            Unit::Event
        } else if self.booting || is_banner(head) {
            Unit::Boot
        } else {
            // Reply data holding a prompt: run on to the prompt that really ends the reply.
            let mut end = first;
            loop {
                end = find(&self.buf, PROMPT, end)? + PROMPT.len();
                if is_reply_end(&self.buf[start..end]) {
                    break;
                }
            }
            let unit = reply_unit(&self.buf[start..end]);
            return self.take(unit, end);
        };
        self.take(unit, first)
    }
}

/// The message of an `MR` reply's payload (`[SOMA]<message>[EOMA]`); `None` when none was queued.
pub fn mr_message(payload: &[u8]) -> Option<&[u8]> {
    let inner = payload.strip_prefix(b"[SOMA]")?;
    let end = find(inner, b"[EOMA]", 0)?;
    let msg = &inner[..end];
    (!msg.is_empty()).then_some(msg)
}

#[cfg(test)]
mod tests {
    use super::super::{Reason, Reply, Wire};
    use super::*;
    use crate::iwin::command::Mnemonic;
    use crate::iwin::reply::MessageType;

    fn all(p: &mut Parser, bytes: &[u8]) -> Vec<Output> {
        p.push(bytes);
        std::iter::from_fn(|| p.next()).collect()
    }

    fn units(bytes: &[u8]) -> (Vec<Output>, Vec<u8>) {
        let mut p = Parser::new();
        let out = all(&mut p, bytes);
        (out, p.take_buffered())
    }

    fn out(unit: Unit, raw: &[u8]) -> Output {
        Output {
            unit,
            raw: raw.to_vec(),
        }
    }

    #[test]
    fn what_the_encoder_writes_parses_back_byte_for_byte() {
        let n = MessageType::Normal;
        let cases: Vec<(Reply, MessageType, Unit, &[u8])> = vec![
            (Reply::Ok(vec![]), n, Unit::Ok, b""),
            (Reply::Ok(b"C4:7F".to_vec()), n, Unit::Ok, b"C4:7F"),
            (Reply::Ok(b"a\r\n> b".to_vec()), n, Unit::Ok, b"a\r\n> b"),
            (Reply::Closed(Mnemonic::R0), n, Unit::Closed, b"-1\r\nERROR"),
            (
                Reply::Error {
                    payload: b"[JOIN   ] x".to_vec(),
                    reason: Reason::UnknownError,
                    usage: Some(Mnemonic::C0),
                },
                n,
                Unit::Error,
                b"[JOIN   ] x\r\nERROR: Unknown Error\r\nUsage: C0 ",
            ),
            (
                Reply::Error {
                    payload: vec![],
                    reason: Reason::UnknownCommand,
                    usage: None,
                },
                MessageType::Simple,
                Unit::Error,
                b"\r\nERROR",
            ),
            (Reply::Prompt, n, Unit::Prompt, b""),
        ];
        for spi in [false, true] {
            let wire = Wire {
                spi,
                ..Wire::default()
            };
            for (reply, mt, unit, payload) in &cases {
                let bytes = wire.encode(reply, *mt);
                let mut p = Parser::new().spi(spi);
                // Split anywhere: the cut does not change the units.
                for cut in 0..=bytes.len() {
                    let mut got = all(&mut p, &bytes[..cut]);
                    got.extend(all(&mut p, &bytes[cut..]));
                    assert_eq!(got.len(), 1, "{reply:?} spi={spi} cut at {cut}");
                    assert_eq!(got[0].raw, bytes, "{reply:?} spi={spi}");
                    assert_eq!(got[0].unit, *unit, "{reply:?}");
                    assert_eq!(got[0].payload(), *payload, "{reply:?}");
                    assert!(p.buffered().is_empty());
                }
            }
        }
    }

    #[test]
    fn messages_prompts_and_the_banner_are_not_replies() {
        let wire = Wire::default();
        let mut input = wire.boot(Some(b"\r\n  eS-WiFi\r\n Inventek Systems"));
        input.extend_from_slice(b"\r\n> ");
        input.extend(wire.event(b"[TCP SVR] Accepted 127.0.0.1:5024"));
        input.extend_from_slice(b"\r\n5\r\nOK\r\n> ");
        input.extend_from_slice(b"\r\npart");
        let (u, rest) = units(&input);
        assert_eq!(u[0].unit, Unit::Boot);
        assert!(u[0].raw.starts_with(b"\r\n  eS-WiFi"));
        assert_eq!(u[1], out(Unit::Prompt, b"\r\n> "));
        assert_eq!(
            u[2].message(),
            Some(&b"[TCP SVR] Accepted 127.0.0.1:5024"[..])
        );
        assert!(!u[2].is_reply());
        assert_eq!(u[3], out(Unit::Ok, b"\r\n5\r\nOK\r\n> "));
        assert!(u[3].is_reply());
        assert_eq!(u.len(), 4);
        assert_eq!(rest, b"\r\npart");
    }

    #[test]
    fn reply_data_holding_a_prompt_stays_one_reply() {
        let raw = b"\r\nab\r\n> cd\r\n> ef\r\nOK\r\n> ";
        let (u, rest) = units(raw);
        assert_eq!(u, vec![out(Unit::Ok, raw)]);
        assert!(rest.is_empty());
        let (u, rest) = units(b"\r\nab\r\n> cd");
        assert!(u.is_empty());
        assert_eq!(rest, b"\r\nab\r\n> cd");
    }

    #[test]
    fn boot_output_without_a_product_name_when_told_to_expect_it() {
        let logo = b"\r\n  ___  \r\n |___| \r\n> ";
        let mut p = Parser::new();
        p.expect_boot();
        assert_eq!(all(&mut p, logo), vec![out(Unit::Boot, logo)]);
        // Only once: later such output is reply data again.
        assert!(all(&mut p, logo).is_empty());
    }

    #[test]
    fn spi_pads_belong_to_their_unit() {
        let wire = Wire {
            spi: true,
            ..Wire::default()
        };
        let mut p = Parser::new().spi(true);
        let mut input = wire.boot(None);
        input.extend(wire.encode(&Reply::Ok(b"CS1".to_vec()), MessageType::Normal));
        let u = all(&mut p, &input);
        assert_eq!(u[0], out(Unit::Boot, b"\x15\x15\r\n> "));
        assert_eq!(u[1], out(Unit::Ok, b"\r\nCS1\r\nOK\r\n> \x15"));
        assert_eq!(u[1].payload(), b"CS1");
        // A UART parser leaves the pad to the next unit, and drops it there.
        let (u, rest) = units(b"\r\n1\r\nOK\r\n> \x15\r\n> ");
        assert_eq!(u[0].raw, b"\r\n1\r\nOK\r\n> ");
        assert_eq!(u[1], out(Unit::Prompt, b"\x15\r\n> "));
        assert!(rest.is_empty());
    }

    #[test]
    fn mr_messages() {
        assert_eq!(
            mr_message(b"[SOMA][TCP SVR] Accepted 1.2.3.4:5[EOMA]"),
            Some(&b"[TCP SVR] Accepted 1.2.3.4:5"[..])
        );
        assert_eq!(mr_message(b"[SOMA][EOMA]"), None);
        assert_eq!(mr_message(b""), None);
    }
}
