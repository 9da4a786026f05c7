//! PostgreSQL 17+ incremental base backups (`pg_basebackup --incremental`),
//! stored as the full backups they stand for (format-spec §18.3).
//!
//! An incremental sends, for each relation file the server's WAL
//! summarizer saw change since the backup whose manifest it was given,
//! `INCREMENTAL.<relfile>`: a header (magic, block count, truncation
//! length in blocks, the block numbers in ascending order, padded to a
//! whole block when there are any), then those blocks. Files without
//! changed blocks come as a bare 12-byte header; other files come whole;
//! `backup_label` names the prior backup (`INCREMENTAL FROM LSN`, `…TLI`).
//! The server refuses such a directory ("this is an incremental backup, not
//! a data directory"); `pg_combinebackup` rebuilds a full from the chain.
//!
//! Here the stream is matched, by its `INCREMENTAL FROM LSN` and timeline,
//! to the stored snapshot of the same name that started at that LSN (the
//! prior backup), and each incremental file becomes a derived file of that
//! snapshot (`dedupe_store::Derived`) exactly as pg_combinebackup's
//! reconstruction makes it from one full: its length is the truncation
//! length or one past the highest block sent, whichever is more; a block
//! sent is the new one; a block below the truncation length is the base's
//! where the base has it; anything else is zeros. The blocks not sent are
//! the base's chunks by reference, so the snapshot is a whole data
//! directory at the cost of what changed. `backup_label` loses its
//! `INCREMENTAL` lines and `backup_manifest` is rewritten for the files as
//! they now are (as pg_combinebackup writes it): reconstructed files are
//! listed without a checksum, since computing one would mean reading every
//! block of the base (pg_combinebackup --manifest-checksums=NONE does the
//! same); every other file keeps its own.

use crate::facts::SnapshotFacts;
use dedupe_store::{Error, Result};
use std::collections::HashMap;
use std::io::Read;

/// The first four bytes of an `INCREMENTAL.*` file, little-endian.
pub const MAGIC: u32 = 0xd3ae_1f0d;
/// PostgreSQL's page size (the only one its incremental backups support).
pub const BLOCK: u64 = 8192;
/// Blocks in a relation segment file (1 GiB): no header may name more.
pub const RELSEG_BLOCKS: u32 = 131_072;

/// What `backup_label` says an incremental was taken against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncrementalFrom {
    pub lsn: u64,
    pub timeline: u64,
}

/// An LSN as PostgreSQL prints it: `0/5000028`, `0/05000028` (18 pads).
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// The `INCREMENTAL FROM` lines of a backup_label, if it has them.
pub fn incremental_from(label: &str) -> Option<IncrementalFrom> {
    let value = |key: &str| label.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
    let lsn = parse_lsn(value("INCREMENTAL FROM LSN:")?)?;
    let timeline = value("INCREMENTAL FROM TLI:").and_then(|t| t.parse().ok()).unwrap_or(1);
    Some(IncrementalFrom { lsn, timeline })
}

/// The label of the full backup an incremental stands for: the same lines
/// without the `INCREMENTAL FROM` ones (as pg_combinebackup writes it).
pub fn full_label(label: &str) -> String {
    label.split_inclusive('\n').filter(|l| !l.starts_with("INCREMENTAL FROM ")).collect()
}

/// The stored snapshot an incremental was taken against: among the
/// snapshots of its name (oldest first), the newest whose backup started
/// at `from` on the same timeline.
pub fn base_of(from: IncrementalFrom, snapshots: &[(String, SnapshotFacts)]) -> Option<&(String, SnapshotFacts)> {
    snapshots.iter().rev().find(|(_, f)| {
        let Some(pg) = &f.postgresql else { return false };
        pg.start_wal_location.as_deref().and_then(parse_lsn) == Some(from.lsn)
            && pg.timeline.unwrap_or(1) == from.timeline
            && !pg.is_uncombined_incremental()
    })
}

/// The snapshot the next incremental is best taken against: the newest
/// PostgreSQL base backup of the name that kept its backup_manifest.
pub fn prior_of(snapshots: &[(String, SnapshotFacts)]) -> Option<&(String, SnapshotFacts)> {
    snapshots.iter().rev().find(|(_, f)| {
        f.postgresql.as_ref().is_some_and(|pg| {
            pg.backup_manifest == Some(true) && !pg.is_uncombined_incremental() && pg.start_wal_location.is_some()
        })
    })
}

