//! Reading a file's content back: chunks are fetched, authenticated and
//! decompressed in parallel one batch ahead of the writer, and handed to a
//! sink in order. Holes are handed over as holes, so a directory sink can
//! leave them unallocated and a stream sink can write zeros.

use crate::crypto::{hex_id, Id};
use crate::error::{Error, Result};
use crate::repo::Indexed;
use crate::snapshot::{Node, HOLE};
use rayon::prelude::*;

/// A piece of a file's content, in order.
pub enum Piece<'a> {
    Data(&'a [u8]),
    Hole(u64),
}

enum Fetched {
    Data(Vec<u8>),
    Hole(u64),
}

/// Chunks fetched at once; with ~1 MiB chunks this keeps ~2 x 16 MiB in memory.
const FETCH_BATCH: usize = 16;

pub type Sink<'s> = dyn FnMut(Piece<'_>) -> Result<()> + Send + 's;

impl Indexed {
    /// Calls `sink` with the node's content, in order.
    pub fn read_file(&self, node: &Node, sink: &mut Sink<'_>) -> Result<()> {
        let mut lists = self.file_records(node);
        let mut queue: Vec<(Id, u64)> = Vec::new();
        let mut ready: Option<Vec<Fetched>> = None;
        loop {
            while queue.len() < FETCH_BATCH {
                match lists.next() {
                    Some(recs) => queue.extend(recs?),
                    None => break,
                }
            }
            let next: Vec<(Id, u64)> = queue.drain(..queue.len().min(FETCH_BATCH)).collect();
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

    fn fetch(&self, recs: &[(Id, u64)]) -> Result<Vec<Fetched>> {
        recs.par_iter()
            .map(|(id, len)| {
                if *id == HOLE {
                    return Ok(Fetched::Hole(*len));
                }
                let data = self.read_chunk(id)?;
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
}
