//! `dedupe binlog push|list|replay`: MySQL/MariaDB binary logs archived,
//! listed with their gaps, and replayed from a restored backup.

use crate::ctx::{human, Ctx};
use crate::exit::{Failure, R};
use dedupe_ingest::facts::LogKind;
use dedupe_recovery::archive::{archived, binlog_files, binlog_gap, push_binlogs, Outcome};
use dedupe_recovery::replay::{replay_binlogs, restored_binlog_position};
use dedupe_recovery::time::{parse_until, shown, unix};
use dedupe_recovery::Stop;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Archive every closed binlog file not yet in the repository (run it from cron every minute);
    /// a file that does not end with a rotate or stop event is stored as partial until a complete copy comes.
    Push {
        /// The server these binlogs are of: the `--name` of its base backups.
        #[arg(long, env = "DEDUPE_NAME")]
        name: String,
        /// The server's binlog directory (holding the *.index file).
        #[arg(long, conflicts_with = "index")]
        binlog_dir: Option<PathBuf>,
        /// The binlog index file (mysql-bin.index).
        #[arg(long)]
        index: Option<PathBuf>,
        /// Also store the active file up to its current end (replaced once it is closed).
        #[arg(long)]
        include_active: bool,
        /// Archive files older than the oldest backup kept too (by default
        /// those are what `forget` dropped: not archived again).
        #[arg(long)]
        force: bool,
    },
    /// List the archived binlog files, with their time ranges and any gaps.
    List {
        /// The server these binlogs are of: the `--name` of its base backups.
        #[arg(long, env = "DEDUPE_NAME")]
        name: String,
    },
    /// Print the SQL that replays the archived binlogs from a restored backup's
    /// position up to a time (pipe it into `mariadb`).
    Replay {
        /// The server these binlogs are of: the `--name` of its base backups.
        #[arg(long, env = "DEDUPE_NAME")]
        name: String,
        /// The restored (and prepared) data directory: its binlog info is the start.
        #[arg(long)]
        target: PathBuf,
        /// Stop before this time ("2026-11-21 12:54:23", local time, or RFC 3339).
        #[arg(long, required_unless_present_any = ["until_gtid", "until_position"])]
        until: Option<String>,
        /// Stop at this GTID position instead.
        #[arg(long)]
        until_gtid: Option<String>,
        /// Stop at FILE:POSITION instead.
        #[arg(long)]
        until_position: Option<String>,
    },
}

/// `binlog push`: every closed binlog file not yet archived.
fn push(
    ctx: &Ctx,
    name: &str,
    binlog_dir: Option<PathBuf>,
    index: Option<PathBuf>,
    include_active: bool,
    force: bool,
) -> R<Vec<crate::report::Sample>> {
    let files = binlog_files(binlog_dir.as_deref(), index.as_deref())?;
    let repo = ctx.indexed_for_logs()?;
    crate::interrupt::say("the files archived so far stay archived: push again for the rest");
    let pushed = push_binlogs(&repo, name, &files, include_active, force)?;
    let report: Vec<_> = pushed
        .iter()
        .map(|p| {
            let (status, bytes) = match p.outcome {
                Outcome::Stored { bytes, partial: true } => ("stored (partial)", bytes),
                Outcome::Stored { bytes, partial: false } => ("stored", bytes),
                Outcome::AlreadyArchived => ("already archived", 0),
                Outcome::Skipped(why) => (why.as_str(), 0),
            };
            json!({"file": p.file, "status": status, "bytes": bytes})
        })
        .collect();
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        for r in report.iter().filter(|r| r["status"] != "already archived") {
            ctx.say(format!(
                "{}: {}",
                r["file"].as_str().unwrap_or_default(),
                r["status"].as_str().unwrap_or_default()
            ));
        }
    }
    // Only when asked: it lists every archived file of the name.
    Ok(if ctx.metrics_file.is_some() { crate::report::pushed(&repo, name, LogKind::Binlog) } else { Vec::new() })
}

