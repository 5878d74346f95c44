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
//! Every read is bounded and takes only a regular file (`eswifi_tools::files`): an item file over
//! [`MAX_ITEM_FILE`] (what `PG` can program), a FIFO, a device or a directory at an item's name is
//! reported by name, never read until memory runs out or waited on.
//!
//! Blocking IO: the driver calls [`CertStore::write`] from a worker thread, never from the event loop.

use eswifi_core::item::{decode_item, encode_item, Item, ItemError, MAX_ITEM, MAX_ITEM_FILE};
use eswifi_core::module::certs::{CertSets, SET_COUNT};
use eswifi_tools::files::{create_new, read_capped};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The largest saved-settings file read (they are a few hundred bytes).
const MAX_SETTINGS_FILE: u64 = 64 * 1024;

/// The remedy a refusal names: what `flash --erase` removes, and what it cannot.
const REMEDY: &str = "remove it or run `eswifi-emu flash --erase`";

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
    /// Something other than an item file where one belongs: a FIFO, a device, a directory, a
    /// file larger than any item (never read to its end).
    NotAnItem {
        path: PathBuf,
        why: String,
        dir: bool,
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
                "certificate store file {} is corrupt or torn ({why}); {REMEDY}",
                path.display()
            ),
            StoreError::NotAnItem { path, why, dir } => write!(
                f,
                "certificate store {} is not an item file: {why}; {}",
                path.display(),
                // A directory is the one thing `flash --erase` leaves alone.
                if *dir {
                    "remove it (`eswifi-emu flash --erase` removes files only)"
                } else {
                    REMEDY
                }
            ),
            StoreError::Io { path, err } => {
                write!(f, "certificate store {}: {err}", path.display())
            }
            StoreError::Symlink { path } => write!(f, "{}", symlink_refused(path)),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// A bounded read of `path` failed: not an item (refused by kind or size) or an IO error.
    fn read(path: PathBuf, err: io::Error) -> StoreError {
        match err.kind() {
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => StoreError::NotAnItem {
                dir: fs::metadata(&path).is_ok_and(|m| m.is_dir()),
                why: err.to_string(),
                path,
            },
            _ => StoreError::Io { path, err },
        }
    }
}

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
                let bytes = match read_capped(&path, MAX_ITEM_FILE) {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(StoreError::read(path, err)),
                };
                let data = decode_item(&bytes).map_err(|why| StoreError::Corrupt {
                    path: path.clone(),
                    why,
                })?;
                if data.len() > MAX_ITEM {
                    return Err(StoreError::NotAnItem {
                        why: format!(
                            "it holds {} bytes, more than PG programs ({MAX_ITEM})",
                            data.len()
                        ),
                        path,
                        dir: false,
                    });
                }
                sets.put(set, item, data);
            }
        }
        Ok(sets)
    }

    /// Remove the temp files an interrupted write left in the set directories and beside the saved
    /// settings (`.settings.saved.tmp` holds the passphrase: it must not outlive a kill during
    /// `Z1`). A temp file that is a symbolic link is unlinked itself, never its target; one that
    /// cannot be removed (a directory) is logged as such, and writing that item fails until it is
    /// gone. A set directory that is a symbolic link is an error naming it, and nothing in it is
    /// touched.
    pub(crate) fn remove_stale_temps(&self) -> Result<(), StoreError> {
        let mut temps = vec![temp_path(&self.settings_path())];
        for set in 0..SET_COUNT {
            let set_dir = self.set_dir(set);
            if is_symlink(&set_dir) {
                return Err(StoreError::Symlink { path: set_dir });
            }
            if let Ok(entries) = fs::read_dir(&set_dir) {
                temps.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                        .map(|e| e.path()),
                );
            }
        }
        for path in temps {
            match fs::remove_file(&path) {
                Ok(()) => log::info!("removed {} left by an interrupted write", path.display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!(
                    "{} is left from an interrupted write but cannot be removed ({e}); writing \
                     that item fails until it is gone",
                    path.display()
                ),
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
        match read_capped(&path, MAX_SETTINGS_FILE) {
            Ok(bytes) => decode_item(&bytes)
                .map(Some)
                .map_err(|why| StoreError::Corrupt { path, why }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(StoreError::read(path, err)),
        }
    }

    /// Remove every item of every set and the saved settings (the offline "flash a complete
    /// firmware image", which clears the module's flash): whatever is at an item's name (a corrupt
    /// file, a FIFO, a link: never its target) goes. What it cannot remove is refused before
    /// anything is erased, naming it: a set directory that is a symbolic link, a directory at an
    /// item's name.
    pub(crate) fn erase(&self) -> io::Result<()> {
        let mut files = vec![self.settings_path()];
        for set in 0..SET_COUNT {
            let set_dir = self.set_dir(set);
            if is_symlink(&set_dir) {
                return Err(io::Error::other(symlink_refused(&set_dir)));
            }
            files.extend(Item::ALL.map(|item| self.item_path(set, item)));
        }
        for path in &files {
            if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                return Err(io::Error::other(format!(
                    "{} is a directory, not an item; nothing was erased (remove it, then erase)",
                    path.display()
                )));
            }
        }
        for path in &files {
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
                }
                _ => {}
            }
        }
        for set in 0..SET_COUNT {
            match open_set_dir(&self.set_dir(set)) {
                Ok(dir) => dir.sync_all()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match open_dir(&self.dir, true) {
            Ok(dir) => dir.sync_all(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The temp file beside `path` that a crash-safe write of it goes through (`.<name>.tmp`).
fn temp_path(path: &Path) -> PathBuf {
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent.join(format!(".{name}.tmp"))
}

/// Write `data` under the checked header to `path` via a temp file beside it: write, fsync, rename,
/// fsync the directory (`dir`, the open directory holding `path`). Readers see the old file or the
/// complete new one, never a torn one. Whatever is at the temp name (a stale file or a planted
/// symbolic link) is unlinked and the temp file created fresh, never through a link; its mode is
/// set on the descriptor, so neither a stale file's mode nor the umask changes it.
fn write_durable(dir: &File, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_path(path);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    {
        let mut f = create_new(&tmp, mode)?;
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
