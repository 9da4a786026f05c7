//! Restore drills: a throwaway server started on a restored data directory
//! (its own socket directory and a free loopback port, as the right user),
//! and every table of it checked: `CHECK TABLE` and `CHECKSUM TABLE` (which
//! reads every row) for MariaDB/MySQL; `pg_amcheck` and a `pg_dump` of
//! every database (which reads every row) for PostgreSQL. A failure names
//! the table, or the server's own last words when it died on the data.

use crate::error::{Error, Result};
use dedupe_ingest::facts::Database;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A check that found something wrong with the restored data (not with the tools).
#[derive(Debug)]
pub struct Failed(pub String);

/// What the checks covered.
#[derive(Debug)]
pub struct Checked {
    pub tables: usize,
    /// A check the server could not run, and why (a build without the
    /// amcheck extension): every row was still read.
    pub not_checked: Option<String>,
}

/// How long a server may take to start (crash recovery, WAL replay).
const START_TIMEOUT: Duration = Duration::from_secs(600);

fn is_root() -> bool {
    // SAFETY: a plain getter.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of `user`, if it exists.
fn user(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    // SAFETY: non-null, as checked.
    (!pw.is_null()).then(|| unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// Gives `dir` and everything below it to `owner`.
fn chown_all(dir: &Path, owner: (u32, u32)) -> Result<()> {
    let err = |p: &Path, e: std::io::Error| Error::Storage(format!("cannot chown {}: {e}", p.display()));
    std::os::unix::fs::lchown(dir, Some(owner.0), Some(owner.1)).map_err(|e| err(dir, e))?;
    if std::fs::symlink_metadata(dir).map_err(|e| err(dir, e))?.is_dir() {
        for e in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
            chown_all(&e.map_err(|e| err(dir, e))?.path(), owner)?;
        }
    }
    Ok(())
}

/// A free loopback port.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Tool(format!("no free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| Error::Tool(format!("no free port: {e}")))?.port())
}

/// A server's last words, for an error: the lines that say why (PostgreSQL's
/// `FATAL`, `PANIC`, `ERROR`, `HINT`, MariaDB's `[ERROR]`), a few of the
/// newest, then the log's last three lines.
fn tail(log: &Path) -> String {
    last_words(&std::fs::read_to_string(log).unwrap_or_default())
}

fn last_words(text: &str) -> String {
    const WHY: [&str; 6] = ["FATAL:", "PANIC:", "ERROR:", "HINT:", "DETAIL:", "[ERROR]"];
    let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    let last = lines.len().saturating_sub(3);
    let mut why: Vec<&str> = lines[..last].iter().copied().filter(|l| WHY.iter().any(|w| l.contains(w))).collect();
    why.drain(..why.len().saturating_sub(6));
    why.into_iter().chain(lines[last..].iter().copied()).collect::<Vec<_>>().join(" | ")
}

/// The binary log a data directory was written with, if any: a filesystem
/// snapshot of a running server may hold transactions prepared in InnoDB
/// whose fate only that binlog decides, and the server refuses to start
/// without it. A mariabackup copy has no binlog index; it starts without one.
fn binlog_args(datadir: &Path) -> Vec<String> {
    let index = std::fs::read_dir(datadir).ok().and_then(|d| {
        d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).find(|n| {
            n.ends_with(".index")
                && std::fs::read_to_string(datadir.join(n)).is_ok_and(|t| t.lines().any(|l| !l.is_empty()))
        })
    });
    match index {
        Some(n) => vec![format!("--log-bin={}", n.trim_end_matches(".index")), "--server-id=1".into()],
        None => vec!["--skip-log-bin".into()],
    }
}

/// A server running on a restored data directory; stopped when dropped.
pub struct Server {
    pub database: Database,
    pub datadir: PathBuf,
    /// Its socket's directory (and, for MariaDB, the socket is `sock` inside it).
    pub run: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    /// mariadbd, run in the foreground as our child.
    child: Option<Child>,
    /// PostgreSQL's binaries (of the data's version) and who runs them.
    pg_bin: PathBuf,
    as_postgres: bool,
    /// Whether the server keeps the storage credentials: a point-in-time
    /// drill's, whose `restore_command` is dedupe reading the archive.
    keeps_storage: bool,
}

