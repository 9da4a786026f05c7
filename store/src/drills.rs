//! Drill records (`drills/<id>`): what `dedupe drill` found when it restored
//! a snapshot and started a server on it, kept in the repository so every
//! host (and `dedupe snapshots`) sees which backups were drilled, when, and
//! how it went. JSON sealed with associated data `"dedupe drill v1"`, named
//! by the BLAKE3 of the sealed bytes (format-spec §18.2). A record names its
//! snapshot by id; `forget` removes the records of the snapshots it removes.

use crate::backend::{Backend, ObjectKind};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub const DRILL_AAD: &[u8] = b"dedupe drill v1";

/// One drill of one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrillRecord {
    /// The snapshot restored (hex id).
    pub snapshot: String,
    /// Its server's name.
    pub name: String,
    /// When the drill ended (RFC 3339).
    pub time: String,
    /// The host that ran it.
    pub hostname: String,
    /// The point in time drilled (`--until`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    pub ok: bool,
    /// What failed, in one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub restore_seconds: f64,
    pub prepare_seconds: f64,
    pub start_seconds: f64,
    pub check_seconds: f64,
    pub tables_checked: u64,
}

/// Stores `record`; returns its object name.
pub fn record_drill(backend: &dyn Backend, keys: &Keys, record: &DrillRecord) -> Result<String> {
    let sealed = keys.seal(DRILL_AAD, &serde_json::to_vec(record).expect("a drill record serializes"));
    let name = ObjectKind::Drill.name(&blake3::hash(&sealed).to_hex());
    backend.put(&name, sealed.into())?;
    Ok(name)
}

fn open_drill(keys: &Keys, name: &str, sealed: &[u8]) -> Result<DrillRecord> {
    crate::crypto::check_content_name(name, sealed)?;
    let plain = keys.open(DRILL_AAD, sealed).ok_or_else(|| Error::corrupt(name, "fails authentication"))?;
    serde_json::from_slice(&plain).map_err(|e| Error::corrupt(name, format!("not a drill record: {e}")))
}

/// Every readable drill record with its object name, oldest first, and the
/// damaged ones apart (named, never fatal: a record is a report, not data).
pub type Drills = (Vec<(String, DrillRecord)>, Vec<Error>);

pub fn drills(backend: &dyn Backend, keys: &Keys) -> Result<Drills> {
    let names: Vec<String> = backend.list(ObjectKind::Drill)?.into_iter().map(|(n, _)| n).collect();
    let (mut out, mut damaged) = (Vec::new(), Vec::new());
    for (name, got) in names.iter().zip(backend.get_many(&names)) {
        match got.and_then(|b| open_drill(keys, name, &b)) {
            Ok(r) => out.push((name.clone(), r)),
            Err(Error::Missing(_)) => {}
            Err(e @ Error::Corrupt { .. }) => damaged.push(e),
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.1.time.cmp(&b.1.time));
    Ok((out, damaged))
}
