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
//! The local cache merges every index object into one file of sorted,
//! fixed-width records opened with memmap2, so a lookup is a binary search
//! and memory does not grow with the repository. The file also names the
//! index objects it holds; on open, only new objects are fetched and merged.

use crate::backend::{Backend, ObjectKind};
use crate::crypto::{Id, Keys};
use crate::error::{Error, Result};
use crate::pack::{PackEntry, ENTRY_LEN};
use memmap2::Mmap;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub const INDEX_AAD: &[u8] = b"dedupe index v1";
/// Version 2 ends with the BLAKE3 of everything before it: a damaged cache
/// is rebuilt, never trusted (a flipped pack number reads the wrong blob).
const CACHE_MAGIC: &[u8; 16] = b"dedupe idxcache2";
const REC: usize = 48;
/// New records are sorted and merged into the cache file in batches of this
/// many, which bounds memory when a cache is first built for a big repository.
const MERGE_BATCH: usize = 1 << 20;
/// Index objects read at once.
const READ_GROUP: usize = 16;

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

/// The merged, memory-mapped index.
pub struct Index {
    map: Option<Mmap>,
    names: HashSet<Id>,
    packs: Vec<Id>,
    records_at: usize,
    count: usize,
    /// Index objects of the listing that failed verification and were left
    /// out (`sync_cache`): prune must not run while their packs look unindexed.
    pub(crate) damaged: Vec<String>,
}

fn rec_id(r: &[u8]) -> &[u8] {
    &r[..32]
}

impl Index {
    fn empty() -> Self {
        Index { map: None, names: HashSet::new(), packs: Vec::new(), records_at: 0, count: 0, damaged: Vec::new() }
    }

    fn records(&self) -> &[u8] {
        match &self.map {
            Some(m) => &m[self.records_at..self.records_at + self.count * REC],
            None => &[],
        }
    }

    /// Every pack the index knows; a record names its pack by its
    /// position here (its pack number).
    pub(crate) fn packs(&self) -> &[Id] {
        &self.packs
    }

    /// How many records (chunk copies) the index holds.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Whether the index object `id` was merged into this index (a damaged
    /// or vanished one is not).
    pub(crate) fn merged(&self, id: &Id) -> bool {
        self.names.contains(id)
    }

