//! Terminal scripts (`eswifi-emu run`) and the interactive terminal (`eswifi-emu term`): the host's
//! side of the serial line, as a person or a CI job drives a module.
//!
//! - `lang`: the `*.iwin` language (pure parser).
//! - `show`: escaping and redaction of what is printed (pure).
//! - `port`: the line itself: a tty/pty path, a serial device, a TCP connection.
//! - [`embedded`]: an emulator in this process, for the zero-setup path.
//! - `ctl`: the client of an emulator's control socket (`fault …` directives).
//! - `session`: commands, replies and events over a port, every wait bounded.
//! - `run`: the runner; `term`: the terminal; [`cli`]: their command-line options.

pub mod cli;
mod ctl;
pub mod embedded;
pub(crate) mod lang;
pub(crate) mod port;
mod run;
mod session;
pub(crate) mod show;
mod term;
