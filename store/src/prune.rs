//! `prune`: deletes what no snapshot or archived log references, without a
//! lock, beside running backups and log pushes (format-spec §20).
//!
//! One run, on a repository listed then indexed (so every chunk a listed
//! manifest names is in the index):
//!
//! 1. Walk every manifest (`check`'s walk): the referenced chunks. Stop if
//!    a manifest, an index object or a referenced chunk is damaged or
//!    missing: deleting on a wrong picture of the repository loses data.
//! 2. For every referenced chunk choose one copy, preferring unmarked
//!    packs; a pack's other blobs are unused.
//! 3. Decide per pack: a marked pack that holds a chosen copy is recovered
//!    (unmarked); a marked pack holding none whose earliest mark was older
//!    than its grace period when the listing started is deleted; an
//!    unmarked pack holding none is marked; the packs with the most unused
//!    bytes are repacked until at most `max_unused` of the rest is unused.
//!    Packs younger than the grace period are left alone: a running
//!    backup's packs are unreferenced until its manifest lands.
//! 4. Write, in this order (a crash between any two steps leaves a
//!    repository whose index names only packs that exist): repacked packs
//!    and their index objects; the new mark; compacted index objects
//!    (everything but the packs to delete); then delete the old index
//!    objects, the packs, the marks that are done, and stale temporary
//!    files.

use crate::backend::ObjectKind;
use crate::check::{CheckReport, Severity};
use crate::compaction::Compaction;
use crate::crypto::{hex_id, parse_id, Id};
use crate::error::{Error, Result};
use crate::index::seal_index_object;
use crate::marks::{seal_mark, MIN_KEEP_DELETE};
use crate::pack::{pack_name, read_entries, PackEntry, PackWriter};
use crate::progress::Progress;
use crate::repo::Indexed;
use crate::upload::Uploads;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

pub struct PruneOptions {
    /// The grace period: how long a pack stays marked before it may be
    /// deleted, and how old a pack must be before it is judged at all.
    pub keep_delete: Duration,
    /// The share of the kept packs' bytes that may stay unused (0.05 = 5%).
    pub max_unused: f64,
    /// Decide and report, change nothing.
    pub dry_run: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: u64,
    pub logs: u64,
    /// Packs in the repository when it was listed, and their bytes.
    pub packs: u64,
    pub bytes: u64,
    /// Unreferenced packs marked by this run (deleted by a later one).
    pub packs_marked: u64,
    pub bytes_marked: u64,
    /// Marked packs a newer snapshot references again: unmarked.
    pub packs_recovered: u64,
    pub packs_deleted: u64,
    pub bytes_freed: u64,
    /// Marked packs still within their grace period.
    pub packs_waiting: u64,
    /// Packs whose used blobs were copied into new packs (and which were then marked).
    pub packs_repacked: u64,
    pub bytes_repacked: u64,
    pub packs_written: u64,
    pub index_objects_before: u64,
    pub index_objects_after: u64,
    pub marks_removed: u64,
    pub temporaries_removed: u64,
    /// Bytes of the packs kept that no snapshot or log needs, after this run.
    pub unused_bytes_left: u64,
}

/// Records per compacted index object (about 11 MiB of plaintext).
const RECORDS_PER_INDEX: usize = 1 << 18;
/// An index object smaller than this (half a compacted one) is compacted
/// with others; a larger one only when it names a pack to delete.
const SMALL_INDEX_OBJECT: u64 = (RECORDS_PER_INDEX as u64 / 2) * crate::pack::ENTRY_LEN as u64;

/// The compacted index object being filled: whole old objects, in turn.
#[derive(Default)]
struct Compacting {
    packs: Vec<(Id, Vec<PackEntry>)>,
    seen: HashSet<Id>,
    records: usize,
    from: Vec<Id>,
    /// The newest stamp of the objects it holds: it sorts among them.
    stamp: u64,
}

impl Compacting {
    fn add(&mut self, name: &str, packs: Vec<(Id, Vec<PackEntry>)>, records: usize) {
        for (pack, entries) in packs {
            // A pack two old objects named (a journal recovered twice) is listed once.
            if self.seen.insert(pack) {
                self.packs.push((pack, entries));
            }
        }
        self.records += records;
        self.from.extend(parse_id(ObjectKind::Index.id_of(name)));
        self.stamp = self.stamp.max(crate::backend::stamp_of(name).unwrap_or(0));
    }

