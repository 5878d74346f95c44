//! Serial front ends (layer: edge): the pty, a real tty, TCP (listen or connect) and stdio, behind
//! one [`port::Port`]; and output pacing at the line's baud rate ([`pace`]). Nothing here knows the
//! IWIN protocol.

pub mod pace;
pub mod port;
pub mod pty;

pub use pace::Pacer;
pub use port::{FrontEnd, Port};
pub use pty::{Pty, PtyLink};
