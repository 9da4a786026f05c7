//! The backup pipeline.
//!
//! ```text
//! reader thread          worker threads (one a core)       calling thread            upload threads (`upload`)
//! source → chunker ─►    hash, dedup, compress+encrypt ─►  in order: lists, tree ─►  put packs,
//!          units of ≤2 MiB                                 packs                      then index objects
//! ```
//! Units carry a sequence number; the calling thread puts them back in order.
//! Workers take units one at a time, so a large chunk on one core does not
//! leave the other idle, as a batch barrier would. A fixed number of
//! tokens bounds the units in flight, and no pack waits for an uploader, so a slow disk or network throttles the reader and memory
//! stays flat whatever the input size. A duplicate chunk costs a hash
//! and an index probe. The manifest is written only after every pack and
//! index object is stored: an interrupted backup leaves packs that the next
//! backup finds in the index and reuses, and no snapshot.

use crate::bits::Bits;
use crate::blob;
use crate::chunker::{Chunker, Chunking};
use crate::crypto::{hex_id, Id};
use crate::delta::{Parent, ParentBlocks};
use crate::error::{Error, Result};
use crate::guard::Guard;
use crate::pack::pack_name;
use crate::pack::{FinishedPack, PackWriter};
use crate::progress::Progress;
use crate::repo::{now_rfc3339, Indexed};
use crate::snapshot::{encode_records, Manifest, Node, NodeKind, Stats, Tree, HOLE, LIST_RECORDS};
use crate::upload::Uploads;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// What a source says about one entry's content.
pub enum Body {
    /// Directories, symlinks, hard links.
    None,
    /// A stream read once, front to back.
    Stream(Box<dyn Read + Send>),
    /// A file on disk, opened only if its content must be read; holes are
    /// found with SEEK_DATA/SEEK_HOLE and stored as holes.
    File(PathBuf),
}

/// One named entry of a source: a node (content left empty) and its body.
pub struct Entry {
    pub node: Node,
    pub body: Body,
    /// How to chunk this file.
    pub chunking: Chunking,
}

/// What a source yields next.
pub enum Event {
    /// A whole entry: directory walks and single streams.
    Entry(Entry),
    /// A file whose content arrives in pieces, possibly interleaved with the
    /// pieces of other open files (a `--parallel` xbstream). `key` names it
    /// until `Close`.
    Open { key: u64, node: Node, chunking: Chunking },
    /// Content of file `key` at `offset`. Offsets of one file only grow; a
    /// gap before a piece is a hole.
    Piece { key: u64, offset: u64, data: bytes::Bytes },
    /// File `key` is complete at `size` bytes (past the last piece is a hole;
    /// for a derived file, the base's bytes or zeros).
    Close { key: u64, size: u64 },
    /// Like `Open`, for a file made from a file of another snapshot and the
    /// pieces that follow (`derive.rs`): a PostgreSQL incremental's
    /// `INCREMENTAL.*` file on its base.
    Derive { key: u64, node: Node, chunking: Chunking, from: crate::derive::Derived },
}

/// A backup source: a stream of named entries, parents before children.
pub trait Source: Send {
    fn next_event(&mut self) -> Result<Option<Event>>;
    /// Warnings collected on the way (skipped sockets, devices...).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Facts learnt from the content (binlog position, LSNs...), asked for
    /// once the source is exhausted; they join the manifest's metadata.
    fn metadata(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        Default::default()
    }
    /// The bytes of file content (holes included) the source will present,
    /// when it can tell before it starts (a directory can, a stream cannot):
    /// the progress display's total.
    fn size_hint(&mut self) -> Option<u64> {
        None
    }
}

pub struct BackupOptions {
    pub name: String,
    pub source_description: String,
    /// Read every file even when size, mtime, ctime and inode match the previous snapshot.
    pub force_read: bool,
    /// The zstd level for every chunk; `None`: the repository's, and the
    /// level a page-aligned file's chunking names for its blocks.
    pub compression_level: Option<i32>,
    pub metadata: std::collections::BTreeMap<String, serde_json::Value>,
    /// The producer's log, asked for once the source is exhausted and stored
    /// as a chunk the manifest names (`dedupe log`).
    pub log: Option<Box<dyn FnOnce() -> Vec<u8> + Send>>,
    /// A snapshot, or an archived log file (no parent, its own prefix).
    pub kind: crate::repo::Kind,
    /// When, where and by whom the snapshot says it was made, where that is
    /// not now and here.
    pub origin: Origin,
}

/// The manifest fields a copied (or back-dated) snapshot keeps from
/// elsewhere; `None` means now, this host, this user, no original.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    /// RFC 3339.
    pub time: Option<String>,
    pub hostname: Option<String>,
    pub username: Option<String>,
    pub original: Option<String>,
}

pub struct BackupResult {
    pub snapshot_id: String,
    pub manifest: Manifest,
    pub warnings: Vec<String>,
}

