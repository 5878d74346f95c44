//! The pseudo-terminal the host program talks to (layer: edge). Owns the pty master and a slave fd of
//! its own, and the optional `--link` symlink; knows nothing of the IWIN protocol.

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::pty::openpty;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// A pty pair: the emulator reads and writes the non-blocking master; the host program opens the
/// slave path as if it were the module's UART.
#[derive(Debug)]
pub(crate) struct Pty {
    master: File,
    /// Never read or written. Holding it keeps the slave side open while no host program has it
    /// open, so the master does not report HUP/EIO (which would spin an edge-triggered loop and lose
    /// the termios settings) between one host session and the next.
    slave: OwnedFd,
    slave_path: PathBuf,
    /// Packet mode (TIOCPKT): each read of the master starts with a status byte, which says when
    /// the host threw its input away.
    packet: bool,
}

/// Packet mode's status bit for "the slave's input queue was flushed" (linux/tty.h; not in libc).
const TIOCPKT_FLUSHREAD: u8 = 1;

/// What a read of the master gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Got {
    /// Data bytes, at the start of the buffer.
    pub n: usize,
    /// The host flushed its input (what the emulator wrote and the host had not read is gone).
    pub flushed: bool,
}

impl Pty {
    /// Open a pty pair with the slave in raw mode (no echo, no line discipline) and the master
    /// non-blocking.
    pub(crate) fn open() -> io::Result<Pty> {
        let pair = openpty(None, None)?;
        let (master, slave) = (pair.master, pair.slave);

        let mut termios = tcgetattr(&slave)?;
        cfmakeraw(&mut termios);
        tcsetattr(&slave, SetArg::TCSANOW, &termios)?;

        let flags = OFlag::from_bits_truncate(fcntl(&master, FcntlArg::F_GETFL)?);
        fcntl(&master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // Keep both ends out of any child process a later feature might spawn: a leaked slave fd
        // would keep the line alive behind our back.
        for fd in [&master, &slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        }

        let slave_path = nix::unistd::ttyname(&slave)?;
        Ok(Pty {
            master: File::from(master),
            slave,
            slave_path,
            packet: false,
        })
    }

    /// Report the host's input flushes ([`Got::flushed`]): packet mode on the master.
    pub(crate) fn report_flushes(&mut self) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: TIOCPKT reads one int from the pointer, which outlives the call.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCPKT, &on) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        self.packet = true;
        Ok(())
    }

    /// Bytes a read takes besides the data (packet mode's status byte).
    pub(crate) fn overhead(&self) -> usize {
        usize::from(self.packet)
    }

    /// Throw away what the emulator wrote and no host has read (a host that left, a stale banner).
    pub(crate) fn drop_unread_output(&self) -> io::Result<()> {
        nix::sys::termios::tcflush(&self.slave, nix::sys::termios::FlushArg::TCIFLUSH)?;
        Ok(())
    }

    /// The path a host program opens (e.g. `/dev/pts/7`).
    pub(crate) fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// Read what the host wrote into `buf` (which needs [`Pty::overhead`] bytes more than the
    /// data). `WouldBlock` when there is nothing.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<Got> {
        let mut flushed = false;
        loop {
            let n = match (&self.master).read(buf) {
                // A flush seen, then nothing: say so (n = 0 is never an end here).
                Err(e) if flushed && e.kind() == io::ErrorKind::WouldBlock => 0,
                r => r?,
            };
            if !self.packet || n == 0 {
                return Ok(Got { n, flushed });
            }
            if buf[0] == 0 {
                buf.copy_within(1..n, 0);
                return Ok(Got { n: n - 1, flushed });
            }
            // A status alone; data may follow in the next read.
            flushed |= buf[0] & TIOCPKT_FLUSHREAD != 0;
        }
    }

    /// Write towards the host. `WouldBlock` when the line is full.
    pub(crate) fn write(&self, data: &[u8]) -> io::Result<usize> {
        (&self.master).write(data)
    }
}

impl AsRawFd for Pty {
    /// The master fd, for registering with the event loop.
    fn as_raw_fd(&self) -> RawFd {
        self.master.as_raw_fd()
    }
}

impl AsFd for Pty {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }
}

