//! Ping area (layer: core): `T1`/`T2`/`T3` settings, `T0` (the echoes themselves run in the driver's
//! worker pool) and `T?`. Pure.

use super::io::{NetOp, PingError, QueryId};
use super::{ok, payload, Answer, Busy, Module, Step};
use crate::iwin::command::PingCmd;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Most echoes one `T0` sends (`T2=65535` means "continuous" on the module).
pub(crate) const MAX_ECHOES: u32 = 1000;

/// `T1`, `T2`, `T3`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PingSettings {
    pub(crate) target: Ipv4Addr,
    pub(crate) repeats: u16,
    pub(crate) delay_ms: u16,
}

impl Default for PingSettings {
    fn default() -> Self {
        PingSettings {
            target: Ipv4Addr::UNSPECIFIED,
            repeats: 0,
            delay_ms: 0,
        }
    }
}

/// `T0`'s payload: `<ip>,<ms>` per answered echo, `Timeout` per lost one.
pub(crate) fn reply_text(target: Ipv4Addr, rtts: &[Option<Duration>]) -> String {
    let lines: Vec<String> = rtts
        .iter()
        .map(|r| match r {
            Some(d) => format!("{target},{}", d.as_millis()),
            None => "Timeout".to_string(),
        })
        .collect();
    lines.join("\r\n")
}

impl Module {
    pub(super) fn ping_command(&mut self, cmd: PingCmd, now: Instant) -> Step {
        let p = &mut self.ping;
        match cmd {
            PingCmd::SetTarget(ip) => p.target = ip,
            PingCmd::SetRepeats(n) => p.repeats = n,
            PingCmd::SetDelay(ms) => p.delay_ms = ms,
            PingCmd::Query => {
                return payload(format!("{},{},{}", p.target, p.repeats, p.delay_ms));
            }
            PingCmd::Ping => return self.start_ping(now),
        }
        ok()
    }

    fn start_ping(&mut self, now: Instant) -> Step {
        let PingSettings {
            target,
            repeats,
            delay_ms,
        } = self.ping;
        // M46: T2 counts repeats after the first echo.
        let count = (repeats as u32 + 1).min(MAX_ECHOES);
        if !self.network_up() || target.is_unspecified() {
            log::warn!("ping {target}: no network or no target (T1)");
            return payload(reply_text(target, &vec![None; count as usize]));
        }
        let query = self.next_id(QueryId);
        let interval = Duration::from_millis(delay_ms as u64);
        let timeout = Duration::from_secs(1);
        self.ops.push_back(NetOp::Ping {
            query,
            target,
            count,
            interval,
            timeout,
        });
        Ok(Answer::Wait(Busy::Ping {
            query,
            target,
            count,
            deadline: now + (interval + timeout) * count + Duration::from_secs(5),
        }))
    }

    pub(super) fn on_ping(
        &mut self,
        query: QueryId,
        result: Result<Vec<Option<Duration>>, PingError>,
    ) {
        let Some(Busy::Ping {
            query: q,
            target,
            count,
            ..
        }) = self.busy
        else {
            return;
        };
        if q != query {
            return;
        }
        let rtts = match result {
            Ok(r) => r,
            Err(e) => {
                log::warn!("ping {target}: {e}; answering Timeout");
                vec![None; count as usize]
            }
        };
        self.finish(payload(reply_text(target, &rtts)));
    }
}
