//! The terminal-script language (`*.iwin`), layer: pure. Parses a file into lines the runner executes;
//! no IO besides nothing at all (the caller reads the file), no clock.
//!
//! - `//` and `#` start comments. `//` does so anywhere outside a quoted string or a `/regex/`; `#`
//!   only at the start of a line or after white space, so that `F5=#` and `WL=#` stay commands.
//! - A line starting with an uppercase letter, a digit, `?`, `$$$` or `---` is a module command,
//!   sent followed by CR. `S3=@file`, `PG=0,0,@file` (also `S3 @file`) and `S3="text"` carry a
//!   payload: the length is filled in and the bytes follow the CR.
//! - A line starting with a lowercase word is a runner directive ([`Item`]).
//!
//! `${NAME}` may appear anywhere; it is replaced at run time ([`substitute`]), inside decoded quoted
//! strings, paths, regexes and command text alike.

use eswifi_core::iwin::reply::parse::{Output, Unit};
use std::fmt;
use std::time::Duration;

/// Commands whose last argument may be a payload (`@file` or `"text"`): `S3=<n>\r<n bytes>`,
/// `PG=<set>,<item>,<len>\r<bytes>`, and the legacy `PC`, `PD` and `ZO=<len>\r<URL>` (spec §2.2).
const PAYLOAD_COMMANDS: [&str; 5] = ["S3", "PG", "PC", "PD", "ZO"];

/// A parse error, naming the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

/// One meaningful line of a script.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    /// 1-based line number in its file.
    pub no: usize,
    /// The line without its comment, trimmed (for messages).
    pub text: String,
    pub item: Item,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    /// A module command, sent with CR.
    Command(CommandLine),
    /// `send "bytes"`: written as-is, no CR.
    Send(Vec<u8>),
    /// `expect …`: a check of the previous reply.
    Expect(Expect),
    /// `until /re/ [within DUR]`: repeat the previous command until its payload matches.
    Until {
        re: String,
        within: Option<Duration>,
    },
    /// `wait "text" [within DUR]`: an asynchronous message containing the text; `wait exact
    /// "text"`: one that is exactly the text.
    Wait {
        text: Vec<u8>,
        exact: bool,
        within: Option<Duration>,
    },
    /// `boot [within DUR]`: what the module writes when it comes back from a reset (the banner and
    /// prompt after `ZR`), waited for; checks after it look at those bytes.
    Boot { within: Option<Duration> },
    /// `capture NAME /re/`: group 1 (or the whole match) of the previous reply's payload.
    Capture { name: String, re: String },
    /// `set NAME value`.
    Set { name: String, value: Vec<u8> },
    /// `sleep DUR`.
    Sleep(Duration),
    /// `echo text`.
    Echo(String),
    /// `include PATH` (relative to the including script).
    Include(String),
    /// `fault RULE`, `fault clear [ID]`, `fault list`: sent to the emulator's control socket.
    Fault(FaultOp),
}

/// What a `fault` directive asks of the control socket (`${NAME}`s are substituted at run time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FaultOp {
    /// `fault RULE`: `fault add RULE`, answered `ok <id>`. The emulator judges the rule.
    Add(String),
    /// `fault clear` (every rule) or `fault clear ID`.
    Clear(Option<String>),
    /// `fault list`: one line per rule, then `ok <count>`.
    List,
}

impl FaultOp {
    /// The control-socket command, given the substituted argument.
    pub(crate) fn control_line(&self, arg: &str) -> String {
        match self {
            FaultOp::Add(_) => format!("fault add {arg}"),
            FaultOp::Clear(None) => "fault clear".into(),
            FaultOp::Clear(Some(_)) => format!("fault clear {arg}"),
            FaultOp::List => "fault list".into(),
        }
    }

    /// The text that takes `${NAME}`s: the rule or the id.
    pub(crate) fn arg(&self) -> &str {
        match self {
            FaultOp::Add(r) => r,
            FaultOp::Clear(Some(id)) => id,
            FaultOp::Clear(None) | FaultOp::List => "",
        }
    }
}

