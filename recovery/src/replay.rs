//! Carrying a restored base forward: MariaDB/MySQL binlogs replayed through
//! `mariadb-binlog`, PostgreSQL recovery settings written into the data
//! directory for the server to replay the WAL itself.

use crate::archive::{fetch_to, LogFile};
use crate::error::{Error, Result};
use dedupe_store::Indexed;
use std::path::{Path, PathBuf};

/// Where a restored filesystem-snapshot backup (`backup --snapshot`) keeps
/// the binlog coordinates its lock recorded, in xtrabackup_binlog_info's
/// layout, since the data directory itself has none.
pub const SNAPSHOT_BINLOG_INFO: &str = "dedupe_binlog_info";

/// Writes a restored filesystem-snapshot backup's binlog coordinates into
/// `dir` (`SNAPSHOT_BINLOG_INFO`), for `binlog replay`; false when the
/// snapshot is not one or recorded none.
pub fn record_binlog_position(facts: &dedupe_ingest::facts::SnapshotFacts, dir: &Path) -> Result<bool> {
    let Some(m) = facts.mysql.as_ref().filter(|_| facts.format() == "directory" && facts.snapshot.is_some()) else {
        return Ok(false);
    };
    let (Some(file), Some(pos)) = (&m.binlog_file, m.binlog_position) else { return Ok(false) };
    let text = format!("{file}\t{pos}\t{}\n", m.gtid.as_deref().unwrap_or(""));
    let p = dir.join(SNAPSHOT_BINLOG_INFO);
    std::fs::write(&p, text).map_err(|e| Error::Storage(format!("cannot write {}: {e}", p.display())))?;
    Ok(true)
}

/// The binlog coordinates a restored backup recorded (mariabackup's files, or `record_binlog_position`'s).
pub fn restored_binlog_position(dir: &Path) -> Result<(String, u64)> {
    for f in [SNAPSHOT_BINLOG_INFO, "mariadb_backup_binlog_info", "xtrabackup_binlog_info"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(f)) {
            let m = dedupe_ingest::meta::binlog_info(&text);
            if let (Some(file), Some(pos)) = (m.binlog_file, m.binlog_position) {
                return Ok((file, pos));
            }
        }
    }
    Err(Error::Usage(format!(
        "{} has no xtrabackup_binlog_info: restore a mariabackup snapshot there first (dedupe restore --until ... --prepare)",
        dir.display()
    )))
}

/// Writes the SQL that replays `files` from `start_pos` (with mariadb-binlog's
/// `stop_args`) to `out` (this process's stdout, or a client's stdin). The files are fetched under their
/// own names beside `near` (on the disk that had room for the restore,
/// rather than a possibly small /tmp), then one mariadb-binlog runs over all
/// of them: one stream of SQL, so one client session replays it all
/// (temporary tables survive across files).
pub fn replay_binlogs(
    repo: &Indexed,
    files: &[LogFile],
    start_pos: u64,
    stop_args: &[String],
    near: &Path,
    out: std::process::Stdio,
) -> Result<()> {
    let bin = crate::tool::require(&["mariadb-binlog", "mysqlbinlog"])?;
    let dir = scratch_dir(near)?;
    let fetched = files.iter().try_fold(Vec::new(), |mut paths, l| {
        let p = dir.join(l.file());
        fetch_to(repo, l, &p)?;
        paths.push(p);
        Ok::<_, Error>(paths)
    });
    let status = fetched.and_then(|paths| {
        dedupe_ingest::secrets::scrub(&mut std::process::Command::new(&bin))
            .arg(format!("--start-position={start_pos}"))
            .args(stop_args)
            .args(&paths)
            .stdout(out)
            .status()
            .map_err(|e| Error::Tool(format!("cannot run {bin}: {e}")))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let status = status?;
    // The reader of our stdout went away, and the tool died of SIGPIPE on it.
    if std::os::unix::process::ExitStatusExt::signal(&status) == Some(13) {
        return Err(Error::OutputClosed);
    }
    if !status.success() {
        return Err(Error::Tool(format!("{bin} failed ({status})")));
    }
    Ok(())
}

fn scratch_dir(near: &Path) -> Result<PathBuf> {
    let parent = near.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = parent.join(format!(".dedupe-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Quotes a word for sh (PostgreSQL runs restore_command through the shell).
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A `restore_command` that runs `words` (the dedupe binary and its
/// options, `wal fetch --name N`) with PostgreSQL's `%f %p`.
pub fn restore_command(words: &[String]) -> String {
    words.iter().map(|w| sh_quote(w)).collect::<Vec<_>>().join(" ") + " %f %p"
}

/// Appends `settings` (`Plan::recovery_settings`) to the restored data
/// directory's postgresql.auto.conf and creates recovery.signal, both owned
/// like the rest of the data directory so the server can read them.
pub fn write_recovery_settings(target: &Path, settings: &str) -> Result<()> {
    crate::pgcopy::append_settings(target, settings)?;
    let signal = target.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(|e| Error::Storage(format!("cannot write {}: {e}", signal.display())))?;
    crate::pgcopy::owned_like_the_cluster(target, "recovery.signal");
    Ok(())
}
