//! IWIN command parser (layer: wire). One command line (without CR) → a typed `Command`, or the
//! typed reason the module rejects it with. Pure; nom parses the argument primitives.
//!
//! Syntax (spec §2.2): a two-character uppercase mnemonic (or `?`, `$$$`, `---`), optionally `=` and
//! arguments. String settings (SSID, passphrase, host name, product name) take the whole remainder,
//! commas and spaces included; numbers may carry leading zeros.
//!
//! Commands are grouped by the part of the module that owns them (`Command::System`,
//! `Command::Station`, …), so the module's dispatcher is one short match.

use crate::item::Item;
use crate::iwin::reply::{MessageType, Reason};
use nom::bytes::complete::tag;
use nom::character::complete::{digit1, hex_digit1};
use nom::combinator::{all_consuming, map_res};
use nom::multi::separated_list1;
use nom::{IResult, Parser};
use std::net::Ipv4Addr;

/// Largest `S3`/`R1`/`S1` payload (TCP MSS).
pub(crate) const MAX_PAYLOAD: usize = 1460;

/// Largest item `PG` accepts (certificate chains and 4096-bit keys fit).
pub(crate) const MAX_CERT_ITEM: usize = 16 * 1024;

macro_rules! mnemonics {
    ($($(#[$doc:meta])* $name:ident = $text:literal, $usage:literal, $help:literal;)*) => {
        /// A known command mnemonic, with the usage text the firmware prints after
        /// `Usage: <mnemonic> ` in MT=0 errors (help-table style; commands without arguments have an
        /// empty usage, GH13: `Usage: C0 `) and the line `?` prints for it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub(crate) enum Mnemonic {
            $($(#[$doc])* $name,)*
        }

        impl Mnemonic {
            pub(crate) const ALL: &'static [Mnemonic] = &[$(Mnemonic::$name,)*];

            /// The mnemonic as the host writes it.
            pub(crate) fn text(self) -> &'static str {
                match self {
                    $(Mnemonic::$name => $text,)*
                }
            }

            /// The usage text of MT=0 error replies.
            pub(crate) fn usage(self) -> &'static str {
                match self {
                    $(Mnemonic::$name => $usage,)*
                }
            }

            /// What the command does, as the `?` help table says it.
            pub(crate) fn help(self) -> &'static str {
                match self {
                    $(Mnemonic::$name => $help,)*
                }
            }
        }
    };
}

mnemonics! {
    /// `?` — the help table (not in the SPI firmware).
    Help = "?", "", "Show this help";
    /// `$$$` — enter human-readable command mode.
    CmdModeOn = "$$$", "", "Enter command mode";
    /// `---` — leave human-readable command mode.
    CmdModeOff = "---", "", "Exit command mode";
    /// `I?` — identity line.
    IQ = "I?", "", "Show application information";
    /// `IC` — cloud endpoint (CloudBourne).
    IC = "IC", "<endpoint>", "Cloud endpoint configuration";
    /// `MT` — message type.
    MT = "MT", "<0=Normal/1=Simple>", "Message type";
    /// `MS` — asynchronous message suppression.
    MS = "MS", "<0-3>", "Suppress asynchronous messages";
    /// `MR` — read one queued asynchronous message.
    MR = "MR", "", "Read an asynchronous message";
    MF = "MF", "", "Manufacturing flash test";
    MJ = "MJ", "", "Manufacturing join test";
    MA = "MA", "", "Manufacturing md5";
    MD = "MD", "", "Memory statistics";
    H0 = "H0", "", "Comment";
    HR = "HR", "", "Radio firmware";
    HT = "HT", "", "Time";
    HD = "HD", "", "Debug";
    DB = "DB", "", "Debug flags";
    /// `GT` — UTC seconds, or milliseconds since power-up without network time.
    GT = "GT", "", "Get time";
    Z4 = "Z4", "<XX:XX:XX:XX:XX:XX>", "Set MAC address";
    Z5 = "Z5", "", "Get MAC address";
    ZQ = "Z?", "", "Show system configuration";
    ZN = "ZN", "<product name>", "Set product name";
    /// `ZP` — power management.
    ZP = "ZP", "<0=Normal/1=PS/2=Beacon/3=Radio/4=Radio reset/5=Stop/6=Sleep>[,<value>]", "Power management";
    ZR = "ZR", "", "Reset module";
    Z0 = "Z0", "", "Factory defaults";
    Z1 = "Z1", "", "Save settings";
    Z6 = "Z6", "<xxx.xxx.xxx.xxx>", "Set access point IP address";
    AS = "AS", "<0=SSID/1=SSID+MAC>,<SSID>", "Set access point SSID";
    A1 = "A1", "<0=Open/2=WPA/3=WPA2/4=WPA+WPA2>", "Set access point security";
    A2 = "A2", "<key>", "Set access point key";
    AC = "AC", "<0=Auto/channel>", "Set access point channel";
    AL = "AL", "<0-255>", "Set DHCP lease time";
    AT = "AT", "<1-4>", "Set maximum clients";
    A0 = "A0", "", "Activate access point";
    AD = "AD", "", "Activate access point, direct connect";
    AE = "AE", "", "Exit access point mode";
    /// `AR` — the stations of the soft AP and their RSSI.
    AR = "AR", "", "Show access point clients' RSSI";
    AQ = "A?", "", "Show access point settings";
    T1 = "T1", "<xxx.xxx.xxx.xxx>", "Set ping target";
    T2 = "T2", "<0-65535>", "Set ping repeat count";
    T3 = "T3", "<0-5000>", "Set ping delay";
    T0 = "T0", "", "Ping";
    TQ = "T?", "", "Show ping settings";
    UQ = "U?", "", "Show UART settings";
    U2 = "U2", "<1200 - 2073600>", "Set UART baud rate";
    U0 = "U0", "", "Activate UART settings";
    BQ = "B?", "", "Show bus settings";
    PR = "PR", "<0-4>", "Raw Ethernet bypass";
    C1 = "C1", "<SSID>", "Set network SSID";
    C2 = "C2", "<passphrase>", "Set network passphrase";
    C3 = "C3", "<0=Open/1=WEP/2=WPA/3=WPA2 AES/4=WPA2 Mixed/5=WPA2 TKIP>", "Set network security";
    C4 = "C4", "<0=Off/1=On>", "Set DHCP";
    C5 = "C5", "<0=IPv4/1=IPv6>", "Set IP version";
    C6 = "C6", "<xxx.xxx.xxx.xxx>", "Set IP address";
    C7 = "C7", "<xxx.xxx.xxx.xxx>", "Set IP mask";
    C8 = "C8", "<xxx.xxx.xxx.xxx>", "Set gateway";
    C9 = "C9", "<xxx.xxx.xxx.xxx>", "Set primary DNS";
    CA = "CA", "<xxx.xxx.xxx.xxx>", "Set secondary DNS";
    CB = "CB", "<0-10>", "Set join retry count";
    CC = "CC", "<0=Off/1=Auto Join/2=Auto Reconnect/3=Both>", "Set auto connect";
    CD = "CD", "", "Disconnect from network";
    /// `CE` — WEP authentication (the `C?` AuthType field).
    CE = "CE", "<0=Open/1=Shared>", "Set WEP authentication";
    CF = "CF", "", "Packet filter";
    CJ = "CJ", "<0=Leave/1=Join>,<xxx.xxx.xxx.xxx>", "IGMP join/leave";
    CM = "CM", "", "Multicast MAC list";
    CL = "CL", "", "Loop delay";
    CN = "CN", "<country code>[/<rev>]", "Set country code";
    CR = "CR", "", "Get RSSI of associated network";
    CS = "CS", "", "Get connection status";
    CT = "CT", "", "WPS button GPIO";
    CV = "CV", "", "Get link rate";
    CW = "CW", "<0=PIN/1=Push button>", "WPS";
    CX = "CX", "", "WiFi Direct";
    /// `CY` — key privacy: `C?` no longer shows the passphrase.
    CY = "CY", "<0=Off/1=On>", "Key privacy";
    CZ = "CZ", "", "Fast connect";
    C0 = "C0", "", "Join a network";
    CQ = "C?", "", "Show network settings";
    F0 = "F0", "", "Scan for network access points";
    D0 = "D0", "<host name>", "DNS lookup";
    G2 = "G2", "<pin>,<type>", "Read GPIO";
    G3 = "G3", "<pin>,<type>,<0/1>", "Write GPIO";
    G4 = "G4", "<pin>,<1=LED/2=Button/3=DIN/4=DOUT/5=ADC>", "Set up GPIO";
    G5 = "G5", "", "PWM";
    GQ = "G?", "", "Show GPIO settings";
    WL = "WL", "<link>,<activity>,<polarity>", "Link LEDs";
    SF = "SF", "<0-5>", "Serial flash chip select";
    PL = "PL", "<gpio>", "Data received GPIO";
    P0 = "P0", "<0-3>", "Set communication socket";
    P1 = "P1", "<0=TCP/1=UDP/2=UDP-Lite/3=TCP-SSL/4=MQTT>", "Set transport protocol";
    P2 = "P2", "<0-65535>", "Set local port";
    P3 = "P3", "<xxx.xxx.xxx.xxx>", "Set host IP address";
    P4 = "P4", "<0-65535>", "Set remote port";
    P5 = "P5", "<0=Stop/1=Start/10=Next client/11=Start multi-accept>", "Server";
    P6 = "P6", "<0=Stop/1=Start>", "Client";
    P7 = "P7", "<0=Stop/1=Start/2=Close client/3=Next client>", "Server accept loop";
    P8 = "P8", "<0-16>", "Set listen backlog";
    P9 = "P9", "<0=None/1=Optional/2=Required>", "Set TLS verification";
    PA = "PA", "<0=Off/1=On>,<CA name>", "Set custom CA name";
    PB = "PB", "<0=Abort/1=Report only>", "Set CA verification failure mode";
    PE = "PE", "[<set>]", "Show certificate availability";
    PF = "PF", "<0=TLS/1=AWS>,<set>", "Select certificate set";
    PG = "PG", "<set>,<0=Root CA/1=Certificate/2=Key>,<length>", "Program certificate";
    PK = "PK", "<0=Off/1=On>,<250-7200000>", "Set TCP keep-alive";
    PQ = "P?", "", "Show transport settings";
    R0 = "R0", "", "Read transport data";
    R1 = "R1", "<1-1460>", "Set read packet size";
    R2 = "R2", "<0-30000>", "Set read timeout";
    R3 = "R3", "<0/1>", "Set read mode";
    /// `R4` — `R0` with the payload prefixed by its 4-digit length.
    R4 = "R4", "", "Read transport data with length";
    RQ = "R?", "", "Show read settings";
    /// `S0` — legacy send: `S1` bytes, or what came within `S2` ms.
    S0 = "S0", "", "Write transport data (legacy)";
    S1 = "S1", "<1-1460>", "Set write packet size";
    S2 = "S2", "<0-30000>", "Set write timeout";
    S3 = "S3", "<1-1460>", "Write transport data";
    SQ = "S?", "", "Show write settings";
}

