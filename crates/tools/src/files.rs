//! Reading and creating the files a user names (layer: edge, shared: the emulator's configuration,
//! certificate store and transcript use it too). One place decides what is safe:
//!
//! - every read has a size cap and takes only a regular file: a FIFO, a device (`/dev/zero`), a
//!   directory or a link to one is refused by name at once, never read until it ends or hangs;
//! - every file written with traffic, keys or test results is created without following a
//!   symbolic link, mode 0600 set on the open descriptor (whatever the umask).

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Largest script, included script or configuration file read.
pub const MAX_TEXT_FILE: u64 = 1024 * 1024;

/// `n` bytes in the unit a person reads best (`16 KiB`, `1 MiB`, `300 bytes`).
pub fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// What a file type is called in a refusal.
fn kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// The whole of the regular file at `path` (a symbolic link to one is followed), at most `cap`
/// bytes. Anything else, or a larger file, is an error saying so; nothing blocks (a FIFO is opened
/// non-blocking and refused).
pub fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}, not a regular file", kind(meta.file_type())),
        ));
    }
    let too_big = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {}, the most read", size(cap)),
        )
    };
    if meta.len() > cap {
        return Err(too_big());
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    // The file may grow while it is read: the cap holds whatever its size said.
    f.take(cap + 1).read_to_end(&mut data)?;
    if data.len() as u64 > cap {
        return Err(too_big());
    }
    Ok(data)
}

/// [`read_capped`] as UTF-8 text.
pub fn read_text_capped(path: &Path, cap: u64) -> io::Result<String> {
    String::from_utf8(read_capped(path, cap)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Create a new file at `path` for writing, mode `mode`: fails if anything is there (a planted
/// symbolic link included, dangling or not: `O_EXCL|O_NOFOLLOW`). The mode is set on the open
/// descriptor, so the umask does not change it.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(mode)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(mode))?;
    Ok(f)
}

/// Create (or replace) an output file the user named, mode 0600: a regular file there is
/// replaced by a fresh one (its old mode, owner and hard links keep nothing of what is written).
/// A stream someone reads (a terminal, a pipe or FIFO with a reader, `/dev/null`; also behind a
/// symbolic link, as `/dev/stdout` is) is written as it is, nothing created or truncated. A
/// symbolic link to a file or to nothing, a directory, a FIFO nobody reads is refused by name and
/// left alone.
pub fn create_private(path: &Path) -> io::Result<File> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_new(path, 0o600),
        Err(e) => Err(e),
        Ok(m) if m.file_type().is_file() => {
            std::fs::remove_file(path)?;
            create_new(path, 0o600)
        }
        Ok(m) if m.file_type().is_dir() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a directory, not a regular file",
        )),
        Ok(m) => open_stream(path, m.file_type().is_symlink()),
    }
}

/// Open an existing stream for writing: no `O_CREAT` (a dangling link creates nothing), no
/// `O_TRUNC`, non-blocking while opening (a FIFO without a reader fails instead of waiting); what
/// turns out to be a regular file (a planted link to one) is refused before a byte is written.
fn open_stream(path: &Path, link: bool) -> io::Result<File> {
    let refused = |why: &str| io::Error::new(io::ErrorKind::AlreadyExists, why.to_string());
    const NOT_FOLLOWED: &str = "which is not followed; remove it or name another file";
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) if link => {
                refused(&format!("a symbolic link to nothing, {NOT_FOLLOWED}"))
            }
            Some(libc::ENXIO) => refused("a FIFO nobody reads, not a regular file"),
            _ => e,
        })?;
    if f.metadata()?.file_type().is_file() {
        return Err(refused(&format!(
            "a symbolic link to a regular file, {NOT_FOLLOWED}"
        )));
    }
    // Written as a terminal or a pipe is, blocking (the open only had to not wait).
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(&f, FcntlArg::F_GETFL)?);
    fcntl(&f, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("eswifi-files-{tag}-"))
            .tempdir()
            .expect("temp dir")
    }

    fn fifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    }

    #[test]
    fn reads_refuse_what_is_not_a_small_regular_file() {
        let d = dir("read");
        let p = d.path().join("a.txt");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_capped(&p, 5).unwrap(), b"hello");
        let e = read_capped(&p, 4).unwrap_err().to_string();
        assert_eq!(e, "larger than 4 bytes, the most read");
        let e = read_capped(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "a character device, not a regular file");
        let link = d.path().join("zero");
        symlink("/dev/zero", &link).unwrap();
        let e = read_capped(&link, 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "a character device, not a regular file");
        // A FIFO with no writer would block an ordinary open for good.
        let f = d.path().join("fifo");
        fifo(&f);
        let e = read_capped(&f, 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "a FIFO, not a regular file");
        let e = read_capped(d.path(), 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "a directory, not a regular file");
        // Through a link to a regular file is a read like any other.
        let l2 = d.path().join("l2");
        symlink(&p, &l2).unwrap();
        assert_eq!(read_text_capped(&l2, 100).unwrap(), "hello");
        assert_eq!(size(16 * 1024), "16 KiB");
        assert_eq!(size(MAX_TEXT_FILE), "1 MiB");
    }

    #[test]
    fn private_files_never_follow_links_and_are_0600() {
        let d = dir("create");
        let p = d.path().join("out");
        use std::io::Write;
        create_private(&p).unwrap().write_all(b"one").unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        // A file already there, 0644 and hard-linked: replaced, the other name keeps its bytes.
        std::fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        let other = d.path().join("other");
        std::fs::hard_link(&p, &other).unwrap();
        create_private(&p).unwrap().write_all(b"two").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read(&other).unwrap(), b"one");
        // A link, to a file or dangling: refused, and neither it nor its target touched.
        let target = d.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = d.path().join("link");
        symlink(&target, &link).unwrap();
        let e = create_private(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        let absent = d.path().join("absent");
        let dangling = d.path().join("dangling");
        symlink(&absent, &dangling).unwrap();
        assert!(create_private(&dangling).is_err());
        assert!(
            std::fs::symlink_metadata(&absent).is_err(),
            "target created"
        );
        assert!(std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            create_private(&dangling).unwrap_err().to_string(),
            "a symbolic link to nothing, which is not followed; remove it or name another file"
        );
        assert_eq!(
            create_private(&link).unwrap_err().to_string(),
            "a symbolic link to a regular file, which is not followed; remove it or name another \
             file"
        );
        // A FIFO nobody reads is refused at once (an open for writing would wait for a reader).
        let f = d.path().join("fifo");
        fifo(&f);
        let e = create_private(&f).unwrap_err().to_string();
        assert_eq!(e, "a FIFO nobody reads, not a regular file");
        // One with a reader is a stream, written as it is.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&f)
            .unwrap();
        create_private(&f)
            .unwrap()
            .write_all(b"to the reader")
            .unwrap();
        let mut got = String::new();
        (&reader).read_to_string(&mut got).unwrap();
        assert_eq!(got, "to the reader");
        // A character device is written as it is, through a link too (`/dev/stdout`).
        create_private(Path::new("/dev/null"))
            .unwrap()
            .write_all(b"x")
            .unwrap();
        let null = d.path().join("null");
        symlink("/dev/null", &null).unwrap();
        create_private(&null).unwrap().write_all(b"x").unwrap();
        assert!(create_private(d.path()).is_err());
    }
}
