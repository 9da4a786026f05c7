//! `backup --snapshot btrfs`: a real MariaDB whose data directory is on a
//! btrfs filesystem on a loop device, backed up under a write load from a
//! read-only snapshot taken under `BACKUP STAGE BLOCK_COMMIT`; the lock is
//! short and recorded, the snapshot is gone afterwards, and a
//! point-in-time restore from the backup plus archived binlogs is exact. A
//! backup killed with SIGTERM mid-copy removes its snapshot and holds no lock.
//! (PostgreSQL's: tests/postgres_pitr.rs.)

use dedupe_suite::btrfs::Btrfs;
use dedupe_suite::mariadb::{serial, Server};
use dedupe_suite::*;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn push(repo: &Repo, s: &Server) -> serde_json::Value {
    s.push_binlogs(repo, "m")
}

fn snapshot_backup(repo: &Repo, s: &Server) -> Command {
    let mut c = repo.cmd(["backup", "--name", "m", "--snapshot", "btrfs", "--datadir"]);
    c.arg(&s.datadir).arg("--mysql-socket").arg(&s.socket).args(["--mysql-user", "root"]);
    c
}

/// Writes rows from another thread until `stop`.
fn load(s: &Server, stop: &AtomicBool) -> u32 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        s.sql("INSERT INTO shop.t (note) SELECT CONCAT('load ', seq) FROM shop.seq_1_to_50");
        n += 1;
    }
    n
}

#[test]
fn a_snapshot_backup_locks_briefly_leaves_no_snapshot_and_restores_to_the_second() {
    let _serial = serial();
    let repo = Repo::new();
    let work = repo.scratch("work");
    std::fs::create_dir_all(&work).unwrap();
    let fs = Btrfs::new(&work);
    // The server's data directory on btrfs (inside its top-level subvolume).
    let src = Server::init(&fs.mnt);
    src.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY AUTO_INCREMENT, note VARCHAR(40)) ENGINE=InnoDB",
    );
    src.sql("INSERT INTO shop.t (note) SELECT CONCAT('first ', seq) FROM shop.seq_1_to_20000");

    // Backed up while another session keeps writing.
    let stop = AtomicBool::new(false);
    let (out, rounds) = std::thread::scope(|sc| {
        let writer = sc.spawn(|| load(&src, &stop));
        std::thread::sleep(Duration::from_millis(300));
        let out = snapshot_backup(&repo, &src).arg("--json").output().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        (out, writer.join().unwrap())
    });
    assert!(out.status.success(), "backup --snapshot: {}", String::from_utf8_lossy(&out.stderr));
    assert!(rounds > 2, "the load ran during the backup ({rounds} rounds)");
    let snaps = repo.json(&["snapshots"]);
    let meta = &snaps[0]["metadata"];
    assert_eq!(meta["format"], "directory", "{meta}");
    assert_eq!(meta["database"], "mariadb", "{meta}");
    assert_eq!(meta["snapshot"]["provider"], "btrfs", "{meta}");
    assert_eq!(meta["snapshot"]["lock"], "BACKUP STAGE BLOCK_COMMIT", "{meta}");
    let locked = meta["snapshot"]["locked_seconds"].as_f64().unwrap();
    assert!(locked < 1.0, "commits were blocked for {locked} s");
    assert!(meta["mysql"]["binlog_file"].as_str().unwrap().starts_with("mysql-bin."), "{meta}");
    assert!(meta["mysql"]["binlog_position"].as_u64().unwrap() > 0, "{meta}");
    assert!(!fs.subvolumes().contains("dedupe-snapshot"), "the snapshot is gone: {}", fs.subvolumes());
    // Nothing of the snapshot's own directory in the backup.
    let listing = String::from_utf8(repo.ok(&["ls", "latest"])).unwrap();
    assert!(!listing.contains("dedupe-snapshot") && listing.contains("ibdata1"), "{listing}");

    // The world goes on; binlogs are pushed; a table is dropped at second T.
    src.sql("INSERT INTO shop.t (note) VALUES ('after the backup')");
    src.sql("FLUSH BINARY LOGS");
    push(&repo, &src);
    src.sql("UPDATE shop.t SET note = 'changed' WHERE id % 7 = 0");
    let want = src.checksums("shop");
    let count = src.sql("SELECT COUNT(*) FROM shop.t");
    let t = next_second(0.2);
    src.sql("DROP TABLE shop.t");
    src.sql("FLUSH BINARY LOGS");
    push(&repo, &src);

    // Restored to the end of second T-1: the snapshot (no prepare: crash
    // recovery at start), then the binlogs from its recorded position.
    let until = local_time(t - 1);
    let target = work.join("restored");
    let out =
        repo.cmd(["restore", "--until", &until, "--name", "m", "--prepare", "--target"]).arg(&target).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no prepare step"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = Server::start(&work.join("copy"), &target);
    let mut replay = repo
        .cmd(["binlog", "replay", "--name", "m", "--until", &until, "--target"])
        .arg(&target)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let applied = copy.client().stdin(replay.stdout.take().unwrap()).output().unwrap();
    assert!(replay.wait().unwrap().success(), "binlog replay failed");
    assert!(
        applied.status.success(),
        "replaying into the restored server: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert_eq!(copy.sql("SELECT COUNT(*) FROM shop.t"), count);
    assert_eq!(copy.checksums("shop"), want);
    drop(copy);

    // Killed with SIGTERM while it copies (a large file makes the copy take
    // a while): the snapshot is removed and no lock is left.
    let mut prng = Prng::new(9);
    let mut big = std::fs::File::create(src.datadir.join("big.dat")).unwrap();
    for _ in 0..48 {
        std::io::Write::write_all(&mut big, &prng.bytes(16 << 20)).unwrap();
    }
    drop(big);
    let before = repo.json(&["snapshots"]).as_array().unwrap().len();
    let child = snapshot_backup(&repo, &src).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while !fs.subvolumes().contains("dedupe-snapshot") {
        assert!(started.elapsed() < Duration::from_secs(30), "no snapshot appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!fs.subvolumes().contains("dedupe-snapshot"), "SIGTERM left the snapshot: {}", fs.subvolumes());
    // No lock: DDL and commits go through at once.
    src.sql("SET SESSION lock_wait_timeout = 5; CREATE TABLE shop.after_kill (id INT) ENGINE=InnoDB; INSERT INTO shop.after_kill VALUES (1)");
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), before, "nothing committed");
    repo.ok(&["check"]);
}

/// A `--snapshot` that does not fit the data directory's filesystem is
/// refused before the server is asked for anything (no socket is given
/// here: a connection would fail otherwise), naming the filesystem.
#[test]
fn a_provider_that_does_not_fit_the_filesystem_is_refused_first() {
    let repo = Repo::new();
    let dir = repo.scratch("datadir");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ibdata1"), b"not really").unwrap();
    for provider in ["btrfs", "zfs", "lvm"] {
        let out = repo.run(&["backup", "--name", "x", "--snapshot", provider, "--datadir", dir.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{provider}: {}", String::from_utf8_lossy(&out.stderr));
        let err = one_line_error(&out);
        assert!(err.contains(&format!("--snapshot {provider} cannot snapshot it")), "{err}");
    }
    assert!(repo.json(&["snapshots"]).as_array().unwrap().is_empty());
}
