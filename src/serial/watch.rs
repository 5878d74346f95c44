//! Who has a pty open (layer: edge): one inotify instance for every module's pty (a process may
//! hold only 128 by default, and `--modules` goes to 256) reports opens and closes of each slave
//! path, and counts the descriptions open, so the line knows when the first host arrives and when
//! the last one leaves. The emulator's own slave descriptor is not opened through the path and is
//! not counted. Knows nothing of IWIN.

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

/// How a line's openers changed since the last look.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    /// Someone has it open now and nobody had before (or the count went through zero).
    pub opened: bool,
    /// Nobody has it open now and someone had (or the count went through zero).
    pub closed: bool,
    /// Both, and the close came first (one host left, another came).
    pub closed_first: bool,
}

/// The open watch of every pty.
pub(crate) struct PtyWatch {
    ino: Inotify,
    /// Line and open count per watched slave.
    lines: HashMap<WatchDescriptor, (usize, u32)>,
}

impl PtyWatch {
    pub(crate) fn new(registry: &Registry, token: Token) -> io::Result<PtyWatch> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        registry.register(
            &mut SourceFd(&ino.as_fd().as_raw_fd()),
            token,
            Interest::READABLE,
        )?;
        Ok(PtyWatch {
            ino,
            lines: HashMap::new(),
        })
    }

    /// Watch the slave at `path` for line `line`.
    pub(crate) fn add(&mut self, path: &Path, line: usize) -> io::Result<()> {
        let wd = self.ino.add_watch(
            path,
            AddWatchFlags::IN_OPEN
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_CLOSE_NOWRITE,
        )?;
        self.lines.insert(wd, (line, 0));
        Ok(())
    }

    /// Read every pending event; returns each line whose openers changed, with how.
    pub(crate) fn take(&mut self) -> io::Result<Vec<(usize, Change)>> {
        // Per line: the count before, whether it touched zero, whether it rose from zero.
        let mut seen: Vec<(usize, u32, bool, bool)> = Vec::new();
        loop {
            let events = match self.ino.read_events() {
                Ok(evs) if evs.is_empty() => break,
                Ok(evs) => evs,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => return Err(e.into()),
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    log::warn!("pty open watch overflowed: opens and closes were lost");
                    continue;
                }
                let Some((line, count)) = self.lines.get_mut(&ev.wd) else {
                    continue;
                };
                let k = match seen.iter().position(|s| s.0 == *line) {
                    Some(k) => k,
                    None => {
                        seen.push((*line, *count, false, false));
                        seen.len() - 1
                    }
                };
                if ev.mask.contains(AddWatchFlags::IN_OPEN) {
                    seen[k].3 |= *count == 0;
                    *count += 1;
                } else if *count > 0 {
                    *count -= 1;
                    seen[k].2 |= *count == 0;
                }
            }
        }
        let mut changes = Vec::new();
        for (line, before, dipped, rose) in seen {
            let now = self.count(line);
            let c = match (before > 0, now > 0) {
                (false, true) => Change {
                    opened: true,
                    ..Change::default()
                },
                (true, false) => Change {
                    closed: true,
                    ..Change::default()
                },
                (true, true) if dipped => Change {
                    opened: true,
                    closed: true,
                    closed_first: true,
                },
                (false, false) if rose => Change {
                    opened: true,
                    closed: true,
                    closed_first: false,
                },
                _ => continue,
            };
            changes.push((line, c));
        }
        Ok(changes)
    }

    fn count(&self, line: usize) -> u32 {
        self.lines
            .values()
            .find(|&&(l, _)| l == line)
            .map_or(0, |&(_, n)| n)
    }
}
