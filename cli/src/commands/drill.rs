//! `dedupe drill [SNAPSHOT|latest] --name N [--until TIME]`: a restore
//! drill. The snapshot is restored into a scratch directory, prepared
//! (mariabackup) or recovered (PostgreSQL's backup label, the archived WAL
//! with --until), a throwaway server started on it on a free port, every
//! table checked (`dedupe_recovery::drill`), and the times reported: how
//! long a real restore of this backup takes to the first query. The
//! scratch directory and the server are removed afterwards, on every way
//! out.

use crate::ctx::{short, Ctx};
use crate::exit::{self, Failure, R};
use crate::report::Sample;
use dedupe_ingest::facts::{Database, SnapshotFacts};
use dedupe_recovery::drill::{Failed, Server};
use dedupe_store::drills::DrillRecord;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Snapshot id (or a unique prefix), or `latest`; omit with --until.
    #[arg(conflicts_with = "until")]
    snapshot: Option<String>,
    /// Drill a point-in-time restore instead: the base and the archived logs
    /// up to this time ("2026-11-21 12:54:23" local time, or RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// With `latest` or --until: the server's snapshots.
    #[arg(long, env = "DEDUPE_NAME")]
    name: Option<String>,
    /// Where the scratch directory is made (it needs room for the restored
    /// data directory); removed afterwards.
    #[arg(long, default_value = "/var/tmp")]
    scratch: PathBuf,
}

