//! Ratio benchmarks (`cargo bench`): every figure is measured against its floor in the same run,
//! alternating (A B A B…), and printed as one line,
//! `name: emulator X, floor Y, ratio Z (median of N)`, then all of them as a Markdown table.
//! A ratio, not a time, is the result: it holds on a slower or busier machine.
//!
//! The floors are programs in this binary (`floor.rs`, `tls.rs`): a bare pty responder that
//! answers with replies of the same length, a bare loopback TCP pump, a bare rustls client. Needs
//! no service: every server is on 127.0.0.1 and started here.
//!
//! `cargo bench -- NAME…` runs the figures whose names contain one of the words (`rtt`, `bulk`,
//! `tls`, `idle`, `pace`); `BENCH_ROUNDS=N` sets the rounds (default 15).

mod floor;
mod host;
mod tls;

use host::{Line, Proc};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// The bulk figures' chunk: the most one `S3` or `R0` moves.
const CHUNK: usize = 1460;

/// What a figure must reach.
#[derive(Clone, Copy)]
enum Goal {
    /// ratio ≤ x
    RatioAtMost(f64),
    /// ratio ≥ x
    RatioAtLeast(f64),
    /// |ratio − 1| ≤ x
    RatioWithin(f64),
    /// the emulator's value < x (in the figure's unit)
    Below(f64),
    /// the emulator's value is 0 (in the figure's unit, as printed)
    Zero,
    None,
}

struct Figure {
    name: String,
    unit: &'static str,
    emu: f64,
    floor: f64,
    n: usize,
    goal: Goal,
}

impl Figure {
    /// The ratio as printed (none when the floor is 0).
    fn ratio_text(&self) -> String {
        let r = self.ratio();
        if r.is_nan() {
            "-".into()
        } else {
            format!("{r:.2}")
        }
    }

    /// A figure from the samples of both sides: their medians.
    fn of(
        name: impl Into<String>,
        unit: &'static str,
        emu: &mut [f64],
        floor: &mut [f64],
        goal: Goal,
    ) -> Figure {
        Figure {
            name: name.into(),
            unit,
            emu: median(emu),
            floor: median(floor),
            n: emu.len(),
            goal,
        }
    }

    fn ratio(&self) -> f64 {
        if self.floor == 0.0 {
            f64::NAN
        } else {
            self.emu / self.floor
        }
    }

    fn value(&self, v: f64) -> String {
        let digits = if v.abs() >= 100.0 {
            0
        } else if v.abs() >= 10.0 {
            1
        } else {
            2
        };
        format!("{v:.digits$} {}", self.unit)
    }

    fn goal_text(&self) -> String {
        let r = self.ratio();
        let (what, met) = match self.goal {
            Goal::RatioAtMost(x) => (format!("ratio ≤ {x}"), r <= x),
            Goal::RatioAtLeast(x) => (format!("ratio ≥ {x}"), r >= x),
            Goal::RatioWithin(x) => (format!("within {:.0} %", x * 100.0), (r - 1.0).abs() <= x),
            Goal::Below(x) => (format!("< {x} {}", self.unit), self.emu < x),
            Goal::Zero => (
                format!("0 {}", self.unit),
                self.value(self.emu).starts_with("0.00"),
            ),
            Goal::None => return String::new(),
        };
        if met {
            return format!("{what}: met");
        }
        // A ratio that rounds to the bound still misses it: show by how much.
        let close = matches!(
            self.goal,
            Goal::RatioAtMost(x) | Goal::RatioAtLeast(x) if format!("{x:.2}") == self.ratio_text()
        );
        if close {
            format!("{what}: NOT met ({r:.3})")
        } else {
            format!("{what}: NOT met")
        }
    }

