//! One function per command.

use crate::exit::{self, Failure};
use crate::password::{new_password, PasswordSource};
use crate::{BinlogCommand, CatalogueCommand, Cli, Command, KeyCommand, RepairCommand, WalCommand};
use dedupe_ingest::sniff;
use dedupe_ingest::tar::TarSource;
use dedupe_ingest::xbstream::XbstreamSource;
use dedupe_ingest::{
    restore_as_tar, restore_as_xbstream, restore_to_dir, restore_to_writer, DirSource, Selection, StreamSource,
};
use dedupe_store::backend::ObjectStoreBackend;
use dedupe_store::keyfile::KdfParams;
use dedupe_store::{BackupOptions, Indexed, NodeKind, Progress, Repository, Source, Unlocked};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

type R<T = ()> = Result<T, Failure>;

pub struct Ctx {
    repo: PathBuf,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    cache_dir: PathBuf,
    json: bool,
    quiet: bool,
}

fn default_cache() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("dedupe");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/dedupe");
    }
    PathBuf::from("/var/tmp/dedupe-cache")
}

impl Ctx {
    fn backend(&self) -> R<Arc<ObjectStoreBackend>> {
        if !self.repo.is_dir() {
            return Err(Failure::new(
                exit::NO_REPOSITORY,
                format!("no dedupe repository at {}: run `dedupe init` first, or check --repo", self.repo.display()),
            ));
        }
        Ok(Arc::new(ObjectStoreBackend::local(&self.repo)?))
    }

    pub fn cache_base(&self) -> &Path {
        &self.cache_dir
    }

    pub fn json(&self) -> bool {
        self.json
    }

    /// The password options as arguments for a command dedupe itself
    /// writes down (PostgreSQL's restore_command): never the password itself.
    pub fn password_args(&self) -> Option<Vec<String>> {
        if let Some(f) = &self.password_file {
            let abs = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
            return Some(vec!["--password-file".into(), abs.display().to_string()]);
        }
        self.password_command.as_ref().map(|c| vec!["--password-command".into(), c.clone()])
    }

    pub fn repo_path(&self) -> &Path {
        &self.repo
    }

    fn password(&self) -> R<String> {
        PasswordSource { file: self.password_file.as_deref(), command: self.password_command.as_deref() }.get()
    }

    pub fn unlocked(&self) -> R<Unlocked> {
        let repo = Repository::open(self.backend()?)?;
        Ok(repo.unlock(self.password()?.as_bytes())?)
    }

    pub fn indexed(&self) -> R<Indexed> {
        Ok(self.unlocked()?.indexed(&self.cache_dir)?)
    }

    fn progress_bar(&self, len: Option<u64>) -> ProgressBar {
        let target = if self.quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let pb = match len {
            Some(n) => ProgressBar::with_draw_target(Some(n), target).with_style(
                ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}")
                    .expect("template is valid"),
            ),
            None => ProgressBar::with_draw_target(None, target).with_style(
                ProgressStyle::with_template("{spinner} {bytes} read, {binary_bytes_per_sec} {msg}")
                    .expect("template is valid"),
            ),
        };
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    }

    /// A remark on stderr unless --quiet.
    pub fn note(&self, s: &str) {
        if !self.quiet {
            eprintln!("dedupe: {s}");
        }
    }

    /// A human summary goes to stdout unless --quiet or --json.
    pub fn say(&self, s: impl AsRef<str>) {
        if !self.quiet && !self.json {
            println!("{}", s.as_ref());
        }
    }
}

