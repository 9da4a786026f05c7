//! Storage: one small trait, the typed names of the objects behind it, and
//! its implementations.
//!
//! The rest of the store speaks only `Backend`: put a whole immutable
//! object, get it (or byte ranges of it), list one kind of object, delete.
//! Objects are never overwritten; a `put` of a name that exists with the
//! same bytes is harmless because names are content hashes. The one object
//! that is not content-named, `config`, is written with `create`, which
//! fails when it exists, so two racing `init`s cannot both succeed.
//!
//! - `local`: a directory, through `std::fs` (fsync, owner hand-over,
//!   positional reads on the calling thread).
//! - `remote`: S3, GCS, Azure (and memory, for benches) through `object_store`.
//! - `limit`: `--limit-upload` / `--limit-download` around either.
//! - `location`: what `--repo` may say, and which of the above it opens.

mod aws_profile;
mod limit;
mod local;
mod location;
mod remote;

pub use limit::Limited;
pub use local::LocalBackend;
pub use location::{open, Location, Options};
pub use remote::ObjectStoreBackend;

use crate::error::Result;
use bytes::Bytes;
use std::ops::Range;
use std::time::SystemTime;

/// What an object is. Every object name is made here, from a kind and an
/// id, so no other module spells a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// `config`: the repository's parameters (JSON, not encrypted).
    Config,
    /// `keys/<id>`: the master keys wrapped by one password.
    Key,
    /// `data/<first two hex digits>/<id>`: a pack of chunks.
    Pack,
    /// `index/<id>`: which chunks some packs hold.
    Index,
    /// `snapshots/<id>`: a snapshot manifest.
    Snapshot,
    /// `logs/<id>`: an archived binlog file or WAL segment's manifest.
    Log,
    /// `marks/<id>`: packs `prune` found unreferenced, and when.
    Mark,
    /// `compactions/<id>`: what a `prune` or `repair index` replaced in
    /// `index/`, so that caches follow without listing it whole.
    Compaction,
    /// `drills/<id>`: what a restore drill of a snapshot found.
    Drill,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 9] = [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Log,
        ObjectKind::Mark,
        ObjectKind::Compaction,
        ObjectKind::Drill,
    ];

    /// The folder objects of this kind live under (`config` has none).
    pub fn prefix(self) -> &'static str {
        match self {
            ObjectKind::Config => "",
            ObjectKind::Key => "keys/",
            ObjectKind::Pack => "data/",
            ObjectKind::Index => "index/",
            ObjectKind::Snapshot => "snapshots/",
            ObjectKind::Log => "logs/",
            ObjectKind::Mark => "marks/",
            ObjectKind::Compaction => "compactions/",
            ObjectKind::Drill => "drills/",
        }
    }

    /// The object name of `id` (64 hex digits; ignored for `Config`).
    pub fn name(self, id: &str) -> String {
        match self {
            ObjectKind::Config => "config".into(),
            // Packs are spread over 256 folders: some file systems slow
            // down with hundreds of thousands of entries in one directory.
            ObjectKind::Pack => format!("data/{}/{id}", id.get(..2).unwrap_or(id)),
            k => format!("{}{id}", k.prefix()),
        }
    }

    /// The id part of an object name of this kind: the leaf, less an index
    /// object's time stamp (`index/<stamp>-<id>`).
    pub fn id_of(self, name: &str) -> &str {
        content_hash_of(name)
    }

    /// The kind of an object name, if it is one of the repository's.
    pub fn of(name: &str) -> Option<ObjectKind> {
        if name == "config" {
            return Some(ObjectKind::Config);
        }
        ObjectKind::ALL.into_iter().skip(1).find(|k| name.starts_with(k.prefix()))
    }
}

/// The content hash in an object name: its leaf after the last `-`
/// (`index/<stamp>-<hash>`), or the whole leaf.
pub fn content_hash_of(name: &str) -> &str {
    let leaf = name.rsplit('/').next().unwrap_or(name);
    leaf.rsplit('-').next().unwrap_or(leaf)
}

/// Index objects are named `index/<stamp>-<hash>`, the stamp being the
/// writer's clock in Unix seconds, ten decimal digits: names sort by when
/// they were written, so a listing can start after what a reader has seen
/// (`Backend::list_after`, format-spec §10.5).
pub fn index_object_name(at: SystemTime, hash: &str) -> String {
    format!("index/{}-{hash}", stamp(at))
}

