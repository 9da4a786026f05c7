//! `backup --snapshot btrfs|lvm|zfs --datadir DIR`: a running server's data
//! directory, copied from a filesystem snapshot taken under the lightest
//! lock that gives consistent binlog coordinates (`mysql_lock`), or for
//! PostgreSQL between `pg_backup_start` and `pg_backup_stop` (`pg_backup`),
//! so a point-in-time restore starts from it as from a mariabackup stream
//! or a pg_basebackup. The lock is held only while the snapshot is taken;
//! the snapshot is removed on every way out (`Taken::finish`, a drop, or
//! the interrupt handler).

use crate::ctx::Ctx;
use crate::exit::{self, Failure, R};
use dedupe_ingest::facts::{Database, FsSnapshotFacts, MysqlFacts, SnapshotFacts};
use dedupe_recovery::fssnap::{self, FsSnapshot, Provider};
use dedupe_recovery::mysql_lock::{MysqlConn, MysqlLock};
use dedupe_recovery::pg_backup::PgBackup;
use std::path::{Path, PathBuf};

/// A snapshot in place, and what the backup of it records.
pub(crate) struct Taken {
    pub snap: FsSnapshot,
    pub facts: SnapshotFacts,
    /// Names at the data directory's root the backup leaves out.
    pub excluded: Vec<String>,
    /// Files the backup adds at the root (PostgreSQL's backup label).
    pub files: Vec<(String, Vec<u8>)>,
}

/// How to reach the server.
pub(crate) struct Conn {
    pub mysql: MysqlConn,
    /// A libpq connection string; else the `PG*` environment.
    pub pg: Option<String>,
}

fn failed(what: &str, e: dedupe_recovery::Error) -> Failure {
    match e {
        dedupe_recovery::Error::Usage(m) => Failure::usage(m),
        e => Failure::new(exit::SNAPSHOT_FAILED, format!("{what}: {e}; nothing was backed up")),
    }
}

/// Which server's data directory `dir` is, if it is one.
pub(crate) fn database_in(dir: &Path) -> Option<Database> {
    if dir.join("PG_VERSION").is_file() && dir.join("global").is_dir() {
        return Some(Database::Postgresql);
    }
    if dir.join("ibdata1").is_file() || dir.join("aria_log_control").is_file() {
        return Some(Database::Mariadb);
    }
    None
}

/// Which server's data directory `dir` is.
fn database_of(dir: &Path) -> R<Database> {
    if let Some(d) = database_in(dir) {
        return Ok(d);
    }
    Err(Failure::usage(format!(
        "{} is no MariaDB/MySQL or PostgreSQL data directory (no ibdata1, aria_log_control or PG_VERSION): give the server's datadir",
        dir.display()
    )))
}

/// Snapshots `datadir`'s filesystem inside the server's backup window:
/// MariaDB/MySQL locked (`mysql_lock`), PostgreSQL between
/// `pg_backup_start` and `pg_backup_stop` (`pg_backup`).
pub(crate) fn take(ctx: &Ctx, provider: &str, datadir: &Path, conn: &Conn) -> R<Taken> {
    let provider = Provider::parse(provider)
        .ok_or_else(|| Failure::usage(format!("unknown --snapshot {provider}: btrfs, lvm or zfs")))?;
    let datadir: PathBuf = std::fs::canonicalize(datadir)
        .map_err(|e| Failure::new(exit::INPUT_FAILED, format!("cannot read {}: {e}", datadir.display())))?;
    let nanos = std::time::UNIX_EPOCH.elapsed().unwrap_or_default().as_nanos() as u32;
    let id = format!("{:08x}", std::process::id() ^ nanos);
    let database = database_of(&datadir)?;
    fssnap::check(provider, &datadir).map_err(|e| failed("cannot snapshot the data directory", e))?;
    match database {
        Database::Postgresql => take_pg(ctx, provider, &datadir, &id, conn.pg.as_deref()),
        _ => take_mysql(ctx, provider, &datadir, &id, &conn.mysql),
    }
}

/// Takes the snapshot; an interruption from now on removes it.
fn snapshot(provider: Provider, datadir: &Path, id: &str) -> R<FsSnapshot> {
    let snap = fssnap::take(provider, datadir, id).map_err(|e| failed("cannot take the snapshot", e))?;
    let removal = snap.removal();
    crate::interrupt::before_exit(move || {
        let _ = fssnap::remove_with(&removal);
    });
    Ok(snap)
}

/// Mounts or clones the snapshot when its filesystem needs that to read it
/// (out of the lock); an interruption from now on undoes that too.
fn opened(mut snap: FsSnapshot) -> R<FsSnapshot> {
    snap.open().map_err(|e| failed("cannot mount the snapshot", e))?;
    let removal = snap.removal();
    crate::interrupt::before_exit(move || {
        let _ = fssnap::remove_with(&removal);
    });
    Ok(snap)
}

