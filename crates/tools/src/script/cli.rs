//! Command-line options and entry points of `run` and `term` (layer: edge). `main.rs` only adds
//! the subcommands and hands over.

use super::embedded::{Embedded, Start};
use super::port::{self, Port, PortSpec, TtyPort};
use super::run::{self, Options, Outcome};
use super::session::Session;
use super::term::{self, TermOptions};
use eswifi_core::config::{Bus, Config, EventMode};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The options that come from the global part of the command line.
#[derive(Debug, Clone, Default)]
pub struct Global {
    /// `--preset NAME`s, in the order given (names clap has checked).
    pub presets: Vec<String>,
    pub config: Option<PathBuf>,
    /// Only when given on the command line (otherwise the embedded emulator gets a fresh one).
    pub certsets: Option<PathBuf>,
    pub quiet: bool,
}

/// Where the module is. Without any of these, an emulator runs inside this process.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("line").args(["port", "serial", "connect"])))]
pub struct PortArgs {
    /// A tty or pty to drive: another emulator's pty, or a serial device already set up.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["serial", "connect"])]
    pub port: Option<PathBuf>,
    /// A serial device (a USB-UART to a real module), opened at --baud, 8N1, no flow control.
    #[arg(long, value_name = "DEV", conflicts_with = "connect")]
    pub serial: Option<PathBuf>,
    /// Baud rate for --serial.
    #[arg(long, value_name = "N", requires = "serial")]
    pub baud: Option<u32>,
    /// A TCP connection carrying the serial line (QEMU `-serial tcp::PORT,server`, Renode).
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: Option<String>,
    /// The control socket of the emulator on --port/--serial/--connect (its `--control PATH`),
    /// where `fault …` directives go. The embedded emulator has one of its own.
    #[arg(long, value_name = "PATH", requires = "line")]
    pub control: Option<PathBuf>,
    /// Seed of the embedded emulator's random fault choices, to replay a run exactly (else
    /// `[faults] seed`, else picked and logged with -v).
    #[arg(long, value_name = "N", conflicts_with = "line")]
    pub seed: Option<u64>,
}

impl PortArgs {
    pub fn spec(&self) -> PortSpec {
        if let Some(p) = &self.port {
            PortSpec::Path(p.clone())
        } else if let Some(dev) = &self.serial {
            PortSpec::Serial {
                dev: dev.clone(),
                baud: self.baud.unwrap_or(115_200),
            }
        } else if let Some(addr) = &self.connect {
            PortSpec::Tcp(addr.clone())
        } else {
            PortSpec::Embedded
        }
    }
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected NAME=VALUE"))?;
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!("`{name}` is not a variable name"));
    }
    Ok((name.to_string(), value.to_string()))
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    super::lang::parse_duration(s)
}

/// Run terminal scripts against the module (by default an emulator inside this process, one fresh
/// module per script). Prints one line per step and `N passed, M failed`; exits 0 only when every
/// script passed.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Script files (`*.iwin`).
    #[arg(required = true, value_name = "SCRIPT")]
    pub scripts: Vec<PathBuf>,
    #[command(flatten)]
    pub port: PortArgs,
    /// How the module delivers asynchronous messages, for `wait`: `uart` (written between
    /// replies) or `poll` (fetched with MR). Also sets the embedded emulator's mode.
    #[arg(long, value_name = "MODE", value_parser = event_mode_parser())]
    pub events: Option<EventMode>,
    /// A variable for `${NAME}` (after `set`, before the environment). Repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// How long to wait for each reply (and the default `within` of until/wait).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_dur)]
    pub timeout: Duration,
    /// Also write a JUnit XML report, one test case per script.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// An interactive terminal on the module (by default an emulator inside this process).
#[derive(Debug, Clone, clap::Args)]
pub struct TermArgs {
    #[command(flatten)]
    pub port: PortArgs,
    /// How the embedded emulator delivers asynchronous messages: `uart` (written between replies,
    /// shown as they come) or `poll` (queued until you send MR).
    #[arg(long, value_name = "MODE", value_parser = event_mode_parser())]
    pub events: Option<EventMode>,
    /// Write what is typed as a script (`*.iwin`), each reply's kind as its `expect` line.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// How long to wait for each reply.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_dur)]
    pub timeout: Duration,
}

fn load_config(global: &Global, events: Option<EventMode>) -> Result<Config, String> {
    let file = match &global.config {
        None => None,
        Some(path) => Some((
            format!("--config {}", path.display()),
            crate::files::read_text_capped(path, crate::files::MAX_TEXT_FILE)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        )),
    };
    let presets: Vec<_> = global
        .presets
        .iter()
        .filter_map(|n| eswifi_core::presets::find(n))
        .collect();
    let file = file
        .as_ref()
        .map(|(origin, text)| eswifi_core::presets::Layer {
            origin: origin.as_str(),
            text: text.as_str(),
        });
    let mut config = eswifi_core::presets::config(&eswifi_core::presets::layers(&presets, file))?;
    if let Some(m) = events {
        config.module.events = m;
    }
    // The SPI bus always queues messages for MR (the embedded module's, and the runner's `wait`).
    if config.module.bus == Bus::Spi {
        config.module.events = EventMode::Poll;
    }
    Ok(config)
}

fn colour_on(stream_is_tty: bool) -> bool {
    stream_is_tty && std::env::var_os("NO_COLOR").is_none()
}

fn open_embedded(
    start: Start,
    config: &Config,
    global: &Global,
    seed: Option<u64>,
) -> std::io::Result<(Box<dyn Embedded>, Box<dyn Port>)> {
    let emu = start(config, global.certsets.as_deref(), seed)?;
    let port = TtyPort::open(emu.path())?.named("embedded emulator");
    Ok((emu, Box::new(port)))
}