pub fn human(n: u64) -> String {
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

pub fn run(cli: Cli) -> R {
    let repo = cli.repo.clone().ok_or_else(|| Failure::usage("no repository given: pass --repo or set DEDUPE_REPO"))?;
    let ctx = Ctx {
        repo,
        password_file: cli.password_file,
        password_command: cli.password_command,
        cache_dir: cli.cache_dir.unwrap_or_else(default_cache),
        json: cli.json,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Init => init(&ctx),
        Command::Backup { source, name, filename, force_read, compression, format, allow_partial, command } => {
            backup(&ctx, BackupArgs { source, name, filename, force_read, compression, format, allow_partial, command })
        }
        Command::Restore { snapshot, until, name, target, stdout, path, force, prepare } => {
            restore(&ctx, RestoreArgs { snapshot, until, name, target, stdout, path, force, prepare })
        }
        Command::Log { snapshot, name } => log(&ctx, &snapshot, name.as_deref()),
        Command::Binlog { command } => match command {
            BinlogCommand::Push { name, binlog_dir, index, include_active } => {
                crate::logs::binlog_push(&ctx, &name, binlog_dir.as_deref(), index.as_deref(), include_active)
            }
            BinlogCommand::List { name } => crate::logs::binlog_list(&ctx, &name),
            BinlogCommand::Replay { name, target, until, until_gtid, until_position } => crate::pitr::binlog_replay(
                &ctx,
                &name,
                &target,
                until.as_deref(),
                until_gtid.as_deref(),
                until_position.as_deref(),
            ),
        },
        Command::Wal { command } => match command {
            WalCommand::Push { name, path } => crate::logs::wal_push(&ctx, &name, &path),
            WalCommand::Fetch { name, file, path } => crate::logs::wal_fetch(&ctx, &name, &file, &path),
        },
        Command::Catalogue { command: CatalogueCommand::Rebuild } => {
            let repo = ctx.unlocked()?;
            dedupe_store::catalogue::Catalogue::rebuild(&repo, ctx.cache_base())?;
            ctx.say("catalogue rebuilt from the repository");
            Ok(())
        }
        Command::Timeline { name } => crate::pitr::timeline(&ctx, name.as_deref()),
        Command::Lsn { name } => crate::pitr::lsn(&ctx, name.as_deref()),
        Command::Snapshots { name } => snapshots(&ctx, name.as_deref()),
        Command::Ls { snapshot, name } => ls(&ctx, &snapshot, name.as_deref()),
        Command::Stats => stats(&ctx),
        Command::Key { command } => key(&ctx, command),
        Command::Repair { command: RepairCommand::Index } => repair_index(&ctx),
    }
}

fn init(ctx: &Ctx) -> R {
    let password = if ctx.password_file.is_some()
        || ctx.password_command.is_some()
        || std::env::var_os("DEDUPE_PASSWORD").is_some()
    {
        ctx.password()?
    } else {
        new_password(None, "DEDUPE_PASSWORD")?
    };
    std::fs::create_dir_all(&ctx.repo)
        .map_err(|e| Failure::new(exit::STORAGE, format!("cannot create {}: {e}", ctx.repo.display())))?;
    let repo = Repository::init(ctx.backend()?, password.as_bytes(), KdfParams::from_env())?;
    if ctx.json {
        println!("{}", json!({"repository": ctx.repo, "id": repo.config.id}));
    }
    ctx.say(format!("created repository {} at {}", &repo.config.id[..8], ctx.repo.display()));
    Ok(())
}

pub struct BackupArgs {
    pub source: Option<String>,
    pub name: Option<String>,
    pub filename: String,
    pub force_read: bool,
    pub compression: Option<i32>,
    pub format: String,
    pub allow_partial: bool,
    pub command: Option<String>,
}

fn backup(ctx: &Ctx, a: BackupArgs) -> R {
    let repo = ctx.indexed()?;
    let name = a.name.clone().unwrap_or_else(dedupe_store::keyfile::hostname);
    if name.is_empty() {
        return Err(Failure::usage("no --name given and the host has no name"));
    }
    let chunking = repo.config.chunking;
    let mut metadata = std::collections::BTreeMap::new();
    let mut producer = None;
    let (src, description): (Box<dyn Source>, String) = match (&a.source, &a.command) {
        (Some(dir), None) if dir != "-" => {
            let abs = std::fs::canonicalize(dir)
                .map_err(|e| Failure::new(exit::INPUT_FAILED, format!("cannot read {dir}: {e}")))?;
            metadata.insert("format".into(), json!("directory"));
            (Box::new(DirSource::new(&abs, chunking)?), format!("directory {}", abs.display()))
        }
        (Some(_), Some(_)) => return Err(Failure::usage("give a source or --command, not both")),
        (None, None) => return Err(Failure::usage("give a directory, `-` for stdin, or --command")),
        (_, command) => {
            let (input, description): (Box<dyn std::io::Read + Send>, String) = match command {
                Some(c) => {
                    let (out, report) = dedupe_ingest::producer::spawn(c).map_err(|e| {
                        Failure::new(exit::PRODUCER_FAILED, format!("cannot run the producer `{c}`: {e}"))
                    })?;
                    producer = Some(report);
                    metadata.insert("command".into(), json!(c));
                    (Box::new(out), format!("command {c}"))
                }
                None => (Box::new(std::io::stdin()), "stdin".into()),
            };
            let (head, input) = sniff::peek(input).map_err(|e| {
                // A producer that fails before writing much fails here, while the format is sniffed.
                producer_failed(producer.as_ref())
                    .unwrap_or_else(|| Failure::new(exit::INPUT_FAILED, format!("reading the input failed: {e}")))
            })?;
            let format = match a.format.as_str() {
                "auto" => sniff::sniff(&head),
                f => sniff::Format::parse(f).ok_or_else(|| Failure::usage(format!("unknown --format {f}")))?,
            };
            metadata.insert("format".into(), json!(format.name()));
            let src: Box<dyn Source> = match format {
                sniff::Format::Xbstream => Box::new(XbstreamSource::new(input, chunking, a.allow_partial)),
                sniff::Format::Tar => Box::new(TarSource::new(input, chunking)),
                other => {
                    if a.filename.contains('/') || a.filename.is_empty() || a.filename == "." || a.filename == ".." {
                        return Err(Failure::usage("--filename must be a plain file name"));
                    }
                    let text = String::from_utf8_lossy(&head);
                    match other {
                        sniff::Format::MysqlDump => {
                            let db = if text.contains("MariaDB dump") { "mariadb" } else { "mysql" };
                            metadata.insert("database".into(), json!(db));
                            metadata.insert(
                                "mysql".into(),
                                serde_json::Value::Object(dedupe_ingest::meta::mysqldump_head(&text)),
                            );
                        }
                        sniff::Format::PgDumpPlain | sniff::Format::PgDumpCustom => {
                            metadata.insert("database".into(), json!("postgresql"));
                        }
                        _ => {}
                    }
                    Box::new(StreamSource::new(input, &a.filename, chunking))
                }
            };
            (src, description)
        }
    };
    let progress = Arc::new(Progress::default());
    let pb = ctx.progress_bar(None);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (pb, progress, done) = (pb.clone(), progress.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                pb.set_position(progress.bytes_read.load(Ordering::Relaxed));
                pb.set_message(format!("{} new", human(progress.bytes_new.load(Ordering::Relaxed))));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let log_report = producer.clone();
    let opts = BackupOptions {
        name,
        source_description: description,
        force_read: a.force_read,
        compression_level: a.compression.unwrap_or(repo.config.compression_level),
        metadata,
        log: log_report.map(|r| {
            Box::new(move || r.lock().expect("not poisoned").log.clone()) as Box<dyn FnOnce() -> Vec<u8> + Send>
        }),
        kind: dedupe_store::Kind::Snapshot,
    };
    let result = repo.backup(src, opts, progress);
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    pb.finish_and_clear();
    // A failed producer explains whatever the stream looked like.
    if result.is_err() {
        if let Some(f) = producer_failed(producer.as_ref()) {
            return Err(f);
        }
    }
    let result = result?;
    let m = &result.manifest;
    let s = &m.stats;
    for w in &result.warnings {
        eprintln!("dedupe: warning: {w}");
    }
    let ratio = if s.new_bytes_stored == 0 { f64::INFINITY } else { s.bytes as f64 / s.new_bytes_stored as f64 };
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
            "packs_written": s.packs_written,
            "dedup_ratio": if ratio.is_finite() { json!(ratio) } else { json!(null) },
            "seconds": s.seconds,
            "warnings": result.warnings,
        });
        println!("{out}");
    }
    ctx.say(format!(
        "snapshot {} of {} saved: {} in {} files, {} new ({} stored), {:.1} s",
        &result.snapshot_id[..8],
        m.name,
        human(s.bytes),
        s.files,
        human(s.new_bytes),
        human(s.new_bytes_stored),
        s.seconds
    ));
    Ok(())
}