/// The words after `fault` (in a script, or typed in `eswifi-emu term`).
pub(crate) fn parse_fault(rest: &str) -> Result<FaultOp, String> {
    let rest = rest.trim();
    let (verb, arg) = rest
        .split_once(char::is_whitespace)
        .map_or((rest, ""), |(v, a)| (v, a.trim()));
    match verb {
        "" => Err(
            "`fault` needs a rule (`fault serial.split 1..7 gap=2ms`), `clear [ID]` or `list`"
                .into(),
        ),
        "clear" if arg.is_empty() => Ok(FaultOp::Clear(None)),
        "clear" if arg.contains("${") || arg.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(FaultOp::Clear(Some(arg.to_string())))
        }
        "clear" => Err(format!("`fault clear {arg}`: the ID is a number")),
        "list" if arg.is_empty() => Ok(FaultOp::List),
        "list" => Err(format!("unexpected `{arg}` after `fault list`")),
        _ => Ok(FaultOp::Add(rest.to_string())),
    }
}

impl Item {
    /// Checks attached to the command (or `send`) above them.
    pub(crate) fn is_check(&self) -> bool {
        matches!(
            self,
            Item::Expect(_) | Item::Until { .. } | Item::Capture { .. }
        )
    }
}

/// A module command line, split where a payload starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CommandLine {
    /// Without payload: the whole command. With one: the text before the length, ending in `=`
    /// or `,` (`S3=`, `PG=0,0,`).
    pub head: String,
    pub payload: Option<Payload>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    /// `@path`, relative to the script.
    File(String),
    /// `"text"` with C escapes decoded.
    Bytes(Vec<u8>),
}

/// What a reply is, as `expect OK | ERROR | -1 | any` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ok,
    Error,
    /// `\r\n-1\r\n…`: a read or send on a closed connection.
    MinusOne,
    /// Any reply at all (for commands whose answer differs between firmware, such as `CD` when
    /// not joined).
    Any,
}

