//! Marks (`marks/<id>`): the packs a `prune` found unreferenced, and when.
//!
//! Deleting is the one operation that can lose data, and prune runs without
//! a lock beside backups that may be about to reference any pack. So it
//! deletes in two phases (format-spec §20): it first writes a mark naming
//! the packs no snapshot or log references, and a later prune deletes a
//! marked pack only once the mark is older than its grace period and the
//! pack is still unreferenced. Meanwhile every writer treats a marked pack
//! as gone: it never deduplicates against it, and a writer that did so
//! before the mark appeared stores those chunks again before it commits
//! (`backup.rs`, `Guard`). Plaintext, sealed with associated data
//! `"dedupe marks v1"` and named by the BLAKE3 of the sealed bytes:
//! ```text
//! {"time": RFC 3339, "keep_delete": seconds, "packs": [hex pack id, ...]}
//! ```

use crate::backend::{Backend, ObjectKind};
use crate::crypto::{hex_id, parse_id, Id, Keys};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

pub const MARK_AAD: &[u8] = b"dedupe marks v1";

/// The shortest grace period a mark may give. Writers look for new marks
/// at least every `RECHECK` (less than half of it), so a mark is always
/// seen by every running writer well before the packs it names can go.
pub const MIN_KEEP_DELETE: Duration = Duration::from_secs(5);
/// How often a running writer lists the marks.
pub const RECHECK: Duration = Duration::from_secs(2);

#[derive(Serialize, Deserialize)]
struct Body {
    time: String,
    keep_delete: u64,
    packs: Vec<String>,
}

/// One mark object.
#[derive(Clone, Debug)]
pub struct Mark {
    pub name: String,
    pub time: SystemTime,
    pub keep_delete: Duration,
    pub packs: Vec<Id>,
}

impl Mark {
    /// The earliest moment a prune may delete the packs this mark names
    /// (a prune whose listing starts at or after it).
    pub fn deadline(&self) -> SystemTime {
        self.time + self.keep_delete
    }
}

/// Seals a mark; returns (object name, bytes).
pub fn seal_mark(keys: &Keys, time: SystemTime, keep_delete: Duration, packs: &[Id]) -> (String, Vec<u8>) {
    let body = Body {
        time: jiff::Timestamp::try_from(time).expect("a time after 1970").to_string(),
        keep_delete: keep_delete.as_secs(),
        packs: packs.iter().map(hex_id).collect(),
    };
    let sealed = keys.seal(MARK_AAD, &serde_json::to_vec(&body).expect("mark serializes"));
    (ObjectKind::Mark.name(&blake3::hash(&sealed).to_hex()), sealed)
}

pub fn open_mark(keys: &Keys, name: &str, sealed: &[u8]) -> Result<Mark> {
    crate::crypto::check_content_name(name, sealed)?;
    let plain = keys.open(MARK_AAD, sealed).ok_or_else(|| Error::corrupt(name, "fails authentication"))?;
    let body: Body = serde_json::from_slice(&plain).map_err(|e| Error::corrupt(name, format!("not a mark: {e}")))?;
    let time = body
        .time
        .parse::<jiff::Timestamp>()
        .map_err(|e| Error::corrupt(name, format!("its time is not RFC 3339: {e}")))?;
    let packs = body.packs.iter().map(|p| parse_id(p)).collect::<Option<Vec<Id>>>();
    Ok(Mark {
        name: name.to_string(),
        time: SystemTime::from(time),
        keep_delete: Duration::from_secs(body.keep_delete),
        packs: packs.ok_or_else(|| Error::corrupt(name, "names a pack id that is not hex"))?,
    })
}

/// Every mark in the repository, as one listing found them.
#[derive(Default)]
pub struct Marks {
    pub marks: Vec<Mark>,
    /// Mark objects that could not be read: they protect nothing and
    /// permit nothing (prune marks their packs again if they are still
    /// unreferenced, and removes them).
    pub damaged: Vec<(String, Error)>,
    /// Each marked pack with the earliest mark naming it.
    first: HashMap<Id, usize>,
}

impl Marks {
    /// Lists `marks/` and reads every mark not in `known` (by name); the
    /// marks in `known` are kept as they are.
    pub fn list(backend: &dyn Backend, keys: &Keys, known: Option<&Marks>) -> Result<Marks> {
        let names: Vec<String> = backend.list(ObjectKind::Mark)?.into_iter().map(|(n, _)| n).collect();
        Marks::read(backend, keys, names, known)
    }

    /// Reads the named marks (a listing made elsewhere), reusing `known`'s.
    pub fn read(backend: &dyn Backend, keys: &Keys, names: Vec<String>, known: Option<&Marks>) -> Result<Marks> {
        let old: HashMap<&str, &Mark> =
            known.map(|k| k.marks.iter().map(|m| (m.name.as_str(), m)).collect()).unwrap_or_default();
        let mut out = Marks::default();
        let new: Vec<String> = names.iter().filter(|n| !old.contains_key(n.as_str())).cloned().collect();
        for n in &names {
            if let Some(m) = old.get(n.as_str()) {
                out.marks.push((*m).clone());
            }
        }
        for (name, got) in new.iter().zip(backend.get_many(&new)) {
            match got.and_then(|b| open_mark(keys, name, &b)) {
                Ok(m) => out.marks.push(m),
                // Deleted since the listing: its packs went with it.
                Err(Error::Missing(_)) => {}
                Err(e @ Error::Corrupt { .. }) => out.damaged.push((name.clone(), e)),
                Err(e) => return Err(e),
            }
        }
        for (i, m) in out.marks.iter().enumerate() {
            for p in &m.packs {
                let e = out.first.entry(*p).or_insert(i);
                if out.marks[*e].time > m.time {
                    *e = i;
                }
            }
        }
        Ok(out)
    }

    /// The readable marks of `other` (damaged ones are not carried over).
    pub fn copy_of(other: &Marks) -> Marks {
        Marks { marks: other.marks.clone(), damaged: Vec::new(), first: other.first.clone() }
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// Every marked pack.
    pub fn pack_ids(&self) -> impl Iterator<Item = &Id> {
        self.first.keys()
    }

    pub fn contains(&self, pack: &Id) -> bool {
        self.first.contains_key(pack)
    }

    /// The earliest mark naming `pack`.
    pub fn first_mark(&self, pack: &Id) -> Option<&Mark> {
        self.first.get(pack).map(|&i| &self.marks[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_name_their_content() {
        let keys = Keys::generate();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (name, sealed) = seal_mark(&keys, t, Duration::from_secs(86400), &[[7; 32], [9; 32]]);
        let m = open_mark(&keys, &name, &sealed).unwrap();
        assert_eq!(m.time, t);
        assert_eq!(m.deadline(), t + Duration::from_secs(86400));
        assert_eq!(m.packs, vec![[7; 32], [9; 32]]);
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(matches!(open_mark(&keys, &name, &bad), Err(Error::Corrupt { .. })));
    }
}
