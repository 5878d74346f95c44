//! System area (layer: core): identity (`I?`, `Z5`, `ZN`, `Z?`), message modes (`MT`, `MS`, `MR`),
//! UART and bus settings, factory defaults, `Z1` saved settings and `ZR`. Pure.

use super::error::SystemError;
use super::io::{CloseHow, NetOp, StoreOp, StoreReq, WriteError};
use super::saved::{self, Saved};
use super::{ok, payload, Answer, Busy, Durable, Module, Step, STORE_TIMEOUT};
use crate::config::Config;
use crate::iwin::command::{self, Code, GpioCmd, LedArg, Mnemonic, PowerCmd, SystemCmd};
use crate::iwin::profile::Profile;
use crate::iwin::reply::{MessageType, Reply};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Reset banner of the C6 UART firmware, verbatim from C6.2.1.11 (FW strings, each line ending
/// CR LF, the last one CR and then the prompt's `\n> `); the prompt `\r\n> ` follows it.
pub(crate) const BANNER_C6: &[u8] = b"\r\n                eS-WiFi\r\n            Inventek Systems\r\n    Embedding Connectivity Everywhere\r\n         Copyright (c)2011-2020";

/// Reset banner of C3.5.2.x. Older firmware printed an ASCII-art logo that no source preserves
/// byte for byte (spec §2.4), so the C3 profiles print the C6 text, as the emulator always has; only
/// the prompt after it is something drivers wait for.
pub(crate) const BANNER_C3: &[u8] = BANNER_C6;

/// The reset banner of a firmware profile.
pub(crate) fn banner(profile: Profile) -> &'static [u8] {
    if profile.c6() {
        BANNER_C6
    } else {
        BANNER_C3
    }
}

/// Settings that `ZR` restores to their power-up values.
#[derive(Debug)]
pub(crate) struct System {
    /// What `Z1` saves of them.
    pub(crate) settings: SystemSettings,
    pub(crate) raw_bypass: u8,
    /// `ZP`: power save (`Z?` PSMode), radio on (`Z?` Radio), beacon interval now and before.
    pub(crate) power_save: bool,
    pub(crate) radio_on: bool,
    pub(crate) beacon: (u32, u32),
    /// `IC=<endpoint>`.
    pub(crate) cloud_endpoint: Option<Vec<u8>>,
    /// `G3`/`G4`: type and level of each pin set up (at most 256: pins are `u8`).
    pub(crate) gpio: BTreeMap<u8, (u8, bool)>,
    /// `WL`: link LED, activity LED, polarity.
    pub(crate) leds: [u8; 3],
}

/// The system settings `Z1` saves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SystemSettings {
    /// `Z4`; saved as `Z5` shows it.
    #[serde(with = "mac_text")]
    pub(crate) mac: [u8; 6],
    /// `ZN`
    #[serde(with = "super::saved::text")]
    pub(crate) product_name: Vec<u8>,
    /// `U2` (applied by `U0`, and at boot).
    pub(crate) baud: u32,
    /// `MT`, saved as its number.
    #[serde(rename = "message_type", with = "message_type")]
    pub(crate) mt: MessageType,
    /// `MS`
    pub(crate) suppress: u8,
}

impl SystemSettings {
    /// Power-up values (from the configuration).
    fn power_on(cfg: &Config) -> SystemSettings {
        SystemSettings {
            // Config::validate checked it is 0 or 1.
            mt: MessageType::from_code(cfg.module.message_type.into())
                .unwrap_or(MessageType::Normal),
            suppress: 0,
            // Config::validate checked the MAC.
            mac: command::parse_mac(&cfg.identity.mac)
                .unwrap_or([0xC4, 0x7F, 0x51, 0x01, 0x12, 0x31]),
            product_name: cfg.identity.product_name.clone().into_bytes(),
            baud: cfg.module.baud,
        }
    }
}

