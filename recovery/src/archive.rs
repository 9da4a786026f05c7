//! The log archive: MySQL/MariaDB binary logs and PostgreSQL WAL files.
//!
//! Each archived file is stored as a log manifest (`logs/<id>`) of the
//! server's `--name`, holding the file as one node and, in its metadata, its
//! `LogFacts`: kind, file name, size, BLAKE3 of the bytes (the idempotency
//! check: same name and bytes is a no-op, same name and other bytes is
//! refused), and what its content says (binlog event times, positions and
//! GTIDs; WAL timeline, LSN range and commit times).

use crate::error::{Error, Result};
use dedupe_ingest::binlog::{BinlogError, BinlogFacts};
use dedupe_ingest::facts::{LogDetail, LogFacts, LogKind, WalFacts};
use dedupe_store::{BackupOptions, Catalogue, Indexed, Kind, Manifest};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An archived log file as the catalogue knows it.
#[derive(Clone, Debug)]
pub struct LogFile {
    pub id: String,
    pub manifest: Manifest,
    pub facts: LogFacts,
}

impl LogFile {
    /// A log manifest as an archived file; `None` if it names no kind and file.
    pub fn new(id: String, manifest: Manifest) -> Option<LogFile> {
        let facts = LogFacts::of(&manifest)?;
        Some(LogFile { id, manifest, facts })
    }
    pub fn file(&self) -> &str {
        &self.facts.file
    }
    /// An incomplete copy, which a complete one supersedes: stored as partial,
    /// or (stored before `partial` covered it) a binlog cut inside an event.
    pub fn partial(&self) -> bool {
        self.facts.partial || self.binlog().is_some_and(|b| b.truncated_tail)
    }
    pub fn size(&self) -> u64 {
        self.facts.size
    }
    pub fn binlog(&self) -> Option<&BinlogFacts> {
        self.facts.binlog()
    }
    pub fn wal(&self) -> Option<&WalFacts> {
        self.facts.wal()
    }
}

/// The best copy of every archived file of a name and kind, by file name:
/// a complete copy wins over partial ones, and the newest partial over older.
pub fn archived(cat: &Catalogue, name: &str, kind: LogKind) -> Result<Vec<LogFile>> {
    let mut best: BTreeMap<String, LogFile> = Default::default();
    for (id, manifest) in cat.logs(name, kind.as_str())? {
        let Some(f) = LogFile::new(id, manifest) else { continue };
        let better = match best.get(f.file()) {
            None => true,
            Some(old) => (old.partial() && !f.partial()) || (old.partial() == f.partial() && f.size() >= old.size()),
        };
        if better {
            best.insert(f.file().to_string(), f);
        }
    }
    Ok(best.into_values().collect())
}

/// What archiving one file did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Stored {
        bytes: u64,
        partial: bool,
    },
    AlreadyArchived,
    /// Not archived, and why.
    Skipped(Skip),
}

/// Why a log file was not archived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The server's active binlog (`--include-active` stores it as partial).
    Active,
    /// Older than the name's oldest base backup (`retention_start`): what
    /// `forget` dropped is not archived again (`--force` does).
    BeforeRetention,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Active => "skipped: the active file (--include-active stores it as partial)",
            Skip::BeforeRetention => "skipped: older than the oldest backup kept (--force archives it)",
        }
    }
}

/// Where the archive of a name starts being useful: the binlog file, or
/// the WAL segment (timeline, number), its oldest base backup starts from.
/// A log before it restores nothing (no base is older), and is what
/// `forget` drops: pushing it again would undo the retention every minute.
/// `None` without a base: everything is archived.
pub fn retention_start(cat: &Catalogue, name: &str) -> Result<Option<dedupe_ingest::facts::SnapshotFacts>> {
    let snaps = cat.list(Kind::Snapshot, Some(name))?;
    Ok(snaps.iter().map(|(_, m)| dedupe_ingest::facts::SnapshotFacts::of(m)).find(|f| {
        f.binlog_start().is_some()
            || (f.wal_start().is_some() && !f.postgresql.as_ref().is_some_and(|p| p.is_uncombined_incremental()))
    }))
}

