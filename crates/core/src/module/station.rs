//! Station area (layer: core): the `C*` settings, joining (`C0`) against the configured access
//! points, the `F0` scan list, `CD`, and `D0` name lookups. Pure.

use super::error::StationError;
use super::io::{NetOp, QueryId, ResolveError};
use super::{ok, payload, Answer, Busy, Module, Step, DNS_TIMEOUT};
use crate::config::{AccessPoint, Config, Security};
use crate::iwin::command::ParseError;
use crate::iwin::command::{self, AddrField, StationCmd};
use crate::iwin::reply::Reason;
use crate::iwin::reply::Reply;
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The station: its settings and, once joined, the association.
#[derive(Debug, Default)]
pub(crate) struct Station {
    pub(crate) settings: StationSettings,
    pub(crate) link: Option<Link>,
    /// `F0=2`: the access points not yet fetched with `MR` (Some until the `MR` that ends the
    /// list with OK).
    pub(crate) scan_rest: Option<VecDeque<String>>,
}

/// Station settings (`C1`..`CC`, `CN`, `CE`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StationSettings {
    #[serde(with = "super::saved::text")]
    pub(crate) ssid: Vec<u8>,
    #[serde(with = "super::saved::text")]
    pub(crate) passphrase: Vec<u8>,
    pub(crate) security: u8,
    pub(crate) dhcp: bool,
    pub(crate) ip_version: u8,
    pub(crate) ip: Ipv4Addr,
    pub(crate) mask: Ipv4Addr,
    pub(crate) gateway: Ipv4Addr,
    pub(crate) dns1: Ipv4Addr,
    pub(crate) dns2: Ipv4Addr,
    pub(crate) join_retries: u8,
    pub(crate) auto_connect: u8,
    pub(crate) auth_type: u8,
    #[serde(with = "super::saved::text")]
    pub(crate) country: Vec<u8>,
    /// `CY=1`: `C?` shows `*RESTRICTED*` instead of the passphrase.
    pub(crate) key_privacy: bool,
}

impl Default for StationSettings {
    fn default() -> Self {
        StationSettings {
            ssid: Vec::new(),
            passphrase: Vec::new(),
            security: 0,
            dhcp: true,
            ip_version: 0,
            ip: Ipv4Addr::UNSPECIFIED,
            mask: Ipv4Addr::UNSPECIFIED,
            gateway: Ipv4Addr::UNSPECIFIED,
            dns1: Ipv4Addr::BROADCAST,
            dns2: Ipv4Addr::BROADCAST,
            join_retries: 5,
            auto_connect: 0,
            auth_type: 0,
            country: b"US/0".to_vec(),
            key_privacy: false,
        }
    }
}

/// The association once joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) ssid: Vec<u8>,
    pub(crate) ip: Ipv4Addr,
    pub(crate) mask: Ipv4Addr,
    pub(crate) gateway: Ipv4Addr,
    pub(crate) dns1: Ipv4Addr,
    pub(crate) dns2: Ipv4Addr,
    pub(crate) rssi: i32,
}

/// Why a join failed (logged; the wire reply is always the `[JOIN   ] Failed` form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinError {
    NoSsid,
    UnknownSsid,
    WrongSecurity {
        ap: Security,
        asked: u8,
    },
    WrongPassphrase,
    /// A fault made it fail (`wifi.join-fail`).
    Fault,
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::NoSsid => write!(f, "no SSID set (C1)"),
            JoinError::UnknownSsid => write!(f, "no configured access point has this SSID"),
            JoinError::WrongSecurity { ap, asked } => write!(
                f,
                "access point uses {} but C3={} was set",
                ap.scan_name(),
                asked
            ),
            JoinError::WrongPassphrase => write!(f, "wrong passphrase (C2)"),
            JoinError::Fault => write!(f, "a fault (wifi.join-fail) made it fail"),
        }
    }
}

impl std::error::Error for JoinError {}

