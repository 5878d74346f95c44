//! The line to a module, seen from the host (layer: edge). A [`Port`] moves bytes with timeouts and
//! knows nothing of IWIN. Implementations: a tty or pty path (`--port`), a real serial device at a
//! baud rate (`--serial`, the `serialport` crate), and a TCP connection (`--connect`, a QEMU or
//! Renode serial socket). The embedded emulator is reached through its pty path.

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, ControlFlags, SetArg};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A byte line to a module.
pub(super) trait Port: Send {
    /// Write every byte, waiting at most `timeout` in all.
    fn write_all(&mut self, data: &[u8], timeout: Duration) -> io::Result<()>;
    /// Read what is there, waiting at most `timeout` for the first byte. `Ok(0)` means nothing came
    /// in time; the other end closing is an error.
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
    /// A second handle on the same line (the terminal reads on a thread of its own).
    fn try_clone(&self) -> io::Result<Box<dyn Port>>;
    /// For messages: what this is connected to.
    fn name(&self) -> String;
}

/// Where the line goes, as the command line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// An emulator started in this process.
    Embedded,
    /// A tty or pty opened by path, left at its line settings except raw mode.
    Path(PathBuf),
    /// A serial device at a baud rate, 8N1, no flow control.
    Serial { dev: PathBuf, baud: u32 },
    /// A TCP connection (`HOST:PORT`).
    Tcp(String),
}

pub(super) fn open(spec: &PortSpec, timeout: Duration) -> io::Result<Box<dyn Port>> {
    match spec {
        PortSpec::Embedded => Err(io::Error::other(
            "the embedded emulator is opened through its pty path",
        )),
        PortSpec::Path(p) => Ok(Box::new(TtyPort::open(p)?)),
        PortSpec::Serial { dev, baud } => Ok(Box::new(SerialDevPort::open(dev, *baud)?)),
        PortSpec::Tcp(addr) => Ok(Box::new(TcpPort::connect(addr, timeout)?)),
    }
}

/// Wait until `fd` is ready for `events`, at most `timeout` (a signal does not cut the wait
/// short). False on timeout.
pub(crate) fn wait_fd(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    timeout: Duration,
) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_micros().div_ceil(1000);
        let mut fds = [PollFd::new(fd, events)];
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) if Instant::now() < deadline => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A tty or pty slave opened by path, non-blocking, waited on with `poll`.
pub(super) struct TtyPort {
    file: File,
    name: String,
}

impl TtyPort {
    pub(super) fn open(path: &Path) -> io::Result<TtyPort> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if let Ok(mut t) = tcgetattr(&file) {
            // Raw 8-bit, no echo, no CR/LF mapping: the module's CR must arrive as CR.
            cfmakeraw(&mut t);
            t.control_flags |= ControlFlags::CLOCAL | ControlFlags::CREAD;
            tcsetattr(&file, SetArg::TCSANOW, &t)
                .map_err(|e| io::Error::other(format!("{}: raw mode: {e}", path.display())))?;
        }
        Ok(TtyPort {
            file,
            name: path.display().to_string(),
        })
    }

    /// The same, named for messages (the embedded emulator's pty says what it is).
    pub(super) fn named(mut self, name: &str) -> TtyPort {
        self.name = name.to_string();
        self
    }
}

