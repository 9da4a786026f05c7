//! Backup metadata read from the files a backup tool puts in its stream:
//! binlog coordinates, LSNs and tool versions from mariabackup/xtrabackup,
//! WAL locations and timeline from pg_basebackup's `backup_label`, and the
//! replication coordinates a mysqldump `--master-data` header carries.
//!
//! Everything lands in the snapshot manifest's `metadata` as typed facts
//! (`facts::SnapshotFacts`), so the catalogue and `dedupe snapshots` can
//! show it without reading files.

use crate::facts::{Database, MysqlFacts, PgFacts, SnapshotFacts};
use serde_json::Value;
use std::collections::BTreeMap;

/// Files worth reading, and how much of them to keep.
const INTERESTING: &[&str] = &[
    "xtrabackup_binlog_info",
    "mariadb_backup_binlog_info",
    "xtrabackup_checkpoints",
    "mariadb_backup_checkpoints",
    "xtrabackup_info",
    "mariadb_backup_info",
    // --slave-info on a replica: the primary's coordinates.
    "xtrabackup_slave_info",
    "mariadb_backup_slave_info",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    // Its first 8 bytes are the cluster's system identifier (little-endian).
    "global/pg_control",
    // The major version of the server that wrote the data directory.
    "PG_VERSION",
];
const KEEP: usize = 64 * 1024;
/// backup_manifest ends with the WAL range the backup needs; its head is
/// one line per file, so only its tail is kept.
const MANIFEST_TAIL: usize = 4096;

/// The head of every interesting file seen so far.
#[derive(Default)]
pub struct Captured {
    files: BTreeMap<String, Vec<u8>>,
    /// A PostgreSQL incremental built into a full: the LSN it was taken
    /// from, and the snapshot it was built on.
    built_on: Option<(String, String)>,
}

impl Captured {
    /// Offers a piece of `path` at `offset`; keeps it if the file matters.
    pub fn offer(&mut self, path: &str, offset: u64, data: &[u8]) {
        if !INTERESTING.contains(&path) {
            return;
        }
        let kept = self.files.entry(path.to_string()).or_default();
        if path == "backup_manifest" {
            kept.extend_from_slice(&data[data.len().saturating_sub(MANIFEST_TAIL)..]);
            let extra = kept.len().saturating_sub(MANIFEST_TAIL);
            kept.drain(..extra);
            return;
        }
        if offset as usize == kept.len() && kept.len() < KEEP {
            let n = (KEEP - kept.len()).min(data.len());
            kept.extend_from_slice(&data[..n]);
        }
    }

    /// Records that the stream is an incremental from `lsn` built on snapshot `id`.
    pub fn built_on(&mut self, lsn: &str, id: &str) {
        self.built_on = Some((lsn.to_string(), id.to_string()));
    }

