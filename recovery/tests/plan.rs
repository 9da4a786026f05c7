//! The point-in-time planner, in process: manifests built in memory, put in
//! an in-memory catalogue, and the plan, replay, chain and timeline that
//! come out of them. Every test reads as a story of one archive.
//!
//! Times are minutes after T0 (`at(15)`); a binlog file `n` of the usual
//! archive (`binlogs(1..=6)`) holds the events of minutes (n-1)*15 to n*15.
//! A time given to the planner is exclusive: replay stops before it.

use dedupe_ingest::facts::{LogFacts, SnapshotFacts};
use dedupe_recovery::archive::LogFile;
use dedupe_recovery::chain::{chain, short};
use dedupe_recovery::time::local;
use dedupe_recovery::wal::target_time;
use dedupe_recovery::{plan, timeline, Error, Gap, Plan, Span, Start, Stop, Timeline};
use dedupe_store::{Catalogue, Manifest};
use jiff::Timestamp;
use std::fmt::Debug;

mod common;
use common::*;

// ================================================================ assertions

fn names(logs: &[LogFile]) -> Vec<&str> {
    logs.iter().map(LogFile::file).collect()
}

fn ids(chain: &[(String, Manifest)]) -> Vec<&str> {
    chain.iter().map(|(id, _)| id.as_str()).collect()
}

fn not_restorable<T: Debug>(r: dedupe_recovery::Result<T>) -> String {
    match r {
        Err(Error::NotRestorable(msg)) => msg,
        other => panic!("expected NotRestorable, got {other:?}"),
    }
}

fn plan_db(cat: &Catalogue, until: Timestamp) -> dedupe_recovery::Result<Plan> {
    plan(cat, Some(DB), until)
}

fn assert_mentions(msg: &str, words: &[&str]) {
    for w in words {
        assert!(msg.contains(w), "{msg:?} does not mention {w:?}");
    }
}

fn only(mut tls: Vec<Timeline>) -> Timeline {
    assert_eq!(tls.len(), 1, "{tls:?}");
    tls.remove(0)
}

fn span(from: Timestamp, to: Timestamp) -> Span {
    Span { from, to }
}

// ================================================================ MariaDB: bases and binlogs

#[test]
fn the_newest_base_before_the_time_is_picked_and_its_logs_start_at_its_file() {
    let b0 = maria_base(at(0), "mysql-bin.000001", 342);
    let b30 = maria_base(at(30), "mysql-bin.000003", 1200);
    let b60 = maria_base(at(60), "mysql-bin.000005", 777);
    let cat = catalogue(&[&b0, &b30, &b60, &binlogs(1..=6)]);

    let p = plan_db(&cat, at(50)).unwrap();
    assert_eq!(p.base_id, b30.id);
    assert_eq!(p.name, DB);
    assert_eq!(p.until, at(50));
    assert_eq!(p.start, Start::Binlog { file: "mysql-bin.000003".into(), position: Some(1200) });
    assert_eq!(names(&p.logs), ["mysql-bin.000003", "mysql-bin.000004"]);
    assert_eq!(ids(&p.chain), [b30.id.as_str()]);
    assert_eq!(p.facts.binlog_start(), Some(("mysql-bin.000003", Some(1200))));
    assert!(!p.is_postgresql());
}

#[test]
fn a_base_taken_at_the_very_time_is_used() {
    let b0 = maria_base(at(0), "mysql-bin.000001", 342);
    let b60 = maria_base(at(60), "mysql-bin.000005", 777);
    let cat = catalogue(&[&b0, &b60, &binlogs(1..=6)]);

    let p = plan_db(&cat, at(60)).unwrap();
    assert_eq!(p.base_id, b60.id);
    assert_eq!(names(&p.logs), ["mysql-bin.000005"]);
    // A second earlier, only the older base is at or before the time.
    let p = plan_db(&cat, at(60).checked_sub(jiff::SignedDuration::from_secs(1)).unwrap()).unwrap();
    assert_eq!(p.base_id, b0.id);
    assert_eq!(names(&p.logs).len(), 4);
}

#[test]
fn a_file_covers_the_times_up_to_its_last_event_and_no_further() {
    let cat = catalogue(&[&maria_base(at(0), "mysql-bin.000001", 342), &binlogs(1..=3)]);
    // File 1's last event is at minute 15: replay stopping before it needs file 1 only.
    assert_eq!(names(&plan_db(&cat, at(15)).unwrap().logs), ["mysql-bin.000001"]);
    // A second later, events of that second may be in file 2.
    assert_eq!(names(&plan_db(&cat, just_after(at(15))).unwrap().logs), ["mysql-bin.000001", "mysql-bin.000002"]);
}

#[test]
fn a_gap_in_the_binlogs_is_named() {
    let cat = catalogue(&[&maria_base(at(0), "mysql-bin.000001", 342), &binlogs([1, 2, 4, 5])]);
    let msg = not_restorable(plan_db(&cat, at(50)));
    assert_mentions(&msg, &["mysql-bin.000003", "missing", DB, &local(at(30))]);
    assert!(!msg.contains("mysql-bin.000004"), "{msg}");
}

#[test]
fn a_gap_after_the_time_does_not_matter() {
    let cat = catalogue(&[&maria_base(at(0), "mysql-bin.000001", 342), &binlogs([1, 2, 4, 5])]);
    let p = plan_db(&cat, at(25)).unwrap();
    assert_eq!(names(&p.logs), ["mysql-bin.000001", "mysql-bin.000002"]);
}

