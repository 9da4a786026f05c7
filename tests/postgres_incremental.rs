//! PostgreSQL 18's native incremental backups (`pg_basebackup
//! --incremental`) through `dedupe backup --pg-incremental`: each is stored
//! as the full backup it stands for, built on the stored backup it was taken
//! against. Restored alone, it is a data directory: it passes
//! `pg_verifybackup`, starts, and holds the source's tables; it costs what a
//! full of the same state costs; a chain of them restores; one whose base
//! is not in the repository is refused and commits nothing.
//!
//! Always PostgreSQL 18 (`scripts/test.sh` unpacks it), whatever
//! `DEDUPE_TEST_PG` says: incremental backups began with 17.

use dedupe_suite::postgres::{chown_postgres, ok, pg_tempdir, postgres_dir, Pg, Server, PORT};
use dedupe_suite::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

const INPUT_FAILED: i32 = 6;

/// A PostgreSQL 18 cluster that summarizes its WAL, and two repositories.
struct Setup {
    // Dropped in this order: the server stops before its directory goes.
    server: Server,
    pg: Pg,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let pg = Pg::of(18);
        let tmp = pg_tempdir();
        let dir = tmp.path().to_path_buf();
        let (src, sock, logs) =
            (postgres_dir(&dir.join("src")), postgres_dir(&dir.join("sock")), postgres_dir(&dir.join("logs")));
        // summarize_wal: the server keeps track of the blocks each WAL range changed.
        pg.initdb(&src, "summarize_wal = on\nwal_level = replica");
        let server = Server::start_on(pg.clone(), &src, &sock, &logs.join("src.log"), &[]);
        server.psql("postgres", "CREATE DATABASE shop");
        let mut init = server.client("pgbench");
        init.args(["-i", "-s", "3", "-q", "shop"]);
        ok(init, "pgbench -i");
        server.psql(
            "shop",
            "CREATE TABLE notes AS SELECT g AS id, md5(g::text) || repeat(md5((g * 7)::text), 3) AS body \
             FROM generate_series(1, 20000) g",
        );
        server.psql("shop", "CHECKPOINT");
        Setup { server, pg, dir, _tmp: tmp }
    }

    /// `pg_basebackup` of the server, as a `--command`.
    fn producer(&self) -> String {
        self.pg
            .shell("pg_basebackup", &format!("-h {} -p {PORT} -D - -Ft -X fetch -c fast", self.server.sock.display()))
    }

    /// A backup of the server into `repo` as `pg`, with `extra` options; its summary.
    fn backup(&self, repo: &Repo, extra: &[&str]) -> serde_json::Value {
        let producer = self.producer();
        let mut args = vec!["--json", "backup", "--name", "pg", "--command", &producer];
        args.extend(extra);
        let out = repo.run(&args);
        assert!(out.status.success(), "backup {extra:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A day of writes: updates spread over the tables, inserts, a delete.
    fn writes(&self, round: u32) {
        let mut run = self.server.client("pgbench");
        run.args(["-n", "-c", "2", "-j", "2", "-t", "400", "shop"]);
        ok(run, "pgbench");
        self.server.psql("shop", &format!("UPDATE notes SET body = md5(body || '{round}') WHERE id % 97 = {round}"));
        self.server.psql("shop", &format!("INSERT INTO notes SELECT g, 'round {round}' FROM generate_series(30000 + {round} * 1000, 30000 + {round} * 1000 + 499) g"));
        self.server.psql("shop", &format!("DELETE FROM notes WHERE id BETWEEN {round} * 100 AND {round} * 100 + 50"));
        self.server.psql("shop", "CHECKPOINT");
    }

    /// Snapshot `id` of `repo` restored into a new directory, checked by
    /// 18's pg_verifybackup, started, and its tables compared with `want`.
    fn restore_verify_start(&self, repo: &Repo, id: &str, want: &BTreeMap<String, String>, what: &str) {
        let target = self.dir.join(format!("restored-{what}"));
        repo.ok(&["restore".as_ref(), id.as_ref(), "--target".as_ref(), target.as_os_str()]);
        // As the README has it: the restored files given to the server's user
        // (pg_basebackup writes its manifest into the tar as uid 2048).
        chown_postgres(&target);
        let mut verify = self.pg.cmd("pg_verifybackup");
        verify.arg(&target);
        let said = ok(verify, &format!("pg_verifybackup of {what}"));
        assert!(said.contains("backup successfully verified"), "{what}: {said}");
        let sock = postgres_dir(&self.dir.join(format!("sock-{what}")));
        let copy = Server::start_on(self.pg.clone(), &target, &sock, &self.dir.join(format!("logs/{what}.log")), &[]);
        assert_eq!(&copy.table_hashes("shop"), want, "{what}: the restored tables differ from the source's");
    }
}

fn stored(summary: &serde_json::Value) -> u64 {
    summary["new_bytes_stored"].as_u64().unwrap()
}

fn snapshot(summary: &serde_json::Value) -> String {
    summary["snapshot"].as_str().unwrap().to_string()
}

#[test]
fn an_incremental_is_stored_as_the_full_it_stands_for() {
    let s = Setup::new();
    let (repo, fulls) = (Repo::new(), Repo::new());
    // The same first full in both repositories.
    let first = s.backup(&repo, &[]);
    let stream = repo.scratch("first.tar");
    let out = repo
        .cmd(["restore", &snapshot(&first), "--stdout"])
        .stdout(std::fs::File::create(&stream).unwrap())
        .status()
        .unwrap();
    assert!(out.success());
    let out = fulls.cmd(["backup", "--name", "pg", "-"]).stdin(std::fs::File::open(&stream).unwrap()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    s.writes(1);
    let incremental = s.backup(&repo, &["--pg-incremental"]);
    let want = s.server.table_hashes("shop");
    // The same state as a full, in the other repository.
    let full = s.backup(&fulls, &[]);
    assert!(
        stored(&incremental) as f64 <= 1.2 * stored(&full) as f64,
        "the incremental stored {} where a full of the same state stored {}",
        stored(&incremental),
        stored(&full)
    );
    // A fraction of what was read: the blocks it did not send are the first full's.
    assert!(incremental["bytes_read"].as_u64().unwrap() < first["bytes_read"].as_u64().unwrap());

    // It is a full: what it was built on is said; it restores alone.
    let snaps = repo.json(&["snapshots", "--name", "pg"]);
    let meta = &snaps[1]["metadata"];
    assert_eq!(meta["postgresql"]["built_on"], snapshot(&first), "{meta}");
    assert_eq!(meta["postgresql"]["version"], 18, "{meta}");
    assert!(meta["postgresql"]["incremental_from_lsn"].is_string(), "{meta}");
    let human = String::from_utf8(repo.ok(&["snapshots", "--name", "pg"])).unwrap();
    assert!(human.contains(&format!("built on {}", &snapshot(&first)[..8])), "{human}");
    s.restore_verify_start(&repo, &snapshot(&incremental), &want, "incremental");
    // A drill starts it as well, with 18's programs named.
    let scratch = postgres_dir(&s.dir.join("scratch"));
    let bin = s.pg.bin.display().to_string();
    let out = repo.run(&[
        "drill".as_ref(),
        "--pg-bin".as_ref(),
        bin.as_ref(),
        "--scratch".as_ref(),
        scratch.as_os_str(),
        snapshot(&incremental).as_ref(),
    ]);
    assert!(out.status.success(), "drill of the incremental: {}", String::from_utf8_lossy(&out.stderr));

    // The next full under the name keeps its deltas: nothing changed since.
    let next = s.backup(&repo, &[]);
    assert!(
        stored(&next) <= stored(&incremental),
        "the full after the incremental stored {}, the incremental {}",
        stored(&next),
        stored(&incremental)
    );
}

#[test]
fn a_chain_of_three_incrementals_restores_and_one_without_its_base_is_refused() {
    let s = Setup::new();
    let repo = Repo::new();
    let first = s.backup(&repo, &[]);
    // The first full's manifest, kept by hand as a DBA without dedupe would.
    let manifest = s.dir.join("first.manifest");
    let out = repo
        .cmd(["restore", &snapshot(&first), "--path", "backup_manifest", "--stdout"])
        .stdout(std::fs::File::create(&manifest).unwrap())
        .status()
        .unwrap();
    assert!(out.success());
    chown_postgres(&manifest);

    let mut last = first.clone();
    for round in 1..=3 {
        s.writes(round);
        let inc = s.backup(&repo, &["--pg-incremental"]);
        let snaps = repo.json(&["snapshots", "--name", "pg"]);
        let meta = &snaps.as_array().unwrap().last().unwrap()["metadata"];
        assert_eq!(meta["postgresql"]["built_on"], snapshot(&last), "round {round}: {meta}");
        last = inc;
    }
    let want = s.server.table_hashes("shop");
    s.restore_verify_start(&repo, &snapshot(&last), &want, "third");

    // The first full forgotten, an incremental against it is refused: its
    // blocks not sent would have nothing to come from.
    repo.ok(&["forget", "--name", "pg", "--keep-last", "3"]);
    let ids: Vec<String> =
        repo.json(&["snapshots"]).as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert!(!ids.contains(&snapshot(&first)), "{ids:?}");
    let before = repo.json(&["snapshots"]).as_array().unwrap().len();
    let producer = format!("{} --incremental={}", s.producer(), manifest.display());
    let out = repo.cmd(["backup", "--name", "pg", "--command", &producer]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(INPUT_FAILED), "{}", String::from_utf8_lossy(&out.stderr));
    let err = one_line_error(&out);
    assert!(err.contains("incremental") && err.contains("not in the repository"), "{err}");
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), before, "nothing was committed");
    // And --pg-incremental takes the newest backup there is.
    s.backup(&repo, &["--pg-incremental"]);
    let snaps = repo.json(&["snapshots", "--name", "pg"]);
    assert_eq!(snaps.as_array().unwrap().last().unwrap()["metadata"]["postgresql"]["built_on"], snapshot(&last));

    // The first full's own data pruned away, the snapshots built on it still
    // stand: they name the chunks they hold, not the snapshot.
    repo.ok(&["prune", "--keep-delete", "5s", "--max-unused", "0%"]);
    std::thread::sleep(std::time::Duration::from_secs(6));
    repo.ok(&["prune", "--keep-delete", "5s", "--max-unused", "0%"]);
    repo.ok(&["check", "--read-data"]);
    s.restore_verify_start(&repo, &snapshot(&last), &want, "third-after-prune");
}