    fn text(&self, names: &[&str]) -> Option<String> {
        names.iter().find_map(|n| self.files.get(*n)).map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// The facts these files give.
    pub fn facts(&self) -> SnapshotFacts {
        let mut out = SnapshotFacts::default();
        let mut my = MysqlFacts::default();
        if let Some(t) = self.text(&["mariadb_backup_binlog_info", "xtrabackup_binlog_info"]) {
            my = binlog_info(&t);
        }
        if let Some(t) = self.text(&["mariadb_backup_checkpoints", "xtrabackup_checkpoints"]) {
            let kv = key_values(&t);
            let num = |k: &str| kv.get(k).and_then(|v| v.parse().ok());
            my.backup_type = kv.get("backup_type").cloned();
            my.from_lsn = num("from_lsn");
            my.to_lsn = num("to_lsn");
            my.last_lsn = num("last_lsn");
        }
        if let Some(t) = self.text(&["mariadb_backup_info", "xtrabackup_info"]) {
            let kv = key_values(&t);
            let get = |k: &str| kv.get(k).cloned();
            my.tool_name = get("tool_name");
            my.tool_version = get("tool_version");
            my.server_version = get("server_version");
            my.start_time = get("start_time");
            my.end_time = get("end_time");
            my.uuid = get("uuid");
            my.partial = get("partial");
            my.incremental = get("incremental");
        }
        if let Some(t) = self.text(&["mariadb_backup_slave_info", "xtrabackup_slave_info"]) {
            // `CHANGE MASTER TO MASTER_LOG_FILE='…', MASTER_LOG_POS=…;` and/or
            // `SET GLOBAL gtid_slave_pos = '…';`, as a dump's header has them.
            let primary = mysqldump_head(&t);
            my.primary_binlog_file = primary.binlog_file;
            my.primary_binlog_position = primary.binlog_position;
            my.primary_gtid = primary.gtid;
        }
        if my != MysqlFacts::default() {
            let mariadb = my.server_version.as_deref().unwrap_or_default().contains("MariaDB")
                || my.tool_name.as_deref() == Some("mariabackup");
            out.database = Some(if mariadb { Database::Mariadb } else { Database::Mysql });
            out.mysql = Some(my);
        }
        if let Some(t) = self.text(&["backup_label"]) {
            let mut pg = backup_label(&t);
            pg.backup_manifest = Some(self.files.contains_key("backup_manifest"));
            pg.tablespace_map = Some(self.files.contains_key("tablespace_map"));
            pg.stop_wal_location = self.text(&["backup_manifest"]).as_deref().and_then(manifest_end_lsn);
            if let Some((lsn, id)) = &self.built_on {
                pg.incremental_from_lsn = Some(lsn.clone());
                pg.built_on = Some(id.clone());
            }
            pg.version = self.text(&["PG_VERSION"]).and_then(|v| v.trim().split('.').next()?.parse().ok());
            if let Some(id) = self.files.get("global/pg_control").and_then(|b| b.get(..8)) {
                pg.system_identifier = Some(u64::from_le_bytes(id.try_into().expect("8 bytes")).to_string());
            }
            out.database = Some(Database::Postgresql);
            out.postgresql = Some(pg);
        }
        out
    }

    /// The facts as manifest metadata.
    pub fn metadata(&self) -> BTreeMap<String, Value> {
        self.facts().to_metadata()
    }
}

/// `key = value` lines.
pub fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// `mysql-bin.000003<TAB>342<TAB>0-1-3001` (GTID optional).
pub fn binlog_info(text: &str) -> MysqlFacts {
    let mut m = MysqlFacts::default();
    let line = text.lines().next().unwrap_or_default();
    let mut f = line.split('\t');
    if let (Some(file), Some(pos)) = (f.next(), f.next()) {
        m.binlog_file = Some(file.trim().to_string());
        m.binlog_position = pos.trim().parse().ok();
        m.gtid = f.next().map(str::trim).filter(|g| !g.is_empty()).map(str::to_string);
    }
    m
}

/// pg_basebackup's `backup_label`.
pub fn backup_label(text: &str) -> PgFacts {
    let mut m = PgFacts::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(": ") else { continue };
        let v = v.trim().to_string();
        match k {
            "START WAL LOCATION" => {
                m.start_wal_location = v.split_whitespace().next().map(str::to_string);
                m.start_wal_file = v.split("(file ").nth(1).map(|s| s.trim_end_matches(')').to_string());
            }
            "CHECKPOINT LOCATION" => m.checkpoint_location = Some(v),
            "START TIMELINE" => m.timeline = v.parse().ok(),
            "START TIME" => m.start_time = Some(v),
            "BACKUP METHOD" => m.backup_method = Some(v),
            "BACKUP FROM" => m.backup_from = Some(v),
            "LABEL" => m.label = Some(v),
            "INCREMENTAL FROM LSN" => m.incremental_from_lsn = Some(v),
            _ => {}
        }
    }
    if let (Some(file), Some(lsn)) = (&m.start_wal_file, &m.start_wal_location) {
        m.wal_segment_size = segment_size_of(file, lsn);
    }
    m
}

