//! Core ↔ driver boundary (layer: module API). Plain data only: the core emits [`NetOp`]s and consumes
//! [`NetEvent`]s; the driver (src/net, src/driver.rs) performs them with real sockets. Nothing here does IO.
//!
//! The contract, exactly:
//! - Every connection the core opens has a [`ConnId`] that is never reused; the driver's events name it.
//! - `Send { seq }` is answered by exactly one `Sent { seq }` once all its bytes went to the kernel,
//!   in the order the sends were made; a connection whose write fails is reported `Closed` instead.
//!   The core never has more than [`SEND_WINDOW`] unanswered bytes per connection, so the driver's
//!   buffer per connection is bounded by it.
//! - `Close { how: Drain }` delivers what was sent, then closes gracefully; the driver answers with one
//!   `Closed { reason: Drained }` (or `Closed` with an error). `Close { how: Abort }` drops the
//!   connection at once (`Reset`: with an RST) and is never answered. After a `Close` no other event names the connection.
//! - The driver never times anything out: every deadline is a core timer ([`crate::module::Module::poll_timeout`]).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// Ids the core hands out (one counter for all, so no two are equal whatever their kind); each kind
/// is its own type, so one cannot be passed where another is meant. Display shows the number.
macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
            pub struct $name(pub u64);

            impl std::fmt::Display for $name {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    self.0.fmt(f)
                }
            }
        )*
    };
}

ids! {
    /// Identifies one network connection (or UDP socket) for its whole life. Never reused, so a late
    /// event for a connection the core already dropped is recognised and ignored.
    ConnId;
    /// Identifies one DNS query or ping.
    QueryId;
    /// Identifies one `Send`; `Sent` echoes it.
    SendSeq;
    /// Identifies one store write; [`crate::module::Module::handle_stored`] names it.
    StoreReq;
}

/// Unanswered send bytes the core allows per connection: the emulated socket send buffer.
pub const SEND_WINDOW: usize = 64 * 1024;

/// How a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseHow {
    /// Deliver every byte already sent, then end the stream (FIN), as lwIP's `tcp_close` does.
    Drain,
    /// Drop it now (module reset, Wi-Fi disconnect, a refused client).
    Abort,
    /// Drop it with a reset (RST) the peer sees: the fault layer's `net.reset`. Never answered.
    Reset,
}

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
    },
    /// Bind a UDP socket on `local`; if that port is taken and `ephemeral_fallback` is set, bind an
    /// ephemeral port instead. Answer with `Connected` (bound) or `ConnectFailed`.
    OpenUdp {
        conn: ConnId,
        local: SocketAddrV4,
        ephemeral_fallback: bool,
    },
    /// Send bytes: a stream write for TCP, one datagram to `to` for UDP. Answer with `Sent { seq }`.
    Send {
        conn: ConnId,
        seq: SendSeq,
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
    /// Close the connection (see [`CloseHow`]).
    Close { conn: ConnId, how: CloseHow },
}

/// Set in the ids the driver gives accepted connections (`ConnId(ACCEPTED_BIT | n)`).
pub const ACCEPTED_BIT: u64 = 1 << 63;

/// Why a connection attempt failed (the log carries the detail; the wire reply follows the kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    Refused,
    Unreachable,
    TimedOut,
    AddrInUse,
    /// Anything else: what the system said.
    Other(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused => f.write_str("connection refused"),
            ConnectError::Unreachable => f.write_str("network or host unreachable"),
            ConnectError::TimedOut => f.write_str("timed out"),
            ConnectError::AddrInUse => f.write_str("address in use"),
            ConnectError::Other(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Orderly end of stream from the peer.
    PeerClosed,
    /// Reset or any IO error: what the system said.
    Error(String),
    /// A `Close { how: Drain }` completed.
    Drained,
}

/// Why a name lookup ([`NetOp::Resolve`]) found no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// The system resolver failed: what it said.
    Lookup(String),
    /// The name has addresses, none of them IPv4.
    NoIpv4,
    /// No worker took the lookup (all busy and the queue full, or none left): why.
    Refused(String),
    /// A fault (`dns.fail`) made it fail.
    Fault,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Lookup(why) => f.write_str(why),
            ResolveError::NoIpv4 => f.write_str("no IPv4 address"),
            ResolveError::Refused(why) => write!(f, "not started: {why}"),
            ResolveError::Fault => f.write_str("failed by a fault"),
        }
    }
}

