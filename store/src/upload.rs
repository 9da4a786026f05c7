//! The backup's upload stage: packs go up on several connections at once,
//! and the index objects that name them follow in batches.
//!
//! ```text
//! writer ─► pack channel (no buffer) ─► uploader × connections ─► indexer
//!                                         put pack                 flush, put index object
//!                                                                  every PACKS_PER_INDEX packs
//!                                                                  or INDEX_EVERY, and at the end
//! ```
//! The pack channel holds nothing, so at most `connections` packs are in
//! the air and one more is being filled: memory is bounded by the number of
//! connections, not by the input. An index object per pack would make a
//! large backup write thousands of small objects and every later command
//! list them; one per batch keeps them few, and the time bound keeps an
//! interrupted backup's packs findable by the next run (all but the last
//! few seconds' worth). The indexer flushes before each index object: a
//! pack is durable before an index object names it, since an entry for a
//! pack lost in a power cut would let the next backup dedup against chunks
//! that are gone.
//!
//! From just before a pack's upload until an index object names it, the
//! pack is journalled in the local cache (`<cache>/unindexed/<writer>/<pack
//! id>`: a sealed index object for that one pack), in a folder of this
//! writer's own that it holds an exclusive `flock` on. A backup cut short
//! (the server gone, a kill -9) leaves its folder unlocked, and the next
//! command on this host indexes those packs (`recover`) before it loads the
//! index, so nothing uploaded is uploaded again; folders still locked
//! belong to running writers and are left alone. Another host cannot see
//! them; they are unreferenced packs until then.

use crate::backend::{Backend, ObjectKind};
use crate::crypto::{hex_id, parse_id, Id, Keys};
use crate::error::{Error, Result};
use crate::index::{open_index_object, seal_index_object};
use crate::marks::Marks;
use crate::pack::{pack_name, FinishedPack, PackEntry};
use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the packs being filled and uploaded may take together: with more
/// connections, packs get smaller (`pack_size`), so `--connections` never
/// breaks the memory budget.
const PACK_MEMORY: usize = 96 << 20;

/// The pack size for this many uploads in flight: room for them plus the
/// pack being filled and one spare buffer.
pub(crate) fn pack_size(connections: usize) -> usize {
    (PACK_MEMORY / (connections + 2)).clamp(MIN_PACK, crate::pack::TARGET_PACK_SIZE)
}

/// Packs are no smaller than this (a pack per request is what the store
/// pays for), so uploads in flight are capped to keep `PACK_MEMORY`.
const MIN_PACK: usize = 8 << 20;
const MAX_UPLOADERS: usize = PACK_MEMORY / MIN_PACK - 2;

/// Packs named by one index object at most (about 1 GiB of packs).
const PACKS_PER_INDEX: usize = 32;
/// The longest uploaded packs wait for an index object naming them.
const INDEX_EVERY: Duration = Duration::from_secs(15);

pub(crate) struct Uploads {
    uploaders: Vec<JoinHandle<Result<()>>>,
    indexer: JoinHandle<Result<()>>,
    journal: Journal,
}

/// This writer's journal folder, locked while it lives.
struct Journal {
    dir: PathBuf,
    _lock: std::fs::File,
}

/// Where finished packs go, and where their buffers come back once uploaded.
pub(crate) struct PackSink {
    pub(crate) packs: Sender<FinishedPack>,
    pub(crate) spare: Receiver<Vec<u8>>,
    /// How big to make each pack (`pack_size`).
    pub(crate) pack_size: usize,
    /// Set when an upload failed: the writer stops instead of filling packs
    /// that the remaining uploaders would send only for the backup to fail.
    pub(crate) failed: Arc<std::sync::atomic::AtomicBool>,
}

