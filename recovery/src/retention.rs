//! Retention: which snapshots and archived logs `forget` keeps, and why.
//!
//! The keep rules are restic's (the newest `last` snapshots; the newest
//! snapshot of each of the last N hours, days, weeks, months, years that have
//! one; those within a duration of the newest), applied per name, plus the
//! database rule `pitr`: every instant of the last DURATION stays
//! restorable. That keeps the newest base at or before the window's start
//! (the one a restore to the window's first second starts from), every
//! snapshot after it, the incremental chains of all kept snapshots, and the
//! logs from that base's start position on.
//!
//! Logs are forgotten only before a point no kept base needs: with `pitr`,
//! the start of the window's base; without it, the start of the oldest kept
//! base (so no gap opens between the oldest kept base and now). A kept
//! PostgreSQL base older than that still keeps the WAL from its start to
//! its end, which it needs to become consistent; timeline history files are
//! always kept. A name none of whose kept snapshots is a base keeps all its
//! logs: nothing says what they are for.
//!
//! A decision is a value built from the catalogue: nothing is deleted here.

use crate::archive::{binlog_seq, LogFile};
use crate::chain::{chain, short};
use crate::error::Result;
use crate::plan::segment_size;
use crate::time::{before, manifest_time};
use dedupe_ingest::facts::{LogKind, SnapshotFacts, WalFileType};
use dedupe_store::{Catalogue, Kind, Manifest};
use jiff::{tz::TimeZone, Span, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// What to keep. Counts of `Some(0)` keep nothing by that rule.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub last: Option<usize>,
    pub hourly: Option<usize>,
    pub daily: Option<usize>,
    pub weekly: Option<usize>,
    pub monthly: Option<usize>,
    pub yearly: Option<usize>,
    /// Snapshots at most this much older than the newest of their name.
    pub within: Option<Span>,
    /// Every instant of this much before now stays restorable.
    pub pitr: Option<Span>,
}

impl Policy {
    /// No rule given: `forget` refuses that rather than forget everything.
    pub fn is_empty(&self) -> bool {
        let Policy { last, hourly, daily, weekly, monthly, yearly, within, pitr } = self;
        [last, hourly, daily, weekly, monthly, yearly].iter().all(|c| c.is_none()) && within.is_none() && pitr.is_none()
    }
}

/// One snapshot's or archived log's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The manifest's id.
    pub id: String,
    /// A snapshot's time (RFC 3339), or a log's file name.
    pub label: String,
    /// The rules that keep it (`keep-daily`, `keep-pitr`, `chain of 1a2b3c4d`…); empty: forgotten.
    pub keep: Vec<String>,
    /// Why a log is forgotten, in words.
    pub forget: Option<String>,
}

impl Verdict {
    pub fn kept(&self) -> bool {
        !self.keep.is_empty()
    }
}

/// The verdicts for one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub name: String,
    /// Oldest first.
    pub snapshots: Vec<Verdict>,
    /// Binlogs and WAL, by file name.
    pub logs: Vec<Verdict>,
}

/// Decides, for every name (or `name`), what `policy` keeps at `now`.
pub fn decide(cat: &Catalogue, name: Option<&str>, policy: &Policy, now: Timestamp) -> Result<Vec<Decision>> {
    let snaps = cat.list(Kind::Snapshot, name)?;
    let mut names: BTreeSet<String> = snaps.iter().map(|(_, m)| m.name.clone()).collect();
    // Logs of a name with no snapshot at all are decided too (kept: no base).
    for (_, m) in cat.list(Kind::Log, name)? {
        names.insert(m.name);
    }
    let mut out = Vec::new();
    for n in names {
        let of_name: Vec<(String, Manifest)> = snaps.iter().filter(|(_, m)| m.name == n).cloned().collect();
        out.push(decide_name(cat, &n, &of_name, policy, now)?);
    }
    Ok(out)
}

/// The calendar bucket (hour, day, week…) a snapshot's local time falls in.
type BucketKey = fn(&jiff::Zoned) -> String;

