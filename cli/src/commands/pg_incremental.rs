//! `backup --pg-incremental`: the prior backup's `backup_manifest`, which
//! `pg_basebackup --incremental=FILE` needs, written from the repository
//! into a private file the producer can read, so a nightly incremental
//! needs no manifest kept by hand. The stream it makes is built into a
//! full on ingest (`dedupe_ingest::pgincr`).

use crate::exit::{self, Failure, R};
use dedupe_ingest::facts::SnapshotFacts;
use dedupe_store::{Indexed, Piece};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The manifest of snapshot `id`, in a file removed when this is dropped.
pub(crate) struct Prior {
    pub(crate) id: String,
    pub(crate) path: PathBuf,
    _dir: tempfile::TempDir,
}

/// The newest backup of the name with a manifest (`pgincr::prior_of`),
/// written out; `None` when there is none.
pub(crate) fn prior_manifest(repo: &Indexed, snapshots: &[(String, SnapshotFacts)]) -> R<Option<Prior>> {
    let Some((id, _)) = dedupe_ingest::pgincr::prior_of(snapshots) else { return Ok(None) };
    let (id, manifest) = repo.find_snapshot(id, None)?;
    let tree = repo.read_tree(&manifest)?;
    let Some(node) = tree.nodes.iter().find(|n| n.path == "backup_manifest") else { return Ok(None) };
    let io = |what: &str, e: std::io::Error| Failure::new(exit::STORAGE, format!("cannot write {what}: {e}"));
    // Traversable by the producer's user (pg_basebackup as `postgres`); the
    // file itself is that user's alone: the owner of the backed-up cluster.
    let dir =
        tempfile::Builder::new().prefix("dedupe-manifest-").tempdir().map_err(|e| io("a temporary directory", e))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("a temporary directory", e))?;
    let path = dir.path().join("backup_manifest");
    let mut file = std::fs::File::create(&path).map_err(|e| io(&path.display().to_string(), e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io(&path.display().to_string(), e))?;
    let mut failed = None;
    repo.read_file(node, &mut |p: Piece<'_>| {
        let r = match p {
            Piece::Data(d) => file.write_all(d),
            Piece::Hole(n) => file.write_all(&vec![0u8; n as usize]),
        };
        if let Err(e) = r {
            failed.get_or_insert(e);
        }
        Ok(())
    })?;
    if let Some(e) = failed {
        return Err(io(&path.display().to_string(), e));
    }
    if let Some(owner) = tree.nodes.iter().find(|n| n.path == "PG_VERSION") {
        match std::os::unix::fs::chown(&path, Some(owner.uid), Some(owner.gid)) {
            Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => {
                return Err(io(&path.display().to_string(), e))
            }
            _ => {}
        }
    }
    Ok(Some(Prior { id, path, _dir: dir }))
}