impl Server {
    /// Starts the right server on `datadir`; `run` is a new directory for
    /// its socket and log. Waits until it answers (PostgreSQL: promoted, when it was recovering to a target).
    /// `pg` are PostgreSQL's programs for the data (`pgbin::for_datadir`);
    /// `restores` says it fetches archived WAL (`restore_command`), and so
    /// keeps the storage credentials (never a password: `secrets`).
    pub fn start(
        database: Database,
        datadir: &Path,
        run: &Path,
        pg: Option<&crate::pgbin::PgBin>,
        restores: bool,
    ) -> Result<Server> {
        std::fs::create_dir_all(run).map_err(|e| Error::Storage(format!("cannot create {}: {e}", run.display())))?;
        let port = free_port()?;
        let log = run.join("server.log");
        let mut s = Server {
            database,
            datadir: datadir.to_path_buf(),
            run: run.to_path_buf(),
            port,
            log,
            child: None,
            pg_bin: pg.map(|p| p.dir.clone()).unwrap_or_default(),
            as_postgres: false,
            keeps_storage: restores,
        };
        match database {
            Database::Postgresql => s.start_pg()?,
            _ => s.start_mysql()?,
        }
        Ok(s)
    }

    fn start_mysql(&mut self) -> Result<()> {
        let bin = crate::tool::require(&["mariadbd", "mysqld"])?;
        // As root, the server runs as `mysql` when that user exists, as DBAs do.
        let mut runas = "root".to_string();
        if is_root() {
            if let Some(owner) = user("mysql") {
                chown_all(&self.datadir, owner)?;
                chown_all(&self.run, owner)?;
                runas = "mysql".into();
            }
        }
        let child = dedupe_ingest::secrets::scrub(&mut Command::new(&bin))
            .arg("--no-defaults")
            .arg(format!("--user={runas}"))
            .arg(format!("--datadir={}", self.datadir.display()))
            .arg(format!("--socket={}", self.run.join("sock").display()))
            .arg(format!("--pid-file={}", self.run.join("pid").display()))
            .arg(format!("--log-error={}", self.log.display()))
            .arg(format!("--tmpdir={}", self.run.display()))
            .arg(format!("--port={}", self.port))
            .args(["--bind-address=127.0.0.1", "--skip-slave-start", "--innodb-buffer-pool-size=128M"])
            .args(binlog_args(&self.datadir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Tool(format!("cannot run {bin}: {e}")))?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if self.mysql(&["-e", "SELECT 1"]).is_ok() {
                return Ok(());
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(Error::Tool(format!("{bin} exited ({st}) while starting: {}", tail(&self.log))));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::Tool(format!(
                    "{bin} did not answer within {} s: {}",
                    START_TIMEOUT.as_secs(),
                    tail(&self.log)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The MariaDB client on this server's socket with `args`; its output, or its error.
    pub fn mysql(&self, args: &[&str]) -> std::result::Result<String, String> {
        let client = crate::tool::require(&["mariadb", "mysql"]).map_err(|e| e.to_string())?;
        let out = dedupe_ingest::secrets::scrub(&mut Command::new(&client))
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.run.join("sock").display()))
            .args(["-uroot", "--batch", "--skip-column-names"])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(dedupe_ingest::producer::last_line(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command for this server's PostgreSQL tool `tool`, as the server's
    /// user, without dedupe's secrets (`secrets`).
    fn pg(&self, tool: &str) -> Command {
        let mut c = self.pg_keeping_storage(tool);
        dedupe_ingest::secrets::scrub(&mut c);
        c
    }

    /// The same keeping the storage credentials when the server restores
    /// (`keeps_storage`): its `restore_command` is dedupe reading the archive.
    fn pg_keeping_storage(&self, tool: &str) -> Command {
        let program = self.pg_bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        dedupe_ingest::secrets::scrub_passwords(&mut c);
        if !self.keeps_storage {
            dedupe_ingest::secrets::scrub(&mut c);
        }
        c
    }

    fn start_pg(&mut self) -> Result<()> {
        if self.pg_bin.as_os_str().is_empty() {
            return Err(Error::Tool("no PostgreSQL programs were given for the drill's server".into()));
        }
        // PostgreSQL refuses to run as root.
        if is_root() {
            let owner = user("postgres")
                .ok_or_else(|| Error::Tool("there is no `postgres` user to run the server as".into()))?;
            chown_all(&self.datadir, owner)?;
            chown_all(&self.run, owner)?;
            self.as_postgres = true;
        }
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.datadir, std::fs::Permissions::from_mode(0o700));
        let opts =
            format!("-c listen_addresses='' -c port={} -k {} -c archive_mode=off", self.port, self.run.display());
        let out = self
            .pg_keeping_storage("pg_ctl")
            .arg("-D")
            .arg(&self.datadir)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", &START_TIMEOUT.as_secs().to_string(), "-o", &opts, "start"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Tool(format!("cannot run pg_ctl: {e}")))?;
        if !out.status.success() {
            return Err(Error::Tool(format!("pg_ctl start failed: {}", tail(&self.log))));
        }
        // Recovering to a target: wait for the promotion.
        let started = Instant::now();
        while self.psql("postgres", "SELECT pg_is_in_recovery()").map_err(Error::Tool)? != "f" {
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::Tool(format!(
                    "the server was still recovering after {} s: {}",
                    START_TIMEOUT.as_secs(),
                    tail(&self.log)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// One query's output (unaligned, no headers), or the error.
    pub fn psql(&self, db: &str, sql: &str) -> std::result::Result<String, String> {
        let out = self
            .pg("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.run)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(dedupe_ingest::producer::last_line(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Checks every table; how many (and what could not be checked), or what is wrong.
    pub fn check(&self) -> Result<std::result::Result<Checked, Failed>> {
        match self.database {
            Database::Postgresql => self.check_pg(),
            _ => Ok(self.check_mysql()?.map(|tables| Checked { tables, not_checked: None })),
        }
    }

    fn check_mysql(&self) -> Result<std::result::Result<usize, Failed>> {
        let died = |what: &str, e: String| Failed(format!("{what}: {e} (server log: {})", tail(&self.log)));
        let tables = match self.mysql(&[
            "-e",
            "SELECT CONCAT('`', table_schema, '`.`', table_name, '`') FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('information_schema', 'performance_schema', 'sys')",
        ]) {
            Ok(t) => t,
            Err(e) => return Ok(Err(died("listing the tables failed", e))),
        };
        let tables: Vec<&str> = tables.lines().filter(|l| !l.is_empty()).collect();
        for t in &tables {
            // CHECK TABLE's rows: table, op, msg_type, msg_text; an error or a
            // status other than OK is a finding.
            let out = match self.mysql(&["-e", &format!("CHECK TABLE {t}; CHECKSUM TABLE {t}")]) {
                Ok(o) => o,
                Err(e) => return Ok(Err(died(&format!("checking {t} failed"), e))),
            };
            for row in out.lines() {
                let f: Vec<&str> = row.split('\t').collect();
                if f.len() == 4 && (f[2] == "error" || (f[2] == "status" && f[3] != "OK")) {
                    return Ok(Err(Failed(format!("CHECK TABLE {t}: {}", f[3]))));
                }
            }
        }
        Ok(Ok(tables.len()))
    }

    fn check_pg(&self) -> Result<std::result::Result<Checked, Failed>> {
        let dbs = match self.psql("postgres", "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1") {
            Ok(d) => d,
            Err(e) => return Ok(Err(Failed(format!("listing the databases failed: {e}")))),
        };
        // A server built without contrib has no amcheck: the structure goes
        // unchecked (and the report says so), the rows are still all read.
        let amcheck = self.psql("postgres", "SELECT count(*) FROM pg_available_extensions WHERE name = 'amcheck'");
        let not_checked = (amcheck.as_deref() == Ok("0")).then(|| {
            "heap and index structure (this server has no amcheck extension: install its contrib package)".to_string()
        });
        let mut tables = 0;
        for db in dbs.lines().filter(|l| !l.is_empty()) {
            let n = self.psql(db, "SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'm') AND relpersistence = 'p'");
            tables += n.ok().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
            if not_checked.is_some() {
                if let Err(f) = self.read_every_row(db)? {
                    return Ok(Err(f));
                }
                continue;
            }
            // Heap and index structure, with amcheck installed into the throwaway copy.
            let out = self
                .pg("pg_amcheck")
                .args(["--install-missing", "--heapallindexed", "-h"])
                .arg(&self.run)
                .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
                .output()
                .map_err(|e| Error::Tool(format!("cannot run pg_amcheck: {e}")))?;
            if !out.status.success() {
                let said = String::from_utf8_lossy(&out.stdout);
                let first = said.lines().map(str::trim).filter(|l| !l.is_empty()).take(2).collect::<Vec<_>>().join(" ");
                let why = if first.is_empty() { dedupe_ingest::producer::last_line(&out.stderr) } else { first };
                return Ok(Err(Failed(format!("pg_amcheck on database {db}: {why}"))));
            }
            if let Err(f) = self.read_every_row(db)? {
                return Ok(Err(f));
            }
        }
        Ok(Ok(Checked { tables, not_checked }))
    }

    /// Every row of `db` read: a damaged page or TOAST value fails the dump, naming the table.
    fn read_every_row(&self, db: &str) -> Result<std::result::Result<(), Failed>> {
        let out = self
            .pg("pg_dump")
            .args(["-h"])
            .arg(&self.run)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-f", "/dev/null"])
            .output()
            .map_err(|e| Error::Tool(format!("cannot run pg_dump: {e}")))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| l.contains("error"))
                .take(2)
                .collect::<Vec<_>>()
                .join(" | ");
            return Ok(Err(Failed(format!("reading every row of database {db}: {why}"))));
        }
        Ok(Ok(()))
    }
}

/// A MariaDB/MySQL client on `server`'s socket, as root, for SQL on its stdin.
pub fn client_for(server: &Server) -> Result<Command> {
    let client = crate::tool::require(&["mariadb", "mysql"])?;
    let mut c = Command::new(client);
    dedupe_ingest::secrets::scrub(&mut c);
    c.arg("--no-defaults").arg(format!("--socket={}", server.run.join("sock").display())).arg("-uroot");
    Ok(c)
}

impl Drop for Server {
    fn drop(&mut self) {
        match self.database {
            Database::Postgresql => {
                let _ = self.pg("pg_ctl").arg("-D").arg(&self.datadir).args(["-m", "immediate", "-w", "stop"]).output();
            }
            _ => {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::last_words;

    #[test]
    fn a_failed_start_keeps_the_lines_that_say_why() {
        let log = "\
2026-12-07 10:00:00 UTC [1] LOG:  starting PostgreSQL 18.6
2026-12-07 10:00:00 UTC [1] FATAL:  this is an incremental backup, not a data directory
2026-12-07 10:00:00 UTC [1] HINT:  Use pg_combinebackup to reconstruct a valid data directory.
2026-12-07 10:00:00 UTC [1] LOG:  startup process (PID 2) exited with exit code 1
2026-12-07 10:00:00 UTC [1] LOG:  aborting startup due to startup process failure
2026-12-07 10:00:00 UTC [1] LOG:  database system is shut down
";
        let w = last_words(log);
        assert!(
            w.contains("FATAL:  this is an incremental backup") && w.contains("HINT:  Use pg_combinebackup"),
            "{w}"
        );
        assert!(w.ends_with("database system is shut down"), "{w}");
        // Short logs are kept whole, once.
        assert_eq!(last_words("a\nFATAL: b\n"), "a | FATAL: b");
    }
}
