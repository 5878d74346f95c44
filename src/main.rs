//! eswifi-emu: an emulator of the Inventek eS-WiFi module's IWIN AT command set, and its command
//! line (layer: edge). The module itself is the sans-IO core of `eswifi-core`; this crate is
//! everything around it that does IO:
//!
//! - [`driver`]: the mio event loop over any number of modules; [`serial`]: the lines hosts attach
//!   to (pty, tty, TCP, stdio); [`net`]: real sockets, DNS and ping workers;
//! - [`certstore`]: the certificate sets on disk; [`control`]: the control socket; [`trace`]: the
//!   byte transcript; [`faults`]: fault injection wrapped around the line and the network;
//! - [`embedded`]: the emulator `run` and `term` (crate `eswifi-tools`) start in-process;
//!   [`tools`]: `flash` and `certs`.
//!
//! `main` parses arguments, sets up logging and configuration, and hands over to [`driver`]
//! (serving, the default), [`tools`], or the subcommands of `eswifi-tools` (`run`, `term`,
//! `peers`).

#![warn(unreachable_pub)]

mod certstore;
mod control;
mod driver;
mod embedded;
mod faults;
mod net;
mod serial;
mod tools;
mod trace;

use crate::certstore::CertStore;
use crate::driver::boot::attach_mode;
use crate::driver::{parse_addr, serve, ServeOptions};
use crate::serial::port::Flow;
use crate::serial::FrontEnd;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgAction, ArgGroup, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use eswifi_core::config::{Attach, Config, EventMode};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Help heading of the options that work on either side of a subcommand.
const GLOBAL: &str = "Global options";

/// Emulate an Inventek eS-WiFi module (IWIN AT commands) on a serial line, with real networking on
/// the host. By default the line is a pseudo-terminal: the emulator prints its path (one per
/// module) and serves until SIGINT, SIGTERM or SIGHUP. SIGUSR1 power-cycles every module.
#[derive(Debug, Parser)]
#[command(name = "eswifi-emu", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    serve: ServeArgs,

    /// TOML configuration file (defaults apply to everything it leaves out).
    #[arg(long, value_name = "FILE", global = true, help_heading = GLOBAL)]
    config: Option<PathBuf>,

    /// Directory holding the certificate sets and saved settings.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "certsets",
        global = true,
        help_heading = GLOBAL
    )]
    certsets: PathBuf,

    /// More log output (-v debug, -vv trace). RUST_LOG, when set, takes precedence.
    #[arg(
        short,
        long,
        action = ArgAction::Count,
        conflicts_with = "quiet",
        global = true,
        help_heading = GLOBAL
    )]
    verbose: u8,

    /// Only log errors.
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    quiet: bool,
}

/// How the emulator serves: the serial front end, the modules, and what it records.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("front").multiple(false)))]
struct ServeArgs {
    /// Also create a symlink at PATH pointing to the pty, removed at exit. A symlink already there
    /// is replaced; anything else at PATH (a file, a directory) is an error and left alone. With
    /// --modules, PATH must hold the placeholder n in braces (replaced by the module number), as in
    /// /tmp/eswifi{ n } written without the spaces (clap would print it as a line break).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["serial", "listen", "connect", "stdio"])]
    link: Option<String>,

