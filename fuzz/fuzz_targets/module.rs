//! `cargo fuzz run module`: see `eswifi_emu::fuzz::module` for the invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eswifi_emu::fuzz::module(data));