impl Mnemonic {
    /// The mnemonic a command line starts with, if it is a known one.
    pub(crate) fn from_bytes(b: &[u8]) -> Option<Mnemonic> {
        // A binary search: comparing with every mnemonic in turn showed in the profiles.
        static SORTED: std::sync::OnceLock<Vec<(&'static [u8], Mnemonic)>> =
            std::sync::OnceLock::new();
        let sorted = SORTED.get_or_init(|| {
            let mut v: Vec<_> = Mnemonic::ALL
                .iter()
                .map(|&m| (m.text().as_bytes(), m))
                .collect();
            v.sort_unstable_by_key(|&(t, _)| t);
            v
        });
        let i = sorted.binary_search_by_key(&b, |&(t, _)| t).ok()?;
        Some(sorted[i].1)
    }
}

/// A parsed command, grouped by the part of the module that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Empty line: the module answers with a prompt.
    Empty,
    System(SystemCmd),
    Station(StationCmd),
    Ap(ApCmd),
    Ping(PingCmd),
    Socket(SocketCmd),
    Server(ServerCmd),
    Cert(CertCmd),
}

/// Identity, modes, UART, saved settings, reset, asynchronous messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SystemCmd {
    /// `$$$` enter / `---` exit human-readable command mode.
    CmdMode(bool),
    /// `I?`
    Info,
    /// `MT=<0/1>`
    SetMessageType(MessageType),
    /// `MS=<0..3>`
    SetMessageSuppress(u8),
    /// `MR`
    ReadMessage,
    /// `Z4=<mac>`
    SetMac([u8; 6]),
    /// `Z5`
    GetMac,
    /// `Z?`
    SystemQuery,
    /// `ZN=<name>`
    SetProductName(Vec<u8>),
    /// `ZR` — soft reset.
    Reset,
    /// `Z0` — factory defaults (not saved until `Z1`).
    FactoryReset,
    /// `Z1` — save the current settings.
    SaveSettings,
    /// `U?`
    UartQuery,
    /// `U2=<baud>` — stage a baud rate.
    SetBaud(u32),
    /// `U0` — activate staged UART settings.
    UartApply,
    /// `B?`
    BusQuery,
    /// `PR=<0..4>` — raw-Ethernet bypass mode (Zephyr sends `PR=0`).
    SetRawBypass(u8),
    /// `?` — the help table.
    Help,
    /// `IC=<endpoint>` sets, `IC` reports whether one is set.
    CloudEndpoint(Option<Vec<u8>>),
    /// `MF`, `MJ`, `MA`, `MD`, `H0`, `HR`, `HT`, `HD`, `DB` — manufacturing and diagnostic commands
    /// no driver uses; accepted whatever their arguments.
    Diagnostic(Mnemonic),
    /// `GT`
    Time,
    /// `ZP=<feature>[,<value>]`
    Power(PowerCmd),
    /// `G*`, `WL`, `SF`, `PL`
    Gpio(GpioCmd),
}

/// `ZP` — power management (spec §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PowerCmd {
    /// `ZP=0` (Mongoose sends it before `AD`).
    Normal,
    /// `ZP=1,<0/1>` — power save off/on.
    PowerSave(bool),
    /// `ZP=2,<interval>` — beacon (listen) interval.
    Beacon(u32),
    /// `ZP=3,<0/1>` — radio off/on.
    Radio(bool),
    /// `ZP=4`
    RadioReset,
    /// `ZP=5`
    Stop,
    /// `ZP=6,<ms>` — sleep.
    Sleep(u32),
}

