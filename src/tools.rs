//! Offline certificate-store tools (layer: edge; touches only the store directory and the files
//! named on the command line): `eswifi-emu flash` is the equivalent of flashing a complete firmware
//! image (the only way to clear one-time-programmable sets), `eswifi-emu certs` lists what each set
//! holds. Key material is never printed.

use crate::certstore::CertStore;
use eswifi_core::item::{Item, MAX_ITEM};
use eswifi_core::module::certs::SET_COUNT;
use eswifi_core::module::pem_check;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt::Write as _;
use std::path::PathBuf;

/// What `flash` programs.
#[derive(Debug, Default)]
pub(crate) struct FlashPlan {
    pub erase: bool,
    pub set: Option<usize>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Carry out a flash plan; returns a line per action taken.
pub(crate) fn flash(store: &CertStore, plan: &FlashPlan) -> Result<Vec<String>, String> {
    let items: Vec<(Item, &PathBuf)> = [
        (Item::Ca, &plan.ca),
        (Item::Cert, &plan.cert),
        (Item::Key, &plan.key),
    ]
    .into_iter()
    .filter_map(|(i, p)| p.as_ref().map(|p| (i, p)))
    .collect();
    if !plan.erase && items.is_empty() {
        return Err("nothing to do: give --erase and/or --set N with --ca/--cert/--key".into());
    }
    let set = match (plan.set, items.is_empty()) {
        (Some(s), _) if s >= SET_COUNT => {
            return Err(format!("--set {s}: sets are 0 to {}", SET_COUNT - 1))
        }
        (Some(s), _) => Some(s),
        (None, false) => return Err("--ca/--cert/--key need --set N".into()),
        (None, true) => None,
    };
    // Read everything first, so a missing file changes nothing.
    let mut data = Vec::new();
    for (item, path) in &items {
        // No bigger than PG could program: the store refuses to load more.
        let bytes = eswifi_tools::files::read_capped(path, MAX_ITEM as u64)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if bytes.is_empty() {
            return Err(format!("{}: empty file", path.display()));
        }
        data.push((*item, path, bytes));
    }
    // As at the emulator's start: temp files an interrupted write left are removed (a planted
    // link is unlinked, never followed), and a set directory that is a link stops everything.
    store.remove_stale_temps().map_err(|e| e.to_string())?;
    let mut done = Vec::new();
    if plan.erase {
        store
            .erase()
            .map_err(|e| format!("erasing {}: {e}", store.dir().display()))?;
        done.push(format!(
            "erased every certificate set and the saved settings in {}",
            store.dir().display()
        ));
    }
    if let Some(set) = set {
        for (item, path, bytes) in data {
            if let Err(why) = pem_check(item, &bytes) {
                log::warn!("{}: {why}; stored as given", path.display());
            }
            store
                .write(set, item, &bytes)
                .map_err(|e| format!("writing {}: {e}", store.item_path(set, item).display()))?;
            done.push(format!(
                "set {set}: {} ← {} ({} bytes)",
                item.label(),
                path.display(),
                bytes.len()
            ));
        }
    }
    Ok(done)
}

/// `certs`: what every set holds.
pub(crate) fn list(store: &CertStore) -> Result<String, String> {
    let sets = store.load().map_err(|e| e.to_string())?;
    let mut out = String::new();
    for set in 0..SET_COUNT {
        let kind = if set < 3 {
            "one-time programmable"
        } else {
            "re-writable on C6 firmware"
        };
        let _ = writeln!(out, "set {set} ({kind}):");
        for item in Item::ALL {
            let label = format!("{}:", item.label());
            match sets.get(set, item) {
                None => {
                    let _ = writeln!(out, "  {label:<20} empty");
                }
                Some(bytes) => {
                    let _ = writeln!(out, "  {label:<20} {} bytes", bytes.len());
                    describe_item(&mut out, item, bytes);
                }
            }
        }
    }
    Ok(out)
}

fn describe_item(out: &mut String, item: Item, bytes: &[u8]) {
    if item == Item::Key {
        let kind = match PrivateKeyDer::from_pem_slice(bytes) {
            Ok(PrivateKeyDer::Pkcs1(_)) => "PKCS#1 RSA private key",
            Ok(PrivateKeyDer::Sec1(_)) => "SEC1 EC private key",
            Ok(PrivateKeyDer::Pkcs8(_)) => "PKCS#8 private key",
            Ok(_) => "private key",
            Err(_) => "not a PEM private key",
        };
        let _ = writeln!(out, "    {kind}");
        return;
    }
    let certs: Vec<_> = CertificateDer::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        let _ = writeln!(out, "    not a PEM certificate");
    }
    for der in certs {
        match x509_parser::parse_x509_certificate(&der) {
            Ok((_, c)) => {
                let v = c.validity();
                let _ = writeln!(out, "    subject: {}", c.subject());
                let _ = writeln!(out, "    issuer:  {}", c.issuer());
                let _ = writeln!(out, "    valid:   {} to {}", v.not_before, v.not_after);
            }
            Err(e) => {
                let _ = writeln!(out, "    unparseable certificate: {e}");
            }
        }
    }
}
