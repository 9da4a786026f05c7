//! The point-in-time planner: which base snapshot and which archived logs
//! bring a server to a given time, and what is missing when they cannot.
//! A plan is a value: nothing is restored, fetched or printed here.

use crate::archive::{archived, binlog_gap, LogFile};
use crate::chain::chain;
use crate::error::{Error, Result};
use crate::time::{local, manifest_time, shown, unix};
use crate::wal::{segment_name, segment_number, DEFAULT_SEGMENT_SIZE};
use dedupe_ingest::facts::{Database, LogKind, SnapshotFacts, WalFileType};
use dedupe_store::{Catalogue, Kind, Manifest};
use jiff::Timestamp;

/// How to bring a restored base to a point in time.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The server (`--name`) the plan is for.
    pub name: String,
    /// The base snapshot: the newest at or before the target (its logs must reach it).
    pub base_id: String,
    pub base: Manifest,
    pub facts: SnapshotFacts,
    /// The snapshots to restore, full backup first and the base last (just
    /// the base unless it is an incremental).
    pub chain: Vec<(String, Manifest)>,
    /// The archived logs that take the base to the target, in order.
    pub logs: Vec<LogFile>,
    /// Where log replay starts.
    pub start: Start,
    /// The instant replay stops before.
    pub until: Timestamp,
}

/// Where replay starts: the base's binlog coordinates, or its first WAL file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    Binlog { file: String, position: Option<u64> },
    Wal { file: String, timeline: u64 },
}

impl Plan {
    pub fn is_postgresql(&self) -> bool {
        matches!(self.start, Start::Wal { .. })
    }

    /// The settings a restored PostgreSQL data directory gets appended to
    /// its `postgresql.auto.conf` (with an empty `recovery.signal` beside):
    /// recover through `restore_command` up to the target, then promote.
    /// (Archiving is turned off apart, `pgcopy::disarm_archiving`.)
    /// `None` for MariaDB/MySQL, whose logs are replayed by a client.
    pub fn recovery_settings(&self, restore_command: &str) -> Option<String> {
        if !self.is_postgresql() {
            return None;
        }
        let pgq = |s: &str| format!("'{}'", s.replace('\'', "''"));
        Some(format!(
            "\n# Written by dedupe restore --until: recover from the WAL archive up to the target, then promote.\n\
             restore_command = {}\nrecovery_target_time = {}\nrecovery_target_inclusive = off\nrecovery_target_action = 'promote'\n",
            pgq(restore_command),
            pgq(&crate::wal::target_time(self.until)),
        ))
    }
}