/// GPIO and LED settings (spec §3.8), kept as stored values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GpioCmd {
    /// `G2=<pin>,<type>`
    Read { pin: u8, kind: u8 },
    /// `G3=<pin>,<type>,<0/1>`
    Write { pin: u8, kind: u8, value: bool },
    /// `G4=<pin>,<type>`
    Setup { pin: u8, kind: u8 },
    /// `G5=…` (PWM, C6)
    Pwm,
    /// `G?`
    Query,
    /// `WL=<link>,<act>,<pol>`; `WL=?` reports, `WL=#` restores the default.
    LinkLeds(LedArg),
    /// `SF=<0..5>`
    SerialFlash(u8),
    /// `PL=<gpio>`
    DataPin(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LedArg {
    Set([u8; 3]),
    Show,
    Default,
}

/// Station settings, join, scan, DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StationCmd {
    /// `C1=<ssid>`
    SetSsid(Vec<u8>),
    /// `C2=<passphrase>` (a secret: never logged)
    SetPassphrase(Vec<u8>),
    /// `C3=<0..5>`
    SetSecurity(u8),
    /// `C4=<0/1>`
    SetDhcp(bool),
    /// `C5=<0/1>`
    SetIpVersion(u8),
    /// `C6`..`CA` — static IP, mask, gateway, DNS1, DNS2.
    SetAddress(AddrField, Ipv4Addr),
    /// `CB=<0..10>`
    SetJoinRetries(u8),
    /// `CC=<0..3>`
    SetAutoConnect(u8),
    /// `CD`
    Disconnect,
    /// `CE=<0/1>` — WEP authentication, the `C?` AuthType.
    SetWepAuth(u8),
    /// `CY=<0/1>` — key privacy.
    SetKeyPrivacy(bool),
    /// `CV`
    LinkRate,
    /// `CW=<0/1>` — WPS.
    Wps(u8),
    /// `CF`, `CJ`, `CM`, `CL`, `CX`, `CZ`, `CT` — accepted, nothing to emulate.
    Stub(Mnemonic),
    /// `CN` — country code; None queries.
    Country(Option<Vec<u8>>),
    /// `CR`
    Rssi,
    /// `CS`
    Status,
    /// `C0`
    Join,
    /// `C?`
    Query,
    /// `F0` — the whole list in one reply; `F0=2` (C3.5.2.5+) — one access point per reply, the
    /// next with `MR`.
    Scan { one_by_one: bool },
    /// `D0=<name>`
    Lookup(Vec<u8>),
}

/// Soft-AP settings and control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApCmd {
    /// `Z6=<ip>`
    SetIp(Ipv4Addr),
    /// `AS=<0/1>,<ssid>` (1: append the MAC)
    SetSsid(bool, Vec<u8>),
    /// `A1=<0/2/3/4>`
    SetSecurity(u8),
    /// `A2=<key>` (a secret: never logged)
    SetKey(Vec<u8>),
    /// `AC=<channel>`
    SetChannel(u8),
    /// `AL=<0..255>`
    SetLease(u8),
    /// `AT=<1..4>`
    SetMaxClients(u8),
    /// `A0` (false) or `AD` (true, direct connect)
    Start { direct: bool },
    /// `AE`
    Stop,
    /// `AR`
    ClientRssi,
    /// `A?`
    Query,
}

/// `T*` — ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PingCmd {
    SetTarget(Ipv4Addr),
    SetRepeats(u16),
    SetDelay(u16),
    Ping,
    Query,
}

/// Per-socket settings, the client connection, reads and sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SocketCmd {
    /// `P0=<0..3>` selects a socket; `P0` alone reports the current one.
    Select(Option<u8>),
    /// `P1=<0..4>`
    SetProtocol(Protocol),
    /// `P2=<port>`
    SetLocalPort(u16),
    /// `P3=<ip>`
    SetRemoteIp(Ipv4Addr),
    /// `P4=<port>`
    SetRemotePort(u16),
    /// `P6=<0/1>` — stop/start the client connection.
    Client(bool),
    /// `P8=<0..16>` — listen backlog.
    SetBacklog(u8),
    /// `P9=<0..2>` — TLS verification level.
    SetTlsVerify(TlsVerify),
    /// `PB=<0/1>` — on CA verification failure: 0 abort, 1 report only.
    SetVerifyReportOnly(bool),
    /// `PK=<0/1>,<ms>`
    SetKeepAlive(bool, u32),
    /// `P?`
    Query,
    /// `R0`; `R4` (`counted`) prefixes the data with its length.
    Read { counted: bool },
    /// `R1=<1..1460>`
    SetReadSize(u16),
    /// `R2=<0..30000>`
    SetReadTimeout(u32),
    /// `R3=<0/1>`
    SetReadMode(u8),
    /// `R?`
    ReadQuery,
    /// `S1=<1..1460>`
    SetSendSize(u16),
    /// `S2=<0..30000>`
    SetSendTimeout(u32),
    /// `S3=<n>` — n raw bytes follow the CR.
    Send(usize),
    /// `S0` — `S1` raw bytes follow the CR (or fewer, sent when `S2` runs out).
    LegacySend,
    /// `S?`
    SendQuery,
}

/// Module-side servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerCmd {
    /// `P5=<0/1/10/11>`
    Server(ServerMode),
    /// `P7=<0..3>` — the legacy accept loop.
    AcceptLoop(AcceptLoop),
}

/// A numeric argument that names one of a few choices; any other number is `Bad Argument`.
pub(crate) trait Code: Sized + Copy + 'static {
    /// Every choice with its number on the wire.
    const CODES: &'static [(u32, Self)];

    fn from_code(c: u32) -> Option<Self> {
        Self::CODES.iter().find(|&&(k, _)| k == c).map(|&(_, v)| v)
    }
}

/// `P1`: the transport protocol of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Tcp = 0,
    Udp = 1,
    UdpLite = 2,
    Tls = 3,
    Mqtt = 4,
}

impl Code for Protocol {
    const CODES: &'static [(u32, Protocol)] = &[
        (0, Protocol::Tcp),
        (1, Protocol::Udp),
        (2, Protocol::UdpLite),
        (3, Protocol::Tls),
        (4, Protocol::Mqtt),
    ];
}

impl Protocol {
    /// The number `P?` reports.
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    pub(crate) fn is_datagram(self) -> bool {
        matches!(self, Protocol::Udp | Protocol::UdpLite)
    }
}

/// `P9`: how a TLS socket verifies its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsVerify {
    /// `P9=0`: nothing is verified.
    None = 0,
    /// `P9=1`: the peer's certificate is checked against the set's root CA if one is programmed;
    /// a server verifies a client certificate if one is presented.
    Optional = 1,
    /// `P9=2`: root CA and client certificate and key (a server requires a client certificate).
    Required = 2,
}

impl Code for TlsVerify {
    const CODES: &'static [(u32, TlsVerify)] = &[
        (0, TlsVerify::None),
        (1, TlsVerify::Optional),
        (2, TlsVerify::Required),
    ];
}

impl TlsVerify {
    /// The number the host wrote (`P9=<n>` in logs).
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

/// `P5`: what to do with a socket's server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerMode {
    /// `P5=0`
    Stop,
    /// `P5=1`
    Start,
    /// `P5=10`: close the current client and make the next one current.
    NextClient,
    /// `P5=11`: start with the accept loop (multi-accept).
    StartMulti,
}

impl Code for ServerMode {
    const CODES: &'static [(u32, ServerMode)] = &[
        (0, ServerMode::Stop),
        (1, ServerMode::Start),
        (10, ServerMode::NextClient),
        (11, ServerMode::StartMulti),
    ];
}

/// `P7`: the legacy accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcceptLoop {
    /// `P7=0`
    Off,
    /// `P7=1`
    On,
    /// `P7=2`: close the current client.
    CloseClient,
    /// `P7=3`: close the current client and make the next one current.
    NextClient,
}

