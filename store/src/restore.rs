//! Reading a file's content back: chunks are fetched, authenticated and
//! decompressed in parallel one batch ahead of the writer, and handed to a
//! sink in order. Holes are handed over as holes, so a directory sink can
//! leave them unallocated and a stream sink can write zeros.

use crate::blob::{self, Opened};
use crate::crypto::{hex_id, Id};
use crate::error::{Error, Result};
use crate::index::Location;
use crate::pack::pack_name;
use crate::repo::Indexed;
use crate::snapshot::{Node, HOLE};
use rayon::prelude::*;
use std::collections::HashMap;

/// A piece of a file's content, in order.
pub enum Piece<'a> {
    Data(&'a [u8]),
    Hole(u64),
}

pub(crate) enum Fetched {
    Data(Vec<u8>),
    Hole(u64),
}

/// A batch closes at this many records or this many bytes: big enough to
/// keep both cores busy, small enough that two batches stay in memory.
pub(crate) const FETCH_RECORDS: usize = 1024;
pub(crate) const FETCH_BYTES: u64 = 8 << 20;
/// Neighbouring blobs of one pack are read with one ranged get up to this size.
const COALESCE: u64 = 8 << 20;
/// Blobs this close after a run of the same pack join it (see `fetch`).
const GAP: u64 = 256 << 10;

pub type Sink<'s> = dyn FnMut(Piece<'_>) -> Result<()> + Send + 's;

impl Indexed {
    /// Calls `sink` with the node's content, in order.
    pub fn read_file(&self, node: &Node, sink: &mut Sink<'_>) -> Result<()> {
        let mut lists = self.file_records(node);
        let mut queue: Vec<(Id, u64)> = Vec::new();
        let mut ready: Option<Vec<Fetched>> = None;
        loop {
            while queue.len() < FETCH_RECORDS {
                match lists.next() {
                    Some(recs) => queue.extend(recs?),
                    None => break,
                }
            }
            let mut take = 0;
            let mut bytes = 0;
            while take < queue.len() && take < FETCH_RECORDS && bytes < FETCH_BYTES {
                bytes += queue[take].1;
                take += 1;
            }
            let next: Vec<(Id, u64)> = queue.drain(..take).collect();
            let to_write = ready.take();
            let (fetched, written) = rayon::join(
                || self.fetch(&next),
                || -> Result<()> {
                    for f in to_write.into_iter().flatten() {
                        match f {
                            Fetched::Data(d) => sink(Piece::Data(&d))?,
                            Fetched::Hole(n) => sink(Piece::Hole(n))?,
                        }
                    }
                    Ok(())
                },
            );
            written?;
            if next.is_empty() {
                return Ok(());
            }
            ready = Some(fetched?);
        }
    }

    /// Reads a batch of records: blobs that sit next to each other in a
    /// pack are read with one ranged get (`read_runs`); then every blob is
    /// opened in parallel, and the deltas among them through their bases,
    /// read together afterwards (`resolve_deltas`).
    pub(crate) fn fetch(&self, recs: &[(Id, u64)]) -> Result<Vec<Fetched>> {
        let (placed, buffers) = self.read_runs(recs.iter().map(|(id, _)| id))?;
        let ids: Vec<&Id> = recs.iter().map(|(id, _)| id).collect();
        let opened = self.open_placed(&ids, &placed, buffers)?;
        let plain = self.resolve_deltas(&ids, opened)?;
        recs.iter()
            .zip(plain)
            .map(|((id, len), data)| {
                let Some(data) = data else { return Ok(Fetched::Hole(*len)) };
                if data.len() as u64 != *len {
                    return Err(Error::corrupt(
                        format!("chunk {}", hex_id(id)),
                        format!("{} bytes where the file list says {len}", data.len()),
                    ));
                }
                Ok(Fetched::Data(data))
            })
            .collect()
    }

    /// Several chunks (the list chunks of many small files, say), read as
    /// `fetch` reads a batch, then opened in parallel.
    pub(crate) fn read_chunks(&self, ids: &[Id]) -> Result<Vec<Vec<u8>>> {
        let (placed, buffers) = self.read_runs(ids.iter())?;
        if let Some(i) = placed.iter().position(Option::is_none) {
            return Err(Error::UnknownChunk(hex_id(&ids[i])));
        }
        let ids: Vec<&Id> = ids.iter().collect();
        let opened = self.open_placed(&ids, &placed, buffers)?;
        let plain = self.resolve_deltas(&ids, opened)?;
        Ok(plain.into_iter().map(|p| p.expect("every id was located")).collect())
    }

