//! The chunks one backup has stored so far (or is storing), so each new
//! chunk is compressed and packed once even if it repeats within the run.
//!
//! The repository's index does not know them yet (it is loaded when the
//! backup starts), and a first backup of a large database with 32 KiB page
//! chunks stores tens of millions of them: more than fits the memory bound
//! (invariant 5) as a hash set. So the newest million ids live in a hash set
//! and older ones are spilled, sorted, to anonymous temporary files in the
//! cache directory that are memory-mapped and binary-searched, as the index
//! itself is.

use crate::crypto::Id;
use crate::error::{Error, Result};
use memmap2::Mmap;
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

/// Ids kept in memory before a spill: about 50 MiB of hash set.
const SPILL_AT: usize = 1 << 20;

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
        let ctx = |e| Error::io(format!("spilling chunk ids to {}", self.dir.display()), e);
        std::fs::create_dir_all(&self.dir).map_err(ctx)?;
        let mut ids: Vec<Id> = self.recent.drain().collect();
        ids.sort_unstable();
        // Anonymous: gone when the backup ends, however it ends.
        let mut f = tempfile::tempfile_in(&self.dir).map_err(ctx)?;
        let mut w = std::io::BufWriter::new(&mut f);
        for id in &ids {
            w.write_all(id).map_err(ctx)?;
        }
        w.flush().map_err(ctx)?;
        drop(w);
        // SAFETY: the file is private to this process (unnamed) and never written again.
        let map = unsafe { Mmap::map(&f) }.map_err(ctx)?;
        self.runs.push(map);
        Ok(())
    }
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
        assert!(c.recent.len() < 1000);
        for n in 0..5500 {
            assert!(!c.insert(id(n)).unwrap(), "{n} was seen");
        }
        assert!(c.insert(id(9999)).unwrap());
    }
}
