//! On-disk store of the certificate sets (layer: edge; touches only files under its directory).
//! Layout and format are documented in `certsets/README.md`:
//! `<dir>/set<N>/{ca,cert,key}.otp`, each a one-line header `eswifi-emu-otp 1 <len> <sha256>` and then
//! exactly the bytes the host programmed. Every write is crash-safe (temp file, fsync, rename, fsync
//! directory), so an item is either absent or complete; key files are mode 0600. A file whose header,
//! length or digest does not match is reported by name, never treated as empty.
//!
//! Blocking IO: the driver calls [`CertStore::write`] from a worker thread, never from the event loop.

use crate::module::certs::{CertSets, Item, SET_COUNT};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const MAGIC: &str = "eswifi-emu-otp 1";

#[derive(Debug)]
pub enum StoreError {
    /// A file exists but is not a complete item.
    Corrupt {
        path: PathBuf,
        why: String,
    },
    Io {
        path: PathBuf,
        err: io::Error,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Corrupt { path, why } => write!(
                f,
                "certificate store file {} is corrupt or torn ({why}); remove it or run `eswifi-emu flash --erase`",
                path.display()
            ),
            StoreError::Io { path, err } => write!(f, "certificate store {}: {err}", path.display()),
        }
    }
}

impl std::error::Error for StoreError {}

