//! The serial line towards the host program (layer: edge). Today a pty; a real serial device would be
//! a sibling of [`pty`]. Moves bytes only; the IWIN framing lives in the core.

pub mod pty;

pub use pty::{Pty, PtyLink};