impl Uploads {
    /// `cache_dir`: this repository's local cache, which holds the journal.
    pub(crate) fn start(backend: Arc<dyn Backend>, keys: Keys, cache_dir: &Path) -> Result<(Uploads, PackSink)> {
        let journal = Journal::new(cache_dir)?;
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (pack_tx, pack_rx) = bounded::<FinishedPack>(0);
        let (spare_tx, spare_rx) = bounded::<Vec<u8>>(1);
        let (done_tx, done_rx) = unbounded::<(Id, Vec<PackEntry>)>();
        let mut uploaders = Vec::new();
        for i in 0..backend.connections().min(MAX_UPLOADERS) {
            let (backend, packs, done, spare) = (backend.clone(), pack_rx.clone(), done_tx.clone(), spare_tx.clone());
            let (keys, dir, failed) = (keys.clone(), journal.dir.clone(), failed.clone());
            let t = std::thread::Builder::new()
                .name(format!("dedupe-upload-{i}"))
                .spawn(move || {
                    let r = upload(&*backend, &keys, &dir, packs, done, spare);
                    if r.is_err() {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    r
                })
                .map_err(|e| Error::io("starting an upload thread", e))?;
            uploaders.push(t);
        }
        drop(done_tx);
        let (dir, index_failed) = (journal.dir.clone(), failed.clone());
        let indexer = std::thread::Builder::new()
            .name("dedupe-index".into())
            .spawn(move || {
                let r = write_index(&*backend, &keys, &dir, done_rx);
                if r.is_err() {
                    index_failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                r
            })
            .map_err(|e| Error::io("starting the index thread", e))?;
        let pack_size = pack_size(uploaders.len());
        Ok((Uploads { uploaders, indexer, journal }, PackSink { packs: pack_tx, spare: spare_rx, pack_size, failed }))
    }

    /// Waits for every pack and index object (the pack sender must be dropped first).
    pub(crate) fn finish(self) -> Result<()> {
        let panicked = || Err(Error::Invalid("an upload thread panicked".into()));
        let mut first = Ok(());
        for t in self.uploaders {
            let r = t.join().unwrap_or_else(|_| panicked());
            if first.is_ok() {
                first = r;
            }
        }
        // The packs that did go up are indexed even when others failed, so the next run reuses them.
        let indexed = self.indexer.join().unwrap_or_else(|_| panicked());
        let result = first.and(indexed);
        if result.is_ok() {
            // Every pack is indexed: the folder is empty. (Otherwise it stays for `recover`.)
            let _ = std::fs::remove_dir(&self.journal.dir);
        }
        result
    }
}

impl Journal {
    /// Made under a hidden name, locked, then renamed into view: `recover`
    /// never sees a folder whose writer has not locked it yet.
    fn new(cache_dir: &Path) -> Result<Journal> {
        let base = cache_dir.join(JOURNAL);
        let name = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        let (hidden, dir) = (base.join(format!(".{name}")), base.join(&name));
        let io = |e| Error::io(format!("creating {}", dir.display()), e);
        crate::private::create_dir(&hidden).map_err(io)?;
        let lock = std::fs::File::create(hidden.join(LOCK)).map_err(io)?;
        // SAFETY: flock on a file we own; the lock ends when the file is closed (or the process dies).
        if unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::io(format!("locking {}", hidden.display()), std::io::Error::last_os_error()));
        }
        std::fs::rename(&hidden, &dir).map_err(io)?;
        Ok(Journal { dir, _lock: lock })
    }
}

/// The lock file in each writer's journal folder.
const LOCK: &str = ".lock";

/// The journal's folder in a repository's cache.
const JOURNAL: &str = "unindexed";

fn upload(
    backend: &dyn Backend,
    keys: &Keys,
    journal: &Path,
    packs: Receiver<FinishedPack>,
    done: Sender<(Id, Vec<PackEntry>)>,
    spare: Sender<Vec<u8>>,
) -> Result<()> {
    for pack in packs {
        // Journalled before the upload: a pack that became visible is always
        // journalled, however soon after the process dies (`recover` drops
        // entries whose pack never arrived).
        let entry = [(pack.id, pack.entries)];
        let (_, sealed) = seal_index_object(keys, &entry, std::time::SystemTime::now());
        let path = journal.join(hex_id(&pack.id));
        std::fs::write(&path, sealed).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        let bytes = bytes::Bytes::from(pack.bytes);
        backend.put(&pack_name(&pack.id), bytes.clone())?;
        let [(id, entries)] = entry;
        let _ = done.send((id, entries));
        if let Ok(buf) = bytes.try_into_mut() {
            let _ = spare.try_send(buf.into());
        }
    }
    Ok(())
}