/// The failure of a producer that has exited non-zero, if it has.
fn producer_failed(report: Option<&dedupe_ingest::producer::Shared>) -> Option<Failure> {
    let rep = report?.lock().expect("not poisoned");
    let status = rep.status.filter(|s| !s.success())?;
    Some(Failure::new(
        exit::PRODUCER_FAILED,
        format!(
            "the producer failed ({status}), nothing was committed: {}",
            dedupe_ingest::producer::last_line(&rep.log)
        ),
    ))
}

fn dir_is_empty(p: &Path) -> R<bool> {
    match std::fs::read_dir(p) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Failure::new(exit::STORAGE, format!("cannot read {}: {e}", p.display()))),
    }
}

pub struct RestoreArgs {
    pub snapshot: Option<String>,
    pub until: Option<String>,
    pub name: Option<String>,
    pub target: Option<std::path::PathBuf>,
    pub stdout: bool,
    pub path: Option<String>,
    pub force: bool,
    pub prepare: bool,
}

fn restore(ctx: &Ctx, a: RestoreArgs) -> R {
    let RestoreArgs { snapshot, until, name, target, stdout, path, force, prepare } = a;
    let (name, target) = (name.as_deref(), target.as_deref());
    if prepare && target.is_none() {
        return Err(Failure::usage("--prepare needs --target"));
    }
    if until.is_some() && (target.is_none() || path.is_some()) {
        return Err(Failure::usage("--until restores a whole data directory: give --target, and no --path"));
    }
    let until = until.map(|u| crate::pitr::parse_until(&u).map(|t| (t, u))).transpose()?;
    // Check the target before anything slow or password-protected.
    if let Some(t) = target {
        if !force && !dir_is_empty(t)? {
            return Err(Failure::new(
                exit::TARGET_NOT_EMPTY,
                format!("{} is not empty: restore into an empty directory, or pass --force to overwrite", t.display()),
            ));
        }
    }
    let repo = ctx.indexed()?;
    // With --until, the plan picks the base and checks the logs reach the time.
    let planned = match &until {
        Some((t, _)) => Some(crate::pitr::plan(ctx, &repo, name, *t)?),
        None => None,
    };
    let (id, manifest) = match &planned {
        Some((id, m, _)) => (id.clone(), m.clone()),
        None => repo.find_snapshot(snapshot.as_deref().unwrap_or("latest"), name)?,
    };
    let incremental = manifest.metadata.get("mysql").and_then(|m| m.get("backup_type")).and_then(|v| v.as_str())
        == Some("incremental");
    if incremental && prepare {
        let target = target.expect("checked above");
        crate::prepare::restore_chain(ctx, &repo, &id, &manifest, target)?;
        if let (Some((t, text)), Some((_, base, n))) = (&until, &planned) {
            crate::pitr::finish_until(ctx, base, n, target, *t, text)?;
        }
        return Ok(());
    }
    let tree = repo.read_tree(&manifest)?;
    let nodes = Selection { path }.apply(tree)?;
    // A pg_basebackup with tablespaces lists them in tablespace_map; their
    // contents are in other tars than this snapshot, so the data directory
    // would start with dangling tablespaces. Refuse before writing anything.
    if manifest.metadata.get("database").and_then(|v| v.as_str()) == Some("postgresql") && target.is_some() {
        if let Some(map) = nodes.iter().find(|n| n.path == "tablespace_map" && n.size > 0) {
            return Err(Failure::new(
                exit::NOT_RESTORABLE,
                format!(
                    "snapshot {} has tablespaces (tablespace_map, {} bytes) whose data is not in it: back up the tablespace tars too (pg_basebackup -Ft -D DIR, then dedupe backup DIR), or restore with --path",
                    &id[..8],
                    map.size
                ),
            ));
        }
    }
    let started = std::time::Instant::now();
    let format = manifest.metadata.get("format").and_then(|v| v.as_str()).unwrap_or("raw");
    if stdout {
        // A File on fd 1 rather than Stdout: unbuffered by lines, and Send for the writer thread.
        let fd = std::os::fd::AsFd::as_fd(&std::io::stdout())
            .try_clone_to_owned()
            .map_err(|e| Failure::new(exit::STORAGE, format!("cannot use stdout: {e}")))?;
        let mut out = std::fs::File::from(fd);
        // A demuxed stream goes out in its own format; one file goes out as its bytes.
        let files = nodes.iter().filter(|n| n.kind == NodeKind::File).count();
        let bytes = match format {
            "xbstream" if files != 1 || path_is_dir(&nodes) => restore_as_xbstream(&repo, &nodes, &mut out)?,
            "tar" | "directory" if files != 1 || path_is_dir(&nodes) => restore_as_tar(&repo, &nodes, &mut out)?,
            _ if files > 1 => {
                return Err(Failure::usage(format!(
                    "the selection has {files} files: --stdout writes one; pick one with --path or use --target"
                )))
            }
            _ => restore_to_writer(&repo, &nodes, &mut out)?,
        };
        if ctx.json {
            eprintln!("{}", json!({"snapshot": id, "bytes": bytes, "seconds": started.elapsed().as_secs_f64()}));
        }
        return Ok(());
    }
    let target = target.expect("clap requires --target without --stdout");
    std::fs::create_dir_all(target)
        .map_err(|e| Failure::new(exit::STORAGE, format!("cannot create {}: {e}", target.display())))?;
    let total: u64 = nodes.iter().filter(|n| n.kind == NodeKind::File).map(|n| n.size).sum();
    let pb = ctx.progress_bar(Some(total));
    let report = restore_to_dir(&repo, &nodes, target, &|n| pb.set_position(n));
    pb.finish_and_clear();
    let report = report?;
    for w in &report.warnings {
        eprintln!("dedupe: warning: {w}");
    }
    let database = manifest.metadata.get("database").and_then(|v| v.as_str()).unwrap_or_default();
    if database == "postgresql" {
        // PostgreSQL refuses to start on a data directory it does not own. A tar
        // stream has no entry for the directory itself, so it gets the owner of
        // the cluster's files; without root that fails, and the restoring user
        // owns everything anyway (restore_to_dir has warned).
        let has_root = nodes.iter().any(|n| n.path == dedupe_ingest::dir::ROOT);
        if let Some(n) = nodes.iter().find(|n| n.path == "PG_VERSION").filter(|_| !has_root) {
            match std::os::unix::fs::chown(target, Some(n.uid), Some(n.gid)) {
                Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => {
                    return Err(Failure::new(exit::STORAGE, format!("cannot chown {}: {e}", target.display())))
                }
                _ => {}
            }
        }
        // PostgreSQL refuses to start on a data directory others can read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Failure::new(exit::STORAGE, format!("cannot chmod {}: {e}", target.display())))?;
    }
    if prepare {
        crate::prepare::prepare(ctx, &manifest, target)?;
    } else if incremental {
        ctx.note("this is an incremental backup: --prepare restores and prepares its whole chain");
    }
    if let (Some((t, text)), Some((_, base, n))) = (&until, &planned) {
        crate::pitr::finish_until(ctx, base, n, target, *t, text)?;
    }
    let secs = started.elapsed().as_secs_f64();
    if ctx.json {
        println!(
            "{}",
            json!({"snapshot": id, "target": target, "files": report.files, "dirs": report.dirs,
                   "links": report.links, "bytes": report.bytes, "seconds": secs})
        );
    }
    ctx.say(format!(
        "restored snapshot {} into {}: {} files, {}, {:.1} s",
        &id[..8],
        target.display(),
        report.files,
        human(report.bytes),
        secs
    ));
    Ok(())
}

