//! Fault injection (layer: middleware between the cores and the edges, as smoltcp's
//! `FaultInjector` wraps a device). The driver asks [`FaultSet`] what to do with the bytes of each
//! serial line ([`FaultSet::output`], [`FaultSet::input`], stalls, brown-outs), hands every network
//! operation and event through [`net::NetFaults`], and gives each core its Wi-Fi faults
//! ([`eswifi_core::module::WifiFaults`]). Randomness is seeded (`--seed`), per rule and module, so the same
//! seed and the same inputs give the same faults. No IO; time comes in as arguments.

pub(crate) mod net;
mod noise;
pub(crate) mod rule;

use eswifi_core::module::{FaultFired, WifiFaults};
use eswifi_core::rng::Rng;
pub(crate) use rule::{parse, Kind, Rule};
use rule::{Dir, When};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Rules active at once (a control-socket client cannot grow this without bound).
pub(crate) const MAX_RULES: usize = 64;

/// One active rule.
#[derive(Debug)]
struct Active {
    id: usize,
    rule: Rule,
    fired: u64,
    added: Instant,
    /// Command count of each module when the rule was added (for `module.reset after=N`).
    base_commands: HashMap<usize, u64>,
    /// One-shot rules are done once they fired (per module).
    done: Vec<usize>,
    rngs: HashMap<usize, Rng>,
    /// Where each module's input is, for `serial.noise` notes (what may be shown).
    input: HashMap<usize, noise::InStream>,
}

impl Active {
    fn applies(&self, module: usize) -> bool {
        self.rule.module.is_none_or(|m| m == module) && !self.done.contains(&module)
    }

    fn rng(&mut self, seed: u64, module: usize) -> &mut Rng {
        let id = self.id as u64;
        self.rngs
            .entry(module)
            .or_insert_with(|| Rng::derive(seed, id, module as u64))
    }
}

/// A fault that fired, for the log and the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fired {
    pub module: usize,
    pub text: String,
}

/// The active rules and what they did.
#[derive(Debug)]
pub(crate) struct FaultSet {
    seed: u64,
    next_id: usize,
    rules: Vec<Active>,
    fired: Vec<Fired>,
    /// Bumped whenever rules change (the driver then refreshes the cores' Wi-Fi faults).
    generation: u64,
    /// Commands a `serial.stall` holds: (rule id, module). Bounded: a stall fires once per rule
    /// and module.
    stalled: Vec<(usize, usize)>,
    /// Modules whose held command a `fault clear` released (the driver hands it on at once).
    released: Vec<usize>,
}

impl FaultSet {
    pub(crate) fn new(seed: u64) -> FaultSet {
        FaultSet {
            seed,
            next_id: 1,
            rules: Vec::new(),
            fired: Vec::new(),
            generation: 0,
            stalled: Vec::new(),
            released: Vec::new(),
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Add a rule; returns its id. `commands` are the modules' command counts now.
    pub(crate) fn add(
        &mut self,
        rule: Rule,
        now: Instant,
        commands: &[u64],
    ) -> Result<usize, String> {
        if self.rules.len() >= MAX_RULES {
            return Err(format!("{MAX_RULES} rules at most; clear some first"));
        }
        let id = self.next_id;
        self.next_id += 1;
        if id == 1 {
            let seed = self.seed;
            log::info!("fault seed {seed} (replay with --seed {seed})");
        }
        log::info!("fault #{id} added: {rule}");
        self.rules.push(Active {
            id,
            rule,
            fired: 0,
            added: now,
            base_commands: commands.iter().copied().enumerate().collect(),
            done: Vec::new(),
            rngs: HashMap::new(),
            input: HashMap::new(),
        });
        self.generation += 1;
        Ok(id)
    }

    /// Remove one rule, or all. False if there is no such rule. A command a cleared
    /// `serial.stall` still holds is released ([`FaultSet::take_released`]): clearing a fault
    /// ends what it does, as a reset does.
    pub(crate) fn clear(&mut self, id: Option<usize>) -> bool {
        let before = self.rules.len();
        let gone = |rule: usize| id.is_none_or(|id| id == rule);
        // Noise notes still waiting for the end of a line are told now, without values.
        for k in 0..self.rules.len() {
            if gone(self.rules[k].id) {
                self.abandon_input(k, None);
            }
        }
        self.rules.retain(|r| !gone(r.id));
        for &(_, module) in self.stalled.iter().filter(|(rule, _)| gone(*rule)) {
            if !self.released.contains(&module) {
                self.released.push(module);
            }
        }
        self.stalled.retain(|(rule, _)| !gone(*rule));
        self.generation += 1;
        id.is_none() || self.rules.len() < before
    }

    /// Modules whose stalled command a [`FaultSet::clear`] released since the last call: the
    /// driver hands it to the module now.
    pub(crate) fn take_released(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.released)
    }

    /// The stalled command of `module` was handed on (its time ran out, or the module reset).
    pub(crate) fn stall_over(&mut self, module: usize) {
        self.stalled.retain(|&(_, m)| m != module);
    }

    /// `module` was power-cycled (a reset, the control socket, a brown-out): its framer starts
    /// afresh, and so does what the noise notes follow; a command a stall held is gone.
    pub(crate) fn power_cycled(&mut self, module: usize) {
        for k in 0..self.rules.len() {
            self.abandon_input(k, Some(module));
        }
        self.stall_over(module);
    }

    /// The input rule `k` follows for `module` (all modules: None) ends unfinished.
    fn abandon_input(&mut self, k: usize, module: Option<usize>) {
        let input = &mut self.rules[k].input;
        let mut modules: Vec<usize> = input
            .keys()
            .copied()
            .filter(|m| module.is_none_or(|x| x == *m))
            .collect();
        modules.sort_unstable();
        let streams: Vec<_> = modules
            .into_iter()
            .filter_map(|m| input.remove(&m).map(|s| (m, s)))
            .collect();
        for (m, mut s) in streams {
            let mut notes = Vec::new();
            s.abandon(&mut notes);
            for n in notes {
                self.note(k, m, n);
            }
        }
    }

    /// One line per rule: `<id> <rule> fired=<n>`.
    pub(crate) fn list(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| format!("{} {} fired={}", r.id, r.rule, r.fired))
            .collect()
    }