fn write_index(backend: &dyn Backend, keys: &Keys, journal: &Path, done: Receiver<(Id, Vec<PackEntry>)>) -> Result<()> {
    let mut batch: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    let mut since = Instant::now();
    let write = |batch: &mut Vec<(Id, Vec<PackEntry>)>| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        backend.flush()?;
        let (name, sealed) = seal_index_object(keys, batch, std::time::SystemTime::now());
        backend.put(&name, sealed.into())?;
        for (id, _) in batch.drain(..) {
            let _ = std::fs::remove_file(journal.join(hex_id(&id)));
        }
        Ok(())
    };
    loop {
        let wait = INDEX_EVERY.saturating_sub(since.elapsed());
        match done.recv_timeout(if batch.is_empty() { INDEX_EVERY } else { wait }) {
            Ok(pack) => {
                if batch.is_empty() {
                    since = Instant::now();
                }
                batch.push(pack);
                if batch.len() >= PACKS_PER_INDEX || since.elapsed() >= INDEX_EVERY {
                    write(&mut batch)?;
                }
            }
            Err(RecvTimeoutError::Timeout) => write(&mut batch)?,
            Err(RecvTimeoutError::Disconnected) => return write(&mut batch),
        }
    }
}

/// Indexes the packs that cut-short writers on this host journalled (see
/// the module doc); returns how many. Folders still locked belong to
/// running writers and are skipped. A journalled pack that is not whole in
/// the repository (lost with the server, cut by a power failure: its last
/// blob does not open) is forgotten: its chunks are simply not known, and
/// are uploaded again. So is one a prune has marked (`marks`, listed
/// before this is called): it may be deleted soon, so nothing may come to
/// depend on it (format-spec §20).
pub(crate) fn recover(backend: &dyn Backend, keys: &Keys, cache_dir: &Path, marks: &Marks) -> Result<usize> {
    let Ok(writers) = std::fs::read_dir(cache_dir.join(JOURNAL)) else { return Ok(0) };
    let mut count = 0;
    for writer in writers.flatten() {
        let dir = writer.path();
        // Hidden: a writer still setting its folder up (see `Journal::new`).
        if !dir.is_dir() || writer.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(lock) = std::fs::File::open(dir.join(LOCK)) else { continue };
        // SAFETY: flock on a file we opened; released when `lock` is dropped.
        if unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue;
        }
        count += recover_writer(backend, keys, &dir, marks)?;
        let _ = std::fs::remove_file(dir.join(LOCK));
        let _ = std::fs::remove_dir(&dir);
    }
    Ok(count)
}

fn recover_writer(backend: &dyn Backend, keys: &Keys, dir: &Path, marks: &Marks) -> Result<usize> {
    let mut found: Vec<(PathBuf, (Id, Vec<PackEntry>))> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?.flatten() {
        let path = entry.path();
        if entry.file_name() == LOCK {
            continue;
        }
        let parsed = entry.file_name().to_str().and_then(parse_id).and_then(|pack| {
            let sealed = std::fs::read(&path).ok()?;
            let name = ObjectKind::Index.name(&blake3::hash(&sealed).to_hex());
            let mut packs = open_index_object(keys, &name, &sealed).ok()?;
            (packs.len() == 1 && packs[0].0 == pack && !marks.contains(&pack)).then(|| packs.remove(0))
        });
        let whole = parsed.as_ref().is_some_and(|(pack, entries)| {
            entries.iter().max_by_key(|e| e.offset).is_some_and(|last| {
                let range = last.offset as u64..last.offset as u64 + last.length as u64;
                backend
                    .get_range(&pack_name(pack), range)
                    .is_ok_and(|sealed| crate::blob::open_blob(keys, &last.id, &sealed, last.raw_len as usize).is_ok())
            })
        });
        match parsed {
            Some(p) if whole => found.push((path, p)),
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    if found.is_empty() {
        return Ok(0);
    }
    // The writer died before syncing them, perhaps: durable before named.
    let names: Vec<String> = found.iter().map(|(_, (pack, _))| pack_name(pack)).collect();
    backend.sync(&names)?;
    let (paths, packs): (Vec<PathBuf>, Vec<(Id, Vec<PackEntry>)>) = found.into_iter().unzip();
    let (name, sealed) = seal_index_object(keys, &packs, std::time::SystemTime::now());
    backend.put(&name, sealed.into())?;
    backend.flush()?;
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    Ok(paths.len())
}