#[test]
fn a_gap_of_several_files_names_each_of_them() {
    let cat = catalogue(&[&maria_base(at(0), "mysql-bin.000001", 342), &binlogs([1, 2, 5])]);
    let msg = not_restorable(plan_db(&cat, at(70)));
    assert_mentions(&msg, &["mysql-bin.000003", "mysql-bin.000004"]);
}

#[test]
fn the_timeline_names_a_gap_between_the_times_of_its_neighbours() {
    let cat = catalogue(&[&maria_base(at(0), "mysql-bin.000001", 342), &binlogs([1, 2, 5, 6])]);
    let tl = only(timeline(&cat, Some(DB)).unwrap());
    assert_eq!(
        tl.gaps,
        [Gap {
            missing: vec!["mysql-bin.000003".into(), "mysql-bin.000004".into()],
            after: Some(at(30)),
            before: Some(at(60)),
        }]
    );
    assert_eq!(tl.windows, [span(at(0), at(30))]);
}

#[test]
fn the_base_file_not_archived_is_named() {
    let cat = catalogue(&[&maria_base(at(30), "mysql-bin.000003", 4), &binlogs(4..=6)]);
    let msg = not_restorable(plan_db(&cat, at(50)));
    assert_mentions(&msg, &["mysql-bin.000003", "not archived", "binlog push"]);
}

#[test]
fn a_binlog_archived_while_active_blocks_times_after_it() {
    let base = maria_base(at(0), "mysql-bin.000001", 342);
    let active_copy = binlog(2, at(15), at(20)).partial();
    let cat = catalogue(&[&base, &binlog(1, at(0), at(15)), &active_copy, &binlog(3, at(30), at(45))]);

    // Up to the last event of the copy, it serves.
    let p = plan_db(&cat, at(20)).unwrap();
    assert_eq!(names(&p.logs), ["mysql-bin.000001", "mysql-bin.000002"]);
    assert!(p.logs[1].partial());
    // After it, the end of file 2 is lost: file 3 must not be replayed over the hole.
    let msg = not_restorable(plan_db(&cat, at(40)));
    assert_mentions(&msg, &["mysql-bin.000002", "archived incomplete", "rotate", &local(at(20))]);
    // The timeline agrees.
    assert_eq!(only(timeline(&cat, Some(DB)).unwrap()).windows, [span(at(0), at(20))]);
}

#[test]
fn the_complete_copy_of_a_file_archived_while_active_wins() {
    let base = maria_base(at(0), "mysql-bin.000001", 342);
    let active_copy = binlog(2, at(15), at(20)).partial().archived(at(21));
    let complete = binlog(2, at(15), at(30)).archived(at(31));
    let cat = catalogue(&[&base, &binlog(1, at(0), at(15)), &active_copy, &complete, &binlog(3, at(30), at(45))]);

    let p = plan_db(&cat, at(40)).unwrap();
    assert_eq!(names(&p.logs), ["mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000003"]);
    assert_eq!(p.logs[1].id, complete.id);
    assert!(p.logs.iter().all(|l| !l.partial()));
    assert_eq!(only(timeline(&cat, Some(DB)).unwrap()).windows, [span(at(0), at(45))]);
}

#[test]
fn a_copy_cut_inside_an_event_is_partial_even_when_stored_as_complete() {
    // Earlier versions stored a closed file's copy as complete however it ended.
    let base = maria_base(at(0), "mysql-bin.000001", 342);
    let cut = binlog(2, at(15), at(20)).edit_binlog(|b| {
        b.closed = false;
        b.next_file = None;
        b.truncated_tail = true;
    });
    let cat = catalogue(&[&base, &binlog(1, at(0), at(15)), &cut, &binlog(3, at(30), at(45))]);
    let msg = not_restorable(plan_db(&cat, at(40)));
    assert_mentions(&msg, &["mysql-bin.000002", "archived incomplete", "ends inside an event", &local(at(20))]);

    let complete = binlog(2, at(15), at(30)).archived(at(31));
    let cat = catalogue(&[&base, &binlog(1, at(0), at(15)), &complete, &cut, &binlog(3, at(30), at(45))]);
    let p = plan_db(&cat, at(40)).unwrap();
    assert_eq!(p.logs[1].id, complete.id);
}

#[test]
fn a_complete_copy_wins_even_over_a_later_active_copy() {
    // A push --include-active after the file was closed is refused in practice;
    // if a catalogue still holds both, the complete one is what replay gets.
    let base = maria_base(at(0), "mysql-bin.000001", 342);
    let complete = binlog(1, at(0), at(15)).archived(at(16));
    let late_active = binlog(1, at(0), at(10)).partial().archived(at(40));
    let cat = catalogue(&[&base, &complete, &late_active, &binlog(2, at(15), at(30))]);
    let p = plan_db(&cat, at(25)).unwrap();
    assert_eq!(p.logs[0].id, complete.id);
}

#[test]
fn a_time_past_the_end_of_the_binlog_archive_names_where_it_ends() {
    let cat = catalogue(&[&maria_base(at(0), "mysql-bin.000001", 342), &binlogs(1..=6)]);
    assert_eq!(plan_db(&cat, at(90)).unwrap().logs.len(), 6);
    let msg = not_restorable(plan_db(&cat, just_after(at(90))));
    assert_mentions(&msg, &[DB, &local(at(90)), "mysql-bin.000006", "push newer binlogs"]);
}