impl Code for AcceptLoop {
    const CODES: &'static [(u32, AcceptLoop)] = &[
        (0, AcceptLoop::Off),
        (1, AcceptLoop::On),
        (2, AcceptLoop::CloseClient),
        (3, AcceptLoop::NextClient),
    ];
}

impl Code for MessageType {
    const CODES: &'static [(u32, MessageType)] =
        &[(0, MessageType::Normal), (1, MessageType::Simple)];
}

impl Code for Item {
    const CODES: &'static [(u32, Item)] = &[(0, Item::Ca), (1, Item::Cert), (2, Item::Key)];
}

/// Certificate sets and TLS selections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CertCmd {
    /// `PA=<0/1>,<name>` — custom CA name (used as the TLS server name when enabled).
    SetCaName(bool, Vec<u8>),
    /// `PE` — availability of every set; `PE=<set>` — of each item of one set.
    Availability(Option<u8>),
    /// `PF=<func>,<set>` (or `PF=<set>`) selects the active set; `PF` alone reports it.
    Select(Option<(u8, u8)>),
    /// `PG=<set>,<type>,<len>` — program one item: `len` raw bytes follow the CR.
    Program { set: u8, item: Item, len: usize },
}

/// Which address `C6`..`CA` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddrField {
    Ip,
    Mask,
    Gateway,
    Dns1,
    Dns2,
}

/// Why a line was rejected; `mnemonic` is the known command it named (for the `Usage:` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub(crate) mnemonic: Option<Mnemonic>,
    pub(crate) reason: Reason,
}

impl ParseError {
    pub(crate) fn unknown() -> ParseError {
        ParseError {
            mnemonic: None,
            reason: Reason::UnknownCommand,
        }
    }
}

type ArgResult<T> = Result<T, Reason>;

/// Split a line into its mnemonic and arguments (`None`: no `=`), or `Err` when it names no known
/// command.
pub(crate) fn split(line: &[u8]) -> Result<(Mnemonic, Option<&[u8]>), ParseError> {
    let (mn, args): (&[u8], Option<&[u8]>) = match line {
        b"$$$" | b"---" | b"?" => (line, None),
        _ if line.len() >= 2 => match &line[2..] {
            [] => (&line[..2], None),
            [b'=', rest @ ..] => (&line[..2], Some(rest)),
            _ => return Err(ParseError::unknown()),
        },
        _ => return Err(ParseError::unknown()),
    };
    Mnemonic::from_bytes(mn)
        .map(|m| (m, args))
        .ok_or_else(ParseError::unknown)
}

/// Parse one command line.
pub(crate) fn parse(line: &[u8]) -> Result<Command, ParseError> {
    if line.is_empty() {
        return Ok(Command::Empty);
    }
    let (m, args) = split(line)?;
    parse_args(m, args).map_err(|reason| ParseError {
        mnemonic: Some(m),
        reason,
    })
}

/// Which part of a host's command line is secret: the one rule behind the log, the transcript and
/// the notes of faults that hit the line (`serial.noise`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrecy {
    /// Nothing: the line may be shown.
    Public,
    /// The argument of a passphrase command (`C2=`, `A2=`): the bytes from `from` on.
    Argument { mnemonic: &'static str, from: usize },
    /// The whole line, which is not a command: stray key material (a PEM line after a refused `PG`
    /// header), a passphrase command mistyped (`C2 secret`, `c2=secret`)…
    NotACommand,
}

/// How secret `line` (a command line without its CR) is.
pub fn secrecy(line: &[u8]) -> Secrecy {
    match split(line) {
        Ok((m @ (Mnemonic::C2 | Mnemonic::A2), Some(_))) => Secrecy::Argument {
            mnemonic: m.text(),
            from: 3,
        },
        Ok(_) => Secrecy::Public,
        Err(_) if line.is_empty() => Secrecy::Public,
        Err(_) => Secrecy::NotACommand,
    }
}

/// Whether a line that is not a command may show its first two bytes in the log: not when it holds
/// `=` (`c2=passphrase` mistyped), starts like a passphrase command (`C2 secret`), or is base64
/// longer than a mnemonic (a PEM key's body).
fn shows_a_prefix(line: &[u8]) -> bool {
    let passphrase =
        line.len() >= 2 && matches!(&line[..2].to_ascii_uppercase()[..], b"C2" | b"A2");
    let base64 = line
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/');
    !line.contains(&b'=') && !passphrase && (line.len() <= 2 || !base64)
}

/// The raw payload `line` announces, if its header is valid: its length, and whether it is secret
/// (`PG`: certificates and keys; `S3`: the host's data, shown in a transcript).
pub fn announced_payload(line: &[u8]) -> Option<(usize, bool)> {
    match parse(line) {
        Ok(Command::Cert(CertCmd::Program { len, .. })) => Some((len, true)),
        Ok(Command::Socket(SocketCmd::Send(len))) => Some((len, false)),
        _ => None,
    }
}

/// The line as it may appear in a log: known mnemonics with their arguments, except the secrets
/// ([`secrecy`]) which are masked or shown only as their length; a command with bytes that are
/// not ASCII too. A line that is not a command shows its first two bytes (a mnemonic's size: a
/// mistyped `cs` shows as `cs`) when it cannot be a secret ([`shows_a_prefix`]).
pub(crate) fn log_text(line: &[u8]) -> String {
    match secrecy(line) {
        Secrecy::Argument { mnemonic, from } => {
            format!("{mnemonic}=<{} bytes hidden>", line.len() - from)
        }
        Secrecy::Public if line.is_ascii() => line.escape_ascii().to_string(),
        Secrecy::NotACommand if shows_a_prefix(line) && line.len() <= 2 => {
            line.escape_ascii().to_string()
        }
        Secrecy::NotACommand if shows_a_prefix(line) => format!(
            "{}… <unrecognised line of {} bytes>",
            line[..2].escape_ascii(),
            line.len()
        ),
        _ => format!("<unrecognised line of {} bytes>", line.len()),
    }
}

/// The line as a transcript shows it: what the host sent, escaped, except the secrets
/// ([`secrecy`]), replaced by their length (and what they look like).
pub(crate) fn trace_text(line: &[u8]) -> String {
    let b64 = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    let key_like = line.starts_with(b"-----") || (line.len() >= 16 && line.iter().all(b64));
    match secrecy(line) {
        Secrecy::Argument { mnemonic, from } => {
            format!("{mnemonic}=<{} bytes hidden>", line.len() - from)
        }
        Secrecy::NotACommand if key_like => {
            format!("<{} bytes hidden: looks like key material>", line.len())
        }
        Secrecy::NotACommand => format!("<{} bytes hidden: not a command>", line.len()),
        Secrecy::Public => line.escape_ascii().to_string(),
    }
}

