//! One module and its serial line (layer: edge). [`Line::turn`] is the whole life of a line, in
//! one order, every time: what the host did (attached, left, flushed its input); read what it
//! sent; its end (end of input, gone); the module's work (timers, faults, output to the line, to
//! the boot prompt or nowhere, as [`Host`] says); write; and, once the host is done, the next one.
//!
//! Besides, it does what a UART and its wiring do: it stops reading while the module has no room,
//! holds output while the host does not read (and then makes no write until the port says it
//! may: a pty wakes its poll for every failed write), switches the rate after the bytes written
//! before a `U0`, paces output at the baud rate (`--pace`), and power-cycles the module when told.

mod output;

use super::attach::{Effects, Event, Host, Times};
use super::core::Core;
use super::faulty::{Faults, FaultyNet, LineFaults};
use super::journal::Journal;
use super::store::StoreWorker;
use crate::net::{ModuleIdx, WriteQueue};
use crate::serial::port::Happened;
use crate::serial::{Pacer, Port};
use eswifi_core::config::Attach;
use eswifi_core::module::Input;
use mio::{Registry, Token};
use std::io;
use std::time::Instant;

/// Serial output the driver holds for a line; while more waits, it takes no more replies from the
/// core (which then stops taking input): a host that never reads stalls instead of growing memory.
pub(crate) const SERIAL_OUT_HIGH: usize = 64 * 1024;

/// Hosts one turn may take in a row on a `--listen` line (each left at once).
const MAX_HOSTS_PER_TURN: usize = 8;

/// What becomes of the module's serial output in a [`Line::drain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Not taken now (everything else is).
    NoSerial,
    /// Taken and thrown away (a reset, a host that spoke before its prompt).
    Drop,
    /// Where the host's state says.
    ToHost,
}

/// What a line's turn needs from the rest of the loop.
pub(super) struct Ctx<'a> {
    pub registry: &'a Registry,
    pub faults: &'a mut Faults,
    pub journal: &'a mut Journal,
    pub net: &'a mut FaultyNet,
    pub store: &'a StoreWorker,
    /// Serial reads land here (one buffer for every line).
    pub buf: &'a mut [u8],
    pub now: Instant,
}

pub(super) struct Line<M> {
    pub(super) core: M,
    pub(super) port: Port,
    pub(super) tokens: Vec<Token>,
    idx: ModuleIdx,
    host: Host,
    mode: Attach,
    times: Times,
    out: WriteQueue,
    /// WRITABLE is asked for.
    writable: bool,
    /// The last write found the line full: no write until the port says it is writable.
    blocked: bool,
    /// The line may have input not yet read (edge-triggered polling will not say so again).
    want_read: bool,
    pub(super) pacer: Option<Pacer>,
    /// A rate switch waiting for the bytes before it to leave.
    baud_after_drain: Option<u32>,
    /// When to look again whether the OS has sent what the switch waits for.
    baud_check_at: Option<Instant>,
    faults: LineFaults,
    /// The rule generation this module's Wi-Fi faults were set from.
    wifi_seen: u64,
    /// A `--listen` host may be waiting to be accepted.
    accept: bool,
    /// The line ended for good (stdin): the emulator stops.
    pub(super) done: bool,
}

impl<M: Core> Line<M> {
    pub(super) fn new(
        core: M,
        port: Port,
        tokens: Vec<Token>,
        idx: ModuleIdx,
        mode: Attach,
        times: Times,
    ) -> Line<M> {
        let host = Host::start(mode, port.always_attached());
        Line {
            core,
            port,
            tokens,
            idx,
            host,
            mode,
            times,
            out: WriteQueue::default(),
            writable: false,
            blocked: false,
            want_read: true,
            pacer: None,
            baud_after_drain: None,
            baud_check_at: None,
            faults: LineFaults::default(),
            wifi_seen: 0,
            accept: false,
            done: false,
        }
    }

    /// One turn; `h`: what the poll reported for the line. True if anything moved.
    pub(super) fn turn(&mut self, cx: &mut Ctx, mut h: Happened) -> io::Result<bool> {
        let mut moved = false;
        for _ in 0..MAX_HOSTS_PER_TURN {
            // What the host did to the line.
            self.attachment(cx, &mut h);
            // Read what it sent; its end of input, a pty flush or its departure show here.
            moved |= self.read(cx, &mut h)?;
            self.departure(cx, &mut h);
            // The module's work, and its output.
            moved |= self.work(cx, &mut h)?;
            // Write; a host found gone here leaves too.
            moved |= self.write(cx, &mut h)?;
            self.departure(cx, &mut h);
            // Done with this host: close its line, and take the next one.
            self.finish(cx);
            if matches!(self.port, Port::Stdio { .. }) && self.host == Host::Absent {
                // stdout is gone, or stdin ended and every reply is out.
                self.done = true;
            }
            match self.next_host(cx, h) {
                Some(next) => h = next,
                None => return Ok(moved),
            }
            moved = true;
        }
        Ok(moved)
    }

