//! One serial line as the event loop sees it (layer: edge): a pty, a real tty opened with the
//! `serialport` crate, a TCP server taking one host at a time, a TCP client that reconnects, or
//! stdin/stdout. Every kind is non-blocking and registered in the driver's `mio::Poll` with the
//! tokens the driver gives it. Knows nothing of IWIN.

use super::pty::Pty;
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serialport::SerialPort;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Longest wait between two attempts of `--connect` to reach its host.
pub(crate) const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);

/// First wait after a failed or dropped `--connect` connection (doubled each time, up to the max).
pub(crate) const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// Hardware flow control of a real serial port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Flow {
    /// None, as on the module.
    None,
    /// RTS/CTS.
    Hw,
}

/// The serial front end chosen on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrontEnd {
    /// A fresh pty per module; `link` may hold `{n}` for the module index.
    Pty { link: Option<String> },
    /// A real tty (USB-UART) at `path`.
    Serial { path: PathBuf, flow: Flow },
    /// A TCP server for one host at a time (module k listens on port + k).
    Listen(SocketAddr),
    /// A TCP client to the host's server (module k connects to port + k).
    Connect(SocketAddr),
    /// stdin/stdout.
    Stdio,
}

/// What an event on the port meant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Happened {
    /// Input may be waiting.
    pub readable: bool,
    /// Output may go on.
    pub writable: bool,
    /// A host opened the line (pty open, TCP connection).
    pub opened: bool,
    /// The host closed it (it may come back).
    pub closed: bool,
    /// The line is gone for good (stdin reached its end): time to stop.
    pub ended: bool,
}

/// A serial line of one module.
pub(crate) enum Port {
    Pty {
        pty: Pty,
        /// Reports opens of the slave path (`--reset-on-open`).
        opens: Option<Inotify>,
    },
    Tty(serialport::TTYPort),
    Listen {
        listener: TcpListener,
        conn: Option<(TcpStream, SocketAddr)>,
        writable: bool,
    },
    Connect {
        target: SocketAddr,
        conn: Option<TcpStream>,
        /// Connected (not still connecting).
        up: bool,
        retry_at: Option<Instant>,
        backoff: Duration,
        writable: bool,
    },
    Stdio {
        writable: bool,
    },
}

fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// The descriptor of a tty port (serialport's `TTYPort` offers only the raw one).
fn tty_fd(t: &serialport::TTYPort) -> BorrowedFd<'_> {
    // SAFETY: the port owns the fd for as long as `t` lives, and the borrow cannot outlive `t`.
    unsafe { BorrowedFd::borrow_raw(t.as_raw_fd()) }
}

impl Port {
    /// A pty; with `watch_opens`, host opens of its slave path are reported.
    pub(crate) fn pty(pty: Pty, watch_opens: bool) -> io::Result<Port> {
        let opens = if watch_opens {
            let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
            ino.add_watch(pty.slave_path(), AddWatchFlags::IN_OPEN)?;
            Some(ino)
        } else {
            None
        };
        Ok(Port::Pty { pty, opens })
    }

    /// A real tty at `path`: 8N1, the given rate and flow control, non-blocking.
    pub(crate) fn tty(path: &std::path::Path, baud: u32, flow: Flow) -> io::Result<Port> {
        let flow = match flow {
            Flow::None => serialport::FlowControl::None,
            Flow::Hw => serialport::FlowControl::Hardware,
        };
        let port = serialport::new(path.to_string_lossy(), baud)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(flow)
            .open_native()
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        set_nonblocking(tty_fd(&port))?;
        Ok(Port::Tty(port))
    }

    /// A TCP server for one host at a time.
    pub(crate) fn listen(addr: SocketAddr) -> io::Result<Port> {
        let listener = TcpListener::bind(addr)?;
        Ok(Port::Listen {
            listener,
            conn: None,
            writable: false,
        })
    }

    /// A TCP client of `target` (the first attempt is made at registration).
    pub(crate) fn connect(target: SocketAddr) -> Port {
        Port::Connect {
            target,
            conn: None,
            up: false,
            retry_at: Some(Instant::now()),
            backoff: RECONNECT_BACKOFF,
            writable: false,
        }
    }

