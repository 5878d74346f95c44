//! `eswifi-emu term`: an interactive terminal on the module (layer: host side). A line editor with
//! history (rustyline) sends each line with CR, shows each reply with `\r\n` as line breaks and
//! coloured by kind, prints asynchronous messages as they come (even while a line is being typed),
//! and with `--record` writes what was typed as a script, each reply's kind as its `expect` line.

use super::lang::{self, Payload};
use super::port::Port;
use eswifi_core::iwin::reply::parse::{Output, Parser, Unit};

/// The prompt that ends what the module writes; the line editor shows its own.
const PROMPT: &[u8] = b"\r\n> ";
use super::show::{self, escape};
use rustyline::error::ReadlineError;
use rustyline::ExternalPrinter;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How long the reader thread waits per read before looking at its stop flag.
const READ_TICK: Duration = Duration::from_millis(100);

pub(super) struct TermOptions {
    pub timeout: Duration,
    /// `--record`, already created (a path that cannot be written is refused before the terminal
    /// starts).
    pub record: Option<Recorder>,
    /// Set by SIGINT (Ctrl-C while a reply is awaited: the terminal is not in raw mode then).
    pub interrupted: Arc<AtomicBool>,
    pub colour: bool,
    /// The emulator's control socket, for `fault …` (the embedded one's, or `--control`).
    pub control: Option<PathBuf>,
}

struct Shared {
    /// A command is out: frames go to the main thread, which prints them in order with the reply.
    awaiting: AtomicBool,
    stop: AtomicBool,
}

/// What the reader thread passes on.
enum Msg {
    Frame { frame: Output, printed: bool },
    Closed(String),
}