/// The WAL segment size (initdb --wal-segsize: a power of two from 1 MiB to
/// 1 GiB) under which `lsn` lies in segment file `file`, if exactly one does.
fn segment_size_of(file: &str, lsn: &str) -> Option<u64> {
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    if file.len() != 24 || !file.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (log, seg) = (hex(&file[8..16])?, hex(&file[16..])?);
    let (hi, lo) = lsn.split_once('/')?;
    let lsn = (hex(hi)? << 32) | hex(lo)?;
    let mut fits = (20..=30).map(|b| 1u64 << b).filter(|size| {
        let per_log = (1u64 << 32) / size;
        seg < per_log && lsn / size == log * per_log + seg
    });
    let size = fits.next()?;
    fits.next().is_none().then_some(size)
}

/// The `End-LSN` of backup_manifest's last WAL range.
fn manifest_end_lsn(tail: &str) -> Option<String> {
    let i = tail.rfind("\"End-LSN\"")?;
    let rest = &tail[i + "\"End-LSN\"".len()..];
    let start = rest.find('"')? + 1;
    let end = start + rest[start..].find('"')?;
    Some(rest[start..end].to_string())
}

/// Replication coordinates from the head of a mysqldump: `CHANGE MASTER TO`
/// (or `CHANGE REPLICATION SOURCE TO`) file and position, commented or not,
/// and the GTID state (`gtid_slave_pos` for MariaDB, `GTID_PURGED` for MySQL).
pub fn mysqldump_head(text: &str) -> MysqlFacts {
    let mut m = MysqlFacts::default();
    let grab = |line: &str, key: &str| -> Option<String> {
        let i = line.find(key)? + key.len();
        let rest = line[i..].trim_start_matches(['=', ' ']);
        let rest = rest.trim_start_matches('\'');
        let end = rest.find(['\'', ',', ';']).unwrap_or(rest.len());
        Some(rest[..end].trim().to_string())
    };
    for line in text.lines() {
        if line.contains("CHANGE MASTER TO") || line.contains("CHANGE REPLICATION SOURCE TO") {
            if let Some(f) = grab(line, "MASTER_LOG_FILE").or_else(|| grab(line, "SOURCE_LOG_FILE")) {
                m.binlog_file = Some(f);
            }
            if let Some(p) = grab(line, "MASTER_LOG_POS").or_else(|| grab(line, "SOURCE_LOG_POS")) {
                m.binlog_position = p.parse().ok();
            }
        } else if line.contains("gtid_slave_pos") || line.contains("GTID_PURGED") {
            // The last quoted string: MySQL 8 writes `/*!80000 '+'*/ '<set>'`.
            if let Some(j) = line.rfind('\'') {
                if let Some(i) = line[..j].rfind('\'') {
                    m.gtid = Some(line[i + 1..j].replace(['\n', ' '], ""));
                }
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicas_slave_info_gives_the_primarys_coordinates() {
        let mut c = Captured::default();
        c.offer("xtrabackup_binlog_info", 0, b"replica-bin.000002\t900\t0-2-10\n");
        c.offer(
            "mariadb_backup_slave_info",
            0,
            b"SET GLOBAL gtid_slave_pos = '0-1-3001';\nCHANGE MASTER TO master_use_gtid = slave_pos;\nCHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000003', MASTER_LOG_POS=342;\n",
        );
        let my = c.facts().mysql.unwrap();
        assert_eq!(my.binlog_file.as_deref(), Some("replica-bin.000002"));
        assert_eq!(my.primary_binlog_file.as_deref(), Some("mysql-bin.000003"));
        assert_eq!(my.primary_binlog_position, Some(342));
        assert_eq!(my.primary_gtid.as_deref(), Some("0-1-3001"));
    }

    #[test]
    fn mariabackup_files() {
        let mut c = Captured::default();
        c.offer("xtrabackup_binlog_info", 0, b"mysql-bin.000003\t342\t0-1-3001\n");
        c.offer(
            "xtrabackup_checkpoints",
            0,
            b"backup_type = full-backuped\nfrom_lsn = 0\nto_lsn = 2112808720\nlast_lsn = 2112808736\n",
        );
        c.offer("xtrabackup_info", 0, b"tool_name = mariabackup\nserver_version = 10.11.19-MariaDB-0+deb12u1-log\nstart_time = 2026-11-21 05:01:29\n");
        let m = c.metadata();
        assert_eq!(m["database"], "mariadb");
        let my = &m["mysql"];
        assert_eq!(c.facts().binlog_start(), Some(("mysql-bin.000003", Some(342))));
        assert_eq!(my["binlog_file"], "mysql-bin.000003");
        assert_eq!(my["binlog_position"], 342);
        assert_eq!(my["gtid"], "0-1-3001");
        assert_eq!(my["backup_type"], "full-backuped");
        assert_eq!(my["to_lsn"], 2112808720u64);
        assert_eq!(my["start_time"], "2026-11-21 05:01:29");
    }

    #[test]
    fn backup_label_fields() {
        let mut c = Captured::default();
        c.offer(
            "backup_label",
            0,
            b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-21 05:00:00 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n",
        );
        let m = c.metadata();
        let pg = &m["postgresql"];
        assert_eq!(pg["start_wal_location"], "0/2000028");
        assert_eq!(pg["start_wal_file"], "000000010000000000000002");
        assert_eq!(pg["checkpoint_location"], "0/2000060");
        assert_eq!(pg["timeline"], 1);
        assert_eq!(pg["backup_manifest"], false);
        assert_eq!(pg["wal_segment_size"], 16 << 20);
    }

    #[test]
    fn mysqldump_coordinates() {
        let head = "-- MariaDB dump 10.19\n--\n-- Position to start replication or point-in-time recovery from\n--\n\n-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000004', MASTER_LOG_POS=50986589;\n\n-- SET GLOBAL gtid_slave_pos='0-1-64653';\n";
        let m = mysqldump_head(head);
        assert_eq!(m.binlog_file.as_deref(), Some("mysql-bin.000004"));
        assert_eq!(m.binlog_position, Some(50986589));
        assert_eq!(m.gtid.as_deref(), Some("0-1-64653"));
        let mysql8 = "CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='binlog.000002', SOURCE_LOG_POS=157;\nSET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5';\n";
        let m = mysqldump_head(mysql8);
        assert_eq!(m.binlog_file.as_deref(), Some("binlog.000002"));
        assert_eq!(m.binlog_position, Some(157));
        assert_eq!(m.gtid.as_deref(), Some("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5"));
    }

    #[test]
    fn segment_size_from_a_start_file_and_lsn() {
        assert_eq!(segment_size_of("000000010000000000000002", "0/2000028"), Some(16 << 20));
        assert_eq!(segment_size_of("000000010000000000000001", "0/4000028"), Some(64 << 20));
        assert_eq!(segment_size_of("000000010000000100000001", "1/4000028"), Some(64 << 20));
        assert_eq!(segment_size_of("000000010000000000000002", "0/9000028"), Some(64 << 20));
        assert_eq!(segment_size_of("000000010000000000000002", "0/7000028"), None);
        // Not hex (and not ASCII): no answer, no panic.
        assert_eq!(segment_size_of("0000000100000000000000\u{e9}", "0/2000028"), None);
    }

    #[test]
    fn backup_manifest_end_lsn() {
        let mut c = Captured::default();
        let tail = "{ \"Path\": \"x\" },\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n\"Manifest-Checksum\": \"ab\"}\n";
        c.offer("backup_manifest", 0, &vec![b' '; 10_000]);
        c.offer("backup_manifest", 10_000, tail.as_bytes());
        c.offer(
            "backup_label",
            0,
            b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n",
        );
        let pg = c.facts().postgresql.unwrap();
        assert_eq!(pg.stop_wal_location.as_deref(), Some("0/2000100"));
        assert_eq!(pg.backup_manifest, Some(true));
    }
}
