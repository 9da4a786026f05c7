//! `backup --snapshot zfs`: a real MariaDB on a ZFS pool (zfs-fuse from
//! Debian, a pool in a file; scripts/test.sh installs it) backed up from a
//! ZFS snapshot under `BACKUP STAGE BLOCK_COMMIT`: the lock is short, the
//! snapshot and its clone are gone afterwards, and a drill of the backup
//! starts a server on it and checks every table. (zfs-fuse has no
//! `.zfs/snapshot`, so this exercises the read-only clone.)

use dedupe_suite::mariadb::{serial, Server};
use dedupe_suite::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A pool in a file, mounted at `mnt`; destroyed (and the daemon we started stopped) when dropped.
struct Pool {
    name: String,
    mnt: PathBuf,
    daemon: Option<std::process::Child>,
}

fn zfs(args: &[&str]) -> std::process::Output {
    Command::new("zfs").args(args).output().unwrap()
}

impl Pool {
    fn new(dir: &Path) -> Pool {
        assert!(
            Command::new("zpool").arg("list").output().is_ok(),
            "zpool is missing: apt-get install zfs-fuse (scripts/test.sh does)"
        );
        // zfs-fuse is a daemon; start one unless one answers already.
        let running = |_: ()| Command::new("zpool").arg("list").output().map(|o| o.status.success()).unwrap_or(false);
        let daemon = if running(()) {
            None
        } else {
            let child = Command::new("zfs-fuse")
                .arg("--no-daemon")
                .arg("--pidfile")
                .arg(dir.join("zfs-fuse.pid"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("zfs-fuse");
            let started = Instant::now();
            while !running(()) {
                assert!(started.elapsed() < Duration::from_secs(20), "zfs-fuse did not answer");
                std::thread::sleep(Duration::from_millis(100));
            }
            Some(child)
        };
        let name = format!("dedupetest{}", std::process::id());
        let (img, mnt) = (dir.join("pool.img"), dir.join("zfs"));
        std::fs::File::create(&img).unwrap().set_len(1 << 30).unwrap();
        let out = Command::new("zpool").args(["create", "-m"]).arg(&mnt).arg(&name).arg(&img).output().unwrap();
        assert!(out.status.success(), "zpool create: {}", String::from_utf8_lossy(&out.stderr));
        Pool { name, mnt, daemon }
    }

    /// Every dataset and snapshot of the pool.
    fn datasets(&self) -> String {
        String::from_utf8(zfs(&["list", "-H", "-t", "all", "-o", "name", "-r", &self.name]).stdout).unwrap()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Just used, it may be busy a moment.
        for _ in 0..20 {
            if Command::new("zpool").args(["destroy", "-f", &self.name]).output().is_ok_and(|o| o.status.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

#[test]
fn a_zfs_snapshot_backup_locks_briefly_leaves_nothing_behind_and_drills() {
    let _serial = serial();
    let repo = Repo::new();
    let work = repo.scratch("work");
    std::fs::create_dir_all(&work).unwrap();
    let pool = Pool::new(&work);
    {
        let src = Server::init(&pool.mnt);
        src.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY AUTO_INCREMENT, note VARCHAR(40)) ENGINE=InnoDB");
        src.sql("INSERT INTO shop.t (note) SELECT CONCAT('row ', seq) FROM shop.seq_1_to_5000");
        let want = src.checksums("shop");
        let out = repo
            .cmd(["backup", "--name", "z", "--snapshot", "zfs", "--datadir"])
            .arg(&src.datadir)
            .arg("--mysql-socket")
            .arg(&src.socket)
            .args(["--mysql-user", "root"])
            .output()
            .unwrap();
        assert!(out.status.success(), "backup --snapshot zfs: {}", String::from_utf8_lossy(&out.stderr));
        let meta = &repo.json(&["snapshots"])[0]["metadata"];
        assert_eq!(meta["snapshot"]["provider"], "zfs", "{meta}");
        assert!(meta["snapshot"]["locked_seconds"].as_f64().unwrap() < 1.0, "{meta}");
        assert!(meta["mysql"]["binlog_position"].as_u64().unwrap() > 0, "{meta}");
        assert!(
            !pool.datasets().contains("dedupe-snapshot"),
            "the snapshot and its clone are gone: {}",
            pool.datasets()
        );

        // The backup restores and starts, with the source's tables.
        let target = work.join("restored");
        repo.ok(&["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), target.as_os_str()]);
        let copy = Server::start(&work.join("copy"), &target);
        assert_eq!(copy.checksums("shop"), want);
    }
    let scratch = repo.scratch("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let drilled = repo.json(&["drill".as_ref(), "latest".as_ref(), "--scratch".as_ref(), scratch.as_os_str()]);
    assert_eq!(drilled["ok"], true, "{drilled}");
}
