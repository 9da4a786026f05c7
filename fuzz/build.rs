//! Builds the driver's SanitizerCoverage hooks (`src/hooks/sancov.c`),
//! except for `cargo fuzz` (feature `libfuzzer`), where libFuzzer has them.

fn main() {
    println!("cargo:rerun-if-changed=src/hooks/sancov.c");
    if std::env::var_os("CARGO_FEATURE_LIBFUZZER").is_none() {
        cc::Build::new().file("src/hooks/sancov.c").compile("dedupe_fuzz_sancov");
    }
}
