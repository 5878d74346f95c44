//! Configuration (layer: edge, pure data). Parsed from TOML by the driver; the core receives a
//! [`Config`] value and never reads files itself. Every field has a documented default
//! (see `scripts/example-config.toml`).

pub use crate::iwin::reply::ClosedForm;
use serde::Deserialize;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub identity: Identity,
    pub network: Network,
    pub module: ModuleSettings,
    pub timing: Timing,
    pub quirks: Quirks,
    pub tls: Tls,
    pub faults: Faults,
    #[serde(rename = "access_point")]
    pub access_points: Vec<AccessPoint>,
    /// Where TLS sessions' secrets go (`--keylog`, `SSLKEYLOGFILE`): handed in by the edge, never
    /// read from TOML; none by default.
    #[serde(skip)]
    pub key_log: KeyLogSink,
}

/// A receiver of TLS secrets in the NSS key log format (rustls' [`rustls::KeyLog`]). The core
/// is sans-IO: the edge supplies one that writes the lines where it likes.
#[derive(Clone, Default)]
pub struct KeyLogSink(pub Option<std::sync::Arc<dyn rustls::KeyLog>>);

impl std::fmt::Debug for KeyLogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "KeyLogSink(on)"
        } else {
            "KeyLogSink(off)"
        })
    }
}

/// Two sinks are equal when both are off or both are the same receiver.
impl PartialEq for KeyLogSink {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The UART rates the module offers (`U2`), the only ones `[module] baud` and `--baud` take.
pub const BAUD_RATES: &[u32] = crate::iwin::command::BAUD_RATES;

/// [`BAUD_RATES`] as a comma-separated list, for messages.
pub fn baud_list() -> String {
    let rates: Vec<String> = BAUD_RATES.iter().map(u32::to_string).collect();
    rates.join(", ")
}

/// Faults active from start-up (see the README's "Faults"; the same lines as `fault add`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// One rule per entry, e.g. `"serial.split 1..7 gap=2ms"`.
    pub rules: Vec<String>,
    /// Seed of every random choice (`--seed` overrides; none: one is picked and logged).
    pub seed: Option<u64>,
}

impl Config {
    /// Parse and validate a TOML configuration text.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.network.ip.is_loopback() {
            return Err(format!(
                "network.ip {} is not a 127.0.0.0/8 address: the emulated module lives on loopback",
                self.network.ip
            ));
        }
        if !self.network.ap_ip.is_loopback() {
            return Err(format!(
                "network.ap_ip {} is not a 127.0.0.0/8 address: local programs must reach the soft AP",
                self.network.ap_ip
            ));
        }
        if crate::iwin::profile::Profile::from_firmware(&self.identity.firmware).is_none() {
            return Err(format!(
                "identity.firmware {:?} is not C<maj>.<min>.<x>.<y>[.suffix] (e.g. C3.5.2.3.STM): the firmware profile follows from it",
                self.identity.firmware
            ));
        }
        if self.module.message_type > 1 {
            return Err("module.message_type must be 0 or 1".into());
        }
        if !BAUD_RATES.contains(&self.module.baud) {
            return Err(format!(
                "module.baud {} is not a rate the module offers (U2): {}",
                self.module.baud,
                baud_list()
            ));
        }
        crate::iwin::command::parse_mac(&self.identity.mac).ok_or_else(|| {
            format!(
                "identity.mac {:?} is not XX:XX:XX:XX:XX:XX",
                self.identity.mac
            )
        })?;
        for ap in &self.access_points {
            if ap.ssid.is_empty() || ap.ssid.len() > 32 {
                return Err(format!(
                    "access point ssid {:?} must be 1..32 bytes",
                    ap.ssid
                ));
            }
            if crate::iwin::command::parse_mac(&ap.bssid).is_none() {
                return Err(format!(
                    "access point {:?}: bssid {:?} is not XX:XX:XX:XX:XX:XX",
                    ap.ssid, ap.bssid
                ));
            }
            if !(1..=14).contains(&ap.channel) && !(36..=165).contains(&ap.channel) {
                return Err(format!(
                    "access point {:?}: channel {} is not a Wi-Fi channel",
                    ap.ssid, ap.channel
                ));
            }
        }
        Ok(())
    }
}

