//! README.md, run as a DBA would run it: every shell block (and the
//! postgresql.conf lines) against throwaway MariaDB, PostgreSQL and S3
//! servers, changing only what the README names as the places to adapt:
//! paths, how the tools reach the servers (`~/.my.cnf`, `PG*` variables, an
//! S3 endpoint), ports and the times. A block that stops working, or a new
//! block no walk runs, fails the test.
//!
//! Blocks run one after another as in a DBA's shell: each with `bash -e -o
//! pipefail`, the `export`s of the blocks before it still in force. Between
//! blocks the test plays the world: rows written, a table dropped, cron
//! pushing binlogs.

use dedupe_suite::mariadb;
use dedupe_suite::postgres::{self, as_postgres, chown_postgres, is_root, ok, pg_tempdir, postgres_dir, PG_BIN};
use dedupe_suite::*;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const README: &str = include_str!("../README.md");

/// Blocks no walk runs, by a line of theirs, and why.
const NOT_RUN: &[(&str, &str)] = &[
    ("scripts/test.sh", "the command that runs this test"),
    ("cargo install", "run by the_first_command_installs_and_backs_up, a step of its own in scripts/test.sh"),
    (
        "systemctl daemon-reload",
        "a test machine runs no systemd: the walk checks the units with systemd-analyze verify and runs their commands",
    ),
];

struct Block {
    lang: String,
    text: String,
    line: usize,
}

