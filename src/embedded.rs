//! The emulator inside the runner's own process (layer: edge glue): one module, its pty and the mio
//! driver on a thread of their own, reached through the pty path like any other port. This is
//! what `run` and `term` use when no port is given ([`start`] is their
//! [`eswifi_tools::script::embedded::Start`]). Its control socket (for the `fault` directive) is on
//! a short path in a private temporary directory, removed when it stops.

use crate::certstore::CertStore;
use crate::driver::{Driver, Flow};
use crate::net::claim;
use crate::serial::Pty;
use eswifi_core::config::Config;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;
use tempfile::TempDir;

/// How often the driver thread looks at its stop flag.
const TICK: Duration = Duration::from_millis(50);

/// Longest Unix socket path that binds everywhere (`sun_path` is 104 bytes on the BSDs, 108 on
/// Linux, with the NUL).
const MAX_SOCKET_PATH: usize = 100;

/// A running embedded emulator. Dropping it stops the driver thread and removes a temporary
/// certificate directory and the control socket.
struct Embedded {
    slave: PathBuf,
    control: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _certs: Option<TempDir>,
    _control_dir: TempDir,
    _claim: Option<claim::Claim>,
}

/// A private directory (mode 0700) for the control socket, on a path short enough to bind: the
/// system's temporary directory, or `/tmp` when that is too long.
fn control_dir() -> io::Result<TempDir> {
    let t = private_dir("ctl")?;
    if t.path().join("ctl").as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(t);
    }
    drop(t);
    private_dir_in(Path::new("/tmp"), "ctl")
}

/// A fresh directory only this user may enter: it will hold private keys or a control socket.
fn private_dir(tag: &str) -> io::Result<TempDir> {
    private_dir_in(&std::env::temp_dir(), tag)
}

fn private_dir_in(parent: &Path, tag: &str) -> io::Result<TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(&format!("eswifi-{tag}-"))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
}

/// Start one module. `certsets`: where its certificate sets live; `None` for a fresh temporary
/// directory (every item programmable, as on a new module). `seed`: of its faults' random
/// choices (else `[faults] seed`, else picked and logged at info level).
pub(crate) fn start(
    config: &Config,
    certsets: Option<&Path>,
    seed: Option<u64>,
) -> io::Result<Box<dyn eswifi_tools::script::embedded::Embedded>> {
    let (tmp, dir) = match certsets {
        Some(d) => (None, d.to_owned()),
        None => {
            let t = private_dir("certsets")?;
            let d = t.path().to_owned();
            (Some(t), d)
        }
    };
    let store = CertStore::new(&dir);
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // A loopback address of its own, as `eswifi-emu` serving claims one: modules of other
    // processes (parallel test runs) then never collide on ports.
    let mut config = config.clone();
    config.key_log = crate::keylog::sink();
    let claim = if config.network.ip_pinned {
        None
    } else {
        let c = claim::claim(&[])?;
        config.network.ip = c.ip;
        if !config.network.ap_ip_pinned {
            config.network.ap_ip = claim::ap_address(c.ip);
        }
        Some(c)
    };
    let rules = crate::driver::config_rules(&config)?;
    let module = crate::driver::boot_module(&config, &store, unix, false)?;
    let seed = crate::driver::fault_seed(seed, &config);
    let control_dir = control_dir()?;
    let control = control_dir.path().join("ctl");
    let control_at = control.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<PathBuf>>();
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("embedded-emulator".into())
        .spawn(move || {
            let setup = || -> io::Result<(Driver, PathBuf)> {
                let pty = Pty::open()?;
                let slave = pty.slave_path().to_owned();
                // The host side (`run`, `term`) handles Ctrl-C: in `term` it only cancels a wait.
                let mut driver = Driver::with_signals(false)?;
                driver.seed_faults(seed);
                let port = crate::serial::port::Port::pty(pty);
                let idx = driver.add(module, port, crate::driver::LineSetup::default())?;
                driver.set_store(idx, store);
                for rule in rules {
                    driver.add_fault(rule).map_err(io::Error::other)?;
                }
                driver
                    .bind_control(&control_at)
                    .map_err(|e| io::Error::new(e.kind(), format!("control socket: {e}")))?;
                Ok((driver, slave))
            };
            let mut driver = match setup() {
                Ok((d, slave)) => {
                    let _ = ready_tx.send(Ok(slave));
                    d
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while !flag.load(Ordering::Relaxed) {
                match driver.step(Some(TICK)) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Shutdown) => {
                        // The driver took SIGINT/SIGTERM/SIGHUP for the whole process.
                        eprintln!("eswifi-emu: interrupted");
                        std::process::exit(130);
                    }
                    Err(e) => {
                        log::error!("embedded emulator: {e}");
                        return;
                    }
                }
            }
        })?;
    let slave = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| io::Error::other("the embedded emulator did not start"))??;
    log::debug!("embedded emulator on {}", slave.display());
    Ok(Box::new(Embedded {
        slave,
        control,
        stop,
        thread: Some(thread),
        _certs: tmp,
        _control_dir: control_dir,
        _claim: claim,
    }))
}

impl eswifi_tools::script::embedded::Embedded for Embedded {
    fn path(&self) -> &Path {
        &self.slave
    }

    fn control(&self) -> &Path {
        &self.control
    }

    fn take_log(&self) -> Vec<String> {
        crate::logging::take_captured()
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
