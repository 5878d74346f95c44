//! IWIN command parser (layer: wire). One command line (without CR) → a typed [`Command`], or the
//! typed reason the module rejects it with. Pure; nom parses the argument primitives.
//!
//! Syntax (spec §2.2): a two-character uppercase mnemonic (or `?`, `$$$`, `---`), optionally `=` and
//! arguments. String settings (SSID, passphrase, host name, product name) take the whole remainder,
//! commas and spaces included; numbers may carry leading zeros.

use crate::iwin::reply::Reason;
use nom::bytes::complete::tag;
use nom::character::complete::{digit1, hex_digit1};
use nom::combinator::{all_consuming, map_res};
use nom::multi::separated_list1;
use nom::{IResult, Parser};
use std::net::Ipv4Addr;

/// Largest `S3`/`R1`/`S1` payload (TCP MSS).
pub const MAX_PAYLOAD: usize = 1460;

/// A parsed command. The mnemonic is in each variant's doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Empty line: the module answers with a prompt.
    Empty,
    /// `$$$` enter / `---` exit human-readable command mode.
    CmdMode(bool),
    /// `I?` — identity line.
    Info,
    /// `MT=<0/1>` — message type.
    SetMessageType(u8),
    /// `MS=<0..3>` — asynchronous message suppression bits.
    SetMessageSuppress(u8),
    /// `Z4=<mac>` — set MAC address.
    SetMac([u8; 6]),
    /// `Z5` — MAC address.
    GetMac,
    /// `Z?` — system configuration.
    SystemQuery,
    /// `ZN=<name>` — product name.
    SetProductName(Vec<u8>),
    /// `ZR` — soft reset.
    Reset,
    /// `Z0` — factory defaults (not saved until `Z1`).
    FactoryReset,
    /// `Z1` — save the current settings.
    SaveSettings,
    /// `Z6=<ip>` — soft-AP address.
    SetApIp(Ipv4Addr),
    /// `AS=<0/1>,<ssid>` — soft-AP SSID (1: append the MAC).
    SetApSsid(bool, Vec<u8>),
    /// `A1=<0/2/3/4>` — soft-AP security.
    SetApSecurity(u8),
    /// `A2=<key>` — soft-AP key.
    SetApKey(Vec<u8>),
    /// `AC=<channel>` — soft-AP channel (0 = auto).
    SetApChannel(u8),
    /// `AL=<0..255>` — DHCP lease.
    SetApLease(u8),
    /// `AT=<1..4>` — maximum clients.
    SetApMaxClients(u8),
    /// `A0` — start the soft AP with DHCP, DNS and web server.
    ApStart,
    /// `AD` — start the soft AP in direct-connect mode.
    ApDirect,
    /// `AE` — stop the soft AP.
    ApStop,
    /// `A?` — soft-AP settings.
    ApQuery,
    /// `T1=<ip>` — ping target.
    SetPingTarget(Ipv4Addr),
    /// `T2=<0..65535>` — ping repeats.
    SetPingRepeats(u16),
    /// `T3=<0..5000>` — delay between pings (ms).
    SetPingDelay(u16),
    /// `T0` — ping.
    Ping,
    /// `T?` — ping settings.
    PingQuery,
    /// `U?` — UART settings.
    UartQuery,
    /// `U2=<baud>` — stage a baud rate.
    SetBaud(u32),
    /// `U0` — activate staged UART settings.
    UartApply,
    /// `B?` — bus settings.
    BusQuery,
    /// `PR=<0..4>` — raw-Ethernet bypass mode (Zephyr sends `PR=0`).
    SetRawBypass(u8),
    /// `C1=<ssid>`.
    SetSsid(Vec<u8>),
    /// `C2=<passphrase>`.
    SetPassphrase(Vec<u8>),
    /// `C3=<0..5>` — security type.
    SetSecurity(u8),
    /// `C4=<0/1>` — DHCP.
    SetDhcp(bool),
    /// `C5=<0/1>` — IP version.
    SetIpVersion(u8),
    /// `C6`..`CA` — static IP, mask, gateway, DNS1, DNS2.
    SetAddress(AddrField, Ipv4Addr),
    /// `CB=<0..10>` — join retries.
    SetJoinRetries(u8),
    /// `CC=<0..3>` — auto-connect.
    SetAutoConnect(u8),
    /// `CD` — disconnect.
    Disconnect,
    /// `CN` — country code; None queries.
    Country(Option<Vec<u8>>),
    /// `CR` — RSSI.
    Rssi,
    /// `CS` — connection status.
    Status,
    /// `C0` — join.
    Join,
    /// `C?` — station settings.
    StationQuery,
    /// `F0` — scan.
    Scan,
    /// `D0=<name>` — DNS lookup.
    Lookup(Vec<u8>),
    /// `P0=<0..3>` selects a socket; `P0` alone reports the current one.
    Socket(Option<u8>),
    /// `P1=<0..4>` — protocol.
    SetProtocol(u8),
    /// `P2=<port>` — local port.
    SetLocalPort(u16),
    /// `P3=<ip>` — remote host.
    SetRemoteIp(Ipv4Addr),
    /// `P4=<port>` — remote port.
    SetRemotePort(u16),
    /// `P5=<0/1/10/11>` — server: stop, start, close current client and take the next, start
    /// multi-accept.
    Server(u8),
    /// `P6=<0/1>` — stop/start the client connection.
    Client(bool),
    /// `P7=<0..3>` — legacy accept loop: stop, start, close current client, next client.
    AcceptLoop(u8),
    /// `MR` — read one queued asynchronous message.
    ReadMessage,
    /// `P8=<0..16>` — listen backlog.
    SetBacklog(u8),
    /// `P9=<0..2>` — TLS verification level.
    SetTlsVerify(u8),
    /// `PA=<0/1>,<name>` — custom CA name (used as the TLS server name when enabled).
    SetCaName(bool, Vec<u8>),
    /// `PB=<0/1>` — on CA verification failure: 0 abort, 1 report only.
    SetVerifyReportOnly(bool),
    /// `PE` — availability of every set; `PE=<set>` — of each item of one set.
    CertAvailability(Option<u8>),
    /// `PF=<func>,<set>` (or `PF=<set>`) selects the active set; `PF` alone reports it.
    SelectCertSet(Option<(u8, u8)>),
    /// `PG=<set>,<type>,<len>` — program one item: `len` raw bytes follow the CR.
    ProgramCert { set: u8, item: u8, len: usize },
    /// `PK=<0/1>,<ms>` — TCP keep-alive.
    SetKeepAlive(bool, u32),
    /// `P?` — transport settings.
    TransportQuery,
    /// `R0` — read.
    Read,
    /// `R1=<1..1460>` — read size.
    SetReadSize(u16),
    /// `R2=<0..30000>` — read timeout (ms).
    SetReadTimeout(u32),
    /// `R3=<0/1>` — read mode.
    SetReadMode(u8),
    /// `R?` — read settings.
    ReadQuery,
    /// `S1=<1..1460>` — S0 packet size.
    SetSendSize(u16),
    /// `S2=<0..30000>` — write timeout (ms).
    SetSendTimeout(u32),
    /// `S3=<n>` — send: n raw bytes follow the CR.
    Send(usize),
    /// `S?` — send settings.
    SendQuery,
}

