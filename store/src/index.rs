//! Where each chunk is: repository index objects and the local index cache.
//!
//! Index objects (`index/<stamp>-<id>`, format-spec §10) are written next
//! to every pack, so chunks of an interrupted backup are found by the next
//! one. Plaintext:
//! ```text
//! repeated: pack id (32) || the pack trailer's entries (pack.rs: count, entries, delta bases)
//! ```
//! sealed with associated data `"dedupe index v2"` (`v1`, before deltas:
//! the records have no delta bases); the object's id is the
//! unkeyed BLAKE3 of the sealed bytes, and its stamp the writer's clock.
//!
//! The local cache (format-spec §16) holds every index object's records in
//! a few segment files of sorted, fixed-width records (`segment.rs`), so a
//! lookup reads a filter block and a stretch of records, and memory does
//! not grow with the repository. New index objects become a
//! new small segment: a command's work is proportional to what is new, not
//! to the repository; segments of similar size are merged as they come.
//!
//! Nor does listing grow: names sort by their stamps, so a command lists
//! only the objects stamped since shortly before the newest it has seen
//! (`list_index`), and learns what a prune deleted or rewrote from its
//! compaction record (`compaction.rs`) instead of by seeing objects vanish.

use crate::backend::{stamp_of, Backend, ObjectKind};
use crate::compaction::Compaction;
use crate::crypto::{hex_id, parse_id, Id, Keys};
use crate::error::{Error, Result};
use crate::pack::{decode_entries, encode_entries, PackEntry, ENTRY_LEN};
use crate::segment::{Segment, SegmentWriter, REC};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub const INDEX_AAD: &[u8] = b"dedupe index v2";
/// Index objects written before deltas: records without delta bases.
pub const INDEX_AAD_V1: &[u8] = b"dedupe index v1";

/// Encodes and seals one index object; returns (name, bytes). Its name
/// is stamped `at` (a writer's clock; a compaction's, its newest part's).
pub fn seal_index_object(keys: &Keys, packs: &[(Id, Vec<PackEntry>)], at: SystemTime) -> (String, Vec<u8>) {
    let mut plain = Vec::new();
    for (pack, entries) in packs {
        plain.extend_from_slice(pack);
        encode_entries(entries, &mut plain);
    }
    let sealed = keys.seal(INDEX_AAD, &plain);
    (crate::backend::index_object_name(at, &blake3::hash(&sealed).to_hex()), sealed)
}

pub fn open_index_object(keys: &Keys, name: &str, sealed: &[u8]) -> Result<Vec<(Id, Vec<PackEntry>)>> {
    crate::crypto::check_content_name(name, sealed)?;
    let mut out = Vec::new();
    if let Some(plain) = keys.open(INDEX_AAD, sealed) {
        let mut p = &plain[..];
        while !p.is_empty() {
            if p.len() < 32 {
                return Err(Error::corrupt(name, "truncated pack record"));
            }
            let pack: Id = p[..32].try_into().expect("32");
            let (entries, rest) = decode_entries(&p[32..]).map_err(|why| Error::corrupt(name, why))?;
            out.push((pack, entries));
            p = rest;
        }
        return Ok(out);
    }
    let plain = keys.open(INDEX_AAD_V1, sealed).ok_or_else(|| Error::corrupt(name, "fails authentication"))?;
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
    /// Per pack number: deleted by a prune (its records are skipped).
    dead: Vec<bool>,
    names: HashSet<Id>,
    /// Index objects of the listing that failed verification and were left
    /// out (`sync_cache`): prune must not run while their packs look unindexed.
    pub(crate) damaged: Vec<String>,
    /// Whether `index/` was listed whole for it; if not, a chunk a manifest
    /// names may be in an object stamped too early to be listed.
    pub(crate) listed_whole: bool,
}

