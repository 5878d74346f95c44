//! IWIN reply encoder (layer: wire), and its decoder for hosts ([`parse`]). The only place that knows the response envelopes of spec §2.3:
//! `\r\n<payload>\r\nOK\r\n> `, the MT=0 / MT=1 error forms, the closed-socket `-1` forms and the
//! asynchronous-message form, and what a firmware profile and the bus change in them (`Wire`: the
//! C6.2.1.8 12-byte OK, SPI's 0x15 padding and boot cursor). Pure.

pub mod parse;

use crate::iwin::command::Mnemonic;
use serde::Deserialize;
use std::net::Ipv4Addr;

/// The reason texts the firmware prints after `ERROR: ` (spec §2.3, FW strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    UnknownError,
    InsufficientArguments,
    TooManyArguments,
    BadAddressValue,
    BadArgument,
    UnknownCommand,
}

impl Reason {
    pub(crate) fn text(self) -> &'static str {
        match self {
            Reason::UnknownError => "Unknown Error",
            Reason::InsufficientArguments => "Insufficient Arguments",
            Reason::TooManyArguments => "Too Many Arguments",
            Reason::BadAddressValue => "Bad Address Value",
            Reason::BadArgument => "Bad Argument",
            Reason::UnknownCommand => "Unknown Command",
        }
    }
}

/// Message type (`MT`): how errors are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageType {
    /// `MT=0`: `ERROR: <reason>` and `Usage: <cmd> <usage>`.
    Normal = 0,
    /// `MT=1`: bare `ERROR`.
    Simple = 1,
}

impl MessageType {
    /// The number `MT` takes (and the configuration and the saved settings hold).
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

/// A typed reply to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Success; the payload may be empty and may hold several `\r\n`-separated lines.
    Ok(Vec<u8>),
    /// Success carrying one UDP datagram read by `R0` (C6.2.1.8 adds a CRLF after it).
    Datagram(Vec<u8>),
    /// `P6=1` on a TCP client that connected, on firmware that announces it (a C3.5.2.x hardware
    /// capture, [`crate::iwin::profile::Profile::announces_tcp_connect`]): the remote address.
    TcpConnecting(Ipv4Addr),
    /// Failure. `payload` lines (e.g. `[JOIN   ] Failed`) come before the error tail; `usage` is the
    /// mnemonic whose usage text the MT=0 form prints (None for `Unknown Command`, which has none).
    Error {
        payload: Vec<u8>,
        reason: Reason,
        usage: Option<Mnemonic>,
    },
    /// `-1` for a read or send (the mnemonic) on a closed connection (spec §3.10, §9, §10).
    Closed(Mnemonic),
    /// One part of an answer given over several replies (`F0=2`, then `MR`): the payload and a
    /// prompt, no status; the part after the last ends with OK.
    Part(Vec<u8>),
    /// Only a prompt (an empty command line).
    Prompt,
}

impl Reply {
    pub(crate) fn ok() -> Reply {
        Reply::Ok(Vec::new())
    }

    pub(crate) fn payload(p: impl Into<Vec<u8>>) -> Reply {
        Reply::Ok(p.into())
    }
}

/// How `R0`/`S3` on a closed connection answer: the sources disagree (spec §9 item 1, §10).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClosedForm {
    /// `\r\n-1\r\nERROR\r\n> ` whatever `MT` says (the spec's decision; every driver handles it).
    #[default]
    Error,
    /// As any other failure: with MT=0 `\r\n-1\r\nERROR: Unknown Error\r\nUsage: R0 \r\n> `.
    Usage,
    /// `-1` as data: `\r\n-1\r\nOK\r\n> ` (what some user code expects).
    Ok,
}

/// The byte envelope of replies, apart from the reply itself: what the firmware release and the
/// bus change (spec §2.3, §2.4, §2.7). The module encodes everything it writes through one `Wire`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Wire {
    /// C6.2.1.8 and newer: the no-payload OK is `\r\n\r\n\r\nOK\r\n> ` (12 bytes) and UDP data
    /// is followed by an extra CRLF.
    pub(crate) long_ok: bool,
    /// The SPI bus: a reply of odd length is padded with one 0x15 (the module fills the last 16-bit
    /// word), and the boot cursor is `\x15\x15\r\n> `.
    pub(crate) spi: bool,
    pub(crate) closed: ClosedForm,
}

