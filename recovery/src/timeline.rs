//! The timeline: for each server, the spans of time it can be restored to
//! (a base backup plus the consecutive logs after it), and the gaps in its
//! binlog and WAL archives.

use crate::archive::{archived, binlog_gap, LogFile};
use crate::error::Result;
use crate::plan::{binlog_reach, segment_size, wal_reach};
use crate::time::{manifest_time, unix};
use dedupe_ingest::facts::{LogKind, SnapshotFacts, WalFileType};
use dedupe_store::{Catalogue, Kind};
use jiff::Timestamp;

/// One server's restorable spans and archive gaps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    pub name: String,
    /// Disjoint, oldest first.
    pub windows: Vec<Span>,
    pub gaps: Vec<Gap>,
}

/// Every instant from `from` to `to` can be restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub from: Timestamp,
    pub to: Timestamp,
}

/// The windows in the whole seconds `restore --until` takes, where a second
/// means its end (`time::parse_until`): each from the base's second to the
/// last second whose end the logs reach, and windows that then touch (the
/// next starts within a second of where the last ends) as one.
pub fn in_seconds(windows: &[Span]) -> Vec<Span> {
    let second = jiff::SignedDuration::from_secs(1);
    let floor = |t: Timestamp| Timestamp::from_second(t.as_second()).unwrap_or(t);
    let mut out: Vec<Span> = Vec::new();
    for w in windows {
        let from = floor(w.from);
        let to = floor(w.to).checked_sub(second).unwrap_or(from).max(from);
        match out.last_mut() {
            Some(last) if from <= last.to.checked_add(second).unwrap_or(last.to) => last.to = last.to.max(to),
            _ => out.push(Span { from, to }),
        }
    }
    out
}

/// Binlog files or WAL segments missing from the archive, between the times of their neighbours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub missing: Vec<String>,
    pub after: Option<Timestamp>,
    pub before: Option<Timestamp>,
}

/// WAL segments missing between archived ones of the same timeline (a
/// timeline's first and last archived segments bound it: a switch to a new
/// timeline is not a gap). A gap that ends where a base backup starts
/// (`base_starts`: their start WAL files) is not one either: no restore
/// replays across it, and `forget` leaves such gaps between the WAL that
/// older kept bases need. At most `LISTED` names per gap, then a count.
fn wal_gaps(wal: &[LogFile], base_starts: &[String]) -> Vec<Gap> {
    const LISTED: u64 = 20;
    let size = segment_size(&SnapshotFacts::default(), wal);
    let timeline_of = |f: &str| f.get(..8).and_then(|t| u64::from_str_radix(t, 16).ok());
    let starts: std::collections::HashSet<(u64, u64)> =
        base_starts.iter().filter_map(|f| Some((timeline_of(f)?, crate::wal::segment_number(f, size)?))).collect();
    let mut segs: Vec<(u64, u64, &LogFile)> = wal
        .iter()
        .filter(|l| !l.partial())
        .filter_map(|l| {
            let w = l.wal()?;
            (w.kind == WalFileType::Segment).then_some((w.timeline?, w.segment?, l))
        })
        .collect();
    segs.sort_by_key(|(tl, seg, _)| (*tl, *seg));
    let name = |tl: u64, n: u64| crate::wal::segment_name(tl, n, size);
    let when = |l: &LogFile, first: bool| {
        let w = l.wal()?;
        let t = if first { w.first_commit_time } else { w.last_commit_time };
        Timestamp::from_second(t.flatten()?).ok()
    };
    segs.windows(2)
        .filter(|w| w[0].0 == w[1].0 && w[1].1 > w[0].1 + 1 && !starts.contains(&(w[1].0, w[1].1)))
        .map(|w| {
            let (tl, from, to) = (w[0].0, w[0].1 + 1, w[1].1);
            let mut missing: Vec<String> = (from..to).take(LISTED as usize).map(|n| name(tl, n)).collect();
            if to - from > LISTED {
                missing.push(format!("and {} more", to - from - LISTED));
            }
            Gap { missing, after: when(w[0].2, false), before: when(w[1].2, true) }
        })
        .collect()
}

/// The timeline of every server (or of `name`), by name.
pub fn timeline(cat: &Catalogue, name: Option<&str>) -> Result<Vec<Timeline>> {
    let snaps = cat.list(Kind::Snapshot, name)?;
    let mut names: Vec<String> = snaps.iter().map(|(_, m)| m.name.clone()).collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for n in names {
        let binlogs = archived(cat, &n, LogKind::Binlog)?;
        let wal = archived(cat, &n, LogKind::Wal)?;
        let mut spans: Vec<Span> = Vec::new();
        for (_, m) in snaps.iter().filter(|(_, m)| m.name == n) {
            let t = manifest_time(m);
            let facts = SnapshotFacts::of(m);
            let end = if let Some((file, _)) = facts.binlog_start() {
                binlog_reach(&binlogs, file)
            } else if let Some((file, timeline)) = facts.wal_start() {
                wal_reach(&wal, file, timeline, segment_size(&facts, &wal))
            } else {
                None
            };
            spans.push(Span { from: t, to: end.filter(|e| *e > t).unwrap_or(t) });
        }
        spans.sort_by_key(|s| s.from);
        let mut windows: Vec<Span> = Vec::new();
        for s in spans {
            match windows.last_mut() {
                Some(w) if s.from <= w.to => w.to = w.to.max(s.to),
                _ => windows.push(s),
            }
        }
        let time = |l: &LogFile, first: bool| {
            l.binlog().and_then(|b| unix(if first { b.first_time } else { b.last_time }.into()))
        };
        let mut gaps: Vec<Gap> = binlogs
            .windows(2)
            .filter_map(|w| {
                let missing = binlog_gap(w[0].file(), w[1].file());
                (!missing.is_empty()).then(|| Gap { missing, after: time(&w[0], false), before: time(&w[1], true) })
            })
            .collect();
        let starts: Vec<String> = snaps
            .iter()
            .filter(|(_, m)| m.name == n)
            .filter_map(|(_, m)| SnapshotFacts::of(m).wal_start().map(|(f, _)| f.to_string()))
            .collect();
        gaps.extend(wal_gaps(&wal, &starts));
        out.push(Timeline { name: n, windows, gaps });
    }
    Ok(out)
}