/// Items name their file by a key, so that files may interleave.
enum Item {
    /// A file begins; it is chunked so (only page-aligned ones get deltas).
    Start(u64, Node, Chunking),
    /// A chunk, the parent snapshot's block at the same offset of the
    /// same file when the file is page-aligned (`delta.rs`), and the zstd
    /// level its file's chunking asks for, if any.
    /// (The data is shared with the piece it was cut from: no copy.)
    Chunk(u64, bytes::Bytes, Option<Id>, Option<i32>),
    Hole(u64, u64),
    End(u64),
    /// A node complete as it is (non-files, and files reused unread).
    Whole(Node),
    /// A derived file begins (`derive.rs`); its content comes as the two below.
    StartDerived(u64, Node),
    /// A chunk known by id, `len` bytes, the file's zstd level: a base's
    /// record, read only if the repository has no usable copy.
    Known(u64, Id, u64, Option<i32>),
    /// A slot a worker makes from the base's bytes and the pieces.
    Derived(u64, crate::derive::Slot, Option<i32>),
}

/// A unit of work closes at this many bytes of chunk data or this many items.
const UNIT_BYTES: usize = 2 << 20;
const UNIT_ITEMS: usize = 256;
/// Units between the reader and the in-order consumer: ~24 MiB of chunks.
const IN_FLIGHT: usize = 12;

struct Unit {
    seq: u64,
    items: Vec<Item>,
}

/// A new chunk's blob, and its base if it is a delta.
struct Sealed {
    blob: Vec<u8>,
    base: Option<Id>,
}

/// A unit with, for each item, the chunk id and the sealed blob if the chunk is new.
struct Done {
    seq: u64,
    items: Vec<Item>,
    results: Vec<Option<(Id, Option<Sealed>)>>,
    /// The worker panicked on this unit: the backup must stop, not wait for it.
    panicked: bool,
    /// A base a derived file needs could not be read.
    failed: Option<Error>,
}

/// What the workers share: read-only keys and index, and the in-run dedup set.
struct Shared<'a> {
    repo: &'a Indexed,
    keys: &'a crate::crypto::Keys,
    index: &'a crate::index::Index,
    /// The index's marked packs: never deduplicated against.
    marked: &'a Bits,
    /// The index records deduplicated against, for the guard.
    hits: &'a Bits,
    level: i32,
    /// Whether a file's chunking may name a level of its own: not when the
    /// level was asked for (`backup --compression`), nor when it is 0 (off).
    page_levels: bool,
    /// Chunks this backup has stored (or is storing).
    claimed: Mutex<crate::claims::Claims>,
}

