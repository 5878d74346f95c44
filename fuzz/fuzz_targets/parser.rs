//! `cargo fuzz run parser`: see `eswifi_emu::fuzz::parser` for the invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eswifi_emu::fuzz::parser(data));
