//! What unattended runs tell the outside world: `--metrics-file PATH`, a
//! Prometheus text file for node_exporter's textfile collector, and
//! `--on-failure CMD`, a shell command run when a backup, a push or a
//! drill fails (for mail or a pager).
//!
//! Several commands share one metrics file (the nightly backup, the push
//! every minute, the weekly drill): each replaces only its own samples,
//! under an exclusive lock on `PATH.lock`, and the file is written whole
//! to a temporary name and renamed, so the collector never reads half of
//! it. Hand-written rather than the `prometheus` crate: that crate keeps a
//! registry in one process, and here each run adds to what others wrote.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// One sample: a gauge of `family`, labelled by the server's name (and `kind`).
pub(crate) struct Sample {
    pub family: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    pub(crate) fn new(family: &'static str, help: &'static str, name: &str, value: f64) -> Sample {
        Sample { family, help, labels: vec![("name", name.to_string())], value }
    }

    pub(crate) fn with(mut self, label: &'static str, value: &str) -> Sample {
        self.labels.push((label, value.to_string()));
        self
    }

    fn label_text(&self) -> String {
        let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let inner: Vec<String> = self.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect();
        format!("{{{}}}", inner.join(","))
    }
}

/// Seconds since the epoch, now.
pub(crate) fn now() -> f64 {
    std::time::UNIX_EPOCH.elapsed().unwrap_or_default().as_secs_f64()
}

/// After a push of `kind` logs of `name`: when it ran, and when the newest
/// archived file was archived (its age is the archive's lag).
pub(crate) fn pushed(repo: &dedupe_store::Indexed, name: &str, kind: dedupe_ingest::facts::LogKind) -> Vec<Sample> {
    let kind_name = match kind {
        dedupe_ingest::facts::LogKind::Binlog => "binlog",
        dedupe_ingest::facts::LogKind::Wal => "wal",
    };
    let mut out = vec![Sample::new(
        "dedupe_log_last_push_timestamp_seconds",
        "When the last push of logs succeeded (unix time).",
        name,
        now(),
    )
    .with("kind", kind_name)];
    let newest = dedupe_recovery::archive::archived(repo.catalogue(), name, kind)
        .ok()
        .and_then(|files| files.iter().filter_map(|f| f.manifest.time.parse::<jiff::Timestamp>().ok()).max());
    if let Some(t) = newest {
        out.push(
            Sample::new(
                "dedupe_log_newest_archived_timestamp_seconds",
                "When the newest archived binlog or WAL file was archived (unix time): now minus this is the archive's lag.",
                name,
                t.as_millisecond() as f64 / 1000.0,
            )
            .with("kind", kind_name),
        );
    }
    out
}

/// When a drill of `name` last ran, and whether it passed.
pub(crate) fn drill_ran(name: &str, passed: bool) -> Vec<Sample> {
    vec![
        Sample::new("dedupe_drill_last_timestamp_seconds", "When the last restore drill ran (unix time).", name, now()),
        Sample::new(
            "dedupe_drill_success",
            "Whether the last restore drill passed (1) or failed (0).",
            name,
            f64::from(u8::from(passed)),
        ),
    ]
}

/// A family's help text and its samples, by label set.
type Families = BTreeMap<String, (String, BTreeMap<String, String>)>;

fn parse(text: &str) -> Families {
    let mut fams = Families::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((fam, help)) = rest.split_once(' ') {
                fams.entry(fam.to_string()).or_default().0 = help.to_string();
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let (series, value) = match line.rfind(' ') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => continue,
            };
            let (fam, labels) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            fams.entry(fam.to_string()).or_default().1.insert(labels.to_string(), value.to_string());
        }
    }
    fams
}

fn render(fams: &Families) -> String {
    let mut out = String::new();
    for (fam, (help, samples)) in fams {
        out.push_str(&format!("# HELP {fam} {help}\n# TYPE {fam} gauge\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{fam}{labels} {value}\n"));
        }
    }
    out
}

/// Puts `samples` into the metrics file at `path`, keeping every other sample.
pub(crate) fn update(path: &Path, samples: &[Sample]) -> std::io::Result<()> {
    let lock =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path.with_extension("lock"))?;
    // SAFETY: flock on a descriptor we own; released when `lock` closes.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fams = parse(&std::fs::read_to_string(path).unwrap_or_default());
    for s in samples {
        let entry = fams.entry(s.family.to_string()).or_default();
        entry.0 = s.help.to_string();
        entry.1.insert(s.label_text(), format!("{}", s.value));
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(render(&fams).as_bytes())?;
    f.sync_all()?;
    // Readable by the collector, which seldom runs as root.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    std::fs::rename(&tmp, path)
}

/// After a backup, a push or a drill (`what`) of `name`: its samples, or
/// the time of its failure, into the metrics file; on failure, the
/// `--on-failure` command with the error in its environment. Neither can
/// change the command's outcome; their own failures are warnings.
pub(crate) fn outcome(
    metrics: Option<&Path>,
    on_failure: Option<&str>,
    what: &'static str,
    name: &str,
    failure: Option<(i32, &str)>,
    samples: Vec<Sample>,
) {
    if let Some(path) = metrics {
        let samples = match failure {
            None => samples,
            Some(_) => {
                let mut s = vec![Sample::new(
                    "dedupe_last_failure_timestamp_seconds",
                    "When the command last failed (unix time).",
                    name,
                    now(),
                )
                .with("command", what)];
                if what == "drill" {
                    s.extend(drill_ran(name, false));
                }
                s
            }
        };
        if let Err(e) = update(path, &samples) {
            eprintln!("dedupe: warning: cannot write the metrics file {}: {e}", path.display());
        }
    }
    if let (Some(cmd), Some((code, message))) = (on_failure, failure) {
        let st = dedupe_ingest::secrets::scrub(&mut std::process::Command::new("sh"))
            .args(["-c", cmd])
            .env("DEDUPE_COMMAND", what)
            .env("DEDUPE_NAME", name)
            .env("DEDUPE_EXIT_CODE", code.to_string())
            .env("DEDUPE_ERROR", message)
            .stdin(std::process::Stdio::null())
            .status();
        match st {
            Ok(s) if s.success() => {}
            Ok(s) => eprintln!("dedupe: warning: the --on-failure command failed ({s})"),
            Err(e) => eprintln!("dedupe: warning: cannot run the --on-failure command: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_other_commands_and_names_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dedupe.prom");
        update(&p, &[Sample::new("dedupe_a", "A.", "db1", 1.0), Sample::new("dedupe_a", "A.", "db2", 2.0)]).unwrap();
        update(
            &p,
            &[Sample::new("dedupe_a", "A.", "db1", 3.0), Sample::new("dedupe_b", "B.", "db1", 4.0).with("kind", "wal")],
        )
        .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "# HELP dedupe_a A.\n# TYPE dedupe_a gauge\ndedupe_a{name=\"db1\"} 3\ndedupe_a{name=\"db2\"} 2\n\
             # HELP dedupe_b B.\n# TYPE dedupe_b gauge\ndedupe_b{name=\"db1\",kind=\"wal\"} 4\n"
        );
    }
}