/// Which address `C6`..`CA` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrField {
    Ip,
    Mask,
    Gateway,
    Dns1,
    Dns2,
}

/// Why a line was rejected; `mnemonic` is the known command it named (for the `Usage:` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    pub mnemonic: Option<&'static str>,
    pub reason: Reason,
}

/// Known mnemonics and their usage text (printed after `Usage: <cmd> ` in MT=0 errors). Texts follow
/// the firmware help table's style; commands without arguments have an empty usage (GH13: `Usage: C0 `).
const COMMANDS: &[(&str, &str)] = &[
    ("$$$", ""),
    ("---", ""),
    ("I?", ""),
    ("MT", "<0=Normal/1=Simple>"),
    ("MS", "<0-3>"),
    ("Z4", "<XX:XX:XX:XX:XX:XX>"),
    ("Z5", ""),
    ("Z?", ""),
    ("ZN", "<product name>"),
    ("ZR", ""),
    ("Z0", ""),
    ("Z1", ""),
    ("Z6", "<xxx.xxx.xxx.xxx>"),
    ("AS", "<0=SSID/1=SSID+MAC>,<SSID>"),
    ("A1", "<0=Open/2=WPA/3=WPA2/4=WPA+WPA2>"),
    ("A2", "<key>"),
    ("AC", "<0=Auto/channel>"),
    ("AL", "<0-255>"),
    ("AT", "<1-4>"),
    ("A0", ""),
    ("AD", ""),
    ("AE", ""),
    ("A?", ""),
    ("T1", "<xxx.xxx.xxx.xxx>"),
    ("T2", "<0-65535>"),
    ("T3", "<0-5000>"),
    ("T0", ""),
    ("T?", ""),
    ("U?", ""),
    ("U2", "<1200 - 2073600>"),
    ("U0", ""),
    ("B?", ""),
    ("PR", "<0-4>"),
    ("C1", "<SSID>"),
    ("C2", "<passphrase>"),
    (
        "C3",
        "<0=Open/1=WEP/2=WPA/3=WPA2 AES/4=WPA2 Mixed/5=WPA2 TKIP>",
    ),
    ("C4", "<0=Off/1=On>"),
    ("C5", "<0=IPv4/1=IPv6>"),
    ("C6", "<xxx.xxx.xxx.xxx>"),
    ("C7", "<xxx.xxx.xxx.xxx>"),
    ("C8", "<xxx.xxx.xxx.xxx>"),
    ("C9", "<xxx.xxx.xxx.xxx>"),
    ("CA", "<xxx.xxx.xxx.xxx>"),
    ("CB", "<0-10>"),
    ("CC", "<0=Off/1=Auto Join/2=Auto Reconnect/3=Both>"),
    ("CD", ""),
    ("CN", "<country code>[/<rev>]"),
    ("CR", ""),
    ("CS", ""),
    ("C0", ""),
    ("C?", ""),
    ("F0", ""),
    ("D0", "<host name>"),
    ("P0", "<0-3>"),
    ("P1", "<0=TCP/1=UDP/2=UDP-Lite/3=TCP-SSL/4=MQTT>"),
    ("P2", "<0-65535>"),
    ("P3", "<xxx.xxx.xxx.xxx>"),
    ("P4", "<0-65535>"),
    (
        "P5",
        "<0=Stop/1=Start/10=Next client/11=Start multi-accept>",
    ),
    ("P6", "<0=Stop/1=Start>"),
    ("P7", "<0=Stop/1=Start/2=Close client/3=Next client>"),
    ("MR", ""),
    ("P8", "<0-16>"),
    ("P9", "<0=None/1=Optional/2=Required>"),
    ("PA", "<0=Off/1=On>,<CA name>"),
    ("PB", "<0=Abort/1=Report only>"),
    ("PE", "[<set>]"),
    ("PF", "<0=TLS/1=AWS>,<set>"),
    ("PG", "<set>,<0=Root CA/1=Certificate/2=Key>,<length>"),
    ("PK", "<0=Off/1=On>,<250-7200000>"),
    ("P?", ""),
    ("R0", ""),
    ("R1", "<1-1460>"),
    ("R2", "<0-30000>"),
    ("R3", "<0/1>"),
    ("R?", ""),
    ("S1", "<1-1460>"),
    ("S2", "<0-30000>"),
    ("S3", "<1-1460>"),
    ("S?", ""),
];

