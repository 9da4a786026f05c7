//! `dedupe prune`: marks first, deletes after the grace period, repacks,
//! compacts the index, and loses nothing beside running writers or when
//! killed.
//!
//! The grace period is the shortest allowed (`--keep-delete 5s`) so that a
//! test can see a mark grow old; prune also leaves packs younger than the
//! grace period alone, so the tests wait that long after writing.

use dedupe_suite::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_secs(5);

fn prune(repo: &Repo) -> serde_json::Value {
    repo.json(&["prune", "--keep-delete", "5s"])
}

fn snapshot_ids(repo: &Repo) -> Vec<String> {
    let v = repo.json(&["snapshots"]);
    v.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

fn objects(repo: &Repo, folder: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![repo.path.join(folder)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if !name.starts_with('.') {
                n += 1;
            }
        }
    }
    n
}

fn check_whole(repo: &Repo) {
    let v = repo.json(&["check", "--read-data"]);
    assert_eq!(v["whole"], true, "check after prune: {v}");
}

#[test]
fn prune_marks_then_deletes_and_the_repository_shrinks_to_what_is_kept() {
    let repo = Repo::new();
    let mut prng = Prng::new(21);
    // Eight nightly streams: a shared part and a part of their own, so that
    // forgetting old ones leaves packs whole-unused and packs part-used.
    let shared = prng.bytes(3 << 20);
    let mut contents = BTreeMap::new();
    for night in 0..8 {
        let mut data = shared.clone();
        data.extend(prng.bytes(2 << 20));
        if night % 2 == 0 {
            data.extend(&shared[..1 << 20]);
        }
        let v = repo.backup_bytes("db", &data);
        contents.insert(v["snapshot"].as_str().unwrap().to_string(), data);
    }
    repo.ok(&["forget", "--keep-last", "3"]);
    let kept = snapshot_ids(&repo);
    assert_eq!(kept.len(), 3);
    let before = repo.size();

    // Young packs are not judged: a running backup's packs are unreferenced until it commits.
    let young = prune(&repo);
    assert_eq!((young["packs_marked"].as_u64(), young["packs_deleted"].as_u64()), (Some(0), Some(0)), "{young}");
    std::thread::sleep(GRACE);

    // A dry run decides and changes nothing.
    let dry = repo.json(&["prune", "--keep-delete", "5s", "--dry-run"]);
    assert!(dry["packs_marked"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(objects(&repo, "marks"), 0, "a dry run writes no mark");

    // First run: unreferenced packs are marked (and part-used ones repacked), nothing deleted.
    let first = prune(&repo);
    assert!(first["packs_marked"].as_u64().unwrap() > 0, "{first}");
    assert_eq!(first["packs_deleted"], 0, "{first}");
    assert_eq!(objects(&repo, "marks"), 1);
    for id in &kept {
        assert!(repo.ok(&["restore", id, "--stdout"]) == contents[id], "{id} restores while marked");
    }
    // Within the grace period the marks stay and nothing goes.
    let early = prune(&repo);
    assert_eq!(early["packs_deleted"], 0, "{early}");
    assert!(early["packs_waiting"].as_u64().unwrap() > 0, "{early}");

    std::thread::sleep(GRACE);
    let second = prune(&repo);
    assert!(second["packs_deleted"].as_u64().unwrap() > 0, "{second}");
    assert_eq!(objects(&repo, "marks"), 0, "marks whose packs are gone are removed: {second}");
    assert!(objects(&repo, "index") <= 2, "the index is compacted: {second}");
    check_whole(&repo);
    for id in &kept {
        assert!(repo.ok(&["restore", id, "--stdout"]) == contents[id], "{id} restores after prune");
    }

    // Within 10% of a fresh repository holding only what was kept.
    let fresh = Repo::new();
    for id in &kept {
        fresh.backup_bytes("db", &contents[id]);
    }
    let (after, clean) = (repo.size(), fresh.size());
    assert!(after < before, "prune freed space: {before} -> {after}");
    assert!((after as f64) <= clean as f64 * 1.10, "after prune {after} bytes, a fresh repository {clean} bytes");

    // Nothing left to do: a third run changes nothing.
    let third = prune(&repo);
    assert_eq!((third["packs_marked"].as_u64(), third["packs_deleted"].as_u64()), (Some(0), Some(0)), "{third}");
}

/// Once its pack is marked, a chunk is as good as gone for writers: the
/// same bytes backed up again are stored anew, so the mark can run out.
#[test]
fn a_backup_never_deduplicates_against_a_marked_pack() {
    let repo = Repo::new();
    let mut prng = Prng::new(22);
    let (old, new) = (prng.bytes(2 << 20), prng.bytes(2 << 20));
    repo.backup_bytes("db", &old);
    repo.backup_bytes("db", &new);
    repo.ok(&["forget", "--keep-last", "1"]);
    std::thread::sleep(GRACE);
    assert!(prune(&repo)["packs_marked"].as_u64().unwrap() >= 1);
    let again = repo.backup_bytes("db", &old);
    assert!(again["new_bytes"].as_u64().unwrap() >= 2 << 20, "stored anew, not deduplicated: {again}");
    let id = again["snapshot"].as_str().unwrap().to_string();
    std::thread::sleep(GRACE);
    assert!(prune(&repo)["packs_deleted"].as_u64().unwrap() >= 1);
    check_whole(&repo);
    assert!(repo.ok(&["restore", &id, "--stdout"]) == old);
}

#[test]
fn prune_refuses_a_grace_period_under_five_seconds_and_a_damaged_repository() {
    let repo = Repo::new();
    repo.backup_bytes("db", &Prng::new(23).bytes(100_000));
    let out = repo.run(&["prune", "--keep-delete", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", one_line_error(&out));
    assert!(one_line_error(&out).contains("at least 5s"), "{}", one_line_error(&out));
    if repo.is_s3() {
        return;
    }
    // A damaged manifest: prune would delete its chunks, so it stops.
    let snap = std::fs::read_dir(repo.path.join("snapshots")).unwrap().next().unwrap().unwrap().path();
    let mut b = std::fs::read(&snap).unwrap();
    b[20] ^= 1;
    std::fs::write(&snap, b).unwrap();
    let out = repo.run(&["prune", "--keep-delete", "5s"]);
    assert!(!out.status.success());
    assert!(one_line_error(&out).contains("prune stopped before deleting anything"), "{}", one_line_error(&out));
    assert!(repo.packs().len() == 1, "nothing deleted");
}

/// A backup cut short on another host (its journal is not here) leaves a
/// pack no index names, and writers that die leave temporary files: prune
/// marks the first and removes both once older than the grace period.
#[test]
fn orphan_packs_and_stale_temporary_files_go_after_the_grace_period() {
    let repo = Repo::new();
    if repo.is_s3() {
        return;
    }
    repo.backup_bytes("db", &Prng::new(24).bytes(1 << 20));
    // The killed backup, from a cache of its own (another host).
    let other_cache = repo.scratch("other-host-cache");
    let mut child = repo
        .cmd(["backup", "--name", "db", "-"])
        .env("DEDUPE_CACHE_DIR", &other_cache)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut prng = Prng::new(25);
    let packs_before = repo.packs().len();
    let started = Instant::now();
    while repo.packs().len() < packs_before + 2 && started.elapsed() < Duration::from_secs(60) {
        use std::io::Write;
        stdin.write_all(&prng.bytes(4 << 20)).unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    let orphans = repo.packs().len() - packs_before;
    assert!(orphans >= 2, "the killed backup left packs");
    let tmp = repo.path.join("data/00/.left-by-a-crash.tmp");
    std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
    std::fs::write(&tmp, b"half an object").unwrap();
    std::thread::sleep(GRACE);
    let first = prune(&repo);
    assert!(first["packs_marked"].as_u64().unwrap() >= orphans as u64, "{first}");
    assert!(first["temporaries_removed"].as_u64().unwrap() >= 1, "the killed backup's and ours: {first}");
    assert!(!tmp.exists());
    std::thread::sleep(GRACE);
    let second = prune(&repo);
    assert!(second["packs_deleted"].as_u64().unwrap() >= orphans as u64, "{second}");
    assert_eq!(repo.packs().len(), packs_before);
    check_whole(&repo);
}

/// What one snapshot must restore to, as BLAKE3 hashes (a long run makes
/// thousands of snapshots: their bytes would not fit in memory).
struct Expect {
    /// Stream snapshots: the bytes' hash. Directory snapshots: each file's.
    stream: Option<blake3::Hash>,
    files: BTreeMap<String, blake3::Hash>,
}

fn snapshot_of(out: &std::process::Output) -> Option<String> {
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["snapshot"].as_str().map(String::from)
}

/// Five writers (two stream backups of changing data, a directory backup
/// whose unchanged files come from the parent, binlog and WAL pushes) beside a loop of
/// `forget --keep-last 3` and `prune --keep-delete 5s --max-unused 0%`, for
/// `DEDUPE_PRUNE_SOAK_SECONDS` (60 by default; the figure is 600).
/// Then `check --read-data` passes and every snapshot left restores exactly.
#[test]
fn prune_beside_running_writers_loses_nothing() {
    let secs: u64 = std::env::var("DEDUPE_PRUNE_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let repo = Repo::new();
    let until = Instant::now() + Duration::from_secs(secs);
    let expected: Mutex<BTreeMap<String, Expect>> = Mutex::new(BTreeMap::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let prunes = Mutex::new((0u64, 0u64, 0u64));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for (w, name) in ["a", "b"].into_iter().enumerate() {
            let (repo, expected, failures) = (&repo, &expected, &failures);
            s.spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(100 + w as u64);
                let mut data = Prng::new(200 + w as u64).bytes(6 << 20);
                while Instant::now() < until {
                    // Change a few blocks, sometimes append.
                    for _ in 0..rng.random_range(1..6) {
                        let at = rng.random_range(0..data.len() - 70_000);
                        let fresh = Prng::new(rng.random()).bytes(65_536);
                        data[at..at + 65_536].copy_from_slice(&fresh);
                    }
                    if rng.random_bool(0.3) {
                        data.extend(Prng::new(rng.random()).bytes(300_000));
                    }
                    let mut child = repo.spawn_backup(name);
                    let mut stdin = child.stdin.take().unwrap();
                    let copy = data.clone();
                    // Fed slowly, so that prunes mark packs while backups run and
                    // the backups' guards have to act (backup.rs, guard.rs).
                    let feeder = std::thread::spawn(move || {
                        use std::io::Write;
                        for piece in copy.chunks(1 << 20) {
                            stdin.write_all(piece)?;
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        Ok::<(), std::io::Error>(())
                    });
                    let out = child.wait_with_output().unwrap();
                    let _ = feeder.join();
                    match snapshot_of(&out) {
                        Some(id) => {
                            let e = Expect { stream: Some(blake3::hash(&data)), files: BTreeMap::new() };
                            expected.lock().unwrap().insert(id, e);
                        }
                        None => failures.lock().unwrap().push(format!("backup {name}: {}", one_line_error(&out))),
                    };
                }
            });
        }
        {
            let (repo, expected, failures) = (&repo, &expected, &failures);
            s.spawn(move || {
                let dir = repo.scratch("live");
                std::fs::create_dir_all(&dir).unwrap();
                let mut rng = ChaCha8Rng::seed_from_u64(300);
                for f in 0..12 {
                    std::fs::write(dir.join(format!("f{f}")), Prng::new(f).bytes(400_000)).unwrap();
                }
                while Instant::now() < until {
                    let f = rng.random_range(0..12);
                    std::fs::write(dir.join(format!("f{f}")), Prng::new(rng.random()).bytes(400_000)).unwrap();
                    let files: BTreeMap<String, blake3::Hash> = (0..12)
                        .map(|f| (format!("f{f}"), blake3::hash(&std::fs::read(dir.join(format!("f{f}"))).unwrap())))
                        .collect();
                    let out = repo.cmd(["--json", "backup", "--name", "dir"]).arg(&dir).output().unwrap();
                    match snapshot_of(&out) {
                        Some(id) => {
                            expected.lock().unwrap().insert(id, Expect { stream: None, files });
                        }
                        None => failures.lock().unwrap().push(format!("backup dir: {}", one_line_error(&out))),
                    };
                }
            });
        }
        {
            // Binlog pushes: the fixture binlogs under ever new names, each
            // closed (the next one written) before it is pushed.
            let (repo, failures) = (&repo, &failures);
            s.spawn(move || {
                let dir = repo.scratch("binlogs");
                std::fs::create_dir_all(&dir).unwrap();
                let fixture = |n: u64| {
                    let f = ["mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000003"][((n - 1) % 3) as usize];
                    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("ingest/testdata/binlog").join(f)).unwrap()
                };
                let name = |n: u64| format!("mysql-bin.{n:06}");
                std::fs::write(dir.join(name(1)), fixture(1)).unwrap();
                let mut n = 1u64;
                while Instant::now() < until {
                    std::fs::write(dir.join(name(n + 1)), fixture(n + 1)).unwrap();
                    std::fs::write(dir.join("mysql-bin.index"), format!("./{}\n./{}\n", name(n), name(n + 1))).unwrap();
                    let out = repo
                        .cmd(["binlog", "push", "--name", "db", "--binlog-dir"])
                        .arg(&dir)
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    if !out.status.success() {
                        failures.lock().unwrap().push(format!("binlog push: {}", one_line_error(&out)));
                    }
                    n += 1;
                }
            });
        }
        {
            let (repo, failures) = (&repo, &failures);
            s.spawn(move || {
                let wal = repo.scratch("wal");
                std::fs::create_dir_all(&wal).unwrap();
                let mut n = 1u64;
                while Instant::now() < until {
                    let path = wal.join(format!("00000001{:08X}{:08X}", n >> 8, n & 0xff));
                    std::fs::write(&path, Prng::new(1000 + n).bytes(200_000)).unwrap();
                    let out =
                        repo.cmd(["wal", "push", "--name", "pg"]).arg(&path).stdin(Stdio::null()).output().unwrap();
                    if !out.status.success() {
                        failures.lock().unwrap().push(format!("wal push: {}", one_line_error(&out)));
                    }
                    n += 1;
                }
            });
        }
        {
            let (repo, failures, prunes, stop) = (&repo, &failures, &prunes, &stop);
            s.spawn(move || {
                while Instant::now() < until && !stop.load(SeqCst) {
                    let out = repo.run(&["forget", "--keep-last", "3"]);
                    if !out.status.success() {
                        failures.lock().unwrap().push(format!("forget: {}", one_line_error(&out)));
                    }
                    // Repacking every part-used pack marks packs running backups use.
                    let out = repo.run(&["--json", "prune", "--keep-delete", "5s", "--max-unused", "0%"]);
                    match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
                        Ok(v) if out.status.success() => {
                            let mut p = prunes.lock().unwrap();
                            p.0 += 1;
                            p.1 += v["packs_deleted"].as_u64().unwrap_or(0);
                            p.2 += v["packs_recovered"].as_u64().unwrap_or(0);
                        }
                        _ => failures.lock().unwrap().push(format!("prune: {}", one_line_error(&out))),
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    let (runs, deleted, recovered) = prunes.into_inner().unwrap();
    eprintln!("{runs} prunes deleted {deleted} packs and recovered {recovered}; failures: {failures:?}");
    assert!(runs >= 3 && deleted > 0, "prune ran {runs} times and deleted {deleted} packs: the test proves nothing");
    // A backup may fail only by saying it outlived the grace period (nothing committed).
    let unexpected: Vec<&String> = failures.iter().filter(|f| !f.contains("deleted by a prune")).collect();
    assert!(unexpected.is_empty(), "failures: {unexpected:?}");

    check_whole(&repo);
    let expected = expected.into_inner().unwrap();
    let left = snapshot_ids(&repo);
    assert!(!left.is_empty());
    for id in &left {
        let e = &expected[id];
        match &e.stream {
            Some(hash) => {
                assert_eq!(
                    blake3::hash(&repo.ok(&["restore", id, "--stdout"])),
                    *hash,
                    "snapshot {id} restores exactly"
                )
            }
            None => {
                let target = repo.scratch(&format!("restore-{id}"));
                repo.ok(&["restore", id, "--target", target.to_str().unwrap()]);
                for (f, hash) in &e.files {
                    let got = blake3::hash(&std::fs::read(find(&target, f)).unwrap());
                    assert_eq!(got, *hash, "{f} of snapshot {id} restores exactly");
                }
            }
        }
    }
}

/// The one file named `name` under `dir` (a directory backup keeps the path it was given).
fn find(dir: &Path, name: &str) -> PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name() == name {
                return e.path();
            }
        }
    }
    panic!("{name} not restored under {}", dir.display());
}

/// kill -9 of prune at 20 random moments: after each, `check` passes and
/// every snapshot left restores exactly.
#[test]
fn a_killed_prune_leaves_a_whole_repository() {
    let repo = Repo::new();
    let mut rng = ChaCha8Rng::seed_from_u64(400);
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut data = Prng::new(401).bytes(4 << 20);
    for round in 0..20 {
        // Keep the repository changing, so that every prune has work.
        for _ in 0..2 {
            let at = rng.random_range(0..data.len() - 1_100_000);
            data[at..at + 1_000_000].copy_from_slice(&Prng::new(rng.random()).bytes(1_000_000));
            let v = repo.backup_bytes("db", &data);
            contents.insert(v["snapshot"].as_str().unwrap().to_string(), data.clone());
        }
        repo.ok(&["forget", "--keep-last", "2"]);
        if round == 0 {
            std::thread::sleep(GRACE);
        }
        let mut child = repo
            .cmd(["prune", "--keep-delete", "5s", "--max-unused", "0%"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        let _ = child.kill();
        child.wait().unwrap();
        let v = repo.json(&["check"]);
        assert_eq!(v["whole"], true, "check after prune killed in round {round}: {v}");
        for id in snapshot_ids(&repo) {
            assert!(repo.ok(&["restore", &id, "--stdout"]) == contents[&id], "{id} restores after round {round}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // A prune left to finish cleans up whatever the killed ones left.
    std::thread::sleep(GRACE);
    prune(&repo);
    std::thread::sleep(GRACE);
    prune(&repo);
    check_whole(&repo);
}

/// The guard, step by step: a backup deduplicates against a pack, a prune
/// marks that pack while the backup still runs, and the backup stores
/// those chunks again before it commits; once the grace period is over the
/// pack is deleted and the new snapshot still restores.
#[test]
fn a_backup_running_when_its_packs_are_marked_stores_those_chunks_again() {
    let repo = Repo::new();
    let mut prng = Prng::new(31);
    let data = prng.bytes(40 << 20);
    repo.backup_bytes("old", &data);
    repo.backup_bytes("old", &prng.bytes(100_000));
    std::thread::sleep(GRACE);
    let mut child = repo.spawn_backup("new");
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    // It deduplicates against the packs of `old`'s first snapshot (a stream
    // is chunked once 32 MiB of it are buffered).
    stdin.write_all(&data).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    repo.ok(&["forget", "--name", "old", "--keep-last", "1"]);
    let marked = prune(&repo);
    assert!(marked["packs_marked"].as_u64().unwrap() >= 1, "{marked}");
    // The backup looks at the marks at least every 2 s while it runs.
    std::thread::sleep(Duration::from_secs(3));
    let tail = prng.bytes(1 << 20);
    stdin.write_all(&tail).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", one_line_error(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["new_bytes"].as_u64().unwrap() >= 41 << 20, "what was deduplicated was stored again: {v}");
    std::thread::sleep(GRACE);
    let deleted = prune(&repo);
    assert!(deleted["packs_deleted"].as_u64().unwrap() >= 1, "{deleted}");
    check_whole(&repo);
    assert!(repo.ok(&["restore", v["snapshot"].as_str().unwrap(), "--stdout"]) == [data, tail].concat());
}

/// A backup whose listings of the marks stalled (here `marks/` cannot be
/// listed for a few seconds) checks, before it commits, that every pack it
/// depends on exists: once its own packs are uploaded, so a pack still on
/// its way is not taken for one a prune deleted (found at 10^7 index
/// records, where loading the index alone is such a gap).
#[test]
fn a_backup_after_a_stall_in_listing_the_marks_still_commits() {
    let repo = Repo::new();
    let mut prng = Prng::new(37);
    let old = prng.bytes(8 << 20);
    repo.backup_bytes("db", &old);
    let mut child = repo.spawn_backup("db");
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    stdin.write_all(&old).unwrap();
    // Listing `marks/` fails while a file stands in its place.
    let marks = repo.path.join("marks");
    let away = repo.path.join("marks.away");
    let had = marks.exists();
    if had {
        std::fs::rename(&marks, &away).unwrap();
    }
    std::fs::write(&marks, b"not a folder").unwrap();
    std::thread::sleep(Duration::from_secs(5));
    std::fs::remove_file(&marks).unwrap();
    if had {
        std::fs::rename(&away, &marks).unwrap();
    }
    // Then a burst: packs still uploading when the backup looks one last time.
    let burst = prng.bytes(96 << 20);
    stdin.write_all(&burst).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", one_line_error(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(repo.ok(&["restore", v["snapshot"].as_str().unwrap(), "--stdout"]) == [old, burst].concat());
    check_whole(&repo);
}

/// The same for what a directory backup takes from its parent without
/// reading it (unchanged files' list chunks, and the data they name): the
/// parent is forgotten and its packs marked while the backup runs.
#[test]
fn a_directory_backup_whose_parent_is_pruned_meanwhile_stores_its_unchanged_files_again() {
    let repo = Repo::new();
    if repo.is_s3() {
        return;
    }
    let dir = repo.scratch("d");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..4).map(|i| (format!("a{i}"), Prng::new(40 + i).bytes(1 << 20))).collect();
    for (f, b) in &files {
        std::fs::write(dir.join(f), b).unwrap();
    }
    repo.ok(&["backup", "--name", "d", dir.to_str().unwrap()]);
    let parent = snapshot_ids(&repo)[0].clone();
    std::thread::sleep(GRACE);
    // A big new file, uploaded slowly, keeps the backup running for seconds.
    let big = Prng::new(50).bytes(6 << 20);
    std::fs::write(dir.join("z"), &big).unwrap();
    let child = repo
        .cmd(["--json", "--limit-upload", "1M", "backup", "--name", "d", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // The parent forgotten (its manifest deleted, as `forget` does) and its packs marked.
    std::fs::remove_file(repo.path.join("snapshots").join(&parent)).unwrap();
    let marked = prune(&repo);
    assert!(marked["packs_marked"].as_u64().unwrap() >= 1, "{marked}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", one_line_error(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files_unchanged"], 4, "{v}");
    assert!(v["new_bytes"].as_u64().unwrap() >= 10 << 20, "unchanged files were stored again: {v}");
    std::thread::sleep(GRACE);
    assert!(prune(&repo)["packs_deleted"].as_u64().unwrap() >= 1);
    check_whole(&repo);
    let target = repo.scratch("out");
    repo.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    for (f, b) in files.iter().chain([("z".to_string(), big)].iter()) {
        assert!(&std::fs::read(find(&target, f)).unwrap() == b, "{f} restores exactly");
    }
}

/// A prune started while another runs on the same host (cron overlap)
/// stops at once and says so; a dry run is not held up.
#[test]
fn a_second_prune_on_the_same_host_refuses() {
    let repo = Repo::new();
    repo.backup_bytes("db", &Prng::new(70).bytes(100_000));
    let cache = std::fs::read_dir(&repo.cache).unwrap().next().unwrap().unwrap().path();
    let lock = std::fs::File::create(cache.join("prune.lock")).unwrap();
    // SAFETY: flock on a file this test owns.
    assert_eq!(unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) }, 0);
    let out = repo.run(&["prune", "--keep-delete", "5s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out).contains("another prune of this repository is running"), "{}", one_line_error(&out));
    repo.ok(&["prune", "--keep-delete", "5s", "--dry-run"]);
    drop(lock);
    repo.ok(&["prune", "--keep-delete", "5s"]);
}

/// The files of the local index cache's segment list and state, as written.
fn cache_files(repo: &Repo) -> (String, String) {
    let dir = std::fs::read_dir(&repo.cache).unwrap().flatten().find(|e| e.path().join("index").is_dir()).unwrap();
    let index = dir.path().join("index");
    (std::fs::read_to_string(index.join("segments")).unwrap(), std::fs::read_to_string(index.join("state")).unwrap())
}

#[test]
fn after_a_prune_a_cache_follows_its_record_without_fetching_the_index_again() {
    let repo = Repo::new();
    let mut prng = Prng::new(31);
    let nights: Vec<Vec<u8>> = (0..4).map(|_| prng.bytes(1 << 20)).collect();
    for night in &nights {
        repo.backup_bytes("db", night);
    }
    repo.ok(&["forget", "--keep-last", "1"]);
    std::thread::sleep(GRACE);
    prune(&repo);
    std::thread::sleep(GRACE);
    let (segments, _) = cache_files(&repo);
    let v = prune(&repo);
    assert!(v["packs_deleted"].as_u64().unwrap() > 0, "{v}");
    // The first prune compacted the small objects, the second dropped the deleted packs.
    assert_eq!(objects(&repo, "compactions"), 2, "each prune left its record");

    // The next command follows the record: the compacted objects are taken
    // as merged (no new segment), the deleted packs' chunks are gone.
    let out = repo.ok(&["restore", "latest", "--stdout"]);
    assert!(out == nights[3], "the kept snapshot restores");
    let (after, state) = cache_files(&repo);
    assert_eq!(after, segments, "no index object fetched again");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["sequence"], 2, "{state}");
    assert!(!state["adopted"].as_array().unwrap().is_empty(), "{state}");
    // A backup of a forgotten night stores it again: the cache does not
    // find its chunks in the deleted packs.
    let v = repo.backup_bytes("db", &nights[0]);
    assert!(v["new_bytes"].as_u64().unwrap() >= 1 << 20, "stored anew: {v}");
    check_whole(&repo);
    assert!(repo.ok(&["restore", "latest", "--stdout"]) == nights[0]);
}

#[test]
fn a_snapshot_whose_index_objects_were_stamped_by_a_clock_far_behind_still_restores() {
    let repo = Repo::uninitialised_local();
    repo.ok(&["init"]);
    repo.backup_bytes("db", &Prng::new(41).bytes(1 << 20));
    let before: std::collections::HashSet<_> =
        std::fs::read_dir(repo.path.join("index")).unwrap().flatten().map(|e| e.file_name()).collect();
    // Another host, whose clock says 1970, stores a snapshot.
    let data = Prng::new(42).bytes(1 << 20);
    let mut other = repo.cmd(["backup", "--name", "other", "-"]);
    other.env("DEDUPE_CACHE_DIR", repo.scratch("other-cache"));
    let out = run_with_stdin(other, &data);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut renamed = 0;
    for e in std::fs::read_dir(repo.path.join("index")).unwrap().flatten() {
        if !before.contains(&e.file_name()) {
            let hash = e.file_name().to_string_lossy().rsplit('-').next().unwrap().to_string();
            std::fs::rename(e.path(), repo.path.join("index").join(format!("0000000100-{hash}"))).unwrap();
            renamed += 1;
        }
    }
    assert!(renamed > 0);
    // This host's listing starts an hour before the newest stamp it saw, so
    // it does not list them; the restore finds the chunks all the same.
    let out = repo.ok(&["restore", "latest", "--name", "other", "--stdout"]);
    assert!(out == data, "restored through a whole listing");
    let (_, state) = cache_files(&repo);
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert!(state["seen"].as_u64().unwrap() > 100, "{state}");
}
