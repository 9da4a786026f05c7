//! Readers never fail because a writer is busy.
//!
//! Backups and log pushes land at any moment: a server's archive_command
//! pushes WAL every few seconds, cron pushes binlogs, backups run at night.
//! A reader working meanwhile (a restore, a standby's restore_command
//! fetching the next WAL file, a binlog replay) must see the repository as it
//! was before a new manifest landed or as it is after, never a manifest whose
//! chunks it cannot find.
//!
//! That holds only if a reader lists the manifests *before* it loads the
//! index. A writer stores packs, then the index objects naming them, then
//! the manifest; so an index read after the listing covers every manifest
//! in it. Read the other way round, a manifest that lands between the two
//! names chunks the reader's index has never heard of, and a repository
//! that is fine fails with "chunk … is not in the index: run `dedupe repair
//! index`". restic's design document states the rule (Read and Write
//! Ordering): the list of snapshots to read should be collected before
//! loading the repository index.
//!
//! For `DEDUPE_RACE_SECONDS` (120 by default) one thread writes into one
//! repository as fast as it can, in turn: a `dedupe backup` of fresh random
//! bytes (new chunks every time), a `dedupe binlog push` of one more closed
//! binlog, a `dedupe wal push` of one more random WAL file. Payloads are
//! small, so that many manifests land each second. Three more threads read
//! meanwhile, each in a loop: `dedupe restore latest --stdout`, and `dedupe
//! wal fetch` and `dedupe binlog replay` of the newest file the writer has
//! pushed or is pushing. A file still being pushed may be
//! answered "not archived" (as PostgreSQL expects of a restore_command); any
//! other failure counts, and the test wants none.

use dedupe_suite::*;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Each reader kind must have run at least this often for the result to say anything.
const MIN_RUNS: u64 = 20;
/// The exit code of "not archived" (and, today, of "not in the index").
const MISSING: i32 = 8;
/// The exit code of "not restorable": a replay whose start file is not archived yet.
const NOT_RESTORABLE: i32 = 16;

/// Complete binlog files of one server. Copies under new names are new files
/// of the archive (a push refuses only a name it holds with other bytes):
/// every event's CRC-32 stays right, and a replay reads one file alone, so
/// the GTIDs of a copy need not follow the previous file's (mariadb-binlog
/// refuses GTIDs out of order across files). A copy's bytes dedupe, but its
/// tree, which names it, is a new chunk: enough for the race.
const FIXTURES: [&str; 3] = ["mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000003"];

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("ingest/testdata/binlog").join(name)).unwrap()
}

/// Binlog file `n` (from 1), and what it holds: the fixtures in turn.
fn binlog_name(n: u64) -> String {
    format!("mysql-bin.{n:06}")
}

fn binlog_bytes(n: u64) -> Vec<u8> {
    fixture(FIXTURES[((n - 1) % 3) as usize])
}

/// WAL segment `n` of timeline 1 (16 MiB segments: 256 to a log).
fn wal_name(n: u64) -> String {
    format!("{:08X}{:08X}{:08X}", 1, n >> 8, n & 0xff)
}

fn race_duration() -> Duration {
    let secs = match std::env::var("DEDUPE_RACE_SECONDS") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("DEDUPE_RACE_SECONDS is not a number of seconds: {s:?}")),
        Err(_) => 120,
    };
    Duration::from_secs(secs)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// How far the writer has got with one kind of log file, numbered from 1.
#[derive(Default)]
struct Pushes {
    /// The file being pushed, or the last one pushed.
    started: AtomicU64,
    /// The last file whose push has completed.
    done: AtomicU64,
}

impl Pushes {
    fn begin(&self, n: u64) {
        self.started.store(n, SeqCst);
    }

    fn end(&self, n: u64) {
        self.done.store(n, SeqCst);
    }