/// Whether host security `asked` (C3) can join an AP using `ap`. C3=4 (WPA/WPA2 mixed, what Zephyr
/// sends) joins any WPA-family AP; a mixed AP accepts any WPA-family setting.
fn security_matches(ap: Security, asked: u8) -> bool {
    let wpa_family = |c: u8| matches!(c, 2..=5);
    match ap {
        Security::Open => asked == 0,
        Security::Wep => asked == 1,
        Security::Wpa2Mixed => wpa_family(asked),
        other => asked == other.code() || (asked == 4 && wpa_family(other.code())),
    }
}

/// Decide a join: with no access points configured any non-empty SSID joins; otherwise SSID, security
/// and passphrase must match one.
pub(crate) fn join(cfg: &Config, st: &StationSettings) -> Result<Link, JoinError> {
    if st.ssid.is_empty() {
        return Err(JoinError::NoSsid);
    }
    let rssi = if cfg.access_points.is_empty() {
        -45
    } else {
        let ap = cfg
            .access_points
            .iter()
            .find(|ap| ap.ssid.as_bytes() == st.ssid.as_slice())
            .ok_or(JoinError::UnknownSsid)?;
        if !security_matches(ap.security, st.security) {
            return Err(JoinError::WrongSecurity {
                ap: ap.security,
                asked: st.security,
            });
        }
        if ap.security != Security::Open && ap.password.as_bytes() != st.passphrase.as_slice() {
            return Err(JoinError::WrongPassphrase);
        }
        ap.rssi
    };
    let net = &cfg.network;
    // A static address (C4=0) is reported as set; sockets still use the configured loopback address
    // unless the static one is itself on loopback (see Module::source_ip).
    Ok(if st.dhcp {
        Link {
            ssid: st.ssid.clone(),
            ip: net.ip,
            mask: net.mask,
            gateway: net.gateway,
            dns1: net.dns1,
            dns2: net.dns2,
            rssi,
        }
    } else {
        Link {
            ssid: st.ssid.clone(),
            ip: st.ip,
            mask: st.mask,
            gateway: st.gateway,
            dns1: st.dns1,
            dns2: st.dns2,
            rssi,
        }
    })
}

/// The networks `F0` reports: the configured access points, or (none configured) the network set
/// with `C1` plus two sample networks.
pub(crate) fn scan_list(cfg: &Config, st: &StationSettings) -> Vec<AccessPoint> {
    if !cfg.access_points.is_empty() {
        return cfg.access_points.clone();
    }
    let mut list = Vec::new();
    if !st.ssid.is_empty() {
        list.push(AccessPoint {
            ssid: String::from_utf8_lossy(&st.ssid).into_owned(),
            security: Security::from_code(st.security).unwrap_or(Security::Open),
            password: String::new(),
            bssid: "02:00:5E:10:00:01".into(),
            rssi: -45,
            channel: 6,
        });
    }
    list.push(AccessPoint {
        ssid: "eswifi-emu-sample".into(),
        security: Security::Wpa2Aes,
        password: String::new(),
        bssid: "02:00:5E:10:00:02".into(),
        rssi: -67,
        channel: 1,
    });
    list.push(AccessPoint {
        ssid: "eswifi-emu-open".into(),
        security: Security::Open,
        password: String::new(),
        bssid: "02:00:5E:10:00:03".into(),
        rssi: -78,
        channel: 11,
    });
    list
}

/// One `F0` line: `#NNN,"ssid",BSSID,rssi,rate,type,security,band,channel`.
pub(crate) fn scan_line(index: usize, ap: &AccessPoint) -> String {
    let band = if ap.channel > 14 { "5GHz" } else { "2.4GHz" };
    format!(
        "#{:03},\"{}\",{},{},{:.1},Infrastructure,{},{},{}",
        index,
        ap.ssid,
        ap.bssid.to_ascii_uppercase(),
        ap.rssi,
        if ap.security == Security::Open {
            54.0
        } else {
            72.2
        },
        ap.security.scan_name(),
        band,
        ap.channel
    )
}

