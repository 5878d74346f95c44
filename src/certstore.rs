//! On-disk store of the certificate sets (layer: edge; touches only files under its directory).
//! Layout and format are documented in `certsets/README.md`:
//! `<dir>/set<N>/{ca,cert,key}.otp`, each a one-line header `eswifi-emu-otp 1 <len> <sha256>` and then
//! exactly the bytes the host programmed. Every write is crash-safe (temp file, fsync, rename, fsync
//! directory), so an item is either absent or complete; key files are mode 0600. A file whose header,
//! length or digest does not match is reported by name, never treated as empty.
//!
//! No write goes through a symbolic link: a temp file is created fresh (`O_CREAT|O_EXCL|O_NOFOLLOW`,
//! after unlinking whatever is at its name) with its mode set on the open descriptor (independent of
//! the umask), and a set directory that is a symbolic link is refused by name when writing, loading,
//! cleaning up or erasing. The store directory itself (`--certsets`) is the user's choice and may be
//! a link; an item file that is a link is still read through it (a write replaces the link itself).
//!
//! Blocking IO: the driver calls [`CertStore::write`] from a worker thread, never from the event loop.

use eswifi_core::item::{decode_item, encode_item, Item, ItemError};
use eswifi_core::module::certs::{CertSets, SET_COUNT};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub(crate) enum StoreError {
    /// A file exists but is not a complete item.
    Corrupt {
        path: PathBuf,
        why: ItemError,
    },
    Io {
        path: PathBuf,
        err: io::Error,
    },
    /// A set directory is a symbolic link (never followed).
    Symlink {
        path: PathBuf,
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
            StoreError::Symlink { path } => write!(f, "{}", symlink_refused(path)),
        }
    }
}

impl std::error::Error for StoreError {}

#[derive(Debug, Clone)]
pub(crate) struct CertStore {
    dir: PathBuf,
}

impl CertStore {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> CertStore {
        CertStore { dir: dir.into() }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of one item's file.
    pub(crate) fn item_path(&self, set: usize, item: Item) -> PathBuf {
        self.dir
            .join(format!("set{set}"))
            .join(format!("{}.otp", item.file_stem()))
    }

    /// Path of one set's directory.
    fn set_dir(&self, set: usize) -> PathBuf {
        self.dir.join(format!("set{set}"))
    }

    /// Read every programmed item. A missing directory is an empty (factory-fresh) store; leftover
    /// temp files from an interrupted write are removed; a set directory that is a symbolic link is
    /// an error naming it.
    pub(crate) fn load(&self) -> Result<CertSets, StoreError> {
        self.remove_stale_temps()?;
        let mut sets = CertSets::default();
        for set in 0..SET_COUNT {
            for item in Item::ALL {
                let path = self.item_path(set, item);
                let bytes = match fs::read(&path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(StoreError::Io { path, err }),
                };
                let data = decode_item(&bytes).map_err(|why| StoreError::Corrupt {
                    path: path.clone(),
                    why,
                })?;
                sets.put(set, item, data);
            }
        }
        Ok(sets)
    }

    /// Remove the temp files an interrupted write left in the set directories (a temp file that is
    /// a symbolic link is unlinked itself, never its target). A set directory that is a symbolic
    /// link is an error naming it, and nothing in it is touched.
    pub(crate) fn remove_stale_temps(&self) -> Result<(), StoreError> {
        for set in 0..SET_COUNT {
            let set_dir = self.set_dir(set);
            if is_symlink(&set_dir) {
                return Err(StoreError::Symlink { path: set_dir });
            }
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
        }
        Ok(())
    }

    /// Store one item crash-safely.
    pub(crate) fn write(&self, set: usize, item: Item, data: &[u8]) -> io::Result<()> {
        let mode = if item == Item::Key { 0o600 } else { 0o644 };
        let set_dir = self.set_dir(set);
        if is_symlink(&set_dir) {
            return Err(io::Error::other(symlink_refused(&set_dir)));
        }
        create_dir_synced(&set_dir)?;
        let dir = open_set_dir(&set_dir)?;
        write_durable(&dir, &self.item_path(set, item), data, mode)
    }

