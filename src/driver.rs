//! The event loop (layer: edge). One thread and one `mio::Poll` own every file descriptor: each
//! module's serial line (pty, tty, TCP or stdio, see [`crate::serial::port`]), the [`NetStack`]'s
//! sockets and worker waker, the control socket and the signals. The loop moves bytes, events and
//! time between them and the pure cores; it holds no protocol state.
//!
//! Per line it also does what a UART and its wiring do: it stops reading while the core has no
//! room, holds output while the host does not read, switches the line's rate after the bytes
//! written before a `U0`, paces output at the baud rate (`--pace`), and power-cycles the module
//! on SIGUSR1, on `reset` from the control socket, or when a host opens the line
//! (`--reset-on-open`).

use crate::certstore::CertStore;
use crate::control::{self, ControlServer};
use crate::faults::net::{Delivery, NetFaults};
use crate::faults::FaultSet;
use crate::net::{claim, ModuleIdx, NetStack, WriteQueue};
use crate::serial::port::Happened;
use crate::serial::{FrontEnd, Pacer, Port, Pty, PtyLink};
use crate::trace::Tracer;
use eswifi_core::config::Config;
use eswifi_core::module::io::{ConnId, NetEvent, NetOp, StoreOp, StoreReq, WriteError};
use eswifi_core::module::{FaultFired, LineOp, Module, Status, TraceRecord};
use mio::{Events, Interest, Poll, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rounds of (serial out, ops, reads, events) per turn before the loop polls again; bounds the time
/// a chatty socket can keep the other lines waiting.
const MAX_SETTLE_ROUNDS: usize = 64;

/// Serial reads are handed to the core one chunk per call, so a host's write burst usually arrives
/// in one piece (the core's stray-byte quirk looks at bursts).
const SERIAL_CHUNK: usize = 8192;

/// Serial output the driver holds for a line; while more waits, it takes no more replies from the
/// core (which then stops taking input): a host that never reads stalls instead of growing memory.
pub(crate) const SERIAL_OUT_HIGH: usize = 64 * 1024;

/// Most modules one process emulates.
pub(crate) const MAX_MODULES: usize = 256;

/// What the driver needs from an emulated module. [`Module`] is the real one; the driver's tests use
/// small fakes.
pub(crate) trait Core {
    fn handle_serial(&mut self, data: &[u8], now: Instant);
    fn handle_net(&mut self, ev: NetEvent, now: Instant);
    fn handle_timeout(&mut self, now: Instant);
    fn take_serial(&mut self) -> Vec<u8>;
    /// The driver has taken the output: the core may go on with commands it held back.
    fn handle_output_taken(&mut self, _now: Instant) {}
    fn poll_op(&mut self) -> Option<NetOp>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn rx_room(&self, conn: ConnId) -> usize;
    /// How many more serial bytes the core takes now (0: stop reading the line).
    fn serial_room(&self) -> usize {
        usize::MAX
    }
    /// Next certificate-store write (fakes have none).
    fn poll_store(&mut self) -> Option<StoreOp> {
        None
    }
    fn handle_stored(&mut self, _req: StoreReq, _result: Result<(), WriteError>, _now: Instant) {}
    /// Next change to the line (a baud switch after `U0`).
    fn poll_line_op(&mut self) -> Option<LineOp> {
        None
    }
    fn power_cycle(&mut self, _now: Instant) {}
    fn poll_trace(&mut self) -> Option<TraceRecord> {
        None
    }
    fn status(&self) -> Option<Status> {
        None
    }
    /// Commands executed since power-up (for `module.reset after=N`).
    fn commands(&self) -> u64 {
        0
    }
    fn set_wifi_faults(&mut self, _faults: eswifi_core::module::WifiFaults) {}
    fn link_down(&mut self, _now: Instant) {}
    fn poll_fault_fired(&mut self) -> Option<FaultFired> {
        None
    }
}

impl Core for Module {
    fn handle_serial(&mut self, data: &[u8], now: Instant) {
        Module::handle_serial(self, data, now)
    }
    fn handle_net(&mut self, ev: NetEvent, now: Instant) {
        Module::handle_net(self, ev, now)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Module::handle_timeout(self, now)
    }
    fn take_serial(&mut self) -> Vec<u8> {
        Module::take_serial(self)
    }
    fn handle_output_taken(&mut self, now: Instant) {
        Module::handle_output_taken(self, now)
    }
    fn poll_op(&mut self) -> Option<NetOp> {
        Module::poll_op(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Module::poll_timeout(self)
    }
    fn rx_room(&self, conn: ConnId) -> usize {
        Module::rx_room(self, conn)
    }
    fn serial_room(&self) -> usize {
        Module::serial_room(self)
    }
    fn poll_store(&mut self) -> Option<StoreOp> {
        Module::poll_store(self)
    }
    fn handle_stored(&mut self, req: StoreReq, result: Result<(), WriteError>, now: Instant) {
        Module::handle_stored(self, req, result, now)
    }
    fn poll_line_op(&mut self) -> Option<LineOp> {
        Module::poll_line_op(self)
    }
    fn power_cycle(&mut self, now: Instant) {
        Module::power_cycle(self, now)
    }
    fn poll_trace(&mut self) -> Option<TraceRecord> {
        Module::poll_trace(self)
    }
    fn status(&self) -> Option<Status> {
        Some(Module::status(self))
    }
    fn commands(&self) -> u64 {
        Module::commands(self)
    }
    fn set_wifi_faults(&mut self, faults: eswifi_core::module::WifiFaults) {
        Module::set_wifi_faults(self, faults)
    }
    fn link_down(&mut self, now: Instant) {
        Module::link_down(self, now)
    }
    fn poll_fault_fired(&mut self) -> Option<FaultFired> {
        Module::poll_fault_fired(self)
    }
}

/// Everything `eswifi-emu` (serve) needs from the command line.
#[derive(Debug, Clone)]
pub(crate) struct ServeOptions {
    pub config: Config,
    /// Where the certificate sets are stored (see `certsets/README.md`); module k of several uses
    /// `DIR/m{k}`.
    pub certsets: PathBuf,
    pub front: FrontEnd,
    /// How many modules (1..=[`MAX_MODULES`]).
    pub modules: usize,
    /// Deliver output at the line's baud rate.
    pub pace: bool,
    /// Power-cycle a module when a host opens its line.
    pub reset_on_open: bool,
    /// Unix socket for `reset` and `status`.
    pub control: Option<PathBuf>,
    /// Byte transcript file.
    pub trace: Option<PathBuf>,
    /// Seed of the faults' random choices (`--seed`; else `[faults] seed`; else picked and logged).
    pub seed: Option<u64>,
}

/// The configuration of module `k`: its own MAC (the base plus k) and, unless pinned, its own
/// claimed loopback address and the soft-AP address that goes with it.
fn module_config(base: &Config, k: usize, claimed: Option<std::net::Ipv4Addr>) -> Config {
    let mut cfg = base.clone();
    if let Some(mut mac) = eswifi_core::iwin::command::parse_mac(&base.identity.mac) {
        let n =
            u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]) + k as u64;
        mac.copy_from_slice(&n.to_be_bytes()[2..]);
        cfg.identity.mac = mac
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
    }
    let net = &mut cfg.network;
    match (net.ip_pinned, claimed) {
        (true, _) => {
            let ip = u32::from(net.ip).wrapping_add(k as u32);
            net.ip = ip.into();
        }
        (false, Some(ip)) => {
            net.ip = ip;
            if !net.ap_ip_pinned {
                net.ap_ip = claim::ap_address(ip);
            }
        }
        (false, None) => {}
    }
    cfg
}