#[test]
fn a_time_before_the_oldest_base_names_the_earliest_restorable_time() {
    // The raw snapshot is older, but nothing can be replayed onto it.
    let cat = catalogue(&[
        &raw_snapshot(at(-60)),
        &maria_base(at(0), "mysql-bin.000001", 342),
        &maria_base(at(30), "mysql-bin.000003", 4),
        &binlogs(1..=4),
    ]);
    let until = at(-10);
    let msg = not_restorable(plan_db(&cat, until));
    assert_mentions(&msg, &[&local(until), &local(at(0)), "earliest restorable time", DB]);
    assert!(!msg.contains(&local(at(-60))), "{msg}");
}

// ================================================================ MariaDB: replay stops

#[test]
fn replay_until_a_time_stops_before_it() {
    let cat = catalogue(&[&binlogs(1..=4)]);
    let (files, args) = dedupe_recovery::plan::replay(&cat, DB, "mysql-bin.000002", &Stop::Time(at(40))).unwrap();
    assert_eq!(names(&files), ["mysql-bin.000002", "mysql-bin.000003"]);
    assert_eq!(args, [format!("--stop-datetime={}", local(at(40)))]);
}

/// Binlogs 1..=4, file n holding GTIDs 0-1-((n-1)*100+1) to 0-1-(n*100).
fn gtid_binlogs() -> Vec<Obj> {
    binlogs(1..=4)
        .into_iter()
        .zip(1u32..)
        .map(|(b, n)| b.gtids(&format!("0-1-{}", (n - 1) * 100), &format!("0-1-{}", n * 100)))
        .collect()
}

#[test]
fn a_gtid_is_reached_by_a_files_last_gtid() {
    let cat = catalogue(&[&gtid_binlogs()]);
    let (files, args) =
        dedupe_recovery::plan::replay(&cat, DB, "mysql-bin.000002", &Stop::Gtid("0-1-250".into())).unwrap();
    assert_eq!(names(&files)[..2], ["mysql-bin.000002", "mysql-bin.000003"]);
    assert_eq!(args, ["--stop-position=0-1-250"]);
    // The very last GTID of the archive is reached too.
    assert!(dedupe_recovery::plan::replay(&cat, DB, "mysql-bin.000002", &Stop::Gtid("0-1-400".into())).is_ok());
}

#[test]
fn a_gtid_of_another_domain_is_reached_by_a_later_files_starting_state() {
    // Domain 1 wrote its GTIDs up to 1-1-50 in file 2, whose last GTID is of domain 0:
    // only file 3's GTID list says domain 1 got that far.
    let cat = catalogue(&[
        &binlog(2, at(15), at(30)).gtids("0-1-100", "0-1-200"),
        &binlog(3, at(30), at(45)).gtids("0-1-200,1-1-50", "0-1-300"),
    ]);
    let replay = |g: &str| dedupe_recovery::plan::replay(&cat, DB, "mysql-bin.000002", &Stop::Gtid(g.into()));
    let (files, args) = replay("1-1-50").unwrap();
    assert_eq!(names(&files), ["mysql-bin.000002", "mysql-bin.000003"]);
    assert_eq!(args, ["--stop-position=1-1-50"]);
    // Both domains at once.
    assert!(replay("0-1-250,1-1-40").is_ok());
    // One past what the state says is not reached.
    let msg = not_restorable(replay("1-1-51"));
    assert_mentions(&msg, &["1-1-51", "0-1-300"]);
}

#[test]
fn a_gtid_past_the_archive_names_the_last_gtid() {
    let cat = catalogue(&[&gtid_binlogs()]);
    let msg =
        not_restorable(dedupe_recovery::plan::replay(&cat, DB, "mysql-bin.000001", &Stop::Gtid("0-1-450".into())));
    assert_mentions(&msg, &["0-1-450", "its last GTID is 0-1-400", DB]);
    // One domain reached and one not is not reached.
    let msg = not_restorable(dedupe_recovery::plan::replay(
        &cat,
        DB,
        "mysql-bin.000001",
        &Stop::Gtid("0-1-100,2-1-1".into()),
    ));
    assert_mentions(&msg, &["0-1-100,2-1-1"]);
}

#[test]
fn a_gtid_beyond_a_gap_names_the_missing_file() {
    let mut logs = gtid_binlogs();
    logs.remove(2); // mysql-bin.000003
    let cat = catalogue(&[&logs]);
    let msg =
        not_restorable(dedupe_recovery::plan::replay(&cat, DB, "mysql-bin.000001", &Stop::Gtid("0-1-350".into())));
    assert_mentions(&msg, &["mysql-bin.000003", "missing"]);
}

#[test]
fn until_position_in_an_archived_file() {
    let cat = catalogue(&[&binlogs(1..=5)]);
    let stop = Stop::Position { file: "mysql-bin.000004".into(), position: 1234 };
    let (files, args) = dedupe_recovery::plan::replay(&cat, DB, "mysql-bin.000002", &stop).unwrap();
    assert_eq!(names(&files), ["mysql-bin.000002", "mysql-bin.000003", "mysql-bin.000004"]);
    assert_eq!(args, ["--stop-position=1234"]);
    // In the start file itself.
    let stop = Stop::Position { file: "mysql-bin.000002".into(), position: 900 };
    let (files, _) = dedupe_recovery::plan::replay(&cat, DB, "mysql-bin.000002", &stop).unwrap();
    assert_eq!(names(&files), ["mysql-bin.000002"]);
}

