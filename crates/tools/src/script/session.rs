//! A conversation with a module over a [`Port`] (layer: host side). Sends commands, cuts replies
//! with the core's reply parser ([`eswifi_core::iwin::reply::parse`]), keeps the asynchronous messages that arrive between replies for `wait`, and
//! bounds every wait.

use super::port::Port;
use eswifi_core::config::EventMode;
use eswifi_core::iwin::reply::parse::{mr_message, Output, Parser, Unit};
use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

/// Bytes kept for a "what did arrive" message.
const SEEN_LIMIT: usize = 16 * 1024;
/// Unframed bytes held: more means the other end is not a module (or a reply is absurdly long).
const BUF_LIMIT: usize = 1024 * 1024;
/// Asynchronous messages kept for `wait`; older ones are dropped.
const EVENT_LIMIT: usize = 64;
/// Pause between `MR` polls that found nothing.
const MR_POLL: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(super) enum SessionError {
    /// Nothing complete came in time; `got` is what did arrive.
    Timeout {
        got: Vec<u8>,
    },
    Io(io::Error),
}

impl From<io::Error> for SessionError {
    fn from(e: io::Error) -> Self {
        SessionError::Io(e)
    }
}

pub(super) struct Session {
    port: Box<dyn Port>,
    parser: Parser,
    seen: Vec<u8>,
    events: VecDeque<Vec<u8>>,
    pub mode: EventMode,
}

impl Session {
    pub(super) fn new(port: Box<dyn Port>, mode: EventMode) -> Session {
        Session {
            port,
            parser: Parser::new(),
            seen: Vec::new(),
            events: VecDeque::new(),
            mode,
        }
    }

    pub(super) fn port_name(&self) -> String {
        self.port.name()
    }

