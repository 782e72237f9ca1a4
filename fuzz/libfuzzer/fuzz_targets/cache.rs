//! libFuzzer target: see `fuzz_checks::cache` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::cache::check(data));