#[test]
fn until_position_in_a_file_not_in_the_archive() {
    let cat = catalogue(&[&binlogs(1..=5)]);
    let replay = |file: &str| {
        let stop = Stop::Position { file: file.into(), position: 4 };
        dedupe_recovery::plan::replay(&cat, DB, "mysql-bin.000002", &stop)
    };
    // Past the end of the archive.
    let msg = not_restorable(replay("mysql-bin.000009"));
    assert_mentions(&msg, &["mysql-bin.000009", "not in the archive", "mysql-bin.000002"]);
    // Before the restored base's position: not something replay can go back to.
    let msg = not_restorable(replay("mysql-bin.000001"));
    assert_mentions(&msg, &["mysql-bin.000001", "not in the archive"]);
}

#[test]
fn until_position_beyond_a_gap_names_the_missing_file() {
    let cat = catalogue(&[&binlogs([1, 2, 4, 5])]);
    let stop = Stop::Position { file: "mysql-bin.000004".into(), position: 1234 };
    let msg = not_restorable(dedupe_recovery::plan::replay(&cat, DB, "mysql-bin.000001", &stop));
    assert_mentions(&msg, &["mysql-bin.000003", "missing"]);
}

#[test]
fn until_position_inside_an_active_copy_is_replayed() {
    let active = binlog(3, at(30), at(35)).partial();
    let end = LogFacts::of(&active.manifest).unwrap().binlog().unwrap().end_position;
    let cat = catalogue(&[&binlogs(1..=2), &active]);
    let stop = Stop::Position { file: "mysql-bin.000003".into(), position: end };
    let (files, _) = dedupe_recovery::plan::replay(&cat, DB, "mysql-bin.000001", &stop).unwrap();
    assert_eq!(names(&files), ["mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000003"]);
}

#[test]
fn until_position_past_what_an_active_copy_holds_is_refused() {
    // The copy holds the file up to `end`; the rest was still being written.
    // Replaying it "until" a later position silently stops at `end` instead.
    let active = binlog(3, at(30), at(35)).partial();
    let end = LogFacts::of(&active.manifest).unwrap().binlog().unwrap().end_position;
    let cat = catalogue(&[&binlogs(1..=2), &active]);
    let stop = Stop::Position { file: "mysql-bin.000003".into(), position: end + 10_000 };
    let msg = not_restorable(dedupe_recovery::plan::replay(&cat, DB, "mysql-bin.000001", &stop));
    assert_mentions(&msg, &["mysql-bin.000003"]);
}

// ================================================================ incremental chains

#[test]
fn an_incremental_base_brings_its_whole_chain() {
    let full = maria_base(at(0), "mysql-bin.000001", 342).ends_at_lsn(1000);
    let incr1 = maria_incr(at(30), "mysql-bin.000003", 500, 1000, 2000);
    let incr2 = maria_incr(at(60), "mysql-bin.000005", 600, 2000, 3000);
    let cat = catalogue(&[&full, &incr1, &incr2, &binlogs(1..=6)]);

    let p = plan_db(&cat, at(70)).unwrap();
    assert_eq!(p.base_id, incr2.id);
    assert_eq!(ids(&p.chain), [full.id.as_str(), incr1.id.as_str(), incr2.id.as_str()]);
    assert_eq!(p.start, Start::Binlog { file: "mysql-bin.000005".into(), position: Some(600) });
    assert_eq!(names(&p.logs), ["mysql-bin.000005"]);

    let p = plan_db(&cat, at(40)).unwrap();
    assert_eq!(ids(&p.chain), [full.id.as_str(), incr1.id.as_str()]);
    // A full backup is a chain of one.
    assert_eq!(ids(&chain(&cat, &full.id, &full.manifest).unwrap()), [full.id.as_str()]);
}

#[test]
fn a_missing_link_in_the_chain_is_named_by_its_lsn() {
    let full = maria_base(at(0), "mysql-bin.000001", 342).ends_at_lsn(1000);
    let incr2 = maria_incr(at(60), "mysql-bin.000005", 600, 2000, 3000);
    let cat = catalogue(&[&full, &incr2]);
    let msg = not_restorable(chain(&cat, &incr2.id, &incr2.manifest));
    assert_mentions(&msg, &["LSN 2000", short(&incr2.id), DB, "broken"]);
}

#[test]
fn a_plan_on_an_incremental_without_its_full_backup_names_the_lsn() {
    let incr1 = maria_incr(at(30), "mysql-bin.000003", 500, 1000, 2000);
    let incr2 = maria_incr(at(60), "mysql-bin.000005", 600, 2000, 3000);
    let cat = catalogue(&[&incr1, &incr2, &binlogs(1..=6)]);
    let msg = not_restorable(plan_db(&cat, at(70)));
    assert_mentions(&msg, &["LSN 1000", short(&incr1.id)]);
}

#[test]
fn a_snapshot_taken_after_an_incremental_is_not_its_parent() {
    let full = maria_base(at(0), "mysql-bin.000001", 342).ends_at_lsn(1000);
    let incr = maria_incr(at(30), "mysql-bin.000003", 500, 2000, 3000);
    // Ends at the LSN the incremental starts from, but later.
    let later = maria_base(at(45), "mysql-bin.000004", 1).ends_at_lsn(2000);
    let cat = catalogue(&[&full, &incr, &later]);
    let msg = not_restorable(chain(&cat, &incr.id, &incr.manifest));
    assert_mentions(&msg, &["LSN 2000"]);
}

// ================================================================ several servers, no snapshot