impl Shared<'_> {
    /// Claims a chunk for storing: true if nobody has it yet.
    fn claim(&self, id: &Id) -> bool {
        if let Some((pos, _)) = self.index.find(id, |no| !self.marked.get(no as usize)) {
            self.hits.set(pos);
            return false;
        }
        // A failed spill (full disk) only costs a second copy of a chunk.
        self.claimed.lock().expect("not poisoned").insert(*id).unwrap_or(true)
    }

    fn work(&self, unit: Unit) -> Done {
        let seq = unit.seq;
        let (items, known) = match self.make_derived(unit.items) {
            Ok(made) => made,
            Err(e) => return Done { seq, items: Vec::new(), results: Vec::new(), panicked: false, failed: Some(e) },
        };
        let unit = Unit { seq, items };
        // Which chunks are new first, so that the bases of the changed
        // pages among them are read together.
        let new: Vec<Option<(Id, bool)>> = unit
            .items
            .iter()
            .zip(known)
            .map(|(item, known)| match (item, known) {
                (_, Some(k)) => Some(k),
                (Item::Chunk(_, data, ..), None) => {
                    let id = self.keys.chunk_id(data);
                    Some((id, self.claim(&id)))
                }
                _ => None,
            })
            .collect();
        let mut parents: Vec<Id> = unit
            .items
            .iter()
            .zip(&new)
            .filter_map(|(item, new)| match (item, new) {
                (Item::Chunk(_, _, Some(parent), _), Some((id, true))) if parent != id => Some(*parent),
                _ => None,
            })
            .collect();
        // In file order, which is the order they sit in the parent's packs:
        // neighbours are read with one ranged get.
        let mut seen = std::collections::HashSet::new();
        parents.retain(|p| seen.insert(*p));
        let bases = if parents.is_empty() || self.level == 0 {
            HashMap::new()
        } else {
            self.repo.delta_bases(&parents, self.marked, self.hits)
        };
        let results = unit
            .items
            .iter()
            .zip(new)
            .map(|(item, new)| {
                if let (Item::Known(..), Some((id, _))) = (item, new) {
                    return Some((id, None));
                }
                let (Item::Chunk(_, data, parent, level), Some((id, is_new))) = (item, new) else { return None };
                if !is_new {
                    return Some((id, None));
                }
                let base = parent.and_then(|p| bases.get(&p)).map(|(b, plain)| (b, &plain[..]));
                let level = level.filter(|_| self.page_levels).unwrap_or(self.level);
                let (blob, is_delta) = blob::seal_chunk_against(self.keys, &id, data, base, level);
                Some((id, Some(Sealed { blob, base: is_delta.then(|| *base.expect("a delta has a base").0) })))
            })
            .collect();
        Done { seq: unit.seq, items: unit.items, results, panicked: false, failed: None }
    }

    /// Turns a unit's derived slots into chunks (`derive.rs`), reading the
    /// base records they need together; a known record the repository has
    /// no usable copy of (none, or only in a marked pack) is read too, and
    /// stored again. The second value says, for such items, their id and
    /// that they are claimed.
    #[allow(clippy::type_complexity)]
    fn make_derived(&self, items: Vec<Item>) -> Result<(Vec<Item>, Vec<Option<(Id, bool)>>)> {
        let mut wanted: Vec<Id> = Vec::new();
        let mut known: Vec<Option<(Id, bool)>> = Vec::with_capacity(items.len());
        for item in &items {
            known.push(match item {
                Item::Known(_, id, ..) => {
                    let is_new = self.claim(id);
                    if is_new {
                        wanted.push(*id);
                    }
                    Some((*id, is_new))
                }
                Item::Derived(_, slot, _) => {
                    wanted.extend(slot.base.iter().map(|(id, ..)| *id).filter(|id| *id != crate::snapshot::HOLE));
                    None
                }
                _ => None,
            });
        }
        if wanted.is_empty() && !items.iter().any(|i| matches!(i, Item::Derived(..))) {
            return Ok((items, known));
        }
        let mut seen = std::collections::HashSet::new();
        wanted.retain(|id| seen.insert(*id));
        let plain: HashMap<Id, Vec<u8>> = match wanted.is_empty() {
            true => HashMap::new(),
            false => wanted.iter().copied().zip(self.repo.read_chunks(&wanted)?).collect(),
        };
        let items = items
            .into_iter()
            .zip(&known)
            .map(|(item, k)| match (item, k) {
                (Item::Known(f, id, _, level), Some((_, true))) => {
                    let data = plain.get(&id).cloned().unwrap_or_default();
                    Ok(Item::Chunk(f, data.into(), None, level))
                }
                (Item::Derived(f, slot, level), _) => {
                    Ok(Item::Chunk(f, slot.assemble(&plain)?.into(), slot.parent, level))
                }
                (item, _) => Ok(item),
            })
            .collect::<Result<Vec<Item>>>()?;
        Ok((items, known))
    }
}

