//! `eswifi-emu` command line (layer: edge). Parses arguments, sets up logging and configuration, and
//! hands over to [`eswifi_emu::driver`] (serving, the default), [`eswifi_emu::tools`] (`flash`,
//! `certs`), [`eswifi_emu::script`] (`run`, `term`) or [`eswifi_emu::peers`] (`peers`).

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};
use eswifi_emu::certstore::CertStore;
use eswifi_emu::config::{Config, EventMode};
use eswifi_emu::driver::{serve, ServeOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Help heading of the options that work on either side of a subcommand.
const GLOBAL: &str = "Global options";

/// Emulate an Inventek eS-WiFi module (IWIN AT commands) on a pseudo-terminal, with real networking
/// on the host. Prints the pty path, then serves until SIGINT, SIGTERM or SIGHUP.
#[derive(Debug, Parser)]
#[command(name = "eswifi-emu", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,

    /// Also create a symlink at PATH pointing to the pty, removed at exit. A symlink already there
    /// is replaced; anything else at PATH (a file, a directory) is an error and left alone.
    #[arg(long, value_name = "PATH")]
    link: Option<PathBuf>,

    /// TOML configuration file (defaults apply to everything it leaves out).
    #[arg(long, value_name = "FILE", global = true, help_heading = GLOBAL)]
    config: Option<PathBuf>,

    /// How asynchronous messages reach the host: `uart` writes them between replies (UART firmware),
    /// `poll` queues them for `MR` (SPI firmware). Overrides the configuration file.
    #[arg(long, value_enum, value_name = "MODE")]
    events: Option<EventMode>,

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
    Run(eswifi_emu::script::cli::RunArgs),
    /// An interactive terminal on the module, with line editing and history.
    Term(eswifi_emu::script::cli::TermArgs),
    /// Start on loopback everything the shipped scripts talk to (echoes, WWEP, wss), with demo
    /// certificates, and print the --var values to use.
    Peers(eswifi_emu::peers::PeersArgs),
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

    let global = eswifi_emu::script::cli::Global {
        config: cli.config.clone(),
        certsets: certsets_given.then(|| cli.certsets.clone()),
        quiet: cli.quiet,
    };
    match &cli.cmd {
        Some(Cmd::Run(args)) => return eswifi_emu::script::cli::run_cmd(args, &global),
        Some(Cmd::Term(args)) => return eswifi_emu::script::cli::term_cmd(args, &global),
        Some(Cmd::Peers(args)) => return eswifi_emu::peers::peers_cmd(args),
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
                let plan = eswifi_emu::tools::FlashPlan {
                    erase,
                    set,
                    ca,
                    cert,
                    key,
                };
                eswifi_emu::tools::flash(&store, &plan).map(|lines| lines.join("\n"))
            }
            Cmd::Certs => eswifi_emu::tools::list(&store).map(|s| s.trim_end().to_string()),
            Cmd::Run(_) | Cmd::Term(_) | Cmd::Peers(_) => unreachable!("handled above"),
        };
        return match result {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
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
    if let Some(mode) = cli.events {
        config.module.events = mode;
    }
    let opts = ServeOptions {
        config,
        link: cli.link,
        certsets: cli.certsets,
    };
    let served = serve(&opts, |slave| {
        let mut out = std::io::stdout().lock();
        // The path is the one thing scripts read from stdout; it must be out before we wait.
        if let Err(e) = writeln!(out, "{}", slave.display()).and_then(|()| out.flush()) {
            log::warn!("printing the pty path: {e}");
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
    Config::from_toml(&text)
}
