//! IWIN reply encoder (layer: wire). The only place that knows the response envelopes of spec §2.3:
//! `\r\n<payload>\r\nOK\r\n> `, the MT=0 / MT=1 error forms, the closed-socket `-1` form and the
//! asynchronous-message form. Pure.

use crate::iwin::command::Mnemonic;

/// The reason texts the firmware prints after `ERROR: ` (spec §2.3, FW strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    UnknownError,
    InsufficientArguments,
    TooManyArguments,
    BadAddressValue,
    NoCommandEntered,
    BadArgument,
    UnknownCommand,
}

impl Reason {
    pub fn text(self) -> &'static str {
        match self {
            Reason::UnknownError => "Unknown Error",
            Reason::InsufficientArguments => "Insufficient Arguments",
            Reason::TooManyArguments => "Too Many Arguments",
            Reason::BadAddressValue => "Bad Address Value",
            Reason::NoCommandEntered => "No Command Entered",
            Reason::BadArgument => "Bad Argument",
            Reason::UnknownCommand => "Unknown Command",
        }
    }
}

/// Message type (`MT`): how errors are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// `ERROR: <reason>` and `Usage: <cmd> <usage>`.
    Normal,
    /// Bare `ERROR`.
    Simple,
}

/// A typed reply to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Success; the payload may be empty and may hold several `\r\n`-separated lines.
    Ok(Vec<u8>),
    /// Failure. `payload` lines (e.g. `[JOIN   ] Failed`) come before the error tail; `usage` is the
    /// mnemonic whose usage text the MT=0 form prints (None for `Unknown Command`, which has none).
    Error {
        payload: Vec<u8>,
        reason: Reason,
        usage: Option<Mnemonic>,
    },
    /// `-1` for a read or send on a closed connection: no OK (spec §3.10, §10).
    Closed,
    /// Only a prompt (an empty command line).
    Prompt,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Ok(Vec::new())
    }

    pub fn payload(p: impl Into<Vec<u8>>) -> Reply {
        Reply::Ok(p.into())
    }

    /// Encode for the wire.
    pub fn encode(&self, mt: MessageType) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        match self {
            Reply::Ok(p) => {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(p);
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
            Reply::Closed => out.extend_from_slice(b"\r\n-1\r\nERROR\r\n> "),
            Reply::Prompt => out.extend_from_slice(b"\r\n> "),
        }
        out
    }
}

/// An unsolicited message as the UART firmware writes it: `\r\n<message>\r\n> `.
pub fn encode_async(message: &[u8]) -> Vec<u8> {
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
        assert_eq!(Reply::ok().encode(n), b"\r\n\r\nOK\r\n> ");
        assert_eq!(Reply::payload("1").encode(n), b"\r\n1\r\nOK\r\n> ");
        let e = Reply::Error {
            payload: b"[JOIN   ] x\r\n[JOIN   ] Failed".to_vec(),
            reason: Reason::UnknownError,
            usage: Some(Mnemonic::C0),
        };
        assert_eq!(
            e.encode(n),
            b"\r\n[JOIN   ] x\r\n[JOIN   ] Failed\r\nERROR: Unknown Error\r\nUsage: C0 \r\n> "
        );
        assert_eq!(
            e.encode(MessageType::Simple),
            b"\r\n[JOIN   ] x\r\n[JOIN   ] Failed\r\nERROR\r\n> "
        );
        let u = Reply::Error {
            payload: vec![],
            reason: Reason::UnknownCommand,
            usage: None,
        };
        assert_eq!(u.encode(n), b"\r\n\r\nERROR: Unknown Command\r\n> ");
        assert_eq!(Reply::Closed.encode(n), b"\r\n-1\r\nERROR\r\n> ");
        assert_eq!(
            encode_async(b"[TCP SVR] Accepted 1.2.3.4:80"),
            b"\r\n[TCP SVR] Accepted 1.2.3.4:80\r\n> "
        );
    }
}
