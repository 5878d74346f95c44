//! System area (layer: core): identity (`I?`, `Z5`, `ZN`, `Z?`), message modes (`MT`, `MS`, `MR`),
//! UART and bus settings, factory defaults, `Z1` saved settings and `ZR`. Pure.

use super::error::SystemError;
use super::io::{CloseHow, NetOp, StoreOp};
use super::saved::Saved;
use super::{ok, payload, Answer, Busy, Durable, Module, Step, STORE_TIMEOUT};
use crate::config::Config;
use crate::iwin::command::{self, GpioCmd, LedArg, Mnemonic, PowerCmd, SystemCmd};
use crate::iwin::profile::Profile;
use crate::iwin::reply::{MessageType, Reply};
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
    pub(crate) mt: MessageType,
    pub(crate) suppress: u8,
    pub(crate) mac: [u8; 6],
    pub(crate) product_name: Vec<u8>,
    pub(crate) baud: u32,
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

/// `WL` at power-up (spec §3.8: `WL=?` → `4,3,1`).
const LEDS_DEFAULT: [u8; 3] = [4, 3, 1];

impl System {
    pub(crate) fn power_on(cfg: &Config) -> System {
        System {
            mt: if cfg.module.message_type == 1 {
                MessageType::Simple
            } else {
                MessageType::Normal
            },
            suppress: 0,
            // Config::validate checked the MAC.
            mac: command::parse_mac(&cfg.identity.mac)
                .unwrap_or([0xC4, 0x7F, 0x51, 0x01, 0x12, 0x31]),
            product_name: cfg.identity.product_name.clone().into_bytes(),
            baud: cfg.module.baud,
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
        let m = self.mac;
        format!(
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
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
                    String::from_utf8_lossy(&self.sys.product_name)
                ))
            }
            SetMessageType(t) => {
                self.sys.mt = if t == 1 {
                    MessageType::Simple
                } else {
                    MessageType::Normal
                };
                ok()
            }
            SetMessageSuppress(v) => {
                self.sys.suppress = v;
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
                self.sys.mac = mac;
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
                String::from_utf8_lossy(&self.sys.product_name)
            )),
            SetProductName(n) => {
                self.sys.product_name = n;
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
                let req = self.next_id();
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
            UartQuery => payload(format!("0,{},8,None,1,Normal", self.sys.baud)),
            SetBaud(b) => {
                self.sys.baud = b;
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
        if self.line_baud != self.sys.baud {
            log::info!("UART rate {} -> {}", self.line_baud, self.sys.baud);
            self.line_baud = self.sys.baud;
            self.line_ops
                .push_back(super::LineOp::SetBaud(self.line_baud));
        }
    }

    /// A `Z1` store write finished.
    pub(super) fn settings_stored(&mut self, data: Vec<u8>, result: Result<(), String>) -> Step {
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
        let sys = System::power_on(&self.cfg);
        Saved {
            station: Default::default(),
            ap: super::ap::ApSettings::power_on(self.cfg.network.ap_ip),
            mac: sys.mac,
            product_name: sys.product_name,
            baud: sys.baud,
            message_type: (sys.mt == MessageType::Simple) as u8,
            suppress: sys.suppress,
        }
    }

    /// The current values of everything `Z1` saves.
    fn snapshot(&self) -> Saved {
        Saved {
            station: self.station.settings.clone(),
            ap: self.ap.settings.clone(),
            mac: self.sys.mac,
            product_name: self.sys.product_name.clone(),
            baud: self.sys.baud,
            message_type: (self.sys.mt == MessageType::Simple) as u8,
            suppress: self.sys.suppress,
        }
    }

    fn apply(&mut self, s: Saved) {
        self.station.settings = s.station;
        self.ap.settings = s.ap;
        self.sys.mac = s.mac;
        self.sys.product_name = s.product_name;
        self.sys.baud = s.baud;
        self.sys.mt = if s.message_type == 1 {
            MessageType::Simple
        } else {
            MessageType::Normal
        };
        self.sys.suppress = s.suppress;
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
            let mut s = self.factory();
            match s.decode_onto(&data) {
                Ok(()) => self.apply(s),
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