    /// Record `pos`: chunk id, pack number and where in the pack.
    pub(crate) fn record(&self, pos: usize) -> (Id, u32, Location) {
        let r = &self.records()[pos * REC..(pos + 1) * REC];
        let u = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().expect("4"));
        let pack = self.packs.get(u(32) as usize).copied().unwrap_or([0; 32]);
        (r[..32].try_into().expect("32"), u(32), Location { pack, offset: u(36), length: u(40), raw_len: u(44) })
    }

    pub fn lookup(&self, id: &Id) -> Option<Location> {
        self.find(id, |_| true).map(|(_, loc)| loc)
    }

    /// The first copy of chunk `id` whose pack number `allowed` accepts,
    /// with its record position: a chunk stored twice (by two racing
    /// backups, or again after its pack was marked) has a record per copy.
    pub(crate) fn find(&self, id: &Id, allowed: impl Fn(u32) -> bool) -> Option<(usize, Location)> {
        let recs = self.records();
        // The first record not less than `id`.
        let (mut lo, mut hi) = (0usize, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if rec_id(&recs[mid * REC..(mid + 1) * REC]) < &id[..] {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut pos = lo;
        while pos < self.count && rec_id(&recs[pos * REC..(pos + 1) * REC]) == &id[..] {
            let (_, no, loc) = self.record(pos);
            // A damaged cache can name a pack it does not list: not found, not a panic.
            if (no as usize) < self.packs.len() && allowed(no) {
                return Some((pos, loc));
            }
            pos += 1;
        }
        None
    }

    /// Every pack the index names, with the end of its last blob: the least
    /// length the pack can have.
    pub fn pack_extents(&self) -> HashMap<Id, u64> {
        let mut out: HashMap<Id, u64> = HashMap::new();
        for r in self.records().chunks_exact(REC) {
            let u = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().expect("4"));
            let Some(pack) = self.packs.get(u(32) as usize) else { continue };
            let end = u(36) as u64 + u(40) as u64;
            let e = out.entry(*pack).or_insert(0);
            *e = (*e).max(end);
        }
        out
    }

    /// Every (chunk id, raw length) once, in id order.
    pub fn iter_ids(&self) -> impl Iterator<Item = (Id, u32)> + '_ {
        let mut last: Option<&[u8]> = None;
        self.records().chunks_exact(REC).filter_map(move |r| {
            if last == Some(rec_id(r)) {
                return None;
            }
            last = Some(rec_id(r));
            Some((r[..32].try_into().expect("32"), u32::from_le_bytes(r[44..48].try_into().expect("4"))))
        })
    }

    pub(crate) fn load(path: &Path) -> Result<Option<Index>> {
        let Ok(f) = File::open(path) else {
            return Ok(None);
        };
        // SAFETY: cache files are only ever replaced by rename, never written in place.
        let map = unsafe { Mmap::map(&f) }.map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
        // A damaged cache must read as "not a cache" (rebuilt from the
        // repository), never as a huge record count: every size is checked.
        let parse = || -> Option<Index> {
            if map.len() < 16 || &map[..16] != CACHE_MAGIC {
                return None;
            }
            let mut p = 16;
            let u32at = |p: usize| map.get(p..p + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize);
            let ids_at = |p: usize, n: usize| map.get(p..p.checked_add(n.checked_mul(32)?)?);
            let n_names = u32at(p)?;
            p += 4;
            let names = ids_at(p, n_names)?.chunks_exact(32).map(|c| c.try_into().expect("32")).collect();
            p += n_names * 32;
            let n_packs = u32at(p)?;
            p += 4;
            let packs = ids_at(p, n_packs)?.chunks_exact(32).map(|c| c.try_into().expect("32")).collect();
            p += n_packs * 32;
            let count = usize::try_from(u64::from_le_bytes(map.get(p..p + 8)?.try_into().ok()?)).ok()?;
            p += 8;
            let body = count.checked_mul(REC).and_then(|n| n.checked_add(p))?;
            if Some(map.len()) != body.checked_add(32) {
                return None;
            }
            let mut h = blake3::Hasher::new();
            h.update_rayon(&map[..body]);
            if h.finalize().as_bytes() != &map[body..] {
                return None;
            }
            Some(Index { map: None, names, packs, records_at: p, count, damaged: Vec::new() })
        };
        Ok(parse().map(|mut ix| {
            ix.map = Some(map);
            ix
        }))
    }
}

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

