//! Server plumbing shared by the peers (layer: tool): accept loops that look at a stop flag, a cap
//! on live connections, idle limits, and the rustls server configurations. Every loop here is
//! bounded: by the stop flag (checked at least every [`TICK`]) and by [`IDLE_LIMIT`] per connection.

use crate::script::port::wait_fd;
use nix::poll::PollFlags;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often blocked reads and accepts look at the stop flag.
pub(super) const TICK: Duration = Duration::from_millis(100);
/// A connection with no traffic for this long is closed.
pub(super) const IDLE_LIMIT: Duration = Duration::from_secs(300);
/// Live connections per server; more are closed at once.
pub(super) const MAX_CONNECTIONS: usize = 64;

/// Shared stop flag.
#[derive(Clone, Default)]
pub(super) struct Stop(Arc<AtomicBool>);

impl Stop {
    pub(super) fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    pub(super) fn stop(&self) {
        self.0.store(true, Ordering::Relaxed)
    }
}

/// Accept on `listener` until stopped; each connection runs `handle` on a thread of its own.
pub(super) fn accept_loop<F>(
    name: &'static str,
    listener: TcpListener,
    stop: Stop,
    handle: F,
) -> io::Result<JoinHandle<()>>
where
    F: Fn(TcpStream, SocketAddr, &Stop) + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    let live = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name(format!("peer-{name}"))
        .spawn(move || {
            while !stop.stopped() {
                if !wait_fd(listener.as_fd(), PollFlags::POLLIN, TICK).unwrap_or(false) {
                    continue;
                }
                let (sock, peer) = match listener.accept() {
                    Ok(x) => x,
                    Err(e) => {
                        log::warn!("{name}: accept: {e}");
                        std::thread::sleep(TICK);
                        continue;
                    }
                };
                if live.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    log::warn!("{name}: {peer}: over {MAX_CONNECTIONS} connections, closed");
                    continue;
                }
                live.fetch_add(1, Ordering::SeqCst);
                let (h, s, l) = (handle.clone(), stop.clone(), live.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("peer-{name}-conn"))
                    .spawn(move || {
                        let _ = sock.set_read_timeout(Some(TICK));
                        let _ = sock.set_write_timeout(Some(Duration::from_secs(10)));
                        let _ = sock.set_nodelay(true);
                        h(sock, peer, &s);
                        l.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    log::warn!("{name}: {peer}: {e}");
                    live.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
}

/// What one read on a connection with a read timeout gave.
pub(super) enum Got {
    Data(usize),
    /// Nothing this tick.
    Idle,
    /// The other end closed (or the connection failed: logged).
    Closed,
}

pub(super) fn read_tick<S: Read>(s: &mut S, buf: &mut [u8], name: &str, peer: SocketAddr) -> Got {
    match s.read(buf) {
        Ok(0) => Got::Closed,
        Ok(n) => Got::Data(n),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Got::Idle
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Got::Idle,
        Err(e) => {
            log::info!("{name}: {peer}: {e}");
            Got::Closed
        }
    }
}

/// Echo everything back until the peer closes, the server stops, or the line idles out.
pub(super) fn echo<S: Read + Write>(s: &mut S, name: &str, peer: SocketAddr, stop: &Stop) {
    let mut buf = [0u8; 16 * 1024];
    let mut last = Instant::now();
    let mut total = 0usize;
    while !stop.stopped() && last.elapsed() < IDLE_LIMIT {
        match read_tick(s, &mut buf, name, peer) {
            Got::Data(n) => {
                last = Instant::now();
                total += n;
                if let Err(e) = s.write_all(&buf[..n]).and_then(|()| s.flush()) {
                    log::info!("{name}: {peer}: {e}");
                    break;
                }
            }
            Got::Idle => {}
            Got::Closed => break,
        }
    }
    log::info!("{name}: {peer}: closed after echoing {total} bytes");
}

/// Drive a TLS handshake to its end on a socket with a read timeout.
pub(super) fn handshake(
    tls: &mut rustls::ServerConnection,
    sock: &mut TcpStream,
    stop: &Stop,
) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tls.is_handshaking() {
        if stop.stopped() || Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "handshake timed out",
            ));
        }
        match tls.complete_io(sock) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                // Tell the client why, if rustls has an alert queued.
                let _ = tls.write_tls(sock);
                return Err(e);
            }
        }
    }
    Ok(())
}

pub(super) fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))
}

/// A rustls server configuration for `cert`/`key`; with `client_ca`, a client certificate signed
/// by it is required (mutual TLS).
pub(super) fn server_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca: Option<&str>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for c in certs(pem)? {
                roots.add(c).map_err(|e| format!("client CA: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("key PEM: {e}"))?;
    let config = builder
        .with_single_cert(certs(cert_pem)?, key)
        .map_err(|e| format!("server certificate: {e}"))?;
    Ok(Arc::new(config))
}

/// Serve TLS on `listener`, handing each established session to `app`.
pub(super) fn tls_loop<F>(
    name: &'static str,
    listener: TcpListener,
    config: Arc<ServerConfig>,
    stop: Stop,
    app: F,
) -> io::Result<JoinHandle<()>>
where
    F: Fn(&mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>, SocketAddr, &Stop)
        + Send
        + Sync
        + 'static,
{
    accept_loop(name, listener, stop, move |mut sock, peer, stop| {
        let mut tls = match rustls::ServerConnection::new(config.clone()) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("{name}: {e}");
                return;
            }
        };
        if let Err(e) = handshake(&mut tls, &mut sock, stop) {
            log::info!("{name}: {peer}: TLS handshake failed: {e}");
            return;
        }
        log::info!(
            "{name}: {peer}: TLS {:?} established{}",
            tls.protocol_version(),
            if tls.peer_certificates().is_some() {
                " (client certificate verified)"
            } else {
                ""
            }
        );
        let mut stream = rustls::StreamOwned::new(tls, sock);
        app(&mut stream, peer, stop);
        stream.conn.send_close_notify();
        let _ = stream.conn.complete_io(&mut stream.sock);
    })
}
