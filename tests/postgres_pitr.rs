//! Point-in-time recovery of a real PostgreSQL 15 server: the server archives
//! its WAL with `dedupe wal push` (archive_command), a base backup is taken
//! with `pg_basebackup` run by `dedupe backup --command`, and
//! `dedupe restore --until` sets up a copy that replays the archived WAL
//! (restore_command = `dedupe wal fetch`) up to a time and promotes.
//!
//! The server runs archive_command and restore_command as its own user, so
//! everything that writes the repository runs as `postgres` too: the
//! repository belongs to `postgres` (a root-run backup would leave root-owned
//! `data/xx/` directories the archiver could not write into), the password
//! file is readable by it, and dedupe run as `postgres` gets a cache
//! directory of its own. The restore itself runs as root, as an operator
//! would. Needs /usr/lib/postgresql/15/bin (Debian's postgresql-15).
//!
//! Servers come from `dedupe_suite::postgres`: socket-only, stopped on drop.

use dedupe_suite::postgres::{
    as_postgres, as_postgres_cmd, chown_postgres, is_root, ok, pg, pg_bin, postgres_dir, postgres_user, Server, PORT,
};
use dedupe_suite::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const USAGE: i32 = 2;
const MISSING: i32 = 8;
const NOT_RESTORABLE: i32 = 16;
const SEGMENT: u64 = 16 << 20;

/// What these tests do with a server, in its `postgres` database.
trait Pitr {
    fn switch_and_wait_archived(&self) -> String;
    fn rows(&self) -> Vec<(i64, i64)>;
    fn insert(&self, id: i64) -> i64;
}

impl Pitr for Server {
    /// Ends the current WAL segment; returns its name once the archiver has
    /// archived it (PostgreSQL's own `.done` marker).
    fn switch_and_wait_archived(&self) -> String {
        let seg = self.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
        let done = self.data.join("pg_wal/archive_status").join(format!("{seg}.done"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done.exists() {
            assert!(
                Instant::now() < deadline,
                "{seg} was not archived within 60 s: {}",
                self.psql("postgres", "SELECT row_to_json(a) FROM pg_stat_archiver a")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        seg
    }

    /// Every row of `t` with its commit time (unix microseconds), by id.
    fn rows(&self) -> Vec<(i64, i64)> {
        self.psql(
            "postgres",
            "SELECT id || ' ' || (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint \
             FROM t ORDER BY id",
        )
        .lines()
        .map(|l| {
            let (id, us) = l.split_once(' ').unwrap_or_else(|| panic!("row {l:?}"));
            (id.parse().unwrap(), us.parse().unwrap())
        })
        .collect()
    }

    /// Inserts row `id` in a transaction of its own; returns its commit time
    /// (unix microseconds), as the server recorded it.
    fn insert(&self, id: i64) -> i64 {
        self.psql("postgres", &format!("INSERT INTO t VALUES ({id}, 'row {id}')"));
        let us = self.psql(
            "postgres",
            &format!(
                "SELECT (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint FROM t WHERE id = {id}"
            ),
        );
        us.parse().unwrap_or_else(|_| panic!("commit time of row {id}: {us:?}"))
    }
}

/// A repository the `postgres` user owns and can open with a password file,
/// and a scratch directory it can traverse.
struct Setup {
    repo: Repo,
    /// Scratch space (mode 0755): data directories, sockets, logs, scripts.
    dir: PathBuf,
    password_file: PathBuf,
    /// The cache of dedupe run as `postgres` (backups and archive_command).
    pg_cache: PathBuf,
    /// Where restore_command's dedupe keeps its cache: the server user's
    /// default, `$HOME/.cache/dedupe/<repository id>`; removed at the end.
    restore_cache: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        // Created by root with the cheap KDF (recorded in the key file: the
        // server's dedupe, without DEDUPE_KDF_MEMORY_KIB, opens it quickly).
        let repo = Repo::new();
        fs::set_permissions(repo.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        chown_postgres(&repo.path);
        let dir = repo.scratch("work");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let secret = dir.join("secret");
        fs::create_dir(&secret).unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o755)).unwrap();
        let password_file = secret.join("password");
        fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        // The server's user owns it, readable by it alone (root reads it anyway).
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600)).unwrap();
        if is_root() {
            chown_postgres(&password_file);
        }
        let pg_cache = postgres_dir(&dir.join("pg-cache"));
        let config: serde_json::Value = serde_json::from_slice(&fs::read(repo.path.join("config")).unwrap()).unwrap();
        let id = config["id"].as_str().expect("repository id");
        let home = if is_root() { postgres_user().2 } else { PathBuf::from(std::env::var_os("HOME").unwrap()) };
        let restore_cache = home.join(".cache/dedupe").join(id);
        Setup { repo, dir, password_file, pg_cache, restore_cache }
    }

