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
}

/// Packs per rebuilt index object.
const PACKS_PER_INDEX: usize = 64;

impl Unlocked {
    /// Rebuilds every index object from the packs' own trailers. Every pack
    /// is read whole and checked against its name first; a damaged pack
    /// stops the repair before anything is changed, naming the pack.
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
        for group in ids.chunks(PACKS_PER_INDEX) {
            let entries: Vec<(Id, Vec<PackEntry>)> = group
                .par_iter()
                .with_max_len(1)
                .map(|(name, id)| {
                    let bytes = self.backend.get(name)?;
                    let e = read_entries(&self.keys, id, &bytes)?;
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    progress.done(n);
                    Ok((*id, e))
                })
                .collect::<Result<_>>()?;
            chunks += entries.iter().map(|(_, e)| e.len() as u64).sum::<u64>();
            written.push(seal_index_object(&self.keys, &entries));
        }
        // Write everything new before removing anything old, so the index is never missing.
        let mut names = Vec::new();
        for (name, bytes) in written {
            self.backend.put(&name, bytes.into())?;
            names.push(name);
        }
        self.backend.flush()?;
        let mut removed = 0;
        for (name, _) in &old_index {
            if !names.contains(name) {
                self.backend.delete(name)?;
                removed += 1;
            }
        }
        Ok(RepairReport {
            packs: total,
            chunks,
            index_objects_written: names.len() as u64,
            index_objects_removed: removed,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct RepoStats {
    pub snapshots: u64,
    /// Sum of every snapshot's logical size: what restoring all of them gives.
    pub logical_bytes: u64,
    pub unique_chunks: u64,
    /// Plaintext size of the distinct chunks.
    pub unique_bytes: u64,
    pub packs: u64,
    /// Bytes the packs take on storage (compressed and encrypted).
    pub stored_bytes: u64,
    pub dedup_ratio: f64,
    pub compression_ratio: f64,
}

impl Indexed {
    pub fn stats(&self) -> Result<RepoStats> {
        // A damaged snapshot would make the figures quietly wrong: name it.
        if let Some(Error::Corrupt { object, reason }) = self.damaged_snapshots().next() {
            return Err(Error::corrupt(object.clone(), reason.clone()));
        }
        let snaps = self.snapshots(None)?;
        let logical: u64 = snaps.iter().map(|(_, m)| m.stats.bytes).sum();
        let (mut n, mut raw) = (0u64, 0u64);
        for (_, len) in self.index.iter_ids() {
            n += 1;
            raw += len as u64;
        }
        let packs = self.backend.list(ObjectKind::Pack)?;
        let stored: u64 = packs.iter().map(|(_, s)| *s).sum();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Ok(RepoStats {
            snapshots: snaps.len() as u64,
            logical_bytes: logical,
            unique_chunks: n,
            unique_bytes: raw,
            packs: packs.len() as u64,
            stored_bytes: stored,
            dedup_ratio: ratio(logical, raw),
            compression_ratio: ratio(raw, stored),
        })
    }
}
