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
    /// Behind a mutex so that an `Indexed` holding it can be shared by the
    /// restore threads (a connection is `Send`, not `Sync`).
    db: std::sync::Mutex<Connection>,
    path: PathBuf,
    /// The objects this process listed. Other commands share the file and
    /// may add manifests listed after ours, whose chunks our index (loaded
    /// after our listing) may not know: queries answer from our listing only.
    listed: std::sync::RwLock<Option<HashSet<String>>>,
}

/// Manifests read at once when the catalogue catches up.
const READ_GROUP: usize = 256;

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::Invalid(format!("catalogue {}: {e} (delete it, or run `dedupe catalogue rebuild`)", path.display()))
}

/// Whether SQLite says the file is damaged (not merely busy or full).
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase))
}

/// Removes a catalogue file and what SQLite keeps beside it.
fn remove_file(path: &Path) -> Result<()> {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", p.display()), e)),
        }
    }
    Ok(())
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Snapshot => "snapshot",
        Kind::Log => "log",
    }
}

impl Catalogue {
    /// Opens the catalogue of `repo` in its cache directory and brings it up
    /// to date; also returns the damaged manifests it met (left out of it).
    /// Repository commands get it through `Unlocked::list`.
    pub(crate) fn open(repo: &Unlocked, cache_base: &Path, recheck: bool) -> Result<(Catalogue, Vec<(Kind, Error)>)> {
        let (mut c, known) = Catalogue::prepare(&repo.cache_dir(cache_base))?;
        let listed = crate::repo::Prelisted::list(repo.backend(), None)?;
        let damaged = c.refresh(repo, recheck, (listed.snapshots, listed.logs), known)?;
        Ok((c, damaged))
    }

    /// Opens the catalogue file in `dir` (the repository's cache directory)
    /// and reads which manifests it holds. This must come before the
    /// repository is listed: `refresh` drops the rows the listing lacks, and
    /// a row another command added from a listing newer than ours names a
    /// manifest ours may predate. Rows that were there before our listing
    /// began name manifests that existed then, so a listing without them
    /// means they are gone.
    pub(crate) fn prepare(dir: &Path) -> Result<(Catalogue, HashSet<String>)> {
        crate::private::create_dir(dir).map_err(|e| Error::io(format!("creating cache {}", dir.display()), e))?;
        let path = dir.join("catalogue.sqlite");
        match Catalogue::open_file(&path) {
            // A cache: a damaged file is removed and rebuilt from the repository.
            Err(e) if is_damage(&e) => {
                remove_file(&path)?;
                Catalogue::open_file(&path).map_err(sql_err(&path))
            }
            other => other.map_err(sql_err(&path)),
        }
    }

    fn open_file(path: &Path) -> rusqlite::Result<(Catalogue, HashSet<String>)> {
        let db = Connection::open(path)?;
        // Several commands share the file (a cron binlog push, the server's
        // archive_command, a restore): wait for a writer rather than fail.
        db.busy_timeout(std::time::Duration::from_secs(60))?;
        db.execute_batch(SCHEMA)?;
        let c = Catalogue { db: std::sync::Mutex::new(db), path: path.to_path_buf(), listed: Default::default() };
        let known = {
            let db = c.db.lock().expect("not poisoned");
            let mut st = db.prepare("SELECT object FROM manifests")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<HashSet<String>>>()?
        };
        Ok((c, known))
    }

    /// A catalogue of the given manifests (object name and manifest), held
    /// in memory: for planning from manifests that are not in a repository,
    /// as the recovery crate's tests do. The object name's prefix
    /// (`snapshots/`, `logs/`) gives each one's kind.
    pub fn in_memory(manifests: impl IntoIterator<Item = (String, Manifest)>) -> Result<Catalogue> {
        let path = PathBuf::from(":memory:");
        let db = Connection::open_in_memory().map_err(sql_err(&path))?;
        let c = Catalogue::with(db, path)?;
        let rows = manifests.into_iter().map(|(object, m)| (Kind::of(&object), object, m)).collect();
        c.write(rows, &HashSet::new())?;
        Ok(c)
    }

    fn with(db: Connection, path: PathBuf) -> Result<Catalogue> {
        db.execute_batch(SCHEMA).map_err(sql_err(&path))?;
        Ok(Catalogue { db: std::sync::Mutex::new(db), path, listed: Default::default() })
    }

    /// Deletes the cache file, so the next `open` reads every manifest again.
    pub(crate) fn remove(repo: &Unlocked, cache_base: &Path) -> Result<()> {
        remove_file(&repo.cache_dir(cache_base).join("catalogue.sqlite"))
    }

