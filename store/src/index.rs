//! Where each chunk is: repository index objects and the local index cache.
//!
//! Index objects (`index/<id>`) are written next to every pack, so chunks of
//! an interrupted backup are found by the next one. Plaintext:
//! ```text
//! repeated: pack id (32) || count (u32 LE) || count x pack entry (44, see pack.rs)
//! ```
//! sealed with associated data `"dedupe index v1"`; the object name is the
//! unkeyed BLAKE3 of the sealed bytes.
//!
//! The local cache (format-spec §16) holds every index object's records in
//! a few segment files of sorted, fixed-width records (`segment.rs`), so a
//! lookup reads a filter block and a stretch of records, and memory does
//! not grow with the repository. New index objects become a
//! new small segment: a command's work is proportional to what is new, not
//! to the repository; segments of similar size are merged as they come.

use crate::backend::{Backend, ObjectKind};
use crate::crypto::{Id, Keys};
use crate::error::{Error, Result};
use crate::pack::{PackEntry, ENTRY_LEN};
use crate::segment::{Segment, SegmentWriter, REC};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

pub const INDEX_AAD: &[u8] = b"dedupe index v1";

/// Encodes and seals one index object; returns (name, bytes).
pub fn seal_index_object(keys: &Keys, packs: &[(Id, Vec<PackEntry>)]) -> (String, Vec<u8>) {
    let mut plain = Vec::new();
    for (pack, entries) in packs {
        plain.extend_from_slice(pack);
        plain.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            e.encode(&mut plain);
        }
    }
    let sealed = keys.seal(INDEX_AAD, &plain);
    (ObjectKind::Index.name(&blake3::hash(&sealed).to_hex()), sealed)
}

pub fn open_index_object(keys: &Keys, name: &str, sealed: &[u8]) -> Result<Vec<(Id, Vec<PackEntry>)>> {
    crate::crypto::check_content_name(name, sealed)?;
    let plain = keys.open(INDEX_AAD, sealed).ok_or_else(|| Error::corrupt(name, "fails authentication"))?;
    let mut out = Vec::new();
    let mut p = &plain[..];
    while !p.is_empty() {
        if p.len() < 36 {
            return Err(Error::corrupt(name, "truncated pack record"));
        }
        let pack: Id = p[..32].try_into().expect("32");
        let n = u32::from_le_bytes(p[32..36].try_into().expect("4")) as usize;
        p = &p[36..];
        if p.len() < n * ENTRY_LEN {
            return Err(Error::corrupt(name, "truncated entry list"));
        }
        out.push((pack, p[..n * ENTRY_LEN].chunks_exact(ENTRY_LEN).map(PackEntry::decode).collect()));
        p = &p[n * ENTRY_LEN..];
    }
    Ok(out)
}

/// Where a chunk lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: Id,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
}

/// The merged index: the cache's segments, oldest first, seen as one
/// sequence of records (a record's position counts across segments) with
/// one table of packs (a record's pack number is a position in it).
pub struct Index {
    segs: Vec<Segment>,
    /// Position of each segment's first record; one more, the total.
    starts: Vec<usize>,
    /// Per segment: its pack numbers to the index's.
    pack_nos: Vec<Vec<u32>>,
    packs: Vec<Id>,
    names: HashSet<Id>,
    /// Index objects of the listing that failed verification and were left
    /// out (`sync_cache`): prune must not run while their packs look unindexed.
    pub(crate) damaged: Vec<String>,
}

impl Index {
    fn from_segments(segs: Vec<Segment>) -> Index {
        let mut starts = vec![0];
        let mut packs = Vec::new();
        let mut pack_no: HashMap<Id, u32> = HashMap::new();
        let mut pack_nos = Vec::new();
        let mut names = HashSet::new();
        for seg in &segs {
            starts.push(starts.last().expect("one") + seg.len());
            names.extend(seg.names.iter().copied());
            pack_nos.push(
                seg.packs
                    .iter()
                    .map(|p| {
                        *pack_no.entry(*p).or_insert_with(|| {
                            packs.push(*p);
                            (packs.len() - 1) as u32
                        })
                    })
                    .collect(),
            );
        }
        Index { segs, starts, pack_nos, packs, names, damaged: Vec::new() }
    }

