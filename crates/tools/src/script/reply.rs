//! Reply framing on the host side (layer: pure). Cuts what the module writes into replies and
//! unsolicited output, by the prompt `\r\n> ` (spec §2.3):
//!
//! - a reply ends at the prompt after `\r\nOK` (`\r\n<payload>\r\nOK\r\n> `) or after an error line
//!   (any frame holding `\r\nERROR`, including the `\r\n-1\r\nERROR…` form);
//! - an asynchronous message is one line in brackets: `\r\n[TCP SVR] Accepted …\r\n> `;
//! - a bare prompt (`\r\n> `, an empty command line or the end of a boot) and the reset banner are
//!   unsolicited too;
//! - anything else that ends in a prompt is the start of a reply whose data holds `\r\n> ` (binary
//!   `R0` data): it is kept, and the reply runs to the next OK or error prompt.

use super::lang::Kind;

pub(super) const PROMPT: &[u8] = b"\r\n> ";
const OK_TAIL: &[u8] = b"\r\nOK\r\n> ";

/// One reply to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    /// Every byte, from the first `\r\n` to the prompt.
    pub raw: Vec<u8>,
}

impl Reply {
    pub(super) fn kind(&self) -> Kind {
        if self.raw.ends_with(OK_TAIL) {
            Kind::Ok
        } else if self.raw.starts_with(b"\r\n-1\r\n") || self.raw.starts_with(b"-1\r\n") {
            Kind::MinusOne
        } else {
            Kind::Error
        }
    }

    /// What `expect` looks at: for OK, the bytes between the leading `\r\n` and `\r\nOK\r\n> `;
    /// otherwise the reply without its leading `\r\n` and its prompt (so the error text counts).
    pub(super) fn payload(&self) -> &[u8] {
        let body = self.raw.strip_prefix(b"\r\n").unwrap_or(&self.raw);
        match self.kind() {
            Kind::Ok => body
                .strip_suffix(OK_TAIL)
                .or_else(|| body.strip_suffix(&OK_TAIL[2..]))
                .unwrap_or(body),
            _ => body.strip_suffix(PROMPT).unwrap_or(body),
        }
    }
}

/// A unit of module output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Frame {
    Reply(Reply),
    /// An asynchronous message, without its `\r\n` and prompt (`[TCP SVR] Accepted 1.2.3.4:80`).
    Event(Vec<u8>),
    /// A prompt alone, the reset banner, or other output outside a reply.
    Unsolicited(Vec<u8>),
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn is_reply_end(frame: &[u8]) -> bool {
    frame.ends_with(OK_TAIL) || find(frame, b"\r\nERROR", 0).is_some()
}

/// The reset banner (any firmware's mentions the product).
fn is_banner(frame: &[u8]) -> bool {
    find(frame, b"eS-WiFi", 0).is_some() || find(frame, b"Inventek", 0).is_some()
}

/// `\r\n[…] text\r\n> `: one line, in brackets.
fn event_text(frame: &[u8]) -> Option<&[u8]> {
    let body = frame.strip_prefix(b"\r\n")?.strip_suffix(PROMPT)?;
    (body.first() == Some(&b'[') && find(body, b"\r\n", 0).is_none()).then_some(body)
}

/// The SPI firmware's padding byte (NAK): it pads odd-length output and the boot cursor, and
/// hosts drop it.
const SPI_PAD: u8 = 0x15;

/// Take the next frame off the front of `buf`, if a complete one is there.
pub(super) fn next_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    frame(buf, false)
}

/// [`next_frame`] while a module comes back from a reset: output ending in a prompt that is neither
/// a reply nor a message is its boot output, whatever it says (an old firmware's ASCII-art logo
/// names no product).
pub(super) fn next_boot_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    frame(buf, true)
}

fn frame(buf: &mut Vec<u8>, booting: bool) -> Option<Frame> {
    let pads = buf.iter().take_while(|&&b| b == SPI_PAD).count();
    buf.drain(..pads);
    let first = find(buf, PROMPT, 0)? + PROMPT.len();
    let head = &buf[..first];
    let frame = if head == PROMPT {
        Frame::Unsolicited(head.to_vec())
    } else if is_reply_end(head) {
        Frame::Reply(Reply { raw: head.to_vec() })
    } else if let Some(text) = event_text(head) {
        Frame::Event(text.to_vec())
    } else if booting || is_banner(head) {
        Frame::Unsolicited(head.to_vec())
    } else {
        // Reply data holding a prompt: run on to the prompt that really ends the reply.
        let mut end = first;
        loop {
            let next = find(buf, PROMPT, end)? + PROMPT.len();
            end = next;
            if is_reply_end(&buf[..end]) {
                break;
            }
        }
        let raw = buf[..end].to_vec();
        buf.drain(..end);
        return Some(Frame::Reply(Reply { raw }));
    };
    buf.drain(..first);
    Some(frame)
}

