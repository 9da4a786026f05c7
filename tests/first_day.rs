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
    // A page for every command, nested ones too.
    let page = |words: &[&str]| {
        let out = std::process::Command::new(dedupe_bin()).arg("man").args(words).output().unwrap();
        assert!(out.status.success(), "{words:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let backup = page(&["backup"]);
    assert!(backup.contains(".TH dedupe-backup 1") && backup.contains("allow\\-empty"), "{backup}");
    assert!(page(&["binlog", "push"]).contains(".TH dedupe-binlog-push 1"));
    let out = std::process::Command::new(dedupe_bin()).args(["man", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
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

/// RFC 3339 with an offset: "2026-11-21T12:54:23Z", "…:23.5+01:00".
fn rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let fixed = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !fixed {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z" || (rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && &rest[3..4] == ":")
}

/// Every string under a key that names a time, anywhere in `v`.
fn times(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    const KEYS: &[&str] = &["time", "created", "from", "to", "after", "before", "first_time", "last_time", "mtime"];
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if let (true, Some(s)) = (KEYS.contains(&k.as_str()), x.as_str()) {
                    out.push((k.clone(), s.to_string()));
                }
                times(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| times(x, out)),
        _ => {}
    }
}

/// A mariabackup-like xbstream made by `mbstream -c`: the facts files a
/// real one carries (LSNs, binlog position) and one data file.
fn fake_mariabackup_stream(repo: &Repo) -> Vec<u8> {
    let dir = repo.scratch("mb");
    std::fs::create_dir_all(&dir).unwrap();
    let files: [(&str, &[u8]); 4] = [
        ("ibdata1", b"pages"),
        (
            "xtrabackup_checkpoints",
            b"backup_type = full-backuped\nfrom_lsn = 0\nto_lsn = 1234567\nlast_lsn = 1234567\n",
        ),
        ("mariadb_backup_binlog_info", b"mysql-bin.000001\t4\t0-1-1\n"),
        ("xtrabackup_info", b"tool_name = mariabackup\ntool_version = 10.11\n"),
    ];
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let out = std::process::Command::new("mbstream")
        .arg("-c")
        .args(files.iter().map(|f| f.0))
        .current_dir(&dir)
        .output()
        .expect("mbstream (mariadb-backup) is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn every_command_prints_json_with_rfc3339_times_and_the_ratios_agree() {
    let repo = Repo::uninitialised();
    // Every output, by what printed it.
    let all: std::cell::RefCell<Vec<(String, serde_json::Value)>> = Default::default();
    let json = |what: &str, args: &[&std::ffi::OsStr]| -> serde_json::Value {
        let v = repo.json(args);
        all.borrow_mut().push((what.to_string(), v.clone()));
        v
    };
    fn os<'a>(a: &[&'a str]) -> Vec<&'a std::ffi::OsStr> {
        a.iter().map(|s| std::ffi::OsStr::new(*s)).collect()
    }
    json("init", &os(&["init"]));

    // A directory into the empty repository: its ratios are the repository's.
    let data = repo.scratch("data");
    std::fs::create_dir_all(&data).unwrap();
    let copy = Prng::new(1).bytes(300_000);
    std::fs::write(data.join("a"), &copy).unwrap();
    std::fs::write(data.join("a.copy"), &copy).unwrap();
    std::fs::write(data.join("b"), b"small").unwrap();
    let mut a = os(&["backup", "--name", "dir"]);
    a.push(data.as_os_str());
    let first = json("backup (directory)", &a);
    let stats = json("stats", &os(&["stats"]));
    for r in ["dedup_ratio", "ratio"] {
        assert!(first[r].as_f64().unwrap() > 1.5, "{r}: {first}");
    }
    assert_eq!(stats["dedup_ratio"], first["dedup_ratio"], "{stats} {first}");
    assert_eq!(stats["unique_bytes"], first["new_bytes"], "{stats} {first}");

    let xbs = repo.scratch("m.xbs");
    std::fs::write(&xbs, fake_mariabackup_stream(&repo)).unwrap();
    let out =
        repo.cmd(["--json", "backup", "--name", "m", "-"]).stdin(std::fs::File::open(&xbs).unwrap()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    all.borrow_mut().push(("backup (stream)".into(), serde_json::from_slice(&out.stdout).unwrap()));
    json("backup (command)", &os(&["backup", "--name", "c", "--command", "echo rows; echo note >&2"]));
    json("snapshots", &os(&["snapshots"]));
    json("ls", &os(&["ls", "latest", "--name", "dir"]));
    json("log", &os(&["log", "latest", "--name", "c"]));
    assert_eq!(json("lsn", &os(&["lsn", "--name", "m"]))["to_lsn"], 1234567);
    let target = repo.scratch("restored");
    let mut a = os(&["restore", "latest", "--name", "m", "--target"]);
    a.push(target.as_os_str());
    json("restore", &a);
    // Where stdout carries data, the summary goes to stderr.
    let out = repo.run(&["--json", "restore", "latest", "--name", "c", "--stdout"]);
    assert_eq!(out.stdout, b"rows\n");
    all.borrow_mut().push(("restore --stdout (stderr)".into(), serde_json::from_slice(&out.stderr).unwrap()));

    // Logs: binlogs from ingest/testdata, a WAL segment.
    let binlogs = repo.scratch("binlogs");
    std::fs::create_dir_all(&binlogs).unwrap();
    let testdata = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ingest/testdata/binlog");
    for f in ["mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000003"] {
        std::fs::copy(testdata.join(f), binlogs.join(f)).unwrap();
    }
    std::fs::write(binlogs.join("mysql-bin.index"), "./mysql-bin.000001\n./mysql-bin.000002\n./mysql-bin.000003\n")
        .unwrap();
    let mut a = os(&["binlog", "push", "--name", "m", "--include-active", "--binlog-dir"]);
    a.push(binlogs.as_os_str());
    json("binlog push", &a);
    json("binlog list", &os(&["binlog", "list", "--name", "m"]));
    let mut c = repo.cmd(["--json", "binlog", "replay", "--name", "m", "--until-position", "mysql-bin.000002:400"]);
    let out = c.arg("--target").arg(&target).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("DELIMITER"));
    let replay: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(replay["files"], serde_json::json!(["mysql-bin.000001", "mysql-bin.000002"]), "{replay}");
    all.borrow_mut().push(("binlog replay (stderr)".into(), replay));
    let seg = repo.scratch("000000010000000000000003");
    std::fs::write(&seg, Prng::new(3).bytes(1 << 20)).unwrap();
    let mut a = os(&["wal", "push", "--name", "pg"]);
    a.push(seg.as_os_str());
    json("wal push", &a);
    let fetched = repo.scratch("RECOVERYXLOG");
    let mut a = os(&["wal", "fetch", "--name", "pg", "000000010000000000000003"]);
    a.push(fetched.as_os_str());
    json("wal fetch", &a);
    assert_eq!(std::fs::read(&fetched).unwrap(), std::fs::read(&seg).unwrap());

    // Archived logs count on both sides of the ratio.
    let stats = json("stats", &os(&["stats"]));
    let snaps: u64 =
        repo.json(&["snapshots"]).as_array().unwrap().iter().map(|s| s["stats"]["bytes"].as_u64().unwrap()).sum();
    let binlog_bytes: u64 = ["mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000003"]
        .iter()
        .map(|f| std::fs::metadata(binlogs.join(f)).unwrap().len())
        .sum();
    assert_eq!(stats["logs"], 4, "{stats}");
    assert_eq!(stats["logical_bytes"].as_u64().unwrap(), snaps + binlog_bytes + (1 << 20), "{stats}");

    json("timeline", &os(&["timeline"]));
    json("check", &os(&["check", "--read-data"]));
    let pw = repo.scratch("new-password");
    std::fs::write(&pw, "a second password\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut a = os(&["key", "add", "--new-password-file"]);
    a.push(pw.as_os_str());
    let key = json("key add", &a);
    json("key list", &os(&["key", "list"]));
    json("key remove", &os(&["key", "remove", key["id"].as_str().unwrap()]));
    json("catalogue rebuild", &os(&["catalogue", "rebuild"]));
    json("forget --dry-run", &os(&["forget", "--keep-last", "1", "--dry-run"]));
    json("forget", &os(&["forget", "--name", "dir", "--keep-last", "1"]));
    json("prune", &os(&["prune"]));
    json("repair index", &os(&["repair", "index"]));
    json("repair snapshots", &os(&["repair", "snapshots"]));

    let offsite = Repo::uninitialised().with_password("another password");
    offsite.ok(&["init"]);
    let mut c = offsite.cmd(["--json", "copy", "--from-repo", &repo.url, "--name", "m"]);
    let out =
        c.env("DEDUPE_FROM_PASSWORD", PASSWORD).envs(repo.storage_env().iter().map(|(k, v)| (k, v))).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    all.borrow_mut().push(("copy".into(), serde_json::from_slice(&out.stdout).unwrap()));

    let mut seen = Vec::new();
    for (what, v) in all.borrow().iter() {
        let mut t = Vec::new();
        times(v, &mut t);
        for (k, s) in t {
            assert!(rfc3339(&s), "{what}: {k} = {s:?} is not RFC 3339 with an offset");
            seen.push(format!("{what}.{k}"));
        }
    }
    // The walk found the times it should have.
    for expected in
        ["backup (directory).time", "ls.mtime", "binlog list.first_time", "timeline.from", "key list.created"]
    {
        assert!(seen.iter().any(|s| s == expected), "{expected} not among {seen:?}");
    }

    // completion and man print a script or a page: --json is refused, not ignored.
    let out = std::process::Command::new(dedupe_bin()).args(["--json", "completion", "bash"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
