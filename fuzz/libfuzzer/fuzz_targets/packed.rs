//! libFuzzer target: see `fuzz_checks::packed` for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::packed::check(data));
