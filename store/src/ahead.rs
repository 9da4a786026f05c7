//! Reading many files in a row, fetched ahead across file boundaries.
//!
//! `read_file` fetches one file at a time, so every file costs at least two
//! round trips (its list chunks, then its data) before the next one starts:
//! nothing on a local disk, but on object storage 20 ms a request times
//! hundreds of files in a database backup is most of a restore. Here a
//! thread walks the files ahead of the writer: the list chunks of up to
//! `WINDOW` files are read at once, and the data of consecutive files
//! shares batches (so small files share ranged reads and round trips).
//! Several batches are fetched at once by threads of their own and handed
//! on in order; memory stays bounded by the number of those threads.
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
/// Batches fetched at once: one per connection, 2 to 8 (each batch is up
/// to `FETCH_BYTES`, sealed and then opened). On a local disk 2 keep both
/// cores busy (more only cost memory); on a remote store (8 by default)
/// they and the ranged reads within each batch cover the latency.
fn fetchers(repo: &Indexed) -> usize {
    repo.backend().connections().clamp(2, 8)
}

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
    /// Each batch's answer, in order (`produce`).
    rx: Receiver<Receiver<Result<Vec<Item>>>>,
}

impl Indexed {
    /// Runs `f` with an `Ahead` that serves the content of the files among
    /// `nodes`, in their order, fetched ahead by a thread of its own.
    pub fn read_ahead<T>(&self, nodes: &[Node], f: impl FnOnce(&mut Ahead<'_>) -> Result<T>) -> Result<T> {
        let files: Vec<&Node> = nodes.iter().filter(|n| n.kind == NodeKind::File).collect();
        let (tx, rx) = sync_channel(fetchers(self));
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
                None => match self.rx.recv().map(|answer| answer.recv()) {
                    Ok(Ok(batch)) => {
                        self.items.extend(batch?);
                        continue;
                    }
                    _ => return Err(Error::Invalid("the read-ahead stopped early".into())),
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

/// A batch to fetch: its records and, for each, the file it belongs to
/// (`true` marks a file's end instead of a record).
struct Planned {
    recs: Vec<(Id, u64)>,
    owners: Vec<(usize, bool)>,
    /// What stopped the planning here (a damaged list chunk), reported in its place.
    error: Option<Error>,
}

/// Plans batches on this thread and fetches them on `fetchers` threads,
/// so several batches' round trips overlap. Each batch gets a channel of
/// its own for its answer, and those channels go to the reader in order
/// through `order`, which holds `fetchers` of them: so at most that many
/// batches are planned ahead of the reader, fetched or not, and memory is
/// bounded however slow one batch is (a request being retried).
fn produce(repo: &Indexed, files: &[&Node], order: SyncSender<Receiver<Result<Vec<Item>>>>) {
    let (work_tx, work_rx) = crossbeam_channel::bounded::<(Planned, SyncSender<Result<Vec<Item>>>)>(0);
    std::thread::scope(|s| {
        for _ in 0..fetchers(repo) {
            let work_rx = work_rx.clone();
            s.spawn(move || {
                for (p, answer) in work_rx {
                    // A reader that stopped early drops the answer's receiver.
                    let _ = answer.send(fetch_batch(repo, p));
                }
            });
        }
        drop(work_rx);
        plan(repo, files, |p| {
            let (answer_tx, answer_rx) = sync_channel(1);
            order.send(answer_rx).is_ok() && work_tx.send((p, answer_tx)).is_ok()
        });
        // No more work: the fetchers finish, and with them the scope.
        drop(work_tx);
    });
}

fn fetch_batch(repo: &Indexed, p: Planned) -> Result<Vec<Item>> {
    if let Some(e) = p.error {
        return Err(e);
    }
    let mut data = repo.fetch(&p.recs)?.into_iter();
    Ok(p.owners
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
        .collect())
}

/// Cuts the files' records into batches and hands each to `submit`; stops
/// when it returns false (the reader is gone). The list chunks of the next
/// window are read while this window's batches are handed on, so the
/// fetchers never wait for a window's lists.
fn plan(repo: &Indexed, files: &[&Node], submit: impl Fn(Planned) -> bool) {
    let empty = || Planned { recs: Vec::new(), owners: Vec::new(), error: None };
    let mut p = empty();
    let mut bytes = 0u64;
    let send = |p: &mut Planned| -> bool { submit(std::mem::replace(p, empty())) };
    let windows: Vec<&[&Node]> = files.chunks(WINDOW).collect();
    std::thread::scope(|s| {
        let mut next = windows.first().map(|w| s.spawn(|| read_lists(repo, w)));
        for (w, _) in windows.iter().enumerate() {
            let lists = next.take().expect("a window ahead").join().expect("list reader");
            next = windows.get(w + 1).map(|window| s.spawn(|| read_lists(repo, window)));
            let lists = match lists {
                Ok(l) => l,
                Err(e) => {
                    // Reported in its place: after the batches planned before it.
                    if !p.owners.is_empty() && !send(&mut p) {
                        return;
                    }
                    p.error = Some(e);
                    let _ = send(&mut p);
                    return;
                }
            };
            for (k, file_recs) in lists.into_iter().enumerate() {
                let file = w * WINDOW + k;
                for rec in file_recs {
                    bytes += rec.1;
                    p.recs.push(rec);
                    p.owners.push((file, false));
                    if p.recs.len() >= FETCH_RECORDS || bytes >= FETCH_BYTES {
                        bytes = 0;
                        if !send(&mut p) {
                            return;
                        }
                    }
                }
                p.owners.push((file, true));
            }
        }
        if !p.owners.is_empty() {
            send(&mut p);
        }
    });
}

/// The records of each file of `window`, its list chunks read together (`Indexed::read_chunks`).
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
