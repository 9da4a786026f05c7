//! Point-in-time restore: which base snapshot and which archived logs reach
//! a given time, what is missing when they do not, and the timeline of
//! restorable spans. Also incremental chains (mariabackup --incremental).
//!
//! Times: a time given in whole seconds means "as the database was at the
//! end of that second": MariaDB replays events stamped before the next
//! second, PostgreSQL recovers commits before it (recovery_target_inclusive
//! off). A time with a fraction is taken as it is.

use crate::commands::Ctx;
use crate::exit::{self, Failure};
use crate::logs::{archived, binlog_gap, fetch_to, LogFile};
use dedupe_store::catalogue::Catalogue;
use dedupe_store::{Kind, Manifest, Unlocked};
use jiff::Timestamp;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

type R<T = ()> = Result<T, Failure>;

/// The instant replay stops before (exclusive).
pub fn parse_until(s: &str) -> R<Timestamp> {
    let bad =
        || Failure::usage(format!("cannot read the time {s:?}: use \"YYYY-MM-DD HH:MM:SS\" (local time) or RFC 3339"));
    let (ts, whole) = if let Ok(t) = s.parse::<Timestamp>() {
        (t, t.subsec_nanosecond() == 0)
    } else {
        let dt: jiff::civil::DateTime = s.trim().parse().map_err(|_| bad())?;
        let z = dt.to_zoned(jiff::tz::TimeZone::system()).map_err(|_| bad())?;
        (z.timestamp(), dt.subsec_nanosecond() == 0)
    };
    Ok(if whole { ts.checked_add(jiff::SignedDuration::from_secs(1)).map_err(|_| bad())? } else { ts })
}

fn local(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string()
}

fn manifest_time(m: &Manifest) -> Timestamp {
    m.time.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

fn secs(v: &Value) -> Option<Timestamp> {
    v.as_i64().and_then(|s| Timestamp::from_second(s).ok())
}

fn database(m: &Manifest) -> &str {
    m.metadata.get("database").and_then(Value::as_str).unwrap_or_default()
}

fn mysql<'a>(m: &'a Manifest, key: &str) -> Option<&'a Value> {
    m.metadata.get("mysql").and_then(|v| v.get(key))
}

fn pg<'a>(m: &'a Manifest, key: &str) -> Option<&'a Value> {
    m.metadata.get("postgresql").and_then(|v| v.get(key))
}

// ---------------------------------------------------------------- MariaDB / MySQL

/// The binlog files that take a base at `file` up to `until`, or why not.
/// The archived binlogs usable one after another from `start_file`, and,
/// when they stop before the archive does, why (a gap, or a file archived
/// only while active).
fn consecutive(logs: &[LogFile], name: &str, start_file: &str) -> R<(Vec<LogFile>, Option<Failure>)> {
    let i = logs.iter().position(|l| l.file() == start_file).ok_or_else(|| {
        Failure::new(
            exit::NOT_RESTORABLE,
            format!("binlog {start_file} of {name}, where the base backup's position is, is not archived: run `dedupe binlog push`"),
        )
    })?;
    let mut out: Vec<LogFile> = Vec::new();
    for l in &logs[i..] {
        if let Some(prev) = out.last() {
            let after = secs(&prev.meta()["last_time"]).map(local).unwrap_or_default();
            if prev.partial() {
                // Only the active copy was archived, and the server has moved on:
                // the end of that file is lost, and replaying past it would skip it.
                let why = format!(
                    "binlog {} of {name} was archived only while active ({} bytes) and its complete copy is missing, so no time after {after} can be restored",
                    prev.file(),
                    prev.size(),
                );
                return Ok((out, Some(Failure::new(exit::NOT_RESTORABLE, why))));
            }
            let missing = binlog_gap(prev.file(), l.file());
            if !missing.is_empty() {
                let why = format!(
                    "binlog {} of {name} is missing from the archive, so no time after {after} can be restored from this base",
                    missing.join(", "),
                );
                return Ok((out, Some(Failure::new(exit::NOT_RESTORABLE, why))));
            }
        }
        out.push(l.clone());
    }
    Ok((out, None))
}