    /// Writes what it holds as one index object (none if it holds no
    /// record) and starts afresh; returns its name and what it came from.
    fn write(
        &mut self,
        keys: &crate::crypto::Keys,
        backend: &dyn crate::backend::Backend,
    ) -> Result<Option<(String, Vec<Id>)>> {
        let done = std::mem::take(self);
        if done.packs.is_empty() {
            return Ok(None);
        }
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(done.stamp);
        let (name, sealed) = seal_index_object(keys, &done.packs, at);
        backend.put(&name, sealed.into())?;
        Ok(Some((name, done.from)))
    }
}

impl Indexed {
    pub fn prune(&self, opts: &PruneOptions, progress: &dyn Progress) -> Result<PruneReport> {
        if opts.keep_delete < MIN_KEEP_DELETE {
            return Err(Error::Invalid(format!(
                "--keep-delete must be at least {}s: running backups look for new marks every 2 s",
                MIN_KEEP_DELETE.as_secs()
            )));
        }
        let backend = self.backend();
        let now = SystemTime::now();
        let mut report = PruneReport { dry_run: opts.dry_run, ..Default::default() };
        // One prune at a time (format-spec §20.4): held until this returns.
        let _one = if opts.dry_run { None } else { Some(self.one_prune()?) };

        // 1. The picture must be whole before anything is deleted on it.
        if let Some((_, e)) = self.damaged().next() {
            return Err(refuse(e.to_string()));
        }
        if let Some(name) = self.index.damaged.first() {
            return Err(refuse(format!("index object {name} is damaged; run `dedupe repair index`")));
        }
        // The local cache too: a damaged record would misplace a chunk.
        if !self.index.check_all() {
            return Err(refuse("the local index cache was damaged and is rebuilt by the next command".into()));
        }
        let mut walked = CheckReport::default();
        let mut referenced = self.walk(&mut walked)?;
        if let Some(f) = walked.findings.iter().find(|f| f.severity != Severity::Note) {
            return Err(refuse(format!("{} {}", f.object, f.problem)));
        }
        // Every base a stored delta needs is kept, whether the delta is
        // referenced or not: a backup may deduplicate against it at any
        // time. A base kept only for unreferenced deltas goes in the prune
        // after theirs.
        referenced.extend(self.delta_bases_stored()?);
        report.snapshots = walked.snapshots;
        report.logs = walked.logs;

        // 2. Usage per pack, one chosen copy per referenced chunk.
        let stored: HashMap<Id, (u64, SystemTime)> = backend
            .list_dated(ObjectKind::Pack)?
            .into_iter()
            .filter_map(|(n, size, t)| parse_id(ObjectKind::Pack.id_of(&n)).map(|id| (id, (size, t))))
            .collect();
        report.packs = stored.len() as u64;
        report.bytes = stored.values().map(|(s, _)| s).sum();
        let packs = self.index.packs();
        let live = |no: u32| {
            let p = &packs[no as usize];
            stored.contains_key(p) && !self.marks.contains(p)
        };
        let exists = |no: u32| stored.contains_key(&packs[no as usize]);
        // Bytes of chosen copies per pack number: a pack holding none is unused.
        let mut used: HashMap<u32, u64> = HashMap::new();
        for id in &referenced {
            if let Some((pos, loc)) = self.index.find(id, live).or_else(|| self.index.find(id, exists)) {
                *used.entry(self.index.record(pos).1).or_default() += loc.length as u64;
            }
        }
        let pack_no: HashMap<Id, u32> = packs.iter().enumerate().map(|(i, p)| (*p, i as u32)).collect();
        let used_of = |pack: &Id| pack_no.get(pack).and_then(|n| used.get(n)).copied().unwrap_or(0);

        // 3. Decide.
        let (mut to_mark, mut to_delete, mut recovered) = (Vec::new(), HashSet::new(), HashSet::new());
        let mut candidates: Vec<(Id, u64, u64)> = Vec::new(); // pack, size, unused
        let mut kept_bytes = 0u64;
        let mut unused_kept = 0u64;
        for (pack, &(size, written)) in &stored {
            let used = used_of(pack);
            if let Some(mark) = self.marks.first_mark(pack) {
                if used > 0 {
                    recovered.insert(*pack);
                } else if self.started >= mark.deadline().max(mark.time + opts.keep_delete) {
                    to_delete.insert(*pack);
                    report.bytes_freed += size;
                    continue;
                } else {
                    report.packs_waiting += 1;
                    continue;
                }
            }
            let young = now.duration_since(written).unwrap_or_default() < opts.keep_delete;
            if young {
                kept_bytes += size;
                continue;
            }
            if used == 0 {
                to_mark.push(*pack);
                report.bytes_marked += size;
                continue;
            }
            kept_bytes += size;
            let unused = size.saturating_sub(used);
            unused_kept += unused;
            if unused > 0 && !recovered.contains(pack) {
                candidates.push((*pack, size, unused));
            }
        }
        // The most unused first, until what is left unused is within bounds.
        candidates.sort_by(|a, b| (b.2 as f64 / b.1 as f64).total_cmp(&(a.2 as f64 / a.1 as f64)));
        let mut to_repack = Vec::new();
        for (pack, size, unused) in candidates {
            if unused_kept as f64 <= opts.max_unused * kept_bytes as f64 {
                break;
            }
            to_repack.push(pack);
            unused_kept -= unused;
            kept_bytes -= size;
            report.bytes_repacked += used_of(&pack);
        }
        report.packs_marked = to_mark.len() as u64;
        report.packs_recovered = recovered.len() as u64;
        report.packs_deleted = to_delete.len() as u64;
        report.packs_repacked = to_repack.len() as u64;
        report.unused_bytes_left = unused_kept;
        report.index_objects_before = backend.list(ObjectKind::Index)?.len() as u64;
        if opts.dry_run {
            report.index_objects_after = report.index_objects_before;
            return Ok(report);
        }

        // 4. Write, in the order of the module doc.
        let repacked = self.repack(&to_repack, &referenced, &stored, &to_delete, &mut report, progress)?;
        to_mark.extend(repacked);
        if !to_mark.is_empty() {
            // The mark's time is when it lands, not when this run began: a
            // long repack must not shorten the grace period writers get.
            let (name, sealed) = seal_mark(self.keys(), SystemTime::now(), opts.keep_delete, &to_mark);
            backend.put(&name, sealed.into())?;
            backend.flush()?;
        }
        report.packs_marked = to_mark.len() as u64;
        let merged_objects = self.compact_index(&to_delete)?;
        for name in &merged_objects {
            backend.delete(name)?;
        }
        for pack in &to_delete {
            backend.delete(&pack_name(pack))?;
        }
        self.settle_marks(&to_delete, &recovered, &stored, &mut report)?;
        self.drop_old_records()?;
        report.temporaries_removed = backend.remove_stale_temporaries(now - opts.keep_delete)?;
        report.index_objects_after = backend.list(ObjectKind::Index)?.len() as u64;
        Ok(report)
    }