#[test]
fn two_servers_in_one_repository_need_a_name() {
    let cat = catalogue(&[
        &maria_base(at(0), "mysql-bin.000001", 342),
        &maria_base(at(0), "mysql-bin.000001", 342).of("db2"),
        &binlogs(1..=2),
    ]);
    match plan(&cat, None, at(10)) {
        Err(Error::Usage(msg)) => assert_mentions(&msg, &["--name"]),
        other => panic!("expected Usage, got {other:?}"),
    }
    assert_eq!(plan(&cat, Some(DB), at(10)).unwrap().name, DB);
}

#[test]
fn with_a_name_the_other_servers_logs_are_never_used() {
    // db2 writes files of the same names, and holds the one db1 lacks.
    let db1_logs = binlogs([1, 2, 4]);
    let db2_logs: Vec<Obj> = binlogs(1..=4).into_iter().map(|o| o.of("db2")).collect();
    let cat = catalogue(&[
        &maria_base(at(0), "mysql-bin.000001", 342),
        &maria_base(at(0), "mysql-bin.000001", 342).of("db2"),
        &db1_logs,
        &db2_logs,
    ]);

    let p = plan_db(&cat, at(25)).unwrap();
    let db1_ids: Vec<&str> = db1_logs.iter().map(|o| o.id.as_str()).collect();
    assert!(p.logs.iter().all(|l| db1_ids.contains(&l.id.as_str()) && l.manifest.name == DB), "{:?}", p.logs);
    let msg = not_restorable(plan_db(&cat, at(50)));
    assert_mentions(&msg, &["mysql-bin.000003", DB]);
    // db2 itself is whole.
    let p = plan(&cat, Some("db2"), at(50)).unwrap();
    assert_eq!(p.logs.len(), 4);
    assert!(p.logs.iter().all(|l| l.manifest.name == "db2"));

    let tls = timeline(&cat, None).unwrap();
    assert_eq!(tls.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), [DB, "db2"]);
    assert_eq!(tls[0].gaps.len(), 1);
    assert_eq!(tls[0].gaps[0].missing, ["mysql-bin.000003"]);
    assert!(tls[1].gaps.is_empty());
}

#[test]
fn no_snapshots_at_all_is_no_snapshot() {
    let empty = catalogue(&[]);
    assert!(matches!(plan(&empty, None, at(0)), Err(Error::NoSnapshot(_))));
    // Archived logs are no base.
    let logs_only = catalogue(&[&binlogs(1..=3)]);
    assert!(matches!(plan(&logs_only, None, at(10)), Err(Error::NoSnapshot(_))));
    assert!(timeline(&empty, None).unwrap().is_empty());
}

#[test]
fn a_snapshot_without_coordinates_is_no_base() {
    let cat = catalogue(&[&raw_snapshot(at(0)), &dump_without_coordinates(at(10)), &binlogs(1..=3)]);
    let msg = not_restorable(plan(&cat, None, at(20)));
    assert_mentions(&msg, &[DB, "no base backup with binlog or WAL coordinates"]);
}

// ================================================================ PostgreSQL

#[test]
fn wal_segments_up_to_a_commit_at_the_target_are_planned() {
    let base = pg_base(at(0), "000000010000000000000002", 1);
    let cat = catalogue(&[
        &base,
        &seg("000000010000000000000001", at(-20), at(-10)),
        &seg("000000010000000000000002", at(0), at(10)),
        &seg("000000010000000000000003", at(10), at(20)),
        &seg("000000010000000000000004", at(20), at(30)),
    ]);
    let p = plan(&cat, None, at(15)).unwrap();
    assert!(p.is_postgresql());
    assert_eq!(p.base_id, base.id);
    assert_eq!(p.start, Start::Wal { file: "000000010000000000000002".into(), timeline: 1 });
    assert_eq!(names(&p.logs), ["000000010000000000000002", "000000010000000000000003"]);
    // A commit exactly at the target is one recovery stops at.
    assert_eq!(names(&plan(&cat, None, at(20)).unwrap().logs).len(), 2);
}

#[test]
fn a_missing_16_mib_segment_is_named() {
    let cat = catalogue(&[
        &pg_base(at(0), "0000000100000000000000FE", 1),
        &seg("0000000100000000000000FE", at(0), at(10)),
        &seg("000000010000000100000000", at(20), at(30)),
    ]);
    let msg = not_restorable(plan_db(&cat, at(25)));
    assert_mentions(&msg, &["WAL segment 0000000100000000000000FF", DB, "missing"]);
    // Before the hole, recovery stops in the first segment.
    assert_eq!(names(&plan_db(&cat, at(5)).unwrap().logs), ["0000000100000000000000FE"]);
}

/// A 64 MiB cluster: 64 segments per 4 GiB, so the segment after
/// …000000003F is …0100000000 (it would be …0000000040 with 16 MiB).
fn wal_64_mib_with_a_hole() -> Vec<Obj> {
    vec![
        seg64("00000001000000000000003E", at(0), at(10)),
        seg64("00000001000000000000003F", at(10), at(20)),
        seg64("000000010000000100000001", at(30), at(40)),
    ]
}