impl Port for TtyPort {
    fn write_all(&mut self, mut data: &[u8], timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        while !data.is_empty() {
            match self.file.write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || !wait_fd(self.file.as_fd(), PollFlags::POLLOUT, left)? {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the line takes no more bytes (the module is not reading)",
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.file.read(buf) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "line closed")),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || !wait_fd(self.file.as_fd(), PollFlags::POLLIN, left)? {
                        return Ok(0);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_clone(&self) -> io::Result<Box<dyn Port>> {
        Ok(Box::new(TtyPort {
            file: self.file.try_clone()?,
            name: self.name.clone(),
        }))
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

/// A serial device at a baud rate (8N1, no flow control, as the module's UART), through the
/// `serialport` crate.
pub(super) struct SerialDevPort {
    port: serialport::TTYPort,
    name: String,
}

impl SerialDevPort {
    pub(super) fn open(dev: &Path, baud: u32) -> io::Result<SerialDevPort> {
        let path = dev.to_string_lossy().into_owned();
        let port = serialport::new(&path, baud)
            .data_bits(serialport::DataBits::Eight)
            .parity(serialport::Parity::None)
            .stop_bits(serialport::StopBits::One)
            .flow_control(serialport::FlowControl::None)
            .timeout(Duration::from_millis(100))
            .open_native()
            .map_err(|e| io::Error::other(format!("{path}: {e}")))?;
        Ok(SerialDevPort {
            port,
            name: format!("{path} at {baud} baud"),
        })
    }
}

fn serial_err(e: serialport::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl Port for SerialDevPort {
    fn write_all(&mut self, data: &[u8], timeout: Duration) -> io::Result<()> {
        use serialport::SerialPort;
        self.port
            .set_timeout(timeout.max(Duration::from_millis(1)))
            .map_err(serial_err)?;
        self.port.write_all(data)
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        use serialport::SerialPort;
        self.port
            .set_timeout(timeout.max(Duration::from_millis(1)))
            .map_err(serial_err)?;
        timed_read(self.port.read(buf), "line closed")
    }

    fn try_clone(&self) -> io::Result<Box<dyn Port>> {
        Ok(Box::new(SerialDevPort {
            port: self.port.try_clone_native().map_err(serial_err)?,
            name: self.name.clone(),
        }))
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

/// A TCP connection carrying the serial line (QEMU `-serial tcp:…`, Renode's server socket
/// terminal, or the emulator's `--listen`).
pub(super) struct TcpPort {
    stream: TcpStream,
    name: String,
}

impl TcpPort {
    pub(super) fn connect(addr: &str, timeout: Duration) -> io::Result<TcpPort> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
        for a in addr
            .to_socket_addrs()
            .map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))?
        {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(TcpPort {
                        stream,
                        name: format!("tcp {addr}"),
                    });
                }
                Err(e) => last = io::Error::new(e.kind(), format!("{addr}: {e}")),
            }
        }
        Err(last)
    }
}

impl Port for TcpPort {
    fn write_all(&mut self, data: &[u8], timeout: Duration) -> io::Result<()> {
        self.stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        self.stream.write_all(data)
    }

    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        timed_read(self.stream.read(buf), "connection closed")
    }

    fn try_clone(&self) -> io::Result<Box<dyn Port>> {
        Ok(Box::new(TcpPort {
            stream: self.stream.try_clone()?,
            name: self.name.clone(),
        }))
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

/// A read with a timeout: 0 when the time ran out, an error at the end of the stream.
fn timed_read(r: io::Result<usize>, eof: &str) -> io::Result<usize> {
    match r {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            eof.to_string(),
        )),
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn tty_port_reads_writes_and_times_out() {
        let pair = nix::pty::openpty(None, None).unwrap();
        let slave = nix::unistd::ttyname(&pair.slave).unwrap();
        let mut master = File::from(pair.master);
        let mut port = TtyPort::open(&slave).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(port.read(&mut buf, Duration::from_millis(10)).unwrap(), 0);
        port.write_all(b"I?\r", Duration::from_secs(5)).unwrap();
        let mut got = Vec::new();
        // A blocking read of the master: what the port wrote is there already.
        while got.len() < 3 {
            let n = master.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"I?\r", "raw mode: CR stays CR");
        master.write_all(b"\r\n> ").unwrap();
        let n = port.read(&mut buf, Duration::from_secs(5)).unwrap();
        assert_eq!(&buf[..n], b"\r\n> ");
    }

    #[test]
    fn tcp_port_reports_a_closed_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let mut port = TcpPort::connect(&addr, Duration::from_secs(5)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"hi").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(port.read(&mut buf, Duration::from_secs(5)).unwrap(), 2);
        assert_eq!(port.read(&mut buf, Duration::from_millis(10)).unwrap(), 0);
        drop(s);
        let e = port.read(&mut buf, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
