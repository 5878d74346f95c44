//! The script runner (layer: host side): executes parsed lines ([`super::lang`]) over a
//! [`Session`], checks replies, prints one line per step, and describes a failure by its script
//! line, the command, what was expected and what came (bytes escaped, secrets masked).

use super::lang::{self, CommandLine, Expect, FaultOp, Item, Kind, Line, Payload};
use super::session::{Session, SessionError};
use super::show::{self, escape, shorten};
use eswifi_core::iwin::reply::parse::Output as Reply;
use regex::bytes::Regex;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Pause between two tries of an `until`.
const UNTIL_PAUSE: Duration = Duration::from_millis(50);
/// Deepest `include` nesting (a loop of includes stops here).
const MAX_INCLUDE_DEPTH: usize = 16;
/// Largest `@file` payload read.
pub(super) const MAX_PAYLOAD_FILE: u64 = 1024 * 1024;

#[derive(Debug, Clone)]
pub(super) struct Options {
    /// Per command (and the default `within` of `until` and `wait`).
    pub timeout: Duration,
    /// `--var NAME=VALUE`, looked up after `set`/`capture` and before the environment.
    pub vars: Vec<(String, String)>,
    pub colour: bool,
    /// Print only failures (and the summary).
    pub quiet: bool,
    /// The control socket of the emulator on the line, for `fault` directives: the embedded
    /// emulator's, or `--control PATH`. None against a real module.
    pub control: Option<PathBuf>,
}

/// The warnings and errors the emulator logged since the last call (none for a module on a
/// port): a failing step shows its own, with or without `-q`.
pub(super) type EmulatorLog<'a> = &'a dyn Fn() -> Vec<String>;

/// Why a `fault` directive cannot run without a control socket.
pub(super) const NO_CONTROL: &str = "fault needs --control PATH when running against a port";

/// The variable a `fault RULE` directive sets to the new rule's id.
pub(super) const FAULT_ID: &str = "FAULT_ID";

/// Why a script stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    /// `script:line`.
    pub at: String,
    /// The line that failed, as written (a check, or the command itself).
    pub line: String,
    /// The module command whose reply failed a check, as sent (secrets masked).
    pub command: Option<String>,
    pub expected: String,
    /// What came, escaped.
    pub got: String,
}

impl Failure {
    /// The multi-line description printed under the step.
    pub(super) fn describe(&self) -> String {
        let mut s = format!("{}: {}\n", self.at, self.line);
        if let Some(c) = &self.command {
            s.push_str(&format!("  command:  {c}\n"));
        }
        s.push_str(&format!(
            "  expected: {}\n  got:      {}",
            self.expected, self.got
        ));
        s
    }
}

/// The result of one script.
#[derive(Debug)]
pub(super) struct Outcome {
    pub script: PathBuf,
    pub failure: Option<Failure>,
    pub time: Duration,
    /// Everything printed for this script (also for `--junit`).
    pub output: Vec<String>,
}

/// Run one script file from its first line, after getting in step with the module.
pub(super) fn run_script(
    session: &mut Session,
    script: &Path,
    opts: &Options,
    emulator_log: EmulatorLog<'_>,
    out: &mut dyn Write,
) -> Outcome {
    let start = Instant::now();
    let mut r = Runner {
        session,
        opts,
        vars: HashMap::new(),
        secrets: initial_secrets(opts),
        output: Vec::new(),
        out,
        emulator_log,
        base: script.parent().map(Path::to_owned).unwrap_or_default(),
        width: loc_width(script),
    };
    let header = format!("== {} ({})", script.display(), r.session.port_name());
    r.print(header, true);
    let result = r.start(script);
    let failure = result.err();
    Outcome {
        script: script.to_owned(),
        failure,
        time: start.elapsed(),
        output: r.output,
    }
}

fn initial_secrets(opts: &Options) -> Vec<Vec<u8>> {
    opts.vars
        .iter()
        .filter(|(n, _)| show::is_secret_name(n))
        .map(|(_, v)| v.as_bytes().to_vec())
        .collect()
}