/// Where in the server's history a snapshot stands, in one line.
fn position(m: &dedupe_store::Manifest) -> String {
    let md = &m.metadata;
    if let Some(my) = md.get("mysql") {
        let mut out = String::new();
        if let (Some(f), Some(p)) = (my.get("binlog_file"), my.get("binlog_position")) {
            out = format!("binlog {}:{}", f.as_str().unwrap_or_default(), p);
        }
        if let Some(g) = my.get("gtid").and_then(|g| g.as_str()) {
            out.push_str(&format!(" gtid {g}"));
        }
        if let Some(l) = my.get("to_lsn") {
            out.push_str(&format!(" lsn {l}"));
        }
        return out.trim().to_string();
    }
    if let Some(pg) = md.get("postgresql") {
        return format!(
            "wal {} timeline {}",
            pg.get("start_wal_location").and_then(|v| v.as_str()).unwrap_or("?"),
            pg.get("timeline").map(|v| v.to_string()).unwrap_or_else(|| "?".into())
        );
    }
    String::new()
}

/// True when the selection is a directory (or several nodes), not one file.
fn path_is_dir(nodes: &[dedupe_store::Node]) -> bool {
    nodes.iter().any(|n| n.kind != NodeKind::File)
}

fn snapshots(ctx: &Ctx, name: Option<&str>) -> R {
    let repo = ctx.unlocked()?;
    let (all, damaged) = repo.list_snapshots()?;
    let snaps: Vec<_> = all.into_iter().filter(|(_, m)| name.is_none_or(|n| m.name == n)).collect();
    // The readable ones are listed; the damaged ones are named and fail the command.
    let mut fails: Vec<Failure> = damaged.into_iter().map(Failure::from).collect();
    let fail = fails.pop();
    for f in fails {
        eprintln!("dedupe: {}", f.message);
    }
    if ctx.json {
        let arr: Vec<_> = snaps
            .iter()
            .map(|(id, m)| {
                let mut v = serde_json::to_value(m).expect("manifest serializes");
                v["id"] = json!(id);
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&arr).expect("json"));
        return fail.map_or(Ok(()), Err);
    }
    if ctx.quiet {
        return fail.map_or(Ok(()), Err);
    }
    println!("{:<10} {:<20} {:<16} {:>11} {:>11}  {:<10} position", "id", "time", "name", "size", "new", "kind");
    for (id, m) in &snaps {
        let time = m.time.parse::<jiff::Timestamp>().map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string());
        println!(
            "{:<10} {:<20} {:<16} {:>11} {:>11}  {:<10} {}",
            &id[..8],
            time.unwrap_or_else(|_| m.time.clone()),
            m.name,
            human(m.stats.bytes),
            human(m.stats.new_bytes),
            m.metadata.get("format").and_then(|v| v.as_str()).unwrap_or("raw"),
            position(m)
        );
    }
    fail.map_or(Ok(()), Err)
}