impl Indexed {
    pub fn backup(
        &self,
        mut source: Box<dyn Source>,
        opts: BackupOptions,
        progress: &dyn Progress,
    ) -> Result<BackupResult> {
        let started = Instant::now();
        let BackupOptions { name, source_description, force_read, compression_level, metadata, log, kind, origin } =
            opts;
        let parent = match kind {
            crate::repo::Kind::Snapshot => {
                // A backup runs long enough to tidy the index cache meanwhile.
                crate::index::merge_in_background(&self.cache_dir(self.cache_base()));
                self.previous_snapshot(&name)?
            }
            crate::repo::Kind::Log => None,
        };
        // The parent's tree spares reading unchanged files and gives the
        // previous version of changed pages (`delta.rs`), so it is read when
        // the first file on disk or page-aligned file comes up; if it cannot
        // be read (a damaged index, say), every file is read and stored whole.
        let load_previous = || -> Parent {
            match &parent {
                Some((_, m)) => Parent::new(self.read_tree(m).map(|t| t.nodes).unwrap_or_default()),
                None => Parent::new(Vec::new()),
            }
        };

        let (uploads, sink) =
            Uploads::start(self.backend.clone(), self.keys.clone(), &self.cache_dir(self.cache_base()))?;
        let hits = Bits::new(self.index.len());
        let shared = Shared {
            repo: self,
            keys: &self.keys,
            index: &self.index,
            marked: &self.marked,
            hits: &hits,
            level: compression_level.unwrap_or(self.config.compression_level),
            page_levels: compression_level.is_none() && self.config.compression_level != 0,
            claimed: Mutex::new(crate::claims::Claims::new(self.cache_dir(self.cache_base()))),
        };
        let mut w = Writer {
            shared: &shared,
            pack: PackWriter::with_buffer(Vec::new(), sink.pack_size),
            pack_size: sink.pack_size,
            upload_failed: sink.failed,
            pack_tx: Some(sink.packs),
            spare: sink.spare,
            stats: Stats::default(),
            progress,
            guard: Guard::new(self, &hits)?,
        };
        // Counted apart from `progress`, which may show nothing.
        let bytes_read = AtomicU64::new(0);
        // One worker a core; on a remote store as many as there are
        // connections, since a worker waits on the bases of its unit's
        // changed pages (`delta.rs`) and the others keep the cores busy.
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let workers = cores.max(self.backend.connections().min(IN_FLIGHT));
        let (work_tx, work_rx) = unbounded::<Unit>();
        let (done_tx, done_rx) = unbounded::<Done>();
        let (token_tx, token_rx) = bounded::<()>(IN_FLIGHT);
        for _ in 0..IN_FLIGHT {
            token_tx.send(()).expect("capacity is IN_FLIGHT");
        }
        let (read, processed) = std::thread::scope(|s| {
            let (src, prev, read) = (&mut source, &load_previous, &bytes_read);
            let reader = s.spawn(move || {
                let r = read_source(self, &mut **src, prev, force_read, work_tx, token_rx, read, progress);
                (r, src.warnings(), src.metadata())
            });
            for _ in 0..workers {
                let (rx, tx, shared) = (work_rx.clone(), done_tx.clone(), &shared);
                s.spawn(move || {
                    for unit in rx {
                        let seq = unit.seq;
                        let done =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.work(unit))).unwrap_or(
                                Done { seq, items: Vec::new(), results: Vec::new(), panicked: true, failed: None },
                            );
                        if tx.send(done).is_err() {
                            break;
                        }
                    }
                });
            }
            drop((work_rx, done_tx));
            // Returning drops the token sender and the result receiver, which stops the reader and workers.
            let processed = w.process(done_rx, token_tx);
            (reader.join(), processed)
        });
        let (read, warnings, learnt) = read
            .unwrap_or_else(|_| (Err(Error::Invalid("the reader thread panicked".into())), vec![], Default::default()));
        // The reader's failure explains an incomplete tree, so it is reported first.
        let mut tree = read.and(processed).and_then(|tree| w.finish(tree, log.map(|f| f())));
        // Before the manifest, the guard makes sure nothing this backup
        // depends on is in a pack marked for deletion (`guard.rs`), and
        // looks again if the last uploads took long enough for a prune to
        // have marked more (format-spec §20.3).
        let mut uploads = uploads;
        let mut first = true;
        let (tree_id, log_id) = loop {
            if tree.is_ok() {
                tree = w.recheck(true, first).and_then(|_| w.flush_pack()).and(tree);
            }
            first = false;
            drop(w.pack_tx.take());
            // An upload failure explains a stopped writer, so it is reported first.
            uploads.finish()?;
            let ids = tree?;
            if !w.guard.due() {
                break ids;
            }
            let (more, sink) =
                Uploads::start(self.backend.clone(), self.keys.clone(), &self.cache_dir(self.cache_base()))?;
            w.attach(sink);
            uploads = more;
            tree = Ok(ids);
        };
        // After a gap in the listings of the marks, every pack this backup
        // depends on must still exist: checked once all its own packs are
        // uploaded (one still in flight is not missing).
        if w.guard.had_gap() {
            w.guard.verify_packs_exist()?;
        }

        let mut stats = w.stats;
        stats.bytes_read = bytes_read.load(Ordering::Relaxed);
        stats.seconds = started.elapsed().as_secs_f64();
        let manifest = Manifest {
            version: 1,
            name,
            time: origin.time.unwrap_or_else(now_rfc3339),
            hostname: origin.hostname.unwrap_or_else(crate::keyfile::hostname),
            username: origin.username.unwrap_or_else(|| std::env::var("USER").unwrap_or_default()),
            source: source_description,
            tree: hex_id(&tree_id),
            log: log_id.map(|id| hex_id(&id)),
            parent: parent.map(|(id, _)| id),
            original: origin.original,
            stats,
            metadata: {
                let mut m = metadata;
                m.extend(learnt);
                m
            },
        };
        progress.committing();
        let snapshot_id = self.write_manifest(&manifest, kind)?;
        // Only a cache: the snapshot exists whether or not this lands.
        let _ = self.catalogue().add(kind, kind.object_kind().name(&snapshot_id), manifest.clone());
        Ok(BackupResult { snapshot_id, manifest, warnings })
    }

    /// The newest readable snapshot of `name`: a damaged manifest must not
    /// stop backups (it only costs reading unchanged files again).
    fn previous_snapshot(&self, name: &str) -> Result<Option<(String, Manifest)>> {
        Ok(self.snapshots(Some(name))?.pop())
    }
}

