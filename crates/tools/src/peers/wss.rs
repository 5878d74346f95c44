//! A secure WebSocket echo (layer: tool), the `wss://` end of the ESP8266 article: TLS (rustls,
//! in [`super::serve::tls_loop`]) and the RFC 6455 upgrade and framing by `tungstenite`. Text and
//! binary messages come back as they went; pings are answered by tungstenite.

use super::serve::{Stop, IDLE_LIMIT};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tungstenite::handshake::HandshakeError;
use tungstenite::{Error, Message};

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Upgrade one connection and echo its messages.
pub(super) fn serve<S: Read + Write>(s: S, name: &str, peer: SocketAddr, stop: &Stop) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = tungstenite::accept(s);
    let mut ws = loop {
        match attempt {
            Ok(ws) => break ws,
            Err(HandshakeError::Interrupted(mid)) => {
                if stop.stopped() || Instant::now() >= deadline {
                    log::info!("{name}: {peer}: no complete upgrade request in time");
                    return;
                }
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(e)) => {
                log::info!("{name}: {peer}: WebSocket upgrade failed: {e}");
                return;
            }
        }
    };
    log::info!("{name}: {peer}: WebSocket open");
    let mut last = Instant::now();
    while !stop.stopped() && last.elapsed() < IDLE_LIMIT {
        match ws.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                last = Instant::now();
                log::info!("{name}: {peer}: echoing a {}-byte message", m.len());
                if let Err(e) = ws.send(m) {
                    log::info!("{name}: {peer}: {e}");
                    return;
                }
            }
            Ok(Message::Close(_)) => {
                // tungstenite queued the closing reply; send it.
                let _ = ws.flush();
                log::info!("{name}: {peer}: closed by the client");
                return;
            }
            Ok(_) => last = Instant::now(),
            Err(Error::Io(e)) if would_block(&e) => {
                // Pending pongs or a partly written frame go out now.
                match ws.flush() {
                    Ok(()) => {}
                    Err(Error::Io(e)) if would_block(&e) => {}
                    Err(_) => return,
                }
            }
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => return,
            Err(e) => {
                log::info!("{name}: {peer}: {e}");
                return;
            }
        }
    }
}
