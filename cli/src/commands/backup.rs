//! `dedupe backup`: a directory (a mounted snapshot), a stream on stdin, or
//! the output of a producer dedupe runs itself.

use crate::ctx::{human, short, Ctx};
use crate::exit::{self, Failure, R};
use crate::report::{now, Sample};
use dedupe_ingest::facts::{Database, SnapshotFacts};
use dedupe_ingest::sniff::{self, Format};
use dedupe_ingest::tar::TarSource;
use dedupe_ingest::xbstream::XbstreamSource;
use dedupe_ingest::{DirSource, StreamSource};
use dedupe_store::{BackupOptions, Source};
use serde_json::json;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// A directory (a mounted snapshot), or `-` for stdin; omit with --command.
    source: Option<String>,
    /// Run this producer and back up its output, e.g. 'mariabackup --backup --stream=xbstream';
    /// unlike a pipe, its failure is seen and nothing is committed.
    #[arg(long)]
    command: Option<String>,
    /// What the stream is: auto (sniffed), xbstream, tar, mysqldump, pg_dump, pg_dump_custom, raw.
    #[arg(long, default_value = "auto")]
    format: String,
    /// Keep the files that arrived when an xbstream ends early, instead of committing nothing.
    #[arg(long)]
    allow_partial: bool,
    /// Commit an empty stream as an empty file instead of refusing it (exit 6):
    /// for a producer that may rightly have nothing to say.
    #[arg(long)]
    allow_empty: bool,
    /// The server this backup is of; `latest` and unchanged-file detection work per name.
    #[arg(long, env = "DEDUPE_NAME")]
    name: Option<String>,
    /// File name a stdin stream gets inside the snapshot.
    #[arg(long, default_value = "stdin")]
    filename: String,
    /// Read every file, even those unchanged since the previous snapshot of this name.
    #[arg(long)]
    force_read: bool,
    /// zstd level for every new chunk (0 stores raw); by default the
    /// repository's, and 2 for PostgreSQL relation files (format-spec §7.4).
    #[arg(long)]
    compression: Option<i32>,
    /// Back up a running server's data directory (--datadir) from a filesystem
    /// snapshot, btrfs, lvm or zfs, taken under a short lock that records the
    /// binlog coordinates (MariaDB/MySQL).
    #[arg(long, requires = "datadir", conflicts_with_all = ["source", "command"])]
    snapshot: Option<String>,
    /// The running server's data directory, for --snapshot.
    #[arg(long, requires = "snapshot")]
    datadir: Option<std::path::PathBuf>,
    /// With --snapshot: the server's socket (else the client's defaults).
    #[arg(long)]
    mysql_socket: Option<String>,
    /// With --snapshot: the server's host (TCP), else the socket.
    #[arg(long)]
    mysql_host: Option<String>,
    /// With --snapshot and --mysql-host: the server's port.
    #[arg(long)]
    mysql_port: Option<u16>,
    /// With --snapshot: the user the lock is taken as (it needs RELOAD; BACKUP STAGE on MariaDB).
    #[arg(long)]
    mysql_user: Option<String>,
    /// An option file with the connection and password, read first (`[client]`).
    #[arg(long)]
    mysql_defaults_file: Option<String>,
    /// With --snapshot of a PostgreSQL data directory: a libpq connection
    /// string ("host=/run/postgresql user=postgres"); else PGHOST, PGPORT, PGUSER.
    #[arg(long)]
    pg_conn: Option<String>,
    /// The snapshot's time instead of now ("YYYY-MM-DD HH:MM:SS" local time, or
    /// RFC 3339): for importing older backups; retention and `latest` go by it.
    #[arg(long)]
    time: Option<String>,
    /// PostgreSQL 17+: the --command (a pg_basebackup, last on its line) takes
    /// an incremental backup against the newest backup of this --name, whose
    /// backup_manifest dedupe hands it (`--incremental=FILE` is appended); it
    /// is stored as the full it stands for. Without such a backup, a full is taken.
    #[arg(long, requires = "command")]
    pg_incremental: bool,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> R {
    let name = a.name.clone().unwrap_or_else(dedupe_store::hostname);
    ctx.report("backup", &name, backup(ctx, a))
}

