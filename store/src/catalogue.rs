//! The catalogue: a local SQLite cache of every manifest, snapshots and
//! archived logs alike, so that listing, planning a point-in-time restore or
//! drawing the timeline does not fetch and decrypt every manifest each time.
//!
//! It is only a cache (invariant 4): each row is a manifest's JSON as the
//! repository holds it, keyed by object name. Opening brings it up to date
//! (new objects read, vanished ones dropped); `rebuild` deletes it and reads
//! everything again. Nothing is ever written to the catalogue that is not in
//! a manifest. Queries look inside the JSON with SQLite's `json_extract`.

use crate::error::{Error, Result};
use crate::repo::{Kind, Unlocked};
use crate::snapshot::Manifest;
use rusqlite::{params, Connection};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS manifests (
    object    TEXT PRIMARY KEY,   -- snapshots/<id> or logs/<id>
    kind      TEXT NOT NULL,      -- 'snapshot' or 'log'
    id        TEXT NOT NULL,
    name      TEXT NOT NULL,
    time_unix REAL NOT NULL,      -- manifest time, seconds since the epoch
    manifest  TEXT NOT NULL       -- the manifest's JSON
);
CREATE INDEX IF NOT EXISTS manifests_by_name ON manifests (kind, name, time_unix);
";

pub struct Catalogue {
    db: Connection,
    path: PathBuf,
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::Invalid(format!("catalogue {}: {e} (delete it, or run `dedupe catalogue rebuild`)", path.display()))
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Snapshot => "snapshot",
        Kind::Log => "log",
    }
}

impl Catalogue {
    /// Opens the catalogue of `repo` in its cache directory and brings it up to date.
    pub fn open(repo: &Unlocked, cache_base: &Path) -> Result<Catalogue> {
        let dir = repo.cache_dir(cache_base);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating cache {}", dir.display()), e))?;
        let path = dir.join("catalogue.sqlite");
        let db = Connection::open(&path).map_err(sql_err(&path))?;
        // Several commands share the file (a cron binlog push, the server's
        // archive_command, a restore): wait for a writer rather than fail.
        db.busy_timeout(std::time::Duration::from_secs(60)).map_err(sql_err(&path))?;
        db.execute_batch(SCHEMA).map_err(sql_err(&path))?;
        let mut c = Catalogue { db, path };
        c.refresh(repo)?;
        Ok(c)
    }

    /// Deletes the cache and reads every manifest again.
    pub fn rebuild(repo: &Unlocked, cache_base: &Path) -> Result<Catalogue> {
        let path = repo.cache_dir(cache_base).join("catalogue.sqlite");
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
        Catalogue::open(repo, cache_base)
    }

    /// Reads the manifests added since the last look, drops the ones gone.
    /// A damaged manifest is left out (and reported by the commands that list).
    fn refresh(&mut self, repo: &Unlocked) -> Result<()> {
        let known: HashSet<String> = {
            let mut st = self.db.prepare("SELECT object FROM manifests").map_err(sql_err(&self.path))?;
            let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(sql_err(&self.path))?;
            rows.collect::<std::result::Result<_, _>>().map_err(sql_err(&self.path))?
        };
        // Read the new manifests first, then write them in one short
        // transaction: other commands wait on the write lock, not on our reads.
        let mut listed = HashSet::new();
        let mut rows = Vec::new();
        for kind in [Kind::Snapshot, Kind::Log] {
            for object in repo.manifest_names(kind)? {
                listed.insert(object.clone());
                if known.contains(&object) {
                    continue;
                }
                let m = match repo.manifest(&object) {
                    Ok(m) => m,
                    Err(Error::Corrupt { .. }) => continue,
                    Err(e) => return Err(e),
                };
                let time = m.time.parse::<jiff::Timestamp>().map(|t| t.as_millisecond() as f64 / 1000.0).unwrap_or(0.0);
                let json = serde_json::to_string(&m).expect("manifest serializes");
                rows.push((object, kind, m.name, time, json));
            }
        }
        let tx = self.db.transaction().map_err(sql_err(&self.path))?;
        for (object, kind, name, time, json) in rows {
            tx.execute(
                "INSERT OR REPLACE INTO manifests (object, kind, id, name, time_unix, manifest) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![object, kind_name(kind), object.trim_start_matches(kind.prefix()), name, time, json],
            )
            .map_err(sql_err(&self.path))?;
        }
        for gone in known.difference(&listed) {
            tx.execute("DELETE FROM manifests WHERE object = ?1", params![gone]).map_err(sql_err(&self.path))?;
        }
        tx.commit().map_err(sql_err(&self.path))
    }

    /// Manifests of a kind (of one name, when given), oldest first, with their ids.
    pub fn list(&self, kind: Kind, name: Option<&str>) -> Result<Vec<(String, Manifest)>> {
        let mut st = self
            .db
            .prepare(
                "SELECT id, manifest FROM manifests WHERE kind = ?1 AND (?2 IS NULL OR name = ?2) ORDER BY time_unix, id",
            )
            .map_err(sql_err(&self.path))?;
        self.rows(&mut st, params![kind_name(kind), name])
    }

    /// Archived logs of one name and log kind (`binlog`, `wal`), ordered by file name.
    pub fn logs(&self, name: &str, log_kind: &str) -> Result<Vec<(String, Manifest)>> {
        let mut st = self
            .db
            .prepare(
                "SELECT id, manifest FROM manifests WHERE kind = 'log' AND name = ?1
                 AND json_extract(manifest, '$.metadata.kind') = ?2
                 ORDER BY json_extract(manifest, '$.metadata.file'), time_unix",
            )
            .map_err(sql_err(&self.path))?;
        self.rows(&mut st, params![name, log_kind])
    }

    /// Runs a query of (id, manifest JSON) rows.
    fn rows(&self, st: &mut rusqlite::Statement<'_>, args: impl rusqlite::Params) -> Result<Vec<(String, Manifest)>> {
        let rows = st
            .query_map(args, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(sql_err(&self.path))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row.map_err(sql_err(&self.path))?;
            let m: Manifest =
                serde_json::from_str(&json).map_err(|e| Error::Invalid(format!("catalogue row {id}: {e}")))?;
            out.push((id, m));
        }
        Ok(out)
    }
}
