//! Bad input and damage: each gets its own exit code, a one-line error, and
//! leaves the repository consistent. Exit codes are documented in README.md.

use dedupe_suite::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

const USAGE: i32 = 2;
const NO_REPOSITORY: i32 = 3;
const WRONG_PASSWORD: i32 = 4;
const NO_SNAPSHOT: i32 = 5;
const INPUT_FAILED: i32 = 6;
const CORRUPT: i32 = 7;
const MISSING: i32 = 8;
const REPOSITORY_EXISTS: i32 = 12;
const PRODUCER_FAILED: i32 = 14;

#[test]
fn wrong_password_has_its_exit_code_and_one_line() {
    let repo = Repo::new();
    repo.backup_bytes("h", b"secret rows");
    let out = repo.cmd(["restore", "latest", "--stdout"]).env("DEDUPE_PASSWORD", "not it").output().unwrap();
    assert_eq!(out.status.code(), Some(WRONG_PASSWORD));
    assert!(one_line_error(&out).contains("wrong password"));
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_repository_and_double_init() {
    let repo = Repo::uninitialised();
    let out = repo.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(NO_REPOSITORY));
    assert!(one_line_error(&out).contains("dedupe init"));
    repo.ok(&["init"]);
    let out = repo.run(&["init"]);
    assert_eq!(out.status.code(), Some(REPOSITORY_EXISTS));
    one_line_error(&out);
}