/// A symlink to the slave path at a stable, user-chosen place (`--link`). Removed on drop, unless
/// someone has since pointed it elsewhere.
#[derive(Debug)]
pub(crate) struct PtyLink {
    path: PathBuf,
    target: PathBuf,
}

impl PtyLink {
    /// Make `path` a symlink to `target`. Only a stale symlink already at `path` (left by an
    /// emulator that was killed: its pty is gone) is replaced; a link to a pty that exists (some
    /// process holds it: another emulator's) is refused with an `AddrInUse` error naming the path,
    /// and anything else there (a regular file, a directory, a fifo…) with `AlreadyExists`, and
    /// left untouched: `--link` names a place for a link, and must never destroy the user's data.
    pub(crate) fn create(path: &Path, target: &Path) -> io::Result<PtyLink> {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                // A pty's node exists only while some process holds its master.
                if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device()) {
                    let to = std::fs::read_link(path).unwrap_or_default();
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "refusing to take over {}: it links to {}, a terminal in use \
                             (another emulator's?)",
                            path.display(),
                            to.display()
                        ),
                    ));
                }
            }
            Ok(meta) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "refusing to replace {}: it is {}, not a symlink",
                        path.display(),
                        describe(meta.file_type())
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
        // Create beside it and rename over it: the link is replaced atomically, so a host program
        // polling for it never sees it missing or half-made. (Something made at `path` between
        // the check above and the rename would still be replaced: only a concurrent writer could.)
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no file name", path.display()),
            )
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp)?;
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(PtyLink {
            path: path.to_owned(),
            target: target.to_owned(),
        })
    }
}

/// "a regular file", "a directory"…, for the refusal message.
fn describe(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "of an unknown type"
    }
}

impl Drop for PtyLink {
    fn drop(&mut self) {
        // Another emulator may have taken the name over since; leave its link alone.
        if std::fs::read_link(&self.path).is_ok_and(|t| t == self.target) {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("removing link {}: {e}", self.path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use std::fs::OpenOptions;
    use std::time::{Duration, Instant};

    /// Read from the master until `want` bytes arrived or 2 s passed; fails on EOF/error/HUP.
    fn read_master(pty: &Pty, poll: &mut Poll, want: usize) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = Vec::new();
        let mut events = Events::with_capacity(4);
        let mut buf = [0u8; 256];
        while got.len() < want && Instant::now() < deadline {
            loop {
                match pty.read(&mut buf) {
                    Ok(g) if g.n == 0 => panic!("master saw EOF"),
                    Ok(g) => got.extend_from_slice(&buf[..g.n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("master read: {e}"),
                }
            }
            if got.len() < want {
                poll.poll(&mut events, Some(Duration::from_millis(50)))
                    .expect("poll");
            }
        }
        got
    }

    fn open_slave(pty: &Pty) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(pty.slave_path())
            .expect("open slave")
    }

    #[test]
    fn slave_to_master_survives_reopen() {
        let pty = Pty::open().expect("openpty");
        let mut poll = Poll::new().expect("poll");
        poll.registry()
            .register(
                &mut SourceFd(&pty.as_raw_fd()),
                Token(0),
                Interest::READABLE,
            )
            .expect("register");

        for round in 0..3u8 {
            let mut slave = open_slave(&pty);
            let msg = [b'A' + round, 0, 0xff, b'\r', b'\n'];
            slave.write_all(&msg).expect("write slave");
            assert_eq!(read_master(&pty, &mut poll, msg.len()), msg);
            drop(slave);

            // With our own slave fd held, a host closing its end must not wake the master at all
            // (a HUP would be reported level-style on every poll and spin the loop).
            let mut events = Events::with_capacity(4);
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .expect("poll");
            for ev in events.iter() {
                assert!(
                    !ev.is_read_closed() && !ev.is_error(),
                    "master reported {ev:?} after the host closed the slave"
                );
            }
            let mut buf = [0u8; 16];
            match pty.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => panic!("expected WouldBlock after close, got {other:?}"),
            }
        }
    }

    #[test]
    fn master_to_slave_raw_no_echo() {
        let pty = Pty::open().expect("openpty");
        let mut slave = open_slave(&pty);
        // Raw mode: CR and LF pass unchanged, no line buffering.
        let msg = b"\r\n> \x00\x7f";
        assert_eq!(pty.write(msg).expect("write master"), msg.len());
        let mut got = vec![0u8; msg.len()];
        slave.read_exact(&mut got).expect("read slave");
        assert_eq!(&got, msg);

        // No echo: what the host writes must not come back to the host.
        slave.write_all(b"AT\r").expect("write slave");
        let mut poll = Poll::new().expect("poll");
        poll.registry()
            .register(
                &mut SourceFd(&slave.as_raw_fd()),
                Token(1),
                Interest::READABLE,
            )
            .expect("register");
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll");
        assert!(events.is_empty(), "slave became readable: echo is on");
    }

    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("eswifi-emu-test-{}-{tag}", std::process::id()))
    }

