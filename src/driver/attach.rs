//! Who is on the line (layer: edge, pure): one state per line, changed only in [`Host::on`], from
//! what the host did (opened, left, ended its input, flushed its input, spoke, time passed, the
//! module went idle). It decides where the module's output goes, whether the line is read, and
//! what the line must do (drop stale output, power-cycle, send the boot prompt, close).
//!
//! The rules, per [`Attach`] mode (README, "What a host finds on the line"):
//! - every mode: a host that leaves loses what it did not read; output made while no host is
//!   attached goes nowhere; a host that left with a command in flight does not hand its reply to
//!   the next host: the module finishes it first (bounded by the command's own timeout), and the
//!   next host is served after that; a host that ends its input gets the replies to every command
//!   it sent, then the line closes.
//! - `keep`: the first host gets what was printed at power-up; later ones a quiet line.
//! - `reset`: an open holds the module in reset for `boot_ms` (input lost, nothing sent), then one
//!   banner.
//! - `prompt`: an open resets the module silently; its banner goes out once the host has been
//!   quiet for `quiet_ms`, and again (after `quiet_ms`) each time a pty host flushes its input
//!   before its first byte; a host that speaks first gets no banner.

use eswifi_core::config::Attach;
use std::time::{Duration, Instant};

/// Most boot-output bytes kept for a `prompt` host (the banner is ~130).
pub(super) const MAX_BOOT: usize = 4096;

/// The state of a line's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Host {
    /// No host yet since start-up (`keep`): output waits for the first.
    First,
    /// A host is served.
    Attached,
    /// The host ended its input (EOF): its commands finish and their replies go out; then the
    /// line closes.
    Ending,
    /// The host left with work in flight: the module finishes it, its output dropped; `waiting`:
    /// a new host has opened meanwhile and is served after that.
    Leaving { waiting: bool },
    /// No host: output goes nowhere.
    Absent,
    /// `reset`: the module is held in reset until then.
    InReset { until: Instant },
    /// `prompt`: silent until `at`; the module's boot output is kept in `boot`.
    Quiet { at: Instant, boot: Vec<u8> },
    /// `prompt`: the boot output went out; the host has not spoken yet.
    Prompted { boot: Vec<u8> },
}

/// What the host did, or what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// A host attached (the first opener of a pty, an accepted or made connection).
    Opened,
    /// The host is gone (the last opener closed the pty, the connection failed).
    Closed,
    /// The host sent its last byte (stdin or a half-closed connection).
    Ended,
    /// A pty host threw its input away (tcflush, a TCSAFLUSH reconfiguration).
    Flushed,
    /// The host sent bytes (given before they reach the module).
    Spoke,
    /// The module has nothing in flight and every byte for the host has left.
    Idle,
    /// Time passed.
    Tick,
}

/// Where the module's serial output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sink {
    Line,
    /// Kept for the `prompt` host.
    Boot,
    Nowhere,
}

/// What the line must do after a change, in this order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Effects {
    /// Drop output queued for the line and left unread in it (a stale banner, a departed host's).
    pub drop_queued: bool,
    /// Drop output the module made but the line has not taken.
    pub drop_pending: bool,
    /// Power-cycle the module.
    pub power_cycle: bool,
    /// Write these bytes (the boot output, for a `prompt` host).
    pub send: Option<Vec<u8>>,
    /// Close the host's line (its input ended and it has every reply).
    pub close: bool,
}

impl Host {
    /// The state a line starts in (`tty`: a wire with the host always there).
    pub(super) fn start(mode: Attach, always_attached: bool) -> Host {
        match (always_attached, mode) {
            (true, _) => Host::Attached,
            (false, Attach::Keep) => Host::First,
            (false, _) => Host::Absent,
        }
    }

    /// Where output goes now.
    pub(super) fn sink(&self) -> Sink {
        match self {
            Host::First | Host::Attached | Host::Ending | Host::Prompted { .. } => Sink::Line,
            Host::Quiet { .. } => Sink::Boot,
            Host::Leaving { .. } | Host::Absent | Host::InReset { .. } => Sink::Nowhere,
        }
    }

    /// Whether the line is read (a new host's bytes wait while a departed one's work finishes;
    /// nothing comes after the end of input).
    pub(super) fn reads(&self) -> bool {
        !matches!(self, Host::Ending | Host::Leaving { waiting: true })
    }

    /// Whether what is read is thrown away (a module in reset hears nothing).
    pub(super) fn deaf(&self) -> bool {
        matches!(self, Host::InReset { .. })
    }

    /// Whether the state waits for the module to go idle.
    pub(super) fn waits_idle(&self) -> bool {
        matches!(self, Host::Ending | Host::Leaving { .. })
    }