impl Kind {
    /// The kind of a unit the module wrote (a message, prompt or boot output counts as none of
    /// the replies: `Error`).
    pub(crate) fn of(o: &Output) -> Kind {
        match o.unit {
            Unit::Ok => Kind::Ok,
            Unit::Closed => Kind::MinusOne,
            _ => Kind::Error,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Ok => "OK",
            Kind::Error => "ERROR",
            Kind::MinusOne => "-1",
            Kind::Any => "any",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expect {
    Kind(Kind),
    /// The payload contains the bytes.
    Contains(Vec<u8>),
    /// The payload matches the regex (bytes mode).
    Regex(String),
    /// The payload is exactly the bytes.
    Exact(Vec<u8>),
}

/// Parse a whole file.
pub(crate) fn parse(text: &str) -> Result<Vec<Line>, ParseError> {
    let mut out: Vec<Line> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let err = |msg: String| ParseError { line: no, msg };
        let Some(item_text) = parse_line(raw).map_err(err)? else {
            continue;
        };
        let (text, item) = item_text;
        if item.is_check() {
            let attached = out.last().is_some_and(|l| {
                matches!(l.item, Item::Command(_) | Item::Send(_) | Item::Boot { .. })
                    || l.item.is_check()
            });
            if !attached {
                return Err(err(format!(
                    "`{}` must follow a module command, `send` or `boot` (or another check)",
                    text.split_whitespace().next().unwrap_or("")
                )));
            }
        }
        out.push(Line { no, text, item });
    }
    Ok(out)
}

/// One line: `None` for blank lines and comments.
fn parse_line(raw: &str) -> Result<Option<(String, Item)>, String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with("//") || line.starts_with('#') {
        return Ok(None);
    }
    let first = line.chars().next().unwrap_or(' ');
    if line.starts_with("$$$")
        || line.starts_with("---")
        || first.is_ascii_uppercase()
        || first.is_ascii_digit()
        || first == '?'
    {
        let text = strip_comment(line, false).trim_end().to_string();
        let cmd = parse_command(&text)?;
        return Ok(Some((text, Item::Command(cmd))));
    }
    if first.is_ascii_lowercase() {
        let text = strip_comment(line, true).trim_end().to_string();
        let item = parse_directive(&text)?;
        return Ok(Some((text, item)));
    }
    Err(format!(
        "`{line}` is neither a module command (uppercase, `?`, `$$$`, `---`) nor a directive \
         (lowercase)"
    ))
}

/// Cut a trailing comment: `//` outside quotes (and, for directives, outside `/regex/`), or `#`
/// after white space.
fn strip_comment(line: &str, regexes: bool) -> &str {
    let b = line.as_bytes();
    let mut i = 0;
    let mut quote = false;
    let mut regex = false;
    while i < b.len() {
        let c = b[i];
        if quote || regex {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if (quote && c == b'"') || (regex && c == b'/') {
                quote = false;
                regex = false;
            }
            i += 1;
            continue;
        }
        let after_space = i == 0 || b[i - 1].is_ascii_whitespace();
        match c {
            b'"' => quote = true,
            b'/' if b.get(i + 1) == Some(&b'/') => return &line[..i],
            b'/' if regexes && after_space => regex = true,
            b'#' if after_space => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

/// A module command line (without comment), split where a payload starts.
pub(crate) fn parse_command(text: &str) -> Result<CommandLine, String> {
    let mnemonic: String = text.chars().take(2).collect();
    if PAYLOAD_COMMANDS.contains(&mnemonic.as_str()) {
        if let Some((start, sep)) = payload_start(text) {
            let mut head = text[..start].trim_end().to_string();
            if sep == b' ' {
                // `S3 @file` → `S3=`; `PG=0,0 @file` → `PG=0,0,`.
                head.push(if head.contains('=') { ',' } else { '=' });
            }
            let rest = &text[start..];
            let payload = if let Some(path) = rest.strip_prefix('@') {
                let path = path.trim();
                if path.is_empty() {
                    return Err("`@` needs a file name".into());
                }
                Payload::File(path.to_string())
            } else {
                let (bytes, used) = quoted(rest)?;
                if !rest[used..].trim().is_empty() {
                    return Err(format!(
                        "unexpected `{}` after the quoted payload",
                        rest[used..].trim()
                    ));
                }
                Payload::Bytes(bytes)
            };
            return Ok(CommandLine {
                head,
                payload: Some(payload),
            });
        }
    }
    if text.contains('"') && PAYLOAD_COMMANDS.contains(&mnemonic.as_str()) {
        return Err("a quoted payload must be the command's last argument".into());
    }
    Ok(CommandLine {
        head: text.to_string(),
        payload: None,
    })
}

/// Where a payload argument (`@…` or `"…"`) starts, and the separator before it (`=`, `,` or
/// space).
fn payload_start(text: &str) -> Option<(usize, u8)> {
    let b = text.as_bytes();
    (2..b.len()).find_map(|i| {
        let sep = b[i - 1];
        let ok_sep = matches!(sep, b'=' | b',' | b' ');
        (ok_sep && matches!(b[i], b'@' | b'"')).then_some((i, sep))
    })
}

/// Decode a `"quoted"` string with C escapes at the start of `s`; returns the bytes and how many
/// bytes of `s` it used.
pub(crate) fn quoted(s: &str) -> Result<(Vec<u8>, usize), String> {
    let b = s.as_bytes();
    if b.first() != Some(&b'"') {
        return Err(format!("expected a quoted string at `{s}`"));
    }
    let mut out = Vec::new();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Ok((out, i + 1)),
            b'\\' => {
                let e = *b.get(i + 1).ok_or("unfinished escape at the end")?;
                i += 2;
                match e {
                    b'r' => out.push(b'\r'),
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'0' => out.push(0),
                    b'\\' => out.push(b'\\'),
                    b'"' => out.push(b'"'),
                    b'x' => {
                        let hex = s.get(i..i + 2).ok_or("`\\x` needs two hex digits")?;
                        let v = u8::from_str_radix(hex, 16)
                            .map_err(|_| format!("`\\x{hex}` is not two hex digits"))?;
                        out.push(v);
                        i += 2;
                    }
                    other => {
                        return Err(format!(
                            "unknown escape `\\{}` (known: \\r \\n \\t \\0 \\xNN \\\\ \\\")",
                            other as char
                        ))
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err("missing closing `\"`".into())
}

/// A `/regex/` at the start of `s` (`\/` stands for a slash); returns the regex source and how
/// many bytes it used.
fn slashed(s: &str) -> Result<(String, usize), String> {
    let b = s.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(format!("expected a /regex/ at `{s}`"));
    }
    let mut out = String::new();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'/' => return Ok((out, i + 1)),
            b'\\' if b.get(i + 1) == Some(&b'/') => {
                out.push('/');
                i += 2;
            }
            b'\\' if i + 1 < b.len() => {
                out.push('\\');
                // Push the escaped character whole (it may be multi-byte).
                let ch = s[i + 1..].chars().next().unwrap_or('\\');
                out.push(ch);
                i += 1 + ch.len_utf8();
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Err("missing closing `/` of the regex".into())
}

/// Check a regex now unless it holds a `${VAR}` (then at run time).
fn check_regex(re: &str) -> Result<(), String> {
    if re.contains("${") {
        return Ok(());
    }
    regex::bytes::RegexBuilder::new(re)
        .unicode(false)
        .build()
        .map(|_| ())
        .map_err(|e| format!("bad regex /{re}/: {e}"))
}

/// `500ms`, `10s`, `1.5s`, `2m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => return Err(format!("`{s}` needs a unit: ms, s or m")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 500ms, 10s)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s or m)")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `[within DUR]` at the end of a directive.
fn within(rest: &str) -> Result<Option<Duration>, String> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok(None);
    }
    match rest.strip_prefix("within") {
        Some(d) if d.starts_with(char::is_whitespace) => parse_duration(d).map(Some),
        _ => Err(format!(
            "unexpected `{rest}` (only `within DUR` may follow)"
        )),
    }
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn parse_directive(text: &str) -> Result<Item, String> {
    let (word, rest) = match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim()),
        None => (text, ""),
    };
    let only = |what: &str, used: usize, s: &str| -> Result<(), String> {
        let tail = s[used..].trim();
        if tail.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected `{tail}` after {what}"))
        }
    };
    match word {
        "expect" => {
            let item = match rest {
                "OK" => Expect::Kind(Kind::Ok),
                "ERROR" => Expect::Kind(Kind::Error),
                "-1" => Expect::Kind(Kind::MinusOne),
                "any" => Expect::Kind(Kind::Any),
                r if r.starts_with('"') => {
                    let (b, used) = quoted(r)?;
                    only("the text", used, r)?;
                    Expect::Contains(b)
                }
                r if r.starts_with('/') => {
                    let (re, used) = slashed(r)?;
                    only("the regex", used, r)?;
                    check_regex(&re)?;
                    Expect::Regex(re)
                }
                r if r.starts_with("exact") => {
                    let q = r["exact".len()..].trim_start();
                    let (b, used) = quoted(q)?;
                    only("the text", used, q)?;
                    Expect::Exact(b)
                }
                _ => {
                    return Err(format!(
                    "`expect {rest}`: use OK, ERROR, -1, any, \"text\", /regex/ or exact \"text\""
                ))
                }
            };
            Ok(Item::Expect(item))
        }
        "until" => {
            let (re, used) = slashed(rest)?;
            check_regex(&re)?;
            Ok(Item::Until {
                re,
                within: within(&rest[used..])?,
            })
        }
        "wait" => {
            let (exact, q) = match rest.strip_prefix("exact") {
                Some(q) if q.starts_with(char::is_whitespace) => (true, q.trim_start()),
                _ => (false, rest),
            };
            let (text, used) = quoted(q)?;
            Ok(Item::Wait {
                text,
                exact,
                within: within(&q[used..])?,
            })
        }
        "boot" => Ok(Item::Boot {
            within: within(rest)?,
        }),
        "capture" => {
            let (name, re_text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if !is_name(name) {
                return Err(format!("`capture {rest}`: expected `capture NAME /regex/`"));
            }
            let re_text = re_text.trim();
            let (re, used) = slashed(re_text)?;
            only("the regex", used, re_text)?;
            check_regex(&re)?;
            Ok(Item::Capture {
                name: name.to_string(),
                re,
            })
        }
        "set" => {
            let (name, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if !is_name(name) {
                return Err(format!("`set {rest}`: expected `set NAME value`"));
            }
            let value = value.trim();
            let value = if value.starts_with('"') {
                let (b, used) = quoted(value)?;
                only("the value", used, value)?;
                b
            } else {
                value.as_bytes().to_vec()
            };
            Ok(Item::Set {
                name: name.to_string(),
                value,
            })
        }
        "sleep" => Ok(Item::Sleep(parse_duration(rest)?)),
        "echo" => Ok(Item::Echo(rest.to_string())),
        "include" => {
            if rest.is_empty() {
                return Err("`include` needs a file".into());
            }
            Ok(Item::Include(rest.to_string()))
        }
        "send" => {
            let (b, used) = quoted(rest)?;
            only("the bytes", used, rest)?;
            Ok(Item::Send(b))
        }
        "fault" => parse_fault(rest).map(Item::Fault),
        other => Err(format!(
            "unknown directive `{other}` (expect, until, wait, boot, capture, set, sleep, echo, \
             include, send, fault)"
        )),
    }
}

/// Longest text a line may expand to (`set A ${A}${A}` doubles it each line: this stops it long
/// before memory runs out).
pub(crate) const MAX_EXPANSION: usize = 64 * 1024;

/// Replace every `${NAME}` using `lookup`; an undefined name is an error naming it, and so is an
/// expansion longer than [`MAX_EXPANSION`].
pub(crate) fn substitute(
    input: &[u8],
    lookup: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'$' && input.get(i + 1) == Some(&b'{') {
            let end = input[i + 2..]
                .iter()
                .position(|&c| c == b'}')
                .ok_or("`${` without a closing `}`")?;
            let name = String::from_utf8_lossy(&input[i + 2..i + 2 + end]).into_owned();
            if !is_name(&name) {
                return Err(format!("`${{{name}}}` is not a variable name"));
            }
            match lookup(&name) {
                Some(v) if out.len() + v.len() > MAX_EXPANSION => {
                    return Err(format!(
                        "the line expands to more than {} KiB at `${{{name}}}` ({} bytes so far, \
                         {} more from it)",
                        MAX_EXPANSION / 1024,
                        out.len(),
                        v.len()
                    ))
                }
                Some(v) => out.extend_from_slice(&v),
                None => {
                    return Err(format!(
                        "variable `{name}` is not defined (set it with `set`, --var {name}=… or \
                         the environment)"
                    ))
                }
            }
            i += 2 + end + 1;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Item {
        let lines = parse(&format!("I?\n{line}\n")).unwrap_or_else(|e| panic!("{line}: {e}"));
        lines.into_iter().nth(1).expect("a second line").item
    }

    fn err(text: &str) -> ParseError {
        parse(text).expect_err(text)
    }

    #[test]
    fn comments_and_blank_lines() {
        let lines = parse(
            "// header\n# also a comment\n\nPF=0,0\t//Certificate set 0\nI? # what\nF5=#\n  \n",
        )
        .unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].no, 4);
        assert_eq!(lines[0].text, "PF=0,0");
        assert_eq!(lines[1].text, "I?");
        assert_eq!(lines[2].text, "F5=#", "a # glued to an argument is data");
    }

    #[test]
    fn commands_by_first_character() {
        for c in ["I?", "?", "$$$", "---", "C0", "P6=1", "ZR"] {
            assert!(matches!(one(c), Item::Command(_)), "{c}");
        }
        assert!(err("%x\n").msg.contains("neither"));
        assert!(err("\"x\"\n").msg.contains("neither"));
    }

    #[test]
    fn payloads_from_files_and_strings() {
        let Item::Command(c) = one("S3=@data/hello.bin") else {
            panic!()
        };
        assert_eq!(c.head, "S3=");
        assert_eq!(c.payload, Some(Payload::File("data/hello.bin".into())));
        let Item::Command(c) = one("PG=0,0,@${CERTS}/ca.pem") else {
            panic!()
        };
        assert_eq!(c.head, "PG=0,0,");
        assert_eq!(c.payload, Some(Payload::File("${CERTS}/ca.pem".into())));
        let Item::Command(c) = one("S3 @x.bin") else {
            panic!()
        };
        assert_eq!(c.head, "S3=");
        let Item::Command(c) = one("PG=1,2 @k.pem") else {
            panic!()
        };
        assert_eq!(c.head, "PG=1,2,");
        let Item::Command(c) = one(r#"S3="GET / HTTP/1.1\r\nHost: x\r\n\r\n" // request"#) else {
            panic!()
        };
        assert_eq!(
            c.payload,
            Some(Payload::Bytes(
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()
            ))
        );
        // Not a payload command: `@` and quotes are plain text (an SSID may hold them).
        let Item::Command(c) = one(r#"C1=my "@home""#) else {
            panic!()
        };
        assert_eq!(c.head, r#"C1=my "@home""#);
        assert_eq!(c.payload, None);
    }

    #[test]
    fn c_escapes() {
        let (b, used) = quoted(r#""a\r\n\t\x00\xfF\\\"\0z" tail"#).unwrap();
        assert_eq!(b, b"a\r\n\t\x00\xff\\\"\0z");
        assert_eq!(used, 24);
        assert!(quoted(r#""\q""#).unwrap_err().contains("unknown escape"));
        assert!(quoted(r#""\x4""#).unwrap_err().contains("hex"));
        assert!(quoted(r#""open"#).unwrap_err().contains("closing"));
    }

    #[test]
    fn expectations() {
        assert_eq!(one("expect OK"), Item::Expect(Expect::Kind(Kind::Ok)));
        assert_eq!(one("expect ERROR"), Item::Expect(Expect::Kind(Kind::Error)));
        assert_eq!(one("expect -1"), Item::Expect(Expect::Kind(Kind::MinusOne)));
        assert_eq!(one("expect any"), Item::Expect(Expect::Kind(Kind::Any)));
        assert_eq!(
            one(r#"expect "a // b" // comment"#),
            Item::Expect(Expect::Contains(b"a // b".to_vec()))
        );
        assert_eq!(
            one(r"expect /^\d+ \/ x#y/ # comment"),
            Item::Expect(Expect::Regex(r"^\d+ / x#y".into()))
        );
        assert_eq!(
            one(r#"expect exact "0,0,0""#),
            Item::Expect(Expect::Exact(b"0,0,0".to_vec()))
        );
        assert!(err("I?\nexpect okay\n").msg.contains("use OK"));
        assert!(err("I?\nexpect /(/\n").msg.contains("bad regex"));
    }

    #[test]
    fn checks_must_follow_a_command() {
        let e = err("echo hi\nexpect OK\n");
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("must follow"), "{e}");
        assert!(parse("send \"x\"\nexpect ERROR\nexpect \"y\"\ncapture A /(y)/\n").is_ok());
    }

    #[test]
    fn other_directives() {
        assert_eq!(
            one("until /hello/ within 3s"),
            Item::Until {
                re: "hello".into(),
                within: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            one("until /x/"),
            Item::Until {
                re: "x".into(),
                within: None
            }
        );
        assert_eq!(
            parse("wait \"[TCP SVR] Accepted\" within 500ms\n").unwrap()[0].item,
            Item::Wait {
                text: b"[TCP SVR] Accepted".to_vec(),
                exact: false,
                within: Some(Duration::from_millis(500))
            }
        );
        assert_eq!(
            parse("wait exact \"[TCP SVR] Accepted ${IP}:80\"\n").unwrap()[0].item,
            Item::Wait {
                text: b"[TCP SVR] Accepted ${IP}:80".to_vec(),
                exact: true,
                within: None
            }
        );
        assert_eq!(
            parse("wait \"exact\"\n").unwrap()[0].item,
            Item::Wait {
                text: b"exact".to_vec(),
                exact: false,
                within: None
            },
            "a quoted \"exact\" is the text"
        );
        let boot = parse("ZR\nboot within 3s\nexpect exact \"banner\"\n").unwrap();
        assert_eq!(
            boot[1].item,
            Item::Boot {
                within: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            boot[2].item,
            Item::Expect(Expect::Exact(b"banner".to_vec()))
        );
        assert_eq!(
            parse("boot\n").unwrap()[0].item,
            Item::Boot { within: None }
        );
        assert!(err("boot soon\n").msg.contains("within"));
        assert!(err("sleep 1s\nexpect OK\n").msg.contains("`boot`"));
        assert_eq!(
            one("capture IP /,(\\d+\\.\\d+\\.\\d+\\.\\d+),/"),
            Item::Capture {
                name: "IP".into(),
                re: r",(\d+\.\d+\.\d+\.\d+),".into()
            }
        );
        assert_eq!(
            parse("set GREETING \"hi\\r\\n\"\nset X a b c # c\n").unwrap()[1].item,
            Item::Set {
                name: "X".into(),
                value: b"a b c".to_vec()
            }
        );
        assert_eq!(
            parse("sleep 1.5s\n").unwrap()[0].item,
            Item::Sleep(Duration::from_millis(1500))
        );
        assert_eq!(
            parse("echo hello there // c\n").unwrap()[0].item,
            Item::Echo("hello there".into())
        );
        assert_eq!(
            parse("include join.iwin\n").unwrap()[0].item,
            Item::Include("join.iwin".into())
        );
        assert_eq!(
            parse("send \"P6=1\\x00\"\n").unwrap()[0].item,
            Item::Send(b"P6=1\0".to_vec())
        );
        assert_eq!(
            parse("fault serial.split 1..7 gap=2ms // cut replies\n").unwrap()[0].item,
            Item::Fault(FaultOp::Add("serial.split 1..7 gap=2ms".into()))
        );
        assert_eq!(
            parse("fault net.refuse 127.0.0.1:${PORT}\n").unwrap()[0].item,
            Item::Fault(FaultOp::Add("net.refuse 127.0.0.1:${PORT}".into()))
        );
        assert_eq!(
            parse("fault net.bandwidth *:* 20kB/s\n").unwrap()[0].item,
            Item::Fault(FaultOp::Add("net.bandwidth *:* 20kB/s".into())),
            "a slash inside a word is not a regex"
        );
        assert_eq!(
            parse("fault clear\n").unwrap()[0].item,
            Item::Fault(FaultOp::Clear(None))
        );
        assert_eq!(
            parse("fault clear ${FAULT_ID}\n").unwrap()[0].item,
            Item::Fault(FaultOp::Clear(Some("${FAULT_ID}".into())))
        );
        assert_eq!(
            parse("fault list\n").unwrap()[0].item,
            Item::Fault(FaultOp::List)
        );
        assert_eq!(
            FaultOp::Add("x".into()).control_line("serial.stall 3s"),
            "fault add serial.stall 3s"
        );
        assert_eq!(
            FaultOp::Clear(Some("2".into())).control_line("2"),
            "fault clear 2"
        );
        assert!(err("fault\n").msg.contains("needs a rule"));
        assert!(err("fault clear all\n").msg.contains("number"));
        assert!(err("sleep 10\n").msg.contains("unit"));
        assert!(err("frobnicate\n").msg.contains("unknown directive"));
        assert!(err("wait \"x\" soon\n").msg.contains("within"));
    }

    #[test]
    fn substitution() {
        let look = |n: &str| match n {
            "A" => Some(b"1".to_vec()),
            "EMPTY" => Some(Vec::new()),
            _ => None,
        };
        assert_eq!(substitute(b"P4=${A}${EMPTY}x", &look).unwrap(), b"P4=1x");
        assert_eq!(substitute(b"$$$ and $x", &look).unwrap(), b"$$$ and $x");
        assert!(substitute(b"${NOPE}", &look).unwrap_err().contains("NOPE"));
        assert!(substitute(b"${A", &look).unwrap_err().contains("closing"));
        let big = |n: &str| (n == "B").then(|| vec![b'x'; MAX_EXPANSION / 2]);
        assert_eq!(substitute(b"${B}${B}", &big).unwrap().len(), MAX_EXPANSION);
        assert_eq!(
            substitute(b"${B}${B}x${B}", &big).unwrap_err(),
            "the line expands to more than 64 KiB at `${B}` (65537 bytes so far, 32768 more from it)"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
