//! Archiving logs: MySQL/MariaDB binary logs and PostgreSQL WAL files.
//!
//! Each archived file is stored as a log manifest (`logs/<id>`) of the
//! server's `--name`, holding the file as one node and, in its metadata, what
//! was learnt from it: kind, file name, size, BLAKE3 of the bytes (the
//! idempotency check: same name and bytes is a no-op, same name and other
//! bytes is refused), and for binlogs the event facts (times, positions,
//! GTIDs), for WAL the timeline, LSN range and commit times.

use crate::commands::Ctx;
use crate::exit::{self, Failure};
use dedupe_store::catalogue::Catalogue;
use dedupe_store::{BackupOptions, Indexed, Kind, Manifest, Progress};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type R<T = ()> = Result<T, Failure>;

/// An archived log file as the catalogue knows it.
#[derive(Clone, Debug)]
pub struct LogFile {
    pub id: String,
    pub manifest: Manifest,
}

impl LogFile {
    pub fn meta(&self) -> &Value {
        self.manifest.metadata.get("facts").unwrap_or(&Value::Null)
    }
    pub fn file(&self) -> &str {
        self.manifest.metadata.get("file").and_then(Value::as_str).unwrap_or_default()
    }
    pub fn partial(&self) -> bool {
        self.manifest.metadata.get("partial").and_then(Value::as_bool).unwrap_or(false)
    }
    fn blake3(&self) -> &str {
        self.manifest.metadata.get("blake3").and_then(Value::as_str).unwrap_or_default()
    }
    pub fn size(&self) -> u64 {
        self.manifest.metadata.get("size").and_then(Value::as_u64).unwrap_or(0)
    }
}

/// The best copy of every archived file of a name and kind, by file name:
/// a complete copy wins over partial ones, and the newest partial over older.
pub fn archived(cat: &Catalogue, name: &str, kind: &str) -> R<Vec<LogFile>> {
    let mut best: std::collections::BTreeMap<String, LogFile> = Default::default();
    for (id, manifest) in cat.logs(name, kind)? {
        let f = LogFile { id, manifest };
        let key = f.file().to_string();
        let better = match best.get(&key) {
            None => true,
            Some(old) => (old.partial() && !f.partial()) || (old.partial() == f.partial() && f.size() >= old.size()),
        };
        if better {
            best.insert(key, f);
        }
    }
    Ok(best.into_values().collect())
}