#[derive(Debug, Clone)]
pub struct CertStore {
    dir: PathBuf,
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl CertStore {
    pub fn new(dir: impl Into<PathBuf>) -> CertStore {
        CertStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of one item's file.
    pub fn item_path(&self, set: usize, item: Item) -> PathBuf {
        self.dir
            .join(format!("set{set}"))
            .join(format!("{}.otp", item.file_stem()))
    }

    /// Read every programmed item. A missing directory is an empty (factory-fresh) store; leftover
    /// temp files from an interrupted write are removed.
    pub fn load(&self) -> Result<CertSets, StoreError> {
        let mut sets = CertSets::default();
        for set in 0..SET_COUNT {
            let set_dir = self.dir.join(format!("set{set}"));
            if let Ok(entries) = fs::read_dir(&set_dir) {
                for e in entries.flatten() {
                    let name = e.file_name();
                    if name.to_string_lossy().ends_with(".tmp") {
                        log::info!(
                            "removing {} left by an interrupted write",
                            e.path().display()
                        );
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
            for item in Item::ALL {
                let path = self.item_path(set, item);
                let bytes = match fs::read(&path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(StoreError::Io { path, err }),
                };
                let data = decode(&bytes).map_err(|why| StoreError::Corrupt {
                    path: path.clone(),
                    why,
                })?;
                sets.put(set, item, data);
            }
        }
        Ok(sets)
    }

    /// Store one item crash-safely.
    pub fn write(&self, set: usize, item: Item, data: &[u8]) -> io::Result<()> {
        let mode = if item == Item::Key { 0o600 } else { 0o644 };
        write_durable(&self.item_path(set, item), data, mode)
    }

    /// The saved module settings (`Z1`), beside the sets.
    pub fn settings_path(&self) -> PathBuf {
        self.dir.join("settings.saved")
    }

    /// Store the saved settings crash-safely (mode 0600: they hold the Wi-Fi passphrase).
    pub fn write_settings(&self, data: &[u8]) -> io::Result<()> {
        write_durable(&self.settings_path(), data, 0o600)
    }

    /// The saved settings, if any were saved; a torn or corrupt file is an error naming it.
    pub fn load_settings(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.settings_path();
        match fs::read(&path) {
            Ok(bytes) => decode(&bytes)
                .map(Some)
                .map_err(|why| StoreError::Corrupt { path, why }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(StoreError::Io { path, err }),
        }
    }

    /// Remove every item of every set (the offline "flash a complete firmware image").
    pub fn erase(&self) -> io::Result<()> {
        for set in 0..SET_COUNT {
            for item in Item::ALL {
                match fs::remove_file(self.item_path(set, item)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            let set_dir = self.dir.join(format!("set{set}"));
            if set_dir.is_dir() {
                File::open(&set_dir)?.sync_all()?;
            }
        }
        Ok(())
    }
}

/// Write `data` under the checked header to `path` via a temp file: write, fsync, rename, fsync the
/// directory. Readers see the old file or the complete new one, never a torn one.
fn write_durable(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_dir_synced(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(format!("{MAGIC} {} {}\n", data.len(), sha256_hex(data)).as_bytes())?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Create `dir` (and parents) and make the new entries durable.
fn create_dir_synced(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    if let Some(parent) = dir.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not text")?;
    let rest = header
        .strip_prefix(MAGIC)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| format!("header {header:?} is not `{MAGIC} <len> <sha256>`"))?;
    let (len, digest) = rest.split_once(' ').ok_or("header lacks the digest")?;
    let len: usize = len.parse().map_err(|_| format!("bad length {len:?}"))?;
    let data = &bytes[nl + 1..];
    if data.len() != len {
        return Err(format!(
            "header says {len} bytes, file holds {}",
            data.len()
        ));
    }
    if sha256_hex(data) != digest {
        return Err("SHA-256 digest does not match the contents".into());
    }
    Ok(data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tempdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("eswifi-certstore-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn write_load_erase() {
        let dir = tempdir("rw");
        let store = CertStore::new(&dir);
        assert_eq!(store.load().unwrap(), CertSets::default());
        store
            .write(1, Item::Ca, b"-----BEGIN CERTIFICATE-----\r\nabc\0")
            .unwrap();
        store.write(1, Item::Key, b"key bytes").unwrap();
        let sets = store.load().unwrap();
        assert_eq!(
            sets.get(1, Item::Ca),
            Some(&b"-----BEGIN CERTIFICATE-----\r\nabc\0"[..])
        );
        assert_eq!(sets.get(1, Item::Key), Some(&b"key bytes"[..]));
        assert_eq!(sets.get(0, Item::Ca), None);
        let mode = fs::metadata(store.item_path(1, Item::Key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        store.erase().unwrap();
        assert_eq!(store.load().unwrap(), CertSets::default());
        assert_eq!(store.load_settings().unwrap(), None);
        store.write_settings(b"ssid=6c6162").unwrap();
        assert_eq!(
            store.load_settings().unwrap().as_deref(),
            Some(&b"ssid=6c6162"[..])
        );
        fs::write(store.settings_path(), b"eswifi-emu-otp 1 3 00\nabc").unwrap();
        assert!(store
            .load_settings()
            .unwrap_err()
            .to_string()
            .contains("settings.saved"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn torn_or_corrupt_files_are_reported_by_name() {
        let dir = tempdir("corrupt");
        let store = CertStore::new(&dir);
        store.write(0, Item::Cert, b"0123456789").unwrap();
        let path = store.item_path(0, Item::Cert);
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() - 3]).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("header says 10 bytes, file holds 7"), "{err}");
        let mut flipped = full.clone();
        *flipped.last_mut().unwrap() ^= 1;
        fs::write(&path, &flipped).unwrap();
        assert!(store.load().unwrap_err().to_string().contains("digest"));
        fs::write(&path, b"").unwrap();
        assert!(store
            .load()
            .unwrap_err()
            .to_string()
            .contains("no header line"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn leftover_temp_file_is_not_an_item() {
        let dir = tempdir("tmp");
        let store = CertStore::new(&dir);
        fs::create_dir_all(dir.join("set2")).unwrap();
        fs::write(dir.join("set2/.key.otp.tmp"), b"eswifi-emu-otp 1 99 half").unwrap();
        assert_eq!(store.load().unwrap(), CertSets::default());
        assert!(!dir.join("set2/.key.otp.tmp").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