fn backup(ctx: &Ctx, a: Args) -> R<Vec<Sample>> {
    // Checked before the repository is opened or any input read.
    let time = a.time.as_deref().map(dedupe_recovery::time::parse_time).transpose()?;
    let repo = ctx.indexed()?;
    let name = a.name.clone().unwrap_or_else(dedupe_store::hostname);
    if name.is_empty() {
        return Err(Failure::usage("no --name given and the host has no name"));
    }
    let chunking = repo.config.chunking;
    let mut facts = SnapshotFacts::default();
    let mut producer = None;
    let mut notes: Vec<String> = Vec::new();
    let mut taken = None;
    // The prior backup's manifest handed to pg_basebackup --incremental, kept until the end.
    let mut handed = None;
    let (src, description): (Box<dyn Source>, String) = match (&a.source, &a.command) {
        _ if a.snapshot.is_some() => {
            let (provider, datadir) = (a.snapshot.as_deref().expect("matched"), a.datadir.as_deref().expect("clap"));
            let conn = super::fs_backup::Conn {
                mysql: dedupe_recovery::mysql_lock::MysqlConn {
                    defaults_file: a.mysql_defaults_file.clone(),
                    socket: a.mysql_socket.clone(),
                    host: a.mysql_host.clone(),
                    port: a.mysql_port,
                    user: a.mysql_user.clone(),
                },
                pg: a.pg_conn.clone(),
            };
            let t = super::fs_backup::take(ctx, provider, datadir, &conn)?;
            facts = t.facts.clone();
            let src =
                DirSource::new(&t.snap.datadir, chunking)?.excluding(t.excluded.clone()).with_files(t.files.clone());
            taken = Some(t);
            (Box::new(src), format!("{provider} snapshot of {}", datadir.display()))
        }
        (Some(dir), None) if dir != "-" => {
            let abs = std::fs::canonicalize(dir)
                .map_err(|e| Failure::new(exit::INPUT_FAILED, format!("cannot read {dir}: {e}")))?;
            facts.format = Some("directory".into());
            // A data directory (a mounted snapshot of a stopped or crashed
            // server) says which server it is; `drill` starts that one.
            facts.database = super::fs_backup::database_in(&abs);
            (Box::new(DirSource::new(&abs, chunking)?), format!("directory {}", abs.display()))
        }
        (Some(_), Some(_)) => return Err(Failure::usage("give a source or --command, not both")),
        (None, None) => return Err(Failure::usage("give a directory, `-` for stdin, or --command")),
        (_, command) => {
            // A PostgreSQL incremental is built on a snapshot of this name.
            let bases: Vec<(String, SnapshotFacts)> =
                repo.snapshots(Some(&name))?.into_iter().map(|(id, m)| (id, SnapshotFacts::of(&m))).collect();
            let command = match command {
                Some(c) if a.pg_incremental => match super::pg_incremental::prior_manifest(&repo, &bases)? {
                    Some(prior) => {
                        ctx.note(&format!("an incremental backup against snapshot {}", short(&prior.id)));
                        let c = format!("{c} --incremental={}", prior.path.display());
                        handed = Some(prior);
                        Some(c)
                    }
                    None => {
                        notes.push(format!(
                            "no earlier backup of {name} has a backup_manifest to take an incremental against: this one is a full"
                        ));
                        Some(c.clone())
                    }
                },
                other => other.clone(),
            };
            let command = command.as_ref();
            let (input, description): (Box<dyn std::io::Read + Send>, String) = match command {
                Some(c) => {
                    // Passwords in the command are neither stored nor shown.
                    let shown = dedupe_ingest::producer::masked(c);
                    let (out, report) = dedupe_ingest::producer::spawn(c).map_err(|e| {
                        Failure::new(exit::PRODUCER_FAILED, format!("cannot run the producer `{shown}`: {e}"))
                    })?;
                    producer = Some(report);
                    facts.command = Some(shown.clone());
                    (Box::new(out), format!("command {shown}"))
                }
                None => (Box::new(std::io::stdin()), "stdin".into()),
            };
            let peek = |input| {
                sniff::peek(input).map_err(|e| {
                    // A producer that fails before writing much fails here, while the format is sniffed.
                    producer_failed(ctx, &name, producer.as_ref()).unwrap_or_else(
                        || match dedupe_store::Error::reading(&e) {
                            dedupe_store::Error::Input(_) => {
                                Failure::new(exit::INPUT_FAILED, format!("reading the input failed: {e}"))
                            }
                            other => refused(ctx, &name, &other, None),
                        },
                    )
                })
            };
            let (mut head, mut input) = peek(input)?;
            // A producer's own compression comes off first (`decompress`), so
            // what it compressed is demuxed, deduplicated and delta'd as ever.
            if let (Some(c), "auto" | "tar" | "xbstream") =
                (dedupe_ingest::decompress::Compression::of(&head), a.format.as_str())
            {
                let decoded = dedupe_ingest::decompress::decoder(c, input).map_err(|e| {
                    Failure::new(exit::DAMAGED_INPUT, format!("the {} stream cannot be read: {e}", c.name()))
                })?;
                (head, input) = peek(decoded)?;
                facts.compression = Some(c.name().into());
            }
            let format = match a.format.as_str() {
                // Empty is only ever stored as it is: an empty file.
                _ if head.is_empty() && a.allow_empty => Ok(Format::Raw),
                "auto" => sniff::sniff(&head),
                f => {
                    let format = Format::parse(f).ok_or_else(|| Failure::usage(format!("unknown --format {f}")))?;
                    sniff::not_empty(&head).map(|()| format)
                }
            };
            let format = format.map_err(|e| refused(ctx, &name, &e, producer.as_ref()))?;
            facts.format = Some(format.name().into());
            // A producer is run to make a backup: raw output is worth a word.
            if let (Some(c), Format::Raw, "auto", false) = (command, format, a.format.as_str(), head.is_empty()) {
                let shown = dedupe_ingest::producer::masked(c);
                notes.push(format!(
                    "the output of `{shown}` is no xbstream, tar or dump ({}); it is stored as one raw file",
                    sniff::describe(&head)
                ));
            }
            let src: Box<dyn Source> = match format {
                Format::Xbstream => Box::new(XbstreamSource::new(input, chunking, a.allow_partial)),
                Format::Tar => Box::new(TarSource::with_bases(input, chunking, bases)),
                other => {
                    if a.filename.contains('/') || a.filename.is_empty() || a.filename == "." || a.filename == ".." {
                        return Err(Failure::usage("--filename must be a plain file name"));
                    }
                    let text = String::from_utf8_lossy(&head);
                    match other {
                        Format::MysqlDump => {
                            let mariadb = text.contains("MariaDB dump");
                            facts.database = Some(if mariadb { Database::Mariadb } else { Database::Mysql });
                            facts.mysql = Some(dedupe_ingest::meta::mysqldump_head(&text));
                        }
                        Format::PgDumpPlain | Format::PgDumpCustom => facts.database = Some(Database::Postgresql),
                        _ => {}
                    }
                    Box::new(StreamSource::new(input, &a.filename, chunking))
                }
            };
            (src, description)
        }
    };
    let bar = ctx.progress();
    let log_report = producer.clone();
    let opts = BackupOptions {
        name: name.clone(),
        source_description: description,
        force_read: a.force_read,
        compression_level: a.compression,
        metadata: facts.to_metadata(),
        log: log_report.map(|r| {
            Box::new(move || r.lock().expect("not poisoned").log.clone()) as Box<dyn FnOnce() -> Vec<u8> + Send>
        }),
        kind: dedupe_store::Kind::Snapshot,
        origin: dedupe_store::Origin { time: time.map(|t| t.to_string()), ..Default::default() },
    };
    crate::interrupt::say("no snapshot was committed; the next backup reuses what was already uploaded");
    let result = repo.backup(src, opts, &bar);
    bar.finish();
    drop(handed);
    let removed = taken.map(super::fs_backup::Taken::finish).unwrap_or(Ok(()));
    if let (Err(_), Err(f)) = (&result, &removed) {
        // The backup's failure is the error; this one must not go unsaid.
        eprintln!("dedupe: {}", f.message);
    }
    // A failed producer explains whatever the stream looked like.
    if result.is_err() {
        if let Some(f) = producer_failed(ctx, &name, producer.as_ref()) {
            return Err(f);
        }
    }
    // Damage found under a producer's compression is the compressed stream's.
    let compression = facts.compression.clone();
    let result = result.map_err(|e| {
        let mut f = Failure::from(e);
        if let (Some(c), exit::DAMAGED_INPUT | exit::TRUNCATED) = (&compression, f.code) {
            f.message = format!("{} (read from the {c}-compressed stream)", f.message);
        }
        f
    })?;
    crate::interrupt::say(format!("snapshot {} was committed", short(&result.snapshot_id)));
    removed?;
    let m = &result.manifest;
    let s = &m.stats;
    let warnings: Vec<&String> = notes.iter().chain(&result.warnings).collect();
    for w in &warnings {
        eprintln!("dedupe: warning: {w}");
    }
    let ratios = dedupe_store::Ratios::new(s.bytes, s.new_bytes, s.new_bytes_stored);
    if ctx.json {
        let out = json!({
            "snapshot": result.snapshot_id,
            "name": m.name,
            "time": m.time,
            "files": s.files,
            "files_unchanged": s.files_unchanged,
            "bytes": s.bytes,
            "bytes_read": s.bytes_read,
            "chunks": s.chunks,
            "new_chunks": s.new_chunks,
            "new_bytes": s.new_bytes,
            "new_bytes_stored": s.new_bytes_stored,
            "delta_chunks": s.delta_chunks,
            "delta_bytes": s.delta_bytes,
            "delta_bytes_stored": s.delta_bytes_stored,
            "packs_written": s.packs_written,
            "dedup_ratio": ratios.dedup_ratio,
            "compression_ratio": ratios.compression_ratio,
            "ratio": ratios.ratio,
            "seconds": s.seconds,
            "warnings": warnings,
        });
        outln!("{out}");
    }
    let deltas = if s.delta_chunks > 0 {
        format!(
            ", {} of it as deltas on the previous version ({} stored)",
            human(s.delta_bytes),
            human(s.delta_bytes_stored)
        )
    } else {
        String::new()
    };
    ctx.say(format!(
        "snapshot {} of {} saved: {} in {} files, {} new ({} stored){deltas}, {:.1} s",
        short(&result.snapshot_id),
        m.name,
        human(s.bytes),
        s.files,
        human(s.new_bytes),
        human(s.new_bytes_stored),
        s.seconds
    ));
    let n = m.name.as_str();
    Ok(vec![
        Sample::new(
            "dedupe_backup_last_success_timestamp_seconds",
            "When the last backup succeeded (unix time).",
            n,
            now(),
        ),
        Sample::new("dedupe_backup_duration_seconds", "How long the last successful backup took.", n, s.seconds),
        Sample::new("dedupe_backup_read_bytes", "Bytes the last successful backup read.", n, s.bytes_read as f64),
        Sample::new(
            "dedupe_backup_new_stored_bytes",
            "Bytes the last successful backup added to the repository (compressed, encrypted).",
            n,
            s.new_bytes_stored as f64,
        ),
    ])
}