    /// Every pack the index knows; a record names its pack by its
    /// position here (its pack number).
    pub(crate) fn packs(&self) -> &[Id] {
        &self.packs
    }

    /// How many records (chunk copies) the index holds.
    pub(crate) fn len(&self) -> usize {
        *self.starts.last().expect("one")
    }

    /// Whether the index object `id` was merged into this index (a damaged
    /// or vanished one is not).
    pub(crate) fn merged(&self, id: &Id) -> bool {
        self.names.contains(id)
    }

    /// Record `local` of segment `s`, its pack number made the index's;
    /// `None` when its unit fails its checksum or its pack number is out of range.
    fn decode(&self, s: usize, local: usize) -> Option<(Id, u32, Location)> {
        self.decode_bytes(s, &self.segs[s].record(local)?)
    }

    /// A record of segment `s` as read, its pack number made the index's.
    fn decode_bytes(&self, s: usize, r: &[u8; REC]) -> Option<(Id, u32, Location)> {
        let u = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().expect("4"));
        let no = *self.pack_nos[s].get(u(32) as usize)?;
        let loc = Location { pack: self.packs[no as usize], offset: u(36), length: u(40), raw_len: u(44) };
        Some((r[..32].try_into().expect("32"), no, loc))
    }

    /// Record `pos`: chunk id, pack number and where in the pack. A record
    /// that fails its checksum reads as a chunk of no pack (pack number
    /// past the table): no lookup returns it.
    pub(crate) fn record(&self, pos: usize) -> (Id, u32, Location) {
        let s = self.starts.partition_point(|&st| st <= pos) - 1;
        self.decode(s, pos - self.starts[s]).unwrap_or((
            [0; 32],
            self.packs.len() as u32,
            Location { pack: [0; 32], offset: 0, length: 0, raw_len: 0 },
        ))
    }

    pub fn lookup(&self, id: &Id) -> Option<Location> {
        self.find(id, |_| true).map(|(_, loc)| loc)
    }

    /// The first copy of chunk `id` whose pack number `allowed` accepts,
    /// with its record position: a chunk stored twice (by two racing
    /// backups, or again after its pack was marked) has a record per copy.
    pub(crate) fn find(&self, id: &Id, allowed: impl Fn(u32) -> bool) -> Option<(usize, Location)> {
        for (s, seg) in self.segs.iter().enumerate() {
            for (local, r) in seg.find(id) {
                if let Some((_, no, loc)) = self.decode_bytes(s, &r) {
                    if allowed(no) {
                        return Some((self.starts[s] + local, loc));
                    }
                }
            }
        }
        None
    }

    /// Every record, in no particular order (segment by segment).
    fn all(&self) -> impl Iterator<Item = (Id, u32, Location)> + '_ {
        self.segs.iter().enumerate().flat_map(move |(s, seg)| seg.scan().filter_map(move |r| self.decode_bytes(s, &r)))
    }

    /// Each segment's records in order, decoded, side by side: for merging.
    fn heads(&self) -> Vec<std::iter::Peekable<impl Iterator<Item = (Id, u32, Location)> + '_>> {
        (0..self.segs.len())
            .map(|s| self.segs[s].scan().filter_map(move |r| self.decode_bytes(s, &r)).peekable())
            .collect()
    }

    /// Every pack the index names, with the end of its last blob: the least
    /// length the pack can have.
    pub fn pack_extents(&self) -> HashMap<Id, u64> {
        let mut out: HashMap<Id, u64> = HashMap::new();
        for (_, _, loc) in self.all() {
            let e = out.entry(loc.pack).or_insert(0);
            *e = (*e).max(loc.offset as u64 + loc.length as u64);
        }
        out
    }

    /// Every (chunk id, raw length) once, in id order (the segments merged).
    pub fn iter_ids(&self) -> impl Iterator<Item = (Id, u32)> + '_ {
        let mut heads = self.heads();
        let mut last: Option<Id> = None;
        std::iter::from_fn(move || loop {
            // The smallest head; segments are few, a scan is enough.
            let h = (0..heads.len()).filter_map(|h| heads[h].peek().map(|r| (r.0, h))).min().map(|(_, h)| h)?;
            let (id, _, loc) = heads[h].next().expect("peeked");
            if last != Some(id) {
                last = Some(id);
                return Some((id, loc.raw_len));
            }
        })
    }

    /// Checks every segment whole; false if one fails (its file is then
    /// removed, and the next command merges its index objects again). For
    /// prune, which must not decide on a damaged index.
    pub(crate) fn check_all(&self) -> bool {
        self.segs.iter().all(Segment::check_all)
    }

    /// One segment file as an index of its own (the fuzz target).
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub(crate) fn load_segment(path: &Path) -> Result<Option<Index>> {
        Ok(Segment::open(path)?.map(|s| Index::from_segments(vec![s])))
    }
}

