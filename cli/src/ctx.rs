//! What every command gets: where the repository is, how to open it (in the
//! state the command needs), and how to talk to the user (a summary on
//! stdout unless --quiet or --json, remarks on stderr, progress on a terminal).

use crate::exit::R;
use crate::password::PasswordSource;
use crate::progress::Bar;
use dedupe_store::backend::{Backend, Location, Options};
use dedupe_store::{Indexed, Listed, Reads, Repository, Unlocked};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) struct Ctx {
    pub(crate) location: Location,
    pub(crate) storage: Options,
    pub(crate) password_file: Option<PathBuf>,
    pub(crate) password_command: Option<String>,
    pub(crate) cache_dir: PathBuf,
    pub(crate) json: bool,
    pub(crate) quiet: bool,
    /// The password once read: a command that opens the repository twice
    /// (`drill`) asks once.
    pub(crate) typed: std::sync::OnceLock<String>,
    /// `--metrics-file`, `--on-failure`: for backups, pushes and drills (`report.rs`).
    pub(crate) metrics_file: Option<PathBuf>,
    pub(crate) on_failure: Option<String>,
    /// `--pg-bin`: PostgreSQL's programs for the data at hand (`dedupe_recovery::pgbin`).
    pub(crate) pg_bin: Option<PathBuf>,
}

/// Where the local cache lives unless --cache-dir says.
pub(crate) fn default_cache() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("dedupe");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/dedupe");
    }
    PathBuf::from("/var/tmp/dedupe-cache")
}

impl Ctx {
    pub(crate) fn backend(&self) -> R<Arc<dyn Backend>> {
        Ok(dedupe_store::backend::open(&self.location, &self.storage)?)
    }

    /// The repository's location as `--repo` takes it, for commands dedupe
    /// writes down (PostgreSQL's restore_command): a local path made absolute.
    pub(crate) fn repo_arg(&self) -> String {
        match &self.location {
            Location::Local(p) => std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()).display().to_string(),
            remote => remote.display(),
        }
    }

    pub(crate) fn password(&self) -> R<String> {
        if let Some(p) = self.typed.get() {
            return Ok(p.clone());
        }
        let p = PasswordSource {
            file: self.password_file.as_deref(),
            command: self.password_command.as_deref(),
            env: "DEDUPE_PASSWORD",
        }
        .get()?;
        Ok(self.typed.get_or_init(|| p).clone())
    }

    /// The password options as arguments for a command dedupe itself
    /// writes down (PostgreSQL's restore_command): never the password itself.
    pub(crate) fn password_args(&self) -> Option<Vec<String>> {
        if let Some(f) = &self.password_file {
            let abs = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
            return Some(vec!["--password-file".into(), abs.display().to_string()]);
        }
        self.password_command.as_ref().map(|c| vec!["--password-command".into(), c.clone()])
    }

    /// Keys opened: for commands that read no manifest (key management).
    pub(crate) fn unlocked(&self) -> R<Unlocked> {
        let repo = Repository::open(self.backend()?)?;
        Ok(repo.unlock(self.password()?.as_bytes())?)
    }

    /// Keys opened and the listing for `reads` made (listed while the key is derived).
    fn listed_for(&self, reads: Reads) -> R<Listed> {
        let repo = Repository::open(self.backend()?)?;
        Ok(repo.unlock_and_list(self.password()?.as_bytes(), &self.cache_dir, reads)?)
    }

    /// Manifests listed: for commands that read manifests but no chunk.
    pub(crate) fn listed(&self) -> R<Listed> {
        self.listed_for(Reads::Manifests)
    }

    /// Manifests listed, then the index loaded: for commands that read or write chunks.
    pub(crate) fn indexed(&self) -> R<Indexed> {
        Ok(self.listed_for(Reads::Chunks)?.indexed()?)
    }

    /// The same with `index/` listed whole (`prune`), so no index object
    /// is missed whatever clock stamped it.
    pub(crate) fn indexed_whole(&self) -> R<Indexed> {
        Ok(self.listed_for(Reads::Chunks)?.indexed_whole()?)
    }

    /// The same, for commands that use archived logs only (`Unlocked::list_for_logs`).
    pub(crate) fn indexed_for_logs(&self) -> R<Indexed> {
        Ok(self.listed_for(Reads::LogChunks)?.indexed()?)
    }

    /// Another repository (`copy`'s source), opened with the same storage
    /// options and cache base, listed, then indexed.
    pub(crate) fn other_indexed(&self, location: &Location, password: &str) -> R<Indexed> {
        let backend = dedupe_store::backend::open(location, &self.storage)?;
        let repo = Repository::open(backend)?;
        Ok(repo.unlock_and_list(password.as_bytes(), &self.cache_dir, Reads::Chunks)?.indexed()?)
    }

    pub(crate) fn cache_base(&self) -> &Path {
        &self.cache_dir
    }

    /// A progress display on stderr, drawn only on a terminal and without --quiet.
    pub(crate) fn progress(&self) -> Bar {
        Bar::new(!self.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()))
    }

    /// After a backup, a push or a drill (`what`) of `name`: its samples
    /// into the metrics file, or its failure there and to `--on-failure`.
    pub(crate) fn report(&self, what: &'static str, name: &str, r: R<Vec<crate::report::Sample>>) -> R {
        let (metrics, hook) = (self.metrics_file.as_deref(), self.on_failure.as_deref());
        match r {
            Ok(samples) => {
                crate::report::outcome(metrics, hook, what, name, None, samples);
                Ok(())
            }
            Err(f) => {
                crate::report::outcome(metrics, hook, what, name, Some((f.code, &f.message)), Vec::new());
                Err(f)
            }
        }
    }

    /// A remark on stderr unless --quiet.
    pub(crate) fn note(&self, s: &str) {
        if !self.quiet {
            eprintln!("dedupe: {s}");
        }
    }

    /// A human summary goes to stdout unless --quiet or --json.
    pub(crate) fn say(&self, s: impl AsRef<str>) {
        if !self.quiet && !self.json {
            outln!("{}", s.as_ref());
        }
    }
}

/// A rate for `--limit-upload` / `--limit-download`: bytes a second, with
/// an optional K, M or G (1024-based, as `human` prints them).
pub(crate) fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches("/s").trim_end_matches(['B', 'b']).trim_end_matches(['i']);
    let (digits, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("{s}: give bytes a second, such as 500K, 20M or 1G")),
    };
    let n: f64 = digits.trim().parse().map_err(|_| format!("{s}: give bytes a second, such as 500K, 20M or 1G"))?;
    let v = (n * (1u64 << shift) as f64) as u64;
    if v == 0 {
        return Err(format!("{s}: a limit must be at least one byte a second"));
    }
    Ok(v)
}

/// A byte count for people: `1.5 GiB`.
pub(crate) fn human(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// The first eight characters of an id, as users see it.
pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}
