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

use crate::backend::{Backend, ObjectKind};
use crate::bits::Bits;
use crate::crypto::{Id, Keys};
use crate::error::{Error, Result};
use crate::index::Location;
use crate::marks::{Marks, RECHECK};
use crate::pack::{open_trailer, pack_name};
use crate::repo::Indexed;
use crate::snapshot::{decode_records, HOLE};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// List chunks read at once when the reused ones are checked.
const LIST_GROUP: usize = 256;

pub(crate) struct Guard<'a> {
    repo: &'a Indexed,
    /// Every pack seen marked since the backup started (a mark may be
    /// gone by the next look: its packs with it).
    marked: HashSet<Id>,
    /// The index's pack numbers, to mark the packs new marks name.
    pack_no: HashMap<Id, u32>,
    /// When the newest listing of the marks whose packs are in `marked` started.
    checked: Instant,
    /// The watcher's count of changes to what it has seen, at the last look.
    generation: u64,
    /// Index records this backup deduplicated against (set by the workers).
    hits: &'a Bits,
    /// List chunks of unchanged files taken from the parent snapshot.
    pub(crate) reused: Vec<Id>,
    /// Packs this backup wrote, with their lengths.
    pub(crate) own: Vec<(Id, u64)>,
    watcher: Watcher,
}

impl<'a> Guard<'a> {
    pub(crate) fn new(repo: &'a Indexed, hits: &'a Bits) -> Result<Guard<'a>> {
        let pack_no = repo.index.packs().iter().enumerate().map(|(i, p)| (*p, i as u32)).collect();
        // The marks the repository handed over were listed no later than its manifests.
        let since = repo.listed_at();
        let watcher = Watcher::start(repo, Marks::copy_of(&repo.marks), since)?;
        // Loading a large index takes a while: look again now rather than
        // count that time as a gap in the listings.
        if since.elapsed() > RECHECK / 2 {
            watcher.list_now()?;
        }
        let mut guard = Guard {
            repo,
            marked: repo.marks.pack_ids().copied().collect(),
            pack_no,
            checked: since,
            generation: u64::MAX,
            hits,
            reused: Vec::new(),
            own: Vec::new(),
            watcher,
        };
        guard.refresh(false)?;
        Ok(guard)
    }

    pub(crate) fn backend(&self) -> &'a dyn Backend {
        self.repo.backend()
    }

    /// Whether the marks handled are older than `RECHECK`.
    pub(crate) fn due(&self) -> bool {
        self.checked.elapsed() >= RECHECK
    }

    /// Takes in what the watcher has seen (or, with `now`, lists the marks
    /// on this thread first); true when packs were marked since the last look.
    pub(crate) fn refresh(&mut self, now: bool) -> Result<bool> {
        if now {
            self.watcher.list_now()?;
        }
        // Called after every unit of work: the set is copied only when it grew.
        let (seen, listed_at, generation) = self.watcher.seen(self.generation);
        self.checked = listed_at;
        let Some(seen) = seen else { return Ok(false) };
        self.generation = generation;
        let new: Vec<Id> = seen.into_iter().filter(|p| !self.marked.contains(p)).collect();
        for p in &new {
            if let Some(&no) = self.pack_no.get(p) {
                self.repo.marked.set(no as usize);
            }
            self.marked.insert(*p);
        }
        Ok(!new.is_empty())
    }

    /// Counts `id` among the chunks this backup depends on (the base of a
    /// delta it copied), as if it had deduplicated against it.
    pub(crate) fn watch(&self, id: &Id) {
        let marked = &self.repo.marked;
        let copy =
            self.repo.index.find(id, |no| !marked.get(no as usize)).or_else(|| self.repo.index.find(id, |_| true));
        if let Some((pos, _)) = copy {
            self.hits.set(pos);
        }
    }

    pub(crate) fn any_marks(&self) -> bool {
        !self.marked.is_empty()
    }

    /// True when the marks went unlisted for longer than is safe at some
    /// point (the storage stalled): a mark and its packs may have come and
    /// gone unseen, so the packs depended on must be seen to exist.
    pub(crate) fn had_gap(&self) -> bool {
        self.watcher.longest_gap() > SAFE_GAP
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
            for list in self.repo.read_chunks(group).map_err(pruned)? {
                let recs = decode_records(&list).ok_or_else(|| Error::corrupt("list chunk", "not whole records"))?;
                for (id, _) in recs {
                    if id != HOLE {
                        check(&id, &mut out);
                    }
                }
            }
        }
        // This backup's own packs, marked because it outlived the grace period.
        let (mine, others): (Vec<_>, Vec<_>) = self.own.drain(..).partition(|(p, _)| self.marked.contains(p));
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

    /// Fails (`Error::Pruned`) if a pack this backup depends on is gone:
    /// after a gap in the listings of the marks (`had_gap`), a prune may have
    /// marked and deleted it unseen. The marks are listed first (a mark
    /// outlives its packs), so a pack that exists here and is marked is
    /// found by the next `endangered`.
    pub(crate) fn verify_packs_exist(&mut self) -> Result<()> {
        self.watcher.list_now()?;
        let index = &self.repo.index;
        let mut needed: HashSet<Id> = self.hits.ones().map(|pos| index.record(pos).2.pack).collect();
        for group in self.reused.chunks(LIST_GROUP) {
            for list in group.iter().zip(self.repo.read_chunks(group).map_err(pruned)?) {
                let (id, bytes) = list;
                needed.extend(index.find(id, |_| true).map(|(_, l)| l.pack));
                for (chunk, _) in decode_records(&bytes).unwrap_or_default() {
                    if chunk != HOLE {
                        needed.extend(index.find(&chunk, |_| true).map(|(_, l)| l.pack));
                    }
                }
            }
        }
        needed.extend(self.own.iter().map(|(p, _)| *p));
        let stored: HashSet<String> = self.backend().list(ObjectKind::Pack)?.into_iter().map(|(n, _)| n).collect();
        match needed.iter().map(pack_name).find(|n| !stored.contains(n)) {
            Some(gone) => Err(Error::Pruned(gone)),
            None => Ok(()),
        }
    }
}

