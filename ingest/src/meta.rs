//! Backup metadata read from the files a backup tool puts in its stream:
//! binlog coordinates, LSNs and tool versions from mariabackup/xtrabackup,
//! WAL locations and timeline from pg_basebackup's `backup_label`, and the
//! replication coordinates a mysqldump `--master-data` header carries.
//!
//! Everything lands in the snapshot manifest's `metadata` as plain JSON, so
//! the catalogue and `dedupe snapshots` can show it without reading files.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Files worth reading, and how much of them to keep.
const INTERESTING: &[&str] = &[
    "xtrabackup_binlog_info",
    "mariadb_backup_binlog_info",
    "xtrabackup_checkpoints",
    "mariadb_backup_checkpoints",
    "xtrabackup_info",
    "mariadb_backup_info",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    // Its first 8 bytes are the cluster's system identifier (little-endian).
    "global/pg_control",
];
const KEEP: usize = 64 * 1024;

/// The head of every interesting file seen so far.
#[derive(Default)]
pub struct Captured {
    files: BTreeMap<String, Vec<u8>>,
}

impl Captured {
    /// Offers a piece of `path` at `offset`; keeps it if the file matters.
    pub fn offer(&mut self, path: &str, offset: u64, data: &[u8]) {
        if !INTERESTING.contains(&path) {
            return;
        }
        let kept = self.files.entry(path.to_string()).or_default();
        if offset as usize == kept.len() && kept.len() < KEEP {
            let n = (KEEP - kept.len()).min(data.len());
            kept.extend_from_slice(&data[..n]);
        }
    }

    fn text(&self, names: &[&str]) -> Option<String> {
        names.iter().find_map(|n| self.files.get(*n)).map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// The metadata these files give, keyed `mysql` or `postgresql`.
    pub fn metadata(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut my = Map::new();
        if let Some(t) = self.text(&["mariadb_backup_binlog_info", "xtrabackup_binlog_info"]) {
            my.extend(binlog_info(&t));
        }
        if let Some(t) = self.text(&["mariadb_backup_checkpoints", "xtrabackup_checkpoints"]) {
            let kv = key_values(&t);
            for (k, to) in [
                ("backup_type", "backup_type"),
                ("from_lsn", "from_lsn"),
                ("to_lsn", "to_lsn"),
                ("last_lsn", "last_lsn"),
            ] {
                if let Some(v) = kv.get(k) {
                    my.insert(to.into(), number_or_string(v));
                }
            }
        }
        if let Some(t) = self.text(&["mariadb_backup_info", "xtrabackup_info"]) {
            let kv = key_values(&t);
            for k in [
                "tool_name",
                "tool_version",
                "server_version",
                "start_time",
                "end_time",
                "uuid",
                "partial",
                "incremental",
            ] {
                if let Some(v) = kv.get(k) {
                    my.insert(k.into(), json!(v));
                }
            }
        }
        if !my.is_empty() {
            let server = my.get("server_version").and_then(Value::as_str).unwrap_or_default();
            let db = if server.contains("MariaDB") || my.get("tool_name").and_then(Value::as_str) == Some("mariabackup")
            {
                "mariadb"
            } else {
                "mysql"
            };
            out.insert("database".into(), json!(db));
            out.insert("mysql".into(), Value::Object(my));
        }
        if let Some(t) = self.text(&["backup_label"]) {
            let mut pg = backup_label(&t);
            pg.insert("backup_manifest".into(), json!(self.files.contains_key("backup_manifest")));
            pg.insert("tablespace_map".into(), json!(self.files.contains_key("tablespace_map")));
            if let Some(id) = self.files.get("global/pg_control").and_then(|b| b.get(..8)) {
                let id = u64::from_le_bytes(id.try_into().expect("8 bytes"));
                // A string: it does not fit a JSON double.
                pg.insert("system_identifier".into(), json!(id.to_string()));
            }
            out.insert("database".into(), json!("postgresql"));
            out.insert("postgresql".into(), Value::Object(pg));
        }
        out
    }
}

fn number_or_string(v: &str) -> Value {
    v.parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(v))
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
pub fn binlog_info(text: &str) -> Map<String, Value> {
    let mut m = Map::new();
    let line = text.lines().next().unwrap_or_default();
    let mut f = line.split('\t');
    if let (Some(file), Some(pos)) = (f.next(), f.next()) {
        m.insert("binlog_file".into(), json!(file.trim()));
        m.insert("binlog_position".into(), number_or_string(pos.trim()));
        if let Some(g) = f.next().map(str::trim).filter(|g| !g.is_empty()) {
            m.insert("gtid".into(), json!(g));
        }
    }
    m
}

/// pg_basebackup's `backup_label`.
pub fn backup_label(text: &str) -> Map<String, Value> {
    let mut m = Map::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(": ") else { continue };
        let v = v.trim();
        match k {
            "START WAL LOCATION" => {
                let lsn = v.split_whitespace().next().unwrap_or_default();
                m.insert("start_wal_location".into(), json!(lsn));
                if let Some(file) = v.split("(file ").nth(1).map(|s| s.trim_end_matches(')')) {
                    m.insert("start_wal_file".into(), json!(file));
                }
            }
            "CHECKPOINT LOCATION" => {
                m.insert("checkpoint_location".into(), json!(v));
            }
            "START TIMELINE" => {
                m.insert("timeline".into(), number_or_string(v));
            }
            "START TIME" => {
                m.insert("start_time".into(), json!(v));
            }
            "BACKUP METHOD" => {
                m.insert("backup_method".into(), json!(v));
            }
            "BACKUP FROM" => {
                m.insert("backup_from".into(), json!(v));
            }
            "LABEL" => {
                m.insert("label".into(), json!(v));
            }
            _ => {}
        }
    }
    m
}