/// Reads `len` bytes of `path` once for its BLAKE3 (and whatever `inspect` wants).
fn hash_file(path: &Path, len: u64) -> R<String> {
    let f = std::fs::File::open(path)
        .map_err(|e| Failure::new(exit::INPUT_FAILED, format!("cannot read {}: {e}", path.display())))?;
    let mut h = blake3::Hasher::new();
    let mut r = f.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| Failure::new(exit::INPUT_FAILED, format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

pub enum Outcome {
    Stored { bytes: u64 },
    AlreadyArchived,
}

/// Archives `len` bytes of `path` as log file `file` of `name`, unless the
/// same bytes are already there.
#[allow(clippy::too_many_arguments)]
pub fn archive(
    repo: &Indexed,
    existing: &[LogFile],
    name: &str,
    kind: &str,
    path: &Path,
    file: &str,
    len: u64,
    partial: bool,
    facts: Value,
) -> R<Outcome> {
    let digest = hash_file(path, len)?;
    for old in existing.iter().filter(|o| o.file() == file) {
        if old.blake3() == digest {
            return Ok(Outcome::AlreadyArchived);
        }
        if !old.partial() && !partial {
            return Err(Failure::new(
                exit::CONFLICT,
                format!(
                    "{kind} {file} of {name} is already archived with different content: a different server under the same --name, or a damaged file?"
                ),
            ));
        }
        if !old.partial() && partial {
            // The complete file is archived: the active copy adds nothing.
            return Ok(Outcome::AlreadyArchived);
        }
    }
    let reader = std::fs::File::open(path)
        .map_err(|e| Failure::new(exit::INPUT_FAILED, format!("cannot read {}: {e}", path.display())))?;
    // The digest recorded is of the bytes stored (a server may rewrite a
    // header flag between two reads), and a short read fails the backup
    // before its manifest is written.
    let state = Arc::new(std::sync::Mutex::new((blake3::Hasher::new(), 0u64)));
    let counted =
        Counted { inner: reader.take(len), state: state.clone(), want: len, what: path.display().to_string() };
    let source =
        Hashed { inner: dedupe_ingest::StreamSource::new(Box::new(counted), file, repo.config.chunking), state };
    let now = jiff::Timestamp::now().as_second();
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("kind".into(), json!(kind));
    metadata.insert("file".into(), json!(file));
    metadata.insert("size".into(), json!(len));
    metadata.insert("blake3".into(), json!(digest));
    metadata.insert("partial".into(), json!(partial));
    metadata.insert("archived_at".into(), json!(now));
    metadata.insert("facts".into(), facts);
    let opts = BackupOptions {
        name: name.to_string(),
        source_description: format!("{kind} {}", path.display()),
        force_read: true,
        compression_level: repo.config.compression_level,
        metadata,
        log: None,
        kind: Kind::Log,
    };
    repo.backup(Box::new(source), opts, Arc::new(Progress::default()))?;
    Ok(Outcome::Stored { bytes: len })
}

type HashState = Arc<std::sync::Mutex<(blake3::Hasher, u64)>>;

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

    fn metadata(&self) -> std::collections::BTreeMap<String, Value> {
        let st = self.state.lock().expect("not poisoned");
        [("blake3".to_string(), json!(st.0.clone().finalize().to_hex().to_string()))].into()
    }
}

/// Writes the content of an archived log file to `dest` (via a temporary
/// name, so a reader never sees half a file).
pub fn fetch_to(repo: &Indexed, log: &LogFile, dest: &Path) -> R<()> {
    let tree = repo.read_tree(&log.manifest)?;
    let node = tree.nodes.first().ok_or_else(|| Failure::new(exit::CORRUPT, format!("log {} has no file", log.id)))?;
    let tmp = dest.with_extension("dedupe-tmp");
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| Failure::new(exit::STORAGE, format!("cannot create {}: {e}", tmp.display())))?;
    dedupe_ingest::restore_to_writer(repo, std::slice::from_ref(node), &mut f)?;
    f.sync_all().map_err(|e| Failure::new(exit::STORAGE, format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, dest)
        .map_err(|e| Failure::new(exit::STORAGE, format!("cannot write {}: {e}", dest.display())))?;
    Ok(())
}

// ---------------------------------------------------------------- binlogs

/// The binlog files a server lists in its index file, in order.
fn binlog_files(dir: Option<&Path>, index: Option<&Path>) -> R<Vec<PathBuf>> {
    let index = match (index, dir) {
        (Some(i), _) => i.to_path_buf(),
        (None, Some(d)) => {
            let mut found: Vec<PathBuf> = std::fs::read_dir(d)
                .map_err(|e| Failure::new(exit::INPUT_FAILED, format!("cannot list {}: {e}", d.display())))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "index"))
                .collect();
            found.sort();
            match found.len() {
                1 => found.remove(0),
                0 => return Err(Failure::usage(format!("no binlog index (*.index) in {}: pass --index", d.display()))),
                _ => return Err(Failure::usage(format!("several *.index files in {}: pass --index", d.display()))),
            }
        }
        (None, None) => return Err(Failure::usage("pass --binlog-dir DIR or --index FILE")),
    };
    let text = std::fs::read_to_string(&index)
        .map_err(|e| Failure::new(exit::INPUT_FAILED, format!("cannot read {}: {e}", index.display())))?;
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

