//! Object storage against a real S3 server on loopback (`support::s3`):
//! racing inits, several hosts and a log pusher writing one bucket at once,
//! a server that dies mid-backup, credentials the bucket refuses, and
//! locations dedupe does not read. The round trips, failures and
//! point-in-time restores of the other test files run against S3 too
//! (`DEDUPE_TEST_BACKEND=s3`, from `scripts/test.sh`).

use dedupe_suite::proxy::{Faults, Proxy};
use dedupe_suite::s3::Server;
use dedupe_suite::*;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const USAGE: i32 = 2;
const WRONG_PASSWORD: i32 = 4;
const STORAGE: i32 = 10;
const REPOSITORY_EXISTS: i32 = 12;

/// A server of this test's own, on a fresh port with a fresh root.
fn own_server(tmp: &Path) -> Server {
    Server::start(&tmp.join("s3-root"), dedupe_suite::mariadb::free_port())
}

fn objects(dir: &Path) -> u64 {
    dir_size(dir)
}

#[test]
fn racing_inits_make_one_repository_and_the_losers_leave_no_key() {
    // moto: its conditional writes are atomic, as AWS S3's are (support::s3 says why not s3s-fs).
    let server = dedupe_suite::s3::start_moto().expect("moto_server is not installed: run scripts/test.sh");
    racing_inits(&Repo::uninitialised_in(&server), None);
    // A local directory: a hard link decides.
    let repo = Repo::uninitialised();
    if !repo.is_s3() {
        racing_inits(&repo, Some(&repo.path));
    }
}

