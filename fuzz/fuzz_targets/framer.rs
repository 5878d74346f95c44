//! `cargo fuzz run framer`: see `eswifi_core::fuzz::framer` for the invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eswifi_core::fuzz::framer(data));
