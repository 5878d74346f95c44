//! IWIN framer (layer: wire). Splits the host's byte stream into command lines and raw payloads.
//! Pure: no IO, no clock. The module decides, after parsing a header line, whether raw payload bytes
//! follow (`S3=<n>\r<n bytes>`, `PG=…,<len>\r<len bytes>`) and tells the framer with
//! [`Framer::expect_payload`]; until then bytes after a CR are not interpreted, so nothing is lost.

/// Longest command line the module accepts (spec §2.2 suggests ≥ 256).
pub const MAX_LINE: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A command line without its CR (LF and NUL bytes removed).
    Line(Vec<u8>),
    /// A line grew past [`MAX_LINE`]; carries its first bytes. The rest, up to the next CR, is discarded.
    Overlong(Vec<u8>),
    /// The raw bytes announced by the last [`Framer::expect_payload`].
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
pub struct Framer {
    /// Received bytes; those before `pos` are consumed (a Vec with a read offset, so payloads are
    /// moved with slice copies).
    buf: Vec<u8>,
    pos: usize,
    /// Bytes of the current command line consumed from `buf` so far.
    line: Vec<u8>,
    mode: Mode,
    /// Zephyr quirk: drop one byte that arrives in the same write burst right after a payload.
    drop_after_payload: bool,
    /// How many unconsumed bytes at the front of `buf` arrived in the same `push` as the last
    /// consumed byte.
    same_burst: usize,
}

impl Framer {
    pub fn new(drop_after_payload: bool) -> Framer {
        Framer {
            drop_after_payload,
            ..Framer::default()
        }
    }

    /// Append bytes read from the serial line.
    pub fn push(&mut self, data: &[u8]) {
        // Bytes already buffered keep their burst; only a push into an empty buffer starts a new count.
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            self.same_burst = data.len();
        } else if self.pos > 4096 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Received bytes not yet framed (a partial line or payload is not counted): what a host has
    /// written ahead of the command being executed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True while a payload is being collected.
    pub fn in_payload(&self) -> bool {
        matches!(self.mode, Mode::Payload { .. })
    }

    /// True when no partial line or payload is buffered.
    pub fn is_idle(&self) -> bool {
        self.buffered() == 0 && self.line.is_empty() && matches!(self.mode, Mode::Command)
    }

    /// After a header line, the next `len` raw bytes are payload (`len` may be 0: an empty payload frame
    /// is produced at once).
    pub fn expect_payload(&mut self, len: usize) {
        self.mode = Mode::Payload {
            data: Vec::with_capacity(len.min(1 << 16)),
            remaining: len,
        };
    }

    /// Give up on an unfinished payload (timeout); returns how many bytes had arrived.
    pub fn abort_payload(&mut self) -> usize {
        match std::mem::take(&mut self.mode) {
            Mode::Payload { data, .. } => data.len(),
            _ => 0,
        }
    }

    /// Forget everything buffered (module reset).
    pub fn clear(&mut self) {
        let drop_after_payload = self.drop_after_payload;
        *self = Framer::new(drop_after_payload);
    }

    /// The next complete frame, if the buffered bytes hold one.
    pub fn next_frame(&mut self) -> Option<Frame> {
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
                    if self.drop_after_payload && self.same_burst > 0 {
                        self.consume(1);
                    }
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
                Mode::Command => {
                    let end = pending.iter().position(|&b| b == b'\r');
                    let upto = end.unwrap_or(pending.len());
                    let mut overlong = false;
                    let mut used = upto;
                    for (k, &b) in pending[..upto].iter().enumerate() {
                        if b == b'\n' || b == 0 {
                            continue;
                        }
                        self.line.push(b);
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
        self.same_burst = self.same_burst.saturating_sub(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &mut Framer) -> Vec<Frame> {
        std::iter::from_fn(|| f.next_frame()).collect()
    }

    #[test]
    fn lines_ignore_lf_and_nul_between_commands() {
        let mut f = Framer::new(false);
        f.push(b"\n\0I?\r\nC0\r");
        assert_eq!(
            frames(&mut f),
            vec![Frame::Line(b"I?".to_vec()), Frame::Line(b"C0".to_vec())]
        );
        assert!(f.is_idle());
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
        assert!(f.in_payload());
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
    fn zephyr_stray_byte_dropped_only_in_same_burst() {
        let mut f = Framer::new(true);
        f.push(b"S3=2\rabXR0\r");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"S3=2".to_vec())));
        f.expect_payload(2);
        assert_eq!(f.next_frame(), Some(Frame::Payload(b"ab".to_vec())));
        assert_eq!(f.next_frame(), Some(Frame::Line(b"R0".to_vec())));

        let mut f = Framer::new(true);
        f.push(b"S3=2\rab");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"S3=2".to_vec())));
        f.expect_payload(2);
        assert_eq!(f.next_frame(), Some(Frame::Payload(b"ab".to_vec())));
        f.push(b"R0\r");
        assert_eq!(f.next_frame(), Some(Frame::Line(b"R0".to_vec())));
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
