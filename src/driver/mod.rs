//! The event loop (layer: edge). One thread and one `mio::Poll` own every file descriptor: each
//! module's serial line, the network stack's sockets and worker waker, the pty open watch, the
//! control socket and the signals. It holds no protocol state; each concern is a room of its own:
//!
//! - [`boot`]: the command line's options, module setup, ports; [`line`](mod@line): a module and its serial
//!   line (read, the host's end, the next host, write; pacing, rate switches) with [`attach`], who
//!   is on the line; [`ctl`]: what control clients ask; [`store`]: the certificate-store worker;
//!   [`faulty`]: fault injection wrapped around the line and the network; [`journal`]: the
//!   transcript; [`core`]: what the loop needs from a module.
//!
//! [`Driver::step`] is one turn: wait for readiness, hand each event to its owner, give every line
//! with news its turn, carry out control requests and store results, then settle.

mod attach;
pub(crate) mod boot;
pub(crate) mod core;
mod ctl;
mod faulty;
mod journal;
mod line;
mod store;
#[cfg(test)]
mod tests;

pub(crate) use boot::{boot_module, config_rules, fault_seed, parse_addr, serve, ServeOptions};

use self::core::Core;
use crate::certstore::CertStore;
use crate::control::ControlServer;
use crate::net::{ModuleIdx, NetStack};
use crate::serial::port::Happened;
use crate::serial::watch::PtyWatch;
use crate::serial::{Pacer, Port};
use crate::trace::Tracer;
use attach::Times;
use eswifi_core::config::Attach;
use eswifi_core::module::{Input, Module};
use faulty::{Faults, FaultyNet};
use journal::Journal;
use line::{Ctx, Line};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};
use store::StoreWorker;

/// Rounds of (lines, network events) per turn before the loop polls again; bounds the time a
/// chatty socket can keep the other lines waiting.
const MAX_SETTLE_ROUNDS: usize = 64;

/// Serial reads are handed to the core one chunk per call, so a host's write burst usually arrives
/// in one piece (the core's stray-byte quirk looks at bursts).
const SERIAL_CHUNK: usize = 8192;

/// Most modules one process emulates.
pub(crate) const MAX_MODULES: usize = 256;

/// Whether the loop goes on after a [`Driver::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// A shutdown signal arrived (or stdin ended and every reply is out).
    Shutdown,
}

/// How a line attaches its hosts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineSetup {
    pub attach: Attach,
    pub boot: Duration,
    pub quiet: Duration,
    /// Pace output at this rate (`--pace`).
    pub pace: Option<u32>,
}

impl Default for LineSetup {
    fn default() -> LineSetup {
        LineSetup {
            attach: Attach::Keep,
            boot: Duration::from_millis(100),
            quiet: Duration::from_millis(1000),
            pace: None,
        }
    }
}

/// The event loop over any number of modules.
pub(crate) struct Driver<M: Core = Module> {
    poll: Poll,
    events: Events,
    net: FaultyNet,
    signals: Signals,
    signal_token: Token,
    /// Who has each pty open.
    watch: PtyWatch,
    watch_token: Token,
    lines: Vec<Line<M>>,
    by_token: HashMap<Token, ModuleIdx>,
    /// What the poll reported per line this turn.
    news: Vec<(ModuleIdx, Happened)>,
    /// Power cycles asked for this turn (SIGUSR1, the control socket).
    resets: Vec<(ModuleIdx, &'static str)>,
    /// Last settle stopped at the round limit: the next poll must not sleep.
    hurry: bool,
    /// Nothing changed since the last settle: the next step need not settle before it polls.
    settled: bool,
    /// Serial reads land here (one buffer for every line: zeroing 8 KiB per read showed in
    /// profiles, and 256 lines need not hold one each).
    read_buf: Box<[u8]>,
    store: StoreWorker,
    journal: Journal,
    control: Option<ControlServer>,
    faults: Faults,
}

impl<M: Core> Driver<M> {
    pub(crate) fn new() -> io::Result<Self> {
        Self::with_signals(true)
    }

