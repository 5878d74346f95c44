//! The emulated module (layer: core). A pure state machine in the style of quinn-proto: inputs are
//! serial bytes ([`Module::handle_serial`]), network events ([`Module::handle_net`]), store results
//! ([`Module::handle_stored`]) and time ([`Module::handle_timeout`]); outputs are serial bytes
//! ([`Module::take_serial`]), socket operations ([`Module::poll_op`]), store writes
//! ([`Module::poll_store`]) and the next wake-up ([`Module::poll_timeout`]). It reads no clock and
//! touches no file descriptor (TLS records are processed here too: rustls is sans-IO), so every
//! behaviour is testable with byte strings and a fake clock.
//!
//! One command executes at a time (the host must wait for a reply, spec §2.2). A command that needs
//! the network or emulated time leaves a `Busy` state with a deadline; bytes that arrive meanwhile
//! stay in the framer, up to `SERIAL_IN_LIMIT`, and then the driver stops reading the line.
//!
//! Every byte the module writes goes through one `Wire` (the reply envelope of the firmware
//! profile and bus: C6.2.1.8's 12-byte OK, SPI's 0x15 padding and boot cursor, the `-1` form).
//!
//! The areas of the module each own their state and commands: [`system`], [`station`], [`ap`],
//! [`ping`], `client` (sockets, `R0`/`S3` in `data`), `server`, [`certs`] and [`tls`]. This
//! file holds what they share: the command loop, the dispatcher, replies, events and timers.

pub mod ap;
pub mod certs;
mod client;
mod data;
mod edge;
pub mod error;
pub mod io;
pub mod ping;
mod recent;
pub mod saved;
mod server;
pub mod socket;
pub mod station;
pub mod system;
pub mod tls;

use crate::config::{Bus, Config, EventMode};
use crate::item::Item;
use crate::iwin::command::{self, Command, Mnemonic, ParseError, SystemCmd};
use crate::iwin::framer::{Frame, Framer};
use crate::iwin::profile::{FwVersion, Profile};
use crate::iwin::reply::{Reason, Reply, Wire};
use ap::SoftAp;
use certs::Certs;
use error::Error;
use io::{CloseHow, ConnId, NetEvent, NetOp, QueryId, StoreOp, StoreReq, WriteError};
use ping::PingSettings;
use recent::Recent;
use socket::Socket;
use station::Station;
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use system::System;

pub use edge::{Input, Output};
pub use tls::{pem_check, PemError};

/// Bytes the host may write ahead of the command being executed; beyond this the driver stops
/// reading the serial line, so the host's writes block as with hardware flow control.
pub(crate) const SERIAL_IN_LIMIT: usize = 4096;

/// Reply bytes the module holds for the driver; while more are waiting, no further command runs and
/// no event is written (the driver stops reading the line, so a host that never reads its replies
/// stalls instead of growing memory).
pub(crate) const SERIAL_OUT_LIMIT: usize = 16 * 1024;

/// Asynchronous messages kept (for `MR`, or until the UART line is free); the oldest is dropped.
pub(crate) const MAX_EVENTS: usize = 32;

/// Host names remembered from `D0` (for TLS SNI); the oldest is forgotten first.
pub(crate) const MAX_NAMES: usize = 32;

/// Connections closing gracefully at once; beyond this the oldest is aborted.
pub(crate) const MAX_DRAINING: usize = 16;

/// How long a graceful close may take to deliver what was sent before it is aborted.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a `D0` lookup may take before the module reports the host as not found.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a store write (`PG`, `Z1`) may take before the command fails.
const STORE_TIMEOUT: Duration = Duration::from_secs(30);

/// A command waiting for its payload, the network, the store or emulated time. Every wait ends at
/// its deadline at the latest.
#[derive(Debug)]
enum Busy {
    /// The framer collects the payload of `S3` or `PG`; the deadline moves with each byte.
    Payload {
        to: PayloadFor,
        deadline: Instant,
    },
    Join {
        deadline: Instant,
    },
    Scan {
        one_by_one: bool,
        deadline: Instant,
    },
    Resolve {
        query: QueryId,
        name: String,
        socket: usize,
        deadline: Instant,
    },
    /// `P6=1`: connect, bind, or TLS handshake.
    Connect {
        socket: usize,
        deadline: Instant,
    },
    /// `P5=1`/`P5=11`: the listener (or UDP server socket) is being set up.
    Listen {
        socket: usize,
        deadline: Instant,
    },
    /// `R0` (or `R4`, `counted`) waiting up to `R2` for data.
    Read {
        socket: usize,
        counted: bool,
        deadline: Instant,
    },
    /// `S3` whose payload does not fit the send window yet.
    Send(data::Sending),
    /// `PG`/`Z1` waiting for the store to make the data durable.
    Store {
        req: StoreReq,
        what: Durable,
        deadline: Instant,
    },
    /// `T0` waiting for the echo replies.
    Ping {
        query: QueryId,
        target: Ipv4Addr,
        count: u32,
        deadline: Instant,
    },
}

