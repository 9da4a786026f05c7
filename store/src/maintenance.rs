//! Whole-repository operations: rebuilding the index from packs, statistics.

use crate::backend::ObjectKind;
use crate::crypto::{parse_id, Id};
use crate::error::{Error, Result};
use crate::index::seal_index_object;
use crate::pack::{read_entries, PackEntry};
use crate::progress::Progress;
use crate::repo::{Indexed, Unlocked};
use rayon::prelude::*;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct RepairReport {
    pub packs: u64,
    pub chunks: u64,
    pub index_objects_written: u64,
    pub index_objects_removed: u64,
    /// Packs left out of the index, or only partly indexed, and why.
    pub dropped: Vec<Dropped>,
}

/// A pack `repair index` could not index whole.
#[derive(Debug, Serialize)]
pub struct Dropped {
    pub object: String,
    pub problem: String,
    /// Chunks of it still indexed (their blobs verified one by one).
    pub chunks_kept: u64,
}

/// A snapshot or archived log that cannot be restored whole (`repair snapshots`).
#[derive(Debug, Serialize)]
pub struct Broken {
    /// `snapshots/<id>` or `logs/<id>`.
    pub object: String,
    pub problem: String,
}

/// Packs per rebuilt index object.
const PACKS_PER_INDEX: usize = 64;

impl Unlocked {
    /// Rebuilds every index object from the packs' own trailers. Every pack
    /// is read whole and checked against its name. A pack that fails keeps
    /// in the index only the chunks whose blobs still decrypt to their ids
    /// (none if its trailer is unreadable), and packs the old index named
    /// that are gone are left out: each is reported, and the next backup
    /// stores those chunks again (`repair snapshots` lists what they break).
    pub fn repair_index(&self, progress: &dyn Progress) -> Result<RepairReport> {
        let old_index = self.backend.list(ObjectKind::Index)?;
        let packs = self.backend.list(ObjectKind::Pack)?;
        let mut ids = Vec::new();
        for (name, _) in &packs {
            let leaf = ObjectKind::Pack.id_of(name);
            match parse_id(leaf) {
                Some(id) => ids.push((name.clone(), id)),
                None => return Err(Error::corrupt(name, "is not named like a pack")),
            }
        }
        let total = ids.len() as u64;
        progress.total(total);
        let done = std::sync::atomic::AtomicU64::new(0);
        let mut written = Vec::new();
        let mut chunks = 0u64;
        let mut dropped = Vec::new();
        for group in ids.chunks(PACKS_PER_INDEX) {
            let read: Vec<(Id, Vec<PackEntry>, Option<Dropped>)> = group
                .par_iter()
                .with_max_len(1)
                .map(|(name, id)| {
                    let bytes = match self.backend.get(name) {
                        Ok(b) => b,
                        // Deleted since the listing (a prune): nothing to index.
                        Err(Error::Missing(_)) => return Ok((*id, Vec::new(), None)),
                        Err(e) => return Err(e),
                    };
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    progress.done(n);
                    Ok(match read_entries(&self.keys, id, &bytes) {
                        Ok(e) => (*id, e, None),
                        Err(Error::Corrupt { reason, .. }) => self.salvage(name, id, &bytes, reason),
                        Err(e) => return Err(e),
                    })
                })
                .collect::<Result<_>>()?;
            let mut entries = Vec::new();
            for (id, e, d) in read {
                dropped.extend(d);
                if !e.is_empty() {
                    chunks += e.len() as u64;
                    entries.push((id, e));
                }
            }
            if !entries.is_empty() {
                written.push(seal_index_object(&self.keys, &entries, std::time::SystemTime::now()));
            }
        }
        // Packs the old index named that are gone.
        let stored: std::collections::HashSet<&str> = packs.iter().map(|(n, _)| n.as_str()).collect();
        let mut gone = std::collections::BTreeSet::new();
        let names: Vec<String> = old_index.iter().map(|(n, _)| n.clone()).collect();
        for (name, sealed) in names.iter().zip(self.backend.get_many(&names)) {
            let Ok(objects) = sealed.and_then(|b| crate::index::open_index_object(&self.keys, name, &b)) else {
                continue;
            };
            for (pack, _) in objects {
                let pack = crate::pack::pack_name(&pack);
                if !stored.contains(pack.as_str()) {
                    gone.insert(pack);
                }
            }
        }
        dropped.extend(gone.into_iter().map(|object| Dropped {
            object,
            problem: "is missing from the repository: its chunks are dropped from the index".into(),
            chunks_kept: 0,
        }));
        // Write everything new before removing anything old, so the index is never missing.
        let mut new_names = Vec::new();
        for (name, bytes) in written {
            self.backend.put(&name, bytes.into())?;
            new_names.push(name);
        }
        self.backend.flush()?;
        // Every cache starts over from the new objects (format-spec §10.6).
        let names: Vec<String> = self.backend.list(ObjectKind::Compaction)?.into_iter().map(|(n, _)| n).collect();
        let (records, damaged) = crate::compaction::read(&*self.backend, &self.keys, &names)?;
        let (sequence, _) = crate::compaction::next_sequence(&records, std::time::SystemTime::now());
        let reset = crate::compaction::Compaction { sequence, reset: true, ..Default::default() };
        let (name, sealed) = reset.seal(&self.keys);
        self.backend.put(&name, sealed.into())?;
        self.backend.flush()?;
        for name in damaged {
            self.backend.delete(&name)?;
        }
        let mut removed = 0;
        for (name, _) in &old_index {
            if !new_names.contains(name) {
                self.backend.delete(name)?;
                removed += 1;
            }
        }
        Ok(RepairReport {
            packs: total,
            chunks,
            index_objects_written: new_names.len() as u64,
            index_objects_removed: removed,
            dropped,
        })
    }