    /// `shutdown`: take SIGINT, SIGTERM and SIGHUP for the process (false for an emulator inside
    /// `run` or `term`, whose host side handles them); SIGUSR1 (reset) always.
    pub(crate) fn with_signals(shutdown: bool) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut net = NetStack::new(poll.registry())?;
        let taken: &[i32] = if shutdown {
            &[SIGINT, SIGTERM, SIGHUP, SIGUSR1]
        } else {
            &[SIGUSR1]
        };
        let mut signals = Signals::new(taken)?;
        let signal_token = net.alloc_token();
        poll.registry()
            .register(&mut signals, signal_token, Interest::READABLE)?;
        let watch_token = net.alloc_token();
        let watch = PtyWatch::new(poll.registry(), watch_token)?;
        let store = StoreWorker::start(net.waker())?;
        Ok(Driver {
            store,
            poll,
            events: Events::with_capacity(256),
            net: FaultyNet::new(net),
            signals,
            signal_token,
            watch,
            watch_token,
            lines: Vec::new(),
            by_token: HashMap::new(),
            news: Vec::new(),
            resets: Vec::new(),
            hurry: false,
            settled: false,
            read_buf: vec![0; SERIAL_CHUNK].into_boxed_slice(),
            journal: Journal::default(),
            control: None,
            faults: Faults::new(1),
        })
    }

    /// Write the transcript to `tracer` from now on.
    pub(crate) fn set_tracer(&mut self, tracer: Tracer) {
        self.journal = Journal::new(Some(tracer));
    }

    /// Seed the faults' random choices: a new, empty rule set (so call it before adding rules).
    pub(crate) fn seed_faults(&mut self, seed: u64) {
        self.settled = false;
        self.faults = Faults::new(seed);
    }

    /// Activate a fault rule; returns its id.
    pub(crate) fn add_fault(&mut self, rule: crate::faults::Rule) -> Result<usize, String> {
        let counts: Vec<u64> = self.lines.iter().map(|l| l.core.commands()).collect();
        self.settled = false;
        self.faults.add(rule, Instant::now(), &counts)
    }

    /// Attach a module to its serial line. Its first output (boot banner) goes out on the next step.
    pub(crate) fn add(&mut self, core: M, port: Port, setup: LineSetup) -> io::Result<ModuleIdx> {
        let mut port = port;
        let tokens: Vec<Token> = (0..port.token_count())
            .map(|_| self.net.alloc_token())
            .collect();
        port.register(self.poll.registry(), &tokens)?;
        let idx = self.lines.len();
        if let Some(path) = port.pty_path() {
            self.watch.add(path, idx)?;
        }
        if setup.attach == Attach::Prompt {
            port.report_flushes()?;
        }
        self.settled = false;
        for t in &tokens {
            self.by_token.insert(*t, idx);
        }
        let times = Times {
            boot: setup.boot,
            quiet: setup.quiet,
        };
        let mut line = Line::new(core, port, tokens, idx, setup.attach, times);
        line.pacer = setup.pace.map(|baud| Pacer::new(baud, Instant::now()));
        self.lines.push(line);
        Ok(idx)
    }

    /// Give a module its on-disk certificate store (without one, `PG` writes fail).
    pub(crate) fn set_store(&mut self, idx: ModuleIdx, store: CertStore) {
        self.store.set(idx, store);
    }

    /// Serve `reset`, `status` and `fault` on a Unix socket at `path` (mode 0600).
    pub(crate) fn bind_control(&mut self, path: &Path) -> io::Result<()> {
        let token = self.net.alloc_token();
        self.control = Some(ControlServer::bind(path, self.poll.registry(), token)?);
        log::info!("control socket at {}", path.display());
        Ok(())
    }