fn take_pg(ctx: &Ctx, provider: Provider, datadir: &Path, id: &str, conn: Option<&str>) -> R<Taken> {
    let started = std::time::Instant::now();
    let session = PgBackup::start(conn).map_err(|e| failed("cannot start the backup on the server", e))?;
    let snap = snapshot(provider, datadir, id)?;
    let stopped = session.stop().map_err(|e| failed("cannot stop the backup on the server", e))?;
    let snap = opened(snap)?;
    let mut pg = dedupe_ingest::meta::backup_label(&stopped.label);
    pg.stop_wal_location = Some(stopped.lsn.clone());
    pg.tablespace_map = Some(!stopped.tablespace_map.is_empty());
    pg.version = dedupe_recovery::pgbin::datadir_major(datadir).ok();
    pg.system_identifier = std::fs::read(datadir.join("global/pg_control"))
        .ok()
        .and_then(|b| Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?).to_string()));
    ctx.note(&format!(
        "{} snapshot taken between pg_backup_start and pg_backup_stop ({:.1} s); WAL from {} to {}",
        provider.name(),
        started.elapsed().as_secs_f64(),
        pg.start_wal_location.as_deref().unwrap_or("?"),
        stopped.lsn
    ));
    let mut files = vec![("backup_label".to_string(), stopped.label.into_bytes())];
    if !stopped.tablespace_map.is_empty() {
        files.push(("tablespace_map".to_string(), stopped.tablespace_map.into_bytes()));
    }
    // What pg_basebackup leaves out too: the live server's pid file and options.
    let mut excluded: Vec<String> = ["postmaster.pid", "postmaster.opts"].map(String::from).to_vec();
    excluded.extend(snap.placeholder.clone());
    let facts = SnapshotFacts {
        format: Some("directory".into()),
        database: Some(Database::Postgresql),
        postgresql: Some(pg),
        snapshot: Some(FsSnapshotFacts {
            provider: Some(provider.name().into()),
            datadir: Some(datadir.display().to_string()),
            locked_seconds: None,
            lock: Some("pg_backup_start".into()),
        }),
        ..Default::default()
    };
    Ok(Taken { snap, facts, excluded, files })
}

fn take_mysql(ctx: &Ctx, provider: Provider, datadir: &Path, id: &str, conn: &MysqlConn) -> R<Taken> {
    let (lock, coords) = MysqlLock::acquire(conn).map_err(|e| failed("cannot lock the server", e))?;
    // The lock goes with this process's client session, whatever happens.
    let snap = snapshot(provider, datadir, id)?;
    let held = lock.release().map_err(|e| failed("cannot release the lock", e))?;
    let snap = opened(snap)?;
    let how = if coords.mariadb { "BACKUP STAGE BLOCK_COMMIT" } else { "FLUSH TABLES WITH READ LOCK" };
    ctx.note(&format!(
        "{} snapshot taken; commits were blocked for {:.3} s ({how}); binlog {}:{}",
        provider.name(),
        held.as_secs_f64(),
        coords.binlog_file.as_deref().unwrap_or("(binary log off)"),
        coords.binlog_position.map_or(String::new(), |p| p.to_string()),
    ));
    let facts = SnapshotFacts {
        format: Some("directory".into()),
        database: Some(if coords.mariadb { Database::Mariadb } else { Database::Mysql }),
        mysql: Some(MysqlFacts {
            binlog_file: coords.binlog_file,
            binlog_position: coords.binlog_position,
            gtid: coords.gtid,
            server_version: Some(coords.server_version),
            primary_binlog_file: coords.primary_binlog_file,
            primary_binlog_position: coords.primary_binlog_position,
            primary_gtid: coords.primary_gtid,
            ..Default::default()
        }),
        snapshot: Some(FsSnapshotFacts {
            provider: Some(provider.name().into()),
            datadir: Some(datadir.display().to_string()),
            locked_seconds: Some(held.as_secs_f64()),
            lock: Some(how.into()),
        }),
        ..Default::default()
    };
    let excluded = snap.placeholder.iter().cloned().collect();
    Ok(Taken { snap, facts, excluded, files: Vec::new() })
}

impl Taken {
    /// Removes the snapshot once the backup is over, whatever its outcome.
    pub(crate) fn finish(self) -> R {
        let provider = self.snap.provider.name();
        let removed = self.snap.remove();
        crate::interrupt::before_exit(|| {});
        removed.map_err(|e| {
            Failure::new(
                exit::SNAPSHOT_FAILED,
                format!("the {provider} snapshot was not removed: {e}; remove it by hand"),
            )
        })
    }
}
