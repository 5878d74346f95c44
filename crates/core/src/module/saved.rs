//! Saved settings (layer: core, pure): what `Z1` writes to flash and the module loads at boot and on
//! `ZR`, as TOML through serde: one table per area (`[system]`, `[station]`, `[ap]`), byte strings
//! as text when they are UTF-8 (else as arrays of bytes, so any byte survives). Keys a file leaves
//! out keep their power-up values and unknown keys are ignored, so older and newer files stay
//! loadable; a malformed file is an error saying why.
//!
//! The first format (`eswifi-emu-settings 1`, `key=value` lines, strings in hex) is still read, so
//! that settings saved before stay; the module rewrites such a file as TOML once (see
//! `is_legacy`).

use super::ap::ApSettings;
use super::station::StationSettings;
use super::system::SystemSettings;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Everything `Z1` saves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub(crate) system: SystemSettings,
    pub(crate) station: StationSettings,
    pub(crate) ap: ApSettings,
}

/// Why saved settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SavedError {
    NotText,
    /// Not TOML, or a value of the wrong kind: the parser's message.
    Toml(String),
    /// A line of the first format that is not `key=value` or whose value does not parse.
    LegacyLine(String),
}

impl fmt::Display for SavedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SavedError::NotText => f.write_str("not text"),
            SavedError::Toml(why) => write!(f, "not the saved settings' TOML: {why}"),
            SavedError::LegacyLine(line) => write!(f, "bad line {line:?}"),
        }
    }
}

impl std::error::Error for SavedError {}

/// The first line of the first format.
const LEGACY_HEADER: &str = "eswifi-emu-settings 1";

/// Whether `data` is in the first format (to be rewritten as TOML).
pub(crate) fn is_legacy(data: &[u8]) -> bool {
    data.split(|&b| b == b'\n').next() == Some(LEGACY_HEADER.as_bytes())
}

impl Saved {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let body = toml::to_string(self).unwrap_or_else(|e| {
            // Every field is a string, a number, a boolean or an array of bytes.
            log::error!("saved settings do not serialise: {e}");
            String::new()
        });
        format!("# eswifi-emu saved settings (Z1)\n{body}").into_bytes()
    }

    /// The settings in `data`, on top of `self` (the power-up values) for whatever it leaves out.
    pub(crate) fn decode_onto(&self, data: &[u8]) -> Result<Saved, SavedError> {
        let text = std::str::from_utf8(data).map_err(|_| SavedError::NotText)?;
        if is_legacy(data) {
            let mut s = self.clone();
            legacy::decode_onto(&mut s, text)?;
            return Ok(s);
        }
        // The parser's messages span lines (a snippet, the key): one line for the log.
        let why = |e: &dyn fmt::Display| SavedError::Toml(e.to_string().trim().replace('\n', " "));
        let file: toml::Table = toml::from_str(text).map_err(|e| why(&e))?;
        let mut merged = toml::Table::try_from(self).map_err(|e| why(&e))?;
        merge(&mut merged, file);
        merged.try_into().map_err(|e| why(&e))
    }
}

/// `over`'s values replace `base`'s, table by table.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Byte strings (SSIDs, keys, names): text when they are UTF-8, else an array of bytes.
pub(super) mod text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(b) {
            Ok(t) => s.serialize_str(t),
            Err(_) => b.serialize(s),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Str(String),
        Bytes(Vec<u8>),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(match Text::deserialize(d)? {
            Text::Str(s) => s.into_bytes(),
            Text::Bytes(b) => b,
        })
    }
}

/// The first format, read once so that settings saved before are kept.
mod legacy {
    use super::{Saved, SavedError};
    use crate::iwin::command::Code;
    use crate::iwin::reply::MessageType;
    use std::net::Ipv4Addr;

