//! Wi-Fi station emulation (layer: core): the `C*` settings, the join decision against the configured
//! access points, and the `F0` scan list. Pure.

use crate::config::{AccessPoint, Config, Security};
use std::net::Ipv4Addr;

/// Station settings (`C1`..`CC`, `CN`, `CE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StationSettings {
    pub ssid: Vec<u8>,
    pub passphrase: Vec<u8>,
    pub security: u8,
    pub dhcp: bool,
    pub ip_version: u8,
    pub ip: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub dns1: Ipv4Addr,
    pub dns2: Ipv4Addr,
    pub join_retries: u8,
    pub auto_connect: u8,
    pub auth_type: u8,
    pub country: Vec<u8>,
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
        }
    }
}

/// The association once joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub ssid: Vec<u8>,
    pub ip: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub dns1: Ipv4Addr,
    pub dns2: Ipv4Addr,
    pub rssi: i32,
}

/// Why a join failed (logged; the wire reply is always the `[JOIN   ] Failed` form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    NoSsid,
    UnknownSsid,
    WrongSecurity { ap: Security, asked: u8 },
    WrongPassphrase,
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
        }
    }
}

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
pub fn join(cfg: &Config, st: &StationSettings) -> Result<Link, JoinError> {
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
pub fn scan_list(cfg: &Config, st: &StationSettings) -> Vec<AccessPoint> {
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
pub fn scan_line(index: usize, ap: &AccessPoint) -> String {
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