/// What `I?`, `Z5`, `ZN` and the boot banner report. `firmware` also chooses the firmware profile
/// (`crate::iwin::profile`): what changes from C3.5.2.5 and in C6.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Identity {
    pub product_id: String,
    pub firmware: String,
    pub api: String,
    pub stack: String,
    pub rtos: String,
    pub cpu_clock: u64,
    pub product_name: String,
    pub mac: String,
    /// Print the reset banner before the first prompt (boot and `ZR`).
    pub banner: bool,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            product_id: "ISM43362-M3G-L44-UART".into(),
            firmware: "C3.5.2.3.STM".into(),
            api: "v3.5.2".into(),
            stack: "v1.4.0.rc1".into(),
            rtos: "v8.2.1".into(),
            cpu_clock: 120_000_000,
            product_name: "Inventek eS-WiFi".into(),
            mac: "C4:7F:51:01:12:31".into(),
            banner: true,
        }
    }
}

/// The module's addresses once joined (DHCP), all on loopback so real sockets work.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(from = "NetworkToml")]
pub struct Network {
    /// Station IP; outgoing sockets bind it as their source. Any 127.0.0.0/8 address.
    pub ip: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub dns1: Ipv4Addr,
    pub dns2: Ipv4Addr,
    /// Soft-AP address (`Z6`) at power-up. Servers opened while the AP runs listen here, so it must be
    /// on loopback for local programs to reach them (the module's own default is 192.168.10.1).
    pub ap_ip: Ipv4Addr,
    /// `ip` was given in the configuration: use it as it is. Otherwise each emulated module claims
    /// a free loopback address of its own at start-up (so emulators never collide).
    pub ip_pinned: bool,
    /// `ap_ip` was given in the configuration (otherwise it follows the claimed station address).
    pub ap_ip_pinned: bool,
}

impl Default for Network {
    fn default() -> Self {
        Network::from(NetworkToml::default())
    }
}

/// `[network]` as written; absent addresses are chosen at start-up.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NetworkToml {
    ip: Option<Ipv4Addr>,
    mask: Option<Ipv4Addr>,
    gateway: Option<Ipv4Addr>,
    dns1: Option<Ipv4Addr>,
    dns2: Option<Ipv4Addr>,
    ap_ip: Option<Ipv4Addr>,
}

impl From<NetworkToml> for Network {
    fn from(t: NetworkToml) -> Network {
        Network {
            ip: t.ip.unwrap_or(Ipv4Addr::new(127, 0, 0, 1)),
            mask: t.mask.unwrap_or(Ipv4Addr::new(255, 0, 0, 0)),
            gateway: t.gateway.unwrap_or(Ipv4Addr::new(127, 0, 0, 1)),
            dns1: t.dns1.unwrap_or(Ipv4Addr::new(127, 0, 0, 1)),
            dns2: t.dns2.unwrap_or(Ipv4Addr::new(0, 0, 0, 0)),
            ap_ip: t.ap_ip.unwrap_or(Ipv4Addr::new(127, 0, 10, 1)),
            ip_pinned: t.ip.is_some(),
            ap_ip_pinned: t.ap_ip.is_some(),
        }
    }
}

/// Power-up defaults of module settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModuleSettings {
    /// `MT` at power-up: 0 = errors with reason and usage, 1 = bare `ERROR`.
    pub message_type: u8,
    /// UART rate at power-up (factory value; `U2`/`U0`/`Z1` change it, `--baud` overrides it).
    pub baud: u32,
    /// How asynchronous messages reach the host: written unsolicited between replies (`uart`, the
    /// UART firmware) or queued for `MR` (`poll`, the SPI firmware ST's es_wifi.c expects).
    /// With `bus = "spi"` they are always fetched with `MR`.
    pub events: EventMode,
    /// The module's host interface as the byte stream shows it: `uart`, or `spi` for a host that
    /// bridges the module's SPI (boot cursor `\x15\x15\r\n> `, odd replies padded with 0x15, events
    /// by `MR`).
    pub bus: Bus,
    /// For a person at a plain terminal (picocom, screen): echo what the host types and let
    /// Backspace (0x08 or 0x7f) erase. The real module does neither, hence off by default.
    pub terminal: bool,
    /// What a host finds when it attaches to the line (opens the pty, connects over TCP): see
    /// [`Attach`]. `--attach` (or `--reset-on-open`) overrides it.
    pub attach: Attach,
}