    /// Opens and closes the poll reported, in the order they happened.
    fn attachment(&mut self, cx: &mut Ctx, h: &mut Happened) {
        let order = match (h.opened, h.closed, h.closed_first) {
            (true, true, true) => [Some(Event::Closed), Some(Event::Opened)],
            (true, true, false) => [Some(Event::Opened), Some(Event::Closed)],
            (true, false, _) => [Some(Event::Opened), None],
            (false, true, _) => [Some(Event::Closed), None],
            _ => [None, None],
        };
        (h.opened, h.closed, h.closed_first) = (false, false, false);
        // (A pty is one queue for every opener: bytes waiting when one host left and another
        // came in the same turn are taken as the new host's, which cannot wait for a reply that
        // went nowhere.)
        for ev in order.into_iter().flatten() {
            self.host_event(cx, ev);
        }
        if h.readable {
            self.want_read = true;
        }
        if h.writable {
            self.blocked = false;
        }
    }

    /// Ends and departures found by reading or writing.
    fn departure(&mut self, cx: &mut Ctx, h: &mut Happened) {
        if std::mem::take(&mut h.flushed) {
            self.host_event(cx, Event::Flushed);
        }
        if std::mem::take(&mut h.ended) {
            log::debug!("module {}: the host's input ended", self.idx);
            self.host_event(cx, Event::Ended);
        }
        if std::mem::take(&mut h.closed) {
            self.host_event(cx, Event::Closed);
        }
    }

    /// Apply a host event and carry out what it asks.
    fn host_event(&mut self, cx: &mut Ctx, ev: Event) {
        let busy = !self.core.idle();
        let before = std::mem::discriminant(&self.host);
        let fx = self.host.on(ev, self.mode, self.times, busy, cx.now);
        match ev {
            Event::Opened => cx.journal.note(self.idx, cx.now, "host opened the line"),
            Event::Closed => cx.journal.note(self.idx, cx.now, "host closed the line"),
            _ => {}
        }
        if before != std::mem::discriminant(&self.host) {
            log::debug!("module {}: host {:?} ({ev:?})", self.idx, self.host);
            // A host that waited to connect may be taken now.
            self.accept |= matches!(self.host, Host::Absent);
        }
        self.apply(cx, fx);
    }

    fn apply(&mut self, cx: &mut Ctx, fx: Effects) {
        if fx.drop_queued {
            let n = self.out.clear() + self.faults.clear();
            if n > 0 {
                log::debug!(
                    "module {}: {n} bytes for a host that left dropped",
                    self.idx
                );
            }
            self.port.drop_unread_output();
            self.blocked = false;
        }
        if fx.drop_pending {
            self.drain(cx, Take::Drop);
        }
        if fx.power_cycle {
            let why = match self.mode {
                Attach::Prompt => "a host attached",
                _ => "a host opened the line",
            };
            self.power_cycle(cx, why);
        }
        if matches!(self.host, Host::Quiet { .. }) && fx.power_cycle {
            let q = self.times.quiet;
            let note = format!("boot output held until the host has been quiet for {q:?}");
            cx.journal.note(self.idx, cx.now, &note);
        }
        if let Some(boot) = fx.send {
            cx.journal
                .note(self.idx, cx.now, "host quiet: boot output sent");
            self.faults
                .send(cx.faults, self.idx, boot, &mut self.out, cx.now);
        }
        if fx.close {
            self.port.close_host(cx.registry);
        }
    }

    /// Power-cycle the module (a reset line, the control socket, a brown-out fault).
    pub(super) fn power_cycle(&mut self, cx: &mut Ctx, why: &str) {
        log::info!("module {}: power cycle ({why})", self.idx);
        cx.journal
            .note(self.idx, cx.now, &format!("power cycle ({why})"));
        // What the module had not put on the wire (held by a serial fault) dies with it, and so
        // does a command it had not yet taken.
        let lost = self.faults.clear();
        cx.faults.power_cycled(self.idx);
        if lost > 0 {
            log::info!(
                "module {}: {lost} bytes of output lost in the power cycle",
                self.idx
            );
        }
        if let Host::Quiet { boot, .. } = &mut self.host {
            boot.clear();
        }
        self.core.handle(Input::PowerCycle, cx.now);
    }