#[test]
fn a_missing_64_mib_segment_is_named_by_the_bases_segment_size() {
    let base = pg_base(at(0), "00000001000000000000003E", 1).segment_size(Some(MIB64));
    let cat = catalogue(&[&base, &wal_64_mib_with_a_hole()]);
    let msg = not_restorable(plan_db(&cat, at(35)));
    assert_mentions(&msg, &["WAL segment 000000010000000100000000"]);
    assert!(!msg.contains("000000010000000000000040"), "{msg}");
    assert_eq!(names(&plan_db(&cat, at(15)).unwrap().logs).len(), 2);

    // Once it is archived, recovery passes it.
    let cat = catalogue(&[&base, &wal_64_mib_with_a_hole(), &seg64("000000010000000100000000", at(20), at(30))]);
    assert_eq!(
        names(&plan_db(&cat, at(35)).unwrap().logs),
        [
            "00000001000000000000003E",
            "00000001000000000000003F",
            "000000010000000100000000",
            "000000010000000100000001"
        ]
    );
}

#[test]
fn without_the_bases_segment_size_the_archives_is_used() {
    let base = pg_base(at(0), "00000001000000000000003E", 1).segment_size(None);
    let cat = catalogue(&[&base, &wal_64_mib_with_a_hole()]);
    let msg = not_restorable(plan_db(&cat, at(35)));
    assert_mentions(&msg, &["WAL segment 000000010000000100000000"]);
    assert!(!msg.contains("000000010000000000000040"), "{msg}");
}

#[test]
fn the_bases_segment_size_counts_where_the_archive_does_not_say() {
    // Segments archived without a recorded size (facts of an older version).
    let untold: Vec<Obj> =
        wal_64_mib_with_a_hole().into_iter().map(|o| o.edit_wal(|w| w.segment_size = None)).collect();
    let base = pg_base(at(0), "00000001000000000000003E", 1).segment_size(Some(MIB64));
    let cat = catalogue(&[&base, &untold]);
    let msg = not_restorable(plan_db(&cat, at(35)));
    assert_mentions(&msg, &["WAL segment 000000010000000100000000"]);
}

#[test]
fn the_bases_start_segment_not_archived_is_named() {
    let cat = catalogue(&[&pg_base(at(0), "000000010000000000000002", 1)]);
    let msg = not_restorable(plan_db(&cat, at(5)));
    assert_mentions(&msg, &["000000010000000000000002", "where the base backup starts", "not archived"]);
    // Later segments alone do not help: the start one is still named.
    let cat =
        catalogue(&[&pg_base(at(0), "000000010000000000000002", 1), &seg("000000010000000000000003", at(10), at(20))]);
    let msg = not_restorable(plan_db(&cat, at(15)));
    assert_mentions(&msg, &["000000010000000000000002"]);
}

#[test]
fn a_segment_without_a_commit_does_not_reach_the_target() {
    let base = pg_base(at(0), "000000010000000000000002", 1);
    let first = seg("000000010000000000000002", at(0), at(10));
    let quiet = seg("000000010000000000000003", at(0), at(0)).no_commit().archived(at(40));
    let cat = catalogue(&[&base, &first, &quiet]);
    // Archived long after the target, but no commit in it can stop recovery.
    let msg = not_restorable(plan_db(&cat, at(20)));
    assert_mentions(&msg, &["no commit after", &local(at(10)), "pg_switch_wal"]);

    let cat = catalogue(&[&base, &first, &quiet, &seg("000000010000000000000004", at(25), at(30))]);
    assert_eq!(
        names(&plan_db(&cat, at(20)).unwrap().logs),
        ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004"]
    );
}

#[test]
fn a_segment_never_read_falls_back_to_its_archiving_time() {
    let base = pg_base(at(0), "000000010000000000000002", 1);
    let unread = seg("000000010000000000000003", at(0), at(0)).never_read().archived(at(30));
    let cat = catalogue(&[&base, &seg("000000010000000000000002", at(0), at(10)), &unread]);
    assert_eq!(names(&plan_db(&cat, at(25)).unwrap().logs), ["000000010000000000000002", "000000010000000000000003"]);
    let msg = not_restorable(plan_db(&cat, at(35)));
    assert_mentions(&msg, &["no commit after", &local(at(30))]);
}

#[test]
fn a_wal_target_past_the_archive_names_the_last_commit() {
    let cat = catalogue(&[
        &pg_base(at(0), "000000010000000000000002", 1),
        &seg("000000010000000000000002", at(0), at(10)),
        &seg("000000010000000000000003", at(10), at(20)),
    ]);
    let msg = not_restorable(plan_db(&cat, just_after(at(20))));
    assert_mentions(&msg, &[DB, "no commit after", &local(at(20))]);
}

#[test]
fn a_time_before_the_oldest_postgresql_base_is_refused() {
    let cat =
        catalogue(&[&pg_base(at(0), "000000010000000000000002", 1), &seg("000000010000000000000002", at(0), at(10))]);
    let msg = not_restorable(plan_db(&cat, at(-1)));
    assert_mentions(&msg, &["earliest restorable time", &local(at(0))]);
}

/// Timeline 1 up to minute 20, then a promotion: 00000002.history and
/// timeline 2's segments, which carry on from segment 3.
fn promoted_archive() -> Vec<Obj> {
    vec![
        seg("000000010000000000000002", at(0), at(10)),
        seg("000000010000000000000003", at(10), at(20)),
        history(2, at(21)),
        seg("000000020000000000000003", at(21), at(30)),
        seg("000000020000000000000004", at(30), at(40)),
    ]
}

#[test]
fn a_history_file_beside_the_segments_does_not_disturb_timeline_1() {
    let cat = catalogue(&[&pg_base(at(0), "000000010000000000000002", 1), &promoted_archive()]);
    let p = plan_db(&cat, at(15)).unwrap();
    assert_eq!(names(&p.logs), ["000000010000000000000002", "000000010000000000000003"]);
    // Timeline 2's segments are not timeline 1's continuation.
    let msg = not_restorable(plan_db(&cat, at(35)));
    assert_mentions(&msg, &["no commit after", &local(at(20))]);
}