    /// Serve on a real serial port (a USB-UART, any tty) instead of a pty: 8N1.
    #[arg(
        long,
        value_name = "DEV",
        group = "front",
        help_heading = "Serial line"
    )]
    serial: Option<PathBuf>,

    /// The line's rate at power-up (default 115200, or `[module] baud`); a rate saved with Z1
    /// wins at boot, and U2/U0 change it while serving.
    #[arg(long, value_name = "N", help_heading = "Serial line")]
    baud: Option<u32>,

    /// Flow control of --serial: none (as on the module) or hw (RTS/CTS).
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        default_value = "none",
        help_heading = "Serial line"
    )]
    flow: Flow,

    /// Deliver output no faster than the line's baud rate (10 bits per byte), on any front end, so
    /// host timing bugs show up on a pty or TCP too.
    #[arg(long, help_heading = "Serial line")]
    pace: bool,

    /// Serve the line as a TCP server taking one host at a time (QEMU `-serial
    /// tcp:127.0.0.1:PORT`). PORT alone means 127.0.0.1:PORT; port 0 picks a free one (printed).
    /// Module k of several listens on PORT+k.
    #[arg(long, value_name = "ADDR", group = "front", value_parser = parse_addr, help_heading = "Serial line")]
    listen: Option<SocketAddr>,

    /// Connect the line to a host's TCP server, reconnecting with backoff when dropped (Renode's
    /// `CreateServerSocketTerminal`, QEMU `-serial tcp::PORT,server`). Module k connects to PORT+k.
    #[arg(long, value_name = "HOST:PORT", group = "front", value_parser = parse_addr, help_heading = "Serial line")]
    connect: Option<SocketAddr>,

    /// The serial line on stdin/stdout (socat, pipelines); logs stay on stderr. Ends with stdin.
    #[arg(long, group = "front", help_heading = "Serial line")]
    stdio: bool,

    /// What a host finds when it opens the line (a pty open, a TCP connection): `keep` the module
    /// as it was (the first host gets the power-up banner); `reset` the module held in reset for
    /// `[timing] boot_ms`, then one banner; `prompt` the module reset silently, then one banner
    /// once the host has been quiet for `[timing] quiet_ms` (hosts that flush their input and
    /// wait for the prompt). Default: `[module] attach`, else keep.
    #[arg(long, value_name = "MODE", value_parser = parse_attach, help_heading = "Serial line")]
    attach: Option<Attach>,

    /// The same as `--attach reset`: a reset pin for hosts that pulse one.
    #[arg(long, conflicts_with = "attach", help_heading = "Serial line")]
    reset_on_open: bool,

    /// Emulate N independent modules (1-256), each with its own line, MAC, loopback address and
    /// certificate sets (DIR/m<k>).
    #[arg(long, value_name = "N", default_value_t = 1)]
    modules: usize,

    /// A Unix socket (mode 0600) taking one-line commands: `reset [MODULE]`, `status`,
    /// `fault add RULE`, `fault clear [ID]`, `fault list` (README, "Faults").
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,

    /// Record every serial byte, both ways, with the time and the module, plus connects, closes
    /// and TLS outcomes, to FILE (PG payloads and passphrases redacted).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,

    /// How asynchronous messages reach the host: `uart` writes them between replies (UART firmware),
    /// `poll` queues them for `MR` (SPI firmware). Overrides the configuration file.
    #[arg(long, value_name = "MODE", value_parser = eswifi_tools::script::cli::event_mode_parser())]
    events: Option<EventMode>,

    /// Seed of every random fault choice, to replay a run exactly (logged at start-up when not
    /// given). Faults come from `[faults]` in the configuration or `fault add` on --control.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

