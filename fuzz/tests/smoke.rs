//! A short run of every fuzz target, as part of the suite: each target runs
//! in its own `dedupe-fuzz` process (a hang or an allocation above the hard
//! cap ends that process, not the test) for `SECONDS`, two at a time, with a
//! fixed seed. Any panic, hang or unbounded allocation fails the test and
//! names the saved input. Long runs are `scripts/fuzz.sh`'s.

use dedupe_fuzz::fuzz_targets::TARGETS;
use std::process::{Command, Output};
use std::sync::Mutex;

/// Per target: 9 targets, two at a time, stay under 30 s on two cores.
const SECONDS: &str = "4";

fn run(target: &str, artifacts: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dedupe-fuzz"))
        .args(["run", target, "--seconds", SECONDS, "--seed", "8", "--timeout", "10", "--report-every", "0"])
        .arg("--artifacts")
        .arg(artifacts)
        .output()
        .expect("run dedupe-fuzz")
}

#[test]
fn every_target_survives_a_short_run() {
    let artifacts = tempfile::tempdir().unwrap();
    let queue = Mutex::new(TARGETS.iter().map(|t| t.name).collect::<Vec<_>>());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some(target) = queue.lock().unwrap().pop() else { return };
                let out = run(target, artifacts.path());
                results.lock().unwrap().push((target, out));
            });
        }
    });
    let mut failed = Vec::new();
    for (target, out) in results.into_inner().unwrap() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{}", stdout.trim_end());
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            failed.push(format!("{target} ({}):\n{}{}", out.status, stdout, stderr));
        }
    }
    if !failed.is_empty() {
        let kept = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
        let _ = copy_dir(artifacts.path(), &kept);
        panic!("fuzz targets failed (inputs copied to {}):\n{}", kept.display(), failed.join("\n"));
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}