/// The port of module `k` for a front end.
fn open_port(
    opts: &ServeOptions,
    k: usize,
    baud: u32,
    links: &mut Vec<PtyLink>,
) -> io::Result<Port> {
    let with_port = |a: SocketAddr| {
        let mut a = a;
        if a.port() != 0 {
            a.set_port(a.port() + k as u16);
        }
        a
    };
    match &opts.front {
        FrontEnd::Pty { link } => {
            let pty = Pty::open()?;
            if let Some(template) = link {
                let path = PathBuf::from(template.replace("{n}", &k.to_string()));
                let l = PtyLink::create(&path, pty.slave_path()).map_err(|e| {
                    io::Error::new(e.kind(), format!("--link {}: {e}", path.display()))
                })?;
                links.push(l);
            }
            Port::pty(pty, opts.reset_on_open)
        }
        FrontEnd::Serial { path, flow } => Port::tty(path, baud, *flow)
            .map_err(|e| io::Error::new(e.kind(), format!("--serial {e}"))),
        FrontEnd::Listen(addr) => {
            let addr = with_port(*addr);
            let port = Port::listen(addr).map_err(|e| {
                io::Error::new(e.kind(), format!("--listen {addr}: {}", os_text(&e)))
            })?;
            if !addr.ip().is_loopback() {
                log::warn!(
                    "listening on {addr}, which is not a loopback address: other hosts can attach"
                );
            }
            Ok(port)
        }
        FrontEnd::Connect(addr) => Ok(Port::connect(with_port(*addr))),
        FrontEnd::Stdio => Port::stdio(),
    }
}

/// An OS error as a person reads it: `address already in use`, not `Address already in use (os
/// error 98)`.
fn os_text(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => &s[..i],
        None => &s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Emulate the modules until SIGINT, SIGTERM or SIGHUP (or the end of stdin with `--stdio`).
/// `ready` is called with what a host opens, one entry per module (pty path, device, address),
/// once they can be opened.
pub(crate) fn serve(opts: &ServeOptions, ready: impl FnOnce(&[String])) -> io::Result<()> {
    let n = opts.modules;
    if n == 0 || n > MAX_MODULES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--modules {n}: 1 to {MAX_MODULES}"),
        ));
    }
    if n > 1 {
        let shared = match &opts.front {
            FrontEnd::Pty { link: Some(l) } if !l.contains("{n}") => Some("--link needs {n} in it"),
            FrontEnd::Serial { .. } => Some("--serial serves one module"),
            FrontEnd::Stdio => Some("--stdio serves one module"),
            _ => None,
        };
        if let Some(why) = shared {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--modules {n}: {why}"),
            ));
        }
    }
    let start = Instant::now();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut driver = Driver::new()?;
    driver.seed_faults(fault_seed(opts.seed, &opts.config));
    if let Some(path) = &opts.trace {
        driver.tracer =
            Some(Tracer::create(path, start).map_err(|e| {
                io::Error::new(e.kind(), format!("--trace {}: {e}", path.display()))
            })?);
    }
    let mut links = Vec::new();
    let mut claims = Vec::new();
    let mut described = Vec::new();
    for k in 0..n {
        let claimed = if opts.config.network.ip_pinned {
            None
        } else {
            let taken: Vec<_> = claims.iter().map(|c: &claim::Claim| c.ip).collect();
            let c = claim::claim(&taken)?;
            let ip = c.ip;
            claims.push(c);
            Some(ip)
        };
        let cfg = module_config(&opts.config, k, claimed);
        let dir = if n == 1 {
            opts.certsets.clone()
        } else {
            opts.certsets.join(format!("m{k}"))
        };
        let store = CertStore::new(&dir);
        let module = boot_module(&cfg, &store, unix, driver.tracer.is_some())?;
        let baud = module.line_baud();
        let port = open_port(opts, k, baud, &mut links)?;
        log::info!(
            "module {k}: {} on {}, address {}, certificate sets in {}",
            cfg.identity.mac,
            port.describe(),
            cfg.network.ip,
            dir.display()
        );
        described.push(port.describe());
        let idx = driver.add(module, port)?;
        driver.set_store(idx, store);
        if opts.pace {
            driver.lines[idx].pacer = Some(Pacer::new(baud, Instant::now()));
        }
        driver.lines[idx].boot_delay = opts
            .reset_on_open
            .then(|| Duration::from_millis(opts.config.timing.boot_ms));
    }
    // Active from start-up (the rules were checked when the configuration was read).
    for rule in config_rules(&opts.config)? {
        driver.add_fault(rule).map_err(io::Error::other)?;
    }
    if let Some(path) = &opts.control {
        driver
            .bind_control(path)
            .map_err(|e| io::Error::new(e.kind(), format!("--control {}: {e}", path.display())))?;
    }
    ready(&described);
    driver.run()?;
    log::info!("shutting down");
    drop(claims);
    drop(links);
    Ok(())
}