fn parse_args(m: Mnemonic, args: Option<&[u8]>) -> ArgResult<Command> {
    use Command as C;
    use Mnemonic as M;
    // Commands without arguments: an empty `=` is tolerated, anything else is too much.
    let none = |cmd: Command| match args {
        None | Some([]) => Ok(cmd),
        Some(_) => Err(Reason::TooManyArguments),
    };
    let arg = || args.ok_or(Reason::InsufficientArguments);
    let num = |lo: u32, hi: u32| arg().and_then(|a| ranged(a, lo, hi));
    let flag = || num(0, 1).map(|v| v == 1);
    let ip = || arg().and_then(ipv4);
    let text = |max: usize| arg().and_then(|a| string(a, max));
    let sys = C::System;
    let st = C::Station;
    let ap = C::Ap;
    let sock = C::Socket;
    Ok(match m {
        M::CmdModeOn => sys(SystemCmd::CmdMode(true)),
        M::CmdModeOff => sys(SystemCmd::CmdMode(false)),
        M::IQ => none(sys(SystemCmd::Info))?,
        M::MT => sys(SystemCmd::SetMessageType(arg().and_then(coded)?)),
        M::MS => sys(SystemCmd::SetMessageSuppress(num(0, 3)? as u8)),
        M::MR => none(sys(SystemCmd::ReadMessage))?,
        M::Z4 => sys(SystemCmd::SetMac(arg().and_then(|a| {
            let s = std::str::from_utf8(a).map_err(|_| Reason::BadAddressValue)?;
            parse_mac(s).ok_or(Reason::BadAddressValue)
        })?)),
        M::Z5 => none(sys(SystemCmd::GetMac))?,
        M::ZQ => none(sys(SystemCmd::SystemQuery))?,
        M::ZN => sys(SystemCmd::SetProductName(text(32)?)),
        M::ZR => none(sys(SystemCmd::Reset))?,
        M::Z0 => none(sys(SystemCmd::FactoryReset))?,
        M::Z1 => none(sys(SystemCmd::SaveSettings))?,
        M::UQ => none(sys(SystemCmd::UartQuery))?,
        M::U2 => {
            let baud = num(1200, 2_073_600)?;
            if !BAUD_RATES.contains(&baud) {
                return Err(Reason::BadArgument);
            }
            sys(SystemCmd::SetBaud(baud))
        }
        M::U0 => none(sys(SystemCmd::UartApply))?,
        M::BQ => none(sys(SystemCmd::BusQuery))?,
        M::PR => sys(SystemCmd::SetRawBypass(num(0, 4)? as u8)),
        M::Help => sys(SystemCmd::Help),
        M::IC => match args {
            None => sys(SystemCmd::CloudEndpoint(None)),
            Some(a) => sys(SystemCmd::CloudEndpoint(Some(string(a, 64)?))),
        },
        M::MF | M::MJ | M::MA | M::MD | M::H0 | M::HR | M::HT | M::HD | M::DB => {
            sys(SystemCmd::Diagnostic(m))
        }
        M::GT => none(sys(SystemCmd::Time))?,
        M::ZP => sys(SystemCmd::Power(power(arg()?)?)),
        M::G2 | M::G4 => {
            let f = fields(arg()?, 2)?;
            let (pin, kind) = (ranged(f[0], 0, 255)? as u8, ranged(f[1], 1, 5)? as u8);
            sys(SystemCmd::Gpio(if m == M::G2 {
                GpioCmd::Read { pin, kind }
            } else {
                GpioCmd::Setup { pin, kind }
            }))
        }
        M::G3 => {
            let f = fields(arg()?, 3)?;
            sys(SystemCmd::Gpio(GpioCmd::Write {
                pin: ranged(f[0], 0, 255)? as u8,
                kind: ranged(f[1], 1, 5)? as u8,
                value: ranged(f[2], 0, 1)? == 1,
            }))
        }
        M::G5 => sys(SystemCmd::Gpio(GpioCmd::Pwm)),
        M::GQ => none(sys(SystemCmd::Gpio(GpioCmd::Query)))?,
        M::WL => sys(SystemCmd::Gpio(GpioCmd::LinkLeds(match arg()? {
            b"?" => LedArg::Show,
            b"#" => LedArg::Default,
            a => {
                let f = fields(a, 3)?;
                LedArg::Set([
                    ranged(f[0], 0, 255)? as u8,
                    ranged(f[1], 0, 255)? as u8,
                    ranged(f[2], 0, 1)? as u8,
                ])
            }
        }))),
        M::SF => sys(SystemCmd::Gpio(GpioCmd::SerialFlash(num(0, 5)? as u8))),
        M::PL => sys(SystemCmd::Gpio(GpioCmd::DataPin(num(0, 255)? as u8))),
        M::Z6 => ap(ApCmd::SetIp(ip()?)),
        M::AS => {
            let a = arg()?;
            let Some(i) = a.iter().position(|&b| b == b',') else {
                return Err(Reason::InsufficientArguments);
            };
            // ST sends "AS=0, <ssid>": the bytes after the comma are kept as sent.
            ap(ApCmd::SetSsid(
                ranged(&a[..i], 0, 1)? == 1,
                string(&a[i + 1..], 32)?,
            ))
        }
        M::A1 => {
            let v = num(0, 4)?;
            if v == 1 {
                return Err(Reason::BadArgument);
            }
            ap(ApCmd::SetSecurity(v as u8))
        }
        M::A2 => {
            let key = text(63)?;
            if !key.is_empty() && key.len() < 8 {
                return Err(Reason::BadArgument);
            }
            ap(ApCmd::SetKey(key))
        }
        M::AC => {
            let c = num(0, 165)?;
            if c > 14 && !matches!(c, 36..=64 | 100..=165) {
                return Err(Reason::BadArgument);
            }
            ap(ApCmd::SetChannel(c as u8))
        }
        M::AL => ap(ApCmd::SetLease(num(0, 255)? as u8)),
        M::AT => ap(ApCmd::SetMaxClients(num(1, 4)? as u8)),
        M::A0 => none(ap(ApCmd::Start { direct: false }))?,
        M::AD => none(ap(ApCmd::Start { direct: true }))?,
        M::AE => none(ap(ApCmd::Stop))?,
        M::AR => none(ap(ApCmd::ClientRssi))?,
        M::AQ => none(ap(ApCmd::Query))?,
        M::T1 => C::Ping(PingCmd::SetTarget(ip()?)),
        M::T2 => C::Ping(PingCmd::SetRepeats(num(0, 65535)? as u16)),
        M::T3 => C::Ping(PingCmd::SetDelay(num(0, 5000)? as u16)),
        M::T0 => none(C::Ping(PingCmd::Ping))?,
        M::TQ => none(C::Ping(PingCmd::Query))?,
        M::C1 => st(StationCmd::SetSsid(text(32)?)),
        M::C2 => st(StationCmd::SetPassphrase(text(64)?)),
        M::C3 => st(StationCmd::SetSecurity(num(0, 5)? as u8)),
        M::C4 => st(StationCmd::SetDhcp(flag()?)),
        M::C5 => st(StationCmd::SetIpVersion(num(0, 1)? as u8)),
        M::C6 => st(StationCmd::SetAddress(AddrField::Ip, ip()?)),
        M::C7 => st(StationCmd::SetAddress(AddrField::Mask, ip()?)),
        M::C8 => st(StationCmd::SetAddress(AddrField::Gateway, ip()?)),
        M::C9 => st(StationCmd::SetAddress(AddrField::Dns1, ip()?)),
        M::CA => st(StationCmd::SetAddress(AddrField::Dns2, ip()?)),
        M::CB => st(StationCmd::SetJoinRetries(num(0, 10)? as u8)),
        M::CC => st(StationCmd::SetAutoConnect(num(0, 3)? as u8)),
        M::CD => none(st(StationCmd::Disconnect))?,
        M::CE => st(StationCmd::SetWepAuth(num(0, 1)? as u8)),
        M::CY => st(StationCmd::SetKeyPrivacy(flag()?)),
        M::CV => none(st(StationCmd::LinkRate))?,
        M::CW => st(StationCmd::Wps(num(0, 1)? as u8)),
        M::CF | M::CJ | M::CM | M::CL | M::CX | M::CZ | M::CT => st(StationCmd::Stub(m)),
        M::CN => match args {
            None => st(StationCmd::Country(None)),
            Some(a) => st(StationCmd::Country(Some(country(a)?))),
        },
        M::CR => none(st(StationCmd::Rssi))?,
        M::CS => none(st(StationCmd::Status))?,
        M::C0 => none(st(StationCmd::Join))?,
        M::CQ => none(st(StationCmd::Query))?,
        M::F0 => match args {
            Some(b"2") => st(StationCmd::Scan { one_by_one: true }),
            _ => none(st(StationCmd::Scan { one_by_one: false }))?,
        },
        M::D0 => {
            let name = text(64)?;
            if name.is_empty() {
                return Err(Reason::InsufficientArguments);
            }
            st(StationCmd::Lookup(name))
        }
        M::P0 => match args {
            None => sock(SocketCmd::Select(None)),
            Some(a) => sock(SocketCmd::Select(Some(ranged(a, 0, 3)? as u8))),
        },
        M::P1 => sock(SocketCmd::SetProtocol(arg().and_then(coded)?)),
        M::P2 => sock(SocketCmd::SetLocalPort(num(0, 65535)? as u16)),
        M::P3 => sock(SocketCmd::SetRemoteIp(ip()?)),
        M::P4 => sock(SocketCmd::SetRemotePort(num(0, 65535)? as u16)),
        M::P5 => C::Server(ServerCmd::Server(arg().and_then(coded)?)),
        M::P6 => sock(SocketCmd::Client(flag()?)),
        M::P7 => C::Server(ServerCmd::AcceptLoop(arg().and_then(coded)?)),
        M::P8 => sock(SocketCmd::SetBacklog(num(0, 16)? as u8)),
        M::P9 => sock(SocketCmd::SetTlsVerify(arg().and_then(coded)?)),
        M::PK => {
            let fields = fields(arg()?, 2)?;
            let on = ranged(fields[0], 0, 1)? == 1;
            let ms = ranged(fields[1], 0, 7_200_000)?;
            // Drivers send PK=0,0 to disable; enabling needs a real interval.
            if on && ms < 250 {
                return Err(Reason::BadArgument);
            }
            sock(SocketCmd::SetKeepAlive(on, ms))
        }
        M::PA => {
            let a = arg()?;
            let (on, name) = match a.iter().position(|&b| b == b',') {
                Some(i) => (&a[..i], &a[i + 1..]),
                None => return Err(Reason::InsufficientArguments),
            };
            C::Cert(CertCmd::SetCaName(
                ranged(on, 0, 1)? == 1,
                string(name, 63)?,
            ))
        }
        M::PB => sock(SocketCmd::SetVerifyReportOnly(flag()?)),
        M::PE => match args {
            None | Some([]) => C::Cert(CertCmd::Availability(None)),
            Some(a) => C::Cert(CertCmd::Availability(Some(ranged(a, 0, 3)? as u8))),
        },
        M::PF => match args {
            None => C::Cert(CertCmd::Select(None)),
            Some(a) => {
                let f: Vec<&[u8]> = a.split(|&b| b == b',').collect();
                let sel = match f[..] {
                    [set] => (0, ranged(set, 0, 3)? as u8),
                    [func, set] => (ranged(func, 0, 1)? as u8, ranged(set, 0, 3)? as u8),
                    _ => return Err(Reason::TooManyArguments),
                };
                C::Cert(CertCmd::Select(Some(sel)))
            }
        },
        M::PG => {
            let f = fields(arg()?, 3)?;
            C::Cert(CertCmd::Program {
                set: ranged(f[0], 0, 3)? as u8,
                item: coded(f[1])?,
                len: ranged(f[2], 0, MAX_CERT_ITEM as u32)? as usize,
            })
        }
        M::PQ => none(sock(SocketCmd::Query))?,
        M::R0 => none(sock(SocketCmd::Read { counted: false }))?,
        M::R4 => none(sock(SocketCmd::Read { counted: true }))?,
        M::R1 => sock(SocketCmd::SetReadSize(num(1, MAX_PAYLOAD as u32)? as u16)),
        M::R2 => sock(SocketCmd::SetReadTimeout(num(0, 30_000)?)),
        M::R3 => sock(SocketCmd::SetReadMode(num(0, 1)? as u8)),
        M::RQ => none(sock(SocketCmd::ReadQuery))?,
        M::S1 => sock(SocketCmd::SetSendSize(num(1, MAX_PAYLOAD as u32)? as u16)),
        M::S2 => sock(SocketCmd::SetSendTimeout(num(0, 30_000)?)),
        M::S3 => sock(SocketCmd::Send(num(1, MAX_PAYLOAD as u32)? as usize)),
        M::S0 => none(sock(SocketCmd::LegacySend))?,
        M::SQ => none(sock(SocketCmd::SendQuery))?,
    })
}