/// Records per segment written from new index objects: sorted in memory
/// (48 MiB), which bounds memory when a cache is first built.
const MERGE_BATCH: usize = 1 << 20;
/// Index objects read at once, and at most this many bytes of them (a
/// compacted object is 11 MiB).
const READ_GROUP: usize = 16;
const READ_BYTES: u64 = 32 << 20;
/// A command merges two segments when the newer is at least a quarter of
/// the older and together they hold at most this many records, so that a
/// command's merging stays proportional to what it added.
const CHEAP_MERGE: usize = 1 << 22;
/// Above this many segments a command merges the smallest neighbours,
/// whatever their size: lookups visit every segment's filter. Long
/// commands merge further in the background (`merge_in_background`).
const MAX_SEGMENTS: usize = 16;

/// Brings the local cache up to date with the repository's index objects
/// (`listing`: as `Backend::list` gives them) and opens it.
///
/// A listed object that is gone when it is read was replaced by a prune,
/// which writes the compacted objects before it deletes the old ones: the
/// index objects are listed again and the new ones merged, or the chunks
/// of the replaced objects would look unknown.
pub fn sync_cache(backend: &dyn Backend, keys: &Keys, cache_dir: &Path, listing: Vec<(String, u64)>) -> Result<Index> {
    let mut listing = listing;
    for _ in 0..RELIST {
        let (index, vanished) = sync_listed(backend, keys, cache_dir, listing)?;
        if !vanished {
            return Ok(index);
        }
        listing = backend.list(ObjectKind::Index)?;
    }
    Ok(sync_listed(backend, keys, cache_dir, listing)?.0)
}

/// How often `sync_cache` lists again when listed objects vanish.
const RELIST: usize = 5;

/// The cache's directory and its list of live segments.
struct Cache {
    dir: PathBuf,
    /// An exclusive `flock`: one command at a time changes the segment list.
    _lock: File,
}

/// An exclusive `flock` on `dir/name`: blocking, or `None` when held elsewhere.
fn flock(dir: &Path, name: &str, wait: bool) -> Result<Option<File>> {
    let f = File::create(dir.join(name)).map_err(|e| Error::io(format!("locking {}", dir.display()), e))?;
    let op = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    // SAFETY: flock on a file we opened; released when it is closed.
    if unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&f), op) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(Error::io(format!("locking {}", dir.display()), e));
    }
    Ok(Some(f))
}

impl Cache {
    fn open(cache_dir: &Path) -> Result<Cache> {
        let dir = cache_dir.join("index");
        crate::private::create_dir(&dir).map_err(|e| Error::io(format!("creating cache {}", dir.display()), e))?;
        // The single-file cache of earlier versions: rebuilt as segments.
        let _ = std::fs::remove_file(cache_dir.join("index.bin"));
        Cache::lock(&dir)
    }

    fn lock(dir: &Path) -> Result<Cache> {
        let lock = flock(dir, "lock", true)?.expect("a blocking lock");
        Ok(Cache { dir: dir.to_path_buf(), _lock: lock })
    }