pub fn binlog_push(ctx: &Ctx, name: &str, dir: Option<&Path>, index: Option<&Path>, include_active: bool) -> R {
    let files = binlog_files(dir, index)?;
    let repo = ctx.indexed()?;
    let cat = Catalogue::open(&repo, ctx.cache_base())?;
    let existing = archived(&cat, name, "binlog")?;
    let mut report = Vec::new();
    let last = files.len().saturating_sub(1);
    for (i, path) in files.iter().enumerate() {
        let active = i == last;
        if active && !include_active {
            continue;
        }
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default().to_string();
        let len = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            // Purged by the server after an earlier push: nothing to do.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && existing.iter().any(|l| l.file() == file && !l.partial()) =>
            {
                continue
            }
            Err(e) => return Err(Failure::new(exit::INPUT_FAILED, format!("cannot read {}: {e}", path.display()))),
        };
        // Parse exactly the bytes that are archived (the active file grows).
        let f = std::fs::File::open(path)
            .map_err(|e| Failure::new(exit::INPUT_FAILED, format!("cannot read {}: {e}", path.display())))?;
        let facts = dedupe_ingest::binlog::parse(f.take(len))
            .map_err(|e| Failure::new(exit::INPUT_FAILED, format!("{}: {e}", path.display())))?;
        // Partial means "copied while the server was still writing it": a
        // file that does not end in a rotate after a crash is still complete.
        let partial = active;
        let facts = serde_json::to_value(&facts).expect("facts serialize");
        let outcome = archive(&repo, &existing, name, "binlog", path, &file, len, partial, facts)?;
        let (status, bytes) = match outcome {
            Outcome::Stored { bytes, .. } => (if partial { "stored (partial)" } else { "stored" }, bytes),
            Outcome::AlreadyArchived => ("already archived", 0),
        };
        report.push(json!({"file": file, "status": status, "bytes": bytes}));
    }
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        for r in &report {
            if r["status"] != "already archived" {
                ctx.say(format!(
                    "{}: {}",
                    r["file"].as_str().unwrap_or_default(),
                    r["status"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    Ok(())
}

/// The numeric suffix of a binlog file name (`mysql-bin.000012` → 12).
pub fn binlog_seq(file: &str) -> Option<(String, u64)> {
    let (stem, n) = file.rsplit_once('.')?;
    Some((stem.to_string(), n.parse().ok()?))
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

fn unix_to_local(t: u64) -> String {
    jiff::Timestamp::from_second(t as i64)
        .map(|ts| ts.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

pub fn binlog_list(ctx: &Ctx, name: &str) -> R {
    let repo = ctx.unlocked()?;
    let cat = Catalogue::open(&repo, ctx.cache_base())?;
    let files = archived(&cat, name, "binlog")?;
    let mut rows = Vec::new();
    let mut prev: Option<&LogFile> = None;
    for f in &files {
        let missing_before = prev.map(|p| binlog_gap(p.file(), f.file())).unwrap_or_default();
        let m = f.meta();
        rows.push(json!({
            "id": f.id,
            "file": f.file(),
            "size": f.size(),
            "partial": f.partial(),
            "first_time": m["first_time"],
            "last_time": m["last_time"],
            "first_position": m["first_position"],
            "end_position": m["end_position"],
            "server_id": m["server_id"],
            "gtid_state_at_start": m["gtid_state_at_start"],
            "last_gtid": m["last_gtid"],
            "missing_before": missing_before,
        }));
        prev = Some(f);
    }
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
        return Ok(());
    }
    ctx.say(format!(
        "{:<20} {:>12} {:<19} {:<19} {:>10}  last gtid",
        "file", "size", "first event", "last event", "end pos"
    ));
    for r in &rows {
        for m in r["missing_before"].as_array().into_iter().flatten() {
            ctx.say(format!("{:<20} MISSING: the archive has a gap here", m.as_str().unwrap_or_default()));
        }
        ctx.say(format!(
            "{:<20} {:>12} {:<19} {:<19} {:>10}  {}{}",
            r["file"].as_str().unwrap_or_default(),
            crate::commands::human(r["size"].as_u64().unwrap_or(0)),
            unix_to_local(r["first_time"].as_u64().unwrap_or(0)),
            unix_to_local(r["last_time"].as_u64().unwrap_or(0)),
            r["end_position"],
            r["last_gtid"].as_str().unwrap_or("-"),
            if r["partial"] == true { "  (partial: the active file)" } else { "" }
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- WAL

/// What a WAL archive file name says: segments `TTTTTTTTXXXXXXXXYYYYYYYY`,
/// timeline history `TTTTTTTT.history`, backup history `…​.backup`, `…​.partial`.
pub fn wal_name_facts(file: &str, size: u64) -> Value {
    let hex8 = |s: &str| u64::from_str_radix(s, 16).ok();
    if let Some(tl) = file.strip_suffix(".history").and_then(hex8) {
        return json!({"type": "history", "timeline": tl});
    }
    let (seg, kind) = match file.split_once('.') {
        Some((seg, rest)) if rest.ends_with("backup") => (seg, "backup"),
        Some((seg, "partial")) => (seg, "partial"),
        Some(_) => return json!({"type": "other"}),
        None => (file, "segment"),
    };
    if seg.len() != 24 || !seg.bytes().all(|b| b.is_ascii_hexdigit()) {
        return json!({"type": "other"});
    }
    let (tl, log, segno) =
        (hex8(&seg[..8]).unwrap_or(0), hex8(&seg[8..16]).unwrap_or(0), hex8(&seg[16..]).unwrap_or(0));
    // A full segment's size is the cluster's segment size (a power of two,
    // 1 MiB to 1 GiB); other files, and the planner, pass it in.
    let seg_size = if size.is_power_of_two() && (1 << 20..=1 << 30).contains(&size) { size } else { 16 << 20 };
    let per_log = 0x1_0000_0000u64 / seg_size;
    let start = (log * per_log + segno) * seg_size;
    let lsn = |v: u64| format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff);
    json!({
        "type": kind,
        "timeline": tl,
        "segment": log * per_log + segno,
        "segment_size": seg_size,
        "start_lsn": lsn(start),
        "end_lsn": lsn(start + seg_size),
    })
}

/// Every pg_waldump on the machine: the one on PATH, then Debian's per
/// version, newest first. A pg_waldump reads only its own version's WAL, so
/// each is tried until one reads the file.
fn pg_waldumps() -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            let p = e.path().join("bin/pg_waldump");
            p.exists().then_some((version, p))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    which("pg_waldump").into_iter().chain(found.into_iter().map(|(_, p)| p)).collect()
}

fn which(tool: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(tool)).find(|p| p.is_file()))
        .ok_or(())
}

/// First and last commit times in a WAL segment (unix seconds), read with
/// pg_waldump: WAL records are PostgreSQL's own format, and its own tool
/// reads them across versions. `Some(None)` when it read the segment and
/// found no commit; `None` when it could not tell (no pg_waldump, no record
/// read at all, a time it could not read).
fn wal_commit_times(path: &Path) -> Option<Option<(i64, i64)>> {
    pg_waldumps().into_iter().find_map(|tool| {
        // pg_waldump prints times in its local zone with the zone's abbreviation
        // (CEST, IST, AEST...), which is no zone name: in UTC it says "UTC".
        // (It exits 1 at the end of an ordinary segment: the output is what counts.)
        let out = std::process::Command::new(tool)
            .arg(path)
            .env("TZ", "UTC")
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        commit_times(&String::from_utf8_lossy(&out.stdout))
    })
}

/// The commit times in pg_waldump's output (see `wal_commit_times`).
fn commit_times(text: &str) -> Option<Option<(i64, i64)>> {
    let mut first = None;
    let mut last = None;
    let mut records = 0usize;
    for line in text.lines() {
        if line.starts_with("rmgr: ") {
            records += 1;
        }
        // Every record recovery can stop at: "desc: COMMIT 2026-11-21 05:00:00.123456 UTC; ...",
        // "desc: ABORT ...", and "desc: COMMIT_PREPARED 725: 2026-..." (ABORT_PREPARED).
        let Some(rest) = ["desc: COMMIT ", "desc: ABORT ", "desc: COMMIT_PREPARED ", "desc: ABORT_PREPARED "]
            .iter()
            .find_map(|k| line.find(k).map(|i| &line[i + k.len()..]))
        else {
            continue;
        };
        let rest = match rest.split_once(": ") {
            Some((xid, time)) if !xid.is_empty() && xid.bytes().all(|b| b.is_ascii_digit()) => time,
            _ => rest,
        };
        let end = rest.find(';').unwrap_or(rest.len());
        let t = parse_pg_time(rest[..end].trim())?;
        first.get_or_insert(t);
        last = Some(t);
    }
    // Nothing read (another major version's pg_waldump, a damaged file) is not "no commit".
    if records == 0 {
        return None;
    }
    Some(first.zip(last))
}

/// `2026-11-21 05:00:00.123456 UTC` (or another zone name jiff knows).
fn parse_pg_time(s: &str) -> Option<i64> {
    let (dt, zone) = s.rsplit_once(' ')?;
    let dt: jiff::civil::DateTime = dt.parse().ok()?;
    let tz = jiff::tz::TimeZone::get(zone).ok()?;
    Some(dt.to_zoned(tz).ok()?.timestamp().as_second())
}

pub fn wal_push(ctx: &Ctx, name: &str, path: &Path) -> R {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| Failure::usage("the WAL path has no file name"))?
        .to_string();
    let len = std::fs::metadata(path)
        .map_err(|e| Failure::new(exit::INPUT_FAILED, format!("cannot read {}: {e}", path.display())))?
        .len();
    let mut facts = wal_name_facts(&file, len);
    if facts["type"] == "segment" || facts["type"] == "partial" {
        // Null when pg_waldump found no commit; absent when it could not look.
        if let Some(times) = wal_commit_times(path) {
            facts["first_commit_time"] = json!(times.map(|t| t.0));
            facts["last_commit_time"] = json!(times.map(|t| t.1));
        }
    }
    let repo = ctx.indexed()?;
    let cat = Catalogue::open(&repo, ctx.cache_base())?;
    let existing: Vec<LogFile> = archived(&cat, name, "wal")?.into_iter().filter(|l| l.file() == file).collect();
    match archive(&repo, &existing, name, "wal", path, &file, len, false, facts)? {
        Outcome::Stored { bytes, .. } => ctx.say(format!("{file}: stored ({})", crate::commands::human(bytes))),
        Outcome::AlreadyArchived => ctx.say(format!("{file}: already archived")),
    }
    Ok(())
}

pub fn wal_fetch(ctx: &Ctx, name: &str, file: &str, dest: &Path) -> R {
    let repo = ctx.indexed()?;
    let cat = Catalogue::open(&repo, ctx.cache_base())?;
    let found = archived(&cat, name, "wal")?.into_iter().find(|l| l.file() == file);
    // PostgreSQL asks for files that may not exist (the next timeline's
    // history, the segment after the last): a plain non-zero exit is the answer.
    let log = found.ok_or_else(|| Failure::new(exit::MISSING, format!("WAL file {file} of {name} is not archived")))?;
    fetch_to(&repo, &log, dest)
}

#[cfg(test)]
mod tests {
    use super::commit_times;

    const DUMP: &str = "\
rmgr: Heap        len (rec/tot):     59/    59, tx:        725, lsn: 0/01516768, prev 0/01516730, desc: INSERT off 1 flags 0x08, blkref #0: rel 1663/5/16384 blk 0
rmgr: Transaction len (rec/tot):     66/    66, tx:        723, lsn: 0/015006D0, prev 0/01500630, desc: COMMIT 2026-11-21 06:07:39.893684 UTC; inval msgs: snapshot 2396
rmgr: Transaction len (rec/tot):    242/   242, tx:        725, lsn: 0/015167A8, prev 0/01516788, desc: PREPARE gid p1: 2026-11-21 06:07:40.163663 UTC
rmgr: Transaction len (rec/tot):     42/    42, tx:          0, lsn: 0/015168A0, prev 0/015167A8, desc: COMMIT_PREPARED 725: 2026-11-21 06:07:41.163981 UTC
rmgr: Transaction len (rec/tot):     42/    42, tx:          0, lsn: 0/01516A08, prev 0/01516910, desc: ABORT_PREPARED 726: 2026-11-21 06:07:42.164514 UTC
";

    #[test]
    fn commits_aborts_and_prepared_ones_are_read() {
        let t = 1_795_241_259; // 2026-11-21 06:07:39 UTC
        assert_eq!(commit_times(DUMP), Some(Some((t, t + 3))));
    }

    #[test]
    fn no_commit_is_not_unknown() {
        let first = DUMP.lines().next().unwrap();
        assert_eq!(commit_times(first), Some(None));
        // Nothing read at all (another version's pg_waldump, a damaged file): unknown.
        assert_eq!(commit_times(""), None);
        // A time in a zone abbreviation that names no zone: unknown, not "no commit".
        assert_eq!(commit_times(&DUMP.replace("UTC", "IST")), None);
    }
}
