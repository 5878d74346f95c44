//! The emulator inside the runner's own process, as `run` and `term` see it (layer: seam): a pty
//! path to open like any other port and a control socket for `fault` directives. The emulator
//! crate implements it ([`Start`] is handed in by the binary), so this crate never links a driver.

use eswifi_core::config::Config;
use std::io;
use std::path::Path;

/// A running embedded emulator; dropping it stops it and removes what it created.
pub trait Embedded {
    /// The pty path the host side opens.
    fn path(&self) -> &Path;
    /// Its control socket (mode 0600), for `fault` directives.
    fn control(&self) -> &Path;
    /// The warnings and errors it logged since the last call, oldest first (a failing step
    /// shows them).
    fn take_log(&self) -> Vec<String>;
}

/// Start one module with `config`. `certsets`: where its certificate sets live (`None`: a fresh
/// temporary directory, every item programmable); `seed`: of its faults' random choices.
pub type Start = fn(
    config: &Config,
    certsets: Option<&Path>,
    seed: Option<u64>,
) -> io::Result<Box<dyn Embedded>>;
