//! Compaction records (`compactions/<id>`): what a `prune` or `repair
//! index` replaced in `index/`, so that every host's index cache follows
//! without listing `index/` whole or fetching it again (format-spec §10.6).
//!
//! A cache lists only the index objects written since it last looked
//! (`index/<stamp>-<hash>` names sort by time), so it never sees an object
//! vanish. A prune says instead what it did: which packs it deletes (a
//! cache must stop finding chunks there), and which new objects hold what
//! which old ones held (a cache that merged the old ones takes the new
//! ones as merged, without fetching them). Records are numbered: a cache
//! that finds a gap in the numbers missed one, and builds itself anew.
//! Plaintext (JSON), sealed with associated data `"dedupe compaction v1"`,
//! named by the BLAKE3 of the sealed bytes:
//! ```text
//! {"sequence": n, "time": RFC 3339, "reset": bool,
//!  "deleted_packs": [hex pack id, ...],
//!  "objects": [{"name": "index/<stamp>-<hash>", "from": [hex hash, ...]}, ...]}
//! ```

use crate::backend::{Backend, ObjectKind};
use crate::crypto::{hex_id, parse_id, Id, Keys};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

pub const COMPACTION_AAD: &[u8] = b"dedupe compaction v1";

/// How long `prune` keeps the records before the newest: a cache that
/// last looked longer ago than this rebuilds itself.
pub const KEEP_RECORDS: Duration = Duration::from_secs(30 * 86_400);

#[derive(Serialize, Deserialize)]
struct Body {
    sequence: u64,
    time: String,
    reset: bool,
    deleted_packs: Vec<String>,
    objects: Vec<ObjectBody>,
}

#[derive(Serialize, Deserialize)]
struct ObjectBody {
    name: String,
    from: Vec<String>,
}

/// One compaction record.
#[derive(Clone, Debug, Default)]
pub struct Compaction {
    /// Its object name (`compactions/<id>`).
    pub name: String,
    /// One more than the greatest sequence listed when it was written.
    pub sequence: u64,
    pub time: Option<SystemTime>,
    /// `repair index`: every cache is rebuilt from the index objects.
    pub reset: bool,
    /// Packs the writer deletes: no chunk is to be found there any more.
    pub deleted_packs: Vec<Id>,
    /// Each new index object (full name) with the hashes of the old ones
    /// whose records it holds (less those of the deleted packs).
    pub objects: Vec<(String, Vec<Id>)>,
}

impl Compaction {
    /// Seals the record; returns (object name, bytes).
    pub fn seal(&self, keys: &Keys) -> (String, Vec<u8>) {
        let time = self.time.unwrap_or_else(SystemTime::now);
        let body = Body {
            sequence: self.sequence,
            time: jiff::Timestamp::try_from(time).expect("a time after 1970").to_string(),
            reset: self.reset,
            deleted_packs: self.deleted_packs.iter().map(hex_id).collect(),
            objects: self
                .objects
                .iter()
                .map(|(name, from)| ObjectBody { name: name.clone(), from: from.iter().map(hex_id).collect() })
                .collect(),
        };
        let sealed = keys.seal(COMPACTION_AAD, &serde_json::to_vec(&body).expect("record serializes"));
        (ObjectKind::Compaction.name(&blake3::hash(&sealed).to_hex()), sealed)
    }

    pub fn open(keys: &Keys, name: &str, sealed: &[u8]) -> Result<Compaction> {
        crate::crypto::check_content_name(name, sealed)?;
        let plain = keys.open(COMPACTION_AAD, sealed).ok_or_else(|| Error::corrupt(name, "fails authentication"))?;
        let body: Body = serde_json::from_slice(&plain)
            .map_err(|e| Error::corrupt(name, format!("not a compaction record: {e}")))?;
        let time = body
            .time
            .parse::<jiff::Timestamp>()
            .map_err(|e| Error::corrupt(name, format!("its time is not RFC 3339: {e}")))?;
        let bad = || Error::corrupt(name, "names an id that is not hex");
        let ids = |v: &[String]| v.iter().map(|p| parse_id(p)).collect::<Option<Vec<Id>>>().ok_or_else(bad);
        let mut objects = Vec::new();
        for o in &body.objects {
            if ObjectKind::of(&o.name) != Some(ObjectKind::Index) {
                return Err(Error::corrupt(name, format!("names {} as an index object", o.name)));
            }
            objects.push((o.name.clone(), ids(&o.from)?));
        }
        Ok(Compaction {
            name: name.to_string(),
            sequence: body.sequence,
            time: Some(SystemTime::from(time)),
            reset: body.reset,
            deleted_packs: ids(&body.deleted_packs)?,
            objects,
        })
    }
}

/// Reads the named records, in sequence order; the damaged ones are
/// returned by name beside them.
pub fn read(backend: &dyn Backend, keys: &Keys, names: &[String]) -> Result<(Vec<Compaction>, Vec<String>)> {
    let (mut out, mut damaged) = (Vec::new(), Vec::new());
    for (name, sealed) in names.iter().zip(backend.get_many(names)) {
        match sealed.and_then(|bytes| Compaction::open(keys, name, &bytes)) {
            Ok(c) => out.push(c),
            Err(Error::Corrupt { .. }) => damaged.push(name.clone()),
            // Removed by a prune since the listing: it was old enough not to matter.
            Err(Error::Missing(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    out.sort_by_key(|c| c.sequence);
    Ok((out, damaged))
}

/// The next record's sequence number, and the records a prune may now
/// delete (older than `KEEP_RECORDS`, never the newest).
pub fn next_sequence(records: &[Compaction], now: SystemTime) -> (u64, Vec<String>) {
    let next = records.iter().map(|c| c.sequence).max().unwrap_or(0) + 1;
    let newest = records.iter().map(|c| c.sequence).max();
    let old = records
        .iter()
        .filter(|c| Some(c.sequence) != newest)
        .filter(|c| c.time.is_some_and(|t| now.duration_since(t).unwrap_or_default() > KEEP_RECORDS))
        .map(|c| c.name.clone())
        .collect();
    (next, old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_changed_byte_is_refused() {
        let keys = Keys::generate();
        let c = Compaction {
            sequence: 3,
            time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_040_000)),
            deleted_packs: vec![[1; 32]],
            objects: vec![(format!("index/1796040000-{}", "ab".repeat(32)), vec![[2; 32], [3; 32]])],
            ..Default::default()
        };
        let (name, mut sealed) = c.seal(&keys);
        let back = Compaction::open(&keys, &name, &sealed).unwrap();
        assert_eq!((back.sequence, back.reset, back.time), (3, false, c.time));
        assert_eq!(back.deleted_packs, c.deleted_packs);
        assert_eq!(back.objects, c.objects);
        sealed[40] ^= 1;
        assert!(matches!(Compaction::open(&keys, &name, &sealed), Err(Error::Corrupt { .. })));
    }
}