    /// Apply the `key=value` lines after the header onto `s`.
    pub(super) fn decode_onto(s: &mut Saved, text: &str) -> Result<(), SavedError> {
        for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
            let bad = || SavedError::LegacyLine(line.to_string());
            let (k, v) = line.split_once('=').ok_or_else(bad)?;
            let bytes = || crate::hex::decode(v).ok_or_else(bad);
            let ip = || v.parse::<Ipv4Addr>().map_err(|_| bad());
            let (sys, st, ap) = (&mut s.system, &mut s.station, &mut s.ap);
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
                "mac" => sys.mac = bytes()?.try_into().map_err(|_| bad())?,
                "product_name" => sys.product_name = bytes()?,
                "baud" => sys.baud = num!(),
                "message_type" => {
                    let code: u8 = num!();
                    // The first format took anything but 1 as MT=0.
                    sys.mt = MessageType::from_code(code.into()).unwrap_or(MessageType::Normal);
                }
                "suppress" => sys.suppress = num!(),
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
    use crate::iwin::reply::MessageType;
    use std::net::Ipv4Addr;

    fn factory() -> Saved {
        Saved {
            system: SystemSettings {
                mac: [1, 2, 3, 4, 5, 6],
                product_name: b"name, with comma\n".to_vec(),
                baud: 115_200,
                mt: MessageType::Normal,
                suppress: 0,
            },
            station: StationSettings::default(),
            ap: ApSettings::power_on(Ipv4Addr::new(127, 0, 10, 1)),
        }
    }

    #[test]
    fn round_trip_keeps_every_byte() {
        let mut s = factory();
        s.station.ssid = b"my net=\x00\xff".to_vec();
        s.station.passphrase = "pässword \"quoted\"".into();
        s.station.auto_connect = 1;
        s.station.key_privacy = true;
        s.system.mt = MessageType::Simple;
        s.ap.key = b"k=ey".to_vec();
        let data = s.encode();
        let text = String::from_utf8(data.clone()).unwrap();
        assert!(text.contains("[station]"), "{text}");
        assert!(
            text.contains("ssid = [109, 121, 32, 110, 101, 116, 61, 0, 255]"),
            "not UTF-8: bytes, {text}"
        );
        assert!(text.contains("mac = \"01:02:03:04:05:06\""), "{text}");
        assert!(text.contains("message_type = 1"), "{text}");
        assert_eq!(factory().decode_onto(&data), Ok(s));
    }

    #[test]
    fn what_a_file_leaves_out_keeps_its_power_up_value_and_unknown_keys_are_ignored() {
        let f = factory();
        let s = f
            .decode_onto(b"[station]\nssid = \"lab\"\nfuture = 1\n[elsewhere]\nx = 2\n")
            .unwrap();
        let mut want = factory();
        want.station.ssid = b"lab".to_vec();
        assert_eq!(s, want);
    }

    #[test]
    fn a_malformed_file_says_why() {
        let f = factory();
        let err = f.decode_onto(b"[station]\nip = \"1.2.3\"\n").unwrap_err();
        assert!(err.to_string().contains("`station.ip`"), "{err}");
        assert!(f.decode_onto(b"something else").is_err());
        assert_eq!(f.decode_onto(b"\xff"), Err(SavedError::NotText));
        let err = f
            .decode_onto(b"eswifi-emu-settings 1\nip=1.2.3\n")
            .unwrap_err();
        assert_eq!(err, SavedError::LegacyLine("ip=1.2.3".into()));
    }

    /// A file the emulator wrote in the first format (`Z1` after `C1=old net, with comma`,
    /// `C2=pw123456`, `C3=3`, `CC=1`, `ZN=Old Name`, `Z4=02:11:22:33:44:55`, `AS=0,old ap`,
    /// `MS=2`, `MT=1`), as it lies in the store.
    const LEGACY_FILE: &[u8] = include_bytes!("../../../../tests/fixtures/settings-v1.saved");

    #[test]
    fn the_first_format_is_read_with_every_value() {
        let data = crate::item::decode_item(LEGACY_FILE).expect("a complete item");
        assert!(is_legacy(&data));
        let s = factory().decode_onto(&data).unwrap();
        assert_eq!(s.station.ssid, b"old net, with comma");
        assert_eq!(s.station.passphrase, b"pw123456");
        assert_eq!((s.station.security, s.station.auto_connect), (3, 1));
        assert_eq!(s.system.product_name, b"Old Name");
        assert_eq!(s.system.mac, [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!((s.system.mt, s.system.suppress), (MessageType::Simple, 2));
        assert_eq!(
            (s.ap.ssid.as_slice(), s.ap.append_mac),
            (&b"old ap"[..], false)
        );
        assert_eq!(s.ap.ip, Ipv4Addr::new(127, 0, 10, 2));
        // Rewritten, it reads back the same and is no longer the first format.
        let new = s.encode();
        assert!(!is_legacy(&new));
        assert_eq!(factory().decode_onto(&new), Ok(s));
    }
}
