//! Fault rules (layer: middleware, pure): the one syntax used in `[faults] rules`, after `fault add`
//! on the control socket and after `fault` in a script. One rule per line:
//!
//! ```text
//! serial.latency 20ms..80ms          serial.split 1..7 gap=2ms
//! serial.noise drop=0.001 corrupt=0.001 [dir=in|out|both]
//! serial.stall 3s                    module.reset after=12cmds | at=5s
//! wifi.down [after=2s]               wifi.join-fail p=0.5
//! wifi.slow [join=3s] [scan=2s]      wifi.hide <ssid>
//! net.refuse 127.0.0.1:7001          net.blackhole *:443
//! net.reset 127.0.0.1:7001 after=1000B   net.close *:80 after=1kB
//! net.latency *:* 50ms               net.bandwidth *:* 20kB/s
//! dns.fail example.com               dns.delay * 2s
//! tls.alert 127.0.0.1:8443 handshake_failure
//! ```
//!
//! Every rule takes `module=K` to hit one module only (all by default); anything a kind does not
//! take (an unknown option, one given twice, a word too many) is refused with its usage. DNS
//! names match case-insensitively, `*` standing for any run of characters (`*.example.com`).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// A duration, fixed or drawn uniformly from a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub min: Duration,
    pub max: Duration,
}

/// Which way serial noise goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    In,
    Out,
    Both,
}

/// `HOST:PORT`, either part `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    pub ip: Option<Ipv4Addr>,
    pub port: Option<u16>,
}

impl Target {
    pub(crate) fn matches(&self, a: SocketAddrV4) -> bool {
        self.ip.is_none_or(|ip| ip == *a.ip()) && self.port.is_none_or(|p| p == a.port())
    }
}

/// When a one-shot module fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    /// After this many more commands.
    Commands(u64),
    /// This long after the rule was added.
    After(Duration),
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    SerialLatency(Span),
    SerialSplit {
        min: usize,
        max: usize,
        gap: Duration,
    },
    SerialNoise {
        drop: f64,
        corrupt: f64,
        dir: Dir,
    },
    SerialStall(Duration),
    ModuleReset(When),
    WifiDown(Option<Duration>),
    WifiJoinFail(f64),
    WifiSlow {
        join: Option<Duration>,
        scan: Option<Duration>,
    },
    WifiHide(String),
    NetRefuse(Target),
    NetBlackhole(Target),
    NetReset {
        target: Target,
        after: u64,
    },
    NetClose {
        target: Target,
        after: u64,
    },
    NetLatency {
        target: Target,
        delay: Duration,
    },
    NetBandwidth {
        target: Target,
        bytes_per_sec: u64,
    },
    DnsFail(String),
    DnsDelay {
        name: String,
        delay: Duration,
    },
    TlsAlert {
        target: Target,
        alert: u8,
        name: String,
    },
}

/// A parsed rule: its kind and the module it is limited to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub kind: Kind,
    pub module: Option<usize>,
    /// The line as given (what `fault list` shows).
    pub text: String,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// TLS alert descriptions by name (RFC 8446 §6, RFC 5246 §7.2).
const ALERTS: &[(&str, u8)] = &[
    ("close_notify", 0),
    ("unexpected_message", 10),
    ("bad_record_mac", 20),
    ("record_overflow", 22),
    ("handshake_failure", 40),
    ("bad_certificate", 42),
    ("unsupported_certificate", 43),
    ("certificate_revoked", 44),
    ("certificate_expired", 45),
    ("certificate_unknown", 46),
    ("illegal_parameter", 47),
    ("unknown_ca", 48),
    ("access_denied", 49),
    ("decode_error", 50),
    ("decrypt_error", 51),
    ("protocol_version", 70),
    ("insufficient_security", 71),
    ("internal_error", 80),
    ("user_canceled", 90),
    ("unrecognized_name", 112),
    ("certificate_required", 116),
    ("no_application_protocol", 120),
];

/// A duration: `500us`, `20ms`, `2s`, `1.5s`, `2m`.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("{s:?}: a duration needs a unit (us, ms, s, m)"))?;
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a duration (a number and a unit: 20ms, 2s)"))?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (us, ms, s, m)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn span(s: &str) -> Result<Span, String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let (min, max) = (duration(a)?, duration(b)?);
            if min > max {
                return Err(format!("{s:?}: the range is backwards"));
            }
            Ok(Span { min, max })
        }
        None => {
            let d = duration(s)?;
            Ok(Span { min: d, max: d })
        }
    }
}