/// Four inits at once: one wins, the others exit REPOSITORY_EXISTS and
/// their keys are gone (counted in `keys_dir` when the objects are on disk).
fn racing_inits(repo: &Repo, keys_dir: Option<&Path>) {
    let children: Vec<_> = (0..4)
        .map(|i| {
            repo.cmd(["init"])
                .env("DEDUPE_PASSWORD", format!("password {i}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = children.into_iter().map(|c| c.wait_with_output().unwrap().status.code().unwrap()).collect();
    assert_eq!(codes.iter().filter(|&&c| c == 0).count(), 1, "exactly one init wins: {codes:?}");
    assert!(codes.iter().all(|&c| c == 0 || c == REPOSITORY_EXISTS), "{codes:?}");
    let winner = codes.iter().position(|&c| c == 0).unwrap();
    for i in 0..4 {
        let out = repo.cmd(["key", "list"]).env("DEDUPE_PASSWORD", format!("password {i}")).output().unwrap();
        let want = if i == winner { 0 } else { WRONG_PASSWORD };
        assert_eq!(out.status.code(), Some(want), "password {i}: {}", String::from_utf8_lossy(&out.stderr));
    }
    if let Some(dir) = keys_dir {
        let keys = std::fs::read_dir(dir.join("keys")).unwrap().count();
        assert_eq!(keys, 1, "the losing inits removed their keys");
    }
    let out =
        repo.cmd(["--json", "key", "list"]).env("DEDUPE_PASSWORD", format!("password {winner}")).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(|a| a.len()), Some(1), "one key: {listed}");
}

/// Two hosts (two caches) back up into one bucket at the same time, twice
/// each, while a third process pushes binlogs in a loop.
#[test]
fn two_hosts_and_a_binlog_pusher_share_one_bucket_without_a_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let server = own_server(tmp.path());
    let primary = Repo::uninitialised_in(&server);
    primary.ok(&["init"]);
    // The replica is another machine: same repository, its own cache.
    let replica_cache = primary.scratch("replica-cache");
    let as_host = |cache: &Path, args: &[&str]| {
        let mut c = primary.cmd(args);
        c.env("DEDUPE_CACHE_DIR", cache);
        c
    };

    // Each host's data: 24 MiB shared by both, and 4 MiB of its own.
    let shared = Prng::new(7).bytes(24 << 20);
    let own = |seed| {
        let mut d = shared.clone();
        d.extend(Prng::new(seed).bytes(4 << 20));
        d
    };
    let inputs = [("primary", own(1)), ("replica", own(2)), ("primary", own(3)), ("replica", own(4))];

    let binlogs = primary.scratch("binlogs");
    std::fs::create_dir_all(&binlogs).unwrap();
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("ingest/testdata/binlog");
    let mut index = String::new();
    for n in ["mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000003"] {
        std::fs::copy(testdata.join(n), binlogs.join(n)).unwrap();
        index.push_str(&format!("./{n}\n"));
    }
    std::fs::write(binlogs.join("mysql-bin.index"), index).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);

    let ids: Vec<String> = std::thread::scope(|s| {
        let pusher = s.spawn(|| {
            let mut pushes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || pushes == 0 {
                let out = primary
                    .cmd(["binlog", "push", "--name", "db", "--include-active", "--binlog-dir"])
                    .arg(&binlogs)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "binlog push: {}", String::from_utf8_lossy(&out.stderr));
                pushes += 1;
            }
            pushes
        });
        let backups: Vec<_> = inputs
            .iter()
            .enumerate()
            .map(|(i, (host, data))| {
                let cache = if *host == "primary" { primary.cache.clone() } else { replica_cache.clone() };
                let name = format!("{host}-{i}");
                s.spawn(move || {
                    let mut child = as_host(&cache, &["--json", "backup", "--name", &name, "-"])
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap();
                    child.stdin.take().unwrap().write_all(data).unwrap();
                    let out = child.wait_with_output().unwrap();
                    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    v["snapshot"].as_str().unwrap().to_string()
                })
            })
            .collect();
        let ids = backups.into_iter().map(|b| b.join().unwrap()).collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(pusher.join().unwrap() >= 1);
        ids
    });

    // Every snapshot restores byte-exact, from either host's cache and from an empty one.
    for (cache, label) in [
        (primary.cache.clone(), "primary"),
        (replica_cache.clone(), "replica"),
        (primary.scratch("new-host"), "new host"),
    ] {
        for (id, (_, data)) in ids.iter().zip(&inputs) {
            let out = as_host(&cache, &["restore", id, "--stdout"]).output().unwrap();
            assert!(out.status.success(), "{label} restoring {id}: {}", String::from_utf8_lossy(&out.stderr));
            assert!(out.stdout == *data, "{label}: snapshot {id} differs");
        }
    }
    let listed = primary.json(&["binlog", "list", "--name", "db"]);
    assert_eq!(listed.as_array().map(|a| a.len()), Some(3), "{listed}");

    // Now the replica backs up what the primary stored a moment ago: it adds almost nothing.
    let before = objects(&primary.path);
    let data = own(3);
    let mut child = as_host(&replica_cache, &["--json", "backup", "--name", "replica-again", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let added = objects(&primary.path) - before;
    assert!(added * 100 < data.len() as u64, "the replica added {added} bytes for {} already stored", data.len());
}

#[test]
fn a_server_that_dies_mid_backup_fails_it_cleanly_and_the_next_backup_reuses_the_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("s3-root");
    let port = dedupe_suite::mariadb::free_port();
    let server = Server::start(&root, port);
    let repo = Repo::uninitialised_in(&server);
    repo.ok(&["init"]);
    let index_dir = repo.path.join("index");

    // A stream larger than memory would hold, fed slowly enough to kill the server halfway.
    const TOTAL: u64 = 640 << 20;
    let mut child = repo
        // Paced, so the first index object (after 15 s) lands long before the end.
        .cmd(["--storage-timeout", "3", "--limit-upload", "16M", "--json", "backup", "--name", "big", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || write_stream(&mut stdin, 99, TOTAL));
    // Wait for a first index object: some packs are then safely in the repository.
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(&index_dir).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no index object after 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    let out = child.wait_with_output().unwrap();
    let _ = feeder.join();
    assert_eq!(out.status.code(), Some(STORAGE), "{}", String::from_utf8_lossy(&out.stderr));
    let err = one_line_error(&out);
    assert!(err.contains(&repo.url) || err.contains("s3://"), "{err}");
    assert!(
        !repo.path.join("snapshots").exists() || std::fs::read_dir(repo.path.join("snapshots")).unwrap().count() == 0
    );
    let uploaded = objects(&repo.path.join("data"));
    assert!(uploaded > 0);

    // The server comes back with its data: the same stream again stores only what was missing.
    let server = Server::start(&root, port);
    let mut child = repo.spawn_backup("big");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || write_stream(&mut stdin, 99, TOTAL));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let new = v["new_bytes"].as_u64().unwrap();
    let reused = TOTAL - new;
    assert!(reused * 10 >= uploaded * 9, "{reused} bytes reused of {uploaded} uploaded before the server died");
    drop(server);
}

#[test]
fn credentials_the_bucket_refuses_are_named_with_the_bucket_and_the_operation() {
    let tmp = tempfile::tempdir().unwrap();
    let server = own_server(tmp.path());
    let repo = Repo::uninitialised_in(&server);
    repo.ok(&["init"]);
    let out = repo
        .cmd(["backup", "--name", "x", "-"])
        .env("AWS_SECRET_ACCESS_KEY", "not the secret")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(STORAGE), "{}", String::from_utf8_lossy(&out.stderr));
    let err = one_line_error(&out);
    assert!(err.contains("s3://dedupe-test/") && err.contains("refused"), "{err}");
}