/// A module as it powers up: its certificate sets and `Z1`-saved settings loaded from `store` (a torn
/// or corrupt item is an error worth stopping for: an OTP slot must never look empty), and its
/// transcript kept from the first byte if `trace`.
pub(crate) fn boot_module(
    cfg: &Config,
    store: &CertStore,
    unix: Duration,
    trace: bool,
) -> io::Result<Module> {
    let sets = store
        .load()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let saved = store
        .load_settings()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let mut module = Module::new(cfg, Instant::now(), unix);
    if trace {
        // Before the boot output, so the transcript starts with the banner.
        module.enable_trace();
    }
    module.set_cert_sets(sets);
    module.load_saved(saved);
    Ok(module)
}

/// The faults' seed: `--seed`, else `[faults] seed`, else any value, logged so that a failing run
/// can be replayed.
pub(crate) fn fault_seed(given: Option<u64>, config: &Config) -> u64 {
    let seed = given.or(config.faults.seed).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    // Logged when the first rule is added (faults::FaultSet::add): a run without faults has no use
    // for it.
    seed
}

/// The rules of `[faults]`, parsed.
pub(crate) fn config_rules(config: &Config) -> io::Result<Vec<crate::faults::Rule>> {
    config
        .faults
        .rules
        .iter()
        .map(|r| {
            crate::faults::parse(r).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("faults.rules {r:?}: {e}"),
                )
            })
        })
        .collect()
}

/// Whether the loop goes on after a [`Driver::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// A shutdown signal arrived (or stdin ended).
    Shutdown,
}

/// One module and its serial line.
struct Line<M> {
    core: M,
    port: Port,
    tokens: Vec<Token>,
    out: WriteQueue,
    /// Whether WRITABLE is asked for (only while `out` has bytes the pacer lets go: a pty master
    /// turns writable each time the host reads).
    writable: bool,
    /// The line has input we have not read (the core had no room); edge-triggered polling will
    /// not say so again, so it is retried whenever the core may have room.
    want_read: bool,
    /// Where this module's certificate sets live.
    store: Option<CertStore>,
    /// Output pacing at the line's rate (`--pace`).
    pacer: Option<Pacer>,
    /// A rate switch waiting for the bytes before it to leave.
    baud_after_drain: Option<u32>,
    /// When to look again whether the OS has sent what the switch waits for.
    baud_check_at: Option<Instant>,
    /// With `--reset-on-open`: how long after an open the module power-cycles.
    boot_delay: Option<Duration>,
    /// A power cycle due at this time.
    reset_at: Option<Instant>,
    /// Output fragments a serial fault holds back, and when each may go.
    delayed_out: std::collections::VecDeque<(Instant, Vec<u8>)>,
    /// Input a `serial.stall` holds, and until when.
    held_in: Option<(Instant, Vec<u8>)>,
}

/// The event loop over any number of modules.
pub(crate) struct Driver<M: Core = Module> {
    poll: Poll,
    events: Events,
    net: NetStack,
    signals: Signals,
    signal_token: Token,
    lines: Vec<Line<M>>,
    by_token: HashMap<Token, ModuleIdx>,
    /// Last settle stopped at the round limit: the cores may hold work, so the next poll must not
    /// sleep.
    hurry: bool,
    /// Nothing changed since the last settle (which ends every step): the next step need not
    /// settle before it polls.
    settled: bool,
    /// Serial reads land here (one buffer for every line: zeroing 8 KiB per read showed in
    /// profiles, and 256 lines need not hold one each).
    read_buf: Box<[u8]>,
    store: StoreWorker,
    tracer: Option<Tracer>,
    control: Option<ControlServer>,
    faults: FaultSet,
    net_faults: NetFaults,
    /// The fault generation the cores' Wi-Fi faults were last set from.
    wifi_generation: u64,
}
/// Certificate-store writes run on this thread: an fsync must never hold up a serial line. It wakes
/// the loop with the net stack's waker; results are collected every turn.
struct StoreWorker {
    jobs: mpsc::Sender<(ModuleIdx, CertStore, StoreOp)>,
    done: mpsc::Receiver<(ModuleIdx, StoreReq, Result<(), WriteError>)>,
}

impl StoreWorker {
    fn start(waker: Arc<mio::Waker>) -> io::Result<StoreWorker> {
        let (jobs, job_rx) = mpsc::channel::<(ModuleIdx, CertStore, StoreOp)>();
        let (done_tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("certstore".into())
            .spawn(move || {
                for (idx, store, op) in job_rx {
                    let req = op.req();
                    let failed = |path: PathBuf| {
                        move |e: io::Error| WriteError::Io {
                            path: path.display().to_string(),
                            why: e.to_string(),
                        }
                    };
                    let result = match op {
                        StoreOp::Item {
                            set, item, data, ..
                        } => store
                            .write(set, item, &data)
                            .map_err(failed(store.item_path(set, item))),
                        StoreOp::Settings { data, .. } => store
                            .write_settings(&data)
                            .map_err(failed(store.settings_path())),
                    };
                    if done_tx.send((idx, req, result)).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                }
            })?;
        Ok(StoreWorker { jobs, done })
    }
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
        let store = StoreWorker::start(net.waker())?;
        Ok(Driver {
            store,
            poll,
            events: Events::with_capacity(256),
            net,
            signals,
            signal_token,
            lines: Vec::new(),
            by_token: HashMap::new(),
            hurry: false,
            settled: false,
            read_buf: vec![0; SERIAL_CHUNK].into_boxed_slice(),
            tracer: None,
            control: None,
            faults: FaultSet::new(1),
            net_faults: NetFaults::default(),
            wifi_generation: 0,
        })
    }

