//! The log (layer: edge): env_logger on stderr, as `-v`/`-q`/`RUST_LOG` say, and for `run` and
//! `term` a copy of the emulator's own warnings and errors, whatever the level shown, so that a
//! failing step can show why (`join "lab" failed: …`) even with `-q`. No log line holds a secret
//! (the emulator's rule), so neither does the copy.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Lines kept for the runner: the newest, each cut to a readable length.
const KEEP: usize = 64;
const LINE_MAX: usize = 400;

static CAPTURED: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

struct Tee {
    inner: env_logger::Logger,
    capture: bool,
}

impl Tee {
    fn captures(&self, meta: &log::Metadata<'_>) -> bool {
        self.capture && meta.level() <= log::Level::Warn && meta.target().starts_with("eswifi")
    }
}

impl log::Log for Tee {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        self.inner.enabled(meta) || self.captures(meta)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.inner.matches(record) {
            self.inner.log(record);
        }
        if self.captures(record.metadata()) {
            let level = match record.level() {
                log::Level::Error => "error",
                _ => "warning",
            };
            let mut line = format!("{level}: {}", record.args());
            if line.len() > LINE_MAX {
                let mut cut = LINE_MAX;
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                line.truncate(cut);
                line.push('…');
            }
            let mut kept = CAPTURED.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() == KEEP {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Install the logger: `default` is the filter unless `RUST_LOG` is set; `capture` keeps the
/// emulator's warnings and errors for [`take_captured`].
pub(crate) fn init(default: &str, capture: bool) {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
            .build();
    let mut max = inner.filter();
    if capture {
        max = max.max(log::LevelFilter::Warn);
    }
    if log::set_boxed_logger(Box::new(Tee { inner, capture })).is_ok() {
        log::set_max_level(max);
    }
}

/// The captured lines since the last call, oldest first.
pub(crate) fn take_captured() -> Vec<String> {
    let mut kept = CAPTURED.lock().unwrap_or_else(|e| e.into_inner());
    kept.drain(..).collect()
}