/// `ZP=<feature>[,<value>]`: features 1, 2, 3 and 6 take a value, the others none.
fn power(a: &[u8]) -> ArgResult<PowerCmd> {
    let f: Vec<&[u8]> = a.split(|&b| b == b',').collect();
    let feature = ranged(f[0], 0, 6)?;
    let value = |hi: u32| match f[..] {
        [_, v] => ranged(v, 0, hi),
        [_] => Err(Reason::InsufficientArguments),
        _ => Err(Reason::TooManyArguments),
    };
    let plain = |cmd: PowerCmd| match f.len() {
        1 => Ok(cmd),
        _ => Err(Reason::TooManyArguments),
    };
    match feature {
        0 => plain(PowerCmd::Normal),
        1 => Ok(PowerCmd::PowerSave(value(1)? == 1)),
        2 => Ok(PowerCmd::Beacon(value(65_535)?)),
        3 => Ok(PowerCmd::Radio(value(1)? == 1)),
        4 => plain(PowerCmd::RadioReset),
        5 => plain(PowerCmd::Stop),
        _ => Ok(PowerCmd::Sleep(value(3_600_000)?)),
    }
}

/// Baud rates `U2` accepts (spec §2.1).
pub(crate) const BAUD_RATES: &[u32] = &[
    1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1152000, 1382400,
    1612800, 1843200, 2073600,
];

fn decimal(i: &[u8]) -> IResult<&[u8], u64> {
    map_res(digit1, |d: &[u8]| {
        // digit1 guarantees ASCII digits.
        std::str::from_utf8(d).unwrap_or("x").parse::<u64>()
    })
    .parse(i)
}

/// A decimal number (leading zeros allowed) within `lo..=hi`.
fn ranged(a: &[u8], lo: u32, hi: u32) -> ArgResult<u32> {
    if a.is_empty() {
        return Err(Reason::InsufficientArguments);
    }
    let (_, v) = all_consuming(decimal)
        .parse(a)
        .map_err(|_| Reason::BadArgument)?;
    if v < lo as u64 || v > hi as u64 {
        return Err(Reason::BadArgument);
    }
    Ok(v as u32)
}

/// A decimal number that must be one of `T`'s codes.
fn coded<T: Code>(a: &[u8]) -> ArgResult<T> {
    T::from_code(ranged(a, 0, u32::MAX)?).ok_or(Reason::BadArgument)
}

/// Split comma-separated fields; exactly `n` of them.
fn fields(a: &[u8], n: usize) -> ArgResult<Vec<&[u8]>> {
    let f: Vec<&[u8]> = a.split(|&b| b == b',').collect();
    match f.len().cmp(&n) {
        std::cmp::Ordering::Less => Err(Reason::InsufficientArguments),
        std::cmp::Ordering::Greater => Err(Reason::TooManyArguments),
        std::cmp::Ordering::Equal => Ok(f),
    }
}