    /// The live segments, as the list names them; unreadable and damaged
    /// ones (and the list itself, when damaged) are dropped.
    fn segments(&self) -> Result<(Vec<Segment>, bool)> {
        let text = std::fs::read_to_string(self.dir.join(SEGMENTS)).unwrap_or_default();
        let mut lines: Vec<&str> = text.lines().collect();
        let sum = lines.pop().and_then(|l| l.strip_prefix("blake3 ")).unwrap_or_default().to_string();
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let mut changed = false;
        if lines.first() != Some(&SEGMENTS_HEADER) || blake3::hash(body.as_bytes()).to_hex().as_str() != sum {
            lines.clear();
            changed = !text.is_empty();
        }
        let mut segs = Vec::new();
        for name in lines.iter().skip(1) {
            match Segment::open(&self.dir.join(name))? {
                Some(seg) => segs.push(seg),
                None => changed = true,
            }
        }
        Ok((segs, changed))
    }

    /// Writes the list of live segments, then deletes every segment file it does not name.
    fn commit(&self, segs: &[Segment]) -> Result<()> {
        let mut body = format!("{SEGMENTS_HEADER}\n");
        for s in segs {
            body.push_str(&s.name);
            body.push('\n');
        }
        let sum = blake3::hash(body.as_bytes()).to_hex();
        body.push_str(&format!("blake3 {sum}\n"));
        let tmp = self.dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
        let ctx = |e| Error::io(format!("writing the index cache list in {}", self.dir.display()), e);
        std::fs::write(&tmp, body).map_err(ctx)?;
        std::fs::rename(&tmp, self.dir.join(SEGMENTS)).map_err(ctx)?;
        let live: HashSet<&str> = segs.iter().map(|s| s.name.as_str()).collect();
        // A background merge writes outside the lock: its file stays while it runs.
        let merging = flock(&self.dir, MERGE_LOCK, false)?.is_none();
        for e in std::fs::read_dir(&self.dir).map_err(ctx)?.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            // Unnamed segments and temporary files left by a crash; other
            // commands wait for the lock, so none is being written.
            if (name.starts_with("seg-") && !live.contains(&*name))
                || name.starts_with(".tmp-")
                || (name.starts_with(BACKGROUND) && !merging)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// Writes `records` (any order, pack numbers into `packs`) as a segment.
    fn write(&self, mut records: Vec<[u8; REC]>, names: &[Id], packs: &[Id]) -> Result<Segment> {
        records.sort_unstable_by(|a, b| a[..32].cmp(&b[..32]));
        let mut w = SegmentWriter::create(&self.dir, records.len() as u64)?;
        for r in &records {
            w.push(r)?;
        }
        self.reopen(w.finish(names, packs)?)
    }

    fn reopen(&self, name: String) -> Result<Segment> {
        Segment::open(&self.dir.join(&name))?
            .ok_or_else(|| Error::Invalid(format!("index cache segment {name} unreadable after writing")))
    }

    /// Merges adjacent segments `segs[range]` into one: records in id
    /// order, a record met twice (same chunk, pack and offset) kept once.
    /// A part that fails its checksums is dropped instead (false): its
    /// index objects are then merged again.
    fn merge(&self, segs: &mut Vec<Segment>, range: std::ops::Range<usize>) -> Result<bool> {
        let ix = Index::from_segments(segs.drain(range.clone()).collect());
        let mut w = SegmentWriter::create(&self.dir, ix.len() as u64)?;
        if merge_records(&ix, &mut w).is_err() && ix.segs.iter().any(Segment::is_bad) {
            // The good parts go back; the bad one is gone (its file removed).
            let good: Vec<Segment> = ix.segs.into_iter().filter(|s| !s.is_bad()).collect();
            segs.splice(range.start..range.start, good);
            return Ok(false);
        }
        let names: Vec<Id> = ix.names.iter().copied().collect();
        let seg = self.reopen(w.finish(&names, &ix.packs)?)?;
        segs.insert(range.start, seg);
        Ok(true)
    }

    /// The merges a command does itself: similar-sized neighbours at the
    /// new end while they stay small, and the smallest neighbours while
    /// there are too many segments. Returns whether the list changed, and
    /// whether a damaged segment was dropped (its objects are to be merged again).
    fn tidy(&self, segs: &mut Vec<Segment>) -> Result<(bool, bool)> {
        let (mut changed, mut dropped) = (false, false);
        loop {
            let n = segs.len();
            let pair = if n >= 2
                && segs[n - 1].len() * 4 >= segs[n - 2].len()
                && segs[n - 2].len() + segs[n - 1].len() <= CHEAP_MERGE
            {
                Some(n - 2)
            } else if n > MAX_SEGMENTS {
                (0..n - 1).min_by_key(|&i| segs[i].len() + segs[i + 1].len())
            } else {
                None
            };
            let Some(i) = pair else { return Ok((changed, dropped)) };
            changed = true;
            dropped |= !self.merge(segs, i..i + 2)?;
        }
    }
}

/// The records of `ix` into `w`, in id order; a record met twice (same
/// chunk, pack and offset) written once. Fails when a part turns out
/// damaged on the way (it is then bad, and dropped by the caller).
fn merge_records(ix: &Index, w: &mut SegmentWriter) -> Result<()> {
    let mut heads = ix.heads();
    let mut last: Option<(Id, u32, u32)> = None;
    loop {
        let best =
            (0..heads.len()).filter_map(|h| heads[h].peek().map(|(id, no, loc)| ((*id, *no, loc.offset), h))).min();
        let Some((key, h)) = best else { break };
        let (id, no, loc) = heads[h].next().expect("peeked");
        if last == Some(key) {
            continue;
        }
        last = Some(key);
        w.push(&encode(&id, no, &loc))?;
    }
    match ix.segs.iter().find(|s| s.is_bad()) {
        Some(bad) => Err(Error::Invalid(format!("index cache segment {} is damaged", bad.name))),
        None => Ok(()),
    }
}

/// Held by a background merge while it runs.
const MERGE_LOCK: &str = "merge.lock";
/// A background merge's file until it joins the list.
const BACKGROUND: &str = "bg-";
/// Background merges stop at this many segments.
const BACKGROUND_TARGET: usize = 2;

/// Merges the cache's segments down to a few on a thread of its own, for
/// a command that runs a while (a backup): the merges too large for a
/// command to do in passing (a `wal push` must not rewrite gigabytes). The
/// lock is held only to choose two segments and to swap in their merge;
/// one merge runs at a time per cache. When the process ends first, the
/// unfinished file is deleted by a later command.
pub(crate) fn merge_in_background(cache_dir: &Path) {
    let dir = cache_dir.join("index");
    let Ok(Some(held)) = flock(&dir, MERGE_LOCK, false) else { return };
    std::thread::spawn(move || {
        let _held = held;
        lowest_priority();
        let _ = background_merges(&dir);
    });
}

/// This thread yields the CPU and the disk to the rest of the process (a
/// backup on a small machine): nice 19, idle I/O class. Best effort.
fn lowest_priority() {
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        // ioprio_set(IOPRIO_WHO_PROCESS, tid, IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0))
        libc::syscall(libc::SYS_ioprio_set, 1, tid, 3 << 13);
    }
}