/// The error for a target past the end of what `run` reaches.
fn beyond(run: &[LogFile], name: &str, stopped: Option<Failure>) -> Failure {
    stopped.unwrap_or_else(|| {
        let end = run.last().and_then(|l| secs(&l.meta()["last_time"])).map(local).unwrap_or_default();
        let last_file = run.last().map(|l| l.file().to_string()).unwrap_or_default();
        Failure::new(
            exit::NOT_RESTORABLE,
            format!("the binlog archive of {name} ends at {end} ({last_file}): push newer binlogs (--include-active for the active one) or pick an earlier time"),
        )
    })
}

/// The binlog files that take a base at `file` up to `until`, or why not.
fn binlogs_covering(logs: &[LogFile], name: &str, start_file: &str, until: Timestamp) -> R<Vec<LogFile>> {
    let (run, stopped) = consecutive(logs, name, start_file)?;
    match run.iter().position(|l| secs(&l.meta()["last_time"]).is_some_and(|t| t >= until)) {
        Some(n) => Ok(run[..=n].to_vec()),
        None => Err(beyond(&run, name, stopped)),
    }
}

/// True when the files reach MariaDB GTID position `target` (`d-s-n,...`):
/// every domain's sequence number is reached by some file's last GTID or by
/// the GTID state a later file starts from. Other GTID forms are not checked.
fn reaches_gtid(run: &[LogFile], target: &str) -> bool {
    let parse = |g: &str| -> Option<(u64, u64)> {
        let mut p = g.trim().split('-');
        let d = p.next()?.parse().ok()?;
        let _server: u64 = p.next()?.parse().ok()?;
        Some((d, p.next()?.parse().ok()?))
    };
    let Some(targets) = target.split(',').map(parse).collect::<Option<Vec<_>>>() else { return true };
    targets.iter().all(|(d, n)| {
        run.iter().any(|l| {
            let m = l.meta();
            let last = m["last_gtid"].as_str().and_then(parse);
            let state = m["gtid_state_at_start"].as_str().unwrap_or_default();
            last.is_some_and(|(ld, ln)| ld == *d && ln >= *n)
                || state.split(',').filter_map(parse).any(|(sd, sn)| sd == *d && sn >= *n)
        })
    })
}

/// Reads the binlog coordinates a mariabackup/xtrabackup backup recorded.
fn restored_binlog_position(dir: &Path) -> R<(String, u64)> {
    for f in ["mariadb_backup_binlog_info", "xtrabackup_binlog_info"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(f)) {
            let m = dedupe_ingest::meta::binlog_info(&text);
            if let (Some(file), Some(pos)) =
                (m.get("binlog_file").and_then(Value::as_str), m.get("binlog_position").and_then(Value::as_u64))
            {
                return Ok((file.to_string(), pos));
            }
        }
    }
    Err(Failure::usage(format!(
        "{} has no xtrabackup_binlog_info: restore a mariabackup snapshot there first (dedupe restore --until ... --prepare)",
        dir.display()
    )))
}

fn tool(names: &[&str]) -> R<String> {
    for n in names {
        if std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(n).is_file())) {
            return Ok(n.to_string());
        }
    }
    Err(Failure::new(exit::ERROR, format!("{} is not installed", names.join(" or "))))
}