    /// The bases of every delta the index objects name.
    fn delta_bases_stored(&self) -> Result<HashSet<Id>> {
        let backend = self.backend();
        let listed = backend.list(ObjectKind::Index)?;
        let mut bases = HashSet::new();
        for group in crate::index::read_groups(&listed) {
            let names: Vec<String> = group.iter().map(|(n, _)| n.clone()).collect();
            for (name, sealed) in names.iter().zip(backend.get_many(&names)) {
                let objects = crate::index::open_index_object(self.keys(), name, &sealed?)
                    .map_err(|e| refuse(format!("{e}; run `dedupe repair index`")))?;
                bases.extend(objects.iter().flat_map(|(_, entries)| entries.iter().filter_map(|e| e.base)));
            }
        }
        Ok(bases)
    }

    /// Copies the chosen copies of referenced chunks out of `packs` into
    /// new packs (with their index objects); returns the packs emptied, to
    /// be marked. A pack that fails verification is left as it is.
    fn repack(
        &self,
        packs: &[Id],
        referenced: &HashSet<Id>,
        stored: &HashMap<Id, (u64, SystemTime)>,
        deleting: &HashSet<Id>,
        report: &mut PruneReport,
        progress: &dyn Progress,
    ) -> Result<Vec<Id>> {
        if packs.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.backend();
        let all = self.index.packs();
        let repacking: HashSet<&Id> = packs.iter().collect();
        // A chunk needs copying if it has no copy in a pack that stays.
        let stays = |no: u32| {
            let p = &all[no as usize];
            stored.contains_key(p) && !repacking.contains(p) && !deleting.contains(p) && !self.marks.contains(p)
        };
        let (uploads, sink) =
            Uploads::start(self.backend.clone(), self.keys().clone(), &self.cache_dir(self.cache_base()))?;
        let mut writer = PackWriter::with_buffer(Vec::new(), sink.pack_size);
        let mut copied: HashSet<Id> = HashSet::new();
        let mut emptied = Vec::new();
        progress.total(packs.iter().map(|p| stored[p].0).sum());
        let mut done = 0u64;
        let result = (|| -> Result<()> {
            for pack in packs {
                let bytes = backend.get(&pack_name(pack))?;
                let entries = match read_entries(self.keys(), pack, &bytes) {
                    Ok(e) => e,
                    Err(Error::Corrupt { .. }) => continue,
                    Err(e) => return Err(e),
                };
                for e in entries {
                    if !referenced.contains(&e.id) || copied.contains(&e.id) || self.index.find(&e.id, stays).is_some()
                    {
                        continue;
                    }
                    let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                    // Copied as sealed, after checking it opens: damage is not spread.
                    if crate::blob::open_blob(self.keys(), &e.id, sealed, e.raw_len as usize).is_err() {
                        return Err(Error::corrupt(
                            pack_name(pack),
                            format!("chunk {} fails authentication; run `dedupe check --read-data`", hex_id(&e.id)),
                        ));
                    }
                    writer.add(e.id, sealed, e.raw_len as usize, e.base);
                    copied.insert(e.id);
                    if writer.is_full() {
                        let full = std::mem::replace(&mut writer, PackWriter::with_buffer(Vec::new(), sink.pack_size));
                        report.packs_written += 1;
                        sink.packs
                            .send(full.finish(self.keys()))
                            .map_err(|_| Error::Invalid("upload stopped".into()))?;
                    }
                }
                emptied.push(*pack);
                done += stored[pack].0;
                progress.done(done);
            }
            if !writer.is_empty() {
                report.packs_written += 1;
                let last = std::mem::take(&mut writer).finish(self.keys());
                sink.packs.send(last).map_err(|_| Error::Invalid("upload stopped".into()))?;
            }
            Ok(())
        })();
        drop(sink);
        // An upload failure explains a stopped copy, so it is reported first.
        uploads.finish()?;
        result?;
        // The new packs are indexed and durable before the old ones are marked.
        backend.flush()?;
        Ok(emptied)
    }

