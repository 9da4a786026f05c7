//! Fuzzing dedupe's parsers and decoders: the xbstream and tar demuxers,
//! the binlog parser, format sniffing, and the store's decoders of
//! manifests, trees, list chunks, packs, chunk blobs, index objects and the
//! local index cache. Every target checks the same properties: no panic, no
//! hang, bounded memory (an input must not make a parser allocate what a
//! length field claims).
//!
//! # Why a driver of our own
//!
//! `cargo fuzz` (libFuzzer) needs a nightly toolchain; a new machine of this
//! project's kind, and so CI, has only the stable one (some machines carry a
//! nightly too, which nothing here may count on). AFL++ through `cargo afl`
//! builds AFL++ from source, needs the `afl` crate in every target and an
//! `afl-fuzz` process per target, so it cannot run inside `cargo test`
//! either. So the targets live in one module,
//! [`fuzz_targets`], written against `&[u8]`, and two things drive them:
//!
//! - `src/main.rs`, the `dedupe-fuzz` binary, on stable: a mutational fuzzer
//!   ([`driver`], [`mutate`]) over the seed corpus in `corpus/<target>/`,
//!   coverage-guided when built with LLVM's SanitizerCoverage flags, which
//!   are stable `-C` options ([`cov`]; `scripts/fuzz.sh` sets them), blind
//!   otherwise. It measures the heap itself ([`alloc`]) and runs a watchdog.
//!   The suite runs every target for a few seconds (`tests/smoke.rs`).
//! - `fuzz_targets/*.rs`, the same functions under libFuzzer, for
//!   `cargo fuzz run --features libfuzzer TARGET` where nightly exists.
//!
//! Long runs: `scripts/fuzz.sh [TARGET] [SECONDS]`.

pub mod alloc;
pub mod cov;
pub mod driver;
pub mod fuzz_targets;
pub mod mutate;