#[test]
fn latest_without_a_name_is_refused_where_several_servers_are_backed_up() {
    let repo = Repo::new();
    repo.backup_bytes("db1", b"rows of db1");
    repo.backup_bytes("db2", b"rows of db2");
    // Which server's newest backup is never guessed.
    for args in [&["restore", "latest", "--stdout"][..], &["ls", "latest"], &["log", "latest"], &["lsn"]] {
        let out = repo.run(args);
        assert_eq!(out.status.code(), Some(USAGE), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let err = one_line_error(&out);
        assert!(err.contains("db1, db2") && err.contains("--name"), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
    assert_eq!(repo.ok(&["restore", "latest", "--name", "db1", "--stdout"]), b"rows of db1");
    assert_eq!(repo.ok(&["restore", "latest", "--name", "db2", "--stdout"]), b"rows of db2");
}

#[test]
fn a_failing_producer_says_its_error_line_and_keeps_its_whole_output() {
    let repo = Repo::new();
    // Thirty lines of noise around the one that matters, then a listing, and exit 1.
    let script = "for i in $(seq 1 14); do echo \"[00] info line $i\" >&2; done; \
                  echo '[00] Error: missing required privilege RELOAD on *.*' >&2; \
                  for i in $(seq 1 15); do echo \"GRANT SELECT ON t$i TO backup\" >&2; done; \
                  printf 'some bytes'; exit 1";
    let out = repo.run(&["backup", "--name", "m", "--command", script]);
    assert_eq!(out.status.code(), Some(PRODUCER_FAILED), "{}", String::from_utf8_lossy(&out.stderr));
    let err = one_line_error(&out);
    assert!(err.contains("Error: missing required privilege RELOAD"), "{err}");
    assert!(!err.contains("GRANT SELECT ON t15"), "the listing is not the reason: {err}");
    let kept =
        err.split("its whole output: ").nth(1).and_then(|r| r.strip_suffix(')')).unwrap_or_else(|| panic!("{err}"));
    let log = std::fs::read_to_string(kept).unwrap();
    assert_eq!(log.lines().count(), 30, "{log}");
    assert!(log.contains("[00] info line 1\n") && log.contains("GRANT SELECT ON t15 TO backup"));
    assert!(repo.json(&["snapshots"]).as_array().unwrap().is_empty(), "nothing was committed");
}

#[test]
fn unknown_snapshot() {
    let repo = Repo::new();
    let out = repo.run(&["restore", "latest", "--stdout"]);
    assert_eq!(out.status.code(), Some(NO_SNAPSHOT));
    one_line_error(&out);
    repo.backup_bytes("h", b"x");
    let out = repo.run(&["restore", "ffffffff", "--stdout"]);
    assert_eq!(out.status.code(), Some(NO_SNAPSHOT));
}

#[test]
fn source_directory_that_does_not_exist_is_an_input_failure() {
    let repo = Repo::new();
    let out = repo.run(&["backup", "--name", "h", "/nonexistent/snapshot/mount"]);
    assert_eq!(out.status.code(), Some(INPUT_FAILED));
    one_line_error(&out);
    assert!(repo.json(&["snapshots"]).as_array().unwrap().is_empty());
}

/// Flips one byte at `offset` (from the start, or from the end when negative).
fn flip(path: &std::path::Path, offset: i64) {
    let mut b = std::fs::read(path).unwrap();
    let i = if offset < 0 { (b.len() as i64 + offset) as usize } else { offset as usize };
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

#[test]
fn one_flipped_byte_in_a_pack_fails_restore_and_repair_loudly_and_never_outputs_wrong_bytes() {
    let repo = Repo::new();
    let data = Prng::new(3).bytes(6 << 20);
    repo.backup_bytes("h", &data);
    let packs = repo.packs();
    assert_eq!(packs.len(), 1);
    let pack_name = packs[0].strip_prefix(&repo.path).unwrap().to_string_lossy().into_owned();
    // A byte in the middle of the chunk data.
    flip(&packs[0], 3 << 20);

    let out = repo.run(&["restore", "latest", "--stdout"]);
    assert_eq!(out.status.code(), Some(CORRUPT));
    let err = one_line_error(&out);
    assert!(err.contains(&pack_name), "error does not name {pack_name}: {err}");
    assert!(out.stdout.len() < data.len());
    assert!(data.starts_with(&out.stdout), "restore wrote bytes that are not the original's");

    let target = repo.scratch("t");
    let out = repo.run(&["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), target.as_os_str()]);
    assert_eq!(out.status.code(), Some(CORRUPT));

    // Repair leaves the damaged chunk out of the index and names the pack;
    // the other chunks of the pack stay indexed.
    let out = repo.run(&["repair", "index"]);
    assert!(out.status.success(), "{}", one_line_error(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("dropped: {pack_name}")), "repair does not name {pack_name}: {said}");
    assert!(said.contains("1 of its"), "one chunk dropped: {said}");
    // The snapshot is now reported missing a chunk, never restored wrong.
    let out = repo.run(&["restore", "latest", "--stdout"]);
    assert_eq!(out.status.code(), Some(MISSING), "{}", one_line_error(&out));
    assert!(data.starts_with(&out.stdout), "restore wrote bytes that are not the original's");
}
#[test]
fn a_flipped_byte_in_the_pack_trailer_is_caught_too() {
    let repo = Repo::new();
    repo.backup_bytes("h", &Prng::new(4).bytes(1 << 20));
    let pack = repo.packs().remove(0);
    flip(&pack, -10);
    let out = repo.run(&["--json", "repair", "index"]);
    assert!(out.status.success(), "{}", one_line_error(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dropped = &v["dropped"][0];
    assert_eq!(dropped["object"], pack.strip_prefix(&repo.path).unwrap().to_string_lossy().as_ref(), "{v}");
    assert!(dropped["problem"].as_str().unwrap().contains("trailer cannot be read"), "{v}");
    assert_eq!(v["chunks"], 0, "nothing of it is indexed: {v}");
}

#[test]
fn a_missing_pack_is_named() {
    let repo = Repo::new();
    repo.backup_bytes("h", &Prng::new(5).bytes(2 << 20));
    let pack = repo.packs().remove(0);
    std::fs::remove_file(&pack).unwrap();
    let out = repo.run(&["restore", "latest", "--stdout"]);
    assert_eq!(out.status.code(), Some(MISSING));
    let err = one_line_error(&out);
    assert!(err.contains(pack.file_name().unwrap().to_str().unwrap()), "{err}");
}

#[test]
fn repair_index_rebuilds_an_index_that_was_lost() {
    let repo = Repo::new();
    let data = Prng::new(6).bytes(3 << 20);
    repo.backup_bytes("h", &data);
    std::fs::remove_dir_all(repo.path.join("index")).unwrap();
    std::fs::create_dir(repo.path.join("index")).unwrap();
    std::fs::remove_dir_all(&repo.cache).unwrap();
    let out = repo.run(&["restore", "latest", "--stdout"]);
    assert_eq!(out.status.code(), Some(MISSING), "{}", String::from_utf8_lossy(&out.stderr));
    let report = repo.json(&["repair", "index"]);
    assert_eq!(report["packs"], 1);
    assert_eq!(repo.ok(&["restore", "latest", "--stdout"]), data);
}

#[test]
fn a_backup_killed_halfway_leaves_no_snapshot_and_its_packs_are_reused() {
    const TOTAL: u64 = 512 << 20;
    let repo = Repo::new();
    let mut child = repo.spawn_backup("h");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // Fails with a broken pipe once the backup is killed.
        let _ = write_stream(&mut stdin, 11, TOTAL);
    });
    let start = Instant::now();
    while repo.packs().len() < 5 {
        assert!(start.elapsed() < Duration::from_secs(120), "no packs appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "the backup finished before it was killed");
    feeder.join().unwrap();

    // Readable, and no snapshot for the killed backup.
    assert!(repo.json(&["snapshots"]).as_array().unwrap().is_empty());
    let stored_before: u64 = repo.packs().iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();

    // The next backup of the same input reuses what the killed one stored.
    let mut child = repo.spawn_backup("h");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || write_stream(&mut stdin, 11, TOTAL).unwrap());
    let out = child.wait_with_output().unwrap();
    let expected = feeder.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let new = summary["new_bytes"].as_u64().unwrap();
    let reused = TOTAL - new;
    eprintln!(
        "killed backup had stored {stored_before} bytes; the next backup reused {reused} of {TOTAL} bytes ({:.0}%)",
        reused as f64 * 100.0 / TOTAL as f64
    );
    // Every whole pack the killed backup left is reused (the data does not compress).
    assert!(reused >= stored_before * 9 / 10, "only {reused} bytes reused of {stored_before} in packs");

    let mut child = repo.cmd(["restore", "latest", "--stdout"]).stdout(Stdio::piped()).spawn().unwrap();
    let (hash, n) = hash_reader(child.stdout.as_mut().unwrap());
    assert!(child.wait().unwrap().success());
    assert_eq!((hash, n), (expected, TOTAL));
    // Every pack is intact: the index can be rebuilt from them.
    repo.json(&["repair", "index"]);
}

#[test]
fn keys_can_be_added_and_removed() {
    let repo = Repo::new();
    repo.backup_bytes("h", b"rows");
    let out = repo.cmd(["--json", "key", "add"]).env("DEDUPE_NEW_PASSWORD", "second password").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keys = repo.json(&["key", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let first =
        keys.as_array().unwrap().iter().find(|k| k["current"] == true).unwrap()["id"].as_str().unwrap().to_string();

    // The key in use cannot be removed.
    let out = repo.run(&["key", "remove", &first[..12]]);
    assert!(!out.status.success());
    one_line_error(&out);

    // Opened with the second password, the first can go.
    let second = |args: &[&str]| repo.cmd(args).env("DEDUPE_PASSWORD", "second password").output().unwrap();
    assert_eq!(second(&["restore", "latest", "--stdout"]).stdout, b"rows");
    assert!(second(&["key", "remove", &first[..12]]).status.success());
    let out = repo.run(&["restore", "latest", "--stdout"]);
    assert_eq!(out.status.code(), Some(WRONG_PASSWORD));
}

#[test]
fn password_from_file_and_command() {
    let repo = Repo::new();
    repo.backup_bytes("h", b"rows");
    let pwfile = repo.scratch("pw");
    std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
    let out = repo
        .cmd(["restore", "latest", "--stdout"])
        .arg("--password-file")
        .arg(&pwfile)
        .env_remove("DEDUPE_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"rows", "{}", String::from_utf8_lossy(&out.stderr));
    // Every user can read that file (0644): said once; at 0600, nothing is said.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warned = |repo: &Repo| {
        let out =
            repo.cmd(["snapshots", "--password-file"]).arg(&pwfile).env_remove("DEDUPE_PASSWORD").output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).contains("every user can read the password file")
    };
    assert!(warned(&repo));
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!warned(&repo));
    let out = repo
        .cmd(["restore", "latest", "--stdout", "--password-command", &format!("echo '{PASSWORD}'")])
        .env_remove("DEDUPE_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"rows", "{}", String::from_utf8_lossy(&out.stderr));
    // No password anywhere and no terminal: a usage error, not a hang.
    let out = repo.cmd(["snapshots"]).env_remove("DEDUPE_PASSWORD").stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    one_line_error(&out);
}

#[test]
fn an_input_that_fails_to_read_commits_nothing() {
    let repo = Repo::new();
    // stdin opened on a directory: the first read fails with EISDIR.
    let out = repo.cmd(["backup", "--name", "h", "-"]).stdin(std::fs::File::open("/").unwrap()).output().unwrap();
    assert_eq!(out.status.code(), Some(INPUT_FAILED));
    assert!(one_line_error(&out).contains("reading the input failed"));
    assert!(repo.json(&["snapshots"]).as_array().unwrap().is_empty());
}

/// A small tmpfs, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_backup_with_its_code_and_keeps_earlier_snapshots() {
    const STORAGE_FULL: i32 = 9;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let repo = Repo::uninitialised();
    if repo.is_s3() {
        eprintln!("skipped: a full local disk is not a fault of an S3 repository");
        return;
    }
    std::fs::create_dir_all(&repo.path).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(&repo.path)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs failed");
    let _disk = SmallDisk(repo.path.clone());
    repo.ok(&["init"]);
    let small = Prng::new(20).bytes(4 << 20);
    repo.backup_bytes("h", &small);

    let mut child = repo.spawn_backup("h");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = write_stream(&mut stdin, 21, 200 << 20);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert_eq!(out.status.code(), Some(STORAGE_FULL), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(one_line_error(&out).contains("full"));

    // Only the first snapshot exists, and it restores exactly.
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 1);
    assert!(repo.ok(&["restore", "latest", "--stdout"]) == small);
    repo.json(&["repair", "index"]);
}

#[test]
fn a_damaged_manifest_is_named_and_does_not_block_the_others() {
    let repo = Repo::new();
    repo.backup_bytes("h", b"first");
    let second = repo.backup_bytes("h", b"second");
    let id = second["snapshot"].as_str().unwrap();
    flip(&repo.path.join("snapshots").join(id), 40);
    let out = repo.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(CORRUPT));
    assert!(one_line_error(&out).contains(id));
    // The readable snapshot is still listed: a header and one row.
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    // `latest` could be the damaged one: it fails loudly rather than restore an
    // older snapshot unannounced; so does the damaged one by id.
    let out = repo.run(&["restore", "latest", "--stdout"]);
    assert_eq!(out.status.code(), Some(CORRUPT));
    assert!(one_line_error(&out).contains(id));
    let out = repo.run(&["restore", &id[..10], "--stdout"]);
    assert_eq!(out.status.code(), Some(CORRUPT));
    // Other snapshots restore by id, and backups go on.
    let snaps = repo.run(&["--json", "snapshots"]);
    let snaps: serde_json::Value = serde_json::from_slice(&snaps.stdout).unwrap();
    let first = snaps[0]["id"].as_str().unwrap().to_string();
    assert_eq!(repo.ok(&["restore", &first, "--stdout"]), b"first");
    let third = repo.backup_bytes("h", b"third");
    assert_eq!(repo.ok(&["restore", third["snapshot"].as_str().unwrap(), "--stdout"]), b"third");
}

#[test]
fn a_manifest_damaged_after_it_was_catalogued_is_still_named() {
    let repo = Repo::new();
    repo.backup_bytes("h", b"first");
    let second = repo.backup_bytes("h", b"second");
    // The third backup lists (and catalogues) the second before it is damaged.
    repo.backup_bytes("h", b"third");
    let id = second["snapshot"].as_str().unwrap();
    flip(&repo.path.join("snapshots").join(id), 40);
    for args in
        [&["snapshots"][..], &["restore", "latest", "--stdout"], &["restore", &id[..10], "--stdout"], &["stats"]]
    {
        let out = repo.run(args);
        assert_eq!(out.status.code(), Some(CORRUPT), "{args:?}");
        assert!(one_line_error(&out).contains(id), "{args:?}: {}", one_line_error(&out));
    }
}

#[test]
fn a_damaged_index_object_does_not_stop_backups_and_repair_brings_it_back() {
    let repo = Repo::new();
    let data = Prng::new(30).bytes(2 << 20);
    repo.backup_bytes("h", &data);
    let index = std::fs::read_dir(repo.path.join("index")).unwrap().next().unwrap().unwrap().path();
    flip(&index, 50);
    std::fs::remove_dir_all(&repo.cache).unwrap();
    // Its chunks look unknown: a restore says what to do, a backup stores them again.
    let out = repo.run(&["restore", "latest", "--stdout"]);
    assert_eq!(out.status.code(), Some(MISSING));
    assert!(one_line_error(&out).contains("repair index"));
    repo.backup_bytes("h", &data);
    repo.json(&["repair", "index"]);
    assert!(repo.ok(&["restore", "latest", "--stdout"]) == data);
}

#[test]
fn the_password_file_is_its_first_line_and_an_empty_one_is_refused() {
    let repo = Repo::uninitialised();
    let dir = repo.scratch("pw");
    std::fs::create_dir_all(&dir).unwrap();
    let private =
        |p: &std::path::Path| std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    private(&empty);
    let out = repo.cmd(["init", "--password-file"]).arg(&empty).env_remove("DEDUPE_PASSWORD").output().unwrap();
    assert_eq!(out.status.code(), Some(USAGE), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(one_line_error(&out).contains("empty"));
    let two = dir.join("two");
    std::fs::write(&two, "first line\nsecond line\n").unwrap();
    private(&two);
    let out = repo.cmd(["init", "--password-file"]).arg(&two).env_remove("DEDUPE_PASSWORD").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = repo.cmd(["snapshots"]).env("DEDUPE_PASSWORD", "first line").output().unwrap();
    assert!(out.status.success(), "the password is the first line: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_tar_member_outside_the_backup_is_damaged_input() {
    let repo = Repo::new();
    let file = repo.scratch("abs");
    std::fs::write(&file, b"rows").unwrap();
    // GNU tar keeps the leading / with -P: a member named by an absolute path.
    let tar = std::process::Command::new("tar").arg("-cPf").arg("-").arg(&file).output().unwrap();
    assert!(tar.status.success());
    let mut child = repo.spawn_backup("t");
    let mut stdin = child.stdin.take().unwrap();
    let _ = std::io::Write::write_all(&mut stdin, &tar.stdout);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(17), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(one_line_error(&out).contains("would leave the backup directory"));
    assert!(repo.json(&["snapshots"]).as_array().unwrap().is_empty());
}
