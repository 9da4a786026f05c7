//! Files derived from a file of another snapshot (format-spec §7.6): the
//! base's bytes up to a length, zeros past them, and the pieces the source
//! gives written over both. A PostgreSQL incremental backup sends, for a
//! relation file, only the blocks that changed and the length to cut the
//! rest at; stored this way it becomes the whole file it stands for, at
//! the cost of what changed.
//!
//! The file is cut into the slots its chunking names (fixed-size blocks,
//! as a full backup of the same file is cut), so a slot nothing was
//! written over, lying wholly on one record of the base, is that record:
//! referenced by id without being read (a deduplicated chunk, which the
//! guard protects as any other). Every other slot is made from the base's
//! bytes and the pieces by a worker (`assemble`), which reads the base's
//! records for a unit together, and is then stored like any new block:
//! deduplicated, or a delta against the base's block at the same offset.

use crate::crypto::Id;
use crate::delta::ParentBlocks;
use crate::error::{Error, Result};
use crate::repo::Indexed;
use crate::snapshot::HOLE;
use std::collections::HashMap;

/// Where a derived file comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derived {
    /// The snapshot holding the base file (an id or a unique prefix).
    pub snapshot: String,
    /// The base file's path in that snapshot.
    pub path: String,
    /// Bytes of the base that count: past them (or past the base's end,
    /// if it is shorter) the file reads as zeros until a piece says otherwise.
    pub keep: u64,
}

/// One slot of a derived file that a worker makes: `len` bytes from
/// `start`, the base's bytes below `base_end` (relative to the slot), then
/// zeros, with `over` written on top.
pub(crate) struct Slot {
    pub(crate) len: u64,
    /// Records of the base (id, start in the file, length) that meet the slot.
    pub(crate) base: Vec<(Id, u64, u64)>,
    pub(crate) start: u64,
    pub(crate) base_end: u64,
    /// Pieces: offset in the slot, bytes.
    pub(crate) over: Vec<(u64, bytes::Bytes)>,
    /// The base's block at the same offset and of the same length, the delta base.
    pub(crate) parent: Option<Id>,
}

impl Slot {
    /// Bytes of the slot that came from the source.
    pub(crate) fn written(&self) -> u64 {
        self.over.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// The slot's bytes, given the plaintexts of the base's records.
    pub(crate) fn assemble(&self, plain: &HashMap<Id, Vec<u8>>) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.len as usize];
        let end = self.start + self.base_end;
        for (id, at, len) in &self.base {
            if *id == HOLE {
                continue;
            }
            let data = plain.get(id).ok_or_else(|| Error::Invalid("a base record was not read".into()))?;
            if data.len() as u64 != *len {
                return Err(Error::corrupt(
                    format!("chunk {}", crate::crypto::hex_id(id)),
                    format!("{} bytes where the base file's list says {len}", data.len()),
                ));
            }
            let (from, to) = ((*at).max(self.start), (at + len).min(end));
            if from < to {
                out[(from - self.start) as usize..(to - self.start) as usize]
                    .copy_from_slice(&data[(from - at) as usize..(to - at) as usize]);
            }
        }
        for (at, piece) in &self.over {
            out[*at as usize..*at as usize + piece.len()].copy_from_slice(piece);
        }
        Ok(out)
    }
}

/// What the reader makes of one slot.
pub(crate) enum Made {
    /// Exactly a record of the base: its id (or a hole).
    Record(Id),
    /// To be made by a worker.
    Slot(Slot),
}

/// The reader's walk over one derived file.
pub(crate) struct Walk {
    /// The base file's records, walked forward.
    blocks: ParentBlocks,
    /// The bytes of the base that count.
    base_end: u64,
    slot: u64,
    /// The start of the first slot not made yet.
    next: u64,
    /// Pieces for the slot at `next`: absolute offset, bytes.
    over: Vec<(u64, bytes::Bytes)>,
}

impl Walk {
    /// `blocks` are the base file's (`base_size` bytes), `slot` the chunk size.
    pub(crate) fn new(blocks: ParentBlocks, base_size: u64, keep: u64, slot: u64) -> Walk {
        Walk { blocks, base_end: keep.min(base_size), slot: slot.max(1), next: 0, over: Vec::new() }
    }

