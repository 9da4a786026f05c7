//! The repository and its states: `Repository` (found, config read),
//! `Unlocked` (a key opened: manifests and keys can be read), `Indexed`
//! (the index is loaded: chunks can be read and written). Code that needs
//! chunks cannot be written against a repository that has no index.

use crate::backend::{Backend, ObjectKind};
use crate::bits::Bits;
use crate::blob;
use crate::catalogue::Catalogue;
use crate::chunker::Chunking;
use crate::crypto::{hex_id, parse_id, Id, Keys};
use crate::error::{Error, Result};
use crate::index::{self, Index, Location};
use crate::keyfile::{KdfParams, KeyFile};
use crate::marks::Marks;
use crate::pack::pack_name;
use crate::snapshot::{decode_records, Manifest, Node, Tree, LOG_MANIFEST_AAD, MANIFEST_AAD};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    pub version: u32,
    /// 32 random bytes, hex: names the local cache of this repository.
    pub id: String,
    pub chunking: Chunking,
    pub compression_level: i32,
    pub created: String,
}

impl Config {
    /// The config is not authenticated: refuse values that would be unsafe to use.
    fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::corrupt("config", why.to_string()));
        if self.id.len() != 64 || !self.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad("id is not 64 hex digits");
        }
        match self.chunking {
            Chunking::FastCdc { min, avg, max } => {
                if !(64..=1 << 20).contains(&min)
                    || !(256..=4 << 20).contains(&avg)
                    || !(1024..=16 << 20).contains(&max)
                    || min > avg
                    || avg > max
                {
                    return bad("FastCDC sizes are out of range");
                }
            }
            Chunking::Fixed { size, level } => {
                if !(512..=16 << 20).contains(&size) {
                    return bad("block size is out of range");
                }
                if level.is_some_and(|l| !(-7..=22).contains(&l)) {
                    return bad("block compression level is out of range");
                }
            }
        }
        if !(-7..=22).contains(&self.compression_level) {
            return bad("compression level is out of range");
        }
        Ok(())
    }
}

/// Checks a manifest object (`snapshots/<id>` or `logs/<id>`) against its
/// name, opens it and parses it.
pub fn open_manifest(keys: &Keys, name: &str, sealed: &[u8]) -> Result<Manifest> {
    crate::crypto::check_content_name(name, sealed)?;
    let plain = keys.open(Kind::of(name).aad(), sealed).ok_or_else(|| Error::corrupt(name, "fails authentication"))?;
    serde_json::from_slice(&plain).map_err(|e| Error::corrupt(name, format!("not a manifest: {e}")))
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// What a manifest describes. Archived logs (binlog files, WAL segments) are
/// stored exactly like snapshots of one file, under their own prefix, so
/// they never show up as snapshots or as `latest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Snapshot,
    Log,
}

impl Kind {
    /// Associated data of the sealed manifest: a log cannot pass for a snapshot.
    pub fn aad(self) -> &'static [u8] {
        match self {
            Kind::Snapshot => MANIFEST_AAD,
            Kind::Log => LOG_MANIFEST_AAD,
        }
    }

    pub(crate) fn of(object: &str) -> Kind {
        match ObjectKind::of(object) {
            Some(ObjectKind::Log) => Kind::Log,
            _ => Kind::Snapshot,
        }
    }

    /// The kind of object its manifests are stored as.
    pub fn object_kind(self) -> ObjectKind {
        match self {
            Kind::Snapshot => ObjectKind::Snapshot,
            Kind::Log => ObjectKind::Log,
        }
    }

    pub fn prefix(self) -> &'static str {
        self.object_kind().prefix()
    }
}

/// Snapshots with their ids, oldest first.
pub type Snapshots = Vec<(String, Manifest)>;

pub struct Repository {
    backend: Arc<dyn Backend>,
    pub config: Config,
    /// The key objects, listed while the config was read (`open`).
    key_names: Option<Vec<(String, u64)>>,
}

/// What a command will read, which decides what `Repository::unlock_and_list`
/// lists while the key is fetched and derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// Manifests only (`snapshots`, `timeline`): as `Unlocked::list`.
    Manifests,
    /// Chunks too (`backup`, `restore`): the index objects are listed ahead as well.
    Chunks,
    /// Archived logs and their chunks (a server's archive_command and
    /// restore_command): as `Unlocked::list_for_logs`, index listed ahead.
    LogChunks,
}

