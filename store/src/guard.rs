//! What keeps a running backup from committing a reference to a pack that
//! a concurrent `prune` is about to delete (format-spec §20.3).
//!
//! A backup never deduplicates against a marked pack (the index lookups of
//! `backup.rs` skip them). But a pack may be marked after the backup looked
//! it up, and a backup also depends on chunks it never looked up: the list
//! chunks of unchanged files it takes from the parent snapshot, and the
//! data those lists name. So the backup lists the marks again every
//! `RECHECK` while it runs and once more before its manifest, and every
//! chunk it depends on whose copy it relies on is marked is stored again
//! (its sealed blob copied into a pack of this backup) while the marked
//! pack still exists. What it depends on is kept small: one bit per index
//! record for the chunks it found in the index, the ids of the reused list
//! chunks, and the packs it wrote itself (a backup that outlives the grace
//! period sees its own early packs marked).

use crate::backend::Backend;
use crate::bits::Bits;
use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::index::Location;
use crate::marks::{Marks, RECHECK};
use crate::pack::{open_trailer, pack_name};
use crate::repo::Indexed;
use crate::snapshot::{decode_records, HOLE};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// List chunks read at once when the reused ones are checked.
const LIST_GROUP: usize = 256;

pub(crate) struct Guard<'a> {
    repo: &'a Indexed,
    /// Every mark seen so far.
    marks: Marks,
    /// The index's pack numbers, to mark the packs new marks name.
    pack_no: HashMap<Id, u32>,
    /// When the last listing of the marks started.
    checked: Instant,
    /// Index records this backup deduplicated against (set by the workers).
    hits: &'a Bits,
    /// List chunks of unchanged files taken from the parent snapshot.
    pub(crate) reused: Vec<Id>,
    /// Packs this backup wrote, with their lengths.
    pub(crate) own: Vec<(Id, u64)>,
}

impl<'a> Guard<'a> {
    pub(crate) fn new(repo: &'a Indexed, hits: &'a Bits) -> Guard<'a> {
        let pack_no = repo.index.packs().iter().enumerate().map(|(i, p)| (*p, i as u32)).collect();
        Guard {
            repo,
            marks: Marks::default(),
            pack_no,
            // The marks the repository handed over were listed no later than its manifests.
            checked: repo.listed_at(),
            hits,
            reused: Vec::new(),
            own: Vec::new(),
        }
        .with_marks(&repo.marks)
    }

    fn with_marks(mut self, marks: &Marks) -> Self {
        self.marks = Marks::copy_of(marks);
        self
    }

    pub(crate) fn backend(&self) -> &'a dyn Backend {
        self.repo.backend()
    }

    /// Whether the marks are due to be listed again.
    pub(crate) fn due(&self) -> bool {
        self.checked.elapsed() >= RECHECK
    }

    /// Lists the marks; true when packs were marked since the last look.
    pub(crate) fn refresh(&mut self) -> Result<bool> {
        let started = Instant::now();
        let marks = Marks::list(self.repo.backend(), self.repo.keys(), Some(&self.marks))?;
        let new = marks.new_since(&self.marks);
        for p in &new {
            if let Some(&no) = self.pack_no.get(p) {
                self.repo.marked.set(no as usize);
            }
        }
        self.marks = marks;
        self.checked = started;
        Ok(!new.is_empty())
    }

    pub(crate) fn any_marks(&self) -> bool {
        !self.marks.is_empty()
    }

    /// Every chunk this backup depends on whose only copies it knows of are
    /// in marked packs (and that `stored` says it has not stored itself),
    /// with the location to copy it from. Idempotent: a chunk copied since
    /// is `stored`, and a hit is moved to a live copy when there is one.
    pub(crate) fn endangered(&mut self, stored: &dyn Fn(&Id) -> bool) -> Result<Vec<(Id, Location)>> {
        let index = &self.repo.index;
        let marked = &self.repo.marked;
        let live = |no: u32| !marked.get(no as usize);
        let mut out: Vec<(Id, Location)> = Vec::new();
        let mut seen: HashSet<Id> = HashSet::new();
        for pos in self.hits.ones().collect::<Vec<_>>() {
            let (id, no, loc) = index.record(pos);
            if live(no) {
                continue;
            }
            self.hits.clear(pos);
            match index.find(&id, live) {
                Some((other, _)) => self.hits.set(other),
                None if !stored(&id) && seen.insert(id) => out.push((id, loc)),
                None => {}
            }
        }
        // A reused chunk is in danger when no live copy of it is indexed.
        let mut check = |id: &Id, out: &mut Vec<(Id, Location)>| {
            if index.find(id, live).is_none() && !stored(id) && seen.insert(*id) {
                if let Some((_, loc)) = index.find(id, |_| true) {
                    out.push((*id, loc));
                }
            }
        };
        for group in self.reused.chunks(LIST_GROUP) {
            for id in group {
                check(id, &mut out);
            }
            for list in self.repo.read_chunks(group)? {
                let recs = decode_records(&list).ok_or_else(|| Error::corrupt("list chunk", "not whole records"))?;
                for (id, _) in recs {
                    if id != HOLE {
                        check(&id, &mut out);
                    }
                }
            }
        }
        // This backup's own packs, marked because it outlived the grace period.
        let (mine, others): (Vec<_>, Vec<_>) = self.own.drain(..).partition(|(p, _)| self.marks.contains(p));
        self.own = others;
        for (pack, len) in mine {
            for e in read_trailer(self.repo.backend(), self.repo.keys(), &pack, len)? {
                if !stored(&e.0) && seen.insert(e.0) {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }
}

/// The entries of a pack read from its trailer alone (two ranged reads).
fn read_trailer(backend: &dyn Backend, keys: &crate::crypto::Keys, pack: &Id, len: u64) -> Result<Vec<(Id, Location)>> {
    let name = pack_name(pack);
    let pruned = |e: Error| match e {
        Error::Missing(_) => Error::Pruned(name.clone()),
        other => other,
    };
    let tail = backend.get_range(&name, len.saturating_sub(4)..len).map_err(pruned)?;
    let tlen = u32::from_le_bytes(tail[..].try_into().map_err(|_| Error::corrupt(&name, "too short to be a pack"))?);
    let start = len
        .checked_sub(4 + tlen as u64)
        .ok_or_else(|| Error::corrupt(&name, "trailer length points outside the pack"))?;
    let sealed = backend.get_range(&name, start..len - 4).map_err(pruned)?;
    Ok(open_trailer(keys, &name, &sealed, start)?
        .into_iter()
        .map(|e| (e.id, Location { pack: *pack, offset: e.offset, length: e.length, raw_len: e.raw_len }))
        .collect())
}
