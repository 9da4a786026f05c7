//! Secrets stay with dedupe: every kind of child (a producer, the
//! `--on-failure` hook, the database's tools, a drill's server) runs
//! without the repository passwords and the storage credentials. Each is
//! made to run `env` here (stand-in programs where the real one would
//! need a server), and what it saw is searched for the secrets.

use dedupe_suite::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const SECRETS: [(&str, &str); 4] = [
    ("DEDUPE_NEW_PASSWORD", "sekrit-new-password"),
    ("AWS_SECRET_ACCESS_KEY", "sekrit-aws-key"),
    ("AZURE_STORAGE_ACCOUNT_KEY", "sekrit-azure-key"),
    ("DEDUPE_FROM_PASSWORD", "sekrit-from-password"),
];

/// `dedupe ARGS` with every secret in its environment (the password too: `Repo::cmd`).
fn with_secrets(repo: &Repo, args: &[&std::ffi::OsStr], dump: &Path) -> std::process::Output {
    let mut c = repo.cmd(args);
    c.envs(SECRETS).env("DUMP", dump);
    c.output().unwrap()
}

/// What a child saw, asserted clean.
fn assert_clean(dump: &Path, kind: &str) {
    let seen = std::fs::read_to_string(dump.join(format!("{kind}.env")))
        .unwrap_or_else(|e| panic!("the {kind} did not run (or wrote no env): {e}"));
    assert!(seen.contains("DUMP="), "{kind}: not an env dump: {seen}");
    for (var, value) in SECRETS.iter().chain(&[("DEDUPE_PASSWORD", PASSWORD)]) {
        assert!(!seen.contains(value) && !seen.contains(&format!("{var}=")), "the {kind} saw {var}:\n{seen}");
    }
}

/// A stand-in for `tool` that writes its environment to $DUMP/<kind>.env,
/// prints `version` when asked for it, and exits `code`.
fn fake(dir: &Path, tool: &str, kind: &str, version: &str, code: i32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(tool);
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --version ]; then echo '{version}'; exit 0; fi\nenv >> \"$DUMP/{kind}.env\"\nexit {code}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn no_child_sees_a_password_or_a_storage_secret() {
    let repo = Repo::new();
    // Where the server's user (a drill runs PostgreSQL as `postgres`) can
    // run the stand-ins and write what it saw.
    let tmp = dedupe_suite::postgres::pg_tempdir();
    let dump = tmp.path().join("dump");
    std::fs::create_dir_all(&dump).unwrap();
    std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o777)).unwrap();

    // A producer, and the hook of a failed backup.
    let out = with_secrets(
        &repo,
        &[
            "backup".as_ref(),
            "--name".as_ref(),
            "db".as_ref(),
            "--command".as_ref(),
            "env > \"$DUMP/producer.env\"; printf rows".as_ref(),
        ],
        &dump,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_clean(&dump, "producer");
    // The producer's output kept with the snapshot holds no secret either.
    let log = repo.ok(&["log", "latest", "--name", "db"]);
    assert!(!String::from_utf8_lossy(&log).contains("sekrit"));
    let out = with_secrets(
        &repo,
        &[
            "--on-failure".as_ref(),
            "env > \"$DUMP/hook.env\"".as_ref(),
            "backup".as_ref(),
            "--name".as_ref(),
            "db".as_ref(),
            "--command".as_ref(),
            "exit 3".as_ref(),
        ],
        &dump,
    );
    assert_eq!(out.status.code(), Some(14));
    assert_clean(&dump, "hook");

    // The database's own tools: pg_waldump reading a pushed WAL segment.
    let bin = tmp.path().join("pgbin");
    fake(&bin, "pg_waldump", "pg_waldump", "pg_waldump (PostgreSQL) 15.0", 1);
    let seg = repo.scratch("000000010000000000000002");
    std::fs::write(&seg, vec![0u8; 1 << 20]).unwrap();
    let out = with_secrets(
        &repo,
        &[
            "--pg-bin".as_ref(),
            bin.as_os_str(),
            "wal".as_ref(),
            "push".as_ref(),
            "--name".as_ref(),
            "pg".as_ref(),
            seg.as_os_str(),
        ],
        &dump,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_clean(&dump, "pg_waldump");

    // A drill's server (pg_ctl asked its version, then started).
    let base = repo.scratch("base");
    std::fs::create_dir_all(base.join("global")).unwrap();
    std::fs::write(
        base.join("backup_label"),
        "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n",
    )
    .unwrap();
    std::fs::write(base.join("PG_VERSION"), "15\n").unwrap();
    let tar = std::process::Command::new("tar").arg("-cf").arg("-").arg("-C").arg(&base).arg(".").output().unwrap();
    repo.backup_bytes("pg", &tar.stdout);
    fake(&bin, "pg_ctl", "server", "pg_ctl (PostgreSQL) 15.0", 1);
    let scratch = repo.scratch("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let out = with_secrets(
        &repo,
        &[
            "--pg-bin".as_ref(),
            bin.as_os_str(),
            "drill".as_ref(),
            "--scratch".as_ref(),
            scratch.as_os_str(),
            "latest".as_ref(),
            "--name".as_ref(),
            "pg".as_ref(),
        ],
        &dump,
    );
    assert_eq!(
        out.status.code(),
        Some(20),
        "the stand-in server does not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean(&dump, "server");
}
