//! Typed facts: what a snapshot and an archived log know about the database
//! they came from. Ingest writes them into a manifest's `metadata`, recovery
//! and the command line read them back by name; nobody looks up
//! `metadata["mysql"]["binlog_file"]` by hand.
//!
//! The JSON is the one earlier versions wrote (format-spec §18 and §19): the
//! same keys, the same nesting. Reading is lenient where old manifests may
//! differ: each top-level key is read on its own, an integer written as a
//! decimal string is accepted (anything else reads as absent), and a key
//! this version does not know is ignored.

use crate::binlog::BinlogFacts;
use dedupe_store::Manifest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_with::skip_serializing_none;
use std::collections::BTreeMap;

/// The server a snapshot is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Database {
    Mariadb,
    Mysql,
    Postgresql,
}

impl Database {
    pub fn is_mysql_family(self) -> bool {
        matches!(self, Database::Mariadb | Database::Mysql)
    }
}

/// What a snapshot knows: how it arrived and where in the server's history it stands.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SnapshotFacts {
    /// `xbstream`, `tar`, `directory`, `mysqldump`, `pg_dump`, `pg_dump_custom`, `raw`.
    pub format: Option<String>,
    /// The producer `backup --command` ran.
    pub command: Option<String>,
    /// The whole-stream compression taken off the input (`decompress`):
    /// `gzip`, `zstd`, `lz4`, `xz`; the snapshot holds the stream decompressed.
    pub compression: Option<String>,
    pub database: Option<Database>,
    pub mysql: Option<MysqlFacts>,
    pub postgresql: Option<PgFacts>,
    /// A backup of a filesystem snapshot of a running server's data directory.
    pub snapshot: Option<FsSnapshotFacts>,
}

/// How a `backup --snapshot` was taken.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FsSnapshotFacts {
    /// `btrfs`, `lvm`, `zfs`.
    pub provider: Option<String>,
    /// The data directory on the server.
    pub datadir: Option<String>,
    /// How long the server's writes (commits) were blocked, in seconds.
    pub locked_seconds: Option<f64>,
    /// How the lock was taken: `BACKUP STAGE BLOCK_COMMIT`, `FLUSH TABLES WITH READ LOCK`, `pg_backup_start`.
    pub lock: Option<String>,
}

/// A MariaDB/MySQL backup: mariabackup/xtrabackup's own files, or a
/// `--master-data` dump's header.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MysqlFacts {
    /// Binlog coordinates of the backup's consistent point.
    pub binlog_file: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub binlog_position: Option<u64>,
    pub gtid: Option<String>,
    /// `full-backuped`, `incremental`, ... (xtrabackup_checkpoints).
    pub backup_type: Option<String>,
    /// InnoDB LSNs: an incremental holds the changes from `from_lsn` to `to_lsn`.
    #[serde(deserialize_with = "lenient")]
    pub from_lsn: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub to_lsn: Option<u64>,
    #[serde(deserialize_with = "lenient")]
    pub last_lsn: Option<u64>,
    /// From xtrabackup_info.
    pub tool_name: Option<String>,
    pub tool_version: Option<String>,
    pub server_version: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub uuid: Option<String>,
    pub partial: Option<String>,
    pub incremental: Option<String>,
    /// Taken on a replica: the primary's binlog coordinates it had executed
    /// up to, and its GTID position, to start a new replica from the backup.
    pub primary_binlog_file: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub primary_binlog_position: Option<u64>,
    pub primary_gtid: Option<String>,
}

impl MysqlFacts {
    pub fn is_incremental(&self) -> bool {
        self.backup_type.as_deref() == Some("incremental")
    }
}

