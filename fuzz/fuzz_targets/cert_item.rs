//! `cargo fuzz run cert_item`: see `eswifi_core::fuzz::cert_item` for the invariants it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| eswifi_core::fuzz::cert_item(data));