/// Runs on the reader thread: walks the source and sends batches of items.
#[allow(clippy::too_many_arguments)]
fn read_source(
    repo: &Indexed,
    source: &mut dyn Source,
    load_previous: &(dyn Fn() -> Parent + Sync),
    force_read: bool,
    tx: Sender<Unit>,
    tokens: Receiver<()>,
    bytes_read: &AtomicU64,
    progress: &dyn Progress,
) -> Result<()> {
    if let Some(total) = source.size_hint() {
        progress.total(total);
    }
    let mut seq = 0u64;
    let mut unit_bytes = 0usize;
    let mut batch = Vec::new();
    // Progress counts content dealt with: read, a hole, or a file found
    // unchanged; `bytes_read` (the summary's) only what was read.
    let processed = std::cell::Cell::new(0u64);
    let advance = |n: u64| {
        processed.set(processed.get() + n);
        progress.done(processed.get());
    };
    let send = |batch: &mut Vec<Item>, seq: &mut u64| -> Result<()> {
        // No token: the consumer has stopped (and reports why).
        tokens.recv().map_err(|_| Error::Invalid("backup stopped".into()))?;
        tx.send(Unit { seq: *seq, items: std::mem::take(batch) })
            .map_err(|_| Error::Invalid("backup stopped".into()))?;
        *seq += 1;
        Ok(())
    };
    // Each open page-aligned file: how far it has come, the parent's blocks,
    // and the level its chunking names, if any.
    let previous = std::cell::OnceCell::new();
    let mut walks: HashMap<u64, (u64, Option<ParentBlocks>, Option<i32>)> = HashMap::new();
    let mut push = |mut item: Item, batch: &mut Vec<Item>| -> Result<()> {
        match &mut item {
            Item::Start(k, node, Chunking::Fixed { level, .. }) if node.kind == NodeKind::File => {
                walks.insert(*k, (0, previous.get_or_init(load_previous).blocks(repo, &node.path), *level));
            }
            Item::Chunk(k, c, parent, chunk_level) => {
                if let Some((at, blocks, level)) = walks.get_mut(k) {
                    if let Some(blocks) = blocks {
                        *parent = blocks.at(repo, *at, c.len() as u64);
                    }
                    *at += c.len() as u64;
                    *chunk_level = *level;
                }
            }
            Item::Hole(k, n) => {
                if let Some((at, ..)) = walks.get_mut(k) {
                    *at += *n;
                }
            }
            Item::End(k) => {
                walks.remove(k);
            }
            _ => {}
        }
        match &item {
            Item::Chunk(_, c, ..) => {
                unit_bytes += c.len();
                bytes_read.fetch_add(c.len() as u64, Ordering::Relaxed);
                advance(c.len() as u64);
            }
            Item::Hole(_, n) | Item::Known(_, _, n, _) => advance(*n),
            // A worker makes the slot: its bytes count in the unit; only
            // the pieces were read.
            Item::Derived(_, slot, _) => {
                unit_bytes += slot.len as usize;
                bytes_read.fetch_add(slot.written(), Ordering::Relaxed);
                advance(slot.len);
            }
            _ => {}
        }
        batch.push(item);
        if unit_bytes >= UNIT_BYTES || batch.len() >= UNIT_ITEMS {
            unit_bytes = 0;
            send(batch, &mut seq)?;
        }
        Ok(())
    };
    // Keys of the items: entries get fresh ones; a source's own keys map to ours.
    let mut next_key = 0u64;
    let mut open: HashMap<u64, (u64, u64, Chunking)> = HashMap::new();
    // Derived files (`derive.rs`): their walks by the source's key, and the
    // snapshots they are derived from, each read once.
    let mut derived: HashMap<u64, (u64, u64, crate::derive::Walk, Option<i32>)> = HashMap::new();
    let mut bases: HashMap<String, Parent> = HashMap::new();
    let made = |k: u64, level: Option<i32>, made: Vec<(u64, crate::derive::Made)>| {
        made.into_iter().map(move |(len, m)| match m {
            crate::derive::Made::Record(id) if id == HOLE => Item::Hole(k, len),
            crate::derive::Made::Record(id) => Item::Known(k, id, len, level),
            crate::derive::Made::Slot(slot) => Item::Derived(k, slot, level),
        })
    };
    while let Some(event) = source.next_event()? {
        let entry = match event {
            Event::Entry(e) => e,
            Event::Derive { key, node, chunking, from } => {
                if open.contains_key(&key) || derived.contains_key(&key) {
                    return Err(Error::Input(format!("{} was opened twice", node.path)));
                }
                if !bases.contains_key(&from.snapshot) {
                    let (_, m) = repo.find_snapshot(&from.snapshot, None)?;
                    bases.insert(from.snapshot.clone(), Parent::new(repo.read_tree(&m)?.nodes));
                }
                let base = &bases[&from.snapshot];
                let size = match base.get(&from.path) {
                    Some(n) if n.kind == NodeKind::File => n.size,
                    _ => {
                        return Err(Error::Input(format!(
                            "{} is built on {} of snapshot {}, which has no such file",
                            node.path, from.path, from.snapshot
                        )))
                    }
                };
                let Chunking::Fixed { size: slot, level } = chunking else {
                    return Err(Error::Invalid(format!("{}: a derived file is cut in fixed-size blocks", node.path)));
                };
                let walk = crate::derive::Walk::new(base.records_of(repo, &from.path)?, size, from.keep, slot as u64);
                derived.insert(key, (next_key, 0, walk, level));
                push(Item::StartDerived(next_key, node), &mut batch)?;
                next_key += 1;
                continue;
            }
            Event::Piece { key, offset, data } if derived.contains_key(&key) => {
                let (k, end, walk, level) = derived.get_mut(&key).expect("checked");
                if offset < *end {
                    return Err(Error::Input(format!("content at offset {offset} goes back before {end}")));
                }
                *end = offset + data.len() as u64;
                let (k, level) = (*k, *level);
                for item in made(k, level, walk.piece(repo, offset, data)?) {
                    push(item, &mut batch)?;
                }
                continue;
            }
            Event::Close { key, size } if derived.contains_key(&key) => {
                let (k, _, mut walk, level) = derived.remove(&key).expect("checked");
                for item in made(k, level, walk.close(repo, size)?) {
                    push(item, &mut batch)?;
                }
                push(Item::End(k), &mut batch)?;
                continue;
            }
            Event::Open { key, node, chunking } => {
                if open.insert(key, (next_key, 0, chunking)).is_some() {
                    return Err(Error::Input(format!("{} was opened twice", node.path)));
                }
                push(Item::Start(next_key, node, chunking), &mut batch)?;
                next_key += 1;
                continue;
            }
            Event::Piece { key, offset, data } => {
                let (k, end, chunking) =
                    open.get_mut(&key).ok_or_else(|| Error::Input("content for a file that is not open".into()))?;
                if offset < *end {
                    return Err(Error::Input(format!("content at offset {offset} goes back before {end}")));
                }
                if offset > *end {
                    push(Item::Hole(*k, offset - *end), &mut batch)?;
                }
                *end = offset + data.len() as u64;
                let (k, chunking) = (*k, *chunking);
                let mut at = 0;
                for len in crate::chunker::split(&data, chunking).iter().map(|c| c.len()) {
                    push(Item::Chunk(k, data.slice(at..at + len), None, None), &mut batch)?;
                    at += len;
                }
                continue;
            }
            Event::Close { key, size } => {
                let (k, end, _) =
                    open.remove(&key).ok_or_else(|| Error::Input("a file closed that is not open".into()))?;
                if size > end {
                    push(Item::Hole(k, size - end), &mut batch)?;
                }
                push(Item::End(k), &mut batch)?;
                continue;
            }
        };
        let Entry { mut node, body, chunking } = entry;
        let key = next_key;
        next_key += 1;
        match body {
            Body::None => push(Item::Whole(node), &mut batch)?,
            Body::File(path) => {
                if !force_read {
                    if let Some(prev) = previous.get_or_init(load_previous).get(&node.path) {
                        if unchanged(prev, &node) {
                            advance(node.size);
                            node.content = prev.content.clone();
                            push(Item::Whole(node), &mut batch)?;
                            continue;
                        }
                    }
                }
                let size = node.size;
                push(Item::Start(key, node, chunking), &mut batch)?;
                let file =
                    File::open(&path).map_err(|e| Error::Input(format!("cannot open {}: {e}", path.display())))?;
                for (data, extent) in
                    extents(&file, size).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?
                {
                    if !data {
                        push(Item::Hole(key, extent.1), &mut batch)?;
                        continue;
                    }
                    let mut f = &file;
                    f.seek(SeekFrom::Start(extent.0)).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
                    let mut read = 0u64;
                    for chunk in Chunker::new(f.take(extent.1), chunking) {
                        let chunk = chunk.map_err(|e| Error::Input(format!("reading {}: {e}", path.display())))?;
                        read += chunk.len() as u64;
                        push(Item::Chunk(key, chunk.into(), None, None), &mut batch)?;
                    }
                    if read != extent.1 {
                        return Err(Error::Input(format!(
                            "{} shrank while it was read: is the source a live filesystem rather than a snapshot?",
                            path.display()
                        )));
                    }
                }
                push(Item::End(key), &mut batch)?;
            }
            Body::Stream(reader) => {
                push(Item::Start(key, node, chunking), &mut batch)?;
                for chunk in Chunker::new(reader, chunking) {
                    let chunk = chunk.map_err(|e| Error::reading(&e))?;
                    push(Item::Chunk(key, chunk.into(), None, None), &mut batch)?;
                }
                push(Item::End(key), &mut batch)?;
            }
        }
    }
    if !open.is_empty() || !derived.is_empty() {
        return Err(Error::Truncated(format!("the source ended with {} files incomplete", open.len() + derived.len())));
    }
    if !batch.is_empty() {
        send(&mut batch, &mut seq)?;
    }
    Ok(())
}