/// Replication coordinates from the head of a mysqldump: `CHANGE MASTER TO`
/// (or `CHANGE REPLICATION SOURCE TO`) file and position, commented or not,
/// and the GTID state (`gtid_slave_pos` for MariaDB, `GTID_PURGED` for MySQL).
pub fn mysqldump_head(text: &str) -> Map<String, Value> {
    let mut m = Map::new();
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
                m.insert("binlog_file".into(), json!(f));
            }
            if let Some(p) = grab(line, "MASTER_LOG_POS").or_else(|| grab(line, "SOURCE_LOG_POS")) {
                m.insert("binlog_position".into(), number_or_string(&p));
            }
        } else if line.contains("gtid_slave_pos") || line.contains("GTID_PURGED") {
            // The last quoted string: MySQL 8 writes `/*!80000 '+'*/ '<set>'`.
            if let Some(j) = line.rfind('\'') {
                if let Some(i) = line[..j].rfind('\'') {
                    m.insert("gtid".into(), json!(line[i + 1..j].replace(['\n', ' '], "")));
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
    }

    #[test]
    fn mysqldump_coordinates() {
        let head = "-- MariaDB dump 10.19\n--\n-- Position to start replication or point-in-time recovery from\n--\n\n-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000004', MASTER_LOG_POS=50986589;\n\n-- SET GLOBAL gtid_slave_pos='0-1-64653';\n";
        let m = mysqldump_head(head);
        assert_eq!(m["binlog_file"], "mysql-bin.000004");
        assert_eq!(m["binlog_position"], 50986589);
        assert_eq!(m["gtid"], "0-1-64653");
        let mysql8 = "CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='binlog.000002', SOURCE_LOG_POS=157;\nSET @@GLOBAL.GTID_PURGED=/*!80000 '+'*/ '3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5';\n";
        let m = mysqldump_head(mysql8);
        assert_eq!(m["binlog_file"], "binlog.000002");
        assert_eq!(m["binlog_position"], 157);
        assert_eq!(m["gtid"], "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5");
    }
}