    /// Seed the faults' random choices: a new, empty rule set (so call it before adding rules).
    pub(crate) fn seed_faults(&mut self, seed: u64) {
        self.settled = false;
        self.faults = FaultSet::new(seed);
    }

    /// Activate a fault rule; returns its id.
    pub(crate) fn add_fault(&mut self, rule: crate::faults::Rule) -> Result<usize, String> {
        let counts: Vec<u64> = self.lines.iter().map(|l| l.core.commands()).collect();
        self.settled = false;
        self.faults.add(rule, Instant::now(), &counts)
    }

    /// Attach a module to its serial line. Its first output (boot banner) goes out on the next step.
    pub(crate) fn add(&mut self, core: M, mut port: Port) -> io::Result<ModuleIdx> {
        let tokens: Vec<Token> = (0..port.token_count())
            .map(|_| self.net.alloc_token())
            .collect();
        port.register(self.poll.registry(), &tokens)?;
        let idx = self.lines.len();
        self.settled = false;
        for t in &tokens {
            self.by_token.insert(*t, idx);
        }
        self.lines.push(Line {
            core,
            port,
            tokens,
            out: WriteQueue::default(),
            writable: false,
            want_read: true,
            store: None,
            pacer: None,
            baud_after_drain: None,
            baud_check_at: None,
            boot_delay: None,
            reset_at: None,
            delayed_out: std::collections::VecDeque::new(),
            held_in: None,
        });
        Ok(idx)
    }

    /// Give a module its on-disk certificate store (without one, `PG` writes fail).
    pub(crate) fn set_store(&mut self, idx: ModuleIdx, store: CertStore) {
        if let Some(line) = self.lines.get_mut(idx) {
            line.store = Some(store);
        }
    }

    /// Serve `reset` and `status` on a Unix socket at `path` (mode 0600).
    pub(crate) fn bind_control(&mut self, path: &Path) -> io::Result<()> {
        let token = self.net.alloc_token();
        self.control = Some(ControlServer::bind(path, self.poll.registry(), token)?);
        log::info!("control socket at {}", path.display());
        Ok(())
    }

