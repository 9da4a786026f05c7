//! One segment of the local index cache (format-spec §16): index records
//! sorted by chunk id in a file that is written once and never changed,
//! with a filter that answers "surely not here" from one 64-byte block, and
//! a checksum per 64 KiB unit, checked the first time a unit is read.
//!
//! Why a filter of our own rather than a crate's xor or binary-fuse filter:
//! those are built from all keys at once in memory (tens of bytes a key),
//! and a segment of 10^8 records must be written in bounded memory. Chunk
//! ids are keyed hashes, uniform, so a blocked Bloom filter whose block is
//! picked by the id's first bytes fills its blocks in id order, as the
//! sorted records are written: one block in memory at a time.
//!
//! Why checksums per unit rather than one for the file: a command must not
//! read gigabytes to open the cache (a `wal push` touches a few hundred
//! records), yet a damaged record must never be used (a flipped pack
//! number points a backup at the wrong pack). Small segments are checked
//! whole when opened; large ones unit by unit, before a unit is first used.

use crate::crypto::Id;
use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub(crate) const MAGIC: &[u8; 16] = b"dedupe idxseg v1";
pub(crate) const REC: usize = 48;
const BLOCK: usize = 64;
/// Filter bits per record: about 1% of absent ids pass.
const BITS_PER_RECORD: u64 = 10;
const UNIT: usize = 64 << 10;
const UNIT_HASH: usize = 16;
const TAIL: usize = 8 + 16;
/// Segments up to this size are checked whole when opened.
const CHECK_WHOLE: usize = 64 << 20;

/// The filter block of `id` among `blocks`: by its first eight bytes, so
/// ascending ids give non-decreasing blocks.
fn block_of(id: &[u8], blocks: u64) -> u64 {
    let prefix = u64::from_be_bytes(id[..8].try_into().expect("8"));
    ((prefix as u128 * blocks as u128) >> 64) as u64
}

/// The seven bits of `id` in its block: 9-bit positions from bytes 8..16.
fn bits_of(id: &[u8]) -> impl Iterator<Item = usize> {
    let v = u64::from_le_bytes(id[8..16].try_into().expect("8"));
    (0..7).map(move |i| ((v >> (9 * i)) & 511) as usize)
}

/// Hashes a region unit by unit as it is written.
struct Units {
    hasher: blake3::Hasher,
    filled: usize,
    out: Vec<[u8; UNIT_HASH]>,
}

impl Units {
    fn new() -> Units {
        Units { hasher: blake3::Hasher::new(), filled: 0, out: Vec::new() }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = (UNIT - self.filled).min(data.len());
            self.hasher.update(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == UNIT {
                self.finish_unit();
            }
        }
    }

    fn finish_unit(&mut self) {
        let h = self.hasher.finalize();
        self.out.push(h.as_bytes()[..UNIT_HASH].try_into().expect("16"));
        self.hasher = blake3::Hasher::new();
        self.filled = 0;
    }

    fn finish(mut self) -> Vec<[u8; UNIT_HASH]> {
        if self.filled > 0 {
            self.finish_unit();
        }
        self.out
    }
}

/// A region of the file written in order through a buffer.
struct Region {
    at: u64,
    buf: Vec<u8>,
    units: Units,
}