/// The message of an `MR` reply (`[SOMA]<message>[EOMA]`); `None` when none was queued.
pub(super) fn mr_message(payload: &[u8]) -> Option<&[u8]> {
    let inner = payload.strip_prefix(b"[SOMA]")?;
    let end = find(inner, b"[EOMA]", 0)?;
    let msg = &inner[..end];
    (!msg.is_empty()).then_some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(mut bytes: Vec<u8>) -> (Vec<Frame>, Vec<u8>) {
        let mut out = Vec::new();
        while let Some(f) = next_frame(&mut bytes) {
            out.push(f);
        }
        (out, bytes)
    }

    fn reply(raw: &[u8]) -> Reply {
        Reply { raw: raw.to_vec() }
    }

    #[test]
    fn kinds_and_payloads() {
        let ok = reply(b"\r\nC4:7F:51:01:12:31\r\nOK\r\n> ");
        assert_eq!(ok.kind(), Kind::Ok);
        assert_eq!(ok.payload(), b"C4:7F:51:01:12:31");
        let empty = reply(b"\r\n\r\nOK\r\n> ");
        assert_eq!(empty.payload(), b"");
        let err = reply(b"\r\n\r\nERROR: Unknown Command\r\n> ");
        assert_eq!(err.kind(), Kind::Error);
        assert_eq!(err.payload(), b"\r\nERROR: Unknown Command");
        let m1 = reply(b"\r\n-1\r\nERROR\r\n> ");
        assert_eq!(m1.kind(), Kind::MinusOne);
        assert_eq!(m1.payload(), b"-1\r\nERROR");
    }

    #[test]
    fn events_prompts_and_banner_are_not_replies() {
        let mut input = Vec::new();
        input.extend_from_slice(b"\r\n  eS-WiFi\r\n Inventek Systems\r\n> ");
        input.extend_from_slice(b"\r\n> ");
        input.extend_from_slice(b"\r\n[TCP SVR] Accepted 127.0.0.1:5024\r\n> ");
        input.extend_from_slice(b"\r\n5\r\nOK\r\n> ");
        input.extend_from_slice(b"\r\npart");
        let (f, rest) = frames(input);
        assert!(matches!(&f[0], Frame::Unsolicited(b) if b.starts_with(b"\r\n  eS-WiFi")));
        assert_eq!(f[1], Frame::Unsolicited(b"\r\n> ".to_vec()));
        assert_eq!(
            f[2],
            Frame::Event(b"[TCP SVR] Accepted 127.0.0.1:5024".to_vec())
        );
        assert_eq!(f[3], Frame::Reply(reply(b"\r\n5\r\nOK\r\n> ")));
        assert_eq!(f.len(), 4);
        assert_eq!(rest, b"\r\npart");
    }

    #[test]
    fn reply_data_holding_a_prompt_stays_one_reply() {
        let raw = b"\r\nab\r\n> cd\r\n> ef\r\nOK\r\n> ".to_vec();
        let (f, rest) = frames(raw.clone());
        assert_eq!(f, vec![Frame::Reply(reply(&raw))]);
        assert!(rest.is_empty());
        // Incomplete: wait for more.
        let (f, rest) = frames(b"\r\nab\r\n> cd".to_vec());
        assert!(f.is_empty());
        assert_eq!(rest, b"\r\nab\r\n> cd");
    }

    #[test]
    fn error_with_payload_lines() {
        let raw =
            b"\r\n[JOIN   ] lab\r\n[JOIN   ] Failed\r\nERROR: Unknown Error\r\nUsage: C0 \r\n> ";
        let (f, _) = frames(raw.to_vec());
        assert_eq!(f, vec![Frame::Reply(reply(raw))]);
        assert_eq!(reply(raw).kind(), Kind::Error);
    }

    #[test]
    fn spi_padding_is_dropped() {
        let (f, rest) = frames(b"\x15\x15\r\n> \r\nCS1\r\nOK\r\n> \x15".to_vec());
        assert_eq!(
            f,
            vec![
                Frame::Unsolicited(b"\r\n> ".to_vec()),
                Frame::Reply(reply(b"\r\nCS1\r\nOK\r\n> "))
            ]
        );
        assert!(rest.is_empty(), "a pad after the last prompt goes too");
    }

    #[test]
    fn after_a_reset_any_output_outside_a_reply_is_the_boot_output() {
        let logo = b"\r\n  ___  ___ \r\n | __|/ __|\r\n> ".to_vec();
        let mut input = b"\r\n[MODULE ] Resetting...\r\nOK\r\n> ".to_vec();
        input.extend_from_slice(&logo);
        input.extend_from_slice(b"\r\n1\r\nOK\r\n> ");
        let mut buf = input.clone();
        assert!(matches!(next_boot_frame(&mut buf), Some(Frame::Reply(_))));
        assert_eq!(next_boot_frame(&mut buf), Some(Frame::Unsolicited(logo)));
        assert!(matches!(next_boot_frame(&mut buf), Some(Frame::Reply(_))));
        // Outside a reset the same logo would be the start of reply data.
        let mut buf = input[32..].to_vec();
        assert!(
            matches!(next_frame(&mut buf), Some(Frame::Reply(r)) if r.raw.starts_with(b"\r\n  ___"))
        );
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
