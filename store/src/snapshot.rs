//! Snapshot manifests and the trees they point at.
//!
//! A snapshot manifest (`snapshots/<id>`) is small sealed JSON: name, time,
//! host, source, statistics, free-form metadata and the id of its tree.
//! The tree is a chunk like any other (so an unchanged tree is stored once):
//! JSON listing every node in pre-order. A file node's content is a list of
//! *list chunks*; each list chunk holds up to `LIST_RECORDS` 40-byte records
//! `chunk id (32) || length (u64 LE)`, where an all-zero id is a hole of that
//! length. Two levels keep a node small however large the file, so memory
//! stays bounded while a file of any size is backed up or restored.

use crate::crypto::Id;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MANIFEST_AAD: &[u8] = b"dedupe snapshot v1";
/// Archived logs (`logs/<id>`) are sealed apart, so one cannot be moved to `snapshots/`.
pub const LOG_MANIFEST_AAD: &[u8] = b"dedupe log v1";
pub const LIST_RECORD: usize = 40;
pub const LIST_RECORDS: usize = 4096;
pub const HOLE: Id = [0u8; 32];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    /// Another name for an earlier file node of the same snapshot (`target`).
    Hardlink,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Relative, `/`-separated; parents come before their children.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    #[serde(default)]
    pub size: u64,
    /// Symlink target, or the path a hard link points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// List chunk ids (hex) of a file's content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<String>,
    /// Identity from the source filesystem, used to skip unchanged files.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inode: u64,
    #[serde(default, skip_serializing_if = "is_zero_i")]
    pub ctime_ns: i64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero_i(v: &i64) -> bool {
    *v == 0
}

impl Node {
    pub fn new(path: impl Into<String>, kind: NodeKind) -> Self {
        Node {
            path: path.into(),
            kind,
            mode: if kind == NodeKind::Dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: 0,
            target: None,
            content: Vec::new(),
            inode: 0,
            ctime_ns: 0,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Files in the snapshot and their total logical size.
    pub files: u64,
    pub bytes: u64,
    /// Bytes actually read from the source (0 when every file was unchanged).
    pub bytes_read: u64,
    /// Files whose content list was taken from the previous snapshot unread.
    pub files_unchanged: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    /// Plaintext and stored (compressed, encrypted) size of the new chunks.
    pub new_bytes: u64,
    pub new_bytes_stored: u64,
    /// Of the new chunks, those stored as deltas on a previous version
    /// (`delta.rs`): their count, plaintext and stored size.
    #[serde(default)]
    pub delta_chunks: u64,
    #[serde(default)]
    pub delta_bytes: u64,
    #[serde(default)]
    pub delta_bytes_stored: u64,
    pub packs_written: u64,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub name: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub hostname: String,
    pub username: String,
    /// What was backed up, in words: `stdin`, `directory /mnt/snap`.
    pub source: String,
    pub tree: String,
    /// The producer's stderr, stored as a chunk (`backup --command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// For a copy (`dedupe copy`): the id of the snapshot (or archived log)
    /// first written in the repository it was copied from, so copying again
    /// finds it and skips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    pub stats: Stats,
    /// Database-specific facts recorded by ingest (binlog position, LSNs...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// Encodes list records for a list chunk.
pub fn encode_records(records: &[(Id, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * LIST_RECORD);
    for (id, len) in records {
        out.extend_from_slice(id);
        out.extend_from_slice(&len.to_le_bytes());
    }
    out
}

pub fn decode_records(b: &[u8]) -> Option<Vec<(Id, u64)>> {
    if !b.len().is_multiple_of(LIST_RECORD) {
        return None;
    }
    Some(
        b.chunks_exact(LIST_RECORD)
            .map(|r| (r[..32].try_into().expect("32"), u64::from_le_bytes(r[32..40].try_into().expect("8"))))
            .collect(),
    )
}
