//! The floors: the least a program must do to give a host the same bytes. This benchmark binary
//! runs itself as one (with [`ENV`] set), so the floor is a process of its own on a pty of its own,
//! measured through `/proc` like the emulator:
//!
//! - a bare pty responder: blocking reads on the pty master; each CR-terminated line gets a fixed
//!   reply (`REPLY`, hex: the emulator's reply to the same command, so the same length);
//! - with `SINK=addr`, a bare loopback TCP pump outwards: `S3=<n>\r` and `n` bytes go to a TCP
//!   connection with one `write`, answered `\r\n<n>\r\nOK\r\n> ` as the module does;
//! - with `SOURCE=addr`, inwards: `R0\r` is answered with one `read` of at most 1460 bytes from a TCP
//!   connection, as `\r\n<data>\r\nOK\r\n> `;
//! - with `PTYS=n`, n ptys are opened (all idle but the first), for the memory figure.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;

/// Set in the environment of the benchmark binary to run it as a floor.
pub const ENV: &str = "ESWIFI_BENCH_FLOOR";

/// The module's read size (`R1`'s default), which the floor's `R0` matches.
const READ_SIZE: usize = 1460;

pub use eswifi_core::hex::encode as to_hex;

fn connect(var: &str) -> Option<TcpStream> {
    let addr = std::env::var(var).ok()?;
    let s = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("floor: {var} {addr}: {e}"));
    s.set_nodelay(true).expect("nodelay");
    Some(s)
}

/// Run as a floor until killed.
pub fn main() -> ! {
    let n: usize = std::env::var("PTYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut masters = Vec::new();
    let mut slaves = Vec::new();
    {
        let mut stdout = std::io::stdout().lock();
        for _ in 0..n {
            let pair = nix::pty::openpty(None, None).expect("openpty");
            let mut t = nix::sys::termios::tcgetattr(&pair.slave).expect("tcgetattr");
            nix::sys::termios::cfmakeraw(&mut t);
            nix::sys::termios::tcsetattr(&pair.slave, nix::sys::termios::SetArg::TCSANOW, &t)
                .expect("raw");
            let path = nix::unistd::ttyname(&pair.slave).expect("ttyname");
            writeln!(stdout, "{}", path.display()).expect("stdout");
            masters.push(File::from(pair.master));
            // Held open, as the emulator holds its own: a host that closes the line is no hang-up.
            slaves.push(pair.slave);
        }
        stdout.flush().expect("stdout");
    }
    let reply = std::env::var("REPLY").map_or_else(
        |_| b"\r\n\r\nOK\r\n> ".to_vec(),
        |h| eswifi_core::hex::decode(&h).expect("REPLY is hex"),
    );
    serve(&mut masters[0], &reply, connect("SINK"), connect("SOURCE"));
}

fn serve(
    master: &mut File,
    reply: &[u8],
    mut sink: Option<TcpStream>,
    mut source: Option<TcpStream>,
) -> ! {
    let mut pending: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut pos = 0;
    let mut payload: Option<usize> = None;
    let mut buf = vec![0u8; 1 << 16];
    let mut data = vec![0u8; READ_SIZE];
    let mut out: Vec<u8> = Vec::with_capacity(1 << 16);
    loop {
        let n = match master.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("floor: reading the pty: {e}"),
        };
        pending.extend_from_slice(&buf[..n]);
        loop {
            let p = &pending[pos..];
            if let Some(len) = payload {
                if p.len() < len {
                    break;
                }
                let s = sink.as_mut().expect("S3 needs SINK");
                s.write_all(&p[..len]).expect("floor: sink");
                pos += len;
                payload = None;
                write!(out, "\r\n{len}\r\nOK\r\n> ").expect("vec");
                continue;
            }
            let Some(i) = p.iter().position(|&b| b == b'\r') else {
                break;
            };
            let line = &p[..i];
            if let Some(len) = line.strip_prefix(b"S3=") {
                let len = std::str::from_utf8(len).expect("S3 length");
                payload = Some(len.parse().expect("S3 length"));
            } else if line == b"R0" {
                let s = source.as_mut().expect("R0 needs SOURCE");
                let k = s.read(&mut data).expect("floor: source");
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&data[..k]);
                out.extend_from_slice(b"\r\nOK\r\n> ");
            } else {
                out.extend_from_slice(reply);
            }
            pos += i + 1;
        }
        if pos == pending.len() {
            pending.clear();
            pos = 0;
        }
        if !out.is_empty() {
            master.write_all(&out).expect("floor: writing the pty");
            out.clear();
        }
    }
}