/// `base/5/INCREMENTAL.16384` → `base/5/16384`: the file an incremental
/// file stands for, when `path` is one (a relation file's name after the prefix).
pub fn bare_path(path: &str) -> Option<String> {
    let (dir, name) = path.rsplit_once('/')?;
    let bare = format!("{dir}/{}", name.strip_prefix("INCREMENTAL.")?);
    crate::pages::is_postgres_relation(&bare).then_some(bare)
}

/// The header of an `INCREMENTAL.*` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The blocks sent, ascending.
    pub blocks: Vec<u32>,
    /// Blocks of the prior backup's file that still count.
    pub truncation: u32,
    /// Bytes of header (with its padding) before the first block.
    pub len: u64,
}

impl Header {
    /// Reads and checks the header of `path`, a file of `size` bytes.
    pub fn read(r: &mut dyn Read, size: u64, path: &str) -> Result<Header> {
        let bad = |why: String| Error::Damaged(format!("{path} is not a PostgreSQL incremental file: {why}"));
        let mut word = || -> Result<u32> {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)
                .map_err(|e| Error::Truncated(format!("the tar stream ends inside the header of {path} ({e})")))?;
            Ok(u32::from_le_bytes(b))
        };
        if size < 12 {
            return Err(bad(format!("{size} bytes, shorter than a header")));
        }
        let magic = word()?;
        if magic != MAGIC {
            return Err(bad(format!("magic {magic:#x} where {MAGIC:#x} belongs")));
        }
        let (count, truncation) = (word()?, word()?);
        if count > RELSEG_BLOCKS || truncation > RELSEG_BLOCKS {
            return Err(bad(format!("{count} blocks, truncation at {truncation}: more than a segment holds")));
        }
        let mut len = 12 + 4 * count as u64;
        if count > 0 {
            len = len.div_ceil(BLOCK) * BLOCK;
        }
        if size != len + count as u64 * BLOCK {
            return Err(bad(format!(
                "{size} bytes where a header naming {count} blocks makes {}",
                len + count as u64 * BLOCK
            )));
        }
        let blocks = (0..count).map(|_| word()).collect::<Result<Vec<u32>>>()?;
        if blocks.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("its block numbers are not ascending".into()));
        }
        let pad = len - 12 - 4 * count as u64;
        std::io::copy(&mut r.take(pad), &mut std::io::sink()).map_err(|e| Error::reading(&e))?;
        Ok(Header { blocks, truncation, len })
    }

    /// The length of the file it stands for.
    pub fn size(&self) -> u64 {
        let past_last = self.blocks.last().map_or(0, |b| *b as u64 + 1);
        (self.truncation as u64).max(past_last) * BLOCK
    }

    /// The blocks sent as runs of consecutive numbers: (first block, count).
    pub fn runs(&self) -> Vec<(u32, u32)> {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for &b in &self.blocks {
            match runs.last_mut() {
                Some((first, n)) if *first + *n == b => *n += 1,
                _ => runs.push((b, 1)),
            }
        }
        runs
    }
}

/// One file line of a backup_manifest.
#[derive(serde::Deserialize)]
struct FileLine {
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Last-Modified")]
    modified: String,
    #[serde(rename = "Checksum-Algorithm")]
    algorithm: Option<String>,
}

fn file_line(path: &str, size: u64, modified: &str, checksum: Option<(&str, &str)>) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let mut l = format!("{{ \"Path\": {}, \"Size\": {size}, \"Last-Modified\": {}", q(path), q(modified));
    if let Some((algorithm, sum)) = checksum {
        l.push_str(&format!(", \"Checksum-Algorithm\": {}, \"Checksum\": {}", q(algorithm), q(sum)));
    }
    l.push_str(" }");
    l
}

