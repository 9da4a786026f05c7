//! The chunks one backup has stored so far (or is storing), so each new
//! chunk is compressed and packed once even if it repeats within the run.
//!
//! The repository's index does not know them yet (it is loaded when the
//! backup starts), and a first backup of a large database with 32 KiB page
//! chunks stores tens of millions of them: more than fits the memory bound
//! (invariant 5) as a hash set. So the newest million ids live in a hash set
//! and older ones are spilled, sorted, to anonymous temporary files in the
//! cache directory that are memory-mapped and binary-searched, as the index
//! itself is; every eight runs are merged into one, so a lookup stays cheap.

use crate::crypto::Id;
use crate::error::{Error, Result};
use memmap2::Mmap;
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

/// Ids kept in memory before a spill: about 50 MiB of hash set.
const SPILL_AT: usize = 1 << 20;
/// Spilled runs are merged into one when there are this many, so a lookup
/// probes a handful of files however large the backup.
const MERGE_AT: usize = 8;

pub struct Claims {
    recent: HashSet<Id>,
    runs: Vec<Mmap>,
    dir: PathBuf,
    spill_at: usize,
}

impl Claims {
    pub fn new(dir: PathBuf) -> Self {
        Claims { recent: HashSet::new(), runs: Vec::new(), dir, spill_at: SPILL_AT }
    }

    fn in_runs(&self, id: &Id) -> bool {
        self.runs.iter().any(|run| {
            let n = run.len() / 32;
            let (mut lo, mut hi) = (0, n);
            while lo < hi {
                let mid = (lo + hi) / 2;
                match run[mid * 32..mid * 32 + 32].cmp(&id[..]) {
                    std::cmp::Ordering::Less => lo = mid + 1,
                    std::cmp::Ordering::Greater => hi = mid,
                    std::cmp::Ordering::Equal => return true,
                }
            }
            false
        })
    }

    /// Whether `id` is recorded.
    pub fn contains(&self, id: &Id) -> bool {
        self.recent.contains(id) || self.in_runs(id)
    }

    /// Records `id`; true when it was not recorded before.
    pub fn insert(&mut self, id: Id) -> Result<bool> {
        if self.recent.contains(&id) || self.in_runs(&id) {
            return Ok(false);
        }
        self.recent.insert(id);
        if self.recent.len() >= self.spill_at {
            self.spill()?;
        }
        Ok(true)
    }

    fn spill(&mut self) -> Result<()> {
        let mut ids: Vec<Id> = self.recent.iter().copied().collect();
        ids.sort_unstable();
        let map = self.write_run(ids.iter().copied())?;
        // Only once the run is safely on disk are the ids dropped from memory.
        self.recent.clear();
        self.runs.push(map);
        if self.runs.len() >= MERGE_AT {
            let runs = std::mem::take(&mut self.runs);
            let merged = self.write_run(merge(&runs))?;
            self.runs.push(merged);
        }
        Ok(())
    }

    /// Writes sorted ids to an anonymous file (gone when the backup ends,
    /// however it ends) and maps it.
    fn write_run(&self, ids: impl Iterator<Item = Id>) -> Result<Mmap> {
        let ctx = |e| Error::io(format!("spilling chunk ids to {}", self.dir.display()), e);
        crate::private::create_dir(&self.dir).map_err(ctx)?;
        let mut f = tempfile::tempfile_in(&self.dir).map_err(ctx)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut f);
        for id in ids {
            w.write_all(&id).map_err(ctx)?;
        }
        w.flush().map_err(ctx)?;
        drop(w);
        // SAFETY: the file is private to this process (unnamed) and never written again.
        unsafe { Mmap::map(&f) }.map_err(ctx)
    }
}

/// The ids of several sorted runs, in order (runs hold disjoint ids).
fn merge(runs: &[Mmap]) -> impl Iterator<Item = Id> + '_ {
    let mut pos = vec![0usize; runs.len()];
    std::iter::from_fn(move || {
        let (i, _) = runs
            .iter()
            .enumerate()
            .filter(|(i, r)| pos[*i] < r.len())
            .min_by(|(i, a), (j, b)| a[pos[*i]..pos[*i] + 32].cmp(&b[pos[*j]..pos[*j] + 32]))?;
        let id: Id = runs[i][pos[i]..pos[i] + 32].try_into().expect("32 bytes");
        pos[i] += 32;
        Some(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> Id {
        *blake3::hash(&n.to_le_bytes()).as_bytes()
    }

    #[test]
    fn remembers_across_spills() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Claims::new(dir.path().to_path_buf());
        c.spill_at = 1000;
        for n in 0..5500 {
            assert!(c.insert(id(n)).unwrap(), "{n} is new");
        }
        assert_eq!(c.runs.len(), 5);
        for n in 5500..9500 {
            assert!(c.insert(id(n)).unwrap(), "{n} is new");
        }
        // Eight runs were merged into one; the ninth is on its own.
        assert_eq!(c.runs.len(), 2);
        assert_eq!(c.runs[0].len(), 8000 * 32);
        assert!(c.runs[0].chunks(32).zip(c.runs[0].chunks(32).skip(1)).all(|(a, b)| a < b), "merged run is sorted");
        assert!(c.recent.len() < 1000);
        for n in 0..9500 {
            assert!(!c.insert(id(n)).unwrap(), "{n} was seen");
        }
        assert!(c.insert(id(99999)).unwrap());
    }
}
