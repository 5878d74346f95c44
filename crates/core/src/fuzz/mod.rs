//! Fuzz targets (layer: test support; compiled for tests and with the `fuzzing` feature only).
//! Each target takes arbitrary bytes and panics when an invariant breaks, not only on a crash:
//!
//! - [`framer`]: frames do not depend on how the bytes were split into reads; lines hold no CR, LF
//!   or NUL and are at most [`MAX_LINE`] long; a payload is exactly as long as announced;
//! - [`parser`]: parsing is total and deterministic, a parsed line starts with its mnemonic, and
//!   no log or transcript text shows a passphrase;
//! - [`module`]: the whole core driven by host lines, network events and time ([`model`]): one
//!   reply per command ending in the prompt, no reply without a command, and the bytes `S3`
//!   reports as sent are the bytes sent;
//! - [`cert_item`]: the certificate store's item decoder takes back what the encoder wrote, and
//!   nothing torn or corrupted.
//!
//! `fuzz/` runs them under libFuzzer (`cargo fuzz run <target>`); `tests` below runs a CI-sized
//! number of cases of each on stable, seeded with real driver traffic ([`seeds`]).

pub(crate) mod model;

use crate::item::{decode_item, encode_item};
use crate::iwin::command::{self, Mnemonic};
use crate::iwin::framer::{Frame, Framer, MAX_LINE};
use model::{Action, Cmd, NetAction};

/// Reads a fuzz input front to back; the end of the input ends the decoding.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// The length of an `S3=<n>` header line, as the module would announce the payload.
fn s3_len(line: &[u8]) -> Option<usize> {
    match command::parse(line) {
        Ok(command::Command::Socket(command::SocketCmd::Send(n))) => Some(n),
        _ => None,
    }
}

/// Frame `input` fed in chunks of the given sizes (cycled), announcing a payload after every
/// `S3` header as the module does.
fn frames(input: &[u8], drop_after_payload: bool, sizes: &[usize]) -> Vec<Frame> {
    let mut f = Framer::new(drop_after_payload);
    let mut out = Vec::new();
    let mut rest = input;
    let mut k = 0;
    while !rest.is_empty() {
        let n = sizes[k % sizes.len()].clamp(1, rest.len());
        k += 1;
        f.push(&rest[..n]);
        rest = &rest[n..];
        while let Some(frame) = f.next_frame() {
            match &frame {
                Frame::Line(l) => {
                    assert!(l.len() <= MAX_LINE, "a line of {} bytes", l.len());
                    assert!(
                        !l.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
                        "CR, LF or NUL in a line: {}",
                        l.escape_ascii()
                    );
                    if let Some(n) = s3_len(l) {
                        f.expect_payload(n);
                    }
                }
                Frame::Overlong(l) => assert_eq!(l.len(), MAX_LINE + 1, "an overlong line"),
                Frame::Payload(_) => {}
            }
            out.push(frame);
        }
    }
    out
}

/// The framer: the first byte picks the stray-byte quirk and how the rest is cut into reads.
pub fn framer(data: &[u8]) {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let drop = flags & 1 == 1;
    let whole = frames(input, drop, &[usize::MAX]);
    let sizes: Vec<usize> = [flags >> 1, flags >> 3, 1, flags >> 5]
        .iter()
        .map(|&b| b as usize + 1)
        .collect();
    let cut = frames(input, drop, &sizes);
    assert_eq!(whole, cut, "frames depend on where the reads fell");
    let mut announced = None;
    for f in &whole {
        match f {
            Frame::Line(l) => announced = s3_len(l),
            Frame::Payload(p) => {
                assert_eq!(Some(p.len()), announced, "a payload of another length");
                announced = None;
            }
            Frame::Overlong(_) => announced = None,
        }
    }
}