    /// Serve until a shutdown signal.
    pub(crate) fn run(&mut self) -> io::Result<()> {
        while self.step(None)? == Flow::Continue {}
        // Give a host what was already written (bounded: a line nobody reads is not waited for).
        let until = Instant::now() + Duration::from_millis(500);
        while self.lines.iter().any(|l| !l.out.is_empty()) && Instant::now() < until {
            self.settle()?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Power-cycle module `idx` now.
    fn power_cycle(&mut self, idx: ModuleIdx, why: &str) {
        if let Some(line) = self.lines.get_mut(idx) {
            line.power_cycle(idx, &mut self.tracer, why);
            self.faults.power_cycled(idx);
        }
    }

    /// One turn: settle the cores, wait for input (at most `max_wait`, and no longer than the
    /// earliest timer), handle it, fire due timers.
    pub(crate) fn step(&mut self, max_wait: Option<Duration>) -> io::Result<Flow> {
        let mut flow = Flow::Continue;
        if !self.settled {
            self.fault_timers(Instant::now());
            flow = self.settle()?;
        }

        let now = Instant::now();
        let lines = &self.lines;
        let faults = &self.faults;
        let mut timeout = lines
            .iter()
            .enumerate()
            .filter_map(|(k, l)| {
                let core = l.core.poll_timeout();
                [core, l.next_deadline(now), faults.next_deadline(k)]
                    .into_iter()
                    .flatten()
                    .min()
            })
            .chain(self.net_faults.next_deadline())
            .min()
            .map(|t| t.saturating_duration_since(now));
        let serial_pending = lines.iter().any(|l| l.read_pending(now));
        let nf = &self.net_faults;
        if self.hurry || serial_pending || self.net.has_pending_reads(room(lines, nf)) {
            timeout = Some(Duration::ZERO);
        }
        if let Some(cap) = max_wait {
            timeout = Some(timeout.map_or(cap, |t| t.min(cap)));
        }

        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(flow),
            Err(e) => return Err(e),
        }
        let now = Instant::now();

        let registry = self.poll.registry();
        let mut resets = Vec::new();
        for event in self.events.iter() {
            let token = event.token();
            if token == self.signal_token {
                for sig in self.signals.pending() {
                    if sig == SIGUSR1 {
                        resets.extend(0..self.lines.len());
                    } else {
                        log::info!("signal {sig}: shutting down");
                        flow = Flow::Shutdown;
                    }
                }
            } else if let Some(&idx) = self.by_token.get(&token) {
                let line = &mut self.lines[idx];
                let h = line
                    .port
                    .handle_event(registry, &line.tokens, event)
                    .map_err(|e| io::Error::new(e.kind(), format!("serial line {idx}: {e}")))?;
                let (tracer, faults, buf) =
                    (&mut self.tracer, &mut self.faults, &mut self.read_buf);
                if line.after(registry, idx, h, tracer, faults, buf, now)? {
                    flow = Flow::Shutdown;
                }
            } else if self.control.as_ref().is_some_and(|c| c.owns(token)) {
                let net = &mut self.net;
                let control = self.control.as_mut().expect("owns");
                let cmds = control.handle_event(registry, token, &mut || net.alloc_token());
                let mut answered = Vec::new();
                for (client, cmd) in cmds {
                    let answer = match cmd {
                        Err(why) => format!("error {why}"),
                        Ok(control::Command::Reset(which)) => match which {
                            Some(k) if k >= self.lines.len() => {
                                format!("error no module {k} (0 to {})", self.lines.len() - 1)
                            }
                            Some(k) => {
                                resets.push(k);
                                "ok".into()
                            }
                            None => {
                                resets.extend(0..self.lines.len());
                                "ok".into()
                            }
                        },
                        Ok(control::Command::FaultAdd(rule)) => {
                            let counts: Vec<u64> =
                                self.lines.iter().map(|l| l.core.commands()).collect();
                            match self.faults.add(rule, Instant::now(), &counts) {
                                Ok(id) => format!("ok {id}"),
                                Err(e) => format!("error {e}"),
                            }
                        }
                        Ok(control::Command::FaultClear(id)) => {
                            let cleared = self.faults.clear(id);
                            // A command a cleared stall held goes to its module now.
                            for k in self.faults.take_released() {
                                if let Some(line) = self.lines.get_mut(k) {
                                    line.release_stall(Instant::now());
                                }
                            }
                            if cleared {
                                "ok".into()
                            } else {
                                format!("error no fault {}", id.unwrap_or(0))
                            }
                        }
                        Ok(control::Command::FaultList) => {
                            let rules = self.faults.list();
                            for r in &rules {
                                control.answer(registry, client, r);
                            }
                            format!("ok {}", rules.len())
                        }
                        Ok(control::Command::Status) => {
                            let all: Vec<serde_json::Value> = self
                                .lines
                                .iter()
                                .enumerate()
                                .map(|(k, l)| {
                                    let mut v = serde_json::to_value(l.core.status())
                                        .unwrap_or(serde_json::Value::Null);
                                    if let Some(o) = v.as_object_mut() {
                                        o.insert("module".into(), k.into());
                                        o.insert("line".into(), l.port.describe().into());
                                    }
                                    v
                                })
                                .collect();
                            serde_json::Value::Array(all).to_string()
                        }
                    };
                    control.answer(registry, client, &answer);
                    answered.push(client);
                }
                answered.dedup();
                for client in answered {
                    control.done(registry, client);
                }
            } else {
                self.net.handle_event(registry, event);
            }
        }
        for idx in resets {
            let why = "reset";
            self.power_cycle(idx, why);
        }
        if flow == Flow::Shutdown {
            return Ok(flow);
        }

        while let Ok((idx, req, result)) = self.store.done.try_recv() {
            if let Some(line) = self.lines.get_mut(idx) {
                line.core.handle_stored(req, result, now);
            }
        }
        let registry = self.poll.registry();
        let mut due_resets = Vec::new();
        for (idx, line) in self.lines.iter_mut().enumerate() {
            if line.core.poll_timeout().is_some_and(|t| t <= now) {
                line.core.handle_timeout(now);
            }
            if line.reset_at.is_some_and(|t| t <= now) {
                due_resets.push(idx);
            }
            if line.port.next_deadline().is_some_and(|t| t <= now) {
                line.port.handle_deadline(registry, &line.tokens, now)?;
            }
        }
        for idx in due_resets {
            self.power_cycle(idx, "a host opened the line");
        }
        self.fault_timers(now);
        let flow = self.settle();
        self.settled = flow.is_ok();
        flow
    }

    /// Module faults that are due (brown-outs, link loss), and keeping the cores' Wi-Fi faults
    /// and the rules' counts current.
    fn fault_timers(&mut self, now: Instant) {
        if self.faults.generation() != self.wifi_generation {
            self.wifi_generation = self.faults.generation();
            for (k, line) in self.lines.iter_mut().enumerate() {
                line.core.set_wifi_faults(self.faults.wifi(k));
            }
        }
        for (k, line) in self.lines.iter_mut().enumerate() {
            module_faults(line, k, &mut self.faults, &mut self.tracer, now);
        }
        trace_fired(&mut self.tracer, &mut self.faults);
    }

    /// Move everything the cores produced to where it goes, and everything the network produced to
    /// the cores, until nothing moves (or the round limit).
    fn settle(&mut self) -> io::Result<Flow> {
        let registry = self.poll.registry();
        let mut flow = Flow::Continue;
        for _ in 0..MAX_SETTLE_ROUNDS {
            let mut moved = false;
            // One reading of the clock a round: a round takes microseconds.
            let now = Instant::now();
            for (idx, line) in self.lines.iter_mut().enumerate() {
                let mut h = Happened::default();
                // Faults go into the transcript where they happened: input noise before the
                // command it hit, output faults after the reply they cut.
                trace_fired(&mut self.tracer, &mut self.faults);
                if line.read_pending(now) {
                    let before = line.core.serial_room();
                    let buf = &mut self.read_buf;
                    line.read_serial(registry, idx, &mut h, &mut self.faults, buf, now)?;
                    moved |= line.core.serial_room() != before;
                    trace_fired(&mut self.tracer, &mut self.faults);
                }
                trace_core(&mut self.tracer, idx, &mut line.core);
                // Before its output is taken: a brown-out after the Nth command comes right after
                // that command's reply is made, however the reads fell.
                module_faults(line, idx, &mut self.faults, &mut self.tracer, now);
                let (tracer, faults) = (&mut self.tracer, &mut self.faults);
                moved |= line.take_output(registry, idx, tracer, faults, &mut h, now)?;
                trace_core(&mut self.tracer, idx, &mut line.core);
                trace_fired(&mut self.tracer, &mut self.faults);
                while let Some(op) = line.core.poll_op() {
                    for op in self.net_faults.op(&mut self.faults, idx, op, now) {
                        self.net.perform(registry, idx, op);
                    }
                    moved = true;
                }
                while let Some(op) = line.core.poll_store() {
                    moved = true;
                    let req = op.req();
                    let sent = match &line.store {
                        Some(store) => self.store.jobs.send((idx, store.clone(), op)).is_ok(),
                        None => false,
                    };
                    if !sent {
                        line.core.handle_stored(req, Err(WriteError::NoStore), now);
                    }
                }
                trace_core(&mut self.tracer, idx, &mut line.core);
                trace_fired(&mut self.tracer, &mut self.faults);
                let (tracer, faults, buf) =
                    (&mut self.tracer, &mut self.faults, &mut self.read_buf);
                if line.after(registry, idx, h, tracer, faults, buf, now)? {
                    flow = Flow::Shutdown;
                }
            }
            self.net
                .pump_reads(registry, room(&self.lines, &self.net_faults));
            let mut deliver = Vec::new();
            while let Some((idx, ev)) = self.net.pop_event() {
                deliver.extend(
                    self.net_faults
                        .event(&mut self.faults, idx, ev, now)
                        .into_iter()
                        .map(|ev| (idx, ev)),
                );
                moved = true;
            }
            for d in self.net_faults.due(now) {
                match d {
                    Delivery::Event(idx, ev) => deliver.push((idx, ev)),
                    Delivery::Op(idx, op) => self.net.perform(registry, idx, op),
                }
                moved = true;
            }
            trace_fired(&mut self.tracer, &mut self.faults);
            for (idx, ev) in deliver {
                log_event(idx, &ev);
                match self.lines.get_mut(idx) {
                    Some(line) => line.core.handle_net(ev, now),
                    None => log::warn!("event for unknown module {idx}"),
                }
            }
            if !moved {
                self.hurry = false;
                return Ok(flow);
            }
        }
        self.hurry = true;
        Ok(flow)
    }
}

impl<M: Core> Line<M> {
    /// The earliest time the line itself wants attention (pacing, a rate switch, a reset, a
    /// reconnect).
    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let pace = match &self.pacer {
            // (While the OS is full, WRITABLE wakes the loop instead.)
            Some(p) if !self.out.is_empty() && !self.writable => Some(p.next_at(now)),
            _ => None,
        };
        [
            pace,
            self.baud_check_at,
            self.reset_at,
            self.port.next_deadline(),
            // Output a serial fault holds back, and a stalled command.
            self.delayed_out.front().map(|(at, _)| *at),
            self.held_in.as_ref().map(|(at, _)| *at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Power-cycle the module (a reset line, the control socket, a brown-out fault).
    fn power_cycle(&mut self, idx: ModuleIdx, tracer: &mut Option<Tracer>, why: &str) {
        let now = Instant::now();
        log::info!("module {idx}: power cycle ({why})");
        if let Some(t) = tracer {
            t.note(idx, now, &format!("power cycle ({why})"));
        }
        self.reset_at = None;
        // What the module had not yet put on the wire (held by a serial fault) dies with it,
        // and so does a command it had not yet taken.
        let lost = self.delayed_out.iter().map(|(_, b)| b.len()).sum::<usize>();
        if lost > 0 {
            log::info!("module {idx}: {lost} bytes of output lost in the power cycle");
        }
        self.delayed_out.clear();
        self.held_in = None;
        self.core.power_cycle(now);
    }

    /// A `fault clear` ended the stall holding a command: it is due now.
    fn release_stall(&mut self, now: Instant) {
        if let Some((at, _)) = &mut self.held_in {
            *at = now;
        }
    }

    /// Input waits in the line and the core could take it now (not while a stalled command is
    /// held: its deadline wakes the loop).
    fn read_pending(&self, now: Instant) -> bool {
        self.want_read
            && self.core.serial_room() > 0
            && self.baud_after_drain.is_none()
            && self.held_in.as_ref().is_none_or(|(at, _)| *at <= now)
    }

    /// React to what happened on the port: a host that opened the line, input, writability.
    /// Returns true when the line ended for good (stdin closed).
    #[allow(clippy::too_many_arguments)]
    fn after(
        &mut self,
        registry: &Registry,
        idx: ModuleIdx,
        mut h: Happened,
        tracer: &mut Option<Tracer>,
        faults: &mut FaultSet,
        buf: &mut [u8],
        now: Instant,
    ) -> io::Result<bool> {
        // In this order, every time: a host that opened, its input, output towards it; a host
        // found gone at any of these steps makes room for the next waiting one (TCP).
        loop {
            if h.opened {
                if let Some(t) = tracer {
                    t.note(idx, now, "host opened the line");
                }
                if let Some(delay) = self.boot_delay {
                    self.reset_at = Some(now + delay);
                }
            }
            if h.readable {
                self.want_read = true;
                self.read_serial(registry, idx, &mut h, faults, buf, now)?;
            }
            if h.writable || h.opened {
                self.flush(registry, now, &mut h)?;
            }
            if !h.closed {
                return Ok(h.ended);
            }
            if let Some(t) = tracer {
                t.note(idx, now, "host closed the line");
            }
            let ended = h.ended;
            h = self.port.accept_next(registry, &self.tokens)?;
            h.ended |= ended;
            if !h.opened {
                return Ok(h.ended);
            }
        }
    }

    /// Feed what the host wrote to the core, chunk by chunk, while it has room, until the line is
    /// drained (then `want_read` is cleared): a read shorter than asked for drained it, so the
    /// usual command costs one read, not a second one that fails with EAGAIN (anything that
    /// arrives later is a new edge for the poll).
    fn read_serial(
        &mut self,
        registry: &Registry,
        idx: ModuleIdx,
        h: &mut Happened,
        faults: &mut FaultSet,
        buf: &mut [u8],
        now: Instant,
    ) -> io::Result<()> {
        if let Some((at, bytes)) = self.held_in.take() {
            if at > now {
                self.held_in = Some((at, bytes));
                // A stalled command: the line is not read meanwhile (bounded).
                return Ok(());
            }
            faults.stall_over(idx);
            self.core.handle_serial(&bytes, now);
        }
        loop {
            let room = self.core.serial_room().min(buf.len());
            if room == 0 || self.baud_after_drain.is_some() {
                // The host's bytes wait in the line (and then in the host): backpressure.
                return Ok(());
            }
            match self.port.read(registry, &mut buf[..room], h) {
                Ok(0) => {
                    self.want_read = false;
                    return Ok(());
                }
                Ok(n) => {
                    // Only the count: the core logs commands, and never certificate-key payloads.
                    log::trace!("m{idx} serial in {n} bytes");
                    if faults.is_empty() {
                        self.core.handle_serial(&buf[..n], now);
                    } else {
                        let bytes = faults.input(idx, buf[..n].to_vec());
                        if let Some(d) = faults.stall(idx) {
                            self.held_in = Some((now + d, bytes));
                            return Ok(());
                        }
                        self.core.handle_serial(&bytes, now);
                    }
                    if n < room {
                        self.want_read = false;
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.want_read = false;
                    return Ok(());
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("serial read: {e}"))),
            }
        }
    }

    /// Take the core's output (while there is room) and line changes; apply a rate switch once
    /// the bytes before it have left. True if anything moved.
    fn take_output(
        &mut self,
        registry: &Registry,
        idx: ModuleIdx,
        tracer: &mut Option<Tracer>,
        faults: &mut FaultSet,
        h: &mut Happened,
        now: Instant,
    ) -> io::Result<bool> {
        let mut moved = false;
        let delayed: usize = self.delayed_out.iter().map(|(_, b)| b.len()).sum();
        if self.baud_after_drain.is_none() && self.out.len() + delayed < SERIAL_OUT_HIGH {
            let bytes = self.core.take_serial();
            if !bytes.is_empty() {
                // Contents are logged by the core, which knows what they are.
                log::trace!("m{idx} serial out {} bytes", bytes.len());
                if faults.is_empty() && self.delayed_out.is_empty() {
                    self.out.push(&bytes);
                } else {
                    self.delayed_out.extend(faults.output(idx, bytes, now));
                }
                moved = true;
            }
            if let Some(LineOp::SetBaud(rate)) = self.core.poll_line_op() {
                self.baud_after_drain = Some(rate);
                moved = true;
            } else if moved {
                self.core.handle_output_taken(now);
            }
        }
        // Fragments whose time has come join the output, in order.
        while self.delayed_out.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, b)) = self.delayed_out.pop_front() {
                self.out.push(&b);
                moved = true;
            }
        }
        self.flush(registry, now, h)?;
        if let Some(rate) = self.baud_after_drain {
            let wire_idle = self.pacer.as_ref().is_none_or(|p| p.idle_at() <= now);
            let all_out = self.out.is_empty() && self.delayed_out.is_empty();
            if all_out && wire_idle && self.port.output_queued() == 0 {
                self.baud_after_drain = None;
                self.baud_check_at = None;
                self.port.set_baud(rate)?;
                if let Some(p) = &mut self.pacer {
                    p.set_baud(rate);
                }
                log::info!("module {idx}: line now at {rate} baud");
                if let Some(t) = tracer {
                    t.note(idx, now, &format!("line at {rate} baud"));
                }
                self.core.handle_output_taken(now);
                moved = true;
            } else if self.out.is_empty() {
                // The OS (or the paced wire) still holds some: look again shortly.
                let idle = self.pacer.as_ref().map_or(now, |p| p.idle_at());
                self.baud_check_at = Some(idle.max(now + Duration::from_millis(1)));
            }
        }
        Ok(moved)
    }