/// Ten decimal digits of Unix seconds (0 before 1970).
pub fn stamp(at: SystemTime) -> String {
    format!("{:010}", at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

/// The stamp of an index object's name, in Unix seconds; `None` for a name
/// written before stamps (`index/<hash>`).
pub fn stamp_of(name: &str) -> Option<u64> {
    let leaf = name.rsplit('/').next()?;
    let (stamp, _) = leaf.split_once('-')?;
    (stamp.len() == 10).then(|| stamp.parse().ok()).flatten()
}

pub trait Backend: Send + Sync {
    fn put(&self, name: &str, bytes: Bytes) -> Result<()>;
    /// Writes an object only if no object of that name exists
    /// (`Error::RepositoryExists` otherwise, naming the location).
    fn create(&self, name: &str, bytes: Bytes) -> Result<()>;
    fn get(&self, name: &str) -> Result<Bytes>;
    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes>;
    /// Several ranges, in the order asked; a remote store reads them
    /// concurrently (up to `connections`), so a restore is not latency-bound.
    fn get_ranges(&self, wanted: &[(String, Range<u64>)]) -> Result<Vec<Bytes>> {
        wanted.iter().map(|(name, r)| self.get_range(name, r.clone())).collect()
    }
    /// Several whole objects, each with its own outcome, in the order asked;
    /// a remote store reads them concurrently (manifests, index objects).
    fn get_many(&self, names: &[String]) -> Vec<Result<Bytes>> {
        names.iter().map(|n| self.get(n)).collect()
    }
    /// Every object of a kind, with its size, sorted by name.
    fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>>;
    /// The objects of a kind whose names sort after `after` (a full name),
    /// sorted by name. An object store asks for only those (S3's
    /// `start-after`); a directory is read whole and filtered.
    fn list_after(&self, kind: ObjectKind, after: &str) -> Result<Vec<(String, u64)>> {
        Ok(self.list(kind)?.into_iter().filter(|(n, _)| n.as_str() > after).collect())
    }
    /// Like `list`, with when each object was last written, for `prune`'s
    /// rule that young packs are left alone. A store that cannot say
    /// reports every object as written now: it is then never old enough.
    fn list_dated(&self, kind: ObjectKind) -> Result<Vec<(String, u64, SystemTime)>> {
        let now = SystemTime::now();
        Ok(self.list(kind)?.into_iter().map(|(n, s)| (n, s, now)).collect())
    }
    fn delete(&self, name: &str) -> Result<()>;
    /// Removes temporary files that writers which died left behind, if
    /// they were last written before `before`; returns how many. A store
    /// whose writes are atomic has none.
    fn remove_stale_temporaries(&self, _before: SystemTime) -> Result<u64> {
        Ok(0)
    }
    /// Makes the named objects durable, whoever wrote them (a writer that
    /// died before its `flush`). A remote store has nothing to do.
    fn sync(&self, _names: &[String]) -> Result<()> {
        Ok(())
    }
    /// Makes every `put` so far durable. Callers flush before writing an
    /// object that refers to others (a manifest), so what it names survives
    /// a power cut whenever it does.
    fn flush(&self) -> Result<()>;
    /// How many transfers are worth keeping in flight at once.
    fn connections(&self) -> usize;
    /// Where the repository is, for messages and for commands dedupe writes
    /// down (a server's restore_command): a path or a URL, never a secret.
    fn location(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_kinds() {
        let id = "ab".repeat(32);
        for k in ObjectKind::ALL {
            let name = k.name(&id);
            assert_eq!(ObjectKind::of(&name), Some(k), "{name}");
            if k != ObjectKind::Config {
                assert_eq!(k.id_of(&name), id);
            }
        }
        assert_eq!(ObjectKind::Pack.name(&id), format!("data/ab/{id}"));
        assert_eq!(ObjectKind::of("elsewhere/x"), None);
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_040_123);
        let name = index_object_name(at, &id);
        assert_eq!(name, format!("index/1796040123-{id}"));
        assert_eq!(ObjectKind::Index.id_of(&name), id);
        assert_eq!(stamp_of(&name), Some(1_796_040_123));
        assert_eq!(stamp_of(&ObjectKind::Index.name(&id)), None);
        assert!(index_object_name(at + std::time::Duration::from_secs(1), "0") > name);
    }
}
