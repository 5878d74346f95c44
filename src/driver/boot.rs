//! Boot and module setup (layer: edge): what `eswifi-emu` (serve) takes from the command line,
//! each module's configuration and certificate store, its port (consecutive TCP ports for several
//! modules), and the driver they run on.

use super::{Driver, LineSetup, MAX_MODULES};
use crate::certstore::CertStore;
use crate::net::claim;
use crate::serial::{FrontEnd, Port, Pty, PtyLink};
use crate::trace::Tracer;
use eswifi_core::config::{Attach, Config};
use eswifi_core::module::Module;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Attempts at finding `--modules N` consecutive free ports for `--listen PORT0`.
const PORT_RANGE_TRIES: usize = 32;

/// Everything `eswifi-emu` (serve) needs from the command line.
#[derive(Debug, Clone)]
pub(crate) struct ServeOptions {
    pub config: Config,
    /// Where the certificate sets are stored (see `certsets/README.md`); module k of several uses
    /// `DIR/m{k}`.
    pub certsets: PathBuf,
    pub front: FrontEnd,
    /// How many modules (1..=[`MAX_MODULES`]).
    pub modules: usize,
    /// Deliver output at the line's baud rate.
    pub pace: bool,
    /// Unix socket for `reset`, `status` and `fault`.
    pub control: Option<PathBuf>,
    /// Byte transcript file.
    pub trace: Option<PathBuf>,
    /// Seed of the faults' random choices (`--seed`; else `[faults] seed`; else picked and logged).
    pub seed: Option<u64>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The configuration of module `k`: its own MAC (the base plus k) and, unless pinned, its own
/// claimed loopback address and the soft-AP address that goes with it.
fn module_config(base: &Config, k: usize, claimed: Option<std::net::Ipv4Addr>) -> Config {
    let mut cfg = base.clone();
    if let Some(mut mac) = eswifi_core::iwin::command::parse_mac(&base.identity.mac) {
        let n =
            u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]) + k as u64;
        mac.copy_from_slice(&n.to_be_bytes()[2..]);
        cfg.identity.mac = mac
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
    }
    let net = &mut cfg.network;
    match (net.ip_pinned, claimed) {
        (true, _) => {
            let ip = u32::from(net.ip).wrapping_add(k as u32);
            net.ip = ip.into();
        }
        (false, Some(ip)) => {
            net.ip = ip;
            if !net.ap_ip_pinned {
                net.ap_ip = claim::ap_address(ip);
            }
        }
        (false, None) => {}
    }
    cfg
}

/// The address of module `k` when module 0 has `base`: the port plus k, which must fit.
fn nth_port(base: SocketAddr, k: usize, flag: &str, n: usize) -> io::Result<SocketAddr> {
    let port = u32::from(base.port()) + k as u32;
    if port > u32::from(u16::MAX) {
        return Err(invalid(format!(
            "{flag} {base} with --modules {n}: the ports {} to {} do not fit (65535 at most)",
            base.port(),
            u32::from(base.port()) + n as u32 - 1
        )));
    }
    let mut a = base;
    a.set_port(port as u16);
    Ok(a)
}

/// The `--listen` ports of `n` modules: `addr`'s port plus k; with port 0, n consecutive free
/// ports (module 0's chosen by the system).
fn listen_ports(addr: SocketAddr, n: usize) -> io::Result<Vec<Port>> {
    let listen = |a: SocketAddr| {
        Port::listen(a)
            .map_err(|e| io::Error::new(e.kind(), format!("--listen {a}: {}", os_text(&e))))
    };
    let ports = if addr.port() != 0 || n == 1 {
        (0..n)
            .map(|k| listen(nth_port(addr, k, "--listen", n)?))
            .collect::<io::Result<Vec<Port>>>()?
    } else {
        consecutive(addr, n, listen)?
    };
    // Only once it listens: a bind that failed listens nowhere.
    if !addr.ip().is_loopback() {
        log::warn!("listening on {addr}, which is not a loopback address: other hosts can attach");
    }
    Ok(ports)
}

