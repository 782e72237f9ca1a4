//! libFuzzer target: see `fuzz_checks::record` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::record::check(data));