impl Region {
    fn write(&mut self, file: &File, data: &[u8]) -> std::io::Result<()> {
        self.units.update(data);
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.flush(file)?;
        }
        Ok(())
    }

    fn flush(&mut self, file: &File) -> std::io::Result<()> {
        file.write_all_at(&self.buf, self.at)?;
        self.at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// Writes one segment from records given in ascending id order.
pub(crate) struct SegmentWriter {
    dir: PathBuf,
    tmp: PathBuf,
    file: File,
    blocks: u64,
    count: u64,
    /// The block being filled, and the next block not yet written.
    block: (u64, [u8; BLOCK]),
    next_block: u64,
    filter: Region,
    records: Region,
    last: Option<Id>,
    fence: Vec<u8>,
}

impl SegmentWriter {
    /// A writer for at most `capacity` records (the filter is sized for it).
    pub(crate) fn create(dir: &Path, capacity: u64) -> Result<SegmentWriter> {
        SegmentWriter::create_as(dir, capacity, ".tmp-seg-")
    }

    /// `create`, the file named `<prefix><16 hex digits>` until `finish`.
    pub(crate) fn create_as(dir: &Path, capacity: u64, prefix: &str) -> Result<SegmentWriter> {
        let tmp = dir.join(format!("{prefix}{:016x}", rand::random::<u64>()));
        let file = File::create(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        let blocks = (capacity * BITS_PER_RECORD).div_ceil(BLOCK as u64 * 8).max(1);
        let region = |at| Region { at, buf: Vec::new(), units: Units::new() };
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            tmp,
            file,
            blocks,
            count: 0,
            block: (0, [0; BLOCK]),
            next_block: 0,
            filter: region(0),
            records: region(blocks * BLOCK as u64),
            last: None,
            fence: Vec::new(),
        })
    }

    /// Writes filter blocks up to (not including) `upto`.
    fn write_blocks(&mut self, upto: u64) -> Result<()> {
        while self.next_block < upto {
            let data = if self.next_block == self.block.0 { self.block.1 } else { [0; BLOCK] };
            let file = &self.file;
            self.filter.write(file, &data).map_err(|e| Error::io("writing an index cache segment", e))?;
            self.next_block += 1;
        }
        Ok(())
    }

    pub(crate) fn push(&mut self, rec: &[u8; REC]) -> Result<()> {
        let id: Id = rec[..32].try_into().expect("32");
        debug_assert!(self.last.is_none_or(|l| l <= id), "records must come in id order");
        self.last = Some(id);
        let b = block_of(&id, self.blocks);
        if b != self.block.0 {
            self.write_blocks(b)?;
            self.block = (b, [0; BLOCK]);
        }
        for bit in bits_of(&id) {
            self.block.1[bit / 8] |= 1 << (bit % 8);
        }
        if self.count.is_multiple_of(FENCE as u64) {
            self.fence.extend_from_slice(&id[..8]);
        }
        let file = &self.file;
        self.records.write(file, rec).map_err(|e| Error::io("writing an index cache segment", e))?;
        self.count += 1;
        Ok(())
    }

    /// Writes the footer and gives the segment its name; returns it.
    pub(crate) fn finish(mut self, names: &[Id], packs: &[Id]) -> Result<String> {
        self.write_blocks(self.blocks)?;
        let tmp = self.tmp.clone();
        let ctx = move |e| Error::io(format!("writing index cache segment {}", tmp.display()), e);
        let file = &self.file;
        self.filter.flush(file).map_err(&ctx)?;
        self.records.flush(file).map_err(&ctx)?;
        let end = self.records.at;
        let mut footer = Vec::new();
        footer.extend_from_slice(&self.count.to_le_bytes());
        footer.extend_from_slice(&self.blocks.to_le_bytes());
        footer.extend_from_slice(&(names.len() as u32).to_le_bytes());
        names.iter().for_each(|n| footer.extend_from_slice(n));
        footer.extend_from_slice(&(packs.len() as u32).to_le_bytes());
        packs.iter().for_each(|p| footer.extend_from_slice(p));
        let filter_units = std::mem::replace(&mut self.filter.units, Units::new()).finish();
        let record_units = std::mem::replace(&mut self.records.units, Units::new()).finish();
        for u in filter_units.iter().chain(&record_units) {
            footer.extend_from_slice(u);
        }
        footer.extend_from_slice(&self.fence);
        let sum = blake3::hash(&footer);
        footer.extend_from_slice(sum.as_bytes());
        let len = footer.len() as u64;
        footer.extend_from_slice(&len.to_le_bytes());
        footer.extend_from_slice(MAGIC);
        file.write_all_at(&footer, end).map_err(&ctx)?;
        let name = format!("seg-{:016x}.bin", rand::random::<u64>());
        let path = self.dir.join(&name);
        std::fs::rename(&self.tmp, &path).map_err(|e| Error::io(format!("naming {}", path.display()), e))?;
        Ok(name)
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        // After `finish` the file has been renamed: this finds nothing.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// An open segment, read with `pread` (below, why not a mapping).
pub(crate) struct Segment {
    pub(crate) name: String,
    path: PathBuf,
    file: File,
    count: usize,
    blocks: u64,
    /// Where the records start: the filter's length.
    records_at: u64,
    pub(crate) names: Vec<Id>,
    pub(crate) packs: Vec<Id>,
    units: Vec<[u8; UNIT_HASH]>,
    filter_units: usize,
    /// The first 8 bytes of every `FENCE`th record's id (big-endian).
    fence: Vec<u64>,
    checked: Vec<AtomicU64>,
    bad: AtomicBool,
}

/// Records per stretch of the fence.
const FENCE: usize = 256;
/// Units read at once by a scan (1 MiB).
const SCAN_UNITS: usize = 16;

impl Segment {
    /// Opens `path`; `None` when it is not a whole segment (a damaged
    /// footer, a unit that fails its checksum when checked whole, a file cut short).
    ///
    /// Why `pread` rather than memmap2, as the first cache had: the pages of
    /// a mapped file a process has read count in its resident memory until
    /// unmapped, and the kernel maps 64 KiB around every page fault, so
    /// lookups spread over a 5 GB cache showed as hundreds of MiB of
    /// "memory" (measured: 794 MiB for a million lookups at 10^8 records).
    /// A lookup reads one 64-byte filter block and one stretch of at most
    /// 257 records: two small reads from the page cache, nothing resident.
    pub(crate) fn open(path: &Path) -> Result<Option<Segment>> {
        Segment::open_checking(path, CHECK_WHOLE)
    }

    /// `open`, checking the segment whole when it is at most `whole` bytes.
    fn open_checking(path: &Path, whole: usize) -> Result<Option<Segment>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        let len = file.metadata().map_err(|e| Error::io(format!("reading {}", path.display()), e))?.len();
        Ok(Segment::parse(path, file, len).filter(|seg| len as usize > whole || seg.check_all()))
    }

    fn parse(path: &Path, file: File, len: u64) -> Option<Segment> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let len = usize::try_from(len).ok()?;
        if len < TAIL {
            return None;
        }
        let mut tail = [0u8; TAIL];
        file.read_exact_at(&mut tail, (len - TAIL) as u64).ok()?;
        if &tail[8..] != MAGIC {
            return None;
        }
        let footer_len = usize::try_from(u64::from_le_bytes(tail[..8].try_into().ok()?)).ok()?;
        let footer_at = (len - TAIL).checked_sub(footer_len)?;
        let mut footer = vec![0u8; footer_len];
        file.read_exact_at(&mut footer, footer_at as u64).ok()?;
        let (body, sum) = footer.split_at(footer.len().checked_sub(32)?);
        if blake3::hash(body).as_bytes() != sum {
            return None;
        }
        let mut p = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = body.get(p..p.checked_add(n)?)?;
            p += n;
            Some(s)
        };
        let count = usize::try_from(u64::from_le_bytes(take(8)?.try_into().ok()?)).ok()?;
        let blocks = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let ids = |b: &[u8]| -> Vec<Id> { b.chunks_exact(32).map(|c| c.try_into().expect("32")).collect() };
        let n_names = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let names = ids(take(n_names.checked_mul(32)?)?);
        let n_packs = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let packs = ids(take(n_packs.checked_mul(32)?)?);
        let filter_len = usize::try_from(blocks).ok()?.checked_mul(BLOCK)?;
        let records_len = count.checked_mul(REC)?;
        if blocks == 0 || filter_len.checked_add(records_len)? != footer_at {
            return None;
        }
        let filter_units = filter_len.div_ceil(UNIT);
        let n_units = filter_units + records_len.div_ceil(UNIT);
        let unit_bytes = take(n_units.checked_mul(UNIT_HASH)?)?;
        let fence_bytes = take(count.div_ceil(FENCE).checked_mul(8)?)?;
        if p != body.len() {
            return None;
        }
        let fence: Vec<u64> =
            fence_bytes.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().expect("8"))).collect();
        if fence.windows(2).any(|w| w[0] > w[1]) {
            return None;
        }
        let units = unit_bytes.chunks_exact(UNIT_HASH).map(|c| c.try_into().expect("16")).collect();
        // Every pack number a record holds is checked where it is used.
        Some(Segment {
            name,
            path: path.to_path_buf(),
            file,
            count,
            blocks,
            records_at: filter_len as u64,
            names,
            packs,
            units,
            filter_units,
            fence,
            checked: (0..n_units.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            bad: AtomicBool::new(false),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// True once a unit failed its checksum (or could not be read): the
    /// segment is then treated as empty, and dropped from the cache.
    pub(crate) fn is_bad(&self) -> bool {
        self.bad.load(Ordering::Relaxed)
    }

    /// Marks the segment bad and removes its file: the next command merges
    /// its index objects again (this one treats the segment as empty).
    fn fail(&self) -> bool {
        if !self.bad.swap(true, Ordering::Relaxed) {
            let _ = std::fs::remove_file(&self.path);
        }
        false
    }

    /// Where unit `u` is (filter units first, then record units) and its length.
    fn unit_span(&self, u: usize) -> (u64, usize) {
        if u < self.filter_units {
            let start = (u * UNIT) as u64;
            (start, (self.records_at - start).min(UNIT as u64) as usize)
        } else {
            let start = ((u - self.filter_units) * UNIT) as u64;
            let records_len = (self.count * REC) as u64;
            (self.records_at + start, (records_len - start).min(UNIT as u64) as usize)
        }
    }

    fn is_checked(&self, u: usize) -> bool {
        self.checked[u / 64].load(Ordering::Relaxed) & (1 << (u % 64)) != 0
    }

    /// Checks unit `u` against `bytes` (all of it); false, and the segment bad, on a mismatch.
    fn check_bytes(&self, u: usize, bytes: &[u8]) -> bool {
        if self.is_checked(u) {
            return true;
        }
        if blake3::hash(bytes).as_bytes()[..UNIT_HASH] != self.units[u] {
            return self.fail();
        }
        self.checked[u / 64].fetch_or(1 << (u % 64), Ordering::Relaxed);
        true
    }

    /// Checks unit `u` unless already checked, reading it.
    fn check_unit(&self, u: usize) -> bool {
        if self.is_checked(u) {
            return !self.is_bad();
        }
        let (at, len) = self.unit_span(u);
        let mut buf = vec![0u8; len];
        if self.file.read_exact_at(&mut buf, at).is_err() {
            return self.fail();
        }
        self.check_bytes(u, &buf)
    }

    /// Reads `len` bytes at `at`; `None` (and the segment bad) if the file
    /// is shorter than its footer says.
    fn read(&self, at: u64, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        match self.file.read_exact_at(&mut buf, at) {
            Ok(()) => Some(buf),
            Err(_) => {
                self.fail();
                None
            }
        }
    }

    /// Checks every unit (prune and check read everything anyway), a
    /// mebibyte at a time.
    pub(crate) fn check_all(&self) -> bool {
        use rayon::prelude::*;
        let n = self.units.len();
        let mut u = 0;
        while u < n {
            let group: Vec<usize> = (u..(u + SCAN_UNITS).min(n)).collect();
            if !group.par_iter().all(|&u| self.check_unit(u)) {
                return false;
            }
            u += SCAN_UNITS;
        }
        !self.is_bad()
    }

    /// The records' units covering bytes `[start, end)` of the records region, checked.
    fn check_records(&self, start: u64, end: u64) -> bool {
        (start as usize / UNIT..=(end as usize - 1) / UNIT).all(|u| self.check_unit(self.filter_units + u))
    }

    /// The filter's answer: false when `id` is surely not in the segment.
    fn may_contain(&self, id: &[u8]) -> bool {
        let b = block_of(id, self.blocks) as usize;
        if !self.check_unit(b * BLOCK / UNIT) {
            return false;
        }
        let mut block = [0u8; BLOCK];
        if self.file.read_exact_at(&mut block, (b * BLOCK) as u64).is_err() {
            return self.fail();
        }
        bits_of(id).all(|bit| block[bit / 8] & (1 << (bit % 8)) != 0)
    }

    /// Record `i`, its units checked first; `None` when that fails.
    pub(crate) fn record(&self, i: usize) -> Option<[u8; REC]> {
        let at = (i * REC) as u64;
        if i >= self.count || !self.check_records(at, at + REC as u64) {
            return None;
        }
        self.read(self.records_at + at, REC).map(|b| b.try_into().expect("48"))
    }

    /// The records of `id`, with their positions: the fence narrows the
    /// search to one stretch of `FENCE` records, read at once.
    pub(crate) fn find(&self, id: &Id) -> Vec<(usize, [u8; REC])> {
        let n = self.count;
        if n == 0 || self.is_bad() || !self.may_contain(id) {
            return Vec::new();
        }
        let key = u64::from_be_bytes(id[..8].try_into().expect("8"));
        // Stretches whose first id's prefix is below `key` may end with it;
        // from the first stretch that starts above `key`, none holds it.
        let b = self.fence.partition_point(|&p| p < key);
        let c = self.fence.partition_point(|&p| p <= key);
        let (lo, hi) = (b.saturating_sub(1) * FENCE, (c * FENCE).min(n));
        let (start, end) = ((lo * REC) as u64, (hi * REC) as u64);
        if lo >= hi || !self.check_records(start, end) {
            return Vec::new();
        }
        let Some(stretch) = self.read(self.records_at + start, (end - start) as usize) else { return Vec::new() };
        let recs: Vec<&[u8]> = stretch.chunks_exact(REC).collect();
        let first = recs.partition_point(|r| r[..32] < id[..]);
        // Every record of `id` is in the stretch: the next one starts above its prefix.
        recs[first..]
            .iter()
            .take_while(|r| r[..32] == id[..])
            .enumerate()
            .map(|(k, r)| (lo + first + k, r.to_vec().try_into().expect("48")))
            .collect()
    }

    /// Every record in order, read a mebibyte at a time and checked as it
    /// comes; a unit that fails ends the scan and makes the segment bad
    /// (callers look at `is_bad` after).
    pub(crate) fn scan(&self) -> Scan<'_> {
        Scan { seg: self, unit: 0, buf: Vec::new(), pos: 0, left: self.count }
    }
}

/// A segment's records in order (`Segment::scan`).
pub(crate) struct Scan<'a> {
    seg: &'a Segment,
    /// The next record unit to read.
    unit: usize,
    buf: Vec<u8>,
    pos: usize,
    left: usize,
}