fn ls(ctx: &Ctx, spec: &str, name: Option<&str>) -> R {
    let repo = ctx.indexed()?;
    let (_, manifest) = repo.find_snapshot(spec, name)?;
    let tree = repo.read_tree(&manifest)?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&tree.nodes).expect("json"));
        return Ok(());
    }
    for n in &tree.nodes {
        let kind = match n.kind {
            NodeKind::Dir => 'd',
            NodeKind::Symlink => 'l',
            NodeKind::Hardlink => 'h',
            NodeKind::File => '-',
        };
        let extra = n.target.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default();
        println!("{kind}{:04o} {:>6} {:>6} {:>14} {}{}", n.mode, n.uid, n.gid, n.size, n.path, extra);
    }
    Ok(())
}

fn log(ctx: &Ctx, spec: &str, name: Option<&str>) -> R {
    let repo = ctx.indexed()?;
    let (id, manifest) = repo.find_snapshot(spec, name)?;
    let Some(log) = manifest.log.as_deref() else {
        return Err(Failure::new(
            exit::NO_SNAPSHOT,
            format!("snapshot {} has no producer log (it was not made with --command)", &id[..8]),
        ));
    };
    let log_id = dedupe_store::crypto::parse_id(log)
        .ok_or_else(|| Failure::new(exit::CORRUPT, "the manifest's log id is not hex"))?;
    let bytes = repo.read_chunk(&log_id)?;
    use std::io::Write;
    std::io::stdout().write_all(&bytes).map_err(|e| Failure::new(exit::STORAGE, format!("writing the output: {e}")))?;
    Ok(())
}