/// The fenced blocks of the README, with their language.
fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, l) in README.lines().enumerate() {
        match (&mut open, l.strip_prefix("```")) {
            (None, Some(lang)) => open = Some(Block { lang: lang.trim().into(), text: String::new(), line: i + 1 }),
            (Some(_), Some(_)) => out.push(open.take().unwrap()),
            (Some(b), None) => {
                b.text.push_str(l);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md has an unclosed block");
    out
}

/// The block holding `key`: there must be exactly one.
fn find(blocks: &[Block], key: &str) -> usize {
    let found: Vec<usize> = (0..blocks.len()).filter(|&i| blocks[i].text.contains(key)).collect();
    assert_eq!(found.len(), 1, "README.md should have exactly one block with {key:?}");
    found[0]
}

/// The uid and gid of a system user.
fn user(name: &str) -> (u32, u32) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    assert!(!pw.is_null(), "there is no `{name}` user (scripts/test.sh installs the servers that make it)");
    // SAFETY: non-null, as checked.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// A directory owned by `owner`.
fn dir_of(p: &Path, owner: &str) -> PathBuf {
    fs::create_dir_all(p).unwrap();
    let (uid, gid) = user(owner);
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    p.to_path_buf()
}

/// The README's blocks, run in order in one DBA's environment.
struct Walk {
    blocks: Vec<Block>,
    ran: BTreeSet<usize>,
    /// README text → this machine's, applied in order to every block.
    subs: Vec<(String, String)>,
    env: Vec<(String, String)>,
    /// The `export` lines of the blocks run so far.
    exports: String,
    logs: PathBuf,
}

impl Walk {
    fn new(subs: Vec<(String, String)>, env: Vec<(String, String)>, logs: PathBuf) -> Walk {
        for (from, _) in &subs {
            assert!(README.contains(from.as_str()), "README.md no longer has {from:?}: update tests/readme.rs");
        }
        fs::create_dir_all(&logs).unwrap();
        Walk { blocks: blocks(), ran: BTreeSet::new(), subs, env, exports: String::new(), logs }
    }

    fn text(&self, i: usize, extra: &[(&str, String)]) -> String {
        let mut t = self.blocks[i].text.clone();
        for (from, to) in extra {
            assert!(t.contains(from), "the block at README.md:{} no longer has {from:?}", self.blocks[i].line);
            t = t.replace(from, to);
        }
        for (from, to) in &self.subs {
            t = t.replace(from.as_str(), to);
        }
        t
    }

    /// The block holding `key`, with `extra` replacements first, as a DBA
    /// would paste it; `stdin` is what they type.
    fn sh(&mut self, key: &str, extra: &[(&str, String)], stdin: &str) -> String {
        let i = find(&self.blocks, key);
        assert_eq!(self.blocks[i].lang, "sh", "README.md:{}", self.blocks[i].line);
        let text = self.text(i, extra);
        self.ran.insert(i);
        let out = self.bash(
            &format!("{}{text}", self.exports),
            stdin,
            &format!("block at README.md:{}", self.blocks[i].line),
        );
        for l in text.lines().filter(|l| l.starts_with("export ")) {
            self.exports.push_str(l);
            self.exports.push('\n');
        }
        out
    }

    /// The non-shell block holding `key`, substituted.
    fn conf(&mut self, key: &str) -> String {
        let i = find(&self.blocks, key);
        self.ran.insert(i);
        self.text(i, &[])
    }

    /// What the test does itself in the same environment (cron, checks).
    fn bash(&self, script: &str, stdin: &str, what: &str) -> String {
        let n = fs::read_dir(&self.logs).unwrap().count();
        let (out_path, err_path) = (self.logs.join(format!("{n}.out")), self.logs.join(format!("{n}.err")));
        // Files, not pipes: a server started with `&` keeps its inherited
        // descriptors, and a pipe would wait for it to exit.
        let mut child = Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", script])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.logs)
            .stdin(Stdio::piped())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let status = child.wait().unwrap();
        let out = fs::read_to_string(&out_path).unwrap_or_default();
        let err = fs::read_to_string(&err_path).unwrap_or_default();
        assert!(
            status.success(),
            "{what} failed ({status}):\n--- script ---\n{script}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
        );
        out
    }

    /// `dedupe --json ARGS` in the walk's environment.
    fn json(&self, args: &str) -> serde_json::Value {
        let out = self.bash(&format!("{}dedupe --json {args}", self.exports), "", args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("dedupe --json {args}: {e}: {out}"))
    }

    /// Every block was run, or is listed in NOT_RUN.
    fn all_ran(&self) {
        for (i, b) in self.blocks.iter().enumerate() {
            let excused = NOT_RUN.iter().any(|(key, _)| b.text.contains(key));
            assert!(
                self.ran.contains(&i) || excused,
                "the block at README.md:{} is run by no test:\n{}",
                b.line,
                b.text
            );
        }
    }
}

/// A PostgreSQL cluster as the suite makes them, its socket in `sock`.
fn postgres_source(dir: &Path) -> (PathBuf, PathBuf) {
    let data = postgres_dir(&dir.join("pg-data"));
    let sock = postgres_dir(&dir.join("pg-sock"));
    postgres_dir(&dir.join("pg-logs"));
    let mut initdb = as_postgres("initdb");
    initdb.arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "--locale=C", "-E", "UTF8"]);
    ok(initdb, "initdb");
    (data, sock)
}