fn background_merges(dir: &Path) -> Result<()> {
    loop {
        let (ix, names) = {
            let cache = Cache::lock(dir)?;
            let (mut segs, _) = cache.segments()?;
            if segs.len() <= BACKGROUND_TARGET {
                return Ok(());
            }
            let i = (0..segs.len() - 1).min_by_key(|&i| segs[i].len() + segs[i + 1].len()).expect("two");
            let names = (segs[i].name.clone(), segs[i + 1].name.clone());
            (Index::from_segments(segs.drain(i..i + 2).collect()), names)
        };
        let mut w = SegmentWriter::create_as(dir, ix.len() as u64, BACKGROUND)?;
        // A damaged part ends it: the next sync drops it and merges its objects again.
        merge_records(&ix, &mut w)?;
        let cache = Cache::lock(dir)?;
        let (mut segs, _) = cache.segments()?;
        // Swapped in only where the two still stand side by side.
        let Some(i) = segs.windows(2).position(|p| p[0].name == names.0 && p[1].name == names.1) else {
            return Ok(());
        };
        let merged: Vec<Id> = ix.names.iter().copied().collect();
        let seg = cache.reopen(w.finish(&merged, &ix.packs)?)?;
        segs.splice(i..i + 2, [seg]);
        cache.commit(&segs)?;
    }
}

const SEGMENTS: &str = "segments";
const SEGMENTS_HEADER: &str = "dedupe index segments v1";