/// Picks the base for `until` among the snapshots of `name` (or of the one
/// server the catalogue holds), checks the logs reach `until`, and returns the plan.
pub fn plan(cat: &Catalogue, name: Option<&str>, until: Timestamp) -> Result<Plan> {
    let snaps = cat.list(Kind::Snapshot, name)?;
    let names: std::collections::BTreeSet<&str> = snaps.iter().map(|(_, m)| m.name.as_str()).collect();
    let name = match (name, names.len()) {
        (Some(n), _) => n.to_string(),
        (None, 1) => names.into_iter().next().expect("one").to_string(),
        (None, 0) => return Err(Error::NoSnapshot("the repository has no snapshots".into())),
        (None, _) => return Err(Error::Usage("several servers are backed up here: pass --name".into())),
    };
    // A base is a snapshot of a database with the coordinates its own logs start from.
    let bases: Vec<(&String, &Manifest, SnapshotFacts, Start)> = snaps
        .iter()
        .filter_map(|(id, m)| {
            let f = SnapshotFacts::of(m);
            let start = match f.database? {
                // An incremental stored as it came (before dedupe built them
                // into fulls) is no data directory: never a base.
                Database::Postgresql if f.postgresql.as_ref().is_some_and(|pg| pg.is_uncombined_incremental()) => {
                    return None
                }
                Database::Postgresql => {
                    let (file, timeline) = f.wal_start()?;
                    Start::Wal { file: file.to_string(), timeline }
                }
                Database::Mariadb | Database::Mysql => {
                    let (file, position) = f.binlog_start()?;
                    Start::Binlog { file: file.to_string(), position }
                }
            };
            Some((id, m, f, start))
        })
        .collect();
    let earliest = bases.first().map(|(_, m, _, _)| manifest_time(m));
    let Some((id, base, facts, start)) = bases.into_iter().rev().find(|(_, m, _, _)| manifest_time(m) <= until) else {
        return Err(Error::NotRestorable(match earliest {
            Some(t) => format!(
                "{} is before the earliest restorable time of {name}, {} (its oldest base backup)",
                shown(until),
                shown(t)
            ),
            None => format!("{name} has no base backup with binlog or WAL coordinates to restore from"),
        }));
    };
    let logs = match &start {
        Start::Wal { file, timeline } => {
            let wal = archived(cat, &name, LogKind::Wal)?;
            let seg_size = segment_size(&facts, &wal);
            wal_covering(&wal, &name, file, *timeline, seg_size, until)?
        }
        Start::Binlog { file, .. } => {
            let binlogs = archived(cat, &name, LogKind::Binlog)?;
            binlogs_covering(&binlogs, &name, file, until)?
        }
    };
    let chain = chain(cat, id, base)?;
    Ok(Plan { name, base_id: id.clone(), base: base.clone(), facts, chain, logs, start, until })
}

// ---------------------------------------------------------------- MariaDB / MySQL

fn last_time(l: &LogFile) -> Option<Timestamp> {
    l.binlog().and_then(|b| unix(b.last_time.into()))
}

/// How an incomplete (partial) binlog copy is described: it may be the
/// active file or a closed one cut short, and the catalogue cannot tell.
fn incomplete(l: &LogFile) -> String {
    let why = match l.binlog() {
        Some(b) if b.truncated_tail => "it ends inside an event",
        _ => "it does not end with a rotate or stop event",
    };
    format!("was archived incomplete ({} bytes, {why}: copied while active, or cut short)", l.size())
}

/// The archived binlogs usable one after another from `start_file`, and,
/// when they stop before the archive does, why (a gap, or a file archived
/// incomplete).
fn consecutive(logs: &[LogFile], name: &str, start_file: &str) -> Result<(Vec<LogFile>, Option<Error>)> {
    let i = logs.iter().position(|l| l.file() == start_file).ok_or_else(|| {
        Error::NotRestorable(format!(
            "binlog {start_file} of {name}, where the base backup's position is, is not archived: run `dedupe binlog push`"
        ))
    })?;
    let mut out: Vec<LogFile> = Vec::new();
    for l in &logs[i..] {
        if let Some(prev) = out.last() {
            let after = last_time(prev).map(local).unwrap_or_default();
            if prev.partial() {
                // Only an incomplete copy was archived, and the server has moved
                // on: the end of that file is lost, and replaying past it would skip it.
                let why = format!(
                    "binlog {} of {name} {} and its complete copy is missing, so no time after {after} can be restored",
                    prev.file(),
                    incomplete(prev),
                );
                return Ok((out, Some(Error::NotRestorable(why))));
            }
            let missing = binlog_gap(prev.file(), l.file());
            if !missing.is_empty() {
                let why = format!(
                    "binlog {} of {name} is missing from the archive, so no time after {after} can be restored from this base",
                    missing.join(", "),
                );
                return Ok((out, Some(Error::NotRestorable(why))));
            }
        }
        out.push(l.clone());
    }
    Ok((out, None))
}

