//! Choosing the base a changed page is stored against (format-spec §7.5).
//!
//! A block of a page-aligned file (`Chunking::Fixed`) that is new to the
//! repository is compared with the block at the same offset of the same
//! path in the parent snapshot (the newest of the same name): most pages of
//! a database change by a few rows between two backups, and zstd with the
//! old page as its dictionary stores only what changed (`blob.rs`).
//!
//! Bases are always stored whole, so a delta is read with one more blob,
//! never a chain: when the parent's block is itself a delta, the new block
//! is compared with that delta's base instead (the version from the last
//! full copy), and `blob::seal_chunk_against` stores it whole once the
//! difference is no longer much smaller than the page (which makes it the
//! base of the next generation).
//!
//! The bases of a unit of work are read together, with restore's ranged
//! reads (neighbouring pages of the parent sit next to each other in its
//! packs); a base that cannot be read (damaged, in a pack marked for
//! deletion) only means the block is stored whole. The base's index record
//! is counted among the backup's hits, so the guard protects it from a
//! concurrent prune as it protects a deduplicated chunk.

use crate::bits::Bits;
use crate::blob::{self, Opened};
use crate::crypto::{parse_id, Id};
use crate::index::Location;
use crate::repo::Indexed;
use crate::restore::sealed_in;
use crate::snapshot::{decode_records, Node, NodeKind, HOLE};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

/// Files whose first list chunks are read at once, ahead of the reader.
const WINDOW: usize = 64;

/// The parent snapshot's tree, in its order (the order its source gave
/// the files, which the next backup of the same producer gives again).
/// The first list chunk of each file is read a window of files at a time:
/// one request per file was a round trip per table, a minute a backup of
/// a thousand relation files on object storage.
pub(crate) struct Parent {
    nodes: Vec<Node>,
    at: HashMap<String, usize>,
    /// First list chunks read ahead, by node number.
    ahead: RefCell<HashMap<usize, Vec<(Id, u64)>>>,
}

impl Parent {
    pub(crate) fn new(nodes: Vec<Node>) -> Parent {
        let at = nodes.iter().enumerate().map(|(i, n)| (n.path.clone(), i)).collect();
        Parent { nodes, at, ahead: RefCell::default() }
    }

    pub(crate) fn get(&self, path: &str) -> Option<&Node> {
        self.at.get(path).map(|&i| &self.nodes[i])
    }

    /// The blocks of the parent's version of `path`, if it has one with content.
    pub(crate) fn blocks(&self, repo: &Indexed, path: &str) -> Option<ParentBlocks> {
        let i = *self.at.get(path)?;
        let node = &self.nodes[i];
        if node.kind != NodeKind::File || node.content.is_empty() {
            return None;
        }
        let mut lists = node.content.iter().map(|h| parse_id(h)).collect::<Option<VecDeque<Id>>>()?;
        let mut ahead = self.ahead.borrow_mut();
        if !ahead.contains_key(&i) {
            // A window from here on; what is left of the last one is dropped.
            ahead.clear();
            let window: Vec<(usize, Id)> = (i..self.nodes.len())
                .filter_map(|j| {
                    let n = &self.nodes[j];
                    let first = n.content.first().filter(|_| n.kind == NodeKind::File)?;
                    Some((j, parse_id(first)?))
                })
                .take(WINDOW)
                .collect();
            let ids: Vec<Id> = window.iter().map(|(_, id)| *id).collect();
            // Unreadable lists (damage) only mean no bases for those files.
            if let Ok(chunks) = repo.read_chunks(&ids) {
                for ((j, _), bytes) in window.iter().zip(chunks) {
                    if let Some(records) = decode_records(&bytes) {
                        ahead.insert(*j, records);
                    }
                }
            }
        }
        let records = ahead.remove(&i)?;
        lists.pop_front();
        Some(ParentBlocks { lists, records: records.into(), at: 0 })
    }
}

impl Parent {
    /// The blocks of `path`, which must be a file of this snapshot, for a
    /// file derived from it (`derive.rs`): a list that cannot be read is an
    /// error when walked, not a file without bases.
    pub(crate) fn records_of(&self, repo: &Indexed, path: &str) -> crate::Result<ParentBlocks> {
        if let Some(b) = self.blocks(repo, path) {
            return Ok(b);
        }
        let node = self.get(path).ok_or_else(|| crate::Error::Invalid(format!("{path} is not in the base")))?;
        let lists = node
            .content
            .iter()
            .map(|h| parse_id(h))
            .collect::<Option<VecDeque<Id>>>()
            .ok_or_else(|| crate::Error::corrupt(format!("node {path}"), "content id is not hex"))?;
        Ok(ParentBlocks { lists, records: VecDeque::new(), at: 0 })
    }
}

