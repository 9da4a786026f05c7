//! The session a filesystem snapshot of a running PostgreSQL cluster is
//! taken in: `pg_backup_start` (a fast checkpoint), the snapshot, then
//! `pg_backup_stop`, whose backup label and tablespace map go into the
//! backup, never into the live data directory. One `psql` child holds the
//! session (a non-exclusive backup lives as long as its session): if this
//! process dies, psql sees its stdin close and quits, and the server
//! forgets the backup.

use crate::error::{Error, Result};
use crate::session::Session;
use std::process::Command;

/// What `pg_backup_stop` returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stopped {
    /// The backup's end LSN.
    pub lsn: String,
    /// The `backup_label` the backup needs.
    pub label: String,
    /// The `tablespace_map` (empty without tablespaces).
    pub tablespace_map: String,
}

pub struct PgBackup {
    session: Session,
    /// PostgreSQL 15 renamed the functions.
    v15: bool,
}

impl PgBackup {
    /// Connects (`conn`: a libpq connection string, else the `PG*`
    /// environment) and starts a non-exclusive backup with a fast checkpoint.
    pub fn start(conn: Option<&str>) -> Result<PgBackup> {
        let psql = crate::tool::which(&["psql"])
            .map(|p| p.display().to_string())
            .or_else(|| {
                // Debian keeps the server's tools out of PATH.
                let mut bins: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
                    .ok()?
                    .flatten()
                    .map(|e| e.path().join("bin/psql"))
                    .collect();
                bins.sort();
                bins.into_iter().rev().find(|p| p.is_file()).map(|p| p.display().to_string())
            })
            .ok_or_else(|| Error::Tool("psql is not installed".into()))?;
        let mut cmd = Command::new(&psql);
        dedupe_ingest::secrets::scrub(&mut cmd);
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"]);
        if let Some(c) = conn {
            cmd.args(["-d", c]);
        }
        let mut s = PgBackup { session: Session::start(cmd, "the PostgreSQL backup")?, v15: true };
        let version: u32 = s.query("SHOW server_version_num")?.join("").trim().parse().unwrap_or(0);
        s.v15 = version >= 150000;
        let start = if s.v15 {
            "SELECT pg_backup_start('dedupe snapshot', true)"
        } else {
            "SELECT pg_start_backup('dedupe snapshot', true, false)"
        };
        s.query(start)?;
        Ok(s)
    }

    fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        self.session.query(sql)
    }

    /// Ends the backup, waiting until the WAL it needs is archived; the
    /// label and map come back hex-encoded (they hold newlines).
    pub fn stop(mut self) -> Result<Stopped> {
        let sql = if self.v15 {
            "SELECT lsn, encode(convert_to(labelfile, 'UTF8'), 'hex'), encode(convert_to(coalesce(spcmapfile, ''), 'UTF8'), 'hex') FROM pg_backup_stop(true)"
        } else {
            "SELECT lsn, encode(convert_to(labelfile, 'UTF8'), 'hex'), encode(convert_to(coalesce(spcmapfile, ''), 'UTF8'), 'hex') FROM pg_stop_backup(false, true)"
        };
        let row = self.query(sql)?.join("");
        let mut f = row.split('|');
        let (Some(lsn), Some(label), Some(map)) = (f.next(), f.next(), f.next()) else {
            return Err(Error::Tool(format!("pg_backup_stop returned {row:?}")));
        };
        let text = |h: &str| -> Result<String> {
            let bytes: Option<Vec<u8>> =
                (0..h.len()).step_by(2).map(|i| h.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect();
            bytes
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| Error::Tool("pg_backup_stop: a label that is not hex".into()))
        };
        Ok(Stopped { lsn: lsn.to_string(), label: text(label)?, tablespace_map: text(map)? })
    }
}
