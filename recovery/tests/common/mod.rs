//! Manifests built in memory for the recovery tests (`plan.rs`,
//! `retention.rs`): bases, incrementals, binlogs and WAL files with the
//! facts ingest would record, and an in-memory catalogue of them.
#![allow(dead_code)]

use dedupe_ingest::binlog::BinlogFacts;
use dedupe_ingest::facts::{Database, LogDetail, LogFacts, LogKind, MysqlFacts, PgFacts, SnapshotFacts, WalFacts};
use dedupe_recovery::wal::name_facts;
use dedupe_store::{Catalogue, Manifest, Stats};
use jiff::Timestamp;
use std::sync::atomic::{AtomicU64, Ordering};

pub const DB: &str = "db1";
pub const MIB16: u64 = 16 << 20;
pub const MIB64: u64 = 64 << 20;
/// 2026-11-21T05:00:00Z.
pub const T0: i64 = 1_795_237_200;

/// `minutes` after T0.
pub fn at(minutes: i64) -> Timestamp {
    Timestamp::from_second(T0 + minutes * 60).unwrap()
}

/// One second after `t`.
pub fn just_after(t: Timestamp) -> Timestamp {
    t.checked_add(jiff::SignedDuration::from_secs(1)).unwrap()
}

pub fn unix32(t: Timestamp) -> u32 {
    t.as_second().try_into().unwrap()
}

/// A manifest as the catalogue holds it, under its object name.
#[derive(Clone, Debug)]
pub struct Obj {
    pub id: String,
    pub object: String,
    pub manifest: Manifest,
}

