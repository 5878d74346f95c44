//! `eswifi-emu peers`: everything the shipped scripts talk to, on this machine (layer: tool).
//! A TCP, a UDP and a TLS echo; a mutual-TLS echo that requires a client certificate; the WW101
//! WWEP server (plain and TLS, one database); a secure WebSocket echo; and a call-back client that
//! connects to the module's own servers (`dial`). Demo certificates are made in a directory
//! (`pki`) so that `PG=…,@DIR/ca.pem` works, and the `--var` values the scripts need are printed.

mod dial;
mod pki;
mod serve;
mod wss;
mod wwep;

use serve::{Stop, TICK};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The WWEP class server's ports (WW101 §6.1).
pub const WWEP_PORT: u16 = 27708;
pub const WWEP_TLS_PORT: u16 = 40508;

/// Start local peers for the example scripts and print the `--var` values to use with `run`.
/// Runs until Ctrl-C (or --for). A port of 0 means any free port; a taken WWEP port falls back to
/// a free one.
#[derive(Debug, Clone, clap::Args)]
pub struct PeersArgs {
    /// Where the demo CA, server and client certificates and keys are (made if missing, reused
    /// otherwise so that programmed one-time sets keep matching).
    #[arg(long, value_name = "DIR", default_value = "eswifi-peers")]
    pub dir: PathBuf,
    /// Address to serve on. For a real module on your network, this machine's address there.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// WWEP, plain (the class server's 27708).
    #[arg(long, value_name = "PORT", default_value_t = WWEP_PORT)]
    pub wwep_port: u16,
    /// WWEP over TLS (the class server's 40508).
    #[arg(long, value_name = "PORT", default_value_t = WWEP_TLS_PORT)]
    pub wwep_tls_port: u16,
    /// TCP echo (0: any free port, as for the ones below).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub tcp_echo_port: u16,
    /// UDP echo.
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub udp_echo_port: u16,
    /// TLS echo (no client certificate asked).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub tls_echo_port: u16,
    /// Mutual-TLS echo (a client certificate from the demo CA required).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub mtls_echo_port: u16,
    /// Secure WebSocket echo.
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub wss_port: u16,
    /// Call-back client: connects to the module's servers on request.
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub dial_port: u16,
    /// Stop by itself after this long (e.g. 10m); default: until Ctrl-C.
    #[arg(long = "for", value_name = "DUR", value_parser = crate::script::lang::parse_duration)]
    pub lifetime: Option<Duration>,
}

/// Running peers; dropping them stops every server.
pub struct Peers {
    pub vars: Vec<(String, String)>,
    stop: Stop,
    threads: Vec<JoinHandle<()>>,
}

/// Bind `port` on `host`; when `fallback` and the port is taken, any free port instead.
fn bind_tcp(host: IpAddr, port: u16, what: &str, fallback: bool) -> Result<TcpListener, String> {
    match TcpListener::bind((host, port)) {
        Ok(l) => Ok(l),
        Err(e) if fallback && port != 0 && e.kind() == io::ErrorKind::AddrInUse => {
            log::warn!("{what}: port {port} is taken; using a free one");
            TcpListener::bind((host, 0)).map_err(|e| format!("{what}: {e}"))
        }
        Err(e) => Err(format!("{what}: {host}:{port}: {e}")),
    }
}

fn port_of(l: &TcpListener) -> u16 {
    l.local_addr().map(|a| a.port()).unwrap_or(0)
}

fn udp_echo(sock: UdpSocket, stop: Stop) -> io::Result<JoinHandle<()>> {
    sock.set_read_timeout(Some(TICK))?;
    std::thread::Builder::new()
        .name("peer-udp-echo".into())
        .spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.stopped() {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        log::info!("udp-echo: {n} bytes from {from}");
                        if let Err(e) = sock.send_to(&buf[..n], from) {
                            log::info!("udp-echo: {from}: {e}");
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        log::warn!("udp-echo: {e}");
                        std::thread::sleep(TICK);
                    }
                }
            }
        })
}