    /// One read into the buffer, waiting at most `timeout`.
    fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = self.port.read(&mut chunk, timeout)?;
        if self.parser.buffered().len() + n > BUF_LIMIT {
            return Err(io::Error::other(
                "over 1 MiB without a prompt: is a module on this line?",
            ));
        }
        self.parser.push(&chunk[..n]);
        if self.seen.len() < SEEN_LIMIT {
            let take = n.min(SEEN_LIMIT - self.seen.len());
            self.seen.extend_from_slice(&chunk[..take]);
        }
        Ok(n)
    }

    fn keep_event(&mut self, o: &Output) {
        let e = o.message().unwrap_or_default().to_vec();
        self.keep_message(e);
    }

    fn keep_message(&mut self, e: Vec<u8>) {
        log::debug!("event: {}", super::show::escape(&e));
        if self.events.len() == EVENT_LIMIT {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Take what has already arrived; complete frames in it are not replies to what we send next.
    fn drain(&mut self) -> io::Result<()> {
        for _ in 0..256 {
            if self.fill(Duration::ZERO)? == 0 {
                break;
            }
        }
        while let Some(o) = self.parser.next() {
            match o.unit {
                Unit::Event => self.keep_event(&o),
                _ if o.is_reply() => log::debug!(
                    "stray reply before a command: {}",
                    super::show::escape(&o.raw)
                ),
                _ => {}
            }
        }
        Ok(())
    }

    /// Get in step with the module: send an empty line and read up to its bare prompt.
    pub(super) fn sync(&mut self, timeout: Duration) -> Result<(), SessionError> {
        self.drain()?;
        self.seen.clear();
        self.port.write_all(b"\r", timeout)?;
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(o) = self.parser.next() {
                match o.unit {
                    Unit::Prompt => return Ok(()),
                    Unit::Event => self.keep_event(&o),
                    _ => {}
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SessionError::Timeout {
                    got: std::mem::take(&mut self.seen),
                });
            }
            self.fill(left)?;
        }
    }

    /// Write bytes as they are (no CR added), after taking what had already arrived.
    pub(super) fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), SessionError> {
        self.drain()?;
        self.seen.clear();
        self.port.write_all(bytes, timeout)?;
        Ok(())
    }

    /// The next reply, skipping (and keeping) asynchronous messages.
    pub(super) fn read_reply(&mut self, timeout: Duration) -> Result<Output, SessionError> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(o) = self.parser.next() {
                match o.unit {
                    _ if o.is_reply() => return Ok(o),
                    Unit::Event => self.keep_event(&o),
                    _ => log::debug!("unsolicited: {}", super::show::escape(&o.raw)),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SessionError::Timeout {
                    got: self.seen.clone(),
                });
            }
            self.fill(left)?;
        }
    }

    /// What the module writes outside a reply when it comes back from a reset: the next unit that
    /// is neither a reply nor an asynchronous message (the banner with its prompt, or a bare
    /// prompt), so that checks can look at it. Messages before it are kept.
    pub(super) fn read_boot(&mut self, timeout: Duration) -> Result<Output, SessionError> {
        let deadline = Instant::now() + timeout;
        self.parser.expect_boot();
        loop {
            while let Some(o) = self.parser.next() {
                match o.unit {
                    Unit::Boot | Unit::Prompt => return Ok(o),
                    Unit::Event => self.keep_event(&o),
                    _ => log::debug!(
                        "a reply while waiting for the boot output: {}",
                        super::show::escape(&o.raw)
                    ),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // What came of it: the replies before are not boot output.
                return Err(SessionError::Timeout {
                    got: self.parser.buffered().to_vec(),
                });
            }
            self.fill(left)?;
        }
    }

    /// Send a command (already holding its CR and payload) and read its reply.
    pub(super) fn command(
        &mut self,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<Output, SessionError> {
        self.write(bytes, timeout)?;
        self.read_reply(timeout)
    }

    /// Wait for an asynchronous message that `matches`, at most `within`. In UART event mode the
    /// module writes them between replies; in poll mode they are fetched with `MR`.
    /// On timeout, `got` lists the messages that did come.
    pub(super) fn wait_event(
        &mut self,
        matches: &dyn Fn(&[u8]) -> bool,
        within: Duration,
        cmd_timeout: Duration,
    ) -> Result<Vec<u8>, SessionError> {
        let deadline = Instant::now() + within;
        let mut others: Vec<u8> = Vec::new();
        let mut note = |e: &[u8]| {
            if others.len() < SEEN_LIMIT {
                others.extend_from_slice(e);
                others.extend_from_slice(b"\n");
            }
        };
        // Bounded by the deadline; the count bound covers a clock that does not move.
        let rounds = (within.as_millis() / MR_POLL.as_millis()).max(1) * 4 + 16;
        for _ in 0..rounds {
            if let Some(i) = self.events.iter().position(|e| matches(e)) {
                let e = self.events.remove(i).unwrap_or_default();
                return Ok(e);
            }
            while let Some(e) = self.events.pop_front() {
                note(&e);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.mode {
                EventMode::Uart => {
                    self.fill(left.min(MR_POLL))?;
                    while let Some(o) = self.parser.next() {
                        if o.unit == Unit::Event {
                            self.keep_event(&o);
                        }
                    }
                }
                EventMode::Poll => {
                    let reply = self.command(b"MR\r", cmd_timeout)?;
                    match mr_message(reply.payload()) {
                        Some(m) => self.keep_message(m.to_vec()),
                        None => std::thread::sleep(left.min(MR_POLL)),
                    }
                }
            }
        }
        Err(SessionError::Timeout { got: others })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A scripted far end: answers each write with the next canned bytes.
    struct Fake {
        answers: Arc<Mutex<VecDeque<Vec<u8>>>>,
        pending: Vec<u8>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Port for Fake {
        fn write_all(&mut self, data: &[u8], _: Duration) -> io::Result<()> {
            self.written.lock().unwrap().extend_from_slice(data);
            if let Some(a) = self.answers.lock().unwrap().pop_front() {
                self.pending.extend(a);
            }
            Ok(())
        }
        fn read(&mut self, buf: &mut [u8], _: Duration) -> io::Result<usize> {
            let n = self.pending.len().min(buf.len()).min(5);
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }
        fn try_clone(&self) -> io::Result<Box<dyn Port>> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn name(&self) -> String {
            "fake".into()
        }
    }

    fn session(initial: &[u8], answers: &[&[u8]], mode: EventMode) -> Session {
        let fake = Fake {
            answers: Arc::new(Mutex::new(answers.iter().map(|a| a.to_vec()).collect())),
            pending: initial.to_vec(),
            written: Arc::default(),
        };
        Session::new(Box::new(fake), mode)
    }

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn sync_skips_the_banner_and_events_are_kept() {
        let mut s = session(
            b"\r\n  eS-WiFi\r\n> \r\n[TCP SVR] Accepted 1.2.3.4:5\r\n> ",
            &[b"\r\n> ", b"\r\n1\r\nOK\r\n> "],
            EventMode::Uart,
        );
        s.sync(T).unwrap();
        let r = s.command(b"CS\r", T).unwrap();
        assert_eq!(r.payload(), b"1");
        let e = s.wait_event(&|e| e.starts_with(b"[TCP"), T, T).unwrap();
        assert_eq!(e, b"[TCP SVR] Accepted 1.2.3.4:5");
    }

    #[test]
    fn an_event_before_the_reply_is_not_the_reply() {
        let mut s = session(
            b"",
            &[b"\r\n[TCP SVR] Accepted 1.2.3.4:5\r\n> \r\n\r\nOK\r\n> "],
            EventMode::Uart,
        );
        let r = s.command(b"P5=1\r", T).unwrap();
        assert_eq!(r.raw, b"\r\n\r\nOK\r\n> ");
        assert!(s.wait_event(&|e| e.contains(&b'S'), T, T).is_ok());
    }

    #[test]
    fn poll_mode_waits_with_mr() {
        let mut s = session(
            b"",
            &[
                b"\r\n[SOMA][EOMA]\r\nOK\r\n> ",
                b"\r\n[SOMA][AP DHCP] Assigned x[EOMA]\r\nOK\r\n> ",
                b"\r\n[SOMA][TCP SVR] Accepted 1.2.3.4:5[EOMA]\r\nOK\r\n> ",
            ],
            EventMode::Poll,
        );
        let e = s.wait_event(&|e| e.starts_with(b"[TCP"), T, T).unwrap();
        assert_eq!(e, b"[TCP SVR] Accepted 1.2.3.4:5");
    }

    #[test]
    fn boot_output_is_the_next_frame_outside_a_reply() {
        let banner: &[u8] = b"\r\n  eS-WiFi\r\n  Inventek Systems\r\n> ";
        let reset = [
            b"\r\n[MODULE ] Resetting...\r\nOK\r\n> ".as_slice(),
            b"\r\n[JOIN   ] x,1.2.3.4,0,0\r\n> ",
            banner,
        ]
        .concat();
        let mut s = session(b"", &[&reset], EventMode::Uart);
        let r = s.command(b"ZR\r", T).unwrap();
        assert_eq!(r.payload(), b"[MODULE ] Resetting...");
        let boot = s.read_boot(T).unwrap();
        assert_eq!(boot.raw, banner);
        assert_eq!(boot.payload(), b"  eS-WiFi\r\n  Inventek Systems");
        assert!(s.wait_event(&|e| e.starts_with(b"[JOIN"), T, T).is_ok());
        // A bare prompt is boot output too (the SPI cursor, a firmware without a banner).
        let mut s = session(b"\x15\x15\r\n> ", &[], EventMode::Uart);
        assert_eq!(s.read_boot(T).unwrap().raw, b"\x15\x15\r\n> ");
        let mut s = session(b"\r\n1\r\nOK\r\n> \r\n  eS-Wi", &[], EventMode::Uart);
        match s.read_boot(Duration::from_millis(20)) {
            Err(SessionError::Timeout { got }) => assert_eq!(got, b"\r\n  eS-Wi"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_timeout_shows_what_came() {
        let mut s = session(b"", &[b"\r\npartial"], EventMode::Uart);
        match s.command(b"I?\r", Duration::from_millis(20)) {
            Err(SessionError::Timeout { got }) => assert_eq!(got, b"\r\npartial"),
            other => panic!("{other:?}"),
        }
    }
}