fn string(a: &[u8], max: usize) -> ArgResult<Vec<u8>> {
    if a.len() > max {
        return Err(Reason::BadArgument);
    }
    Ok(a.to_vec())
}

fn octet(i: &[u8]) -> IResult<&[u8], u8> {
    map_res(decimal, u8::try_from).parse(i)
}

/// A dotted-quad IPv4 address.
pub(crate) fn ipv4(a: &[u8]) -> ArgResult<Ipv4Addr> {
    let (_, o) = all_consuming(separated_list1(tag(&b"."[..]), octet))
        .parse(a)
        .map_err(|_| Reason::BadAddressValue)?;
    match o[..] {
        [a, b, c, d] => Ok(Ipv4Addr::new(a, b, c, d)),
        _ => Err(Reason::BadAddressValue),
    }
}

fn hex_octet(i: &str) -> IResult<&str, u8> {
    map_res(hex_digit1, |h: &str| {
        if h.len() > 2 {
            Err(())
        } else {
            u8::from_str_radix(h, 16).map_err(|_| ())
        }
    })
    .parse(i)
}

/// A MAC written as six colon-separated hex octets of one or two digits (ST sends `C4:7F:51:1:2:3`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let (_, o) = all_consuming(separated_list1(tag(":"), hex_octet))
        .parse(s)
        .ok()?;
    o.try_into().ok()
}