/// The usage text of a known mnemonic.
pub fn usage(mnemonic: &str) -> Option<(&'static str, &'static str)> {
    COMMANDS.iter().copied().find(|(m, _)| *m == mnemonic)
}

type ArgResult<T> = Result<T, Reason>;

/// Parse one command line.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    if line.is_empty() {
        return Ok(Command::Empty);
    }
    let (mn, args): (&[u8], Option<&[u8]>) = match line {
        b"$$$" | b"---" => (line, None),
        _ if line.len() >= 2 => match &line[2..] {
            [] => (&line[..2], None),
            [b'=', rest @ ..] => (&line[..2], Some(rest)),
            _ => return Err(unknown()),
        },
        _ => return Err(unknown()),
    };
    let Some((name, _)) = std::str::from_utf8(mn).ok().and_then(usage) else {
        return Err(unknown());
    };
    parse_args(name, args).map_err(|reason| ParseError {
        mnemonic: Some(name),
        reason,
    })
}

fn unknown() -> ParseError {
    ParseError {
        mnemonic: None,
        reason: Reason::UnknownCommand,
    }
}

fn parse_args(name: &'static str, args: Option<&[u8]>) -> ArgResult<Command> {
    use Command::*;
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
    Ok(match name {
        "$$$" => CmdMode(true),
        "---" => CmdMode(false),
        "I?" => none(Info)?,
        "MT" => SetMessageType(num(0, 1)? as u8),
        "MS" => SetMessageSuppress(num(0, 3)? as u8),
        "Z4" => SetMac(arg().and_then(|a| {
            let s = std::str::from_utf8(a).map_err(|_| Reason::BadAddressValue)?;
            parse_mac(s).ok_or(Reason::BadAddressValue)
        })?),
        "Z5" => none(GetMac)?,
        "Z?" => none(SystemQuery)?,
        "ZN" => SetProductName(text(32)?),
        "ZR" => none(Reset)?,
        "Z0" => none(FactoryReset)?,
        "Z1" => none(SaveSettings)?,
        "Z6" => SetApIp(ip()?),
        "AS" => {
            let a = arg()?;
            let Some(i) = a.iter().position(|&b| b == b',') else {
                return Err(Reason::InsufficientArguments);
            };
            // ST sends "AS=0, <ssid>": the bytes after the comma are kept as sent.
            SetApSsid(ranged(&a[..i], 0, 1)? == 1, string(&a[i + 1..], 32)?)
        }
        "A1" => {
            let v = num(0, 4)?;
            if v == 1 {
                return Err(Reason::BadArgument);
            }
            SetApSecurity(v as u8)
        }
        "A2" => {
            let key = text(63)?;
            if !key.is_empty() && key.len() < 8 {
                return Err(Reason::BadArgument);
            }
            SetApKey(key)
        }
        "AC" => {
            let c = num(0, 165)?;
            if c > 14 && !matches!(c, 36..=64 | 100..=165) {
                return Err(Reason::BadArgument);
            }
            SetApChannel(c as u8)
        }
        "AL" => SetApLease(num(0, 255)? as u8),
        "AT" => SetApMaxClients(num(1, 4)? as u8),
        "A0" => none(ApStart)?,
        "AD" => none(ApDirect)?,
        "AE" => none(ApStop)?,
        "A?" => none(ApQuery)?,
        "T1" => SetPingTarget(ip()?),
        "T2" => SetPingRepeats(num(0, 65535)? as u16),
        "T3" => SetPingDelay(num(0, 5000)? as u16),
        "T0" => none(Ping)?,
        "T?" => none(PingQuery)?,
        "U?" => none(UartQuery)?,
        "U2" => {
            let baud = num(1200, 2_073_600)?;
            if !BAUD_RATES.contains(&baud) {
                return Err(Reason::BadArgument);
            }
            SetBaud(baud)
        }
        "U0" => none(UartApply)?,
        "B?" => none(BusQuery)?,
        "PR" => SetRawBypass(num(0, 4)? as u8),
        "C1" => SetSsid(text(32)?),
        "C2" => SetPassphrase(text(64)?),
        "C3" => SetSecurity(num(0, 5)? as u8),
        "C4" => SetDhcp(flag()?),
        "C5" => SetIpVersion(num(0, 1)? as u8),
        "C6" => SetAddress(AddrField::Ip, ip()?),
        "C7" => SetAddress(AddrField::Mask, ip()?),
        "C8" => SetAddress(AddrField::Gateway, ip()?),
        "C9" => SetAddress(AddrField::Dns1, ip()?),
        "CA" => SetAddress(AddrField::Dns2, ip()?),
        "CB" => SetJoinRetries(num(0, 10)? as u8),
        "CC" => SetAutoConnect(num(0, 3)? as u8),
        "CD" => none(Disconnect)?,
        "CN" => match args {
            None => Country(None),
            Some(a) => Country(Some(country(a)?)),
        },
        "CR" => none(Rssi)?,
        "CS" => none(Status)?,
        "C0" => none(Join)?,
        "C?" => none(StationQuery)?,
        "F0" => none(Scan)?,
        "D0" => {
            let name = text(64)?;
            if name.is_empty() {
                return Err(Reason::InsufficientArguments);
            }
            Lookup(name)
        }
        "P0" => match args {
            None => Socket(None),
            Some(a) => Socket(Some(ranged(a, 0, 3)? as u8)),
        },
        "P1" => SetProtocol(num(0, 4)? as u8),
        "P2" => SetLocalPort(num(0, 65535)? as u16),
        "P3" => SetRemoteIp(ip()?),
        "P4" => SetRemotePort(num(0, 65535)? as u16),
        "P5" => {
            let v = num(0, 11)?;
            if !matches!(v, 0 | 1 | 10 | 11) {
                return Err(Reason::BadArgument);
            }
            Server(v as u8)
        }
        "P6" => Client(flag()?),
        "P7" => AcceptLoop(num(0, 3)? as u8),
        "MR" => none(ReadMessage)?,
        "P8" => SetBacklog(num(0, 16)? as u8),
        "P9" => SetTlsVerify(num(0, 2)? as u8),
        "PK" => {
            let fields = fields(arg()?, 2)?;
            let on = ranged(fields[0], 0, 1)? == 1;
            let ms = ranged(fields[1], 0, 7_200_000)?;
            // Drivers send PK=0,0 to disable; enabling needs a real interval.
            if on && ms < 250 {
                return Err(Reason::BadArgument);
            }
            SetKeepAlive(on, ms)
        }
        "PA" => {
            let a = arg()?;
            let (on, name) = match a.iter().position(|&b| b == b',') {
                Some(i) => (&a[..i], &a[i + 1..]),
                None => return Err(Reason::InsufficientArguments),
            };
            SetCaName(ranged(on, 0, 1)? == 1, string(name, 63)?)
        }
        "PB" => SetVerifyReportOnly(flag()?),
        "PE" => match args {
            None | Some([]) => CertAvailability(None),
            Some(a) => CertAvailability(Some(ranged(a, 0, 3)? as u8)),
        },
        "PF" => match args {
            None => SelectCertSet(None),
            Some(a) => {
                let f: Vec<&[u8]> = a.split(|&b| b == b',').collect();
                match f[..] {
                    [set] => SelectCertSet(Some((0, ranged(set, 0, 3)? as u8))),
                    [func, set] => {
                        SelectCertSet(Some((ranged(func, 0, 1)? as u8, ranged(set, 0, 3)? as u8)))
                    }
                    _ => return Err(Reason::TooManyArguments),
                }
            }
        },
        "PG" => {
            let f = fields(arg()?, 3)?;
            ProgramCert {
                set: ranged(f[0], 0, 3)? as u8,
                item: ranged(f[1], 0, 2)? as u8,
                len: ranged(f[2], 0, crate::module::certs::MAX_ITEM as u32)? as usize,
            }
        }
        "P?" => none(TransportQuery)?,
        "R0" => none(Read)?,
        "R1" => SetReadSize(num(1, MAX_PAYLOAD as u32)? as u16),
        "R2" => SetReadTimeout(num(0, 30_000)?),
        "R3" => SetReadMode(num(0, 1)? as u8),
        "R?" => none(ReadQuery)?,
        "S1" => SetSendSize(num(1, MAX_PAYLOAD as u32)? as u16),
        "S2" => SetSendTimeout(num(0, 30_000)?),
        "S3" => Send(num(1, MAX_PAYLOAD as u32)? as usize),
        "S?" => none(SendQuery)?,
        _ => unreachable!("every mnemonic in COMMANDS is handled"),
    })
}