/// The parent snapshot's blocks of one file, walked forward by offset.
pub(crate) struct ParentBlocks {
    lists: VecDeque<Id>,
    records: VecDeque<(Id, u64)>,
    /// The offset of `records.front()`.
    at: u64,
}

impl ParentBlocks {
    /// The parent's block of `len` bytes that starts at `offset`, if it has
    /// exactly that one there. Offsets must not go back.
    pub(crate) fn at(&mut self, repo: &Indexed, offset: u64, len: u64) -> Option<Id> {
        loop {
            if self.records.is_empty() {
                // A list chunk that cannot be read ends the walk: no bases.
                let list = self.lists.pop_front()?;
                let records = repo.read_chunk(&list).ok().and_then(|b| decode_records(&b));
                let Some(records) = records else {
                    self.lists.clear();
                    return None;
                };
                self.records = records.into();
                continue;
            }
            let &(id, n) = self.records.front().expect("not empty");
            if self.at + n <= offset {
                self.at += n;
                self.records.pop_front();
                continue;
            }
            return (self.at == offset && n == len && id != HOLE).then_some(id);
        }
    }

    /// Every record (id or hole, its offset, its length) that meets
    /// `[start, end)`; offsets must not go back. A list chunk that cannot
    /// be read is an error here: a derived file needs the base's bytes.
    pub(crate) fn covering(&mut self, repo: &Indexed, start: u64, end: u64) -> crate::Result<Vec<(Id, u64, u64)>> {
        let mut out = Vec::new();
        let (mut i, mut at) = (0, self.at);
        loop {
            if i == self.records.len() {
                let Some(list) = self.lists.pop_front() else { return Ok(out) };
                let bytes = repo.read_chunk(&list)?;
                let records = decode_records(&bytes).ok_or_else(|| {
                    crate::Error::corrupt(format!("list chunk {}", crate::crypto::hex_id(&list)), "not whole records")
                })?;
                self.records.extend(records);
                continue;
            }
            let (id, n) = self.records[i];
            if at + n <= start && i == 0 {
                // Wholly before this and every later call's range.
                self.records.pop_front();
                self.at += n;
                at = self.at;
                continue;
            }
            if at >= end {
                return Ok(out);
            }
            if at + n > start {
                out.push((id, at, n));
            }
            at += n;
            i += 1;
        }
    }
}

impl Indexed {
    /// For each parent block of `parents`, the chunk a delta may be made
    /// against and its plaintext: the block itself when it is stored whole,
    /// its base when it is a delta. Only copies in packs that are not
    /// `marked` are used, and the records of the bases are set in `hits`.
    pub(crate) fn delta_bases(&self, parents: &[Id], marked: &Bits, hits: &Bits) -> HashMap<Id, (Id, Vec<u8>)> {
        let mut out = HashMap::new();
        let opened = self.read_unmarked(parents, marked, hits);
        let mut second: Vec<(Id, Id)> = Vec::new();
        for (parent, opened) in parents.iter().zip(opened) {
            match opened {
                Some(Opened::Plain(p)) => {
                    out.insert(*parent, (*parent, p));
                }
                Some(Opened::Delta { base, .. }) => second.push((*parent, base)),
                None => {}
            }
        }
        let bases: Vec<Id> = second.iter().map(|(_, b)| *b).collect();
        for ((parent, base), opened) in second.iter().zip(self.read_unmarked(&bases, marked, hits)) {
            if let Some(Opened::Plain(p)) = opened {
                out.insert(*parent, (*base, p));
            }
        }
        out
    }

    /// Opens the blobs of `ids` from copies in unmarked packs; `None` for
    /// any that cannot be found or read.
    fn read_unmarked(&self, ids: &[Id], marked: &Bits, hits: &Bits) -> Vec<Option<Opened>> {
        let found: Vec<Option<(usize, Location)>> =
            ids.iter().map(|id| self.index.find(id, |no| !marked.get(no as usize))).collect();
        let located: Vec<Option<Location>> = found.iter().map(|f| f.map(|(_, l)| l)).collect();
        // Neighbouring pages of the parent sit side by side in its packs:
        // read in runs, as a restore reads.
        let Ok((placed, buffers)) = self.read_located(&located) else { return ids.iter().map(|_| None).collect() };
        ids.iter()
            .zip(found)
            .zip(placed)
            .map(|((id, found), placed)| {
                let ((pos, _), (run, at, loc)) = (found?, placed?);
                let sealed = sealed_in(&buffers[run], at, &loc);
                let opened = blob::open_blob(&self.keys, id, sealed, loc.raw_len as usize).ok()?;
                // A chunk stored whole is a base from now on; a delta only names one.
                if let Opened::Plain(p) = &opened {
                    if !blob::usable_base(p) {
                        return None;
                    }
                    hits.set(pos);
                }
                Some(opened)
            })
            .collect()
    }
}
