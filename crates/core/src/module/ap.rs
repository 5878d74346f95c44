//! Soft-AP area (layer: core): the `A*`/`Z6` settings, `A0`/`AD`/`AE`/`A?`, and the stations its DHCP
//! server announces. Pure. While the AP runs, module-side servers listen on its address (a loopback
//! address, so local programs play the stations that join it).

use super::recent::Recent;
use super::{ok, payload, Answer, EventClass, Module, Step};
use crate::iwin::command::ApCmd;
use crate::iwin::reply::Reply;
use std::net::Ipv4Addr;

/// Stations the DHCP server remembers having announced; the least recently seen is forgotten first
/// (and announced again if it comes back).
pub(crate) const MAX_STATIONS: usize = 32;

/// What `AR` reports for every station (a local program next to the AP).
pub(crate) const STATION_RSSI: i32 = -40;

/// The soft AP: its settings, whether it runs, and the stations it has leased an address to.
#[derive(Debug)]
pub(crate) struct SoftAp {
    pub(crate) settings: ApSettings,
    pub(crate) running: bool,
    stations: Recent<Ipv4Addr>,
}

impl SoftAp {
    pub(crate) fn power_on(ip: Ipv4Addr) -> SoftAp {
        SoftAp {
            settings: ApSettings::power_on(ip),
            running: false,
            stations: Recent::new(MAX_STATIONS),
        }
    }

    pub(crate) fn stop(&mut self) {
        self.running = false;
        self.stations.clear();
    }

    /// Note a station at `ip`; true when it is new (to be announced).
    fn lease(&mut self, ip: Ipv4Addr) -> bool {
        self.stations.touch(ip, ())
    }
}

/// Soft-AP settings (`AS`, `A1`, `A2`, `AC`, `AL`, `AT`, `Z6`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ApSettings {
    #[serde(with = "super::saved::text")]
    pub(crate) ssid: Vec<u8>,
    /// `AS=1,…`: the SSID gets `_<MAC>` appended.
    pub(crate) append_mac: bool,
    pub(crate) security: u8,
    #[serde(with = "super::saved::text")]
    pub(crate) key: Vec<u8>,
    pub(crate) channel: u8,
    pub(crate) lease: u8,
    pub(crate) max_clients: u8,
    pub(crate) ip: Ipv4Addr,
}

impl ApSettings {
    /// Power-up values (M46: `AS` default `1,eS-WiFi_AP`, `AT` 4).
    pub(crate) fn power_on(ip: Ipv4Addr) -> ApSettings {
        ApSettings {
            ssid: b"eS-WiFi_AP".to_vec(),
            append_mac: true,
            security: 0,
            key: Vec::new(),
            channel: 1,
            lease: 24,
            max_clients: 4,
            ip,
        }
    }

    /// The SSID the AP announces.
    pub(crate) fn effective_ssid(&self, mac: [u8; 6]) -> Vec<u8> {
        let mut s = self.ssid.clone();
        if self.append_mac {
            s.extend_from_slice(b"_");
            for b in mac {
                s.extend_from_slice(format!("{b:02X}").as_bytes());
            }
        }
        s
    }

    /// `A?`: `SSID,IP,Channel,SecType,Key,DHCP,Lease,Status`.
    pub(crate) fn query_line(&self, mac: [u8; 6], running: bool) -> Vec<u8> {
        let mut line = self.effective_ssid(mac);
        line.extend_from_slice(
            format!(",{},{},{},", self.ip, self.channel, self.security).as_bytes(),
        );
        line.extend_from_slice(&self.key);
        line.extend_from_slice(format!(",1,{},{}", self.lease, running as u8).as_bytes());
        line
    }
}

/// The MAC the emulated DHCP server reports for a station at `ip` (locally administered, derived
/// from the address so the same program always gets the same one).
pub(crate) fn station_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:00:{:02X}:{:02X}:{:02X}:{:02X}", o[0], o[1], o[2], o[3])
}