/// A fresh 64-hex-digit id whose first eight digits differ from the others'.
pub fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{n:048x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

pub fn manifest(time: Timestamp, metadata: std::collections::BTreeMap<String, serde_json::Value>) -> Manifest {
    Manifest {
        version: 1,
        name: DB.into(),
        time: time.to_string(),
        hostname: "dbhost".into(),
        username: "backup".into(),
        source: "stdin".into(),
        tree: "00".repeat(32),
        log: None,
        parent: None,
        original: None,
        stats: Stats::default(),
        metadata,
    }
}

pub fn snapshot(time: Timestamp, facts: SnapshotFacts) -> Obj {
    let id = new_id();
    Obj { object: format!("snapshots/{id}"), id, manifest: manifest(time, facts.to_metadata()) }
}

pub fn log(archived_at: Timestamp, facts: LogFacts) -> Obj {
    let id = new_id();
    Obj { object: format!("logs/{id}"), id, manifest: manifest(archived_at, facts.to_metadata()) }
}

/// A full mariabackup of DB at `time`, whose consistent point is `file`:`position`.
pub fn maria_base(time: Timestamp, file: &str, position: u64) -> Obj {
    snapshot(
        time,
        SnapshotFacts {
            format: Some("xbstream".into()),
            command: Some("mariabackup --backup --stream=xbstream".into()),
            compression: None,
            database: Some(Database::Mariadb),
            mysql: Some(MysqlFacts {
                binlog_file: Some(file.into()),
                binlog_position: Some(position),
                backup_type: Some("full-backuped".into()),
                from_lsn: Some(0),
                tool_name: Some("mariabackup".into()),
                ..Default::default()
            }),
            postgresql: None,
            snapshot: None,
        },
    )
}

/// An incremental mariabackup holding the changes from LSN `from` to `to`.
pub fn maria_incr(time: Timestamp, file: &str, position: u64, from: u64, to: u64) -> Obj {
    maria_base(time, file, position).edit_snapshot(|f| {
        let my = f.mysql.as_mut().unwrap();
        my.backup_type = Some("incremental".into());
        my.from_lsn = Some(from);
        my.to_lsn = Some(to);
    })
}

/// A PostgreSQL base backup whose backup_label starts at `start_file` on
/// `timeline`, in a cluster of 16 MiB segments.
pub fn pg_base(time: Timestamp, start_file: &str, timeline: u64) -> Obj {
    snapshot(
        time,
        SnapshotFacts {
            format: Some("tar".into()),
            command: Some("pg_basebackup -Ft -D -".into()),
            compression: None,
            database: Some(Database::Postgresql),
            mysql: None,
            postgresql: Some(PgFacts {
                start_wal_file: Some(start_file.into()),
                timeline: Some(timeline),
                wal_segment_size: Some(MIB16),
                backup_method: Some("streamed".into()),
                ..Default::default()
            }),
            snapshot: None,
        },
    )
}

/// A mysqldump taken without --master-data: no binlog coordinates.
pub fn dump_without_coordinates(time: Timestamp) -> Obj {
    snapshot(
        time,
        SnapshotFacts {
            format: Some("mysqldump".into()),
            database: Some(Database::Mariadb),
            mysql: Some(MysqlFacts::default()),
            ..Default::default()
        },
    )
}

/// A raw stream: nothing known about it.
pub fn raw_snapshot(time: Timestamp) -> Obj {
    snapshot(time, SnapshotFacts::default())
}

pub fn binlog_name(n: u32) -> String {
    format!("mysql-bin.{n:06}")
}

/// Binlog `n`, closed (it ends in a rotate), its events stamped `first` to `last`.
pub fn binlog(n: u32, first: Timestamp, last: Timestamp) -> Obj {
    let file = binlog_name(n);
    let end = 256 + (last.as_second() - first.as_second()).unsigned_abs() * 100;
    let facts = BinlogFacts {
        flavor: "mariadb".into(),
        server_version: "10.11.6-MariaDB-log".into(),
        server_id: 1,
        first_time: unix32(first),
        last_time: unix32(last),
        first_position: 256,
        end_position: end,
        gtid_state_at_start: None,
        last_gtid: None,
        events: 100,
        closed: true,
        next_file: Some(binlog_name(n + 1)),
        truncated_tail: false,
        checksums: true,
    };
    let archived_at = last.checked_add(jiff::SignedDuration::from_mins(1)).unwrap();
    log(
        archived_at,
        LogFacts {
            kind: LogKind::Binlog,
            file,
            size: end,
            blake3: format!("{:064x}", u64::from(n) * 1_000_003 + u64::from(unix32(last))),
            partial: false,
            archived_at: archived_at.as_second(),
            detail: LogDetail::Binlog(facts),
        },
    )
}

/// The usual archive: binlog `n` holds minutes (n-1)*15 to n*15.
pub fn binlogs(ns: impl IntoIterator<Item = u32>) -> Vec<Obj> {
    ns.into_iter().map(|n| binlog(n, at(i64::from(n - 1) * 15), at(i64::from(n) * 15))).collect()
}

/// A WAL segment of `seg_size` with commits from `first` to `last`.
pub fn wal_segment(file: &str, seg_size: u64, first: Timestamp, last: Timestamp) -> Obj {
    let mut facts = name_facts(file, seg_size);
    facts.first_commit_time = Some(Some(first.as_second()));
    facts.last_commit_time = Some(Some(last.as_second()));
    wal_file(file, seg_size, last.checked_add(jiff::SignedDuration::from_secs(30)).unwrap(), facts)
}

pub fn wal_file(file: &str, size: u64, archived_at: Timestamp, facts: WalFacts) -> Obj {
    log(
        archived_at,
        LogFacts {
            kind: LogKind::Wal,
            file: file.into(),
            size,
            blake3: format!("{:0>64}", file.to_lowercase().replace('.', "0")),
            partial: false,
            archived_at: archived_at.as_second(),
            detail: LogDetail::Wal(facts),
        },
    )
}

/// A 16 MiB segment.
pub fn seg(file: &str, first: Timestamp, last: Timestamp) -> Obj {
    wal_segment(file, MIB16, first, last)
}

/// A 64 MiB segment.
pub fn seg64(file: &str, first: Timestamp, last: Timestamp) -> Obj {
    wal_segment(file, MIB64, first, last)
}

/// The history file PostgreSQL archives when `timeline` begins.
pub fn history(timeline: u64, archived_at: Timestamp) -> Obj {
    let file = format!("{timeline:08X}.history");
    wal_file(&file, 41, archived_at, name_facts(&file, 41))
}

impl Obj {
    pub fn edit_snapshot(mut self, f: impl FnOnce(&mut SnapshotFacts)) -> Obj {
        let mut facts = SnapshotFacts::of(&self.manifest);
        f(&mut facts);
        self.manifest.metadata = facts.to_metadata();
        self
    }

    pub fn edit_log(mut self, f: impl FnOnce(&mut LogFacts)) -> Obj {
        let mut facts = LogFacts::of(&self.manifest).expect("a log manifest");
        f(&mut facts);
        self.manifest.metadata = facts.to_metadata();
        self
    }

    pub fn edit_binlog(self, f: impl FnOnce(&mut BinlogFacts)) -> Obj {
        self.edit_log(|l| match &mut l.detail {
            LogDetail::Binlog(b) => f(b),
            other => panic!("not a binlog: {other:?}"),
        })
    }

    pub fn edit_wal(self, f: impl FnOnce(&mut WalFacts)) -> Obj {
        self.edit_log(|l| match &mut l.detail {
            LogDetail::Wal(w) => f(w),
            other => panic!("not WAL: {other:?}"),
        })
    }

    /// Of another server (`--name`).
    pub fn of(mut self, name: &str) -> Obj {
        self.manifest.name = name.into();
        self
    }

    /// Ends at InnoDB LSN `lsn` (a full backup an incremental can start from).
    pub fn ends_at_lsn(self, lsn: u64) -> Obj {
        self.edit_snapshot(|f| f.mysql.as_mut().unwrap().to_lsn = Some(lsn))
    }

    /// The cluster's segment size as the backup_label told it (`None`: not told).
    pub fn segment_size(self, size: Option<u64>) -> Obj {
        self.edit_snapshot(|f| f.postgresql.as_mut().unwrap().wal_segment_size = size)
    }

    /// Copied while the server was still writing it (`binlog push --include-active`).
    pub fn partial(self) -> Obj {
        self.edit_binlog(|b| {
            b.closed = false;
            b.next_file = None;
        })
        .edit_log(|l| {
            l.partial = true;
            l.blake3 = format!("{:f>64}", l.size);
        })
    }

    /// The GTID state the file starts from, and its last GTID.
    pub fn gtids(self, state: &str, last: &str) -> Obj {
        self.edit_binlog(|b| {
            b.gtid_state_at_start = Some(state.into());
            b.last_gtid = Some(last.into());
        })
    }

    /// pg_waldump read the segment and found no commit in it.
    pub fn no_commit(self) -> Obj {
        self.edit_wal(|w| {
            w.first_commit_time = Some(None);
            w.last_commit_time = Some(None);
        })
    }

    /// No pg_waldump could read the segment when it was archived.
    pub fn never_read(self) -> Obj {
        self.edit_wal(|w| {
            w.first_commit_time = None;
            w.last_commit_time = None;
        })
    }

    pub fn archived(mut self, t: Timestamp) -> Obj {
        self.manifest.time = t.to_string();
        self.edit_log(|l| l.archived_at = t.as_second())
    }
}

/// Anything that adds manifests to a catalogue: one, or a run of them.
pub trait Objs {
    fn add_to(&self, out: &mut Vec<(String, Manifest)>);
}

impl Objs for Obj {
    fn add_to(&self, out: &mut Vec<(String, Manifest)>) {
        out.push((self.object.clone(), self.manifest.clone()));
    }
}

impl Objs for Vec<Obj> {
    fn add_to(&self, out: &mut Vec<(String, Manifest)>) {
        self.iter().for_each(|o| o.add_to(out));
    }
}

pub fn catalogue(parts: &[&dyn Objs]) -> Catalogue {
    let mut all = Vec::new();
    parts.iter().for_each(|p| p.add_to(&mut all));
    Catalogue::in_memory(all).unwrap()
}
