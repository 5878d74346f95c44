//! Serial front ends (layer: edge): the pty, a real tty, TCP (listen or connect) and stdio, behind
//! one [`port::Port`]; who has a pty open ([`watch`]); and output pacing at the line's baud rate
//! ([`pace`]). Nothing here knows the IWIN protocol.

pub(crate) mod pace;
pub(crate) mod port;
pub(crate) mod pty;
pub(crate) mod tcp;
pub(crate) mod watch;

pub(crate) use pace::Pacer;
pub(crate) use port::{FrontEnd, Port};
pub(crate) use pty::{Pty, PtyLink};