    fn print(&self) {
        let goal = self.goal_text();
        println!(
            "{}: emulator {}, floor {}, ratio {} (median of {}){}{}",
            self.name,
            self.value(self.emu),
            self.value(self.floor),
            self.ratio_text(),
            self.n,
            if goal.is_empty() { "" } else { "; goal " },
            goal
        );
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One warm-up of each, then `rounds` of A then B; every call returns its samples.
fn interleave<const K: usize>(
    rounds: usize,
    mut a: impl FnMut() -> [f64; K],
    mut b: impl FnMut() -> [f64; K],
) -> ([Vec<f64>; K], [Vec<f64>; K]) {
    a();
    b();
    let mut sa: [Vec<f64>; K] = std::array::from_fn(|_| Vec::new());
    let mut sb: [Vec<f64>; K] = std::array::from_fn(|_| Vec::new());
    for _ in 0..rounds {
        for (k, v) in a().into_iter().enumerate() {
            sa[k].push(v);
        }
        for (k, v) in b().into_iter().enumerate() {
            sb[k].push(v);
        }
    }
    (sa, sb)
}

fn join(l: &mut Line) {
    l.ok(b"C1=bench\r");
    l.ok(b"C2=benchpass\r");
    l.ok(b"C3=3\r");
    l.ok(b"C0\r");
}

/// `CS` round trip, and the CPU each side spends per command.
fn round_trip(rounds: usize) -> Vec<Figure> {
    const PER_ROUND: usize = 1000;
    let emu = Proc::emulator(&[], None, 1);
    let mut a = emu.line();
    a.reply_len(); // the boot banner
    let reply = a.cmd(b"CS\r");
    let fl = Proc::floor(&[("REPLY", floor::to_hex(&reply))], 1);
    let mut b = fl.line();
    assert_eq!(b.cmd(b"CS\r"), reply, "the floor answers the same bytes");
    let batch = |line: &mut Line, p: &Proc| {
        let cpu = p.cpu_ns();
        let t = Instant::now();
        for _ in 0..PER_ROUND {
            line.send(b"CS\r");
            line.reply_len();
        }
        let wall = t.elapsed().as_nanos() as f64 / PER_ROUND as f64;
        let cpu = (p.cpu_ns() - cpu) as f64 / PER_ROUND as f64;
        [wall / 1e3, cpu / 1e3]
    };
    let ([mut wa, mut ca], [mut wb, mut cb]) =
        interleave(rounds, || batch(&mut a, &emu), || batch(&mut b, &fl));
    vec![
        Figure::of(
            format!("CS round trip ({}-byte reply)", reply.len()),
            "µs",
            &mut wa,
            &mut wb,
            Goal::RatioAtMost(1.2),
        ),
        Figure::of(
            "CS CPU per command",
            "µs",
            &mut ca,
            &mut cb,
            Goal::RatioAtMost(1.5),
        ),
    ]
}

/// A loopback TCP server whose every connection is served by `f` on a thread of its own (the
/// threads end with the benchmark process).
fn server(f: fn(std::net::TcpStream)) -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || f(c));
        }
    });
    addr
}

/// Reads and discards until the peer closes.
fn sink(mut c: std::net::TcpStream) {
    let mut buf = vec![0u8; 1 << 16];
    while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
}

/// Writes letters (never `>`, so replies can be framed at the prompt) until the peer closes.
fn source(mut c: std::net::TcpStream) {
    let buf: Vec<u8> = (0..1 << 16).map(|k| b'a' + (k % 26) as u8).collect();
    while c.write_all(&buf).is_ok() {}
}