impl std::error::Error for ResolveError {}

/// Why a ping ([`NetOp::Ping`]) could not run at all (a lost reply is not an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingError {
    /// No ICMP socket could be opened (neither datagram nor raw): why.
    NoSocket(String),
    /// The socket failed before the first request went out: what the system said.
    Io(String),
    /// No worker took the ping (all busy and the queue full, or none left): why.
    Refused(String),
}

impl fmt::Display for PingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PingError::NoSocket(why) => write!(f, "no ICMP socket: {why}"),
            PingError::Io(why) => f.write_str(why),
            PingError::Refused(why) => write!(f, "not started: {why}"),
        }
    }
}

impl std::error::Error for PingError {}

/// Why a store write ([`StoreOp`]) was not made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// The module runs without a store.
    NoStore,
    /// Writing `path` failed: what the system said.
    Io { path: String, why: String },
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::NoStore => f.write_str("no certificate store"),
            WriteError::Io { path, why } => write!(f, "{path}: {why}"),
        }
    }
}

impl std::error::Error for WriteError {}

/// Something that happened on the network side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    Resolved {
        query: QueryId,
        result: Result<Ipv4Addr, ResolveError>,
    },
    /// The connection is established (TCP), the UDP socket is bound, or the listener listens; `local`
    /// is its local address, `peer` the far end of a TCP connection (None for the other two).
    Connected {
        conn: ConnId,
        local: SocketAddrV4,
        peer: Option<SocketAddrV4>,
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
    /// Every byte of the `Send` numbered `seq` went to the kernel.
    Sent {
        conn: ConnId,
        seq: SendSeq,
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
    /// The round trip of each echo request in order (None: no reply in time). `Err` when the
    /// ping could not run at all.
    PingDone {
        query: QueryId,
        result: Result<Vec<Option<Duration>>, PingError>,
    },
}

impl NetEvent {
    /// The connection the event is about (None for DNS and ping answers).
    pub fn conn(&self) -> Option<ConnId> {
        match self {
            NetEvent::Resolved { .. } | NetEvent::PingDone { .. } => None,
            NetEvent::Accepted { conn, .. }
            | NetEvent::Connected { conn, .. }
            | NetEvent::ConnectFailed { conn, .. }
            | NetEvent::Data { conn, .. }
            | NetEvent::Datagram { conn, .. }
            | NetEvent::Sent { conn, .. }
            | NetEvent::Closed { conn, .. } => Some(*conn),
        }
    }
}

/// A write to the module's flash (the on-disk store) the driver must perform off the event loop,
/// crash-safely; answer with [`crate::module::Module::handle_stored`].
#[derive(Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// One item of a certificate set (`PG`).
    Item {
        req: StoreReq,
        set: usize,
        item: crate::item::Item,
        data: Vec<u8>,
    },
    /// The saved settings (`Z1`), as [`crate::module::Module`] serialises them.
    Settings { req: StoreReq, data: Vec<u8> },
}

impl StoreOp {
    pub fn req(&self) -> StoreReq {
        match self {
            StoreOp::Item { req, .. } | StoreOp::Settings { req, .. } => *req,
        }
    }
}

/// Lengths only: an item may be a private key, the settings hold the Wi-Fi passphrase.
impl std::fmt::Debug for StoreOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreOp::Item {
                req,
                set,
                item,
                data,
            } => write!(
                f,
                "StoreOp::Item #{req} set {set} {item:?} ({} bytes)",
                data.len()
            ),
            StoreOp::Settings { req, data } => {
                write!(f, "StoreOp::Settings #{req} ({} bytes)", data.len())
            }
        }
    }
}