/// Where a base's logs start, and for PostgreSQL where its backup ended.
#[derive(Clone, Debug)]
enum Start {
    Binlog { file: String },
    Wal { segment: u64, end: Option<u64> },
}

fn decide_name(
    cat: &Catalogue,
    name: &str,
    snaps: &[(String, Manifest)],
    policy: &Policy,
    now: Timestamp,
) -> Result<Decision> {
    let times: Vec<Timestamp> = snaps.iter().map(|(_, m)| manifest_time(m)).collect();
    let mut keep: Vec<Vec<String>> = vec![Vec::new(); snaps.len()];
    let newest_first: Vec<usize> = (0..snaps.len()).rev().collect();
    for &i in newest_first.iter().take(policy.last.unwrap_or(0)) {
        keep[i].push("keep-last".into());
    }
    let tz = TimeZone::system();
    let buckets: [(&str, Option<usize>, BucketKey); 5] = [
        ("keep-hourly", policy.hourly, |z| z.strftime("%Y-%m-%d %H").to_string()),
        ("keep-daily", policy.daily, |z| z.strftime("%Y-%m-%d").to_string()),
        ("keep-weekly", policy.weekly, |z| {
            let w = z.date().iso_week_date();
            format!("{}-{}", w.year(), w.week())
        }),
        ("keep-monthly", policy.monthly, |z| z.strftime("%Y-%m").to_string()),
        ("keep-yearly", policy.yearly, |z| z.strftime("%Y").to_string()),
    ];
    for (rule, count, key) in buckets {
        let mut left = count.unwrap_or(0);
        let mut last_key = None;
        for &i in &newest_first {
            if left == 0 {
                break;
            }
            // Newest first, so the first of each bucket is its newest.
            let k = key(&times[i].to_zoned(tz.clone()));
            if last_key.as_ref() != Some(&k) {
                keep[i].push(rule.into());
                left -= 1;
                last_key = Some(k);
            }
        }
    }
    if let (Some(d), Some(&newest)) = (policy.within, times.iter().max()) {
        for (i, t) in times.iter().enumerate() {
            if *t >= before(newest, d) {
                keep[i].push("keep-within".into());
            }
        }
    }
    let starts: Vec<Option<Start>> = snaps.iter().map(|(_, m)| base_start(cat, name, m)).collect::<Result<_>>()?;
    let mut window_base = None;
    if let Some(d) = policy.pitr {
        let from = before(now, d);
        // The base a restore to the window's first second starts from.
        window_base = (0..snaps.len()).rev().find(|&i| starts[i].is_some() && times[i] <= from);
        for (i, t) in times.iter().enumerate() {
            if *t > from || Some(i) == window_base {
                keep[i].push("keep-pitr".into());
            }
        }
    }
    // A kept incremental keeps the chain it is restored from.
    for i in 0..snaps.len() {
        if keep[i].is_empty() {
            continue;
        }
        let (id, m) = &snaps[i];
        // A broken chain keeps what there is of it; `restore` names the break.
        let Ok(links) = chain(cat, id, m) else { continue };
        for (link, _) in links.iter().filter(|(l, _)| l != id) {
            if let Some(j) = snaps.iter().position(|(s, _)| s == link) {
                let why = format!("chain of {}", short(id));
                if !keep[j].contains(&why) {
                    keep[j].push(why);
                }
            }
        }
    }
    // Where logs stop being forgettable: the window's base, or the oldest kept base.
    let kept_bases: Vec<usize> = (0..snaps.len()).filter(|&i| !keep[i].is_empty() && starts[i].is_some()).collect();
    let from = match policy.pitr {
        Some(_) => window_base.or_else(|| kept_bases.first().copied()),
        None => kept_bases.first().copied(),
    };
    let logs = decide_logs(cat, name, snaps, &starts, &kept_bases, from)?;
    let snapshots = snaps
        .iter()
        .zip(keep)
        .map(|((id, m), keep)| Verdict { id: id.clone(), label: m.time.clone(), keep, forget: None })
        .collect();
    Ok(Decision { name: name.to_string(), snapshots, logs })
}