/// The command parser, on one line.
pub fn parser(line: &[u8]) {
    let parsed = command::parse(line);
    assert_eq!(parsed, command::parse(line), "parsing is deterministic");
    if parsed.is_ok() && !line.is_empty() {
        let (m, _) = command::split(line).expect("a parsed line names a command");
        assert!(line.starts_with(m.text().as_bytes()));
        assert_eq!(Mnemonic::from_bytes(m.text().as_bytes()), Some(m));
    }
    // The passphrase never reaches a log or a transcript.
    for prefix in [&b"C2="[..], b"A2="] {
        if let Some(secret) = line.strip_prefix(prefix) {
            let shown = format!(
                "{}=<{} bytes hidden>",
                std::str::from_utf8(&prefix[..2]).unwrap_or_default(),
                secret.len()
            );
            assert_eq!(command::log_text(line), shown);
            assert_eq!(command::trace_text(line), shown);
        }
    }
    // A line that is not a command: its length, after at most its first two bytes (a mistyped
    // `cs`), and only its length when it might be a secret (key material, `C2 secret` or
    // `c2=secret` mistyped).
    if command::secrecy(line) == command::Secrecy::NotACommand {
        let n = line.len();
        let hidden = format!("<unrecognised line of {n} bytes>");
        let secret_like = line.contains(&b'=')
            || (n >= 2 && matches!(&line[..2].to_ascii_uppercase()[..], b"C2" | b"A2"))
            || (n > 2
                && line
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/'));
        let want = match n {
            _ if secret_like => hidden,
            0..=2 => line.escape_ascii().to_string(),
            _ => format!("{}… {hidden}", line[..2].escape_ascii()),
        };
        assert_eq!(command::log_text(line), want);
        assert!(command::trace_text(line).starts_with(&format!("<{n} bytes hidden: ")));
    }
}

/// The whole module: actions decoded from bytes (host command lines from a table or as they
/// come, network events, time), checked by [`model::run`].
pub fn module(data: &[u8]) {
    model::run(&actions(data));
}

/// The actions a `module` input stands for.
fn actions(data: &[u8]) -> Vec<Action> {
    let mut b = Bytes(data);
    let mut actions = Vec::new();
    while actions.len() < 200 {
        let Some(tag) = b.byte() else { break };
        let p = b.byte().unwrap_or(0);
        let q = b.byte().unwrap_or(0);
        let cuts = if q < 128 {
            Vec::new()
        } else {
            vec![(q as u16 - 128) * 8]
        };
        let a = match tag % 16 {
            0..=3 => Action::Host(table_cmd(p, q), cuts),
            4..=8 => {
                let line = b.take(p as usize % 80).to_vec();
                Action::Host(Cmd::line(&line, q), cuts)
            }
            9..=14 => Action::Net(match p % 9 {
                0 => NetAction::ConnectOk(q),
                1 => NetAction::ConnectFail(q),
                2 => NetAction::Data(q, p / 9 + 1),
                3 => NetAction::PeerClose(q),
                4 | 5 => NetAction::Ack(q),
                6 => NetAction::Accept(q),
                7 => NetAction::Answer(q, p & 0x80 != 0),
                _ => NetAction::FinishDrain(q),
            }),
            _ => Action::Advance([1, 150, 1000, 31_000][p as usize % 4]),
        };
        actions.push(a);
    }
    actions
}

/// The structured commands of the property test.
fn table_cmd(p: u8, q: u8) -> Cmd {
    match p % 20 {
        0 => Cmd::Select(q % 4),
        1 => Cmd::Protocol(q % 2),
        2 => Cmd::Remote([7000, 7001, 9][q as usize % 3]),
        3 => Cmd::Start,
        4 => Cmd::Stop,
        5 => Cmd::ReadWait([0, 1, 300, 30_000][q as usize % 4]),
        6 => Cmd::Read,
        7 => Cmd::SendWait([0, 1, 200][q as usize % 3]),
        8 => Cmd::Send(q as usize * 5 + 1, p),
        9 => Cmd::Send(q as usize % 40 + 1, p),
        10 => Cmd::Burst(q % 60 + 1),
        11 => Cmd::Server([0, 1, 10, 11][q as usize % 4]),
        12 => Cmd::Loop(q % 4),
        13 => Cmd::Info,
        14 => Cmd::Status,
        15 => Cmd::Lookup,
        16 => Cmd::Ping,
        17 => Cmd::Message,
        18 => Cmd::Empty,
        _ => Cmd::Junk(q % 59 + 1),
    }
}

/// The certificate store's item format.
pub fn cert_item(data: &[u8]) {
    if let Ok(v) = decode_item(data) {
        assert!(data.ends_with(&v), "the decoded bytes are the file's tail");
        assert_eq!(decode_item(&encode_item(&v)).as_deref(), Ok(&v[..]));
    }
    // Anything written reads back; a torn or corrupted copy never does.
    let enc = encode_item(data);
    assert_eq!(decode_item(&enc).as_deref(), Ok(data));
    let h = data
        .iter()
        .fold(7usize, |h, &b| h.wrapping_mul(31) ^ b as usize);
    assert!(decode_item(&enc[..h % enc.len()]).is_err(), "a torn item");
    let mut bad = enc.clone();
    let at = h / 7 % bad.len();
    bad[at] ^= (h as u8) | 1;
    assert!(decode_item(&bad).is_err(), "a corrupted byte at {at}");
}

/// A `module` input that sends these command lines, one action each.
#[cfg(test)]
fn lines_input(lines: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for l in lines {
        v.extend_from_slice(&[4, l.len() as u8, 0]);
        v.extend_from_slice(l);
    }
    v
}

/// Seed inputs for each target, from real driver traffic (`shared/spec` §6: ST's `es_wifi.c` and
/// Zephyr's `eswifi`): (target, name, bytes). `fuzz/corpus/` holds these as files.
#[cfg(test)]
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let st_init: &[&[u8]] = &[
        b"I?",
        b"C1=lab",
        b"C2=secret123",
        b"C3=3",
        b"C0",
        b"CS",
        b"C?",
    ];
    let st_client: &[&[u8]] = &[
        b"P0=0",
        b"P1=0",
        b"P2=0",
        b"P4=7000",
        b"P3=127.0.0.1",
        b"P9=0",
        b"PB=0",
        b"P6=1",
        b"S2=100",
    ];
    let st_recv: &[&[u8]] = &[b"P0=0", b"R1=1200", b"R2=100", b"R0", b"P0=0", b"P6=0"];
    let st_server: &[&[u8]] = &[
        b"P0=1",
        b"PK=1,3000",
        b"P1=0",
        b"P8=6",
        b"P2=8080",
        b"P5=11",
        b"MR",
        b"P?",
        b"P5=10",
        b"P5=0",
    ];
    let st_ap: &[&[u8]] = &[
        b"AS=0,esw",
        b"A1=3",
        b"A2=password1",
        b"AC=6",
        b"AT=4",
        b"A0",
        b"AD",
    ];
    let zephyr: &[&[u8]] = &[
        b"Z5",
        b"C4=1",
        b"PR=0",
        b"C1=lab",
        b"C2=secret123",
        b"C3=4",
        b"C0",
        b"CS",
        b"CR",
        b"F0",
        b"P0=0",
        b"P1=0",
        b"P6=0",
        b"P3=127.0.0.1",
        b"P4=7000",
        b"P6=1",
    ];
    let zephyr_rest: &[&[u8]] = &[
        b"P0=0",
        b"R1=1460",
        b"R2=30",
        b"R0",
        b"D0=peer.test",
        b"P0=0",
        b"P6=0",
        b"CD",
    ];
    let mut out = Vec::new();
    let mut module_seed = |name: &str, parts: Vec<Vec<u8>>| {
        out.push(("module", name.to_string(), parts.concat()));
    };
    // A connect answered, two sends and their acknowledgements, data to read.
    let net = vec![9, 0, 0, 9, 4, 0, 9, 4, 0, 9, 2 + 9 * 20, 0];
    let send = |len: u8| vec![0, 9, len];
    module_seed("st-init", vec![lines_input(st_init)]);
    module_seed(
        "st-client",
        vec![
            lines_input(st_init),
            lines_input(st_client),
            net.clone(),
            send(20),
            send(5),
            net.clone(),
            lines_input(st_recv),
        ],
    );
    module_seed(
        "st-server",
        vec![lines_input(st_init), lines_input(st_server)],
    );
    module_seed("st-ap", vec![lines_input(st_ap)]);
    module_seed(
        "zephyr",
        vec![
            lines_input(zephyr),
            net,
            send(30),
            vec![15, 1, 0],
            lines_input(zephyr_rest),
        ],
    );
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push((target, name.to_string(), bytes));
    };
    for (k, l) in st_init
        .iter()
        .chain(st_client)
        .chain(zephyr)
        .chain(zephyr_rest)
        .enumerate()
    {
        add("parser", &format!("line-{k}"), l.to_vec());
    }
    add("parser", "pg-header", b"PG=0,0,1184".to_vec());
    let stream: Vec<u8> = [
        &b"I?\r\nC1=lab\r\nS3=0005\rhello"[..],
        b"x",
        b"P6=0\r",
        &[b'A'; 300],
        b"\rCS\r",
    ]
    .concat();
    add(
        "framer",
        "st-zephyr-mix",
        [&[0b1010_0110][..], &stream].concat(),
    );
    add(
        "framer",
        "zephyr-stray",
        [&[0b0101_0011][..], &stream].concat(),
    );
    add(
        "cert_item",
        "item",
        encode_item(b"-----BEGIN CERTIFICATE-----\nMIIB\n"),
    );
    add("cert_item", "empty", encode_item(b""));
    out
}