    /// `dedupe --repo R --password-file F --cache-dir C`, as the `postgres` user.
    fn dedupe_as_postgres(&self) -> Command {
        let mut c = as_postgres_cmd(&dedupe_bin());
        c.arg("--repo").arg(&self.repo.url);
        c.arg("--password-file").arg(&self.password_file);
        c.arg("--cache-dir").arg(&self.pg_cache);
        c
    }

    /// The archive_command's `dedupe ... wal push --name pg` (without `%p`),
    /// with the programs of the version under test for the commit times, as a
    /// host whose PostgreSQL is not Debian's names them.
    fn wal_push(&self) -> String {
        format!(
            "{} --repo {} --password-file {} --cache-dir {} --pg-bin {} wal push --name pg",
            dedupe_bin().display(),
            self.repo.url,
            self.password_file.display(),
            self.pg_cache.display(),
            pg_bin().display()
        )
    }

    /// A new cluster archiving with `archive_command`, started with `env`.
    fn source(&self, archive_command: &str, env: &[(&str, &str)]) -> Server {
        self.source_at(&self.dir.join("src"), archive_command, env)
    }

    /// The same with its data directory at `src`.
    fn source_at(&self, src: &Path, archive_command: &str, env: &[(&str, &str)]) -> Server {
        let src = postgres_dir(src);
        let sock = postgres_dir(&self.dir.join("sock-src"));
        let logs = postgres_dir(&self.dir.join("logs"));
        let mut initdb = as_postgres("initdb");
        initdb.arg("-D").arg(&src).args(["-A", "trust", "-U", "postgres", "--locale=C", "-E", "UTF8"]);
        ok(initdb, "initdb");
        let mut conf = fs::OpenOptions::new().append(true).open(src.join("postgresql.conf")).unwrap();
        use std::io::Write;
        write!(
            conf,
            "\nwal_level = replica\narchive_mode = on\narchive_command = '{}'\n\
             # the commit time of every row, as the WAL records it\ntrack_commit_timestamp = on\n",
            archive_command.replace('\'', "''")
        )
        .unwrap();
        drop(conf);
        let server = Server::start_with(&src, &sock, &logs.join("src.log"), env);
        server.psql("postgres", "CREATE TABLE t (id bigint PRIMARY KEY, note text)");
        server
    }

    /// A base backup of `server`: pg_basebackup's tar stream, run by
    /// `dedupe backup --command`, both as `postgres`. Returns the snapshot.
    fn base_backup(&self, server: &Server) -> serde_json::Value {
        let producer = format!(
            "{} -h {} -p {PORT} -D - -Ft -X fetch -c fast",
            pg("pg_basebackup").display(),
            server.sock.display()
        );
        let mut c = self.dedupe_as_postgres();
        c.args(["--json", "backup", "--name", "pg", "--command", &producer]);
        let summary: serde_json::Value = serde_json::from_str(&ok(c, "dedupe backup")).unwrap();
        assert!(summary["files"].as_u64().unwrap() > 100, "{summary}");
        let snaps = self.repo.json(&["snapshots", "--name", "pg"]);
        let snap = snaps.as_array().unwrap().last().expect("a snapshot").clone();
        assert_eq!(snap["metadata"]["database"], "postgresql", "{snap}");
        snap
    }