#[test]
fn locations_dedupe_does_not_read_are_refused_before_anything_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    for location in ["s3:s3.amazonaws.com/bucket", "sftp:backup@host:/srv/repo", "https://host/repo", "b2:bucket:path"]
    {
        let out = std::process::Command::new(dedupe_bin())
            .current_dir(tmp.path())
            .args(["--repo", location, "init"])
            .env("DEDUPE_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(USAGE), "{location}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(one_line_error(&out).contains("s3://bucket/prefix"), "{}", one_line_error(&out));
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "something was created");
}

#[test]
fn a_server_answering_503_to_one_request_in_ten_slows_backups_down_but_they_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = own_server(tmp.path());
    let proxy = Proxy::start(server.port, Faults { fail_every: 10, ..Faults::default() });
    let repo = Repo::uninitialised_in(&server).through(&proxy.endpoint());
    repo.ok(&["init"]);
    let data = Prng::new(5).bytes(96 << 20);
    let id = repo.backup_bytes("flaky", &data)["snapshot"].as_str().unwrap().to_string();
    let restored = repo.ok(&["restore", &id, "--stdout"]);
    assert!(restored == data, "the restore differs");
    let wal = repo.scratch("000000010000000000000001");
    std::fs::write(&wal, Prng::new(6).bytes(1 << 20)).unwrap();
    repo.ok(&["wal".as_ref(), "push".as_ref(), "--name".as_ref(), "pg".as_ref(), wal.as_os_str()]);
    let failed = proxy.failed.load(std::sync::atomic::Ordering::Relaxed);
    let requests = proxy.requests.load(std::sync::atomic::Ordering::Relaxed);
    assert!(failed >= 3 && failed * 10 <= requests, "{failed} of {requests} requests answered 503");
}

#[test]
fn a_bucket_that_refuses_writes_is_named_with_the_operation_and_nothing_is_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = own_server(tmp.path());
    let repo = Repo::uninitialised_in(&server);
    repo.ok(&["init"]);
    repo.backup_bytes("db", b"first");
    let proxy = Proxy::start(server.port, Faults { deny_writes: true, ..Faults::default() });
    let repo = repo.through(&proxy.endpoint());
    let out = run_with_stdin(repo.cmd(["backup", "--name", "db", "-"]), &Prng::new(8).bytes(1 << 20));
    assert_eq!(out.status.code(), Some(STORAGE), "{}", String::from_utf8_lossy(&out.stderr));
    let err = one_line_error(&out);
    assert!(err.contains(&format!("{}/data/", repo.url)) && err.contains("writing was refused"), "{err}");
    // Reading still works, and the earlier snapshot is the latest.
    assert_eq!(repo.ok(&["restore", "latest", "--stdout"]), b"first");
}
