//! eswifi-core: the Inventek eS-WiFi module's IWIN AT command set as a sans-IO state machine.
//!
//! Layers (each module's docs say what it may touch):
//! - [`iwin`]: wire format only — framer (bytes → frames), command parser (frame → typed command),
//!   reply encoder (typed reply → exact bytes), firmware profiles.
//! - [`module`]: the emulated module, a pure state machine (bytes, net events, time in; bytes,
//!   [`module::io::NetOp`]s and a wake-up time out), and the contract with whatever drives it
//!   ([`module::io`]).
//! - [`config`]: configuration data, [`presets`] the per-driver fragments of it; [`item`]: the
//!   certificate store's item codec; [`rng`]: the seeded generator behind every random choice;
//!   [`hex`]: lower-case hex.
//! - `fuzz` (tests and the `fuzzing` feature only): fuzz targets checking invariants.
//!
//! No clock is read and no file descriptor touched anywhere in this crate.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod config;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod hex;
pub mod item;
pub mod iwin;
pub mod module;
pub mod presets;
pub mod rng;