    #[test]
    fn link_replaces_stale_and_is_removed() {
        let pty = Pty::open().expect("openpty");
        let path = temp_path("link");
        let _ = std::fs::remove_file(&path);
        // What a killed emulator leaves: a symlink to a pty that no longer exists.
        std::os::unix::fs::symlink("/dev/pts/eswifi-emu-test-gone", &path).expect("stale link");
        {
            let _link = PtyLink::create(&path, pty.slave_path()).expect("link");
            assert_eq!(
                std::fs::read_link(&path).expect("read_link"),
                pty.slave_path()
            );
            // Opening through the link reaches the slave.
            let mut through = OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open link");
            through.write_all(b"x").expect("write");
        }
        assert!(
            std::fs::symlink_metadata(&path).is_err(),
            "link left behind"
        );
    }

    /// Assert `PtyLink::create` refuses `path` with an error naming it and leaves nothing beside it.
    fn assert_refused(path: &Path, what: &str) {
        let err = PtyLink::create(path, Path::new("/dev/null")).expect_err(what);
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{what}: {err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{what}: error does not name the path: {err}"
        );
        let dir = path.parent().expect("parent");
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let other = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            assert!(
                !(other.starts_with('.') && other.contains(&name)),
                "{what}: left {other} behind"
            );
        }
    }

    #[test]
    fn link_refuses_regular_file() {
        let path = temp_path("regular");
        std::fs::write(&path, b"user data").expect("regular file");
        assert_refused(&path, "regular file");
        let meta = std::fs::symlink_metadata(&path).expect("still there");
        assert!(meta.file_type().is_file());
        assert_eq!(std::fs::read(&path).expect("read"), b"user data");
        std::fs::remove_file(&path).expect("cleanup");
    }

    #[test]
    fn link_refuses_directory_and_fifo() {
        let dir = temp_path("dir");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("dir");
        assert_refused(&dir, "directory");
        assert!(std::fs::symlink_metadata(&dir).expect("dir kept").is_dir());
        std::fs::remove_dir(&dir).expect("cleanup dir");

        let fifo = temp_path("fifo");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        assert_refused(&fifo, "fifo");
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(&fifo)
            .expect("fifo kept")
            .file_type()
            .is_fifo());
        std::fs::remove_file(&fifo).expect("cleanup fifo");
    }

    #[test]
    fn link_left_alone_if_taken_over() {
        let path = temp_path("takeover");
        let link = PtyLink::create(&path, Path::new("/dev/null")).expect("link");
        // Someone else has put a link of their own there since.
        std::fs::remove_file(&path).expect("remove");
        std::os::unix::fs::symlink("/dev/zero", &path).expect("their link");
        drop(link);
        assert_eq!(
            std::fs::read_link(&path).expect("still there"),
            Path::new("/dev/zero")
        );
        std::fs::remove_file(&path).expect("cleanup");
    }

    #[test]
    fn link_to_a_terminal_in_use_is_refused() {
        let pty = Pty::open().expect("openpty");
        let path = temp_path("live");
        let _ = std::fs::remove_file(&path);
        let live = PtyLink::create(&path, pty.slave_path()).expect("link");
        let err = PtyLink::create(&path, Path::new("/dev/null")).expect_err("live");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(std::fs::read_link(&path).expect("kept"), pty.slave_path());
        drop(live);
    }
}