    /// A piece at `offset` (offsets only grow); the slots it completes.
    pub(crate) fn piece(&mut self, repo: &Indexed, offset: u64, data: bytes::Bytes) -> Result<Vec<(u64, Made)>> {
        let mut made = Vec::new();
        while self.next + self.slot <= offset {
            made.push(self.make(repo, self.slot)?);
        }
        let (mut at, mut rest) = (offset, data);
        while !rest.is_empty() {
            let end = self.next + self.slot;
            let take = (end - at).min(rest.len() as u64) as usize;
            self.over.push((at, rest.split_to(take)));
            at += take as u64;
            if at == end {
                made.push(self.make(repo, self.slot)?);
            }
        }
        Ok(made)
    }

    /// The file ends at `size`: the slots left.
    pub(crate) fn close(&mut self, repo: &Indexed, size: u64) -> Result<Vec<(u64, Made)>> {
        if self.over.last().is_some_and(|(at, b)| at + b.len() as u64 > size) {
            return Err(Error::Input(format!("a piece lies past the derived file's end at {size}")));
        }
        let mut made = Vec::new();
        while self.next < size {
            made.push(self.make(repo, (size - self.next).min(self.slot))?);
        }
        Ok(made)
    }

    /// The slot at `next`, `len` bytes long (the last may be short).
    fn make(&mut self, repo: &Indexed, len: u64) -> Result<(u64, Made)> {
        let start = self.next;
        self.next += len;
        let over: Vec<(u64, bytes::Bytes)> = self.over.drain(..).map(|(at, b)| (at - start, b)).collect();
        let base_end = self.base_end.saturating_sub(start).min(len);
        let base = match base_end {
            0 => Vec::new(),
            _ => self.blocks.covering(repo, start, start + base_end)?,
        };
        let exact = match base.as_slice() {
            [(id, at, n)] if *at == start && *n == len => Some(*id),
            _ => None,
        };
        if let (Some(id), true, true) = (exact, over.is_empty(), base_end == len) {
            return Ok((len, Made::Record(id)));
        }
        let parent = exact.filter(|id| *id != HOLE);
        Ok((len, Made::Slot(Slot { len, base, start, base_end, over, parent })))
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, ObjectStoreBackend};
    use crate::{BackupOptions, Chunking, Derived, Event, Indexed, KdfParams, Node, NodeKind, Piece, Repository};
    use std::collections::VecDeque;
    use std::sync::Arc;

    const BLOCK: u32 = 32 << 10;
    const CHUNKING: Chunking = Chunking::Fixed { size: BLOCK, level: None };

    struct Events(VecDeque<Event>);

    impl crate::Source for Events {
        fn next_event(&mut self) -> crate::Result<Option<Event>> {
            Ok(self.0.pop_front())
        }
    }