/// Bulk `S3` to a TCP sink and `R0` from a TCP source, 1460 bytes a command, in MB/s.
fn bulk(rounds: usize) -> Vec<Figure> {
    const BYTES: usize = 2_000_000;
    let (sink_addr, source_addr) = (server(sink), server(source));
    let emu = Proc::emulator(&[], None, 1);
    let mut a = emu.line();
    a.reply_len();
    join(&mut a);
    for (sock, port) in [(0, sink_addr.port()), (1, source_addr.port())] {
        a.ok(format!("P0={sock}\r").as_bytes());
        a.ok(b"P1=0\r");
        a.ok(b"P3=127.0.0.1\r");
        a.ok(format!("P4={port}\r").as_bytes());
        a.ok(b"P6=1\r");
    }
    let fl = Proc::floor(
        &[
            ("SINK", sink_addr.to_string()),
            ("SOURCE", source_addr.to_string()),
        ],
        1,
    );
    let mut b = fl.line();

    let mut s3 = format!("S3={CHUNK}\r").into_bytes();
    s3.extend((0..CHUNK).map(|k| b'a' + (k % 26) as u8));
    let want = format!("\r\n{CHUNK}\r\nOK\r\n> ");
    let send = |line: &mut Line| {
        let t = Instant::now();
        for _ in 0..BYTES / CHUNK {
            line.send(&s3);
            line.reply_len();
            assert_eq!(line.last(), want.as_bytes(), "S3 reply");
        }
        [(BYTES / CHUNK * CHUNK) as f64 / t.elapsed().as_secs_f64() / 1e6]
    };
    let recv = |line: &mut Line| {
        let t = Instant::now();
        let mut got = 0;
        while got < BYTES {
            line.send(b"R0\r");
            let n = line.reply_len();
            assert!(line.last().ends_with(b"\r\nOK\r\n> "), "R0 reply");
            got += n - b"\r\n\r\nOK\r\n> ".len();
        }
        [got as f64 / t.elapsed().as_secs_f64() / 1e6]
    };
    a.ok(b"P0=0\r");
    let ([mut sa], [mut sb]) = interleave(rounds, || send(&mut a), || send(&mut b));
    a.ok(b"P0=1\r");
    let ([mut ra], [mut rb]) = interleave(rounds, || recv(&mut a), || recv(&mut b));
    vec![
        Figure::of(
            format!("bulk S3 {CHUNK} B to a TCP sink"),
            "MB/s",
            &mut sa,
            &mut sb,
            Goal::RatioAtLeast(0.8),
        ),
        Figure::of(
            format!("bulk R0 {CHUNK} B from a TCP source"),
            "MB/s",
            &mut ra,
            &mut rb,
            Goal::RatioAtLeast(0.8),
        ),
    ]
}

/// `P6=1` on a TLS socket (handshake included) against the bare client's handshake, for `P9=0`
/// and `P9=1`.
fn tls_connect(rounds: usize) -> Vec<Figure> {
    const PER_ROUND: usize = 10;
    let pki = eswifi_test_support::pki::pki();
    let server = tls::Server::start(pki);
    let emu = Proc::emulator(&[], None, 1);
    let mut a = emu.line();
    a.reply_len();
    join(&mut a);
    a.ok(b"PF=0,0\r");
    let mut pg = format!("PG=0,0,{:04}\r", pki.ca.cert_pem.len()).into_bytes();
    pg.extend_from_slice(pki.ca.cert_pem.as_bytes());
    a.ok(&pg);
    for c in ["P0=2", "P1=3", "P3=127.0.0.1"] {
        a.ok(format!("{c}\r").as_bytes());
    }
    a.ok(format!("P4={}\r", server.addr.port()).as_bytes());
    let mut figures = Vec::new();
    // Connections made so far, emulator's and bare: each round waits for the server to have seen
    // its close, so no handshake queues behind the previous one.
    let made = std::cell::Cell::new(0);
    for verify in [false, true] {
        a.ok(format!("P9={}\r", u8::from(verify)).as_bytes());
        let cfg = tls::client_config(pki, verify);
        let emu_round = || {
            let mut total = Duration::ZERO;
            for _ in 0..PER_ROUND {
                let t = Instant::now();
                a.ok(b"P6=1\r");
                total += t.elapsed();
                a.ok(b"P6=0\r");
                made.set(made.get() + 1);
                server.wait_done(made.get());
            }
            [total.as_secs_f64() * 1e3 / PER_ROUND as f64]
        };
        let bare_round = || {
            let mut total = Duration::ZERO;
            for _ in 0..PER_ROUND {
                total += tls::bare_handshake(&cfg, server.addr);
                made.set(made.get() + 1);
                server.wait_done(made.get());
            }
            [total.as_secs_f64() * 1e3 / PER_ROUND as f64]
        };
        let ([mut ea], [mut eb]) = interleave(rounds, emu_round, bare_round);
        figures.push(Figure::of(
            format!("TLS connect P6=1, P9={}", u8::from(verify)),
            "ms",
            &mut ea,
            &mut eb,
            Goal::RatioAtMost(1.1),
        ));
    }
    figures
}