/// The error for a target past the end of what `run` reaches.
fn beyond(run: &[LogFile], name: &str, stopped: Option<Error>) -> Error {
    stopped.unwrap_or_else(|| {
        let end = run.last().and_then(last_time).map(shown).unwrap_or_default();
        let last_file = run.last().map(|l| l.file().to_string()).unwrap_or_default();
        Error::NotRestorable(format!(
            "the binlog archive of {name} ends at {end} ({last_file}): push newer binlogs (--include-active for the active one) or pick an earlier time"
        ))
    })
}

/// The binlog files that take a base at `start_file` up to `until`, or why not.
fn binlogs_covering(logs: &[LogFile], name: &str, start_file: &str, until: Timestamp) -> Result<Vec<LogFile>> {
    let (run, stopped) = consecutive(logs, name, start_file)?;
    match run.iter().position(|l| last_time(l).is_some_and(|t| t >= until)) {
        Some(n) => Ok(run[..=n].to_vec()),
        None => Err(beyond(&run, name, stopped)),
    }
}

/// How far `binlog replay` goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Before this instant.
    Time(Timestamp),
    /// At this GTID position (`d-s-n,...` for MariaDB).
    Gtid(String),
    /// At this position of this file.
    Position { file: String, position: u64 },
}

/// The binlogs to replay from a restored base's position (`start_file`) to
/// `stop`, and the stop options for mariadb-binlog.
pub fn replay(cat: &Catalogue, name: &str, start_file: &str, stop: &Stop) -> Result<(Vec<LogFile>, Vec<String>)> {
    let logs = archived(cat, name, LogKind::Binlog)?;
    match stop {
        Stop::Time(t) => {
            Ok((binlogs_covering(&logs, name, start_file, *t)?, vec![format!("--stop-datetime={}", local(*t))]))
        }
        Stop::Gtid(g) => {
            let (all, stopped) = consecutive(&logs, name, start_file)?;
            if !reaches_gtid(&all, g) {
                return Err(stopped.unwrap_or_else(|| {
                    let last = all.iter().rev().find_map(|l| l.binlog()?.last_gtid.clone());
                    Error::NotRestorable(format!(
                        "the binlog archive of {name} does not reach GTID {g} (its last GTID is {}): push newer binlogs",
                        last.as_deref().unwrap_or("none")
                    ))
                }));
            }
            Ok((all, vec![format!("--stop-position={g}")]))
        }
        Stop::Position { file, position } => {
            let (all, stopped) = consecutive(&logs, name, start_file)?;
            let n = all.iter().position(|l| l.file() == file).ok_or_else(|| {
                stopped.unwrap_or_else(|| {
                    Error::NotRestorable(format!("binlog {file} is not in the archive after {start_file}"))
                })
            })?;
            // mariadb-binlog stops quietly at the end of what it has: a
            // position past the archived events would be a replay cut short.
            let end = all[n].binlog().map(|b| b.end_position);
            if let Some(end) = end.filter(|end| position > end) {
                let why = if all[n].partial() {
                    format!("{}, up to position {end}: push it again once it is complete", incomplete(&all[n]))
                } else {
                    format!("ends at position {end}")
                };
                return Err(Error::NotRestorable(format!(
                    "binlog {file} of {name} {why}, so it cannot be replayed to position {position}"
                )));
            }
            Ok((all[..=n].to_vec(), vec![format!("--stop-position={position}")]))
        }
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
        run.iter().filter_map(LogFile::binlog).any(|b| {
            let last = b.last_gtid.as_deref().and_then(parse);
            let state = b.gtid_state_at_start.as_deref().unwrap_or_default();
            last.is_some_and(|(ld, ln)| ld == *d && ln >= *n)
                || state.split(',').filter_map(parse).any(|(sd, sn)| sd == *d && sn >= *n)
        })
    })
}

/// How far the consecutive binlogs from `file` reach.
pub(crate) fn binlog_reach(logs: &[LogFile], file: &str) -> Option<Timestamp> {
    let (run, _) = consecutive(logs, "", file).ok()?;
    run.iter().rev().find_map(last_time)
}

// ---------------------------------------------------------------- PostgreSQL