/// Whether binlog `file` comes before the oldest base's (same base name, lower number).
fn before_binlog_start(oldest: Option<&dedupe_ingest::facts::SnapshotFacts>, file: &str) -> bool {
    let Some((start, _)) = oldest.and_then(|f| f.binlog_start()) else { return false };
    matches!((binlog_seq(file), binlog_seq(start)), (Some((a, n)), Some((b, m))) if a == b && n < m)
}

fn read_error(path: &Path, e: std::io::Error) -> Error {
    Error::Input(format!("cannot read {}: {e}", path.display()))
}

/// Reads `len` bytes of `path` once for their BLAKE3.
fn hash_file(path: &Path, len: u64) -> Result<String> {
    let f = std::fs::File::open(path).map_err(|e| read_error(path, e))?;
    let mut h = blake3::Hasher::new();
    let mut r = f.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(|e| read_error(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Archives `len` bytes of `path` as log file `file` of `name`, unless the
/// same bytes are already there. `existing` are the archived copies of that name.
#[allow(clippy::too_many_arguments)]
fn archive(
    repo: &Indexed,
    existing: &[LogFile],
    name: &str,
    kind: LogKind,
    path: &Path,
    file: &str,
    len: u64,
    partial: bool,
    detail: LogDetail,
) -> Result<Outcome> {
    let digest = hash_file(path, len)?;
    for old in existing.iter().filter(|o| o.file() == file) {
        // The same bytes once stored as partial (the active file, say) and
        // now known complete (it ends with the server's stop event) are stored
        // again as complete: a partial copy blocks restores past it.
        if old.facts.blake3 == digest && (partial || !old.partial()) {
            return Ok(Outcome::AlreadyArchived);
        }
        if !old.partial() && !partial {
            return Err(Error::Conflict(format!(
                "{} {file} of {name} is already archived with different content: a different server under the same --name, or a damaged file?",
                kind.as_str()
            )));
        }
        if !old.partial() && partial {
            // The complete file is archived: the active copy adds nothing.
            return Ok(Outcome::AlreadyArchived);
        }
    }
    let reader = std::fs::File::open(path).map_err(|e| read_error(path, e))?;
    // The digest recorded is of the bytes stored (a server may rewrite a
    // header flag between two reads), and a short read fails the backup
    // before its manifest is written.
    let state = Arc::new(Mutex::new((blake3::Hasher::new(), 0u64)));
    let counted =
        Counted { inner: reader.take(len), state: state.clone(), want: len, what: path.display().to_string() };
    let source =
        Hashed { inner: dedupe_ingest::StreamSource::new(Box::new(counted), file, repo.config.chunking), state };
    let facts = LogFacts {
        kind,
        file: file.to_string(),
        size: len,
        blake3: digest,
        partial,
        archived_at: jiff::Timestamp::now().as_second(),
        detail,
    };
    let opts = BackupOptions {
        name: name.to_string(),
        source_description: format!("{} {}", kind.as_str(), path.display()),
        force_read: true,
        compression_level: None,
        metadata: facts.to_metadata(),
        log: None,
        kind: Kind::Log,
        origin: Default::default(),
    };
    repo.backup(Box::new(source), opts, &())?;
    Ok(Outcome::Stored { bytes: len, partial })
}

type HashState = Arc<Mutex<(blake3::Hasher, u64)>>;

/// Hashes and counts what passes; ends in an error if it is not `want` bytes.
struct Counted<R> {
    inner: R,
    state: HashState,
    want: u64,
    what: String,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut st = self.state.lock().expect("not poisoned");
        st.0.update(&buf[..n]);
        st.1 += n as u64;
        if n == 0 && !buf.is_empty() && st.1 != self.want {
            return Err(std::io::Error::other(format!("{} shrank while it was archived", self.what)));
        }
        Ok(n)
    }
}

/// A stream source whose metadata is the digest of what it delivered.
struct Hashed {
    inner: dedupe_ingest::StreamSource,
    state: HashState,
}

impl dedupe_store::Source for Hashed {
    fn next_event(&mut self) -> dedupe_store::Result<Option<dedupe_store::Event>> {
        self.inner.next_event()
    }

    fn metadata(&self) -> BTreeMap<String, serde_json::Value> {
        let st = self.state.lock().expect("not poisoned");
        [("blake3".to_string(), serde_json::Value::from(st.0.clone().finalize().to_hex().to_string()))].into()
    }
}

/// Writes the content of an archived log file to `dest` (via a temporary
/// name, so a reader never sees half a file).
pub fn fetch_to(repo: &Indexed, log: &LogFile, dest: &Path) -> Result<()> {
    let tree = repo.read_tree(&log.manifest)?;
    let node = tree.nodes.first().ok_or_else(|| Error::Corrupt(format!("log {} has no file", log.id)))?;
    let tmp = dest.with_extension("dedupe-tmp");
    let cannot =
        |what: &str, p: &Path, e: std::io::Error| Error::Storage(format!("cannot {what} {}: {e}", p.display()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| cannot("create", &tmp, e))?;
    dedupe_ingest::restore_to_writer(repo, std::slice::from_ref(node), &mut f)?;
    f.sync_all().map_err(|e| cannot("write", &tmp, e))?;
    std::fs::rename(&tmp, dest).map_err(|e| cannot("write", dest, e))?;
    Ok(())
}

// ---------------------------------------------------------------- binlogs

/// The binlog files a server lists in its index file, in order: the index
/// given, or the one `*.index` file in `dir`.
pub fn binlog_files(dir: Option<&Path>, index: Option<&Path>) -> Result<Vec<PathBuf>> {
    let index = match (index, dir) {
        (Some(i), _) => i.to_path_buf(),
        (None, Some(d)) => {
            let mut found: Vec<PathBuf> = std::fs::read_dir(d)
                .map_err(|e| Error::Input(format!("cannot list {}: {e}", d.display())))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "index"))
                .collect();
            found.sort();
            match found.len() {
                1 => found.remove(0),
                0 => return Err(Error::Usage(format!("no binlog index (*.index) in {}: pass --index", d.display()))),
                _ => return Err(Error::Usage(format!("several *.index files in {}: pass --index", d.display()))),
            }
        }
        (None, None) => return Err(Error::Usage("pass --binlog-dir DIR or --index FILE".into())),
    };
    let text = std::fs::read_to_string(&index).map_err(|e| read_error(&index, e))?;
    let base = index.parent().unwrap_or(Path::new("."));
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let p = Path::new(l);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                // The server writes names relative to its datadir, where the index lives.
                base.join(p.file_name().unwrap_or(p.as_os_str()))
            }
        })
        .collect())
}