fn psql(sock: &Path, port: u16, sql: &str) -> String {
    let mut c = as_postgres("psql");
    c.arg("-h").arg(sock).args(["-p", &port.to_string(), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"]);
    c.args(["-d", "postgres", "-U", "postgres", "-c", sql]);
    ok(c, sql).trim().to_string()
}

/// CHECKSUM TABLE of sbtest.sbtest1 on the server at `socket`.
fn checksum(socket: &Path) -> String {
    let out = Command::new("mariadb")
        .arg("--no-defaults")
        .arg(format!("--socket={}", socket.display()))
        .args(["-uroot", "-N", "-B", "-e", "CHECKSUM TABLE sbtest.sbtest1 EXTENDED"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Stops a PostgreSQL started by a README block, whatever happens to the test.
struct StopPostgres(PathBuf);

impl Drop for StopPostgres {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl").arg("-D").arg(&self.0).args(["-m", "immediate", "stop"]).output();
    }
}

/// Stops a MariaDB started by a README block.
struct StopMariadb(PathBuf);

impl Drop for StopMariadb {
    fn drop(&mut self) {
        let _ = Command::new("mariadb-admin")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.0.display()))
            .args(["-uroot", "shutdown"])
            .output();
    }
}

#[test]
fn every_walkthrough_runs_as_written() {
    assert!(is_root(), "the README's walk-throughs run as root (runuser, chown): run scripts/test.sh as root");
    let _serial = mariadb::serial();
    let tmp = pg_tempdir();
    let t = tmp.path();
    let bin = dir_of(&t.join("bin"), "root");
    std::os::unix::fs::symlink(dedupe_bin(), bin.join("dedupe")).unwrap();

    // The servers, and what a DBA would have: a backup user, a table.
    let my = mariadb::Server::init(&t.join("mariadb"));
    my.sql("CREATE USER backup@localhost; GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR, SELECT ON *.* TO backup@localhost");
    my.sql("CREATE DATABASE sbtest; CREATE TABLE sbtest.sbtest1 (id INT PRIMARY KEY AUTO_INCREMENT, k INT, c CHAR(120)) ENGINE=InnoDB");
    let insert = "INSERT INTO sbtest.sbtest1 (k, c) SELECT seq, repeat(md5(seq), 3) FROM sbtest.seq_1_to_2000";
    my.sql(insert);
    // As a server that has run a while: past a checkpoint, so mariabackup
    // streams the table as its .ibd (a table created since the last
    // checkpoint comes as a .new that --prepare renames).
    let datadir = my.datadir.clone();
    drop(my);
    let my = mariadb::Server::start(&t.join("mariadb"), &datadir);
    let (pg_data, pg_sock) = postgres_source(t);
    let mut pg = Some(postgres::Server::start(&pg_data, &pg_sock, &t.join("pg-logs/src.log")));
    let s3 = s3::Server::start(&t.join("s3"), mariadb::free_port());
    for bucket in ["backups", "offsite"] {
        fs::create_dir_all(t.join("s3").join(bucket)).unwrap();
    }
    let snapshot = t.join("snapshot");
    fs::create_dir_all(snapshot.join("sbtest")).unwrap();
    fs::write(snapshot.join("ibdata1"), Prng::new(1).bytes(1 << 20)).unwrap();
    fs::write(snapshot.join("sbtest/t.ibd"), Prng::new(2).bytes(1 << 18)).unwrap();
    let home = dir_of(&t.join("home"), "root");
    fs::write(home.join(".my.cnf"), format!("[client]\nsocket={}\n", my.socket.display())).unwrap();
    let run_mysqld = dir_of(&t.join("run-mysqld"), "mysql");
    let (my_port, pg_port) = (mariadb::free_port(), mariadb::free_port());

    let subs: Vec<(String, String)> = [
        ("/var/lib/postgresql/15/pitr.log", t.join("pg-logs/pitr.log")),
        ("/var/lib/postgresql/15/pitr", t.join("pg-pitr")),
        ("/var/lib/postgresql/15/restore", t.join("pg-restore")),
        ("/var/lib/mysql-pitr.log", t.join("mysql-pitr.log")),
        ("/var/lib/mysql-pitr", t.join("mysql-pitr")),
        ("/var/lib/mysql-restore", t.join("mysql-restore")),
        ("/var/lib/mysql-instant.log", t.join("mysql-instant.log")),
        ("/srv/instant", t.join("instant")),
        ("/mnt/backups", t.join("mnt-backups")),
        ("/var/lib/mysql", my.datadir.clone()),
        ("/run/mysqld", run_mysqld.clone()),
        ("/var/backups/dedupe", t.join("repo")),
        ("/etc/dedupe", t.join("etc-dedupe")),
        ("/var/tmp/mb", t.join("mb")),
        ("/mnt/mysql-snapshot", snapshot.clone()),
        ("/tmp/one-table", t.join("one-table")),
        (" /restore", PathBuf::from(format!(" {}", t.join("stream-restore").display()))),
        ("/usr/local/bin/dedupe", dedupe_bin()),
        ("/usr/lib/postgresql/15/bin", PathBuf::from(PG_BIN)),
        ("/etc/bash_completion.d/dedupe", t.join("completion-dedupe")),
        ("/var/lib/prometheus/node-exporter/dedupe.prom", t.join("dedupe.prom")),
        ("/usr/local/share/man/man1", t.join("man1")),
    ]
    .into_iter()
    .map(|(from, to)| (from.to_string(), to.display().to_string()))
    .chain([
        ("--port=3307".to_string(), format!("--port={my_port}")),
        ("--port=3308".to_string(), format!("--port={}", mariadb::free_port())),
        ("-p 5433".to_string(), format!("-p {pg_port}")),
    ])
    .collect();
    fs::create_dir_all(t.join("man1")).unwrap();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", bin.display())),
        ("HOME".into(), home.display().to_string()),
        ("LC_ALL".into(), "C".into()),
        ("PGHOST".into(), pg_sock.display().to_string()),
        ("PGPORT".into(), postgres::PORT.to_string()),
        ("PGUSER".into(), "postgres".into()),
        // The suite's cheap Argon2id, for the repositories the blocks create.
        ("DEDUPE_KDF_MEMORY_KIB".into(), "1024".into()),
    ];
    env.extend(s3.env().into_iter().filter(|(k, _)| *k != "AWS_REGION").map(|(k, v)| (k.to_string(), v)));
    let mut walk = Walk::new(subs, env, t.join("logs"));

    // What the first command did: a repository, the password typed at init.
    walk.bash(&format!("DEDUPE_PASSWORD='{PASSWORD}' dedupe --repo {} init", t.join("repo").display()), "", "init");
    let typed = format!("{PASSWORD}\n");

    // Back up.
    walk.sh("dedupe backup --name db2 /mnt/mysql-snapshot", &[], &typed);
    let snaps = walk.json("snapshots");
    let kinds: Vec<(String, String)> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().into(), s["metadata"]["format"].as_str().unwrap().into()))
        .collect();
    let want = [("db1", "xbstream"), ("pg1", "tar"), ("db2", "directory"), ("db3", "mysqldump")];
    assert_eq!(kinds, want.map(|(n, f)| (n.to_string(), f.to_string())), "{snaps}");
    let mode = fs::metadata(t.join("etc-dedupe/password")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the password file is root's alone");

    // Restore.
    walk.sh("--target /var/lib/mysql-restore --prepare", &[], "");
    assert!(t.join("mysql-restore/ibdata1").is_file() && t.join("mysql-restore/sbtest/sbtest1.ibd").is_file());
    let owner = fs::metadata(t.join("mysql-restore/ibdata1")).unwrap();
    assert_eq!((owner.uid(), owner.gid()), user("mysql"));
    assert!(t.join("pg-restore/PG_VERSION").is_file() && t.join("pg-restore/global/pg_control").is_file());
    assert!(t.join("one-table/sbtest/sbtest1.ibd").is_file() || t.join("one-table/sbtest1.ibd").is_file());
    assert!(t.join("stream-restore/xtrabackup_checkpoints").is_file());

    // Browse, then start last Tuesday's backup on a writable mount.
    let listed = walk.sh("dedupe mount /mnt/backups", &[], "");
    assert!(listed.contains("latest") && listed.contains("sbtest1.ibd"), "{listed}");
    let db1 = snaps[0]["id"].as_str().unwrap().to_string();
    let queried = walk.sh("--writable", &[("4f2a9c01", db1)], "");
    assert!(queried.contains("2000"), "the table as it was backed up: {queried}");
    // The mount's process removes it once fusermount3 has unmounted.
    let gone = Instant::now();
    while t.join("instant.overlay").exists() {
        assert!(gone.elapsed() < Duration::from_secs(30), "the overlay goes with the mount");
        std::thread::sleep(Duration::from_millis(100));
    }

    // MariaDB point in time: the nightly routine, then the world goes on.
    walk.sh("dedupe binlog push --name db1 --binlog-dir /var/lib/mysql", &[], "");
    my.sql(insert);
    let until = next_second(0.3);
    my.sql("UPDATE sbtest.sbtest1 SET k = k + 1 WHERE id % 7 = 0");
    let before_drop = checksum(&my.socket);
    next_second(0.3);
    my.sql("DROP TABLE sbtest.sbtest1");
    my.sql("FLUSH BINARY LOGS");
    // cron, a minute later
    walk.bash(
        &format!("{}dedupe binlog push --name db1 --binlog-dir {}", walk.exports, my.datadir.display()),
        "",
        "cron's binlog push",
    );
    // `binlog replay | head` ends quietly (the SQL is far more than a pipe holds).
    let cut = walk.bash(
        &format!(
            "{}set +e +o pipefail\n\
             dedupe binlog replay --name db1 --target {} --until '{}' 2>{} | head -c 100 >/dev/null\n\
             echo ${{PIPESTATUS[0]}}",
            walk.exports,
            t.join("mysql-restore").display(),
            local_time(until),
            t.join("replay.err").display()
        ),
        "",
        "binlog replay | head",
    );
    eprintln!("binlog replay | head: exit {}", cut.trim());
    assert!(["141", "0"].contains(&cut.trim()), "binlog replay | head: exit {cut}");
    assert_eq!(fs::read_to_string(t.join("replay.err")).unwrap(), "", "binlog replay | head says nothing");
    let stop = StopMariadb(run_mysqld.join("pitr.sock"));
    walk.sh("mariadb-admin --socket=/run/mysqld/pitr.sock", &[("2026-11-21 12:54:23", local_time(until))], "");
    let restored = checksum(&run_mysqld.join("pitr.sock"));
    assert_eq!(restored, before_drop, "the table as it was at the end of {}", local_time(until));
    drop(stop);

    // PostgreSQL point in time: archiving set up as the README says.
    walk.sh("chown -R postgres: /var/backups/dedupe /etc/dedupe/password", &[], "");
    let conf = walk.conf("archive_command = '/usr/local/bin/dedupe");
    let mut pc = fs::OpenOptions::new().append(true).open(pg_data.join("postgresql.conf")).unwrap();
    std::io::Write::write_all(&mut pc, format!("\n{conf}").as_bytes()).unwrap();
    drop(pc);
    drop(pg.take());
    let pg = postgres::Server::start(&pg_data, &pg_sock, &t.join("pg-logs/src.log"));
    // The server's dedupe keeps its cache in its user's home: removed at the end.
    let repo_id = serde_json::from_slice::<serde_json::Value>(&fs::read(t.join("repo/config")).unwrap()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let _cache = RemoveOnDrop(postgres::postgres_user().2.join(".cache/dedupe").join(&repo_id));
    pg.psql("postgres", "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint)");
    pg.psql("postgres", "INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 1000) g");
    walk.sh("dedupe backup --name pg1 --command 'pg_basebackup -D - -Ft -X fetch -c fast'   # once a night", &[], "");
    pg.psql("postgres", "UPDATE accounts SET balance = balance + id WHERE id <= 500");
    let until = next_second(0.3);
    let good = pg.psql("postgres", "SELECT sum(balance) FROM accounts");
    next_second(0.3);
    pg.psql("postgres", "UPDATE accounts SET balance = 0");
    let segment = pg.psql("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())");
    pg.psql("postgres", "SELECT pg_switch_wal()");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg.psql("postgres", "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < segment {
        assert!(Instant::now() < deadline, "{segment} was not archived in 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    chown_postgres(&t.join("pg-logs"));
    let _stop = StopPostgres(t.join("pg-pitr"));
    walk.sh(
        "runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl",
        &[("2026-11-21 12:54:23", local_time(until))],
        "",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let copy_sock = Path::new("/var/run/postgresql");
    while psql(copy_sock, pg_port, "SELECT pg_is_in_recovery()") != "f" {
        assert!(Instant::now() < deadline, "the copy is still recovering after 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        psql(copy_sock, pg_port, "SELECT sum(balance) FROM accounts"),
        good,
        "the rows at {}",
        local_time(until)
    );

    // Run it every night: the units' environment files, then each unit's
    // command as systemd runs it (no systemd here), then a drill by hand.
    walk.sh("cat > /etc/dedupe/dedupe.env", &[], "");
    run_units(&walk, t);
    let prom = fs::read_to_string(t.join("dedupe.prom")).unwrap();
    for series in [
        "dedupe_backup_last_success_timestamp_seconds{name=\"db1\"}",
        "dedupe_log_last_push_timestamp_seconds{name=\"db1\",kind=\"binlog\"}",
        "dedupe_drill_success{name=\"db1\"} 1",
    ] {
        assert!(prom.contains(series), "{series} in the metrics file:\n{prom}");
    }
    let drilled = walk.sh("dedupe drill latest --name db1", &[], "");
    assert!(drilled.contains("passed"), "{drilled}");

    // Object storage, the offsite copy, retention, check and repair, help.
    walk.sh("export DEDUPE_REPO=s3://backups/db1", &[], "");
    walk.sh("dedupe init --repo s3://offsite/db1", &[], "another password\n");
    let copied = walk.json(&format!(
        "--repo s3://offsite/db1 --password-file {} snapshots --name db1",
        t.join("etc-dedupe/offsite-password").display()
    ));
    assert_eq!(
        copied.as_array().unwrap().len(),
        3,
        "db1's three backups (the nightly unit's too) are offsite: {copied}"
    );
    walk.sh("dedupe forget --name db1 --keep-pitr 14d", &[], "");
    walk.sh("dedupe prune ", &[], "");
    walk.sh("dedupe check --read-data-subset 1/7", &[], "");
    walk.sh("dedupe repair snapshots --forget", &[], "");
    walk.sh("dedupe completion bash", &[], "");
    assert!(fs::read_to_string(t.join("completion-dedupe")).unwrap().contains("keep-pitr"));
    assert!(fs::read_to_string(t.join("man1/dedupe-backup.1")).unwrap().contains(".TH dedupe-backup 1"));
    walk.all_ran();
    drop(pg);
}

/// The units of contrib/systemd as far as a machine without systemd
/// allows: `systemd-analyze verify` on their db1 instances (when it is
/// installed), then each service's ExecStart run as systemd would run it:
/// `%i` the instance, `${VAR}` one word from its EnvironmentFiles (the
/// walk's /etc/dedupe), no shell.
fn run_units(walk: &Walk, t: &Path) {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let etc = t.join("etc-dedupe");
    let mut env: Vec<(String, String)> = walk.env.clone();
    for file in ["dedupe.env", "db1.env"] {
        for line in fs::read_to_string(etc.join(file)).unwrap().lines() {
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{file}: {line}"));
            env.push((k.to_string(), v.trim_matches('\'').to_string()));
        }
    }
    let lookup = |k: &str| env.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let verify = t.join("units");
    fs::create_dir_all(&verify).unwrap();
    let mut services = Vec::new();
    for e in fs::read_dir(&units).unwrap() {
        let p = e.unwrap().path();
        let text = fs::read_to_string(&p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().replace("@.", "@db1.");
        let local = text
            .replace("/usr/local/bin/dedupe", &dedupe_bin().display().to_string())
            .replace("/etc/dedupe/", &format!("{}/", etc.display()));
        fs::write(verify.join(&name), local).unwrap();
        if name.ends_with(".service") {
            services.push((name, text));
        }
    }
    services.sort();
    if Command::new("systemd-analyze").arg("--version").output().is_ok() {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(fs::read_dir(&verify).unwrap().map(|e| e.unwrap().path()))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    }
    assert_eq!(services.len(), 3, "backup, binlog push, drill");
    for (name, text) in services {
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap_or_else(|| panic!("{name}"));
        let words: Vec<String> = exec
            .split_whitespace()
            .map(|w| match w.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
                Some(var) => lookup(var).unwrap_or_else(|| panic!("{name}: {var} is in no environment file")),
                None => w.replace("%i", "db1").replace("/usr/local/bin/dedupe", &dedupe_bin().display().to_string()),
            })
            .collect();
        let out = Command::new(&words[0])
            .args(&words[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {words:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Removes a directory at the end, whatever happens.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The first command of the README, exactly: `cargo install` into a
/// temporary root (a build of its own, minutes), `dedupe init` with the
/// password from `DEDUPE_PASSWORD`, and a first mariabackup backup. The
/// installed binary is the one a DBA gets, without the suite's cheap
/// Argon2id: it refuses to go below the floor.
#[test]
#[ignore = "builds dedupe again with cargo install: scripts/test.sh runs it as a step of its own"]
fn the_first_command_installs_and_backs_up() {
    let _serial = mariadb::serial();
    let tmp = pg_tempdir();
    let t = tmp.path();
    let my = mariadb::Server::init(&t.join("mariadb"));
    let home = dir_of(&t.join("home"), &whoami());
    fs::write(home.join(".my.cnf"), format!("[client]\nsocket={}\n", my.socket.display())).unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let real_home = std::env::var("HOME").unwrap();
    let var = |k: &str, default: String| std::env::var(k).unwrap_or(default);
    let env: Vec<(String, String)> = vec![
        ("PATH".into(), format!("{}:{}", t.join("root/bin").display(), std::env::var("PATH").unwrap())),
        ("HOME".into(), home.display().to_string()),
        ("CARGO_HOME".into(), var("CARGO_HOME", format!("{real_home}/.cargo"))),
        ("RUSTUP_HOME".into(), var("RUSTUP_HOME", format!("{real_home}/.rustup"))),
        // Its own build directory: the suite's binary must stay as it is.
        ("CARGO_TARGET_DIR".into(), workspace.join("target/readme-install").display().to_string()),
        ("DEDUPE_PASSWORD".into(), PASSWORD.into()),
    ];
    let subs = [
        ("--root /usr/local", format!("--root {}", t.join("root").display())),
        ("/var/backups/dedupe", t.join("repo").display().to_string()),
        ("/var/tmp/mb", t.join("mb").display().to_string()),
    ]
    .map(|(a, b)| (a.to_string(), b))
    .to_vec();
    let mut walk = Walk::new(subs, env, t.join("logs"));
    let i = find(&walk.blocks, "cargo install");
    let script = format!("cd {}\n{}", workspace.display(), walk.text(i, &[]));
    walk.ran.insert(i);
    walk.bash(&script, "", "the first command");
    let installed = t.join("root/bin/dedupe");
    let out = Command::new(&installed)
        .args(["--json", "--repo"])
        .arg(t.join("repo"))
        .arg("snapshots")
        .env("DEDUPE_PASSWORD", PASSWORD)
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps[0]["name"], "db1", "{snaps}");
    assert_eq!(snaps[0]["metadata"]["format"], "xbstream", "{snaps}");
    // Outside the suite's build, no variable lowers Argon2id below the floor.
    let out = Command::new(&installed)
        .args(["--repo"])
        .arg(t.join("another"))
        .arg("init")
        .env("DEDUPE_PASSWORD", PASSWORD)
        .env("DEDUPE_KDF_MEMORY_KIB", "1024")
        .env("HOME", &home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("below the floor"));
    assert!(!t.join("another").exists(), "refused before anything was created");
}

fn whoami() -> String {
    // SAFETY: getpwuid of our own uid; the name is copied at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
    }
}
