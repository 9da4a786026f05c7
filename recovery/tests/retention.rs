//! Retention, in process: histories of bases and logs built in memory, and
//! what each policy keeps of them, snapshot by snapshot and file by file.
//!
//! Days are counted from T0 (2026-11-21 05:00 UTC); a base of day `d` is
//! taken at noon UTC of that day (`noon(d)`), so every time zone a test
//! machine may have puts it on the same calendar day. Binlog file `d + 1`
//! holds the events of day `d`, so a base of day `d` starts in it.

mod common;
use common::*;

use dedupe_recovery::retention::{decide, Decision, Policy};
use jiff::{SignedDuration, Span, Timestamp};

/// Noon (UTC) of day `d`.
fn noon(d: i64) -> Timestamp {
    at(d * 1440 + 420)
}

/// A MariaDB base of day `d`, starting in binlog `d + 1`.
fn base(d: i64) -> Obj {
    maria_base(noon(d), &binlog_name(d as u32 + 1), 4)
}

/// Binlog files 1..=n, file `k` holding day `k - 1`.
fn days_of_binlogs(n: u32) -> Vec<Obj> {
    (1..=n).map(|k| binlog(k, at(i64::from(k - 1) * 1440), at(i64::from(k) * 1440 - 1))).collect()
}

fn days(n: i64) -> Span {
    Span::new().days(n)
}

fn one(mut d: Vec<Decision>) -> Decision {
    assert_eq!(d.len(), 1, "one name: {d:?}");
    d.remove(0)
}

/// The kept snapshots' ids, oldest first.
fn kept(d: &Decision) -> Vec<String> {
    d.snapshots.iter().filter(|v| v.kept()).map(|v| v.id.clone()).collect()
}

/// The kept logs' file names.
fn kept_logs(d: &Decision) -> Vec<String> {
    d.logs.iter().filter(|v| v.kept()).map(|v| v.label.clone()).collect()
}

fn ids(objs: &[&Obj]) -> Vec<String> {
    objs.iter().map(|o| o.id.clone()).collect()
}

fn reasons<'a>(d: &'a Decision, o: &Obj) -> &'a [String] {
    &d.snapshots.iter().find(|v| v.id == o.id).expect("decided").keep
}

#[test]
fn keep_last_and_daily_keep_the_newest_of_each_day() {
    // Two backups a day for five days: morning and noon.
    let mut snaps = Vec::new();
    for d in 0..5 {
        snaps.push(raw_snapshot(noon(d) - SignedDuration::from_hours(3)));
        snaps.push(raw_snapshot(noon(d)));
    }
    let cat = catalogue(&[&snaps]);
    let now = noon(5);
    let d = one(decide(&cat, None, &Policy { daily: Some(3), ..Default::default() }, now).unwrap());
    assert_eq!(kept(&d), ids(&[&snaps[5], &snaps[7], &snaps[9]]));
    let d = one(decide(&cat, None, &Policy { last: Some(2), daily: Some(2), ..Default::default() }, now).unwrap());
    assert_eq!(kept(&d), ids(&[&snaps[7], &snaps[8], &snaps[9]]));
    assert_eq!(reasons(&d, &snaps[9]), ["keep-last", "keep-daily"]);
    assert_eq!(reasons(&d, &snaps[8]), ["keep-last"]);
}

#[test]
fn keep_within_counts_from_the_newest_snapshot_not_from_now() {
    let snaps: Vec<Obj> = (0..6).map(|d| raw_snapshot(noon(d))).collect();
    let cat = catalogue(&[&snaps]);
    // Backups stopped long ago: keep-within still keeps the last two days of them.
    let d = one(decide(&cat, None, &Policy { within: Some(days(2)), ..Default::default() }, noon(100)).unwrap());
    assert_eq!(kept(&d), ids(&[&snaps[3], &snaps[4], &snaps[5]]));
}

#[test]
fn keep_pitr_keeps_the_base_before_the_window_every_later_one_and_their_binlogs() {
    let bases: Vec<Obj> = (0..10).map(base).collect();
    let logs = days_of_binlogs(10);
    let cat = catalogue(&[&bases, &logs]);
    // Now is day 9, 18:00; three days back is day 6, 18:00: the base of day 6 noon starts the window.
    let now = noon(9) + SignedDuration::from_hours(6);
    let d = one(decide(&cat, None, &Policy { pitr: Some(days(3)), ..Default::default() }, now).unwrap());
    assert_eq!(kept(&d), ids(&[&bases[6], &bases[7], &bases[8], &bases[9]]));
    // Binlog 7 holds day 6, where that base's position is; everything before it goes.
    assert_eq!(kept_logs(&d), ["mysql-bin.000007", "mysql-bin.000008", "mysql-bin.000009", "mysql-bin.000010"]);
    let gone = d.logs.iter().find(|v| v.label == "mysql-bin.000006").unwrap();
    assert!(gone.forget.as_deref().unwrap().contains("before base"), "{gone:?}");
}