#[test]
fn a_segment_of_timeline_2_does_not_fill_a_hole_in_timeline_1() {
    let cat = catalogue(&[
        &pg_base(at(0), "000000010000000000000002", 1),
        &seg("000000010000000000000002", at(0), at(10)),
        &seg("000000020000000000000003", at(10), at(20)),
        &seg("000000010000000000000004", at(20), at(30)),
    ]);
    let msg = not_restorable(plan_db(&cat, at(25)));
    assert_mentions(&msg, &["WAL segment 000000010000000000000003"]);
}

#[test]
fn a_base_on_timeline_2_follows_timeline_2() {
    let base = pg_base(at(25), "000000020000000000000003", 2);
    let cat = catalogue(&[&pg_base(at(0), "000000010000000000000002", 1), &base, &promoted_archive()]);
    let p = plan_db(&cat, at(35)).unwrap();
    assert_eq!(p.base_id, base.id);
    assert_eq!(p.start, Start::Wal { file: "000000020000000000000003".into(), timeline: 2 });
    assert_eq!(names(&p.logs), ["000000020000000000000003", "000000020000000000000004"]);
}

#[test]
fn an_incremental_stored_as_it_came_is_never_a_base_and_one_built_into_a_full_is() {
    // Stored as it came (before dedupe built incrementals into fulls): its
    // label names the backup it needs, and nothing says it was built on one.
    let with = |pg: dedupe_ingest::facts::PgFacts| {
        let mut o = pg_base(at(20), "000000010000000000000003", 1);
        let mut f = SnapshotFacts::of(&o.manifest);
        f.postgresql = Some(pg);
        o.manifest.metadata = f.to_metadata();
        o
    };
    let base_pg = SnapshotFacts::of(&pg_base(at(20), "000000010000000000000003", 1).manifest).postgresql.unwrap();
    let raw = with(dedupe_ingest::facts::PgFacts { incremental_from_lsn: Some("0/2000028".into()), ..base_pg.clone() });
    let full = pg_base(at(0), "000000010000000000000002", 1);
    let wal = [seg("000000010000000000000002", at(0), at(10)), seg("000000010000000000000003", at(10), at(30))];
    let cat = catalogue(&[&full, &raw, &wal[0], &wal[1]]);
    assert_eq!(plan_db(&cat, at(25)).unwrap().base_id, full.id);
    // Built into a full on ingest: a base like any other.
    let built = with(dedupe_ingest::facts::PgFacts {
        incremental_from_lsn: Some("0/2000028".into()),
        built_on: Some(full.id.clone()),
        ..base_pg
    });
    let cat = catalogue(&[&full, &built, &wal[0], &wal[1]]);
    assert_eq!(plan_db(&cat, at(25)).unwrap().base_id, built.id);
}

#[test]
fn recovery_settings_recover_to_the_target_through_restore_command() {
    let cat =
        catalogue(&[&pg_base(at(0), "000000010000000000000002", 1), &seg("000000010000000000000002", at(0), at(10))]);
    let p = plan_db(&cat, at(5)).unwrap();
    let s = p.recovery_settings("dedupe wal fetch --name db1 %f %p").unwrap();
    assert_mentions(
        &s,
        &[
            "restore_command = 'dedupe wal fetch --name db1 %f %p'\n",
            &format!("recovery_target_time = '{}'\n", target_time(at(5))),
            "recovery_target_inclusive = off\n",
            "recovery_target_action = 'promote'\n",
        ],
    );
    // A quote in the command is doubled, as PostgreSQL reads it.
    let s = p.recovery_settings("fetch '%f'").unwrap();
    assert_mentions(&s, &["restore_command = 'fetch ''%f'''\n"]);

    let cat = catalogue(&[&maria_base(at(0), "mysql-bin.000001", 342), &binlogs(1..=2)]);
    assert_eq!(plan_db(&cat, at(5)).unwrap().recovery_settings("anything"), None);
}

// ================================================================ the timeline

#[test]
fn timeline_windows_merge_overlapping_spans_and_stop_at_a_gap() {
    let cat = catalogue(&[
        &maria_base(at(0), "mysql-bin.000001", 342),
        &maria_base(at(20), "mysql-bin.000002", 99),
        &maria_base(at(65), "mysql-bin.000005", 77),
        &binlogs([1, 2, 3, 5, 6]),
    ]);
    let tl = only(timeline(&cat, None).unwrap());
    assert_eq!(tl.name, DB);
    assert_eq!(tl.windows, [span(at(0), at(45)), span(at(65), at(90))]);
    assert_eq!(tl.gaps, [Gap { missing: vec!["mysql-bin.000004".into()], after: Some(at(45)), before: Some(at(60)) }]);
}

#[test]
fn spans_that_touch_make_one_window() {
    // The first base reaches minute 30 (file 3 is missing); the second starts there.
    let cat = catalogue(&[
        &maria_base(at(0), "mysql-bin.000001", 342),
        &maria_base(at(30), "mysql-bin.000004", 4),
        &binlogs([1, 2, 4]),
    ]);
    let tl = only(timeline(&cat, Some(DB)).unwrap());
    assert_eq!(tl.windows, [span(at(0), at(60))]);
    assert_eq!(tl.gaps[0].missing, ["mysql-bin.000003"]);
}

