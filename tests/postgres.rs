//! A real PostgreSQL 15 server backed up with `pg_basebackup -Ft -D -` run by
//! `dedupe backup --command`, restored, and started again: every table must
//! read back the same. Needs the server binaries in /usr/lib/postgresql/15/bin
//! (Debian's postgresql-15); as root the server tools run as `postgres`.
//!
//! Servers come from `dedupe_suite::postgres`: socket-only, stopped on drop.

use dedupe_suite::postgres::{as_postgres, as_postgres_shell, ok, pg_tempdir, postgres_dir, Pg, Server, PORT};
use dedupe_suite::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const PRODUCER_FAILED: i32 = 14;

/// Content and metadata of everything below `root` (not `root` itself).
#[derive(Debug, PartialEq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    link: Option<PathBuf>,
}

fn scan(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "other"
            };
            let link = ft.is_symlink().then(|| fs::read_link(&p).unwrap());
            let mode = if ft.is_symlink() { 0 } else { m.mode() & 0o7777 };
            let entry = Entry { kind, mode, uid: m.uid(), gid: m.gid(), mtime: m.mtime(), link };
            out.insert(p.strip_prefix(root).unwrap().to_path_buf(), entry);
            if ft.is_dir() {
                go(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, root, &mut out);
    out
}

/// Asserts the two trees hold the same entries with the same bytes and metadata.
fn assert_same_tree(a: &Path, b: &Path) {
    assert_same_tree_but(a, b, None)
}

/// The same, but for the top-level file `except`, present in both.
fn assert_same_tree_but(a: &Path, b: &Path, except: Option<&str>) {
    let (mut ta, mut tb) = (scan(a), scan(b));
    if let Some(e) = except {
        assert!(ta.remove(Path::new(e)).is_some() && tb.remove(Path::new(e)).is_some(), "{e} is not in both");
    }
    let only_a: Vec<_> = ta.keys().filter(|k| !tb.contains_key(*k)).collect();
    let only_b: Vec<_> = tb.keys().filter(|k| !ta.contains_key(*k)).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "only in {}: {only_a:?}; only in {}: {only_b:?}",
        a.display(),
        b.display()
    );
    let mut files = 0;
    for (rel, ea) in &ta {
        let eb = &tb[rel];
        assert_eq!(ea, eb, "{} differs", rel.display());
        if ea.kind == "file" {
            let (ca, cb) = (fs::read(a.join(rel)).unwrap(), fs::read(b.join(rel)).unwrap());
            assert!(ca == cb, "{} differs: {} bytes against {}", rel.display(), ca.len(), cb.len());
            files += 1;
        }
    }
    assert!(files > 100, "only {files} files compared");
}

