//! The short lock a filesystem snapshot of a running MariaDB/MySQL server
//! is taken under, held by one client session (the `mariadb` client as a
//! child, fed statements on its stdin): MariaDB's `BACKUP STAGE
//! BLOCK_COMMIT`, else `FLUSH TABLES WITH READ LOCK`; the binlog
//! coordinates read while it holds; released by `release`, or by the
//! server when the session ends: if this process dies, the client sees its
//! stdin close and quits, and the lock goes with its connection.

use crate::error::Result;
use crate::session::Session;
use std::process::Command;
use std::time::{Duration, Instant};

/// How to reach the server (`backup --mysql-*`); the client's own defaults otherwise.
#[derive(Clone, Debug, Default)]
pub struct MysqlConn {
    pub defaults_file: Option<String>,
    pub socket: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
}

impl MysqlConn {
    fn args(&self) -> Vec<String> {
        // --defaults-file must come first.
        let mut a: Vec<String> = self.defaults_file.iter().map(|f| format!("--defaults-file={f}")).collect();
        a.extend(self.socket.iter().map(|s| format!("--socket={s}")));
        a.extend(self.host.iter().map(|h| format!("--host={h}")));
        a.extend(self.port.iter().map(|p| format!("--port={p}")));
        a.extend(self.user.iter().map(|u| format!("--user={u}")));
        a
    }
}

/// Where the server's history stood while the lock held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coordinates {
    pub server_version: String,
    pub mariadb: bool,
    pub binlog_file: Option<String>,
    pub binlog_position: Option<u64>,
    pub gtid: Option<String>,
    /// On a replica: the primary's binlog coordinates the replica had
    /// executed up to, and its GTID position (to build a new replica).
    pub primary_binlog_file: Option<String>,
    pub primary_binlog_position: Option<u64>,
    pub primary_gtid: Option<String>,
}

pub struct MysqlLock {
    session: Session,
    mariadb: bool,
    locked_at: Instant,
}

impl MysqlLock {
    /// Connects, takes the lock and reads the coordinates.
    pub fn acquire(conn: &MysqlConn) -> Result<(MysqlLock, Coordinates)> {
        let client = crate::tool::require(&["mariadb", "mysql"])?;
        let mut cmd = Command::new(&client);
        dedupe_ingest::secrets::scrub(&mut cmd);
        cmd.args(conn.args()).args(["--batch", "--skip-column-names", "--unbuffered", "--raw"]);
        let session = Session::start(cmd, "the snapshot lock")?;
        let mut lock = MysqlLock { session, mariadb: false, locked_at: Instant::now() };
        let version = lock.query("SELECT VERSION()")?.join("");
        lock.mariadb = version.contains("MariaDB");
        let mut c = Coordinates { server_version: version, mariadb: lock.mariadb, ..Default::default() };
        // A long-running statement or DDL must not hold the snapshot (and every writer) for long.
        lock.query("SET SESSION lock_wait_timeout = 60")?;
        if lock.mariadb {
            lock.query("BACKUP STAGE START")?;
            lock.query("BACKUP STAGE FLUSH")?;
            lock.query("BACKUP STAGE BLOCK_DDL")?;
            lock.locked_at = Instant::now();
            lock.query("BACKUP STAGE BLOCK_COMMIT")?;
        } else {
            lock.locked_at = Instant::now();
            lock.query("FLUSH TABLES WITH READ LOCK")?;
        }
        if let Some(row) = lock.query("SHOW MASTER STATUS")?.first() {
            let mut f = row.split('\t');
            c.binlog_file = f.next().filter(|s| !s.is_empty()).map(str::to_string);
            c.binlog_position = f.next().and_then(|p| p.parse().ok());
        }
        let gtid_var = if lock.mariadb { "@@GLOBAL.gtid_binlog_pos" } else { "@@GLOBAL.gtid_executed" };
        c.gtid = lock.query(&format!("SELECT {gtid_var}"))?.join("").trim().to_string().into();
        c.gtid = c.gtid.filter(|g| !g.is_empty() && g != "NULL");
        // On a replica, where it stands in its primary's binlog.
        for line in lock.query("SHOW SLAVE STATUS\\G")? {
            let Some((k, v)) = line.split_once(':') else { continue };
            let v = v.trim();
            match k.trim() {
                "Relay_Master_Log_File" if !v.is_empty() => c.primary_binlog_file = Some(v.to_string()),
                "Exec_Master_Log_Pos" => c.primary_binlog_position = v.parse().ok(),
                "Gtid_Slave_Pos" | "Executed_Gtid_Set" if !v.is_empty() => c.primary_gtid = Some(v.to_string()),
                _ => {}
            }
        }
        if c.primary_binlog_file.is_none() {
            c.primary_binlog_position = None;
            c.primary_gtid = None;
        }
        Ok((lock, c))
    }

    fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        self.session.query(sql)
    }

    /// Releases the lock; how long writes were blocked.
    pub fn release(mut self) -> Result<Duration> {
        let stmt = if self.mariadb { "BACKUP STAGE END" } else { "UNLOCK TABLES" };
        self.query(stmt)?;
        let held = self.locked_at.elapsed();
        drop(self);
        Ok(held)
    }
}
