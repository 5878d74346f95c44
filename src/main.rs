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
mod keylog;
mod logging;
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

/// What every exit status means (the top-level `--help` and the README say the same).
const EXIT_STATUS: &str = "\
Exit status:
  0    done: serving stopped by SIGINT, SIGTERM or SIGHUP; every script passed; a tool did its job
  1    failed while running: a script failed, the serial line or the network failed after start-up
  2    did not start: a bad argument, a file, directory, device or port that cannot be used, a bad
       configuration (nothing was run)
  130  interrupted: Ctrl-C, SIGTERM or SIGHUP stopped `run` (or SIGTERM, SIGHUP `term`)";

const MAIN_EXAMPLES: &str = "\
Examples:
  eswifi-emu --link /tmp/eswifi                 a pty, also at /tmp/eswifi; picocom /tmp/eswifi
  eswifi-emu --listen 5555 --preset zephyr      QEMU's -serial tcp:127.0.0.1:5555, Zephyr's driver
  eswifi-emu --stdio                            the line on stdin/stdout (socat, pipelines)
  eswifi-emu --preset cmsis --print-config      what a preset sets, as TOML
  eswifi-emu run scripts/join.iwin --var SSID=lab --var SECURITY=0 --var PASSPHRASE=
  eswifi-emu term                               type commands at a fresh module
  eswifi-emu help run                           the options of one subcommand";

const FLASH_EXAMPLES: &str = "\
Examples:
  eswifi-emu flash --set 1 --ca ca.pem --cert client.pem --key client.key
  eswifi-emu flash --erase                      clear every set (and the saved settings)
  eswifi-emu flash --set 0 --ca ca.pem --certsets /tmp/store";

const CERTS_EXAMPLES: &str = "\
Examples:
  eswifi-emu certs                              the sets in ./certsets
  eswifi-emu certs --certsets /tmp/store        another store (it must exist)";

