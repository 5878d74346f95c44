//! The IWIN wire format (layer: wire): framer, command parser, reply encoder. Pure byte handling; no
//! module state, no IO.

pub mod command;
pub mod framer;
pub mod profile;
pub mod reply;