impl Module {
    pub(super) fn ap_command(&mut self, cmd: ApCmd) -> Step {
        let ap = &mut self.ap.settings;
        match cmd {
            ApCmd::SetIp(ip) => ap.ip = ip,
            ApCmd::SetSsid(mac, ssid) => {
                ap.append_mac = mac;
                ap.ssid = ssid;
            }
            ApCmd::SetSecurity(v) => ap.security = v,
            ApCmd::SetKey(k) => ap.key = k,
            ApCmd::SetChannel(c) => ap.channel = c,
            ApCmd::SetLease(v) => ap.lease = v,
            ApCmd::SetMaxClients(v) => ap.max_clients = v,
            ApCmd::Start { direct } => return self.ap_start(direct),
            ApCmd::Stop => {
                if self.ap.running {
                    log::info!("soft AP stopped");
                }
                self.ap.stop();
            }
            ApCmd::ClientRssi => return payload(self.ap_client_lines()),
            ApCmd::Query => {
                let (mac, running) = (self.sys.settings.mac, self.ap.running);
                let mut hidden = self.ap.settings.clone();
                hidden.key = b"<key hidden>".to_vec();
                return Ok(Answer::Secret {
                    reply: Reply::Ok(self.ap.settings.query_line(mac, running)),
                    log: hidden.query_line(mac, running),
                });
            }
        }
        ok()
    }

    /// `A0`/`AD`: bring the soft AP up.
    fn ap_start(&mut self, direct: bool) -> Step {
        if self.ap.running {
            return payload("[AP     ] Already running");
        }
        self.ap.running = true;
        let ap = &self.ap.settings;
        let ssid = String::from_utf8_lossy(&ap.effective_ssid(self.sys.settings.mac)).into_owned();
        log::info!(
            "soft AP {ssid:?} up at {}; servers listen on {}",
            ap.ip,
            self.ap_bind_ip()
        );
        let mut p = format!("[AP     ] SSID: {ssid},{}", ap.ip);
        if direct {
            p.push_str("\r\n[WEB SVR] CSO Server started");
        }
        payload(p)
    }

    /// `AR`: one `<n>,<MAC>,<rssi>` line per station the AP has leased an address to, each ending
    /// CR LF (Mongoose parses only terminated lines and wants a negative RSSI); none when the AP is
    /// down (never an error: Mongoose stops polling for good after one).
    fn ap_client_lines(&self) -> String {
        if !self.ap.running {
            return String::new();
        }
        let mut out = String::new();
        for (n, ip) in self.ap.stations.keys().enumerate() {
            out.push_str(&format!(
                "{},{},{}\r\n",
                n + 1,
                station_mac(*ip),
                STATION_RSSI
            ));
        }
        out
    }

    /// The soft AP's address on this host (a non-loopback `Z6` cannot be bound here).
    pub(super) fn ap_bind_ip(&self) -> Ipv4Addr {
        if self.ap.settings.ip.is_loopback() {
            self.ap.settings.ip
        } else {
            self.cfg.network.ap_ip
        }
    }

    /// Address module-side servers listen on: the soft AP's while it runs without a station link.
    pub(super) fn server_ip(&self) -> Ipv4Addr {
        if self.ap.running && self.station.link.is_none() {
            self.ap_bind_ip()
        } else {
            self.source_ip()
        }
    }

    /// A local program reached a server through the AP: it plays a station that joined and got a
    /// lease, announced once.
    pub(super) fn ap_client(&mut self, ip: Ipv4Addr) {
        if !self.ap.running || self.station.link.is_some() || !self.ap.lease(ip) {
            return;
        }
        let msg = format!("[AP DHCP] Assigned {} has {}", station_mac(ip), ip);
        self.emit_event(EventClass::Dhcp, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssid_with_mac_and_query_line() {
        let mut ap = ApSettings::power_on(Ipv4Addr::new(127, 0, 10, 1));
        let mac = [0x00, 0x22, 0xF4, 0x0B, 0xBC, 0x0F];
        assert_eq!(ap.effective_ssid(mac), b"eS-WiFi_AP_0022F40BBC0F");
        ap.append_mac = false;
        ap.key = b"secret99".to_vec();
        assert_eq!(
            ap.query_line(mac, true),
            b"eS-WiFi_AP,127.0.10.1,1,0,secret99,1,24,1"
        );
        assert_eq!(
            station_mac(Ipv4Addr::new(127, 0, 0, 1)),
            "02:00:7F:00:00:01"
        );
    }
}
