//! Inputs the fuzz targets once broke (`fuzz/regressions/<target>/`),
//! replayed through the driver on every run of the suite so the fixes stay
//! fixed. Overflows show only with overflow checks on: `scripts/fuzz.sh`
//! and `cargo run --profile fuzz -p dedupe-fuzz -- replay TARGET FILE` use
//! them; here the inputs must at least neither panic nor allocate what
//! their length fields claim.
//!
//! | input | what broke, now fixed |
//! | --- | --- |
//! | `xbstream/oom-3b59c9b55e7f7db6` | a 767-byte stream whose chunk claims 64 MiB reserved all of it before reading |
//! | `xbstream/crash-6a33228356cdf6d5`, `crash-80adbf2b7271e72b`, `crash-3cc565e0951743de` | offsets near 2^64 wrapped the file's end (now: an offset must equal the file's end so far) |
//! | `index_cache/crash-e66a20b3383a3222`, `crash-038d4c991544d2c4` | a record count near 2^64/48 wrapped `count * 48`; the damaged cache was accepted and the first lookup panicked |
//! | `tar/crash-b024c026636057f6` | an mtime above 2^63/10^9 wrapped to a wrong (negative) time |

use std::path::Path;
use std::process::Command;

#[test]
fn every_input_that_once_broke_a_target_now_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    for target in std::fs::read_dir(&dir).unwrap() {
        let target = target.unwrap();
        let mut files: Vec<_> = std::fs::read_dir(target.path()).unwrap().map(|f| f.unwrap().path()).collect();
        files.sort();
        let out = Command::new(env!("CARGO_BIN_EXE_dedupe-fuzz"))
            .arg("replay")
            .arg(target.file_name())
            .args(&files)
            .output()
            .expect("run dedupe-fuzz");
        assert!(
            out.status.success(),
            "{:?}: {}{}",
            target.file_name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        replayed += files.len();
    }
    assert!(replayed >= 7, "only {replayed} regression inputs");
}
