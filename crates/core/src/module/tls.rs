//! TLS sessions (layer: core): client sockets (`P1=3`, `P6=1`) and, as an extension behind
//! `[tls] server`, the clients of `P1=3` servers. rustls is sans-IO, so the module drives each
//! connection itself: ciphertext comes in with `Data` events and goes out as `Send` ops, and time is
//! the core's (the TLS 1.3 client-certificate grace and the server handshake deadline are core
//! timers, certificate validity is checked against the module's injected wall clock). No sockets,
//! no clock reads here.
//!
//! Verification follows the module, not a browser: no hostname check unless configured, the chain
//! only against the active set's root CA, validity dates against the wall clock. A server presents
//! the active set's certificate and key, and with `P9=2` requires a client certificate signed by
//! the set's root CA. Failures are described precisely for the log; the wire reply is the socket
//! area's business.

use super::socket::RxQueue;
use crate::config::KeyLogSink;
use crate::item::Item;
use crate::iwin::command::TlsVerify;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// TLS 1.3 with a client certificate: the client's handshake ends before the server has judged the
/// certificate, so `P6=1` waits for the server's first record after it (or this long), and a
/// rejection fails `P6=1` as it does on the module. Servers send session tickets right after the
/// client's Finished, so the wait is normally far shorter.
pub(crate) const CLIENT_AUTH_GRACE: Duration = Duration::from_secs(1);

/// What a TLS client socket (`P1=3`) needs from the module: the verification level and the items of
/// the active certificate set.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TlsParams {
    /// The active set (`PF=0,<set>`), for diagnostics.
    pub(crate) set: usize,
    /// `P9`: none, root CA if programmed, root CA + client certificate and key.
    pub(crate) verify: TlsVerify,
    /// `PB=1`: a failed verification is logged but the connection proceeds.
    pub(crate) report_only: bool,
    /// PEM bytes of the set's root CA when it is to be used for verification.
    pub(crate) ca: Option<Vec<u8>>,
    /// PEM bytes of the client certificate and key when they are to be presented (P9=2).
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
    /// Server name: SNI (when it is a DNS name) and the name checked when `check_hostname` is set.
    pub(crate) server_name: Option<String>,
    pub(crate) check_hostname: bool,
}

/// Lengths only: logs never carry certificate or key bytes.
impl std::fmt::Debug for TlsParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsParams")
            .field("set", &self.set)
            .field("verify", &self.verify)
            .field("report_only", &self.report_only)
            .field("ca_bytes", &self.ca.as_ref().map(Vec::len))
            .field("client_cert_and_key", &self.client.is_some())
            .field("server_name", &self.server_name)
            .field("check_hostname", &self.check_hostname)
            .finish()
    }
}

/// What a TLS server socket (`P1=3`, `P5=1`) needs: its identity and how it checks clients.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TlsServerParams {
    /// The active set (`PF=0,<set>`), for diagnostics.
    pub(crate) set: usize,
    /// `P9`: no client certificate, one is verified if presented, one is required.
    pub(crate) verify: TlsVerify,
    /// PEM of the set's certificate and key: the server's identity.
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
    /// PEM of the set's root CA, the anchor client certificates are checked against (P9 ≥ 1).
    pub(crate) ca: Option<Vec<u8>>,
}

/// Lengths only: logs never carry certificate or key bytes.
impl std::fmt::Debug for TlsServerParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServerParams")
            .field("set", &self.set)
            .field("verify", &self.verify)
            .field("cert_bytes", &self.cert.len())
            .field("ca_bytes", &self.ca.as_ref().map(Vec::len))
            .finish()
    }
}

/// Why a TLS session could not even be set up from the set's items (each says why in full).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SetupError {
    /// The root CA does not parse or is not a usable CA certificate.
    RootCa(String),
    /// The set's certificate or key does not parse, or they do not belong together.
    ClientCert(String),
    Other(String),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::RootCa(why) | SetupError::ClientCert(why) | SetupError::Other(why) => {
                f.write_str(why)
            }
        }
    }
}

impl std::error::Error for SetupError {}

/// Why an established or handshaking TLS session ended; Display is the precise reason for the log
/// and the transcript.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TlsFailure {
    /// The peer's records broke the session (a handshake failure, an alert, not TLS at all), as
    /// the client (`server` false) or the server sees it.
    Protocol { error: rustls::Error, server: bool },
    /// Taking in the received bytes failed.
    Receive(String),
    /// Reading the decrypted data failed.
    Read(String),
    /// The peer sent close_notify before the handshake was done.
    ClosedInHandshake,
    /// The connection ended before the handshake was done.
    DroppedInHandshake,
    /// A server session's client did not finish its handshake in time (`connect_timeout_ms`).
    HandshakeTimeout { ms: u64 },
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::Protocol {
                error,
                server: false,
            } => f.write_str(&describe(error)),
            TlsFailure::Protocol {
                error,
                server: true,
            } => f.write_str(&describe_as_server(error)),
            TlsFailure::Receive(why) => write!(f, "TLS receive: {why}"),
            TlsFailure::Read(why) => write!(f, "TLS read: {why}"),
            TlsFailure::ClosedInHandshake => {
                f.write_str("peer closed the TLS session during the handshake")
            }
            TlsFailure::DroppedInHandshake => {
                f.write_str("peer closed the connection during the TLS handshake")
            }
            TlsFailure::HandshakeTimeout { ms } => write!(f, "no TLS handshake within {ms} ms"),
        }
    }
}

