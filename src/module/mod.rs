//! The emulated module (layer: core). A pure state machine in the style of quinn-proto: inputs are
//! serial bytes ([`Module::handle_serial`]), network events ([`Module::handle_net`]) and time
//! ([`Module::handle_timeout`]); outputs are serial bytes ([`Module::take_serial`]), socket
//! operations ([`Module::poll_op`]) and the next wake-up ([`Module::poll_timeout`]). It reads no
//! clock and touches no file descriptor, so every behaviour is testable with byte strings and a fake
//! clock.
//!
//! One command executes at a time (the host must wait for a reply, spec §2.2). A command that needs
//! the network (`D0`, `P6=1`, `R0` waiting for data, `S3`) or emulated time (`C0`, `F0`) leaves a
//! [`Pending`] state; bytes that arrive meanwhile stay in the framer until it completes.

pub mod ap;
pub mod certs;
pub mod io;
pub mod saved;
pub mod server;
pub mod socket;
pub mod station;

use crate::config::{Config, EventMode};
use crate::iwin::command::{self, AddrField, Command, ParseError};
use crate::iwin::framer::{Frame, Framer};
use crate::iwin::reply::{encode_async, MessageType, Reason, Reply};
use ap::ApSettings;
use certs::{CertSets, Item};
use io::{CloseReason, ConnId, ConnectError, NetEvent, NetOp, QueryId, StoreOp, TlsParams};
use saved::Saved;
use server::{Server, Waiting};
use socket::{Protocol, Socket, State, RX_LIMIT};
use station::{Link, StationSettings};
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Reset banner of the UART firmware (FW strings); the prompt `\r\n> ` follows it.
const BANNER: &[u8] = b"\r\n                eS-WiFi\r\n            Inventek Systems\r\n    Embedding Connectivity Everywhere\r\n         Copyright (c)2011-2020";

/// Asynchronous messages kept for `MR` at most.
const MAX_EVENTS: usize = 32;