    /// The plaintexts of opened blobs: deltas are applied to their bases,
    /// which are read together, each once, as a batch of their own. A base
    /// is always stored whole; one that is a delta is damage.
    pub(crate) fn resolve_deltas(
        &self,
        ids: &[&Id],
        opened: Vec<Option<(Opened, Location)>>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let mut bases: Vec<Id> = opened
            .iter()
            .filter_map(|o| match o {
                Some((Opened::Delta { base, .. }, _)) => Some(*base),
                _ => None,
            })
            .collect();
        if bases.is_empty() {
            return Ok(opened
                .into_iter()
                .map(|o| match o {
                    Some((Opened::Plain(p), _)) => Some(p),
                    _ => None,
                })
                .collect());
        }
        // Each once, in the order of the deltas: the bases of neighbouring
        // pages sit side by side in their packs and are read in runs.
        let mut seen = std::collections::HashSet::new();
        bases.retain(|b| seen.insert(*b));
        let (placed, buffers) = self.read_runs(bases.iter())?;
        if let Some(i) = placed.iter().position(Option::is_none) {
            return Err(Error::UnknownChunk(hex_id(&bases[i])));
        }
        let base_refs: Vec<&Id> = bases.iter().collect();
        let base_plain: Vec<Vec<u8>> = self
            .open_placed(&base_refs, &placed, buffers)?
            .into_iter()
            .zip(&bases)
            .map(|(o, base)| match o.expect("every base was placed") {
                (Opened::Plain(p), _) => Ok(p),
                (Opened::Delta { .. }, loc) => Err(Error::corrupt(
                    pack_name(&loc.pack),
                    format!("chunk {} is a delta's base yet is a delta itself", hex_id(base)),
                )),
            })
            .collect::<Result<_>>()?;
        let of: HashMap<&Id, &[u8]> = bases.iter().zip(base_plain.iter().map(|p| &p[..])).collect();
        ids.par_iter()
            .zip(opened.into_par_iter())
            .map(|(id, o)| match o {
                None => Ok(None),
                Some((Opened::Plain(p), _)) => Ok(Some(p)),
                Some((Opened::Delta { base, frame }, loc)) => {
                    let raw_len = loc.raw_len as usize;
                    blob::apply_delta(&frame, of[&base], raw_len).map(Some).map_err(|e| {
                        let why = match e {
                            blob::OpenError::Framing(s) => s,
                            blob::OpenError::Tag => "fails authentication".to_string(),
                        };
                        Error::corrupt(
                            pack_name(&loc.pack),
                            format!("chunk {} (a delta on chunk {}) {why}", hex_id(id), hex_id(&base)),
                        )
                    })
                }
            })
            .collect()
    }

    /// Opens the blobs `read_runs` placed, in parallel, each decrypted where
    /// it lies in its run's buffer (copying them out first cost a restore a
    /// twentieth of its time). A blob placed twice in one batch (a chunk
    /// repeated in it) is opened once and the result cloned.
    #[allow(clippy::type_complexity)]
    fn open_placed(
        &self,
        ids: &[&Id],
        placed: &[Option<(usize, usize, Location)>],
        buffers: Vec<bytes::Bytes>,
    ) -> Result<Vec<Option<(Opened, Location)>>> {
        let mut buffers: Vec<Vec<u8>> = buffers.into_iter().map(Vec::from).collect();
        // In buffer order, each buffer splits into disjoint slices, one a blob.
        let mut order: Vec<usize> = (0..placed.len()).filter(|&i| placed[i].is_some()).collect();
        order.sort_by_key(|&i| placed[i].map(|(run, at, _)| (run, at)));
        let mut repeat_of: Vec<Option<usize>> = vec![None; placed.len()];
        let mut rests: Vec<(usize, &mut [u8])> = buffers.iter_mut().map(|b| (0, &mut b[..])).collect();
        let mut blobs: Vec<(usize, &mut [u8])> = Vec::with_capacity(order.len());
        let mut prev: Option<usize> = None;
        for &i in &order {
            let (run, at, loc) = placed[i].expect("only placed blobs");
            if let Some(p) =
                prev.filter(|&p| placed[p].map(|(r, a, l)| (r, a, l.length)) == Some((run, at, loc.length)))
            {
                repeat_of[i] = Some(p);
                continue;
            }
            let (offset, rest) = &mut rests[run];
            if at < *offset {
                return Err(Error::corrupt(
                    pack_name(&loc.pack),
                    format!(
                        "holds chunk {} where the index places another blob too (run `dedupe repair index`)",
                        hex_id(ids[i])
                    ),
                ));
            }
            let tail = std::mem::take(rest);
            let tail = tail.split_at_mut((at - *offset).min(tail.len())).1;
            // A store that answered short leaves the blob short: its open
            // reports it as damage to that chunk.
            let (blob, tail) = tail.split_at_mut((loc.length as usize).min(tail.len()));
            (*offset, *rest) = (at + blob.len(), tail);
            blobs.push((i, blob));
            prev = Some(i);
        }
        let opened: Vec<(usize, Result<Opened>)> = blobs
            .into_par_iter()
            .map(|(i, blob)| {
                let (_, _, loc) = placed[i].expect("only placed blobs");
                (i, self.open_blob_located(ids[i], &loc, blob))
            })
            .collect();
        let mut results: Vec<Option<Result<Opened>>> = (0..placed.len()).map(|_| None).collect();
        for (i, r) in opened {
            results[i] = Some(r);
        }
        let mut out: Vec<Option<(Opened, Location)>> = Vec::with_capacity(placed.len());
        for (i, p) in placed.iter().enumerate() {
            let Some((_, _, loc)) = *p else {
                out.push(None);
                continue;
            };
            // A repeat comes after its first in `placed` (the sort is stable).
            let o = match repeat_of[i] {
                Some(first) => out[first].as_ref().expect("opened before its repeat").0.clone(),
                None => results[i].take().expect("every blob opened")?,
            };
            out.push(Some((o, loc)));
        }
        Ok(out)
    }