    /// Write buffered output, as much as the pacer allows; ask for WRITABLE only while output
    /// waits for the line (not for the pacer, which has a timer).
    fn flush(&mut self, registry: &Registry, now: Instant, h: &mut Happened) -> io::Result<()> {
        let limit = self.pacer.as_ref().map_or(usize::MAX, |p| p.allowance(now));
        let port = &mut self.port;
        let mut blocked = false;
        let written = self.out.flush_limited(limit, |b| {
            let r = port.write(registry, b, h);
            if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                blocked = true;
            }
            r
        });
        let written =
            written.map_err(|e| io::Error::new(e.kind(), format!("serial write: {e}")))?;
        if let Some(p) = &mut self.pacer {
            p.sent(written, now);
        }
        let want = blocked && !self.out.is_empty() && self.port.host_attached();
        if want != self.writable {
            self.port.want_writable(registry, &self.tokens, want)?;
            self.writable = want;
        }
        Ok(())
    }
}

/// Brown-outs and link losses due for module `k` now.
fn module_faults<M: Core>(
    line: &mut Line<M>,
    k: ModuleIdx,
    faults: &mut FaultSet,
    tracer: &mut Option<Tracer>,
    now: Instant,
) {
    if faults.reset_due(k, line.core.commands(), now) {
        trace_core(tracer, k, &mut line.core);
        trace_fired(tracer, faults);
        line.power_cycle(k, tracer, "fault");
    }
    if faults.link_down_due(k, now) {
        line.core.link_down(now);
    }
    while let Some(what) = line.core.poll_fault_fired() {
        faults.core_fired(k, &what);
    }
}

