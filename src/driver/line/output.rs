//! The line's output side (layer: edge): the module's output taken and sent where the host's
//! state says, writes as far as the line and the pacer let, rate switches after the bytes before
//! them, and when the line next wants a turn.

use super::{Ctx, Line, Take, SERIAL_OUT_HIGH};
use crate::driver::attach::Sink;
use crate::driver::core::Core;
use crate::serial::port::Happened;
use eswifi_core::module::{Input, LineOp, Output};
use std::io;
use std::time::{Duration, Instant};

impl<M: Core> Line<M> {
    /// Carry out the module's output; its serial bytes as `take` says. True if anything moved.
    pub(super) fn drain(&mut self, cx: &mut Ctx, take: Take) -> bool {
        let mut moved = false;
        let mut took = false;
        while let Some(o) = self.core.poll_output(self.takes_serial(take)) {
            moved = true;
            match o {
                Output::FaultFired(what) => cx.faults.core_fired(self.idx, &what),
                Output::Rebooted { commands } => cx.faults.rebooted(self.idx, commands),
                Output::Trace(r) => cx.journal.record(self.idx, &r),
                Output::Net(op) => cx.net.perform(cx.registry, cx.faults, self.idx, op, cx.now),
                Output::Store(op) => {
                    if let Some((_, req, result)) = cx.store.submit(self.idx, op) {
                        self.core.handle(Input::Stored { req, result }, cx.now);
                    }
                }
                Output::Serial(bytes) => {
                    took = true;
                    // Contents are logged by the core, which knows what they are.
                    log::trace!("m{} serial out {} bytes", self.idx, bytes.len());
                    match (take, self.host.sink()) {
                        (Take::ToHost, Sink::Line) => {
                            self.faults
                                .send(cx.faults, self.idx, bytes, &mut self.out, cx.now)
                        }
                        (Take::ToHost, Sink::Boot) => self.host.keep_boot(&bytes),
                        _ => log::trace!("m{} {} bytes for no host", self.idx, bytes.len()),
                    }
                }
                Output::Line(LineOp::SetBaud(rate)) => self.baud_after_drain = Some(rate),
            }
        }
        if took && self.baud_after_drain.is_none() {
            self.core.handle(Input::OutputTaken, cx.now);
        }
        moved
    }

    /// Whether the module's serial output is taken now: to be dropped, or while the line has
    /// room for it.
    pub(super) fn takes_serial(&self, take: Take) -> bool {
        match take {
            Take::NoSerial => false,
            Take::Drop => true,
            Take::ToHost => {
                let queued = self.out.len() + self.faults.held_out();
                let room = self.host.sink() != Sink::Line || queued < SERIAL_OUT_HIGH;
                self.baud_after_drain.is_none() && room
            }
        }
    }

    /// Write what waits, as far as the line and the pacer let; then a pending rate switch.
    pub(super) fn write(&mut self, cx: &mut Ctx, h: &mut Happened) -> io::Result<bool> {
        let now = cx.now;
        let mut moved = self.faults.release_output(&mut self.out, now);
        if !self.blocked && !self.out.is_empty() {
            let limit = self.pacer.as_ref().map_or(usize::MAX, |p| p.allowance(now));
            let (port, registry) = (&mut self.port, cx.registry);
            let mut blocked = false;
            let written = self.out.flush_limited(limit, |b| {
                let r = port.write(registry, b, h);
                blocked |= matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
                r
            });
            let written =
                written.map_err(|e| io::Error::new(e.kind(), format!("serial write: {e}")))?;
            if let Some(p) = &mut self.pacer {
                p.sent(written, now);
            }
            moved |= written > 0;
            self.blocked = blocked;
        }
        let want = self.blocked && !self.out.is_empty() && self.port.host_attached();
        if want != self.writable {
            self.port.want_writable(cx.registry, &self.tokens, want)?;
            self.writable = want;
        }
        moved |= self.switch_rate(cx)?;
        Ok(moved)
    }

    /// Apply a rate switch once the bytes before it have left (the OS's queue too).
    pub(super) fn switch_rate(&mut self, cx: &mut Ctx) -> io::Result<bool> {
        let Some(rate) = self.baud_after_drain else {
            return Ok(false);
        };
        let now = cx.now;
        let wire_idle = self.pacer.as_ref().is_none_or(|p| p.idle_at() <= now);
        let all_out = self.out.is_empty() && self.faults.held_out() == 0;
        if all_out && wire_idle && self.port.output_queued() == 0 {
            self.baud_after_drain = None;
            self.baud_check_at = None;
            self.port.set_baud(rate)?;
            if let Some(p) = &mut self.pacer {
                p.set_baud(rate);
            }
            log::info!("module {}: line now at {rate} baud", self.idx);
            cx.journal
                .note(self.idx, now, &format!("line at {rate} baud"));
            self.core.handle(Input::OutputTaken, now);
            return Ok(true);
        }
        if self.out.is_empty() {
            // The OS (or the paced wire) still holds some: look again shortly.
            let idle = self.pacer.as_ref().map_or(now, |p| p.idle_at());
            self.baud_check_at = Some(idle.max(now + Duration::from_millis(1)));
        }
        Ok(false)
    }

    /// The earliest time the line wants a turn (pacing, a rate switch, the host's state, a
    /// reconnect, a fault, the module's timer).
    pub(in crate::driver) fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let pace = match &self.pacer {
            // (While the OS is full, WRITABLE wakes the loop instead.)
            Some(p) if !self.out.is_empty() && !self.blocked => Some(p.next_at(now)),
            _ => None,
        };
        [
            pace,
            self.baud_check_at,
            self.host.deadline(),
            self.port.next_deadline(),
            self.faults.next_deadline(),
            self.core.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
