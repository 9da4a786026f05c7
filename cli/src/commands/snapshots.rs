//! `dedupe snapshots`: every snapshot, oldest first, with where in its
//! server's history it stands.

use crate::ctx::{human, short, Ctx};
use crate::exit::{Failure, R};
use dedupe_ingest::facts::SnapshotFacts;
use dedupe_store::drills::DrillRecord;
use serde_json::json;

pub(crate) fn run(ctx: &Ctx, name: Option<&str>) -> R {
    let repo = ctx.listed()?;
    let snaps = repo.snapshots(name)?;
    // Each snapshot's drills (`dedupe drill`), oldest first.
    let (records, damaged) = repo.drills()?;
    for e in damaged {
        eprintln!("dedupe: warning: a drill record: {e}");
    }
    let mut drills: std::collections::HashMap<String, Vec<DrillRecord>> = Default::default();
    for (_, r) in records {
        drills.entry(r.snapshot.clone()).or_default().push(r);
    }
    // The readable ones are listed; the damaged ones are named and fail the command.
    let mut fails: Vec<Failure> = repo.damaged_snapshots().map(Failure::from).collect();
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
                if let Some(parent) = incremental_of(&repo, id, m) {
                    v["incremental_of"] = json!(parent);
                }
                if let Some(d) = drills.get(id) {
                    v["drills"] = json!(d);
                }
                v
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&arr).expect("json"));
        return fail.map_or(Ok(()), Err);
    }
    if ctx.quiet {
        return fail.map_or(Ok(()), Err);
    }
    outln!("{:<10} {:<23} {:<16} {:>11} {:>11}  {:<10} position", "id", "time", "name", "size", "new", "kind");
    for (id, m) in &snaps {
        // Local time, as every time a person reads (`timeline`, `forget`, errors).
        let time = m.time.parse::<jiff::Timestamp>().map(dedupe_recovery::time::shown);
        let facts = SnapshotFacts::of(m);
        let kind = match incremental_of(&repo, id, m) {
            Some(parent) => format!("{} incremental of {}", facts.format(), short(&parent)),
            None if facts.is_incremental() => format!("{} incremental, base missing", facts.format()),
            None => facts.format().to_string(),
        };
        // What the producer compressed, stored decompressed.
        let kind = match &facts.compression {
            Some(c) => format!("{kind}.{c}"),
            None => kind,
        };
        outln!(
            "{:<10} {:<23} {:<16} {:>11} {:>11}  {:<10} {}",
            short(id),
            time.unwrap_or_else(|_| m.time.clone()),
            m.name,
            human(m.stats.bytes),
            human(m.stats.new_bytes),
            kind,
            position(&facts) + &drilled(drills.get(id))
        );
    }
    fail.map_or(Ok(()), Err)
}

/// For an incremental backup, the snapshot it applies on (the one before it in its chain).
fn incremental_of(repo: &dedupe_store::Listed, id: &str, m: &dedupe_store::Manifest) -> Option<String> {
    if !SnapshotFacts::of(m).is_incremental() {
        return None;
    }
    let chain = dedupe_recovery::chain::chain(repo.catalogue(), id, m).ok()?;
    chain.len().checked_sub(2).map(|i| chain[i].0.clone())
}

/// Where in the server's history a snapshot stands, in one line.
fn position(f: &SnapshotFacts) -> String {
    if let Some(my) = &f.mysql {
        let mut out = String::new();
        if let (Some(file), Some(p)) = (&my.binlog_file, my.binlog_position) {
            out = format!("binlog {file}:{p}");
        }
        if let Some(g) = &my.gtid {
            out.push_str(&format!(" gtid {g}"));
        }
        if let Some(l) = my.to_lsn {
            out.push_str(&format!(" lsn {l}"));
        }
        // Taken on a replica: where a new replica built from it starts.
        if let (Some(file), Some(p)) = (&my.primary_binlog_file, my.primary_binlog_position) {
            out.push_str(&format!(" primary {file}:{p}"));
        }
        if let Some(g) = &my.primary_gtid {
            out.push_str(&format!(" primary gtid {g}"));
        }
        return out.trim().to_string();
    }
    if let Some(pg) = &f.postgresql {
        let mut out = pg.version.map(|v| format!("PostgreSQL {v} ")).unwrap_or_default();
        out.push_str(&format!(
            "wal {} timeline {}",
            pg.start_wal_location.as_deref().unwrap_or("?"),
            pg.timeline.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
        ));
        match (&pg.built_on, pg.is_uncombined_incremental()) {
            (Some(base), _) => out.push_str(&format!(" incremental built on {}", &base[..base.len().min(8)])),
            (None, true) => out.push_str(" INCREMENTAL (stored as it came: pg_combinebackup needs its chain)"),
            _ => {}
        }
        return out;
    }
    String::new()
}

/// The last drill of a snapshot, in a few words.
fn drilled(records: Option<&Vec<DrillRecord>>) -> String {
    let Some(last) = records.and_then(|r| r.last()) else { return String::new() };
    let when =
        last.time.parse::<jiff::Timestamp>().map(dedupe_recovery::time::shown).unwrap_or_else(|_| last.time.clone());
    if last.ok {
        format!(
            "  drilled {when}: passed, first query after {:.0} s",
            last.restore_seconds + last.prepare_seconds + last.start_seconds
        )
    } else {
        format!("  drilled {when}: FAILED ({})", last.error.as_deref().unwrap_or("?"))
    }
}
