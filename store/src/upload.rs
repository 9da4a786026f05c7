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

use crate::backend::Backend;
use crate::crypto::{Id, Keys};
use crate::error::{Error, Result};
use crate::index::seal_index_object;
use crate::pack::{pack_name, FinishedPack, PackEntry};
use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the packs being filled and uploaded may take together: with more
/// connections, packs get smaller (`pack_size`), so `--connections` never
/// breaks the memory budget.
const PACK_MEMORY: usize = 128 << 20;

/// The pack size for this many uploads in flight: room for them plus the
/// pack being filled and one spare buffer.
pub(crate) fn pack_size(connections: usize) -> usize {
    (PACK_MEMORY / (connections + 2)).clamp(8 << 20, crate::pack::TARGET_PACK_SIZE)
}

/// Packs named by one index object at most (about 1 GiB of packs).
const PACKS_PER_INDEX: usize = 32;
/// The longest uploaded packs wait for an index object naming them.
const INDEX_EVERY: Duration = Duration::from_secs(15);

pub(crate) struct Uploads {
    uploaders: Vec<JoinHandle<Result<()>>>,
    indexer: JoinHandle<Result<()>>,
}

/// Where finished packs go, and where their buffers come back once uploaded.
pub(crate) struct PackSink {
    pub(crate) packs: Sender<FinishedPack>,
    pub(crate) spare: Receiver<Vec<u8>>,
    /// How big to make each pack (`pack_size`).
    pub(crate) pack_size: usize,
}

impl Uploads {
    pub(crate) fn start(backend: Arc<dyn Backend>, keys: Keys) -> Result<(Uploads, PackSink)> {
        let (pack_tx, pack_rx) = bounded::<FinishedPack>(0);
        let (spare_tx, spare_rx) = bounded::<Vec<u8>>(1);
        let (done_tx, done_rx) = unbounded::<(Id, Vec<PackEntry>)>();
        let mut uploaders = Vec::new();
        for i in 0..backend.connections() {
            let (backend, packs, done, spare) = (backend.clone(), pack_rx.clone(), done_tx.clone(), spare_tx.clone());
            let t = std::thread::Builder::new()
                .name(format!("dedupe-upload-{i}"))
                .spawn(move || upload(&*backend, packs, done, spare))
                .map_err(|e| Error::io("starting an upload thread", e))?;
            uploaders.push(t);
        }
        drop(done_tx);
        let indexer = std::thread::Builder::new()
            .name("dedupe-index".into())
            .spawn(move || write_index(&*backend, &keys, done_rx))
            .map_err(|e| Error::io("starting the index thread", e))?;
        let pack_size = pack_size(uploaders.len());
        Ok((Uploads { uploaders, indexer }, PackSink { packs: pack_tx, spare: spare_rx, pack_size }))
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
        first.and(indexed)
    }
}

fn upload(
    backend: &dyn Backend,
    packs: Receiver<FinishedPack>,
    done: Sender<(Id, Vec<PackEntry>)>,
    spare: Sender<Vec<u8>>,
) -> Result<()> {
    for pack in packs {
        let bytes = bytes::Bytes::from(pack.bytes);
        backend.put(&pack_name(&pack.id), bytes.clone())?;
        let _ = done.send((pack.id, pack.entries));
        if let Ok(buf) = bytes.try_into_mut() {
            let _ = spare.try_send(buf.into());
        }
    }
    Ok(())
}

fn write_index(backend: &dyn Backend, keys: &Keys, done: Receiver<(Id, Vec<PackEntry>)>) -> Result<()> {
    let mut batch: Vec<(Id, Vec<PackEntry>)> = Vec::new();
    let mut since = Instant::now();
    let write = |batch: &mut Vec<(Id, Vec<PackEntry>)>| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        backend.flush()?;
        let (name, sealed) = seal_index_object(keys, batch);
        backend.put(&name, sealed.into())?;
        batch.clear();
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