/// Object names listed ahead of the reads that need a key.
pub(crate) struct Prelisted {
    pub(crate) snapshots: Vec<String>,
    pub(crate) logs: Vec<String>,
    index: Option<crate::index::IndexListing>,
    /// The marks (`marks/`), listed beside the manifests when the index is.
    marks: Option<Vec<String>>,
}

impl Prelisted {
    /// Snapshot and log manifests listed concurrently; then, if asked (the
    /// cache directory given), the index objects, started only once both
    /// manifest listings have ended (the order of format-spec §14.4).
    pub(crate) fn list(backend: &dyn Backend, index: Option<&Path>) -> Result<Prelisted> {
        let (snapshots, logs, marks) = std::thread::scope(|s| {
            let logs = s.spawn(|| manifest_names(backend, Kind::Log));
            let marks = s.spawn(|| {
                index
                    .map(|_| backend.list(ObjectKind::Mark).map(|l| l.into_iter().map(|(n, _)| n).collect()))
                    .transpose()
            });
            let snapshots = manifest_names(backend, Kind::Snapshot);
            (snapshots, logs.join().expect("listing thread"), marks.join().expect("listing thread"))
        });
        let (snapshots, logs, marks) = (snapshots?, logs?, marks?);
        let index = index.map(|cache| crate::index::list_index(backend, cache, false)).transpose()?;
        Ok(Prelisted { snapshots, logs, index, marks })
    }
}

fn manifest_names(backend: &dyn Backend, kind: Kind) -> Result<Vec<String>> {
    Ok(backend.list(kind.object_kind())?.into_iter().map(|(n, _)| n).collect())
}

impl Repository {
    /// Creates a repository with a new master key wrapped by `password`.
    pub fn init(backend: Arc<dyn Backend>, password: &[u8], kdf: KdfParams) -> Result<Repository> {
        // Refused early, before a key is written; `create` below decides a race.
        match backend.get(&ObjectKind::Config.name("")) {
            Ok(_) => return Err(Error::RepositoryExists(backend.location())),
            Err(Error::Missing(_)) => {}
            Err(e) => return Err(e),
        }
        let mut id = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        let config = Config {
            version: FORMAT_VERSION,
            id: hex::encode(id),
            chunking: Chunking::DEFAULT_CDC,
            compression_level: 1,
            created: now_rfc3339(),
        };
        let keys = Keys::generate();
        // The key goes first: a config without a key would be a repository nobody can open.
        let key = put_key(&*backend, &keys, password, kdf, &config.id)?;
        backend.flush()?;
        let bytes = serde_json::to_vec_pretty(&config).expect("config serializes");
        // Create-only: of two racing inits, one wins; the other's key names
        // an id no config has (so it is never used) and is removed here.
        let mut created = backend.create(&ObjectKind::Config.name(""), bytes.into());
        if created.is_ok() {
            // A server that ignores `If-None-Match` lets two creates both
            // succeed; the config read back says which one stuck.
            let stuck = backend.get(&ObjectKind::Config.name(""))?;
            let ours = serde_json::from_slice::<Config>(&stuck).is_ok_and(|c| c.id == config.id);
            if !ours {
                created = Err(Error::RepositoryExists(backend.location()));
            }
        }
        if let Err(e) = created {
            if matches!(e, Error::RepositoryExists(_)) {
                let _ = backend.delete(&key);
            }
            return Err(e);
        }
        backend.flush()?;
        Ok(Repository { backend, config, key_names: None })
    }

    /// Reads the config; the key objects are listed at the same time, which
    /// spares `unlock` a round trip to a remote store.
    pub fn open(backend: Arc<dyn Backend>) -> Result<Repository> {
        let (config, key_names) = std::thread::scope(|s| {
            let keys = s.spawn(|| backend.list(ObjectKind::Key).ok());
            (backend.get(&ObjectKind::Config.name("")), keys.join().expect("listing thread"))
        });
        let bytes = match config {
            Ok(b) => b,
            Err(Error::Missing(_)) => return Err(Error::NoRepository(backend.location())),
            Err(e) => return Err(e),
        };
        let config: Config =
            serde_json::from_slice(&bytes).map_err(|e| Error::corrupt("config", format!("not valid JSON: {e}")))?;
        config.validate()?;
        if config.version != FORMAT_VERSION {
            return Err(Error::Invalid(format!(
                "repository format version {} is not supported by this dedupe (it reads version {FORMAT_VERSION})",
                config.version
            )));
        }
        Ok(Repository { backend, config, key_names })
    }

