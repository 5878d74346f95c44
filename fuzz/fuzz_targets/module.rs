//! `cargo fuzz run module`: see `eswifi_core::fuzz::module` for the invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eswifi_core::fuzz::module(data));