fn paint(colour: bool, code: &str, s: &str) -> String {
    if colour {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// Text of one line of module output, control bytes escaped.
fn line_text(b: &[u8]) -> String {
    let s = escape(b);
    // Quotes and backslashes read better unescaped on a terminal.
    s.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// A reply as the terminal shows it: `\r\n` as line breaks, the final prompt left to the editor,
/// `OK` green, error lines red, data plain.
pub(super) fn render_reply(r: &Output, command: &str, colour: bool) -> String {
    let raw = show::reply_payload(command, &r.raw);
    let body = raw.strip_prefix(b"\r\n").unwrap_or(&raw);
    let body = body.strip_suffix(PROMPT).unwrap_or(body);
    let error = r.unit != Unit::Ok;
    let mut out = Vec::new();
    for line in body.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = line_text(line);
        let painted = if line == b"OK" && !error {
            paint(colour, "32;1", &text)
        } else if error
            && (line.starts_with(b"ERROR") || line.starts_with(b"Usage:") || line == b"-1")
        {
            paint(colour, "31;1", &text)
        } else {
            text
        };
        out.push(painted);
    }
    out.join("\n")
}

fn render_event(e: &[u8], colour: bool) -> String {
    paint(colour, "36", &line_text(e))
}

fn render_unsolicited(u: &[u8], colour: bool) -> Option<String> {
    if u == PROMPT {
        return None;
    }
    let body = u.strip_suffix(PROMPT).unwrap_or(u);
    let text: Vec<String> = body
        .split(|&c| c == b'\n')
        .map(|l| line_text(l.strip_suffix(b"\r").unwrap_or(l)))
        .collect();
    Some(paint(colour, "2", text.join("\n").trim_matches('\n')))
}

fn render(frame: &Output, colour: bool) -> Option<String> {
    match frame.unit {
        _ if frame.is_reply() => Some(render_reply(frame, "", colour)),
        Unit::Event => Some(render_event(frame.payload(), colour)),
        _ => render_unsolicited(&frame.raw, colour),
    }
}

fn reader_loop(
    mut port: Box<dyn Port>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    mut printer: Option<Box<dyn ExternalPrinter + Send>>,
    colour: bool,
) {
    let mut parser = Parser::new();
    let mut chunk = [0u8; 4096];
    while !shared.stop.load(Ordering::Relaxed) {
        match port.read(&mut chunk, READ_TICK) {
            Ok(n) => parser.push(&chunk[..n]),
            Err(e) => {
                let _ = tx.send(Msg::Closed(e.to_string()));
                return;
            }
        }
        for frame in parser.by_ref() {
            let idle = !shared.awaiting.load(Ordering::SeqCst);
            let mut printed = false;
            if idle {
                if let Some(text) = render(&frame, colour) {
                    match printer.as_mut() {
                        Some(p) => printed = p.print(format!("{text}\n")).is_ok(),
                        None => {
                            println!("{text}");
                            printed = true;
                        }
                    }
                } else {
                    printed = true;
                }
            }
            if tx.send(Msg::Frame { frame, printed }).is_err() {
                return;
            }
        }
        // Over a MiB without a prompt is not a module: forget it rather than grow.
        if parser.buffered().len() > 1024 * 1024 {
            parser.take_buffered();
        }
    }
}

/// The script lines `--record` writes.
pub(super) struct Recorder {
    file: File,
    path: PathBuf,
}

impl Recorder {
    pub(super) fn create(path: &Path) -> io::Result<Recorder> {
        let file = crate::files::create_private(path)?;
        Ok(Recorder {
            file,
            path: path.to_owned(),
        })
    }

    /// The recording's first lines, once the line is open.
    fn header(&mut self, port: &str) {
        let text = format!(
            "// Recorded with `eswifi-emu term` on {port}.\n// Replay with: eswifi-emu run {} [--port …]",
            self.path.display()
        );
        self.line(&text);
    }

    fn line(&mut self, s: &str) {
        if let Err(e) = writeln!(self.file, "{s}").and_then(|()| self.file.flush()) {
            eprintln!("eswifi-emu: --record: {e}");
        }
    }
}

/// A line as typed, as it goes into the recording: passphrases become variables, payload files
/// absolute paths (the script may be replayed from anywhere).
fn recorded_command(text: &str, cmd: &lang::CommandLine) -> String {
    if let Some(rest) = text.strip_prefix("C2=") {
        if !rest.is_empty() {
            return "C2=${PASSPHRASE}   // not recorded: give --var PASSPHRASE=… or set it in the environment".into();
        }
    }
    if let Some(rest) = text.strip_prefix("A2=") {
        if !rest.is_empty() {
            return "A2=${AP_PASSPHRASE}   // not recorded: give --var AP_PASSPHRASE=… or set it in the environment".into();
        }
    }
    let replays =
        matches!(lang::parse(text).as_deref(), Ok([l]) if matches!(l.item, lang::Item::Command(_)));
    if !replays {
        // A script would read it as a directive: replay it as the bytes that went out.
        return format!("send \"{}\\r\"", escape(text.as_bytes()));
    }
    match &cmd.payload {
        Some(Payload::File(f)) => {
            let abs = std::path::absolute(f).unwrap_or_else(|_| PathBuf::from(f));
            format!("{}@{}", cmd.head, abs.display())
        }
        Some(Payload::Bytes(b)) => format!("{}\"{}\"", cmd.head, escape(b)),
        None => text.to_string(),
    }
}

/// Event text as a `wait` line matches it: the tag and first word (`[TCP SVR] Accepted`), since the
/// rest (addresses, MACs) changes from run to run.
fn wait_key(e: &[u8]) -> String {
    let text = String::from_utf8_lossy(e);
    match text.find(']') {
        Some(end) => {
            let rest = &text[end + 1..];
            let word = rest.split_whitespace().next().unwrap_or("");
            format!("{} {word}", &text[..=end]).trim_end().to_string()
        }
        None => text.into_owned(),
    }
}

/// The main thread's side of the terminal.
struct Term {
    port: Box<dyn Port>,
    rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    recorder: Option<Recorder>,
    /// Events that came while a reply was awaited, recorded after the command's `expect`.
    events_seen: Vec<Vec<u8>>,
    timeout: Duration,
    colour: bool,
    control: Option<PathBuf>,
    interrupted: Arc<AtomicBool>,
    /// Replies still to come for commands whose wait was interrupted: they are not the next
    /// command's.
    owed: usize,
}

/// What became of a command sent.
enum Awaited {
    Reply(Output),
    TimedOut,
    /// Ctrl-C: the user stopped waiting (the reply shows when it comes).
    Interrupted,
}

impl Term {
    fn say_error(&self, msg: &str) {
        println!("{}", paint(self.colour, "31", msg));
    }

    fn record(&mut self, line: &str) {
        if let Some(r) = self.recorder.as_mut() {
            r.line(line);
        }
    }

    fn record_event(&mut self, e: &[u8]) {
        let line = format!("wait \"{}\"", escape(wait_key(e).as_bytes()));
        self.record(&line);
    }

    /// What came while the user was typing (the reader thread printed it): record the events.
    fn take_idle_output(&mut self) -> io::Result<()> {
        loop {
            match self.rx.try_recv() {
                Ok(Msg::Frame { frame, printed }) => {
                    if !printed {
                        if let Some(t) = render(&frame, self.colour) {
                            println!("{t}");
                        }
                    }
                    if frame.is_reply() {
                        self.owed = self.owed.saturating_sub(1);
                    }
                    if let Some(e) = frame.message() {
                        self.record_event(e);
                    }
                }
                Ok(Msg::Closed(e)) => return Err(io::Error::other(format!("line: {e}"))),
                Err(_) => return Ok(()),
            }
        }
    }

    /// One typed line; false to quit.
    fn handle(&mut self, text: &str) -> io::Result<bool> {
        // The terminal's own words; anything else goes to the module as typed (a lowercase
        // `i?` too: the module answers it, as it would at any terminal).
        match text {
            "quit" | "exit" => return Ok(false),
            "help" => {
                println!("{HELP}");
                return Ok(true);
            }
            t if t.starts_with("send ") => {
                match lang::quoted(t["send ".len()..].trim()) {
                    Ok((bytes, _)) => {
                        self.port.write_all(&bytes, self.timeout)?;
                        self.record(&format!("send \"{}\"", escape(&bytes)));
                    }
                    Err(e) => self.say_error(&e),
                }
                return Ok(true);
            }
            t if t == "fault" || t.starts_with("fault ") => {
                self.fault(&t["fault".len()..]);
                return Ok(true);
            }
            _ => {}
        }
        let cmd = match lang::parse_command(text) {
            Ok(c) => c,
            Err(e) => {
                self.say_error(&e);
                return Ok(true);
            }
        };
        let mut bytes = cmd.head.clone().into_bytes();
        match &cmd.payload {
            None => bytes.push(b'\r'),
            Some(p) => {
                let data = match p {
                    Payload::Bytes(b) => b.clone(),
                    Payload::File(f) => {
                        match crate::files::read_capped(Path::new(f), super::run::MAX_PAYLOAD_FILE)
                        {
                            Ok(d) => d,
                            Err(e) => {
                                self.say_error(&format!("{f}: {e}"));
                                return Ok(true);
                            }
                        }
                    }
                };
                bytes.extend_from_slice(data.len().to_string().as_bytes());
                bytes.push(b'\r');
                bytes.extend_from_slice(&data);
            }
        }
        // Events that came before this command belong before it in the recording.
        self.take_idle_output()?;
        self.record(&recorded_command(text, &cmd));
        self.shared.awaiting.store(true, Ordering::SeqCst);
        let sent = self.port.write_all(&bytes, self.timeout);
        let reply = match sent {
            Ok(()) => self.await_reply(),
            Err(e) => Err(e),
        };
        self.shared.awaiting.store(false, Ordering::SeqCst);
        match reply? {
            Awaited::Reply(r) => {
                println!("{}", render_reply(&r, text, self.colour));
                self.record(&format!("expect {}", lang::Kind::of(&r)));
            }
            Awaited::TimedOut => {
                let msg = format!("(no reply within {:.0} s)", self.timeout.as_secs_f64());
                self.say_error(&msg);
                self.record(&format!("// {msg}"));
            }
            Awaited::Interrupted => {
                self.owed += 1;
                let msg = "(Ctrl-C: no longer waiting; the reply shows when it comes)";
                self.say_error(msg);
                self.record("// interrupted: the reply was not waited for");
            }
        }
        // Events seen while waiting go after the command's checks (a check must follow it).
        for e in std::mem::take(&mut self.events_seen) {
            self.record_event(&e);
        }
        Ok(true)
    }

    /// `fault RULE`, `fault clear [ID]`, `fault list`, sent to the control socket; the answer is
    /// printed, and a rule the emulator took is recorded.
    fn fault(&mut self, rest: &str) {
        let op = match lang::parse_fault(rest) {
            Ok(op) => op,
            Err(e) => return self.say_error(&e),
        };
        let Some(path) = self.control.clone() else {
            return self.say_error(super::run::NO_CONTROL);
        };
        let request = op.control_line(op.arg());
        match super::ctl::request(&path, &request, self.timeout) {
            Ok(answer) => {
                let ok = answer
                    .last()
                    .is_some_and(|l| l == "ok" || l.starts_with("ok "));
                for l in &answer {
                    if ok {
                        println!("{}", paint(self.colour, "32", l));
                    } else {
                        self.say_error(l);
                    }
                }
                if ok && op != lang::FaultOp::List {
                    self.record(&format!("fault {}", rest.trim()));
                }
            }
            Err(e) => self.say_error(&format!("control socket {}: {e}", path.display())),
        }
    }

    /// The reply to the command just sent, printing what comes before it.
    fn await_reply(&mut self) -> io::Result<Awaited> {
        let deadline = Instant::now() + self.timeout;
        // A Ctrl-C typed before this command went out is not meant for it.
        self.interrupted.store(false, Ordering::SeqCst);
        loop {
            if self.interrupted.swap(false, Ordering::SeqCst) {
                return Ok(Awaited::Interrupted);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Awaited::TimedOut);
            }
            match self.rx.recv_timeout(left.min(READ_TICK)) {
                Ok(Msg::Frame { frame, printed }) => match frame.unit {
                    // The reply to a command whose wait was interrupted comes first.
                    _ if frame.is_reply() && self.owed > 0 => {
                        self.owed -= 1;
                        if !printed {
                            println!("{}", render_reply(&frame, "", self.colour));
                        }
                    }
                    _ if frame.is_reply() && !printed => return Ok(Awaited::Reply(frame)),
                    // A reply the reader printed came before the command went out.
                    _ if frame.is_reply() => {}
                    Unit::Event => {
                        let e = frame.payload().to_vec();
                        if !printed {
                            println!("{}", render_event(&e, self.colour));
                        }
                        self.events_seen.push(e);
                    }
                    _ if !printed => {
                        if let Some(t) = render_unsolicited(&frame.raw, self.colour) {
                            println!("{t}");
                        }
                    }
                    _ => {}
                },
                Ok(Msg::Closed(e)) => return Err(io::Error::other(format!("line: {e}"))),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::other("line reader stopped"))
                }
            }
        }
    }
}

