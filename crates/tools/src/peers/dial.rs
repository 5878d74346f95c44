//! The call-back client (layer: tool): lets a script have a client connect to the module's own
//! server, as a WWEP client or any TCP client would, without anything but AT commands. The module
//! connects here (as a TCP client) and writes one request line; the dialer connects back to the
//! address that connection came from, does one exchange, and reports on the first connection:
//!
//! - `DIAL <port> <text>`: send `<text>\r\n`, read one line back →
//!   `REPLY <line>` (or `CLOSED <partial>` if the server closed first);
//! - `WWEP <port> <packet>`: send the WWEP packet, read one answer (`X`, or `A` and 10 more) →
//!   `ANSWER <answer>`;
//!
//! and `ERROR <reason>` when the call-back fails. Reports end with `\r\n`; bytes outside printable
//! ASCII are written as `\xNN`.

use super::serve::{read_tick, Got, Stop, IDLE_LIMIT};
use crate::script::show::escape;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Longest request line, and longest line read back.
const MAX_LINE: usize = 1024;
/// How long the module's server may take to answer.
const ANSWER_TIME: Duration = Duration::from_secs(30);

/// Read until `done(bytes)` says so, the peer closes (`false`), or [`ANSWER_TIME`] passes.
fn read_until(
    s: &mut TcpStream,
    done: &dyn Fn(&[u8]) -> bool,
    stop: &Stop,
    peer: SocketAddr,
) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + ANSWER_TIME;
    while !stop.stopped() && Instant::now() < deadline && got.len() < MAX_LINE {
        if done(&got) {
            return (got, true);
        }
        match read_tick(s, &mut buf, "dial", peer) {
            Got::Data(n) => got.extend_from_slice(&buf[..n]),
            Got::Idle => {}
            Got::Closed => {
                let ok = done(&got);
                return (got, ok);
            }
        }
    }
    let ok = done(&got);
    (got, ok)
}

fn wwep_complete(b: &[u8]) -> bool {
    match b.first() {
        Some(b'A') => b.len() >= 11,
        Some(_) => true,
        None => false,
    }
}

/// Carry out one request line; the report to write back.
fn call_back(line: &str, peer: SocketAddr, stop: &Stop) -> String {
    let mut parts = line.splitn(3, ' ');
    let (verb, port, rest) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let Ok(port) = port.parse::<u16>() else {
        return format!(
            "ERROR expected `DIAL <port> <text>` or `WWEP <port> <packet>`, got `{line}`"
        );
    };
    if verb != "DIAL" && verb != "WWEP" {
        return format!("ERROR unknown request `{verb}` (DIAL or WWEP)");
    }
    let target = SocketAddr::new(peer.ip(), port);
    let mut s = match TcpStream::connect_timeout(&target, Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) => return format!("ERROR connecting to {target}: {e}"),
    };
    let _ = s.set_read_timeout(Some(super::serve::TICK));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    log::info!("dial: connected to {target} for {peer}");
    let line_complete = |b: &[u8]| b.contains(&b'\n');
    let done: &dyn Fn(&[u8]) -> bool = if verb == "DIAL" {
        &line_complete
    } else {
        &wwep_complete
    };
    let out = if verb == "DIAL" {
        format!("{rest}\r\n").into_bytes()
    } else {
        rest.as_bytes().to_vec()
    };
    if let Err(e) = s.write_all(&out) {
        return format!("ERROR sending to {target}: {e}");
    }
    let (got, complete) = read_until(&mut s, done, stop, target);
    let text = |b: &[u8]| {
        let b = b.strip_suffix(b"\n").unwrap_or(b);
        escape(b.strip_suffix(b"\r").unwrap_or(b))
    };
    log::info!("dial: {target} answered \"{}\"", escape(&got));
    match (verb, complete) {
        ("DIAL", true) => format!("REPLY {}", text(&got)),
        ("WWEP", true) => format!("ANSWER {}", text(&got)),
        _ if got.is_empty() => "ERROR no answer".to_string(),
        _ => format!("CLOSED {}", text(&got)),
    }
}

/// Serve one control connection: any number of request lines.
pub(super) fn serve(mut s: TcpStream, peer: SocketAddr, stop: &Stop) {
    let mut line = Vec::new();
    let mut buf = [0u8; 512];
    let mut last = Instant::now();
    while !stop.stopped() && last.elapsed() < IDLE_LIMIT {
        match read_tick(&mut s, &mut buf, "dial", peer) {
            Got::Data(n) => {
                last = Instant::now();
                line.extend_from_slice(&buf[..n]);
            }
            Got::Idle => continue,
            Got::Closed => return,
        }
        while let Some(end) = line.iter().position(|&c| c == b'\n') {
            let req: Vec<u8> = line.drain(..=end).collect();
            let req = String::from_utf8_lossy(&req).trim().to_string();
            if req.is_empty() {
                continue;
            }
            log::info!("dial: {peer} asks: {req}");
            let report = call_back(&req, peer, stop);
            if s.write_all(format!("{report}\r\n").as_bytes()).is_err() {
                return;
            }
        }
        if line.len() > MAX_LINE {
            let _ = s.write_all(b"ERROR request line too long\r\n");
            return;
        }
    }
}