pub(crate) fn run(ctx: &Ctx, command: Command) -> R {
    match command {
        Command::Push { name, binlog_dir, index, include_active, force } => {
            let pushed = push(ctx, &name, binlog_dir, index, include_active, force);
            ctx.report("binlog push", &name, pushed)
        }
        Command::List { name } => list(ctx, &name),
        Command::Replay { name, target, until, until_gtid, until_position } => {
            let (start_file, start_pos) = restored_binlog_position(&target)?;
            let stop = match (until, until_gtid, until_position) {
                (Some(u), _, _) => Stop::Time(parse_until(&u)?),
                (None, Some(g), _) => Stop::Gtid(g),
                (None, None, Some(p)) => {
                    let (file, pos) =
                        p.rsplit_once(':').ok_or_else(|| Failure::usage("--until-position takes FILE:POSITION"))?;
                    let position = pos.parse().map_err(|_| Failure::usage("--until-position takes FILE:POSITION"))?;
                    Stop::Position { file: file.to_string(), position }
                }
                (None, None, None) => unreachable!("clap requires one of the three"),
            };
            let repo = ctx.indexed_for_logs()?;
            let (files, stop_args) = dedupe_recovery::plan::replay(repo.catalogue(), &name, &start_file, &stop)
                .map_err(|e| crate::exit::or_damaged_log(&repo, e))?;
            replay_binlogs(&repo, &files, start_pos, &stop_args, &target, std::process::Stdio::inherit())?;
            // stdout is the SQL: the summary goes to stderr, as restore --stdout's.
            if ctx.json {
                let names: Vec<&str> = files.iter().map(|f| f.file()).collect();
                eprintln!(
                    "{}",
                    json!({"name": name, "start_file": start_file, "start_position": start_pos,
                           "files": names, "stop": stop_args})
                );
            }
            Ok(())
        }
    }
}

fn list(ctx: &Ctx, name: &str) -> R {
    let repo = ctx.listed()?;
    let files = archived(repo.catalogue(), name, LogKind::Binlog)?;
    let mut rows = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let missing_before = i.checked_sub(1).map(|p| binlog_gap(files[p].file(), f.file())).unwrap_or_default();
        let b = f.binlog();
        rows.push(json!({
            "id": f.id,
            "file": f.file(),
            "size": f.size(),
            "partial": f.partial(),
            "first_time": b.and_then(|b| unix(b.first_time.into())).map(|t| t.to_string()),
            "last_time": b.and_then(|b| unix(b.last_time.into())).map(|t| t.to_string()),
            "first_position": b.map(|b| b.first_position),
            "end_position": b.map(|b| b.end_position),
            "server_id": b.map(|b| b.server_id),
            "gtid_state_at_start": b.and_then(|b| b.gtid_state_at_start.clone()),
            "last_gtid": b.and_then(|b| b.last_gtid.clone()),
            "missing_before": missing_before,
        }));
    }
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&rows).expect("json"));
        return Ok(());
    }
    ctx.say(format!(
        "{:<20} {:>12} {:<23} {:<23} {:>10}  last gtid",
        "file", "size", "first event", "last event", "end pos"
    ));
    let time = |v: &serde_json::Value| {
        v.as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(shown).unwrap_or_default()
    };
    for r in &rows {
        for m in r["missing_before"].as_array().into_iter().flatten() {
            ctx.say(format!("{:<20} MISSING: the archive has a gap here", m.as_str().unwrap_or_default()));
        }
        ctx.say(format!(
            "{:<20} {:>12} {:<23} {:<23} {:>10}  {}{}",
            r["file"].as_str().unwrap_or_default(),
            human(r["size"].as_u64().unwrap_or(0)),
            time(&r["first_time"]),
            time(&r["last_time"]),
            r["end_position"],
            r["last_gtid"].as_str().unwrap_or("-"),
            if r["partial"] == true { "  (partial: no rotate or stop event at its end yet)" } else { "" }
        ));
    }
    // The retention's low-water mark: what `forget` dropped stays out.
    let oldest = dedupe_recovery::archive::retention_start(repo.catalogue(), name)?;
    if let Some((file, _)) = oldest.as_ref().and_then(|f| f.binlog_start()) {
        ctx.say(format!(
            "binlogs before {file} (where the oldest backup kept starts) are not archived again: `binlog push --force` does"
        ));
    }
    Ok(())
}