impl Module {
    pub(super) fn station_command(&mut self, cmd: StationCmd, now: Instant) -> Step {
        use StationCmd::*;
        let st = &mut self.station.settings;
        match cmd {
            SetSsid(v) => st.ssid = v,
            SetPassphrase(v) => st.passphrase = v,
            SetSecurity(v) => st.security = v,
            SetDhcp(v) => st.dhcp = v,
            SetIpVersion(v) => st.ip_version = v,
            SetAddress(field, ip) => {
                *match field {
                    AddrField::Ip => &mut st.ip,
                    AddrField::Mask => &mut st.mask,
                    AddrField::Gateway => &mut st.gateway,
                    AddrField::Dns1 => &mut st.dns1,
                    AddrField::Dns2 => &mut st.dns2,
                } = ip;
            }
            SetJoinRetries(v) => st.join_retries = v,
            SetAutoConnect(v) => st.auto_connect = v,
            Country(Some(c)) => st.country = c,
            SetWepAuth(v) => st.auth_type = v,
            SetKeyPrivacy(v) => st.key_privacy = v,
            LinkRate => {
                // Mbit/s of the association: what F0 reports as the rate, whole.
                let rate = match &self.station.link {
                    None => 0,
                    Some(_) if st.security == 0 => 54,
                    Some(_) => 72,
                };
                return payload(rate.to_string());
            }
            Wps(mode) => {
                log::warn!(
                    "CW={mode}: WPS is not emulated (no access point offers it); join with C1/C2/C3/C0"
                );
                return Err(StationError::WpsFailed.into());
            }
            Stub(m) => log::debug!("{}: accepted; nothing to emulate", m.text()),
            Country(None) => return payload(st.country.clone()),
            Disconnect => {
                if self.station.link.take().is_some() {
                    log::info!("left the network; all sockets closed");
                }
                for i in 0..self.sockets.len() {
                    self.abort_socket(i, "CD");
                }
            }
            Rssi => {
                let rssi = self.station.link.as_ref().map_or(0, |l| l.rssi);
                return payload(rssi.to_string());
            }
            Status => {
                return payload(if self.station.link.is_some() {
                    "1"
                } else {
                    "0"
                })
            }
            Join => {
                if self.station.link.is_some() {
                    return Err(StationError::AlreadyConnected.into());
                }
                let time = self
                    .wifi_faults
                    .join_delay
                    .unwrap_or(Duration::from_millis(self.cfg.timing.join_ms));
                if !time.is_zero() {
                    return Ok(Answer::Wait(Busy::Join {
                        deadline: now + time,
                    }));
                }
                return self.finish_join();
            }
            Query => {
                return Ok(Answer::Secret {
                    reply: Reply::Ok(self.station_line(false)),
                    log: self.station_line(true),
                });
            }
            Scan { one_by_one } => {
                if one_by_one && !self.profile.scan_one_by_one() {
                    // Before C3.5.2.5 F0 takes no argument (and ST/Mbed never send one).
                    return Err(ParseError {
                        mnemonic: Some(command::Mnemonic::F0),
                        reason: Reason::TooManyArguments,
                    }
                    .into());
                }
                self.station.scan_rest = None;
                let time = self
                    .wifi_faults
                    .scan_delay
                    .unwrap_or(Duration::from_millis(self.cfg.timing.scan_ms));
                if !time.is_zero() {
                    return Ok(Answer::Wait(Busy::Scan {
                        one_by_one,
                        deadline: now + time,
                    }));
                }
                return self.finish_scan(one_by_one);
            }
            Lookup(name) => return self.lookup(name, now),
        }
        ok()
    }