/// Marks unlisted for longer than this (the storage stalling) make a
/// backup check that every pack it depends on still exists before it
/// commits: well inside the shortest grace period.
const SAFE_GAP: Duration = Duration::from_secs(3);

/// Lists the marks every `RECHECK` on a thread of its own, so a writer
/// busy for longer (waiting for a slow upload, say) still learns of every
/// mark while the packs it names exist.
struct Watcher {
    state: Arc<Mutex<Watched>>,
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    backend: Arc<dyn Backend>,
    keys: Keys,
}

struct Watched {
    /// The marks as last listed.
    marks: Marks,
    /// Every pack seen marked.
    seen: HashSet<Id>,
    /// When the last successful listing started.
    listed_at: Instant,
    /// The longest time between the starts of two successful listings.
    longest_gap: Duration,
    /// Counts the times `seen` grew.
    generation: u64,
}

impl Watched {
    fn take(&mut self, marks: Marks, started: Instant) {
        let before = self.seen.len();
        self.seen.extend(marks.pack_ids().copied());
        if self.seen.len() > before {
            self.generation += 1;
        }
        self.longest_gap = self.longest_gap.max(started.saturating_duration_since(self.listed_at));
        self.listed_at = self.listed_at.max(started);
        self.marks = marks;
    }
}

impl Watcher {
    fn start(repo: &Indexed, marks: Marks, listed_at: Instant) -> Result<Watcher> {
        let seen = marks.pack_ids().copied().collect();
        let state =
            Arc::new(Mutex::new(Watched { marks, seen, listed_at, longest_gap: Duration::ZERO, generation: 0 }));
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let (backend, keys, st) = (repo.backend.clone(), repo.keys().clone(), state.clone());
        let thread = std::thread::Builder::new()
            .name("dedupe-marks".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(RECHECK) {
                    let started = Instant::now();
                    let known = Marks::copy_of(&st.lock().expect("not poisoned").marks);
                    // A failed listing is a gap: `had_gap` makes the backup check before it commits.
                    if let Ok(marks) = Marks::list(&*backend, &keys, Some(&known)) {
                        st.lock().expect("not poisoned").take(marks, started);
                    }
                }
            })
            .map_err(|e| Error::io("starting the marks thread", e))?;
        let (backend, keys) = (repo.backend.clone(), repo.keys().clone());
        Ok(Watcher { state, stop: Some(stop), thread: Some(thread), backend, keys })
    }

    /// Lists the marks on the calling thread.
    fn list_now(&self) -> Result<()> {
        let started = Instant::now();
        let known = Marks::copy_of(&self.state.lock().expect("not poisoned").marks);
        let marks = Marks::list(&*self.backend, &self.keys, Some(&known))?;
        self.state.lock().expect("not poisoned").take(marks, started);
        Ok(())
    }

    /// Every pack seen marked (unless nothing changed since `generation`),
    /// when the last listing started, and the current generation.
    fn seen(&self, generation: u64) -> (Option<HashSet<Id>>, Instant, u64) {
        let st = self.state.lock().expect("not poisoned");
        let seen = (st.generation != generation).then(|| st.seen.clone());
        (seen, st.listed_at, st.generation)
    }

    fn longest_gap(&self) -> Duration {
        let st = self.state.lock().expect("not poisoned");
        st.longest_gap.max(st.listed_at.elapsed())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A pack this backup depends on that is gone was deleted by a prune
/// (after the grace period: this backup has run that long since the mark).
fn pruned(e: Error) -> Error {
    match e {
        Error::Missing(name) => Error::Pruned(name),
        other => other,
    }
}

/// The entries of a pack read from its trailer alone (two ranged reads).
fn read_trailer(backend: &dyn Backend, keys: &Keys, pack: &Id, len: u64) -> Result<Vec<(Id, Location)>> {
    let name = pack_name(pack);
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