/// A PostgreSQL base backup, from its `backup_label` (and `global/pg_control`).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PgFacts {
    /// The LSN recovery starts from, and the WAL file holding it.
    pub start_wal_location: Option<String>,
    pub start_wal_file: Option<String>,
    /// Where the backup ends (backup_manifest's WAL-Ranges), when it says.
    pub stop_wal_location: Option<String>,
    pub checkpoint_location: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub timeline: Option<u64>,
    /// The cluster's WAL segment size, worked out from the start file's name
    /// and LSN (they agree on one power of two only).
    #[serde(deserialize_with = "lenient")]
    pub wal_segment_size: Option<u64>,
    pub start_time: Option<String>,
    pub backup_method: Option<String>,
    pub backup_from: Option<String>,
    pub label: Option<String>,
    /// Whether the stream held a backup_manifest / tablespace_map.
    pub backup_manifest: Option<bool>,
    pub tablespace_map: Option<bool>,
    /// pg_control's system identifier, as a string (it does not fit a JSON double).
    pub system_identifier: Option<String>,
    /// The server's major version (the data directory's `PG_VERSION`).
    #[serde(deserialize_with = "lenient_u32")]
    pub version: Option<u32>,
    /// A `pg_basebackup --incremental`: the start LSN of the backup it was
    /// taken against (its label's `INCREMENTAL FROM LSN`).
    pub incremental_from_lsn: Option<String>,
    /// The stored snapshot it was combined with into the full it is
    /// (`pgincr`). An incremental without one was stored as it came
    /// (before dedupe combined them): no data directory, nor a base.
    pub built_on: Option<String>,
}

impl PgFacts {
    /// An incremental stored as it came, not combined into a full.
    pub fn is_uncombined_incremental(&self) -> bool {
        self.incremental_from_lsn.is_some() && self.built_on.is_none()
    }
}

impl SnapshotFacts {
    /// The facts a snapshot manifest records.
    pub fn of(m: &Manifest) -> SnapshotFacts {
        SnapshotFacts::from_metadata(&m.metadata)
    }

    /// Reads each top-level key on its own, so one odd value does not lose the others.
    pub fn from_metadata(md: &BTreeMap<String, Value>) -> SnapshotFacts {
        SnapshotFacts {
            format: field(md, "format"),
            command: field(md, "command"),
            compression: field(md, "compression"),
            database: field(md, "database"),
            mysql: field(md, "mysql"),
            postgresql: field(md, "postgresql"),
            snapshot: field(md, "snapshot"),
        }
    }

    /// The manifest metadata these facts are written as.
    pub fn to_metadata(&self) -> BTreeMap<String, Value> {
        match serde_json::to_value(self).expect("facts serialize") {
            Value::Object(m) => m.into_iter().collect(),
            _ => unreachable!("a struct serializes to an object"),
        }
    }

    /// `format`, or `raw` when none was recorded.
    pub fn format(&self) -> &str {
        self.format.as_deref().unwrap_or("raw")
    }

    /// An incremental mariabackup/xtrabackup snapshot.
    pub fn is_incremental(&self) -> bool {
        self.mysql.as_ref().is_some_and(MysqlFacts::is_incremental)
    }

    /// The binlog file a MariaDB/MySQL base starts replay from.
    pub fn binlog_start(&self) -> Option<(&str, Option<u64>)> {
        let my = self.mysql.as_ref()?;
        Some((my.binlog_file.as_deref()?, my.binlog_position))
    }

    /// The WAL file and timeline a PostgreSQL base starts recovery from.
    pub fn wal_start(&self) -> Option<(&str, u64)> {
        let pg = self.postgresql.as_ref()?;
        Some((pg.start_wal_file.as_deref()?, pg.timeline.unwrap_or(1)))
    }
}

/// What kind of log an archived file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    Binlog,
    Wal,
}

impl LogKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::Binlog => "binlog",
            LogKind::Wal => "wal",
        }
    }
}