    /// Input waits in the line and the module could take it now.
    pub(super) fn read_pending(&self, now: Instant) -> bool {
        self.want_read
            && self.host.reads()
            && (self.host.deaf() || self.core.serial_room() > 0)
            && self.baud_after_drain.is_none()
            && !self.faults.holds_input(now)
    }

    /// Feed what the host wrote to the module while it has room (or throw it away while it is in
    /// reset), until the line is drained: a read shorter than asked for drained it, so the usual
    /// command costs one read (anything later is a new edge for the poll).
    fn read(&mut self, cx: &mut Ctx, h: &mut Happened) -> io::Result<bool> {
        if cx.faults.take_release(self.idx) {
            self.faults.release_now(cx.now);
        }
        if !self.read_pending(cx.now)
            || !self
                .faults
                .release_input(cx.faults, self.idx, &mut self.core, cx.now)
        {
            return Ok(false);
        }
        let overhead = self.port.overhead();
        let mut moved = false;
        while self.read_pending(cx.now) {
            let space = cx.buf.len() - overhead;
            let room = match self.host.deaf() {
                true => space,
                false => self.core.serial_room().min(space),
            };
            match self
                .port
                .read(cx.registry, &mut cx.buf[..room + overhead], h)
            {
                Ok(0) => self.want_read = false,
                Ok(n) => {
                    moved = true;
                    // Only the count: the core logs commands, and never certificate-key payloads.
                    log::trace!("m{} serial in {n} bytes", self.idx);
                    if self.host.deaf() {
                        log::debug!("module {}: in reset, {n} bytes lost", self.idx);
                    } else {
                        self.host_event(cx, Event::Spoke);
                        let bytes = &cx.buf[..n];
                        self.faults
                            .feed(cx.faults, self.idx, &mut self.core, bytes, cx.now);
                        // Noise goes into the transcript before the command it hit.
                        cx.faults.journal(cx.journal);
                        if self.faults.holds_input(cx.now) {
                            // A stalled command: the line is read again once it is released.
                            break;
                        }
                    }
                    if n < room && self.port.polled() && !h.hup {
                        self.want_read = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.want_read = false,
                Err(e) => return Err(io::Error::new(e.kind(), format!("serial read: {e}"))),
            }
            if h.ended || h.closed || h.flushed {
                break;
            }
        }
        Ok(moved)
    }

    /// Timers, module faults, and the module's output, each where it goes.
    fn work(&mut self, cx: &mut Ctx, h: &mut Happened) -> io::Result<bool> {
        let now = cx.now;
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle(Input::Timeout, now);
        }
        if self.port.next_deadline().is_some_and(|t| t <= now) {
            let d = self.port.handle_deadline(cx.registry, &self.tokens, now)?;
            h.merge(d);
        }
        if self.host.deadline().is_some_and(|t| t <= now) {
            self.host_event(cx, Event::Tick);
        }
        if let Some(w) = cx.faults.wifi_if_changed(self.idx, &mut self.wifi_seen) {
            self.core.handle(Input::WifiFaults(w), now);
        }
        // Before the output is taken: a brown-out after the Nth command comes right after that
        // command's reply is made, however the reads fell.
        let mut moved = self.drain(cx, Take::NoSerial);
        let due = cx.faults.due(self.idx, self.core.commands(), now);
        cx.faults.journal(cx.journal);
        if due.brown_out {
            self.power_cycle(cx, "fault");
        }
        if due.link_down {
            self.core.handle(Input::LinkDown, now);
        }
        moved |= self.drain(cx, Take::ToHost);
        cx.faults.journal(cx.journal);
        Ok(moved)
    }

    /// A host that ended its input, or left with work in flight, is done once the module is
    /// idle and every reply is out.
    fn finish(&mut self, cx: &mut Ctx) {
        let written = self.out.is_empty() && self.faults.held_out() == 0;
        if self.host.waits_idle() && self.core.idle() && (written || !self.host.present()) {
            self.host_event(cx, Event::Idle);
        }
    }

    /// The next `--listen` host, once nobody has the line (tried when a host may be waiting).
    fn next_host(&mut self, cx: &mut Ctx, h: Happened) -> Option<Happened> {
        self.accept |= h.acceptable;
        let free = matches!(self.host, Host::First | Host::Absent) && !self.port.host_attached();
        if !self.accept || !free {
            return None;
        }
        self.accept = false;
        let next = self.port.accept_next(cx.registry, &self.tokens, cx.now);
        next.opened.then_some(next)
    }

    /// Whether the emulator may stop: output written (bounded wait at shutdown).
    pub(super) fn flushed(&self) -> bool {
        self.out.is_empty()
    }
}
