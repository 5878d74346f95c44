//! eswifi-emu: an emulator of the Inventek eS-WiFi module's IWIN AT command set.
//!
//! Layers (each module's docs say what it may touch):
//! - [`iwin`]: wire format only — framer (bytes → frames), command parser (frame → typed command),
//!   reply encoder (typed reply → exact bytes).
//! - [`module`]: the emulated module, a pure state machine (bytes, net events, time in; bytes,
//!   [`module::io::NetOp`]s and a wake-up time out). No IO, no clock.
//! - [`net`], [`serial`], [`driver`]: the edges — real sockets, DNS worker, pty, and the mio loop.
//! - [`config`]: configuration data.
//! - [`script`]: the host's side: terminal scripts (`run`) and the interactive terminal (`term`).
//! - [`peers`]: loopback servers the shipped scripts talk to (`peers`).
//! - `fuzz` (tests and the `fuzzing` feature only): fuzz targets checking invariants (`fuzz/`).

pub mod certstore;
pub mod control;
pub mod driver;
pub mod embedded;
pub mod faults;
pub mod net;
pub mod serial;
pub mod tools;
pub mod trace;

// Moved to eswifi-core; re-exported while the rest of the tree moves.
pub use eswifi_core::{config, iwin, module, rng};