impl Busy {
    fn name(&self) -> &'static str {
        match self {
            Busy::Payload { .. } => "payload",
            Busy::Join { .. } => "join",
            Busy::Scan { .. } => "scan",
            Busy::Resolve { .. } => "resolve",
            Busy::Connect { .. } => "connect",
            Busy::Listen { .. } => "listen",
            Busy::Read { .. } => "read",
            Busy::Send(_) => "send",
            Busy::Store { .. } => "store",
            Busy::Ping { .. } => "ping",
        }
    }

    fn deadline(&self) -> Instant {
        match self {
            Busy::Payload { deadline, .. }
            | Busy::Join { deadline }
            | Busy::Scan { deadline, .. }
            | Busy::Resolve { deadline, .. }
            | Busy::Connect { deadline, .. }
            | Busy::Listen { deadline, .. }
            | Busy::Read { deadline, .. }
            | Busy::Send(data::Sending { deadline, .. })
            | Busy::Store { deadline, .. }
            | Busy::Ping { deadline, .. } => *deadline,
        }
    }
}

/// What the payload the framer is collecting belongs to.
#[derive(Debug, Clone, Copy)]
enum PayloadFor {
    Send {
        socket: usize,
    },
    /// `S0`: up to `S1` bytes; at the deadline (`S2`) what arrived is sent.
    LegacySend {
        socket: usize,
    },
    Program {
        set: usize,
        item: Item,
    },
}

impl PayloadFor {
    fn mnemonic(self) -> Mnemonic {
        match self {
            PayloadFor::Send { .. } => Mnemonic::S3,
            PayloadFor::LegacySend { .. } => Mnemonic::S0,
            PayloadFor::Program { .. } => Mnemonic::PG,
        }
    }
}

/// What a pending store write is for.
#[derive(Debug)]
enum Durable {
    Item {
        set: usize,
        item: Item,
        data: Vec<u8>,
    },
    Settings {
        data: Vec<u8>,
    },
}

/// What a command handler decided.
enum Answer {
    Reply(Reply),
    /// A reply that holds a secret (`C?`, `A?`): the log shows `log` instead.
    Secret {
        reply: Reply,
        log: Vec<u8>,
    },
    /// The command continues; its reply comes later (at the latest at the deadline).
    Wait(Busy),
}

type Step = Result<Answer, Error>;

fn ok() -> Step {
    Ok(Answer::Reply(Reply::ok()))
}

fn payload(p: impl Into<Vec<u8>>) -> Step {
    Ok(Answer::Reply(Reply::payload(p)))
}

/// Which asynchronous messages `MS` can suppress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventClass {
    /// `[AP DHCP]` (MS bit 0).
    Dhcp,
    /// `[TCP SVR]` / `[UDP SVR]` (MS bit 1).
    Server,
    /// `[INFO   ] Link …` (never suppressed).
    Link,
}

/// Wi-Fi faults the module applies (the fault layer sets them, see `crate::faults`): joins that
/// fail by chance, slow joins and scans, access points that have disappeared.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WifiFaults {
    /// Probability that a join fails.
    pub join_fail: f64,
    pub join_delay: Option<Duration>,
    pub scan_delay: Option<Duration>,
    /// SSIDs no longer on the air (not in `F0`, not joinable).
    pub hidden: Vec<String>,
    /// Seed of the module's draws.
    pub seed: u64,
}

/// A fault the module applied itself (from its [`WifiFaults`]), for the fault layer to count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultFired {
    /// `wifi.join-fail`: joining `ssid` failed by chance.
    JoinFail { ssid: String },
}

impl std::fmt::Display for FaultFired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultFired::JoinFail { ssid } => write!(f, "wifi.join-fail: joining {ssid:?} fails"),
        }
    }
}

/// The module's wall clock: the driver says once what `Instant` corresponds to what Unix time, and
/// the core derives the rest (for certificate validity), so it never reads a clock.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    at: Instant,
    unix: Duration,
}

impl WallClock {
    fn unix(&self, now: Instant) -> rustls::pki_types::UnixTime {
        let t = self.unix + now.saturating_duration_since(self.at);
        rustls::pki_types::UnixTime::since_unix_epoch(t)
    }
}