/// One file of a binlog push.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub file: String,
    pub outcome: Outcome,
}

/// Archives every binlog in `files` (the server's index, in order) not yet
/// archived. A file is complete when its last event is whole and is a
/// rotate or stop event, whether or not it is the last in the index (a
/// stopped server's last file ends with its stop event); the last file
/// without one is the active file, skipped unless `include_active`; any
/// other file without one is stored as partial, to be superseded by a
/// complete copy when one is pushed. Files before the oldest base backup's
/// (`retention_start`) are skipped unless `force`.
pub fn push_binlogs(
    repo: &Indexed,
    name: &str,
    files: &[PathBuf],
    include_active: bool,
    force: bool,
) -> Result<Vec<Pushed>> {
    let existing = archived(repo.catalogue(), name, LogKind::Binlog)?;
    let oldest = if force { None } else { retention_start(repo.catalogue(), name)? };
    let mut report = Vec::new();
    let last = files.len().saturating_sub(1);
    for (i, path) in files.iter().enumerate() {
        let active = i == last;
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default().to_string();
        if before_binlog_start(oldest.as_ref(), &file) && !existing.iter().any(|l| l.file() == file) {
            report.push(Pushed { file, outcome: Outcome::Skipped(Skip::BeforeRetention) });
            continue;
        }
        let len = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            // Purged by the server after an earlier push: nothing to do.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && existing.iter().any(|l| l.file() == file && !l.partial()) =>
            {
                continue
            }
            Err(e) => return Err(read_error(path, e)),
        };
        // Parse exactly the bytes that are archived (the active file grows).
        let f = std::fs::File::open(path).map_err(|e| read_error(path, e))?;
        let facts = dedupe_ingest::binlog::parse(f.take(len)).map_err(|e| {
            let what = format!("{}: {e}", path.display());
            match e {
                BinlogError::Corrupt { .. } | BinlogError::NotABinlog => Error::Damaged(what),
                BinlogError::Io(_) | BinlogError::Unsupported { .. } => Error::Input(what),
            }
        })?;
        // The server ends a file it moves on from with a rotate event (a stop
        // event at shutdown). Without one, the copy may lack the file's end:
        // the active file, a closed file cut short (copied from a full disk,
        // a replica still fetching it), or the last file before a crash. Stored
        // as partial, a complete copy pushed later replaces it, where a
        // "complete" one would refuse it as a conflict.
        let partial = !facts.closed || facts.truncated_tail;
        if active && partial && !include_active {
            report.push(Pushed { file, outcome: Outcome::Skipped(Skip::Active) });
            continue;
        }
        if !partial && !facts.checksums && facts.flavor == "mariadb" {
            verify_without_checksums(path)?;
        }
        let outcome =
            archive(repo, &existing, name, LogKind::Binlog, path, &file, len, partial, LogDetail::Binlog(facts))?;
        report.push(Pushed { file, outcome });
    }
    Ok(report)
}

