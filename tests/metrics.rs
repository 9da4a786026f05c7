//! `--metrics-file` and `--on-failure`: the file parses with Prometheus's
//! own text-format parser (prometheus-client from PyPI, which
//! scripts/test.sh installs), its values are the run's, commands keep each
//! other's samples, and a failure runs the hook with the error.

use dedupe_suite::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Every sample of the file, parsed by prometheus_client: "family{k=v,...}" → value.
fn parsed(file: &Path) -> BTreeMap<String, f64> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    assert fam.type == "gauge", fam
    assert fam.documentation, fam
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let out = std::process::Command::new("python3").args(["-c", script]).arg(file).output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejects the file (scripts/test.sh installs it): {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_metrics_file_holds_each_runs_figures_and_failures_run_the_hook() {
    let repo = Repo::new();
    let metrics = repo.scratch("dedupe.prom");
    let hook_out = repo.scratch("hook.txt");
    let src = repo.scratch("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), Prng::new(5).bytes(3 << 20)).unwrap();
    let m = metrics.to_str().unwrap();

    let before = now_secs();
    let run = repo.json(&["--metrics-file", m, "backup", "--name", "db1", src.to_str().unwrap()]);
    let after = now_secs();
    repo.json(&["--metrics-file", m, "backup", "--name", "db2", src.to_str().unwrap()]);
    let got = parsed(&metrics);
    assert_eq!(got["dedupe_backup_read_bytes{name=db1}"], run["bytes_read"].as_f64().unwrap(), "{got:?}");
    assert_eq!(got["dedupe_backup_new_stored_bytes{name=db1}"], run["new_bytes_stored"].as_f64().unwrap());
    assert!((got["dedupe_backup_duration_seconds{name=db1}"] - run["seconds"].as_f64().unwrap()).abs() < 1e-6);
    let t = got["dedupe_backup_last_success_timestamp_seconds{name=db1}"];
    assert!(before - 1.0 <= t && t <= after + 1.0, "{t} not in [{before}, {after}]");
    assert_eq!(got["dedupe_backup_new_stored_bytes{name=db2}"], 0.0, "db2 added nothing new: {got:?}");

    // A failing backup: its failure is recorded beside the last success, and the hook runs.
    let hook =
        format!("echo \"$DEDUPE_COMMAND $DEDUPE_NAME $DEDUPE_EXIT_CODE $DEDUPE_ERROR\" > {}", hook_out.display());
    let out = repo.run(&["--metrics-file", m, "--on-failure", &hook, "backup", "--name", "db1", "/nonexistent/dir"]);
    assert_eq!(out.status.code(), Some(6));
    let said = std::fs::read_to_string(&hook_out).unwrap();
    assert!(said.starts_with("backup db1 6 cannot read /nonexistent/dir"), "{said}");
    let got2 = parsed(&metrics);
    let failed = got2["dedupe_last_failure_timestamp_seconds{command=backup,name=db1}"];
    assert!(failed >= after, "{got2:?}");
    assert_eq!(
        got2["dedupe_backup_read_bytes{name=db1}"], got["dedupe_backup_read_bytes{name=db1}"],
        "the success stays"
    );
    // Written atomically: no temporary file left beside it.
    let names: Vec<String> = std::fs::read_dir(metrics.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dedupe.") && n != "dedupe.prom" && n != "dedupe.lock")
        .collect();
    assert!(names.is_empty(), "{names:?}");
}