    /// `unlock`, then `Unlocked::list` (or `list_for_logs`), in fewer round
    /// trips in a row: the manifests (and for `Reads::Chunks`, the index
    /// objects) are listed while the key is fetched and derived.
    pub fn unlock_and_list(self, password: &[u8], cache_base: &Path, reads: Reads) -> Result<Listed> {
        let backend = self.backend.clone();
        let (started, started_at) = (SystemTime::now(), std::time::Instant::now());
        // The catalogue's rows are read before anything is listed (see `Catalogue::prepare`).
        let (mut catalogue, known) = Catalogue::prepare(&cache_base.join(&self.config.id))?;
        let (unlocked, listed) = std::thread::scope(|s| {
            let cache = cache_base.join(&self.config.id);
            let listing = s.spawn(move || Prelisted::list(&*backend, (reads != Reads::Manifests).then_some(&*cache)));
            (self.unlock(password), listing.join().expect("listing thread"))
        });
        let (unlocked, listed) = (unlocked?, listed?);
        let recheck = reads != Reads::LogChunks;
        let damaged = catalogue.refresh(&unlocked, recheck, (listed.snapshots, listed.logs), known)?;
        Ok(Listed {
            repo: unlocked,
            catalogue,
            damaged,
            cache_base: cache_base.to_path_buf(),
            index: listed.index,
            marks: listed.marks,
            started,
            started_at,
        })
    }

    /// Tries every key object; `WrongPassword` when none opens.
    pub fn unlock(self, password: &[u8]) -> Result<Unlocked> {
        let keys = match self.key_names {
            Some(k) => k,
            None => self.backend.list(ObjectKind::Key)?,
        };
        if keys.is_empty() {
            return Err(Error::corrupt("keys/", "the repository has no key objects"));
        }
        // A damaged key object must not hide the others; but if none opens,
        // the damage is the likelier story than a wrong password.
        let mut damaged = None;
        let mut intact = false;
        for (name, _) in &keys {
            let for_us = |kf: &KeyFile| kf.repository.as_deref().is_none_or(|r| r == self.config.id);
            match read_keyfile(&*self.backend, name).and_then(|kf| {
                if for_us(&kf) {
                    kf.unwrap_keys(name, password)
                } else {
                    Ok(None)
                }
            }) {
                Ok(Some(k)) => {
                    return Ok(Unlocked { backend: self.backend, config: self.config, keys: k, key_name: name.clone() })
                }
                Ok(None) => intact = true,
                Err(e) => {
                    damaged.get_or_insert(e);
                }
            }
        }
        // An intact key refused the password: that is the likelier story.
        match damaged {
            Some(e) if !intact => Err(e),
            _ => Err(Error::WrongPassword),
        }
    }
}

fn read_keyfile(backend: &dyn Backend, name: &str) -> Result<KeyFile> {
    let b = backend.get(name)?;
    crate::crypto::check_content_name(name, &b)?;
    serde_json::from_slice(&b).map_err(|e| Error::corrupt(name, format!("not a key object: {e}")))
}

fn put_key(backend: &dyn Backend, keys: &Keys, password: &[u8], kdf: KdfParams, repository: &str) -> Result<String> {
    let kf = KeyFile::wrap(keys, password, kdf, now_rfc3339(), repository)?;
    let bytes = serde_json::to_vec_pretty(&kf).expect("key serializes");
    let name = ObjectKind::Key.name(&blake3::hash(&bytes).to_hex());
    backend.put(&name, bytes.into())?;
    Ok(name)
}

/// One key object, as `key list` shows it.
#[derive(Debug, Serialize)]
pub struct KeyInfo {
    pub id: String,
    pub created: String,
    pub hostname: String,
    pub username: String,
    pub current: bool,
}

