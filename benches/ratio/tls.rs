//! The TLS figures' local server and the bare rustls client they are measured against. Neither side
//! resumes sessions (the module builds a fresh configuration per connection, so it never could):
//! every handshake is a full one.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A CA and a server certificate it signed (for 127.0.0.1), as PEM.
/// The test PKI of the workspace's tests: a CA and a server certificate for 127.0.0.1.
pub use eswifi_test_support::pki::Pki;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server on 127.0.0.1 taking one connection at a time: handshake, then read until the
/// client closes. `done` counts the connections finished, so a figure can wait for the server to
/// be idle before its next handshake.
pub struct Server {
    pub addr: SocketAddr,
    pub done: Arc<AtomicUsize>,
}

impl Server {
    pub fn start(pki: &Pki) -> Server {
        let certs =
            vec![CertificateDer::from_pem_slice(pki.server.cert_pem.as_bytes()).expect("pem")];
        let key = PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).expect("key");
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        cfg.send_tls13_tickets = 0;
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        let cfg = Arc::new(cfg);
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let done = Arc::new(AtomicUsize::new(0));
        let counter = done.clone();
        // Lives as long as the benchmark process (it ends with it).
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut tcp) = conn else { continue };
                let _ = tcp.set_nodelay(true);
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(20)));
                let mut c = rustls::ServerConnection::new(cfg.clone()).expect("server conn");
                let mut ok = true;
                while ok && c.is_handshaking() {
                    ok = c.complete_io(&mut tcp).is_ok();
                }
                let mut s = rustls::Stream::new(&mut c, &mut tcp);
                let mut buf = [0u8; 4096];
                while ok && matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        Server { addr, done }
    }

    /// Wait (bounded) until `n` connections have finished.
    pub fn wait_done(&self, n: usize) {
        let until = Instant::now() + Duration::from_secs(20);
        while self.done.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < until, "the TLS server never saw the close");
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// Accepts any certificate but checks the handshake signatures, as the module does with `P9=0`.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The bare client's configuration: no verification (`P9=0`), or the CA as the only root (`P9=1`).
pub fn client_config(pki: &Pki, verify: bool) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let mut cfg = if verify {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca.cert_pem.as_bytes()).expect("ca"))
            .expect("root");
        let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("verifier");
        builder.with_webpki_verifier(v).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth()
    };
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// One full handshake of the bare client: how long from `connect` until its last flight was
/// written (the module answers `P6=1` then too); the close that follows is not timed.
pub fn bare_handshake(cfg: &Arc<ClientConfig>, addr: SocketAddr) -> Duration {
    let t = Instant::now();
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let mut c = rustls::ClientConnection::new(cfg.clone(), name).expect("client conn");
    while c.is_handshaking() {
        c.complete_io(&mut tcp).expect("handshake");
    }
    while c.wants_write() {
        c.write_tls(&mut tcp).expect("last flight");
    }
    let took = t.elapsed();
    c.send_close_notify();
    while c.wants_write() && c.write_tls(&mut tcp).is_ok() {}
    took
}
