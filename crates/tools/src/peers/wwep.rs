//! The WICED Wi-Fi Example Protocol server of WW101 chapter 6 (layer: tool), as the class server
//! runs it: plain on 27708 and TLS on 40508, one register database behind both.
//!
//! Protocol (ASCII, §6.1): `W<dev 4 hex><reg 2 hex><value 4 hex>` writes, `R<dev 4 hex><reg 2 hex>`
//! reads. The answer is `A` followed by the request's fields (for a read, with the stored value), or
//! `X` alone for an illegal packet or a read of a register never written. Each device id has its own
//! 256 registers.

use super::serve::{read_tick, Got, Stop, IDLE_LIMIT};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITE_LEN: usize = 11;
const READ_LEN: usize = 7;
/// Registers remembered across all devices; a write beyond answers `X`.
const MAX_REGISTERS: usize = 65_536;
/// A partial packet with no more bytes for this long is complete (and illegal).
pub(super) const IDLE_END: Duration = Duration::from_millis(150);

fn hex(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
}

/// The server's database.
#[derive(Clone, Default)]
pub(super) struct Registers(Arc<Mutex<HashMap<(u16, u8), u16>>>);

impl Registers {
    /// The answer to one packet.
    pub(super) fn answer(&self, p: &[u8]) -> Vec<u8> {
        let mut map = match self.0.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        match p.first() {
            Some(b'W') if p.len() == WRITE_LEN => {
                let (Some(dev), Some(reg), Some(val)) =
                    (hex(&p[1..5]), hex(&p[5..7]), hex(&p[7..]))
                else {
                    return b"X".to_vec();
                };
                let key = (dev as u16, reg as u8);
                if map.len() >= MAX_REGISTERS && !map.contains_key(&key) {
                    return b"X".to_vec();
                }
                map.insert(key, val as u16);
                format!("A{dev:04X}{reg:02X}{val:04X}").into_bytes()
            }
            Some(b'R') if p.len() == READ_LEN => {
                let (Some(dev), Some(reg)) = (hex(&p[1..5]), hex(&p[5..7])) else {
                    return b"X".to_vec();
                };
                match map.get(&(dev as u16, reg as u8)) {
                    Some(v) => format!("A{dev:04X}{reg:02X}{v:04X}").into_bytes(),
                    None => b"X".to_vec(),
                }
            }
            _ => b"X".to_vec(),
        }
    }
}

/// Cuts a byte stream into packets: `W` packets are 11 bytes, `R` packets 7; CR/LF between packets
/// is skipped and ends a shorter packet; anything else runs to CR/LF; a partial packet ends after
/// [`IDLE_END`] without more bytes, or at the end of the stream.
#[derive(Default)]
pub(super) struct Framer {
    buf: Vec<u8>,
    last: Option<Instant>,
}

fn eol(b: &u8) -> bool {
    *b == b'\r' || *b == b'\n'
}

impl Framer {
    pub(super) fn push(&mut self, data: &[u8], now: Instant) {
        self.buf.extend_from_slice(data);
        self.last = Some(now);
    }

    pub(super) fn next(&mut self, now: Instant, eof: bool) -> Option<Vec<u8>> {
        let skip = self.buf.iter().take_while(|b| eol(b)).count();
        self.buf.drain(..skip);
        let need = match *self.buf.first()? {
            b'W' => WRITE_LEN,
            b'R' => READ_LEN,
            _ => usize::MAX,
        };
        let idle = self.last.is_some_and(|t| now.duration_since(t) >= IDLE_END);
        let end = match self.buf.iter().position(eol) {
            Some(e) if e < need => e,
            _ if self.buf.len() >= need => need,
            _ if eof || idle => self.buf.len(),
            _ => return None,
        };
        Some(self.buf.drain(..end).collect())
    }
}

/// Serve WWEP on one connection (plain or TLS).
pub(super) fn serve<S: Read + Write>(
    s: &mut S,
    regs: &Registers,
    name: &str,
    peer: SocketAddr,
    stop: &Stop,
) {
    let mut framer = Framer::default();
    let mut buf = [0u8; 2048];
    let mut last = Instant::now();
    while !stop.stopped() && last.elapsed() < IDLE_LIMIT {
        let eof = match read_tick(s, &mut buf, name, peer) {
            Got::Data(n) => {
                last = Instant::now();
                framer.push(&buf[..n], last);
                false
            }
            Got::Idle => false,
            Got::Closed => true,
        };
        while let Some(p) = framer.next(Instant::now(), eof) {
            let a = regs.answer(&p);
            log::info!(
                "{name}: {peer}: {} -> {}",
                String::from_utf8_lossy(&p),
                String::from_utf8_lossy(&a)
            );
            if s.write_all(&a).and_then(|()| s.flush()).is_err() {
                return;
            }
        }
        if eof {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_like_the_ww101_examples() {
        let r = Registers::default();
        assert_eq!(r.answer(b"W0FAC0B1234"), b"A0FAC0B1234");
        assert_eq!(r.answer(b"W01234"), b"X");
        assert_eq!(r.answer(b"R0FAC0B"), b"A0FAC0B1234");
        assert_eq!(r.answer(b"R0BAC0B"), b"X");
        assert_eq!(r.answer(b"W0fac0b00ff"), b"A0FAC0B00FF");
        assert_eq!(r.answer(b"WZZZZ0B0000"), b"X");
    }

    #[test]
    fn framing() {
        let t = Instant::now();
        let mut f = Framer::default();
        f.push(b"W0FAC0B1234R0FAC0B\r\nW01", t);
        assert_eq!(f.next(t, false).unwrap(), b"W0FAC0B1234");
        assert_eq!(f.next(t, false).unwrap(), b"R0FAC0B");
        assert_eq!(f.next(t, false), None, "partial, not idle yet");
        assert_eq!(f.next(t + IDLE_END, false).unwrap(), b"W01");
        f.push(b"W01234\r", t);
        assert_eq!(f.next(t, false).unwrap(), b"W01234");
    }
}