impl std::error::Error for TlsFailure {}

/// What a batch of received ciphertext did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Input {
    /// The handshake is complete and (for TLS 1.3 client auth) the server has accepted us.
    pub(crate) established_now: bool,
    /// The peer sent close_notify: no more data will come.
    pub(crate) peer_closed: bool,
}

/// One TLS session over one connection: a client socket's, or a server socket's current client.
pub(crate) struct TlsSession {
    conn: rustls::Connection,
    set: usize,
    /// A client presenting a certificate (the TLS 1.3 grace applies).
    client_auth: bool,
    established: bool,
    /// Handshake done with a TLS 1.3 client certificate; established at this time unless the server
    /// objects first.
    grace_until: Option<Instant>,
    /// A server session's handshake must be complete by then.
    handshake_deadline: Option<Instant>,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("server", &self.is_server())
            .field("set", &self.set)
            .field("established", &self.established)
            .field("grace_until", &self.grace_until)
            .field("handshake_deadline", &self.handshake_deadline)
            .finish()
    }
}

impl TlsSession {
    /// A client session ready to send its ClientHello, verifying against `p` at wall time
    /// `now_unix`.
    pub(crate) fn start_client(
        p: &TlsParams,
        peer: Ipv4Addr,
        now_unix: UnixTime,
        key_log: &KeyLogSink,
    ) -> Result<TlsSession, SetupError> {
        let config = with_key_log(client_config(p, now_unix)?, key_log);
        let mut conn = rustls::ClientConnection::new(config, server_name(p, peer))
            .map_err(|e| SetupError::Other(format!("TLS session: {e}")))?;
        // The socket's send window paces the host; rustls must not cut writes short.
        conn.set_buffer_limit(None);
        Ok(TlsSession {
            conn: conn.into(),
            set: p.set,
            client_auth: p.client.is_some(),
            established: false,
            grace_until: None,
            handshake_deadline: None,
        })
    }

    /// A server session waiting for a client's ClientHello, which must complete the handshake by
    /// `deadline`; client certificates are judged at wall time `now_unix`.
    pub(crate) fn start_server(
        p: &TlsServerParams,
        now_unix: UnixTime,
        deadline: Instant,
        key_log: &KeyLogSink,
    ) -> Result<TlsSession, SetupError> {
        let config = server_config(p, now_unix)?;
        let config = match &key_log.0 {
            None => config,
            Some(log) => {
                let mut c = Arc::unwrap_or_clone(config);
                c.key_log = log.clone();
                Arc::new(c)
            }
        };
        let mut conn = rustls::ServerConnection::new(config)
            .map_err(|e| SetupError::Other(format!("TLS session: {e}")))?;
        conn.set_buffer_limit(None);
        Ok(TlsSession {
            conn: conn.into(),
            set: p.set,
            client_auth: false,
            established: false,
            grace_until: None,
            handshake_deadline: Some(deadline),
        })
    }

    /// Check that `p` makes a working server configuration (at `P5=1`, before listening).
    pub(crate) fn check_server(p: &TlsServerParams, now_unix: UnixTime) -> Result<(), SetupError> {
        server_config(p, now_unix).map(|_| ())
    }

    pub(crate) fn is_server(&self) -> bool {
        matches!(self.conn, rustls::Connection::Server(_))
    }

    /// While a server session's handshake runs: when it must be done.
    pub(crate) fn handshake_deadline(&self) -> Option<Instant> {
        self.handshake_deadline.filter(|_| !self.established)
    }

    pub(crate) fn set(&self) -> usize {
        self.set
    }

    /// When the client-certificate grace ends, while it runs.
    pub(crate) fn grace_until(&self) -> Option<Instant> {
        self.grace_until
    }

    /// The grace ended without a rejection: the session is established.
    pub(crate) fn end_grace(&mut self) {
        if self.grace_until.take().is_some() {
            self.establish();
        }
    }