#[cfg(test)]
mod tests {
    //! The CI-sized run: every seed, then a fixed number of pseudo-random inputs per target (the
    //! same ones every run: a fixed proptest seed), mutated from the seeds and fresh.

    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    fn seeds_of(target: &str) -> Vec<Vec<u8>> {
        seeds()
            .into_iter()
            .filter(|(t, _, _)| *t == target)
            .map(|(_, _, b)| b)
            .collect()
    }

    /// Every seed as it is, then `cases` inputs: a seed with bytes overwritten and appended, or
    /// fresh bytes.
    fn run(target: &str, cases: u32, max_len: usize, f: fn(&[u8])) {
        let seeds = seeds_of(target);
        for s in &seeds {
            f(s);
        }
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            },
            TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
        );
        let n = seeds.len().max(1);
        let input = (
            0..n,
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..16),
            proptest::collection::vec(any::<u8>(), 0..max_len),
            any::<bool>(),
        );
        runner
            .run(&input, |(k, edits, fresh, mutate)| {
                let data = match seeds.get(k) {
                    Some(s) if mutate => {
                        let mut s = s.clone();
                        for (at, b) in edits {
                            if !s.is_empty() {
                                let i = at % s.len();
                                s[i] = b;
                            }
                        }
                        s.extend_from_slice(&fresh[..fresh.len().min(64)]);
                        s
                    }
                    _ => fresh,
                };
                f(&data);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{target}: {e}"));
    }

    #[test]
    fn framer_cases() {
        run("framer", 5000, 600, framer);
    }

    #[test]
    fn parser_cases() {
        run("parser", 20_000, 80, parser);
    }

    #[test]
    fn module_cases() {
        run("module", 2000, 400, module);
    }

    #[test]
    fn cert_item_cases() {
        run("cert_item", 3000, 300, cert_item);
    }

    /// The driver seeds get where they should: replies to every line, bytes out on a connection.
    #[test]
    fn driver_seeds_reach_the_network() {
        for (target, name, bytes) in seeds() {
            if target != "module" {
                continue;
            }
            let out = model::run(&actions(&bytes));
            assert!(out.replies >= 7, "{name}: {out:?}");
            if name == "st-client" || name == "zephyr" {
                assert!(out.sent > 0, "{name} sent nothing: {out:?}");
            }
        }
    }

    /// Inputs a long run once failed on (`fuzz/regressions/<target>/`), kept so they stay fixed.
    /// The folder must be there and hold some (a target without a folder has none yet).
    #[test]
    fn regressions() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
        assert!(root.is_dir(), "{} is missing", root.display());
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 4] = [
            ("framer", framer),
            ("parser", parser),
            ("module", module),
            ("cert_item", cert_item),
        ];
        let mut replayed = 0;
        for (target, f) in targets {
            let dir = root.join(target);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", dir.display()),
            };
            for e in entries {
                let path = e.expect("a regression entry").path();
                f(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
                replayed += 1;
            }
        }
        assert!(replayed > 0, "no regression input under {}", root.display());
    }

    /// Writes the seeds to `fuzz/corpus/<target>/` (`cargo test -- --ignored write_seed_corpus`).
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        for (target, name, bytes) in seeds() {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).expect("corpus dir");
            std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed");
        }
    }
}