    /// Reads the sealed blobs of `ids` in runs of nearby blobs, each one
    /// range of one pack: a blob within `GAP` after a run of the same pack
    /// joins it (the bytes between are read and dropped: a changed page's
    /// old version between two unchanged ones costs less than a request),
    /// as does a blob inside it (a repeated chunk); runs end at `COALESCE`
    /// bytes. Several batches are fetched at once (`ahead`), which keeps the
    /// connections busy; fewer, longer requests are what a remote store
    /// answers fastest. Returns, for each id (`None` for a hole), its run,
    /// its offset in that run's buffer and its location; and the buffers.
    #[allow(clippy::type_complexity)]
    fn read_runs<'i>(
        &self,
        ids: impl Iterator<Item = &'i Id>,
    ) -> Result<(Vec<Option<(usize, usize, Location)>>, Vec<bytes::Bytes>)> {
        let located: Vec<Option<Location>> =
            ids.map(|id| if *id == HOLE { Ok(None) } else { self.locate(id).map(Some) }).collect::<Result<_>>()?;
        self.read_located(&located)
    }

    /// `read_runs` of blobs already located (`None`: nothing to read).
    #[allow(clippy::type_complexity)]
    pub(crate) fn read_located(
        &self,
        located: &[Option<Location>],
    ) -> Result<(Vec<Option<(usize, usize, Location)>>, Vec<bytes::Bytes>)> {
        let mut runs: Vec<Location> = Vec::new();
        let mut open: HashMap<Id, usize> = HashMap::new();
        let mut skip_budget = FETCH_BYTES;
        let mut placed: Vec<Option<(usize, Location)>> = Vec::new();
        for l in located {
            let Some(l) = *l else {
                placed.push(None);
                continue;
            };
            if let Some(&r) = open.get(&l.pack) {
                let run = &mut runs[r];
                let (start, end) = (run.offset as u64, run.offset as u64 + run.length as u64);
                let (l_start, l_end) = (l.offset as u64, l.offset as u64 + l.length as u64);
                if l_start >= start && l_end <= end {
                    placed.push(Some((r, l)));
                    continue;
                }
                // The bytes skipped over count against a budget of one batch
                // size, so a batch never reads much more than it holds.
                let gap = l_start.saturating_sub(end);
                if l_start >= end && gap <= GAP && gap <= skip_budget && l_end - start <= COALESCE {
                    skip_budget -= gap;
                    run.length = (l_end - start) as u32;
                    placed.push(Some((r, l)));
                    continue;
                }
            }
            runs.push(l);
            open.insert(l.pack, runs.len() - 1);
            placed.push(Some((runs.len() - 1, l)));
        }
        let wanted: Vec<(String, std::ops::Range<u64>)> = runs
            .iter()
            .map(|run| (pack_name(&run.pack), run.offset as u64..run.offset as u64 + run.length as u64))
            .collect();
        let buffers = self.backend.get_ranges(&wanted)?;
        let placed =
            placed.into_iter().map(|p| p.map(|(run, l)| (run, (l.offset - runs[run].offset) as usize, l))).collect();
        Ok((placed, buffers))
    }
}

/// A blob's bytes within its run's buffer; empty when a store answered the
/// range short, which then fails authentication as damage to that chunk.
pub(crate) fn sealed_in<'b>(buffer: &'b [u8], at: usize, loc: &Location) -> &'b [u8] {
    buffer.get(at..at + loc.length as usize).unwrap_or(&[])
}
