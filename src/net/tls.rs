//! TLS client configuration (layer: edge). Turns the module's [`TlsParams`] into a rustls
//! `ClientConfig` (ring provider) with the module's verification semantics: no hostname check unless
//! configured, chain verification only against the set's root CA, validity dates against the host
//! clock. Errors are described precisely for the log; the wire reply is the core's business.

use crate::module::io::TlsParams;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Server-certificate verifier with the module's semantics.
#[derive(Debug)]
struct ModuleVerifier {
    /// None: P9=0, or P9=1 with no CA programmed — nothing is verified.
    roots: Option<RootCertStore>,
    check_hostname: bool,
    report_only: bool,
    set: usize,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ModuleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            log::warn!(
                "TLS: server certificate NOT verified (P9=0, or P9=1 with no root CA in set {})",
                self.set
            );
            return Ok(ServerCertVerified::assertion());
        };
        let check = || -> Result<(), rustls::Error> {
            let cert = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
            if self.check_hostname {
                rustls::client::verify_server_name(&cert, server_name)?;
            }
            Ok(())
        };
        match check() {
            Ok(()) => {
                log::info!(
                    "TLS: server certificate verified against the root CA of set {}",
                    self.set
                );
                Ok(ServerCertVerified::assertion())
            }
            Err(e) if self.report_only => {
                log::warn!(
                    "TLS: server certificate failed verification against the root CA of set {} ({}); continuing because PB=1",
                    self.set,
                    describe(&e)
                );
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Build the client configuration for one connection.
pub fn client_config(p: &TlsParams) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &p.ca {
        None => None,
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("root CA of set {}: bad PEM: {e}", p.set))?;
                roots.add(cert).map_err(|e| {
                    format!("root CA of set {}: not a usable CA certificate: {e}", p.set)
                })?;
            }
            if roots.is_empty() {
                return Err(format!("root CA of set {}: no certificate in it", p.set));
            }
            Some(roots)
        }
    };
    let verifier = ModuleVerifier {
        roots,
        check_hostname: p.check_hostname,
        report_only: p.report_only,
        set: p.set,
        provider: provider.clone(),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match &p.client {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("client certificate of set {}: bad PEM: {e}", p.set))?;
            if chain.is_empty() {
                return Err(format!(
                    "client certificate of set {}: no certificate in it",
                    p.set
                ));
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|e| format!("client key of set {}: {e}", p.set))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!(
                    "client certificate/key of set {} do not work together: {e}",
                    p.set
                )
            })?
        }
    };
    Ok(Arc::new(config))
}

/// The name rustls uses: a DNS name sends SNI; otherwise the peer's address (no SNI).
pub fn server_name(p: &TlsParams, peer: Ipv4Addr) -> ServerName<'static> {
    p.server_name
        .as_deref()
        .and_then(|n| ServerName::try_from(n.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(std::net::IpAddr::V4(peer).into()))
}

/// A precise, human description of a TLS failure for the log.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::UnknownIssuer) => {
            "server certificate is not signed by the programmed root CA (unknown issuer)".into()
        }
        E::InvalidCertificate(C::Expired) => "server certificate has expired".into(),
        E::InvalidCertificate(C::ExpiredContext { time, not_after }) => format!(
            "server certificate expired (not after {} s, now {} s since the epoch)",
            not_after.as_secs(),
            time.as_secs()
        ),
        E::InvalidCertificate(C::NotValidYet)
        | E::InvalidCertificate(C::NotValidYetContext { .. }) => {
            "server certificate is not valid yet".into()
        }
        E::InvalidCertificate(C::BadSignature) => "server certificate has a bad signature".into(),
        E::InvalidCertificate(C::NotValidForName)
        | E::InvalidCertificate(C::NotValidForNameContext { .. }) => {
            "server certificate is not valid for the server name".into()
        }
        E::InvalidCertificate(other) => format!("server certificate rejected: {other:?}"),
        E::AlertReceived(
            A::BadCertificate | A::CertificateRequired | A::UnknownCA | A::CertificateUnknown,
        ) => {
            format!("server rejected the client certificate (alert {e})")
        }
        E::AlertReceived(a) => format!("server sent alert {a:?}"),
        E::InvalidMessage(m) => {
            format!("peer does not speak TLS or sent a malformed record ({m:?})")
        }
        E::NoCertificatesPresented => "server presented no certificate".into(),
        other => format!("TLS protocol error: {other}"),
    }
}
