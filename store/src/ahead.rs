//! Reading many files in a row, fetched ahead across file boundaries.
//!
//! `read_file` fetches one file at a time, so every file costs at least two
//! round trips (its list chunks, then its data) before the next one starts:
//! nothing on a local disk, but on object storage 20 ms a request times
//! hundreds of files in a database backup is most of a restore. Here a
//! thread walks the files ahead of the writer: the list chunks of up to
//! `WINDOW` files are read at once, and the data of consecutive files
//! shares batches (so small files share ranged reads and round trips).
//! Batches wait in a small channel, bounding memory to a few batches.
//!
//! The writer asks for files in the order it was given (skipping some is
//! allowed); a file that is not ahead is read directly.

use crate::crypto::{parse_id, Id};
use crate::error::{Error, Result};
use crate::repo::Indexed;
use crate::restore::{Fetched, Piece, Sink, FETCH_BYTES, FETCH_RECORDS};
use crate::snapshot::{decode_records, Node, NodeKind};
use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Files whose list chunks are read together, at most.
const WINDOW: usize = 64;
/// Batches fetched ahead of the writer.
const AHEAD: usize = 2;

enum Item {
    Data(usize, Vec<u8>),
    Hole(usize, u64),
    End(usize),
}

/// Serves the files of `Indexed::read_ahead` in order.
pub struct Ahead<'a> {
    repo: &'a Indexed,
    paths: Vec<&'a str>,
    /// Index (into `paths`) of the next file to serve.
    pos: usize,
    items: VecDeque<Item>,
    rx: Receiver<Result<Vec<Item>>>,
}

impl Indexed {
    /// Runs `f` with an `Ahead` that serves the content of the files among
    /// `nodes`, in their order, fetched ahead by a thread of its own.
    pub fn read_ahead<T>(&self, nodes: &[Node], f: impl FnOnce(&mut Ahead<'_>) -> Result<T>) -> Result<T> {
        let files: Vec<&Node> = nodes.iter().filter(|n| n.kind == NodeKind::File).collect();
        let (tx, rx) = sync_channel(AHEAD);
        std::thread::scope(|s| {
            let producer_files = files.clone();
            s.spawn(move || produce(self, &producer_files, tx));
            let mut ahead = Ahead {
                repo: self,
                paths: files.iter().map(|n| n.path.as_str()).collect(),
                pos: 0,
                items: VecDeque::new(),
                rx,
            };
            f(&mut ahead)
            // Dropping `ahead` closes the channel: the producer stops at its next batch.
        })
    }
}

impl Ahead<'_> {
    /// Calls `sink` with the node's content, in order (as `Indexed::read_file`).
    pub fn read_file(&mut self, node: &Node, sink: &mut Sink<'_>) -> Result<()> {
        let Some(offset) = self.paths[self.pos..].iter().position(|p| *p == node.path) else {
            return self.repo.read_file(node, sink);
        };
        let want = self.pos + offset;
        loop {
            let item = match self.items.pop_front() {
                Some(i) => i,
                None => match self.rx.recv() {
                    Ok(batch) => {
                        self.items.extend(batch?);
                        continue;
                    }
                    Err(_) => return Err(Error::Invalid("the read-ahead stopped early".into())),
                },
            };
            match item {
                Item::Data(i, d) if i == want => sink(Piece::Data(&d))?,
                Item::Hole(i, n) if i == want => sink(Piece::Hole(n))?,
                Item::End(i) if i == want => {
                    self.pos = want + 1;
                    return Ok(());
                }
                // A file the writer skipped.
                _ => {}
            }
        }
    }
}

fn produce(repo: &Indexed, files: &[&Node], tx: SyncSender<Result<Vec<Item>>>) {
    let mut recs: Vec<(Id, u64)> = Vec::new();
    // For each record, the file it belongs to; `true` marks a file's end instead.
    let mut owners: Vec<(usize, bool)> = Vec::new();
    let mut bytes = 0u64;
    let send = |recs: &mut Vec<(Id, u64)>, owners: &mut Vec<(usize, bool)>| -> bool {
        let fetched = repo.fetch(recs);
        let batch = fetched.map(|data| {
            let mut data = data.into_iter();
            owners
                .iter()
                .map(|&(file, end)| {
                    if end {
                        return Item::End(file);
                    }
                    match data.next().expect("one fetched per record") {
                        Fetched::Data(d) => Item::Data(file, d),
                        Fetched::Hole(n) => Item::Hole(file, n),
                    }
                })
                .collect()
        });
        recs.clear();
        owners.clear();
        let failed = batch.is_err();
        tx.send(batch).is_ok() && !failed
    };
    for (w, window) in files.chunks(WINDOW).enumerate() {
        let lists = match read_lists(repo, window) {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        for (k, file_recs) in lists.into_iter().enumerate() {
            let file = w * WINDOW + k;
            for rec in file_recs {
                bytes += rec.1;
                recs.push(rec);
                owners.push((file, false));
                if recs.len() >= FETCH_RECORDS || bytes >= FETCH_BYTES {
                    bytes = 0;
                    if !send(&mut recs, &mut owners) {
                        return;
                    }
                }
            }
            owners.push((file, true));
        }
    }
    if !owners.is_empty() {
        send(&mut recs, &mut owners);
    }
}

/// The records of each file of `window`, its list chunks read concurrently.
fn read_lists(repo: &Indexed, window: &[&Node]) -> Result<Vec<Vec<(Id, u64)>>> {
    let mut ids = Vec::new();
    for node in window {
        for h in &node.content {
            ids.push(
                parse_id(h).ok_or_else(|| Error::corrupt(format!("node {}", node.path), "content id is not hex"))?,
            );
        }
    }
    let mut chunks = repo.read_chunks(&ids)?.into_iter();
    window
        .iter()
        .map(|node| {
            let mut recs = Vec::new();
            for h in &node.content {
                let bytes = chunks.next().expect("one chunk per id");
                recs.extend(
                    decode_records(&bytes)
                        .ok_or_else(|| Error::corrupt(format!("list chunk {h}"), "not whole records"))?,
                );
            }
            Ok(recs)
        })
        .collect()
}
