//! Core ↔ driver boundary (layer: module API). Plain data only: the core emits [`NetOp`]s and consumes
//! [`NetEvent`]s; the driver (src/net, src/driver.rs) performs them with real sockets. Nothing here does IO.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// Identifies one network connection (or UDP socket) for its whole life. Never reused, so a late event
/// for a connection the core already dropped is recognised and ignored.
pub type ConnId = u64;

/// Identifies one DNS query.
pub type QueryId = u64;

/// A socket operation the driver must perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetOp {
    /// Resolve a host name to an IPv4 address off the event loop; answer with [`NetEvent::Resolved`].
    Resolve { query: QueryId, name: String },
    /// Open a non-blocking TCP connection from `local` (port 0 = ephemeral) to `remote`; answer with
    /// `Connected` or `ConnectFailed`. `keepalive` enables TCP keep-alive with that idle time.
    Connect {
        conn: ConnId,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        keepalive: Option<Duration>,
        /// Run a TLS client handshake over the connection; `Connected` only once it completed.
        tls: Option<TlsParams>,
    },
    /// Bind a UDP socket on `local`; if that port is taken and `ephemeral_fallback` is set, bind an
    /// ephemeral port instead. Answer with `Connected` (bound) or `ConnectFailed`.
    OpenUdp {
        conn: ConnId,
        local: SocketAddrV4,
        ephemeral_fallback: bool,
    },
    /// Send bytes: a stream write for TCP, one datagram to `to` for UDP. Answer with `Sent` once the bytes
    /// are accepted (the driver may hold them while the kernel buffer is full) or `Closed`.
    Send {
        conn: ConnId,
        data: Vec<u8>,
        to: Option<SocketAddrV4>,
    },
    /// Listen for TCP clients on `local` (module-side server). Answer with `Connected` (listening) or
    /// `ConnectFailed`; then one `Accepted` per client, each with a fresh connection id chosen by the
    /// driver (ids with [`ACCEPTED_BIT`] set, so they never collide with the core's own).
    Listen {
        conn: ConnId,
        local: SocketAddrV4,
        backlog: u32,
    },
    /// Send `count` ICMP echo requests to `target`, `interval` apart, waiting up to `timeout` for each
    /// reply, off the event loop; answer with [`NetEvent::PingDone`].
    Ping {
        query: QueryId,
        target: Ipv4Addr,
        count: u32,
        interval: Duration,
        timeout: Duration,
    },
    /// Close and forget the connection. No further events for it are expected (stale ones are ignored).
    Close { conn: ConnId },
}

/// Set in the ids the driver gives accepted connections.
pub const ACCEPTED_BIT: ConnId = 1 << 63;

/// Why a connection attempt failed (the log carries the detail; the wire reply follows the kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    Refused,
    Unreachable,
    TimedOut,
    AddrInUse,
    /// The TCP connection worked but the TLS handshake failed; the text is the precise reason.
    Tls(String),
    Other(String),
}

/// Why an established connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Orderly end of stream from the peer.
    PeerClosed,
    /// Reset or any IO error.
    Error(String),
}

/// Something that happened on the network side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    Resolved {
        query: QueryId,
        result: Result<Ipv4Addr, String>,
    },
    /// The connection is established (TCP) or the UDP socket is bound; `local` is its local address.
    Connected {
        conn: ConnId,
        local: SocketAddrV4,
    },
    ConnectFailed {
        conn: ConnId,
        error: ConnectError,
    },
    /// Stream bytes received.
    Data {
        conn: ConnId,
        data: Vec<u8>,
    },
    /// One UDP datagram received.
    Datagram {
        conn: ConnId,
        data: Vec<u8>,
        from: SocketAddrV4,
    },
    /// The bytes of the oldest unanswered `Send` were accepted.
    Sent {
        conn: ConnId,
    },
    Closed {
        conn: ConnId,
        reason: CloseReason,
    },
    /// A client connected to the listener `listener`; it is connection `conn` from now on.
    Accepted {
        listener: ConnId,
        conn: ConnId,
        peer: SocketAddrV4,
    },
    /// The round trip of each echo request in order (None: no reply in time). `Err` when no ICMP
    /// socket could be opened at all (the text says why).
    PingDone {
        query: QueryId,
        result: Result<Vec<Option<Duration>>, String>,
    },
}

/// A write to the module's flash (the on-disk store) the driver must perform off the event loop,
/// crash-safely; answer with [`crate::module::Module::handle_stored`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// One item of a certificate set (`PG`).
    Item {
        req: u64,
        set: usize,
        item: crate::module::certs::Item,
        data: Vec<u8>,
    },
    /// The saved settings (`Z1`), as [`crate::module::Module`] serialises them.
    Settings { req: u64, data: Vec<u8> },
}

impl StoreOp {
    pub fn req(&self) -> u64 {
        match self {
            StoreOp::Item { req, .. } | StoreOp::Settings { req, .. } => *req,
        }
    }
}

/// What a TLS client socket (`P1=3`) needs from the module: the verification level and the items of
/// the active certificate set. The core has already checked that what the level needs is present and
/// parses; the driver builds the rustls configuration from it.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsParams {
    /// The active set (`PF=0,<set>`), for diagnostics.
    pub set: usize,
    /// `P9`: 0 none, 1 root CA if programmed, 2 root CA + client certificate and key.
    pub verify: u8,
    /// `PB=1`: a failed verification is logged but the connection proceeds.
    pub report_only: bool,
    /// PEM bytes of the set's root CA when it is to be used for verification.
    pub ca: Option<Vec<u8>>,
    /// PEM bytes of the client certificate and key when they are to be presented (P9=2).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
    /// Server name: SNI (when it is a DNS name) and the name checked when `check_hostname` is set.
    pub server_name: Option<String>,
    pub check_hostname: bool,
}

/// Lengths only: logs never carry certificate or key bytes.
impl std::fmt::Debug for TlsParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsParams")
            .field("set", &self.set)
            .field("verify", &self.verify)
            .field("report_only", &self.report_only)
            .field("ca_bytes", &self.ca.as_ref().map(Vec::len))
            .field("client_cert_and_key", &self.client.is_some())
            .field("server_name", &self.server_name)
            .field("check_hostname", &self.check_hostname)
            .finish()
    }
}
