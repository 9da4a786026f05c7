//! The dedupe repository: content-defined and fixed-size chunking, keyed
//! BLAKE3 chunk ids, zstd, XChaCha20-Poly1305, packs, a memory-mapped index
//! and snapshot manifests, over any `object_store` backend.
//!
//! This crate knows nothing of databases: it stores named files with
//! metadata (`backup::Source`) and reads them back (`Indexed::read_file`).
//! The on-disk format is specified in `format-spec/`.

pub mod backend;
pub mod backup;
pub mod blob;
pub mod catalogue;
pub mod chunker;
mod claims;
pub mod crypto;
pub mod error;
pub mod index;
pub mod keyfile;
pub mod maintenance;
pub mod pack;
pub mod repo;
pub mod restore;
pub mod snapshot;

pub use backup::{BackupOptions, BackupResult, Body, Entry, Event, Progress, Source};
pub use chunker::Chunking;
pub use error::{Error, Result};
pub use repo::{Indexed, Kind, Repository, Unlocked};
pub use restore::Piece;
pub use snapshot::{Manifest, Node, NodeKind, Stats, Tree};