#[test]
fn older_bases_kept_by_other_rules_do_not_keep_binlogs_outside_the_window() {
    let bases: Vec<Obj> = (0..40).map(base).collect();
    let logs = days_of_binlogs(40);
    let cat = catalogue(&[&bases, &logs]);
    let now = noon(39) + SignedDuration::from_hours(1);
    let policy = Policy { pitr: Some(days(14)), daily: Some(30), ..Default::default() };
    let d = one(decide(&cat, None, &policy, now).unwrap());
    // Thirty daily bases (days 10..=39), of which the window needs days 25..=39.
    assert_eq!(kept(&d), ids(&bases[10..].iter().collect::<Vec<_>>()));
    // Binlogs from the window's base on: file 26 (day 25) onward; none for the older daily bases.
    let expect: Vec<String> = (26..=40).map(binlog_name).collect();
    assert_eq!(kept_logs(&d), expect);
}

#[test]
fn without_pitr_binlogs_are_kept_from_the_oldest_kept_base_on() {
    let bases: Vec<Obj> = (0..6).map(base).collect();
    let logs = days_of_binlogs(6);
    let cat = catalogue(&[&bases, &logs]);
    let d = one(decide(&cat, None, &Policy { last: Some(2), ..Default::default() }, noon(6)).unwrap());
    assert_eq!(kept(&d), ids(&[&bases[4], &bases[5]]));
    assert_eq!(kept_logs(&d), ["mysql-bin.000005", "mysql-bin.000006"]);
}

#[test]
fn a_kept_incremental_keeps_its_chain() {
    let full = maria_base(noon(0), &binlog_name(1), 4).ends_at_lsn(1000);
    let inc1 = maria_incr(noon(1), &binlog_name(2), 4, 1000, 2000);
    let inc2 = maria_incr(noon(2), &binlog_name(3), 4, 2000, 3000);
    let cat = catalogue(&[&full, &inc1, &inc2]);
    let d = one(decide(&cat, None, &Policy { last: Some(1), ..Default::default() }, noon(3)).unwrap());
    assert_eq!(kept(&d), ids(&[&full, &inc1, &inc2]));
    let why = format!("chain of {}", &inc2.id[..8]);
    assert_eq!(reasons(&d, &full), std::slice::from_ref(&why));
    assert_eq!(reasons(&d, &inc1), [why]);
}

#[test]
fn a_kept_postgresql_base_keeps_the_wal_it_needs_to_become_consistent() {
    // Base 0 at segment 2..=3 (its backup ended in segment 3), base 1 at segment 6.
    let old = pg_base(noon(0), "000000010000000000000002", 1)
        .edit_snapshot(|f| f.postgresql.as_mut().unwrap().stop_wal_location = Some("0/3000100".into()));
    let new = pg_base(noon(1), "000000010000000000000006", 1);
    let wal: Vec<Obj> = (1..=8)
        .map(|s| seg(&format!("0000000100000000000000{s:02X}"), noon(0) + SignedDuration::from_mins(s), noon(0)))
        .collect();
    let hist = history(2, noon(1));
    let cat = catalogue(&[&old, &new, &wal, &hist]);
    let policy = Policy { pitr: Some(Span::new().hours(1)), last: Some(2), ..Default::default() };
    let d = one(decide(&cat, None, &policy, noon(1) + SignedDuration::from_hours(2)).unwrap());
    assert_eq!(kept(&d), ids(&[&old, &new]));
    assert_eq!(
        kept_logs(&d),
        [
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000006",
            "000000010000000000000007",
            "000000010000000000000008",
            "00000002.history"
        ]
    );
}

#[test]
fn logs_of_a_name_without_any_base_are_kept() {
    let snaps: Vec<Obj> = (0..3).map(|d| raw_snapshot(noon(d))).collect();
    let logs = days_of_binlogs(3);
    let cat = catalogue(&[&snaps, &logs]);
    let d = one(decide(&cat, None, &Policy { last: Some(1), ..Default::default() }, noon(3)).unwrap());
    assert_eq!(kept(&d), ids(&[&snaps[2]]));
    assert_eq!(kept_logs(&d).len(), 3);
}

#[test]
fn an_incomplete_copy_is_forgotten_once_the_complete_one_is_archived() {
    let bases = vec![base(0)];
    let logs = days_of_binlogs(2);
    let partial = binlog(2, at(1440), at(1500)).partial();
    let cat = catalogue(&[&bases, &logs, &partial]);
    let d = one(decide(&cat, None, &Policy { last: Some(1), ..Default::default() }, noon(2)).unwrap());
    let copy = d.logs.iter().find(|v| v.id == partial.id).unwrap();
    assert!(!copy.kept(), "{copy:?}");
    assert_eq!(kept_logs(&d), ["mysql-bin.000001", "mysql-bin.000002"]);
}

#[test]
fn each_name_is_decided_on_its_own() {
    let a: Vec<Obj> = (0..3).map(|d| raw_snapshot(noon(d))).collect();
    let b: Vec<Obj> = (0..3).map(|d| raw_snapshot(noon(d)).of("other")).collect();
    let cat = catalogue(&[&a, &b]);
    let all = decide(&cat, None, &Policy { last: Some(1), ..Default::default() }, noon(3)).unwrap();
    assert_eq!(all.len(), 2);
    for d in &all {
        assert_eq!(kept(d).len(), 1, "{d:?}");
    }
    let only = one(decide(&cat, Some("other"), &Policy { last: Some(2), ..Default::default() }, noon(3)).unwrap());
    assert_eq!(kept(&only), ids(&[&b[1], &b[2]]));
}
