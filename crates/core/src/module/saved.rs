//! Saved settings (layer: core, pure): what `Z1` writes to flash and the module loads at boot and on
//! `ZR`. A small line format, `key=value`, strings hex-encoded so any byte survives; unknown keys are
//! ignored (newer files stay loadable) and a malformed line is an error naming it.

use super::ap::ApSettings;
use super::station::StationSettings;
use std::net::Ipv4Addr;

/// Everything `Z1` saves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Saved {
    pub(crate) station: StationSettings,
    pub(crate) ap: ApSettings,
    pub(crate) mac: [u8; 6],
    pub(crate) product_name: Vec<u8>,
    pub(crate) baud: u32,
    pub(crate) message_type: u8,
    pub(crate) suppress: u8,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Saved {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let st = &self.station;
        let ap = &self.ap;
        let lines = [
            "eswifi-emu-settings 1".to_string(),
            format!("ssid={}", hex(&st.ssid)),
            format!("passphrase={}", hex(&st.passphrase)),
            format!("security={}", st.security),
            format!("dhcp={}", st.dhcp as u8),
            format!("ip_version={}", st.ip_version),
            format!("ip={}", st.ip),
            format!("mask={}", st.mask),
            format!("gateway={}", st.gateway),
            format!("dns1={}", st.dns1),
            format!("dns2={}", st.dns2),
            format!("join_retries={}", st.join_retries),
            format!("auto_connect={}", st.auto_connect),
            format!("auth_type={}", st.auth_type),
            format!("key_privacy={}", st.key_privacy as u8),
            format!("country={}", hex(&st.country)),
            format!("mac={}", hex(&self.mac)),
            format!("product_name={}", hex(&self.product_name)),
            format!("baud={}", self.baud),
            format!("message_type={}", self.message_type),
            format!("suppress={}", self.suppress),
            format!("ap_ssid={}", hex(&ap.ssid)),
            format!("ap_append_mac={}", ap.append_mac as u8),
            format!("ap_security={}", ap.security),
            format!("ap_key={}", hex(&ap.key)),
            format!("ap_channel={}", ap.channel),
            format!("ap_lease={}", ap.lease),
            format!("ap_max_clients={}", ap.max_clients),
            format!("ap_ip={}", ap.ip),
        ];
        let mut out = lines.join("\n");
        out.push('\n');
        out.into_bytes()
    }

    /// Apply a saved file onto `self` (the power-up values).
    pub(crate) fn decode_onto(&mut self, data: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(data).map_err(|_| "not text")?;
        let mut lines = text.lines();
        if lines.next() != Some("eswifi-emu-settings 1") {
            return Err("missing `eswifi-emu-settings 1` header".into());
        }
        for line in lines.filter(|l| !l.is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("line {line:?} has no `=`"))?;
            let bad = || format!("bad value in line {line:?}");
            let bytes = || unhex(v).ok_or_else(bad);
            let ip = || v.parse::<Ipv4Addr>().map_err(|_| bad());
            let st = &mut self.station;
            let ap = &mut self.ap;
            macro_rules! num {
                () => {
                    v.parse().map_err(|_| bad())?
                };
            }
            match k {
                "ssid" => st.ssid = bytes()?,
                "passphrase" => st.passphrase = bytes()?,
                "security" => st.security = num!(),
                "dhcp" => st.dhcp = v == "1",
                "ip_version" => st.ip_version = num!(),
                "ip" => st.ip = ip()?,
                "mask" => st.mask = ip()?,
                "gateway" => st.gateway = ip()?,
                "dns1" => st.dns1 = ip()?,
                "dns2" => st.dns2 = ip()?,
                "join_retries" => st.join_retries = num!(),
                "auto_connect" => st.auto_connect = num!(),
                "auth_type" => st.auth_type = num!(),
                "key_privacy" => st.key_privacy = v == "1",
                "country" => st.country = bytes()?,
                "mac" => self.mac = bytes()?.try_into().map_err(|_| bad())?,
                "product_name" => self.product_name = bytes()?,
                "baud" => self.baud = num!(),
                "message_type" => self.message_type = num!(),
                "suppress" => self.suppress = num!(),
                "ap_ssid" => ap.ssid = bytes()?,
                "ap_append_mac" => ap.append_mac = v == "1",
                "ap_security" => ap.security = num!(),
                "ap_key" => ap.key = bytes()?,
                "ap_channel" => ap.channel = num!(),
                "ap_lease" => ap.lease = num!(),
                "ap_max_clients" => ap.max_clients = num!(),
                "ap_ip" => ap.ip = ip()?,
                _ => log::debug!("saved settings: unknown key {k:?} ignored"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Saved {
        Saved {
            station: StationSettings::default(),
            ap: ApSettings::power_on(Ipv4Addr::new(127, 0, 10, 1)),
            mac: [1, 2, 3, 4, 5, 6],
            product_name: b"name, with comma\n".to_vec(),
            baud: 115_200,
            message_type: 0,
            suppress: 0,
        }
    }

    #[test]
    fn round_trip_keeps_every_byte() {
        let mut s = sample();
        s.station.ssid = b"my net=\x00\xff".to_vec();
        s.station.auto_connect = 1;
        s.station.key_privacy = true;
        s.message_type = 1;
        s.ap.key = b"k=ey".to_vec();
        let mut back = sample();
        back.decode_onto(&s.encode()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn malformed_lines_are_named() {
        let mut s = sample();
        let err = s
            .decode_onto(b"eswifi-emu-settings 1\nip=1.2.3\n")
            .unwrap_err();
        assert!(err.contains("ip=1.2.3"), "{err}");
        assert!(s.decode_onto(b"something else").is_err());
    }
}