fn unchanged(prev: &Node, cur: &Node) -> bool {
    prev.kind == NodeKind::File
        && prev.size == cur.size
        && prev.mtime_ns == cur.mtime_ns
        && prev.ctime_ns == cur.ctime_ns
        && prev.inode == cur.inode
        && cur.inode != 0
        && (prev.size == 0 || !prev.content.is_empty())
}

/// Data and hole extents of a file, as (is_data, (offset, length)).
fn extents(file: &File, size: u64) -> io::Result<Vec<(bool, (u64, u64))>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        // SAFETY: lseek on a valid fd has no memory effects.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // No data after pos: the rest is a hole.
                Some(libc::ENXIO) => {
                    out.push((false, (pos, size - pos)));
                    break;
                }
                // The filesystem cannot tell: treat everything as data.
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                    out.push((true, (pos, size - pos)));
                    break;
                }
                _ => return Err(err),
            }
        }
        let data = (data as u64).min(size);
        if data > pos {
            out.push((false, (pos, data - pos)));
        }
        if data >= size {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 { size } else { (hole as u64).min(size) };
        out.push((true, (data, hole - data)));
        pos = hole;
    }
    Ok(out)
}

/// Runs on the calling thread: puts results back in order, writes list
/// chunks, packs and the tree.
struct Writer<'a> {
    shared: &'a Shared<'a>,
    pack: PackWriter,
    pack_size: usize,
    upload_failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pack_tx: Option<Sender<FinishedPack>>,
    spare: Receiver<Vec<u8>>,
    stats: Stats,
    progress: &'a dyn Progress,
    guard: Guard<'a>,
}