/// Write the faults that fired since the last call to the transcript (they are logged already).
fn trace_fired(tracer: &mut Option<Tracer>, faults: &mut FaultSet) {
    if !faults.has_fired() {
        return;
    }
    let fired = faults.take_fired();
    if let Some(t) = tracer {
        let now = Instant::now();
        for f in fired {
            t.note(f.module, now, &f.text);
        }
    }
}

/// Write module `idx`'s new transcript records.
fn trace_core<M: Core>(tracer: &mut Option<Tracer>, idx: ModuleIdx, core: &mut M) {
    if let Some(t) = tracer {
        while let Some(r) = core.poll_trace() {
            t.record(idx, &r);
        }
    }
}

/// The cores' backpressure (and the fault layer's, for delayed connections), as the NetStack asks
/// for it.
fn room<'a, M: Core>(
    lines: &'a [Line<M>],
    faults: &'a NetFaults,
) -> impl Fn(ModuleIdx, ConnId) -> usize + 'a {
    |m, c| faults.room(m, c, lines.get(m).map_or(0, |l| l.core.rx_room(c)))
}

fn log_event(idx: ModuleIdx, ev: &NetEvent) {
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

/// Parse a `--listen`/`--connect` address: `PORT` alone means 127.0.0.1:PORT.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port));
    }
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))
}

#[cfg(test)]
mod tests {
    //! The loop with small fake cores, a real pty and loopback sockets the tests start themselves.

    use super::*;
    use eswifi_core::module::io::{ConnId, NetEvent, NetOp, SendSeq};
    use std::fs::{File, OpenOptions};
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
    use std::os::unix::fs::OpenOptionsExt;

    const WAIT: Duration = Duration::from_secs(5);

    /// Echoes the host's bytes upper-cased, says "hi" at boot and "T" when its timer fires.
    struct Echo {
        out: Vec<u8>,
        timer: Option<Instant>,
    }