/// A byte count: `1000B`, `1kB`, `2MB` (k = 1000).
fn bytes(s: &str) -> Result<u64, String> {
    let (num, mult) = if let Some(n) = s.strip_suffix("kB") {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix("MB") {
        (n, 1_000_000)
    } else if let Some(n) = s.strip_suffix('B') {
        (n, 1)
    } else {
        return Err(format!("{s:?}: a size needs a unit (B, kB, MB)"));
    };
    let v: f64 = num.parse().map_err(|_| format!("{s:?}: not a size"))?;
    if v < 0.0 {
        return Err(format!("{s:?}: negative"));
    }
    Ok((v * mult as f64) as u64)
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("{s:?}: not a probability"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("{s:?}: a probability is between 0 and 1"));
    }
    Ok(p)
}

fn target(s: &str) -> Result<Target, String> {
    if s == "*" {
        return Ok(Target {
            ip: None,
            port: None,
        });
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: HOST:PORT (either may be *)"))?;
    let ip = match host {
        "*" => None,
        h => Some(
            h.parse()
                .map_err(|_| format!("{h:?}: not an IPv4 address"))?,
        ),
    };
    let port = match port {
        "*" => None,
        p => Some(p.parse().map_err(|_| format!("{p:?}: not a port"))?),
    };
    Ok(Target { ip, port })
}

/// What a kind of rule takes: its usage, at most how many positional words, and its options.
/// Anything else on the line is refused with the usage (a typo must not be a rule that silently
/// does something else).
fn shape(kind: &str) -> Option<(&'static str, usize, &'static [&'static str])> {
    Some(match kind {
        "serial.latency" => ("serial.latency DUR | MIN..MAX", 1, &[]),
        "serial.split" => ("serial.split MIN..MAX [gap=DUR]", 1, &["gap"]),
        "serial.noise" => (
            "serial.noise drop=P and/or corrupt=P [dir=in|out|both]",
            0,
            &["drop", "corrupt", "dir"],
        ),
        "serial.stall" => ("serial.stall DUR", 1, &[]),
        "module.reset" => ("module.reset after=Ncmds | at=DUR", 0, &["after", "at"]),
        "wifi.down" => ("wifi.down [after=DUR]", 0, &["after"]),
        "wifi.join-fail" => ("wifi.join-fail [p=P]", 0, &["p"]),
        "wifi.slow" => ("wifi.slow [join=DUR] [scan=DUR]", 0, &["join", "scan"]),
        // The SSID is every word after the kind.
        "wifi.hide" => ("wifi.hide SSID", usize::MAX, &[]),
        "net.refuse" => ("net.refuse HOST:PORT", 1, &[]),
        "net.blackhole" => ("net.blackhole HOST:PORT", 1, &[]),
        "net.reset" => ("net.reset HOST:PORT after=NB", 1, &["after"]),
        "net.close" => ("net.close HOST:PORT after=NB", 1, &["after"]),
        "net.latency" => ("net.latency HOST:PORT DUR", 2, &[]),
        "net.bandwidth" => ("net.bandwidth HOST:PORT RATE (e.g. 20kB/s)", 2, &[]),
        "tls.alert" => ("tls.alert HOST:PORT ALERT (e.g. handshake_failure)", 2, &[]),
        "dns.fail" => ("dns.fail NAME (* matches any run: *.example.com)", 1, &[]),
        "dns.delay" => ("dns.delay NAME DUR (* matches any run)", 2, &[]),
        _ => return None,
    })
}

/// Parse one rule line.
pub(crate) fn parse(line: &str) -> Result<Rule, String> {
    // Shown by `fault list` as one space between words, however it was typed.
    let text = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some((&kind_name, rest)) = words.split_first() else {
        return Err("empty rule".into());
    };
    let (usage, max_pos, known) =
        shape(kind_name).ok_or_else(|| format!("unknown fault kind {kind_name:?}"))?;
    let mut module = None;
    let mut opts: Vec<(&str, &str)> = Vec::new();
    let mut pos: Vec<&str> = Vec::new();
    for &w in rest {
        match w.split_once('=') {
            Some(("module", k)) => {
                if module.is_some() {
                    return Err(format!("{kind_name}: module= given twice"));
                }
                module = Some(
                    k.parse::<usize>()
                        .map_err(|_| "module=K needs a module number".to_string())?,
                );
            }
            // An SSID may hold `=`.
            Some((key, value)) if max_pos != usize::MAX => {
                if !known.contains(&key) {
                    let takes = if known.is_empty() {
                        "it takes no options".to_string()
                    } else {
                        format!("it takes {}=", known.join("=, "))
                    };
                    return Err(format!(
                        "{kind_name}: unknown option {key}= ({takes}; usage: {usage})"
                    ));
                }
                if opts.iter().any(|(k, _)| *k == key) {
                    return Err(format!("{kind_name}: {key}= given twice"));
                }
                opts.push((key, value));
            }
            _ if pos.len() == max_pos => {
                return Err(format!("{kind_name}: unexpected {w:?} (usage: {usage})"));
            }
            _ => pos.push(w),
        }
    }
    let opt = |key: &str| opts.iter().find(|(k, _)| *k == key).map(|&(_, v)| v);
    let need = |n: usize, usage: &str| {
        if pos.len() < n {
            Err(format!("{kind_name}: {usage}"))
        } else {
            Ok(())
        }
    };
    let kind = match kind_name {
        "serial.latency" => {
            need(1, "serial.latency DUR | MIN..MAX")?;
            Kind::SerialLatency(span(pos[0])?)
        }
        "serial.split" => {
            need(1, "serial.split MIN..MAX [gap=DUR]")?;
            let (a, b) = pos[0].split_once("..").unwrap_or((pos[0], pos[0]));
            let min: usize = a
                .parse()
                .map_err(|_| format!("{a:?}: not a size in bytes"))?;
            let max: usize = b
                .parse()
                .map_err(|_| format!("{b:?}: not a size in bytes"))?;
            if min == 0 || min > max {
                return Err("serial.split: fragments of MIN..MAX bytes, 1 <= MIN <= MAX".into());
            }
            let gap = opt("gap").map(duration).transpose()?.unwrap_or_default();
            Kind::SerialSplit { min, max, gap }
        }
        "serial.noise" => {
            let drop = opt("drop").map(probability).transpose()?.unwrap_or(0.0);
            let corrupt = opt("corrupt").map(probability).transpose()?.unwrap_or(0.0);
            let dir = match opt("dir") {
                None | Some("both") => Dir::Both,
                Some("in") => Dir::In,
                Some("out") => Dir::Out,
                Some(d) => return Err(format!("dir={d}: in, out or both")),
            };
            if drop == 0.0 && corrupt == 0.0 {
                return Err("serial.noise: drop=P and/or corrupt=P".into());
            }
            Kind::SerialNoise { drop, corrupt, dir }
        }
        "serial.stall" => {
            need(1, "serial.stall DUR")?;
            Kind::SerialStall(duration(pos[0])?)
        }
        "module.reset" => match (opt("after"), opt("at")) {
            (Some(n), None) => {
                let n = n
                    .strip_suffix("cmds")
                    .or(n.strip_suffix("cmd"))
                    .unwrap_or(n);
                Kind::ModuleReset(When::Commands(
                    n.parse()
                        .map_err(|_| format!("after={n}: a number of commands"))?,
                ))
            }
            (None, Some(t)) => Kind::ModuleReset(When::After(duration(t)?)),
            (None, None) => Kind::ModuleReset(When::Commands(0)),
            _ => return Err("module.reset: after=Ncmds or at=DUR".into()),
        },
        "wifi.down" => Kind::WifiDown(opt("after").map(duration).transpose()?),
        "wifi.join-fail" => {
            Kind::WifiJoinFail(opt("p").map(probability).transpose()?.unwrap_or(1.0))
        }
        "wifi.slow" => {
            let join = opt("join").map(duration).transpose()?;
            let scan = opt("scan").map(duration).transpose()?;
            if join.is_none() && scan.is_none() {
                return Err("wifi.slow: join=DUR and/or scan=DUR".into());
            }
            Kind::WifiSlow { join, scan }
        }
        "wifi.hide" => {
            need(1, "wifi.hide SSID")?;
            Kind::WifiHide(pos.join(" "))
        }
        "net.refuse" | "net.blackhole" | "net.reset" | "net.close" | "net.latency"
        | "net.bandwidth" | "tls.alert" => {
            need(1, &format!("{kind_name} HOST:PORT …"))?;
            let t = target(pos[0])?;
            match kind_name {
                "net.refuse" => Kind::NetRefuse(t),
                "net.blackhole" => Kind::NetBlackhole(t),
                "net.reset" | "net.close" => {
                    let after = bytes(opt("after").ok_or(format!("{kind_name}: after=NB"))?)?;
                    if kind_name == "net.reset" {
                        Kind::NetReset { target: t, after }
                    } else {
                        Kind::NetClose { target: t, after }
                    }
                }
                "net.latency" => {
                    need(2, "net.latency HOST:PORT DUR")?;
                    Kind::NetLatency {
                        target: t,
                        delay: duration(pos[1])?,
                    }
                }
                "net.bandwidth" => {
                    need(2, "net.bandwidth HOST:PORT RATE (e.g. 20kB/s)")?;
                    let rate = pos[1]
                        .strip_suffix("/s")
                        .ok_or(format!("{:?}: a rate per second (e.g. 20kB/s)", pos[1]))?;
                    let bytes_per_sec = bytes(rate)?;
                    if bytes_per_sec == 0 {
                        return Err("net.bandwidth: a rate above 0".into());
                    }
                    Kind::NetBandwidth {
                        target: t,
                        bytes_per_sec,
                    }
                }
                _ => {
                    need(2, "tls.alert HOST:PORT ALERT (e.g. handshake_failure)")?;
                    let name = pos[1].to_string();
                    let alert = ALERTS
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|&(_, c)| c)
                        .or_else(|| name.parse().ok())
                        .ok_or(format!("{name:?}: not a TLS alert name"))?;
                    Kind::TlsAlert {
                        target: t,
                        alert,
                        name,
                    }
                }
            }
        }
        "dns.fail" => {
            need(1, "dns.fail NAME (* matches any run: *.example.com)")?;
            Kind::DnsFail(pos[0].to_string())
        }
        "dns.delay" => {
            need(2, "dns.delay NAME DUR (* matches any run)")?;
            Kind::DnsDelay {
                name: pos[0].to_string(),
                delay: duration(pos[1])?,
            }
        }
        other => return Err(format!("unknown fault kind {other:?}")),
    };
    Ok(Rule { kind, module, text })
}

/// Whether a DNS rule's name matches a looked-up name.
pub(crate) fn name_matches(rule: &str, name: &str) -> bool {
    glob(rule.as_bytes(), name.as_bytes())
}

/// Case-insensitive match where `*` stands for any run of characters (`*.example.com`, `api*`).
fn glob(pat: &[u8], s: &[u8]) -> bool {
    match pat.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((p, rest)) => s
            .split_first()
            .is_some_and(|(c, tail)| c.eq_ignore_ascii_case(p) && glob(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_with_wildcards_and_any_case() {
        assert!(name_matches("*", "example.com"));
        assert!(name_matches("Example.COM", "example.com"));
        assert!(name_matches("*.example.com", "api.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("local*", "localhost"));
        assert!(!name_matches("local*", "xlocalhost"));
        assert!(!name_matches("example.com", "example.co"));
    }

    #[test]
    fn every_example_of_the_issue_parses() {
        for line in [
            "serial.latency 20ms..80ms",
            "serial.split 1..7 gap=2ms",
            "serial.noise drop=0.001 corrupt=0.001",
            "serial.stall 3s",
            "module.reset after=12cmds",
            "wifi.down after=2s",
            "wifi.join-fail p=0.5",
            "net.refuse 127.0.0.1:7001",
            "net.blackhole *:443",
            "net.reset 127.0.0.1:7001 after=1000B",
            "net.close 127.0.0.1:7001 after=1000B",
            "net.latency *:* 50ms",
            "net.bandwidth *:* 20kB/s",
            "dns.fail example.com",
            "dns.delay * 2s",
            "tls.alert 127.0.0.1:8443 handshake_failure",
            "wifi.slow join=3s scan=2s",
            "wifi.hide Home Net",
            "module.reset at=1.5s module=2",
        ] {
            let r = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(r.to_string(), line);
        }
    }

    #[test]
    fn values() {
        assert_eq!(
            parse("serial.latency 20ms..80ms").unwrap().kind,
            Kind::SerialLatency(Span {
                min: Duration::from_millis(20),
                max: Duration::from_millis(80)
            })
        );
        assert_eq!(
            parse("net.bandwidth *:* 20kB/s").unwrap().kind,
            Kind::NetBandwidth {
                target: Target {
                    ip: None,
                    port: None
                },
                bytes_per_sec: 20_000
            }
        );
        let t = match parse("net.blackhole *:443").unwrap().kind {
            Kind::NetBlackhole(t) => t,
            k => panic!("{k:?}"),
        };
        assert!(t.matches(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 5), 443)));
        assert!(!t.matches(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 5), 80)));
        assert_eq!(
            parse("tls.alert 127.0.0.1:8443 handshake_failure")
                .unwrap()
                .kind,
            Kind::TlsAlert {
                target: Target {
                    ip: Some(Ipv4Addr::LOCALHOST),
                    port: Some(8443)
                },
                alert: 40,
                name: "handshake_failure".into()
            }
        );
        assert_eq!(parse("serial.stall 3s module=1").unwrap().module, Some(1));
        assert_eq!(
            parse("module.reset after=12cmds").unwrap().kind,
            Kind::ModuleReset(When::Commands(12))
        );
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        let e = |l: &str| parse(l).unwrap_err();
        assert!(e("serial.lag 1s").contains("unknown fault kind"));
        assert!(e("serial.latency 20").contains("needs a unit"));
        assert!(e("serial.latency 80ms..20ms").contains("backwards"));
        assert!(e("serial.split 0..3").contains("1 <= MIN"));
        assert!(e("serial.noise").contains("drop=P"));
        assert!(e("wifi.join-fail p=2").contains("between 0 and 1"));
        assert!(e("net.refuse localhost:80").contains("IPv4"));
        assert!(e("net.reset *:80").contains("after=NB"));
        assert!(e("tls.alert *:443 frobnicate").contains("TLS alert"));
        assert!(e("net.bandwidth *:* 20kB").contains("per second"));
        assert!(e("").contains("empty"));
    }

    #[test]
    fn what_is_not_understood_is_refused_with_the_reason() {
        let e = |l: &str| parse(l).unwrap_err();
        assert_eq!(
            e("serial.split 1..7 unknown=1"),
            "serial.split: unknown option unknown= (it takes gap=; usage: serial.split MIN..MAX \
             [gap=DUR])"
        );
        assert_eq!(
            e("serial.stall 3s gap=1ms"),
            "serial.stall: unknown option gap= (it takes no options; usage: serial.stall DUR)"
        );
        assert_eq!(
            e("serial.noise drop=0.1 dir=in dir=out"),
            "serial.noise: dir= given twice"
        );
        assert_eq!(
            e("serial.split 1..7 gap=1ms gap=2ms"),
            "serial.split: gap= given twice"
        );
        assert_eq!(
            e("net.refuse *:80 module=1 module=2"),
            "net.refuse: module= given twice"
        );
        assert_eq!(
            e("serial.stall 3s 4s"),
            "serial.stall: unexpected \"4s\" (usage: serial.stall DUR)"
        );
        assert_eq!(
            e("net.latency *:* 50ms now"),
            "net.latency: unexpected \"now\" (usage: net.latency HOST:PORT DUR)"
        );
        assert_eq!(
            e("module.reset after=2cmds at=1s"),
            "module.reset: after=Ncmds or at=DUR"
        );
        assert_eq!(e("wifi.down module=x"), "module=K needs a module number");
        // An SSID is every word, `=` included.
        assert_eq!(
            parse("wifi.hide a=b c module=1").unwrap().kind,
            Kind::WifiHide("a=b c".into())
        );
        assert_eq!(
            parse("module.reset after=18446744073709551615cmds")
                .unwrap()
                .kind,
            Kind::ModuleReset(When::Commands(u64::MAX))
        );
    }
}