    /// Rewrites the index objects that name a pack to delete, and the
    /// small ones, one after another into objects of whole packs of up to
    /// `RECORDS_PER_INDEX` records, then writes the compaction record that
    /// says so (format-spec §10.6); returns the old objects to delete.
    /// Large objects naming no pack to delete stay as they are, so a
    /// prune's writes and every cache's reads follow what changed, not the
    /// repository's size. One read group of old objects and one new object
    /// are held at a time.
    fn compact_index(&self, deleting: &HashSet<Id>) -> Result<Vec<String>> {
        let backend = self.backend();
        let (listed, records) = std::thread::scope(|s| {
            let records = s.spawn(|| backend.list(ObjectKind::Compaction));
            (backend.list(ObjectKind::Index), records.join().expect("listing thread"))
        });
        let merged: Vec<(String, u64)> = listed?
            .into_iter()
            .filter(|(n, _)| parse_id(ObjectKind::Index.id_of(n)).is_some_and(|id| self.index.merged(&id)))
            .collect();
        let small = |size: u64| size < SMALL_INDEX_OBJECT;
        // Nothing to drop and at most one small object: leave it.
        if deleting.is_empty() && merged.iter().filter(|(_, size)| small(*size)).count() <= 1 {
            return Ok(Vec::new());
        }
        let to_read: Vec<(String, u64)> =
            merged.iter().filter(|(_, size)| small(*size) || !deleting.is_empty()).cloned().collect();
        let mut out = Compacting::default();
        let mut written: Vec<(String, Vec<Id>)> = Vec::new();
        let mut rewritten = Vec::new();
        for group in crate::index::read_groups(&to_read) {
            let names: Vec<String> = group.iter().map(|(n, _)| n.clone()).collect();
            for ((name, size), sealed) in group.iter().zip(backend.get_many(&names)) {
                let objects = crate::index::open_index_object(self.keys(), name, &sealed?)?;
                if !small(*size) && !objects.iter().any(|(p, _)| deleting.contains(p)) {
                    continue;
                }
                let kept: Vec<(Id, Vec<PackEntry>)> =
                    objects.into_iter().filter(|(p, _)| !deleting.contains(p)).collect();
                let n: usize = kept.iter().map(|(_, e)| e.len()).sum();
                if out.records > 0 && out.records + n > RECORDS_PER_INDEX {
                    written.extend(out.write(self.keys(), backend)?);
                }
                out.add(name, kept, n);
                rewritten.push(name.clone());
            }
        }
        written.extend(out.write(self.keys(), backend)?);
        // Every compacted object is durable before the record that names it,
        // and the record before any old object or pack goes.
        backend.flush()?;
        let names: Vec<String> = records?.into_iter().map(|(n, _)| n).collect();
        let (existing, _) = crate::compaction::read(backend, self.keys(), &names)?;
        let (sequence, _) = crate::compaction::next_sequence(&existing, SystemTime::now());
        let record = Compaction {
            sequence,
            deleted_packs: deleting.iter().copied().collect(),
            objects: written,
            ..Default::default()
        };
        let (name, sealed) = record.seal(self.keys());
        backend.put(&name, sealed.into())?;
        backend.flush()?;
        Ok(rewritten)
    }

