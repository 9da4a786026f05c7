//! `dedupe copy`: snapshots and archived logs from one repository into
//! another (offsite, say), each with its own keys and possibly on another
//! store.
//!
//! Chunk ids are keyed hashes, and two repositories have different keys,
//! so a chunk cannot be moved by id: each copied snapshot is read from the
//! source (authenticated, decrypted) and written into the target by the
//! ordinary backup pipeline, file by file, with the same nodes, the same
//! chunking rules, and the manifest's name, time, host, user, producer log
//! and database facts. The target stores only the chunks it lacks, so what
//! crosses to the target is what is new there. Each copy records the
//! source's id as `original`; a snapshot whose original is already in the
//! target is skipped, which makes `copy` idempotent and resumable (an
//! interrupted copy leaves its uploaded packs for the next run, as any
//! interrupted backup does).
//!
//! Snapshots go oldest first, so `parent` and `latest` come out in the
//! target as in the source; archived logs follow, so a point-in-time
//! restore from the target works on its own.

use crate::error::Result;
use dedupe_store::{
    Ahead, BackupOptions, Chunking, Entry, Event, Indexed, Kind, Manifest, Node, NodeKind, Origin, Piece, Progress,
    Source,
};
use std::collections::HashSet;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// What to copy.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only these names (all names when empty).
    pub names: Vec<String>,
    /// Only these snapshots (id prefixes or `latest`); no logs. Empty: every
    /// snapshot of the names, and their archived logs.
    pub ids: Vec<String>,
}

/// One snapshot or archived log, copied or found already there.
#[derive(Clone, Debug)]
pub struct Copied {
    pub kind: Kind,
    pub name: String,
    pub time: String,
    /// Its id in the source.
    pub source_id: String,
    /// Its id in the target; `None` when an earlier copy already holds it.
    pub target_id: Option<String>,
    pub bytes: u64,
    /// Bytes the target did not hold before (0 when skipped).
    pub new_bytes: u64,
}

/// Copies what `sel` names from `from` into `to`, calling `each` after
/// every snapshot or log. `to` is re-indexed after each copy, so later ones
/// deduplicate against earlier ones.
pub fn copy(
    from: &Indexed,
    to: &mut Indexed,
    sel: &Selection,
    progress: &dyn Progress,
    each: &mut dyn FnMut(&Copied),
) -> Result<Vec<Copied>> {
    let mut wanted: Vec<(Kind, String, Manifest)> = Vec::new();
    let names: Vec<Option<&str>> =
        if sel.names.is_empty() { vec![None] } else { sel.names.iter().map(|n| Some(n.as_str())).collect() };
    if sel.ids.is_empty() {
        for name in &names {
            for (id, m) in from.snapshots(*name)? {
                wanted.push((Kind::Snapshot, id, m));
            }
        }
        for name in &names {
            for (id, m) in from.catalogue().list(Kind::Log, *name)? {
                wanted.push((Kind::Log, id, m));
            }
        }
    } else {
        for spec in &sel.ids {
            let name = if sel.names.len() == 1 { Some(sel.names[0].as_str()) } else { None };
            let (id, m) = from.find_snapshot(spec, name)?;
            wanted.push((Kind::Snapshot, id, m));
        }
    }
    // Snapshots oldest first, then logs oldest first.
    wanted.sort_by(|a, b| (a.0 == Kind::Log, &a.2.time).cmp(&(b.0 == Kind::Log, &b.2.time)));
    wanted.dedup_by(|a, b| a.1 == b.1);

    let mut present: HashSet<String> = HashSet::new();
    for kind in [Kind::Snapshot, Kind::Log] {
        for (id, m) in to.catalogue().list(kind, None)? {
            present.insert(m.original.unwrap_or(id));
        }
    }
    let total: u64 = wanted.iter().map(|(_, _, m)| m.stats.bytes).sum();
    progress.total(total);
    let mut done_bytes = 0u64;
    let mut out = Vec::new();
    for (kind, id, m) in wanted {
        let original = m.original.clone().unwrap_or_else(|| id.clone());
        let mut copied = Copied {
            kind,
            name: m.name.clone(),
            time: m.time.clone(),
            source_id: id,
            target_id: None,
            bytes: m.stats.bytes,
            new_bytes: 0,
        };
        if !present.contains(&original) {
            let result = copy_one(from, to, kind, &m, original.clone(), progress, done_bytes)?;
            copied.new_bytes = result.manifest.stats.new_bytes;
            copied.target_id = Some(result.snapshot_id);
            present.insert(original);
            to.refresh_index()?;
        }
        done_bytes += m.stats.bytes;
        progress.done(done_bytes);
        each(&copied);
        out.push(copied);
    }
    Ok(out)
}