/// A stream refused from its first bytes (empty, or a damaged or cut format):
/// a failed producer explains it first. Nothing was read past those bytes, so
/// the messages are the sniffer's own, without the truncation hint at
/// --allow-partial (there is nothing to keep).
fn refused(
    ctx: &Ctx,
    name: &str,
    e: &dedupe_store::Error,
    producer: Option<&dedupe_ingest::producer::Shared>,
) -> Failure {
    use dedupe_store::Error as E;
    if let Some(f) = producer_failed(ctx, name, producer) {
        return f;
    }
    match e {
        E::Input(m) => Failure::new(exit::INPUT_FAILED, m.clone()),
        E::Truncated(m) => {
            Failure::new(exit::TRUNCATED, format!("the input stream is truncated: {m}; nothing was committed"))
        }
        other => Failure::from(other),
    }
}

/// The failure of a producer that has exited non-zero, if it has: the
/// lines of its output that say why, and where its whole output was kept.
fn producer_failed(ctx: &Ctx, name: &str, report: Option<&dedupe_ingest::producer::Shared>) -> Option<Failure> {
    let rep = report?.lock().expect("not poisoned");
    let status = rep.status.filter(|s| !s.success())?;
    let kept = match keep_failed_log(&ctx.cache_dir, name, &rep.log) {
        Ok(p) => format!(" (its whole output: {})", p.display()),
        Err(e) => format!(" (its output could not be kept: {e})"),
    };
    Some(Failure::new(
        exit::PRODUCER_FAILED,
        format!(
            "the producer failed ({status}), nothing was committed: {}{kept}",
            dedupe_ingest::producer::what_failed(&rep.log)
        ),
    ))
}

/// Failed runs' output kept per name in the cache directory, the newest
/// `KEPT_FAILED` of each: a snapshot keeps a successful run's (`dedupe log`).
const KEPT_FAILED: usize = 10;

fn keep_failed_log(cache: &std::path::Path, name: &str, log: &[u8]) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = cache.join("failed-producers");
    std::fs::create_dir_all(&dir)?;
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S%.3fZ").to_string();
    let path = dir.join(format!("{safe}-{stamp}.log"));
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?.write_all(log)?;
    let prefix = format!("{safe}-");
    let mut old: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".log"))
        })
        .collect();
    old.sort();
    for p in &old[..old.len().saturating_sub(KEPT_FAILED)] {
        let _ = std::fs::remove_file(p);
    }
    Ok(path)
}
