//! `dedupe restore`: a snapshot into a directory or to stdout, a whole
//! incremental chain prepared, or a server brought to a point in time.

use crate::ctx::{human, short, Ctx};
use crate::exit::{self, Failure, R};
use dedupe_ingest::facts::{Database, SnapshotFacts};
use dedupe_ingest::{restore_as_tar, restore_as_xbstream, restore_to_dir, restore_to_writer, Selection};
use dedupe_recovery::prepare::{prepare, restore_chain, Prepared};
use dedupe_recovery::replay::{restore_command, sh_quote, write_recovery_settings};
use dedupe_recovery::Plan;
use dedupe_store::{Indexed, NodeKind};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Snapshot id (or a unique prefix), or `latest`; omit with --until.
    #[arg(required_unless_present = "until", conflicts_with = "until")]
    snapshot: Option<String>,
    /// Point in time ("2026-11-21 12:54:23" local time, or RFC 3339): picks the
    /// newest base whose archived logs reach it, and sets up the log replay.
    #[arg(long)]
    until: Option<String>,
    /// With `latest`: the newest snapshot of this name.
    #[arg(long, env = "DEDUPE_NAME")]
    name: Option<String>,
    /// Directory to restore into (created if missing; must be empty unless --force).
    #[arg(long, conflicts_with = "stdout", required_unless_present_any = ["stdout", "mount"])]
    target: Option<PathBuf>,
    /// Mount the snapshot at this directory instead (FUSE, read-only, in the
    /// foreground until unmounted or Ctrl-C): its files read before any restore ends.
    #[arg(long, conflicts_with_all = ["target", "stdout", "until", "path", "prepare", "force"])]
    mount: Option<PathBuf>,
    /// With --mount: writable, copy-on-write, its changes in a local overlay
    /// (`--overlay`), so `mariabackup --prepare` and a server run on it at
    /// once. The changes last as long as the mount; the repository is never written.
    #[arg(long, requires = "mount")]
    writable: bool,
    /// With --writable: the overlay directory (new or empty; removed when the
    /// mount ends). Default: the mount point's path with `.overlay` appended.
    #[arg(long, requires = "writable")]
    overlay: Option<PathBuf>,
    /// Write the file content to stdout (for a stream backup, the stream).
    #[arg(long)]
    stdout: bool,
    /// Restore only this path (and what is below it).
    #[arg(long)]
    path: Option<String>,
    /// Restore into a non-empty directory, replacing files of the same names.
    #[arg(long)]
    force: bool,
    /// After restoring a mariabackup snapshot, run `mariabackup --prepare` on the target.
    #[arg(long)]
    prepare: bool,
    /// Keep a PostgreSQL backup's own archive_mode and archive_command in the
    /// copy, for a copy that replaces its source (a failover). Without it the
    /// copy gets `archive_mode = off`, so it never archives into its source's name.
    #[arg(long, conflicts_with = "stdout")]
    keep_archiving: bool,
    /// Whether the summary and the next steps are printed (`drill` takes
    /// those steps itself and prints its own).
    #[arg(skip = true)]
    summary: bool,
}

impl Args {
    /// What `drill` restores: a snapshot (or the base `--until` picks) into
    /// `target`, prepared (a whole incremental chain) when asked.
    pub(crate) fn into_dir(
        snapshot: Option<String>,
        until: Option<String>,
        name: Option<String>,
        target: PathBuf,
        prepare: bool,
    ) -> Args {
        Args {
            snapshot,
            until,
            name,
            target: Some(target),
            mount: None,
            writable: false,
            overlay: None,
            stdout: false,
            path: None,
            force: false,
            prepare,
            keep_archiving: false,
            summary: false,
        }
    }
}