    /// Serve until a shutdown signal (or the end of stdin).
    pub(crate) fn run(&mut self) -> io::Result<()> {
        while self.step(None)? == Flow::Continue {}
        // Give a host what was already written (bounded: a line nobody reads is not waited for).
        let until = Instant::now() + Duration::from_millis(500);
        while !self.lines.iter().all(Line::flushed) && Instant::now() < until {
            self.settle()?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// One turn: settle if needed, wait for readiness (at most `max_wait`, and no longer than the
    /// earliest timer), hand each event to its owner, let lines with news and due timers take
    /// their turn, carry out control requests and store results, settle.
    pub(crate) fn step(&mut self, max_wait: Option<Duration>) -> io::Result<Flow> {
        if !self.settled && self.settle()? == Flow::Shutdown {
            return Ok(Flow::Shutdown);
        }
        let timeout = self.poll_timeout(max_wait);
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Flow::Continue),
            Err(e) => return Err(e),
        }
        let mut flow = self.dispatch()?;
        let now = Instant::now();
        self.control_requests(now);
        self.power_cycles(now);
        self.serve_news(now)?;
        self.store_results(now);
        if self.settle()? == Flow::Shutdown {
            flow = Flow::Shutdown;
        }
        self.settled = true;
        Ok(flow)
    }

    /// How long the poll may sleep: until the earliest timer, not at all while input waits that
    /// the modules have room for.
    fn poll_timeout(&self, max_wait: Option<Duration>) -> Option<Duration> {
        let now = Instant::now();
        let faults = &self.faults;
        let mut timeout = self
            .lines
            .iter()
            .enumerate()
            .filter_map(|(k, l)| {
                l.next_deadline(now)
                    .into_iter()
                    .chain(faults.next_deadline(k))
                    .min()
            })
            .chain(self.net.next_deadline())
            .chain(self.control.as_ref().and_then(ControlServer::next_deadline))
            .min()
            .map(|t| t.saturating_duration_since(now));
        let lines = &self.lines;
        let serial_pending = lines.iter().any(|l| l.read_pending(now));
        let room = |m: ModuleIdx, c| lines.get(m).map_or(0, |l| l.core.rx_room(c));
        let control_pending = self.control.as_ref().is_some_and(ControlServer::pending);
        if self.hurry || serial_pending || control_pending || self.net.has_pending_reads(room) {
            timeout = Some(Duration::ZERO);
        }
        if let Some(cap) = max_wait {
            timeout = Some(timeout.map_or(cap, |t| t.min(cap)));
        }
        timeout
    }

    /// Hand each event to its owner: signals, pty opens and closes, lines, control clients, the
    /// network stack. What lines were told waits in `news`.
    fn dispatch(&mut self) -> io::Result<Flow> {
        let mut flow = Flow::Continue;
        let registry = self.poll.registry();
        for event in self.events.iter() {
            let token = event.token();
            if token == self.signal_token {
                for sig in self.signals.pending() {
                    if sig == SIGUSR1 {
                        self.resets
                            .extend((0..self.lines.len()).map(|k| (k, "SIGUSR1")));
                    } else {
                        log::info!("signal {sig}: shutting down");
                        flow = Flow::Shutdown;
                    }
                }
            } else if token == self.watch_token {
                for (k, c) in self.watch.take()? {
                    let h = Happened {
                        opened: c.opened,
                        closed: c.closed,
                        closed_first: c.closed_first,
                        ..Happened::default()
                    };
                    news(&mut self.news, k, h);
                }
            } else if let Some(&k) = self.by_token.get(&token) {
                let line = &mut self.lines[k];
                let h = line.port.handle_event(registry, &line.tokens, event);
                news(&mut self.news, k, h);
            } else if let Some(c) = self.control.as_mut().filter(|c| c.owns(token)) {
                let net = &mut self.net;
                c.handle_event(registry, token, &mut || net.alloc_token());
            } else {
                self.net.handle_event(registry, event);
            }
        }
        Ok(flow)
    }