/// Resident memory and idle CPU of `n` modules, against the floor program holding `n` ptys.
fn idle(rounds: usize, n: usize) -> Vec<Figure> {
    const WINDOW: Duration = Duration::from_millis(500);
    let modules = n.to_string();
    let emu = Proc::emulator(&["--modules", &modules], None, n);
    let fl = Proc::floor(&[("PTYS", modules.clone())], n);
    // Start-up is over once every module's banner has been written.
    std::thread::sleep(Duration::from_millis(300));
    let window = |p: &Proc| {
        let c = p.cpu_ns();
        std::thread::sleep(WINDOW);
        [(p.cpu_ns() - c) as f64 / 1e3 / WINDOW.as_secs_f64()]
    };
    let rounds = rounds.min(5);
    let ([mut ca], [mut cb]) = interleave(rounds, || window(&emu), || window(&fl));
    let what = if n == 1 {
        "1 module".to_string()
    } else {
        format!("{n} modules")
    };
    vec![
        Figure {
            name: format!("RSS, {what}"),
            unit: "MiB",
            emu: emu.rss_kib() as f64 / 1024.0,
            floor: fl.rss_kib() as f64 / 1024.0,
            n: 1,
            goal: if n > 1 { Goal::Below(64.0) } else { Goal::None },
        },
        Figure::of(
            format!("idle CPU, {what}"),
            "µs/s",
            &mut ca,
            &mut cb,
            Goal::Zero,
        ),
    ]
}

/// `--pace` at 115200 baud: how long `I?` replies written back to back take to arrive, against
/// their wire time (10 bits a byte).
fn pace(rounds: usize) -> Vec<Figure> {
    const COMMANDS: usize = 80;
    let emu = Proc::emulator(&["--pace"], None, 1);
    let mut a = emu.line();
    a.reply_len();
    let burst = b"I?\r".repeat(COMMANDS);
    let mut run = || {
        let t = Instant::now();
        a.send(&burst);
        let (bytes, last) = a.read_prompts(COMMANDS);
        let wire = bytes as f64 * 10.0 / 115_200.0;
        [(last - t).as_secs_f64() * 1e3, wire * 1e3]
    };
    run();
    let mut took = Vec::new();
    let mut wire = Vec::new();
    for _ in 0..rounds.min(7) {
        let [t, w] = run();
        took.push(t);
        wire.push(w);
    }
    vec![Figure::of(
        format!("--pace 115200 baud, {COMMANDS} I? replies"),
        "ms",
        &mut took,
        &mut wire,
        Goal::RatioWithin(0.02),
    )]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    if std::env::var_os(floor::ENV).is_some() {
        floor::main();
    }
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| words.is_empty() || words.iter().any(|w| name.contains(w.as_str()));
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15)
        .max(1);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "eswifi-emu ratio benchmarks: {rounds} rounds, {cpus} CPUs, load average {} at start",
        loadavg()
    );
    let mut all = Vec::new();
    let mut run = |name: &str, f: &mut dyn FnMut() -> Vec<Figure>| {
        if want(name) {
            for fig in f() {
                fig.print();
                all.push(fig);
            }
        }
    };
    run("rtt", &mut || round_trip(rounds));
    run("bulk", &mut || bulk(rounds));
    run("tls", &mut || tls_connect(rounds));
    run("idle", &mut || {
        let mut v = idle(rounds, 1);
        v.extend(idle(rounds, 256));
        v
    });
    run("pace", &mut || pace(rounds));
    println!("load average {} at the end\n", loadavg());
    println!("| figure | emulator | floor | ratio | goal |");
    println!("|---|---|---|---|---|");
    for f in &all {
        println!(
            "| {} | {} | {} | {} | {} |",
            f.name,
            f.value(f.emu),
            f.value(f.floor),
            f.ratio_text(),
            f.goal_text()
        );
    }
}