    /// `C0` after its emulated time.
    pub(super) fn finish_join(&mut self) -> Step {
        let settings = &self.station.settings;
        let ssid = String::from_utf8_lossy(&settings.ssid).into_owned();
        let outcome = if self.wifi_faults.hidden.contains(&ssid) {
            Err(JoinError::UnknownSsid)
        } else if self.wifi_rng.chance(self.wifi_faults.join_fail) {
            self.fault_fired(super::FaultFired::JoinFail { ssid: ssid.clone() });
            Err(JoinError::Fault)
        } else {
            join(&self.cfg, settings)
        };
        let settings = &self.station.settings;
        match outcome {
            Ok(link) => {
                log::info!("joined {ssid:?} as {}", link.ip);
                let r = format!("[JOIN   ] {},{},0,0", ssid, link.ip);
                self.station.link = Some(link);
                payload(r)
            }
            Err(e) => {
                log::warn!("join {ssid:?} failed: {e}");
                Err(StationError::JoinFailed {
                    ssid: settings.ssid.clone(),
                }
                .into())
            }
        }
    }

    /// `F0` after its emulated time: every line in one reply, or (`F0=2`) the first access point,
    /// the others kept for `MR`.
    pub(super) fn finish_scan(&mut self, one_by_one: bool) -> Step {
        let lines: VecDeque<String> = scan_list(&self.cfg, &self.station.settings)
            .iter()
            .filter(|ap| !self.wifi_faults.hidden.contains(&ap.ssid))
            .enumerate()
            .map(|(i, ap)| scan_line(i + 1, ap))
            .collect();
        if !one_by_one {
            return payload(Vec::from(lines).join("\r\n"));
        }
        self.station.scan_rest = Some(lines);
        self.next_scan_result().unwrap_or_else(ok)
    }

    /// `MR` after `F0=2`: the next access point as `[SOMA]#NNN,…[EOMA]` without a status (spec §3.5:
    /// ST and Mbed take a reply with OK as the end of the list), then OK, which ends the list.
    /// None when no `F0=2` list is being fetched.
    pub(super) fn next_scan_result(&mut self) -> Option<Step> {
        let rest = self.station.scan_rest.as_mut()?;
        Some(match rest.pop_front() {
            Some(line) => Ok(Answer::Reply(Reply::Part(
                format!("[SOMA]{line}[EOMA]").into_bytes(),
            ))),
            None => {
                self.station.scan_rest = None;
                ok()
            }
        })
    }

    /// `C?`: `SSID,Password,Security,DHCP,IPver,IP,Mask,Gateway,DNS1,DNS2,JoinRetries,AutoConnect,
    /// AuthType,CountryCode,Status`; `hide_secret` masks the password (for the log).
    fn station_line(&self, hide_secret: bool) -> Vec<u8> {
        let st = &self.station.settings;
        let zero = Ipv4Addr::UNSPECIFIED;
        let (ip, mask, gw, dns1, dns2) = match &self.station.link {
            Some(l) => (l.ip, l.mask, l.gateway, l.dns1, l.dns2),
            None if st.dhcp => (zero, zero, zero, st.dns1, st.dns2),
            None => (st.ip, st.mask, st.gateway, st.dns1, st.dns2),
        };
        let cc = st.country.split(|&b| b == b'/').next().unwrap_or_default();
        let mut line = Vec::new();
        line.extend_from_slice(&st.ssid);
        line.push(b',');
        if st.key_privacy {
            line.extend_from_slice(b"*RESTRICTED*");
        } else if hide_secret {
            line.extend_from_slice(b"<passphrase hidden>");
        } else {
            line.extend_from_slice(&st.passphrase);
        }
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
        line.extend_from_slice(if self.station.link.is_some() {
            b",1"
        } else {
            b",0"
        });
        line
    }

    fn lookup(&mut self, name: Vec<u8>, now: Instant) -> Step {
        let name = String::from_utf8_lossy(&name).into_owned();
        if self.station.link.is_none() {
            log::warn!("D0 {name}: not joined to a network");
            return Err(StationError::HostNotFound {
                name,
                timed_out: false,
            }
            .into());
        }
        if let Ok(ip) = command::ipv4(name.as_bytes()) {
            self.sockets[self.current].remote_ip = ip;
            return payload(ip.to_string());
        }
        let query = self.next_id(QueryId);
        self.ops.push_back(NetOp::Resolve {
            query,
            name: name.clone(),
        });
        Ok(Answer::Wait(Busy::Resolve {
            query,
            name,
            socket: self.current,
            deadline: now + DNS_TIMEOUT,
        }))
    }

