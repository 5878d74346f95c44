//! IWIN framer (layer: wire). Splits the host's byte stream into command lines and raw payloads.
//! Pure: no IO, no clock. The module decides, after parsing a header line, whether raw payload bytes
//! follow (`S3=<n>\r<n bytes>`, `PG=…,<len>\r<len bytes>`) and tells the framer with
//! `Framer::expect_payload`; until then bytes after a CR are not interpreted, so nothing is lost.
//! Between commands LF and NUL are padding; on the SPI bus 0x15 is too (the datasheet's worked
//! example pads an odd-length command with it, ST's driver with LF).

/// Longest command line the module accepts (spec §2.2 suggests ≥ 256).
pub(crate) const MAX_LINE: usize = 256;

use crate::iwin::reply::SPI_PAD;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A command line without its CR (LF and NUL bytes removed; on SPI also 0x15).
    Line(Vec<u8>),
    /// A line grew past `MAX_LINE`; carries its first bytes. The rest, up to the next CR, is discarded.
    Overlong(Vec<u8>),
    /// The raw bytes announced by the last `Framer::expect_payload`.
    Payload(Vec<u8>),
}

#[derive(Debug, Default)]
enum Mode {
    #[default]
    Command,
    /// Discarding the tail of an overlong line up to its CR.
    Skipping,
    /// Collecting `remaining` more raw bytes.
    Payload { data: Vec<u8>, remaining: usize },
}

#[derive(Debug, Default)]
pub(crate) struct Framer {
    /// Received bytes; those before `pos` are consumed (a Vec with a read offset, so payloads are
    /// moved with slice copies).
    buf: Vec<u8>,
    pos: usize,
    /// Bytes of the current command line consumed from `buf` so far.
    line: Vec<u8>,
    mode: Mode,
    /// Zephyr quirk: the host sends one stray byte after every payload; drop it.
    drop_after_payload: bool,
    /// A payload ended and its stray byte has not arrived yet: the next byte received is dropped,
    /// whenever and in whatever read it comes (Zephyr writes it with a system call of its own).
    stray_due: bool,
    /// The SPI bus: 0x15 outside a payload is padding, never part of a command.
    spi: bool,
    /// `[module] terminal`: for a person at a plain terminal, command bytes are echoed and
    /// Backspace erases (the real module does neither).
    terminal: bool,
    /// Echo not yet taken ([`Framer::take_echo`]).
    echo: Vec<u8>,
    /// An LF came after the text of a line, as if it ended it (a host that ends lines with LF
    /// alone): see [`Framer::take_lf_in_line`].
    lf_in_line: bool,
}

impl Framer {
    pub(crate) fn new(drop_after_payload: bool) -> Framer {
        Framer {
            drop_after_payload,
            ..Framer::default()
        }
    }

    /// On the SPI bus 0x15 between and inside command lines is padding (payload bytes all count).
    pub(crate) fn spi(mut self, on: bool) -> Framer {
        self.spi = on;
        self
    }

    /// Echo command bytes and honour Backspace (0x08, 0x7f), for a person at a terminal.
    pub(crate) fn terminal(mut self, on: bool) -> Framer {
        self.terminal = on;
        self
    }