struct Runner<'a> {
    session: &'a mut Session,
    opts: &'a Options,
    vars: HashMap<String, Vec<u8>>,
    secrets: Vec<Vec<u8>>,
    output: Vec<String>,
    out: &'a mut dyn Write,
    emulator_log: EmulatorLog<'a>,
    /// The top script's directory: locations are shown relative to it.
    base: PathBuf,
    /// Of the location column, so that long script names keep the columns in line.
    width: usize,
}

/// Where a line is, for messages.
fn at(file: &Path, line: usize) -> String {
    format!("{}:{line}", file.display())
}

fn fmt_dur(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Why a script file could not be run.
enum ScriptError {
    Read(String),
    /// A line that does not parse: its number, its text and why.
    Parse {
        line: usize,
        text: String,
        msg: String,
    },
}

fn read_script(path: &Path) -> Result<Vec<Line>, ScriptError> {
    let text = crate::files::read_text_capped(path, crate::files::MAX_TEXT_FILE)
        .map_err(|e| ScriptError::Read(format!("cannot read it: {e}")))?;
    lang::parse(&text).map_err(|e| ScriptError::Parse {
        line: e.line,
        text: text
            .lines()
            .nth(e.line.saturating_sub(1))
            .unwrap_or("")
            .trim()
            .to_string(),
        msg: e.msg,
    })
}

/// The narrowest location column: 24, or wider for the longest `name:line` of the script and the
/// files it includes by a literal path (relative to its directory).
fn loc_width(top: &Path) -> usize {
    const MIN: usize = 24;
    const MAX: usize = 48;
    let base = top.parent().unwrap_or(Path::new(""));
    let mut width = MIN;
    let mut todo = vec![top.to_owned()];
    let mut seen = 0;
    while let Some(file) = todo.pop() {
        seen += 1;
        if seen > 64 {
            break;
        }
        let Ok(text) = crate::files::read_text_capped(&file, crate::files::MAX_TEXT_FILE) else {
            continue;
        };
        let name = file
            .strip_prefix(base)
            .unwrap_or(&file)
            .display()
            .to_string();
        let lines = text.lines().count();
        width = width.max(name.chars().count() + 1 + lines.to_string().len());
        if let Ok(parsed) = lang::parse(&text) {
            for l in parsed {
                if let Item::Include(p) = &l.item {
                    if !p.contains("${") {
                        todo.push(relative_to(&file, p));
                    }
                }
            }
        }
    }
    width.min(MAX)
}

impl Runner<'_> {
    /// Every line printed (and kept for `--junit`) goes through here: a secret variable's value
    /// never shows.
    fn print(&mut self, line: String, always: bool) {
        let line =
            String::from_utf8_lossy(&show::redact(line.as_bytes(), &self.secrets)).into_owned();
        if always || !self.opts.quiet {
            let _ = writeln!(self.out, "{line}");
            let _ = self.out.flush();
        }
        self.output.push(line);
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.opts.colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn step_line(&mut self, loc: &str, what: &str, result: &str, took: Option<Duration>) {
        let status = self.paint("32", "ok  ");
        let took = took.map(fmt_dur).unwrap_or_default();
        let w = self.width;
        let line = format!(
            "{status} {loc:<w$} {:<34} {:<44} {took:>8}",
            shorten(what, 34),
            shorten(result, 44)
        );
        self.print(line.trim_end().to_string(), false);
    }

    /// Print a failure under its step, with what the emulator warned of during the step; returns
    /// it as reported (secrets masked, its location relative to the top script, as step lines).
    fn fail_line(&mut self, loc: &str, f: Failure) -> Failure {
        let mask = |s: &str| {
            String::from_utf8_lossy(&show::redact(s.as_bytes(), &self.secrets)).into_owned()
        };
        let base = self.base.display().to_string();
        let at = match f.at.strip_prefix(&base) {
            Some(rest) if !base.is_empty() => rest.trim_start_matches('/').to_string(),
            _ => f.at.clone(),
        };
        let f = Failure {
            at,
            line: mask(&f.line),
            command: f.command.as_deref().map(mask),
            expected: mask(&f.expected),
            got: mask(&f.got),
        };
        let status = self.paint("31;1", "FAIL");
        let what = f.command.as_deref().unwrap_or(&f.line);
        let w = self.width;
        let line = format!("{status} {loc:<w$} {}", shorten(what, 34));
        self.print(line, true);
        let mut lines: Vec<String> = f.describe().lines().map(str::to_string).collect();
        lines.extend(
            (self.emulator_log)()
                .into_iter()
                .map(|l| format!("emulator {l}")),
        );
        for l in lines {
            let l = format!("       {l}");
            let l = self.paint("31", &l);
            self.print(l, true);
        }
        f
    }

    fn start(&mut self, script: &Path) -> Result<(), Failure> {
        let fail_start = |expected: String, got: String| Failure {
            at: format!("{}:0", script.display()),
            line: "(start)".into(),
            command: None,
            expected,
            got,
        };
        (self.emulator_log)();
        let lines = match read_script(script) {
            Ok(l) => l,
            Err(e) => {
                let (loc, f) = self.script_failure(script, e, fail_start);
                return Err(self.fail_line(&loc, f));
            }
        };
        if let Err(e) = self.session.sync(self.opts.timeout) {
            let got = match e {
                SessionError::Timeout { got } => self.show_bytes(&got, ""),
                SessionError::Io(e) => e.to_string(),
            };
            let f = fail_start(
                format!(
                    "the prompt \"\\r\\n> \" after an empty line, within {}",
                    fmt_dur(self.opts.timeout)
                ),
                got,
            );
            return Err(self.fail_line("0", f));
        }
        self.exec(script, script, &lines, 0)
    }

    /// A script that cannot run: where (its line, for a parse error) and why.
    fn script_failure(
        &self,
        file: &Path,
        e: ScriptError,
        fail_start: impl Fn(String, String) -> Failure,
    ) -> (String, Failure) {
        match e {
            ScriptError::Read(msg) => ("0".into(), fail_start("a script".into(), msg)),
            ScriptError::Parse { line, text, msg } => (
                self.loc(file, line),
                Failure {
                    at: at(file, line),
                    line: text,
                    command: None,
                    expected: "a line of the script language".into(),
                    got: msg,
                },
            ),
        }
    }

    /// The location column: the file relative to the top script's directory (the header names
    /// the top script's path), and the line.
    fn loc(&self, file: &Path, no: usize) -> String {
        let name = file.strip_prefix(&self.base).unwrap_or(file);
        format!("{}:{no}", name.display())
    }

    fn lookup(&mut self, name: &str) -> Option<Vec<u8>> {
        if let Some(v) = self.vars.get(name) {
            return Some(v.clone());
        }
        if let Some((_, v)) = self.opts.vars.iter().rev().find(|(n, _)| n == name) {
            return Some(v.as_bytes().to_vec());
        }
        let v = std::env::var_os(name)?;
        use std::os::unix::ffi::OsStrExt;
        let v = v.as_bytes().to_vec();
        if show::is_secret_name(name) {
            self.secrets.push(v.clone());
        }
        Some(v)
    }

    fn subst(&mut self, file: &Path, line: &Line, input: &[u8]) -> Result<Vec<u8>, Failure> {
        // Look-ups may record secrets, so they go through a RefCell-free two-step.
        let mut found: HashMap<String, Option<Vec<u8>>> = HashMap::new();
        let mut i = 0;
        while let Some(p) = input[i..].windows(2).position(|w| w == b"${") {
            let s = i + p + 2;
            let Some(e) = input[s..].iter().position(|&c| c == b'}') else {
                break;
            };
            let name = String::from_utf8_lossy(&input[s..s + e]).into_owned();
            if let std::collections::hash_map::Entry::Vacant(slot) = found.entry(name) {
                let v = self.lookup(slot.key());
                slot.insert(v);
            }
            i = s + e + 1;
        }
        lang::substitute(input, &|n| found.get(n).cloned().flatten()).map_err(|msg| Failure {
            at: at(file, line.no),
            line: line.text.clone(),
            command: None,
            expected: "every ${VARIABLE} defined".into(),
            got: msg,
        })
    }

    fn subst_str(&mut self, file: &Path, line: &Line, input: &str) -> Result<String, Failure> {
        self.subst(file, line, input.as_bytes())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn regex(&mut self, file: &Path, line: &Line, re: &str) -> Result<Regex, Failure> {
        let src = self.subst_str(file, line, re)?;
        byte_regex(&src).map_err(|e| Failure {
            at: at(file, line.no),
            line: line.text.clone(),
            command: None,
            expected: "a valid regex".into(),
            got: e.to_string(),
        })
    }

    /// Bytes as shown: passphrase fields of `cmd`'s reply masked, secrets masked, escaped.
    fn show_bytes(&self, b: &[u8], cmd: &str) -> String {
        let masked = show::reply_payload(cmd, b);
        format!("\"{}\"", escape(&show::redact(&masked, &self.secrets)))
    }

    fn show_reply(&self, r: &Reply, cmd: &str) -> String {
        let payload = show::redact(&show::reply_payload(cmd, r.payload()), &self.secrets);
        let kind = Kind::of(r);
        // Error payloads carry their own ERROR line; the blank line before it says nothing.
        let text = payload.strip_prefix(b"\r\n").unwrap_or(&payload);
        if text.is_empty() {
            kind.to_string()
        } else {
            // Not inside quotes here: a quote reads better as it is (`#001,"lab",…`).
            escape(text).replace("\\\"", "\"")
        }
    }

    fn exec(
        &mut self,
        top: &Path,
        file: &Path,
        lines: &[Line],
        depth: usize,
    ) -> Result<(), Failure> {
        let mut i = 0;
        while i < lines.len() {
            let line = &lines[i];
            let n = lines[i + 1..]
                .iter()
                .take_while(|l| l.item.is_check())
                .count();
            let checks = &lines[i + 1..i + 1 + n];
            let loc = self.loc(file, line.no);
            // What the emulator logs from here on belongs to this step.
            (self.emulator_log)();
            let result = match &line.item {
                Item::Command(c) => self.command(file, line, c, checks, &loc),
                Item::Send(b) => self.send(file, line, b, checks, &loc),
                Item::Wait {
                    text,
                    exact,
                    within,
                } => self.wait(file, line, text, *exact, *within, &loc),
                Item::Boot { within } => self.boot(file, line, *within, checks, &loc),
                Item::Set { name, value } => self.subst(file, line, value).map(|v| {
                    if show::is_secret_name(name) {
                        self.secrets.push(v.clone());
                    }
                    self.vars.insert(name.clone(), v);
                }),
                Item::Sleep(d) => {
                    std::thread::sleep(*d);
                    self.step_line(&loc, &line.text, "", None);
                    Ok(())
                }
                Item::Echo(text) => self.subst(file, line, text.as_bytes()).map(|t| {
                    let t = show::redact(&t, &self.secrets);
                    let w = self.width;
                    let t = format!("     {loc:<w$} {}", String::from_utf8_lossy(&t));
                    self.print(t, false);
                }),
                Item::Fault(op) => self.fault(file, line, op, &loc),
                Item::Include(p) => match self.subst_str(file, line, p) {
                    Ok(p) => self.include(top, file, line, &p, depth),
                    Err(f) => Err(self.fail_line(&loc, f)),
                },
                // `parse` attaches every check to a command or send.
                Item::Expect(_) | Item::Until { .. } | Item::Capture { .. } => Ok(()),
            };
            if let Err(f) = result {
                if matches!(&line.item, Item::Include(_)) {
                    // Reported where it happened, inside the included file.
                    return Err(f);
                }
                return Err(self.fail_line(&loc, f));
            }
            i += 1 + n;
        }
        Ok(())
    }

    fn include(
        &mut self,
        top: &Path,
        file: &Path,
        line: &Line,
        p: &str,
        depth: usize,
    ) -> Result<(), Failure> {
        let path = relative_to(file, p);
        let fail = |expected: &str, got: String| Failure {
            at: at(file, line.no),
            line: line.text.clone(),
            command: None,
            expected: expected.into(),
            got,
        };
        if depth >= MAX_INCLUDE_DEPTH {
            let f = fail(
                "includes nested at most 16 deep",
                "a deeper include (a loop?)".into(),
            );
            return Err(self.fail_line(&self.loc(file, line.no), f));
        }
        let lines = match read_script(&path) {
            Ok(l) => l,
            Err(ScriptError::Read(e)) => {
                let f = fail("a script to include", format!("{}: {e}", path.display()));
                return Err(self.fail_line(&self.loc(file, line.no), f));
            }
            Err(e) => {
                let (loc, f) = self.script_failure(&path, e, |e, g| fail(&e, g));
                return Err(self.fail_line(&loc, f));
            }
        };
        self.exec(top, &path, &lines, depth + 1)
    }

    /// The bytes a command line sends, and how it is shown.
    fn build(
        &mut self,
        file: &Path,
        line: &Line,
        c: &CommandLine,
    ) -> Result<(Vec<u8>, String), Failure> {
        let head = self.subst_str(file, line, &c.head)?;
        let mut bytes = head.clone().into_bytes();
        if let Some(s) = show::command_secret(head.as_bytes()) {
            self.secrets.push(s);
        }
        let mut shown = show::command_text(&head);
        match &c.payload {
            None => {}
            Some(p) => {
                let data = match p {
                    Payload::Bytes(b) => {
                        let data = self.subst(file, line, b)?;
                        shown.push_str(&format!("\"{}\"", escape(&data)));
                        data
                    }
                    Payload::File(f) => {
                        let f = self.subst_str(file, line, f)?;
                        let path = relative_to(file, &f);
                        let data = read_payload(&path).map_err(|e| Failure {
                            at: at(file, line.no),
                            line: line.text.clone(),
                            command: None,
                            expected: "a readable payload file".into(),
                            got: format!("{}: {e}", path.display()),
                        })?;
                        shown.push_str(&format!("@{f} ({} bytes)", data.len()));
                        data
                    }
                };
                bytes.extend_from_slice(data.len().to_string().as_bytes());
                bytes.push(b'\r');
                bytes.extend_from_slice(&data);
                return Ok((bytes, shown));
            }
        }
        bytes.push(b'\r');
        Ok((bytes, shown))
    }

    fn session_failure(
        &self,
        file: &Path,
        line: &Line,
        shown: &str,
        cmd: &str,
        e: SessionError,
    ) -> Failure {
        let (expected, got) = match e {
            SessionError::Timeout { got } => (
                format!("a reply within {}", fmt_dur(self.opts.timeout)),
                if got.is_empty() {
                    "nothing".into()
                } else {
                    self.show_bytes(&got, cmd)
                },
            ),
            SessionError::Io(e) => ("a working line".into(), e.to_string()),
        };
        Failure {
            at: at(file, line.no),
            line: line.text.clone(),
            command: Some(shown.to_string()),
            expected,
            got,
        }
    }

    fn command(
        &mut self,
        file: &Path,
        line: &Line,
        c: &CommandLine,
        checks: &[Line],
        loc: &str,
    ) -> Result<(), Failure> {
        let (bytes, shown) = self.build(file, line, c)?;
        let cmd = c.head.clone();
        let t0 = Instant::now();
        let timeout = self.opts.timeout;
        // An `until … within` bounds the whole until, the command's own reply included.
        let until = checks.iter().find_map(|l| match &l.item {
            Item::Until { re, within } => Some((l, re, within.unwrap_or(timeout))),
            _ => None,
        });
        let first = until.map_or(timeout, |(_, _, w)| w.min(timeout));
        self.session
            .write(&bytes, timeout)
            .map_err(|e| self.session_failure(file, line, &shown, &cmd, e))?;
        let reply = match (self.session.read_reply(first), until) {
            (Ok(r), _) => r,
            (Err(SessionError::Timeout { got }), Some((l, re, within))) if first < timeout => {
                return Err(Failure {
                    at: at(file, l.no),
                    line: l.text.clone(),
                    command: Some(shown),
                    expected: format!(
                        "a reply matching /{re}/ within {} (1 try; it had no reply in that time)",
                        fmt_dur(within)
                    ),
                    got: if got.is_empty() {
                        "nothing".into()
                    } else {
                        self.show_bytes(&got, &cmd)
                    },
                });
            }
            (Err(e), _) => return Err(self.session_failure(file, line, &shown, &cmd, e)),
        };
        let (reply, tries) =
            self.check(file, line, &shown, &cmd, reply, checks, Some((&bytes, t0)))?;
        let mut result = self.show_reply(&reply, &cmd);
        if tries > 1 {
            result = format!("{result} ({tries} tries)");
        }
        self.step_line(loc, &shown, &result, Some(t0.elapsed()));
        Ok(())
    }

    fn send(
        &mut self,
        file: &Path,
        line: &Line,
        b: &[u8],
        checks: &[Line],
        loc: &str,
    ) -> Result<(), Failure> {
        let data = self.subst(file, line, b)?;
        let shown = format!("send \"{}\"", escape(&data));
        let t0 = Instant::now();
        let timeout = self.opts.timeout;
        self.session
            .write(&data, timeout)
            .map_err(|e| self.session_failure(file, line, &shown, "", e))?;
        if checks.is_empty() {
            let result = format!("{} bytes written", data.len());
            self.step_line(loc, &shown, &result, Some(t0.elapsed()));
            return Ok(());
        }
        let reply = self
            .session
            .read_reply(timeout)
            .map_err(|e| self.session_failure(file, line, &shown, "", e))?;
        let (reply, _) = self.check(file, line, &shown, "", reply, checks, None)?;
        let result = self.show_reply(&reply, "");
        self.step_line(loc, &shown, &result, Some(t0.elapsed()));
        Ok(())
    }

    /// Apply a command's checks: `until`s first (re-sending `resend`), then the reply kind, then the
    /// other checks in order. Returns the final reply and how many were read.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &mut self,
        file: &Path,
        line: &Line,
        shown: &str,
        cmd: &str,
        mut reply: Reply,
        checks: &[Line],
        resend: Option<(&[u8], Instant)>,
    ) -> Result<(Reply, usize), Failure> {
        let explicit = checks.iter().find_map(|l| match l.item {
            Item::Expect(Expect::Kind(k)) => Some((k, l)),
            _ => None,
        });
        // A command's reply must be OK unless said otherwise; a `send` has no default.
        let (kind, kind_line) = match explicit {
            Some((k, l)) => (k, l),
            None if resend.is_some() => (Kind::Ok, line),
            None => (Kind::Any, line),
        };
        let mut tries = 1;
        let fail = |this: &Self, l: &Line, expected: String, r: &Reply| Failure {
            at: at(file, l.no),
            line: l.text.clone(),
            command: Some(shown.to_string()),
            expected,
            got: this.show_bytes(&r.raw, cmd),
        };
        for l in checks {
            let Item::Until { re, within } = &l.item else {
                continue;
            };
            let Some((bytes, sent)) = resend else {
                return Err(fail(
                    self,
                    l,
                    "`until` after a module command (a `send` is not repeated)".into(),
                    &reply,
                ));
            };
            let re = self.regex(file, l, re)?;
            let within = within.unwrap_or(self.opts.timeout);
            let deadline = sent + within;
            let max_tries = (within.as_millis() / UNTIL_PAUSE.as_millis()) as usize + 2;
            loop {
                if kind != Kind::Any && Kind::of(&reply) != kind {
                    return Err(fail(
                        self,
                        l,
                        format!("{kind} replies until one matches /{re}/"),
                        &reply,
                    ));
                }
                if re.is_match(reply.payload()) {
                    break;
                }
                let gave_up = |this: &Self, tries: usize, why: &str, r: &Reply| {
                    let e = format!(
                        "a reply matching /{re}/ within {} ({tries} tries; {why})",
                        fmt_dur(within)
                    );
                    fail(this, l, e, r)
                };
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || tries >= max_tries {
                    return Err(gave_up(self, tries, "this is the last", &reply));
                }
                std::thread::sleep(UNTIL_PAUSE.min(left));
                // `within` bounds the whole `until`: the last try waits only for what is left
                // (an R0 would otherwise wait its full R2).
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(gave_up(self, tries, "this is the last", &reply));
                }
                tries += 1;
                self.session
                    .write(bytes, self.opts.timeout)
                    .map_err(|e| self.session_failure(file, l, shown, cmd, e))?;
                reply = match self.session.read_reply(left.min(self.opts.timeout)) {
                    Ok(r) => r,
                    Err(SessionError::Timeout { .. }) if left < self.opts.timeout => {
                        let why = format!(
                            "the last had no reply in the {} left; shown is the one before",
                            fmt_dur(left)
                        );
                        return Err(gave_up(self, tries, &why, &reply));
                    }
                    Err(e) => return Err(self.session_failure(file, l, shown, cmd, e)),
                };
            }
        }
        if kind != Kind::Any && Kind::of(&reply) != kind {
            let what = match kind {
                Kind::Ok => "an OK reply".to_string(),
                Kind::Error => "an ERROR reply".to_string(),
                k => format!("a {k} reply"),
            };
            return Err(fail(self, kind_line, what, &reply));
        }
        for l in checks {
            match &l.item {
                Item::Expect(Expect::Contains(t)) => {
                    let t = self.subst(file, l, t)?;
                    let p = reply.payload();
                    if !(t.is_empty() || p.windows(t.len()).any(|w| w == t.as_slice())) {
                        let e = format!("the payload contains \"{}\"", escape(&t));
                        return Err(fail(self, l, e, &reply));
                    }
                }
                Item::Expect(Expect::Regex(re)) => {
                    let re = self.regex(file, l, re)?;
                    if !re.is_match(reply.payload()) {
                        return Err(fail(self, l, format!("the payload matches /{re}/"), &reply));
                    }
                }
                Item::Expect(Expect::Exact(t)) => {
                    let t = self.subst(file, l, t)?;
                    if reply.payload() != t.as_slice() {
                        let e = format!("the payload is exactly \"{}\"", escape(&t));
                        return Err(fail(self, l, e, &reply));
                    }
                }
                Item::Capture { name, re } => {
                    let re = self.regex(file, l, re)?;
                    let value = re
                        .captures(reply.payload())
                        .and_then(|c| c.get(1).or_else(|| c.get(0)).map(|m| m.as_bytes().to_vec()));
                    match value {
                        Some(v) => {
                            if show::is_secret_name(name) {
                                self.secrets.push(v.clone());
                            }
                            self.vars.insert(name.clone(), v);
                        }
                        None => {
                            let e = format!("/{re}/ to match, for {name}");
                            return Err(fail(self, l, e, &reply));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok((reply, tries))
    }

    /// `fault RULE`, `fault clear [ID]`, `fault list`: one request to the control socket; an
    /// `error …` answer fails the script.
    fn fault(&mut self, file: &Path, line: &Line, op: &FaultOp, loc: &str) -> Result<(), Failure> {
        let arg = self.subst_str(file, line, op.arg())?;
        let request = op.control_line(arg.trim());
        let shown =
            String::from_utf8_lossy(&show::redact(request.as_bytes(), &self.secrets)).into_owned();
        let fail = |expected: String, got: String| Failure {
            at: at(file, line.no),
            line: line.text.clone(),
            command: Some(shown.clone()),
            expected,
            got,
        };
        let Some(path) = self.opts.control.clone() else {
            return Err(fail(
                "a control socket to send it to".into(),
                format!("none: {NO_CONTROL}"),
            ));
        };
        let t0 = Instant::now();
        let answer = super::ctl::request(&path, &request, self.opts.timeout).map_err(|e| {
            fail(
                format!("an answer from the control socket {}", path.display()),
                e.to_string(),
            )
        })?;
        let last = answer.last().cloned().unwrap_or_default();
        if !(last == "ok" || last.starts_with("ok ")) {
            let expected = match op {
                FaultOp::Add(_) => "ok <id>",
                FaultOp::Clear(_) => "ok",
                FaultOp::List => "ok <count>",
            };
            return Err(fail(expected.into(), last));
        }
        if let FaultOp::Add(_) = op {
            let id = last.trim_start_matches("ok").trim();
            self.vars.insert(FAULT_ID.into(), id.as_bytes().to_vec());
        }
        for rule in &answer[..answer.len() - 1] {
            let w = self.width;
            let l = format!("     {loc:<w$} {rule}");
            self.print(l, false);
        }
        self.step_line(loc, &shown, &last, Some(t0.elapsed()));
        Ok(())
    }

    /// `boot`: the module's power-up output, then the checks after the line.
    fn boot(
        &mut self,
        file: &Path,
        line: &Line,
        within: Option<Duration>,
        checks: &[Line],
        loc: &str,
    ) -> Result<(), Failure> {
        let within = within.unwrap_or(self.opts.timeout);
        let t0 = Instant::now();
        let out = match self.session.read_boot(within) {
            Ok(out) => out,
            Err(SessionError::Timeout { got }) => {
                return Err(Failure {
                    at: at(file, line.no),
                    line: line.text.clone(),
                    command: None,
                    expected: format!(
                        "the module's power-up output (ending in a prompt) within {}",
                        fmt_dur(within)
                    ),
                    got: if got.is_empty() {
                        "nothing".into()
                    } else {
                        self.show_bytes(&got, "")
                    },
                })
            }
            Err(e) => return Err(self.session_failure(file, line, &line.text, "", e)),
        };
        let (out, _) = self.check(file, line, &line.text, "", out, checks, None)?;
        let result = self.show_reply(&out, "");
        self.step_line(loc, &line.text, &result, Some(t0.elapsed()));
        Ok(())
    }

    fn wait(
        &mut self,
        file: &Path,
        line: &Line,
        text: &[u8],
        exact: bool,
        within: Option<Duration>,
        loc: &str,
    ) -> Result<(), Failure> {
        let t = self.subst(file, line, text)?;
        let within = within.unwrap_or(self.opts.timeout);
        let t0 = Instant::now();
        let found = self.session.wait_event(
            &|e: &[u8]| {
                if exact {
                    e == t.as_slice()
                } else {
                    t.is_empty() || e.windows(t.len()).any(|w| w == t.as_slice())
                }
            },
            within,
            self.opts.timeout,
        );
        match found {
            Ok(e) => {
                let shown = escape(&show::redact(&e, &self.secrets));
                self.step_line(loc, &line.text, &shown, Some(t0.elapsed()));
                Ok(())
            }
            Err(SessionError::Timeout { got }) => Err(Failure {
                at: at(file, line.no),
                line: line.text.clone(),
                command: None,
                expected: format!(
                    "an asynchronous message {} \"{}\" within {}",
                    if exact {
                        "that is exactly"
                    } else {
                        "containing"
                    },
                    escape(&t),
                    fmt_dur(within)
                ),
                got: if got.is_empty() {
                    "no asynchronous message".into()
                } else {
                    format!("other messages: {}", self.show_bytes(&got, ""))
                },
            }),
            Err(e) => Err(self.session_failure(file, line, &line.text, "", e)),
        }
    }
}

/// Replies are bytes: `\xNN` is a byte and `.` any byte (no Unicode classes).
pub(super) fn byte_regex(src: &str) -> Result<Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(src).unicode(false).build()
}

/// `p` relative to the directory of `file` (absolute paths stay as they are).
pub(super) fn relative_to(file: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        return p.to_owned();
    }
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
        _ => p.to_owned(),
    }
}

fn read_payload(path: &Path) -> std::io::Result<Vec<u8>> {
    crate::files::read_capped(path, MAX_PAYLOAD_FILE)
}

/// The closing line: `N passed, M failed` (scripts).
pub(super) fn summary(outcomes: &[Outcome]) -> String {
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    format!("{} passed, {failed} failed", outcomes.len() - failed)
}

fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 allows no other control characters; colour codes among them.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => o.push(c),
        }
    }
    o
}

/// Strip ANSI colour sequences (for the JUnit file).
fn plain(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            o.push(c);
        }
    }
    o
}

/// A JUnit XML report: one test case per script.
pub(super) fn junit(outcomes: &[Outcome]) -> String {
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    let total: f64 = outcomes.iter().map(|o| o.time.as_secs_f64()).sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    s.push_str(&format!(
        "  <testsuite name=\"eswifi-emu run\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" \
         time=\"{total:.3}\">\n",
        outcomes.len()
    ));
    for o in outcomes {
        s.push_str(&format!(
            "    <testcase classname=\"iwin\" name=\"{}\" time=\"{:.3}\">\n",
            xml(&o.script.display().to_string()),
            o.time.as_secs_f64()
        ));
        if let Some(f) = &o.failure {
            s.push_str(&format!(
                "      <failure message=\"{}\" type=\"expectation\">{}</failure>\n",
                xml(&format!("{}: expected {}", f.at, f.expected)),
                xml(&f.describe())
            ));
        }
        let text: Vec<String> = o.output.iter().map(|l| plain(l)).collect();
        s.push_str(&format!(
            "      <system-out>{}</system-out>\n    </testcase>\n",
            xml(&text.join("\n"))
        ));
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}