    /// Ciphertext waiting to be sent (handshake messages, records, alerts).
    pub(crate) fn output(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut buf).is_err() {
                break;
            }
        }
        buf
    }

    /// Encrypt application data (fetch it with [`TlsSession::output`]).
    pub(crate) fn encrypt(&mut self, plain: &[u8]) {
        // No buffer limit is set, so the whole payload is taken.
        if let Err(e) = self.conn.writer().write_all(plain) {
            log::warn!("TLS write of {} bytes: {e}", plain.len());
        }
    }

    /// Say goodbye (fetch it with [`TlsSession::output`]).
    pub(crate) fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    /// Process received ciphertext; decrypted data goes to `rx`. `Err` (a precise reason) when the
    /// peer broke the session: a handshake failure, an alert, a record that is not TLS.
    pub(crate) fn input(
        &mut self,
        data: &[u8],
        rx: &mut RxQueue,
        now: Instant,
    ) -> Result<Input, TlsFailure> {
        // Anything from the server after our certificate went out means it accepted it (a rejection
        // arrives as an alert, which fails below).
        let answer_to_grace = self.grace_until.is_some() && !data.is_empty();
        let mut input = Input::default();
        let mut rest = data;
        while !rest.is_empty() {
            let was_handshaking = self.conn.is_handshaking();
            match self.conn.read_tls(&mut rest) {
                Ok(0) => break, // close_notify seen: rustls reads no more
                Ok(_) => {}
                Err(e) => return Err(TlsFailure::Receive(e.to_string())),
            }
            let server = self.is_server();
            self.conn
                .process_new_packets()
                .map_err(|error| TlsFailure::Protocol { error, server })?;
            if was_handshaking && !self.conn.is_handshaking() {
                // A server has judged the client's certificate once its handshake is done.
                let tls13 = !self.is_server()
                    && self.conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
                if self.client_auth && tls13 {
                    self.grace_until = Some(now + CLIENT_AUTH_GRACE);
                } else if self.establish() {
                    input.established_now = true;
                }
            }
            input.peer_closed |= self.drain_plaintext(rx)?;
        }
        if answer_to_grace {
            self.grace_until = None;
            if self.establish() {
                input.established_now = true;
            }
        }
        if !rx.is_empty() && self.grace_until.take().is_some() && self.establish() {
            // Application data is an answer too.
            input.established_now = true;
        }
        Ok(input)
    }

    /// Move decrypted data into `rx`; true when the peer's close_notify was reached.
    fn drain_plaintext(&mut self, rx: &mut RxQueue) -> Result<bool, TlsFailure> {
        let mut buf = [0u8; 4096];
        loop {
            match self.conn.reader().read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => rx.push_stream(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(TlsFailure::Read(e.to_string())),
            }
        }
    }

    /// Mark established (once); true the first time.
    fn establish(&mut self) -> bool {
        if self.established {
            return false;
        }
        self.established = true;
        log::info!(
            "TLS {} established with set {} ({:?}, {:?})",
            if self.is_server() {
                "server session"
            } else {
                "session"
            },
            self.set,
            self.conn.protocol_version(),
            self.conn.negotiated_cipher_suite().map(|s| s.suite())
        );
        true
    }
}

/// The module's wall clock at handshake time (certificate validity is judged against it).
#[derive(Debug)]
struct FixedTime(UnixTime);

impl TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

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

/// The set's client certificate and key, presented whatever the server hints.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The certificate chain and key of set `set` (a client's, or a server's identity). Like the
/// module, only checks that the key belongs to the certificate, so X.509 v1 certificates (what
/// `openssl x509 -req` makes without an extension file) work; rustls's own check parses the
/// certificate as webpki would and refuses v1.
fn set_identity(
    provider: &CryptoProvider,
    cert_pem: &[u8],
    key_pem: &[u8],
    set: usize,
) -> Result<CertifiedKey, SetupError> {
    let bad = |what: String| SetupError::ClientCert(what);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("client certificate of set {set}: bad PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(bad(format!(
            "client certificate of set {set}: no certificate in it"
        )));
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| bad(format!("client key of set {set}: {e}")))?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad(format!("client key of set {set}: {e}")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| bad(format!("client certificate of set {set}: not X.509: {e}")))?;
    if let Some(spki) = signer.public_key() {
        if cert.tbs_certificate.subject_pki.raw != spki.as_ref() {
            return Err(bad(format!(
                "client certificate and key of set {set} do not belong together (the key's public key is not the certificate's)"
            )));
        }
    }
    Ok(CertifiedKey::new(chain, signer))
}

/// Build the client configuration for one connection.
fn client_config(p: &TlsParams, now: UnixTime) -> Result<Arc<ClientConfig>, SetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &p.ca {
        None => None,
        Some(pem) => Some(roots_of(pem, p.set)?),
    };
    let verifier = ModuleVerifier {
        roots,
        check_hostname: p.check_hostname,
        report_only: p.report_only,
        set: p.set,
        provider: provider.clone(),
    };
    let client = match &p.client {
        None => None,
        Some((cert, key)) => Some(set_identity(&provider, cert, key, p.set)?),
    };
    let builder = ClientConfig::builder_with_details(provider, Arc::new(FixedTime(now)))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| SetupError::Other(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(key) => builder.with_client_cert_resolver(Arc::new(ClientCert(Arc::new(key)))),
    };
    Ok(Arc::new(config))
}

