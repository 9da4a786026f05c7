//! A restored PostgreSQL data directory is a copy of its source, and a copy
//! must never archive into its source's WAL archive.
//!
//! A base backup carries the source's `archive_mode` and `archive_command`
//! (in `postgresql.conf` or `postgresql.auto.conf`). Started as it is, a
//! clone recovers from its backup label, goes on writing WAL on the same
//! timeline, and its `archive_command` pushes segments under the source's
//! `--name` and the source's file names: the source's own copy of such a
//! segment is then refused ("already archived with different content") and
//! its archiving stalls until `pg_wal` fills its disk, while a
//! point-in-time restore would replay the clone's WAL. So every restore,
//! drill and writable mount of a PostgreSQL backup appends
//! `archive_mode = off` to the copy's `postgresql.auto.conf`, which the
//! server reads after `postgresql.conf`; `--keep-archiving` leaves the
//! source's settings alone, for a copy meant to take the source's place.

use crate::error::{Error, Result};
use std::path::Path;

/// The configuration file the server reads last, in the data directory.
pub const AUTO_CONF: &str = "postgresql.auto.conf";

/// What a copy's `postgresql.auto.conf` gets appended.
pub const NO_ARCHIVING: &str =
    "\n# Written by dedupe: a restored copy must not archive into its source's WAL archive\n\
# (dedupe restore --keep-archiving keeps the source's settings, for a copy that replaces its source).\n\
archive_mode = off\n";

/// Appends `text` to `target`'s postgresql.auto.conf (made if missing),
/// owned like the rest of the data directory so the server can read it.
pub fn append_settings(target: &Path, text: &str) -> Result<()> {
    let conf = target.join(AUTO_CONF);
    let io = |e: std::io::Error| Error::Storage(format!("cannot write settings into {}: {e}", conf.display()));
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&conf).map_err(io)?;
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io)?;
    owned_like_the_cluster(target, AUTO_CONF);
    Ok(())
}

/// Turns archiving off in the restored data directory `target`.
pub fn disarm_archiving(target: &Path) -> Result<()> {
    append_settings(target, NO_ARCHIVING)
}

/// Gives `target/file` the owner of the cluster's `PG_VERSION` (best
/// effort: without root, the restoring user owns everything anyway).
pub(crate) fn owned_like_the_cluster(target: &Path, file: &str) {
    if let Ok(m) = std::fs::metadata(target.join("PG_VERSION")) {
        use std::os::unix::fs::MetadataExt;
        let _ = std::os::unix::fs::chown(target.join(file), Some(m.uid()), Some(m.gid()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archiving_is_turned_off_after_the_sources_settings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(AUTO_CONF), "archive_mode = 'on'\narchive_command = 'cp %p /arch/%f'\n")
            .unwrap();
        disarm_archiving(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(AUTO_CONF)).unwrap();
        // The server takes the last setting of a name: ours comes after the source's.
        assert!(text.rfind("archive_mode = off").unwrap() > text.find("archive_mode = 'on'").unwrap(), "{text}");
        // A data directory without the file gets one.
        let empty = tempfile::tempdir().unwrap();
        disarm_archiving(empty.path()).unwrap();
        assert!(std::fs::read_to_string(empty.path().join(AUTO_CONF)).unwrap().ends_with("archive_mode = off\n"));
    }
}