/// One emulated eS-WiFi module.
pub struct Module {
    cfg: Config,
    /// What the reported firmware release changes (`[identity] firmware`).
    profile: Profile,
    /// The reply envelope of that release on the configured bus.
    wire: Wire,
    framer: Framer,
    out: Vec<u8>,
    ops: VecDeque<NetOp>,
    store_ops: VecDeque<StoreOp>,
    busy: Option<Busy>,
    next_id: u64,
    clock: WallClock,
    sys: System,
    /// Asynchronous messages not yet delivered (written between replies, or fetched with `MR`).
    events: VecDeque<Vec<u8>>,
    station: Station,
    ap: SoftAp,
    sockets: [Socket; 4],
    current: usize,
    /// Host names resolved by `D0`: the TLS layer sends them as SNI.
    names: Recent<Ipv4Addr, String>,
    /// Connections closing gracefully, and when they are aborted if still not done.
    draining: VecDeque<(ConnId, Instant)>,
    certs: Certs,
    ping: PingSettings,
    /// What `Z1` last saved (flash): applied at boot and by `ZR`.
    saved: Option<Vec<u8>>,
    /// A store write whose command ended before it did (timeout, reset): if it still succeeds,
    /// the data is on flash, and the module must know.
    orphan_store: Option<(StoreReq, Durable)>,
    /// The store write rewriting settings saved in the first format as TOML, until it is answered.
    rewriting: Option<StoreReq>,
    /// The baud rate in effect on the line (`U0` applies the staged `U2` rate).
    line_baud: u32,
    /// Changes to the line the driver must make, in order with the output before them.
    line_ops: VecDeque<LineOp>,
    /// Transcript records, when a trace is wanted (see [`Module::enable_trace`]).
    trace: Option<VecDeque<TraceRecord>>,
    /// The latest time an input brought (transcript records of output carry it).
    last_now: Instant,
    wifi_faults: WifiFaults,
    wifi_rng: crate::rng::Rng,
    /// Faults the module applied, for the fault layer's counts.
    faults_fired: VecDeque<FaultFired>,
    /// Commands executed since power-up (for `module.reset after=N`).
    commands: u64,
    /// The host was told (in the log) that it ends lines with LF alone.
    lf_noted: bool,
    /// Reboots not yet reported: the commands executed before them (see [`Output::Rebooted`]).
    rebooted: Option<u64>,
}

/// A change to the serial line itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOp {
    /// Switch to this baud rate once everything written before it has left (`U0`, or a reset
    /// that restores a saved rate).
    SetBaud(u32),
}

/// Records a transcript keeps at most before the oldest is dropped (the driver drains them every
/// turn, so this only matters if it stops doing so).
pub(crate) const MAX_TRACE_RECORDS: usize = 4096;

/// What a transcript record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    /// Bytes the host sent, as the module framed them (a command line with its CR, or a payload).
    In,
    /// Bytes the module wrote: a reply, an asynchronous message, the boot banner.
    Out,
    /// Something that happened on the network or to the module (connect, close, TLS, reset).
    Note,
}

/// One line of a transcript: already escaped, secrets already redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRecord {
    pub at: Instant,
    pub kind: TraceKind,
    pub text: String,
}

/// A one-line summary of a module, for the control socket's `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub(crate) joined: bool,
    pub(crate) ip: Option<String>,
    pub(crate) ap: bool,
    /// Each socket's state (`idle`, `open`, `listening`, …).
    pub(crate) sockets: Vec<&'static str>,
    pub(crate) events_queued: usize,
    /// The command in flight, if any.
    pub(crate) busy: Option<&'static str>,
    pub(crate) baud: u32,
}

impl Module {
    /// Power the module up at `now`, when the wall clock reads `unix_now` (time since the Unix
    /// epoch); the boot banner and prompt are ready in [`Module::take_serial`].
    pub fn new(config: &Config, now: Instant, unix_now: Duration) -> Module {
        let mut m = Module::unbooted(config, now, unix_now);
        m.boot_output();
        m
    }