/// A TCP port on `host` that was free a moment ago (for the module's own servers).
fn free_port(host: IpAddr) -> Result<u16, String> {
    TcpListener::bind((host, 0))
        .map(|l| port_of(&l))
        .map_err(|e| format!("finding a free port: {e}"))
}

impl Peers {
    pub fn start(args: &PeersArgs) -> Result<Peers, String> {
        let host = args.host;
        let extra_ip = (!host.is_loopback() && !host.is_unspecified()).then_some(host);
        let pki = pki::load_or_create(&args.dir, extra_ip)?;
        if pki.created {
            log::info!("demo certificates made in {}", pki.dir.display());
        } else {
            log::info!("demo certificates reused from {}", pki.dir.display());
        }
        let dir_text = std::path::absolute(&pki.dir)
            .unwrap_or_else(|_| pki.dir.clone())
            .display()
            .to_string();
        let tls = serve::server_config(&pki.server_cert_pem, &pki.server_key_pem, None)?;
        let mtls =
            serve::server_config(&pki.server_cert_pem, &pki.server_key_pem, Some(&pki.ca_pem))?;

        let tcp_echo = bind_tcp(host, args.tcp_echo_port, "tcp-echo", false)?;
        let udp = UdpSocket::bind((host, args.udp_echo_port))
            .map_err(|e| format!("udp-echo: {host}:{}: {e}", args.udp_echo_port))?;
        let tls_echo = bind_tcp(host, args.tls_echo_port, "tls-echo", false)?;
        let mtls_echo = bind_tcp(host, args.mtls_echo_port, "mtls-echo", false)?;
        let wwep_plain = bind_tcp(host, args.wwep_port, "wwep", true)?;
        let wwep_tls = bind_tcp(host, args.wwep_tls_port, "wwep-tls", true)?;
        let wss_l = bind_tcp(host, args.wss_port, "wss-echo", false)?;
        let dial_l = bind_tcp(host, args.dial_port, "dial", false)?;
        let server_port = free_port(host)?;

        let host_text = if host.is_unspecified() {
            Ipv4Addr::LOCALHOST.to_string()
        } else {
            host.to_string()
        };
        let udp_port = udp.local_addr().map(|a| a.port()).unwrap_or(0);
        let vars: Vec<(String, String)> = vec![
            ("HOST".into(), host_text),
            ("CERTS".into(), dir_text),
            ("TCP_ECHO_PORT".into(), port_of(&tcp_echo).to_string()),
            ("UDP_ECHO_PORT".into(), udp_port.to_string()),
            ("TLS_ECHO_PORT".into(), port_of(&tls_echo).to_string()),
            ("MTLS_ECHO_PORT".into(), port_of(&mtls_echo).to_string()),
            ("WWEP_PORT".into(), port_of(&wwep_plain).to_string()),
            ("WWEP_TLS_PORT".into(), port_of(&wwep_tls).to_string()),
            ("WSS_PORT".into(), port_of(&wss_l).to_string()),
            ("DIAL_PORT".into(), port_of(&dial_l).to_string()),
            ("SERVER_PORT".into(), server_port.to_string()),
            // The emulator joins any network; a real module needs yours (give them after these).
            ("SSID".into(), "eswifi-lab".into()),
            ("SECURITY".into(), "0".into()),
            ("PASSPHRASE".into(), String::new()),
        ];

        let stop = Stop::default();
        let mut threads = Vec::new();
        let io = |e: io::Error| e.to_string();
        threads.push(
            serve::accept_loop("tcp-echo", tcp_echo, stop.clone(), |mut s, peer, stop| {
                log::info!("tcp-echo: {peer} connected");
                serve::echo(&mut s, "tcp-echo", peer, stop)
            })
            .map_err(io)?,
        );
        threads.push(udp_echo(udp, stop.clone()).map_err(io)?);
        threads.push(
            serve::tls_loop(
                "tls-echo",
                tls_echo,
                tls.clone(),
                stop.clone(),
                |s, peer, stop| serve::echo(s, "tls-echo", peer, stop),
            )
            .map_err(io)?,
        );
        threads.push(
            serve::tls_loop(
                "mtls-echo",
                mtls_echo,
                mtls,
                stop.clone(),
                |s, peer, stop| serve::echo(s, "mtls-echo", peer, stop),
            )
            .map_err(io)?,
        );
        let regs = wwep::Registers::default();
        let r = regs.clone();
        threads.push(
            serve::accept_loop(
                "wwep",
                wwep_plain,
                stop.clone(),
                move |mut s, peer, stop| {
                    log::info!("wwep: {peer} connected");
                    wwep::serve(&mut s, &r, "wwep", peer, stop)
                },
            )
            .map_err(io)?,
        );
        threads.push(
            serve::tls_loop(
                "wwep-tls",
                wwep_tls,
                tls.clone(),
                stop.clone(),
                move |s, peer, stop| wwep::serve(s, &regs, "wwep-tls", peer, stop),
            )
            .map_err(io)?,
        );
        threads.push(
            serve::tls_loop("wss-echo", wss_l, tls, stop.clone(), |s, peer, stop| {
                wss::serve(s, "wss-echo", peer, stop)
            })
            .map_err(io)?,
        );
        threads.push(
            serve::accept_loop("dial", dial_l, stop.clone(), |s, peer, stop| {
                log::info!("dial: {peer} connected");
                dial::serve(s, peer, stop)
            })
            .map_err(io)?,
        );
        Ok(Peers {
            vars,
            stop,
            threads,
        })
    }

