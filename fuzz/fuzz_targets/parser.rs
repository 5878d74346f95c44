//! `cargo fuzz run parser`: see `eswifi_core::fuzz::parser` for the invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eswifi_core::fuzz::parser(data));