/// What the SPI firmware pads the last 16-bit word of a reply with.
pub(crate) const SPI_PAD: u8 = 0x15;

/// The prompt that ends everything the module writes.
pub(crate) const PROMPT: &[u8] = b"\r\n> ";

/// How every successful reply ends.
pub(crate) const OK_TAIL: &[u8] = b"\r\nOK\r\n> ";

impl Wire {
    /// Encode one reply for the wire.
    pub(crate) fn encode(&self, r: &Reply, mt: MessageType) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        match r {
            Reply::Ok(p) if p.is_empty() && self.long_ok => {
                out.extend_from_slice(b"\r\n\r\n\r\nOK\r\n> ")
            }
            Reply::Ok(p) => {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(p);
                out.extend_from_slice(b"\r\nOK\r\n> ");
            }
            Reply::TcpConnecting(ip) => {
                out.extend_from_slice(format!("\r\n[TCP  RC] Connecting to {ip}").as_bytes());
                out.extend_from_slice(b"\r\nOK\r\n> ");
            }
            Reply::Datagram(p) => {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(p);
                if self.long_ok {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\nOK\r\n> ");
            }
            Reply::Error {
                payload,
                reason,
                usage,
            } => {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(payload);
                out.extend_from_slice(b"\r\nERROR");
                if mt == MessageType::Normal {
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(reason.text().as_bytes());
                    if let Some(m) = usage {
                        out.extend_from_slice(b"\r\nUsage: ");
                        out.extend_from_slice(m.text().as_bytes());
                        out.push(b' ');
                        out.extend_from_slice(m.usage().as_bytes());
                    }
                }
                out.extend_from_slice(b"\r\n> ");
            }
            Reply::Closed(m) => match self.closed {
                ClosedForm::Error => out.extend_from_slice(b"\r\n-1\r\nERROR\r\n> "),
                ClosedForm::Ok => out.extend_from_slice(b"\r\n-1\r\nOK\r\n> "),
                ClosedForm::Usage => {
                    let e = Reply::Error {
                        payload: b"-1".to_vec(),
                        reason: Reason::UnknownError,
                        usage: Some(*m),
                    };
                    return self.encode(&e, mt);
                }
            },
            Reply::Part(p) => {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(p);
                out.extend_from_slice(b"\r\n> ");
            }
            Reply::Prompt => out.extend_from_slice(b"\r\n> "),
        }
        self.pad(out)
    }

    /// An unsolicited message as the UART firmware writes it: `\r\n<message>\r\n> `.
    pub(crate) fn event(&self, message: &[u8]) -> Vec<u8> {
        self.pad(encode_async(message))
    }

    /// What the module says at power-up and after `ZR`: on UART the banner (if any) and the prompt;
    /// on SPI the 6-byte cursor the host fetches, `\x15\x15\r\n> ` (spec §2.4).
    pub(crate) fn boot(&self, banner: Option<&[u8]>) -> Vec<u8> {
        if self.spi {
            return vec![SPI_PAD, SPI_PAD, b'\r', b'\n', b'>', b' '];
        }
        let mut out = banner.unwrap_or_default().to_vec();
        out.extend_from_slice(b"\r\n> ");
        out
    }

    /// SPI: fill the last 16-bit word.
    fn pad(&self, mut out: Vec<u8>) -> Vec<u8> {
        if self.spi && !out.len().is_multiple_of(2) {
            out.push(SPI_PAD);
        }
        out
    }
}

