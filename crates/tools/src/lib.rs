//! eswifi-tools: the host's side of the serial line (layer: tools). Reached as subcommands of the
//! one `eswifi-emu` binary, which also supplies the emulator `run` and `term` start in-process
//! ([`script::embedded::Start`]): this crate drives a module, it does not contain one.
//!
//! - [`script`]: terminal scripts (`run`) and the interactive terminal (`term`).
//! - [`peers`]: loopback servers the shipped scripts talk to (`peers`).
//! - [`files`]: bounded reads and private output files (the emulator's too).

#![warn(unreachable_pub)]

pub mod files;
pub mod peers;
pub mod script;