fn copy_one(
    from: &Indexed,
    to: &Indexed,
    kind: Kind,
    m: &Manifest,
    original: String,
    progress: &dyn Progress,
    before: u64,
) -> Result<dedupe_store::BackupResult> {
    let tree = from.read_tree(m)?;
    let log = from.producer_log(m)?;
    let default = to.config.chunking;
    let opts = BackupOptions {
        name: m.name.clone(),
        source_description: m.source.clone(),
        force_read: true,
        compression_level: None,
        metadata: m.metadata.clone(),
        log: log.map(|l| Box::new(move || l) as Box<dyn FnOnce() -> Vec<u8> + Send>),
        kind,
        origin: Origin {
            time: Some(m.time.clone()),
            hostname: Some(m.hostname.clone()),
            username: Some(m.username.clone()),
            original: Some(original),
        },
    };
    // The source is read on a thread of its own, one bounded step ahead of the backup.
    let (tx, rx) = sync_channel::<dedupe_store::Result<Event>>(8);
    std::thread::scope(|s| {
        s.spawn(move || produce(from, tree.nodes, default, tx));
        let source = Box::new(Copying { rx });
        let shifted = Shifted { inner: progress, before };
        Ok(to.backup(source, opts, &shifted)?)
    })
}

/// Sends the events that rebuild `nodes` in the target; stops early when
/// the backup stops listening.
fn produce(from: &Indexed, nodes: Vec<Node>, default: Chunking, tx: SyncSender<dedupe_store::Result<Event>>) {
    // Errors travel to the backup through `tx`; the result here only ends the walk.
    let _ = from.read_ahead(&nodes, |ahead| {
        walk(ahead, &nodes, default, &tx);
        Ok(())
    });
}

fn walk(ahead: &mut Ahead<'_>, nodes: &[Node], default: Chunking, tx: &SyncSender<dedupe_store::Result<Event>>) {
    for (key, node) in nodes.iter().enumerate() {
        let mut node = node.clone();
        let key = key as u64;
        if node.kind != NodeKind::File {
            node.content.clear();
            let entry = Entry { node, body: dedupe_store::Body::None, chunking: default };
            if tx.send(Ok(Event::Entry(entry))).is_err() {
                return;
            }
            continue;
        }
        let size = node.size;
        // The target's node: the source's, less its content ids (the target makes its own).
        let mut open = Some(Node { content: Vec::new(), ..node.clone() });
        let mut offset = 0u64;
        let read = ahead.read_file(&node, &mut |piece| {
            match piece {
                Piece::Hole(n) => offset += n,
                Piece::Data(d) => {
                    if let Some(n) = open.take() {
                        // The chunking rule needs the file's first bytes.
                        let chunking = dedupe_ingest::pages::chunking_for(&n.path, d, default);
                        tx.send(Ok(Event::Open { key, node: n, chunking })).map_err(|_| stopped())?;
                    }
                    tx.send(Ok(Event::Piece { key, offset, data: d.to_vec().into() })).map_err(|_| stopped())?;
                    offset += d.len() as u64;
                }
            }
            Ok(())
        });
        if let Err(e) = read {
            if !matches!(&e, dedupe_store::Error::Invalid(m) if m == STOPPED) {
                let _ = tx.send(Err(e));
            }
            return;
        }
        // A file without data (empty, or holes only) is opened now.
        if let Some(n) = open.take() {
            if tx.send(Ok(Event::Open { key, node: n, chunking: default })).is_err() {
                return;
            }
        }
        if tx.send(Ok(Event::Close { key, size })).is_err() {
            return;
        }
    }
}

const STOPPED: &str = "the copy's writer stopped";

fn stopped() -> dedupe_store::Error {
    dedupe_store::Error::Invalid(STOPPED.into())
}

/// A backup source fed by `produce`.
struct Copying {
    rx: Receiver<dedupe_store::Result<Event>>,
}

impl Source for Copying {
    fn next_event(&mut self) -> dedupe_store::Result<Option<Event>> {
        match self.rx.recv() {
            Ok(Ok(e)) => Ok(Some(e)),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }
}

/// Progress of one snapshot's copy, shown as part of the whole copy.
struct Shifted<'a> {
    inner: &'a dyn Progress,
    before: u64,
}

impl Progress for Shifted<'_> {
    fn done(&self, n: u64) {
        self.inner.done(self.before + n)
    }

    fn stored(&self, n: u64) {
        self.inner.stored(n)
    }
}