    /// Every field at its power-up value, nothing printed yet. [`Module::new`] boots from it, and
    /// a reset rebuilds the volatile state from it (see `system::reset`), so a field added later
    /// cannot be forgotten there.
    fn unbooted(config: &Config, now: Instant, unix_now: Duration) -> Module {
        let profile = Profile::from_firmware(&config.identity.firmware).unwrap_or_else(|| {
            // Config::validate refuses such a string; a configuration built in code may still hold one.
            log::warn!(
                "firmware {:?} is not C<maj>.<min>.<x>.<y>: the C3.5.2.3 profile applies",
                config.identity.firmware
            );
            Profile {
                version: FwVersion([3, 5, 2, 3]),
            }
        });
        let wire = Wire {
            long_ok: profile.long_ok(),
            spi: config.module.bus == Bus::Spi,
            closed: config.quirks.closed_reply,
        };
        Module {
            profile,
            wire,
            framer: Framer::new(config.quirks.drop_byte_after_payload)
                .spi(config.module.bus == Bus::Spi)
                .terminal(config.module.terminal),
            out: Vec::new(),
            ops: VecDeque::new(),
            store_ops: VecDeque::new(),
            busy: None,
            next_id: 1,
            clock: WallClock {
                at: now,
                unix: unix_now,
            },
            sys: System::power_on(config),
            events: VecDeque::new(),
            station: Station::default(),
            ap: SoftAp::power_on(config.network.ap_ip),
            sockets: Default::default(),
            current: 0,
            names: Recent::new(MAX_NAMES),
            draining: VecDeque::new(),
            certs: Certs::new(profile.default_aws_set()),
            ping: PingSettings::default(),
            saved: None,
            orphan_store: None,
            rewriting: None,
            line_baud: config.module.baud,
            line_ops: VecDeque::new(),
            trace: None,
            last_now: now,
            wifi_faults: WifiFaults::default(),
            wifi_rng: crate::rng::Rng::new(0),
            faults_fired: VecDeque::new(),
            commands: 0,
            lf_noted: false,
            rebooted: None,
            cfg: config.clone(),
        }
    }

    /// Bytes the host wrote to the serial line (at most [`Module::serial_room`] of them).
    pub fn handle_serial(&mut self, data: &[u8], now: Instant) {
        self.last_now = now;
        self.framer.push(data);
        if let Some(Busy::Payload { deadline, to }) = &mut self.busy {
            // The payload timeout counts from the last byte received; S0's S2 from its header.
            if !matches!(to, PayloadFor::LegacySend { .. }) {
                *deadline = now + Duration::from_millis(self.cfg.timing.payload_timeout_ms);
            }
        }
        self.pump(now);
    }

    /// How many more serial bytes the module takes now. 0 while a command runs with input queued
    /// behind it, or while its replies wait for the driver: the driver then stops reading the line.
    pub fn serial_room(&self) -> usize {
        if self.out.len() >= SERIAL_OUT_LIMIT {
            return 0;
        }
        SERIAL_IN_LIMIT.saturating_sub(self.framer.buffered())
    }

    /// A network event from the driver.
    pub fn handle_net(&mut self, ev: NetEvent, now: Instant) {
        self.last_now = now;
        match ev {
            NetEvent::Resolved { query, result } => self.on_resolved(query, result),
            NetEvent::Connected { conn, local, peer } => self.on_connected(conn, local, peer, now),
            NetEvent::ConnectFailed { conn, error } => self.on_connect_failed(conn, error),
            NetEvent::Data { conn, data } => self.on_data(conn, &data, now),
            NetEvent::Datagram { conn, data, from } => self.on_datagram(conn, data, from),
            NetEvent::Accepted {
                listener,
                conn,
                peer,
            } => self.on_accepted(listener, conn, peer, now),
            NetEvent::PingDone { query, result } => self.on_ping(query, result),
            NetEvent::Sent { conn, seq } => self.on_sent(conn, seq),
            NetEvent::Closed { conn, reason } => self.on_closed(conn, reason, now),
        }
        self.progress(now);
        self.pump(now);
    }

