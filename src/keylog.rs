//! The TLS key log (layer: edge): with `--keylog FILE` or `SSLKEYLOGFILE`, every TLS session of
//! the modules (client sockets and the server extension) appends its secrets to FILE in the NSS
//! key log format, as rustls' `KeyLogFile`, curl and browsers write it, so Wireshark or tshark can
//! decrypt a capture of the loopback traffic. Never on by default.
//!
//! Unlike rustls' `KeyLogFile`, the file is opened without following a symbolic link and made
//! mode 0600 (it decrypts every session), and lines are written by a thread of their own through a
//! bounded queue: a slow disk never holds up the event loop. Nothing here logs a secret.

use eswifi_core::config::KeyLogSink;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

/// Lines waiting for the writer; a handshake writes at most five.
const QUEUE: usize = 1024;

static SINK: OnceLock<KeyLogSink> = OnceLock::new();

/// The key log of this process, for every module's configuration (off unless [`init`] opened one).
pub(crate) fn sink() -> KeyLogSink {
    SINK.get().cloned().unwrap_or_default()
}

/// Open the key log: `given` (`--keylog`), else `SSLKEYLOGFILE` when set and not empty.
pub(crate) fn init(given: Option<&Path>) -> Result<(), String> {
    let (path, origin) = match given {
        Some(p) => (p.to_owned(), "--keylog"),
        None => match std::env::var_os("SSLKEYLOGFILE") {
            Some(p) if !p.is_empty() => (PathBuf::from(p), "SSLKEYLOGFILE"),
            _ => return Ok(()),
        },
    };
    let file = open(&path).map_err(|e| format!("{origin} {}: {e}", path.display()))?;
    let (tx, rx) = sync_channel::<String>(QUEUE);
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("keylog-writer".into())
        .spawn(move || {
            let mut file = file;
            for line in rx {
                if let Err(e) = file.write_all(line.as_bytes()) {
                    log::error!("TLS key log {shown}: {e}; no more secrets are written");
                    return;
                }
            }
        })
        .map_err(|e| format!("{origin}: {e}"))?;
    log::warn!(
        "{origin}: the secrets of every TLS session are appended to {}: whoever reads it can \
         decrypt them",
        path.display()
    );
    let log: Arc<dyn rustls::KeyLog> = Arc::new(Writer {
        tx,
        dropped: AtomicBool::new(false),
    });
    let _ = SINK.set(KeyLogSink(Some(log)));
    Ok(())
}

/// Append-only, never through a symlink, a regular file only, mode 0600 whatever it had.
fn open(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        // O_NONBLOCK: opening a FIFO must not wait for a reader (it is refused below).
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other("a symbolic link: refused (the key log is never followed)")
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Formats each secret as a line and hands it to the writer thread.
struct Writer {
    tx: SyncSender<String>,
    dropped: AtomicBool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyLogWriter")
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl rustls::KeyLog for Writer {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let line = format!("{label} {} {}\n", hex(client_random), hex(secret));
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if !self.dropped.swap(true, Ordering::Relaxed) {
                    log::warn!("TLS key log: the writer is behind; lines are being dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}
