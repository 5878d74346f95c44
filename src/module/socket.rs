//! One of the module's four sockets (layer: core). Settings set by `P1`..`P9`, `PK`, `R*`, `S*`, the
//! connection state and the receive queue. Pure data and transitions; the module issues the
//! operations.

use super::io::ConnId;
use super::server::Server;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

/// Receive queue limit per socket; beyond it the driver stops reading (TCP window closes).
pub const RX_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp = 0,
    Udp = 1,
    UdpLite = 2,
    Tls = 3,
    Mqtt = 4,
}

impl Protocol {
    pub fn from_code(c: u8) -> Protocol {
        match c {
            1 => Protocol::Udp,
            2 => Protocol::UdpLite,
            3 => Protocol::Tls,
            4 => Protocol::Mqtt,
            _ => Protocol::Tcp,
        }
    }

    pub fn is_datagram(self) -> bool {
        matches!(self, Protocol::Udp | Protocol::UdpLite)
    }
}

/// Where the socket's client connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Idle,
    /// `P6=1` issued; waiting for the driver. Fails at `deadline`.
    Connecting {
        conn: ConnId,
        deadline: Instant,
    },
    Connected {
        conn: ConnId,
        local: SocketAddrV4,
    },
    /// The peer closed (or the connection broke); queued data may remain, then reads give `-1`.
    Closed,
}

/// Received data: a byte stream (TCP/TLS) or whole datagrams (UDP).
#[derive(Debug, Default)]
pub struct RxQueue {
    stream: VecDeque<u8>,
    datagrams: VecDeque<(Vec<u8>, SocketAddrV4)>,
    datagram_bytes: usize,
}

impl RxQueue {
    pub fn len(&self) -> usize {
        self.stream.len() + self.datagram_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.stream.is_empty() && self.datagrams.is_empty()
    }

    pub fn push_stream(&mut self, data: &[u8]) {
        self.stream.extend(data);
    }

    pub fn push_datagram(&mut self, data: Vec<u8>, from: SocketAddrV4) {
        self.datagram_bytes += data.len();
        self.datagrams.push_back((data, from));
    }

    /// Up to `max` bytes: a stream chunk, or one datagram cut to `max` (the rest is discarded, as on
    /// the module). Returns the sender for datagrams.
    pub fn take(&mut self, max: usize) -> Option<(Vec<u8>, Option<SocketAddrV4>)> {
        if let Some((mut d, from)) = self.datagrams.pop_front() {
            self.datagram_bytes -= d.len();
            d.truncate(max);
            return Some((d, Some(from)));
        }
        if self.stream.is_empty() {
            return None;
        }
        let n = max.min(self.stream.len());
        Some((self.stream.drain(..n).collect(), None))
    }

    pub fn clear(&mut self) {
        *self = RxQueue::default();
    }
}

#[derive(Debug)]
pub struct Socket {
    pub protocol: Protocol,
    pub local_port: u16,
    pub remote_ip: Ipv4Addr,
    pub remote_port: u16,
    pub backlog: u8,
    pub tls_verify: u8,
    /// `PB=1`: a failed CA verification is reported but the connection proceeds.
    pub verify_report_only: bool,
    pub keepalive: (bool, u32),
    pub read_size: u16,
    pub read_timeout_ms: u32,
    pub read_mode: u8,
    pub send_size: u16,
    pub send_timeout_ms: u32,
    /// `P?` ClientIP: the peer of an accepted client (0.0.0.0 until then).
    pub client_ip: Ipv4Addr,
    pub state: State,
    pub rx: RxQueue,
    /// Set while the socket serves (`P5`).
    pub server: Option<Server>,
}

impl Default for Socket {
    /// Power-up defaults (M46 / T20).
    fn default() -> Self {
        Socket {
            protocol: Protocol::Tcp,
            local_port: 5024,
            remote_ip: Ipv4Addr::UNSPECIFIED,
            remote_port: 5025,
            backlog: 8,
            tls_verify: 0,
            verify_report_only: false,
            keepalive: (false, 7_200_000),
            read_size: 1460,
            read_timeout_ms: 5000,
            read_mode: 0,
            send_size: 1460,
            send_timeout_ms: 5000,
            client_ip: Ipv4Addr::UNSPECIFIED,
            state: State::Idle,
            rx: RxQueue::default(),
            server: None,
        }
    }
}

impl Socket {
    /// The live connection, if any (connecting or connected).
    pub fn conn(&self) -> Option<ConnId> {
        match self.state {
            State::Connecting { conn, .. } | State::Connected { conn, .. } => Some(conn),
            _ => None,
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// Drop the connection and anything queued; returns the connection the driver must close.
    pub fn reset_connection(&mut self) -> Option<ConnId> {
        let conn = self.conn();
        self.state = State::Idle;
        self.rx.clear();
        conn
    }

    /// Drop the connection and any server (listener, waiting clients); returns what the driver must
    /// close.
    pub fn reset_all(&mut self) -> Vec<ConnId> {
        let mut conns: Vec<ConnId> = self.reset_connection().into_iter().collect();
        if let Some(server) = self.server.take() {
            for c in server.conns() {
                if !conns.contains(&c) {
                    conns.push(c);
                }
            }
        }
        self.client_ip = Ipv4Addr::UNSPECIFIED;
        conns
    }

    /// `P?` — `Protocol,ClientIP,LocalPort,HostIP,RemotePort,TCPServer,UDPServer,Backlogs,AcceptLoop,ReadMode`.
    pub fn transport_line(&self) -> String {
        let (tcp_server, udp_server, accept_loop) = match &self.server {
            Some(s) => (!s.udp as u8, s.udp as u8, s.accept_loop as u8),
            None => (0, 0, 0),
        };
        format!(
            "{},{},{},{},{},{},{},{},{},{}",
            self.protocol as u8,
            self.client_ip,
            self.local_port,
            self.remote_ip,
            self.remote_port,
            tcp_server,
            udp_server,
            self.backlog,
            accept_loop,
            self.read_mode
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_beyond_read_size_is_discarded() {
        let mut q = RxQueue::default();
        let from = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
        q.push_datagram(b"abcdef".to_vec(), from);
        q.push_datagram(b"gh".to_vec(), from);
        assert_eq!(q.len(), 8);
        assert_eq!(q.take(4), Some((b"abcd".to_vec(), Some(from))));
        assert_eq!(q.take(4), Some((b"gh".to_vec(), Some(from))));
        assert_eq!(q.take(4), None);
        assert!(q.is_empty());
    }

    #[test]
    fn stream_chunks() {
        let mut q = RxQueue::default();
        q.push_stream(b"hello world");
        assert_eq!(q.take(5).unwrap().0, b"hello");
        assert_eq!(q.take(100).unwrap().0, b" world");
    }
}