    /// Some fault fired since the last [`FaultSet::take_fired`].
    pub(crate) fn has_fired(&self) -> bool {
        !self.fired.is_empty()
    }

    /// Faults that fired since the last call.
    pub(crate) fn take_fired(&mut self) -> Vec<Fired> {
        std::mem::take(&mut self.fired)
    }

    fn fire(&mut self, k: usize, module: usize, what: String) {
        self.rules[k].fired += 1;
        self.note(k, module, what);
    }

    /// Log and trace what rule `k` did (its firings counted apart).
    fn note(&mut self, k: usize, module: usize, what: String) {
        let r = &self.rules[k];
        let text = format!("fault #{} {}: {what}", r.id, kind_name(&r.rule.kind));
        log::info!("module {module}: {text}");
        self.fired.push(Fired { module, text });
    }

    /// The module's output, as the host will get it: fragments and when each may be written.
    /// Noise drops or corrupts bytes, latency delays the first fragment, split cuts the rest.
    pub(crate) fn output(
        &mut self,
        module: usize,
        mut bytes: Vec<u8>,
        now: Instant,
    ) -> Vec<(Instant, Vec<u8>)> {
        let seed = self.seed;
        self.noise(module, &mut bytes, Dir::Out);
        let mut at = now;
        let mut fragments: Option<(usize, usize, Duration, usize)> = None;
        for k in 0..self.rules.len() {
            if !self.rules[k].applies(module) {
                continue;
            }
            match self.rules[k].rule.kind.clone() {
                rule::Kind::SerialLatency(span) => {
                    let lo = span.min.as_micros() as u64;
                    let hi = span.max.as_micros() as u64;
                    let d = Duration::from_micros(self.rules[k].rng(seed, module).range(lo, hi));
                    at += d;
                    self.fire(k, module, format!("{} bytes delayed {d:?}", bytes.len()));
                }
                rule::Kind::SerialSplit { min, max, gap } => fragments = Some((min, max, gap, k)),
                _ => {}
            }
        }
        let Some((min, max, gap, k)) = fragments else {
            return vec![(at, bytes)];
        };
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        let mut sizes = Vec::new();
        while !rest.is_empty() {
            let n = (self.rules[k]
                .rng(seed, module)
                .range(min as u64, max as u64) as usize)
                .min(rest.len());
            out.push((at, rest[..n].to_vec()));
            sizes.push(n.to_string());
            rest = &rest[n..];
            at += gap;
        }
        self.fire(
            k,
            module,
            format!(
                "{} fragment{} ({} bytes) {gap:?} apart",
                sizes.len(),
                if sizes.len() == 1 { "" } else { "s" },
                sizes.join("+")
            ),
        );
        out
    }