/// The WAL segment size of a base: its own when its backup_label told,
/// else the archive's (from its archived segments), else 16 MiB.
pub(crate) fn segment_size(base: &SnapshotFacts, wal: &[LogFile]) -> u64 {
    // initdb --wal-segsize: a power of two from 1 MiB to 1 GiB; anything
    // else in a manifest is not believed.
    let valid = |s: &u64| s.is_power_of_two() && (1 << 20..=1 << 30).contains(s);
    base.postgresql
        .as_ref()
        .and_then(|pg| pg.wal_segment_size)
        .filter(valid)
        .or_else(|| {
            let mut segs = wal.iter().filter_map(LogFile::wal).filter(|w| w.kind == WalFileType::Segment);
            segs.find_map(|w| w.segment_size.filter(valid))
        })
        .unwrap_or(DEFAULT_SEGMENT_SIZE)
}

/// The archived segments of `timeline` from segment `start` on, in order.
fn segments_from(logs: &[LogFile], timeline: u64, start: u64) -> Vec<(u64, &LogFile)> {
    let mut segs: Vec<(u64, &LogFile)> = logs
        .iter()
        .filter_map(|l| {
            let w = l.wal()?;
            (w.kind == WalFileType::Segment && w.timeline == Some(timeline)).then_some((w.segment?, l))
        })
        .filter(|(seg, _)| *seg >= start)
        .collect();
    segs.sort_by_key(|(seg, _)| *seg);
    segs
}

/// The time up to which a segment lets recovery go. A segment pg_waldump
/// found no commit in (null) cannot stop recovery: PostgreSQL stops only at
/// a commit (or abort) at or after the target, and fails when the WAL ends
/// first. Only a segment never read (no pg_waldump when it was archived)
/// falls back to its archiving time.
fn commit_reach(l: &LogFile) -> Option<Timestamp> {
    match l.wal().and_then(|w| w.last_commit_time) {
        Some(t) => t.and_then(unix),
        None => unix(l.facts.archived_at),
    }
}

/// The WAL segments from a base's first one on its timeline, consecutive,
/// up to one holding a commit at or after `until`.
fn wal_covering(
    logs: &[LogFile],
    name: &str,
    start_file: &str,
    timeline: u64,
    seg_size: u64,
    until: Timestamp,
) -> Result<Vec<LogFile>> {
    let start = segment_number(start_file, seg_size).unwrap_or(0);
    let mut expect = start;
    let mut last_time = None;
    let mut out = Vec::new();
    for (seg, l) in segments_from(logs, timeline, start) {
        if seg != expect {
            let missing = segment_name(timeline, expect, seg_size);
            return Err(Error::NotRestorable(format!(
                "WAL segment {missing} of {name} is missing from the archive, so recovery cannot pass it"
            )));
        }
        expect += 1;
        out.push(l.clone());
        let t = commit_reach(l);
        last_time = t.or(last_time);
        if t.is_some_and(|t| t >= until) {
            return Ok(out);
        }
    }
    if expect == start {
        return Err(Error::NotRestorable(format!(
            "WAL segment {start_file} of {name}, where the base backup starts, is not archived"
        )));
    }
    Err(Error::NotRestorable(format!(
        "the WAL archive of {name} has no commit after {}: recovery could not reach the target; archive newer WAL (SELECT pg_switch_wal()) or pick an earlier time",
        last_time.map(shown).unwrap_or_default()
    )))
}

/// How far the consecutive WAL segments from `file` reach.
pub(crate) fn wal_reach(logs: &[LogFile], file: &str, timeline: u64, seg_size: u64) -> Option<Timestamp> {
    let start = segment_number(file, seg_size)?;
    let mut end = None;
    for (expect, (seg, l)) in (start..).zip(segments_from(logs, timeline, start)) {
        if seg != expect {
            break;
        }
        end = commit_reach(l).or(end);
    }
    end
}