    /// The newest file a reader can ask for, and whether its push had
    /// completed before the reader asked (then it must be found).
    fn newest(&self) -> (u64, bool) {
        let done = self.done.load(SeqCst);
        let started = self.started.load(SeqCst);
        (started, started == done)
    }
}

/// What the threads share.
struct World {
    repo: Repo,
    until: Instant,
    binlog_dir: PathBuf,
    wal_dir: PathBuf,
    binlogs: Pushes,
    wal: Pushes,
    /// The BLAKE3 of every stream backed up, or being backed up.
    backups: Mutex<HashSet<blake3::Hash>>,
}

#[derive(Default)]
struct Writes {
    backups: u64,
    binlog_pushes: u64,
    wal_pushes: u64,
    failures: Vec<String>,
}

impl World {
    fn new() -> World {
        let repo = Repo::new();
        let binlog_dir = repo.scratch("binlogs");
        let wal_dir = repo.scratch("pg_wal");
        std::fs::create_dir_all(&binlog_dir).unwrap();
        std::fs::create_dir_all(&wal_dir).unwrap();
        std::fs::create_dir_all(repo.scratch("replay/target")).unwrap();
        std::fs::create_dir_all(repo.scratch("standby")).unwrap();
        World {
            repo,
            until: Instant::now(),
            binlog_dir,
            wal_dir,
            binlogs: Pushes::default(),
            wal: Pushes::default(),
            backups: Mutex::new(HashSet::new()),
        }
    }

    /// Backs up `len` random bytes as `db`.
    fn backup(&self, rng: &mut ChaCha8Rng, len: usize) -> Result<(), String> {
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        // Known before the snapshot can be: a restore may find it at once.
        self.backups.lock().unwrap().insert(blake3::hash(&data));
        let out = run_with_stdin(self.repo.cmd(["backup", "--name", "db", "-"]), &data);
        if !out.status.success() {
            return Err(format!("backup of {len} bytes: {}: {}", out.status, stderr(&out)));
        }
        Ok(())
    }

    /// Closes binlog `n` (file `n + 1` becomes the active one, as after a
    /// FLUSH BINARY LOGS) and pushes it. The index lists only the last two
    /// files, as after the server purged the older ones.
    fn push_binlog(&self, n: u64) -> Result<(), String> {
        // The server closes file n and writes the next, still open: n is
        // archived complete, the active one is left alone.
        std::fs::write(self.binlog_dir.join(binlog_name(n)), binlog_bytes(n)).unwrap();
        std::fs::write(self.binlog_dir.join(binlog_name(n + 1)), fixture("mysql-bin.000002.active")).unwrap();
        let index = format!("./{}\n./{}\n", binlog_name(n), binlog_name(n + 1));
        std::fs::write(self.binlog_dir.join("mysql-bin.index"), index).unwrap();
        self.binlogs.begin(n);
        let out = self
            .repo
            .cmd(["--json", "binlog", "push", "--name", "db", "--binlog-dir"])
            .arg(&self.binlog_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run dedupe");
        if !out.status.success() {
            return Err(format!("binlog push of {}: {}: {}", binlog_name(n), out.status, stderr(&out)));
        }
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}"))?;
        let stored = report
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["file"] == binlog_name(n).as_str() && r["status"] == "stored"));
        if !stored {
            return Err(format!("binlog push of {} did not store it: {report}", binlog_name(n)));
        }
        self.binlogs.end(n);
        Ok(())
    }

    /// Pushes WAL file `n` of `len` random bytes (pg_waldump reads nothing in them: no commit times).
    fn push_wal(&self, rng: &mut ChaCha8Rng, n: u64, len: usize) -> Result<(), String> {
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        let path = self.wal_dir.join(wal_name(n));
        std::fs::write(&path, &data).unwrap();
        self.wal.begin(n);
        let out = self.repo.cmd(["wal", "push", "--name", "pg"]).arg(&path).stdin(Stdio::null()).output().unwrap();
        if !out.status.success() {
            return Err(format!("wal push of {}: {}: {}", wal_name(n), out.status, stderr(&out)));
        }
        self.wal.end(n);
        Ok(())
    }

    /// Backups, binlog pushes and WAL pushes in turn until the time is up.
    fn write(&self, rng: &mut ChaCha8Rng) -> Writes {
        let mut w = Writes::default();
        let mut round = 0u64;
        while Instant::now() < self.until {
            let result = match round % 3 {
                0 => {
                    w.backups += 1;
                    let len = rng.random_range(16 << 10..256 << 10);
                    self.backup(rng, len)
                }
                1 => {
                    w.binlog_pushes += 1;
                    self.push_binlog(self.binlogs.done.load(SeqCst) + 1)
                }
                _ => {
                    w.wal_pushes += 1;
                    let len = rng.random_range(16 << 10..256 << 10);
                    self.push_wal(rng, self.wal.done.load(SeqCst) + 1, len)
                }
            };
            if let Err(e) = result {
                w.failures.push(e);
            }
            round += 1;
        }
        w
    }
}

