//! One serial line as the event loop sees it (layer: edge): a pty, a real tty opened with the
//! `serialport` crate, a TCP server taking one host at a time or a TCP client that reconnects
//! ([`super::tcp`]), or stdin/stdout. Every kind is non-blocking and registered in the driver's
//! `mio::Poll` with the tokens the driver gives it. Knows nothing of IWIN.

use super::pty::Pty;
use super::tcp::{Connect, Listen};
use mio::event::Event;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use serialport::SerialPort;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

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

/// What happened on the port (from an event, a read or a write).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Happened {
    /// Input may be waiting.
    pub readable: bool,
    /// Output may go on.
    pub writable: bool,
    /// A host attached (the first opener of a pty, a connection).
    pub opened: bool,
    /// The host is gone (the last opener of a pty closed it, the connection failed).
    pub closed: bool,
    /// Both of the above, the close first (one pty host left, another came).
    pub closed_first: bool,
    /// The host sent its last byte (end of stdin, a half-closed connection).
    pub ended: bool,
    /// A pty host threw away its unread input.
    pub flushed: bool,
    /// A `--listen` host waits to be accepted.
    pub acceptable: bool,
    /// The host's end of input (or an error) is queued behind its data: read on to it, a short
    /// read does not mean the line is drained.
    pub hup: bool,
}

impl Happened {
    /// Everything `other` reports too.
    pub(crate) fn merge(&mut self, other: Happened) {
        self.readable |= other.readable;
        self.writable |= other.writable;
        self.opened |= other.opened;
        self.closed |= other.closed;
        self.closed_first |= other.closed_first;
        self.ended |= other.ended;
        self.flushed |= other.flushed;
        self.acceptable |= other.acceptable;
        self.hup |= other.hup;
    }
}