    pub(super) fn on_resolved(&mut self, query: QueryId, result: Result<Ipv4Addr, ResolveError>) {
        let (name, socket) = match self.busy.take() {
            Some(Busy::Resolve {
                query: q,
                name,
                socket,
                ..
            }) if q == query => (name, socket),
            other => {
                // A late answer (the lookup timed out) or none asked for.
                self.busy = other;
                return;
            }
        };
        let step = match result {
            Ok(ip) => {
                log::info!("D0 {name} -> {ip}");
                self.sockets[socket].remote_ip = ip;
                self.remember_name(ip, name);
                payload(ip.to_string())
            }
            Err(e) => {
                log::warn!("D0 {name}: {e}");
                Err(StationError::HostNotFound {
                    name,
                    timed_out: false,
                }
                .into())
            }
        };
        self.conclude(step);
    }

    /// Source address for outgoing sockets: the station IP when it is on loopback, else the
    /// configured one (a static C6 address elsewhere cannot be bound on this host).
    pub(super) fn source_ip(&self) -> Ipv4Addr {
        match &self.station.link {
            Some(l) if l.ip.is_loopback() => l.ip,
            _ => self.cfg.network.ip,
        }
    }

    /// Joined, or running the soft AP: sockets can be used.
    pub(super) fn network_up(&self) -> bool {
        self.station.link.is_some() || self.ap.running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ap(ssid: &str, security: Security, password: &str) -> AccessPoint {
        AccessPoint {
            ssid: ssid.into(),
            security,
            password: password.into(),
            bssid: "08:86:3B:2B:7E:2E".into(),
            rssi: -51,
            channel: 1,
        }
    }

    fn settings(ssid: &str, pass: &str, sec: u8) -> StationSettings {
        StationSettings {
            ssid: ssid.into(),
            passphrase: pass.into(),
            security: sec,
            ..StationSettings::default()
        }
    }

    #[test]
    fn any_network_joins_without_configured_aps() {
        let cfg = Config::default();
        let link = join(&cfg, &settings("whatever", "pw", 3)).unwrap();
        assert_eq!(link.ip, Ipv4Addr::LOCALHOST);
        assert_eq!(join(&cfg, &settings("", "", 0)), Err(JoinError::NoSsid));
    }

    #[test]
    fn configured_aps_check_ssid_security_and_passphrase() {
        let cfg = Config {
            access_points: vec![
                ap("home", Security::Wpa2Aes, "secret123"),
                ap("cafe", Security::Open, ""),
            ],
            ..Config::default()
        };
        assert!(join(&cfg, &settings("home", "secret123", 3)).is_ok());
        assert!(
            join(&cfg, &settings("home", "secret123", 4)).is_ok(),
            "mixed joins WPA2"
        );
        assert_eq!(
            join(&cfg, &settings("home", "nope", 3)),
            Err(JoinError::WrongPassphrase)
        );
        assert!(matches!(
            join(&cfg, &settings("home", "secret123", 0)),
            Err(JoinError::WrongSecurity { .. })
        ));
        assert_eq!(
            join(&cfg, &settings("other", "x", 3)),
            Err(JoinError::UnknownSsid)
        );
        assert!(join(&cfg, &settings("cafe", "", 0)).is_ok());
    }

    #[test]
    fn scan_line_format() {
        assert_eq!(
            scan_line(1, &ap("SSID1", Security::Wpa2Aes, "")),
            "#001,\"SSID1\",08:86:3B:2B:7E:2E,-51,72.2,Infrastructure,WPA2 AES,2.4GHz,1"
        );
    }
}