    /// Called when `now` has reached the time [`Module::poll_timeout`] asked for (or later).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        if self.busy.as_ref().is_some_and(|b| now >= b.deadline()) {
            if let Some(busy) = self.busy.take() {
                self.expire(busy, now);
            }
        }
        self.expire_tls_graces(now);
        while let Some(&(conn, at)) = self.draining.front() {
            if now < at {
                break;
            }
            log::warn!("#{conn}: graceful close still not done after {DRAIN_TIMEOUT:?}; aborted");
            self.draining.pop_front();
            self.ops.push_back(NetOp::Close {
                conn,
                how: CloseHow::Abort,
            });
        }
        self.progress(now);
        self.pump(now);
    }

    /// Bytes to write to the serial line (drains them).
    pub fn take_serial(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The driver took the output ([`Module::take_serial`]) and the line ops
    /// ([`Module::poll_line_op`]): commands that waited for room in the output (see
    /// `SERIAL_OUT_LIMIT`) or for a line change run now.
    pub fn handle_output_taken(&mut self, now: Instant) {
        self.last_now = now;
        self.pump(now);
    }

    /// Next change to the serial line. Take the output first: the change applies after it.
    pub fn poll_line_op(&mut self) -> Option<LineOp> {
        self.line_ops.pop_front()
    }

    /// The baud rate in effect on the line (at power-up: the saved one).
    pub fn line_baud(&self) -> u32 {
        self.line_baud
    }

    /// Power-cycle (a reset pin, a brown-out): everything closes, unsaved settings and bytes in
    /// flight on the line are lost, and the banner and prompt are printed as at power-up.
    pub fn power_cycle(&mut self, now: Instant) {
        self.last_now = now;
        self.note(now, "power cycle".to_string());
        self.framer.clear();
        self.reset();
    }

    /// Keep a transcript ([`Module::poll_trace`]) from now on.
    pub fn enable_trace(&mut self) {
        self.trace.get_or_insert_with(VecDeque::new);
    }

    /// Next transcript record.
    pub fn poll_trace(&mut self) -> Option<TraceRecord> {
        self.trace.as_mut()?.pop_front()
    }

    /// Apply these Wi-Fi faults from now on (a new seed restarts the draws).
    pub fn set_wifi_faults(&mut self, faults: WifiFaults) {
        if faults.seed != self.wifi_faults.seed {
            self.wifi_rng = crate::rng::Rng::new(faults.seed);
        }
        self.wifi_faults = faults;
    }

    /// The access point is gone: the link drops, every socket's connection ends (`R0`/`S3` say
    /// `-1`), `CS` says 0, and the firmware's `[INFO   ] Link Down` goes out (as an event: on the
    /// line between replies, or for `MR`).
    pub fn link_down(&mut self, now: Instant) {
        self.last_now = now;
        if self.station.link.take().is_none() {
            return;
        }
        log::info!("link down: the access point is gone");
        self.note(now, "link down".to_string());
        for i in 0..self.sockets.len() {
            self.end_socket(i);
        }
        self.emit_event(EventClass::Link, "[INFO   ] Link Down".to_string());
        self.progress(now);
        self.pump(now);
    }

    /// A fault the module applied since the last call.
    pub fn poll_fault_fired(&mut self) -> Option<FaultFired> {
        self.faults_fired.pop_front()
    }

    /// Commands executed since power-up.
    pub fn commands(&self) -> u64 {
        self.commands
    }

    fn fault_fired(&mut self, what: FaultFired) {
        log::info!("fault {what}");
        self.note(self.last_now, format!("fault {what}"));
        if self.faults_fired.len() < 64 {
            self.faults_fired.push_back(what);
        }
    }

    /// A summary of the module's state.
    pub fn status(&self) -> Status {
        Status {
            joined: self.station.link.is_some(),
            ip: self.station.link.as_ref().map(|l| l.ip.to_string()),
            ap: self.ap.running,
            sockets: self.sockets.iter().map(|s| s.state().name()).collect(),
            events_queued: self.events.len(),
            busy: self.busy.as_ref().map(Busy::name),
            baud: self.line_baud,
        }
    }

    /// Next socket operation to perform.
    pub fn poll_op(&mut self) -> Option<NetOp> {
        self.ops.pop_front()
    }

    /// When the module next wants `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let busy = self.busy.as_ref().map(Busy::deadline);
        let drain = self.draining.front().map(|&(_, at)| at);
        busy.into_iter().chain(drain).chain(self.tls_graces()).min()
    }

    /// How many more received bytes the module will queue for `conn` (backpressure: the driver stops
    /// reading a connection while this is 0 and retries after the next serial or net step).
    pub fn rx_room(&self, conn: ConnId) -> usize {
        self.rx_len(conn)
            .map_or(0, |n| socket::RX_LIMIT.saturating_sub(n))
    }

    /// Install the settings `Z1` saved earlier (at power-up, before serving): the module boots again
    /// with them, joining at once when they say `CC=1`.
    pub fn load_saved(&mut self, saved: Option<Vec<u8>>) {
        self.saved = saved;
        self.out.clear();
        self.power_on_settings();
        self.rewrite_legacy_saved();
        // Boot applies the saved UART rate; the driver reads it before serving.
        self.line_baud = self.sys.settings.baud;
        self.boot_output();
        self.auto_join();
    }

    /// Install the certificate sets loaded from the store (at power-up, before serving).
    pub fn set_cert_sets(&mut self, sets: certs::CertSets) {
        self.certs.sets = sets;
    }

    /// Next certificate-store write to perform (off the event loop).
    pub fn poll_store(&mut self) -> Option<StoreOp> {
        self.store_ops.pop_front()
    }

    /// Result of a [`StoreOp`]: the data is durable (Ok) or could not be written.
    pub fn handle_stored(&mut self, req: StoreReq, result: Result<(), WriteError>, now: Instant) {
        self.last_now = now;
        if self.rewriting == Some(req) {
            self.rewriting = None;
            return self.rewritten(result);
        }
        match self.busy.take() {
            Some(Busy::Store { req: r, what, .. }) if r == req => {
                let step = self.stored(what, result);
                self.conclude(step);
            }
            other => {
                self.busy = other;
                self.late_store_result(req, result);
            }
        }
        self.pump(now);
    }

    /// True when a command is waiting for its payload, the network, the store or time.
    pub(crate) fn is_busy(&self) -> bool {
        self.busy.is_some()
    }

    // ---- command loop -------------------------------------------------------------------------

    fn pump(&mut self, now: Instant) {
        loop {
            if self.out.len() >= SERIAL_OUT_LIMIT || !self.line_ops.is_empty() {
                break;
            }
            if !matches!(self.busy, None | Some(Busy::Payload { .. })) {
                break;
            }
            let frame = self.framer.next_frame();
            // `[module] terminal`: the typed bytes come back before any reply to them.
            let echo = self.framer.take_echo();
            if !echo.is_empty() {
                self.emit(&echo, None);
            }
            let Some(frame) = frame else {
                break;
            };
            match frame {
                Frame::Line(line) => {
                    log::debug!("cmd  {}", command::log_text(&line));
                    if self.trace.is_some() {
                        let text = format!("{}\\r", command::trace_text(&line));
                        self.record(now, TraceKind::In, text);
                    }
                    match command::parse(&line) {
                        Ok(cmd) => self.execute(cmd, now),
                        Err(e) => self.fail(e.into()),
                    }
                }
                Frame::Overlong(head) => {
                    if self.trace.is_some() {
                        let text =
                            format!("{}… (overlong, rest skipped)", command::trace_text(&head));
                        self.record(now, TraceKind::In, text);
                    }
                    log::warn!(
                        "command line longer than {} bytes rejected",
                        crate::iwin::framer::MAX_LINE
                    );
                    let err = match command::split(&head) {
                        Ok((m, _)) => ParseError {
                            mnemonic: Some(m),
                            reason: Reason::BadArgument,
                        },
                        Err(e) => e,
                    };
                    self.fail(err.into());
                }
                Frame::Payload(data) => {
                    // S3 data may be shown at trace level; PG data (keys) never.
                    log::debug!("data {} bytes", data.len());
                    match self.busy.take() {
                        Some(Busy::Payload {
                            to:
                                to @ (PayloadFor::Send { socket } | PayloadFor::LegacySend { socket }),
                            ..
                        }) => {
                            log::trace!("data {}", data.escape_ascii());
                            if self.trace.is_some() {
                                let text = format!("[payload] {}", data.escape_ascii());
                                self.record(now, TraceKind::In, text);
                            }
                            let step = self.send_payload(socket, data, to.mnemonic(), now);
                            self.conclude(step);
                        }
                        Some(Busy::Payload {
                            to: PayloadFor::Program { set, item },
                            ..
                        }) => {
                            let text = format!("[payload of {} bytes redacted]", data.len());
                            self.record(now, TraceKind::In, text);
                            let step = self.program(set, item, data, now);
                            self.conclude(step);
                        }
                        other => {
                            self.busy = other;
                            log::error!("payload without a header");
                        }
                    }
                }
            }
        }
        if self.framer.take_lf_in_line() && !self.lf_noted {
            // Once: pyserial users and `picocom --omap crlf` end lines with LF, and nothing else
            // would tell them why the module stays silent.
            self.lf_noted = true;
            log::info!(
                "the host ends a line with LF alone (\\n): the module ends a command at CR (\\r) and waits for one"
            );
        }
        self.flush_events();
    }

    fn execute(&mut self, cmd: Command, now: Instant) {
        self.commands += 1;
        let step = match cmd {
            Command::Empty => Ok(Answer::Reply(Reply::Prompt)),
            Command::System(SystemCmd::Reset) => {
                self.reply(Reply::payload("[MODULE ] Resetting..."));
                self.reset();
                return;
            }
            Command::System(c) => self.system_command(c, now),
            Command::Station(c) => self.station_command(c, now),
            Command::Ap(c) => self.ap_command(c),
            Command::Ping(c) => self.ping_command(c, now),
            Command::Socket(c) => self.socket_command(c, now),
            Command::Server(c) => self.server_command(c, now),
            Command::Cert(c) => self.cert_command(c, now),
        };
        self.conclude(step);
    }

    /// Reply, or start waiting.
    fn conclude(&mut self, step: Step) {
        match step {
            Ok(Answer::Reply(r)) => self.reply(r),
            Ok(Answer::Secret { reply, log }) => self.reply_secret(reply, &log),
            Ok(Answer::Wait(b)) => {
                debug_assert!(self.busy.is_none(), "a second command in flight");
                self.busy = Some(b);
            }
            Err(e) => self.fail(e),
        }
    }

    /// A deadline passed: the command ends now.
    fn expire(&mut self, busy: Busy, now: Instant) {
        let step = match busy {
            Busy::Payload {
                to: PayloadFor::LegacySend { socket },
                ..
            } => {
                let data = self.framer.take_partial();
                if self.trace.is_some() {
                    let text = format!("[payload, S2 ran out] {}", data.escape_ascii());
                    self.record(now, TraceKind::In, text);
                }
                log::debug!(
                    "socket {socket}: S0 sends the {} bytes that came within S2",
                    data.len()
                );
                if data.is_empty() {
                    payload("0")
                } else {
                    self.send_payload(socket, data, Mnemonic::S0, now)
                }
            }
            Busy::Payload { to, .. } => {
                let got = self.framer.abort_payload();
                log::warn!(
                    "{} payload incomplete after {got} bytes: abandoned",
                    to.mnemonic().text()
                );
                Err(Error::PayloadTimeout(to.mnemonic()))
            }
            Busy::Join { .. } => self.finish_join(),
            Busy::Scan { one_by_one, .. } => self.finish_scan(one_by_one),
            Busy::Resolve { name, .. } => {
                log::warn!("D0 {name}: lookup timed out");
                Err(error::StationError::HostNotFound {
                    name,
                    timed_out: true,
                }
                .into())
            }
            Busy::Connect { socket, .. } => self.connect_timed_out(socket),
            Busy::Listen { socket, .. } => self.listen_timed_out(socket),
            Busy::Read { counted: false, .. } => ok(),
            Busy::Read { counted: true, .. } => payload("0000"),
            Busy::Send(data::Sending {
                socket,
                accepted,
                rest,
                ..
            }) => {
                log::warn!(
                    "socket {socket}: S3 send window still full after S2; {accepted} bytes accepted, {} dropped",
                    rest.len()
                );
                payload(accepted.to_string())
            }
            Busy::Store { req, what, .. } => {
                log::error!("store write not confirmed within {STORE_TIMEOUT:?}");
                let err = match what {
                    Durable::Settings { .. } => error::SystemError::SaveFailed.into(),
                    Durable::Item { .. } => error::CertError::WriteFailed.into(),
                };
                self.orphan_store = Some((req, what));
                Err(err)
            }
            Busy::Ping { target, count, .. } => {
                log::warn!("ping {target}: no answer from the ping worker in time");
                payload(ping::reply_text(target, &vec![None; count as usize]))
            }
        };
        self.conclude(step);
    }

    /// Complete a waiting command if the state now allows (data for `R0`, room for `S3`).
    fn progress(&mut self, now: Instant) {
        match &self.busy {
            Some(Busy::Read {
                socket, counted, ..
            }) => {
                let (i, counted) = (*socket, *counted);
                if self.read_ready(i) {
                    self.busy = None;
                    let r = self.answer_read(i, counted, now);
                    self.reply(r);
                }
            }
            Some(Busy::Send(_)) => self.continue_send(),
            _ => {}
        }
    }

    /// Complete the command in flight with `step` (which must be what ends it).
    fn finish(&mut self, step: Step) {
        self.busy = None;
        self.conclude(step);
    }

    // ---- output -------------------------------------------------------------------------------

    fn reply(&mut self, r: Reply) {
        let bytes = self.wire.encode(&r, self.sys.settings.mt);
        log::debug!("rsp  {}", bytes.escape_ascii());
        self.emit(&bytes, None);
    }

    /// Reply with a payload that holds a secret: the log shows `log_form` instead.
    fn reply_secret(&mut self, r: Reply, log_form: &[u8]) {
        let bytes = self.wire.encode(&r, self.sys.settings.mt);
        log::debug!("rsp  {} (secret hidden)", log_form.escape_ascii());
        let shown = self
            .wire
            .encode(&Reply::Ok(log_form.to_vec()), self.sys.settings.mt);
        self.emit(&bytes, Some(&shown));
    }

    /// Append to the serial output (and the transcript, as `shown` when that differs: secrets).
    fn emit(&mut self, bytes: &[u8], shown: Option<&[u8]>) {
        self.out.extend_from_slice(bytes);
        if self.trace.is_some() {
            let text = shown.unwrap_or(bytes).escape_ascii().to_string();
            self.record(self.last_now, TraceKind::Out, text);
        }
    }

    fn fail(&mut self, e: Error) {
        self.reply(e.reply());
    }

    /// Queue an asynchronous message unless `MS` suppresses its class.
    fn emit_event(&mut self, class: EventClass, message: String) {
        let bit = match class {
            EventClass::Dhcp => 1,
            EventClass::Server => 2,
            EventClass::Link => 0,
        };
        if self.sys.settings.suppress & bit != 0 {
            log::debug!(
                "event suppressed by MS={}: {message}",
                self.sys.settings.suppress
            );
            return;
        }
        log::info!("event {message}");
        if self.events.len() >= MAX_EVENTS {
            // The host reads neither MR nor the line: keep the newest, as a ring buffer would.
            if let Some(old) = self.events.pop_front() {
                log::warn!("event queue full; dropped {}", old.escape_ascii());
            }
        }
        self.events.push_back(message.into_bytes());
    }

    /// How asynchronous messages reach the host: the SPI bus has no way but `MR`.
    fn event_mode(&self) -> EventMode {
        if self.wire.spi {
            EventMode::Poll
        } else {
            self.cfg.module.events
        }
    }

    /// UART firmware: write queued messages, but only between replies (never while a command is
    /// executing or its payload is arriving) and while the line has room.
    fn flush_events(&mut self) {
        if self.event_mode() != EventMode::Uart || self.is_busy() {
            return;
        }
        while self.out.len() < SERIAL_OUT_LIMIT {
            let Some(msg) = self.events.pop_front() else {
                break;
            };
            let bytes = self.wire.event(&msg);
            log::debug!("evt  {}", bytes.escape_ascii());
            self.emit(&bytes, None);
        }
    }

    /// Add a transcript record (when tracing).
    fn record(&mut self, at: Instant, kind: TraceKind, text: String) {
        let Some(trace) = self.trace.as_mut() else {
            return;
        };
        if trace.len() >= MAX_TRACE_RECORDS {
            trace.pop_front();
        }
        trace.push_back(TraceRecord { at, kind, text });
    }

    /// A transcript note (network and module happenings).
    fn note(&mut self, at: Instant, text: String) {
        self.record(at, TraceKind::Note, text);
    }

    fn boot_output(&mut self) {
        let banner = self
            .cfg
            .identity
            .banner
            .then(|| system::banner(self.profile));
        let bytes = self.wire.boot(banner);
        self.emit(&bytes, None);
    }

    /// A message the module prints at boot outside any reply (`[BOOT   ]`, the auto-join line): on
    /// UART right away, on SPI (which only speaks when asked) queued for `MR`.
    fn boot_message(&mut self, msg: &[u8]) {
        if self.wire.spi {
            log::info!("event {}", msg.escape_ascii());
            self.events.push_back(msg.to_vec());
        } else {
            let bytes = self.wire.event(msg);
            self.emit(&bytes, None);
        }
    }

    /// A fresh id of the kind `make` builds (`self.next_id(ConnId)`).
    fn next_id<T>(&mut self, make: fn(u64) -> T) -> T {
        let id = self.next_id;
        self.next_id += 1;
        make(id)
    }

    // ---- connections shared by the areas -------------------------------------------------------

    /// Close a connection; a graceful close is tracked until the driver reports it done.
    fn close_conn(&mut self, conn: ConnId, how: CloseHow, now: Instant) {
        if how == CloseHow::Drain {
            if self.draining.len() >= MAX_DRAINING {
                if let Some((old, _)) = self.draining.pop_front() {
                    log::warn!("#{old}: too many graceful closes at once; aborted");
                    self.ops.push_back(NetOp::Close {
                        conn: old,
                        how: CloseHow::Abort,
                    });
                }
            }
            self.draining.push_back((conn, now + DRAIN_TIMEOUT));
        }
        self.ops.push_back(NetOp::Close { conn, how });
    }

    /// A `Closed` for a connection closing gracefully: it is done.
    fn drained(&mut self, conn: ConnId) -> bool {
        match self.draining.iter().position(|&(c, _)| c == conn) {
            Some(k) => {
                self.draining.remove(k);
                true
            }
            None => false,
        }
    }

    /// Remember the name `D0` resolved for `ip` (the newest wins; bounded).
    fn remember_name(&mut self, ip: Ipv4Addr, name: String) {
        self.names.touch(ip, name);
    }

    fn name_of(&self, ip: Ipv4Addr) -> Option<String> {
        self.names.get(&ip).cloned()
    }
}

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
