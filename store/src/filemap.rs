//! Reading a file at any offset, for `dedupe mount`: where each of its
//! chunks starts, and a bounded cache of decoded chunks that every open
//! file shares. A read that continues where the last one on the same file
//! ended fetches the next few mebibytes as one batch (`Indexed::fetch`: ranged
//! reads of neighbouring blobs, opened in parallel), which is the read-ahead
//! of a `cat` or a `cp`; other reads fetch only the chunks they touch.

use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::repo::Indexed;
use crate::restore::{Fetched, FETCH_BYTES, FETCH_RECORDS};
use crate::snapshot::{Node, HOLE};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A file's chunks with where each ends.
pub struct FileMap {
    ids: Vec<Id>,
    ends: Vec<u64>,
    /// Where the last read ended: a read starting there is sequential.
    last_end: AtomicU64,
}

impl FileMap {
    pub fn len(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn start(&self, i: usize) -> u64 {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }
}

/// Decoded chunks, least recently used dropped first beyond `limit` bytes.
pub struct ChunkCache {
    inner: Mutex<CacheInner>,
    limit: usize,
}

#[derive(Default)]
struct CacheInner {
    /// Each chunk with the tick of its last use.
    chunks: HashMap<Id, (Arc<Vec<u8>>, u64)>,
    /// Ticks of last use, oldest first: the next to drop.
    order: BTreeMap<u64, Id>,
    tick: u64,
    bytes: usize,
}

impl ChunkCache {
    pub fn new(limit: usize) -> ChunkCache {
        ChunkCache { inner: Mutex::new(CacheInner::default()), limit }
    }

    fn get(&self, id: &Id) -> Option<Arc<Vec<u8>>> {
        let mut c = self.inner.lock().expect("not poisoned");
        c.tick += 1;
        let tick = c.tick;
        let (data, used) = c.chunks.get_mut(id)?;
        let (data, old) = (data.clone(), std::mem::replace(used, tick));
        c.order.remove(&old);
        c.order.insert(tick, *id);
        Some(data)
    }

    /// Whether `id` is held, without counting as a use.
    fn holds(&self, id: &Id) -> bool {
        self.inner.lock().expect("not poisoned").chunks.contains_key(id)
    }

    fn put(&self, id: Id, data: Arc<Vec<u8>>) {
        let mut c = self.inner.lock().expect("not poisoned");
        if c.chunks.contains_key(&id) {
            return;
        }
        c.tick += 1;
        let tick = c.tick;
        c.bytes += data.len();
        c.chunks.insert(id, (data, tick));
        c.order.insert(tick, id);
        while c.bytes > self.limit {
            let Some((_, old)) = c.order.pop_first() else { break };
            if let Some((d, _)) = c.chunks.remove(&old) {
                c.bytes -= d.len();
            }
        }
    }
}

impl Indexed {
    /// The chunks of a file node, with where each ends.
    pub fn file_map(&self, node: &Node) -> Result<FileMap> {
        let (mut ids, mut ends) = (Vec::new(), Vec::new());
        let mut at = 0u64;
        for recs in self.file_records(node) {
            for (id, len) in recs? {
                at += len;
                ids.push(id);
                ends.push(at);
            }
        }
        Ok(FileMap { ids, ends, last_end: AtomicU64::new(u64::MAX) })
    }

    /// Reads `buf.len()` bytes of the file from `offset` (fewer at its end);
    /// holes read as zeros. A damaged chunk fails the read, naming its pack.
    pub fn read_at(&self, map: &FileMap, offset: u64, buf: &mut [u8], cache: &ChunkCache) -> Result<usize> {
        let want = (buf.len() as u64).min(map.len().saturating_sub(offset)) as usize;
        let sequential = map.last_end.swap(offset + want as u64, Ordering::Relaxed) == offset;
        let mut i = map.ends.partition_point(|&end| end <= offset);
        let mut done = 0;
        while done < want {
            let (start, id) = (map.start(i), map.ids[i]);
            let from = (offset + done as u64 - start) as usize;
            let n = ((map.ends[i] - start) as usize - from).min(want - done);
            if id == HOLE {
                buf[done..done + n].fill(0);
            } else {
                let data = match cache.get(&id) {
                    Some(d) => d,
                    None => self.load(map, i, sequential, cache)?,
                };
                let piece = data.get(from..from + n).ok_or_else(|| {
                    Error::corrupt(format!("chunk {}", crate::crypto::hex_id(&id)), "shorter than its file list says")
                })?;
                buf[done..done + n].copy_from_slice(piece);
            }
            done += n;
            i += 1;
        }
        Ok(done)
    }

    /// Chunk `i` of `map`, decoded and cached; a sequential read fetches
    /// the chunks after it too, up to one batch.
    fn load(&self, map: &FileMap, i: usize, sequential: bool, cache: &ChunkCache) -> Result<Arc<Vec<u8>>> {
        let mut recs = vec![(map.ids[i], map.ends[i] - map.start(i))];
        if sequential {
            let mut bytes = recs[0].1;
            let mut j = i + 1;
            while j < map.ids.len() && recs.len() < FETCH_RECORDS && bytes < FETCH_BYTES {
                let len = map.ends[j] - map.start(j);
                if map.ids[j] != HOLE && !cache.holds(&map.ids[j]) {
                    recs.push((map.ids[j], len));
                    bytes += len;
                }
                j += 1;
            }
        }
        let mut first = None;
        for ((id, _), f) in recs.iter().zip(self.fetch(&recs)?) {
            if let Fetched::Data(d) = f {
                let d = Arc::new(d);
                cache.put(*id, d.clone());
                first.get_or_insert(d);
            }
        }
        first.ok_or_else(|| Error::UnknownChunk(crate::crypto::hex_id(&map.ids[i])))
    }
}