fn stats(ctx: &Ctx) -> R {
    let repo = ctx.indexed()?;
    let s = repo.stats()?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&s).expect("json"));
        return Ok(());
    }
    ctx.say(format!(
        "{} snapshots, {} in all; {} unique chunks ({}), stored in {} packs as {}\ndeduplication {:.2}x, compression {:.2}x",
        s.snapshots,
        human(s.logical_bytes),
        s.unique_chunks,
        human(s.unique_bytes),
        s.packs,
        human(s.stored_bytes),
        s.dedup_ratio,
        s.compression_ratio
    ));
    Ok(())
}

fn key(ctx: &Ctx, cmd: KeyCommand) -> R {
    let repo = ctx.unlocked()?;
    match cmd {
        KeyCommand::Add { new_password_file } => {
            let pw = new_password(new_password_file.as_deref(), "DEDUPE_NEW_PASSWORD")?;
            let id = repo.add_key(pw.as_bytes(), KdfParams::from_env())?;
            if ctx.json {
                println!("{}", json!({"id": id}));
            }
            ctx.say(format!("added key {}", &id[..8]));
        }
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if ctx.json {
                println!("{}", serde_json::to_string_pretty(&keys).expect("json"));
            } else if !ctx.quiet {
                for k in keys {
                    println!(
                        "{} {} {} {}@{}",
                        if k.current { "*" } else { " " },
                        &k.id[..8],
                        k.created,
                        k.username,
                        k.hostname
                    );
                }
            }
        }
        KeyCommand::Remove { id } => {
            let removed = repo.remove_key(&id)?;
            if ctx.json {
                println!("{}", json!({"removed": removed}));
            }
            ctx.say(format!("removed key {}", &removed[..8]));
        }
    }
    Ok(())
}

fn repair_index(ctx: &Ctx) -> R {
    let repo = ctx.unlocked()?;
    let pb = ctx.progress_bar(None);
    let report = repo.repair_index(&|n, total| {
        pb.set_length(total);
        pb.set_position(n);
    });
    pb.finish_and_clear();
    let report = report?;
    // The old cache names index objects that are gone now; it rebuilds itself on open.
    let _ = repo.indexed(&ctx.cache_dir)?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    }
    ctx.say(format!(
        "index rebuilt from {} packs ({} chunks): {} index objects written, {} removed",
        report.packs, report.chunks, report.index_objects_written, report.index_objects_removed
    ));
    Ok(())
}
