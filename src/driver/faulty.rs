//! Fault injection as wrappers (layer: edge), as smoltcp's `FaultInjector` wraps a `Device`:
//! [`LineFaults`] stands between a line and its module (noise, stalls, latency, split output),
//! [`FaultyNet`] between the modules and the network stack (every op and event through
//! [`NetFaults`]), and [`Faults`] holds the rules they share and the module faults (brown-outs,
//! link loss, Wi-Fi). With no rule active every wrapper is the identity and costs no copy. The
//! rules and their notes are `crate::faults`'; this file only places them.

use super::core::Core;
use super::journal::Journal;
use crate::faults::net::{Delivery, NetFaults};
use crate::faults::{FaultSet, Rule};
use crate::net::{ModuleIdx, NetStack, WriteQueue};
use eswifi_core::module::io::{ConnId, NetEvent, NetOp};
use eswifi_core::module::{FaultFired, Input, WifiFaults};
use mio::event::Event;
use mio::{Registry, Token};
use std::collections::VecDeque;
use std::time::Instant;

/// The active rules, and what the driver tracks for them.
pub(super) struct Faults {
    set: FaultSet,
    /// Per module: commands executed before its reboots (rules count commands across reboots).
    before_reboots: Vec<u64>,
    /// Modules whose stalled command a `fault clear` released: their lines hand it on now.
    released: Vec<ModuleIdx>,
}

/// Module faults due now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Due {
    pub brown_out: bool,
    pub link_down: bool,
}

impl Faults {
    pub(super) fn new(seed: u64) -> Faults {
        Faults {
            set: FaultSet::new(seed),
            before_reboots: Vec::new(),
            released: Vec::new(),
        }
    }

    fn total(&self, k: ModuleIdx, commands: u64) -> u64 {
        self.before_reboots.get(k).copied().unwrap_or(0) + commands
    }

    /// Activate a rule; `commands`: each module's count since power-up.
    pub(super) fn add(
        &mut self,
        rule: Rule,
        now: Instant,
        commands: &[u64],
    ) -> Result<usize, String> {
        let totals: Vec<u64> = commands
            .iter()
            .enumerate()
            .map(|(k, &c)| self.total(k, c))
            .collect();
        self.set.add(rule, now, &totals)
    }

    pub(super) fn clear(&mut self, id: Option<usize>) -> bool {
        let cleared = self.set.clear(id);
        self.released.extend(self.set.take_released());
        cleared
    }

    /// Whether a `fault clear` released the command a stall holds on module `k` (once).
    pub(super) fn take_release(&mut self, k: ModuleIdx) -> bool {
        let before = self.released.len();
        self.released.retain(|&m| m != k);
        self.released.len() < before
    }

    /// Module `k` power-cycled: what the rules follow of its input starts afresh.
    pub(super) fn power_cycled(&mut self, k: ModuleIdx) {
        self.set.power_cycled(k);
    }

    pub(super) fn list(&self) -> Vec<String> {
        self.set.list()
    }

    /// Module `k` rebooted after `commands` commands.
    pub(super) fn rebooted(&mut self, k: ModuleIdx, commands: u64) {
        if self.before_reboots.len() <= k {
            self.before_reboots.resize(k + 1, 0);
        }
        self.before_reboots[k] += commands;
    }

    /// A module fault reported by the core (a join failed by a fault): counted.
    pub(super) fn core_fired(&mut self, k: ModuleIdx, what: &FaultFired) {
        self.set.core_fired(k, what);
    }

    /// The module faults of `k` due now.
    pub(super) fn due(&mut self, k: ModuleIdx, commands: u64, now: Instant) -> Due {
        if self.set.is_empty() {
            return Due::default();
        }
        let total = self.total(k, commands);
        Due {
            brown_out: self.set.reset_due(k, total, now),
            link_down: self.set.link_down_due(k, now),
        }
    }

    /// New Wi-Fi faults for module `k`, when the rules changed since `seen` (updated).
    pub(super) fn wifi_if_changed(&self, k: ModuleIdx, seen: &mut u64) -> Option<WifiFaults> {
        (*seen != self.set.generation()).then(|| {
            *seen = self.set.generation();
            self.set.wifi(k)
        })
    }

    pub(super) fn next_deadline(&self, k: ModuleIdx) -> Option<Instant> {
        self.set.next_deadline(k)
    }

    /// Write the notes of faults that fired to the transcript (they are logged already).
    pub(super) fn journal(&mut self, journal: &mut Journal) {
        if self.set.has_fired() {
            for f in self.set.take_fired() {
                journal.note(f.module, Instant::now(), &f.text);
            }
        }
    }
}

/// The serial faults of one line: what `serial.*` rules hold back.
#[derive(Debug, Default)]
pub(super) struct LineFaults {
    /// Output fragments held back, and when each may go.
    delayed_out: VecDeque<(Instant, Vec<u8>)>,
    /// Input a `serial.stall` holds, and until when.
    held_in: Option<(Instant, Vec<u8>)>,
}