fn encode(id: &Id, pack: u32, loc: &Location) -> [u8; REC] {
    let mut r = [0u8; REC];
    r[..32].copy_from_slice(id);
    r[32..36].copy_from_slice(&pack.to_le_bytes());
    r[36..40].copy_from_slice(&loc.offset.to_le_bytes());
    r[40..44].copy_from_slice(&loc.length.to_le_bytes());
    r[44..48].copy_from_slice(&loc.raw_len.to_le_bytes());
    r
}

/// `sync_cache` for one listing; true when a listed object had vanished.
fn sync_listed(
    backend: &dyn Backend,
    keys: &Keys,
    cache_dir: &Path,
    listing: Vec<(String, u64)>,
) -> Result<(Index, bool)> {
    let cache = Cache::open(cache_dir)?;
    let listed: Vec<(String, Id, u64)> = listing
        .into_iter()
        .filter_map(|(n, size)| crate::crypto::parse_id(ObjectKind::Index.id_of(&n)).map(|id| (n, id, size)))
        .collect();
    let listed_ids: HashSet<Id> = listed.iter().map(|(_, id, _)| *id).collect();
    let (mut segs, mut changed) = cache.segments()?;
    // An index object we merged has gone (`repair index` or `prune`
    // replaced it): its packs may be gone too. Start over.
    if !segs.iter().all(|s| s.names.iter().all(|n| listed_ids.contains(n))) {
        segs.clear();
        changed = true;
    }
    let mut damaged = Vec::new();
    let mut vanished = false;
    // Twice at most: a segment found damaged while merging is dropped,
    // and its index objects are fetched again.
    for _ in 0..2 {
        let merged: HashSet<Id> = segs.iter().flat_map(|s| s.names.iter().copied()).collect();
        let pending = listed.iter().filter(|(_, id, _)| !merged.contains(id));
        changed |= add_segments(&cache, &mut segs, backend, keys, pending, &mut damaged, &mut vanished)?;
        let (tidied, dropped) = cache.tidy(&mut segs)?;
        changed |= tidied;
        if !dropped {
            break;
        }
    }
    if changed {
        cache.commit(&segs)?;
    }
    let mut index = Index::from_segments(segs);
    index.damaged = damaged;
    Ok((index, vanished))
}