/// How one read ended.
enum Outcome {
    Ok,
    /// The file asked for was still being pushed, and was not found: fine.
    NotYet,
    Failed(String),
}

#[derive(Default)]
struct Reads {
    runs: u64,
    ok: u64,
    not_yet: u64,
    failures: Vec<String>,
}

impl World {
    /// Runs `read` over and over until the time is up.
    fn keep_reading(&self, mut read: impl FnMut() -> Outcome) -> Reads {
        let mut r = Reads::default();
        while Instant::now() < self.until {
            r.runs += 1;
            match read() {
                Outcome::Ok => r.ok += 1,
                Outcome::NotYet => r.not_yet += 1,
                Outcome::Failed(e) => r.failures.push(e),
            }
        }
        r
    }

    /// `dedupe restore latest --stdout`: must give the bytes of some backup.
    fn restore_latest(&self) -> Outcome {
        let out =
            self.repo.cmd(["restore", "latest", "--name", "db", "--stdout"]).stdin(Stdio::null()).output().unwrap();
        if !out.status.success() {
            return Outcome::Failed(format!("restore latest: {}: {}", out.status, stderr(&out)));
        }
        let hash = blake3::hash(&out.stdout);
        if !self.backups.lock().unwrap().contains(&hash) {
            return Outcome::Failed(format!("restore latest: {} bytes that no backup had", out.stdout.len()));
        }
        Outcome::Ok
    }

    /// `dedupe wal fetch` of the newest WAL file, as a standby's restore_command asks for it.
    fn fetch_wal(&self) -> Outcome {
        let (n, pushed) = self.wal.newest();
        let file = wal_name(n);
        let dest = self.repo.scratch("standby/RECOVERYXLOG");
        let out = self
            .repo
            .cmd(["wal", "fetch", "--name", "pg", file.as_str()])
            .arg(&dest)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = stderr(&out);
        if out.status.success() {
            if std::fs::read(&dest).unwrap() != std::fs::read(self.wal_dir.join(&file)).unwrap() {
                return Outcome::Failed(format!("wal fetch {file}: other bytes than were pushed"));
            }
            return Outcome::Ok;
        }
        if !pushed && out.status.code() == Some(MISSING) && err.contains("is not archived") {
            return Outcome::NotYet;
        }
        let when = if pushed { "pushed" } else { "being pushed" };
        Outcome::Failed(format!("wal fetch {file} ({when}): {}: {err}", out.status))
    }

