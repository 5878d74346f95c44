//! Soft-AP emulation (layer: core): the `A*`/`Z6` settings and the `A0`/`AD`/`A?` texts. Pure. While
//! the AP runs, module-side servers listen on its address (a loopback address, so local programs play
//! the stations that join it).

use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApSettings {
    pub ssid: Vec<u8>,
    /// `AS=1,…`: the SSID gets `_<MAC>` appended.
    pub append_mac: bool,
    pub security: u8,
    pub key: Vec<u8>,
    pub channel: u8,
    pub lease: u8,
    pub max_clients: u8,
    pub ip: Ipv4Addr,
}

impl ApSettings {
    /// Power-up values (M46: `AS` default `1,eS-WiFi_AP`, `AT` 4).
    pub fn power_on(ip: Ipv4Addr) -> ApSettings {
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
    pub fn effective_ssid(&self, mac: [u8; 6]) -> Vec<u8> {
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
    pub fn query_line(&self, mac: [u8; 6], running: bool) -> Vec<u8> {
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
pub fn station_mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:00:{:02X}:{:02X}:{:02X}:{:02X}", o[0], o[1], o[2], o[3])
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