    /// `dedupe wal fetch --name pg FILE DEST` as root, as restore_command runs it.
    fn wal_fetch(&self, file: &str, dest: &Path) -> Output {
        let mut c = self.repo.cmd(["wal", "fetch", "--name", "pg", file]);
        c.arg(dest);
        c.stdin(Stdio::null()).output().expect("run dedupe wal fetch")
    }

    /// `dedupe restore --until TIME --name pg --target TARGET` as root,
    /// with the password file (the restore_command it writes names it).
    fn restore_until(&self, until: &str, target: &Path, password_file: bool) -> Output {
        let mut c = self.repo.cmd(["restore", "--until", until, "--name", "pg", "--target"]);
        c.arg(target);
        if password_file {
            c.arg("--password-file").arg(&self.password_file);
        }
        c.stdin(Stdio::null()).output().expect("run dedupe restore")
    }
}

impl Setup {
    /// A server started on a restored data directory (plain `pg_ctl start`:
    /// it fetches the WAL, stops at the target and promotes), once promoted.
    fn start_promoted(&self, target: &Path) -> Server {
        let sock = postgres_dir(&self.dir.join("sock-copy"));
        let copy = Server::start(target, &sock, &self.dir.join("logs/copy.log"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while copy.psql("postgres", "SELECT pg_is_in_recovery()") != "f" {
            assert!(Instant::now() < deadline, "the copy is still recovering after 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        copy
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.restore_cache);
    }
}

/// Unix seconds of an RFC 3339 UTC time ("2026-11-21T06:00:01.5Z"), truncated.
fn rfc3339_secs(s: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i32>().unwrap_or_else(|_| panic!("time {s:?}"));
    assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T', "not a UTC RFC 3339 time: {s:?}");
    // SAFETY: timegm reads the zeroed tm it is given.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = n(0..4) - 1900;
        tm.tm_mon = n(5..7) - 1;
        tm.tm_mday = n(8..10);
        tm.tm_hour = n(11..13);
        tm.tm_min = n(14..16);
        tm.tm_sec = n(17..19);
        libc::timegm(&mut tm)
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The name of the WAL segment after `seg` (16 MiB segments).
fn next_segment(seg: &str) -> String {
    assert_eq!(seg.len(), 24, "{seg:?}");
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(&seg[r], 16).unwrap();
    let per_log = 0x1_0000_0000 / SEGMENT;
    let n = hex(8..16) * per_log + hex(16..24) + 1;
    format!("{}{:08X}{:08X}", &seg[..8], n / per_log, n % per_log)
}

/// Asserts a refusal: exit `code`, one line naming the cause, nothing restored.
fn refused(out: &Output, code: i32, target: &Path) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{err}");
    let err = one_line_error(out);
    assert!(!target.exists(), "a refused restore created {}", target.display());
    err
}

#[test]
fn pitr_stops_before_the_destructive_statement() {
    let started = Instant::now();
    let s = Setup::new();
    // The archive_command (and the pg_waldump it runs) inherits the server's
    // environment: a zone whose abbreviation (IST) names no zone, and a
    // half-hour offset.
    let source = s.source(&format!("{} %p", s.wal_push()), &[("TZ", "Asia/Kolkata")]);
    source.psql("postgres", "INSERT INTO t VALUES (0, 'before the base backup')");
    let base = s.base_backup(&source);
    let base_time = rfc3339_secs(base["time"].as_str().unwrap());

    // Rows 1..=5, each in a transaction of its own, more than a second apart:
    // a whole second always falls between two of them.
    for id in 1..=5 {
        if id > 1 {
            std::thread::sleep(Duration::from_millis(1100));
        }
        source.insert(id);
    }
    let rows = source.rows();
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
    // T is the second row 2 committed in; "--until T" is the database at the
    // end of that second: rows committed before T + 1 s.
    let t = rows[2].1.div_euclid(1_000_000);
    let want: Vec<i64> = rows.iter().filter(|r| r.1 < (t + 1) * 1_000_000).map(|r| r.0).collect();
    assert_eq!(want, [0, 1, 2], "commit times {rows:?}, T = {t}");
    assert!(base_time <= t, "the base ({base_time}) is after T ({t})");

    // The mistake, then its WAL archived.
    source.psql("postgres", "DELETE FROM t");
    let deleted =
        source.psql("postgres", "SELECT floor(extract(epoch FROM (pg_last_committed_xact()).timestamp))::bigint");
    let deleted: i64 = deleted.parse().unwrap_or_else(|_| panic!("commit time of the DELETE: {deleted:?}"));
    let last = source.switch_and_wait_archived();
    // Then a quiet while: WAL without commits (a checkpoint), archived later.
    std::thread::sleep(Duration::from_millis(1100));
    let quiet = now_secs();
    std::thread::sleep(Duration::from_millis(1100));
    source.psql("postgres", "CHECKPOINT");
    let quiet_segment = source.switch_and_wait_archived();
    drop(source);

    // The commit times were read from the WAL (pg_waldump): the archive
    // reaches from the base to the DELETE; the timeline ends at the last
    // second `--until` takes, the one before the DELETE's (whose end is after it).
    let timeline = s.repo.json(&["timeline"]);
    let windows = &timeline[0]["windows"];
    assert_eq!(windows.as_array().map(Vec::len), Some(1), "{timeline}");
    let span = |k: &str| rfc3339_secs(windows[0][k].as_str().unwrap_or_else(|| panic!("{timeline}")));
    assert_eq!((span("from"), span("to")), (base_time, deleted - 1), "{timeline}");

    let target = s.dir.join("restored");
    // A time no archived commit reaches is refused before anything is written:
    // PostgreSQL stops only at a commit after the target, and a server whose
    // WAL ends first does not start. WAL archived later, without a commit
    // (`quiet_segment`), does not reach it either.
    for t in [quiet, now_secs() + 3600] {
        let out = s.restore_until(&local_time(t), &target, true);
        let err = refused(&out, NOT_RESTORABLE, &target);
        assert!(
            err.contains(&format!("no commit after {}", local_time(deleted))),
            "--until {} ({quiet_segment} archived since, without commits): {err}",
            local_time(t)
        );
    }

    let until = local_time(t);
    let out = s.restore_until(&until, &target, true);
    assert!(
        out.status.success(),
        "restore --until {until:?} failed ({}): {}\ntimeline: {timeline}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let auto = fs::read_to_string(target.join("postgresql.auto.conf")).unwrap();
    assert!(target.join("recovery.signal").is_file());
    let fetch = format!("{} --repo ", dedupe_bin().display());
    assert!(auto.contains(&fetch) && auto.contains("wal fetch --name pg %f %p"), "{auto}");
    assert!(auto.contains(&format!("--password-file {}", s.password_file.display())), "{auto}");
    assert!(!auto.contains(PASSWORD), "the password is written down: {auto}");
    assert!(auto.contains("recovery_target_inclusive = off") && auto.contains("archive_mode = off"), "{auto}");

    // Plain `pg_ctl start`: the server fetches the WAL, stops at the target, promotes.
    let copy = s.start_promoted(&target);
    let got = copy.rows();
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        want,
        "--until {until:?} (T = {t}): the copy holds {got:?}; the source committed {rows:?}, then deleted them all in {last}"
    );
    // The copy's commit times are the source's.
    assert_eq!(got[..], rows[..3]);
    assert_eq!(copy.psql("postgres", "SHOW archive_mode"), "off");
    let log = fs::read_to_string(&copy.log).unwrap_or_default();
    assert!(log.contains("recovery stopping before commit"), "{log}");
    drop(copy);
    assert!(s.restore_cache.is_dir(), "restore_command kept no cache in {}", s.restore_cache.display());
    eprintln!("PostgreSQL point-in-time restore took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_missing_wal_segment_is_named_and_fetch_fails() {
    let started = Instant::now();
    let s = Setup::new();
    // An archive_command that pretends to archive the segment named in `skip`.
    let skip_file = s.dir.join("skip");
    let script = s.dir.join("archive.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             # Claims success without storing the segment named in {skip}: a gap in the archive.\n\
             skip=$(cat {skip} 2>/dev/null)\n\
             if [ -n \"$skip\" ] && [ \"${{1##*/}}\" = \"$skip\" ]; then exit 0; fi\n\
             exec {push} \"$1\"\n",
            skip = skip_file.display(),
            push = s.wal_push()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let source = s.source(&format!("{} %p", script.display()), &[]);
    let base = s.base_backup(&source);
    let base_time = rfc3339_secs(base["time"].as_str().unwrap());
    let start = base["metadata"]["postgresql"]["start_wal_file"].as_str().unwrap().to_string();

    // Segment A: two commits more than a second apart. Then B, which the
    // archive never gets, and C.
    let c1 = source.insert(1);
    // (Not before the insert: right after the backup's segment switch the
    // current location is the very start of a segment, which
    // pg_walfile_name names as the one before.)
    let a = source.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    assert!(a > start, "{a} is not after the base's {start}");
    let b = next_segment(&a);
    fs::write(&skip_file, format!("{b}\n")).unwrap();
    fs::set_permissions(&skip_file, fs::Permissions::from_mode(0o644)).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    source.insert(2);
    assert_eq!(source.switch_and_wait_archived(), a);
    source.insert(3);
    assert_eq!(source.switch_and_wait_archived(), b);
    std::thread::sleep(Duration::from_millis(1100));
    let c4 = source.insert(4);
    let c = source.switch_and_wait_archived();
    assert_eq!(c, next_segment(&b));

    // wal fetch: an archived segment comes back as it was written; the gap
    // is a plain failure (exit 8), and nothing appears at the path.
    let fetched = s.dir.join("fetched");
    fs::create_dir(&fetched).unwrap();
    let out = s.wal_fetch(&a, &fetched.join("a"));
    assert!(out.status.success(), "fetch {a}: {}", String::from_utf8_lossy(&out.stderr));
    let got = fs::read(fetched.join("a")).unwrap();
    assert_eq!(got.len() as u64, SEGMENT);
    // The server keeps archived segments until its next checkpoint.
    if let Ok(orig) = fs::read(source.data.join("pg_wal").join(&a)) {
        assert!(got == orig, "fetched {a} differs from the server's");
    }
    for name in [b.as_str(), "00000001000000000000FFFF"] {
        let dest = fetched.join(name);
        let out = s.wal_fetch(name, &dest);
        assert_eq!(out.status.code(), Some(MISSING), "fetch {name}: {}", String::from_utf8_lossy(&out.stderr));
        let err = one_line_error(&out);
        assert!(err.contains(name), "{err}");
        assert_eq!(fs::read_dir(&fetched).unwrap().count(), 1, "fetch {name} left a file behind");
    }
    drop(source);

    let target = s.dir.join("restored");
    // Past the gap: refused, naming the missing segment.
    let out = s.restore_until(&local_time(c4.div_euclid(1_000_000)), &target, true);
    let err = refused(&out, NOT_RESTORABLE, &target);
    assert!(err.contains(&b) && err.contains("missing"), "{err}");

    // Before the oldest base: refused, naming the earliest restorable time.
    let out = s.restore_until("2000-01-01 00:00:00", &target, true);
    let err = refused(&out, NOT_RESTORABLE, &target);
    assert!(err.contains("earliest restorable time") && err.contains(&local_time(base_time)), "{err}");

    // Before the gap the archive reaches, but a server's restore_command needs
    // the password from somewhere other than the environment: refused before
    // anything is restored.
    let until = local_time(c1.div_euclid(1_000_000));
    let out = s.restore_until(&until, &target, false);
    let err = refused(&out, USAGE, &target);
    assert!(err.contains("--password-file"), "{err}");
    let out = s.restore_until(&until, &target, true);
    assert!(out.status.success(), "restore --until {until:?}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(target.join("recovery.signal").is_file() && target.join("PG_VERSION").is_file());
    // A password command goes into the copy's configuration as written: said so.
    let other = s.dir.join("restored-with-command");
    let command = format!("cat {}", s.password_file.display());
    let mut c = s.repo.cmd(["restore", "--until", &until, "--name", "pg", "--password-command", &command, "--target"]);
    let out = c.arg(&other).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: the restore_command in") && err.contains("runs your --password-command"), "{err}");
    let conf = fs::read_to_string(other.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains(&format!("--password-command '{command}'")) || conf.contains(&command), "{conf}");
    eprintln!("PostgreSQL WAL gap checks took {:.1} s", started.elapsed().as_secs_f64());
}

/// Forty nights of bases (ten real pg_basebackup streams, each stored for
/// four nights with `backup --time`) while the server archives its WAL;
/// then `forget --keep-pitr 14d --keep-daily 30 --keep-monthly 12` and two
/// `prune`s across the grace period: the repository shrinks, `check
/// --read-data` passes, and a point-in-time restore to a second inside the
/// window is exact.
#[test]
fn forty_nights_forgotten_and_pruned_still_restore_to_the_second() {
    let s = Setup::new();
    let source = s.source(&format!("{} %p", s.wal_push()), &[]);
    source.psql("postgres", "CREATE TABLE bulk (id bigint PRIMARY KEY, pad text)");
    let streams = postgres_dir(&s.dir.join("streams"));
    let now = now_secs();
    let mut night = 40;
    for real in 0..10i64 {
        // Between nights: a thousand new rows, and a tenth of the old ones rewritten.
        source.psql(
            "postgres",
            &format!(
                "INSERT INTO bulk SELECT g, repeat(md5(random()::text), 20) FROM generate_series({}, {}) g; \
                 UPDATE bulk SET pad = repeat(md5(random()::text), 20) WHERE id % 10 = {real}",
                real * 1000,
                real * 1000 + 999
            ),
        );
        let stream = streams.join(format!("base{real}.tar"));
        let producer = format!(
            "{} -h {} -p {PORT} -D - -Ft -X fetch -c fast > {}",
            pg("pg_basebackup").display(),
            source.sock.display(),
            stream.display()
        );
        let mut c = as_postgres_cmd(Path::new("/bin/sh"));
        c.arg("-c").arg(&producer);
        ok(c, "pg_basebackup");
        for _ in 0..4 {
            let mut c = s.dedupe_as_postgres();
            let cat = format!("cat {}", stream.display());
            c.args(["backup", "--name", "pg", "--time", &local_time(now - night * 86_400), "--command", &cat]);
            ok(c, "dedupe backup");
            night -= 1;
        }
    }
    for id in 1..=3 {
        if id > 1 {
            std::thread::sleep(Duration::from_millis(1100));
        }
        source.insert(id);
    }
    let rows = source.rows();
    let t = rows[1].1.div_euclid(1_000_000);
    let want: Vec<i64> = rows.iter().filter(|r| r.1 < (t + 1) * 1_000_000).map(|r| r.0).collect();
    assert_eq!(want, [1, 2], "commit times {rows:?}, T = {t}");
    source.psql("postgres", "DELETE FROM t");
    source.switch_and_wait_archived();
    drop(source);

    let before = s.repo.size();
    let decided =
        s.repo.json(&["forget", "--name", "pg", "--keep-pitr", "14d", "--keep-daily", "30", "--keep-monthly", "12"]);
    let snaps = decided[0]["snapshots"].as_array().unwrap();
    let kept = snaps.iter().filter(|x| !x["keep"].as_array().unwrap().is_empty()).count();
    assert_eq!(snaps.len(), 40);
    assert!((30..=32).contains(&kept), "30 daily (the window's 15 among them), a monthly or two: {decided}");
    std::thread::sleep(Duration::from_secs(6));
    let first = s.repo.json(&["prune", "--keep-delete", "5s"]);
    assert!(first["packs_marked"].as_u64().unwrap() + first["packs_repacked"].as_u64().unwrap() > 0, "{first}");
    std::thread::sleep(Duration::from_secs(6));
    let second = s.repo.json(&["prune", "--keep-delete", "5s"]);
    assert!(second["packs_deleted"].as_u64().unwrap() > 0, "{second}");
    assert!(s.repo.size() < before, "prune gave space back: {before} -> {}", s.repo.size());
    assert_eq!(s.repo.json(&["check", "--read-data"])["whole"], true);

    let target = s.dir.join("restored");
    let out = s.restore_until(&local_time(t), &target, true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let copy = s.start_promoted(&target);
    assert_eq!(copy.rows().iter().map(|r| r.0).collect::<Vec<_>>(), want, "after forget and prune");
    assert_eq!(copy.psql("postgres", "SELECT count(*) FROM bulk"), "10000");
}

/// `backup --snapshot btrfs` of a running cluster whose data directory is on
/// btrfs over a loop device: taken between pg_backup_start and
/// pg_backup_stop, the label stored in the backup (not in the live data
/// directory), the snapshot gone afterwards; a point-in-time restore from it
/// with the archived WAL is exact.
#[test]
fn a_btrfs_snapshot_backup_of_a_running_cluster_restores_to_a_point_in_time() {
    let s = Setup::new();
    let fs = dedupe_suite::btrfs::Btrfs::new(&s.dir);
    let data = fs.mnt.join("pgdata");
    let source = s.source_at(&data, &format!("{} %p", s.wal_push()), &[]);
    source.psql("postgres", "INSERT INTO t SELECT g, 'before the backup' FROM generate_series(-5000, 0) g");
    let mut backup = s.repo.cmd(["--json", "backup", "--name", "pg", "--snapshot", "btrfs", "--datadir"]);
    backup.arg(&data).arg("--pg-conn").arg(format!("host={} port={PORT} user=postgres", source.sock.display()));
    let out = backup.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "backup --snapshot: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!fs.subvolumes().contains("dedupe-snapshot"), "the snapshot is gone: {}", fs.subvolumes());
    assert!(!data.join("backup_label").exists(), "the label stays out of the live data directory");
    let snaps = s.repo.json(&["snapshots", "--name", "pg"]);
    let meta = &snaps[0]["metadata"];
    assert_eq!((meta["format"].as_str(), meta["database"].as_str()), (Some("directory"), Some("postgresql")), "{meta}");
    assert_eq!(meta["snapshot"]["lock"], "pg_backup_start", "{meta}");
    assert_eq!(meta["postgresql"]["start_wal_file"].as_str().map(str::len), Some(24), "{meta}");
    let listing = String::from_utf8(s.repo.ok(&["ls", "latest", "--name", "pg"])).unwrap();
    assert!(listing.contains("backup_label") && !listing.contains("postmaster.pid"), "{listing}");

    // Rows a second apart; T is row 2's second; then everything deleted.
    for id in 1..=3 {
        std::thread::sleep(Duration::from_millis(1100));
        source.insert(id);
    }
    let rows = source.rows();
    let t = rows.iter().find(|r| r.0 == 2).unwrap().1.div_euclid(1_000_000);
    let want: Vec<i64> = rows.iter().filter(|r| r.1 < (t + 1) * 1_000_000).map(|r| r.0).collect();
    source.psql("postgres", "DELETE FROM t");
    source.switch_and_wait_archived();
    drop(source);

    let target = s.dir.join("restored");
    let until = local_time(t);
    let out = s.restore_until(&until, &target, true);
    assert!(out.status.success(), "restore --until {until}: {}", String::from_utf8_lossy(&out.stderr));
    let copy = s.start_promoted(&target);
    let got: Vec<i64> = copy.rows().iter().map(|r| r.0).collect();
    assert_eq!(got, want, "--until {until}");
}

/// What the archiver of `server` has done: (archived_count, failed_count).
fn archiver(server: &Server) -> (u64, u64) {
    let a = server.psql("postgres", "SELECT archived_count || ' ' || failed_count FROM pg_stat_archiver");
    let (ok, failed) = a.split_once(' ').unwrap_or_else(|| panic!("pg_stat_archiver: {a:?}"));
    (ok.parse().unwrap(), failed.parse().unwrap())
}

/// A copy started on `data` the README's way (plain `pg_ctl start`, the
/// source's archive_command in its postgresql.conf), written to and made
/// to end a WAL segment: it must archive nothing.
fn start_write_and_switch(s: &Setup, data: &Path, what: &str) {
    let sock = postgres_dir(&s.dir.join(format!("sock-{what}")));
    let copy = Server::start(data, &sock, &s.dir.join(format!("logs/{what}.log")));
    let conf = fs::read_to_string(data.join("postgresql.conf")).unwrap();
    assert!(conf.contains("wal push --name pg"), "{what}: the source's archive_command is in the copy's configuration");
    assert_eq!(copy.psql("postgres", "SHOW archive_mode"), "off", "{what}");
    copy.psql("postgres", &format!("INSERT INTO t SELECT g, '{what}' FROM generate_series(1000, 1999) g"));
    copy.psql("postgres", "SELECT pg_switch_wal()");
    copy.psql("postgres", "CHECKPOINT");
    copy.psql("postgres", "SELECT pg_switch_wal()");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(archiver(&copy), (0, 0), "{what} archived");
}

#[test]
fn copies_started_the_readme_way_never_archive_into_their_source() {
    let s = Setup::new();
    let source = s.source(&format!("{} %p", s.wal_push()), &[]);
    source.insert(1);
    s.base_backup(&source);
    source.insert(2);
    source.switch_and_wait_archived();

    // A plain restore, a writable mount and a drill, each on the same
    // timeline as the source, writing WAL of the source's next segments.
    let restored = s.dir.join("restored");
    s.repo.ok(&[
        "restore".as_ref(),
        "latest".as_ref(),
        "--name".as_ref(),
        "pg".as_ref(),
        "--target".as_ref(),
        restored.as_os_str(),
    ]);
    start_write_and_switch(&s, &restored, "restored");
    {
        let m = dedupe_suite::mount::Mounted::writable_at(&s.repo, "latest", s.dir.join("instant"));
        start_write_and_switch(&s, &m.point, "instant");
        let (code, stderr) = m.unmount();
        assert_eq!(code, Some(0), "{stderr}");
    }
    let scratch = postgres_dir(&s.dir.join("scratch"));
    let bin = pg_bin().display().to_string();
    let out = s.repo.run(&[
        "drill".as_ref(),
        "--scratch".as_ref(),
        scratch.as_os_str(),
        "--pg-bin".as_ref(),
        bin.as_ref(),
        "latest".as_ref(),
        "--name".as_ref(),
        "pg".as_ref(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The source archives on as before: none of its segments is taken.
    for id in 3..=5 {
        source.insert(id);
        source.switch_and_wait_archived();
    }
    let rows = source.rows();
    // A time after row 5 and before row 6: a point-in-time restore to it
    // holds exactly the source's rows 1-5, none of the copies'.
    std::thread::sleep(Duration::from_millis(1100));
    let until = local_time(now_secs());
    std::thread::sleep(Duration::from_millis(1100));
    source.insert(6);
    source.switch_and_wait_archived();
    assert_eq!(archiver(&source).1, 0, "the source's archiving failed");
    drop(source);
    let target = s.dir.join("pitr");
    let out = s.restore_until(&until, &target, true);
    assert!(out.status.success(), "restore --until {until}: {}", String::from_utf8_lossy(&out.stderr));
    let copy = s.start_promoted(&target);
    assert_eq!(copy.rows(), rows);
}

#[test]
fn wal_of_another_cluster_is_refused_under_the_same_name() {
    let s = Setup::new();
    let source = s.source(&format!("{} %p", s.wal_push()), &[]);
    source.insert(1);
    s.base_backup(&source);
    // WAL after the backup's own switch, or there is no segment to end.
    source.insert(2);
    source.switch_and_wait_archived();
    let sysid = |server: &Server| server.psql("postgres", "SELECT system_identifier FROM pg_control_system()");
    let ours = sysid(&source);
    drop(source);

    // Another cluster (a new initdb on another host, say) under the same --name.
    let other = s.source_at(&s.dir.join("other"), "/bin/true", &[]);
    let theirs = sysid(&other);
    assert_ne!(ours, theirs);
    let seg = other.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    other.psql("postgres", "SELECT pg_switch_wal()");
    let path = other.data.join("pg_wal").join(&seg);
    let out = s.repo.run(&["wal".as_ref(), "push".as_ref(), "--name".as_ref(), "pg".as_ref(), path.as_os_str()]);
    assert_eq!(out.status.code(), Some(21), "{}", String::from_utf8_lossy(&out.stderr));
    let err = one_line_error(&out);
    assert!(err.contains(&ours) && err.contains(&theirs) && err.contains("--name"), "{err}");
    drop(other);
}