/// `n` listeners on consecutive free ports from one the system picks.
fn consecutive(
    addr: SocketAddr,
    n: usize,
    listen: impl Fn(SocketAddr) -> io::Result<Port>,
) -> io::Result<Vec<Port>> {
    for _ in 0..PORT_RANGE_TRIES {
        let first = listen(addr)?;
        let Ok(base) = first.describe().parse::<SocketAddr>() else {
            continue;
        };
        let mut ports = vec![first];
        for k in 1..n {
            match nth_port(base, k, "--listen", n).and_then(Port::listen) {
                Ok(p) => ports.push(p),
                Err(_) => break,
            }
        }
        if ports.len() == n {
            return Ok(ports);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("--listen {addr}: no {n} consecutive free ports found"),
    ))
}

/// An OS error as a person reads it: `address already in use`, not `Address already in use (os
/// error 98)`.
fn os_text(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => &s[..i],
        None => &s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The ports of every module, in order.
fn open_ports(opts: &ServeOptions, baud: u32, links: &mut Vec<PtyLink>) -> io::Result<Vec<Port>> {
    let n = opts.modules;
    match &opts.front {
        FrontEnd::Listen(addr) => listen_ports(*addr, n),
        FrontEnd::Connect(addr) => {
            if addr.port() == 0 {
                return Err(invalid(format!("--connect {addr}: port 0 is no server")));
            }
            (0..n)
                .map(|k| nth_port(*addr, k, "--connect", n).map(Port::connect))
                .collect()
        }
        FrontEnd::Serial { path, flow } => Ok(vec![Port::tty(path, baud, *flow)
            .map_err(|e| io::Error::new(e.kind(), format!("--serial {e}")))?]),
        FrontEnd::Stdio => Ok(vec![Port::stdio()?]),
        FrontEnd::Pty { link } => (0..n)
            .map(|k| {
                let pty = Pty::open()?;
                if let Some(template) = link {
                    let path = PathBuf::from(template.replace("{n}", &k.to_string()));
                    let l = PtyLink::create(&path, pty.slave_path()).map_err(|e| {
                        io::Error::new(e.kind(), format!("--link {}: {e}", path.display()))
                    })?;
                    links.push(l);
                }
                Ok(Port::pty(pty))
            })
            .collect(),
    }
}

/// Refuse what cannot serve `n` modules.
fn check(opts: &ServeOptions) -> io::Result<()> {
    let n = opts.modules;
    if n == 0 || n > MAX_MODULES {
        return Err(invalid(format!("--modules {n}: 1 to {MAX_MODULES}")));
    }
    let shared = match &opts.front {
        FrontEnd::Pty { link: Some(l) } if !l.contains("{n}") => Some("--link needs {n} in it"),
        FrontEnd::Serial { .. } => Some("--serial serves one module"),
        FrontEnd::Stdio => Some("--stdio serves one module"),
        _ => None,
    };
    match shared {
        Some(why) if n > 1 => Err(invalid(format!("--modules {n}: {why}"))),
        _ => Ok(()),
    }
}

/// Emulate the modules until SIGINT, SIGTERM or SIGHUP (or the end of stdin with `--stdio`).
/// `ready` is called with what a host opens, one entry per module (pty path, device, address),
/// once they can be opened.
pub(crate) fn serve(opts: &ServeOptions, ready: impl FnOnce(&[String])) -> io::Result<()> {
    check(opts)?;
    let n = opts.modules;
    let start = Instant::now();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut driver = Driver::new()?;
    driver.seed_faults(fault_seed(opts.seed, &opts.config));
    if let Some(path) = &opts.trace {
        let t = Tracer::create(path, start)
            .map_err(|e| io::Error::new(e.kind(), format!("--trace {}: {e}", path.display())))?;
        driver.set_tracer(t);
    }
    let mut links = Vec::new();
    let ports = open_ports(opts, opts.config.module.baud, &mut links)?;
    let mut claims = Vec::new();
    let mut described = Vec::new();
    for (k, port) in ports.into_iter().enumerate() {
        let claimed = if opts.config.network.ip_pinned {
            None
        } else {
            let taken: Vec<_> = claims.iter().map(|c: &claim::Claim| c.ip).collect();
            let c = claim::claim(&taken)?;
            let ip = c.ip;
            claims.push(c);
            Some(ip)
        };
        let cfg = module_config(&opts.config, k, claimed);
        let dir = if n == 1 {
            opts.certsets.clone()
        } else {
            opts.certsets.join(format!("m{k}"))
        };
        let store = CertStore::new(&dir);
        let module = boot_module(&cfg, &store, unix, opts.trace.is_some())?;
        let mut port = port;
        if let Port::Tty(_) = port {
            // A rate saved with Z1 wins at boot.
            port.set_baud(module.line_baud())?;
        }
        log::info!(
            "module {k}: {} on {}, address {}, certificate sets in {}",
            cfg.identity.mac,
            port.describe(),
            cfg.network.ip,
            dir.display()
        );
        described.push(port.describe());
        let setup = LineSetup {
            attach: cfg.module.attach,
            boot: Duration::from_millis(cfg.timing.boot_ms),
            quiet: Duration::from_millis(cfg.timing.quiet_ms),
            pace: opts.pace.then(|| module.line_baud()),
        };
        let idx = driver.add(module, port, setup)?;
        driver.set_store(idx, store);
    }
    // Active from start-up (the rules were checked when the configuration was read).
    for rule in config_rules(&opts.config)? {
        driver.add_fault(rule).map_err(io::Error::other)?;
    }
    if let Some(path) = &opts.control {
        driver
            .bind_control(path)
            .map_err(|e| io::Error::new(e.kind(), format!("--control {}: {e}", path.display())))?;
    }
    ready(&described);
    driver.run()?;
    log::info!("shutting down");
    drop(claims);
    drop(links);
    Ok(())
}

/// A module as it powers up: its certificate sets and `Z1`-saved settings loaded from `store` (a torn
/// or corrupt item is an error worth stopping for: an OTP slot must never look empty), and its
/// transcript kept from the first byte if `trace`.
pub(crate) fn boot_module(
    cfg: &Config,
    store: &CertStore,
    unix: Duration,
    trace: bool,
) -> io::Result<Module> {
    let sets = store
        .load()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let saved = store
        .load_settings()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let mut module = Module::new(cfg, Instant::now(), unix);
    if trace {
        // Before the boot output, so the transcript starts with the banner.
        module.enable_trace();
    }
    module.set_cert_sets(sets);
    module.load_saved(saved);
    Ok(module)
}

/// The faults' seed: `--seed`, else `[faults] seed`, else any value (logged with the first rule,
/// `FaultSet::add`, so that a failing run can be replayed; a run without faults has no use for it).
pub(crate) fn fault_seed(given: Option<u64>, config: &Config) -> u64 {
    given.or(config.faults.seed).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}

/// The rules of `[faults]`, parsed.
pub(crate) fn config_rules(config: &Config) -> io::Result<Vec<crate::faults::Rule>> {
    config
        .faults
        .rules
        .iter()
        .map(|r| crate::faults::parse(r).map_err(|e| invalid(format!("faults.rules {r:?}: {e}"))))
        .collect()
}

/// Parse a `--listen`/`--connect` address: `PORT` alone means 127.0.0.1:PORT.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port));
    }
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))
}

/// `--attach` as given, or `--reset-on-open`, over the configuration's.
pub(crate) fn attach_mode(config: &Config, given: Option<Attach>, reset_on_open: bool) -> Attach {
    match (given, reset_on_open) {
        (Some(a), _) => a,
        (None, true) => Attach::Reset,
        (None, false) => config.module.attach,
    }
}