/// A serial line of one module.
pub(crate) enum Port {
    Pty(Pty),
    Tty(serialport::TTYPort),
    Listen(Listen),
    Connect(Connect),
    Stdio {
        writable: bool,
        /// stdin is watched by the poll; a regular file or /dev/null cannot be (EPERM) and is
        /// read whenever the module has room, up to its end.
        polled: bool,
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

fn reregister(registry: &Registry, fd: RawFd, token: Token, want: bool) -> io::Result<()> {
    let interest = if want {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    registry.reregister(&mut SourceFd(&fd), token, interest)
}

impl Port {
    /// A pty.
    pub(crate) fn pty(pty: Pty) -> Port {
        Port::Pty(pty)
    }

    /// A real tty at `path`: 8N1, the given rate and flow control, non-blocking.
    pub(crate) fn tty(path: &Path, baud: u32, flow: Flow) -> io::Result<Port> {
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
        Listen::bind(addr).map(Port::Listen)
    }

    /// A TCP client of `target`.
    pub(crate) fn connect(target: SocketAddr) -> Port {
        Port::Connect(Connect::new(target))
    }

    /// stdin and stdout (made non-blocking).
    pub(crate) fn stdio() -> io::Result<Port> {
        set_nonblocking(io::stdin())?;
        set_nonblocking(io::stdout())?;
        Ok(Port::Stdio {
            writable: false,
            polled: true,
        })
    }

    /// How many tokens [`Port::register`] needs.
    pub(crate) fn token_count(&self) -> usize {
        match self {
            Port::Tty(_) | Port::Pty(_) => 1,
            Port::Listen(_) | Port::Connect(_) | Port::Stdio { .. } => 2,
        }
    }

    /// What a host is told to open: the pty path, the device, the address.
    pub(crate) fn describe(&self) -> String {
        match self {
            Port::Pty(pty) => pty.slave_path().display().to_string(),
            Port::Tty(t) => t.name().unwrap_or_default(),
            Port::Listen(l) => l
                .local_addr()
                .map_or_else(|e| format!("?({e})"), |a| a.to_string()),
            Port::Connect(c) => c.target().to_string(),
            Port::Stdio { .. } => "stdio".into(),
        }
    }

    /// The pty's slave path, which the driver watches for opens and closes.
    pub(crate) fn pty_path(&self) -> Option<&Path> {
        match self {
            Port::Pty(pty) => Some(pty.slave_path()),
            _ => None,
        }
    }

    /// A wire with the host always on it (a tty, stdio): no attach or detach.
    pub(crate) fn always_attached(&self) -> bool {
        matches!(self, Port::Tty(_) | Port::Stdio { .. })
    }

    /// Whether readiness events say when input arrives (else the line reads whenever it can).
    pub(crate) fn polled(&self) -> bool {
        !matches!(self, Port::Stdio { polled: false, .. })
    }

    /// Register with the poll: `tokens[0]` for the line itself, `tokens[1]` for the second source
    /// (the accepted or outgoing connection, stdout).
    pub(crate) fn register(&mut self, registry: &Registry, tokens: &[Token]) -> io::Result<()> {
        match self {
            Port::Pty(pty) => registry.register(
                &mut SourceFd(&pty.as_raw_fd()),
                tokens[0],
                Interest::READABLE,
            ),
            Port::Tty(t) => {
                registry.register(&mut SourceFd(&t.as_raw_fd()), tokens[0], Interest::READABLE)
            }
            Port::Listen(l) => l.register(registry, tokens[0]),
            Port::Connect(_) => Ok(()),
            Port::Stdio { polled, .. } => {
                match registry.register(&mut SourceFd(&0), tokens[0], Interest::READABLE) {
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        log::debug!("stdin is a file: read without waiting for it");
                        *polled = false;
                        Ok(())
                    }
                    other => other,
                }
            }
        }
    }

    /// Digest a readiness event for one of the port's tokens.
    pub(crate) fn handle_event(
        &mut self,
        registry: &Registry,
        tokens: &[Token],
        event: &Event,
    ) -> Happened {
        let second = tokens.len() > 1 && event.token() == tokens[1];
        match self {
            Port::Listen(l) => l.handle_event(event, second),
            Port::Connect(c) if second => c.handle_event(registry, event),
            Port::Stdio { .. } if second => Happened {
                writable: true,
                ..Happened::default()
            },
            _ => Happened {
                readable: event.is_readable() || event.is_read_closed() || event.is_error(),
                writable: event.is_writable(),
                hup: matches!(self, Port::Stdio { .. })
                    && (event.is_read_closed() || event.is_error()),
                ..Happened::default()
            },
        }
    }

    /// Bytes a read takes besides the data (see [`Pty::overhead`]).
    pub(crate) fn overhead(&self) -> usize {
        match self {
            Port::Pty(pty) => pty.overhead(),
            _ => 0,
        }
    }

    /// Read what the host sent (`WouldBlock`: nothing now; `Ok(0)`: nothing, but see `h`). An
    /// end of input, a host gone and a pty flush are reported in `h`.
    pub(crate) fn read(
        &mut self,
        registry: &Registry,
        buf: &mut [u8],
        h: &mut Happened,
    ) -> io::Result<usize> {
        let r = match self {
            Port::Pty(pty) => pty.read(buf).map(|g| {
                h.flushed |= g.flushed;
                g.n
            }),
            Port::Tty(t) => nix::unistd::read(tty_fd(t), buf).map_err(io::Error::from),
            Port::Listen(l) => return l.read(registry, buf, h),
            Port::Connect(c) => return c.read(registry, buf, h),
            Port::Stdio { .. } => match nix::unistd::read(io::stdin(), buf) {
                Ok(0) if !buf.is_empty() => {
                    h.ended = true;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                r => r.map_err(io::Error::from),
            },
        };
        match r {
            // A pty or tty never ends while the emulator holds it; a flush-only read of a pty
            // returns 0 too.
            Ok(0) if !h.flushed => Err(io::ErrorKind::WouldBlock.into()),
            other => other,
        }
    }

    /// Write towards the host (`WouldBlock`: full, or no host connected — the bytes wait). A host
    /// gone is reported in `h`.
    pub(crate) fn write(
        &mut self,
        registry: &Registry,
        data: &[u8],
        h: &mut Happened,
    ) -> io::Result<usize> {
        match self {
            Port::Pty(pty) => pty.write(data),
            Port::Tty(t) => nix::unistd::write(tty_fd(t), data).map_err(io::Error::from),
            Port::Listen(l) => l.write(registry, data, h),
            Port::Connect(c) => c.write(registry, data, h),
            Port::Stdio { .. } => {
                let out = std::io::stdout();
                match nix::unistd::write(out.as_fd(), data).map_err(io::Error::from) {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                        h.closed = true;
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    other => other,
                }
            }
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
            Port::Pty(pty) => reregister(registry, pty.as_raw_fd(), tokens[0], want),
            Port::Tty(t) => reregister(registry, t.as_raw_fd(), tokens[0], want),
            Port::Listen(l) => l.want_writable(registry, tokens[1], want),
            Port::Connect(c) => c.want_writable(registry, tokens[1], want),
            Port::Stdio { writable, .. } => {
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

    /// Throw away output the host has not read (a pty keeps it for whoever opens it next).
    pub(crate) fn drop_unread_output(&self) {
        if let Port::Pty(pty) = self {
            if let Err(e) = pty.drop_unread_output() {
                log::debug!("flushing the pty: {e}");
            }
        }
    }

    /// When the port wants [`Port::handle_deadline`] (a `--connect` retry, an accept retry).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match self {
            Port::Connect(c) => c.next_deadline(),
            Port::Listen(l) => l.next_deadline(),
            _ => None,
        }
    }

    /// Time has come: (re)connect; an accept retry makes the host acceptable again.
    pub(crate) fn handle_deadline(
        &mut self,
        registry: &Registry,
        tokens: &[Token],
        now: Instant,
    ) -> io::Result<Happened> {
        let mut h = Happened::default();
        match self {
            Port::Connect(c) => c.handle_deadline(registry, tokens[1], now)?,
            Port::Listen(l) => h.acceptable = l.retry_due(now),
            _ => {}
        }
        Ok(h)
    }

    /// Take the next waiting `--listen` host (none while one is attached).
    pub(crate) fn accept_next(
        &mut self,
        registry: &Registry,
        tokens: &[Token],
        now: Instant,
    ) -> Happened {
        match self {
            Port::Listen(l) => l.accept_next(registry, tokens[1], now),
            _ => Happened::default(),
        }
    }

    /// Close the host's connection (it has every reply it asked for, or left); `--connect` then
    /// reconnects, `--listen` takes the next host.
    pub(crate) fn close_host(&mut self, registry: &Registry) {
        match self {
            Port::Listen(l) => l.close_host(registry),
            Port::Connect(c) => c.close_host(registry),
            _ => {}
        }
    }

    /// A host connection exists (always true for a pty, a tty and stdio).
    pub(crate) fn host_attached(&self) -> bool {
        match self {
            Port::Listen(l) => l.host_attached(),
            Port::Connect(c) => c.host_attached(),
            _ => true,
        }
    }

    /// Report the host's input flushes (a pty only).
    pub(crate) fn report_flushes(&mut self) -> io::Result<()> {
        match self {
            Port::Pty(pty) => pty.report_flushes(),
            _ => Ok(()),
        }
    }
}