#[test]
fn every_time_a_window_shows_can_be_planned_and_no_later() {
    let cat = catalogue(&[
        &maria_base(at(0), "mysql-bin.000001", 342),
        &maria_base(at(20), "mysql-bin.000002", 99),
        &maria_base(at(65), "mysql-bin.000005", 77),
        &binlogs([1, 2, 3, 5, 6]),
    ]);
    for w in only(timeline(&cat, Some(DB)).unwrap()).windows {
        assert!(plan_db(&cat, w.from).is_ok(), "{w:?}");
        assert!(plan_db(&cat, w.to).is_ok(), "{w:?}");
        not_restorable(plan_db(&cat, just_after(w.to)));
    }
}

#[test]
fn the_seconds_a_window_shows_are_those_restore_until_accepts_and_touching_ones_are_one() {
    let cat = catalogue(&[
        &maria_base(at(0), "mysql-bin.000001", 342),
        &maria_base(at(30), "mysql-bin.000004", 4),
        &maria_base(at(65), "mysql-bin.000005", 77),
        &binlogs([1, 2, 4, 5, 6]),
    ]);
    let windows = only(timeline(&cat, Some(DB)).unwrap()).windows;
    let shown = dedupe_recovery::timeline::in_seconds(&windows);
    for w in &shown {
        // `--until S` is the end of second S.
        let until = |t: Timestamp| dedupe_recovery::time::parse_until(&t.to_string()).unwrap();
        assert!(plan_db(&cat, until(w.from)).is_ok(), "{w:?}");
        assert!(plan_db(&cat, until(w.to)).is_ok(), "{w:?}");
        not_restorable(plan_db(&cat, until(just_after(w.to))));
    }
    // A window ending a second before the next starts is shown as one with it.
    let s = |a: i64, b: i64| Span { from: Timestamp::from_second(a).unwrap(), to: Timestamp::from_second(b).unwrap() };
    assert_eq!(dedupe_recovery::timeline::in_seconds(&[s(0, 10), s(10, 20)]), [s(0, 19)]);
    assert_eq!(dedupe_recovery::timeline::in_seconds(&[s(0, 10), s(12, 20)]), [s(0, 9), s(12, 19)]);
}

#[test]
fn a_base_whose_logs_are_not_archived_is_a_window_of_one_instant() {
    let cat = catalogue(&[&maria_base(at(30), "mysql-bin.000003", 4), &binlogs([1])]);
    let tl = only(timeline(&cat, Some(DB)).unwrap());
    assert_eq!(tl.windows, [span(at(30), at(30))]);
}

#[test]
fn the_wal_timeline_reaches_the_last_commit_before_a_missing_segment() {
    let cat = catalogue(&[
        &pg_base(at(0), "000000010000000000000002", 1),
        &seg("000000010000000000000002", at(0), at(10)),
        &seg("000000010000000000000003", at(0), at(0)).no_commit(),
        &seg("000000010000000000000004", at(20), at(30)),
        &seg("000000010000000000000006", at(40), at(50)),
    ]);
    let tl = only(timeline(&cat, Some(DB)).unwrap());
    assert_eq!(tl.windows, [span(at(0), at(30))]);
    assert!(plan_db(&cat, at(30)).is_ok());
    let msg = not_restorable(plan_db(&cat, at(45)));
    assert_mentions(&msg, &["WAL segment 000000010000000000000005"]);
}

#[test]
fn the_wal_timeline_of_a_64_mib_cluster_counts_its_segments_right() {
    let base = pg_base(at(0), "00000001000000000000003E", 1).segment_size(None);
    let cat = catalogue(&[&base, &wal_64_mib_with_a_hole(), &seg64("000000010000000100000000", at(20), at(30))]);
    assert_eq!(only(timeline(&cat, Some(DB)).unwrap()).windows, [span(at(0), at(40))]);
}

#[test]
fn the_timeline_agrees_with_the_plan_on_a_segment_never_read() {
    let cat = catalogue(&[
        &pg_base(at(0), "000000010000000000000002", 1),
        &seg("000000010000000000000002", at(0), at(10)),
        &seg("000000010000000000000003", at(0), at(0)).never_read().archived(at(30)),
    ]);
    // The plan restores to minute 30 ...
    assert!(plan_db(&cat, at(30)).is_ok());
    // ... so the timeline should show it.
    assert_eq!(only(timeline(&cat, Some(DB)).unwrap()).windows, [span(at(0), at(30))]);
}

#[test]
fn a_name_with_no_snapshots_says_it_has_no_base() {
    let cat = catalogue(&[&maria_base(at(0), "mysql-bin.000001", 342), &binlogs(1..=2)]);
    let msg = not_restorable(dedupe_recovery::plan(&cat, Some("db-typo"), at(5)));
    assert_mentions(&msg, &["db-typo", "no base backup"]);
}

#[test]
fn a_postgresql_base_without_a_start_file_is_no_base_and_no_panic() {
    // backup_label without "(file ...)" beside mariabackup's binlog info.
    let mut facts = SnapshotFacts::of(&maria_base(at(0), "mysql-bin.000001", 342).manifest);
    facts.database = Some(dedupe_ingest::facts::Database::Postgresql);
    facts.postgresql = Some(dedupe_ingest::facts::PgFacts { timeline: Some(1), ..Default::default() });
    let cat = catalogue(&[&snapshot(at(0), facts), &binlogs(1..=2)]);
    let msg = not_restorable(plan_db(&cat, at(5)));
    assert_mentions(&msg, &["no base backup"]);
}