/// Fetches the `pending` index objects and writes their records as new
/// segments; true if any was written. Damaged objects are named in
/// `damaged`, vanished ones set `vanished`.
fn add_segments<'a>(
    cache: &Cache,
    segs: &mut Vec<Segment>,
    backend: &dyn Backend,
    keys: &Keys,
    pending: impl Iterator<Item = &'a (String, Id, u64)>,
    damaged: &mut Vec<String>,
    vanished: &mut bool,
) -> Result<bool> {
    let mut pending = pending.peekable();
    let mut added = false;
    while pending.peek().is_some() {
        let mut pack_no: HashMap<Id, u32> = HashMap::new();
        let mut packs: Vec<Id> = Vec::new();
        let mut names: Vec<Id> = Vec::new();
        let mut recs: Vec<[u8; REC]> = Vec::new();
        // Take index objects until a batch of records is full, then write it as a segment.
        while recs.len() < MERGE_BATCH {
            // A few at a time, read concurrently on a remote store.
            let mut group: Vec<&(String, Id, u64)> = Vec::new();
            let mut bytes = 0;
            while let Some(next) =
                pending.next_if(|o| group.is_empty() || (group.len() < READ_GROUP && bytes + o.2 <= READ_BYTES))
            {
                bytes += next.2;
                group.push(next);
            }
            if group.is_empty() {
                break;
            }
            let to_get: Vec<String> = group.iter().map(|(n, _, _)| n.clone()).collect();
            for ((name, id, _), sealed) in group.into_iter().zip(backend.get_many(&to_get)) {
                // A damaged (or vanished) index object is left out and not
                // recorded, so it is tried again next time: its chunks merely look
                // unknown (a backup stores them again; `repair index` rebuilds it
                // from the packs). Failing here would stop every backup, and a
                // database server's archive_command with them.
                let objects = match sealed.and_then(|sealed| open_index_object(keys, name, &sealed)) {
                    Ok(o) => o,
                    Err(Error::Corrupt { .. }) => {
                        damaged.push(name.clone());
                        continue;
                    }
                    Err(Error::Missing(_)) => {
                        *vanished = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for (pack, entries) in objects {
                    let no = *pack_no.entry(pack).or_insert_with(|| {
                        packs.push(pack);
                        (packs.len() - 1) as u32
                    });
                    for e in entries {
                        let loc = Location { pack, offset: e.offset, length: e.length, raw_len: e.raw_len };
                        recs.push(encode(&e.id, no, &loc));
                    }
                }
                names.push(*id);
            }
        }
        if !names.is_empty() {
            segs.push(cache.write(recs, &names, &packs)?);
            added = true;
            // Merged as they come, and the list written, so that the files
            // merged away are deleted now: a first sync of a large index
            // would otherwise hold every intermediate segment on disk.
            cache.tidy(segs)?;
            cache.commit(segs)?;
        }
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64, seed: u64) -> Vec<Id> {
        (0..n).map(|i| *blake3::keyed_hash(&[seed as u8; 32], &i.to_le_bytes()).as_bytes()).collect()
    }

    fn loc(pack: Id, i: usize) -> Location {
        Location { pack, offset: i as u32 * 100, length: 100, raw_len: 90 }
    }

    /// A segment of `ids`, all in one pack, as merging index object `name` would write it.
    fn segment(cache: &Cache, ids: &[Id], name: u8, pack: Id) -> Segment {
        let recs = ids.iter().enumerate().map(|(i, id)| encode(id, 0, &loc(pack, i))).collect();
        cache.write(recs, &[[name; 32]], &[pack]).unwrap()
    }

    #[test]
    fn segments_merge_as_they_come_and_in_the_background_and_every_record_stays_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        {
            let cache = Cache::open(dir.path()).unwrap();
            let mut segs = Vec::new();
            for s in 0..40u8 {
                let batch = ids(1000 + s as u64 * 50, s as u64);
                segs.push(segment(&cache, &batch, s, [s; 32]));
                all.extend(batch.into_iter().map(|id| (id, s)));
                if s < 36 {
                    cache.tidy(&mut segs).unwrap();
                    assert!(segs.len() <= MAX_SEGMENTS);
                }
            }
            // The last four left as they came: more than a background merge leaves.
            cache.commit(&segs).unwrap();
        }
        let check = |what: &str| {
            let cache = Cache::open(dir.path()).unwrap();
            let (segs, changed) = cache.segments().unwrap();
            assert!(!changed, "{what}: the list is whole");
            let n = segs.len();
            let ix = Index::from_segments(segs);
            assert_eq!(ix.len(), all.len(), "{what}");
            for (i, (id, s)) in all.iter().enumerate().step_by(7) {
                let found = ix.lookup(id).unwrap_or_else(|| panic!("{what}: record {i}"));
                assert_eq!(found.pack, [*s; 32]);
            }
            assert_eq!(ix.iter_ids().count(), all.len(), "{what}");
            assert!((0..40u8).all(|s| ix.merged(&[s; 32])));
            n
        };
        let before = check("merged as they came");
        assert!(before > BACKGROUND_TARGET, "{before} segments");
        // A merge running elsewhere keeps its file through another command's commit.
        let bg = dir.path().join("index").join(format!("{BACKGROUND}0000"));
        std::fs::write(&bg, b"being written").unwrap();
        let held = flock(&dir.path().join("index"), MERGE_LOCK, false).unwrap().expect("free");
        {
            let cache = Cache::open(dir.path()).unwrap();
            let (segs, _) = cache.segments().unwrap();
            cache.commit(&segs).unwrap();
        }
        assert!(bg.exists());
        drop(held);
        background_merges(&dir.path().join("index")).unwrap();
        assert_eq!(check("merged in the background"), BACKGROUND_TARGET);
        assert!(!bg.exists(), "an abandoned background file is removed");
    }

    #[test]
    fn a_record_merged_twice_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let same = ids(500, 9);
        let mut segs = vec![segment(&cache, &same, 1, [3; 32]), segment(&cache, &same, 2, [3; 32])];
        assert!(cache.merge(&mut segs, 0..2).unwrap());
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].len(), 500);
        assert_eq!(segs[0].names.len(), 2);
    }
}