    /// What the host sent, as the module will get it (noise).
    pub(crate) fn input(&mut self, module: usize, mut bytes: Vec<u8>) -> Vec<u8> {
        self.noise(module, &mut bytes, Dir::In);
        bytes
    }

    fn noise(&mut self, module: usize, bytes: &mut Vec<u8>, dir: Dir) {
        let seed = self.seed;
        for k in 0..self.rules.len() {
            if !self.rules[k].applies(module) {
                continue;
            }
            let rule::Kind::SerialNoise {
                drop,
                corrupt,
                dir: d,
            } = self.rules[k].rule.kind
            else {
                continue;
            };
            if d != Dir::Both && d != dir {
                continue;
            }
            let rng = self.rules[k].rng(seed, module);
            let mut kept = Vec::with_capacity(bytes.len());
            let mut hits: Vec<Option<noise::Hit>> = Vec::with_capacity(bytes.len());
            for &b in bytes.iter() {
                let hit = if rng.chance(drop) {
                    Some(noise::Hit::Dropped(b))
                } else if rng.chance(corrupt) {
                    // A flipped bit, as line noise does.
                    let c = b ^ (1 << rng.range(0, 7));
                    kept.push(c);
                    Some(noise::Hit::Corrupted(b, c))
                } else {
                    kept.push(b);
                    None
                };
                hits.push(hit);
            }
            let n = hits.iter().flatten().count();
            self.rules[k].fired += n as u64;
            // A note may show a byte only outside a secret (`noise` says which): per line or
            // payload on input, so the same seed gives the same notes however the bytes were
            // chunked by reads; per piece on output. The input is followed even where nothing
            // was hit, to know where the next hit falls.
            let mut notes = Vec::new();
            if dir == Dir::In {
                let stream = self.rules[k].input.entry(module).or_default();
                for (&b, hit) in bytes.iter().zip(hits) {
                    stream.byte(b, hit, &mut notes);
                }
            } else if n > 0 {
                let mut counted = noise::Counted::default();
                for (at, hit) in hits.into_iter().enumerate() {
                    if let Some(h) = hit {
                        counted.add(at, h);
                    }
                }
                notes.push(counted.note("out", "a piece of output", bytes.len()));
            }
            *bytes = kept;
            for note in notes {
                self.note(k, module, note);
            }
        }
    }

    /// No rule is active: every hook is the identity (the driver then skips them on its hot
    /// paths).
    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// A stall armed for the next command of `module` (one-shot): how long its input waits.
    pub(crate) fn stall(&mut self, module: usize) -> Option<Duration> {
        let k = self
            .rules
            .iter()
            .position(|r| r.applies(module) && matches!(r.rule.kind, rule::Kind::SerialStall(_)))?;
        let rule::Kind::SerialStall(d) = self.rules[k].rule.kind else {
            unreachable!("matched above")
        };
        self.rules[k].done.push(module);
        self.stalled.push((self.rules[k].id, module));
        self.fire(k, module, format!("next command held {d:?}"));
        Some(d)
    }

    /// Whether `module` browns out now (one-shot), given its command count.
    pub(crate) fn reset_due(&mut self, module: usize, commands: u64, now: Instant) -> bool {
        let due = self.rules.iter().position(|r| {
            r.applies(module)
                && match r.rule.kind {
                    // `after=18446744073709551615cmds` is never, not a wrap to now.
                    rule::Kind::ModuleReset(When::Commands(n)) => {
                        let base = r.base_commands.get(&module).copied().unwrap_or(0);
                        base.checked_add(n).is_some_and(|due| commands >= due)
                    }
                    rule::Kind::ModuleReset(When::After(d)) => now >= r.added + d,
                    _ => false,
                }
        });
        let Some(k) = due else {
            return false;
        };
        self.rules[k].done.push(module);
        self.fire(k, module, "brown-out: the module reboots".into());
        self.power_cycled(module);
        true
    }

    /// Whether `module` loses its Wi-Fi link now (one-shot).
    pub(crate) fn link_down_due(&mut self, module: usize, now: Instant) -> bool {
        let due = self.rules.iter().position(|r| {
            r.applies(module)
                && matches!(r.rule.kind, rule::Kind::WifiDown(after)
                    if now >= r.added + after.unwrap_or_default())
        });
        let Some(k) = due else {
            return false;
        };
        self.rules[k].done.push(module);
        self.fire(k, module, "the access point is gone: link down".into());
        true
    }

