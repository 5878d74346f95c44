//! `cargo fuzz run framer`: see `eswifi_emu::fuzz::framer` for the invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eswifi_emu::fuzz::framer(data));