pub struct Unlocked {
    pub(crate) backend: Arc<dyn Backend>,
    pub config: Config,
    pub(crate) keys: Keys,
    key_name: String,
}

impl Unlocked {
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<String> {
        let name = put_key(&*self.backend, &self.keys, password, kdf, &self.config.id)?;
        self.backend.flush()?;
        Ok(ObjectKind::Key.id_of(&name).to_string())
    }

    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for (name, _) in self.backend.list(ObjectKind::Key)? {
            let kf = read_keyfile(&*self.backend, &name)?;
            out.push(KeyInfo {
                id: ObjectKind::Key.id_of(&name).to_string(),
                created: kf.created,
                hostname: kf.hostname,
                username: kf.username,
                current: name == self.key_name,
            });
        }
        Ok(out)
    }

    /// Removes a key object by id or unique prefix. The key in use cannot be
    /// removed: that guards against locking oneself out with a typo.
    pub fn remove_key(&self, prefix: &str) -> Result<String> {
        let matches: Vec<_> = self
            .backend
            .list(ObjectKind::Key)?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| ObjectKind::Key.id_of(n).starts_with(prefix))
            .collect();
        match matches.as_slice() {
            [] => Err(Error::Invalid(format!("no key matches {prefix}"))),
            [one] if *one == self.key_name => Err(Error::Invalid(
                "that is the key this command was opened with; open with another password to remove it".into(),
            )),
            [one] => {
                self.backend.delete(one)?;
                Ok(ObjectKind::Key.id_of(one).to_string())
            }
            _ => Err(Error::Invalid(format!("{prefix} matches several keys: give more characters"))),
        }
    }

    /// Deletes a manifest: the snapshot (or archived log) is gone from this
    /// moment on; the chunks only it named stay until `prune`. Deleting one
    /// already gone is not an error (two `forget`s may race).
    pub fn forget(&self, kind: Kind, id: &str) -> Result<()> {
        match self.backend.delete(&kind.object_kind().name(id)) {
            Err(Error::Missing(_)) => Ok(()),
            other => other,
        }
    }

    /// Keeps what a restore drill found (`drills.rs`).
    pub fn record_drill(&self, record: &crate::drills::DrillRecord) -> Result<String> {
        crate::drills::record_drill(&*self.backend, &self.keys, record)
    }

    /// Every drill record, oldest first, with the damaged ones apart.
    pub fn drills(&self) -> Result<crate::drills::Drills> {
        crate::drills::drills(&*self.backend, &self.keys)
    }

    /// Deletes the drill records of the snapshots `gone` names; how many.
    pub fn forget_drills_of(&self, gone: &std::collections::HashSet<String>) -> Result<usize> {
        let mut n = 0;
        for (object, r) in self.drills()?.0 {
            if gone.contains(&r.snapshot) {
                match self.backend.delete(&object) {
                    Ok(()) | Err(Error::Missing(_)) => n += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(n)
    }

    /// Writes a manifest; the snapshot (or archived log) exists from this moment on.
    pub(crate) fn write_manifest(&self, m: &Manifest, kind: Kind) -> Result<String> {
        let plain = serde_json::to_vec(m).expect("manifest serializes");
        let sealed = self.keys.seal(kind.aad(), &plain);
        let id = blake3::hash(&sealed).to_hex().to_string();
        // Everything the manifest names must be durable before it is.
        self.backend.flush()?;
        self.backend.put(&kind.object_kind().name(&id), sealed.into())?;
        self.backend.flush()?;
        Ok(id)
    }

    /// Forgets which packs `check` found damaged on this host (after
    /// `repair index` left them out of the index).
    pub fn forget_damaged_packs(&self, cache_base: &Path) {
        crate::check::forget_damaged(&self.cache_dir(cache_base));
    }

    /// The local cache directory of this repository.
    pub fn cache_dir(&self, base: &std::path::Path) -> PathBuf {
        base.join(&self.config.id)
    }

    /// Lists the repository's manifests (bringing the local catalogue up to
    /// date): the first step of every command that reads. See `Listed`.
    pub fn list(self, cache_base: &Path) -> Result<Listed> {
        self.list_checking(cache_base, true)
    }

    /// Like `list`, for commands that use archived logs only (a server's
    /// archive_command and restore_command run once a WAL segment): the
    /// snapshot manifests already catalogued are not read again, so their
    /// damage is not seen here, and nothing here trusts them.
    pub fn list_for_logs(self, cache_base: &Path) -> Result<Listed> {
        self.list_checking(cache_base, false)
    }

    /// `list`, reading catalogued snapshot manifests again when `recheck`.
    fn list_checking(self, cache_base: &Path, recheck: bool) -> Result<Listed> {
        let (started, started_at) = (SystemTime::now(), std::time::Instant::now());
        let (catalogue, damaged) = Catalogue::open(&self, cache_base, recheck)?;
        Ok(Listed {
            repo: self,
            catalogue,
            damaged,
            cache_base: cache_base.to_path_buf(),
            index: None,
            marks: None,
            started,
            started_at,
        })
    }

    /// Like `list`, but throws the local catalogue away and reads every manifest again.
    pub fn list_afresh(self, cache_base: &Path) -> Result<Listed> {
        Catalogue::remove(&self, cache_base)?;
        self.list(cache_base)
    }
}

/// A repository whose manifests have been listed. Readers list first, then
/// load the index (`indexed`): every chunk a listed manifest names is then in
/// the index, because writers store packs and index objects before the
/// manifest that names them (format-spec §14). The other way round, a backup
/// or log push landing between the two steps names chunks the index has
/// never seen. So the only way to an `Indexed` goes through a `Listed`, and
/// the manifests a command acts on come from this listing.
pub struct Listed {
    repo: Unlocked,
    catalogue: Catalogue,
    damaged: Vec<(Kind, Error)>,
    cache_base: PathBuf,
    /// The index objects, when listed ahead (`Repository::unlock_and_list`).
    index: Option<crate::index::IndexListing>,
    /// The marks, when listed ahead.
    marks: Option<Vec<String>>,
    /// When the manifests' listing started: a prune deletes only packs
    /// whose marks are older than their grace period at this moment.
    pub(crate) started: SystemTime,
    /// The same moment on the monotonic clock (a running backup's guard).
    started_at: std::time::Instant,
}

impl std::ops::Deref for Listed {
    type Target = Unlocked;
    fn deref(&self) -> &Unlocked {
        &self.repo
    }
}

impl Listed {
    /// Loads (and updates) the local index cache.
    pub fn indexed(self) -> Result<Indexed> {
        self.indexed_listing(false)
    }

    /// `indexed`, after listing `index/` whole (`prune`, `check`): every
    /// index object is found, whenever and by whatever clock it was stamped.
    pub fn indexed_whole(self) -> Result<Indexed> {
        self.indexed_listing(true)
    }

    fn indexed_listing(mut self, whole: bool) -> Result<Indexed> {
        let cache = self.repo.cache_dir(&self.cache_base);
        let backend = &*self.repo.backend;
        let marks = match self.marks.take() {
            Some(names) => Marks::read(backend, &self.repo.keys, names, None)?,
            None => Marks::list(backend, &self.repo.keys, None)?,
        };
        // Packs a cut-short backup on this host uploaded but did not index.
        // Best effort: a command with read-only credentials leaves them for
        // the next backup.
        let recovered = crate::upload::recover(backend, &self.repo.keys, &cache, &marks).unwrap_or(0);
        // A listing made ahead misses the index objects just recovered.
        let listing = match self.index.take() {
            Some(l) if recovered == 0 && !whole => l,
            _ => index::list_index(backend, &cache, whole)?,
        };
        let index = index::sync_cache(&*self.repo.backend, &self.repo.keys, &cache, listing)?;
        let marked = marked_packs(&index, &marks);
        // Packs `check` found damaged: never deduplicated against, read last.
        for p in crate::check::known_damaged(&cache) {
            if let Some(no) = index.packs().iter().position(|q| *q == p) {
                marked.set(no);
            }
        }
        Ok(Indexed { listed: self, index, marks, marked, whole: std::sync::OnceLock::new() })
    }

    /// The catalogue of every manifest listed (snapshots and archived logs).
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The damaged snapshot manifests the listing met (their errors): one
    /// bad manifest must not stop backups or hide the others.
    pub fn damaged_snapshots(&self) -> impl Iterator<Item = &Error> {
        self.damaged.iter().filter(|(k, _)| *k == Kind::Snapshot).map(|(_, e)| e)
    }

    /// Every damaged manifest the listing met (snapshots and logs), with its error.
    pub fn damaged(&self) -> impl Iterator<Item = (Kind, &Error)> {
        self.damaged.iter().map(|(k, e)| (*k, e))
    }

    /// Every readable snapshot (of `name`, when given), oldest first.
    pub fn snapshots(&self, name: Option<&str>) -> Result<Snapshots> {
        self.catalogue.list(Kind::Snapshot, name)
    }

    /// When the listing of the manifests started (and the marks' listing, at latest).
    pub(crate) fn listed_at(&self) -> std::time::Instant {
        self.started_at
    }

    /// The local cache directory base this listing was made with.
    pub fn cache_base(&self) -> &Path {
        &self.cache_base
    }

    /// Finds a snapshot by id prefix, or `latest` (of `name` when given).
    pub fn find_snapshot(&self, spec: &str, name: Option<&str>) -> Result<(String, Manifest)> {
        let all = self.snapshots(name)?;
        // An id that names a damaged manifest gets that damage as its answer;
        // so does `latest` when any manifest is damaged (it could be the newest,
        // and an older snapshot must not be restored in its place unannounced).
        for e in self.damaged_snapshots() {
            if let Error::Corrupt { object, reason } = e {
                if spec == "latest" || ObjectKind::Snapshot.id_of(object).starts_with(spec) {
                    return Err(Error::Corrupt { object: object.clone(), reason: reason.clone() });
                }
            }
        }
        let mut matching = all;
        if spec == "latest" && name.is_none() {
            let mut names: Vec<&str> = matching.iter().map(|(_, m)| m.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            if names.len() > 1 {
                return Err(Error::AmbiguousName(names.join(", ")));
            }
        }
        if spec == "latest" {
            return matching.pop().ok_or_else(|| {
                Error::NoSnapshot(match name {
                    Some(n) => format!("latest of name {n}"),
                    None => "latest (the repository has no snapshots)".into(),
                })
            });
        }
        let hits: Vec<_> = matching.into_iter().filter(|(id, _)| id.starts_with(spec)).collect();
        match hits.len() {
            0 => Err(Error::NoSnapshot(spec.to_string())),
            1 => Ok(hits.into_iter().next().expect("one")),
            _ => Err(Error::AmbiguousSnapshot(spec.to_string())),
        }
    }
}

pub struct Indexed {
    listed: Listed,
    pub(crate) index: Index,
    /// The marks as listed when the index was loaded (`prune`, format-spec §20).
    pub(crate) marks: Marks,
    /// The index's pack numbers that are marked: readers prefer other
    /// copies, writers never deduplicate against them.
    pub(crate) marked: Bits,
    /// The index after a whole listing of `index/`, made when a chunk is not
    /// found in `index` and that was made from a partial one (format-spec §16).
    whole: std::sync::OnceLock<Option<Index>>,
}

/// The pack numbers of `index` that `marks` names.
pub(crate) fn marked_packs(index: &Index, marks: &Marks) -> Bits {
    let bits = Bits::new(index.packs().len());
    if !marks.is_empty() {
        for (no, p) in index.packs().iter().enumerate() {
            if marks.contains(p) {
                bits.set(no);
            }
        }
    }
    bits
}

impl std::ops::Deref for Indexed {
    type Target = Listed;
    fn deref(&self) -> &Listed {
        &self.listed
    }
}

impl Indexed {
    /// The repository listed and indexed again with the same key: the
    /// manifests and index objects stored since (`dedupe mount` shows new
    /// snapshots without asking for the password again).
    pub fn relisted(&self) -> Result<Indexed> {
        let repo = &self.listed.repo;
        let unlocked = Unlocked {
            backend: repo.backend.clone(),
            config: repo.config.clone(),
            keys: repo.keys.clone(),
            key_name: repo.key_name.clone(),
        };
        // Manifests already catalogued are not read again (`list_for_logs`):
        // a mount looks every few seconds.
        unlocked.list_for_logs(&self.listed.cache_base)?.indexed()
    }

    /// Merges index objects stored since the index was loaded (by this
    /// process's own backups, say), so later writes deduplicate against them.
    pub fn refresh_index(&mut self) -> Result<()> {
        let cache = self.listed.repo.cache_dir(&self.listed.cache_base);
        let backend = &*self.listed.repo.backend;
        let listing = index::list_index(backend, &cache, false)?;
        self.index = index::sync_cache(backend, &self.listed.repo.keys, &cache, listing)?;
        self.marked = marked_packs(&self.index, &self.marks);
        self.whole = std::sync::OnceLock::new();
        Ok(())
    }

    pub fn locate(&self, id: &Id) -> Result<Location> {
        // A copy in a marked pack is read only when there is no other: it may be deleted soon.
        let live = self.index.find(id, |no| !self.marked.get(no as usize));
        if let Some((_, loc)) = live.or_else(|| self.index.find(id, |_| true)) {
            return Ok(loc);
        }
        // Stamped before the cache's listing started (a writer's clock far
        // behind): a whole listing finds it. Once per command.
        if !self.index.listed_whole {
            let whole = self.whole.get_or_init(|| {
                let cache = self.listed.repo.cache_dir(&self.listed.cache_base);
                let backend = &*self.listed.repo.backend;
                let listing = index::list_index(backend, &cache, true).ok()?;
                index::sync_cache(backend, &self.listed.repo.keys, &cache, listing).ok()
            });
            if let Some(loc) = whole.as_ref().and_then(|w| w.lookup(id)) {
                return Ok(loc);
            }
        }
        Err(Error::UnknownChunk(hex_id(id)))
    }

    /// Reads, authenticates and decompresses one chunk (through its base
    /// if it is a delta).
    pub fn read_chunk(&self, id: &Id) -> Result<Vec<u8>> {
        let mut plain = self.read_chunks(std::slice::from_ref(id))?;
        Ok(plain.pop().expect("one chunk asked for"))
    }

    /// Authenticates and decompresses a chunk's blob read from `loc`; a
    /// delta is returned as such (`resolve_deltas` applies it). The blob is
    /// decrypted where it lies: `sealed` is the reader's own buffer.
    pub(crate) fn open_blob_located(&self, id: &Id, loc: &Location, sealed: &mut [u8]) -> Result<blob::Opened> {
        let name = pack_name(&loc.pack);
        if sealed.len() != loc.length as usize {
            return Err(Error::corrupt(&name, format!("is shorter than its index says (chunk {})", hex_id(id))));
        }
        blob::open_blob_in_place(&self.keys, id, sealed, loc.raw_len as usize).map_err(|e| {
            let why = match e {
                blob::OpenError::Tag => "fails authentication (a byte changed on storage)".to_string(),
                blob::OpenError::Framing(s) => s,
            };
            Error::corrupt(&name, format!("chunk {} {why}", hex_id(id)))
        })
    }

    /// The producer's output a snapshot keeps (`backup --command`), if any.
    pub fn producer_log(&self, m: &Manifest) -> Result<Option<Vec<u8>>> {
        let Some(log) = m.log.as_deref() else { return Ok(None) };
        let id = parse_id(log).ok_or_else(|| Error::corrupt("snapshot", "the manifest's log id is not hex"))?;
        Ok(Some(self.read_chunk(&id)?))
    }

    pub fn read_tree(&self, m: &Manifest) -> Result<Tree> {
        let id = parse_id(&m.tree).ok_or_else(|| Error::corrupt("snapshot", "tree id is not hex"))?;
        let bytes = self.read_chunk(&id)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(format!("tree {}", m.tree), e.to_string()))
    }

    /// The records (chunk id or hole, length) of a file node, list chunk by list chunk.
    pub fn file_records<'a>(&'a self, node: &'a Node) -> impl Iterator<Item = Result<Vec<(Id, u64)>>> + 'a {
        node.content.iter().map(move |h| {
            let id =
                parse_id(h).ok_or_else(|| Error::corrupt(format!("node {}", node.path), "content id is not hex"))?;
            let bytes = self.read_chunk(&id)?;
            decode_records(&bytes).ok_or_else(|| Error::corrupt(format!("list chunk {h}"), "not whole records"))
        })
    }
}