    /// Reads the manifests added since the last look, drops the ones gone.
    /// A damaged manifest is left out, and returned for the commands that list.
    /// With `recheck`, snapshot manifests already catalogued are read and
    /// authenticated again (see below).
    /// `known`: the rows `prepare` found, before `snapshots` and `logs` were listed.
    pub(crate) fn refresh(
        &mut self,
        repo: &Unlocked,
        recheck: bool,
        (snapshots, logs): (Vec<String>, Vec<String>),
        known: HashSet<String>,
    ) -> Result<Vec<(Kind, Error)>> {
        // Read the new manifests first, then write them in one short
        // transaction: other commands wait on the write lock, not on our reads.
        let mut listed = HashSet::new();
        let mut rows = Vec::new();
        let mut damaged = Vec::new();
        let mut gone: HashSet<String> = HashSet::new();
        let mut to_read: Vec<(Kind, String)> = Vec::new();
        for (kind, names) in [(Kind::Snapshot, snapshots), (Kind::Log, logs)] {
            for object in names {
                // Snapshot manifests are few and every command trusts them
                // (`latest`, ids): each is read and authenticated again, so
                // damage on storage is seen even after it was catalogued.
                // Log manifests are many and only read when their file is.
                if known.contains(&object) && (kind == Kind::Log || !recheck) {
                    listed.insert(object);
                } else {
                    to_read.push((kind, object));
                }
            }
        }
        // Read in groups, concurrently on a remote store: a new host's first
        // listing of a long log archive is thousands of small objects.
        for group in to_read.chunks(READ_GROUP) {
            let names: Vec<String> = group.iter().map(|(_, o)| o.clone()).collect();
            let fetched = repo.backend().get_many(&names);
            for ((kind, object), bytes) in group.iter().cloned().zip(fetched) {
                match bytes.and_then(|b| crate::repo::open_manifest(repo.keys(), &object, &b)) {
                    Ok(_) if known.contains(&object) => {
                        listed.insert(object);
                    }
                    Ok(m) => {
                        listed.insert(object.clone());
                        rows.push((kind, object, m));
                    }
                    Err(e @ Error::Corrupt { .. }) => {
                        gone.insert(object);
                        damaged.push((kind, e));
                    }
                    // Forgotten between the listing and the read (`forget`
                    // runs beside every command): as if never listed.
                    Err(Error::Missing(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        gone.extend(known.difference(&listed).cloned());
        self.write(rows, &gone)?;
        *self.listed.write().expect("not poisoned") = Some(listed);
        Ok(damaged)
    }

    /// Catalogues a manifest this process wrote, so that what it does next
    /// (the next snapshot `copy` writes, whose parent it is) sees it.
    pub(crate) fn add(&self, kind: Kind, object: String, m: Manifest) -> Result<()> {
        if let Some(listed) = self.listed.write().expect("not poisoned").as_mut() {
            listed.insert(object.clone());
        }
        self.write(vec![(kind, object, m)], &HashSet::new())
    }

    fn write(&self, rows: Vec<(Kind, String, Manifest)>, gone: &HashSet<String>) -> Result<()> {
        let mut db = self.db.lock().expect("not poisoned");
        let tx = db.transaction().map_err(sql_err(&self.path))?;
        for (kind, object, m) in rows {
            let time = m.time.parse::<jiff::Timestamp>().map(|t| t.as_millisecond() as f64 / 1000.0).unwrap_or(0.0);
            let json = serde_json::to_string(&m).expect("manifest serializes");
            tx.execute(
                "INSERT OR REPLACE INTO manifests (object, kind, id, name, time_unix, manifest) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![object, kind_name(kind), kind.object_kind().id_of(&object), m.name, time, json],
            )
            .map_err(sql_err(&self.path))?;
        }
        for object in gone {
            tx.execute("DELETE FROM manifests WHERE object = ?1", params![object]).map_err(sql_err(&self.path))?;
        }
        tx.commit().map_err(sql_err(&self.path))
    }

    /// Manifests of a kind (of one name, when given), oldest first, with their ids.
    pub fn list(&self, kind: Kind, name: Option<&str>) -> Result<Vec<(String, Manifest)>> {
        self.query(
            "SELECT object, id, manifest FROM manifests WHERE kind = ?1 AND (?2 IS NULL OR name = ?2) ORDER BY time_unix, id",
            params![kind_name(kind), name],
        )
    }

    /// Archived logs of one name and log kind (`binlog`, `wal`), ordered by file name.
    pub fn logs(&self, name: &str, log_kind: &str) -> Result<Vec<(String, Manifest)>> {
        self.query(
            "SELECT object, id, manifest FROM manifests WHERE kind = 'log' AND name = ?1
             AND json_extract(manifest, '$.metadata.kind') = ?2
             ORDER BY json_extract(manifest, '$.metadata.file'), time_unix",
            params![name, log_kind],
        )
    }

    /// The error for a catalogue found damaged while it was read; when it is
    /// damage (not a busy database), the file is removed so that the next
    /// command rebuilds it from the repository.
    fn damaged_by(&self, why: String, damage: bool) -> Error {
        if damage && remove_file(&self.path).is_ok() {
            return Error::Invalid(format!(
                "the local catalogue {} was damaged ({why}) and has been removed: run the command again to rebuild it",
                self.path.display()
            ));
        }
        Error::Invalid(format!(
            "catalogue {}: {why} (delete it, or run `dedupe catalogue rebuild`)",
            self.path.display()
        ))
    }

    /// Runs a query of (object, id, manifest JSON) rows, keeping the objects this process listed.
    fn query(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<(String, Manifest)>> {
        let db = self.db.lock().expect("not poisoned");
        let mut st = db.prepare(sql).map_err(sql_err(&self.path))?;
        let rows = st
            .query_map(args, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
            .map_err(sql_err(&self.path))?;
        let mut out = Vec::new();
        for row in rows {
            let (object, id, json) = row.map_err(|e| self.damaged_by(e.to_string(), is_damage(&e)))?;
            if self.listed.read().expect("not poisoned").as_ref().is_some_and(|l| !l.contains(&object)) {
                continue;
            }
            let m: Manifest =
                serde_json::from_str(&json).map_err(|e| self.damaged_by(format!("row {id}: {e}"), true))?;
            out.push((id, m));
        }
        Ok(out)
    }
}
