//! The dedupe repository: content-defined and fixed-size chunking, keyed
//! BLAKE3 chunk ids, zstd, XChaCha20-Poly1305, packs, a memory-mapped index
//! and snapshot manifests, over any `object_store` backend.
//!
//! This crate knows nothing of databases: it stores named files with
//! metadata (`Source`) and reads them back (`Indexed::read_file`). A
//! repository moves through states: `Repository` (config read), `Unlocked`
//! (a key opened), `Listed` (manifests listed), `Indexed` (index loaded:
//! chunks can be read and written), so a chunk can only be read after the
//! manifests naming it were listed. The on-disk format is specified in
//! `format-spec/`.
//!
//! The public surface is what the other crates call. The format's building
//! blocks (chunker, blobs, packs, keys) are private; tests and benches reach
//! them through the `internals` feature, which is not for other uses.

mod ahead;
pub mod backend;
mod backup;
mod bits;
mod blob;
mod catalogue;
mod check;
mod chunker;
mod claims;
mod compaction;
mod crypto;
mod delta;
mod derive;
pub mod drills;
mod error;
mod filemap;
mod guard;
mod index;
mod keyfile;
mod maintenance;
mod marks;
mod pack;
mod private;
mod progress;
mod prune;
mod repo;
mod restore;
mod segment;
mod snapshot;
mod upload;

pub use ahead::Ahead;
pub use backup::{BackupOptions, BackupResult, Body, Entry, Event, Origin, Source};
pub use catalogue::Catalogue;
pub use check::{CheckReport, Finding, Severity, Subset};
pub use chunker::Chunking;
pub use derive::Derived;
pub use error::{Error, Result};
pub use filemap::{ChunkCache, FileMap};
pub use keyfile::{hostname, KdfParams};
pub use maintenance::{Broken, Dropped, Ratios, RepairReport, RepoStats};
pub use progress::Progress;
pub use prune::{PruneOptions, PruneReport};
pub use repo::{Config, Indexed, KeyInfo, Kind, Listed, Reads, Repository, Unlocked};
pub use restore::{Piece, Sink};
pub use snapshot::{Manifest, Node, NodeKind, Stats, Tree};

/// The format's building blocks, for the test vectors and benches only.
#[cfg(feature = "internals")]
pub mod internals {
    pub use crate::blob::{apply_delta, open_blob, open_chunk, seal_chunk, seal_chunk_against, OpenError, Opened};
    pub use crate::chunker::{split, Chunker};
    pub use crate::compaction::{Compaction, COMPACTION_AAD};
    pub use crate::crypto::{hex_id, parse_id, Id, Keys};
    pub use crate::index::{open_index_object, seal_index_object, Index, Location, INDEX_AAD, INDEX_AAD_V1};
    pub use crate::marks::{open_mark, seal_mark, MARK_AAD};
    pub use crate::pack::{
        encode_entries, pack_name, parse_trailer, read_entries, PackEntry, PackWriter, TRAILER_AAD, TRAILER_AAD_V1,
    };
    pub use crate::repo::open_manifest;
    pub use crate::snapshot::{
        decode_records, encode_records, HOLE, LIST_RECORD, LIST_RECORDS, LOG_MANIFEST_AAD, MANIFEST_AAD,
    };

    /// Every pack the loaded index names.
    pub fn indexed_packs(repo: &crate::Indexed) -> Vec<Id> {
        repo.index.packs().to_vec()
    }

    /// Opens one segment file of the local index cache (`<cache>/index/seg-*.bin`)
    /// as the cache does, as an index of its own; `None` when it is not one.
    pub fn load_index_segment(path: &std::path::Path) -> crate::Result<Option<Index>> {
        Index::load_segment(path)
    }
}
