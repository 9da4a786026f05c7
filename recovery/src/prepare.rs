//! Making a restored physical backup ready to start. A mariabackup/xtrabackup
//! backup holds data files copied while the server ran, plus the redo log
//! written meanwhile; `mariabackup --prepare` applies that log, and
//! `--incremental-dir` applies an incremental on top. We run the tool the
//! backup was made with rather than reimplementing crash recovery.

use crate::error::{Error, Result};
use dedupe_ingest::facts::{Database, SnapshotFacts};
use dedupe_store::{Indexed, Manifest};
use std::path::Path;

/// The tool that made a backup, which is the one to prepare it.
fn tool_for(facts: &SnapshotFacts) -> &'static str {
    match facts.mysql.as_ref().and_then(|m| m.tool_name.as_deref()) {
        Some("xtrabackup") => "xtrabackup",
        _ => "mariabackup",
    }
}

/// What `prepare` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Ran `tool --prepare` on the target.
    With(&'static str),
    /// The server's own recovery at start is all it needs: PostgreSQL, or a
    /// filesystem snapshot of a MariaDB/MySQL data directory (crash recovery).
    NotNeeded,
}

/// Prepares a restored (non-incremental) mariabackup/xtrabackup snapshot in `target`.
pub fn prepare(facts: &SnapshotFacts, target: &Path) -> Result<Prepared> {
    match facts.database {
        Some(d) if d.is_mysql_family() && facts.format() == "directory" => return Ok(Prepared::NotNeeded),
        Some(d) if d.is_mysql_family() => {}
        Some(Database::Postgresql) => return Ok(Prepared::NotNeeded),
        _ => return Err(Error::Usage("--prepare is for mariabackup/xtrabackup snapshots; this one is not".into())),
    }
    let tool = tool_for(facts);
    crate::tool::run(tool, &["--prepare".into(), format!("--target-dir={}", target.display())])?;
    Ok(Prepared::With(tool))
}

/// Restores and prepares an incremental chain (full first, see
/// `chain::chain`) into `target`: the full backup, prepared; then each
/// incremental restored beside it and applied with `--prepare
/// --incremental-dir`, in order. `applied(id, n, of)` hears of each step.
pub fn restore_chain(
    repo: &Indexed,
    chain: &[(String, Manifest)],
    target: &Path,
    applied: &mut dyn FnMut(&str, usize, usize),
) -> Result<()> {
    let Some((_, last)) = chain.last() else { return Ok(()) };
    let tool = tool_for(&SnapshotFacts::of(last));
    for (i, (sid, m)) in chain.iter().enumerate() {
        let dir = if i == 0 {
            target.to_path_buf()
        } else {
            let parent = target.parent().unwrap_or(Path::new("."));
            parent.join(format!(".dedupe-incremental-{}", &sid[..12.min(sid.len())]))
        };
        if i > 0 {
            // Left over from an interrupted run.
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let tree = repo.read_tree(m)?;
        let nodes = dedupe_ingest::Selection::default().apply(tree)?;
        dedupe_ingest::restore_to_dir(repo, &nodes, &dir, &())?;
        let mut args = vec!["--prepare".into(), format!("--target-dir={}", target.display())];
        if i > 0 {
            args.push(format!("--incremental-dir={}", dir.display()));
        }
        let r = crate::tool::run(tool, &args);
        if i > 0 {
            let _ = std::fs::remove_dir_all(&dir);
        }
        r?;
        applied(sid, i + 1, chain.len());
    }
    Ok(())
}