    /// The chunks of a damaged pack that can still be trusted: those its
    /// trailer lists whose blob decrypts to its id.
    fn salvage(&self, name: &str, id: &Id, bytes: &[u8], why: String) -> (Id, Vec<PackEntry>, Option<Dropped>) {
        let Ok(entries) = crate::pack::parse_trailer(&self.keys, name, bytes) else {
            let problem = format!("{why}, and its trailer cannot be read: its chunks are dropped from the index");
            return (*id, Vec::new(), Some(Dropped { object: name.to_string(), problem, chunks_kept: 0 }));
        };
        let total = entries.len();
        let good: Vec<PackEntry> = entries
            .into_iter()
            .filter(|e| {
                let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                // A delta is kept when it authenticates (its id is bound to it);
                // its base may be in another pack, not read here.
                match crate::blob::open_blob(&self.keys, &e.id, sealed, e.raw_len as usize) {
                    Ok(crate::blob::Opened::Plain(plain)) => self.keys.chunk_id(&plain) == e.id,
                    Ok(crate::blob::Opened::Delta { base, .. }) => e.base == Some(base),
                    Err(_) => false,
                }
            })
            .collect();
        let problem =
            format!("{why}: {} of its {total} chunks are damaged and dropped from the index", total - good.len());
        let kept = good.len() as u64;
        (*id, good, Some(Dropped { object: name.to_string(), problem, chunks_kept: kept }))
    }
}

#[derive(Debug, Serialize)]
pub struct RepoStats {
    pub snapshots: u64,
    /// Archived binlog and WAL files.
    pub logs: u64,
    /// Sum of every snapshot's and archived log's logical size: what
    /// restoring all of them gives.
    pub logical_bytes: u64,
    pub unique_chunks: u64,
    /// Plaintext size of the distinct chunks.
    pub unique_bytes: u64,
    pub packs: u64,
    /// Bytes the packs take on storage (compressed and encrypted).
    pub stored_bytes: u64,
    /// Changed pages the snapshots and logs stored as deltas on a previous
    /// version (`delta.rs`): how many, their plaintext and stored size.
    pub delta_chunks: u64,
    pub delta_bytes: u64,
    pub delta_bytes_stored: u64,
    #[serde(flatten)]
    pub ratios: Ratios,
}