/// A binlog written without checksums (`binlog_checksum=NONE`) has nothing
/// that catches a flipped bit in an event this parser only skips: before it
/// is archived as complete, the server's own reader must read every event
/// of it (`mariadb-binlog`), as a replay will. Without it installed, or for
/// MySQL's binlogs (which MariaDB's reader does not know, and which have
/// checksums unless turned off), it is archived on this parser's word.
fn verify_without_checksums(path: &Path) -> Result<()> {
    let Ok(tool) = crate::tool::require(&["mariadb-binlog"]) else { return Ok(()) };
    let out = dedupe_ingest::secrets::scrub(&mut std::process::Command::new(&tool))
        .arg(path)
        .stdout(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::Tool(format!("cannot run {tool}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Damaged(format!(
        "{} has no checksums and {tool} cannot read it ({}): a damaged binlog, not archived",
        path.display(),
        dedupe_ingest::producer::last_line(&out.stderr)
    )))
}

/// The numeric suffix of a binlog file name (`mysql-bin.000012` → 12).
pub(crate) fn binlog_seq(file: &str) -> Option<(&str, u64)> {
    let (stem, n) = file.rsplit_once('.')?;
    Some((stem, n.parse().ok()?))
}

/// Names of the files missing between two archived binlogs.
pub fn binlog_gap(prev: &str, next: &str) -> Vec<String> {
    match (binlog_seq(prev), binlog_seq(next)) {
        (Some((s1, a)), Some((s2, b))) if s1 == s2 && b > a + 1 => {
            (a + 1..b).map(|n| format!("{s1}.{n:0width$}", width = prev.len() - s1.len() - 1)).collect()
        }
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------- WAL

/// A WAL file read and named, ready to archive: checked before the
/// repository is opened, so a missing file is reported as such.
#[derive(Clone, Debug)]
pub struct WalFile {
    pub path: PathBuf,
    pub file: String,
    pub len: u64,
    pub facts: WalFacts,
}

impl WalFile {
    /// `pg_bin`: `--pg-bin`, whose pg_waldump reads the commit times first.
    pub fn read(path: &Path, pg_bin: Option<&Path>) -> Result<WalFile> {
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| Error::Usage("the WAL path has no file name".into()))?
            .to_string();
        let len = std::fs::metadata(path).map_err(|e| read_error(path, e))?.len();
        let facts = crate::wal::file_facts(path, &file, len, pg_bin);
        Ok(WalFile { path: path.to_path_buf(), file, len, facts })
    }
}

/// Archives one WAL file (`archive_command`). A segment of another
/// cluster than the name's (`cluster_of`) is refused: two clusters' WAL
/// under one name would share file names and mix in a recovery. A segment
/// before the oldest base's start on its timeline (`retention_start`) is
/// skipped unless `force`: it restores nothing.
pub fn push_wal(repo: &Indexed, name: &str, wal: &WalFile, force: bool) -> Result<Outcome> {
    let all = archived(repo.catalogue(), name, LogKind::Wal)?;
    if let Some(theirs) = wal.facts.system_identifier.as_deref() {
        if let Some((ours, from)) = cluster_of(repo.catalogue(), name, &all)? {
            if ours != theirs {
                return Err(Error::OtherCluster(format!(
                    "{} is WAL of the cluster with system identifier {theirs}, but {name} is the cluster {ours} (from {from}): \
                     archive another cluster under its own --name (a copy of {name} must not archive at all: archive_mode = off)",
                    wal.file
                )));
            }
        }
    }
    if !force && wal.facts.kind == dedupe_ingest::facts::WalFileType::Segment {
        let oldest = retention_start(repo.catalogue(), name)?;
        if let (Some((file, tl)), Some(seg)) = (oldest.as_ref().and_then(|f| f.wal_start()), wal.facts.segment) {
            let size = wal.facts.segment_size.unwrap_or(crate::wal::DEFAULT_SEGMENT_SIZE);
            let start = crate::wal::segment_number(file, size);
            if wal.facts.timeline == Some(tl) && start.is_some_and(|s| seg < s) {
                return Ok(Outcome::Skipped(Skip::BeforeRetention));
            }
        }
    }
    let existing: Vec<LogFile> = all.into_iter().filter(|l| l.file() == wal.file).collect();
    let detail = LogDetail::Wal(wal.facts.clone());
    archive(repo, &existing, name, LogKind::Wal, &wal.path, &wal.file, wal.len, false, detail)
}

/// The system identifier of the cluster archived as `name`, and where it
/// was read: its newest base backup that records one, else its newest
/// archived segment that does.
pub fn cluster_of(cat: &Catalogue, name: &str, archived: &[LogFile]) -> Result<Option<(String, String)>> {
    let snapshots = cat.list(Kind::Snapshot, Some(name))?;
    let from_snapshot = snapshots.iter().rev().find_map(|(id, m)| {
        let pg = dedupe_ingest::facts::SnapshotFacts::of(m).postgresql?;
        Some((pg.system_identifier?, format!("its base backup {}", &id[..id.len().min(8)])))
    });
    if from_snapshot.is_some() {
        return Ok(from_snapshot);
    }
    let newest = archived
        .iter()
        .filter_map(|l| Some((l.manifest.time.as_str(), l.wal()?.system_identifier.clone()?, l.file())))
        .max_by(|a, b| a.0.cmp(b.0));
    Ok(newest.map(|(_, id, file)| (id, format!("its archived {file}"))))
}

/// Whether archiving `wal` should warn that its commit times are unknown:
/// when they are, and the name's newest archived segment had them (or
/// there is none), so the warning comes once when they stop being known,
/// not with every segment after.
pub fn commit_times_lost(cat: &Catalogue, name: &str, wal: &WalFile) -> Result<bool> {
    let unknown = |w: &WalFacts| w.last_commit_time.is_none();
    if !matches!(wal.facts.kind, dedupe_ingest::facts::WalFileType::Segment) || !unknown(&wal.facts) {
        return Ok(false);
    }
    let newest = archived(cat, name, LogKind::Wal)?
        .into_iter()
        .filter(|l| l.wal().is_some_and(|w| w.kind == dedupe_ingest::facts::WalFileType::Segment))
        .max_by_key(|l| l.wal().and_then(|w| w.segment));
    Ok(newest.is_none_or(|l| l.wal().is_some_and(|w| !unknown(w))))
}

/// Fetches one archived WAL file into `dest` (`restore_command`).
pub fn fetch_wal(repo: &Indexed, name: &str, file: &str, dest: &Path) -> Result<()> {
    let found = archived(repo.catalogue(), name, LogKind::Wal)?.into_iter().find(|l| l.file() == file);
    // PostgreSQL asks for files that may not exist (the next timeline's
    // history, the segment after the last): a plain non-zero exit is the answer.
    let log = found.ok_or_else(|| Error::NotArchived(format!("WAL file {file} of {name} is not archived")))?;
    fetch_to(repo, &log, dest)
}

#[cfg(test)]
mod tests {
    use super::binlog_gap;

    #[test]
    fn gaps_are_named_with_their_width() {
        assert_eq!(binlog_gap("mysql-bin.000009", "mysql-bin.000012"), ["mysql-bin.000010", "mysql-bin.000011"]);
        assert!(binlog_gap("mysql-bin.000009", "mysql-bin.000010").is_empty());
        assert!(binlog_gap("a.000001", "b.000003").is_empty());
    }
}
