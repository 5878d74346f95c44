//! The module as its driver sees it (layer: module API): every input in one enum ([`Input`],
//! given to [`Module::handle`]) and everything the module wants done in one ordered stream
//! ([`Output`], taken with [`Module::poll_output`]). Plain data and dispatch only; no IO.

use super::io::{NetEvent, NetOp, StoreOp, StoreReq, WriteError};
use super::{FaultFired, LineOp, Module, TraceRecord, WifiFaults};
use std::time::Instant;

/// Something that happened to the module.
#[derive(Debug)]
pub enum Input<'a> {
    /// Bytes the host wrote (at most [`Module::serial_room`] of them).
    Serial(&'a [u8]),
    /// A network event.
    Net(NetEvent),
    /// The time [`Module::poll_timeout`] asked for has come.
    Timeout,
    /// The driver took the serial output and the line changes: held commands may run.
    OutputTaken,
    /// A store write finished.
    Stored {
        req: StoreReq,
        result: Result<(), WriteError>,
    },
    /// The reset pin, a brown-out: everything closes, the banner is printed.
    PowerCycle,
    /// The access point is gone.
    LinkDown,
    /// The Wi-Fi faults to apply from now on.
    WifiFaults(WifiFaults),
}

/// Something the module wants done, in the order [`Module::poll_output`] gives them.
#[derive(Debug)]
pub enum Output {
    /// A fault the module applied, for the fault layer's counts.
    FaultFired(FaultFired),
    /// The module rebooted (`ZR`, a power cycle) after this many commands since its previous boot
    /// (the fault layer counts commands across reboots).
    Rebooted { commands: u64 },
    /// A transcript record (only while tracing).
    Trace(TraceRecord),
    /// A socket operation.
    Net(NetOp),
    /// A certificate-store write, to be made durable off the event loop.
    Store(StoreOp),
    /// Bytes for the serial line.
    Serial(Vec<u8>),
    /// A change to the line, once every byte before it has left.
    Line(LineOp),
}

impl Module {
    /// Give the module one input at `now`.
    pub fn handle(&mut self, input: Input<'_>, now: Instant) {
        match input {
            Input::Serial(data) => self.handle_serial(data, now),
            Input::Net(ev) => self.handle_net(ev, now),
            Input::Timeout => self.handle_timeout(now),
            Input::OutputTaken => self.handle_output_taken(now),
            Input::Stored { req, result } => self.handle_stored(req, result, now),
            Input::PowerCycle => self.power_cycle(now),
            Input::LinkDown => self.link_down(now),
            Input::WifiFaults(f) => self.set_wifi_faults(f),
        }
    }

    /// The next thing to do. Serial bytes and line changes only while `take_serial` (the driver
    /// stops taking them while the host does not read: the module then stops taking input); a
    /// line change only once the bytes before it are taken.
    pub fn poll_output(&mut self, take_serial: bool) -> Option<Output> {
        if let Some(f) = self.poll_fault_fired() {
            return Some(Output::FaultFired(f));
        }
        if let Some(commands) = self.rebooted.take() {
            return Some(Output::Rebooted { commands });
        }
        if let Some(r) = self.poll_trace() {
            return Some(Output::Trace(r));
        }
        if let Some(op) = self.poll_op() {
            return Some(Output::Net(op));
        }
        if let Some(op) = self.poll_store() {
            return Some(Output::Store(op));
        }
        if !take_serial {
            return None;
        }
        if !self.out.is_empty() {
            return Some(Output::Serial(self.take_serial()));
        }
        self.poll_line_op().map(Output::Line)
    }

    /// Nothing left to do for the host: no command in flight or waiting for room, no output
    /// untaken. A host that ended its input (stdin, a half-closed connection) is done then.
    pub fn idle(&self) -> bool {
        self.busy.is_none() && self.out.is_empty() && self.line_ops.is_empty()
    }
}