    fn repo() -> (Indexed, tempfile::TempDir) {
        let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory().unwrap());
        let cache = tempfile::tempdir().unwrap();
        let kdf = KdfParams { memory_kib: 1024, iterations: 1, parallelism: 1 };
        let repo = Repository::init(backend, b"pw", kdf).unwrap();
        (repo.unlock(b"pw").unwrap().list(cache.path()).unwrap().indexed().unwrap(), cache)
    }

    fn opts() -> BackupOptions {
        BackupOptions {
            name: "pg".into(),
            source_description: "test".into(),
            force_read: false,
            compression_level: None,
            metadata: Default::default(),
            log: None,
            kind: crate::Kind::Snapshot,
            origin: Default::default(),
        }
    }

    fn backup(repo: &Indexed, events: Vec<Event>) -> (String, crate::Manifest) {
        let r = repo.backup(Box::new(Events(events.into())), opts(), &()).unwrap();
        (r.snapshot_id, r.manifest)
    }

    fn file(path: &str) -> Node {
        let mut n = Node::new(path, NodeKind::File);
        n.mode = 0o600;
        n
    }

    fn read(repo: &Indexed, m: &crate::Manifest, path: &str) -> Vec<u8> {
        let tree = repo.read_tree(m).unwrap();
        let node = tree.nodes.iter().find(|n| n.path == path).unwrap();
        let mut out = Vec::new();
        let mut sink = |p: Piece<'_>| {
            match p {
                Piece::Data(d) => out.extend_from_slice(d),
                Piece::Hole(n) => out.resize(out.len() + n as usize, 0),
            }
            Ok(())
        };
        repo.read_file(node, &mut sink).unwrap();
        out
    }

    /// Distinct, incompressible-ish bytes.
    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed).collect()
    }

    #[test]
    fn a_derived_file_is_its_base_with_the_pieces_written_over_cut_and_grown() {
        let (repo, _cache) = repo();
        // The base: 10 blocks of 32 KiB, stored in fixed blocks.
        let base = bytes(10 * BLOCK as usize, 1);
        let (id, _) = backup(
            &repo,
            vec![
                Event::Open { key: 1, node: file("base/1/16384"), chunking: CHUNKING },
                Event::Piece { key: 1, offset: 0, data: base.clone().into() },
                Event::Close { key: 1, size: base.len() as u64 },
            ],
        );
        // Kept: the first 7 blocks; 8 KiB written into block 2 and a piece
        // spanning the end of block 4 and the start of block 5; the file grows to
        // block 11, whose middle is written (blocks 7-10 read as zeros).
        let b = BLOCK as u64;
        let pieces: Vec<(u64, Vec<u8>)> =
            vec![(2 * b + 8192, bytes(8192, 7)), (5 * b - 4096, bytes(8192, 8)), (11 * b + 100, bytes(300, 9))];
        let size = 12 * b;
        let mut events = vec![Event::Derive {
            key: 5,
            node: file("base/1/16384"),
            chunking: CHUNKING,
            from: Derived { snapshot: id.clone(), path: "base/1/16384".into(), keep: 7 * b },
        }];
        events.extend(pieces.iter().map(|(at, d)| Event::Piece { key: 5, offset: *at, data: d.clone().into() }));
        events.push(Event::Close { key: 5, size });
        // As the next command would: the first backup's chunks listed and indexed.
        let repo = repo.relisted().unwrap();
        let (_, m) = backup(&repo, events);
        let repo = repo.relisted().unwrap();

        let mut want = base[..7 * b as usize].to_vec();
        want.resize(size as usize, 0);
        for (at, d) in &pieces {
            want[*at as usize..*at as usize + d.len()].copy_from_slice(d);
        }
        assert_eq!(read(&repo, &m, "base/1/16384"), want);
        // Blocks 0, 1, 3 and 6 are the base's, referenced; only the
        // written blocks, and one block of zeros, are new.
        assert_eq!(m.stats.chunks, 12, "{:?}", m.stats);
        assert!(m.stats.new_chunks <= 5 + 2, "{:?}", m.stats);
        assert_eq!(m.stats.bytes, size);
        assert_eq!(m.stats.bytes_read, 8192 + 8192 + 300);
    }

    #[test]
    fn a_derived_file_on_a_missing_base_file_is_refused() {
        let (repo, _cache) = repo();
        let (id, _) = backup(
            &repo,
            vec![Event::Entry(crate::Entry {
                node: Node::new("other", NodeKind::Dir),
                body: crate::Body::None,
                chunking: CHUNKING,
            })],
        );
        let repo = repo.relisted().unwrap();
        let events = vec![
            Event::Derive {
                key: 1,
                node: file("base/1/2"),
                chunking: CHUNKING,
                from: Derived { snapshot: id, path: "base/1/2".into(), keep: 0 },
            },
            Event::Close { key: 1, size: 0 },
        ];
        match repo.backup(Box::new(Events(events.into())), opts(), &()) {
            Err(crate::Error::Input(m)) => assert!(m.contains("no such file"), "{m}"),
            other => panic!("{:?}", other.map(|r| r.snapshot_id)),
        }
        assert_eq!(repo.snapshots(Some("pg")).unwrap().len(), 1, "nothing committed");
    }
}
