//! The TCP front ends (layer: edge): a server taking one host at a time (`--listen`, QEMU's
//! `-serial tcp:`) and a client that reconnects (`--connect`, Renode's server socket terminal).
//! A host that sends its last byte (EOF: it half-closed, or closed) is reported as `ended` and
//! still written to; a connection that fails is `closed`. Knows nothing of IWIN.

use super::port::Happened;
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Longest wait between two attempts of `--connect` to reach its host, or of `--listen` to accept
/// after a failure (EMFILE: out of file descriptors).
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// First wait after a failed or dropped connection (doubled each time, up to the max).
pub(crate) const BACKOFF: Duration = Duration::from_millis(100);

fn interest(writable: bool) -> Interest {
    if writable {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}

/// An error that ends a connection (not "try again").
fn fatal(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Read from a host connection: EOF is `ended`, an error `closed` (and `gone` is set).
fn read_conn(
    s: &mut TcpStream,
    buf: &mut [u8],
    h: &mut Happened,
    gone: &mut bool,
) -> io::Result<usize> {
    match s.read(buf) {
        Ok(0) if !buf.is_empty() => {
            h.ended = true;
            Err(io::ErrorKind::WouldBlock.into())
        }
        Err(e) if fatal(&e) => {
            log::debug!("host connection: {e}");
            *gone = true;
            Err(io::ErrorKind::WouldBlock.into())
        }
        other => other,
    }
}

fn write_conn(s: &mut TcpStream, data: &[u8], gone: &mut bool) -> io::Result<usize> {
    match s.write(data) {
        Err(e) if fatal(&e) => {
            log::debug!("host connection: {e}");
            *gone = true;
            Err(io::ErrorKind::WouldBlock.into())
        }
        other => other,
    }
}

/// A TCP server for one host at a time; later hosts wait in the kernel's queue, their bytes kept.
pub(crate) struct Listen {
    listener: TcpListener,
    conn: Option<(TcpStream, SocketAddr)>,
    writable: bool,
    /// Accepting failed (out of descriptors): try again then.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Listen {
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Listen> {
        Ok(Listen {
            listener: TcpListener::bind(addr)?,
            conn: None,
            writable: false,
            retry_at: None,
            backoff: BACKOFF,
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.listener, token, Interest::READABLE)
    }

    /// `second`: the event is the connection's, else the listener's.
    pub(crate) fn handle_event(&self, event: &Event, second: bool) -> Happened {
        let mut h = Happened::default();
        if second {
            h.readable = event.is_readable() || event.is_read_closed() || event.is_error();
            h.hup = event.is_read_closed() || event.is_error();
            h.writable = event.is_writable();
        } else if let Some((_, peer)) = &self.conn {
            // Not accepted: the kernel keeps it (and what it sends) until this host leaves.
            log::info!("a host is waiting to connect; {peer} has the line until it leaves");
        } else {
            h.acceptable = true;
        }
        h
    }

    pub(crate) fn read(
        &mut self,
        registry: &Registry,
        buf: &mut [u8],
        h: &mut Happened,
    ) -> io::Result<usize> {
        let Some((s, _)) = &mut self.conn else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let mut gone = false;
        let r = read_conn(s, buf, h, &mut gone);
        if gone {
            h.closed = true;
            self.close_host(registry);
        }
        r
    }

    pub(crate) fn write(
        &mut self,
        registry: &Registry,
        data: &[u8],
        h: &mut Happened,
    ) -> io::Result<usize> {
        let Some((s, _)) = &mut self.conn else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let mut gone = false;
        let r = write_conn(s, data, &mut gone);
        if gone {
            h.closed = true;
            self.close_host(registry);
        }
        r
    }

    pub(crate) fn want_writable(
        &mut self,
        registry: &Registry,
        token: Token,
        want: bool,
    ) -> io::Result<()> {
        match &mut self.conn {
            Some((s, _)) if self.writable != want => {
                registry.reregister(s, token, interest(want))?;
                self.writable = want;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Take the next waiting host, if any (none while one is attached). A failure (EMFILE) is
    /// logged and retried later with backoff: the emulator keeps serving.
    pub(crate) fn accept_next(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Instant,
    ) -> Happened {
        let mut h = Happened::default();
        if self.conn.is_some() {
            return h;
        }
        loop {
            match self.listener.accept() {
                Ok((mut s, peer)) => {
                    if let Err(e) = registry.register(&mut s, token, Interest::READABLE) {
                        log::warn!("host {peer}: {e}; dropped");
                        continue;
                    }
                    let _ = s.set_nodelay(true);
                    log::info!("host {peer} connected");
                    self.conn = Some((s, peer));
                    self.retry_at = None;
                    self.backoff = BACKOFF;
                    h.opened = true;
                    h.readable = true;
                    h.writable = true;
                    return h;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return h,
                Err(e) => {
                    let level = if self.retry_at.is_none() && self.backoff == BACKOFF {
                        log::Level::Warn
                    } else {
                        log::Level::Debug
                    };
                    log::log!(
                        level,
                        "accepting a host: {e}; trying again in {:?}",
                        self.backoff
                    );
                    self.retry_at = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    return h;
                }
            }
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Whether the retry is due (then [`Listen::accept_next`] tries again).
    pub(crate) fn retry_due(&mut self, now: Instant) -> bool {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            return true;
        }
        false
    }

    /// Drop the host's connection (it left, or it has every reply it asked for).
    pub(crate) fn close_host(&mut self, registry: &Registry) {
        if let Some((mut s, peer)) = self.conn.take() {
            let _ = registry.deregister(&mut s);
            log::info!("host {peer} disconnected");
        }
        self.writable = false;
    }

    pub(crate) fn host_attached(&self) -> bool {
        self.conn.is_some()
    }
}

/// A TCP client of the host's server, reconnecting with backoff.
pub(crate) struct Connect {
    target: SocketAddr,
    conn: Option<TcpStream>,
    /// Connected (not still connecting).
    up: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
    writable: bool,
}

impl Connect {
    /// The first attempt is made when the line first looks at its deadline.
    pub(crate) fn new(target: SocketAddr) -> Connect {
        Connect {
            target,
            conn: None,
            up: false,
            retry_at: Some(Instant::now()),
            backoff: BACKOFF,
            writable: false,
        }
    }

    pub(crate) fn target(&self) -> SocketAddr {
        self.target
    }

    pub(crate) fn handle_event(&mut self, registry: &Registry, event: &Event) -> Happened {
        let mut h = Happened::default();
        if !self.up {
            let Some(c) = &self.conn else {
                return h;
            };
            match connected(c) {
                Ok(true) => {
                    self.up = true;
                    log::info!("connected to {}", self.target);
                    h.opened = true;
                    h.readable = true;
                    h.writable = true;
                }
                Ok(false) => {}
                Err(e) => {
                    log::debug!("connect {}: {e}", self.target);
                    self.close_host(registry);
                }
            }
            return h;
        }
        h.readable = event.is_readable() || event.is_read_closed() || event.is_error();
        h.hup = event.is_read_closed() || event.is_error();
        h.writable = event.is_writable();
        h
    }

    pub(crate) fn read(
        &mut self,
        registry: &Registry,
        buf: &mut [u8],
        h: &mut Happened,
    ) -> io::Result<usize> {
        let Some(s) = self.conn.as_mut().filter(|_| self.up) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let mut gone = false;
        let r = read_conn(s, buf, h, &mut gone);
        if gone {
            h.closed = true;
            self.close_host(registry);
        }
        r
    }

    pub(crate) fn write(
        &mut self,
        registry: &Registry,
        data: &[u8],
        h: &mut Happened,
    ) -> io::Result<usize> {
        let Some(s) = self.conn.as_mut().filter(|_| self.up) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let mut gone = false;
        let r = write_conn(s, data, &mut gone);
        if gone {
            h.closed = true;
            self.close_host(registry);
        }
        r
    }

    pub(crate) fn want_writable(
        &mut self,
        registry: &Registry,
        token: Token,
        want: bool,
    ) -> io::Result<()> {
        match &mut self.conn {
            Some(s) if self.up && self.writable != want => {
                registry.reregister(s, token, interest(want))?;
                self.writable = want;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Time has come: (re)connect.
    pub(crate) fn handle_deadline(
        &mut self,
        registry: &Registry,
        token: Token,
        now: Instant,
    ) -> io::Result<()> {
        if self.retry_at.is_none_or(|t| t > now) || self.conn.is_some() {
            return Ok(());
        }
        self.retry_at = None;
        self.up = false;
        match TcpStream::connect(self.target) {
            Ok(mut s) => {
                registry.register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
                self.writable = true;
                self.conn = Some(s);
            }
            Err(e) => {
                log::debug!("connect {}: {e}", self.target);
                self.close_host(registry);
            }
        }
        Ok(())
    }

    /// Drop the connection and schedule the next attempt.
    pub(crate) fn close_host(&mut self, registry: &Registry) {
        if let Some(mut s) = self.conn.take() {
            let _ = registry.deregister(&mut s);
            if self.up {
                log::info!("connection to {} closed; reconnecting", self.target);
                self.backoff = BACKOFF;
            }
        }
        self.up = false;
        self.writable = false;
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    pub(crate) fn host_attached(&self) -> bool {
        self.up
    }
}

/// Whether a non-blocking connect finished (Err: it failed).
fn connected(s: &TcpStream) -> io::Result<bool> {
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    match s.peer_addr() {
        Ok(_) => Ok(true),
        Err(e)
            if e.kind() == io::ErrorKind::NotConnected
                || e.raw_os_error() == Some(libc::EINPROGRESS) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}