    /// Power cycles asked for by a signal or the control socket.
    fn power_cycles(&mut self, now: Instant) {
        let resets = std::mem::take(&mut self.resets);
        let (mut cx, lines) = self.parts(now);
        for (k, why) in resets {
            if let Some(line) = lines.get_mut(k) {
                line.power_cycle(&mut cx, why);
            }
        }
    }

    /// Lines the poll had news for take their turn (in the order of their events: opens before
    /// reads, a pty's watch and its data alike).
    fn serve_news(&mut self, now: Instant) -> io::Result<()> {
        let news = std::mem::take(&mut self.news);
        let (mut cx, lines) = self.parts(now);
        for &(k, h) in &news {
            lines[k]
                .turn(&mut cx, h)
                .map_err(|e| io::Error::new(e.kind(), format!("serial line {k}: {e}")))?;
        }
        self.news = news;
        self.news.clear();
        Ok(())
    }

    /// Results of certificate-store writes.
    fn store_results(&mut self, now: Instant) {
        while let Some((k, req, result)) = self.store.finished() {
            if let Some(line) = self.lines.get_mut(k) {
                line.core.handle(Input::Stored { req, result }, now);
            }
        }
    }

    /// Move everything the cores produced to where it goes, and everything the network produced
    /// to the cores, until nothing moves (or the round limit).
    fn settle(&mut self) -> io::Result<Flow> {
        for _ in 0..MAX_SETTLE_ROUNDS {
            let now = Instant::now();
            let (mut cx, lines) = self.parts(now);
            let mut moved = false;
            for (k, line) in lines.iter_mut().enumerate() {
                moved |= line
                    .turn(&mut cx, Happened::default())
                    .map_err(|e| io::Error::new(e.kind(), format!("serial line {k}: {e}")))?;
            }
            let room = |m: ModuleIdx, c| lines.get(m).map_or(0, |l| l.core.rx_room(c));
            let events = cx.net.events(cx.registry, cx.faults, room, now);
            cx.faults.journal(cx.journal);
            for (k, ev) in events {
                moved = true;
                log_event(k, &ev);
                match lines.get_mut(k) {
                    Some(line) => line.core.handle(Input::Net(ev), now),
                    None => log::warn!("event for unknown module {k}"),
                }
            }
            if !moved {
                self.hurry = false;
                return Ok(self.flow());
            }
        }
        self.hurry = true;
        Ok(self.flow())
    }

    /// Shutdown once a line ended for good.
    fn flow(&self) -> Flow {
        match self.lines.iter().any(|l| l.done) {
            true => Flow::Shutdown,
            false => Flow::Continue,
        }
    }

    /// The context a line's turn needs, and the lines.
    fn parts(&mut self, now: Instant) -> (Ctx<'_>, &mut [Line<M>]) {
        let cx = Ctx {
            registry: self.poll.registry(),
            faults: &mut self.faults,
            journal: &mut self.journal,
            net: &mut self.net,
            store: &self.store,
            buf: &mut self.read_buf,
            now,
        };
        (cx, &mut self.lines)
    }
}

/// Add what the poll reported for line `k` to this turn's news.
fn news(news: &mut Vec<(ModuleIdx, Happened)>, k: ModuleIdx, h: Happened) {
    match news.iter_mut().find(|(l, _)| *l == k) {
        Some((_, old)) => old.merge(h),
        None => news.push((k, h)),
    }
}

fn log_event(idx: ModuleIdx, ev: &eswifi_core::module::io::NetEvent) {
    use eswifi_core::module::io::NetEvent;
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    match ev {
        // Payloads are logged (escaped) by the net layer at trace level; keep debug readable.
        NetEvent::Data { conn, data } => {
            log::debug!("m{idx} event Data #{conn} {} bytes", data.len())
        }
        NetEvent::Datagram { conn, data, from } => {
            log::debug!(
                "m{idx} event Datagram #{conn} {} bytes from {from}",
                data.len()
            )
        }
        other => log::debug!("m{idx} event {other:?}"),
    }
}