/// A MAC as `Z5` writes it (`C4:7F:51:01:12:31`).
fn mac_text(m: &[u8; 6]) -> String {
    format!(
        "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Serde for a MAC: the text `Z5` shows.
mod mac_text {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(m: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::mac_text(m))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
        let text = String::deserialize(d)?;
        crate::iwin::command::parse_mac(&text)
            .ok_or_else(|| D::Error::custom(format!("{text:?} is not a MAC address")))
    }
}

/// Serde for `MT`: its number.
mod message_type {
    use crate::iwin::command::Code;
    use crate::iwin::reply::MessageType;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(mt: &MessageType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(mt.code())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MessageType, D::Error> {
        let code = u8::deserialize(d)?;
        MessageType::from_code(code.into())
            .ok_or_else(|| D::Error::custom(format!("message_type {code} is not 0 or 1")))
    }
}

/// `WL` at power-up (spec §3.8: `WL=?` → `4,3,1`).
const LEDS_DEFAULT: [u8; 3] = [4, 3, 1];

impl System {
    pub(crate) fn power_on(cfg: &Config) -> System {
        System {
            settings: SystemSettings::power_on(cfg),
            raw_bypass: 0,
            power_save: false,
            radio_on: true,
            beacon: (0, 0),
            cloud_endpoint: None,
            gpio: BTreeMap::new(),
            leds: LEDS_DEFAULT,
        }
    }

    pub(crate) fn mac_text(&self) -> String {
        mac_text(&self.settings.mac)
    }
}

impl Module {
    pub(super) fn system_command(&mut self, cmd: SystemCmd, now: Instant) -> Step {
        use SystemCmd::*;
        match cmd {
            CmdMode(_) => ok(),
            Info => {
                let id = &self.cfg.identity;
                payload(format!(
                    "{},{},{},{},{},{},{}",
                    id.product_id,
                    id.firmware,
                    id.api,
                    id.stack,
                    id.rtos,
                    id.cpu_clock,
                    String::from_utf8_lossy(&self.sys.settings.product_name)
                ))
            }
            SetMessageType(t) => {
                self.sys.settings.mt = t;
                ok()
            }
            SetMessageSuppress(v) => {
                self.sys.settings.suppress = v;
                ok()
            }
            ReadMessage => {
                if let Some(step) = self.next_scan_result() {
                    return step;
                }
                let mut p = b"[SOMA]".to_vec();
                if let Some(msg) = self.events.pop_front() {
                    p.extend_from_slice(&msg);
                }
                p.extend_from_slice(b"[EOMA]");
                payload(p)
            }
            SetMac(mac) => {
                self.sys.settings.mac = mac;
                ok()
            }
            GetMac => payload(self.sys.mac_text()),
            SystemQuery => payload(format!(
                "1,{:08},{:04x},{:04x},{},{},{},{},{},{},{}",
                12_345_678,
                0x0483,
                0x5740,
                self.sys.mac_text(),
                self.ap.settings.ip,
                self.sys.power_save as u8,
                self.sys.radio_on as u8,
                self.sys.beacon.0,
                self.sys.beacon.1,
                String::from_utf8_lossy(&self.sys.settings.product_name)
            )),
            SetProductName(n) => {
                self.sys.settings.product_name = n;
                ok()
            }
            Reset => unreachable!("the dispatcher replies to ZR and resets"),
            FactoryReset => {
                if self.station.link.is_some() || self.ap.running {
                    return Err(SystemError::FactoryRefusedWhileConnected.into());
                }
                log::info!("factory defaults restored (not saved until Z1)");
                self.factory_settings();
                ok()
            }
            SaveSettings => {
                let data = self.snapshot().encode();
                let req = self.next_id(StoreReq);
                self.store_ops.push_back(StoreOp::Settings {
                    req,
                    data: data.clone(),
                });
                Ok(Answer::Wait(Busy::Store {
                    req,
                    what: Durable::Settings { data },
                    deadline: now + STORE_TIMEOUT,
                }))
            }
            UartQuery => payload(format!("0,{},8,None,1,Normal", self.sys.settings.baud)),
            SetBaud(b) => {
                self.sys.settings.baud = b;
                ok()
            }
            UartApply => {
                // The reply goes out at the old rate; the line switches after it.
                self.apply_baud();
                ok()
            }
            BusQuery => payload(if self.wire.spi { "SPI,0,0" } else { "UART,0,0" }),
            SetRawBypass(v) => {
                self.sys.raw_bypass = v;
                ok()
            }
            Help => self.help(),
            CloudEndpoint(Some(e)) => {
                let set = !e.is_empty();
                self.sys.cloud_endpoint = set.then_some(e);
                payload(if set { "1" } else { "0" })
            }
            CloudEndpoint(None) => payload(if self.sys.cloud_endpoint.is_some() {
                "1"
            } else {
                "0"
            }),
            Diagnostic(m) => {
                log::debug!("{}: manufacturing/diagnostic command accepted", m.text());
                ok()
            }
            Time => {
                // With a network the module knows the time (UTC seconds); without, it counts
                // milliseconds since power-up.
                let t = if self.station.link.is_some() {
                    self.clock.unix(now).as_secs()
                } else {
                    now.saturating_duration_since(self.clock.at).as_millis() as u64
                };
                payload(t.to_string())
            }
            Power(p) => {
                self.power(p);
                ok()
            }
            Gpio(g) => self.gpio(g),
        }
    }

    /// `?`: `Console Commands:` and one `<cmd> - <what it does>` line per command (FW help table).
    /// The SPI firmware has no help.
    fn help(&self) -> Step {
        if self.wire.spi {
            return Err(command::ParseError::unknown().into());
        }
        let mut lines = vec!["Console Commands:".to_string()];
        lines.extend(
            Mnemonic::ALL
                .iter()
                .map(|m| format!("{} - {}", m.text(), m.help())),
        );
        payload(lines.join("\r\n"))
    }

    /// `ZP`: power management, kept as the values `Z?` reports; nothing sleeps.
    fn power(&mut self, p: PowerCmd) {
        let sys = &mut self.sys;
        match p {
            PowerCmd::Normal => {
                sys.power_save = false;
                sys.radio_on = true;
            }
            PowerCmd::PowerSave(on) => sys.power_save = on,
            PowerCmd::Beacon(n) => sys.beacon = (n, sys.beacon.0),
            PowerCmd::Radio(on) => {
                sys.radio_on = on;
                if !on {
                    log::info!("ZP=3,0: radio off is only reported (Z?); the link stays up");
                }
            }
            PowerCmd::RadioReset | PowerCmd::Stop => {}
            PowerCmd::Sleep(ms) => log::debug!("ZP=6,{ms}: the emulated module does not sleep"),
        }
    }

    /// `G*`, `WL`, `SF`, `PL`: stored settings.
    fn gpio(&mut self, g: GpioCmd) -> Step {
        let sys = &mut self.sys;
        match g {
            GpioCmd::Setup { pin, kind } => {
                sys.gpio.insert(pin, (kind, false));
            }
            GpioCmd::Write { pin, kind, value } => {
                sys.gpio.insert(pin, (kind, value));
            }
            GpioCmd::Read { pin, .. } => {
                let level = sys.gpio.get(&pin).is_some_and(|&(_, v)| v);
                return payload(if level { "1" } else { "0" });
            }
            GpioCmd::Query => {
                let lines: Vec<String> = sys
                    .gpio
                    .iter()
                    .map(|(pin, (kind, v))| format!("{pin},{kind},{}", *v as u8))
                    .collect();
                return payload(lines.join("\r\n"));
            }
            GpioCmd::LinkLeds(arg) => {
                match arg {
                    LedArg::Set(v) => {
                        sys.leds = v;
                        return ok();
                    }
                    LedArg::Default => sys.leds = LEDS_DEFAULT,
                    LedArg::Show => {}
                }
                let [a, b, c] = sys.leds;
                return payload(format!("{a},{b},{c}"));
            }
            GpioCmd::Pwm | GpioCmd::SerialFlash(_) | GpioCmd::DataPin(_) => {}
        }
        ok()
    }

    /// `ZR`: close everything, restore power-up settings, print the banner and prompt.
    pub(super) fn reset(&mut self) {
        for i in 0..self.sockets.len() {
            self.abort_socket(i, "module reset");
        }
        for (conn, _) in std::mem::take(&mut self.draining) {
            self.ops.push_back(NetOp::Close {
                conn,
                how: CloseHow::Abort,
            });
        }
        if let Some(super::Busy::Store { req, what, .. }) = self.busy.take() {
            self.orphan_store = Some((req, what));
        }
        log::info!("module reset");
        // Everything volatile comes back at its power-up value from the constructor; only what
        // outlives a reset is carried over, by name.
        let fresh = Module::unbooted(&self.cfg, self.last_now, Duration::ZERO);
        let old = std::mem::replace(self, fresh);
        let commands = old.commands + old.rebooted.unwrap_or(0);
        self.keep_over_reset(old);
        self.rebooted = Some(commands);
        self.power_on_settings();
        self.apply_baud();
        self.boot_output();
        self.auto_join();
    }

    /// What survives a reset: flash (certificate sets, `Z1` settings, a store write still under
    /// way), output and socket closes not yet taken by the driver, the line's rate, the wall clock,
    /// the ids in use, the transcript and the fault draws. The framer keeps what the host sent
    /// after `ZR` (a power cycle clears it first).
    fn keep_over_reset(&mut self, old: Module) {
        let Module {
            framer,
            out,
            ops,
            store_ops,
            next_id,
            clock,
            certs,
            saved,
            orphan_store,
            line_baud,
            line_ops,
            trace,
            last_now,
            wifi_faults,
            wifi_rng,
            faults_fired,
            ..
        } = old;
        self.framer = framer;
        self.out = out;
        self.ops = ops;
        self.store_ops = store_ops;
        self.next_id = next_id;
        self.clock = clock;
        self.certs.sets = certs.sets;
        self.saved = saved;
        self.orphan_store = orphan_store;
        self.line_baud = line_baud;
        self.line_ops = line_ops;
        self.trace = trace;
        self.last_now = last_now;
        self.wifi_faults = wifi_faults;
        self.wifi_rng = wifi_rng;
        self.faults_fired = faults_fired;
    }

    /// Put the configured UART rate into effect (the driver switches the line).
    fn apply_baud(&mut self) {
        if self.line_baud != self.sys.settings.baud {
            log::info!("UART rate {} -> {}", self.line_baud, self.sys.settings.baud);
            self.line_baud = self.sys.settings.baud;
            self.line_ops
                .push_back(super::LineOp::SetBaud(self.line_baud));
        }
    }

    /// A `Z1` store write finished.
    pub(super) fn settings_stored(
        &mut self,
        data: Vec<u8>,
        result: Result<(), WriteError>,
    ) -> Step {
        match result {
            Ok(()) => {
                log::info!("settings saved ({} bytes)", data.len());
                self.saved = Some(data);
                ok()
            }
            Err(e) => {
                log::error!("saving settings failed: {e}");
                Err(SystemError::SaveFailed.into())
            }
        }
    }

    /// Power-up values of everything `Z1` saves.
    fn factory(&self) -> Saved {
        Saved {
            system: SystemSettings::power_on(&self.cfg),
            station: Default::default(),
            ap: super::ap::ApSettings::power_on(self.cfg.network.ap_ip),
        }
    }

    /// The current values of everything `Z1` saves.
    fn snapshot(&self) -> Saved {
        Saved {
            system: self.sys.settings.clone(),
            station: self.station.settings.clone(),
            ap: self.ap.settings.clone(),
        }
    }

    fn apply(&mut self, s: Saved) {
        self.sys.settings = s.system;
        self.station.settings = s.station;
        self.ap.settings = s.ap;
    }

    /// `Z0`: factory values now; flash keeps what `Z1` saved until the next `Z1`.
    fn factory_settings(&mut self) {
        self.sys = System::power_on(&self.cfg);
        let f = self.factory();
        self.apply(f);
    }

    /// Boot / `ZR`: factory values, then the saved ones on top.
    pub(super) fn power_on_settings(&mut self) {
        self.factory_settings();
        if let Some(data) = self.saved.clone() {
            match self.factory().decode_onto(&data) {
                Ok(s) => self.apply(s),
                Err(e) => {
                    log::error!("saved settings unusable ({e}); factory defaults apply");
                    const INVALID: &[u8] = b"[BOOT   ] Invalid CONFIG, restoring defaults";
                    if self.wire.spi {
                        self.events.push_back(INVALID.to_vec());
                    } else {
                        // Before the banner, without a prompt of its own.
                        self.emit(&[b"\r\n", INVALID].concat(), None);
                    }
                }
            }
        }
    }

    /// Settings saved in the first format are rewritten as TOML, once, at power-up: the driver
    /// stores them as it stores a `Z1`, and the module holds the new form from now on.
    pub(super) fn rewrite_legacy_saved(&mut self) {
        let Some(data) = &self.saved else {
            return;
        };
        if !saved::is_legacy(data) {
            return;
        }
        // Unusable ones were reported at boot (`Invalid CONFIG`) and stay as they are.
        let Ok(s) = self.factory().decode_onto(data) else {
            return;
        };
        let data = s.encode();
        let req = self.next_id(StoreReq);
        log::info!("saved settings are in the first format: rewriting them as TOML (#{req})");
        self.saved = Some(data.clone());
        self.store_ops.push_back(StoreOp::Settings { req, data });
        self.rewriting = Some(req);
    }

    /// The store answered the rewrite of [`Module::rewrite_legacy_saved`].
    pub(super) fn rewritten(&mut self, result: Result<(), WriteError>) {
        match result {
            Ok(()) => log::info!("saved settings rewritten as TOML"),
            Err(e) => log::warn!(
                "rewriting the saved settings as TOML failed ({e}); the next power-up reads the first format again"
            ),
        }
    }

    /// `CC` bit 0 (auto-join at boot): join now and tell the host the way `C0` would.
    pub(super) fn auto_join(&mut self) {
        if self.station.settings.auto_connect & 1 == 0 {
            return;
        }
        let msg = match self.finish_join() {
            Ok(Answer::Reply(Reply::Ok(p))) => p,
            Err(e) => match e.reply() {
                Reply::Error { payload, .. } => payload,
                _ => Vec::new(),
            },
            Ok(_) => Vec::new(),
        };
        self.boot_message(&msg);
    }
}