/// What a drill measured.
struct Report {
    restore: f64,
    prepare: f64,
    start: f64,
    check: f64,
    tables: usize,
    /// What the server could not check (said, not hidden).
    not_checked: Option<String>,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> R {
    let mut name = a.name.clone().unwrap_or_default();
    let r = drill_run(ctx, a, &mut name);
    ctx.report("drill", &name, r)
}

fn drill_run(ctx: &Ctx, a: Args, server_name: &mut String) -> R<Vec<Sample>> {
    let repo = ctx.indexed()?;
    let name = a.name.as_deref();
    let (id, manifest, plan) = match &a.until {
        Some(u) => {
            let t = dedupe_recovery::time::parse_until(u)?;
            let plan = dedupe_recovery::plan(repo.catalogue(), name, t)?;
            (plan.base_id.clone(), plan.base.clone(), Some(plan))
        }
        None => {
            let (id, m) = repo.find_snapshot(a.snapshot.as_deref().unwrap_or("latest"), name)?;
            (id, m, None)
        }
    };
    server_name.clone_from(&manifest.name);
    let facts = SnapshotFacts::of(&manifest);
    let database = match (facts.database, facts.format()) {
        (Some(d), "xbstream" | "tar" | "directory") => d,
        (_, format) => {
            return Err(Failure::usage(format!(
                "snapshot {} is a {format} backup, not a physical backup of a database server: drill starts a server on a restored data directory",
                short(&id)
            )))
        }
    };
    if facts.postgresql.as_ref().is_some_and(|pg| pg.is_uncombined_incremental()) {
        return Err(Failure::usage(format!(
            "snapshot {} is a PostgreSQL incremental stored as it came, not a data directory: drill the full backups (dedupe backup --pg-incremental stores incrementals as fulls)",
            short(&id)
        )));
    }
    // A backup that says its PostgreSQL version: its programs are looked
    // for before anything is restored (and no drill is recorded without them).
    if let Some(v) = facts.postgresql.as_ref().and_then(|pg| pg.version) {
        dedupe_recovery::pgbin::find(v, "pg_ctl", ctx.pg_bin.as_deref())?;
    }
    let dir = a.scratch.join(format!("dedupe-drill-{}-{}", short(&id), std::process::id()));
    if dir.exists() {
        return Err(Failure::new(exit::TARGET_NOT_EMPTY, format!("{} exists: remove it first", dir.display())));
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::new(exit::STORAGE, format!("cannot create {}: {e}", dir.display())))?;
    let scratch = dir.clone();
    crate::interrupt::say(format!("the drill was stopped; {} was removed", dir.display()));
    crate::interrupt::before_exit(move || stop_leftovers(&scratch));
    let outcome = drill(ctx, &a, &id, &facts, database, plan.as_ref(), &dir);
    // Nothing of the drill stays behind: the server is stopped, the copy removed.
    let _ = std::fs::remove_dir_all(&dir);
    crate::interrupt::before_exit(|| {});
    // Kept in the repository, passed or failed: `dedupe snapshots` shows it on every host.
    let rep = outcome.as_ref().ok().map(|(r, _)| r);
    let record = DrillRecord {
        snapshot: id.clone(),
        name: manifest.name.clone(),
        time: jiff::Timestamp::now().to_string(),
        hostname: dedupe_store::hostname(),
        until: a.until.clone(),
        ok: matches!(&outcome, Ok((_, None))),
        error: match &outcome {
            Ok((_, Some(f))) => Some(f.0.clone()),
            Err(f) => Some(f.message.clone()),
            Ok((_, None)) => None,
        },
        restore_seconds: rep.map_or(0.0, |r| r.restore),
        prepare_seconds: rep.map_or(0.0, |r| r.prepare),
        start_seconds: rep.map_or(0.0, |r| r.start),
        check_seconds: rep.map_or(0.0, |r| r.check),
        tables_checked: rep.map_or(0, |r| r.tables as u64),
    };
    if let Err(e) = repo.record_drill(&record) {
        eprintln!("dedupe: warning: the drill's result was not kept in the repository: {e}");
    }
    let (report, found) = outcome?;
    let what = a.until.as_deref().map_or(String::new(), |u| format!(" to {u}"));
    if ctx.json {
        outln!(
            "{}",
            json!({
                "snapshot": id,
                "name": manifest.name,
                "database": database,
                "until": a.until,
                "restore_seconds": report.restore,
                "prepare_seconds": report.prepare,
                "start_seconds": report.start,
                "check_seconds": report.check,
                "tables_checked": report.tables,
                "not_checked": report.not_checked,
                "ok": found.is_none(),
                "error": found.as_ref().map(|f| f.0.clone()),
            })
        );
    }
    // Whose backup, and of when: a drill of the wrong server's is no drill.
    let of = format!(
        "{} of {} ({})",
        short(&id),
        manifest.name,
        dedupe_recovery::time::shown(dedupe_recovery::time::manifest_time(&manifest))
    );
    if let Some(Failed(why)) = found {
        return Err(Failure::new(exit::DRILL_FAILED, format!("drill of snapshot {of}{what} failed: {why}")));
    }
    if let Some(n) = &report.not_checked {
        eprintln!("dedupe: warning: the drill could not check {n}; every row was read");
    }
    ctx.say(format!(
        "drill of snapshot {of}{what} passed: restored in {:.1} s, prepared in {:.1} s, started in {:.1} s; {} tables checked in {:.1} s",
        report.restore,
        report.prepare,
        report.start,
        report.tables,
        report.check
    ));
    let n = manifest.name.as_str();
    let mut samples = crate::report::drill_ran(n, true);
    samples.extend([
        Sample::new("dedupe_drill_restore_seconds", "How long the last drill's restore took.", n, report.restore),
        Sample::new(
            "dedupe_drill_first_query_seconds",
            "From the start of the last drill's restore to its server answering: the recovery time to expect.",
            n,
            report.restore + report.prepare + report.start,
        ),
        Sample::new("dedupe_drill_tables_checked", "Tables the last drill checked.", n, report.tables as f64),
    ]);
    Ok(samples)
}

/// Restores, prepares, starts and checks; a finding (the server would not
/// start on the data, a table is damaged) is the second value, a failure of
/// the drill itself (the repository, the tools) the error.
fn drill(
    ctx: &Ctx,
    a: &Args,
    id: &str,
    facts: &SnapshotFacts,
    database: Database,
    plan: Option<&dedupe_recovery::Plan>,
    dir: &Path,
) -> R<(Report, Option<Failed>)> {
    let (data, run) = (dir.join("data"), dir.join("run"));
    let chain = facts.is_incremental();
    let started = Instant::now();
    let spec = if a.until.is_some() { None } else { Some(id.to_string()) };
    let args = super::restore::Args::into_dir(spec, a.until.clone(), a.name.clone(), data.clone(), chain);
    super::restore::run(ctx, args)?;
    let restore = started.elapsed().as_secs_f64();
    let started = Instant::now();
    if !chain {
        dedupe_recovery::prepare::prepare(facts, &data)?;
    }
    let prepare = started.elapsed().as_secs_f64();
    let mut report = Report { restore, prepare, start: 0.0, check: 0.0, tables: 0, not_checked: None };

    // PostgreSQL's programs of the data's version: a host without them (or
    // with another version's first on PATH) is no finding about the backup.
    let pg = match database {
        Database::Postgresql => {
            Some(dedupe_recovery::pgbin::for_datadir(&data, "pg_ctl", ctx.pg_bin.as_deref()).map_err(Failure::from)?)
        }
        _ => None,
    };
    let started = Instant::now();
    let server = match Server::start(database, &data, &run, pg.as_ref(), plan.is_some()) {
        Ok(s) => s,
        Err(e) => return Ok((report, Some(Failed(format!("the server did not start on the restored backup: {e}"))))),
    };
    // A MariaDB/MySQL point in time: the archived binlogs from the base's position.
    if let (Some(plan), false) = (plan, database == Database::Postgresql) {
        if let Some(f) = replay(ctx, plan, &server, &data)? {
            return Ok((report, Some(f)));
        }
    }
    report.start = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let found = server.check()?;
    report.check = started.elapsed().as_secs_f64();
    drop(server);
    match found {
        Ok(checked) => {
            report.tables = checked.tables;
            report.not_checked = checked.not_checked;
            Ok((report, None))
        }
        Err(f) => Ok((report, Some(f))),
    }
}

/// Replays the plan's binlogs into the drill's server.
fn replay(ctx: &Ctx, plan: &dedupe_recovery::Plan, server: &Server, data: &Path) -> R<Option<Failed>> {
    let repo = ctx.indexed()?;
    let (start_file, start_pos) = dedupe_recovery::replay::restored_binlog_position(data)?;
    let stop = dedupe_recovery::Stop::Time(plan.until);
    let (files, stop_args) = dedupe_recovery::plan::replay(repo.catalogue(), &plan.name, &start_file, &stop)?;
    let mut client = dedupe_recovery::drill::client_for(server)?;
    let mut child = client
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(exit::ERROR, format!("cannot run the client: {e}")))?;
    let into = std::process::Stdio::from(child.stdin.take().expect("piped"));
    let replayed = dedupe_recovery::replay::replay_binlogs(&repo, &files, start_pos, &stop_args, data, into);
    let out = child.wait_with_output().map_err(|e| Failure::new(exit::ERROR, format!("the client: {e}")))?;
    replayed?;
    if !out.status.success() {
        let why = dedupe_ingest::producer::last_line(&out.stderr);
        return Ok(Some(Failed(format!("replaying the binlogs into the restored server failed: {why}"))));
    }
    Ok(None)
}

/// After an interruption: the server the drill started (its pid file) is
/// killed and the scratch directory removed.
fn stop_leftovers(dir: &Path) {
    for pidfile in [dir.join("run/pid"), dir.join("data/postmaster.pid")] {
        let pid = std::fs::read_to_string(&pidfile).ok().and_then(|t| t.lines().next()?.trim().parse::<i32>().ok());
        if let Some(pid) = pid.filter(|&p| p > 1) {
            // SAFETY: a signal to the server this drill started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
