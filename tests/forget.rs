//! `dedupe forget` and `backup --time` through the command line: a history
//! made with `--time`, what a policy removes, and that what stays restores.
//! (Which snapshots and logs a policy keeps, case by case, is tested in
//! process in recovery/tests/retention.rs.)

use dedupe_suite::*;
use std::io::Write;
use std::process::Stdio;

const USAGE: i32 = 2;

/// Backs up `data` as a snapshot of `name` taken at `time`; returns its id.
fn backup_at(repo: &Repo, name: &str, time: &str, data: &[u8]) -> String {
    let mut child = repo
        .cmd(["--json", "backup", "--name", name, "--time", time, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backup");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "backup failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["snapshot"].as_str().or(v["id"].as_str()).expect("snapshot id").to_string()
}

fn snapshot_ids(repo: &Repo) -> Vec<String> {
    let v = repo.json(&["snapshots"]);
    v.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn forget_keeps_what_the_policy_says_and_what_stays_restores() {
    let repo = Repo::new();
    let mut prng = Prng::new(11);
    // Ten days of backups, each a little different; at noon UTC, so that any
    // time zone the machine has puts each on the same day and week.
    let base = prng.bytes(300_000);
    let mut ids = Vec::new();
    let mut contents = Vec::new();
    for day in 1..=10 {
        let mut data = base.clone();
        data.extend(prng.bytes(20_000));
        ids.push(backup_at(&repo, "db", &format!("2026-10-{day:02}T12:00:00Z"), &data));
        contents.push(data);
    }
    let times: Vec<String> =
        repo.json(&["snapshots"]).as_array().unwrap().iter().map(|s| s["time"].as_str().unwrap().to_string()).collect();
    assert!(times[0].starts_with("2026-10-01T12:00:00"), "--time is the snapshot's time: {times:?}");

    // A dry run says what would go and deletes nothing.
    let dry = repo.json(&["forget", "--keep-last", "3", "--keep-weekly", "2", "--dry-run"]);
    let decided = &dry[0]["snapshots"];
    let kept: Vec<&str> = decided
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["keep"].as_array().unwrap().is_empty())
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(snapshot_ids(&repo).len(), 10, "a dry run deletes nothing");
    // The last three (days 8-10), and the newest of each of the last two ISO
    // weeks: October 5-11 (day 10, kept already) and September 28 - October 4 (day 4).
    let expect = [&ids[3], &ids[7], &ids[8], &ids[9]];
    assert_eq!(kept, expect.map(|s| s.as_str()));

    let done = repo.json(&["forget", "--keep-last", "3", "--keep-weekly", "2"]);
    assert_eq!(done[0]["dry_run"], false);
    assert_eq!(snapshot_ids(&repo), expect.map(|s| s.to_string()));
    // What stays restores byte for byte: forget removed manifests, not data.
    for (i, id) in ids.iter().enumerate().filter(|(_, id)| expect.contains(id)) {
        let out = repo.ok(&["restore", id, "--stdout"]);
        assert!(out == contents[i], "snapshot of day {} restores exactly", i + 1);
    }
    // Forgetting again with the same policy changes nothing.
    repo.ok(&["forget", "--keep-last", "3", "--keep-weekly", "2"]);
    assert_eq!(snapshot_ids(&repo).len(), 4);
}

#[test]
fn forget_without_a_rule_and_bad_times_are_refused_before_anything_happens() {
    let repo = Repo::new();
    let id = backup_at(&repo, "db", "2026-10-01 01:00:00", b"hello");
    let out = repo.run(&["forget"]);
    assert_eq!(out.status.code(), Some(USAGE), "{}", one_line_error(&out));
    assert!(one_line_error(&out).contains("--keep"), "{}", one_line_error(&out));
    let out = repo.run(&["forget", "--keep-within", "3 fortnights"]);
    assert_eq!(out.status.code(), Some(USAGE), "{}", one_line_error(&out));
    assert_eq!(snapshot_ids(&repo), [id]);
    let out =
        repo.cmd(["backup", "--name", "db", "--time", "last tuesday", "-"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(USAGE), "{}", one_line_error(&out));
    assert_eq!(snapshot_ids(&repo).len(), 1);
}

#[test]
fn forget_beside_running_backups_fails_neither_and_what_stays_restores() {
    let repo = Repo::new();
    let mut prng = Prng::new(23);
    let base = prng.bytes(2 << 20);
    let written: std::sync::Mutex<Vec<(String, blake3::Hash)>> = Default::default();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut prng = Prng::new(24);
            for _ in 0..20 {
                let mut data = base.clone();
                data.extend(prng.bytes(256 << 10));
                let v = repo.backup_bytes("db", &data);
                let id = v["snapshot"].as_str().or(v["id"].as_str()).unwrap().to_string();
                written.lock().unwrap().push((id, blake3::hash(&data)));
            }
        });
        let mut rounds = 0;
        // A writer that panicked has finished too: the scope then reports its panic.
        while !writer.is_finished() || rounds == 0 {
            let out = repo.run(&["forget", "--keep-last", "2"]);
            assert!(out.status.success(), "forget beside a backup: {}", one_line_error(&out));
            rounds += 1;
        }
    });
    repo.ok(&["forget", "--keep-last", "2"]);
    let left = snapshot_ids(&repo);
    let written = written.into_inner().unwrap();
    assert_eq!(left, written[written.len() - 2..].iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    for (id, hash) in &written[written.len() - 2..] {
        assert_eq!(blake3::hash(&repo.ok(&["restore", id, "--stdout"])), *hash, "snapshot {id} restores exactly");
    }
}