    /// `dedupe binlog replay` of the newest binlog alone, from a restored
    /// directory whose binlog position is its start, to its end.
    fn replay_binlog(&self) -> Outcome {
        let (n, pushed) = self.binlogs.newest();
        let file = binlog_name(n);
        let target = self.repo.scratch("replay/target");
        std::fs::write(target.join("xtrabackup_binlog_info"), format!("{file}\t4\n")).unwrap();
        let until = format!("{file}:{}", binlog_bytes(n).len());
        let out = self
            .repo
            .cmd(["binlog", "replay", "--name", "db", "--until-position", until.as_str(), "--target"])
            .arg(&target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&out);
        if out.status.success() {
            return Outcome::Ok;
        }
        if !pushed && out.status.code() == Some(NOT_RESTORABLE) && err.contains("is not archived") {
            return Outcome::NotYet;
        }
        let when = if pushed { "pushed" } else { "being pushed" };
        Outcome::Failed(format!("binlog replay to {until} ({when}): {}: {err}", out.status))
    }
}

#[test]
fn readers_never_fail_while_backups_and_log_pushes_land() {
    assert!(
        on_path("mariadb-binlog") || on_path("mysqlbinlog"),
        "binlog replay needs mariadb-binlog: scripts/test.sh installs it with mariadb-server"
    );
    let mut world = World::new();
    let mut rng = ChaCha8Rng::seed_from_u64(0x7ace_5eed);
    // Something of each kind to read from the start: a snapshot, binlog 1, WAL 1.
    std::fs::write(world.binlog_dir.join(binlog_name(1)), binlog_bytes(1)).unwrap();
    for first in [world.backup(&mut rng, 256 << 10), world.push_binlog(1), world.push_wal(&mut rng, 1, 256 << 10)] {
        first.expect("the first writes before the race");
    }
    let duration = race_duration();
    world.until = Instant::now() + duration;

    let world = &world;
    let (writes, restores, fetches, replays) = std::thread::scope(|s| {
        let writer = s.spawn(move || world.write(&mut rng));
        let restores = s.spawn(|| world.keep_reading(|| world.restore_latest()));
        let fetches = s.spawn(|| world.keep_reading(|| world.fetch_wal()));
        let replays = s.spawn(|| world.keep_reading(|| world.replay_binlog()));
        (writer.join().unwrap(), restores.join().unwrap(), fetches.join().unwrap(), replays.join().unwrap())
    });

    println!(
        "{}s of writing: {} backups, {} binlog pushes, {} WAL pushes, {} writer failures",
        duration.as_secs(),
        writes.backups,
        writes.binlog_pushes,
        writes.wal_pushes,
        writes.failures.len()
    );
    let kinds = [("restore latest", &restores), ("wal fetch", &fetches), ("binlog replay", &replays)];
    for (kind, r) in kinds {
        let not_in_index = r.failures.iter().filter(|e| e.contains("is not in the index")).count();
        println!(
            "{kind:<15} {:>5} runs: {:>5} ok, {:>4} not yet archived, {:>4} failed ({:.1}%; {not_in_index} of them \"not in the index\")",
            r.runs,
            r.ok,
            r.not_yet,
            r.failures.len(),
            100.0 * r.failures.len() as f64 / r.runs.max(1) as f64,
        );
    }
    for (kind, r) in kinds {
        // Every failure that is not the usual one, and a few of the usual.
        let (usual, other): (Vec<&String>, Vec<&String>) =
            r.failures.iter().partition(|e| e.contains("is not in the index"));
        for e in other.iter().chain(usual.iter().take(3)) {
            println!("  {kind} failed: {e}");
        }
    }
    for e in &writes.failures {
        println!("  writer failed: {e}");
    }

    assert!(writes.failures.is_empty(), "{} writes failed: {:?}", writes.failures.len(), writes.failures);
    let failed: u64 = kinds.iter().map(|(_, r)| r.failures.len() as u64).sum();
    assert_eq!(failed, 0, "readers failed while the writer wrote (see above)");
    for (kind, r) in kinds {
        assert!(r.ok >= MIN_RUNS, "{kind} succeeded only {} times in {}s: too few to tell", r.ok, duration.as_secs());
    }
}
