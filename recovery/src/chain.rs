//! Incremental chains (mariabackup --incremental): an incremental holds the
//! changes from its `from_lsn`, so it needs the snapshot of the same name
//! that ends at that LSN, and so on back to a full backup.

use crate::error::{Error, Result};
use crate::time::manifest_time;
use dedupe_ingest::facts::SnapshotFacts;
use dedupe_store::{Catalogue, Kind, Manifest};

/// The chain that ends at snapshot `id`: full first, `id` last (just `id`
/// when it is not incremental).
pub fn chain(cat: &Catalogue, id: &str, m: &Manifest) -> Result<Vec<(String, Manifest)>> {
    let snaps = cat.list(Kind::Snapshot, Some(&m.name))?;
    let mut out = vec![(id.to_string(), m.clone())];
    loop {
        let (_, cur) = out.last().expect("not empty");
        let facts = SnapshotFacts::of(cur);
        if !facts.is_incremental() {
            break;
        }
        let from = facts.mysql.as_ref().and_then(|my| my.from_lsn).unwrap_or(0);
        let parent = snaps.iter().rev().find(|(_, p)| {
            SnapshotFacts::of(p).mysql.and_then(|my| my.to_lsn) == Some(from) && manifest_time(p) < manifest_time(cur)
        });
        match parent {
            Some((pid, p)) => out.push((pid.clone(), p.clone())),
            None => {
                return Err(Error::NotRestorable(format!(
                    "the incremental chain of {} is broken: no snapshot of {} ends at LSN {from}, where incremental {} starts",
                    short(id),
                    m.name,
                    out.last().map(|(i, _)| short(i)).unwrap_or_default()
                )))
            }
        }
        if out.len() > 10_000 {
            return Err(Error::Corrupt("the incremental chain loops".into()));
        }
    }
    out.reverse();
    Ok(out)
}

/// The first eight characters of an id, as users see it.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}