    /// What the terminal mode echoes for the command bytes framed so far (a passphrase's as `*`).
    pub(crate) fn take_echo(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.echo)
    }

    /// Append bytes read from the serial line.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 4096 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Received bytes not yet framed (a partial line or payload is not counted): what a host has
    /// written ahead of the command being executed.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// After a header line, the next `len` raw bytes are payload (`len` may be 0: an empty payload frame
    /// is produced at once).
    pub(crate) fn expect_payload(&mut self, len: usize) {
        self.mode = Mode::Payload {
            data: Vec::with_capacity(len.min(1 << 16)),
            remaining: len,
        };
    }

    /// Give up on an unfinished payload (timeout); returns how many bytes had arrived.
    pub(crate) fn abort_payload(&mut self) -> usize {
        match std::mem::take(&mut self.mode) {
            Mode::Payload { data, .. } => data.len(),
            other => {
                self.mode = other;
                0
            }
        }
    }

    /// End an unfinished payload early (`S0` at its `S2` timeout): the bytes that arrived.
    pub(crate) fn take_partial(&mut self) -> Vec<u8> {
        let pending = self.buffered();
        match std::mem::take(&mut self.mode) {
            Mode::Payload {
                mut data,
                remaining,
            } => {
                // Bytes received but not framed yet belong to the payload too.
                let take = remaining.min(pending);
                data.extend_from_slice(&self.buf[self.pos..self.pos + take]);
                self.consume(take);
                data
            }
            other => {
                self.mode = other;
                Vec::new()
            }
        }
    }

    /// Whether an LF followed the text of a command line since the last call: the host may be
    /// ending its lines with LF alone, and the module waits for a CR.
    pub(crate) fn take_lf_in_line(&mut self) -> bool {
        std::mem::take(&mut self.lf_in_line)
    }

    /// Forget everything buffered (module reset).
    pub(crate) fn clear(&mut self) {
        *self = Framer::new(self.drop_after_payload)
            .spi(self.spi)
            .terminal(self.terminal);
    }

    /// The next complete frame, if the buffered bytes hold one.
    pub(crate) fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let pending = &self.buf[self.pos..];
            match &mut self.mode {
                Mode::Payload { data, remaining } => {
                    let take = (*remaining).min(pending.len());
                    data.extend_from_slice(&pending[..take]);
                    self.consume(take);
                    let Mode::Payload { remaining, .. } = &mut self.mode else {
                        unreachable!("mode checked above")
                    };
                    *remaining -= take;
                    if *remaining > 0 {
                        return None;
                    }
                    let Mode::Payload { data, .. } = std::mem::take(&mut self.mode) else {
                        unreachable!("mode checked above")
                    };
                    self.stray_due = self.drop_after_payload;
                    return Some(Frame::Payload(data));
                }
                Mode::Skipping => match pending.iter().position(|&b| b == b'\r') {
                    Some(i) => {
                        self.consume(i + 1);
                        self.mode = Mode::Command;
                    }
                    None => {
                        let n = pending.len();
                        self.consume(n);
                        return None;
                    }
                },
                Mode::Command if self.stray_due => {
                    let &b = pending.first()?;
                    log::debug!("dropped the stray byte 0x{b:02x} after the payload (quirk drop_byte_after_payload)");
                    self.stray_due = false;
                    self.consume(1);
                }
                Mode::Command => {
                    let end = pending.iter().position(|&b| b == b'\r');
                    let upto = end.unwrap_or(pending.len());
                    let mut overlong = false;
                    let mut used = upto;
                    for (k, &b) in pending[..upto].iter().enumerate() {
                        if b == b'\n' || b == 0 || (self.spi && b == SPI_PAD) {
                            self.lf_in_line |= b == b'\n' && !self.line.is_empty();
                            continue;
                        }
                        if self.terminal && (b == 0x08 || b == 0x7f) {
                            if self.line.pop().is_some() {
                                self.echo.extend_from_slice(b"\x08 \x08");
                            }
                            continue;
                        }
                        self.line.push(b);
                        if self.terminal {
                            echo_last(&self.line, &mut self.echo);
                        }
                        if self.line.len() > MAX_LINE {
                            overlong = true;
                            used = k + 1;
                            break;
                        }
                    }
                    if overlong {
                        self.consume(used);
                        self.mode = Mode::Skipping;
                        return Some(Frame::Overlong(std::mem::take(&mut self.line)));
                    }
                    return match end {
                        Some(i) => {
                            self.consume(i + 1);
                            Some(Frame::Line(std::mem::take(&mut self.line)))
                        }
                        None => {
                            self.consume(upto);
                            None
                        }
                    };
                }
            }
        }
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.buffered());
        self.pos += n;
    }
}