pub fn binlog_replay(
    ctx: &Ctx,
    name: &str,
    target: &Path,
    until: Option<&str>,
    until_gtid: Option<&str>,
    until_position: Option<&str>,
) -> R {
    let (start_file, start_pos) = restored_binlog_position(target)?;
    let repo = ctx.indexed()?;
    let cat = Catalogue::open(&repo, ctx.cache_base())?;
    let logs = archived(&cat, name, "binlog")?;
    let mut stop_args: Vec<String> = Vec::new();
    let files = if let Some(u) = until {
        let stop = parse_until(u)?;
        stop_args.push(format!("--stop-datetime={}", local(stop)));
        binlogs_covering(&logs, name, &start_file, stop)?
    } else {
        // To a position or GTID: the consecutive archived files from the start.
        let (all, stopped) = consecutive(&logs, name, &start_file)?;
        if let Some(g) = until_gtid {
            if !reaches_gtid(&all, g) {
                return Err(stopped.unwrap_or_else(|| {
                    let last = all.iter().rev().find_map(|l| l.meta()["last_gtid"].as_str()).unwrap_or("none");
                    Failure::new(
                        exit::NOT_RESTORABLE,
                        format!("the binlog archive of {name} does not reach GTID {g} (its last GTID is {last}): push newer binlogs"),
                    )
                }));
            }
            stop_args.push(format!("--stop-position={g}"));
            all
        } else {
            let p = until_position.expect("clap requires one of the three");
            let (file, pos) =
                p.rsplit_once(':').ok_or_else(|| Failure::usage("--until-position takes FILE:POSITION"))?;
            let n = all.iter().position(|l| l.file() == file).ok_or_else(|| {
                stopped.unwrap_or_else(|| {
                    Failure::new(
                        exit::NOT_RESTORABLE,
                        format!("binlog {file} is not in the archive after {start_file}"),
                    )
                })
            })?;
            stop_args.push(format!("--stop-position={pos}"));
            all[..=n].to_vec()
        }
    };
    // The files, fetched under their own names, then one mariadb-binlog over
    // all of them: one stream of SQL, so one client session replays it all
    // (temporary tables survive across files).
    let dir = tempfile_dir(target)?;
    let mut paths = Vec::new();
    for l in &files {
        let p = dir.join(l.file());
        fetch_to(&repo, l, &p)?;
        paths.push(p);
    }
    let bin = tool(&["mariadb-binlog", "mysqlbinlog"])?;
    let status = std::process::Command::new(&bin)
        .arg(format!("--start-position={start_pos}"))
        .args(&stop_args)
        .args(&paths)
        .status()
        .map_err(|e| Failure::new(exit::ERROR, format!("cannot run {bin}: {e}")))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        return Err(Failure::new(exit::ERROR, format!("{bin} failed ({status})")));
    }
    Ok(())
}

