//! MariaDB point-in-time restore with archived binlogs, incremental chains,
//! gaps in the archive, and the catalogue rebuilt from the repository.

use dedupe_suite::mariadb::{serial, Server};
use dedupe_suite::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const NOT_RESTORABLE: i32 = 16;

fn push(repo: &Repo, s: &Server) -> serde_json::Value {
    s.push_binlogs(repo, "m")
}

#[test]
fn pitr_stops_before_the_drop() {
    let _serial = serial();
    let repo = Repo::new();
    let work = repo.scratch("work");
    std::fs::create_dir_all(&work).unwrap();
    let src = Server::init(&work.join("src"));
    src.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, note VARCHAR(40)); INSERT INTO shop.t VALUES (1, 'before the backup');");
    repo.ok(&["backup", "--name", "m", "--command", &src.backup_command(&work.join("mbtmp"), 1)]);
    push(&repo, &src);

    // Rows at known seconds, binlog pushes between them.
    let mut committed = vec![(1, "before the backup".to_string())];
    for i in 2..=5 {
        next_second(0.1);
        let note = format!("row {i}");
        src.sql(&format!("INSERT INTO shop.t VALUES ({i}, '{note}')"));
        committed.push((i, note));
        if i % 2 == 0 {
            src.sql("FLUSH BINARY LOGS");
            push(&repo, &src);
        }
    }
    // A temporary table living across a binlog rotation: replay must be one session.
    // The DROP at second T; later writes must not come back either.
    let t = next_second(0.2);
    let before_drop = src.sql("SELECT @@gtid_binlog_pos").trim().to_string();
    src.sql("DROP TABLE shop.t");
    src.sql("CREATE TABLE shop.later (id INT); INSERT INTO shop.later VALUES (1)");
    src.sql("FLUSH BINARY LOGS");
    let pushed = push(&repo, &src);
    assert!(pushed.as_array().unwrap().iter().any(|r| r["status"] == "stored"), "{pushed}");

    // The binlog list is contiguous and ends after T.
    let list = repo.json(&["binlog", "list", "--name", "m"]);
    for row in list.as_array().unwrap() {
        assert!(row["missing_before"].as_array().unwrap().is_empty(), "{list}");
    }
    // RFC 3339 in UTC, whole seconds: ordered as strings.
    let utc = Command::new("date").args(["-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"]).output().unwrap();
    let utc = String::from_utf8(utc.stdout).unwrap().trim().to_string();
    let last = list.as_array().unwrap().last().unwrap()["last_time"].as_str().unwrap().to_string();
    assert!(last >= utc, "{last} {utc}");

    // Restore to the end of second T-1: the base, prepared, then the binlogs replayed.
    let until = local_time(t - 1);
    let target = work.join("restored");
    let copy = restore_until(&repo, &until, &target, &work.join("copy"));
    assert_eq!(rows(&copy), committed, "exactly the rows committed before the DROP");

    // The repository copied to another one (other keys, other store: S3 for
    // a local repository, local for one in S3) restores the same on its own,
    // and a second copy finds nothing to do.
    let offsite =
        if repo.is_s3() { Repo::uninitialised_local() } else { Repo::uninitialised_in(dedupe_suite::s3::shared()) }
            .with_password("another password");
    offsite.ok(&["init"]);
    let copy_cmd = || {
        let mut c = offsite.cmd(["--json", "copy", "--from-repo", &repo.url]);
        c.env("DEDUPE_FROM_PASSWORD", PASSWORD).envs(repo.storage_env().iter().map(|(k, v)| (k, v)));
        c.output().unwrap()
    };
    let first = copy_cmd();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let copied = first.as_array().unwrap();
    assert!(copied.iter().all(|c| c["status"] == "copied"), "{first}");
    assert!(copied.iter().any(|c| c["kind"] == "log") && copied.iter().any(|c| c["kind"] == "snapshot"), "{first}");
    let again: serde_json::Value = serde_json::from_slice(&copy_cmd().stdout).unwrap();
    assert!(again.as_array().unwrap().iter().all(|c| c["status"] == "already there" && c["new_bytes"] == 0), "{again}");
    let copied_target = work.join("restored-from-copy");
    let from_copy = restore_until(&offsite, &until, &copied_target, &work.join("copy2"));
    assert_eq!(rows(&from_copy), committed, "the copy restores exactly the rows committed before the DROP");
    drop(from_copy);

    // The same stop by GTID: the last insert is in the SQL, the DROP is not.
    let out = repo
        .cmd(["binlog", "replay", "--name", "m", "--until-gtid", &before_drop, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sql = String::from_utf8_lossy(&out.stdout);
    assert!(sql.contains("row 5") && !sql.contains("DROP TABLE"), "replay to GTID {before_drop}");
    // A GTID the archive does not reach is refused, not replayed to the end.
    let out = repo
        .cmd(["binlog", "replay", "--name", "m", "--until-gtid", "0-1-999999", "--target"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(NOT_RESTORABLE), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(one_line_error(&out).contains("0-1-999999"));
    assert_eq!(copy.sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'later'").trim(), "0");
}

#[test]
fn incremental_chain_restores_and_prepares_in_order() {
    let _serial = serial();
    let repo = Repo::new();
    let work = repo.scratch("work");
    std::fs::create_dir_all(&work).unwrap();
    let src = Server::init(&work.join("src"));
    src.sql("CREATE DATABASE shop; USE shop; CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(60)); INSERT INTO a SELECT seq, MD5(seq) FROM seq_1_to_20000;");
    repo.ok(&["backup", "--name", "m", "--command", &src.backup_command(&work.join("t0"), 1)]);
    let mut lsns = Vec::new();
    for round in 1..=2 {
        src.sql(&format!(
            "UPDATE shop.a SET v = 'round {round}' WHERE id % 7 = {round}; INSERT INTO shop.a VALUES ({}, 'new')",
            100000 + round
        ));
        let lsn = String::from_utf8(repo.ok(&["lsn", "--name", "m"])).unwrap().trim().to_string();
        lsns.push(lsn.clone());
        let cmd = format!("{} --incremental-lsn={lsn}", src.backup_command(&work.join(format!("t{round}")), 1));
        repo.ok(&["backup", "--name", "m", "--command", &cmd]);
    }
    let want = src.checksums("shop");
    let snaps = repo.json(&["snapshots", "--name", "m"]);
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 3);
    for (i, s) in snaps.iter().enumerate().skip(1) {
        assert_eq!(s["metadata"]["mysql"]["backup_type"], "incremental");
        assert_eq!(s["metadata"]["mysql"]["from_lsn"], snaps[i - 1]["metadata"]["mysql"]["to_lsn"]);
        assert_eq!(s["metadata"]["mysql"]["from_lsn"].to_string(), lsns[i - 1]);
        // `snapshots` says which backup each incremental applies on.
        assert_eq!(s["incremental_of"], snaps[i - 1]["id"], "{s}");
    }
    assert!(snaps[0].get("incremental_of").is_none());
    let table = String::from_utf8(repo.ok(&["snapshots", "--name", "m"])).unwrap();
    let base = &snaps[1]["id"].as_str().unwrap()[..8];
    assert!(table.contains(&format!("incremental of {base}")), "{table}");
    let target = work.join("restored");
    repo.ok(&[
        "restore".as_ref(),
        "latest".as_ref(),
        "--name".as_ref(),
        "m".as_ref(),
        "--prepare".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
    ]);
    {
        let copy = Server::start(&work.join("copy"), &target);
        assert_eq!(copy.checksums("shop"), want);
    }
    // An incremental whose base is not in the repository (one LSN short of the
    // newest): refused, naming the LSN it needs.
    let last: u64 = String::from_utf8(repo.ok(&["lsn", "--name", "m"])).unwrap().trim().parse().unwrap();
    let orphan = (last - 1).to_string();
    let cmd = format!("{} --incremental-lsn={orphan}", src.backup_command(&work.join("t9"), 1));
    repo.ok(&["backup", "--name", "m", "--command", &cmd]);
    let out = repo
        .cmd(["restore", "latest", "--name", "m", "--prepare", "--target"])
        .arg(work.join("broken"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(NOT_RESTORABLE), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(one_line_error(&out).contains(&orphan));
}

#[test]
fn a_missing_binlog_is_named_and_the_catalogue_rebuilds_the_same() {
    let _serial = serial();
    let repo = Repo::new();
    let work = repo.scratch("work");
    std::fs::create_dir_all(&work).unwrap();
    let src = Server::init(&work.join("src"));
    src.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT);");
    repo.ok(&["backup", "--name", "m", "--command", &src.backup_command(&work.join("mb"), 1)]);
    for i in 0..4 {
        src.sql(&format!("INSERT INTO shop.t VALUES ({i}); FLUSH BINARY LOGS;"));
        std::thread::sleep(Duration::from_millis(1100));
    }
    push(&repo, &src);
    let end = now_secs() as i64;
    src.sql("INSERT INTO shop.t VALUES (99); FLUSH BINARY LOGS;");
    push(&repo, &src);

    // The catalogue is a cache: a fresh one from the repository says the same.
    let views = |cache: &Path| {
        let args = |a: &[&str]| {
            let out = repo.cmd(a).env("DEDUPE_CACHE_DIR", cache).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        (
            args(&["--json", "snapshots"]),
            args(&["--json", "binlog", "list", "--name", "m"]),
            args(&["--json", "timeline"]),
        )
    };
    let before = views(&repo.cache);
    let fresh = repo.scratch("fresh-cache");
    let out = repo.cmd(["catalogue", "rebuild"]).env("DEDUPE_CACHE_DIR", &fresh).output().unwrap();
    assert!(out.status.success());
    assert_eq!(views(&fresh), before);
    let timeline: serde_json::Value = serde_json::from_str(&before.2).unwrap();
    assert_eq!(timeline[0]["windows"].as_array().unwrap().len(), 1, "{timeline}");
    assert!(timeline[0]["gaps"].as_array().unwrap().is_empty());

    // Remove one archived binlog from the middle of the archive.
    let list: serde_json::Value = serde_json::from_str(&before.1).unwrap();
    let list = list.as_array().unwrap();
    assert!(list.len() >= 5, "{list:?}");
    let gone = &list[2];
    std::fs::remove_file(repo.path.join("logs").join(gone["id"].as_str().unwrap())).unwrap();
    let missing = gone["file"].as_str().unwrap();

    let out = repo
        .cmd(["restore", "--until", &local_time(end), "--name", "m", "--target"])
        .arg(work.join("r"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(NOT_RESTORABLE), "{}", String::from_utf8_lossy(&out.stderr));
    let err = one_line_error(&out);
    assert!(err.contains(missing), "the error names {missing}: {err}");
    // The listing and the timeline show the gap.
    let list = repo.json(&["binlog", "list", "--name", "m"]);
    assert!(list.as_array().unwrap().iter().any(|r| r["missing_before"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == missing)));
    let timeline = repo.json(&["timeline"]);
    assert!(timeline[0]["gaps"][0]["missing"].as_array().unwrap().iter().any(|m| m == missing), "{timeline}");

    // Before the oldest base: refused with the earliest restorable time.
    let out = repo
        .cmd(["restore", "--until", "2001-01-01 00:00:00", "--name", "m", "--target"])
        .arg(work.join("r2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(NOT_RESTORABLE));
    assert!(one_line_error(&out).contains("earliest restorable time"));
}

/// `restore --until` into `target`, a server started on it, the binlogs replayed into it.
fn restore_until(repo: &Repo, until: &str, target: &std::path::Path, server_dir: &std::path::Path) -> Server {
    let out =
        repo.cmd(["restore", "--until", until, "--name", "m", "--prepare", "--target"]).arg(target).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("binlog replay"), "says what comes next");
    let server = Server::start(server_dir, target);
    let mut replay = repo
        .cmd(["binlog", "replay", "--name", "m", "--until", until, "--target"])
        .arg(target)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let st = server.client().stdin(replay.stdout.take().unwrap()).status().unwrap();
    assert!(replay.wait().unwrap().success());
    assert!(st.success(), "replaying into the restored server failed");
    server
}

fn rows(server: &Server) -> Vec<(i32, String)> {
    server
        .sql("SELECT id, note FROM shop.t ORDER BY id")
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('\t').unwrap();
            (a.parse().unwrap(), b.to_string())
        })
        .collect()
}

/// Forty nights of bases (ten real mariabackup streams, each stored for
/// four nights with `backup --time`), binlogs pushed after each; then
/// `forget --keep-pitr 14d --keep-daily 30 --keep-monthly 12` and two
/// `prune`s across the grace period: the repository shrinks, `check
/// --read-data` passes, and a point-in-time restore of a real server to a
/// second inside the window is exact. (Which snapshots each rule keeps is
/// asserted one by one in recovery/tests/retention.rs and tests/forget.rs.)
#[test]
fn forty_nights_forgotten_and_pruned_still_restore_to_the_second() {
    let _serial = serial();
    let repo = Repo::new();
    let work = repo.scratch("work");
    std::fs::create_dir_all(&work).unwrap();
    let src = Server::init(&work.join("src"));
    src.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, note VARCHAR(40));
         CREATE TABLE shop.bulk (id INT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(1000));
         INSERT INTO shop.t VALUES (1, 'first night')",
    );
    let now = now_secs() as i64;
    let mut night = 40;
    for real in 0..10 {
        // Between nights: a thousand new rows, and a seventh of the old ones rewritten.
        src.sql("INSERT INTO shop.bulk (pad) SELECT REPEAT(MD5(RAND()), 30) FROM shop.seq_1_to_1000");
        src.sql(&format!("UPDATE shop.bulk SET pad = REPEAT(MD5(RAND()), 30) WHERE id % 7 = {real} % 7"));
        let stream = work.join(format!("base{real}.xbs"));
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!("{} > {}", src.backup_command(&work.join(format!("mbtmp{real}")), 1), stream.display()))
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "mariabackup {real}");
        src.sql("FLUSH BINARY LOGS");
        push(&repo, &src);
        for _ in 0..4 {
            let out = repo
                .cmd(["backup", "--name", "m", "--time", &local_time(now - night * 86_400), "-"])
                .stdin(std::fs::File::open(&stream).unwrap())
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", one_line_error(&out));
            night -= 1;
        }
    }
    // Inside the window: rows at known seconds, then everything deleted at T.
    let mut committed = vec![(1, "first night".to_string())];
    for i in 2..=3 {
        next_second(0.1);
        src.sql(&format!("INSERT INTO shop.t VALUES ({i}, 'row {i}')"));
        committed.push((i, format!("row {i}")));
    }
    let t = next_second(0.2);
    src.sql("DELETE FROM shop.t");
    src.sql("FLUSH BINARY LOGS");
    push(&repo, &src);

    let before = repo.size();
    let decided =
        repo.json(&["forget", "--name", "m", "--keep-pitr", "14d", "--keep-daily", "30", "--keep-monthly", "12"]);
    let snaps = decided[0]["snapshots"].as_array().unwrap();
    let kept = snaps.iter().filter(|s| !s["keep"].as_array().unwrap().is_empty()).count();
    assert_eq!(snaps.len(), 40);
    assert!((30..=32).contains(&kept), "30 daily (the window's 15 among them), a monthly or two: {decided}");
    // Binlogs go only from the front: from the first kept one on, all stay (no gap).
    let mut logs: Vec<(String, bool)> = decided[0]["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["file"].as_str().unwrap().to_string(), !l["keep"].as_array().unwrap().is_empty()))
        .collect();
    logs.sort();
    let first_kept = logs.iter().position(|l| l.1).expect("binlogs kept");
    assert!(logs[first_kept..].iter().all(|l| l.1), "a gap in the kept binlogs: {logs:?}");
    std::thread::sleep(Duration::from_secs(6));
    let first = repo.json(&["prune", "--keep-delete", "5s"]);
    assert!(first["packs_marked"].as_u64().unwrap() + first["packs_repacked"].as_u64().unwrap() > 0, "{first}");
    std::thread::sleep(Duration::from_secs(6));
    let second = repo.json(&["prune", "--keep-delete", "5s"]);
    assert!(second["packs_deleted"].as_u64().unwrap() > 0, "{second}");
    assert!(repo.size() < before, "prune gave space back: {before} -> {}", repo.size());
    assert_eq!(repo.json(&["check", "--read-data"])["whole"], true);

    let copy = restore_until(&repo, &local_time(t - 1), &work.join("restored"), &work.join("copy"));
    assert_eq!(rows(&copy), committed, "exactly the rows committed before second T, after forget and prune");
    assert_eq!(copy.sql("SELECT COUNT(*) FROM shop.bulk").trim(), "10000");
}

/// `binlog push` of the binlogs in `datadir` (the server may be stopped), with `extra` options.
fn push_dir(repo: &Repo, datadir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["binlog", "push", "--name", "m", "--binlog-dir", datadir.to_str().unwrap()];
    args.extend(extra);
    repo.json(&args)
}

fn statuses(pushed: &serde_json::Value) -> Vec<(String, String)> {
    pushed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["file"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn binlogs_follow_the_servers_life_across_a_restart_and_forgotten_ones_stay_out() {
    let _serial = serial();
    let repo = Repo::new();
    let work = repo.scratch("work");
    std::fs::create_dir_all(&work).unwrap();
    let dir = work.join("src");
    let src = Server::init(&dir);
    let datadir = src.datadir.clone();
    src.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, note VARCHAR(40)); INSERT INTO shop.t VALUES (1, 'row 1');");
    repo.ok(&["backup", "--name", "m", "--command", &src.backup_command(&work.join("mbtmp"), 1)]);
    push_dir(&repo, &datadir, &[]);
    src.sql("INSERT INTO shop.t VALUES (2, 'row 2')");
    // The active file stored as it is now: partial.
    let pushed = statuses(&push_dir(&repo, &datadir, &["--include-active"]));
    let (active, status) = pushed.last().unwrap().clone();
    assert_eq!(status, "stored (partial)", "{pushed:?}");
    next_second(0.1);
    src.sql("INSERT INTO shop.t VALUES (3, 'row 3')");

    // The server stops: its last binlog ends with a stop event, and is complete.
    drop(src);
    let pushed = statuses(&push_dir(&repo, &datadir, &[]));
    assert_eq!(pushed.last().unwrap(), &(active.clone(), "stored".to_string()), "{pushed:?}");
    let list = repo.json(&["binlog", "list", "--name", "m"]);
    assert!(list.as_array().unwrap().iter().all(|r| r["partial"] == false), "{list}");

    // Restarted, it writes a new binlog: a point in time after the restart
    // replays across it exactly.
    let src = Server::start(&dir, &datadir);
    next_second(0.1);
    src.sql("INSERT INTO shop.t VALUES (4, 'row 4')");
    let t = next_second(0.2);
    src.sql("INSERT INTO shop.t VALUES (5, 'after the time')");
    src.sql("FLUSH BINARY LOGS");
    push_dir(&repo, &datadir, &[]);
    let copy = restore_until(&repo, &local_time(t - 1), &work.join("restored"), &work.join("copy"));
    let want: Vec<(i32, String)> = (1..=4).map(|i| (i, format!("row {i}"))).collect();
    assert_eq!(rows(&copy), want, "the rows committed before the time, across the restart");
    drop(copy);

    // A second base; the first forgotten and pruned with the binlogs only it
    // needed. The server still has them: pushed again, none is stored.
    repo.ok(&["backup", "--name", "m", "--command", &src.backup_command(&work.join("mbtmp2"), 1)]);
    src.sql("FLUSH BINARY LOGS");
    push_dir(&repo, &datadir, &[]);
    let before: Vec<String> = repo
        .json(&["binlog", "list", "--name", "m"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["file"].as_str().unwrap().to_string())
        .collect();
    repo.ok(&["forget", "--name", "m", "--keep-last", "1"]);
    repo.ok(&["prune", "--keep-delete", "5s"]);
    let kept: Vec<String> = repo
        .json(&["binlog", "list", "--name", "m"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["file"].as_str().unwrap().to_string())
        .collect();
    let forgotten: Vec<&String> = before.iter().filter(|f| !kept.contains(f)).collect();
    assert!(!forgotten.is_empty(), "forget kept every binlog: {kept:?}");
    let pushed = statuses(&push_dir(&repo, &datadir, &[]));
    for (file, status) in &pushed {
        assert!(!status.starts_with("stored"), "{file} was stored again: {pushed:?}");
        if forgotten.contains(&file) {
            assert!(status.starts_with("skipped: older than the oldest backup"), "{file}: {status}");
        }
    }
    let human = String::from_utf8(repo.ok(&["binlog", "list", "--name", "m"])).unwrap();
    assert!(human.contains("are not archived again"), "{human}");
    // A new binlog is stored as ever.
    src.sql("INSERT INTO shop.t VALUES (6, 'row 6'); FLUSH BINARY LOGS");
    let pushed = statuses(&push_dir(&repo, &datadir, &[]));
    assert!(pushed.iter().any(|(_, s)| s == "stored"), "{pushed:?}");
    // --force archives the old ones again.
    let pushed = statuses(&push_dir(&repo, &datadir, &["--force"]));
    assert!(pushed.iter().any(|(f, s)| forgotten.contains(&f) && s == "stored"), "{pushed:?}");
}