/// `sync_cache` for one listing; true when a listed object had vanished.
fn sync_listed(
    backend: &dyn Backend,
    keys: &Keys,
    cache_dir: &Path,
    listing: Vec<(String, u64)>,
) -> Result<(Index, bool)> {
    crate::private::create_dir(cache_dir)
        .map_err(|e| Error::io(format!("creating cache {}", cache_dir.display()), e))?;
    let path = cache_dir.join("index.bin");
    let listed: Vec<(String, Id)> = listing
        .into_iter()
        .filter_map(|(n, _)| crate::crypto::parse_id(ObjectKind::Index.id_of(&n)).map(|id| (n, id)))
        .collect();
    let listed_ids: HashSet<Id> = listed.iter().map(|(_, id)| *id).collect();
    let mut old = Index::load(&path)?.unwrap_or_else(Index::empty);
    // An index object we merged has gone (`repair index` replaced it): start over.
    if !old.names.is_subset(&listed_ids) {
        old = Index::empty();
    }
    let new: Vec<&(String, Id)> = listed.iter().filter(|(_, id)| !old.names.contains(id)).collect();
    if new.is_empty() {
        return Ok((old, false));
    }
    let mut cur = old;
    let mut damaged = Vec::new();
    let mut vanished = false;
    let mut pending = new.into_iter().peekable();
    while pending.peek().is_some() {
        let mut pack_no: HashMap<Id, u32> = cur.packs.iter().enumerate().map(|(i, p)| (*p, i as u32)).collect();
        let mut packs = cur.packs.clone();
        let mut names = cur.names.clone();
        let mut recs: Vec<[u8; REC]> = Vec::new();
        // Take index objects until a batch of records is full, then merge it in.
        while recs.len() < MERGE_BATCH {
            // A few at a time, read concurrently on a remote store.
            let group: Vec<&(String, Id)> = pending.by_ref().take(READ_GROUP).collect();
            if group.is_empty() {
                break;
            }
            let to_get: Vec<String> = group.iter().map(|(n, _)| n.clone()).collect();
            for ((name, id), sealed) in group.into_iter().zip(backend.get_many(&to_get)) {
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
                        vanished = true;
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
                        let mut r = [0u8; REC];
                        r[..32].copy_from_slice(&e.id);
                        r[32..36].copy_from_slice(&no.to_le_bytes());
                        r[36..40].copy_from_slice(&e.offset.to_le_bytes());
                        r[40..44].copy_from_slice(&e.length.to_le_bytes());
                        r[44..48].copy_from_slice(&e.raw_len.to_le_bytes());
                        recs.push(r);
                    }
                }
                names.insert(*id);
            }
        }
        recs.sort_unstable_by(|a, b| a[..32].cmp(&b[..32]));
        cur = write_cache(&path, &cur, &names, &packs, &recs)?;
    }
    cur.damaged = damaged;
    Ok((cur, vanished))
}

/// Writes the merged cache and returns it, opened from the file written:
/// not from `path` after the rename, where another command sharing the
/// cache may already have put its own merge, which lacks ours.
fn write_cache(path: &Path, old: &Index, names: &HashSet<Id>, packs: &[Id], new: &[[u8; REC]]) -> Result<Index> {
    let dir = path.parent().expect("cache file has a parent");
    let tmp = tempfile_in(dir)?;
    let ctx = |e| Error::io(format!("writing index cache in {}", dir.display()), e);
    {
        let f = File::create(&tmp).map_err(ctx)?;
        let mut w = Hashing { inner: BufWriter::with_capacity(1 << 20, f), hash: blake3::Hasher::new() };
        w.write_all(CACHE_MAGIC).map_err(ctx)?;
        w.write_all(&(names.len() as u32).to_le_bytes()).map_err(ctx)?;
        for n in names {
            w.write_all(n).map_err(ctx)?;
        }
        w.write_all(&(packs.len() as u32).to_le_bytes()).map_err(ctx)?;
        for p in packs {
            w.write_all(p).map_err(ctx)?;
        }
        w.write_all(&((old.count + new.len()) as u64).to_le_bytes()).map_err(ctx)?;
        // Merge two sorted runs.
        let olds = old.records();
        let (mut i, mut j) = (0, 0);
        while i < old.count || j < new.len() {
            let take_old = j == new.len() || (i < old.count && olds[i * REC..i * REC + 32] <= new[j][..32]);
            if take_old {
                w.write_all(&olds[i * REC..(i + 1) * REC]).map_err(ctx)?;
                i += 1;
            } else {
                w.write_all(&new[j]).map_err(ctx)?;
                j += 1;
            }
        }
        let sum = w.hash.finalize();
        let mut w = w.inner;
        w.write_all(sum.as_bytes()).map_err(ctx)?;
        w.into_inner().map_err(|e| ctx(e.into_error()))?;
    }
    let written = Index::load(&tmp).and_then(|ix| {
        ix.ok_or_else(|| Error::Invalid(format!("index cache {} unreadable after writing", tmp.display())))
    });
    let renamed = written.and_then(|ix| std::fs::rename(&tmp, path).map(|()| ix).map_err(ctx));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

/// A writer that hashes what passes through it (the cache's checksum).
struct Hashing<W: Write> {
    inner: W,
    hash: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn tempfile_in(dir: &Path) -> Result<PathBuf> {
    use rand::RngCore;
    Ok(dir.join(format!(".tmp-{:016x}", rand::rng().next_u64())))
}