/// The ratios of a backup's summary and of `stats`, defined once so that
/// they agree: what was given, the distinct plaintext it needed (chunk data
/// and the snapshot's own metadata chunks), and the bytes that takes on
/// storage. `None` (JSON null) when a denominator is zero, as a backup that
/// added nothing has an unbounded deduplication.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Ratios {
    /// logical ÷ distinct plaintext.
    pub dedup_ratio: Option<f64>,
    /// distinct plaintext ÷ stored.
    pub compression_ratio: Option<f64>,
    /// logical ÷ stored: the two together.
    pub ratio: Option<f64>,
}

impl Ratios {
    pub fn new(logical: u64, unique: u64, stored: u64) -> Ratios {
        let r = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        Ratios { dedup_ratio: r(logical, unique), compression_ratio: r(unique, stored), ratio: r(logical, stored) }
    }
}

impl Indexed {
    /// The snapshots and archived logs that cannot be restored whole: a
    /// damaged manifest, or a chunk they reach that is not in the index
    /// (run `repair index` first, so that lost and damaged packs are out
    /// of it). With `forget`, their manifests are deleted.
    pub fn broken_snapshots(&self, forget: bool) -> Result<Vec<Broken>> {
        let mut report = crate::check::CheckReport::default();
        let mut out: Vec<Broken> = Vec::new();
        for (_, e) in self.damaged() {
            if let Error::Corrupt { object, reason } = e {
                out.push(Broken { object: object.clone(), problem: reason.clone() });
            }
        }
        self.walk(&mut report)?;
        for f in report.findings {
            let manifest = ObjectKind::of(&f.object).is_some_and(|k| k == ObjectKind::Snapshot || k == ObjectKind::Log);
            if manifest && !out.iter().any(|b| b.object == f.object) {
                out.push(Broken { object: f.object, problem: f.problem });
            }
        }
        if forget {
            for b in &out {
                self.backend.delete(&b.object)?;
            }
        }
        Ok(out)
    }

    pub fn stats(&self) -> Result<RepoStats> {
        // A damaged snapshot would make the figures quietly wrong: name it.
        if let Some(Error::Corrupt { object, reason }) = self.damaged_snapshots().next() {
            return Err(Error::corrupt(object.clone(), reason.clone()));
        }
        let snaps = self.snapshots(None)?;
        let logs = self.catalogue().list(crate::Kind::Log, None)?;
        let logical: u64 = snaps.iter().chain(&logs).map(|(_, m)| m.stats.bytes).sum();
        let (mut n, mut raw) = (0u64, 0u64);
        for (_, len) in self.index.iter_ids() {
            n += 1;
            raw += len as u64;
        }
        let packs = self.backend.list(ObjectKind::Pack)?;
        let stored: u64 = packs.iter().map(|(_, s)| *s).sum();
        Ok(RepoStats {
            snapshots: snaps.len() as u64,
            logs: logs.len() as u64,
            logical_bytes: logical,
            unique_chunks: n,
            unique_bytes: raw,
            packs: packs.len() as u64,
            stored_bytes: stored,
            delta_chunks: snaps.iter().chain(&logs).map(|(_, m)| m.stats.delta_chunks).sum(),
            delta_bytes: snaps.iter().chain(&logs).map(|(_, m)| m.stats.delta_bytes).sum(),
            delta_bytes_stored: snaps.iter().chain(&logs).map(|(_, m)| m.stats.delta_bytes_stored).sum(),
            ratios: Ratios::new(logical, raw, stored),
        })
    }
}