    /// When a time-based module fault of `module` is due next.
    pub(crate) fn next_deadline(&self, module: usize) -> Option<Instant> {
        self.rules
            .iter()
            .filter(|r| r.applies(module))
            .filter_map(|r| match r.rule.kind {
                rule::Kind::ModuleReset(When::After(d)) => Some(r.added + d),
                rule::Kind::WifiDown(after) => Some(r.added + after.unwrap_or_default()),
                _ => None,
            })
            .min()
    }

    /// The Wi-Fi faults `module`'s core applies (join failures, slow joins and scans, hidden APs).
    pub(crate) fn wifi(&self, module: usize) -> WifiFaults {
        let mut w = WifiFaults {
            seed: self.seed ^ (module as u64).wrapping_mul(0x2545_F491_4F6C_DD1D),
            ..WifiFaults::default()
        };
        for r in self.rules.iter().filter(|r| r.applies(module)) {
            match &r.rule.kind {
                rule::Kind::WifiJoinFail(p) => w.join_fail = w.join_fail.max(*p),
                rule::Kind::WifiSlow { join, scan } => {
                    w.join_delay = join.or(w.join_delay);
                    w.scan_delay = scan.or(w.scan_delay);
                }
                rule::Kind::WifiHide(ssid) => w.hidden.push(ssid.clone()),
                _ => {}
            }
        }
        w
    }

    /// Count a firing reported by a core (a join that failed by a fault).
    pub(crate) fn core_fired(&mut self, module: usize, what: &FaultFired) {
        let k = self.rules.iter().position(|r| {
            r.applies(module)
                && match what {
                    FaultFired::JoinFail { .. } => matches!(r.rule.kind, Kind::WifiJoinFail(_)),
                }
        });
        if let Some(k) = k {
            self.rules[k].fired += 1;
        }
    }

    /// The active rules, by index (for [`net::NetFaults`], which decides per connection).
    fn net_rules(&self) -> Vec<(usize, Rule)> {
        self.rules
            .iter()
            .enumerate()
            .map(|(k, r)| (k, r.rule.clone()))
            .collect()
    }
}