/// Exit with status 130 on the first of `signals` (after `before`), from a thread of its own: the
/// runner may be in the middle of a read.
fn exit_on(signals: &[i32], before: impl Fn() + Send + 'static) -> std::io::Result<()> {
    let mut sigs = signal_hook::iterator::Signals::new(signals)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if sigs.forever().next().is_some() {
                before();
                eprintln!("eswifi-emu: interrupted");
                std::process::exit(130);
            }
        })?;
    Ok(())
}

/// `eswifi-emu run`; `start` runs the embedded emulator (when no port is given).
pub fn run_cmd(args: &RunArgs, global: &Global, start: Start) -> ExitCode {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    if let Err(e) = exit_on(&[SIGINT, SIGTERM, SIGHUP], || {}) {
        eprintln!("eswifi-emu: signals: {e}");
        return ExitCode::from(2);
    }
    let config = match load_config(global, args.events) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("eswifi-emu: {e}");
            return ExitCode::from(2);
        }
    };
    // Usage errors before anything runs: a script that is not there, a report nowhere to go.
    for script in &args.scripts {
        if let Err(e) = readable_file(script) {
            eprintln!("eswifi-emu: {}: {e}", script.display());
            return ExitCode::from(2);
        }
    }
    if let Some(path) = &args.junit {
        if let Err(e) = writable_path(path) {
            eprintln!("eswifi-emu: --junit {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    let mode = config.module.events;
    let opts = Options {
        timeout: args.timeout,
        vars: args.vars.clone(),
        colour: colour_on(std::io::stdout().is_terminal()),
        quiet: global.quiet,
        control: args.port.control.clone(),
    };
    let mut out = std::io::stdout().lock();
    let mut outcomes: Vec<Outcome> = Vec::new();
    match args.port.spec() {
        PortSpec::Embedded => {
            for script in &args.scripts {
                // One fresh module per script: scripts are independent test cases.
                let (emu, port) = match open_embedded(start, &config, global, args.port.seed) {
                    Ok(x) => x,
                    Err(e) => {
                        eprintln!("eswifi-emu: embedded emulator: {e}");
                        return ExitCode::from(2);
                    }
                };
                let mut session = Session::new(port, mode);
                let opts = Options {
                    control: Some(emu.control().to_owned()),
                    ..opts.clone()
                };
                let log = || emu.take_log();
                outcomes.push(run::run_script(&mut session, script, &opts, &log, &mut out));
            }
        }
        spec => {
            let port = match port::open(&spec, args.timeout) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("eswifi-emu: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut session = Session::new(port, mode);
            for script in &args.scripts {
                outcomes.push(run::run_script(
                    &mut session,
                    script,
                    &opts,
                    &Vec::new,
                    &mut out,
                ));
            }
        }
    }
    let _ = writeln!(out, "{}", run::summary(&outcomes));
    let _ = out.flush();
    if let Some(path) = &args.junit {
        if let Err(e) = write_file(path, run::junit(&outcomes).as_bytes()) {
            eprintln!("eswifi-emu: --junit {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if outcomes.iter().all(|o| o.failure.is_none()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A file that can be opened for reading (not a directory).
fn readable_file(path: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    if f.metadata()?.is_dir() {
        return Err(std::io::Error::other("a directory, not a script"));
    }
    Ok(())
}

/// A path a file can be written at: its directory exists, and it is not a directory itself.
fn writable_path(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !std::fs::metadata(dir)?.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(std::io::Error::other("a directory"));
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = crate::files::create_private(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// `eswifi-emu term`; `start` runs the embedded emulator (when no port is given).
pub fn term_cmd(args: &TermArgs, global: &Global, start: Start) -> ExitCode {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // Ctrl-C only stops a wait (the terminal looks at the flag); SIGTERM and SIGHUP end the
    // session, leaving the user's terminal as it was found.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let saved = nix::sys::termios::tcgetattr(std::io::stdin()).ok();
    let restore = move || {
        if let Some(t) = &saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    };
    let handled = signal_hook::flag::register(SIGINT, interrupted.clone())
        .and_then(|_| exit_on(&[SIGTERM, SIGHUP], restore));
    if let Err(e) = handled {
        eprintln!("eswifi-emu: signals: {e}");
        return ExitCode::from(2);
    }
    let config = match load_config(global, args.events) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("eswifi-emu: {e}");
            return ExitCode::from(2);
        }
    };
    // Before anything is printed: a recording that cannot be written is a usage error.
    let recorder = match &args.record {
        None => None,
        Some(p) => match term::Recorder::create(p) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("eswifi-emu: --record {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
    };
    let opened = match args.port.spec() {
        PortSpec::Embedded => {
            open_embedded(start, &config, global, args.port.seed).map(|(e, p)| (Some(e), p))
        }
        spec => port::open(&spec, args.timeout).map(|p| (None, p)),
    };
    let (emu, port) = match opened {
        Ok(x) => x,
        Err(e) => {
            eprintln!("eswifi-emu: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = TermOptions {
        timeout: args.timeout,
        record: recorder,
        interrupted,
        colour: colour_on(std::io::stdout().is_terminal()),
        control: match &emu {
            Some(e) => Some(e.control().to_owned()),
            None => args.port.control.clone(),
        },
    };
    match term::term(port, opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eswifi-emu: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--events`: the modes of [`EventMode`], listed in `--help`.
pub fn event_mode_parser() -> impl clap::builder::TypedValueParser<Value = EventMode> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["uart", "poll"])
        .map(|s| s.parse::<EventMode>().expect("one of the listed modes"))
}