    /// `--var NAME=VALUE` lines, one per variable.
    pub fn var_lines(&self) -> Vec<String> {
        self.vars
            .iter()
            .map(|(n, v)| format!("--var {n}={v}"))
            .collect()
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Where a server listens (for tests).
    pub fn addr(&self, port_var: &str) -> Option<SocketAddr> {
        let host: IpAddr = self.var("HOST")?.parse().ok()?;
        let port: u16 = self.var(port_var)?.parse().ok()?;
        Some(SocketAddr::new(host, port))
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.stop.stop();
        // Accept loops notice within a tick; connection threads end on their own within a tick
        // too and are not waited for.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `eswifi-emu peers`.
pub fn peers_cmd(args: &PeersArgs) -> ExitCode {
    let peers = match Peers::start(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("eswifi-emu peers: {e}");
            return ExitCode::from(2);
        }
    };
    let lines = peers.var_lines();
    let vars_file = args.dir.join("vars.txt");
    let written = crate::files::create_private(&vars_file)
        .and_then(|mut f| f.write_all(format!("{}\n", lines.join("\n")).as_bytes()));
    if let Err(e) = written {
        log::warn!("{}: {e}", vars_file.display());
    }
    {
        let mut out = io::stdout().lock();
        let _ = writeln!(
            out,
            "# eswifi-emu peers on {}: tcp/udp/tls/mutual-tls echo, WWEP (plain, TLS), wss echo, \
             call-back dialer",
            args.host
        );
        for l in &lines {
            let _ = writeln!(out, "{l}");
        }
        let _ = writeln!(
            out,
            "# also in {}: eswifi-emu run scripts/*.iwin $(cat {})\n# ready; Ctrl-C stops",
            vars_file.display(),
            vars_file.display()
        );
        let _ = out.flush();
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("eswifi-emu peers: signal {sig}: {e}");
            return ExitCode::from(2);
        }
    }
    let deadline = args.lifetime.map(|d| Instant::now() + d);
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(TICK);
    }
    log::info!("stopping");
    drop(peers);
    ExitCode::SUCCESS
}
