//! Why a command failed (layer: core). Each area of the module has its own small error enum; the
//! module's log says the detailed reason, and `Error::reply` — the one function that knows the
//! wire texts of failures — turns an error into the reply the firmware sends.

use crate::iwin::command::{Mnemonic, ParseError};
use crate::iwin::reply::{Reason, Reply};

/// Any failure of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Error {
    /// The line did not parse.
    Parse(ParseError),
    /// A payload command's bytes stopped arriving (`S3`, `PG`).
    PayloadTimeout(Mnemonic),
    /// `R0`/`S3` (the mnemonic) on a socket whose connection is closed: the `-1` form.
    Closed(Mnemonic),
    System(SystemError),
    Station(StationError),
    Socket(SocketError),
    Server(ServerError),
    Cert(CertError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SystemError {
    /// `Z0` while joined or while the soft AP runs.
    FactoryRefusedWhileConnected,
    /// `Z1` could not be made durable.
    SaveFailed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StationError {
    /// `C0` while joined.
    AlreadyConnected,
    /// `C0` failed; the SSID is echoed as the firmware does.
    JoinFailed { ssid: Vec<u8> },
    /// `CW`: WPS found no access point to join.
    WpsFailed,
    /// `D0` failed: not joined or no such name, or (`timed_out`) no answer in time.
    HostNotFound { name: String, timed_out: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SocketError {
    /// `P6=1` on a socket that is connected or serving.
    AlreadyConnected,
    /// `P6=1` with no usable remote address.
    InvalidIp,
    /// A TCP (or TLS) connect failed or timed out.
    ConnectFailed,
    /// A UDP socket could not be opened.
    UdpFailed,
    /// `P1=4` (MQTT) is not emulated.
    ModeNotSupported,
    Tls(TlsError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsError {
    /// Only so many TLS sockets at a time; the one in use is named.
    InUse(usize),
    /// `P9=2` with a set that lacks the CA, certificate or key.
    NoCertOrKey,
    /// The set's root CA does not parse.
    RootCa,
    /// The set's certificate or key is unusable.
    Unable,
    /// The handshake failed; `advanced` is the P9=2 context, which words it differently.
    Handshake { advanced: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerError {
    /// `P5=1` could not start (no network, port taken, a client connection open).
    StartFailed,
    /// `P5=1` on a protocol the firmware does not serve.
    ModeNotSupported,
    /// `P7` on a socket that is not serving.
    NotServing,
    /// A TLS server (`[tls] server`) cannot start with the active set.
    Tls(TlsError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CertError {
    /// A set the firmware profile does not have.
    NoSuchSet(Mnemonic),
    /// A one-time-programmable item already holds different bytes.
    Used,
    /// The store could not make the item durable.
    WriteFailed,
    /// Not PEM, with `[tls] refuse_non_pem`.
    NotPem,
}

impl TlsError {
    /// The firmware's `[TCP SSL]` line for this failure.
    fn text(&self) -> Vec<u8> {
        match self {
            TlsError::InUse(s) => format!("[TCP SSL] In use by socket {s}").into_bytes(),
            TlsError::NoCertOrKey => b"[TCP SSL] No cert and/or key found.".to_vec(),
            TlsError::RootCa => b"[TCP SSL] Root CA certificate failed to initialize: 1".to_vec(),
            TlsError::Unable => b"[TCP SSL] Unable to enable TLS!".to_vec(),
            TlsError::Handshake { advanced: false } => {
                b"[TCP SSL] Simple context, failed to connect".to_vec()
            }
            TlsError::Handshake { advanced: true } => b"[TCP SSL] Connection issue".to_vec(),
        }
    }
}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Error {
        Error::Parse(e)
    }
}

impl From<SystemError> for Error {
    fn from(e: SystemError) -> Error {
        Error::System(e)
    }
}

impl From<StationError> for Error {
    fn from(e: StationError) -> Error {
        Error::Station(e)
    }
}

impl From<SocketError> for Error {
    fn from(e: SocketError) -> Error {
        Error::Socket(e)
    }
}

impl From<TlsError> for Error {
    fn from(e: TlsError) -> Error {
        Error::Socket(SocketError::Tls(e))
    }
}

impl From<ServerError> for Error {
    fn from(e: ServerError) -> Error {
        Error::Server(e)
    }
}

impl From<CertError> for Error {
    fn from(e: CertError) -> Error {
        Error::Cert(e)
    }
}

impl Error {
    /// The reply the firmware sends for this failure (spec §2.3, §3, FW strings).
    pub(crate) fn reply(&self) -> Reply {
        use Mnemonic as M;
        let fail = |m: Mnemonic, payload: &[u8]| Reply::Error {
            payload: payload.to_vec(),
            reason: Reason::UnknownError,
            usage: Some(m),
        };
        match self {
            Error::Parse(e) => Reply::Error {
                payload: Vec::new(),
                reason: e.reason,
                usage: e.mnemonic,
            },
            Error::PayloadTimeout(m) => fail(*m, b""),
            Error::Closed(m) => Reply::Closed(*m),
            Error::System(SystemError::FactoryRefusedWhileConnected) => fail(
                M::Z0,
                b"Please shutdown network before resetting to factory configuration.",
            ),
            Error::System(SystemError::SaveFailed) => fail(M::Z1, b""),
            Error::Station(StationError::AlreadyConnected) => fail(M::C0, b"Already connected!"),
            Error::Station(StationError::JoinFailed { ssid }) => {
                let mut p = b"[JOIN   ] ".to_vec();
                p.extend_from_slice(ssid);
                p.extend_from_slice(b"\r\n[JOIN   ] Failed");
                fail(M::C0, &p)
            }
            Error::Station(StationError::WpsFailed) => fail(M::CW, b"[WPS    ] Failed"),
            Error::Station(StationError::HostNotFound { name, timed_out }) => {
                // FW `[DNS  LU] Host not found %s:%d`; the number is the stack's result code. Which
                // codes it prints is not recorded: the WICED ones for a timeout (2) and any other
                // failure (4) are used. Drivers look for `Host not found ` only (CMSIS).
                let code = if *timed_out { 2 } else { 4 };
                fail(
                    M::D0,
                    format!("[DNS  LU] Host not found {name}:{code}").as_bytes(),
                )
            }
            Error::Socket(e) => fail(
                M::P6,
                &match e {
                    SocketError::AlreadyConnected => b"[TCP  RC] Already Connected".to_vec(),
                    SocketError::InvalidIp => b"[P6     ] Invalid IP Address".to_vec(),
                    SocketError::ConnectFailed => b"[TCP  RC] Failed to connect".to_vec(),
                    SocketError::UdpFailed => b"[UDP  RC] Error connecting".to_vec(),
                    SocketError::ModeNotSupported => b"Mode not supported.".to_vec(),
                    SocketError::Tls(t) => t.text(),
                },
            ),
            Error::Server(ServerError::StartFailed) => fail(M::P5, b""),
            Error::Server(ServerError::ModeNotSupported) => fail(M::P5, b"Mode not supported."),
            Error::Server(ServerError::NotServing) => fail(M::P7, b""),
            Error::Server(ServerError::Tls(e)) => fail(M::P5, &e.text()),
            Error::Cert(CertError::NoSuchSet(m)) => Reply::Error {
                payload: Vec::new(),
                reason: Reason::BadArgument,
                usage: Some(*m),
            },
            Error::Cert(CertError::Used) => {
                fail(M::PG, b"[CERTS   ] Selected item unavailable (used)")
            }
            Error::Cert(CertError::WriteFailed) => {
                fail(M::PG, b"[CERTS  ] Failed to write to iFlash: 1")
            }
            Error::Cert(CertError::NotPem) => Reply::Error {
                payload: Vec::new(),
                reason: Reason::BadArgument,
                usage: Some(M::PG),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iwin::reply::{MessageType, Wire};

    #[test]
    fn wire_texts() {
        let n = MessageType::Normal;
        let w = |e: Error| Wire::default().encode(&e.reply(), n);
        assert_eq!(w(Error::Closed(Mnemonic::S3)), b"\r\n-1\r\nERROR\r\n> ");
        assert_eq!(
            w(Error::PayloadTimeout(Mnemonic::PG)),
            b"\r\n\r\nERROR: Unknown Error\r\nUsage: PG <set>,<0=Root CA/1=Certificate/2=Key>,<length>\r\n> "
        );
        assert_eq!(
            w(TlsError::InUse(2).into()),
            b"\r\n[TCP SSL] In use by socket 2\r\nERROR: Unknown Error\r\nUsage: P6 <0=Stop/1=Start>\r\n> "
        );
        assert_eq!(
            w(StationError::JoinFailed {
                ssid: b"x".to_vec()
            }
            .into()),
            b"\r\n[JOIN   ] x\r\n[JOIN   ] Failed\r\nERROR: Unknown Error\r\nUsage: C0 \r\n> "
        );
        assert_eq!(
            Wire::default().encode(&Error::from(CertError::Used).reply(), MessageType::Simple),
            b"\r\n[CERTS   ] Selected item unavailable (used)\r\nERROR\r\n> "
        );
    }
}
