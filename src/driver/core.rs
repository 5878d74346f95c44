//! What the driver needs from an emulated module (layer: edge): inputs in, ordered outputs out
//! ([`eswifi_core::module::Input`], [`eswifi_core::module::Output`]), and a few questions. The real
//! [`Module`] implements it; the driver's tests use small fakes.

use eswifi_core::module::io::ConnId;
use eswifi_core::module::{Input, Module, Output, Status};
use std::time::Instant;

pub(crate) trait Core {
    fn handle(&mut self, input: Input<'_>, now: Instant);
    /// The next thing to do; serial bytes and line changes only while `take_serial`.
    fn poll_output(&mut self, take_serial: bool) -> Option<Output>;
    fn poll_timeout(&self) -> Option<Instant>;
    /// How many more serial bytes the core takes now (0: stop reading the line).
    fn serial_room(&self) -> usize;
    /// How many more received bytes the core takes for `conn` (0: stop reading it).
    fn rx_room(&self, conn: ConnId) -> usize;
    /// Nothing in flight and no output untaken.
    fn idle(&self) -> bool;
    fn status(&self) -> Option<Status> {
        None
    }
    /// Commands executed since power-up (for `module.reset after=N`).
    fn commands(&self) -> u64 {
        0
    }
}

impl Core for Module {
    fn handle(&mut self, input: Input<'_>, now: Instant) {
        Module::handle(self, input, now)
    }
    fn poll_output(&mut self, take_serial: bool) -> Option<Output> {
        Module::poll_output(self, take_serial)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Module::poll_timeout(self)
    }
    fn serial_room(&self) -> usize {
        Module::serial_room(self)
    }
    fn rx_room(&self, conn: ConnId) -> usize {
        Module::rx_room(self, conn)
    }
    fn idle(&self) -> bool {
        Module::idle(self)
    }
    fn status(&self) -> Option<Status> {
        Some(Module::status(self))
    }
    fn commands(&self) -> u64 {
        Module::commands(self)
    }
}
