//! `cargo fuzz run --features libfuzzer tar`: the `tar` target of
//! `dedupe_fuzz::fuzz_targets` under libFuzzer (nightly).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dedupe_fuzz::fuzz_targets::tar(data));