    /// stdin and stdout (made non-blocking).
    pub(crate) fn stdio() -> io::Result<Port> {
        set_nonblocking(io::stdin())?;
        set_nonblocking(io::stdout())?;
        Ok(Port::Stdio { writable: false })
    }

    /// How many tokens [`Port::register`] needs.
    pub(crate) fn token_count(&self) -> usize {
        match self {
            Port::Tty(_) => 1,
            Port::Pty { .. } | Port::Listen { .. } | Port::Connect { .. } | Port::Stdio { .. } => 2,
        }
    }

    /// What a host is told to open: the pty path, the device, the address.
    pub(crate) fn describe(&self) -> String {
        match self {
            Port::Pty { pty, .. } => pty.slave_path().display().to_string(),
            Port::Tty(t) => t.name().unwrap_or_default(),
            Port::Listen { listener, .. } => listener
                .local_addr()
                .map_or_else(|e| format!("?({e})"), |a| a.to_string()),
            Port::Connect { target, .. } => target.to_string(),
            Port::Stdio { .. } => "stdio".into(),
        }
    }

    /// Register with the poll: `tokens[0]` for the line itself, `tokens[1]` for the second source
    /// (the open watch, the accepted or outgoing connection, stdout).
    pub(crate) fn register(&mut self, registry: &Registry, tokens: &[Token]) -> io::Result<()> {
        match self {
            Port::Pty { pty, opens } => {
                registry.register(
                    &mut SourceFd(&pty.as_raw_fd()),
                    tokens[0],
                    Interest::READABLE,
                )?;
                if let Some(ino) = opens {
                    registry.register(
                        &mut SourceFd(&ino.as_fd().as_raw_fd()),
                        tokens[1],
                        Interest::READABLE,
                    )?;
                }
            }
            Port::Tty(t) => {
                registry.register(&mut SourceFd(&t.as_raw_fd()), tokens[0], Interest::READABLE)?
            }
            Port::Listen { listener, .. } => {
                registry.register(listener, tokens[0], Interest::READABLE)?
            }
            Port::Connect { .. } => {}
            Port::Stdio { .. } => {
                registry.register(&mut SourceFd(&0), tokens[0], Interest::READABLE)?;
            }
        }
        Ok(())
    }