/// Echo the byte just added to `line`: printable as it is, a passphrase's (`C2=`, `A2=`) as `*`,
/// anything else (an arrow key's escape sequence) not at all.
fn echo_last(line: &[u8], echo: &mut Vec<u8>) {
    let Some(&b) = line.last() else {
        return;
    };
    let secret = line.len() > 3 && (line.starts_with(b"C2=") || line.starts_with(b"A2="));
    match b {
        _ if secret => echo.push(b'*'),
        0x20..=0x7e => echo.push(b),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &mut Framer) -> Vec<Frame> {
        std::iter::from_fn(|| f.next_frame()).collect()
    }

    #[test]
    fn terminal_mode_echoes_and_backspace_erases_but_not_in_payloads() {
        let mut f = Framer::new(false).terminal(true);
        f.push(b"IX\x7f");
        assert!(frames(&mut f).is_empty());
        assert_eq!(f.take_echo(), b"IX\x08 \x08");
        f.push(b"?\r");
        assert_eq!(frames(&mut f), vec![Frame::Line(b"I?".to_vec())]);
        assert_eq!(f.take_echo(), b"?");
        // Backspace on an empty line erases nothing; a passphrase echoes as stars.
        f.push(b"\x08C2=ab\x08cd\r");
        assert_eq!(frames(&mut f), vec![Frame::Line(b"C2=acd".to_vec())]);
        assert_eq!(f.take_echo(), b"C2=**\x08 \x08**");
        // Payload bytes are data: neither echoed nor edited.
        f.expect_payload(3);
        f.push(b"a\x7fb");
        assert_eq!(frames(&mut f), vec![Frame::Payload(b"a\x7fb".to_vec())]);
        assert!(f.take_echo().is_empty());
        // Off (the real module): no echo, and 0x7f is part of the line.
        let mut f = Framer::new(false);
        f.push(b"IX\x7f?\r");
        assert_eq!(frames(&mut f), vec![Frame::Line(b"IX\x7f?".to_vec())]);
        assert!(f.take_echo().is_empty());
    }

    #[test]
    fn an_lf_after_the_text_of_a_line_is_noticed_but_not_one_after_a_cr() {
        let mut f = Framer::new(false);
        f.push(b"I?\r\nC0\r\n\n");
        assert_eq!(frames(&mut f).len(), 2);
        assert!(!f.take_lf_in_line(), "ST's LF padding after CR");
        f.push(b"I?\n");
        assert!(frames(&mut f).is_empty(), "no CR, no command");
        assert!(f.take_lf_in_line());
        assert!(!f.take_lf_in_line(), "taken");
    }

    #[test]
    fn lines_ignore_lf_and_nul_between_commands() {
        let mut f = Framer::new(false);
        f.push(b"\n\0I?\r\nC0\r");
        assert_eq!(
            frames(&mut f),
            vec![Frame::Line(b"I?".to_vec()), Frame::Line(b"C0".to_vec())]
        );
        assert!(f.buffered() == 0 && f.line.is_empty() && matches!(f.mode, Mode::Command));
    }

    #[test]
    fn spi_pads_with_0x15_are_ignored_outside_payloads_only() {
        // The datasheet's example pads an odd command with 0x15, after its CR or before it.
        let mut f = Framer::new(false).spi(true);
        f.push(b"I?\r\x15CS\r\x15P0=0\x15\r");
        assert_eq!(
            frames(&mut f),
            vec![
                Frame::Line(b"I?".to_vec()),
                Frame::Line(b"CS".to_vec()),
                Frame::Line(b"P0=0".to_vec())
            ]
        );
        // Inside a payload every byte counts, 0x15 too; the pad after it is dropped.
        f.push(b"S3=3\r");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"S3=3".to_vec())));
        f.expect_payload(3);
        f.push(b"\x15a\x15\x15R0\r");
        assert_eq!(f.next_frame(), Some(Frame::Payload(b"\x15a\x15".to_vec())));
        assert_eq!(f.next_frame(), Some(Frame::Line(b"R0".to_vec())));
        // A reset keeps the bus.
        f.clear();
        f.push(b"\x15CS\r");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"CS".to_vec())));
        // On UART 0x15 is an ordinary byte of the line.
        let mut f = Framer::new(false);
        f.push(b"CS\r\x15CS\r");
        assert_eq!(
            frames(&mut f),
            vec![Frame::Line(b"CS".to_vec()), Frame::Line(b"\x15CS".to_vec())]
        );
    }

    #[test]
    fn partial_line_waits_for_cr() {
        let mut f = Framer::new(false);
        f.push(b"P0=");
        assert_eq!(f.next_frame(), None);
        f.push(b"1\r");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"P0=1".to_vec())));
    }

    #[test]
    fn payload_is_binary_and_lf_after_header_is_data() {
        let mut f = Framer::new(false);
        f.push(b"S3=4\r\n\r\0> I?\r");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"S3=4".to_vec())));
        f.expect_payload(4);
        assert_eq!(f.next_frame(), Some(Frame::Payload(b"\n\r\0>".to_vec())));
        assert_eq!(f.next_frame(), Some(Frame::Line(b" I?".to_vec())));
    }

    #[test]
    fn payload_across_pushes() {
        let mut f = Framer::new(false);
        f.push(b"S3=5\r");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"S3=5".to_vec())));
        f.expect_payload(5);
        f.push(b"ab");
        assert_eq!(f.next_frame(), None);
        assert!(matches!(f.mode, Mode::Payload { .. }));
        f.push(b"cdeR0\r");
        assert_eq!(f.next_frame(), Some(Frame::Payload(b"abcde".to_vec())));
        assert_eq!(f.next_frame(), Some(Frame::Line(b"R0".to_vec())));
    }

    #[test]
    fn overlong_line_resyncs_at_next_cr() {
        let mut f = Framer::new(false);
        let mut long = vec![b'C'; 300];
        long.extend_from_slice(b"\rI?\r");
        f.push(&long);
        match f.next_frame() {
            Some(Frame::Overlong(head)) => assert_eq!(head.len(), MAX_LINE + 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(f.next_frame(), Some(Frame::Line(b"I?".to_vec())));
    }

    #[test]
    fn zephyr_stray_byte_dropped_whatever_the_read_boundaries() {
        // In the same read as the payload.
        let mut f = Framer::new(true);
        f.push(b"S3=2\rabXR0\r");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"S3=2".to_vec())));
        f.expect_payload(2);
        assert_eq!(f.next_frame(), Some(Frame::Payload(b"ab".to_vec())));
        assert_eq!(f.next_frame(), Some(Frame::Line(b"R0".to_vec())));

        // In a read of its own, after the payload was framed: 1 run in 7 of Zephyr's driver.
        let mut f = Framer::new(true);
        f.push(b"S3=2\rab");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"S3=2".to_vec())));
        f.expect_payload(2);
        assert_eq!(f.next_frame(), Some(Frame::Payload(b"ab".to_vec())));
        assert_eq!(f.next_frame(), None);
        f.push(b"P");
        assert_eq!(f.next_frame(), None, "the stray byte");
        f.push(b"P0=1\r");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"P0=1".to_vec())));

        // Exactly one byte per payload, also when the next command follows in the same read.
        let mut f = Framer::new(true);
        f.push(b"PG=0,0,1\rk");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"PG=0,0,1".to_vec())));
        f.expect_payload(1);
        assert_eq!(f.next_frame(), Some(Frame::Payload(b"k".to_vec())));
        f.push(b"\0S3=1\rz\xffI?\r");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"S3=1".to_vec())));
        f.expect_payload(1);
        assert_eq!(f.next_frame(), Some(Frame::Payload(b"z".to_vec())));
        assert_eq!(f.next_frame(), Some(Frame::Line(b"I?".to_vec())));

        // Without the quirk nothing is dropped.
        let mut f = Framer::new(false);
        f.push(b"S3=1\ra");
        f.next_frame();
        f.expect_payload(1);
        assert_eq!(f.next_frame(), Some(Frame::Payload(b"a".to_vec())));
        f.push(b"I?\r");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"I?".to_vec())));
    }

    #[test]
    fn a_partial_payload_can_be_taken_early() {
        let mut f = Framer::new(false);
        f.push(b"S0\rabc");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"S0".to_vec())));
        f.expect_payload(10);
        f.push(b"de");
        assert_eq!(f.take_partial(), b"abcde");
        f.push(b"I?\r");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"I?".to_vec())));
    }

    #[test]
    fn abort_payload_returns_to_commands() {
        let mut f = Framer::new(false);
        f.push(b"S3=9\rabc");
        f.next_frame();
        f.expect_payload(9);
        assert_eq!(f.next_frame(), None);
        assert_eq!(f.abort_payload(), 3);
        f.push(b"I?\r");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"I?".to_vec())));
    }
}