fn dir_is_empty(p: &Path) -> R<bool> {
    match std::fs::read_dir(p) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Failure::new(exit::STORAGE, format!("cannot read {}: {e}", p.display()))),
    }
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> R {
    let Args {
        snapshot,
        until,
        name,
        target,
        stdout,
        path,
        force,
        prepare: prep,
        mount,
        writable,
        overlay,
        keep_archiving,
        summary,
    } = a;
    let (name, target) = (name.as_deref(), target.as_deref());
    if let Some(point) = mount {
        let spec = snapshot.as_deref().unwrap_or("latest");
        if writable {
            return super::mount::writable(ctx, spec, name, &point, overlay, keep_archiving);
        }
        return super::mount::one(ctx, spec, name, &point);
    }
    if prep && target.is_none() {
        return Err(Failure::usage("--prepare needs --target"));
    }
    if until.is_some() && (target.is_none() || path.is_some()) {
        return Err(Failure::usage("--until restores a whole data directory: give --target, and no --path"));
    }
    let until = until.map(|u| dedupe_recovery::time::parse_until(&u).map(|t| (t, u))).transpose()?;
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
        Some((t, _)) => {
            let plan =
                dedupe_recovery::plan(repo.catalogue(), name, *t).map_err(|e| crate::exit::or_damaged_log(&repo, e))?;
            if plan.is_postgresql() {
                // Checked before anything is restored, not after.
                restore_command_password(ctx)?;
            }
            Some(plan)
        }
        None => None,
    };
    let (id, manifest) = match &planned {
        Some(p) => (p.base_id.clone(), p.base.clone()),
        None => repo.find_snapshot(snapshot.as_deref().unwrap_or("latest"), name)?,
    };
    let facts = SnapshotFacts::of(&manifest);
    if facts.is_incremental() && prep {
        let target = target.expect("checked above");
        let chain = match &planned {
            Some(p) => p.chain.clone(),
            None => dedupe_recovery::chain::chain(repo.catalogue(), &id, &manifest)?,
        };
        crate::interrupt::say(format!(
            "{} holds an incomplete restore: restore again with --force, or into an empty directory",
            target.display()
        ));
        restore_chain(&repo, &chain, target, &mut |sid, n, of| {
            ctx.note(&format!("applied {} ({n}/{of})", short(sid)))
        })?;
        if let (Some((_, text)), Some(plan)) = (&until, &planned) {
            finish_until(ctx, plan, target, text, summary, keep_archiving)?;
        }
        return Ok(());
    }
    let tree = repo.read_tree(&manifest)?;
    let whole = path.is_none();
    let nodes = Selection { path }.apply(tree)?;
    let postgresql = facts.database == Some(Database::Postgresql);
    // A pg_basebackup with tablespaces lists them in tablespace_map; their
    // contents are in other tars than this snapshot, so the data directory
    // would start with dangling tablespaces. Refuse before writing anything.
    if postgresql && target.is_some() {
        if let Some(map) = nodes.iter().find(|n| n.path == "tablespace_map" && n.size > 0) {
            return Err(Failure::new(
                exit::NOT_RESTORABLE,
                format!(
                    "snapshot {} has tablespaces (tablespace_map, {} bytes) whose data is not in it: back up the tablespace tars too (pg_basebackup -Ft -D DIR, then dedupe backup DIR), or restore with --path",
                    short(&id),
                    map.size
                ),
            ));
        }
    }
    let started = std::time::Instant::now();
    if stdout {
        return to_stdout(ctx, &repo, &id, facts.format(), &nodes, started);
    }
    let target = target.expect("clap requires --target without --stdout");
    std::fs::create_dir_all(target)
        .map_err(|e| Failure::new(exit::STORAGE, format!("cannot create {}: {e}", target.display())))?;
    crate::interrupt::say(format!(
        "{} holds an incomplete restore: restore again with --force, or into an empty directory",
        target.display()
    ));
    let bar = ctx.progress();
    let report = restore_to_dir(&repo, &nodes, target, &bar);
    bar.finish();
    let report = report?;
    for w in &report.warnings {
        eprintln!("dedupe: warning: {w}");
    }
    if postgresql {
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
        if whole && !keep_archiving {
            dedupe_recovery::pgcopy::disarm_archiving(target)?;
        }
    }
    // A filesystem snapshot's data directory has no file with the binlog
    // coordinates its lock recorded: `binlog replay` reads them from this one.
    if whole {
        dedupe_recovery::replay::record_binlog_position(&facts, target)?;
    }
    if prep {
        match prepare(&facts, target)? {
            Prepared::With(tool) => ctx.note(&format!("prepared {} with {tool} --prepare", target.display())),
            Prepared::NotNeeded if postgresql => {
                ctx.note("PostgreSQL needs no prepare step: start the server on the restored directory")
            }
            Prepared::NotNeeded => ctx.note(
                "a filesystem snapshot needs no prepare step: the server recovers from its own redo log when it starts",
            ),
        }
    } else if facts.is_incremental() {
        ctx.note("this is an incremental backup: --prepare restores and prepares its whole chain");
    }
    if postgresql && facts.postgresql.as_ref().is_some_and(|pg| pg.is_uncombined_incremental()) {
        eprintln!(
            "dedupe: warning: snapshot {} is a PostgreSQL incremental stored as it came: the server does not start on it; pg_combinebackup rebuilds a full from it and the backups before it",
            short(&id)
        );
    }
    if let (Some((_, text)), Some(plan)) = (&until, &planned) {
        finish_until(ctx, plan, target, text, summary, keep_archiving)?;
    }
    let secs = started.elapsed().as_secs_f64();
    if !summary {
        return Ok(());
    }
    if ctx.json {
        outln!(
            "{}",
            json!({"snapshot": id, "name": manifest.name, "time": manifest.time, "target": target,
                   "files": report.files, "dirs": report.dirs, "links": report.links, "bytes": report.bytes,
                   "seconds": secs})
        );
    }
    ctx.say(format!(
        "restored snapshot {} of {} ({}) into {}: {} files, {}, {:.1} s",
        short(&id),
        manifest.name,
        dedupe_recovery::time::shown(dedupe_recovery::time::manifest_time(&manifest)),
        target.display(),
        report.files,
        human(report.bytes),
        secs
    ));
    if postgresql && whole && planned.is_none() && !keep_archiving {
        ctx.note("archive_mode is off in the copy, so it never archives into its source's WAL archive (--keep-archiving keeps the source's settings)");
    }
    Ok(())
}