    /// Whether a host is there to write to.
    pub(super) fn present(&self) -> bool {
        !matches!(self, Host::Absent | Host::Leaving { waiting: false })
    }

    /// When [`Event::Tick`] has something to do.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Host::InReset { until } => Some(*until),
            Host::Quiet { at, .. } => Some(*at),
            _ => None,
        }
    }

    /// Keep boot output for a `prompt` host (bounded).
    pub(super) fn keep_boot(&mut self, bytes: &[u8]) {
        if let Host::Quiet { boot, .. } = self {
            let room = MAX_BOOT.saturating_sub(boot.len());
            boot.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// Apply `ev` at `now`; `busy`: the module has work in flight for the host.
    pub(super) fn on(
        &mut self,
        ev: Event,
        mode: Attach,
        times: Times,
        busy: bool,
        now: Instant,
    ) -> Effects {
        let mut fx = Effects::default();
        let first = matches!(self, Host::First);
        let next = match (std::mem::replace(self, Host::Absent), ev) {
            (Host::Leaving { .. }, Event::Opened) => Host::Leaving { waiting: true },
            (Host::Leaving { waiting: true }, Event::Closed) => Host::Leaving { waiting: false },
            (Host::Leaving { waiting: true }, Event::Idle) => {
                return self.arrive(mode, times, false, now)
            }
            (Host::Leaving { waiting: false }, Event::Idle) => Host::Absent,
            (s @ Host::Leaving { .. }, _) => s,
            (_, Event::Opened) => return self.arrive(mode, times, first, now),
            (Host::Absent, Event::Closed) => Host::Absent,
            (_, Event::Closed) => {
                fx.drop_queued = true;
                if busy {
                    Host::Leaving { waiting: false }
                } else {
                    Host::Absent
                }
            }
            (Host::Ending, Event::Idle) => {
                fx.close = true;
                Host::Absent
            }
            (s @ (Host::Absent | Host::Ending), _) => s,
            (_, Event::Ended) => Host::Ending,
            (Host::Quiet { boot, .. } | Host::Prompted { boot }, Event::Flushed) => Host::Quiet {
                at: now + times.quiet,
                boot,
            },
            (Host::Quiet { .. }, Event::Spoke) => {
                // It did not wait for the boot output: none is coming.
                fx.drop_pending = true;
                Host::Attached
            }
            (Host::Prompted { .. }, Event::Spoke) => Host::Attached,
            (Host::InReset { until }, Event::Tick) if now >= until => {
                fx.drop_pending = true;
                fx.power_cycle = true;
                Host::Attached
            }
            (Host::Quiet { at, boot }, Event::Tick) if now >= at => {
                fx.send = Some(boot.clone());
                Host::Prompted { boot }
            }
            (s, _) => s,
        };
        *self = next;
        fx
    }

    /// A host attaches: what it finds depends on the mode.
    fn arrive(&mut self, mode: Attach, times: Times, first: bool, now: Instant) -> Effects {
        let mut fx = Effects::default();
        *self = match mode {
            Attach::Keep => {
                // The first host gets the power-up output; later ones a quiet line.
                fx.drop_queued = !first;
                Host::Attached
            }
            Attach::Reset => {
                fx.drop_queued = true;
                Host::InReset {
                    until: now + times.boot,
                }
            }
            Attach::Prompt => {
                fx.drop_queued = true;
                fx.drop_pending = true;
                fx.power_cycle = true;
                Host::Quiet {
                    at: now + times.quiet,
                    boot: Vec::new(),
                }
            }
        };
        fx
    }
}

/// The times of the attach modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Times {
    /// `reset`: how long the module is held in reset.
    pub boot: Duration,
    /// `prompt`: how long the host must be quiet.
    pub quiet: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Times = Times {
        boot: Duration::from_millis(100),
        quiet: Duration::from_millis(1000),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn keep_gives_the_first_host_the_power_up_output_and_later_ones_a_quiet_line() {
        let t0 = Instant::now();
        let mut h = Host::start(Attach::Keep, false);
        assert_eq!(
            h.sink(),
            Sink::Line,
            "power-up output waits for the first host"
        );
        let fx = h.on(Event::Opened, Attach::Keep, T, false, t0);
        assert_eq!((h.clone(), fx.drop_queued), (Host::Attached, false));
        let fx = h.on(Event::Closed, Attach::Keep, T, false, t0);
        assert_eq!((h.clone(), fx.drop_queued), (Host::Absent, true));
        assert_eq!(h.sink(), Sink::Nowhere);
        let fx = h.on(Event::Opened, Attach::Keep, T, false, t0);
        assert_eq!((h, fx.drop_queued), (Host::Attached, true));
    }

    #[test]
    fn a_host_that_leaves_with_work_in_flight_hands_nothing_to_the_next() {
        let t0 = Instant::now();
        let mut h = Host::Attached;
        h.on(Event::Closed, Attach::Keep, T, true, t0);
        assert_eq!(h, Host::Leaving { waiting: false });
        assert!(h.reads(), "the departed host's last bytes still run");
        h.on(Event::Opened, Attach::Keep, T, true, t0);
        assert_eq!(h, Host::Leaving { waiting: true });
        assert!(!h.reads(), "the new host's bytes wait");
        assert_eq!(h.sink(), Sink::Nowhere);
        h.on(Event::Idle, Attach::Keep, T, false, t0);
        assert_eq!(h, Host::Attached);
    }

    #[test]
    fn end_of_input_finishes_then_closes() {
        let t0 = Instant::now();
        let mut h = Host::Attached;
        h.on(Event::Ended, Attach::Keep, T, true, t0);
        assert_eq!(
            (h.clone(), h.sink(), h.reads()),
            (Host::Ending, Sink::Line, false)
        );
        assert!(!h.on(Event::Tick, Attach::Keep, T, true, t0).close);
        assert!(h.on(Event::Idle, Attach::Keep, T, false, t0).close);
        assert_eq!(h, Host::Absent);
    }

    #[test]
    fn reset_holds_the_module_for_boot_ms_then_boots_once() {
        let t0 = Instant::now();
        let mut h = Host::start(Attach::Reset, false);
        let fx = h.on(Event::Opened, Attach::Reset, T, false, t0);
        assert!(fx.drop_queued && !fx.power_cycle);
        assert!(h.deaf());
        assert_eq!(h.sink(), Sink::Nowhere);
        assert_eq!(
            h.on(Event::Tick, Attach::Reset, T, false, t0 + ms(99)),
            Effects::default()
        );
        // Another open restarts the reset.
        h.on(Event::Opened, Attach::Reset, T, false, t0 + ms(50));
        assert_eq!(h.deadline(), Some(t0 + ms(150)));
        let fx = h.on(Event::Tick, Attach::Reset, T, false, t0 + ms(150));
        assert!(fx.drop_pending && fx.power_cycle);
        assert_eq!(h, Host::Attached);
    }

    #[test]
    fn prompt_waits_for_quiet_and_sends_again_after_a_flush() {
        let t0 = Instant::now();
        let mut h = Host::start(Attach::Prompt, false);
        assert_eq!(h.sink(), Sink::Nowhere, "nothing before a host");
        let fx = h.on(Event::Opened, Attach::Prompt, T, false, t0);
        assert!(fx.power_cycle && fx.drop_queued && fx.drop_pending);
        assert_eq!(h.sink(), Sink::Boot);
        h.keep_boot(b"\r\nbanner\r\n> ");
        h.on(Event::Flushed, Attach::Prompt, T, false, t0 + ms(700));
        assert_eq!(
            h.on(Event::Tick, Attach::Prompt, T, false, t0 + ms(1000))
                .send,
            None
        );
        let fx = h.on(Event::Tick, Attach::Prompt, T, false, t0 + ms(1700));
        assert_eq!(fx.send.as_deref(), Some(&b"\r\nbanner\r\n> "[..]));
        // Thrown away by a flush before the host spoke: again after the quiet time.
        h.on(Event::Flushed, Attach::Prompt, T, false, t0 + ms(1800));
        let fx = h.on(Event::Tick, Attach::Prompt, T, false, t0 + ms(2800));
        assert_eq!(fx.send.as_deref(), Some(&b"\r\nbanner\r\n> "[..]));
        h.on(Event::Spoke, Attach::Prompt, T, false, t0 + ms(2900));
        assert_eq!(h, Host::Attached);
        assert_eq!(
            h.on(Event::Flushed, Attach::Prompt, T, false, t0),
            Effects::default()
        );
    }

    #[test]
    fn a_prompt_host_that_speaks_first_gets_no_banner() {
        let t0 = Instant::now();
        let mut h = Host::Absent;
        h.on(Event::Opened, Attach::Prompt, T, false, t0);
        h.keep_boot(b"banner");
        h.on(Event::Spoke, Attach::Prompt, T, false, t0 + ms(10));
        assert_eq!(h, Host::Attached);
        assert_eq!(
            h.on(Event::Tick, Attach::Prompt, T, false, t0 + ms(5000))
                .send,
            None
        );
    }
}