const HELP: &str = "Type module commands; Enter sends them with CR (the module knows \
uppercase mnemonics only). \
Payloads: S3=\"text\\r\\n\", S3 @file, PG=0,0,@ca.pem. \
Also: send \"raw\\x00bytes\" (no CR), fault RULE | clear [ID] | list (the emulator's \
control socket), help, quit (or Ctrl-D).";

/// Run the terminal until Ctrl-D, `quit`, or the line closing.
pub(super) fn term(port: Box<dyn Port>, opts: TermOptions) -> io::Result<()> {
    let name = port.name();
    let reader_port = port.try_clone()?;
    let config = rustyline::Config::builder()
        .auto_add_history(false)
        .max_history_size(1000)
        .map_err(|e| io::Error::other(e.to_string()))?
        .build();
    let mut rl: rustyline::DefaultEditor =
        rustyline::Editor::with_config(config).map_err(|e| io::Error::other(e.to_string()))?;
    let printer: Option<Box<dyn ExternalPrinter + Send>> = match rl.create_external_printer() {
        Ok(p) => Some(Box::new(p)),
        Err(_) => None,
    };
    let shared = Arc::new(Shared {
        awaiting: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    println!("eswifi-emu term on {name}. {HELP}");
    let (tx, rx) = mpsc::channel();
    let colour = opts.colour;
    let reader = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("term-reader".into())
            .spawn(move || reader_loop(reader_port, shared, tx, printer, colour))?
    };
    let mut recorder = opts.record;
    if let Some(r) = recorder.as_mut() {
        r.header(&name);
    }

    let mut session = Term {
        port,
        rx,
        shared: shared.clone(),
        recorder,
        events_seen: Vec::new(),
        timeout: opts.timeout,
        colour,
        control: opts.control.clone(),
        interrupted: opts.interrupted.clone(),
        owed: 0,
    };
    let result = (|| -> io::Result<()> {
        loop {
            session.take_idle_output()?;
            let line = match rl.readline("> ") {
                Ok(l) => l,
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => return Ok(()),
                Err(e) => return Err(io::Error::other(e.to_string())),
            };
            // A pasted block arrives as one line holding newlines: one command each.
            for text in line.split(['\n', '\r']).map(str::trim) {
                if text.is_empty() {
                    continue;
                }
                // Passphrases stay out of the history.
                if show::command_secret(text.as_bytes()).is_none() {
                    let _ = rl.add_history_entry(text);
                }
                if !session.handle(text)? {
                    return Ok(());
                }
            }
        }
    })();
    shared.stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_render_as_lines() {
        let r = Output {
            unit: Unit::Ok,
            raw: b"\r\nlab,secret,3\r\nOK\r\n> ".to_vec(),
        };
        assert_eq!(render_reply(&r, "C?", false), "lab,********,3\nOK");
        let e = Output {
            unit: Unit::Error,
            raw: b"\r\n\r\nERROR: Unknown Command\r\n> ".to_vec(),
        };
        assert_eq!(render_reply(&e, "XX", false), "\nERROR: Unknown Command");
        assert_eq!(
            render_reply(&e, "XX", true),
            "\n\x1b[31;1mERROR: Unknown Command\x1b[0m"
        );
    }

    #[test]
    fn recording_hides_passphrases_and_keeps_payloads() {
        let c = lang::parse_command("C2=hunter22").unwrap();
        assert!(recorded_command("C2=hunter22", &c).starts_with("C2=${PASSPHRASE}"));
        let c = lang::parse_command("C2=").unwrap();
        assert_eq!(recorded_command("C2=", &c), "C2=");
        let c = lang::parse_command("S3=\"a\\r\\n\"").unwrap();
        assert_eq!(recorded_command("S3=\"a\\r\\n\"", &c), "S3=\"a\\r\\n\"");
        let c = lang::parse_command("S3 @/tmp/x.bin").unwrap();
        assert_eq!(recorded_command("S3 @/tmp/x.bin", &c), "S3=@/tmp/x.bin");
        let c = lang::parse_command("i?").unwrap();
        assert_eq!(recorded_command("i?", &c), "send \"i?\\r\"");
        assert_eq!(
            wait_key(b"[TCP SVR] Accepted 127.0.0.1:5024"),
            "[TCP SVR] Accepted"
        );
    }
}