/// The backup_manifest of the full an incremental stands for: each
/// `INCREMENTAL.x` line becomes `x` at its reconstructed size (`sizes`,
/// by bare path) without a checksum, backup_label's line takes the new
/// label (`label`: its bytes), and the manifest checksum (SHA-256 of all
/// before the last line) is computed again.
pub fn full_manifest(text: &[u8], sizes: &HashMap<String, u64>, label: &[u8]) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(text).map_err(|_| Error::Damaged("backup_manifest is not UTF-8".into()))?;
    let bad = |why: &str| Error::Damaged(format!("backup_manifest {why}"));
    let last = text.trim_end_matches('\n').rfind('\n').ok_or_else(|| bad("has no lines"))?;
    let (body, tail) = text.split_at(last + 1);
    if !tail.starts_with("\"Manifest-Checksum\"") {
        return Err(bad("does not end with its checksum"));
    }
    let mut out = String::with_capacity(text.len());
    for line in body.split_inclusive('\n') {
        let content = line.trim_end_matches('\n');
        let (object, comma) = match content.strip_suffix(',') {
            Some(o) => (o, ","),
            None => (content, ""),
        };
        if !object.starts_with("{ \"Path\": ") {
            out.push_str(line);
            continue;
        }
        let f: FileLine =
            serde_json::from_str(object).map_err(|e| bad(&format!("has a file line it cannot read: {e}")))?;
        let path = f.path.as_deref().unwrap_or_default();
        let rewritten = if let Some(bare) = bare_path(path) {
            let size = sizes.get(&bare).ok_or_else(|| bad(&format!("lists {path}, which the stream did not hold")))?;
            file_line(&bare, *size, &f.modified, None)
        } else if path == "backup_label" {
            match f.algorithm.as_deref() {
                Some("CRC32C") => {
                    // PostgreSQL writes the CRC's bytes as they lie in memory: little-endian.
                    let sum = hex_of(&crc32c::crc32c(label).to_le_bytes());
                    file_line(path, label.len() as u64, &f.modified, Some(("CRC32C", &sum)))
                }
                _ => file_line(path, label.len() as u64, &f.modified, None),
            }
        } else {
            out.push_str(line);
            continue;
        };
        out.push_str(&rewritten);
        out.push_str(comma);
        out.push('\n');
    }
    let sum = ring::digest::digest(&ring::digest::SHA256, out.as_bytes());
    out.push_str(&format!("\"Manifest-Checksum\": \"{}\"}}\n", hex_of(sum.as_ref())));
    Ok(out.into_bytes())
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::PgFacts;

    #[test]
    fn lsns_and_labels() {
        assert_eq!(parse_lsn("0/5000028"), Some(0x0500_0028));
        assert_eq!(parse_lsn("1/05000028"), Some((1 << 32) | 0x0500_0028));
        let label = "START WAL LOCATION: 0/58000028 (file 000000010000000000000058)\nSTART TIMELINE: 1\n\
                     INCREMENTAL FROM LSN: 0/39000028\nINCREMENTAL FROM TLI: 1\n";
        assert_eq!(incremental_from(label), Some(IncrementalFrom { lsn: 0x3900_0028, timeline: 1 }));
        assert_eq!(
            full_label(label),
            "START WAL LOCATION: 0/58000028 (file 000000010000000000000058)\nSTART TIMELINE: 1\n"
        );
        assert_eq!(incremental_from(&full_label(label)), None);
    }

    #[test]
    fn the_base_is_the_snapshot_that_started_at_the_lsn() {
        let snap = |id: &str, lsn: &str, tl: u64| {
            let pg = PgFacts { start_wal_location: Some(lsn.into()), timeline: Some(tl), ..Default::default() };
            (id.to_string(), SnapshotFacts { postgresql: Some(pg), ..Default::default() })
        };
        let snaps = vec![snap("a", "0/39000028", 1), snap("b", "0/58000028", 1), snap("c", "0/39000028", 2)];
        let from = IncrementalFrom { lsn: 0x3900_0028, timeline: 1 };
        assert_eq!(base_of(from, &snaps).map(|s| s.0.as_str()), Some("a"));
        assert_eq!(base_of(IncrementalFrom { lsn: 1, timeline: 1 }, &snaps), None);
    }

    fn header(blocks: &[u32], truncation: u32) -> Vec<u8> {
        let mut h = Vec::new();
        for w in [MAGIC, blocks.len() as u32, truncation].iter().chain(blocks) {
            h.extend_from_slice(&w.to_le_bytes());
        }
        if !blocks.is_empty() {
            h.resize(h.len().div_ceil(BLOCK as usize) * BLOCK as usize, 0);
        }
        h
    }

    #[test]
    fn headers_are_read_and_checked() {
        let mut file = header(&[0, 3, 4, 9], 6);
        assert_eq!(file.len(), 8192);
        file.extend(std::iter::repeat_n(7u8, 4 * 8192));
        let h = Header::read(&mut &file[..], file.len() as u64, "x").unwrap();
        assert_eq!(h.blocks, [0, 3, 4, 9]);
        assert_eq!((h.truncation, h.len, h.size()), (6, 8192, 10 * 8192));
        assert_eq!(h.runs(), [(0, 1), (3, 2), (9, 1)]);
        // A file without changed blocks: 12 bytes, and its length is the truncation length.
        let stub = header(&[], 4);
        let h = Header::read(&mut &stub[..], 12, "x").unwrap();
        assert_eq!((h.len, h.size()), (12, 4 * 8192));
        // Damage: magic, sizes, order.
        let mut wrong = stub.clone();
        wrong[0] ^= 1;
        assert!(matches!(Header::read(&mut &wrong[..], 12, "x"), Err(Error::Damaged(m)) if m.contains("magic")));
        assert!(matches!(Header::read(&mut &file[..], 4 * 8192, "x"), Err(Error::Damaged(_))));
        let mut unordered = header(&[3, 1], 0);
        unordered.extend(vec![0u8; 2 * 8192]);
        assert!(
            matches!(Header::read(&mut &unordered[..], 3 * 8192, "x"), Err(Error::Damaged(m)) if m.contains("ascending"))
        );
    }

    #[test]
    fn the_manifest_lists_the_files_as_they_are_rebuilt() {
        let body = "{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": 7716697034777021491,\n\"Files\": [\n\
{ \"Path\": \"backup_label\", \"Size\": 284, \"Last-Modified\": \"2026-12-07 22:47:14 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"a0628c3b\" },\n\
{ \"Path\": \"base/5/INCREMENTAL.16384\", \"Size\": 12, \"Last-Modified\": \"2026-12-07 22:45:37 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"dac55f1e\" },\n\
{ \"Path\": \"PG_VERSION\", \"Size\": 3, \"Last-Modified\": \"2026-12-07 22:45:37 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"994e7be2\" }\n\
],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/58000028\", \"End-LSN\": \"0/58000120\" }\n],\n";
        let sum = hex_of(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()).as_ref());
        let manifest = format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n");
        // Unchanged input, unchanged output (the checksum is computed as PostgreSQL does).
        let same =
            full_manifest(manifest.as_bytes(), &HashMap::from([("base/5/16384".to_string(), 12u64)]), &[0u8; 284]);
        let same = String::from_utf8(same.unwrap()).unwrap();
        assert!(
            same.contains(
                "\"Path\": \"base/5/16384\", \"Size\": 12, \"Last-Modified\": \"2026-12-07 22:45:37 GMT\" },\n"
            ),
            "{same}"
        );
        let label = b"START WAL LOCATION: 0/58000028 (file 000000010000000000000058)\n";
        let sizes = HashMap::from([("base/5/16384".to_string(), 3 * 8192u64)]);
        let out = String::from_utf8(full_manifest(manifest.as_bytes(), &sizes, label).unwrap()).unwrap();
        assert!(
            out.contains(
                "{ \"Path\": \"base/5/16384\", \"Size\": 24576, \"Last-Modified\": \"2026-12-07 22:45:37 GMT\" },\n"
            ),
            "{out}"
        );
        let crc = hex_of(&crc32c::crc32c(label).to_le_bytes());
        assert!(out.contains(&format!("{{ \"Path\": \"backup_label\", \"Size\": {}, \"Last-Modified\": \"2026-12-07 22:47:14 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{crc}\" }},\n", label.len())), "{out}");
        assert!(out.contains("{ \"Path\": \"PG_VERSION\", \"Size\": 3, \"Last-Modified\": \"2026-12-07 22:45:37 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"994e7be2\" }\n],"), "{out}");
        let (before, last) = out.trim_end().rsplit_once('\n').unwrap();
        let want = hex_of(ring::digest::digest(&ring::digest::SHA256, format!("{before}\n").as_bytes()).as_ref());
        assert_eq!(last, format!("\"Manifest-Checksum\": \"{want}\"}}"));
        // A file the manifest lists as incremental that the stream did not hold: refused.
        assert!(full_manifest(manifest.as_bytes(), &HashMap::new(), label).is_err());
    }
}
