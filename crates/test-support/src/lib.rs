//! What the tests of the workspace share (layer: test support; never a dependency of a program).
//!
//! - [`harness`]: runs the real `eswifi-emu` binary on a pty (or TCP, stdio), talks to it as a host
//!   driver would, and starts small loopback servers for it to reach;
//! - [`pki`]: a test PKI made with rcgen once per test binary, and rustls configurations;
//! - [`tls`]: rustls servers on 127.0.0.1 and host-side helpers for the TLS and certificate
//!   commands; [`v1`]: X.509 v1 certificates, which rcgen cannot make.
//!
//! Everything is bounded in time: reads poll with deadlines, servers stop on drop or after their
//! lifetime, and an emulator still running is killed when its handle is dropped.

pub mod harness;
pub mod pki;
pub mod tls;
pub mod v1;