#[test]
fn pg_basebackup_roundtrip_gives_identical_tables() {
    let started = std::time::Instant::now();
    let repo = Repo::new();
    let tmp = pg_tempdir();
    let t = tmp.path();
    let (src, logs) = (postgres_dir(&t.join("src")), postgres_dir(&t.join("logs")));
    let (sock1, sock2) = (postgres_dir(&t.join("sock1")), postgres_dir(&t.join("sock2")));

    Pg::under_test().initdb(&src, "");
    let source = Server::start(&src, &sock1, &logs.join("src.log"));

    source.psql("postgres", "CREATE DATABASE shop");
    let mut init = source.client("pgbench");
    init.args(["-i", "-s", "2", "-q", "shop"]);
    ok(init, "pgbench -i");
    // Some transactions: history rows, updated (and dead) tuples.
    let mut run = source.client("pgbench");
    run.args(["-n", "-c", "2", "-j", "2", "-t", "300", "shop"]);
    ok(run, "pgbench");
    source.psql(
        "shop",
        "CREATE TABLE notes AS SELECT g AS id, \
         md5(random()::text) || ' ' || repeat(md5(random()::text) || ' ', 1 + (random() * 30)::int) AS body \
         FROM generate_series(1, 5000) g",
    );
    // Mostly small values, and every 50th a 64 KiB incompressible one (stored out of line, in TOAST).
    source.psql("shop", "CREATE TABLE blobs (id int PRIMARY KEY, data bytea)");
    source.psql(
        "shop",
        "INSERT INTO blobs SELECT g, \
         (SELECT decode(string_agg(md5(random()::text || g::text || i::text), ''), 'hex') \
          FROM generate_series(1, CASE WHEN g % 50 = 0 THEN 4096 ELSE 1 + g % 7 END) i) \
         FROM generate_series(1, 2000) g",
    );
    let before = source.table_hashes("shop");
    let names: Vec<_> = before.keys().map(String::as_str).collect();
    assert_eq!(names, ["blobs", "notes", "pgbench_accounts", "pgbench_branches", "pgbench_history", "pgbench_tellers"]);
    assert!(before["pgbench_accounts"].starts_with("200000 "), "{}", before["pgbench_accounts"]);
    assert!(before["pgbench_history"].starts_with("600 "), "{}", before["pgbench_history"]);
    assert!(before["notes"].starts_with("5000 ") && before["blobs"].starts_with("2000 "));

    let producer =
        as_postgres_shell("pg_basebackup", &format!("-h {} -p {PORT} -D - -Ft -X fetch -c fast", sock1.display()));
    let out =
        repo.cmd(["--json", "backup", "--name", "pg", "--command", &producer]).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "backup failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["files"].as_u64().unwrap() > 100, "{summary}");
    // Changed after the backup: the restore must not see this.
    source.psql("shop", "UPDATE notes SET body = 'after the backup' WHERE id <= 100");
    assert_ne!(source.table_hashes("shop")["notes"], before["notes"]);

    let snaps = repo.json(&["snapshots"]);
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let meta = &snaps[0]["metadata"];
    assert_eq!(meta["format"], "tar", "{meta}");
    assert_eq!(meta["database"], "postgresql", "{meta}");
    assert_eq!(meta["command"], producer.as_str(), "{meta}");
    let pgm = &meta["postgresql"];
    assert_eq!(pgm["timeline"], 1, "{meta}");
    // The cluster's identity, as pg_controldata tells it.
    let mut controldata = as_postgres("pg_controldata");
    controldata.arg(&source.data);
    let control = ok(controldata, "pg_controldata");
    let sysid = control.lines().find_map(|l| l.strip_prefix("Database system identifier:")).unwrap().trim();
    assert_eq!(pgm["system_identifier"], sysid, "{meta}");
    let lsn = pgm["start_wal_location"].as_str().unwrap_or_default();
    assert!(lsn.contains('/') && lsn.len() >= 3, "start_wal_location {lsn:?}: {meta}");
    let wal_file = pgm["start_wal_file"].as_str().unwrap_or_default();
    assert!(wal_file.len() == 24 && wal_file.starts_with("00000001"), "start_wal_file {wal_file:?}: {meta}");
    assert_eq!(pgm["backup_method"], "streamed", "{meta}");
    assert_eq!(pgm["backup_from"], "primary", "{meta}");
    assert_eq!(pgm["backup_manifest"], true, "{meta}");

    // Restore into a new directory (created by dedupe).
    let restored = t.join("restored");
    repo.ok(&[
        "restore".as_ref(),
        "latest".as_ref(),
        "--name".as_ref(),
        "pg".as_ref(),
        "--target".as_ref(),
        restored.as_os_str(),
    ]);
    // PostgreSQL's own checks on a data directory: private, and owned by the server's user.
    let (rm, sm) = (fs::metadata(&restored).unwrap(), fs::metadata(&src).unwrap());
    assert_eq!(rm.mode() & 0o777, 0o700);
    assert_eq!((rm.uid(), rm.gid()), (sm.uid(), sm.gid()), "the restored directory's owner");
    assert!(restored.join("backup_label").is_file() && restored.join("global/pg_control").is_file());

    // The same snapshot as a tar stream, unpacked by tar, gives the same files.
    let untarred = t.join("untarred");
    fs::create_dir(&untarred).unwrap();
    let mut dump = repo
        .cmd(["restore", "latest", "--name", "pg", "--stdout"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Directory times are set at the end: a member after the directory's own
    // entry (pg_basebackup puts global/pg_control last) would change them.
    let tar_out = Command::new("tar")
        .args(["-x", "--delay-directory-restore"])
        .arg("-C")
        .arg(&untarred)
        .stdin(dump.stdout.take().unwrap())
        .output()
        .expect("run tar");
    let dump_out = dump.wait_with_output().unwrap();
    assert!(dump_out.status.success(), "restore --stdout failed: {}", String::from_utf8_lossy(&dump_out.stderr));
    assert!(tar_out.status.success(), "tar -x failed: {}", String::from_utf8_lossy(&tar_out.stderr));
    // The restored copy has archiving turned off after the source's own
    // settings (so it never archives into the source's name); the rest is equal.
    let conf = "postgresql.auto.conf";
    let (ours, theirs) =
        (fs::read_to_string(restored.join(conf)).unwrap(), fs::read_to_string(untarred.join(conf)).unwrap());
    let added = ours.strip_prefix(theirs.as_str()).unwrap_or_else(|| panic!("{conf} was not appended to: {ours:?}"));
    assert!(added.ends_with("\narchive_mode = off\n"), "{added:?}");
    assert_same_tree_but(&restored, &untarred, Some(conf));
    // And read through `dedupe mount`: the same files, bytes and metadata.
    {
        let m = dedupe_suite::mount::Mounted::new(&repo);
        assert_same_tree(&untarred, &m.point.join("by-name/pg/latest"));
    }

    // The restored directory starts as it is, and every table reads back as it was backed up.
    let copy = Server::start(&restored, &sock2, &logs.join("restored.log"));
    assert_eq!(copy.psql("shop", "SELECT pg_is_in_recovery()"), "f");
    let after = copy.table_hashes("shop");
    assert_eq!(after, before);
    drop(copy);

    // Instant restore: the server starts (recovering from the backup label)
    // on a writable mount of the snapshot, with the same tables; the overlay
    // goes with the mount.
    {
        let m = dedupe_suite::mount::Mounted::writable_at(&repo, "latest", t.join("instant"));
        let instant = Server::start(&m.point, &sock2, &logs.join("instant.log"));
        assert_eq!(instant.psql("shop", "SELECT pg_is_in_recovery()"), "f");
        assert_eq!(instant.table_hashes("shop"), before);
        instant.psql("shop", "UPDATE notes SET body = 'on the instant copy' WHERE id = 1");
        drop(instant);
        let overlay = m.overlay();
        let (code, stderr) = m.unmount();
        assert_eq!(code, Some(0), "{stderr}");
        assert!(!overlay.exists());
    }
    drop(source);
    eprintln!("PostgreSQL round trip took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_failing_producer_commits_nothing() {
    let repo = Repo::new();
    let tmp = pg_tempdir();
    // An empty socket directory: no server listens there.
    let sock = postgres_dir(&tmp.path().join("sock"));
    let producer =
        as_postgres_shell("pg_basebackup", &format!("-h {} -p {PORT} -D - -Ft -X fetch -c fast", sock.display()));
    let out: Output =
        repo.cmd(["backup", "--name", "pg", "--command", &producer]).stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(PRODUCER_FAILED), "{err}");
    let err = one_line_error(&out);
    assert!(err.contains("nothing was committed"), "{err}");
    assert!(repo.json(&["snapshots"]).as_array().unwrap().is_empty());
    assert!(repo.packs().is_empty(), "a failed backup left packs: {:?}", repo.packs());
}

/// Five `pg_basebackup`s with pgbench and updates between (format-spec
/// §7.5): from the second on, changed pages are deltas on their previous
/// version; every generation restores, starts and reads back as it was.
#[test]
fn five_generations_with_writes_between_restore_and_start_exactly() {
    let repo = Repo::new();
    let tmp = pg_tempdir();
    let t = tmp.path();
    let (src, logs, sock) =
        (postgres_dir(&t.join("src")), postgres_dir(&t.join("logs")), postgres_dir(&t.join("sock")));
    Pg::under_test().initdb(&src, "");
    let source = Server::start(&src, &sock, &logs.join("src.log"));
    source.psql("postgres", "CREATE DATABASE shop");
    let mut init = source.client("pgbench");
    init.args(["-i", "-s", "2", "-q", "shop"]);
    ok(init, "pgbench -i");
    source.psql(
        "shop",
        "CREATE TABLE notes AS SELECT g AS id, repeat(md5(g::text) || ' ', 8) AS body FROM generate_series(1, 20000) g",
    );
    let producer =
        as_postgres_shell("pg_basebackup", &format!("-h {} -p {PORT} -D - -Ft -X fetch -c fast", sock.display()));
    let mut generations = Vec::new();
    for g in 0..5 {
        if g > 0 {
            let mut run = source.client("pgbench");
            run.args(["-n", "-c", "2", "-j", "2", "-t", "200", "shop"]);
            ok(run, "pgbench");
            source.psql("shop", &format!("UPDATE notes SET body = body || '{g}' WHERE id % 40 = {g}"));
        }
        let want = source.table_hashes("shop");
        let out = repo
            .cmd(["--json", "backup", "--name", "pg", "--command", &producer])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "backup {g}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        eprintln!(
            "generation {g}: {} new bytes, {} of them as {} deltas stored in {}; {} stored in all",
            v["new_bytes"], v["delta_bytes"], v["delta_chunks"], v["delta_bytes_stored"], v["new_bytes_stored"]
        );
        if g > 0 {
            assert!(v["delta_chunks"].as_u64().unwrap() > 50, "generation {g}: {v}");
            let (deltas, stored) = (v["delta_bytes"].as_u64().unwrap(), v["delta_bytes_stored"].as_u64().unwrap());
            assert!(stored * 8 < deltas, "generation {g}: deltas of {deltas} bytes took {stored}: {v}");
        }
        generations.push((v["snapshot"].as_str().unwrap().to_string(), want));
    }
    drop(source);
    for (g, (id, want)) in generations.iter().enumerate() {
        let restored = t.join(format!("restored{g}"));
        repo.ok(&["restore".as_ref(), id.as_ref(), "--target".as_ref(), restored.as_os_str()]);
        let copy = Server::start(&restored, &sock, &logs.join(format!("restored{g}.log")));
        assert_eq!(copy.table_hashes("shop"), *want, "generation {g}");
    }
    assert_eq!(repo.json(&["check", "--read-data"])["whole"], true);
}

/// `pg_basebackup` of `source` with `extra` options, into `file`.
fn base_backup_to(source: &Server, extra: &str, file: &Path) {
    let cmd = as_postgres_shell(
        "pg_basebackup",
        &format!("-h {} -p {PORT} -D - -Ft -X fetch -c fast {extra}", source.sock.display()),
    );
    let out = Command::new("sh").arg("-c").arg(format!("{cmd} > {}", file.display())).output().unwrap();
    assert!(out.status.success(), "pg_basebackup {extra}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `file` backed up from stdin as `name`: the summary, or the failed output.
fn backup_file(repo: &Repo, name: &str, file: &Path) -> Output {
    repo.cmd(["--json", "backup", "--name", name, "-"]).stdin(fs::File::open(file).unwrap()).output().unwrap()
}

#[test]
fn compressed_base_backups_are_stored_decompressed_and_a_damaged_one_is_refused() {
    let (plain, packed) = (Repo::new(), Repo::new());
    let tmp = pg_tempdir();
    let t = tmp.path();
    let (src, logs, sock) =
        (postgres_dir(&t.join("src")), postgres_dir(&t.join("logs")), postgres_dir(&t.join("sock")));
    Pg::under_test().initdb(&src, "");
    let source = Server::start(&src, &sock, &logs.join("src.log"));
    source.psql("postgres", "CREATE DATABASE shop");
    let mut init = source.client("pgbench");
    init.args(["-i", "-s", "4", "-q", "shop"]);
    ok(init, "pgbench -i");

    // Two nights, each backed up as it comes and compressed by pg_basebackup
    // (gzip, and zstd on the client where the version has it), each form in
    // a repository of its own.
    // (The PyPI builds of 16 and 18 the suite runs are built without zstd;
    // Debian's 15 has it.)
    let forms: &[(&str, &str)] =
        if Pg::under_test().major == 15 { &[("gz", "-z"), ("zst", "--compress=client-zstd")] } else { &[("gz", "-z")] };
    let mut growth: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for night in 1..=2 {
        if night == 2 {
            let mut run = source.client("pgbench");
            run.args(["-n", "-c", "2", "-j", "2", "-t", "300", "shop"]);
            ok(run, "pgbench");
            source.psql("shop", "CHECKPOINT");
        }
        let raw = t.join(format!("night{night}.tar"));
        base_backup_to(&source, "", &raw);
        let out = backup_file(&plain, "pg", &raw);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        growth.entry("plain".into()).or_default().push(s["new_bytes_stored"].as_u64().unwrap());
        for (form, option) in forms {
            let file = t.join(format!("night{night}.tar.{form}"));
            base_backup_to(&source, option, &file);
            let out = backup_file(&packed, form, &file);
            assert!(out.status.success(), "{form}: {}", String::from_utf8_lossy(&out.stderr));
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            growth.entry(form.to_string()).or_default().push(s["new_bytes_stored"].as_u64().unwrap());
        }
    }
    drop(source);
    for (form, _) in forms {
        let snaps = packed.json(&["snapshots", "--name", form]);
        let last = snaps.as_array().unwrap().last().unwrap();
        assert_eq!(last["metadata"]["format"], "tar", "{last}");
        assert_eq!(last["metadata"]["compression"], if *form == "gz" { "gzip" } else { "zstd" }, "{last}");
        // Night 2 costs what it costs uncompressed (not a second whole copy):
        // its pages are deltas on night 1's.
        let (ours, theirs) = (growth[*form][1], growth["plain"][1]);
        assert!(
            ours as f64 <= 1.1 * theirs as f64 + 65536.0,
            "{form}: night 2 stored {ours} where uncompressed stored {theirs}"
        );
        // Restored, it is the decompressed stream's tree, byte for byte.
        let restored = t.join(format!("restored-{form}"));
        packed.ok(&[
            "restore".as_ref(),
            "latest".as_ref(),
            "--name".as_ref(),
            form.as_ref(),
            "--target".as_ref(),
            restored.as_os_str(),
        ]);
        let unpacked = t.join(format!("unpacked-{form}"));
        fs::create_dir(&unpacked).unwrap();
        let file = t.join(format!("night2.tar.{form}"));
        let untar = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} < {} | tar -x --numeric-owner --delay-directory-restore -C {}",
                if *form == "gz" { "gzip -dc" } else { "zstd -dc" },
                file.display(),
                unpacked.display()
            ))
            .output()
            .unwrap();
        assert!(untar.status.success(), "{}", String::from_utf8_lossy(&untar.stderr));
        assert_same_tree_but(&restored, &unpacked, Some("postgresql.auto.conf"));
    }
    // One flipped byte in the compressed body: refused, nothing committed.
    let file = t.join("night2.tar.gz");
    let mut bytes = fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    let damaged = t.join("damaged.tar.gz");
    fs::write(&damaged, bytes).unwrap();
    let before = packed.json(&["snapshots"]).as_array().unwrap().len();
    let out = backup_file(&packed, "gz", &damaged);
    assert_eq!(out.status.code(), Some(17), "{}", String::from_utf8_lossy(&out.stderr));
    let err = one_line_error(&out);
    assert!(err.contains("gzip"), "{err}");
    assert_eq!(packed.json(&["snapshots"]).as_array().unwrap().len(), before, "nothing was committed");
}