/// Baud rates `U2` accepts (spec §2.1).
const BAUD_RATES: &[u32] = &[
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
pub fn ipv4(a: &[u8]) -> ArgResult<Ipv4Addr> {
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
        assert_eq!(parse(b"I?"), Ok(Command::Info));
        assert_eq!(parse(b"P0=0003"), Ok(Command::Socket(Some(3))));
        assert_eq!(parse(b"P0"), Ok(Command::Socket(None)));
        assert_eq!(parse(b"S3=0010"), Ok(Command::Send(10)));
        assert_eq!(
            parse(b"C1=my net, with comma"),
            Ok(Command::SetSsid(b"my net, with comma".to_vec()))
        );
        assert_eq!(parse(b"C2="), Ok(Command::SetPassphrase(vec![])));
        assert_eq!(parse(b"PK=0,0"), Ok(Command::SetKeepAlive(false, 0)));
        assert_eq!(parse(b"PK=1,3000"), Ok(Command::SetKeepAlive(true, 3000)));
        assert_eq!(
            parse(b"CN=US/0"),
            Ok(Command::Country(Some(b"US/0".to_vec())))
        );
        assert_eq!(
            parse(b"P3=127.0.0.1"),
            Ok(Command::SetRemoteIp(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(
            parse(b"Z4=C4:7F:51:1:2:3"),
            Ok(Command::SetMac([0xC4, 0x7F, 0x51, 1, 2, 3]))
        );
        assert_eq!(parse(b"$$$"), Ok(Command::CmdMode(true)));
        assert_eq!(
            parse(b"PG=0,1,1731"),
            Ok(Command::ProgramCert {
                set: 0,
                item: 1,
                len: 1731
            })
        );
        assert_eq!(
            parse(b"PG=3,0,0876"),
            Ok(Command::ProgramCert {
                set: 3,
                item: 0,
                len: 876
            })
        );
        assert_eq!(parse(b"PF=0,2"), Ok(Command::SelectCertSet(Some((0, 2)))));
        assert_eq!(parse(b"PF=1"), Ok(Command::SelectCertSet(Some((0, 1)))));
        assert_eq!(
            parse(b"PA=1,my.host"),
            Ok(Command::SetCaName(true, b"my.host".to_vec()))
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
        assert_eq!(parse(b"P0=9").unwrap_err().mnemonic, Some("P0"));
    }
}