/// Where a snapshot's logs start, if it is a base (it has coordinates).
fn base_start(cat: &Catalogue, name: &str, m: &Manifest) -> Result<Option<Start>> {
    let f = SnapshotFacts::of(m);
    if let Some((file, _)) = f.binlog_start() {
        return Ok(Some(Start::Binlog { file: file.to_string() }));
    }
    let Some((file, _)) = f.wal_start() else { return Ok(None) };
    let wal = crate::archive::archived(cat, name, LogKind::Wal)?;
    let seg_size = segment_size(&f, &wal);
    let Some(segment) = crate::wal::segment_number(file, seg_size) else { return Ok(None) };
    let end =
        f.postgresql.as_ref().and_then(|pg| pg.stop_wal_location.as_deref()).and_then(parse_lsn).map(|l| l / seg_size);
    Ok(Some(Start::Wal { segment, end }))
}

/// `X/Y` (hex) as a 64-bit LSN.
fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

fn decide_logs(
    cat: &Catalogue,
    name: &str,
    snaps: &[(String, Manifest)],
    starts: &[Option<Start>],
    kept_bases: &[usize],
    from: Option<usize>,
) -> Result<Vec<Verdict>> {
    let mut out = Vec::new();
    for kind in [LogKind::Binlog, LogKind::Wal] {
        let mut all: Vec<LogFile> =
            cat.logs(name, kind.as_str())?.into_iter().filter_map(|(id, m)| LogFile::new(id, m)).collect();
        all.sort_by(|a, b| a.file().cmp(b.file()));
        // The copy of each file a restore uses (a complete one over partial ones).
        let best: BTreeMap<String, LogFile> =
            crate::archive::archived(cat, name, kind)?.into_iter().map(|l| (l.file().to_string(), l)).collect();
        for l in all {
            let verdict = |keep: Vec<String>, forget: Option<String>| Verdict {
                id: l.id.clone(),
                label: l.file().to_string(),
                keep,
                forget,
            };
            if best.get(l.file()).is_some_and(|b| b.id != l.id && !b.partial()) {
                out.push(verdict(vec![], Some("an incomplete copy; a complete one is archived".into())));
                continue;
            }
            let (keep, forget) = log_verdict(&l, snaps, starts, kept_bases, from);
            out.push(verdict(keep, forget));
        }
    }
    Ok(out)
}

fn log_verdict(
    l: &LogFile,
    snaps: &[(String, Manifest)],
    starts: &[Option<Start>],
    kept_bases: &[usize],
    from: Option<usize>,
) -> (Vec<String>, Option<String>) {
    let Some(from) = from else {
        return (vec!["no kept base backup: nothing says what the logs are for".into()], None);
    };
    let mut keep = Vec::new();
    let after = |start: &Start| match (start, l.binlog().is_some(), l.wal()) {
        (Start::Binlog { file }, true, _) => match (binlog_seq(file), binlog_seq(l.file())) {
            (Some((s1, a)), Some((s2, b))) if s1 == s2 => b >= a,
            // Another stem (the server's log-bin changed): not ours to judge.
            _ => true,
        },
        (Start::Wal { segment, .. }, _, Some(w)) => w.segment.is_none_or(|s| s >= *segment),
        _ => true,
    };
    if let Some(w) = l.wal() {
        if w.kind == WalFileType::History {
            keep.push("timeline history".into());
        }
    }
    if starts[from].as_ref().is_some_and(after) {
        keep.push(format!("after base {}", short(&snaps[from].0)));
    }
    for &i in kept_bases {
        if let (Some(Start::Wal { segment, end: Some(end) }), Some(w)) = (&starts[i], l.wal()) {
            if w.segment.is_some_and(|s| s >= *segment && s <= *end) {
                keep.push(format!("needed by base {}", short(&snaps[i].0)));
            }
        }
    }
    if keep.is_empty() {
        return (keep, Some(format!("before base {}, the oldest a kept restore starts from", short(&snaps[from].0))));
    }
    (keep, None)
}
