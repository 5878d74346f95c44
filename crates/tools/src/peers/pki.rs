//! The demo certificates of `eswifi-emu peers` (layer: tool): a CA, a server certificate and a
//! client certificate signed by it, and an unrelated CA (to show a failed verification). Written
//! once into a directory and reused afterwards, so that a module's one-time-programmable set
//! programmed with `ca.pem` keeps matching. Keys are written with mode 0600 and never printed.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub(super) const CA: &str = "ca.pem";
pub(super) const SERVER_CERT: &str = "server.pem";
pub(super) const SERVER_KEY: &str = "server.key";
pub(super) const CLIENT_CERT: &str = "client.pem";
pub(super) const CLIENT_KEY: &str = "client.key";
pub(super) const OTHER_CA: &str = "other-ca.pem";

const ALL: [&str; 6] = [
    CA,
    SERVER_CERT,
    SERVER_KEY,
    CLIENT_CERT,
    CLIENT_KEY,
    OTHER_CA,
];

/// The PEM texts the servers need.
pub(super) struct DemoPki {
    pub dir: PathBuf,
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    /// Whether the files were made now (rather than found).
    pub created: bool,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "eswifi-emu demo");
    d.push(DnType::CommonName, cn);
    d
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // UTCTime range: every X.509 parser of the era of the module reads it.
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2049, 12, 31);
    p
}

fn leaf_params(
    cn: &str,
    server: bool,
    extra_ip: Option<IpAddr>,
) -> Result<CertificateParams, String> {
    let sans = if server {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    } else {
        Vec::new()
    };
    let mut p = CertificateParams::new(sans).map_err(|e| e.to_string())?;
    if let Some(ip) = extra_ip {
        p.subject_alt_names.push(SanType::IpAddress(ip));
    }
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    p.use_authority_key_identifier_extension = true;
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2049, 12, 31);
    Ok(p)
}

/// Write `data` to `path` (mode 0600 when `private`), replacing what is there.
fn write(path: &Path, data: &str, private: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = crate::files::create_new(&tmp, if private { 0o600 } else { 0o644 })?;
    f.write_all(data.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Load the demo PKI from `dir`, or make it there when any file is missing. `extra_ip` goes into
/// the server certificate's names (the address peers serve on, when not loopback).
pub(super) fn load_or_create(dir: &Path, extra_ip: Option<IpAddr>) -> Result<DemoPki, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let read =
        |name: &str| crate::files::read_text_capped(&dir.join(name), crate::files::MAX_TEXT_FILE);
    if ALL.iter().all(|n| dir.join(n).is_file()) {
        let got = (|| -> io::Result<DemoPki> {
            Ok(DemoPki {
                dir: dir.to_owned(),
                ca_pem: read(CA)?,
                server_cert_pem: read(SERVER_CERT)?,
                server_key_pem: read(SERVER_KEY)?,
                created: false,
            })
        })();
        return got.map_err(|e| format!("{}: {e}", dir.display()));
    }
    let err = |e: rcgen::Error| format!("generating the demo certificates: {e}");
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_p = ca_params("eswifi-emu demo CA");
    let ca = ca_p.self_signed(&ca_key).map_err(err)?;
    let issuer = rcgen::Issuer::from_params(&ca_p, &ca_key);
    let server_key = KeyPair::generate().map_err(err)?;
    let server = leaf_params("eswifi-emu demo server", true, extra_ip)?
        .signed_by(&server_key, &issuer)
        .map_err(err)?;
    let client_key = KeyPair::generate().map_err(err)?;
    let client = leaf_params("eswifi-emu demo client", false, None)?
        .signed_by(&client_key, &issuer)
        .map_err(err)?;
    let other_key = KeyPair::generate().map_err(err)?;
    let other = ca_params("unrelated CA (not the demo server's issuer)")
        .self_signed(&other_key)
        .map_err(err)?;
    let files: [(&str, String, bool); 6] = [
        (CA, ca.pem(), false),
        (SERVER_CERT, server.pem(), false),
        (SERVER_KEY, server_key.serialize_pem(), true),
        (CLIENT_CERT, client.pem(), false),
        (CLIENT_KEY, client_key.serialize_pem(), true),
        (OTHER_CA, other.pem(), false),
    ];
    for (name, data, private) in &files {
        let path = dir.join(name);
        write(&path, data, *private).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(DemoPki {
        dir: dir.to_owned(),
        ca_pem: ca.pem(),
        server_cert_pem: server.pem(),
        server_key_pem: server_key.serialize_pem(),
        created: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_then_reused_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), None).unwrap();
        assert!(a.created);
        for k in [SERVER_KEY, CLIENT_KEY] {
            let mode = std::fs::metadata(dir.path().join(k))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{k}");
        }
        let b = load_or_create(dir.path(), None).unwrap();
        assert!(!b.created);
        assert_eq!(a.ca_pem, b.ca_pem, "a programmed OTP set keeps matching");
    }
}
