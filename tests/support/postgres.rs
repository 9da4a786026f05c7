//! Throwaway PostgreSQL 15 servers for the integration tests, from Debian's
//! postgresql-15 binaries in [`PG_BIN`].
//!
//! A [`Server`] listens only on a unix socket in a directory of its own
//! (`listen_addresses=''`), so ports never collide, and is stopped on drop,
//! even when an assertion fails (its log is printed then). PostgreSQL refuses
//! to run as root: as root, every server tool runs as the `postgres` user.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Only names the socket file (`.s.PGSQL.<port>`): nothing listens on TCP.
pub const PORT: u16 = 5432;

/// The path of a PostgreSQL tool; asserts it is installed.
pub fn pg(tool: &str) -> PathBuf {
    let p = Path::new(PG_BIN).join(tool);
    assert!(p.exists(), "{} is missing: these tests need PostgreSQL 15 (apt-get install postgresql-15)", p.display());
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

/// The PostgreSQL tool `tool`, run as `postgres` when root, with `LC_ALL=C`.
pub fn as_postgres(tool: &str) -> Command {
    let mut c = as_postgres_cmd(&pg(tool));
    c.env("LC_ALL", "C");
    c
}

/// The same as a shell command line, for `dedupe backup --command`.
pub fn as_postgres_shell(tool: &str, args: &str) -> String {
    let tool = pg(tool);
    if is_root() {
        format!("runuser -u postgres -- {} {args}", tool.display())
    } else {
        format!("{} {args}", tool.display())
    }
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
}

impl Server {
    /// Starts a server on an existing data directory, as plain `pg_ctl start`
    /// with only the socket directory and port given on the command line.
    pub fn start(data: &Path, sock: &Path, log: &Path) -> Server {
        Server::start_with(data, sock, log, &[])
    }

    /// The same, with variables added to the server's environment.
    pub fn start_with(data: &Path, sock: &Path, log: &Path, env: &[(&str, &str)]) -> Server {
        // The guard exists before the start, so a half-started server is stopped too.
        let server = Server { data: data.to_path_buf(), sock: sock.to_path_buf(), log: log.to_path_buf() };
        let out = as_postgres("pg_ctl")
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
        let mut c = as_postgres(tool);
        c.arg("-h").arg(&self.sock).arg("-p").arg(PORT.to_string());
        c
    }

    /// Runs one statement in `db`; returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut c = self.client("psql");
        c.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql]);
        ok(c, &format!("psql {sql:?}")).trim().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let out = as_postgres("pg_ctl").arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]).output();
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