/// What an archived log file's manifest records (format-spec §19).
#[derive(Clone, Debug, PartialEq)]
pub struct LogFacts {
    pub kind: LogKind,
    /// The file's own name (`mysql-bin.000012`, `000000010000000000000003`).
    pub file: String,
    pub size: u64,
    /// BLAKE3 of the bytes stored, hex: the same name and bytes again is a no-op.
    pub blake3: String,
    /// An incomplete copy, superseded by a complete one: a binlog stored while
    /// active, or one that does not end with a whole rotate or stop event.
    pub partial: bool,
    /// Unix seconds.
    pub archived_at: i64,
    /// What the file's content says.
    pub detail: LogDetail,
}

/// The content facts of an archived log, by kind.
#[derive(Clone, Debug, PartialEq)]
pub enum LogDetail {
    Binlog(BinlogFacts),
    Wal(WalFacts),
    /// Facts this version cannot read (or none): the file is still fetchable.
    Unknown,
}

impl LogFacts {
    /// The facts of a log manifest, or `None` if it names no kind and file.
    pub fn of(m: &Manifest) -> Option<LogFacts> {
        let md = &m.metadata;
        let kind: LogKind = field(md, "kind")?;
        let facts = md.get("facts").cloned().unwrap_or(Value::Null);
        let detail = match kind {
            LogKind::Binlog => serde_json::from_value(facts).map(LogDetail::Binlog),
            LogKind::Wal => serde_json::from_value(facts).map(LogDetail::Wal),
        };
        Some(LogFacts {
            kind,
            file: field(md, "file")?,
            size: field(md, "size").unwrap_or(0),
            blake3: field(md, "blake3").unwrap_or_default(),
            partial: field(md, "partial").unwrap_or(false),
            archived_at: field(md, "archived_at").unwrap_or(0),
            detail: detail.unwrap_or(LogDetail::Unknown),
        })
    }

    pub fn to_metadata(&self) -> BTreeMap<String, Value> {
        let facts = match &self.detail {
            LogDetail::Binlog(b) => serde_json::to_value(b).expect("facts serialize"),
            LogDetail::Wal(w) => serde_json::to_value(w).expect("facts serialize"),
            LogDetail::Unknown => Value::Null,
        };
        BTreeMap::from([
            ("kind".into(), Value::from(self.kind.as_str())),
            ("file".into(), Value::from(self.file.clone())),
            ("size".into(), Value::from(self.size)),
            ("blake3".into(), Value::from(self.blake3.clone())),
            ("partial".into(), Value::from(self.partial)),
            ("archived_at".into(), Value::from(self.archived_at)),
            ("facts".into(), facts),
        ])
    }

    pub fn binlog(&self) -> Option<&BinlogFacts> {
        match &self.detail {
            LogDetail::Binlog(b) => Some(b),
            _ => None,
        }
    }

    pub fn wal(&self) -> Option<&WalFacts> {
        match &self.detail {
            LogDetail::Wal(w) => Some(w),
            _ => None,
        }
    }
}

/// What a WAL archive file is, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WalFileType {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`: a WAL segment.
    Segment,
    /// `TTTTTTTT.history`: a timeline history file.
    History,
    /// `…​.XXXXXXXX.backup`: a backup history file.
    Backup,
    /// `…​.partial`: the last, incomplete segment of a timeline.
    Partial,
    #[serde(other)]
    Other,
}

/// An archived WAL file: where it stands (timeline, segment, LSNs) and the
/// commit times inside, which decide whether it reaches a recovery target.
#[skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalFacts {
    #[serde(rename = "type")]
    pub kind: WalFileType,
    pub timeline: Option<u64>,
    /// Segment number from the start of WAL (not the file name's last 8 digits).
    pub segment: Option<u64>,
    pub segment_size: Option<u64>,
    pub start_lsn: Option<String>,
    pub end_lsn: Option<String>,
    /// The cluster's system identifier from the segment's first page header,
    /// as a string (it does not fit a JSON double).
    pub system_identifier: Option<String>,
    /// Unix seconds of the first and last commit (or abort) record.
    /// `None`: nobody could tell (no pg_waldump that reads it);
    /// `Some(None)`: read, and it holds no commit.
    #[serde(default, deserialize_with = "present")]
    pub first_commit_time: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    pub last_commit_time: Option<Option<i64>>,
}