/// Where the binlogs to replay are fetched: beside the restored directory,
/// on the disk that had room for it, rather than a possibly small /tmp.
fn tempfile_dir(near: &Path) -> R<PathBuf> {
    let parent = near.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = parent.join(format!(".dedupe-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::new(exit::STORAGE, format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

// ---------------------------------------------------------------- PostgreSQL

/// The WAL segments from a base's first one on its timeline, consecutive,
/// up to one holding a commit at or after `until`.
/// The WAL segment size of an archive (initdb --wal-segsize), from its
/// archived segments; 16 MiB when none says.
fn wal_segment_size(logs: &[LogFile]) -> u64 {
    logs.iter()
        .filter(|l| l.meta()["type"] == "segment")
        .find_map(|l| l.meta()["segment_size"].as_u64())
        .unwrap_or(16 << 20)
}

/// The file name of segment number `seg` on `timeline`.
fn wal_segment_name(timeline: u64, seg: u64, seg_size: u64) -> String {
    let per_log = 0x1_0000_0000u64 / seg_size;
    format!("{timeline:08X}{:08X}{:08X}", seg / per_log, seg % per_log)
}

fn wal_covering(logs: &[LogFile], name: &str, start_file: &str, timeline: u64, until: Timestamp) -> R<()> {
    let seg_size = wal_segment_size(logs);
    let start = crate::logs::wal_name_facts(start_file, seg_size)["segment"].as_u64().unwrap_or(0);
    let mut segs: Vec<&LogFile> = logs
        .iter()
        .filter(|l| l.meta()["type"] == "segment" && l.meta()["timeline"].as_u64() == Some(timeline))
        .collect();
    segs.sort_by_key(|l| l.meta()["segment"].as_u64().unwrap_or(0));
    let mut expect = start;
    let mut last_time = None;
    for l in segs.iter().filter(|l| l.meta()["segment"].as_u64().unwrap_or(0) >= start) {
        let seg = l.meta()["segment"].as_u64().unwrap_or(0);
        if seg != expect {
            let missing = wal_segment_name(timeline, expect, seg_size);
            return Err(Failure::new(
                exit::NOT_RESTORABLE,
                format!("WAL segment {missing} of {name} is missing from the archive, so recovery cannot pass it"),
            ));
        }
        expect += 1;
        // A segment pg_waldump found no commit in (null) cannot stop recovery:
        // PostgreSQL stops only at a commit (or abort) at or after the target,
        // and fails when the WAL ends first. Only a segment never read (no
        // pg_waldump when it was archived) falls back to its archiving time.
        let t = match l.meta().get("last_commit_time") {
            Some(v) => secs(v),
            None => secs(&l.manifest.metadata["archived_at"]),
        };
        last_time = t.or(last_time);
        if t.is_some_and(|t| t >= until) {
            return Ok(());
        }
    }
    if expect == start {
        return Err(Failure::new(
            exit::NOT_RESTORABLE,
            format!("WAL segment {start_file} of {name}, where the base backup starts, is not archived"),
        ));
    }
    Err(Failure::new(
        exit::NOT_RESTORABLE,
        format!(
            "the WAL archive of {name} has no commit after {}: recovery could not reach the target; archive newer WAL (SELECT pg_switch_wal()) or pick an earlier time",
            last_time.map(local).unwrap_or_default()
        ),
    ))
}

/// Quotes a word for sh (PostgreSQL runs restore_command through the shell).
fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
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

/// `recovery_target_time` in a form the server takes: local time with a
/// numeric offset. (It refuses RFC 3339's `Z`, "invalid value for parameter",
/// and does not start.)
fn pg_target_time(until: Timestamp) -> String {
    until.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S%.f%:z").to_string()
}

fn write_recovery_settings(ctx: &Ctx, target: &Path, name: &str, until: Timestamp) -> R {
    let pw = restore_command_password(ctx)?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(exit::ERROR, format!("cannot find the dedupe binary: {e}")))?;
    let repo = std::fs::canonicalize(ctx.repo_path()).unwrap_or_else(|_| ctx.repo_path().to_path_buf());
    let mut words = vec![exe.display().to_string(), "--repo".into(), repo.display().to_string()];
    words.extend(pw);
    words.extend(["wal".into(), "fetch".into(), "--name".into(), name.to_string()]);
    let cmd = words.iter().map(|w| sh_quote(w)).collect::<Vec<_>>().join(" ") + " %f %p";
    let pgq = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let settings = format!(
        "\n# Written by dedupe restore --until: recover from the WAL archive up to the target, then promote.\n\
         restore_command = {}\nrecovery_target_time = {}\nrecovery_target_inclusive = off\nrecovery_target_action = 'promote'\n\
         # A restored copy must not archive into the original server's WAL archive.\narchive_mode = off\n",
        pgq(&cmd),
        pgq(&pg_target_time(until)),
    );
    let conf = target.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap_or_default();
    text.push_str(&settings);
    let io = |e: std::io::Error| {
        Failure::new(exit::STORAGE, format!("cannot write recovery settings in {}: {e}", target.display()))
    };
    std::fs::write(&conf, text).map_err(io)?;
    std::fs::write(target.join("recovery.signal"), b"").map_err(io)?;
    // Owned like the rest of the data directory, so the server can read them.
    if let Ok(m) = std::fs::metadata(target.join("PG_VERSION")) {
        use std::os::unix::fs::MetadataExt;
        for f in ["postgresql.auto.conf", "recovery.signal"] {
            let _ = std::os::unix::fs::chown(target.join(f), Some(m.uid()), Some(m.gid()));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- restore --until

/// Picks the base for `until`, checks the logs reach it, and returns it.
pub fn plan(ctx: &Ctx, repo: &Unlocked, name: Option<&str>, until: Timestamp) -> R<(String, Manifest, String)> {
    let cat = Catalogue::open(repo, ctx.cache_base())?;
    let snaps = cat.list(Kind::Snapshot, name)?;
    let names: std::collections::BTreeSet<&str> = snaps.iter().map(|(_, m)| m.name.as_str()).collect();
    let name = match (name, names.len()) {
        (Some(n), _) => n.to_string(),
        (None, 1) => names.into_iter().next().expect("one").to_string(),
        (None, 0) => return Err(Failure::new(exit::NO_SNAPSHOT, "the repository has no snapshots")),
        (None, _) => return Err(Failure::usage("several servers are backed up here: pass --name")),
    };
    let bases: Vec<&(String, Manifest)> = snaps
        .iter()
        .filter(|(_, m)| matches!(database(m), "mariadb" | "mysql" | "postgresql"))
        .filter(|(_, m)| mysql(m, "binlog_file").is_some() || pg(m, "start_wal_file").is_some())
        .collect();
    let earliest = bases.first().map(|(_, m)| manifest_time(m));
    let Some((id, base)) =
        bases.iter().rev().find(|(_, m)| manifest_time(m) <= until).map(|(i, m)| (i.clone(), m.clone()))
    else {
        return Err(Failure::new(
            exit::NOT_RESTORABLE,
            match earliest {
                Some(t) => format!(
                    "{} is before the earliest restorable time of {name}, {} (its oldest base backup)",
                    local(until),
                    local(t)
                ),
                None => format!("{name} has no base backup with binlog or WAL coordinates to restore from"),
            },
        ));
    };
    match database(&base) {
        "postgresql" => {
            // Checked before anything is restored, not after.
            restore_command_password(ctx)?;
            let logs = archived(&cat, &name, "wal")?;
            let start = pg(&base, "start_wal_file").and_then(Value::as_str).unwrap_or_default();
            let tl = pg(&base, "timeline").and_then(Value::as_u64).unwrap_or(1);
            wal_covering(&logs, &name, start, tl, until)?;
        }
        _ => {
            let logs = archived(&cat, &name, "binlog")?;
            let start = mysql(&base, "binlog_file").and_then(Value::as_str).unwrap_or_default();
            binlogs_covering(&logs, &name, start, until)?;
        }
    }
    Ok((id, base, name))
}

/// After the base is restored into `target`: the recovery settings for
/// PostgreSQL, or the next command for MariaDB.
pub fn finish_until(ctx: &Ctx, base: &Manifest, name: &str, target: &Path, until: Timestamp, until_text: &str) -> R {
    if database(base) == "postgresql" {
        write_recovery_settings(ctx, target, name, until)?;
        ctx.note(&format!(
            "{} is ready: `pg_ctl -D {} start` replays the archived WAL up to {until_text}, then promotes (archive_mode is off in the copy)",
            target.display(),
            target.display()
        ));
    } else {
        ctx.note(&format!(
            "next: start a server on {} and run `dedupe binlog replay --name {name} --target {} --until {} | mariadb`",
            target.display(),
            target.display(),
            sh_quote(until_text)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- incremental chains

/// The chain that ends at an incremental snapshot: full first.
pub fn chain(ctx: &Ctx, repo: &Unlocked, id: &str, m: &Manifest) -> R<Vec<(String, Manifest)>> {
    let cat = Catalogue::open(repo, ctx.cache_base())?;
    let snaps = cat.list(Kind::Snapshot, Some(&m.name))?;
    let mut out = vec![(id.to_string(), m.clone())];
    loop {
        let (_, cur) = out.last().expect("not empty");
        let kind = mysql(cur, "backup_type").and_then(Value::as_str).unwrap_or("full-backuped");
        if kind != "incremental" {
            break;
        }
        let from = mysql(cur, "from_lsn").and_then(Value::as_u64).unwrap_or(0);
        let parent = snaps.iter().rev().find(|(_, p)| {
            mysql(p, "to_lsn").and_then(Value::as_u64) == Some(from) && manifest_time(p) < manifest_time(cur)
        });
        match parent {
            Some((pid, p)) => out.push((pid.clone(), p.clone())),
            None => {
                return Err(Failure::new(
                    exit::NOT_RESTORABLE,
                    format!(
                        "the incremental chain of {} is broken: no snapshot of {} ends at LSN {from}, where incremental {} starts",
                        &id[..8],
                        m.name,
                        out.last().map(|(i, _)| &i[..8]).unwrap_or_default()
                    ),
                ))
            }
        }
        if out.len() > 10_000 {
            return Err(Failure::new(exit::CORRUPT, "the incremental chain loops"));
        }
    }
    out.reverse();
    Ok(out)
}

// ---------------------------------------------------------------- timeline, lsn

pub fn lsn(ctx: &Ctx, name: Option<&str>) -> R {
    let repo = ctx.unlocked()?;
    let (id, m) = repo.find_snapshot("latest", name)?;
    let lsn = mysql(&m, "to_lsn").and_then(Value::as_u64).ok_or_else(|| {
        Failure::new(
            exit::NO_SNAPSHOT,
            format!("snapshot {} has no InnoDB LSN (not a mariabackup/xtrabackup backup)", &id[..8]),
        )
    })?;
    if ctx.json() {
        println!("{}", json!({"snapshot": id, "name": m.name, "to_lsn": lsn}));
    } else {
        println!("{lsn}");
    }
    Ok(())
}

struct Span {
    from: Timestamp,
    to: Timestamp,
}

pub fn timeline(ctx: &Ctx, name: Option<&str>) -> R {
    let repo = ctx.unlocked()?;
    let cat = Catalogue::open(&repo, ctx.cache_base())?;
    let snaps = cat.list(Kind::Snapshot, name)?;
    let mut names: Vec<String> = snaps.iter().map(|(_, m)| m.name.clone()).collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for n in &names {
        let bases: Vec<&Manifest> = snaps.iter().filter(|(_, m)| &m.name == n).map(|(_, m)| m).collect();
        let binlogs = archived(&cat, n, "binlog")?;
        let wal = archived(&cat, n, "wal")?;
        let mut spans: Vec<Span> = Vec::new();
        for b in &bases {
            let t = manifest_time(b);
            let end = if let Some(f) = mysql(b, "binlog_file").and_then(Value::as_str) {
                reach_binlog(&binlogs, f)
            } else if let Some(f) = pg(b, "start_wal_file").and_then(Value::as_str) {
                reach_wal(&wal, f, pg(b, "timeline").and_then(Value::as_u64).unwrap_or(1))
            } else {
                None
            };
            spans.push(Span { from: t, to: end.filter(|e| *e > t).unwrap_or(t) });
        }
        spans.sort_by_key(|s| s.from);
        let mut merged: Vec<Span> = Vec::new();
        for s in spans {
            match merged.last_mut() {
                Some(m) if s.from <= m.to => m.to = m.to.max(s.to),
                _ => merged.push(s),
            }
        }
        let mut gaps = Vec::new();
        for w in binlogs.windows(2) {
            let missing = binlog_gap(w[0].file(), w[1].file());
            if !missing.is_empty() {
                gaps.push(json!({"missing": missing, "after": secs(&w[0].meta()["last_time"]).map(|t| t.to_string()),
                                 "before": secs(&w[1].meta()["first_time"]).map(|t| t.to_string())}));
            }
        }
        let windows: Vec<Value> =
            merged.iter().map(|s| json!({"from": s.from.to_string(), "to": s.to.to_string()})).collect();
        out.push(json!({"name": n, "windows": windows, "gaps": gaps}));
    }
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return Ok(());
    }
    for n in &out {
        ctx.say(format!("{}:", n["name"].as_str().unwrap_or_default()));
        for w in n["windows"].as_array().into_iter().flatten() {
            let t = |v: &Value| v.as_str().and_then(|s| s.parse::<Timestamp>().ok()).map(local).unwrap_or_default();
            ctx.say(format!("  restorable from {} to {}", t(&w["from"]), t(&w["to"])));
        }
        for g in n["gaps"].as_array().into_iter().flatten() {
            ctx.say(format!(
                "  gap: {} missing",
                g["missing"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// How far the consecutive binlogs from `file` reach.
fn reach_binlog(logs: &[LogFile], file: &str) -> Option<Timestamp> {
    let (run, _) = consecutive(logs, "", file).ok()?;
    run.iter().rev().find_map(|l| secs(&l.meta()["last_time"]))
}

/// How far the consecutive WAL segments from `file` reach.
fn reach_wal(logs: &[LogFile], file: &str, timeline: u64) -> Option<Timestamp> {
    let start = crate::logs::wal_name_facts(file, wal_segment_size(logs))["segment"].as_u64()?;
    let mut segs: Vec<&LogFile> = logs
        .iter()
        .filter(|l| l.meta()["type"] == "segment" && l.meta()["timeline"].as_u64() == Some(timeline))
        .collect();
    segs.sort_by_key(|l| l.meta()["segment"].as_u64().unwrap_or(0));
    let mut end = None;
    let from_start = segs.iter().filter(|l| l.meta()["segment"].as_u64().unwrap_or(0) >= start);
    for (expect, l) in (start..).zip(from_start) {
        if l.meta()["segment"].as_u64() != Some(expect) {
            break;
        }
        end = secs(&l.meta()["last_commit_time"]).or(end);
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_segment_names_follow_the_segment_size() {
        // 16 MiB: 256 segments per 4 GiB "log".
        assert_eq!(wal_segment_name(1, 0x1ff, 16 << 20), "0000000100000001000000FF");
        // 64 MiB: 64 segments per log.
        assert_eq!(wal_segment_name(2, 65, 64 << 20), "000000020000000100000001");
        let f = crate::logs::wal_name_facts("000000020000000100000001", 64 << 20);
        assert_eq!(f["segment"], 65);
        assert_eq!(f["start_lsn"], "1/4000000");
    }

    #[test]
    fn a_whole_second_means_its_end() {
        let t = parse_until("2026-11-21T12:54:23Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-21T12:54:24Z");
        let t = parse_until("2026-11-21T12:54:23.5Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-21T12:54:23.5Z");
        assert!(parse_until("yesterday").is_err());
    }
}