    impl Core for Echo {
        fn handle_serial(&mut self, data: &[u8], _now: Instant) {
            self.out.extend(data.to_ascii_uppercase());
        }
        fn handle_net(&mut self, _ev: NetEvent, _now: Instant) {}
        fn handle_timeout(&mut self, now: Instant) {
            if self.timer.is_some_and(|t| t <= now) {
                self.timer = None;
                self.out.extend_from_slice(b"T");
            }
        }
        fn take_serial(&mut self) -> Vec<u8> {
            std::mem::take(&mut self.out)
        }
        fn poll_op(&mut self) -> Option<NetOp> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.timer
        }
        fn rx_room(&self, _conn: ConnId) -> usize {
            0
        }
    }

    fn open_host(path: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .expect("open slave")
    }

    /// Step the driver until the host has read `want` bytes or `limit` passed; returns them.
    fn host_read_for<M: Core>(
        d: &mut Driver<M>,
        host: &mut File,
        want: usize,
        limit: Duration,
    ) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < want && Instant::now() < deadline {
            assert_eq!(
                d.step(Some(Duration::from_millis(10))).expect("step"),
                Flow::Continue
            );
            match host.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("host read: {e}"),
            }
        }
        got
    }

    fn host_read<M: Core>(d: &mut Driver<M>, host: &mut File, want: usize) -> Vec<u8> {
        host_read_for(d, host, want, WAIT)
    }

    #[test]
    fn serial_round_trip_across_host_reopen() {
        let mut d = Driver::new().expect("driver");
        let pty = Pty::open().expect("pty");
        let path = pty.slave_path().to_owned();
        let boot = Echo {
            out: b"hi".to_vec(),
            timer: None,
        };
        d.add(boot, Port::pty(pty, false).expect("port"))
            .expect("add");
        // Output made before any host opened the line waits in the pty for the first one.
        for _ in 0..3 {
            d.step(Some(Duration::from_millis(1))).expect("step");
        }
        let mut host = open_host(&path);
        assert_eq!(host_read(&mut d, &mut host, 2), b"hi");
        for round in 0..3 {
            host.write_all(b"i?\r\n").expect("host write");
            assert_eq!(host_read(&mut d, &mut host, 4), b"I?\r\n", "round {round}");
            drop(host);
            // With no host attached the loop must sleep, not spin on hang-ups.
            let t = Instant::now();
            d.step(Some(Duration::from_millis(100))).expect("step");
            d.step(Some(Duration::from_millis(100))).expect("step");
            assert!(t.elapsed() >= Duration::from_millis(150), "loop spun");
            host = open_host(&path);
        }
    }

    #[test]
    fn timer_fires_on_time() {
        let mut d = Driver::new().expect("driver");
        let pty = Pty::open().expect("pty");
        let mut host = open_host(pty.slave_path());
        let start = Instant::now();
        let core = Echo {
            out: Vec::new(),
            timer: Some(start + Duration::from_millis(80)),
        };
        d.add(core, Port::pty(pty, false).expect("port"))
            .expect("add");
        // One long step: the poll must wake itself for the timer.
        d.step(Some(WAIT)).expect("step");
        assert_eq!(host_read(&mut d, &mut host, 1), b"T");
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(80) && took < Duration::from_secs(2),
            "timer fired after {took:?}"
        );
    }

    /// Connects at boot, sends "hello", and passes received bytes to the serial line. It takes at
    /// most `room` bytes until the host writes "+", which grants `room` more.
    struct Relay {
        ops: Vec<NetOp>,
        out: Vec<u8>,
        room: usize,
        grant: usize,
    }

    impl Core for Relay {
        fn handle_serial(&mut self, data: &[u8], _now: Instant) {
            self.room += self.grant * data.iter().filter(|&&b| b == b'+').count();
        }
        fn handle_net(&mut self, ev: NetEvent, _now: Instant) {
            match ev {
                NetEvent::Connected { conn, .. } => self.ops.push(NetOp::Send {
                    conn,
                    seq: SendSeq(1),
                    data: b"hello".to_vec(),
                    to: None,
                }),
                NetEvent::Sent { .. } => self.out.extend_from_slice(b"<sent>"),
                NetEvent::Data { data, .. } => {
                    assert!(data.len() <= self.room, "read past the room");
                    self.room -= data.len();
                    self.out.extend(data);
                }
                NetEvent::Closed { .. } => self.out.extend_from_slice(b"<closed>"),
                other => panic!("unexpected {other:?}"),
            }
        }
        fn handle_timeout(&mut self, _now: Instant) {}
        fn take_serial(&mut self) -> Vec<u8> {
            std::mem::take(&mut self.out)
        }
        fn poll_op(&mut self) -> Option<NetOp> {
            (!self.ops.is_empty()).then(|| self.ops.remove(0))
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn rx_room(&self, _conn: ConnId) -> usize {
            self.room
        }
    }

    #[test]
    fn net_relay_with_backpressure() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
        let SocketAddr::V4(remote) = listener.local_addr().expect("addr") else {
            unreachable!()
        };
        let mut d = Driver::new().expect("driver");
        let pty = Pty::open().expect("pty");
        let mut host = open_host(pty.slave_path());
        let core = Relay {
            ops: vec![NetOp::Connect {
                conn: ConnId(1),
                local: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
                remote,
                keepalive: None,
            }],
            out: Vec::new(),
            room: 4,
            grant: 4,
        };
        d.add(core, Port::pty(pty, false).expect("port"))
            .expect("add");
        assert_eq!(host_read(&mut d, &mut host, 6), b"<sent>");
        let (mut peer, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        peer.read_exact(&mut buf).expect("peer read");
        assert_eq!(&buf, b"hello");

        peer.write_all(b"0123456789").expect("peer write");
        peer.shutdown(std::net::Shutdown::Write).expect("shutdown");
        assert_eq!(host_read(&mut d, &mut host, 4), b"0123");
        // The socket has more, but the core has no room: nothing more comes.
        assert_eq!(
            host_read_for(&mut d, &mut host, 1, Duration::from_millis(200)),
            b""
        );
        // Room opens through the serial line; the paused socket is read again without any new
        // readiness from it.
        host.write_all(b"+").expect("host write");
        assert_eq!(host_read(&mut d, &mut host, 4), b"4567");
        host.write_all(b"+").expect("host write");
        assert_eq!(host_read(&mut d, &mut host, 10), b"89<closed>");
    }
}