impl WalFacts {
    /// Facts of a file that is not WAL.
    pub fn other() -> WalFacts {
        WalFacts {
            kind: WalFileType::Other,
            timeline: None,
            segment: None,
            segment_size: None,
            start_lsn: None,
            end_lsn: None,
            system_identifier: None,
            first_commit_time: None,
            last_commit_time: None,
        }
    }
}

fn field<T: DeserializeOwned>(md: &BTreeMap<String, Value>, key: &str) -> Option<T> {
    md.get(key).and_then(|v| T::deserialize(v).ok())
}

/// A number, or a string holding one; anything else reads as absent.
fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn lenient_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(lenient(d)?.and_then(|v| u32::try_from(v).ok()))
}

/// A key that is present (even as null) is `Some`; an absent one `None` (serde's default).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn old_snapshot_metadata_reads_by_name() {
        let md: BTreeMap<String, Value> = serde_json::from_value(json!({
            "format": "xbstream",
            "database": "mariadb",
            "mysql": {"binlog_file": "mysql-bin.000003", "binlog_position": 342, "gtid": "0-1-3001",
                      "backup_type": "incremental", "from_lsn": 100, "to_lsn": "200", "tool_name": "mariabackup"},
        }))
        .unwrap();
        let f = SnapshotFacts::from_metadata(&md);
        assert_eq!(f.database, Some(Database::Mariadb));
        assert_eq!(f.binlog_start(), Some(("mysql-bin.000003", Some(342))));
        assert!(f.is_incremental());
        let my = f.mysql.as_ref().unwrap();
        assert_eq!((my.from_lsn, my.to_lsn), (Some(100), Some(200)));
        // Written back, the same keys.
        let back = f.to_metadata();
        assert_eq!(back["mysql"]["binlog_position"], 342);
        assert_eq!(back["format"], "xbstream");
    }

    #[test]
    fn an_odd_value_loses_only_itself() {
        let md: BTreeMap<String, Value> =
            serde_json::from_value(json!({"database": "oracle", "postgresql": {"timeline": "x", "start_wal_file": "000000010000000000000002"}}))
                .unwrap();
        let f = SnapshotFacts::from_metadata(&md);
        assert_eq!(f.database, None);
        assert_eq!(f.wal_start(), Some(("000000010000000000000002", 1)));
    }

    #[test]
    fn wal_commit_times_keep_unknown_apart_from_none() {
        let m = |facts: Value| {
            let md: BTreeMap<String, Value> = serde_json::from_value(json!({
                "kind": "wal", "file": "000000010000000000000002", "size": 16777216, "blake3": "ab",
                "partial": false, "archived_at": 1, "facts": facts,
            }))
            .unwrap();
            let lf = LogFacts::of(&Manifest { metadata: md, ..test_manifest() }).unwrap();
            (lf.wal().unwrap().last_commit_time, lf.to_metadata())
        };
        let (t, md) = m(json!({"type": "segment", "timeline": 1, "segment": 2}));
        assert_eq!(t, None);
        assert!(md["facts"].get("last_commit_time").is_none());
        let (t, md) = m(json!({"type": "segment", "last_commit_time": null}));
        assert_eq!(t, Some(None));
        assert_eq!(md["facts"]["last_commit_time"], Value::Null);
        assert_eq!(m(json!({"type": "segment", "last_commit_time": 7})).0, Some(Some(7)));
    }

    fn test_manifest() -> Manifest {
        serde_json::from_value(json!({
            "version": 1, "name": "pg", "time": "2026-11-21T05:00:00Z", "hostname": "h", "username": "u",
            "source": "wal", "tree": "00", "stats": {"files": 1, "bytes": 0, "bytes_read": 0, "files_unchanged": 0,
            "chunks": 0, "new_chunks": 0, "new_bytes": 0, "new_bytes_stored": 0, "packs_written": 0, "seconds": 0.0}
        }))
        .unwrap()
    }
}