    /// The saved module settings (`Z1`), beside the sets.
    pub(crate) fn settings_path(&self) -> PathBuf {
        self.dir.join("settings.saved")
    }

    /// Store the saved settings crash-safely (mode 0600: they hold the Wi-Fi passphrase).
    pub(crate) fn write_settings(&self, data: &[u8]) -> io::Result<()> {
        create_dir_synced(&self.dir)?;
        let dir = open_dir(&self.dir, true)?;
        write_durable(&dir, &self.settings_path(), data, 0o600)
    }

    /// The saved settings, if any were saved; a torn or corrupt file is an error naming it.
    pub(crate) fn load_settings(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.settings_path();
        match fs::read(&path) {
            Ok(bytes) => decode_item(&bytes)
                .map(Some)
                .map_err(|why| StoreError::Corrupt { path, why }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(StoreError::Io { path, err }),
        }
    }

    /// Remove every item of every set (the offline "flash a complete firmware image"). A set
    /// directory that is a symbolic link is an error naming it (checked for every set first, so
    /// nothing is erased then).
    pub(crate) fn erase(&self) -> io::Result<()> {
        for set in 0..SET_COUNT {
            let set_dir = self.set_dir(set);
            if is_symlink(&set_dir) {
                return Err(io::Error::other(symlink_refused(&set_dir)));
            }
        }
        for set in 0..SET_COUNT {
            let set_dir = self.set_dir(set);
            let dir = match open_set_dir(&set_dir) {
                Ok(dir) => dir,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for item in Item::ALL {
                match fs::remove_file(self.item_path(set, item)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            dir.sync_all()?;
        }
        Ok(())
    }
}

/// Write `data` under the checked header to `path` via a temp file beside it: write, fsync, rename,
/// fsync the directory (`dir`, the open directory holding `path`). Readers see the old file or the
/// complete new one, never a torn one. Whatever is at the temp name (a stale file or a planted
/// symbolic link) is unlinked and the temp file created fresh, never through a link; its mode is
/// set on the descriptor, so neither a stale file's mode nor the umask changes it.
fn write_durable(dir: &File, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(Permissions::from_mode(mode))?;
        f.write_all(&encode_item(data))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    dir.sync_all()
}

/// Whether `path` itself is a symbolic link.
fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn symlink_refused(path: &Path) -> String {
    format!(
        "certificate set directory {} is a symbolic link; the certificate store does not follow \
         symbolic links (replace it with a real directory)",
        path.display()
    )
}

/// Open a directory to fsync it; `follow`: whether `path` may itself be a symbolic link.
fn open_dir(path: &Path, follow: bool) -> io::Result<File> {
    let flags = if follow {
        libc::O_DIRECTORY
    } else {
        libc::O_DIRECTORY | libc::O_NOFOLLOW
    };
    OpenOptions::new().read(true).custom_flags(flags).open(path)
}

/// Open a set directory, refusing a symbolic link (also one that appeared after a check) by name.
/// Linux answers `O_DIRECTORY|O_NOFOLLOW` on a link with ENOTDIR (ELOOP elsewhere).
fn open_set_dir(path: &Path) -> io::Result<File> {
    open_dir(path, false).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR) if is_symlink(path) => {
            io::Error::other(symlink_refused(path))
        }
        _ => e,
    })
}

/// Create `dir` if it is missing (and its missing parents) and make each new entry durable by
/// fsyncing the directory that holds it.
fn create_dir_synced(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    create_dir_synced(parent)?;
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    open_dir(parent, true)?.sync_all()
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

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// `path` is a regular file (not a symbolic link) with `mode` holding the item `data`.
    #[track_caller]
    fn assert_item_file(path: &Path, mode: u32, data: &[u8]) {
        let meta = fs::symlink_metadata(path).unwrap();
        assert!(
            meta.file_type().is_file(),
            "{} is not a regular file: {:?}",
            path.display(),
            meta.file_type()
        );
        assert_eq!(mode_of(path), mode, "mode of {}", path.display());
        assert_eq!(decode_item(&fs::read(path).unwrap()).unwrap(), data);
    }

    #[test]
    fn planted_temp_symlink_is_not_followed() {
        let dir = tempdir("tmplink");
        let store = CertStore::new(dir.join("store"));
        let outside = dir.join("outside.txt");
        fs::create_dir_all(dir.join("store/set0")).unwrap();
        fs::write(&outside, b"not yours").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("store/set0/.key.otp.tmp")).unwrap();
        store.write(0, Item::Key, b"secret key").unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"not yours");
        assert_eq!(mode_of(&outside), 0o644);
        assert_item_file(&store.item_path(0, Item::Key), 0o600, b"secret key");
        assert!(!dir.join("store/set0/.key.otp.tmp").exists());
        // A dangling link too (O_CREAT would create its target).
        let absent = dir.join("absent.txt");
        std::os::unix::fs::symlink(&absent, dir.join("store/set0/.ca.otp.tmp")).unwrap();
        store.write(0, Item::Ca, b"ca").unwrap();
        assert!(
            fs::symlink_metadata(&absent).is_err(),
            "link target created"
        );
        assert_item_file(&store.item_path(0, Item::Ca), 0o644, b"ca");
        // And for the saved settings.
        std::os::unix::fs::symlink(&outside, dir.join("store/.settings.saved.tmp")).unwrap();
        store.write_settings(b"ssid=6c6162").unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"not yours");
        assert_item_file(&store.settings_path(), 0o600, b"ssid=6c6162");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn stale_temp_file_mode_does_not_leak_into_the_item() {
        let dir = tempdir("tmpmode");
        let store = CertStore::new(&dir);
        fs::create_dir_all(dir.join("set0")).unwrap();
        for name in ["set0/.key.otp.tmp", ".settings.saved.tmp"] {
            fs::write(dir.join(name), b"stale").unwrap();
            fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o644)).unwrap();
        }
        fs::write(dir.join("set0/.cert.otp.tmp"), b"stale").unwrap();
        fs::set_permissions(
            dir.join("set0/.cert.otp.tmp"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        store.write(0, Item::Key, b"key").unwrap();
        store.write(0, Item::Cert, b"cert").unwrap();
        store.write_settings(b"settings").unwrap();
        assert_item_file(&store.item_path(0, Item::Key), 0o600, b"key");
        assert_item_file(&store.item_path(0, Item::Cert), 0o644, b"cert");
        assert_item_file(&store.settings_path(), 0o600, b"settings");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn symlinked_set_directory_is_refused_by_name() {
        let dir = tempdir("setlink");
        // A real set directory elsewhere, holding an item and a temp file.
        let real = CertStore::new(dir.join("real"));
        real.write(0, Item::Ca, b"ca").unwrap();
        let target = dir.join("real/set0");
        fs::write(target.join(".cert.otp.tmp"), b"x").unwrap();
        let store = CertStore::new(dir.join("store"));
        fs::create_dir_all(dir.join("store")).unwrap();
        let link = dir.join("store/set1");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let shown = link.display().to_string();

        let err = store.write(1, Item::Key, b"key").unwrap_err().to_string();
        assert!(err.contains(&shown), "{err}");
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!target.join("key.otp").exists(), "written through the link");
        assert!(
            !target.join(".key.otp.tmp").exists(),
            "written through the link"
        );

        let err = store.load().unwrap_err().to_string();
        assert!(err.contains(&shown), "{err}");
        assert!(err.contains("symbolic link"), "{err}");
        assert!(
            target.join(".cert.otp.tmp").exists(),
            "cleaned through the link"
        );

        let err = store.erase().unwrap_err().to_string();
        assert!(err.contains(&shown), "{err}");
        assert!(target.join("ca.otp").exists(), "erased through the link");
        assert_eq!(real.load().unwrap().get(0, Item::Ca), Some(&b"ca"[..]));
        let _ = fs::remove_dir_all(&dir);
    }
}