/// What a host finds when it attaches to the line.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Attach {
    /// The module as it was, and a quiet line; the first host gets what was printed at power-up.
    #[default]
    Keep,
    /// The module held in reset for `[timing] boot_ms` (what the host sends meanwhile is lost),
    /// then one banner and prompt: a reset pin wired to the host's open.
    Reset,
    /// The module reset, and silent until the host has been quiet for `[timing] quiet_ms` (on a
    /// pty: no byte, no input flush); then one banner and prompt, sent again if a flush on a pty
    /// throws it away before the host's first byte. For hosts that flush their input at start and
    /// then wait for the prompt without sending (Zephyr's eswifi driver under QEMU).
    Prompt,
}

impl std::str::FromStr for Attach {
    type Err = String;

    fn from_str(s: &str) -> Result<Attach, String> {
        match s {
            "keep" => Ok(Attach::Keep),
            "reset" => Ok(Attach::Reset),
            "prompt" => Ok(Attach::Prompt),
            _ => Err(format!("{s:?} is not an attach mode (keep, reset, prompt)")),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    #[default]
    Uart,
    Spi,
}

impl Default for ModuleSettings {
    fn default() -> Self {
        ModuleSettings {
            message_type: 0,
            baud: 115_200,
            events: EventMode::default(),
            bus: Bus::default(),
            terminal: false,
            attach: Attach::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EventMode {
    #[default]
    Uart,
    Poll,
}

impl std::str::FromStr for EventMode {
    type Err = String;

    fn from_str(s: &str) -> Result<EventMode, String> {
        match s {
            "uart" => Ok(EventMode::Uart),
            "poll" => Ok(EventMode::Poll),
            _ => Err(format!("{s:?} is not an event mode (uart, poll)")),
        }
    }
}

/// Emulated delays and limits, in milliseconds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Timing {
    /// Time `C0` takes to join (real modules: 1-5 s).
    pub join_ms: u64,
    /// Time `F0` takes to scan (real modules: 1-3 s).
    pub scan_ms: u64,
    /// `P6=1` gives up on a TCP connect after this long.
    pub connect_timeout_ms: u64,
    /// A payload command (`S3=n`) whose bytes stop arriving for this long is abandoned with an error.
    pub payload_timeout_ms: u64,
    /// With `attach = "reset"` (`--reset-on-open`), the module is held in reset this long after a
    /// host opens the line (its boot time), so a host that flushes or reconfigures the tty right
    /// after opening it still sees the banner and prompt.
    pub boot_ms: u64,
    /// With `attach = "prompt"`, how long the host must have been quiet before the module prints
    /// its banner and prompt.
    pub quiet_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            join_ms: 0,
            scan_ms: 0,
            connect_timeout_ms: 10_000,
            payload_timeout_ms: 30_000,
            boot_ms: 100,
            quiet_ms: 1000,
        }
    }
}

/// Behaviours where the sources disagree (spec §9/§10); defaults follow the spec's decisions.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Quirks {
    /// `P6=1` to a closed TCP port answers OK (GH80) instead of the failure reply; later R0/S3 give -1.
    pub refused_connect_ok: bool,
    /// UDP client: with P2=0, bind the local port to the P4 value present at `P6=1` (spec §4).
    pub udp_local_port_from_p4: bool,
    /// Zephyr compatibility: drop the one stray byte the host sends after each `S3`/`PG` payload,
    /// whenever it arrives.
    pub drop_byte_after_payload: bool,
    /// `R0`/`S3` on a closed connection: `error` (`\r\n-1\r\nERROR\r\n> `), `usage` (the MT=0
    /// form with `Usage:`), or `ok` (`\r\n-1\r\nOK\r\n> `).
    pub closed_reply: ClosedForm,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            refused_connect_ok: false,
            udp_local_port_from_p4: true,
            drop_byte_after_payload: false,
            closed_reply: ClosedForm::Error,
        }
    }
}

