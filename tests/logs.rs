//! Log archiving without a server: binlog files (real ones, from
//! ingest/testdata) and WAL files pushed, listed, fetched, refused.

use dedupe_suite::*;
use std::path::Path;

const MISSING: i32 = 8;
const CONFLICT: i32 = 15;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("ingest/testdata/binlog").join(name)).unwrap()
}

/// A binlog directory as a server leaves it: files and their index.
fn binlog_dir(repo: &Repo, files: &[(&str, Vec<u8>)]) -> std::path::PathBuf {
    let dir = repo.scratch("binlogs");
    std::fs::create_dir_all(&dir).unwrap();
    let mut index = String::new();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
        index.push_str(&format!("./{name}\n"));
    }
    std::fs::write(dir.join("mysql-bin.index"), index).unwrap();
    dir
}

#[test]
fn binlog_push_is_idempotent_and_refuses_other_bytes_under_the_same_name() {
    let repo = Repo::new();
    let active = fixture("mysql-bin.000002.active");
    let dir =
        binlog_dir(&repo, &[("mysql-bin.000001", fixture("mysql-bin.000001")), ("mysql-bin.000002", active.clone())]);
    let push = |extra: &[&str]| {
        let mut a: Vec<&std::ffi::OsStr> = vec!["binlog".as_ref(), "push".as_ref(), "--name".as_ref(), "db".as_ref()];
        a.extend(extra.iter().map(std::ffi::OsStr::new));
        a.extend(["--binlog-dir".as_ref(), dir.as_os_str()]);
        repo.json(&a)
    };
    // The last file in the index, without a rotate or stop event at its
    // end, is the active one: left alone unless asked, and said so.
    let first = push(&[]);
    assert_eq!(first.as_array().unwrap().len(), 2, "{first}");
    assert_eq!(first[0]["status"], "stored");
    assert!(first[1]["status"].as_str().unwrap().starts_with("skipped: the active file"), "{first}");
    assert_eq!(push(&[])[0]["status"], "already archived");
    let with_active = push(&["--include-active"]);
    assert_eq!(with_active[1]["status"], "stored (partial)", "{with_active}");

    // Once closed, the complete file replaces the partial copy.
    std::fs::write(dir.join("mysql-bin.000002"), fixture("mysql-bin.000002")).unwrap();
    let mut index = std::fs::read_to_string(dir.join("mysql-bin.index")).unwrap();
    index.push_str("./mysql-bin.000003\n");
    std::fs::write(dir.join("mysql-bin.index"), index).unwrap();
    std::fs::write(dir.join("mysql-bin.000003"), fixture("mysql-bin.000003")).unwrap();
    let pushed = push(&[]);
    assert_eq!(pushed[1]["status"], "stored");
    // 000003 ends with the server's stop event: complete, though the last.
    assert_eq!(pushed[2]["status"], "stored", "{pushed}");
    let list = repo.json(&["binlog", "list", "--name", "db"]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2]["partial"], false);
    assert_eq!(rows[1]["partial"], false);
    assert_eq!(rows[1]["server_id"], 7);
    assert!(rows[1]["end_position"].as_u64().unwrap() > active.len() as u64 - 64);

    // The last file of a stopped server ends with its event: complete, though last.
    let stopped = binlog_dir(
        &repo,
        &[("mysql-bin.000001", fixture("mysql-bin.000001")), ("mysql-bin.000002", fixture("mysql-bin.000002"))],
    );
    let out = repo.json(&[
        "binlog".as_ref(),
        "push".as_ref(),
        "--name".as_ref(),
        "stopped".as_ref(),
        "--binlog-dir".as_ref(),
        stopped.as_os_str(),
    ]);
    assert_eq!(out[1]["status"], "stored", "{out}");

    // Same name, other bytes: a different server under this --name? Refused.
    // (A flipped byte would fail the event's CRC-32 first: use another valid binlog.)
    std::fs::write(dir.join("mysql-bin.000001"), fixture("mysql-bin.000003")).unwrap();
    let out = repo.cmd(["binlog", "push", "--name", "db", "--binlog-dir"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(CONFLICT), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(one_line_error(&out).contains("mysql-bin.000001"));
    // Another --name is another server's archive.
    let out = repo.cmd(["binlog", "list", "--name", "other", "--json"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

#[test]
fn wal_push_and_fetch_are_byte_exact_and_a_missing_file_fails() {
    let repo = Repo::new();
    let dir = repo.scratch("pg_wal");
    std::fs::create_dir_all(&dir).unwrap();
    let seg = dir.join("000000010000000000000003");
    let bytes = Prng::new(3).bytes(1 << 20);
    std::fs::write(&seg, &bytes).unwrap();
    let history = dir.join("00000002.history");
    std::fs::write(&history, b"1\t0/3000000\tno recovery target specified\n").unwrap();
    for p in [&seg, &history] {
        repo.ok(&["wal".as_ref(), "push".as_ref(), "--name".as_ref(), "pg".as_ref(), p.as_os_str()]);
    }
    // Pushing again is a no-op; other bytes under the same name are refused.
    let out = repo.ok(&["wal".as_ref(), "push".as_ref(), "--name".as_ref(), "pg".as_ref(), seg.as_os_str()]);
    assert!(String::from_utf8_lossy(&out).contains("already archived"));
    std::fs::write(&seg, b"other bytes").unwrap();
    let out = repo.cmd(["wal", "push", "--name", "pg"]).arg(&seg).output().unwrap();
    assert_eq!(out.status.code(), Some(CONFLICT));

    let dest = repo.scratch("RECOVERYXLOG");
    repo.ok(&[
        "wal".as_ref(),
        "fetch".as_ref(),
        "--name".as_ref(),
        "pg".as_ref(),
        "000000010000000000000003".as_ref(),
        dest.as_os_str(),
    ]);
    assert!(std::fs::read(&dest).unwrap() == bytes);
    repo.ok(&[
        "wal".as_ref(),
        "fetch".as_ref(),
        "--name".as_ref(),
        "pg".as_ref(),
        "00000002.history".as_ref(),
        dest.as_os_str(),
    ]);
    assert!(std::fs::read(&dest).unwrap().starts_with(b"1\t0/3000000"));

    // PostgreSQL asks for files that do not exist: a plain failure, nothing written.
    let absent = repo.scratch("absent");
    let out = repo.cmd(["wal", "fetch", "--name", "pg", "000000010000000000000004"]).arg(&absent).output().unwrap();
    assert_eq!(out.status.code(), Some(MISSING));
    one_line_error(&out);
    assert!(!absent.exists());
    // Another name has no WAL at all.
    let out = repo.cmd(["wal", "fetch", "--name", "other", "000000010000000000000003"]).arg(&absent).output().unwrap();
    assert_eq!(out.status.code(), Some(MISSING));
}

#[test]
fn concurrent_pushes_into_one_repository_all_land() {
    let repo = Repo::new();
    let dir = repo.scratch("pg_wal");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<_> = (1..=6u64)
        .map(|n| {
            let p = dir.join(format!("0000000100000000{n:08X}"));
            std::fs::write(&p, Prng::new(n).bytes(256 * 1024)).unwrap();
            p
        })
        .collect();
    // Like a server's archive_command running while other commands work: no lock, no failure.
    let children: Vec<_> = files
        .iter()
        .map(|p| repo.cmd(["wal", "push", "--name", "pg"]).arg(p).stdout(std::process::Stdio::null()).spawn().unwrap())
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    for p in &files {
        let dest = repo.scratch("fetched");
        let name = p.file_name().unwrap().to_str().unwrap();
        repo.ok(&["wal".as_ref(), "fetch".as_ref(), "--name".as_ref(), "pg".as_ref(), name.as_ref(), dest.as_os_str()]);
        assert!(std::fs::read(&dest).unwrap() == std::fs::read(p).unwrap(), "{name}");
    }
}

#[test]
fn wal_before_the_oldest_base_is_not_archived_again() {
    let repo = Repo::new();
    // A base backup (a tar with pg_basebackup's label) that starts in segment 5.
    let base = repo.scratch("base");
    std::fs::create_dir_all(base.join("global")).unwrap();
    std::fs::write(
        base.join("backup_label"),
        "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\nCHECKPOINT LOCATION: 0/5000060\n\
         BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIMELINE: 1\n",
    )
    .unwrap();
    std::fs::write(base.join("PG_VERSION"), "15\n").unwrap();
    let tar = std::process::Command::new("tar").arg("-cf").arg("-").arg("-C").arg(&base).arg(".").output().unwrap();
    assert!(tar.status.success());
    repo.backup_bytes("pg", &tar.stdout);

    let dir = repo.scratch("pg_wal");
    std::fs::create_dir_all(&dir).unwrap();
    let push = |file: &str, extra: &[&str]| {
        let p = dir.join(file);
        std::fs::write(&p, Prng::new(file.len() as u64).bytes(1 << 20)).unwrap();
        let mut args: Vec<&std::ffi::OsStr> = vec!["wal".as_ref(), "push".as_ref(), "--name".as_ref(), "pg".as_ref()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        args.push(p.as_os_str());
        repo.json(&args)
    };
    // Older than the base: restores nothing, skipped (PostgreSQL may recycle it).
    assert_eq!(push("000000010000000000000003", &[])["stored"], false);
    assert_eq!(push("000000010000000000000005", &[])["stored"], true);
    // Another timeline is not measured against this one.
    assert_eq!(push("000000020000000000000003", &[])["stored"], true);
    assert_eq!(push("000000010000000000000004", &["--force"])["stored"], true);
    let out =
        repo.cmd(["wal", "fetch", "--name", "pg", "000000010000000000000003"]).arg(repo.scratch("x")).output().unwrap();
    assert_eq!(out.status.code(), Some(MISSING), "the skipped segment was not stored");

    // No pg_waldump reads these bytes: said once, when the commit times stop
    // being known, not with every segment after.
    let warned = |name: &str, file: &str| {
        let p = dir.join(file);
        std::fs::write(&p, Prng::new(7).bytes(1 << 20)).unwrap();
        let out = repo.run(&["wal".as_ref(), "push".as_ref(), "--name".as_ref(), name.as_ref(), p.as_os_str()]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).contains("warning: no pg_waldump here reads")
    };
    assert!(!warned("pg", "000000010000000000000006"), "the segment before had no commit times either");
    assert!(warned("pg-other", "000000010000000000000007"), "the first of a name is said");
    assert!(!warned("pg-other", "000000010000000000000008"));
}
