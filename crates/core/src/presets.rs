//! Configuration presets (layer: pure data): what each host driver needs, as a TOML fragment
//! (`--preset NAME`). The TOML files in `crates/core/presets/` are the one definition of each; the
//! README's "Quirk presets per driver" shows them and a test keeps the two equal.
//!
//! Layers apply in order, each over the one before: the defaults, then every `--preset` in the
//! order given, then the `--config` file, which wins. Tables merge key by key; any other value
//! (an array such as `[[access_point]]` or `[faults] rules` included) is replaced whole.

use crate::config::Config;
use toml::{Table, Value};

/// One preset: its name and its TOML text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    /// One line, for `--help` and `eswifi-emu presets`.
    pub summary: &'static str,
    pub toml: &'static str,
}

/// Every preset, in the order `eswifi-emu presets` lists them.
pub const PRESETS: [Preset; 6] = [
    Preset {
        name: "zephyr",
        summary: "Zephyr's eswifi UART driver: drop the stray byte after each payload, one prompt once it is ready",
        toml: include_str!("../presets/zephyr.toml"),
    },
    Preset {
        name: "st",
        summary: "ST's es_wifi.c, UART build: the defaults, spelled out",
        toml: include_str!("../presets/st.toml"),
    },
    Preset {
        name: "cmsis",
        summary: "ARM CMSIS-Driver WiFi_ISM43362: SPI bus, firmware C3.5.2.5.STM",
        toml: include_str!("../presets/cmsis.toml"),
    },
    Preset {
        name: "mbed",
        summary: "Mbed OS's ISM43362 driver: SPI bus, UDP local port from P4",
        toml: include_str!("../presets/mbed.toml"),
    },
    Preset {
        name: "mongoose",
        summary: "Mongoose OS's wifi-ism43xxx: SPI bus",
        toml: include_str!("../presets/mongoose.toml"),
    },
    Preset {
        name: "teach",
        summary: "a class at any terminal: echo and Backspace (the real module has neither)",
        toml: include_str!("../presets/teach.toml"),
    },
];

/// The preset called `name`.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The names, for `--help` and error messages.
pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

/// One layer of configuration: where it came from (for messages) and its TOML text.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    /// `--preset zephyr`, `--config FILE`.
    pub origin: &'a str,
    pub text: &'a str,
}

/// The layers of `presets` (in order), then `file` if given.
pub fn layers<'a>(presets: &[&'static Preset], file: Option<Layer<'a>>) -> Vec<Layer<'a>> {
    let mut v: Vec<Layer<'a>> = presets
        .iter()
        .map(|p| Layer {
            origin: p.name,
            text: p.toml,
        })
        .collect();
    v.extend(file);
    v
}

fn merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// The layers merged into one table (later layers win). Each layer must be valid on its own, so
/// an error names the layer and keeps the line and column of its text.
pub fn merged(layers: &[Layer<'_>]) -> Result<Table, String> {
    let mut table = Table::new();
    for l in layers {
        Config::from_toml(l.text).map_err(|e| format!("{}: {e}", l.origin))?;
        let t: Table = l
            .text
            .parse()
            .map_err(|e: toml::de::Error| format!("{}: {e}", l.origin))?;
        merge(&mut table, t);
    }
    Ok(table)
}

/// The configuration the layers make.
pub fn config(layers: &[Layer<'_>]) -> Result<Config, String> {
    match layers {
        [] => Ok(Config::default()),
        [one] => Config::from_toml(one.text).map_err(|e| format!("{}: {e}", one.origin)),
        _ => {
            let text = toml::to_string(&merged(layers)?).map_err(|e| e.to_string())?;
            Config::from_toml(&text)
        }
    }
}

/// The TOML the layers stand for, as `--print-config` shows it: one layer as it is written (with
/// its comments), several merged into one (each key as the last layer that set it).
pub fn to_toml(layers: &[Layer<'_>]) -> Result<String, String> {
    match layers {
        [] => Ok("# no --preset and no --config: every setting has its default\n".into()),
        [one] => {
            Config::from_toml(one.text).map_err(|e| format!("{}: {e}", one.origin))?;
            Ok(format!("# {}\n{}", one.origin, one.text))
        }
        _ => {
            let table = merged(layers)?;
            let origins: Vec<&str> = layers.iter().map(|l| l.origin).collect();
            let text = toml::to_string(&table).map_err(|e| e.to_string())?;
            Config::from_toml(&text)?;
            Ok(format!(
                "# {} merged in this order (a later one wins)\n{text}",
                origins.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Bus, ClosedForm};

    #[test]
    fn every_preset_parses_and_changes_what_it_says() {
        for p in PRESETS {
            Config::from_toml(p.toml).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert!(p.toml.starts_with(&format!("# {}: ", p.name)), "{}", p.name);
        }
        let z = config(&layers(&[find("zephyr").unwrap()], None)).unwrap();
        assert!(z.quirks.drop_byte_after_payload);
        assert_eq!(
            config(&layers(&[find("st").unwrap()], None)).unwrap(),
            Config::default()
        );
        let c = config(&layers(&[find("cmsis").unwrap()], None)).unwrap();
        assert_eq!(
            (c.identity.firmware.as_str(), c.module.bus),
            ("C3.5.2.5.STM", Bus::Spi)
        );
        assert!(
            config(&layers(&[find("teach").unwrap()], None))
                .unwrap()
                .module
                .terminal
        );
        assert!(find("nope").is_none());
    }

    #[test]
    fn later_layers_win_key_by_key_and_the_file_last() {
        let file = Layer {
            origin: "--config my.toml",
            text: "[quirks]\nclosed_reply = \"ok\"\n[identity]\nfirmware = \"C3.5.2.3.STM\"\n",
        };
        let l = layers(
            &[find("zephyr").unwrap(), find("cmsis").unwrap()],
            Some(file),
        );
        let c = config(&l).unwrap();
        assert!(c.quirks.drop_byte_after_payload, "zephyr's key stays");
        assert_eq!(
            c.quirks.closed_reply,
            ClosedForm::Ok,
            "the file's key joins it"
        );
        assert_eq!(c.module.bus, Bus::Spi, "cmsis's bus stays");
        assert_eq!(c.identity.firmware, "C3.5.2.3.STM", "the file wins");
        let shown = to_toml(&l).unwrap();
        assert!(shown.starts_with("# zephyr, cmsis, --config my.toml merged"));
        assert_eq!(Config::from_toml(&shown).unwrap(), c);
        // One layer is shown as written, comments and all.
        let one = to_toml(&layers(&[find("teach").unwrap()], None)).unwrap();
        assert_eq!(one, format!("# teach\n{}", find("teach").unwrap().toml));
    }

    #[test]
    fn a_bad_layer_is_named_with_its_line() {
        let file = Layer {
            origin: "--config bad.toml",
            text: "[quirks]\nnope = 1\n",
        };
        let e = config(&layers(&[find("zephyr").unwrap()], Some(file))).unwrap_err();
        assert!(e.starts_with("--config bad.toml: "), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }
}