    /// Digest a readiness event for one of the port's tokens.
    pub(crate) fn handle_event(
        &mut self,
        registry: &Registry,
        tokens: &[Token],
        event: &Event,
    ) -> io::Result<Happened> {
        let mut h = Happened::default();
        let second = event.token() == tokens[1 % tokens.len()] && tokens.len() > 1;
        match self {
            Port::Pty { opens, .. } if second => {
                if let Some(ino) = opens {
                    loop {
                        match ino.read_events() {
                            Ok(evs) if !evs.is_empty() => h.opened = true,
                            Ok(_) => break,
                            Err(nix::errno::Errno::EAGAIN) => break,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
            Port::Listen { listener, conn, .. } if !second => match conn {
                None => h = accept_one(registry, listener, conn, tokens[1])?,
                // Not accepted: the kernel keeps it (and what it sends) until this host leaves.
                Some((_, peer)) => {
                    log::info!("a host is waiting to connect; {peer} has the line until it leaves")
                }
            },
            Port::Connect {
                up, conn, target, ..
            } if second => {
                if !*up {
                    if let Some(c) = conn {
                        match connected(c) {
                            Ok(true) => {
                                log::info!("connected to {target}");
                                *up = true;
                                h.opened = true;
                                h.readable = true;
                                h.writable = true;
                            }
                            Ok(false) => {}
                            Err(e) => {
                                log::debug!("connect: {e}");
                                self.drop_conn(registry);
                                return Ok(Happened::default());
                            }
                        }
                        return Ok(h);
                    }
                }
                h.readable = event.is_readable() || event.is_read_closed() || event.is_error();
                h.writable = event.is_writable();
            }
            Port::Stdio { .. } if second => h.writable = true,
            _ => {
                h.readable = event.is_readable() || event.is_read_closed() || event.is_error();
                h.writable = event.is_writable();
            }
        }
        Ok(h)
    }

    /// Read what the host sent (`WouldBlock`: nothing now). A host that left is reported in
    /// `happened.closed` and reads as `WouldBlock`.
    pub(crate) fn read(
        &mut self,
        registry: &Registry,
        buf: &mut [u8],
        happened: &mut Happened,
    ) -> io::Result<usize> {
        let r = match self {
            Port::Pty { pty, .. } => pty.read(buf),
            Port::Tty(t) => nix::unistd::read(tty_fd(t), buf).map_err(io::Error::from),
            Port::Listen { conn, .. } => match conn {
                Some((s, _)) => s.read(buf),
                None => Err(io::ErrorKind::WouldBlock.into()),
            },
            Port::Connect { conn, up, .. } => match conn {
                Some(s) if *up => s.read(buf),
                _ => Err(io::ErrorKind::WouldBlock.into()),
            },
            Port::Stdio { .. } => nix::unistd::read(io::stdin(), buf).map_err(io::Error::from),
        };
        match r {
            Ok(0) if buf.is_empty() => Ok(0),
            Ok(0) => match self {
                // Not expected while we hold the slave open; treat as nothing.
                Port::Pty { .. } | Port::Tty(_) => Err(io::ErrorKind::WouldBlock.into()),
                Port::Stdio { .. } => {
                    happened.ended = true;
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Port::Listen { .. } | Port::Connect { .. } => {
                    happened.closed = true;
                    self.drop_conn(registry);
                    Err(io::ErrorKind::WouldBlock.into())
                }
            },
            Err(e)
                if matches!(self, Port::Listen { .. } | Port::Connect { .. })
                    && !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
            {
                log::debug!("host connection: {e}");
                happened.closed = true;
                self.drop_conn(registry);
                Err(io::ErrorKind::WouldBlock.into())
            }
            other => other,
        }
    }

    /// Write towards the host (`WouldBlock`: full, or no host connected — the bytes wait).
    pub(crate) fn write(
        &mut self,
        registry: &Registry,
        data: &[u8],
        happened: &mut Happened,
    ) -> io::Result<usize> {
        let r = match self {
            Port::Pty { pty, .. } => pty.write(data),
            Port::Tty(t) => nix::unistd::write(tty_fd(t), data).map_err(io::Error::from),
            Port::Listen { conn, .. } => match conn {
                Some((s, _)) => s.write(data),
                None => Err(io::ErrorKind::WouldBlock.into()),
            },
            Port::Connect { conn, up, .. } => match conn {
                Some(s) if *up => s.write(data),
                _ => Err(io::ErrorKind::WouldBlock.into()),
            },
            Port::Stdio { .. } => {
                let out = std::io::stdout();
                nix::unistd::write(out.as_fd(), data).map_err(io::Error::from)
            }
        };
        match r {
            Err(e)
                if matches!(self, Port::Listen { .. } | Port::Connect { .. })
                    && !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
            {
                log::debug!("host connection: {e}");
                happened.closed = true;
                self.drop_conn(registry);
                Err(io::ErrorKind::WouldBlock.into())
            }
            Err(e)
                if matches!(self, Port::Stdio { .. }) && e.kind() == io::ErrorKind::BrokenPipe =>
            {
                happened.ended = true;
                Err(io::ErrorKind::WouldBlock.into())
            }
            other => other,
        }
    }

    /// Ask for (or stop asking for) writability while output waits.
    pub(crate) fn want_writable(
        &mut self,
        registry: &Registry,
        tokens: &[Token],
        want: bool,
    ) -> io::Result<()> {
        match self {
            Port::Pty { pty, .. } => reregister(registry, pty.as_raw_fd(), tokens[0], want, true),
            Port::Tty(t) => reregister(registry, t.as_raw_fd(), tokens[0], want, true),
            Port::Listen { conn, writable, .. } => match conn {
                Some((s, _)) if *writable != want => {
                    registry.reregister(s, tokens[1], interest(want))?;
                    *writable = want;
                    Ok(())
                }
                _ => Ok(()),
            },
            Port::Connect {
                conn, up, writable, ..
            } => match conn {
                Some(s) if *up && *writable != want => {
                    registry.reregister(s, tokens[1], interest(want))?;
                    *writable = want;
                    Ok(())
                }
                _ => Ok(()),
            },
            Port::Stdio { writable } => {
                if *writable != want {
                    if want {
                        registry.register(&mut SourceFd(&1), tokens[1], Interest::WRITABLE)?;
                    } else {
                        registry.deregister(&mut SourceFd(&1))?;
                    }
                    *writable = want;
                }
                Ok(())
            }
        }
    }

    /// Switch the line's rate (a real tty; elsewhere the rate is only stored by the module).
    pub(crate) fn set_baud(&mut self, baud: u32) -> io::Result<()> {
        if let Port::Tty(t) = self {
            t.set_baud_rate(baud).map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// Bytes written but still in the OS's output queue (a tty's TIOCOUTQ; 0 elsewhere).
    pub(crate) fn output_queued(&self) -> usize {
        match self {
            Port::Tty(t) => t.bytes_to_write().unwrap_or(0) as usize,
            _ => 0,
        }
    }

    /// When the port wants [`Port::handle_deadline`] (a `--connect` retry).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match self {
            Port::Connect { retry_at, .. } => *retry_at,
            _ => None,
        }
    }

    /// Time has come: (re)connect.
    pub(crate) fn handle_deadline(
        &mut self,
        registry: &Registry,
        tokens: &[Token],
        now: Instant,
    ) -> io::Result<()> {
        if let Port::Connect {
            target,
            conn,
            up,
            retry_at,
            writable,
            ..
        } = self
        {
            if retry_at.is_some_and(|t| t <= now) && conn.is_none() {
                *retry_at = None;
                *up = false;
                match TcpStream::connect(*target) {
                    Ok(mut s) => {
                        registry.register(
                            &mut s,
                            tokens[1],
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        *writable = true;
                        *conn = Some(s);
                    }
                    Err(e) => {
                        log::debug!("connect {target}: {e}");
                        self.drop_conn(registry);
                    }
                }
            }
        }
        Ok(())
    }

    /// Forget the host connection (TCP kinds); `--connect` schedules its next attempt.
    fn drop_conn(&mut self, registry: &Registry) {
        match self {
            Port::Listen { conn, writable, .. } => {
                if let Some((mut s, peer)) = conn.take() {
                    let _ = registry.deregister(&mut s);
                    log::info!("host {peer} disconnected");
                }
                *writable = false;
            }
            Port::Connect {
                target,
                conn,
                up,
                retry_at,
                backoff,
                writable,
            } => {
                if let Some(mut s) = conn.take() {
                    let _ = registry.deregister(&mut s);
                    if *up {
                        log::info!("connection to {target} lost; reconnecting");
                        *backoff = RECONNECT_BACKOFF;
                    }
                }
                *up = false;
                *writable = false;
                *retry_at = Some(Instant::now() + *backoff);
                *backoff = (*backoff * 2).min(MAX_RECONNECT_BACKOFF);
            }
            _ => {}
        }
    }

    /// A host is attached (always true for a pty, a tty and stdio).
    pub(crate) fn host_attached(&self) -> bool {
        match self {
            Port::Listen { conn, .. } => conn.is_some(),
            Port::Connect { up, .. } => *up,
            _ => true,
        }
    }

    /// Take the next waiting host of a `--listen` port (after the previous one left).
    pub(crate) fn accept_next(
        &mut self,
        registry: &Registry,
        tokens: &[Token],
    ) -> io::Result<Happened> {
        match self {
            Port::Listen { listener, conn, .. } if conn.is_none() => {
                accept_one(registry, listener, conn, tokens[1])
            }
            _ => Ok(Happened::default()),
        }
    }
}

fn interest(writable: bool) -> Interest {
    if writable {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}

fn reregister(
    registry: &Registry,
    fd: RawFd,
    token: Token,
    want: bool,
    _readable: bool,
) -> io::Result<()> {
    registry.reregister(&mut SourceFd(&fd), token, interest(want))
}

fn accept_one(
    registry: &Registry,
    listener: &TcpListener,
    conn: &mut Option<(TcpStream, SocketAddr)>,
    token: Token,
) -> io::Result<Happened> {
    let mut h = Happened::default();
    loop {
        match listener.accept() {
            Ok((mut s, peer)) => {
                registry.register(&mut s, token, Interest::READABLE)?;
                let _ = s.set_nodelay(true);
                log::info!("host {peer} connected");
                *conn = Some((s, peer));
                h.opened = true;
                h.readable = true;
                h.writable = true;
                return Ok(h);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(h),
            Err(e) => return Err(e),
        }
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