impl ServeArgs {
    fn front(&self) -> FrontEnd {
        if let Some(path) = &self.serial {
            FrontEnd::Serial {
                path: path.clone(),
                flow: self.flow,
            }
        } else if let Some(a) = self.listen {
            FrontEnd::Listen(a)
        } else if let Some(a) = self.connect {
            FrontEnd::Connect(a)
        } else if self.stdio {
            FrontEnd::Stdio
        } else {
            FrontEnd::Pty {
                link: self.link.clone(),
            }
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Offline equivalent of flashing a complete firmware image: program items into a set (replacing
    /// what is there) and/or erase every set — the only way to clear one-time-programmable sets.
    Flash {
        /// Remove every item of every set first.
        #[arg(long)]
        erase: bool,
        /// The set to program (0-2 one-time programmable, 3 re-writable on C6 firmware).
        #[arg(long, value_name = "N")]
        set: Option<usize>,
        /// Root CA (PEM) to store as item 0.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Client certificate (PEM) to store as item 1.
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
        /// Client private key (PEM) to store as item 2.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// List what each certificate set holds: items present, and subject, issuer and validity of
    /// certificates. Never prints key material.
    Certs,
    /// Run terminal scripts (`*.iwin`) against the module: an emulator in this process (one fresh
    /// module per script) unless --port, --serial or --connect names one.
    Run(eswifi_tools::script::cli::RunArgs),
    /// An interactive terminal on the module, with line editing and history.
    Term(eswifi_tools::script::cli::TermArgs),
    /// Start on loopback everything the shipped scripts talk to (echoes, WWEP, wss), with demo
    /// certificates, and print the --var values to use.
    Peers(eswifi_tools::peers::PeersArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    // `run`/`term` give the embedded emulator a fresh directory unless --certsets was given.
    let certsets_given = matches.value_source("certsets") == Some(ValueSource::CommandLine)
        || matches
            .subcommand()
            .is_some_and(|(_, m)| m.value_source("certsets") == Some(ValueSource::CommandLine));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if cli.verbose > 0 && cli.quiet {
        // clap enforces `conflicts_with` only among options on the same side of a subcommand.
        Cli::command()
            .error(
                ErrorKind::ArgumentConflict,
                "the argument '--verbose...' cannot be used with '--quiet'",
            )
            .exit();
    }
    // Runner and terminal output goes to stdout; the emulator inside them logs only warnings.
    let quiet_default = matches!(cli.cmd, Some(Cmd::Run(_) | Cmd::Term(_)));
    // (rustyline warns when a terminal does not answer its cursor query: not worth a line.)
    init_logging(
        &cli,
        if quiet_default {
            "warn,rustyline=error"
        } else {
            "info"
        },
    );

    let global = eswifi_tools::script::cli::Global {
        config: cli.config.clone(),
        certsets: certsets_given.then(|| cli.certsets.clone()),
        quiet: cli.quiet,
    };
    match &cli.cmd {
        Some(Cmd::Run(args)) => {
            return eswifi_tools::script::cli::run_cmd(args, &global, crate::embedded::start)
        }
        Some(Cmd::Term(args)) => {
            return eswifi_tools::script::cli::term_cmd(args, &global, crate::embedded::start)
        }
        Some(Cmd::Peers(args)) => return eswifi_tools::peers::peers_cmd(args),
        _ => {}
    }

    if let Some(cmd) = cli.cmd {
        let store = CertStore::new(&cli.certsets);
        let result = match cmd {
            Cmd::Flash {
                erase,
                set,
                ca,
                cert,
                key,
            } => {
                let plan = crate::tools::FlashPlan {
                    erase,
                    set,
                    ca,
                    cert,
                    key,
                };
                crate::tools::flash(&store, &plan).map(|lines| lines.join("\n"))
            }
            Cmd::Certs => crate::tools::list(&store).map(|s| s.trim_end().to_string()),
            Cmd::Run(_) | Cmd::Term(_) | Cmd::Peers(_) => unreachable!("handled above"),
        };
        return match result {
            Ok(text) => {
                // `eswifi-emu certs | head`: a reader that stops early is not an error.
                use std::io::Write;
                match writeln!(std::io::stdout().lock(), "{text}") {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        eprintln!("eswifi-emu: stdout: {e}");
                        ExitCode::from(2)
                    }
                    _ => ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                eprintln!("eswifi-emu: {e}");
                ExitCode::from(2)
            }
        };
    }

    let config = match &cli.config {
        None => Config::default(),
        Some(path) => match load_config(path) {
            Ok(c) => c,
            Err(msg) => {
                eprintln!("eswifi-emu: {}: {msg}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let mut config = config;
    let args = cli.serve;
    if let Some(mode) = args.events {
        config.module.events = mode;
    }
    if let Some(baud) = args.baud {
        config.module.baud = baud;
        if let Err(msg) = config.validate() {
            eprintln!("eswifi-emu: --baud: {msg}");
            return ExitCode::from(2);
        }
    }
    config.module.attach = attach_mode(&config, args.attach, args.reset_on_open);
    let stdio = args.stdio;
    let opts = ServeOptions {
        front: args.front(),
        config,
        certsets: cli.certsets,
        modules: args.modules,
        pace: args.pace,
        control: args.control,
        trace: args.trace,
        seed: args.seed,
    };
    let served = serve(&opts, |lines| {
        if stdio {
            // stdout is the serial line.
            return;
        }
        let mut out = std::io::stdout().lock();
        // What a host opens is the one thing scripts read from stdout; it must be out before we
        // wait.
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            log::warn!("printing the serial lines: {e}");
        }
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eswifi-emu: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_attach(s: &str) -> Result<Attach, String> {
    s.parse()
}

fn init_logging(cli: &Cli, default: &str) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => default,
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
}

fn load_config(path: &std::path::Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let config = Config::from_toml(&text)?;
    // The fault rules are the emulator's, not the core's: checked here, at load time.
    crate::driver::config_rules(&config).map_err(|e| e.to_string())?;
    Ok(config)
}