/// TLS client sockets and the certificate sets.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// Concurrent TLS sockets; the firmware allows one (`[TCP SSL] In use by socket N`).
    pub max_sockets: u8,
    /// Check that the server certificate names the host (the module has no such check).
    pub check_hostname: bool,
    /// Set 3 exists and is re-writable also on firmware before C6 (C6 profiles always have it).
    pub rewritable_set3: bool,
    /// Refuse `PG` content that is not PEM instead of storing it with a warning.
    pub refuse_non_pem: bool,
    /// Extension: `P1=3` servers (`P5`) serve TLS with the active set's certificate and key. Off, the
    /// module answers `Mode not supported.` as the firmware does.
    pub server: bool,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            max_sockets: 1,
            check_hostname: false,
            rewritable_set3: false,
            refuse_non_pem: false,
            server: false,
        }
    }
}

/// Security of an emulated access point, as `C3` numbers it.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Security {
    Open,
    Wep,
    Wpa,
    Wpa2Aes,
    Wpa2Mixed,
    Wpa2Tkip,
}

impl Security {
    /// The `C3` value of this security type.
    pub fn code(self) -> u8 {
        match self {
            Security::Open => 0,
            Security::Wep => 1,
            Security::Wpa => 2,
            Security::Wpa2Aes => 3,
            Security::Wpa2Mixed => 4,
            Security::Wpa2Tkip => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<Security> {
        Some(match code {
            0 => Security::Open,
            1 => Security::Wep,
            2 => Security::Wpa,
            3 => Security::Wpa2Aes,
            4 => Security::Wpa2Mixed,
            5 => Security::Wpa2Tkip,
            _ => return None,
        })
    }

    /// The text `F0` prints for it.
    pub fn scan_name(self) -> &'static str {
        match self {
            Security::Open => "Open",
            Security::Wep => "WEP",
            Security::Wpa => "WPA",
            Security::Wpa2Aes => "WPA2 AES",
            Security::Wpa2Mixed => "WPA2 Mixed",
            Security::Wpa2Tkip => "WPA2 TKIP",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessPoint {
    pub ssid: String,
    #[serde(default = "default_security")]
    pub security: Security,
    #[serde(default)]
    pub password: String,
    #[serde(default = "default_bssid")]
    pub bssid: String,
    #[serde(default = "default_rssi")]
    pub rssi: i32,
    #[serde(default = "default_channel")]
    pub channel: u8,
}

fn default_security() -> Security {
    Security::Wpa2Aes
}
fn default_bssid() -> String {
    "02:00:00:00:00:01".into()
}
fn default_rssi() -> i32 {
    -52
}
fn default_channel() -> u8 {
    6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_exactly_the_defaults() {
        // The file says every value it shows is the default: it must configure nothing else.
        let text = include_str!("../../../scripts/example-config.toml");
        assert_eq!(Config::from_toml(text).unwrap(), Config::default());
        let aps = include_str!("../../../scripts/example-access-points.toml");
        let cfg = Config::from_toml(aps).unwrap();
        assert_eq!(cfg.access_points.len(), 2);
        assert_eq!(cfg.access_points[1].security, Security::Open);
        assert_eq!(cfg.access_points[1].bssid, "02:00:00:00:00:01");
        assert_eq!(
            Config {
                access_points: Vec::new(),
                ..cfg
            },
            Config::default()
        );
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        assert!(Config::from_toml("[network]\nip = \"10.0.0.2\"")
            .unwrap_err()
            .contains("127.0.0.0/8"));
        assert!(Config::from_toml("[identity]\nmac = \"zz\"")
            .unwrap_err()
            .contains("identity.mac"));
        assert!(Config::from_toml("[bogus]\n").is_err());
        assert!(Config::from_toml("[identity]\nfirmware = \"6.2.1.8\"")
            .unwrap_err()
            .contains("identity.firmware"));
        let spi =
            Config::from_toml("[module]\nbus = \"spi\"\n[quirks]\nclosed_reply = \"ok\"").unwrap();
        assert_eq!(
            (spi.module.bus, spi.quirks.closed_reply),
            (Bus::Spi, ClosedForm::Ok)
        );
        assert!(
            Config::from_toml("[[access_point]]\nssid = \"x\"\nchannel = 15")
                .unwrap_err()
                .contains("channel")
        );
    }
}