const RUN_EXAMPLES: &str = "\
Examples:
  eswifi-emu peers --dir /tmp/peers &           the servers the shipped scripts talk to
  eswifi-emu run scripts/*.iwin $(cat /tmp/peers/vars.txt)
  eswifi-emu run scripts/join.iwin --var SSID=lab --var SECURITY=0 --var PASSPHRASE= -q
  eswifi-emu run s.iwin --port /tmp/eswifi      another emulator's pty (or a real module's tty)
  eswifi-emu run s.iwin --connect 127.0.0.1:5555 --junit report.xml

Exit status: 0 every script passed, 1 one failed, 2 nothing ran (bad arguments, a missing script,
a port that cannot be opened), 130 interrupted.";

const TERM_EXAMPLES: &str = "\
Examples:
  eswifi-emu term                               a fresh module inside this process
  eswifi-emu term --record session.iwin         also write what is typed as a script
  eswifi-emu term --port /tmp/eswifi            another emulator's pty (or a real module's tty)
  eswifi-emu term --serial /dev/ttyUSB0 --baud 115200

Ctrl-C while a reply is awaited stops waiting (the session goes on); at the prompt it clears the
line. Ctrl-D or `quit` leaves (exit status 0).";

const PEERS_EXAMPLES: &str = "\
Examples:
  eswifi-emu peers --dir /tmp/peers             prints the --var values, also in /tmp/peers/vars.txt
  eswifi-emu peers --dir /tmp/peers --for 10m   stop by itself after 10 minutes
  eswifi-emu peers --host 192.168.1.10          for a real module on your network";

const PRESETS_EXAMPLES: &str = "\
Examples:
  eswifi-emu presets                            every preset and the TOML it stands for
  eswifi-emu presets zephyr                     one
  eswifi-emu --preset zephyr --config my.toml   a preset and a file over it (the file wins)";

/// Emulate an Inventek eS-WiFi module (IWIN AT commands) on a serial line, with real networking on
/// the host. By default the line is a pseudo-terminal: the emulator prints its path (one per
/// module) and serves until SIGINT, SIGTERM or SIGHUP. SIGUSR1 power-cycles every module.
#[derive(Debug, Parser)]
#[command(name = "eswifi-emu", version, after_help = MAIN_EXAMPLES.to_string() + "\n\n" + EXIT_STATUS)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    #[command(flatten)]
    serve: ServeArgs,

    /// A host driver's configuration, by name (repeatable; later ones win, and --config over
    /// all): zephyr, st, cmsis, mbed, mongoose, teach. `eswifi-emu presets` shows each as TOML.
    #[arg(long, value_name = "NAME", global = true, help_heading = GLOBAL,
          value_parser = clap::builder::PossibleValuesParser::new(eswifi_core::presets::names()))]
    preset: Vec<String>,

    /// TOML configuration file (defaults apply to everything it leaves out; it wins over --preset).
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
    /// Also create a symlink at PATH pointing to the pty, removed at exit (help text: [`link_help`]).
    #[arg(long, value_name = "PATH", help = link_help(),
          conflicts_with_all = ["serial", "listen", "connect", "stdio"])]
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
    /// certificate sets (`DIR/m<k>`).
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

    /// Seed of every random fault choice, to replay a run exactly (logged with the first fault
    /// rule when not given). Faults come from `[faults]` in the configuration or `fault add` on
    /// --control.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Append the secrets of every TLS session (client, and the server extension) to FILE in the
    /// NSS key log format, so Wireshark decrypts a capture; SSLKEYLOGFILE does the same. The file
    /// is created mode 0600, never through a symlink. Off unless asked for.
    #[arg(long, value_name = "FILE")]
    keylog: Option<PathBuf>,

    /// Print the configuration that --preset and --config make, as TOML, and exit.
    #[arg(long)]
    print_config: bool,
}

/// The `--link` help. clap turns the characters `{n}` of a help text into a line break, so the
/// placeholder's letter is written with a style of its own (bold), which clap leaves alone: the
/// help shows `/tmp/eswifi{n}` as the user types it.
fn link_help() -> clap::builder::StyledStr {
    let b = clap::builder::styling::Style::new().bold();
    let n = format!("{{{}n{}}}", b.render(), b.render_reset());
    clap::builder::StyledStr::from(format!(
        "Also create a symlink at PATH pointing to the pty, removed at exit. A symlink already \
         there is replaced; anything else at PATH (a file, a directory) is an error and left \
         alone. With --modules, PATH must hold {n}, replaced by the module number: \
         --link /tmp/eswifi{n} makes /tmp/eswifi0, /tmp/eswifi1, …"
    ))
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
    #[command(after_help = FLASH_EXAMPLES)]
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
    #[command(after_help = CERTS_EXAMPLES)]
    Certs,
    /// Run terminal scripts (`*.iwin`) against the module: an emulator in this process (one fresh
    /// module per script) unless --port, --serial or --connect names one.
    #[command(after_help = RUN_EXAMPLES)]
    Run(eswifi_tools::script::cli::RunArgs),
    /// An interactive terminal on the module, with line editing and history.
    #[command(after_help = TERM_EXAMPLES)]
    Term(eswifi_tools::script::cli::TermArgs),
    /// Start on loopback everything the shipped scripts talk to (echoes, WWEP, wss), with demo
    /// certificates, and print the --var values to use.
    #[command(after_help = PEERS_EXAMPLES)]
    Peers(eswifi_tools::peers::PeersArgs),
    /// Show the presets (--preset NAME): each host driver's configuration, as the TOML it stands
    /// for.
    #[command(after_help = PRESETS_EXAMPLES)]
    Presets {
        /// Only this preset.
        #[arg(value_name = "NAME",
              value_parser = clap::builder::PossibleValuesParser::new(eswifi_core::presets::names()))]
        name: Option<String>,
    },
}

/// The command line as clap sees it: `peers` takes no configuration or certificate store, so the
/// global options for them are hidden there.
fn command() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    // In place: after `build`, `mut_arg` would reorder the arguments behind clap's index.
    cmd.mut_subcommand("peers", |s| {
        s.mut_args(|a| {
            let unused = ["preset", "config", "certsets"].contains(&a.get_id().as_str());
            a.hide(unused)
        })
    })
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let given = |name: &str| {
        matches.value_source(name) == Some(ValueSource::CommandLine)
            || matches
                .subcommand()
                .is_some_and(|(_, m)| m.value_source(name) == Some(ValueSource::CommandLine))
    };
    // `run`/`term` give the embedded emulator a fresh directory unless --certsets was given.
    let certsets_given = given("certsets");
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if cli.verbose > 0 && cli.quiet {
        // clap enforces `conflicts_with` only among options on the same side of a subcommand.
        usage_error(
            ErrorKind::ArgumentConflict,
            "the argument '--verbose...' cannot be used with '--quiet'",
        );
    }
    if matches!(cli.cmd, Some(Cmd::Peers(_))) {
        for name in ["preset", "config", "certsets"] {
            if given(name) {
                usage_error(
                    ErrorKind::ArgumentConflict,
                    &format!("`peers` takes no --{name}: it configures no module"),
                );
            }
        }
    }
    if cli.serve.print_config && cli.cmd.is_some() {
        usage_error(
            ErrorKind::ArgumentConflict,
            "--print-config goes without a subcommand: eswifi-emu --preset NAME --print-config",
        );
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
        quiet_default,
    );
    if let Err(e) = keylog::init(cli.serve.keylog.as_deref()) {
        eprintln!("eswifi-emu: {e}");
        return ExitCode::from(2);
    }

    let global = eswifi_tools::script::cli::Global {
        presets: cli.preset.clone(),
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
            Cmd::Certs => existing_dir(&cli.certsets, certsets_given)
                .and_then(|()| crate::tools::list(&store))
                .map(|s| s.trim_end().to_string()),
            Cmd::Presets { name } => Ok(show_presets(name.as_deref())),
            Cmd::Run(_) | Cmd::Term(_) | Cmd::Peers(_) => unreachable!("handled above"),
        };
        return match result {
            Ok(text) => {
                // `eswifi-emu certs | head`: a reader that stops early is not an error.
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

    let args = cli.serve;
    let file = match &cli.config {
        None => None,
        Some(path) => match read_config_file(path) {
            Ok(text) => Some((format!("--config {}", path.display()), text)),
            Err(msg) => {
                eprintln!("eswifi-emu: {}: {msg}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let layers = layers_of(
        &cli.preset,
        file.as_ref().map(|(o, t)| (o.as_str(), t.as_str())),
    );
    if args.print_config {
        return match eswifi_core::presets::to_toml(&layers) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(msg) => {
                eprintln!("eswifi-emu: {msg}");
                ExitCode::from(2)
            }
        };
    }
    let mut config = match load_config(&layers) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("eswifi-emu: {msg}");
            return ExitCode::from(2);
        }
    };
    if let Some(mode) = args.events {
        config.module.events = mode;
    }
    config.key_log = keylog::sink();
    if let Some(baud) = args.baud {
        if !eswifi_core::config::BAUD_RATES.contains(&baud) {
            eprintln!(
                "eswifi-emu: --baud {baud}: not a rate the module offers; it offers {}",
                eswifi_core::config::baud_list()
            );
            return ExitCode::from(2);
        }
        config.module.baud = baud;
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
    // An error before the lines are ready means nothing was served: exit status 2, as for a bad
    // argument; once serving, a failure is 1.
    let mut started = false;
    let served = serve(&opts, |lines| {
        started = true;
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
            if started {
                ExitCode::FAILURE
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// A clap usage error (exit status 2), printed as clap prints its own.
fn usage_error(kind: ErrorKind, msg: &str) -> ! {
    command().error(kind, msg).exit()
}

/// `certs` lists a store that exists: a mistyped --certsets must not look like an empty module.
/// (`flash` creates the directory.)
fn existing_dir(dir: &std::path::Path, given: bool) -> Result<(), String> {
    let what = if given {
        format!("--certsets {}", dir.display())
    } else {
        format!(
            "{} (the default --certsets; the emulator makes it when it first stores something)",
            dir.display()
        )
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("{what}: not a directory")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// `eswifi-emu presets [NAME]`: each preset's name, summary and TOML.
fn show_presets(name: Option<&str>) -> String {
    let mut out = Vec::new();
    for p in eswifi_core::presets::PRESETS {
        if name.is_some_and(|n| n != p.name) {
            continue;
        }
        if name.is_none() {
            out.push(format!("## --preset {}: {}\n", p.name, p.summary));
        }
        out.push(p.toml.trim_end().to_string());
        out.push(String::new());
    }
    out.join("\n").trim_end().to_string()
}

/// The configuration layers: every --preset in order, then the --config file (origin, text).
fn layers_of<'a>(
    presets: &[String],
    file: Option<(&'a str, &'a str)>,
) -> Vec<eswifi_core::presets::Layer<'a>> {
    let presets: Vec<_> = presets
        .iter()
        .filter_map(|n| eswifi_core::presets::find(n))
        .collect();
    let file = file.map(|(origin, text)| eswifi_core::presets::Layer { origin, text });
    eswifi_core::presets::layers(&presets, file)
}

fn parse_attach(s: &str) -> Result<Attach, String> {
    s.parse()
}

fn init_logging(cli: &Cli, default: &str, capture: bool) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => default,
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    logging::init(level, capture);
}

fn read_config_file(path: &std::path::Path) -> Result<String, String> {
    eswifi_tools::files::read_text_capped(path, eswifi_tools::files::MAX_TEXT_FILE)
        .map_err(|e| e.to_string())
}

fn load_config(layers: &[eswifi_core::presets::Layer<'_>]) -> Result<Config, String> {
    let config = eswifi_core::presets::config(layers)?;
    // The fault rules are the emulator's, not the core's: checked here, at load time.
    crate::driver::config_rules(&config).map_err(|e| e.to_string())?;
    Ok(config)
}