/// The client configuration with the edge's key log, if one was given (`--keylog`).
fn with_key_log(config: Arc<ClientConfig>, key_log: &KeyLogSink) -> Arc<ClientConfig> {
    match &key_log.0 {
        None => config,
        Some(log) => {
            let mut c = Arc::unwrap_or_clone(config);
            c.key_log = log.clone();
            Arc::new(c)
        }
    }
}

/// The set's certificate and key, presented to every client.
#[derive(Debug)]
struct ServerCert(Arc<CertifiedKey>);

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// The root CA of a set as a trust anchor store.
fn roots_of(pem: &[u8], set: usize) -> Result<RootCertStore, SetupError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert =
            cert.map_err(|e| SetupError::RootCa(format!("root CA of set {set}: bad PEM: {e}")))?;
        roots.add(cert).map_err(|e| {
            SetupError::RootCa(format!(
                "root CA of set {set}: not a usable CA certificate: {e}"
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(SetupError::RootCa(format!(
            "root CA of set {set}: no certificate in it"
        )));
    }
    Ok(roots)
}

/// Build the server configuration for one accepted client.
fn server_config(p: &TlsServerParams, now: UnixTime) -> Result<Arc<ServerConfig>, SetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let identity = set_identity(&provider, &p.cert, &p.key, p.set)?;
    let builder = ServerConfig::builder_with_details(provider.clone(), Arc::new(FixedTime(now)))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| SetupError::Other(e.to_string()))?;
    let builder = match (&p.ca, p.verify) {
        (Some(ca), TlsVerify::Optional | TlsVerify::Required) => {
            let roots = Arc::new(roots_of(ca, p.set)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if p.verify == TlsVerify::Required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| SetupError::RootCa(format!("root CA of set {}: {e}", p.set)))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder.with_cert_resolver(Arc::new(ServerCert(Arc::new(identity))));
    Ok(Arc::new(config))
}

/// The name rustls uses: a DNS name sends SNI; otherwise the peer's address (no SNI).
fn server_name(p: &TlsParams, peer: Ipv4Addr) -> ServerName<'static> {
    p.server_name
        .as_deref()
        .and_then(|n| ServerName::try_from(n.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(std::net::IpAddr::V4(peer).into()))
}

/// A precise, human description of a TLS failure for the log.
pub(crate) fn describe(e: &rustls::Error) -> String {
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

/// A precise, human description of a failure of a server session (the module serving TLS).
pub(crate) fn describe_as_server(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::NoCertificatesPresented => "client presented no certificate (P9=2 requires one)".into(),
        E::InvalidCertificate(C::UnknownIssuer) => {
            "client certificate is not signed by the set's root CA (unknown issuer)".into()
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "client certificate has expired".into()
        }
        E::InvalidCertificate(other) => format!("client certificate rejected: {other:?}"),
        E::AlertReceived(
            A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::DecryptError,
        ) => format!("client rejected the server certificate (alert {e})"),
        E::AlertReceived(a) => format!("client sent alert {a:?}"),
        E::InvalidMessage(m) => {
            format!("peer does not speak TLS or sent a malformed record ({m:?})")
        }
        other => format!("TLS protocol error: {other}"),
    }
}

/// Why an item is not PEM of the kind it needs to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemError {
    /// A root CA or certificate item without a `CERTIFICATE` section.
    NoCertificate,
    /// PEM that does not parse: why.
    BadPem(String),
    /// A key item without a private key: why.
    NoKey(String),
}

impl std::fmt::Display for PemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemError::NoCertificate => f.write_str("no CERTIFICATE section found"),
            PemError::BadPem(why) => write!(f, "bad PEM: {why}"),
            PemError::NoKey(why) => write!(f, "no private key: {why}"),
        }
    }
}

impl std::error::Error for PemError {}

/// Whether `data` holds PEM of the kind the item needs (trailing NUL and CRLF line ends are fine).
pub fn pem_check(item: Item, data: &[u8]) -> Result<(), PemError> {
    match item {
        Item::Ca | Item::Cert => {
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(data).collect();
            match certs {
                Ok(c) if !c.is_empty() => Ok(()),
                Ok(_) => Err(PemError::NoCertificate),
                Err(e) => Err(PemError::BadPem(e.to_string())),
            }
        }
        Item::Key => PrivateKeyDer::from_pem_slice(data)
            .map(|_| ())
            .map_err(|e| PemError::NoKey(e.to_string())),
    }
}