/// An unsolicited message as the UART firmware writes it: `\r\n<message>\r\n> `.
pub(crate) fn encode_async(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 6);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(message);
    out.extend_from_slice(b"\r\n> ");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        let n = MessageType::Normal;
        assert_eq!(Wire::default().encode(&Reply::ok(), n), b"\r\n\r\nOK\r\n> ");
        assert_eq!(
            Wire::default().encode(&Reply::payload("1"), n),
            b"\r\n1\r\nOK\r\n> "
        );
        let e = Reply::Error {
            payload: b"[JOIN   ] x\r\n[JOIN   ] Failed".to_vec(),
            reason: Reason::UnknownError,
            usage: Some(Mnemonic::C0),
        };
        assert_eq!(
            Wire::default().encode(&e, n),
            b"\r\n[JOIN   ] x\r\n[JOIN   ] Failed\r\nERROR: Unknown Error\r\nUsage: C0 \r\n> "
        );
        assert_eq!(
            Wire::default().encode(&e, MessageType::Simple),
            b"\r\n[JOIN   ] x\r\n[JOIN   ] Failed\r\nERROR\r\n> "
        );
        let u = Reply::Error {
            payload: vec![],
            reason: Reason::UnknownCommand,
            usage: None,
        };
        assert_eq!(
            Wire::default().encode(&u, n),
            b"\r\n\r\nERROR: Unknown Command\r\n> "
        );
        assert_eq!(
            Wire::default().encode(&Reply::Closed(Mnemonic::R0), n),
            b"\r\n-1\r\nERROR\r\n> "
        );
        let connecting = Reply::TcpConnecting(Ipv4Addr::new(192, 168, 1, 20));
        assert_eq!(
            Wire::default().encode(&connecting, n),
            b"\r\n[TCP  RC] Connecting to 192.168.1.20\r\nOK\r\n> "
        );
        assert_eq!(
            Wire::default().encode(&connecting, MessageType::Simple),
            Wire::default().encode(&connecting, n),
            "no error, MT changes nothing"
        );
        assert_eq!(
            encode_async(b"[TCP SVR] Accepted 1.2.3.4:80"),
            b"\r\n[TCP SVR] Accepted 1.2.3.4:80\r\n> "
        );
    }

    #[test]
    fn c6_framing_spi_padding_and_closed_forms() {
        let n = MessageType::Normal;
        let c6 = Wire {
            long_ok: true,
            ..Wire::default()
        };
        assert_eq!(c6.encode(&Reply::ok(), n), b"\r\n\r\n\r\nOK\r\n> ");
        assert_eq!(c6.encode(&Reply::payload("1"), n), b"\r\n1\r\nOK\r\n> ");
        assert_eq!(
            c6.encode(&Reply::Datagram(b"hi".to_vec()), n),
            b"\r\nhi\r\n\r\nOK\r\n> "
        );
        assert_eq!(
            Wire::default().encode(&Reply::Datagram(b"hi".to_vec()), n),
            b"\r\nhi\r\nOK\r\n> "
        );
        let spi = Wire {
            spi: true,
            ..Wire::default()
        };
        assert_eq!(
            spi.encode(&Reply::ok(), n),
            b"\r\n\r\nOK\r\n> ",
            "even: no pad"
        );
        assert_eq!(
            spi.encode(&Reply::payload("1"), n),
            b"\r\n1\r\nOK\r\n> \x15"
        );
        assert_eq!(
            spi.encode(&Reply::TcpConnecting(Ipv4Addr::new(10, 0, 0, 12)), n),
            b"\r\n[TCP  RC] Connecting to 10.0.0.12\r\nOK\r\n> \x15"
        );
        assert_eq!(
            spi.encode(&Reply::TcpConnecting(Ipv4Addr::new(10, 0, 0, 1)), n),
            b"\r\n[TCP  RC] Connecting to 10.0.0.1\r\nOK\r\n> ",
            "42 bytes: even"
        );
        assert_eq!(
            c6.encode(&Reply::TcpConnecting(Ipv4Addr::new(10, 0, 0, 12)), n),
            b"\r\n[TCP  RC] Connecting to 10.0.0.12\r\nOK\r\n> ",
            "a payload reply: the long OK does not apply"
        );
        assert_eq!(spi.boot(Some(b"banner")), b"\x15\x15\r\n> ");
        assert_eq!(Wire::default().boot(Some(b"banner")), b"banner\r\n> ");
        assert_eq!(
            Wire::default().encode(&Reply::Part(b"[SOMA]#001[EOMA]".to_vec()), n),
            b"\r\n[SOMA]#001[EOMA]\r\n> "
        );
        let closed = |form, mt| {
            Wire {
                closed: form,
                ..Wire::default()
            }
            .encode(&Reply::Closed(Mnemonic::S3), mt)
        };
        let s = MessageType::Simple;
        assert_eq!(closed(ClosedForm::Error, n), b"\r\n-1\r\nERROR\r\n> ");
        assert_eq!(closed(ClosedForm::Ok, n), b"\r\n-1\r\nOK\r\n> ");
        assert_eq!(
            closed(ClosedForm::Usage, n),
            b"\r\n-1\r\nERROR: Unknown Error\r\nUsage: S3 <1-1460>\r\n> "
        );
        assert_eq!(closed(ClosedForm::Usage, s), b"\r\n-1\r\nERROR\r\n> ");
    }
}