    /// Deletes the compaction records a cache no longer needs: older than
    /// `KEEP_RECORDS`, and never the newest.
    fn drop_old_records(&self) -> Result<()> {
        let backend = self.backend();
        let names: Vec<String> = backend.list(ObjectKind::Compaction)?.into_iter().map(|(n, _)| n).collect();
        let (records, _) = crate::compaction::read(backend, self.keys(), &names)?;
        for name in crate::compaction::next_sequence(&records, SystemTime::now()).1 {
            backend.delete(&name)?;
        }
        Ok(())
    }

    /// Rewrites the marks: drops the packs deleted or recovered (and those
    /// gone), keeping each mark's time for the rest; removes damaged marks.
    fn settle_marks(
        &self,
        deleted: &HashSet<Id>,
        recovered: &HashSet<Id>,
        stored: &HashMap<Id, (u64, SystemTime)>,
        report: &mut PruneReport,
    ) -> Result<()> {
        let backend = self.backend();
        for mark in &self.marks.marks {
            let left: Vec<Id> = mark
                .packs
                .iter()
                .filter(|p| stored.contains_key(*p) && !deleted.contains(*p) && !recovered.contains(*p))
                .copied()
                .collect();
            if left.len() == mark.packs.len() {
                continue;
            }
            if !left.is_empty() {
                let (name, sealed) = seal_mark(self.keys(), mark.time, mark.keep_delete, &left);
                backend.put(&name, sealed.into())?;
                backend.flush()?;
            }
            backend.delete(&mark.name)?;
            report.marks_removed += 1;
        }
        for (name, _) in &self.marks.damaged {
            backend.delete(name)?;
            report.marks_removed += 1;
        }
        Ok(())
    }
}

impl Indexed {
    /// An exclusive `flock` on `prune.lock` in this repository's cache: a
    /// prune started by cron while the last one still runs stops at once.
    fn one_prune(&self) -> Result<std::fs::File> {
        let path = self.cache_dir(self.cache_base()).join("prune.lock");
        let f = std::fs::File::create(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        // SAFETY: flock on a file we own; released when it is closed.
        if unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&f), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::Invalid(
                "another prune of this repository is running on this host: wait for it to end".into(),
            ));
        }
        Ok(f)
    }
}

fn refuse(why: String) -> Error {
    Error::Invalid(format!("prune stopped before deleting anything: {why}; run `dedupe check` and repair first"))
}
