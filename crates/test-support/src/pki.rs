//! The test PKI (rcgen) and rustls server configurations. Depends on nothing of the end-to-end
//! harness, so the core's unit tests include it too (`src/module/tls/tests.rs`).

#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, ServerConfig};
use rustls::{SignatureScheme, SupportedProtocolVersion};
use std::sync::{Arc, OnceLock};

// ---- certificates -------------------------------------------------------------------------------

pub const ORG: &str = "eswifi-emu tests";

/// A certificate (PEM, possibly a chain) and its private key (PKCS#8 PEM).
#[derive(Clone, Debug)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
    /// The subject as x509-parser prints it (`O=…, CN=…`).
    pub subject: String,
}

impl Identity {
    /// The base64 lines of the key (what must never be printed).
    pub fn key_body_lines(&self) -> Vec<String> {
        self.key_pem
            .lines()
            .filter(|l| !l.starts_with("-----") && !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// The test PKI. `ca` signs `server`, `client` and `expired_server`; `other_ca` signs
/// `other_client`; `self_signed` signs itself.
pub struct Pki {
    pub ca: Identity,
    pub server: Identity,
    pub client: Identity,
    pub other_ca: Identity,
    pub other_client: Identity,
    pub expired_server: Identity,
    pub self_signed: Identity,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, ORG);
    d.push(DnType::CommonName, cn);
    d
}

fn subject_of(cn: &str) -> String {
    format!("O={ORG}, CN={cn}")
}

/// An rcgen CA able to sign: its parameters and key make the issuer of what it signs.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub id: Identity,
}

/// Certificate parameters of a CA named `cn`.
fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

impl Ca {
    fn issuer(&self) -> rcgen::Issuer<'_, &KeyPair> {
        rcgen::Issuer::from_params(&self.params, &self.key)
    }

    pub fn new(cn: &str) -> Ca {
        let mut p = ca_params(cn);
        p.not_before = rcgen::date_time_ymd(2015, 1, 1);
        p.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let key = KeyPair::generate().expect("CA key");
        let cert = p.self_signed(&key).expect("CA certificate");
        let id = Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            subject: subject_of(cn),
        };
        Ca { params: p, key, id }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, cn: &str) -> Ca {
        let mut p = ca_params(cn);
        p.use_authority_key_identifier_extension = true;
        p.not_before = rcgen::date_time_ymd(2015, 1, 1);
        p.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let key = KeyPair::generate().expect("intermediate key");
        let cert = p
            .signed_by(&key, &self.issuer())
            .expect("intermediate certificate");
        let id = Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            subject: subject_of(cn),
        };
        Ca { params: p, key, id }
    }

    /// A server (`server = true`: serverAuth, SANs 127.0.0.1 and localhost) or client certificate.
    pub fn issue(&self, cn: &str, server: bool, validity: Option<(i32, i32)>) -> Identity {
        let sans: Vec<String> = if server {
            vec!["localhost".into(), "127.0.0.1".into()]
        } else {
            Vec::new()
        };
        let mut p = CertificateParams::new(sans).expect("params");
        p.distinguished_name = dn(cn);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        p.use_authority_key_identifier_extension = true;
        let (from, to) = validity.unwrap_or((2020, 2099));
        p.not_before = rcgen::date_time_ymd(from, 1, 1);
        p.not_after = rcgen::date_time_ymd(to, 1, 1);
        let key = KeyPair::generate().expect("key");
        let cert = p
            .signed_by(&key, &self.issuer())
            .expect("signing certificate");
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            subject: subject_of(cn),
        }
    }
}

fn self_signed_server(cn: &str) -> Identity {
    let mut p =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.distinguished_name = dn(cn);
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-signed certificate");
    Identity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        subject: subject_of(cn),
    }
}

/// The PKI of this test binary (generated on first use).
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = Ca::new("eswifi-e2e CA");
        let other = Ca::new("eswifi-e2e other CA");
        Pki {
            server: ca.issue("eswifi-e2e server", true, None),
            client: ca.issue("eswifi-e2e client", false, None),
            expired_server: ca.issue("eswifi-e2e expired server", true, Some((2019, 2020))),
            other_client: other.issue("eswifi-e2e other client", false, None),
            self_signed: self_signed_server("eswifi-e2e self-signed server"),
            ca: ca.id,
            other_ca: other.id,
        }
    })
}

/// `n` freshly generated, unrelated CA certificates (PEM), e.g. to make a long CA bundle.
pub fn decoy_cas(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            Ca::new(&format!("eswifi-e2e decoy CA number {i:02}"))
                .id
                .cert_pem
        })
        .collect()
}

/// PEM as a host firmware often stores it: CRLF line ends and, as ST's driver sends `strlen()+1`,
/// a trailing NUL.
pub fn crlf_nul(pem: &str) -> Vec<u8> {
    let mut v = pem.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes();
    v.push(0);
    v
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// Lower-case hex, as an item file's header writes its digest.
pub use eswifi_core::hex::encode as hex;

// ---- rustls servers -----------------------------------------------------------------------------

/// Protocol versions a test server offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    Both,
    Tls12,
    Tls13,
}

/// A rustls server configuration: `id` as the server's certificate; with `client_ca`, a client
/// certificate signed by it is required.
pub fn server_config(id: &Identity, client_ca: Option<&str>, v: Versions) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match v {
        Versions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Versions::Tls12 => &[&rustls::version::TLS12],
        Versions::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("protocol versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.expect("client CA PEM")).expect("client CA");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("server certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("server key PEM");
    Arc::new(
        builder
            .with_single_cert(chain, key)
            .expect("server certificate and key"),
    )
}

/// A server that asks for a client certificate and takes any, as servers built on OpenSSL accept
/// X.509 v1; it checks the handshake signature against the certificate's key itself (webpki, and
/// so rustls's helpers, refuse to parse v1).
#[derive(Debug)]
struct AnyClientCert;

impl AnyClientCert {
    fn check(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let bad = || rustls::Error::General("bad client signature".into());
        if dss.scheme != SignatureScheme::ECDSA_NISTP256_SHA256 {
            return Err(bad());
        }
        let (_, c) = x509_parser::parse_x509_certificate(cert).map_err(|_| bad())?;
        let point = &c.public_key().subject_public_key.data;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
            .verify(message, dss.signature())
            .map_err(|_| bad())?;
        Ok(HandshakeSignatureValid::assertion())
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::check(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::check(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ECDSA_NISTP256_SHA256]
    }
}

pub fn any_client_cert_server(
    id: &Identity,
    v: &'static SupportedProtocolVersion,
) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
    Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[v])
            .unwrap()
            .with_client_cert_verifier(Arc::new(AnyClientCert))
            .with_single_cert(chain, key)
            .unwrap(),
    )
}