/// How long a `D0` lookup may take before the module reports the host as not found.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// A command waiting for the network or for emulated time.
#[derive(Debug)]
enum Pending {
    Join {
        deadline: Instant,
    },
    Scan {
        deadline: Instant,
    },
    Resolve {
        query: QueryId,
        name: String,
        socket: usize,
        deadline: Instant,
    },
    Connect {
        socket: usize,
        deadline: Instant,
    },
    Read {
        socket: usize,
        deadline: Instant,
    },
    Send {
        socket: usize,
        conn: ConnId,
        len: usize,
        deadline: Option<Instant>,
    },
    /// `PG`/`Z1` waiting for the store to make the data durable.
    Store {
        req: u64,
        what: Durable,
    },
    /// `P5=1`/`P5=11` waiting for the listener to be bound.
    Listen {
        socket: usize,
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

impl Pending {
    /// When the command gives up (None: it waits for its answer however long).
    fn deadline(&self) -> Option<Instant> {
        match self {
            Pending::Join { deadline }
            | Pending::Scan { deadline }
            | Pending::Resolve { deadline, .. }
            | Pending::Connect { deadline, .. }
            | Pending::Read { deadline, .. }
            | Pending::Listen { deadline, .. }
            | Pending::Ping { deadline, .. } => Some(*deadline),
            Pending::Send { deadline, .. } => *deadline,
            Pending::Store { .. } => None,
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

/// Which asynchronous messages `MS` can suppress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventClass {
    /// `[AP DHCP]` (MS bit 0).
    Dhcp,
    /// `[TCP SVR]` / `[UDP SVR]` (MS bit 1).
    Server,
}

/// What the payload the framer is collecting belongs to.
#[derive(Debug)]
enum PayloadFor {
    Send { socket: usize },
    Program { set: usize, item: Item },
}

/// Settings that `ZR` restores to their power-up values.
#[derive(Debug)]
struct System {
    mt: MessageType,
    suppress: u8,
    mac: [u8; 6],
    product_name: Vec<u8>,
    baud: u32,
    raw_bypass: u8,
}

impl System {
    fn power_on(cfg: &Config) -> System {
        System {
            mt: if cfg.module.message_type == 1 {
                MessageType::Simple
            } else {
                MessageType::Normal
            },
            suppress: 0,
            // Config::validate checked the MAC.
            mac: command::parse_mac(&cfg.identity.mac)
                .unwrap_or([0xC4, 0x7F, 0x51, 0x01, 0x12, 0x31]),
            product_name: cfg.identity.product_name.clone().into_bytes(),
            baud: 115_200,
            raw_bypass: 0,
        }
    }
}

/// One emulated eS-WiFi module.
pub struct Module {
    cfg: Config,
    framer: Framer,
    out: Vec<u8>,
    ops: VecDeque<NetOp>,
    pending: Option<Pending>,
    payload: Option<(PayloadFor, Instant)>,
    sys: System,
    station: StationSettings,
    link: Option<Link>,
    sockets: [Socket; 4],
    current: usize,
    next_id: u64,
    /// Host names resolved by `D0`, by address: the TLS layer sends them as SNI.
    names: HashMap<Ipv4Addr, String>,
    /// Certificate sets as programmed (flash: survives `ZR`).
    certs: CertSets,
    store_ops: VecDeque<StoreOp>,
    tls: TlsSettings,
    /// Asynchronous messages not yet delivered (written between replies, or fetched with `MR`).
    events: VecDeque<Vec<u8>>,
    ap: ApSettings,
    ap_running: bool,
    /// Stations the emulated DHCP server has announced (`[AP DHCP] Assigned`).
    ap_stations: Vec<Ipv4Addr>,
    /// What `Z1` last saved (flash): applied at boot and by `ZR`.
    saved: Option<Vec<u8>>,
    /// `T1`, `T2`, `T3`.
    ping: (Ipv4Addr, u16, u16),
}

/// `PF`/`PA` selections (reset by `ZR`).
#[derive(Debug, Clone, Default)]
struct TlsSettings {
    /// Active set for TLS (`PF=0,<set>`) and for AWS (`PF=1,<set>`).
    tls_set: u8,
    aws_set: u8,
    /// `PA=1,<name>`: server name to use instead of the `D0` name.
    ca_name: Option<String>,
}

impl TlsSettings {
    fn power_on() -> TlsSettings {
        TlsSettings {
            tls_set: 0,
            aws_set: 2,
            ca_name: None,
        }
    }
}

impl Module {
    /// Power the module up at `now`; the boot banner and prompt are ready in [`Module::take_serial`].
    pub fn new(config: &Config, _now: Instant) -> Module {
        let mut m = Module {
            framer: Framer::new(config.quirks.drop_byte_after_payload),
            out: Vec::new(),
            ops: VecDeque::new(),
            pending: None,
            payload: None,
            sys: System::power_on(config),
            station: StationSettings::default(),
            link: None,
            sockets: Default::default(),
            current: 0,
            next_id: 1,
            names: HashMap::new(),
            certs: CertSets::default(),
            store_ops: VecDeque::new(),
            tls: TlsSettings::power_on(),
            events: VecDeque::new(),
            ap: ApSettings::power_on(config.network.ap_ip),
            ap_running: false,
            ap_stations: Vec::new(),
            saved: None,
            ping: (Ipv4Addr::UNSPECIFIED, 0, 0),
            cfg: config.clone(),
        };
        m.boot_output();
        m
    }

    /// Bytes the host wrote to the serial line.
    pub fn handle_serial(&mut self, data: &[u8], now: Instant) {
        self.framer.push(data);
        if let Some((_, deadline)) = &mut self.payload {
            // The payload timeout counts from the last byte received.
            *deadline = now + Duration::from_millis(self.cfg.timing.payload_timeout_ms);
        }
        self.pump(now);
    }

    /// A network event from the driver.
    pub fn handle_net(&mut self, ev: NetEvent, now: Instant) {
        match ev {
            NetEvent::Resolved { query, result } => self.on_resolved(query, result),
            NetEvent::Connected { conn, local } => self.on_connected(conn, local),
            NetEvent::ConnectFailed { conn, error } => self.on_connect_failed(conn, error),
            NetEvent::Data { conn, data } => {
                if let Some(i) = self.socket_of(conn) {
                    self.sockets[i].rx.push_stream(&data);
                    self.complete_read(i);
                } else if let Some(w) = self.waiting_client(conn) {
                    w.rx.push_stream(&data);
                }
            }
            NetEvent::Datagram { conn, data, from } => {
                if let Some(i) = self.socket_of(conn) {
                    self.udp_server_sender(i, from);
                    self.sockets[i].rx.push_datagram(data, from);
                    self.complete_read(i);
                }
            }
            NetEvent::Accepted {
                listener,
                conn,
                peer,
            } => self.on_accepted(listener, conn, peer),
            NetEvent::PingDone { query, result } => self.on_ping(query, result),
            NetEvent::Sent { conn } => {
                if let Some(Pending::Send { conn: c, len, .. }) = &self.pending {
                    if *c == conn {
                        let len = *len;
                        self.finish(Reply::payload(len.to_string()));
                    }
                }
            }
            NetEvent::Closed { conn, reason } => self.on_closed(conn, reason),
        }
        self.pump(now);
    }

    /// Called when `now` has reached the time [`Module::poll_timeout`] asked for (or later).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, deadline)) = &self.payload {
            if now >= *deadline {
                let got = self.framer.abort_payload();
                log::warn!("payload incomplete after {got} bytes: abandoned");
                self.payload = None;
                self.reply(self.error("S3", Reason::UnknownError, Vec::new()));
            }
        }
        let due = self
            .pending
            .as_ref()
            .and_then(Pending::deadline)
            .is_some_and(|d| now >= d);
        if due {
            match self.pending.take() {
                Some(Pending::Join { .. }) => self.finish_join(),
                Some(Pending::Scan { .. }) => self.finish_scan(),
                Some(Pending::Resolve { name, .. }) => {
                    log::warn!("D0 {name}: lookup timed out");
                    self.reply(self.host_not_found(&name));
                }
                Some(Pending::Connect { socket, .. }) => {
                    log::warn!("socket {socket}: connect timed out");
                    if let Some(conn) = self.sockets[socket].reset_connection() {
                        self.ops.push_back(NetOp::Close { conn });
                    }
                    self.reply(self.connect_failure(socket, None));
                }
                Some(Pending::Read { .. }) => self.reply(Reply::ok()),
                Some(Pending::Send { len, socket, .. }) => {
                    // The bytes stay queued in the driver and will go out; report them as accepted.
                    log::warn!("socket {socket}: S2 timeout while the peer is not reading; {len} bytes still queued");
                    self.reply(Reply::payload(len.to_string()));
                }
                Some(Pending::Listen { socket, .. }) => {
                    log::warn!("socket {socket}: listener not ready in time");
                    self.close_socket(socket);
                    self.reply(self.error("P5", Reason::UnknownError, Vec::new()));
                }
                Some(Pending::Ping { target, count, .. }) => {
                    log::warn!("ping {target}: no answer from the ping worker in time");
                    self.reply(ping_reply(target, &vec![None; count as usize]));
                }
                Some(p @ Pending::Store { .. }) => self.pending = Some(p),
                None => {}
            }
        }
        self.pump(now);
    }

    /// Bytes to write to the serial line (drains them).
    pub fn take_serial(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Next socket operation to perform.
    pub fn poll_op(&mut self) -> Option<NetOp> {
        self.ops.pop_front()
    }

    /// When the module next wants `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.as_ref().and_then(Pending::deadline);
        let payload = self.payload.as_ref().map(|(_, d)| *d);
        pending.into_iter().chain(payload).min()
    }

    /// How many more received bytes the module will queue for `conn` (backpressure: the driver stops
    /// reading a connection while this is 0 and retries after the next serial or net step).
    pub fn rx_room(&self, conn: ConnId) -> usize {
        if let Some(i) = self.socket_of(conn) {
            return RX_LIMIT.saturating_sub(self.sockets[i].rx.len());
        }
        self.sockets
            .iter()
            .filter_map(|s| s.server.as_ref())
            .flat_map(|srv| srv.waiting.iter())
            .find(|w| w.conn == conn)
            .map_or(0, |w| RX_LIMIT.saturating_sub(w.rx.len()))
    }

    /// Install the settings `Z1` saved earlier (at power-up, before serving): the module boots again
    /// with them, joining at once when they say `CC=1`.
    pub fn load_saved(&mut self, saved: Option<Vec<u8>>) {
        self.saved = saved;
        self.out.clear();
        self.power_on_settings();
        self.boot_output();
        self.auto_join();
    }

    /// Install the certificate sets loaded from the store (at power-up, before serving).
    pub fn set_cert_sets(&mut self, certs: CertSets) {
        self.certs = certs;
    }

    /// The certificate sets as the module knows them.
    pub fn cert_sets(&self) -> &CertSets {
        &self.certs
    }

    /// Next certificate-store write to perform (off the event loop).
    pub fn poll_store(&mut self) -> Option<StoreOp> {
        self.store_ops.pop_front()
    }

    /// Result of a [`StoreOp`]: the item is durable (Ok) or could not be written.
    pub fn handle_stored(&mut self, req: u64, result: Result<(), String>, now: Instant) {
        if matches!(&self.pending, Some(Pending::Store { req: r, .. }) if *r == req) {
            let Some(Pending::Store { what, .. }) = self.pending.take() else {
                unreachable!()
            };
            let (set, item, data) = match what {
                Durable::Item { set, item, data } => (set, item, data),
                Durable::Settings { data } => {
                    match result {
                        Ok(()) => {
                            log::info!("settings saved ({} bytes)", data.len());
                            self.saved = Some(data);
                            self.reply(Reply::ok());
                        }
                        Err(e) => {
                            log::error!("saving settings failed: {e}");
                            self.reply(self.error("Z1", Reason::UnknownError, Vec::new()));
                        }
                    }
                    self.pump(now);
                    return;
                }
            };
            match result {
                Ok(()) => {
                    log::info!(
                        "set {set}: {} programmed ({} bytes)",
                        item.label(),
                        data.len()
                    );
                    self.certs.put(set, item, data);
                    self.reply(Reply::ok());
                }
                Err(e) => {
                    log::error!("set {set}: writing the {} failed: {e}", item.label());
                    let payload = b"[CERTS  ] Failed to write to iFlash: 1".to_vec();
                    self.reply(self.error("PG", Reason::UnknownError, payload));
                }
            }
        }
        self.pump(now);
    }

    /// True when a command is waiting for the network or for time.
    pub fn is_busy(&self) -> bool {
        self.pending.is_some() || self.payload.is_some()
    }

    // ---- command loop -------------------------------------------------------------------------

    fn pump(&mut self, now: Instant) {
        while self.pending.is_none() {
            let Some(frame) = self.framer.next_frame() else {
                break;
            };
            match frame {
                Frame::Line(line) => {
                    log::debug!("cmd  {}", line.escape_ascii());
                    match command::parse(&line) {
                        Ok(cmd) => self.execute(cmd, now),
                        Err(e) => self.reply(self.parse_error(e)),
                    }
                }
                Frame::Overlong(head) => {
                    log::warn!(
                        "command line longer than {} bytes rejected",
                        crate::iwin::framer::MAX_LINE
                    );
                    let mnemonic = head.get(..2).and_then(|m| std::str::from_utf8(m).ok());
                    let err = match mnemonic.and_then(command::usage) {
                        Some((m, _)) => ParseError {
                            mnemonic: Some(m),
                            reason: Reason::BadArgument,
                        },
                        None => ParseError {
                            mnemonic: None,
                            reason: Reason::UnknownCommand,
                        },
                    };
                    self.reply(self.parse_error(err));
                }
                Frame::Payload(data) => {
                    // S3 data may be shown at trace level; PG data (keys) never.
                    log::debug!("data {} bytes", data.len());
                    if matches!(self.payload, Some((PayloadFor::Send { .. }, _))) {
                        log::trace!("data {}", data.escape_ascii());
                    }
                    match self.payload.take() {
                        Some((PayloadFor::Send { socket }, _)) => {
                            self.send_payload(socket, data, now)
                        }
                        Some((PayloadFor::Program { set, item }, _)) => {
                            self.program(set, item, data)
                        }
                        None => log::error!("payload without a header"),
                    }
                }
            }
        }
        self.flush_events();
    }

    /// Queue an asynchronous message unless `MS` suppresses its class.
    fn emit_event(&mut self, class: EventClass, message: String) {
        let bit = match class {
            EventClass::Dhcp => 1,
            EventClass::Server => 2,
        };
        if self.sys.suppress & bit != 0 {
            log::debug!("event suppressed by MS={}: {message}", self.sys.suppress);
            return;
        }
        log::info!("event {message}");
        if self.events.len() >= MAX_EVENTS {
            // Poll mode with a host that never sends MR: keep the newest, as a ring buffer would.
            if let Some(old) = self.events.pop_front() {
                log::warn!("event queue full; dropped {}", old.escape_ascii());
            }
        }
        self.events.push_back(message.into_bytes());
    }

    /// UART firmware: write queued messages, but only between replies (never while a command is
    /// executing or its payload is arriving).
    fn flush_events(&mut self) {
        if self.cfg.module.events != EventMode::Uart || self.is_busy() {
            return;
        }
        while let Some(msg) = self.events.pop_front() {
            let bytes = encode_async(&msg);
            log::debug!("evt  {}", bytes.escape_ascii());
            self.out.extend_from_slice(&bytes);
        }
    }

    fn reply(&mut self, r: Reply) {
        let bytes = r.encode(self.sys.mt);
        log::debug!("rsp  {}", bytes.escape_ascii());
        self.out.extend_from_slice(&bytes);
    }

    /// Complete the pending command with `r`.
    fn finish(&mut self, r: Reply) {
        self.pending = None;
        self.reply(r);
    }

    fn error(&self, mnemonic: &str, reason: Reason, payload: Vec<u8>) -> Reply {
        Reply::Error {
            payload,
            reason,
            usage: command::usage(mnemonic),
        }
    }

    fn parse_error(&self, e: ParseError) -> Reply {
        Reply::Error {
            payload: Vec::new(),
            reason: e.reason,
            usage: e.mnemonic.and_then(command::usage),
        }
    }

    fn boot_output(&mut self) {
        if self.cfg.identity.banner {
            self.out.extend_from_slice(BANNER);
        }
        self.out.extend_from_slice(b"\r\n> ");
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn socket_of(&self, conn: ConnId) -> Option<usize> {
        self.sockets.iter().position(|s| s.conn() == Some(conn))
    }

    /// Source address for outgoing sockets: the station IP when it is on loopback, else the
    /// configured one (a static C6 address elsewhere cannot be bound on this host).
    fn source_ip(&self) -> Ipv4Addr {
        match &self.link {
            Some(l) if l.ip.is_loopback() => l.ip,
            _ => self.cfg.network.ip,
        }
    }

    fn close_all_sockets(&mut self) {
        for i in 0..self.sockets.len() {
            self.close_socket(i);
        }
    }

    /// Close the socket's connection and any server it runs.
    fn close_socket(&mut self, i: usize) {
        for conn in self.sockets[i].reset_all() {
            self.ops.push_back(NetOp::Close { conn });
        }
    }

    // ---- commands -----------------------------------------------------------------------------

    fn execute(&mut self, cmd: Command, now: Instant) {
        use Command::*;
        let cur = self.current;
        let r = match cmd {
            Empty => Reply::Prompt,
            CmdMode(_) => Reply::ok(),
            Info => {
                let id = &self.cfg.identity;
                Reply::payload(format!(
                    "{},{},{},{},{},{},{}",
                    id.product_id,
                    id.firmware,
                    id.api,
                    id.stack,
                    id.rtos,
                    id.cpu_clock,
                    String::from_utf8_lossy(&self.sys.product_name)
                ))
            }
            SetMessageType(t) => {
                self.sys.mt = if t == 1 {
                    MessageType::Simple
                } else {
                    MessageType::Normal
                };
                Reply::ok()
            }
            SetMessageSuppress(v) => {
                self.sys.suppress = v;
                Reply::ok()
            }
            SetMac(mac) => {
                self.sys.mac = mac;
                Reply::ok()
            }
            GetMac => Reply::payload(self.mac_text()),
            SystemQuery => Reply::payload(format!(
                "1,{:08},{:04x},{:04x},{},192.168.10.1,0,1,0,0,{}",
                12_345_678,
                0x0483,
                0x5740,
                self.mac_text(),
                String::from_utf8_lossy(&self.sys.product_name)
            )),
            SetProductName(n) => {
                self.sys.product_name = n;
                Reply::ok()
            }
            Reset => {
                self.reply(Reply::payload("[MODULE ] Resetting..."));
                self.reset();
                return;
            }
            FactoryReset => {
                if self.link.is_some() || self.ap_running {
                    let text =
                        b"Please shutdown network before resetting to factory configuration.";
                    self.error("Z0", Reason::UnknownError, text.to_vec())
                } else {
                    log::info!("factory defaults restored (not saved until Z1)");
                    self.factory_settings();
                    Reply::ok()
                }
            }
            SaveSettings => {
                let data = self.snapshot().encode();
                let req = self.next_id();
                self.store_ops.push_back(StoreOp::Settings {
                    req,
                    data: data.clone(),
                });
                self.pending = Some(Pending::Store {
                    req,
                    what: Durable::Settings { data },
                });
                return;
            }
            SetApIp(ip) => {
                self.ap.ip = ip;
                Reply::ok()
            }
            SetApSsid(mac, ssid) => {
                self.ap.append_mac = mac;
                self.ap.ssid = ssid;
                Reply::ok()
            }
            SetApSecurity(v) => {
                self.ap.security = v;
                Reply::ok()
            }
            SetApKey(k) => {
                self.ap.key = k;
                Reply::ok()
            }
            SetApChannel(c) => {
                self.ap.channel = c;
                Reply::ok()
            }
            SetApLease(v) => {
                self.ap.lease = v;
                Reply::ok()
            }
            SetApMaxClients(v) => {
                self.ap.max_clients = v;
                Reply::ok()
            }
            ApStart => self.ap_start(false),
            ApDirect => self.ap_start(true),
            ApStop => {
                if self.ap_running {
                    log::info!("soft AP stopped");
                }
                self.ap_running = false;
                self.ap_stations.clear();
                Reply::ok()
            }
            ApQuery => Reply::Ok(self.ap.query_line(self.sys.mac, self.ap_running)),
            SetPingTarget(ip) => {
                self.ping.0 = ip;
                Reply::ok()
            }
            SetPingRepeats(n) => {
                self.ping.1 = n;
                Reply::ok()
            }
            SetPingDelay(ms) => {
                self.ping.2 = ms;
                Reply::ok()
            }
            Ping => {
                self.start_ping(now);
                return;
            }
            PingQuery => Reply::payload(format!("{},{},{}", self.ping.0, self.ping.1, self.ping.2)),
            UartQuery => Reply::payload(format!("0,{},8,None,1,Normal", self.sys.baud)),
            SetBaud(b) => {
                self.sys.baud = b;
                Reply::ok()
            }
            UartApply => Reply::ok(),
            BusQuery => Reply::payload("UART,0,0"),
            SetRawBypass(v) => {
                self.sys.raw_bypass = v;
                Reply::ok()
            }
            SetSsid(v) => {
                self.station.ssid = v;
                Reply::ok()
            }
            SetPassphrase(v) => {
                self.station.passphrase = v;
                Reply::ok()
            }
            SetSecurity(v) => {
                self.station.security = v;
                Reply::ok()
            }
            SetDhcp(v) => {
                self.station.dhcp = v;
                Reply::ok()
            }
            SetIpVersion(v) => {
                self.station.ip_version = v;
                Reply::ok()
            }
            SetAddress(field, ip) => {
                let st = &mut self.station;
                *match field {
                    AddrField::Ip => &mut st.ip,
                    AddrField::Mask => &mut st.mask,
                    AddrField::Gateway => &mut st.gateway,
                    AddrField::Dns1 => &mut st.dns1,
                    AddrField::Dns2 => &mut st.dns2,
                } = ip;
                Reply::ok()
            }
            SetJoinRetries(v) => {
                self.station.join_retries = v;
                Reply::ok()
            }
            SetAutoConnect(v) => {
                self.station.auto_connect = v;
                Reply::ok()
            }
            Disconnect => {
                if self.link.take().is_some() {
                    log::info!("left the network; all sockets closed");
                }
                self.close_all_sockets();
                Reply::ok()
            }
            Country(None) => Reply::payload(self.station.country.clone()),
            Country(Some(c)) => {
                self.station.country = c;
                Reply::ok()
            }
            Rssi => Reply::payload(self.link.as_ref().map_or(0, |l| l.rssi).to_string()),
            Status => Reply::payload(if self.link.is_some() { "1" } else { "0" }),
            Join => {
                if self.link.is_some() {
                    self.error("C0", Reason::UnknownError, b"Already connected!".to_vec())
                } else if self.cfg.timing.join_ms > 0 {
                    self.pending = Some(Pending::Join {
                        deadline: now + Duration::from_millis(self.cfg.timing.join_ms),
                    });
                    return;
                } else {
                    self.finish_join();
                    return;
                }
            }
            StationQuery => Reply::payload(self.station_line()),
            Scan => {
                if self.cfg.timing.scan_ms > 0 {
                    self.pending = Some(Pending::Scan {
                        deadline: now + Duration::from_millis(self.cfg.timing.scan_ms),
                    });
                } else {
                    self.finish_scan();
                }
                return;
            }
            Lookup(name) => {
                self.lookup(name, now);
                return;
            }
            Socket(None) => Reply::payload(cur.to_string()),
            Socket(Some(i)) => {
                self.current = i as usize;
                Reply::ok()
            }
            SetProtocol(p) => {
                self.sockets[cur].protocol = Protocol::from_code(p);
                Reply::ok()
            }
            SetLocalPort(p) => {
                self.sockets[cur].local_port = p;
                Reply::ok()
            }
            SetRemoteIp(ip) => {
                self.sockets[cur].remote_ip = ip;
                Reply::ok()
            }
            SetRemotePort(p) => {
                self.sockets[cur].remote_port = p;
                Reply::ok()
            }
            Server(mode) => {
                self.server_command(cur, mode, now);
                return;
            }
            AcceptLoop(v) => self.accept_loop(cur, v),
            ReadMessage => {
                let mut p = b"[SOMA]".to_vec();
                if let Some(msg) = self.events.pop_front() {
                    p.extend_from_slice(&msg);
                }
                p.extend_from_slice(b"[EOMA]");
                Reply::Ok(p)
            }
            Client(true) => {
                self.start_client(cur, now);
                return;
            }
            Client(false) => {
                // A UDP server's socket is its listener: only P5=0 stops it.
                let udp_server = self.sockets[cur].server.as_ref().is_some_and(|srv| srv.udp);
                if !udp_server {
                    if let Some(conn) = self.sockets[cur].reset_connection() {
                        log::info!("socket {cur}: closed by host");
                        self.ops.push_back(NetOp::Close { conn });
                    }
                }
                Reply::ok()
            }
            SetBacklog(b) => {
                self.sockets[cur].backlog = b;
                Reply::ok()
            }
            SetTlsVerify(v) => {
                self.sockets[cur].tls_verify = v;
                Reply::ok()
            }
            SetKeepAlive(on, ms) => {
                self.sockets[cur].keepalive = (on, ms);
                Reply::ok()
            }
            SetCaName(on, name) => {
                self.tls.ca_name = on.then(|| String::from_utf8_lossy(&name).into_owned());
                Reply::ok()
            }
            SetVerifyReportOnly(v) => {
                self.sockets[cur].verify_report_only = v;
                Reply::ok()
            }
            CertAvailability(set) => match self.cert_availability(set) {
                Some(line) => Reply::payload(line),
                None => self.error("PE", Reason::BadArgument, Vec::new()),
            },
            SelectCertSet(None) => {
                Reply::payload(format!("{},{}", self.tls.tls_set, self.tls.aws_set))
            }
            SelectCertSet(Some((func, set))) => {
                if !self.set_usable(set as usize) {
                    self.error("PF", Reason::BadArgument, Vec::new())
                } else {
                    if func == 0 {
                        self.tls.tls_set = set;
                    } else {
                        self.tls.aws_set = set;
                    }
                    Reply::ok()
                }
            }
            ProgramCert { set, item, len } => {
                let item = Item::from_code(item).unwrap_or(Item::Ca);
                if !self.set_usable(set as usize) {
                    self.error("PG", Reason::BadArgument, Vec::new())
                } else if len == 0 {
                    // ST's driver sends all three items, empty ones with length 0: leave them alone.
                    Reply::ok()
                } else {
                    self.framer.expect_payload(len);
                    let deadline = now + Duration::from_millis(self.cfg.timing.payload_timeout_ms);
                    self.payload = Some((
                        PayloadFor::Program {
                            set: set as usize,
                            item,
                        },
                        deadline,
                    ));
                    return;
                }
            }
            TransportQuery => Reply::payload(self.sockets[cur].transport_line()),
            Read => {
                self.read(cur, now);
                return;
            }
            SetReadSize(v) => {
                self.sockets[cur].read_size = v;
                Reply::ok()
            }
            SetReadTimeout(v) => {
                self.sockets[cur].read_timeout_ms = v;
                Reply::ok()
            }
            SetReadMode(v) => {
                self.sockets[cur].read_mode = v;
                Reply::ok()
            }
            ReadQuery => {
                let s = &self.sockets[cur];
                Reply::payload(format!(
                    "{},{},{}",
                    s.read_size, s.read_timeout_ms, s.read_mode
                ))
            }
            SetSendSize(v) => {
                self.sockets[cur].send_size = v;
                Reply::ok()
            }
            SetSendTimeout(v) => {
                self.sockets[cur].send_timeout_ms = v;
                Reply::ok()
            }
            Send(len) => {
                self.framer.expect_payload(len);
                let deadline = now + Duration::from_millis(self.cfg.timing.payload_timeout_ms);
                self.payload = Some((PayloadFor::Send { socket: cur }, deadline));
                return;
            }
            SendQuery => {
                let s = &self.sockets[cur];
                Reply::payload(format!("{},{}", s.send_size, s.send_timeout_ms))
            }
        };
        self.reply(r);
    }

    fn mac_text(&self) -> String {
        let m = self.sys.mac;
        format!(
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }

    /// `ZR`: close everything, restore power-up settings, print the banner and prompt.
    fn reset(&mut self) {
        self.close_all_sockets();
        self.pending = None;
        self.payload = None;
        self.link = None;
        self.sockets = Default::default();
        self.current = 0;
        self.names.clear();
        self.tls = TlsSettings::power_on();
        self.events.clear();
        self.ap_running = false;
        self.ap_stations.clear();
        log::info!("module reset");
        self.power_on_settings();
        self.boot_output();
        self.auto_join();
    }

    // ---- saved settings ------------------------------------------------------------------------

    /// Power-up values of everything `Z1` saves.
    fn factory(&self) -> Saved {
        let sys = System::power_on(&self.cfg);
        Saved {
            station: StationSettings::default(),
            ap: ApSettings::power_on(self.cfg.network.ap_ip),
            mac: sys.mac,
            product_name: sys.product_name,
            baud: sys.baud,
            message_type: (sys.mt == MessageType::Simple) as u8,
            suppress: sys.suppress,
        }
    }

    /// The current values of everything `Z1` saves.
    fn snapshot(&self) -> Saved {
        Saved {
            station: self.station.clone(),
            ap: self.ap.clone(),
            mac: self.sys.mac,
            product_name: self.sys.product_name.clone(),
            baud: self.sys.baud,
            message_type: (self.sys.mt == MessageType::Simple) as u8,
            suppress: self.sys.suppress,
        }
    }

    fn apply(&mut self, s: Saved) {
        self.station = s.station;
        self.ap = s.ap;
        self.sys.mac = s.mac;
        self.sys.product_name = s.product_name;
        self.sys.baud = s.baud;
        self.sys.mt = if s.message_type == 1 {
            MessageType::Simple
        } else {
            MessageType::Normal
        };
        self.sys.suppress = s.suppress;
    }

    /// `Z0`: factory values now; flash keeps what `Z1` saved until the next `Z1`.
    fn factory_settings(&mut self) {
        self.sys = System::power_on(&self.cfg);
        let f = self.factory();
        self.apply(f);
    }

    /// Boot / `ZR`: factory values, then the saved ones on top.
    fn power_on_settings(&mut self) {
        self.factory_settings();
        if let Some(data) = self.saved.clone() {
            let mut s = self.factory();
            match s.decode_onto(&data) {
                Ok(()) => self.apply(s),
                Err(e) => {
                    log::error!("saved settings unusable ({e}); factory defaults apply");
                    self.out
                        .extend_from_slice(b"\r\n[BOOT   ] Invalid CONFIG, restoring defaults");
                }
            }
        }
    }

    /// `CC` bit 0 (auto-join at boot): join now and tell the host the way `C0` would.
    fn auto_join(&mut self) {
        if self.station.auto_connect & 1 == 0 {
            return;
        }
        let ssid = String::from_utf8_lossy(&self.station.ssid).into_owned();
        let msg = match station::join(&self.cfg, &self.station) {
            Ok(link) => {
                log::info!("auto-joined {ssid:?} at boot as {}", link.ip);
                let m = format!("[JOIN   ] {ssid},{},0,0", link.ip);
                self.link = Some(link);
                m
            }
            Err(e) => {
                log::warn!("auto-join {ssid:?} at boot failed: {e}");
                format!("[JOIN   ] {ssid}\r\n[JOIN   ] Failed")
            }
        };
        self.out.extend_from_slice(&encode_async(msg.as_bytes()));
    }

    // ---- ping ----------------------------------------------------------------------------------

    fn start_ping(&mut self, now: Instant) {
        let (target, repeats, delay) = self.ping;
        // M46: T2 counts repeats after the first echo; 65535 ("continuous") is capped.
        let count = (repeats as u32 + 1).min(1000);
        if !self.network_up() || target.is_unspecified() {
            log::warn!("ping {target}: no network or no target (T1)");
            return self.reply(ping_reply(target, &vec![None; count as usize]));
        }
        let query = self.next_id();
        let interval = Duration::from_millis(delay as u64);
        let timeout = Duration::from_secs(1);
        self.ops.push_back(NetOp::Ping {
            query,
            target,
            count,
            interval,
            timeout,
        });
        let deadline = now + (interval + timeout) * count + Duration::from_secs(5);
        self.pending = Some(Pending::Ping {
            query,
            target,
            count,
            deadline,
        });
    }

    fn on_ping(&mut self, query: QueryId, result: Result<Vec<Option<Duration>>, String>) {
        let Some(Pending::Ping {
            query: q,
            target,
            count,
            ..
        }) = self.pending
        else {
            return;
        };
        if q != query {
            return;
        }
        let rtts = match result {
            Ok(r) => r,
            Err(e) => {
                log::warn!("ping {target}: {e}; answering Timeout");
                vec![None; count as usize]
            }
        };
        self.finish(ping_reply(target, &rtts));
    }

    // ---- station ------------------------------------------------------------------------------

    fn finish_join(&mut self) {
        self.pending = None;
        let ssid = String::from_utf8_lossy(&self.station.ssid).into_owned();
        match station::join(&self.cfg, &self.station) {
            Ok(link) => {
                log::info!("joined {ssid:?} as {}", link.ip);
                let r = Reply::payload(format!("[JOIN   ] {},{},0,0", ssid, link.ip));
                self.link = Some(link);
                self.reply(r);
            }
            Err(e) => {
                log::warn!("join {ssid:?} failed: {e}");
                let payload = format!("[JOIN   ] {ssid}\r\n[JOIN   ] Failed").into_bytes();
                self.reply(self.error("C0", Reason::UnknownError, payload));
            }
        }
    }

    fn finish_scan(&mut self) {
        self.pending = None;
        let lines: Vec<String> = station::scan_list(&self.cfg, &self.station)
            .iter()
            .enumerate()
            .map(|(i, ap)| station::scan_line(i + 1, ap))
            .collect();
        self.reply(Reply::payload(lines.join("\r\n")));
    }

    /// `C?`: `SSID,Password,Security,DHCP,IPver,IP,Mask,Gateway,DNS1,DNS2,JoinRetries,AutoConnect,
    /// AuthType,CountryCode,Status`.
    fn station_line(&self) -> Vec<u8> {
        let st = &self.station;
        let zero = Ipv4Addr::UNSPECIFIED;
        let (ip, mask, gw, dns1, dns2) = match &self.link {
            Some(l) => (l.ip, l.mask, l.gateway, l.dns1, l.dns2),
            None if st.dhcp => (zero, zero, zero, st.dns1, st.dns2),
            None => (st.ip, st.mask, st.gateway, st.dns1, st.dns2),
        };
        let cc = st.country.split(|&b| b == b'/').next().unwrap_or_default();
        let mut line = Vec::new();
        line.extend_from_slice(&st.ssid);
        line.push(b',');
        line.extend_from_slice(&st.passphrase);
        line.extend_from_slice(
            format!(
                ",{},{},{},{ip},{mask},{gw},{dns1},{dns2},{},{},{},",
                st.security,
                st.dhcp as u8,
                st.ip_version,
                st.join_retries,
                st.auto_connect,
                st.auth_type
            )
            .as_bytes(),
        );
        line.extend_from_slice(cc);
        line.extend_from_slice(if self.link.is_some() { b",1" } else { b",0" });
        line
    }

    // ---- DNS ----------------------------------------------------------------------------------

    fn lookup(&mut self, name: Vec<u8>, now: Instant) {
        let name = String::from_utf8_lossy(&name).into_owned();
        if self.link.is_none() {
            log::warn!("D0 {name}: not joined to a network");
            self.reply(self.host_not_found(&name));
            return;
        }
        if let Ok(ip) = command::ipv4(name.as_bytes()) {
            self.sockets[self.current].remote_ip = ip;
            self.reply(Reply::payload(ip.to_string()));
            return;
        }
        let query = self.next_id();
        self.ops.push_back(NetOp::Resolve {
            query,
            name: name.clone(),
        });
        self.pending = Some(Pending::Resolve {
            query,
            name,
            socket: self.current,
            deadline: now + DNS_TIMEOUT,
        });
    }

    fn on_resolved(&mut self, query: QueryId, result: Result<Ipv4Addr, String>) {
        let Some(Pending::Resolve { query: q, .. }) = &self.pending else {
            return;
        };
        if *q != query {
            return;
        }
        let Some(Pending::Resolve { name, socket, .. }) = self.pending.take() else {
            unreachable!()
        };
        match result {
            Ok(ip) => {
                log::info!("D0 {name} → {ip}");
                self.sockets[socket].remote_ip = ip;
                self.names.insert(ip, name);
                self.reply(Reply::payload(ip.to_string()));
            }
            Err(e) => {
                log::warn!("D0 {name}: {e}");
                self.reply(self.host_not_found(&name));
            }
        }
    }

    fn host_not_found(&self, name: &str) -> Reply {
        self.error(
            "D0",
            Reason::UnknownError,
            format!("[DNS  LU] Host not found {name}").into_bytes(),
        )
    }

    // ---- client sockets -----------------------------------------------------------------------

    /// The P6 failure reply. A TLS socket whose TCP connection worked but whose handshake failed says
    /// so in the words of its context: P9=0/1 is the "simple" context, P9=2 the "advanced" one.
    fn connect_failure(&self, i: usize, error: Option<&ConnectError>) -> Reply {
        let s = &self.sockets[i];
        let text: &[u8] = match (s.protocol, error) {
            (Protocol::Udp | Protocol::UdpLite, _) => b"[UDP  RC] Error connecting",
            (Protocol::Tls, Some(ConnectError::Tls(_))) if s.tls_verify < 2 => {
                b"[TCP SSL] Simple context, failed to connect"
            }
            (Protocol::Tls, Some(ConnectError::Tls(_))) => b"[TCP SSL] Connection issue",
            _ => b"[TCP  RC] Failed to connect",
        };
        self.error("P6", Reason::UnknownError, text.to_vec())
    }

    /// The TLS parameters for a `P6=1` on socket `i`, or the failure reply when the active set lacks
    /// what `P9` needs or holds something unusable.
    fn tls_params(&self, i: usize) -> Result<TlsParams, Reply> {
        let s = &self.sockets[i];
        let fail =
            |text: &str| Err(self.error("P6", Reason::UnknownError, text.as_bytes().to_vec()));
        let max = self.cfg.tls.max_sockets as usize;
        let busy: Vec<usize> = (0..4)
            .filter(|&j| {
                j != i
                    && self.sockets[j].protocol == Protocol::Tls
                    && self.sockets[j].conn().is_some()
            })
            .collect();
        if busy.len() >= max {
            log::warn!(
                "socket {i}: TLS refused: {} TLS socket(s) allowed, in use by socket {}",
                max,
                busy[0]
            );
            return fail(&format!("[TCP SSL] In use by socket {}", busy[0]));
        }
        let set = self.tls.tls_set as usize;
        let ca = self.certs.get(set, Item::Ca);
        let cert = self.certs.get(set, Item::Cert);
        let key = self.certs.get(set, Item::Key);
        if s.tls_verify == 2 {
            let missing: Vec<&str> = [(ca, Item::Ca), (cert, Item::Cert), (key, Item::Key)]
                .iter()
                .filter(|(d, _)| d.is_none())
                .map(|(_, it)| it.label())
                .collect();
            if !missing.is_empty() {
                log::warn!(
                    "socket {i}: P9=2 needs a full set, but set {set} lacks: {}",
                    missing.join(", ")
                );
                return fail("[TCP SSL] No cert and/or key found.");
            }
        }
        let use_ca = if s.tls_verify >= 1 { ca } else { None };
        if let Some(ca) = use_ca {
            if let Err(why) = pem_check(Item::Ca, ca) {
                log::warn!("socket {i}: the root CA of set {set} is unusable: {why}");
                return fail("[TCP SSL] Root CA certificate failed to initialize: 1");
            }
        }
        let client = match (s.tls_verify, cert, key) {
            (2, Some(cert), Some(key)) => {
                for (item, data) in [(Item::Cert, cert), (Item::Key, key)] {
                    if let Err(why) = pem_check(item, data) {
                        log::warn!(
                            "socket {i}: the {} of set {set} is unusable: {why}",
                            item.label()
                        );
                        return fail("[TCP SSL] Unable to enable TLS!");
                    }
                }
                Some((cert.to_vec(), key.to_vec()))
            }
            _ => None,
        };
        let server_name = self
            .tls
            .ca_name
            .clone()
            .or_else(|| self.names.get(&s.remote_ip).cloned());
        log::info!(
            "socket {i}: TLS to {}:{} with set {set}, P9={} ({}), server name {:?}",
            s.remote_ip,
            s.remote_port,
            s.tls_verify,
            match (s.tls_verify, use_ca.is_some()) {
                (0, _) | (1, false) => "no verification",
                (1, true) => "root CA",
                _ => "root CA + client certificate",
            },
            server_name
        );
        Ok(TlsParams {
            set,
            verify: s.tls_verify,
            report_only: s.verify_report_only,
            ca: use_ca.map(<[u8]>::to_vec),
            client,
            server_name,
            check_hostname: self.cfg.tls.check_hostname,
        })
    }

    fn start_client(&mut self, i: usize, now: Instant) {
        let s = &self.sockets[i];
        let proto = s.protocol;
        let fail = |m: &Module, text: &[u8]| m.error("P6", Reason::UnknownError, text.to_vec());
        if s.conn().is_some() || s.server.is_some() {
            log::warn!(
                "socket {i}: P6=1 on a socket that is connected or serving (P6=0 / P5=0 first)"
            );
            let r = fail(self, b"[TCP  RC] Already Connected");
            return self.reply(r);
        }
        if !self.network_up() {
            log::warn!(
                "socket {i}: P6=1 while neither joined to a network nor running the soft AP"
            );
            return self.reply(self.connect_failure(i, None));
        }
        let conn = self.next_id();
        let src = self.server_ip();
        let deadline = now + Duration::from_millis(self.cfg.timing.connect_timeout_ms);
        let op = match proto {
            Protocol::Tcp | Protocol::Tls => {
                let s = &self.sockets[i];
                if s.remote_ip.is_unspecified() || s.remote_ip.is_broadcast() {
                    log::warn!("socket {i}: P6=1 with remote host {}", s.remote_ip);
                    let r = fail(self, b"[P6     ] Invalid IP Address");
                    return self.reply(r);
                }
                let tls = if proto == Protocol::Tls {
                    match self.tls_params(i) {
                        Ok(p) => Some(p),
                        Err(r) => return self.reply(r),
                    }
                } else {
                    None
                };
                let s = &self.sockets[i];
                NetOp::Connect {
                    conn,
                    local: SocketAddrV4::new(src, 0),
                    remote: SocketAddrV4::new(s.remote_ip, s.remote_port),
                    keepalive: s
                        .keepalive
                        .0
                        .then(|| Duration::from_millis(s.keepalive.1 as u64)),
                    tls,
                }
            }
            Protocol::Udp | Protocol::UdpLite => {
                let s = &self.sockets[i];
                // Spec §4 quirk: with P2=0 the P4 value present now becomes the local port.
                let (port, fallback) = if s.local_port != 0 {
                    (s.local_port, false)
                } else if self.cfg.quirks.udp_local_port_from_p4 {
                    (s.remote_port, true)
                } else {
                    (0, false)
                };
                NetOp::OpenUdp {
                    conn,
                    local: SocketAddrV4::new(src, port),
                    ephemeral_fallback: fallback,
                }
            }
            Protocol::Mqtt => {
                log::warn!("socket {i}: MQTT (P1=4) is not emulated");
                let r = fail(self, b"Mode not supported.");
                return self.reply(r);
            }
        };
        log::info!("socket {i}: {op:?}");
        self.sockets[i].rx.clear();
        self.sockets[i].state = State::Connecting { conn, deadline };
        self.ops.push_back(op);
        self.pending = Some(Pending::Connect {
            socket: i,
            deadline,
        });
    }

    fn on_connected(&mut self, conn: ConnId, local: SocketAddrV4) {
        if let Some(i) = self.server_socket(conn) {
            let srv = self.sockets[i].server.as_mut().expect("server_socket");
            srv.bound = true;
            log::info!(
                "socket {i}: {} server on {local}",
                if srv.udp { "UDP" } else { "TCP" }
            );
            if srv.udp {
                self.sockets[i].state = State::Connected { conn, local };
            }
            if matches!(self.pending, Some(Pending::Listen { socket, .. }) if socket == i) {
                self.finish(Reply::ok());
            }
            return;
        }
        let Some(i) = self.socket_of(conn) else {
            return;
        };
        log::info!("socket {i}: connected from {local}");
        self.sockets[i].state = State::Connected { conn, local };
        if matches!(self.pending, Some(Pending::Connect { socket, .. }) if socket == i) {
            self.finish(Reply::ok());
        }
    }

    fn on_connect_failed(&mut self, conn: ConnId, error: ConnectError) {
        if let Some(i) = self.server_socket(conn) {
            log::warn!(
                "socket {i}: cannot serve on port {}: {error:?}",
                self.sockets[i].local_port
            );
            self.close_socket(i);
            if matches!(self.pending, Some(Pending::Listen { socket, .. }) if socket == i) {
                self.pending = None;
                self.reply(self.error("P5", Reason::UnknownError, Vec::new()));
            }
            return;
        }
        let Some(i) = self.socket_of(conn) else {
            return;
        };
        let s = &mut self.sockets[i];
        log::warn!(
            "socket {i}: connect to {}:{} failed: {error:?}",
            s.remote_ip,
            s.remote_port
        );
        s.reset_connection();
        let was_pending =
            matches!(self.pending, Some(Pending::Connect { socket, .. }) if socket == i);
        if !was_pending {
            return;
        }
        if error == ConnectError::Refused && self.cfg.quirks.refused_connect_ok {
            // GH80 behaviour: OK now, -1 on the first read or send.
            self.sockets[i].state = State::Closed;
            self.finish(Reply::ok());
        } else {
            self.pending = None;
            self.reply(self.connect_failure(i, Some(&error)));
        }
    }

    fn on_closed(&mut self, conn: ConnId, reason: CloseReason) {
        if let Some(w) = self.waiting_client(conn) {
            log::info!("waiting client {} disconnected", w.peer);
            w.closed = true;
            return;
        }
        let Some(i) = self.socket_of(conn) else {
            return;
        };
        log::info!("socket {i}: connection ended: {reason:?}");
        self.sockets[i].state = State::Closed;
        match self.pending {
            Some(Pending::Read { socket, .. }) if socket == i => self.complete_read(i),
            Some(Pending::Send { conn: c, .. }) if c == conn => self.finish(Reply::Closed),
            _ => {}
        }
    }

    // ---- servers (P5/P7) -------------------------------------------------------------------------

    /// Address module-side servers listen on: the soft AP's while it runs without a station link.
    fn server_ip(&self) -> Ipv4Addr {
        if self.ap_running && self.link.is_none() {
            self.ap_bind_ip()
        } else {
            self.source_ip()
        }
    }

    /// The soft AP's address on this host (a non-loopback `Z6` cannot be bound here).
    fn ap_bind_ip(&self) -> Ipv4Addr {
        if self.ap.ip.is_loopback() {
            self.ap.ip
        } else {
            self.cfg.network.ap_ip
        }
    }

    fn network_up(&self) -> bool {
        self.link.is_some() || self.ap_running
    }

    /// `A0`/`AD`: bring the soft AP up.
    fn ap_start(&mut self, direct: bool) -> Reply {
        if self.ap_running {
            return Reply::payload("[AP     ] Already running");
        }
        self.ap_running = true;
        let ssid = String::from_utf8_lossy(&self.ap.effective_ssid(self.sys.mac)).into_owned();
        log::info!(
            "soft AP {ssid:?} up at {}; servers listen on {}",
            self.ap.ip,
            self.ap_bind_ip()
        );
        let mut p = format!("[AP     ] SSID: {ssid},{}", self.ap.ip);
        if direct {
            p.push_str("\r\n[WEB SVR] CSO Server started");
        }
        Reply::payload(p)
    }

    fn server_socket(&self, listener: ConnId) -> Option<usize> {
        self.sockets.iter().position(|s| {
            s.server
                .as_ref()
                .is_some_and(|srv| srv.listener == listener)
        })
    }

    fn waiting_client(&mut self, conn: ConnId) -> Option<&mut Waiting> {
        self.sockets
            .iter_mut()
            .filter_map(|s| s.server.as_mut())
            .find_map(|srv| srv.waiting_mut(conn))
    }

    /// `P5`: 0 stop, 1 start, 11 start with multi-accept, 10 close the current client and take the
    /// next.
    fn server_command(&mut self, i: usize, mode: u8, now: Instant) {
        match mode {
            0 => {
                if self.sockets[i].server.is_some() {
                    log::info!("socket {i}: server stopped");
                    self.close_socket(i);
                }
                self.reply(Reply::ok())
            }
            10 => {
                self.next_client(i);
                self.reply(Reply::ok())
            }
            _ => self.start_server(i, mode == 11, now),
        }
    }

    fn start_server(&mut self, i: usize, multi: bool, now: Instant) {
        let s = &mut self.sockets[i];
        if let Some(srv) = &mut s.server {
            srv.accept_loop |= multi;
            return self.reply(Reply::ok());
        }
        if s.conn().is_some() {
            log::warn!("socket {i}: P5 while a client connection is open (P6=0 first)");
            return self.reply(self.error("P5", Reason::UnknownError, Vec::new()));
        }
        if !self.network_up() {
            log::warn!("socket {i}: P5 while neither joined to a network nor running the soft AP");
            return self.reply(self.error("P5", Reason::UnknownError, Vec::new()));
        }
        let s = &self.sockets[i];
        let local = SocketAddrV4::new(self.server_ip(), s.local_port);
        let conn = self.next_id();
        let s = &mut self.sockets[i];
        let deadline = now + Duration::from_millis(self.cfg.timing.connect_timeout_ms);
        let op = match s.protocol {
            Protocol::Tcp => NetOp::Listen {
                conn,
                local,
                backlog: s.backlog.max(1) as u32,
            },
            Protocol::Udp | Protocol::UdpLite => {
                s.state = State::Connecting { conn, deadline };
                NetOp::OpenUdp {
                    conn,
                    local,
                    ephemeral_fallback: false,
                }
            }
            Protocol::Tls | Protocol::Mqtt => {
                log::warn!("socket {i}: servers are TCP (P1=0) or UDP (P1=1) here");
                let r = self.error("P5", Reason::UnknownError, b"Mode not supported.".to_vec());
                return self.reply(r);
            }
        };
        s.rx.clear();
        s.server = Some(Server::new(conn, s.protocol.is_datagram(), multi));
        log::info!("socket {i}: {op:?}");
        self.ops.push_back(op);
        self.pending = Some(Pending::Listen {
            socket: i,
            deadline,
        });
    }

    /// `P7`: 0 stop the accept loop, 1 start it, 2 close the current client, 3 take the next.
    fn accept_loop(&mut self, i: usize, v: u8) -> Reply {
        let Some(srv) = self.sockets[i].server.as_mut() else {
            return self.error("P7", Reason::UnknownError, Vec::new());
        };
        match v {
            0 | 1 => srv.accept_loop = v == 1,
            2 => {
                if let Some(conn) = self.sockets[i].reset_connection() {
                    self.ops.push_back(NetOp::Close { conn });
                }
            }
            _ => self.next_client(i),
        }
        Reply::ok()
    }

    /// Close the current client of a TCP server and make the next waiting one current.
    fn next_client(&mut self, i: usize) {
        if self.sockets[i].server.as_ref().is_none_or(|srv| srv.udp) {
            return;
        }
        if let Some(conn) = self.sockets[i].reset_connection() {
            log::info!("socket {i}: current client closed");
            self.ops.push_back(NetOp::Close { conn });
        }
        self.promote(i);
    }

    /// Make the oldest waiting client current, announcing it.
    fn promote(&mut self, i: usize) {
        let ip = self.server_ip();
        let s = &mut self.sockets[i];
        let Some(w) = s.server.as_mut().and_then(|srv| srv.waiting.pop_front()) else {
            return;
        };
        let local = SocketAddrV4::new(ip, s.local_port);
        s.state = if w.closed {
            State::Closed
        } else {
            State::Connected {
                conn: w.conn,
                local,
            }
        };
        s.rx = w.rx;
        // P? reports the client: ClientIP and (as ST and CMSIS read it) RemotePort.
        s.client_ip = *w.peer.ip();
        s.remote_port = w.peer.port();
        let port = s.local_port;
        log::info!("socket {i}: client {} is current", w.peer);
        self.emit_event(
            EventClass::Server,
            format!("[TCP SVR] Accepted {}:{}", w.peer.ip(), port),
        );
        self.complete_read(i);
    }

    fn on_accepted(&mut self, listener: ConnId, conn: ConnId, peer: SocketAddrV4) {
        let Some(i) = self.server_socket(listener) else {
            self.ops.push_back(NetOp::Close { conn });
            return;
        };
        let backlog = self.sockets[i].backlog.max(1) as usize;
        let s = &mut self.sockets[i];
        let srv = s.server.as_mut().expect("server_socket");
        if srv.waiting.len() >= backlog {
            log::warn!("socket {i}: backlog of {backlog} full; client {peer} refused");
            self.ops.push_back(NetOp::Close { conn });
            return;
        }
        log::info!("socket {i}: client {peer} connected");
        if self.ap_running && self.link.is_none() && !self.ap_stations.contains(peer.ip()) {
            // A local program reaching the AP's address plays a station that joined and got a lease.
            self.ap_stations.push(*peer.ip());
            let msg = format!(
                "[AP DHCP] Assigned {} has {}",
                ap::station_mac(*peer.ip()),
                peer.ip()
            );
            self.emit_event(EventClass::Dhcp, msg);
        }
        let s = &mut self.sockets[i];
        let srv = s.server.as_mut().expect("server_socket");
        srv.waiting.push_back(Waiting {
            conn,
            peer,
            rx: Default::default(),
            closed: false,
        });
        if s.state == State::Idle {
            self.promote(i);
        }
    }

    /// A datagram reached a UDP server: announce a sender not seen before.
    fn udp_server_sender(&mut self, i: usize, from: SocketAddrV4) {
        let s = &mut self.sockets[i];
        let port = s.local_port;
        let Some(srv) = s.server.as_mut().filter(|srv| srv.udp) else {
            return;
        };
        if srv.seen.contains(&from) {
            return;
        }
        if srv.seen.len() >= 16 {
            srv.seen.remove(0);
        }
        srv.seen.push(from);
        self.emit_event(
            EventClass::Server,
            format!("[UDP SVR] Accepted {}:{}", from.ip(), port),
        );
    }

    // ---- certificate sets ---------------------------------------------------------------------

    /// Sets 0-2 always; set 3 only on the re-writable (C6) profile.
    fn set_usable(&self, set: usize) -> bool {
        set < 3 || (set == 3 && self.cfg.tls.rewritable_set3)
    }

    fn is_otp(&self, set: usize) -> bool {
        set < 3
    }

    /// `PE`: `1` = available, `0` = used. Without a set: one field per set (available = nothing
    /// programmed); with a set: CA, certificate, key.
    fn cert_availability(&self, set: Option<u8>) -> Option<String> {
        let bit = |free: bool| if free { "1" } else { "0" };
        match set {
            None => {
                let n = if self.cfg.tls.rewritable_set3 { 4 } else { 3 };
                let f: Vec<&str> = (0..n)
                    .map(|s| bit(!self.is_otp(s) || self.certs.is_blank(s)))
                    .collect();
                Some(f.join(","))
            }
            Some(s) if self.set_usable(s as usize) => {
                let s = s as usize;
                let f: Vec<&str> = Item::ALL
                    .iter()
                    .map(|&i| bit(!self.is_otp(s) || self.certs.get(s, i).is_none()))
                    .collect();
                Some(f.join(","))
            }
            Some(_) => None,
        }
    }

    /// The `PG` payload arrived.
    fn program(&mut self, set: usize, item: Item, data: Vec<u8>) {
        if self.is_otp(set) {
            if let Some(old) = self.certs.get(set, item) {
                if old == data.as_slice() {
                    log::info!(
                        "set {set}: {} rewritten with identical bytes: Match",
                        item.label()
                    );
                    return self.reply(Reply::payload("[CERTS   ] Match"));
                }
                log::warn!(
                    "set {set}: {} is one-time programmable and already holds different bytes ({} vs {} bytes)",
                    item.label(),
                    old.len(),
                    data.len()
                );
                let payload = b"[CERTS   ] Selected item unavailable (used)".to_vec();
                return self.reply(self.error("PG", Reason::UnknownError, payload));
            }
        }
        if let Err(why) = pem_check(item, &data) {
            if self.cfg.tls.refuse_non_pem {
                log::error!("set {set}: {} refused: {why}", item.label());
                return self.reply(self.error("PG", Reason::BadArgument, Vec::new()));
            }
            log::warn!(
                "set {set}: {} is not usable PEM ({why}); storing it anyway as the module would — this one-time slot is now used",
                item.label()
            );
        }
        let req = self.next_id();
        self.store_ops.push_back(StoreOp::Item {
            req,
            set,
            item,
            data: data.clone(),
        });
        self.pending = Some(Pending::Store {
            req,
            what: Durable::Item { set, item, data },
        });
    }

    // ---- R0 / S3 ------------------------------------------------------------------------------

    /// The reply to `R0` now, or None when the read must wait.
    fn read_now(&mut self, i: usize) -> Option<Reply> {
        let s = &mut self.sockets[i];
        if let Some((data, from)) = s.rx.take(s.read_size as usize) {
            if let (Some(from), Some(_)) = (from, &s.server) {
                // A UDP server answers (S3) and reports (P?) the sender of the last datagram read.
                s.remote_ip = *from.ip();
                s.remote_port = from.port();
            }
            return Some(Reply::Ok(data));
        }
        if s.state == State::Closed && s.server.as_ref().is_some_and(|srv| !srv.udp) {
            // The current client is done and drained: -1 now, then the server moves on.
            s.state = State::Idle;
            if s.server.as_ref().is_some_and(|srv| srv.accept_loop) {
                self.promote(i);
            }
            return Some(Reply::Closed);
        }
        let s = &mut self.sockets[i];
        match s.state {
            State::Connected { .. } | State::Connecting { .. } => None,
            // A serving socket between clients waits for one.
            State::Idle if s.server.is_some() => None,
            // A UDP socket that is not open has nothing to say; a stream that ended says -1.
            State::Idle if s.protocol.is_datagram() => Some(Reply::ok()),
            State::Idle | State::Closed => Some(Reply::Closed),
        }
    }

    fn read(&mut self, i: usize, now: Instant) {
        match self.read_now(i) {
            Some(r) => self.reply(r),
            None if self.sockets[i].read_timeout_ms == 0 => self.reply(Reply::ok()),
            None => {
                let wait = Duration::from_millis(self.sockets[i].read_timeout_ms as u64);
                self.pending = Some(Pending::Read {
                    socket: i,
                    deadline: now + wait,
                });
            }
        }
    }

    /// Data or an end arrived for socket `i`: answer a waiting `R0`.
    fn complete_read(&mut self, i: usize) {
        if matches!(self.pending, Some(Pending::Read { socket, .. }) if socket == i) {
            if let Some(r) = self.read_now(i) {
                self.finish(r);
            }
        }
    }

    fn send_payload(&mut self, i: usize, data: Vec<u8>, now: Instant) {
        let s = &self.sockets[i];
        let State::Connected { conn, .. } = s.state else {
            log::warn!(
                "socket {i}: S3 of {} bytes on a socket that is not connected",
                data.len()
            );
            return self.reply(Reply::Closed);
        };
        let to = s
            .protocol
            .is_datagram()
            .then(|| SocketAddrV4::new(s.remote_ip, s.remote_port));
        let deadline =
            (s.send_timeout_ms > 0).then(|| now + Duration::from_millis(s.send_timeout_ms as u64));
        let len = data.len();
        self.ops.push_back(NetOp::Send { conn, data, to });
        self.pending = Some(Pending::Send {
            socket: i,
            conn,
            len,
            deadline,
        });
    }
}

/// `T0`'s payload: `<ip>,<ms>` per answered echo, `Timeout` per lost one.
fn ping_reply(target: Ipv4Addr, rtts: &[Option<Duration>]) -> Reply {
    let lines: Vec<String> = rtts
        .iter()
        .map(|r| match r {
            Some(d) => format!("{target},{}", d.as_millis()),
            None => "Timeout".to_string(),
        })
        .collect();
    Reply::payload(lines.join("\r\n"))
}

/// Whether `data` holds PEM of the kind the item needs (trailing NUL and CRLF line ends are fine).
pub fn pem_check(item: Item, data: &[u8]) -> Result<(), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    match item {
        Item::Ca | Item::Cert => {
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(data).collect();
            match certs {
                Ok(c) if !c.is_empty() => Ok(()),
                Ok(_) => Err("no CERTIFICATE section found".into()),
                Err(e) => Err(format!("bad PEM: {e}")),
            }
        }
        Item::Key => PrivateKeyDer::from_pem_slice(data)
            .map(|_| ())
            .map_err(|e| format!("no private key: {e}")),
    }
}

#[cfg(test)]
mod tests;