struct OpenFile {
    node: Node,
    records: Vec<(Id, u64)>,
    /// Bytes of content so far: a stream's size is known only at its end.
    logical: u64,
}

impl Writer<'_> {
    fn process(&mut self, rx: Receiver<Done>, tokens: Sender<()>) -> Result<Tree> {
        let mut tree = Tree::default();
        let mut open: HashMap<u64, OpenFile> = HashMap::new();
        let mut waiting: std::collections::BTreeMap<u64, Done> = Default::default();
        let mut next = 0u64;
        loop {
            // Woken at least every RECHECK, even when the source is slow, to look for new marks.
            let done = match rx.recv_timeout(crate::marks::RECHECK) {
                Ok(done) => done,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    self.recheck(false, false)?;
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            };
            if done.panicked {
                return Err(Error::Invalid("a backup worker thread panicked (a bug: please report it)".into()));
            }
            if let Some(e) = done.failed {
                return Err(e);
            }
            waiting.insert(done.seq, done);
            while let Some(done) = waiting.remove(&next) {
                next += 1;
                self.consume(done, &mut tree, &mut open)?;
                let _ = tokens.send(());
            }
            self.recheck(false, false)?;
        }
        if !waiting.is_empty() {
            return Err(Error::Invalid("a worker stopped before its unit was done".into()));
        }
        if !open.is_empty() {
            return Err(Error::Truncated("the source ended in the middle of a file".into()));
        }
        Ok(tree)
    }

    fn consume(&mut self, done: Done, tree: &mut Tree, open: &mut HashMap<u64, OpenFile>) -> Result<()> {
        for (item, sealed) in done.items.into_iter().zip(done.results) {
            match item {
                Item::Whole(node) => {
                    // Content taken from the parent snapshot: the guard watches it.
                    self.guard.reused.extend(node.content.iter().filter_map(|h| crate::crypto::parse_id(h)));
                    if node.kind == NodeKind::File {
                        self.stats.files += 1;
                        self.stats.files_unchanged += 1;
                        self.stats.bytes += node.size;
                    }
                    tree.nodes.push(node);
                }
                Item::Start(k, node, _) | Item::StartDerived(k, node) => {
                    open.insert(k, OpenFile { node, records: Vec::new(), logical: 0 });
                }
                Item::Hole(k, len) => self.push_record(open.get_mut(&k), HOLE, len)?,
                Item::Known(k, _, len, _) => {
                    let (id, _) = sealed.expect("known chunks have results");
                    self.stats.chunks += 1;
                    self.push_record(open.get_mut(&k), id, len)?;
                }
                Item::Derived(..) => unreachable!("workers make derived slots into chunks"),
                Item::Chunk(k, data, ..) => {
                    let (id, sealed) = sealed.expect("chunks have results");
                    self.stats.chunks += 1;
                    if let Some(Sealed { blob, base }) = sealed {
                        self.store(id, &blob, data.len(), base)?;
                    }
                    self.push_record(open.get_mut(&k), id, data.len() as u64)?;
                }
                Item::End(k) => {
                    let mut f = open.remove(&k).ok_or_else(|| Error::Invalid("file end without start".into()))?;
                    self.flush_list(&mut f)?;
                    f.node.size = f.logical;
                    self.stats.files += 1;
                    self.stats.bytes += f.logical;
                    tree.nodes.push(f.node);
                }
            }
        }
        Ok(())
    }

    fn push_record(&mut self, open: Option<&mut OpenFile>, id: Id, len: u64) -> Result<()> {
        let f = open.ok_or_else(|| Error::Invalid("content outside a file".into()))?;
        f.records.push((id, len));
        f.logical += len;
        if f.records.len() == LIST_RECORDS {
            self.flush_list(f)?;
        }
        Ok(())
    }

    /// Stores the pending records of a file as one list chunk.
    fn flush_list(&mut self, f: &mut OpenFile) -> Result<()> {
        if f.records.is_empty() {
            return Ok(());
        }
        let bytes = encode_records(&f.records);
        f.records.clear();
        let id = self.store_small(&bytes)?;
        f.node.content.push(hex_id(&id));
        Ok(())
    }

    /// Stores a small chunk made here (list chunk, tree), deduplicated.
    fn store_small(&mut self, data: &[u8]) -> Result<Id> {
        let sh = self.shared;
        let id = sh.keys.chunk_id(data);
        if sh.claim(&id) {
            let blob = blob::seal_chunk(sh.keys, &id, data, sh.level);
            self.store(id, &blob, data.len(), None)?;
        }
        Ok(id)
    }

    fn store(&mut self, id: Id, blob: &[u8], raw_len: usize, base: Option<Id>) -> Result<()> {
        self.stats.new_chunks += 1;
        self.stats.new_bytes += raw_len as u64;
        self.stats.new_bytes_stored += blob.len() as u64;
        if base.is_some() {
            self.stats.delta_chunks += 1;
            self.stats.delta_bytes += raw_len as u64;
            self.stats.delta_bytes_stored += blob.len() as u64;
        }
        self.progress.stored(raw_len as u64);
        self.pack.add(id, blob, raw_len, base);
        if self.pack.is_full() {
            self.flush_pack()?;
        }
        Ok(())
    }

    fn flush_pack(&mut self) -> Result<()> {
        if self.pack.is_empty() {
            return Ok(());
        }
        let pack = std::mem::take(&mut self.pack).finish(self.shared.keys);
        self.pack = PackWriter::with_buffer(self.spare.try_recv().unwrap_or_default(), self.pack_size);
        self.stats.packs_written += 1;
        self.guard.own.push((pack.id, pack.bytes.len() as u64));
        if self.upload_failed.load(Ordering::Relaxed) {
            // The uploader's error is reported at join.
            return Err(Error::Invalid("upload stopped".into()));
        }
        let tx = self.pack_tx.as_ref().expect("open while writing");
        // A closed channel means the uploader failed; its error is reported at join.
        tx.send(pack).map_err(|_| Error::Invalid("upload stopped".into()))
    }

    /// Stores the tree (and the producer's log); the last pack is flushed by the caller.
    fn finish(&mut self, tree: Tree, log: Option<Vec<u8>>) -> Result<(Id, Option<Id>)> {
        let bytes = serde_json::to_vec(&tree).expect("tree serializes");
        let id = self.store_small(&bytes)?;
        let log = log.map(|l| self.store_small(&l)).transpose()?;
        Ok((id, log))
    }

    /// Takes a new upload stage (`backup` restarts one to store what a
    /// late look at the marks asks for).
    fn attach(&mut self, sink: crate::upload::PackSink) {
        self.pack = PackWriter::with_buffer(Vec::new(), sink.pack_size);
        self.pack_size = sink.pack_size;
        self.upload_failed = sink.failed;
        self.pack_tx = Some(sink.packs);
        self.spare = sink.spare;
    }

    /// Takes in the marks the watcher has seen (`now`: lists them here
    /// first, as before the manifest) and stores again what depends on
    /// newly marked packs; `full` (once, before the manifest) looks at
    /// everything depended on, including hits of units that were in flight
    /// at the last look. True when something was stored again.
    fn recheck(&mut self, now: bool, full: bool) -> Result<bool> {
        let new = self.guard.refresh(now)?;
        if !(new || full) || !self.guard.any_marks() {
            return Ok(false);
        }
        // Copying a delta makes its base a dependency: looked at again.
        let (mut watched, mut stored_again) = (true, false);
        while std::mem::take(&mut watched) {
            let claimed = &self.shared.claimed;
            let endangered = self.guard.endangered(&|id| claimed.lock().expect("not poisoned").contains(id))?;
            let backend = self.guard.backend();
            for group in endangered.chunks(64) {
                let wanted: Vec<(String, std::ops::Range<u64>)> = group
                    .iter()
                    .map(|(_, l)| (pack_name(&l.pack), l.offset as u64..l.offset as u64 + l.length as u64))
                    .collect();
                let got = backend.get_ranges(&wanted).map_err(|e| match e {
                    Error::Missing(name) => Error::Pruned(name),
                    other => other,
                })?;
                for ((id, loc), sealed) in group.iter().zip(got) {
                    let Ok(opened) = blob::open_blob(self.shared.keys, id, &sealed, loc.raw_len as usize) else {
                        return Err(Error::corrupt(
                            pack_name(&loc.pack),
                            format!("chunk {} fails authentication; run `dedupe check --read-data`", hex_id(id)),
                        ));
                    };
                    let base = match opened {
                        blob::Opened::Delta { base, .. } => {
                            self.guard.watch(&base);
                            watched = true;
                            Some(base)
                        }
                        blob::Opened::Plain(_) => None,
                    };
                    if self.shared.claimed.lock().expect("not poisoned").insert(*id).unwrap_or(true) {
                        self.store(*id, &sealed, loc.raw_len as usize, base)?;
                        stored_again = true;
                    }
                }
            }
        }
        Ok(stored_again)
    }
}