/// `CN=<CC>[/<rev>]`: two uppercase letters, optional numeric revision.
fn country(a: &[u8]) -> ArgResult<Vec<u8>> {
    let (cc, rev) = match a.iter().position(|&b| b == b'/') {
        Some(i) => (&a[..i], Some(&a[i + 1..])),
        None => (a, None),
    };
    if cc.len() != 2 || !cc.iter().all(u8::is_ascii_uppercase) {
        return Err(Reason::BadArgument);
    }
    if let Some(rev) = rev {
        ranged(rev, 0, 255)?;
    }
    Ok(a.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> Reason {
        parse(line.as_bytes()).unwrap_err().reason
    }

    #[test]
    fn mnemonics_and_arguments() {
        assert_eq!(parse(b"I?"), Ok(Command::System(SystemCmd::Info)));
        assert_eq!(
            parse(b"P0=0003"),
            Ok(Command::Socket(SocketCmd::Select(Some(3))))
        );
        assert_eq!(parse(b"P0"), Ok(Command::Socket(SocketCmd::Select(None))));
        assert_eq!(parse(b"S3=0010"), Ok(Command::Socket(SocketCmd::Send(10))));
        assert_eq!(
            parse(b"C1=my net, with comma"),
            Ok(Command::Station(StationCmd::SetSsid(
                b"my net, with comma".to_vec()
            )))
        );
        assert_eq!(
            parse(b"C2="),
            Ok(Command::Station(StationCmd::SetPassphrase(vec![])))
        );
        assert_eq!(
            parse(b"PK=0,0"),
            Ok(Command::Socket(SocketCmd::SetKeepAlive(false, 0)))
        );
        assert_eq!(
            parse(b"PK=1,3000"),
            Ok(Command::Socket(SocketCmd::SetKeepAlive(true, 3000)))
        );
        assert_eq!(
            parse(b"CN=US/0"),
            Ok(Command::Station(StationCmd::Country(Some(
                b"US/0".to_vec()
            ))))
        );
        assert_eq!(
            parse(b"P3=127.0.0.1"),
            Ok(Command::Socket(SocketCmd::SetRemoteIp(Ipv4Addr::LOCALHOST)))
        );
        assert_eq!(
            parse(b"Z4=C4:7F:51:1:2:3"),
            Ok(Command::System(SystemCmd::SetMac([
                0xC4, 0x7F, 0x51, 1, 2, 3
            ])))
        );
        assert_eq!(parse(b"$$$"), Ok(Command::System(SystemCmd::CmdMode(true))));
        assert_eq!(
            parse(b"PG=0,1,1731"),
            Ok(Command::Cert(CertCmd::Program {
                set: 0,
                item: Item::Cert,
                len: 1731
            }))
        );
        assert_eq!(
            parse(b"PG=3,0,0876"),
            Ok(Command::Cert(CertCmd::Program {
                set: 3,
                item: Item::Ca,
                len: 876
            }))
        );
        assert_eq!(
            parse(b"PF=0,2"),
            Ok(Command::Cert(CertCmd::Select(Some((0, 2)))))
        );
        assert_eq!(
            parse(b"PF=1"),
            Ok(Command::Cert(CertCmd::Select(Some((0, 1)))))
        );
        assert_eq!(
            parse(b"PA=1,my.host"),
            Ok(Command::Cert(CertCmd::SetCaName(true, b"my.host".to_vec())))
        );
        assert_eq!(
            parse(b"P5=11"),
            Ok(Command::Server(ServerCmd::Server(ServerMode::StartMulti)))
        );
        assert_eq!(
            parse(b"P5=010"),
            Ok(Command::Server(ServerCmd::Server(ServerMode::NextClient)))
        );
        assert_eq!(
            parse(b"P7=2"),
            Ok(Command::Server(ServerCmd::AcceptLoop(
                AcceptLoop::CloseClient
            )))
        );
        assert_eq!(
            parse(b"P1=3"),
            Ok(Command::Socket(SocketCmd::SetProtocol(Protocol::Tls)))
        );
        assert_eq!(
            parse(b"P9=2"),
            Ok(Command::Socket(SocketCmd::SetTlsVerify(
                TlsVerify::Required
            )))
        );
        assert_eq!(
            parse(b"MT=1"),
            Ok(Command::System(SystemCmd::SetMessageType(
                MessageType::Simple
            )))
        );
        assert_eq!(
            parse(b"F0=2"),
            Ok(Command::Station(StationCmd::Scan { one_by_one: true }))
        );
        assert_eq!(parse(b"?"), Ok(Command::System(SystemCmd::Help)));
        let zp = |l: &[u8]| {
            parse(l).map(|c| match c {
                Command::System(SystemCmd::Power(p)) => p,
                other => panic!("{other:?}"),
            })
        };
        assert_eq!(zp(b"ZP=0"), Ok(PowerCmd::Normal));
        assert_eq!(zp(b"ZP=1,0"), Ok(PowerCmd::PowerSave(false)));
        assert_eq!(zp(b"ZP=2,100"), Ok(PowerCmd::Beacon(100)));
        assert_eq!(zp(b"ZP=6,1000"), Ok(PowerCmd::Sleep(1000)));
        assert_eq!(
            parse(b"WL=?"),
            Ok(Command::System(SystemCmd::Gpio(GpioCmd::LinkLeds(
                LedArg::Show
            ))))
        );
        assert_eq!(
            parse(b"R4"),
            Ok(Command::Socket(SocketCmd::Read { counted: true }))
        );
        assert_eq!(parse(b"S0"), Ok(Command::Socket(SocketCmd::LegacySend)));
        assert_eq!(
            parse(b"MF=anything, really"),
            Ok(Command::System(SystemCmd::Diagnostic(Mnemonic::MF)))
        );
        assert_eq!(parse(b""), Ok(Command::Empty));
    }

    #[test]
    fn rejections() {
        assert_eq!(err("i?"), Reason::UnknownCommand);
        assert_eq!(err("XX"), Reason::UnknownCommand);
        assert_eq!(err("I?X"), Reason::UnknownCommand);
        assert_eq!(err("P0=4"), Reason::BadArgument);
        assert_eq!(err("P0=a"), Reason::BadArgument);
        assert_eq!(err("P0=-1"), Reason::BadArgument);
        assert_eq!(err("P1"), Reason::InsufficientArguments);
        assert_eq!(err("P1="), Reason::InsufficientArguments);
        assert_eq!(err("I?=1"), Reason::TooManyArguments);
        assert_eq!(err("PK=1"), Reason::InsufficientArguments);
        assert_eq!(err("PK=1,3000,4"), Reason::TooManyArguments);
        assert_eq!(err("S3=0"), Reason::BadArgument);
        assert_eq!(err("S3=1461"), Reason::BadArgument);
        assert_eq!(err("P3=1.2.3"), Reason::BadAddressValue);
        assert_eq!(err("P3=1.2.3.256"), Reason::BadAddressValue);
        assert_eq!(err("Z4=C4:7F:51:01:12"), Reason::BadAddressValue);
        assert_eq!(err("U2=1000"), Reason::BadArgument);
        assert_eq!(err("CN=us"), Reason::BadArgument);
        assert_eq!(err("PG=0,3,10"), Reason::BadArgument);
        assert_eq!(err("PG=0,0,16385"), Reason::BadArgument);
        assert_eq!(err("PG=0,0"), Reason::InsufficientArguments);
        assert_eq!(err("PF=0,1,2"), Reason::TooManyArguments);
        assert_eq!(err("F0=1"), Reason::TooManyArguments);
        assert_eq!(err("ZP"), Reason::InsufficientArguments);
        assert_eq!(err("ZP=1"), Reason::InsufficientArguments);
        assert_eq!(err("ZP=0,1"), Reason::TooManyArguments);
        assert_eq!(err("ZP=7"), Reason::BadArgument);
        assert_eq!(err("G3=1,9,0"), Reason::BadArgument);
        assert_eq!(err("R4=1"), Reason::TooManyArguments);
        // Numbers that name no choice, and missing ones.
        for bad in [
            "P1=5", "P5=2", "P5=12", "P7=4", "P9=3", "MT=2", "PG=0,3,1", "P5=x",
        ] {
            assert_eq!(err(bad), Reason::BadArgument, "{bad}");
        }
        for missing in ["P1=", "P5", "P7=", "P9", "MT"] {
            assert_eq!(err(missing), Reason::InsufficientArguments, "{missing}");
        }
        assert_eq!(parse(b"P0=9").unwrap_err().mnemonic, Some(Mnemonic::P0));
    }

    #[test]
    fn every_mnemonic_round_trips_and_has_a_parser() {
        for &m in Mnemonic::ALL {
            assert_eq!(Mnemonic::from_bytes(m.text().as_bytes()), Some(m));
            // Whatever the arguments, a known mnemonic never reads as "Unknown Command".
            let r = parse(m.text().as_bytes());
            assert!(
                r.as_ref()
                    .err()
                    .is_none_or(|e| e.reason != Reason::UnknownCommand),
                "{m:?}: {r:?}"
            );
        }
    }

    #[test]
    fn trace_text_hides_what_log_text_hides() {
        assert_eq!(trace_text(b"C2=hunter22"), "C2=<8 bytes hidden>");
        assert_eq!(trace_text(b"P3=127.0.0.1"), "P3=127.0.0.1");
        assert_eq!(trace_text(b"P6=1\x00x"), "P6=1\\x00x");
        assert_eq!(trace_text(b""), "");
        // Not a command: a passphrase command mistyped is still a passphrase.
        assert_eq!(
            trace_text(b"C2 Sup3rSecret!"),
            "<15 bytes hidden: not a command>"
        );
        assert_eq!(
            trace_text(b"c2=hunter22"),
            "<11 bytes hidden: not a command>"
        );
        assert_eq!(trace_text(b"junk\x01"), "<5 bytes hidden: not a command>");
        for line in [&b"C2 Sup3rSecret!"[..], b"A2:x", b"C?"] {
            let (log, trace) = (log_text(line), trace_text(line));
            assert_eq!(
                log.contains("hidden") || log.contains("unrecognised"),
                trace.contains("hidden")
            );
        }
        assert_eq!(
            trace_text(b"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw"),
            "<36 bytes hidden: looks like key material>"
        );
        assert_eq!(
            trace_text(b"-----END PRIVATE KEY-----"),
            "<25 bytes hidden: looks like key material>"
        );
    }

    #[test]
    fn the_readme_command_table_names_exactly_the_known_mnemonics() {
        let readme = include_str!("../../../../README.md");
        let table = readme
            .split("## Supported commands")
            .nth(1)
            .and_then(|t| t.split("| Command |").nth(1))
            .expect("the README's command table");
        let mut listed = std::collections::HashSet::new();
        for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
            let first = row.split(" | ").next().unwrap_or_default();
            for cell in first.split('`').skip(1).step_by(2) {
                let mnemonic = cell.split('=').next().unwrap_or_default();
                let m = Mnemonic::from_bytes(mnemonic.as_bytes());
                assert!(
                    m.is_some(),
                    "README lists {cell:?}, which the parser does not know"
                );
                listed.extend(m);
            }
        }
        for m in Mnemonic::ALL {
            assert!(
                listed.contains(m),
                "README's command table lacks {}",
                m.text()
            );
        }
    }

    #[test]
    fn log_text_hides_secrets_and_unrecognised_lines() {
        assert_eq!(log_text(b"C1=home"), "C1=home");
        assert_eq!(log_text(b"C2=hunter22"), "C2=<8 bytes hidden>");
        assert_eq!(log_text(b"A2=secret99"), "A2=<8 bytes hidden>");
        // A base64 line of a PEM key that arrives as stray command lines.
        let stray = b"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7";
        assert_eq!(log_text(stray), "<unrecognised line of 52 bytes>");
        assert_eq!(
            log_text(b"-----BEGIN PRIVATE KEY-----"),
            "--… <unrecognised line of 27 bytes>"
        );
        assert_eq!(log_text(b"P6=1"), "P6=1");
        // A mistyped command shows as typed (a mnemonic's size at most); one with `=` may hold a
        // passphrase typed wrong (`c2=secret`): its length only.
        assert_eq!(log_text(b"cs"), "cs");
        assert_eq!(log_text(b"i?"), "i?");
        assert_eq!(log_text(b"ix\x7f?"), "ix… <unrecognised line of 4 bytes>");
        assert_eq!(log_text(b"c2=hunter22"), "<unrecognised line of 11 bytes>");
        assert_eq!(log_text(b"ab+cd/ef=="), "<unrecognised line of 10 bytes>");
        assert_eq!(log_text(b"abcd"), "<unrecognised line of 4 bytes>");
        assert_eq!(log_text(b"C2 hunter22"), "<unrecognised line of 11 bytes>");
    }

    #[test]
    fn secrecy_and_announced_payloads() {
        assert_eq!(secrecy(b"C1=home"), Secrecy::Public);
        assert_eq!(secrecy(b"C2"), Secrecy::Public);
        assert_eq!(
            secrecy(b"A2=secret99"),
            Secrecy::Argument {
                mnemonic: "A2",
                from: 3
            }
        );
        assert_eq!(secrecy(b"C2 secret99"), Secrecy::NotACommand);
        assert_eq!(secrecy(b"-----BEGIN"), Secrecy::NotACommand);
        assert_eq!(secrecy(b""), Secrecy::Public);
        assert_eq!(announced_payload(b"PG=0,2,0106"), Some((106, true)));
        assert_eq!(announced_payload(b"S3=0005"), Some((5, false)));
        assert_eq!(announced_payload(b"PG=9,9,9"), None);
        assert_eq!(announced_payload(b"S0"), None);
    }
}
