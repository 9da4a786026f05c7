//! `dedupe drill`: real MariaDB and PostgreSQL backups restored into a
//! scratch directory, a throwaway server started on each and every table
//! checked. Good backups pass; a repository object damaged after the
//! backup fails the restore (exit 7, naming the pack); a data directory
//! with a corrupted page fails the check (exit 20, naming the table).

use dedupe_suite::mariadb::{serial, Server};
use dedupe_suite::postgres::{pg_bin, pg_tempdir, postgres_dir, Pg, Server as PgServer, PORT};
use dedupe_suite::*;
use std::path::{Path, PathBuf};
use std::process::Output;

const CORRUPT: i32 = 7;
const DRILL_FAILED: i32 = 20;
const WRONG_VERSION: i32 = 22;

/// `drill --json` with its scratch space in `scratch` and its metrics in `drill.prom` beside the repository.
fn drill(repo: &Repo, scratch: &Path, args: &[&str]) -> Output {
    let mut c = repo.cmd(["--json", "drill", "--scratch"]);
    c.arg(scratch).arg("--metrics-file").arg(repo.scratch("drill.prom")).args(args);
    c.output().unwrap()
}

/// The metrics file's sample for `series` (exactly as written).
fn metric(repo: &Repo, series: &str) -> Option<f64> {
    let text = std::fs::read_to_string(repo.scratch("drill.prom")).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn leftovers(scratch: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(scratch).unwrap().map(|e| e.unwrap().path()).collect()
}

/// Flips bytes in the middle of the `n`th 16 KiB page of `file` (a data page, not the header).
fn corrupt_page(file: &Path, page: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(file).unwrap();
    let mut buf = [0u8; 64];
    let at = page * 16384 + 4000;
    f.read_exact_at(&mut buf, at).unwrap();
    for b in &mut buf {
        *b ^= 0x5a;
    }
    f.write_all_at(&buf, at).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn mariadb_drills_pass_on_good_backups_and_fail_on_damage() {
    let _serial = serial();
    let repo = Repo::new();
    let work = repo.scratch("work");
    let scratch = repo.scratch("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let src = Server::init(&work.join("src"));
    src.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY AUTO_INCREMENT, note VARCHAR(200)) ENGINE=InnoDB");
    src.sql("INSERT INTO shop.t (note) SELECT REPEAT(MD5(seq), 6) FROM shop.seq_1_to_20000");
    repo.ok(&["backup", "--name", "m", "--command", &src.backup_command(&work.join("mbtmp"), 1)]);

    // A good backup: restored, prepared, started, every table checked.
    let out = drill(&repo, &scratch, &["latest", "--name", "m"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["tables_checked"].as_u64().unwrap() >= 30, "shop.t and the system tables: {r}");
    assert!(r["restore_seconds"].as_f64().unwrap() > 0.0 && r["start_seconds"].as_f64().unwrap() > 0.0, "{r}");
    assert!(leftovers(&scratch).is_empty(), "the scratch copy is removed");
    assert_eq!(metric(&repo, "dedupe_drill_success{name=\"m\"}"), Some(1.0));
    // Kept in the repository: `snapshots` shows the drill.
    let snaps = repo.json(&["snapshots", "--name", "m"]);
    assert_eq!(snaps[0]["drills"][0]["ok"], true, "{snaps}");
    assert_eq!(snaps[0]["drills"][0]["tables_checked"], r["tables_checked"], "{snaps}");
    let listed = String::from_utf8(repo.ok(&["snapshots", "--name", "m"])).unwrap();
    assert!(listed.contains("drilled") && listed.contains("passed"), "{listed}");
    assert_eq!(metric(&repo, "dedupe_drill_tables_checked{name=\"m\"}"), r["tables_checked"].as_f64());

    // A point in time: the binlogs pushed, then replayed into the drill's server.
    let push = |s: &Server| s.push_binlogs(&repo, "m");
    push(&src);
    src.sql("INSERT INTO shop.t (note) VALUES ('after the backup')");
    let t = next_second(0.2);
    src.sql("FLUSH BINARY LOGS");
    push(&src);
    let out = drill(&repo, &scratch, &["--until", &local_time(t - 1), "--name", "m"]);
    assert!(out.status.success(), "drill --until: {}", String::from_utf8_lossy(&out.stderr));
    // The drill replays the binlogs itself: restore's advice to do so is not shown.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("next:"), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["until"], local_time(t - 1), "{r}");

    // A data directory with a corrupted page of shop.t, backed up as a directory.
    drop(src);
    corrupt_page(&work.join("src/data/shop/t.ibd"), 4);
    repo.ok(&["backup".as_ref(), "--name".as_ref(), "damaged".as_ref(), work.join("src/data").as_os_str()]);
    let out = drill(&repo, &scratch, &["latest", "--name", "damaged"]);
    assert_eq!(out.status.code(), Some(DRILL_FAILED), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], false, "{r}");
    let err = one_line_error(&out);
    assert!(err.contains("shop") && err.contains('t'), "names the table: {err}");
    assert!(leftovers(&scratch).is_empty(), "the scratch copy is removed after a failure too");
    assert_eq!(metric(&repo, "dedupe_drill_success{name=\"damaged\"}"), Some(0.0));
    assert_eq!(metric(&repo, "dedupe_drill_success{name=\"m\"}"), Some(1.0), "another name's result stays");

    // The good backup's pack damaged after the backup: the restore fails, naming it.
    let pack = repo.packs().into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&pack, bytes).unwrap();
    let first = repo.json(&["snapshots", "--name", "m"])[0]["id"].as_str().unwrap().to_string();
    let out = drill(&repo, &scratch, &[&first]);
    assert_eq!(out.status.code(), Some(CORRUPT), "{}", String::from_utf8_lossy(&out.stderr));
    let leaf = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(one_line_error(&out).contains(&leaf[..16]), "names the pack: {}", one_line_error(&out));
    assert!(leftovers(&scratch).is_empty());
    let snaps = repo.json(&["snapshots", "--name", "m"]);
    let last = &snaps[0]["drills"][2];
    assert_eq!(last["ok"], false, "{snaps}");
    assert!(last["error"].as_str().unwrap().contains(&leaf[..16]), "{snaps}");

    // Forgetting a snapshot forgets its drills.
    let drills_dir = repo.path.join("drills");
    assert_eq!(std::fs::read_dir(&drills_dir).unwrap().count(), 4, "three drills of m, one of damaged");
    std::fs::create_dir_all(work.join("later")).unwrap();
    repo.ok(&["backup".as_ref(), "--name".as_ref(), "m".as_ref(), work.join("later").as_os_str()]);
    repo.ok(&["forget", "--name", "m", "--keep-last", "1"]);
    assert_eq!(std::fs::read_dir(&drills_dir).unwrap().count(), 1, "the damaged one's stays");
}

#[test]
fn postgresql_drills_pass_on_a_good_base_backup_and_fail_on_a_corrupted_page() {
    let repo = Repo::new();
    let tmp = pg_tempdir();
    let t = tmp.path();
    let (src, logs, sock) =
        (postgres_dir(&t.join("src")), postgres_dir(&t.join("logs")), postgres_dir(&t.join("sock")));
    let scratch = postgres_dir(&t.join("scratch"));
    Pg::under_test().initdb(&src, "");
    let source = PgServer::start(&src, &sock, &logs.join("src.log"));
    source.psql("postgres", "CREATE DATABASE shop");
    source.psql("shop", "CREATE TABLE notes AS SELECT g AS id, md5(g::text) || repeat('x', 100) AS body FROM generate_series(1, 20000) g");
    let producer = dedupe_suite::postgres::as_postgres_shell(
        "pg_basebackup",
        &format!("-h {} -p {PORT} -D - -Ft -X fetch -c fast", sock.display()),
    );
    repo.ok(&["backup", "--name", "pg", "--command", &producer]);

    let pg_bin = pg_bin().display().to_string();
    let out = drill(&repo, &scratch, &["--pg-bin", &pg_bin, "latest", "--name", "pg"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["tables_checked"].as_u64().unwrap() >= 1, "{r}");
    assert!(leftovers(&scratch).is_empty());

    // The cluster stopped, a heap page of `notes` corrupted, the directory backed up.
    let rel = source.psql("shop", "SELECT pg_relation_filepath('notes')");
    source.psql("shop", "CHECKPOINT");
    drop(source);
    corrupt_page(&src.join(rel), 1);
    repo.ok(&["backup".as_ref(), "--name".as_ref(), "pg-damaged".as_ref(), src.as_os_str()]);
    let out = drill(&repo, &scratch, &["--pg-bin", &pg_bin, "latest", "--name", "pg-damaged"]);
    assert_eq!(out.status.code(), Some(DRILL_FAILED), "{}", String::from_utf8_lossy(&out.stderr));
    let err = one_line_error(&out);
    assert!(err.contains("shop"), "names the database and what failed: {err}");
    assert!(leftovers(&scratch).is_empty());
}

/// A host with PostgreSQL 15 first on PATH (as Debian's packages and
/// /usr/local/bin links leave it) and 18's programs elsewhere, as a build
/// of its own or a package's tree has them.
#[test]
fn a_drill_of_postgresql_18_data_finds_its_programs_or_refuses_naming_both_versions() {
    let (pg18, pg15) = (Pg::of(18), Pg::of(15));
    let repo = Repo::new();
    let tmp = pg_tempdir();
    let t = tmp.path();
    let (src, logs, sock) =
        (postgres_dir(&t.join("src")), postgres_dir(&t.join("logs")), postgres_dir(&t.join("sock")));
    let scratch = postgres_dir(&t.join("scratch"));
    pg18.initdb(&src, "");
    let source = PgServer::start_on(pg18.clone(), &src, &sock, &logs.join("src.log"), &[]);
    source.psql("postgres", "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g");
    let producer = pg18.shell("pg_basebackup", &format!("-h {} -p {PORT} -D - -Ft -X fetch -c fast", sock.display()));
    repo.ok(&["backup", "--name", "pg18", "--command", &producer]);
    drop(source);
    let snaps = repo.json(&["snapshots", "--name", "pg18"]);
    assert_eq!(snaps[0]["metadata"]["postgresql"]["version"], 18, "{snaps}");

    // PATH leads to 15's pg_ctl first.
    let first = t.join("path");
    std::fs::create_dir_all(&first).unwrap();
    std::os::unix::fs::symlink(pg15.path("pg_ctl"), first.join("pg_ctl")).unwrap();
    let path = format!("{}:{}", first.display(), std::env::var("PATH").unwrap_or_default());
    let run = |extra: &[&str], env: Option<&Path>| {
        let mut c = repo.cmd(["--json", "drill", "--scratch"]);
        c.arg(&scratch).args(extra).args(["latest", "--name", "pg18"]).env("PATH", &path);
        if let Some(bin) = env {
            c.env("DEDUPE_PG_BIN", bin);
        }
        c.output().unwrap()
    };
    let out = run(&[], None);
    assert_eq!(out.status.code(), Some(WRONG_VERSION), "{}", String::from_utf8_lossy(&out.stderr));
    let err = one_line_error(&out);
    assert!(err.contains("PostgreSQL 18") && err.contains("PostgreSQL 15") && err.contains("--pg-bin"), "{err}");
    assert!(leftovers(&scratch).is_empty());
    // Refused before anything ran: no drill is recorded against the backup.
    assert!(repo.json(&["snapshots", "--name", "pg18"])[0]
        .get("drills")
        .is_none_or(|d| d.as_array().is_some_and(|d| d.is_empty())));

    // Told where 18's programs are, by option or by environment: it passes.
    let bin = pg18.bin.display().to_string();
    let out = run(&["--pg-bin", &bin], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&[], Some(&pg18.bin));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert!(leftovers(&scratch).is_empty());
}