/// The rule's kind as written (`serial.latency`, …).
pub(crate) fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::SerialLatency(_) => "serial.latency",
        Kind::SerialSplit { .. } => "serial.split",
        Kind::SerialNoise { .. } => "serial.noise",
        Kind::SerialStall(_) => "serial.stall",
        Kind::ModuleReset(_) => "module.reset",
        Kind::WifiDown(_) => "wifi.down",
        Kind::WifiJoinFail(_) => "wifi.join-fail",
        Kind::WifiSlow { .. } => "wifi.slow",
        Kind::WifiHide(_) => "wifi.hide",
        Kind::NetRefuse(_) => "net.refuse",
        Kind::NetBlackhole(_) => "net.blackhole",
        Kind::NetReset { .. } => "net.reset",
        Kind::NetClose { .. } => "net.close",
        Kind::NetLatency { .. } => "net.latency",
        Kind::NetBandwidth { .. } => "net.bandwidth",
        Kind::DnsFail(_) => "dns.fail",
        Kind::DnsDelay { .. } => "dns.delay",
        Kind::TlsAlert { .. } => "tls.alert",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rules: &[&str]) -> (FaultSet, Instant) {
        let now = Instant::now();
        let mut s = FaultSet::new(42);
        for r in rules {
            s.add(parse(r).unwrap(), now, &[0, 0]).unwrap();
        }
        (s, now)
    }

    #[test]
    fn split_and_latency_are_deterministic_per_seed() {
        let (mut a, now) = set(&["serial.latency 20ms..80ms", "serial.split 1..7 gap=2ms"]);
        let (mut b, _) = set(&["serial.latency 20ms..80ms", "serial.split 1..7 gap=2ms"]);
        let bytes = b"\r\nOK\r\n> hello world".to_vec();
        let fa = a.output(0, bytes.clone(), now);
        let fb = b.output(0, bytes.clone(), now);
        assert_eq!(fa, fb, "same seed, same fragments");
        let joined: Vec<u8> = fa.iter().flat_map(|(_, f)| f.clone()).collect();
        assert_eq!(joined, bytes, "nothing lost");
        assert!(fa.iter().all(|(_, f)| (1..=7).contains(&f.len())));
        let first = fa[0].0 - now;
        assert!(first >= Duration::from_millis(20) && first <= Duration::from_millis(80));
        for w in fa.windows(2) {
            assert_eq!(w[1].0 - w[0].0, Duration::from_millis(2));
        }
        assert_eq!(a.take_fired().len(), 2);
        assert_eq!(a.list()[1], "2 serial.split 1..7 gap=2ms fired=1");
    }

    #[test]
    fn noise_drops_and_corrupts_at_its_rate_and_only_its_way() {
        let (mut s, _) = set(&["serial.noise drop=0.1 corrupt=0.1 dir=in"]);
        let input = vec![0x55u8; 10_000];
        let got = s.input(0, input.clone());
        let dropped = input.len() - got.len();
        let corrupted = got.iter().filter(|&&b| b != 0x55).count();
        assert!((700..1300).contains(&dropped), "{dropped}");
        assert!((600..1200).contains(&corrupted), "{corrupted}");
        let out = s.output(0, input.clone(), Instant::now());
        assert_eq!(out[0].1, input, "dir=in leaves output alone");
    }

    #[test]
    fn noise_is_the_same_however_the_bytes_were_chunked() {
        let input: Vec<u8> = b"I?\rP3=127.0.0.1\rS3=0004\rabcd\r"
            .iter()
            .copied()
            .cycle()
            .take(5000)
            .collect();
        let (mut whole, _) = set(&["serial.noise drop=0.01 corrupt=0.01 dir=both"]);
        let (mut chunked, _) = set(&["serial.noise drop=0.01 corrupt=0.01 dir=both"]);
        let a = whole.input(0, input.clone());
        let b: Vec<u8> = input
            .chunks(7)
            .flat_map(|c| chunked.input(0, c.to_vec()))
            .collect();
        assert_eq!(a, b);
        let notes = |s: &mut FaultSet| -> Vec<String> {
            s.take_fired().into_iter().map(|f| f.text).collect()
        };
        let (na, nb) = (notes(&mut whole), notes(&mut chunked));
        assert_eq!(na, nb);
        // These lines are public: one note per dropped byte, naming it.
        let dropped = na.iter().filter(|n| n.ends_with("dropped")).count();
        assert_eq!(dropped, input.len() - a.len(), "one note per dropped byte");
        assert!(na.iter().any(|n| n.contains("corrupted to")));
        assert!(
            na[0].starts_with("fault #1 serial.noise: in: byte '"),
            "{}",
            na[0]
        );
    }

    /// The issue's reproduction: every byte corrupted, a PEM key sent with `PG`, a passphrase
    /// with `C2` (and with a space for `=`), a PEM line after a refused header: no note shows a
    /// byte of them, and the counts add up.
    #[test]
    fn noise_notes_never_show_a_secret_byte() {
        let key = b"-----BEGIN PRIVATE KEY-----\r\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\r\n";
        let mut input = format!("PG=0,2,{:04}\r", key.len()).into_bytes();
        input.extend_from_slice(key);
        input.extend_from_slice(b"C2=Sup3rSecret\rC2 Sup3rSecret\rMIIEvQIBADANBgkq\rI?\r");
        let (mut s, _) = set(&["serial.noise corrupt=1.0 dir=in"]);
        for chunk in input.chunks(5) {
            s.input(0, chunk.to_vec());
        }
        let notes: Vec<String> = s.take_fired().into_iter().map(|f| f.text).collect();
        let all = notes.join("\n");
        for secret in ["Sup3r", "'S'", "'u'", "'M'", "MIIE", "BEGIN"] {
            assert!(!all.contains(secret), "{secret:?} in\n{all}");
        }
        assert!(all.contains("in a PG payload ("), "{all}");
        assert!(all.contains("in a line with C2's secret ("), "{all}");
        assert!(all.contains("in a line that is not a command ("), "{all}");
        // Only I? is public: its three bytes are named.
        assert_eq!(
            notes.iter().filter(|n| n.contains("in: byte '")).count(),
            3 + 12
        );
        assert_eq!(
            s.list()[0],
            format!("1 serial.noise corrupt=1.0 dir=in fired={}", input.len())
        );
    }

    #[test]
    fn output_noise_notes_give_positions_only() {
        let (mut s, now) = set(&["serial.noise corrupt=1.0 dir=out"]);
        let out = s.output(0, b"\r\nlab,secret99,3\r\nOK\r\n> ".to_vec(), now);
        assert_ne!(out[0].1, b"\r\nlab,secret99,3\r\nOK\r\n> ");
        let notes: Vec<String> = s.take_fired().into_iter().map(|f| f.text).collect();
        assert_eq!(
            notes,
            [
                "fault #1 serial.noise: out: 24 bytes corrupted in a piece of output (bytes 0, 1, \
              2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, … of 24); values not shown"
            ]
        );
    }

    #[test]
    fn a_line_cut_by_a_reset_or_a_clear_is_told_without_values() {
        let (mut s, now) = set(&["serial.noise drop=1.0 dir=in"]);
        s.input(0, b"MIIE".to_vec());
        assert!(!s.has_fired(), "a line's notes wait for its CR");
        s.power_cycled(0);
        let n: Vec<String> = s.take_fired().into_iter().map(|f| f.text).collect();
        assert_eq!(
            n,
            [
                "fault #1 serial.noise: in: 4 bytes dropped in an unfinished line (bytes 0, 1, 2, \
              3 of 4); values not shown"
            ]
        );
        s.input(1, b"C2=x".to_vec());
        assert!(s.clear(None));
        let n: Vec<String> = s.take_fired().into_iter().map(|f| f.text).collect();
        assert_eq!(n.len(), 1);
        assert!(
            n[0].contains("4 bytes dropped in an unfinished line"),
            "{n:?}"
        );
        let _ = now;
    }

    #[test]
    fn one_shots_fire_once_per_module() {
        let (mut s, now) = set(&[
            "serial.stall 3s",
            "module.reset after=2cmds",
            "wifi.down after=1s module=1",
        ]);
        assert_eq!(s.stall(0), Some(Duration::from_secs(3)));
        assert_eq!(s.stall(0), None);
        assert_eq!(s.stall(1), Some(Duration::from_secs(3)));
        assert!(!s.reset_due(0, 1, now));
        assert!(s.reset_due(0, 2, now));
        assert!(!s.reset_due(0, 3, now));
        assert!(
            !s.link_down_due(0, now + Duration::from_secs(5)),
            "module=1 only"
        );
        assert!(!s.link_down_due(1, now));
        assert_eq!(s.next_deadline(1), Some(now + Duration::from_secs(1)));
        assert!(s.link_down_due(1, now + Duration::from_secs(1)));
        assert!(s.clear(Some(1)));
        assert!(!s.clear(Some(99)));
        assert_eq!(s.list().len(), 2);
    }

    #[test]
    fn a_reset_countless_commands_away_never_wraps_to_now() {
        let (mut s, now) = set(&["module.reset after=18446744073709551615cmds"]);
        for n in [0, 1, 2, 1000, u64::MAX - 1] {
            assert!(!s.reset_due(0, n, now), "fired at {n}");
        }
        let mut s = FaultSet::new(1);
        s.add(
            parse("module.reset after=18446744073709551615cmds").unwrap(),
            now,
            &[7],
        )
        .unwrap();
        assert!(!s.reset_due(0, 8, now), "base + n wrapped");
        assert!(!s.reset_due(0, u64::MAX, now));
    }

    #[test]
    fn clearing_a_stall_releases_the_command_it_holds() {
        let (mut s, _) = set(&["serial.stall 30s module=0", "serial.stall 30s module=1"]);
        assert!(s.stall(0).is_some());
        assert!(s.stall(1).is_some());
        assert!(s.take_released().is_empty());
        assert!(s.clear(Some(2)));
        assert_eq!(s.take_released(), [1], "only the cleared rule's module");
        assert!(s.clear(None));
        assert_eq!(s.take_released(), [0]);
        // A stall whose time ran out holds nothing to release.
        let (mut s, _) = set(&["serial.stall 1ms"]);
        assert!(s.stall(0).is_some());
        s.stall_over(0);
        assert!(s.clear(None));
        assert!(s.take_released().is_empty());
    }

    #[test]
    fn a_join_failure_the_core_reports_counts_for_its_rule_only() {
        let (mut s, _) = set(&["wifi.slow join=1s", "wifi.join-fail p=1 module=1"]);
        let fired = FaultFired::JoinFail { ssid: "lab".into() };
        s.core_fired(0, &fired);
        assert!(
            s.list().iter().all(|l| l.ends_with("fired=0")),
            "module 0: no rule"
        );
        s.core_fired(1, &fired);
        assert_eq!(
            s.list(),
            [
                "1 wifi.slow join=1s fired=0",
                "2 wifi.join-fail p=1 module=1 fired=1"
            ]
        );
    }
}