impl Iterator for Scan<'_> {
    type Item = [u8; REC];

    fn next(&mut self) -> Option<[u8; REC]> {
        if self.left == 0 || self.seg.is_bad() {
            return None;
        }
        while self.buf.len() - self.pos < REC {
            self.buf.drain(..self.pos);
            self.pos = 0;
            let record_units = (self.seg.count * REC).div_ceil(UNIT);
            let units = self.unit..(self.unit + SCAN_UNITS).min(record_units);
            if units.is_empty() {
                self.seg.fail();
                return None;
            }
            let (at, _) = self.seg.unit_span(self.seg.filter_units + units.start);
            let len: usize = units.clone().map(|u| self.seg.unit_span(self.seg.filter_units + u).1).sum();
            let bytes = self.seg.read(at, len)?;
            for (k, u) in units.clone().enumerate() {
                let piece = &bytes[k * UNIT..(k * UNIT + UNIT).min(len)];
                if !self.seg.check_bytes(self.seg.filter_units + u, piece) {
                    return None;
                }
            }
            self.buf.extend_from_slice(&bytes);
            self.unit = units.end;
        }
        let r: [u8; REC] = self.buf[self.pos..self.pos + REC].try_into().expect("48");
        self.pos += REC;
        self.left -= 1;
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: Id, pack: u32) -> [u8; REC] {
        let mut r = [0u8; REC];
        r[..32].copy_from_slice(&id);
        r[32..36].copy_from_slice(&pack.to_le_bytes());
        r[36..40].copy_from_slice(&(pack * 7).to_le_bytes());
        r
    }

    fn ids(n: usize, seed: u8) -> Vec<Id> {
        let mut v: Vec<Id> =
            (0..n as u64).map(|i| *blake3::keyed_hash(&[seed; 32], &i.to_le_bytes()).as_bytes()).collect();
        v.sort();
        v
    }

    fn write(dir: &Path, recs: &[[u8; REC]]) -> PathBuf {
        let mut w = SegmentWriter::create(dir, recs.len() as u64).unwrap();
        for r in recs {
            w.push(r).unwrap();
        }
        dir.join(w.finish(&[[9; 32]], &[[1; 32], [2; 32]]).unwrap())
    }

    #[test]
    fn every_record_is_found_and_absent_ids_mostly_stop_at_the_filter() {
        let dir = tempfile::tempdir().unwrap();
        let present = ids(100_000, 1);
        // Every tenth id twice: two copies of a chunk.
        let mut recs = Vec::new();
        for (i, id) in present.iter().enumerate() {
            recs.push(rec(*id, 0));
            if i % 10 == 0 {
                recs.push(rec(*id, 1));
            }
        }
        let seg = Segment::open(&write(dir.path(), &recs)).unwrap().expect("a segment");
        assert_eq!(seg.len(), recs.len());
        assert_eq!((seg.names.clone(), seg.packs.clone()), (vec![[9; 32]], vec![[1; 32], [2; 32]]));
        for (i, id) in present.iter().enumerate() {
            let r = seg.find(id);
            assert_eq!(r.len(), if i % 10 == 0 { 2 } else { 1 }, "record {i}");
            assert!(r.iter().all(|(p, rec)| rec[..32] == id[..] && seg.record(*p) == Some(*rec)));
        }
        assert!(seg.scan().eq(recs.iter().copied()), "a scan gives every record in order");
        let absent = ids(100_000, 2);
        let passed = absent.iter().filter(|id| seg.may_contain(&id[..])).count();
        assert!(passed < 3_000, "{passed} of 100000 absent ids passed the filter");
        assert!(absent.iter().all(|id| seg.find(id).is_empty()));
        assert!(!seg.is_bad());
    }

    #[test]
    fn ids_sharing_their_first_bytes_across_fence_stretches_are_all_found() {
        let dir = tempfile::tempdir().unwrap();
        // 1500 ids with one 8-byte prefix (six stretches), between others.
        let mut all = ids(3000, 5);
        all.extend((0..1500u64).map(|i| {
            let mut id = [0x80u8; 32];
            id[8..16].copy_from_slice(&i.to_be_bytes());
            id
        }));
        all.sort();
        let recs: Vec<_> = all.iter().map(|id| rec(*id, 0)).collect();
        let seg = Segment::open(&write(dir.path(), &recs)).unwrap().expect("a segment");
        for (i, id) in all.iter().enumerate() {
            assert_eq!(seg.find(id).iter().map(|f| f.0).collect::<Vec<_>>(), vec![i], "record {i}");
        }
        let mut absent = [0x80u8; 32];
        absent[8..16].copy_from_slice(&5000u64.to_be_bytes());
        assert!(seg.find(&absent).is_empty());
    }

    #[test]
    fn empty_and_tiny_segments() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::open(&write(dir.path(), &[])).unwrap().expect("an empty segment");
        assert_eq!(seg.len(), 0);
        assert!(seg.find(&[5; 32]).is_empty());
        let one = ids(1, 3)[0];
        let seg = Segment::open(&write(dir.path(), &[rec(one, 1)])).unwrap().expect("one record");
        assert_eq!(seg.find(&one), vec![(0, rec(one, 1))]);
        assert!(seg.find(&[0; 32]).is_empty() && seg.find(&[0xff; 32]).is_empty());
    }

    #[test]
    fn a_damaged_unit_is_never_used_and_the_segment_leaves_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let present = ids(20_000, 4);
        let recs: Vec<_> = present.iter().map(|id| rec(*id, 1)).collect();
        let path = write(dir.path(), &recs);
        // Checked whole when opened: refused at once.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x10;
        let damaged = dir.path().join("seg-damaged.bin");
        std::fs::write(&damaged, &bytes).unwrap();
        assert!(Segment::open(&damaged).unwrap().is_none());
        // Checked unit by unit (a large segment): the record's unit fails when first used.
        std::fs::write(&damaged, &bytes).unwrap();
        let seg = Segment::open_checking(&damaged, 0).unwrap().expect("opened unchecked");
        let victim = (at - seg.records_at as usize) / REC;
        assert!(seg.find(&present[victim]).is_empty(), "a record of the damaged unit");
        assert!(seg.is_bad() && !damaged.exists(), "dropped from the cache");
        assert!(seg.find(&present[0]).is_empty(), "and not used any more");
        // A damaged footer or tail: not a segment.
        for at in [bytes.len() - 1, bytes.len() - 30, bytes.len() - 60] {
            let mut b = std::fs::read(&path).unwrap();
            b[at] ^= 1;
            std::fs::write(&damaged, &b).unwrap();
            assert!(Segment::open_checking(&damaged, 0).unwrap().is_none(), "byte {at}");
        }
    }
}