/// A demuxed stream goes out in its own format; one file goes out as its bytes.
fn to_stdout(
    ctx: &Ctx,
    repo: &Indexed,
    id: &str,
    format: &str,
    nodes: &[dedupe_store::Node],
    started: std::time::Instant,
) -> R {
    // A File on fd 1 rather than Stdout: unbuffered by lines, and Send for the writer thread.
    let fd = std::os::fd::AsFd::as_fd(&std::io::stdout())
        .try_clone_to_owned()
        .map_err(|e| Failure::new(exit::STORAGE, format!("cannot use stdout: {e}")))?;
    let mut out = std::fs::File::from(fd);
    let files = nodes.iter().filter(|n| n.kind == NodeKind::File).count();
    // The selection is a directory (or several nodes), not one file.
    let whole = files != 1 || nodes.iter().any(|n| n.kind != NodeKind::File);
    let bytes = match format {
        "xbstream" if whole => restore_as_xbstream(repo, nodes, &mut out)?,
        "tar" | "directory" if whole => restore_as_tar(repo, nodes, &mut out)?,
        _ if files > 1 => {
            return Err(Failure::usage(format!(
                "the selection has {files} files: --stdout writes one; pick one with --path or use --target"
            )))
        }
        _ => restore_to_writer(repo, nodes, &mut out)?,
    };
    if ctx.json {
        eprintln!("{}", json!({"snapshot": id, "bytes": bytes, "seconds": started.elapsed().as_secs_f64()}));
    }
    Ok(())
}

/// The password options the server's restore_command gets: a file or a
/// command, never the password itself.
fn restore_command_password(ctx: &Ctx) -> R<Vec<String>> {
    ctx.password_args().ok_or_else(|| {
        Failure::usage(
            "the server's restore_command needs the repository password: pass --password-file or --password-command (DEDUPE_PASSWORD is never written down)",
        )
    })
}

/// After the base is restored into `target`: the recovery settings for
/// PostgreSQL, and (with `hints`) the next command.
fn finish_until(ctx: &Ctx, plan: &Plan, target: &Path, until_text: &str, hints: bool, keep_archiving: bool) -> R {
    if plan.is_postgresql() {
        let exe = std::env::current_exe()
            .map_err(|e| Failure::new(exit::ERROR, format!("cannot find the dedupe binary: {e}")))?;
        let mut words = vec![exe.display().to_string(), "--repo".into(), ctx.repo_arg()];
        let password = restore_command_password(ctx)?;
        if password[0] == "--password-command" {
            // A command may hold a secret itself (`echo …`): say where it goes.
            eprintln!(
                "dedupe: warning: the restore_command in {}/postgresql.auto.conf runs your --password-command \
                 as written; whoever can read that directory can read the command",
                target.display()
            );
        }
        words.extend(password);
        words.extend(["wal".into(), "fetch".into(), "--name".into(), plan.name.clone()]);
        let settings = plan.recovery_settings(&restore_command(&words)).expect("a PostgreSQL plan");
        write_recovery_settings(target, &settings)?;
        if !hints {
            return Ok(());
        }
        let archiving = if keep_archiving {
            "it archives as its source did (--keep-archiving)"
        } else {
            "archive_mode is off in the copy"
        };
        // The pg_ctl of the data's own version, named where it is.
        let pg_ctl = match dedupe_recovery::pgbin::for_datadir(target, "pg_ctl", ctx.pg_bin.as_deref()) {
            Ok(bin) => bin.tool("pg_ctl").display().to_string(),
            Err(e) => {
                eprintln!("dedupe: warning: {e}");
                "pg_ctl".into()
            }
        };
        ctx.note(&format!(
            "{} is ready: `{pg_ctl} -D {} start` replays the archived WAL up to {until_text}, then promotes ({archiving})",
            target.display(),
            target.display()
        ));
    } else if hints {
        ctx.note(&format!(
            "next: start a server on {} and run `dedupe binlog replay --name {} --target {} --until {} | mariadb`",
            target.display(),
            plan.name,
            target.display(),
            sh_quote(until_text)
        ));
    }
    Ok(())
}
