//! What control clients ask, carried out (layer: edge): `reset`, `status` and the `fault`
//! commands, each answered by its lines. The socket, its clients and their bounds are
//! `crate::control`'s.

use super::core::Core;
use super::Driver;
use crate::control::Command;
use std::time::Instant;

impl<M: Core> Driver<M> {
    /// Carry out the requests control clients completed, answering each in order.
    pub(super) fn control_requests(&mut self, now: Instant) {
        let Some(control) = self.control.as_mut() else {
            return;
        };
        let registry = self.poll.registry();
        for (client, req) in control.take_requests(registry, now) {
            let answer = match req {
                Err(why) => vec![format!("error {why}")],
                Ok(cmd) => {
                    let (lines, faults, resets) = (&self.lines, &mut self.faults, &mut self.resets);
                    carry_out(
                        cmd,
                        lines.len(),
                        |k| &lines[k].core,
                        faults,
                        resets,
                        now,
                        |k| lines[k].port.describe(),
                    )
                }
            };
            for line in answer {
                control.answer(registry, client, &line);
            }
        }
        control.flush_all(registry);
    }
}

/// One command's answer lines.
fn carry_out<'a, M: Core + 'a>(
    cmd: Command,
    n: usize,
    core: impl Fn(usize) -> &'a M,
    faults: &mut super::faulty::Faults,
    resets: &mut Vec<(usize, &'static str)>,
    now: Instant,
    describe: impl Fn(usize) -> String,
) -> Vec<String> {
    match cmd {
        Command::Reset(Some(k)) if k >= n => {
            vec![format!("error no module {k} (0 to {})", n - 1)]
        }
        Command::Reset(which) => {
            match which {
                Some(k) => resets.push((k, "reset")),
                None => resets.extend((0..n).map(|k| (k, "reset"))),
            }
            vec!["ok".into()]
        }
        Command::FaultAdd(rule) => {
            let counts: Vec<u64> = (0..n).map(|k| core(k).commands()).collect();
            vec![match faults.add(rule, now, &counts) {
                Ok(id) => format!("ok {id}"),
                Err(e) => format!("error {e}"),
            }]
        }
        Command::FaultClear(id) => vec![if faults.clear(id) {
            "ok".into()
        } else {
            format!("error no fault {}", id.unwrap_or(0))
        }],
        Command::FaultList => {
            let mut lines = faults.list();
            lines.push(format!("ok {}", lines.len()));
            lines
        }
        Command::Status => {
            let all: Vec<serde_json::Value> = (0..n)
                .map(|k| {
                    let mut v =
                        serde_json::to_value(core(k).status()).unwrap_or(serde_json::Value::Null);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("module".into(), k.into());
                        o.insert("line".into(), describe(k).into());
                    }
                    v
                })
                .collect();
            vec![serde_json::Value::Array(all).to_string()]
        }
    }
}
