//! What a new user meets on the first day: the environment means the same
//! in every command, and output cut short by its reader is not an error.

use dedupe_suite::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

const CLOSED_PIPE: i32 = 141;

#[test]
fn dedupe_name_is_the_backups_name_as_it_is_the_logs() {
    let repo = Repo::new();
    let mut child = repo
        .cmd(["--json", "backup", "-"])
        .env("DEDUPE_NAME", "db-primary")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"some bytes").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let snaps = repo.json(&["snapshots"]);
    assert_eq!(snaps[0]["name"], "db-primary", "{snaps}");
    // And a reading command with DEDUPE_NAME set finds it as `latest` of that name.
    let out = repo.cmd(["restore", "latest", "--stdout"]).env("DEDUPE_NAME", "db-primary").output().unwrap();
    assert_eq!(out.stdout, b"some bytes", "{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `args`, reads `keep` bytes of its stdout, closes the pipe, and
/// returns the exit code and stderr.
fn cut_short(repo: &Repo, args: &[&str], keep: usize) -> (Option<i32>, String) {
    let mut child = repo.cmd(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut got = Vec::new();
    while got.len() < keep {
        let buf = out.fill_buf().unwrap();
        assert!(!buf.is_empty(), "the output ended before {keep} bytes");
        let n = buf.len().min(keep - got.len());
        got.extend_from_slice(&buf[..n]);
        out.consume(n);
    }
    drop(out);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (child.wait().unwrap().code(), err)
}

#[test]
fn a_reader_that_closes_the_pipe_ends_the_command_quietly() {
    let repo = Repo::new();
    // Enough files that `ls` writes far more than a pipe holds.
    let dir = repo.scratch("many");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..3000 {
        std::fs::write(dir.join(format!("file-with-a-long-name-{i:05}.dat")), format!("{i}")).unwrap();
    }
    repo.ok(&[std::ffi::OsStr::new("backup"), "--name".as_ref(), "h".as_ref(), dir.as_os_str()]);
    let (code, err) = cut_short(&repo, &["ls", "latest"], 100);
    assert!(code == Some(CLOSED_PIPE) || code == Some(0), "ls | head: exit {code:?}, stderr {err:?}");
    assert!(err.is_empty(), "ls | head says nothing: {err:?}");

    repo.backup_bytes("s", &Prng::new(1).bytes(8 << 20));
    let (code, err) = cut_short(&repo, &["restore", "latest", "--name", "s", "--stdout"], 10);
    assert!(code == Some(CLOSED_PIPE) || code == Some(0), "restore --stdout | head: exit {code:?}, stderr {err:?}");
    assert!(err.is_empty(), "restore --stdout | head says nothing: {err:?}");
}

/// Mode bits of every file and directory under `dir` (itself included), by kind.
fn modes(dir: &std::path::Path) -> (std::collections::BTreeSet<u32>, std::collections::BTreeSet<u32>) {
    use std::os::unix::fs::PermissionsExt;
    let (mut dirs, mut files) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        dirs.insert(std::fs::metadata(&d).unwrap().permissions().mode() & 0o777);
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                todo.push(e.path());
            } else {
                files.insert(m.permissions().mode() & 0o777);
            }
        }
    }
    (dirs, files)
}

#[test]
fn a_new_repository_and_its_cache_are_private_unless_asked_otherwise() {
    let repo = Repo::uninitialised_local();
    repo.ok(&["init"]);
    repo.backup_bytes("h", b"secret rows");
    let (dirs, files) = modes(&repo.path);
    assert_eq!(dirs, [0o700].into(), "repository folders");
    assert_eq!(files, [0o600].into(), "repository objects");
    let (cache_dirs, _) = modes(&repo.cache);
    assert_eq!(cache_dirs, [0o700].into(), "cache folders");

    let shared = Repo::uninitialised_local();
    shared.ok(&["init", "--group-readable"]);
    shared.backup_bytes("h", b"rows the archive_command's group may read");
    let (dirs, files) = modes(&shared.path);
    assert_eq!(dirs, [0o750].into(), "group-readable repository folders");
    assert_eq!(files, [0o640].into(), "group-readable repository objects");
}

#[test]
fn json_is_printed_by_the_commands_that_used_to_ignore_it() {
    let repo = Repo::new();
    repo.ok(&["backup", "--name", "h", "--command", "echo rows; echo 'a producer note' >&2"]);
    let log = repo.json(&["log", "latest"]);
    assert!(log["log"].as_str().unwrap().contains("a producer note"), "{log}");
    let rebuilt = repo.json(&["catalogue", "rebuild"]);
    assert_eq!(rebuilt["snapshots"], 1, "{rebuilt}");
    let seg = repo.scratch("000000010000000000000003");
    std::fs::write(&seg, Prng::new(3).bytes(1 << 20)).unwrap();
    let pushed = repo.json(&["wal".as_ref(), "push".as_ref(), "--name".as_ref(), "pg".as_ref(), seg.as_os_str()]);
    assert_eq!(pushed["stored"], true, "{pushed}");
    let again = repo.json(&["wal".as_ref(), "push".as_ref(), "--name".as_ref(), "pg".as_ref(), seg.as_os_str()]);
    assert_eq!(again["stored"], false, "{again}");
}

#[test]
fn completion_and_man_page_come_from_the_command_definitions_without_a_repository() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(dedupe_bin()).args(["completion", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("dedupe") && script.contains("forget") && script.contains("keep-pitr"), "{shell}");
    }
    let out = std::process::Command::new(dedupe_bin()).arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH dedupe 1") && page.contains("restore"), "{page}");
    // -r is --repo.
    let repo = Repo::new();
    let out = std::process::Command::new(dedupe_bin())
        .args(["-r", &repo.url, "snapshots"])
        .envs(repo.storage_env().iter().map(|(k, v)| (k, v)))
        .env("DEDUPE_PASSWORD", PASSWORD)
        .env("DEDUPE_CACHE_DIR", &repo.cache)
        .env_remove("DEDUPE_REPO")
        .output()
        .unwrap();
    assert!(out.status.success(), "-r is --repo: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn ctrl_c_mid_backup_says_nothing_was_committed_and_exits_130() {
    let repo = Repo::new();
    repo.backup_bytes("h", b"an earlier backup");
    let mut child = repo.spawn_backup("h");
    let mut stdin = child.stdin.take().unwrap();
    // Some data in, the stream still open: the backup is under way.
    stdin.write_all(&Prng::new(9).bytes(4 << 20)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let kill = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let err = one_line_error(&out);
    assert!(err.contains("interrupted") && err.contains("no snapshot was committed"), "{err}");
    assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 1, "nothing committed");
}