impl LineFaults {
    /// Give the host's bytes to the core, through noise and stalls.
    pub(super) fn feed<M: Core>(
        &mut self,
        faults: &mut Faults,
        k: ModuleIdx,
        core: &mut M,
        bytes: &[u8],
        now: Instant,
    ) {
        if faults.set.is_empty() {
            core.handle(Input::Serial(bytes), now);
            return;
        }
        let bytes = faults.set.input(k, bytes.to_vec());
        if let Some(d) = faults.set.stall(k) {
            self.held_in = Some((now + d, bytes));
            return;
        }
        core.handle(Input::Serial(&bytes), now);
    }

    /// A stalled command, held until its time: false while it waits (the line is not read
    /// meanwhile); once the time has come (or a `fault clear` released it), it goes to the core.
    pub(super) fn release_input<M: Core>(
        &mut self,
        faults: &mut Faults,
        k: ModuleIdx,
        core: &mut M,
        now: Instant,
    ) -> bool {
        match self.held_in.take() {
            Some((at, bytes)) if at > now => {
                self.held_in = Some((at, bytes));
                false
            }
            Some((_, bytes)) => {
                faults.set.stall_over(k);
                core.handle(Input::Serial(&bytes), now);
                true
            }
            None => true,
        }
    }

    /// A `fault clear` ended the stall: the held command is due now.
    pub(super) fn release_now(&mut self, now: Instant) {
        if let Some((at, _)) = &mut self.held_in {
            *at = now;
        }
    }

    /// Whether input is held (until a time not yet come).
    pub(super) fn holds_input(&self, now: Instant) -> bool {
        self.held_in.as_ref().is_some_and(|(at, _)| *at > now)
    }

    /// Module output on its way to the line: split, delayed or corrupted by the rules.
    pub(super) fn send(
        &mut self,
        faults: &mut Faults,
        k: ModuleIdx,
        bytes: Vec<u8>,
        out: &mut WriteQueue,
        now: Instant,
    ) {
        if faults.set.is_empty() && self.delayed_out.is_empty() {
            out.push(&bytes);
        } else {
            self.delayed_out.extend(faults.set.output(k, bytes, now));
        }
    }

    /// Fragments whose time has come join the output, in order. True if any did.
    pub(super) fn release_output(&mut self, out: &mut WriteQueue, now: Instant) -> bool {
        let mut moved = false;
        while self.delayed_out.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, b)) = self.delayed_out.pop_front() {
                out.push(&b);
                moved = true;
            }
        }
        moved
    }

    /// Output bytes held back.
    pub(super) fn held_out(&self) -> usize {
        self.delayed_out.iter().map(|(_, b)| b.len()).sum()
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let out = self.delayed_out.front().map(|(at, _)| *at);
        let held = self.held_in.as_ref().map(|(at, _)| *at);
        out.into_iter().chain(held).min()
    }

    /// The module power-cycles: what it had not put on the wire, or not taken, is lost. Returns
    /// the output bytes lost.
    pub(super) fn clear(&mut self) -> usize {
        let lost = self.held_out();
        self.delayed_out.clear();
        self.held_in = None;
        lost
    }
}

/// The network stack behind the network faults.
pub(super) struct FaultyNet {
    pub(super) stack: NetStack,
    faults: NetFaults,
}

impl FaultyNet {
    pub(super) fn new(stack: NetStack) -> FaultyNet {
        FaultyNet {
            stack,
            faults: NetFaults::default(),
        }
    }

    pub(super) fn alloc_token(&mut self) -> Token {
        self.stack.alloc_token()
    }

    pub(super) fn handle_event(&mut self, registry: &Registry, event: &Event) {
        self.stack.handle_event(registry, event);
    }

    /// Perform an op of module `k`, as the rules let it through.
    pub(super) fn perform(
        &mut self,
        registry: &Registry,
        faults: &mut Faults,
        k: ModuleIdx,
        op: NetOp,
        now: Instant,
    ) {
        for op in self.faults.op(&mut faults.set, k, op, now) {
            self.stack.perform(registry, k, op);
        }
    }

    /// Whether some socket has input its module has room for.
    pub(super) fn has_pending_reads(&self, room: impl Fn(ModuleIdx, ConnId) -> usize) -> bool {
        self.stack
            .has_pending_reads(|m, c| self.faults.room(m, c, room(m, c)))
    }

    /// Read the sockets (as far as `room` allows) and collect the events for the cores, through
    /// the rules; perform the ops the rules held until now.
    pub(super) fn events(
        &mut self,
        registry: &Registry,
        faults: &mut Faults,
        room: impl Fn(ModuleIdx, ConnId) -> usize,
        now: Instant,
    ) -> Vec<(ModuleIdx, NetEvent)> {
        let nf = &self.faults;
        self.stack
            .pump_reads(registry, |m, c| nf.room(m, c, room(m, c)));
        let mut deliver = Vec::new();
        while let Some((k, ev)) = self.stack.pop_event() {
            let evs = self.faults.event(&mut faults.set, k, ev, now);
            deliver.extend(evs.into_iter().map(|ev| (k, ev)));
        }
        for d in self.faults.due(now) {
            match d {
                Delivery::Event(k, ev) => deliver.push((k, ev)),
                Delivery::Op(k, op) => self.stack.perform(registry, k, op),
            }
        }
        deliver
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.faults.next_deadline()
    }
}