impl Index {
    /// The segments as one index; records of the `dead` packs are skipped,
    /// and `adopted` index objects count as merged (format-spec §16).
    fn from_segments(segs: Vec<Segment>, dead: &HashSet<Id>, adopted: &[Id]) -> Index {
        let mut starts = vec![0];
        let mut packs = Vec::new();
        let mut pack_no: HashMap<Id, u32> = HashMap::new();
        let mut pack_nos = Vec::new();
        let mut names: HashSet<Id> = adopted.iter().copied().collect();
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
        let dead = packs.iter().map(|p| dead.contains(p)).collect();
        Index { segs, starts, pack_nos, packs, dead, names, damaged: Vec::new(), listed_whole: false }
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

    /// A record of segment `s` as read, its pack number made the index's;
    /// `None` for a record of a deleted pack.
    fn decode_bytes(&self, s: usize, r: &[u8; REC]) -> Option<(Id, u32, Location)> {
        let u = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().expect("4"));
        let no = *self.pack_nos[s].get(u(32) as usize)?;
        if self.dead[no as usize] {
            return None;
        }
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
        Ok(Segment::open(path)?.map(|s| Index::from_segments(vec![s], &HashSet::new(), &[])))
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
/// Above this many segments of at least half `CHEAP_MERGE` a command merges the
/// smallest neighbours, whatever their size: lookups visit every segment's
/// filter. Long commands merge further in the background (`merge_in_background`).
const MAX_SEGMENTS: usize = 16;
/// And above this many segments in all. The small ones beyond
/// `MAX_SEGMENTS` are new (a day of `wal push`es): merging one into a large
/// neighbour would make a `wal push` rewrite hundreds of megabytes.
const MAX_ALL_SEGMENTS: usize = MAX_SEGMENTS + 8;

/// What `list_index` found: the index objects (all of them, or those
/// stamped since shortly before the newest the cache has seen) and every
/// compaction record.
pub(crate) struct IndexListing {
    objects: Vec<(String, u64)>,
    /// `None`: `index/` was listed whole; else the name listed after.
    after: Option<String>,
    compactions: Vec<String>,
}

/// How long before the newest stamp a cache has seen its next listing
/// starts: an object stamped earlier that landed later (a slow upload, a
/// writer whose clock is behind) is still found within this margin.
const MARGIN: u64 = 3600;
/// `index/` is listed whole at least this often, which also finds what a
/// writer whose clock was further behind than `MARGIN` stamped too early.
const WHOLE_EVERY: u64 = 86_400;

/// Lists the index objects (whole when `whole`, or when the cache has not
/// listed whole for a day; otherwise from the cache's newest stamp less
/// `MARGIN`) and, at the same time, the compaction records.
pub(crate) fn list_index(backend: &dyn Backend, cache_dir: &Path, whole: bool) -> Result<IndexListing> {
    let now = unix(SystemTime::now());
    let state = if whole { None } else { State::read(&cache_dir.join("index")) };
    let after = state.and_then(|s| match s.seen {
        Some(seen) if now < s.whole_at + WHOLE_EVERY => Some(format!("index/{:010}", seen.saturating_sub(MARGIN))),
        _ => None,
    });
    let (objects, compactions) = std::thread::scope(|sc| {
        let compactions = sc.spawn(|| backend.list(ObjectKind::Compaction));
        let objects = match &after {
            Some(a) => backend.list_after(ObjectKind::Index, a),
            None => backend.list(ObjectKind::Index),
        };
        (objects, compactions.join().expect("listing thread"))
    });
    Ok(IndexListing { objects: objects?, after, compactions: compactions?.into_iter().map(|(n, _)| n).collect() })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `objects` (names with sizes) cut into groups to fetch at once: at most
/// `READ_GROUP` objects and `READ_BYTES` together (one larger object alone),
/// so memory stays bounded whatever the objects' sizes.
pub(crate) fn read_groups(objects: &[(String, u64)]) -> Vec<&[(String, u64)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (_, size)) in objects.iter().enumerate() {
        if i > start && (i - start == READ_GROUP || bytes + size > READ_BYTES) {
            out.push(&objects[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < objects.len() {
        out.push(&objects[start..]);
    }
    out
}

/// Brings the local cache up to date with the repository's index objects
/// (`listing`, from `list_index`) and opens it.
///
/// A listed object that is gone when it is read was replaced by a prune,
/// which writes the compacted objects and its record before it deletes
/// the old ones: the index objects are listed again and the new ones
/// merged, or the chunks of the replaced objects would look unknown. A
/// cache that cannot follow the records (it missed one, or a `repair
/// index` reset them) starts over from a whole listing.
pub(crate) fn sync_cache(backend: &dyn Backend, keys: &Keys, cache_dir: &Path, listing: IndexListing) -> Result<Index> {
    let mut listing = listing;
    for attempt in 0..=RELIST {
        let whole = listing.after.is_none();
        match sync_listed(backend, keys, cache_dir, &listing)? {
            Synced::Done(index) => return Ok(index),
            Synced::Vanished(index) if attempt == RELIST => return Ok(index),
            Synced::Vanished(_) => listing = list_index(backend, cache_dir, whole)?,
            Synced::NeedsWhole => listing = list_index(backend, cache_dir, true)?,
        }
    }
    unreachable!("the last attempt returns")
}

/// How often `sync_cache` lists again when listed objects vanish.
const RELIST: usize = 5;

enum Synced {
    Done(Index),
    /// A listed object had vanished when it was fetched.
    Vanished(Index),
    /// The cache starts over, which a partial listing cannot feed.
    NeedsWhole,
}

/// What the cache knows beside its segments (`state`, JSON): where the
/// next listing starts, and which compaction records it has followed.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct State {
    /// The newest stamp listed (Unix seconds), from a stamp not in the future.
    seen: Option<u64>,
    /// When `index/` was last listed whole (Unix seconds).
    whole_at: u64,
    /// The greatest compaction sequence followed (0: none).
    sequence: u64,
    /// The compaction records followed that were still listed.
    records: Vec<String>,
    /// Index objects (hex ids) taken as merged from a compaction record:
    /// their records were already here, under the objects they replaced.
    adopted: Vec<String>,
}

impl State {
    fn read(dir: &Path) -> Option<State> {
        serde_json::from_slice(&std::fs::read(dir.join(STATE)).ok()?).ok()
    }
}

const STATE: &str = "state";
/// Packs compaction records name as deleted: 32 bytes each, then the
/// BLAKE3 of them.
const DEAD: &str = "dead";

/// The cache's directory and its list of live segments.
struct Cache {
    dir: PathBuf,
    /// Packs deleted by a prune; their records are dropped from lookups and merges.
    dead: HashSet<Id>,
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
        let dead = Cache::read_dead(dir).unwrap_or_default();
        Ok(Cache { dir: dir.to_path_buf(), dead, _lock: lock })
    }

    /// The dead packs; `None` when the file is missing or damaged.
    fn read_dead(dir: &Path) -> Option<HashSet<Id>> {
        let bytes = std::fs::read(dir.join(DEAD)).ok()?;
        let (ids, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
        if blake3::hash(ids).as_bytes() != sum || ids.len() % 32 != 0 {
            return None;
        }
        Some(ids.chunks_exact(32).map(|c| c.try_into().expect("32")).collect())
    }

    /// Writes `state` and `dead` (each to a temporary file, renamed into place).
    fn write_state(&self, state: &State) -> Result<()> {
        let mut ids: Vec<u8> = self.dead.iter().flatten().copied().collect();
        let sum = blake3::hash(&ids);
        ids.extend_from_slice(sum.as_bytes());
        self.replace(DEAD, &ids)?;
        self.replace(STATE, &serde_json::to_vec(state).expect("state serializes"))
    }

    /// Writes `bytes` as `name` through a temporary file.
    fn replace(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let tmp = self.dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
        let ctx = |e| Error::io(format!("writing the index cache's {name} in {}", self.dir.display()), e);
        std::fs::write(&tmp, bytes).map_err(ctx)?;
        std::fs::rename(&tmp, self.dir.join(name)).map_err(ctx)
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
        self.replace(SEGMENTS, body.as_bytes())?;
        let ctx = |e| Error::io(format!("writing the index cache list in {}", self.dir.display()), e);
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
        let ix = Index::from_segments(segs.drain(range.clone()).collect(), &self.dead, &[]);
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
    /// there are too many large segments, or too many in all. Returns whether the list changed, and
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
            } else if n > MAX_ALL_SEGMENTS || segs.iter().filter(|s| s.len() >= CHEAP_MERGE / 2).count() > MAX_SEGMENTS
            {
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
            (Index::from_segments(segs.drain(i..i + 2).collect(), &cache.dead, &[]), names)
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

/// `sync_cache` for one listing.
fn sync_listed(backend: &dyn Backend, keys: &Keys, cache_dir: &Path, listing: &IndexListing) -> Result<Synced> {
    let mut cache = Cache::open(cache_dir)?;
    let (mut segs, mut changed) = cache.segments()?;
    // A segment (or the list) was damaged and dropped: its index objects
    // are fetched again, and a partial listing may not name them.
    if changed && listing.after.is_some() {
        return Ok(Synced::NeedsWhole);
    }
    let known = State::read(&cache.dir).zip(Cache::read_dead(&cache.dir));
    // Without its state the cache cannot tell which packs were deleted: start over.
    if known.is_none() && !segs.is_empty() {
        segs.clear();
        changed = true;
    }
    let (mut state, dead) = known.unwrap_or_default();
    cache.dead = dead;
    let followed: HashSet<&str> = state.records.iter().map(String::as_str).collect();
    let unread: Vec<String> = listing.compactions.iter().filter(|n| !followed.contains(n.as_str())).cloned().collect();
    let (records, unreadable) = crate::compaction::read(backend, keys, &unread)?;
    let mut fresh = segs.is_empty() && state.adopted.is_empty();
    // A record missed (removed before this cache saw it) or unreadable
    // (its deleted packs unknown), or a `repair index`: start over.
    let missed = !fresh
        && (!unreadable.is_empty()
            || records.iter().find(|r| r.sequence > state.sequence).is_some_and(|r| r.sequence > state.sequence + 1));
    if missed || records.iter().any(|r| r.reset && r.sequence > state.sequence) {
        segs.clear();
        state = State::default();
        cache.dead.clear();
        changed = true;
        fresh = true;
    }
    if fresh && listing.after.is_some() {
        return Ok(Synced::NeedsWhole);
    }
    let mut merged: HashSet<Id> = segs.iter().flat_map(|s| s.names.iter().copied()).collect();
    merged.extend(state.adopted.iter().filter_map(|h| parse_id(h)));
    let mut pending: Vec<Pending> = Vec::new();
    let mut state_changed = changed || !unread.is_empty();
    for r in &records {
        follow(r, &mut cache.dead, &mut merged, &mut state, &mut pending);
    }
    let now = unix(SystemTime::now());
    let mut listed_ids = HashSet::new();
    for (name, size) in &listing.objects {
        let Some(id) = parse_id(ObjectKind::Index.id_of(name)) else { continue };
        listed_ids.insert(id);
        if let Some(t) = stamp_of(name).filter(|&t| t <= now + MARGIN) {
            state_changed |= state.seen.is_none_or(|s| t > s);
            state.seen = Some(state.seen.map_or(t, |s| s.max(t)));
        }
        if !merged.contains(&id) {
            pending.push(Pending { name: name.clone(), id, size: *size, listed: true });
        }
    }
    let mut seen_ids = HashSet::new();
    // Listed first: a listed object has its size, and its absence means something.
    pending.sort_by_key(|p| !p.listed);
    pending.retain(|p| !merged.contains(&p.id) && seen_ids.insert(p.id));
    if listing.after.is_none() {
        // A whole listing is the truth: adopted objects no longer listed were replaced.
        state.adopted.retain(|h| parse_id(h).is_some_and(|id| listed_ids.contains(&id)));
        state.whole_at = now;
        state_changed = true;
    }
    state.records = listing.compactions.clone();
    let mut damaged = Vec::new();
    let mut vanished = false;
    // Twice at most: a segment found damaged while merging is dropped,
    // and its index objects are fetched again.
    for _ in 0..2 {
        let merged: HashSet<Id> = segs.iter().flat_map(|s| s.names.iter().copied()).collect();
        let todo = pending.iter().filter(|p| !merged.contains(&p.id));
        changed |= add_segments(&cache, &mut segs, backend, keys, todo, &mut damaged, &mut vanished)?;
        let (tidied, dropped) = cache.tidy(&mut segs)?;
        changed |= tidied;
        if !dropped {
            break;
        }
        if listing.after.is_some() {
            return Ok(Synced::NeedsWhole);
        }
    }
    // The state first: segments merged from objects a record deleted packs of
    // must never be listed without the dead packs beside them.
    if state_changed || changed {
        cache.write_state(&state)?;
    }
    if changed {
        cache.commit(&segs)?;
    }
    let adopted: Vec<Id> = state.adopted.iter().filter_map(|h| parse_id(h)).collect();
    let mut index = Index::from_segments(segs, &cache.dead, &adopted);
    index.damaged = damaged;
    index.listed_whole = listing.after.is_none();
    Ok(if vanished { Synced::Vanished(index) } else { Synced::Done(index) })
}

/// An index object to fetch: listed, or named by a compaction record.
struct Pending {
    name: String,
    id: Id,
    size: u64,
    /// Listed (its absence means a prune replaced it since), not only named by a record.
    listed: bool,
}

/// Follows one compaction record: its deleted packs become dead, and each
/// object it wrote is adopted when every object it came from was merged
/// here, or else fetched.
fn follow(
    r: &Compaction,
    dead: &mut HashSet<Id>,
    merged: &mut HashSet<Id>,
    state: &mut State,
    pending: &mut Vec<Pending>,
) {
    dead.extend(r.deleted_packs.iter().copied());
    for (name, from) in &r.objects {
        let Some(id) = parse_id(ObjectKind::Index.id_of(name)) else { continue };
        if merged.contains(&id) {
            continue;
        }
        if !from.is_empty() && from.iter().all(|f| merged.contains(f)) {
            state.adopted.push(hex_id(&id));
            merged.insert(id);
        } else {
            // Its size is not known: taken as a compacted object's, to bound a read group.
            pending.push(Pending { name: name.clone(), id, size: 12 << 20, listed: false });
        }
    }
    state.sequence = state.sequence.max(r.sequence);
}

/// Fetches the `pending` index objects and writes their records as new
/// segments; true if any was written. Damaged objects are named in
/// `damaged`, vanished ones set `vanished`.
fn add_segments<'a>(
    cache: &Cache,
    segs: &mut Vec<Segment>,
    backend: &dyn Backend,
    keys: &Keys,
    pending: impl Iterator<Item = &'a Pending>,
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
            let mut group: Vec<&Pending> = Vec::new();
            let mut bytes = 0;
            while let Some(next) =
                pending.next_if(|o| group.is_empty() || (group.len() < READ_GROUP && bytes + o.size <= READ_BYTES))
            {
                bytes += next.size;
                group.push(next);
            }
            if group.is_empty() {
                break;
            }
            let to_get: Vec<String> = group.iter().map(|p| p.name.clone()).collect();
            for (Pending { name, id, listed, .. }, sealed) in group.into_iter().zip(backend.get_many(&to_get)) {
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
                    // Replaced by a later prune: its record names the successor.
                    Err(Error::Missing(_)) if !listed => continue,
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
                    assert!(segs.len() <= MAX_ALL_SEGMENTS);
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
            let ix = Index::from_segments(segs, &HashSet::new(), &[]);
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

    /// A backend that counts the index objects fetched.
    struct Counting {
        inner: crate::backend::ObjectStoreBackend,
        fetched: std::sync::Mutex<Vec<String>>,
    }

    impl Backend for Counting {
        fn put(&self, name: &str, bytes: bytes::Bytes) -> Result<()> {
            self.inner.put(name, bytes)
        }
        fn create(&self, name: &str, bytes: bytes::Bytes) -> Result<()> {
            self.inner.create(name, bytes)
        }
        fn get(&self, name: &str) -> Result<bytes::Bytes> {
            if name.starts_with("index/") {
                self.fetched.lock().unwrap().push(name.to_string());
            }
            self.inner.get(name)
        }
        fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> Result<bytes::Bytes> {
            self.inner.get_range(name, range)
        }
        fn list(&self, kind: ObjectKind) -> Result<Vec<(String, u64)>> {
            self.inner.list(kind)
        }
        fn list_after(&self, kind: ObjectKind, after: &str) -> Result<Vec<(String, u64)>> {
            self.inner.list_after(kind, after)
        }
        fn delete(&self, name: &str) -> Result<()> {
            self.inner.delete(name)
        }
        fn flush(&self) -> Result<()> {
            Ok(())
        }
        fn connections(&self) -> usize {
            1
        }
        fn location(&self) -> String {
            "memory".into()
        }
    }

    fn days_ago(d: u64) -> SystemTime {
        SystemTime::now() - std::time::Duration::from_secs(d * 86_400)
    }

    /// Stores an index object of `pack` holding `ids`, stamped `at`; returns its name.
    fn put_object(b: &dyn Backend, keys: &Keys, pack: Id, ids: &[Id], at: SystemTime) -> String {
        let entries = ids
            .iter()
            .enumerate()
            .map(|(i, id)| PackEntry { id: *id, offset: i as u32 * 100, length: 100, raw_len: 90, base: None })
            .collect();
        let (name, sealed) = seal_index_object(keys, &[(pack, entries)], at);
        b.put(&name, sealed.into()).unwrap();
        name
    }

    fn hash(name: &str) -> Id {
        parse_id(ObjectKind::Index.id_of(name)).unwrap()
    }

    #[test]
    fn a_cache_lists_what_is_new_and_follows_a_compaction_without_fetching_it() {
        let b = Counting { inner: crate::backend::ObjectStoreBackend::memory().unwrap(), fetched: Default::default() };
        let keys = Keys::generate();
        let dir = tempfile::tempdir().unwrap();
        let sync = |whole: bool| {
            b.fetched.lock().unwrap().clear();
            let listing = list_index(&b, dir.path(), whole).unwrap();
            let after = listing.after.clone();
            (sync_cache(&b, &keys, dir.path(), listing).unwrap(), after)
        };
        let (p1, p2, p3, p4) = ([1; 32], [2; 32], [3; 32], [4; 32]);
        let (i1, i2, i3, i4) = (ids(50, 1), ids(50, 2), ids(50, 3), ids(50, 4));
        let a = put_object(&b, &keys, p1, &i1, days_ago(10));
        let o2 = put_object(&b, &keys, p2, &i2, days_ago(5));

        // First: index/ listed whole, both merged.
        let (ix, after) = sync(false);
        assert_eq!(after, None);
        assert!(ix.listed_whole && ix.lookup(&i1[0]).is_some() && ix.lookup(&i2[0]).is_some());

        // A writer whose clock is six days behind, and one on time.
        let late = put_object(&b, &keys, p3, &i3, days_ago(6));
        let c = put_object(&b, &keys, p4, &i4, SystemTime::now());
        let (ix, after) = sync(false);
        let start = format!("index/{:010}", unix(days_ago(5)) - MARGIN);
        assert_eq!(after.as_deref(), Some(start.as_str()), "listed from an hour before the newest stamp seen");
        assert_eq!(*b.fetched.lock().unwrap(), vec![c.clone()], "only the new object is fetched");
        assert!(!ix.listed_whole && ix.lookup(&i4[0]).is_some());
        assert!(ix.lookup(&i3[0]).is_none(), "stamped before the listing's start: not seen yet");

        // A prune deletes p1 and compacts a and o2 into x; its record says so.
        let x = put_object(&b, &keys, p2, &i2, days_ago(5));
        let record = Compaction {
            sequence: 1,
            deleted_packs: vec![p1],
            objects: vec![(x.clone(), vec![hash(&a), hash(&o2)])],
            ..Default::default()
        };
        let (rname, sealed) = record.seal(&keys);
        b.put(&rname, sealed.into()).unwrap();
        b.delete(&a).unwrap();
        b.delete(&o2).unwrap();
        let segments_before = std::fs::read_to_string(dir.path().join("index").join(SEGMENTS)).unwrap();
        let (ix, _) = sync(false);
        assert!(b.fetched.lock().unwrap().is_empty(), "x is adopted, not fetched");
        assert_eq!(std::fs::read_to_string(dir.path().join("index").join(SEGMENTS)).unwrap(), segments_before);
        assert!(ix.lookup(&i1[0]).is_none(), "the deleted pack's chunks are gone");
        assert!(ix.lookup(&i2[0]).is_some() && ix.lookup(&i4[0]).is_some());
        assert!(ix.merged(&hash(&x)));

        // A whole listing (prune, check, a day later) finds the late object.
        let (ix, _) = sync(true);
        assert_eq!(*b.fetched.lock().unwrap(), vec![late.clone()]);
        assert!(ix.listed_whole && ix.lookup(&i3[0]).is_some() && ix.lookup(&i1[0]).is_none());

        // A record this cache never saw (sequence 2 removed): it starts over.
        let (rname, sealed) = Compaction { sequence: 3, deleted_packs: vec![p3], ..Default::default() }.seal(&keys);
        b.put(&rname, sealed.into()).unwrap();
        let (ix, after) = sync(false);
        assert_eq!(after, Some(format!("index/{:010}", stamp_of(&c).unwrap() - MARGIN)));
        let mut fetched = b.fetched.lock().unwrap().clone();
        fetched.sort();
        let mut all = vec![x, late, c];
        all.sort();
        assert_eq!(fetched, all, "rebuilt from a whole listing");
        assert!(ix.lookup(&i3[0]).is_none() && ix.lookup(&i2[0]).is_some() && ix.lookup(&i4[0]).is_some());

        // A damaged state file: the cache starts over too.
        std::fs::write(dir.path().join("index").join(STATE), b"{").unwrap();
        let (ix, _) = sync(false);
        assert_eq!(b.fetched.lock().unwrap().len(), 3);
        assert!(ix.lookup(&i3[0]).is_none(), "the dead packs come back from the records");
    }

    /// The child of `a_background_merge_killed_anywhere_leaves_a_usable_cache`:
    /// merges the cache in `DEDUPE_TEST_MERGE_DIR` in the background, as a backup does.
    #[test]
    #[ignore]
    fn background_merge_child() {
        if let Some(dir) = std::env::var_os("DEDUPE_TEST_MERGE_DIR") {
            background_merges(Path::new(&dir)).unwrap();
        }
    }

    #[test]
    fn a_background_merge_killed_anywhere_leaves_a_usable_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        {
            let cache = Cache::open(dir.path()).unwrap();
            let mut segs = Vec::new();
            for s in 0..5u8 {
                let batch = ids(200_000, s as u64 + 100);
                segs.push(segment(&cache, &batch, s, [s; 32]));
                all.extend(batch.into_iter().map(|id| (id, s)));
            }
            cache.commit(&segs).unwrap();
        }
        let index_dir = dir.path().join("index");
        // Killed after 0 ms (before it starts) up to after it has finished.
        for delay in [0u64, 30, 80, 150, 250, 400, 700, 1200, 5000] {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "index::tests::background_merge_child", "--ignored", "--test-threads", "1"])
                .env("DEDUPE_TEST_MERGE_DIR", &index_dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(delay));
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            child.wait().unwrap();
            let cache = Cache::open(dir.path()).unwrap();
            let (segs, changed) = cache.segments().unwrap();
            assert!(!changed, "after {delay} ms: the list and its segments are whole");
            cache.commit(&segs).unwrap();
            let ix = Index::from_segments(segs, &HashSet::new(), &[]);
            assert_eq!(ix.len(), all.len(), "after {delay} ms");
            for (id, s) in all.iter().step_by(997) {
                assert_eq!(ix.lookup(id).map(|l| l.pack), Some([*s; 32]), "after {delay} ms");
            }
            let live: HashSet<String> = ix.segs.iter().map(|s| s.name.clone()).collect();
            for e in std::fs::read_dir(&index_dir).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let stray = (name.starts_with("seg-") && !live.contains(&name))
                    || name.starts_with(BACKGROUND)
                    || name.starts_with(".tmp-");
                assert!(!stray, "after {delay} ms: {name} is left behind");
            }
        }
        let (segs, _) = Cache::open(dir.path()).unwrap().segments().unwrap();
        assert_eq!(segs.len(), BACKGROUND_TARGET, "the last child, not killed in time, finished");
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
