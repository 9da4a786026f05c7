//! `check`: is the repository whole? Every manifest decodes; every chunk a
//! snapshot or archived log references (its tree, list chunks, data and
//! producer log) is in the index; every pack the index names exists and is
//! long enough for its blobs; packs no index names are reported. With
//! `read_data`, the selected packs are read whole: each must match its name,
//! its trailer must open, and every blob must decrypt to a chunk whose
//! keyed hash is its id.
//!
//! Findings are values, one per damaged or missing object, named; nothing
//! is repaired here (`repair index` and the next backup do that).

use crate::backend::ObjectKind;
use crate::blob::Opened;
use crate::crypto::{hex_id, parse_id, Id};
use crate::error::{Error, Result};
use crate::pack::{pack_name, read_entries, PackEntry};
use crate::progress::Progress;
use crate::repo::{Indexed, Kind};
use crate::snapshot::{decode_records, Tree, HOLE};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// Which packs `read_data` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// Part `k` of `n` (1-based): the packs whose id, as a number, is
    /// `k - 1` modulo `n`. Parts 1/n … n/n together read every pack once.
    Part { k: u64, n: u64 },
    /// About this percentage of the packs, chosen at random.
    Percent(f64),
}

impl Subset {
    pub const ALL: Subset = Subset::Part { k: 1, n: 1 };

    fn selects(&self, pack: &Id) -> bool {
        let x = u64::from_le_bytes(pack[..8].try_into().expect("8"));
        match *self {
            Subset::Part { k, n } => x % n == k - 1,
            Subset::Percent(p) => rand::random::<f64>() * 100.0 < p,
        }
    }
}

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Bytes that are not what was written.
    Damaged,
    /// An object (or a chunk) that should be there and is not.
    Missing,
    /// Not an error: worth knowing (packs no index names yet).
    Note,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The object at fault (`data/ab/…`, `snapshots/…`, `index/…`).
    pub object: String,
    pub problem: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: u64,
    pub logs: u64,
    pub chunks_referenced: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// True when nothing is damaged or missing (notes do not count).
    pub fn is_whole(&self) -> bool {
        self.findings.iter().all(|f| f.severity == Severity::Note)
    }
}

/// Chunks read at once while walking trees and list chunks.
const WALK_GROUP: usize = 256;

impl Indexed {
    /// Checks the repository as listed (see the module doc).
    pub fn check(&self, read_data: Option<Subset>, progress: &dyn Progress) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        for (kind, e) in self.damaged() {
            let (object, problem) = match e {
                Error::Corrupt { object, reason } => (object.clone(), reason.clone()),
                other => (format!("{} manifest", kind.prefix()), other.to_string()),
            };
            report.findings.push(Finding { severity: Severity::Damaged, object, problem });
        }
        self.check_index_objects(&mut report)?;
        let referenced = self.walk(&mut report)?;
        report.chunks_referenced = referenced.len() as u64;
        self.check_packs(&mut report, read_data, progress)?;
        // Packs found damaged or missing are remembered on this host, so
        // backups stop deduplicating against them before `repair index`.
        let bad: Vec<Id> = report
            .findings
            .iter()
            .filter(|f| f.severity != Severity::Note)
            .filter_map(|f| f.object.strip_prefix("data/").and_then(|rest| parse_id(ObjectKind::Pack.id_of(rest))))
            .collect();
        remember_damaged(&self.cache_dir(self.cache_base()), &bad);
        Ok(report)
    }

    /// Reads and verifies every index object again (the local cache holds
    /// what they said when they were merged, not what storage holds now).
    fn check_index_objects(&self, report: &mut CheckReport) -> Result<()> {
        let listed = self.backend().list(ObjectKind::Index)?;
        for group in crate::index::read_groups(&listed) {
            let names: Vec<String> = group.iter().map(|(n, _)| n.clone()).collect();
            for (name, got) in names.iter().zip(self.backend().get_many(&names)) {
                match got.and_then(|b| crate::index::open_index_object(self.keys(), name, &b)) {
                    Ok(_) | Err(Error::Missing(_)) => {}
                    Err(Error::Corrupt { reason, .. }) => report.findings.push(Finding {
                        severity: Severity::Damaged,
                        object: name.clone(),
                        problem: format!("{reason}: the chunks it lists look unknown; run `dedupe repair index`"),
                    }),
                    Err(e) => return Err(e),
                }
            }
        }
        let records: Vec<String> = self.backend().list(ObjectKind::Compaction)?.into_iter().map(|(n, _)| n).collect();
        for name in crate::compaction::read(self.backend(), self.keys(), &records)?.1 {
            report.findings.push(Finding {
                severity: Severity::Damaged,
                object: name,
                problem:
                    "fails verification: every index cache rebuilds itself until it is gone; run `dedupe repair index`"
                        .into(),
            });
        }
        Ok(())
    }

    /// Walks every manifest's tree and list chunks; returns the chunks
    /// referenced. Trees, then list chunks, are read in groups (a remote
    /// store answers a group in about one round trip), each once however
    /// many manifests share it.
    pub(crate) fn walk(&self, report: &mut CheckReport) -> Result<HashSet<Id>> {
        let mut manifests = Vec::new();
        for kind in [Kind::Snapshot, Kind::Log] {
            let all = self.catalogue().list(kind, None)?;
            match kind {
                Kind::Snapshot => report.snapshots = all.len() as u64,
                Kind::Log => report.logs = all.len() as u64,
            }
            manifests.extend(all.into_iter().map(|(id, m)| (kind.object_kind().name(&id), m)));
        }
        let mut seen: HashSet<Id> = HashSet::new();
        let mut missing = |object: &str, id: &Id, what: &str, report: &mut CheckReport| {
            report.findings.push(Finding {
                severity: Severity::Missing,
                object: object.to_string(),
                problem: format!("{what} chunk {} is not in the index: run `dedupe repair index`", hex_id(id)),
            });
        };
        // Each tree once, with the first manifest naming it.
        let mut trees: Vec<(Id, &str)> = Vec::new();
        for (object, m) in &manifests {
            if let Some(log) = m.log.as_deref().and_then(parse_id) {
                if seen.insert(log) && self.index.lookup(&log).is_none() {
                    missing(object, &log, "its producer log", report);
                }
            }
            match parse_id(&m.tree) {
                Some(t) if seen.insert(t) => trees.push((t, object)),
                Some(_) => {}
                None => report.findings.push(Finding {
                    severity: Severity::Damaged,
                    object: object.clone(),
                    problem: "its tree id is not hex".into(),
                }),
            }
        }
        let mut lists: Vec<(Id, &str, &str)> = Vec::new();
        let mut tree_of: HashMap<Id, Tree> = HashMap::new();
        for (id, object, bytes) in self.read_group(&trees, report, &mut missing, "its tree")? {
            match serde_json::from_slice::<Tree>(&bytes) {
                Ok(t) => {
                    tree_of.insert(id, t);
                }
                Err(e) => report.findings.push(Finding {
                    severity: Severity::Damaged,
                    object: object.to_string(),
                    problem: format!("its tree {} is not a tree: {e}", hex_id(&id)),
                }),
            }
        }
        for (object, m) in &manifests {
            let Some(tree) = parse_id(&m.tree).and_then(|t| tree_of.get(&t)) else { continue };
            for node in &tree.nodes {
                for h in &node.content {
                    match parse_id(h) {
                        Some(id) if seen.insert(id) => lists.push((id, object, &node.path)),
                        Some(_) => {}
                        None => report.findings.push(Finding {
                            severity: Severity::Damaged,
                            object: object.clone(),
                            problem: format!("file {} names a content id that is not hex", node.path),
                        }),
                    }
                }
            }
        }
        let owners: HashMap<Id, &str> = lists.iter().map(|(id, _, path)| (*id, *path)).collect();
        let list_objects: Vec<(Id, &str)> = lists.iter().map(|(id, object, _)| (*id, *object)).collect();
        for (id, object, bytes) in self.read_group(&list_objects, report, &mut missing, "a list")? {
            let path = owners[&id];
            match decode_records(&bytes) {
                Some(recs) => {
                    for (data, _) in recs {
                        if data != HOLE && seen.insert(data) && self.index.lookup(&data).is_none() {
                            missing(object, &data, &format!("{path}:"), report);
                        }
                    }
                }
                None => report.findings.push(Finding {
                    severity: Severity::Damaged,
                    object: object.to_string(),
                    problem: format!("the list chunk {} of {path} is not whole records", hex_id(&id)),
                }),
            }
        }
        Ok(seen)
    }

    /// Reads chunks (each with the manifest it is reported under) in groups;
    /// the ones missing from the index or damaged become findings, and the
    /// others are returned. A storage failure stops the check.
    #[allow(clippy::type_complexity)]
    fn read_group<'o>(
        &self,
        wanted: &[(Id, &'o str)],
        report: &mut CheckReport,
        missing: &mut impl FnMut(&str, &Id, &str, &mut CheckReport),
        what: &str,
    ) -> Result<Vec<(Id, &'o str, Vec<u8>)>> {
        let mut out = Vec::new();
        for group in wanted.chunks(WALK_GROUP) {
            let (known, unknown): (Vec<_>, Vec<_>) = group.iter().partition(|(id, _)| self.index.lookup(id).is_some());
            for &(id, object) in unknown {
                missing(object, &id, what, report);
            }
            let ids: Vec<Id> = known.iter().map(|(id, _)| *id).collect();
            let chunks: Vec<Result<Vec<u8>>> = match self.read_chunks(&ids) {
                Ok(c) => c.into_iter().map(Ok).collect(),
                // Something in the group is damaged: one by one, to name it.
                Err(_) => ids.iter().map(|id| self.read_chunk(id)).collect(),
            };
            for (&(id, object), chunk) in known.into_iter().zip(chunks) {
                match chunk {
                    Ok(b) => out.push((id, object, b)),
                    Err(e) => report.findings.push(finding(object, what, e)?),
                }
            }
        }
        Ok(out)
    }

    fn check_packs(&self, report: &mut CheckReport, read_data: Option<Subset>, progress: &dyn Progress) -> Result<()> {
        let stored: HashMap<Id, u64> = self
            .backend()
            .list(ObjectKind::Pack)?
            .into_iter()
            .filter_map(|(n, size)| parse_id(ObjectKind::Pack.id_of(&n)).map(|id| (id, size)))
            .collect();
        let extents = self.index.pack_extents();
        report.packs = extents.len() as u64;
        for (pack, end) in &extents {
            match stored.get(pack) {
                None => report.findings.push(Finding {
                    severity: Severity::Missing,
                    object: pack_name(pack),
                    problem: "is in the index but not in the repository: run `dedupe repair index`, then back up again"
                        .into(),
                }),
                Some(size) if size < end => report.findings.push(Finding {
                    severity: Severity::Damaged,
                    object: pack_name(pack),
                    problem: format!("is {size} bytes, shorter than the {end} its index entries need"),
                }),
                Some(_) => {}
            }
        }
        for pack in stored.keys().filter(|p| !extents.contains_key(*p)) {
            report.findings.push(Finding {
                severity: Severity::Note,
                object: pack_name(pack),
                problem: "is in no index object (a backup running now, or one cut short)".into(),
            });
        }
        let Some(subset) = read_data else { return Ok(()) };
        let mut chosen: Vec<Id> = stored.keys().filter(|p| subset.selects(p)).copied().collect();
        chosen.sort();
        progress.total(chosen.iter().map(|p| stored[p]).sum());
        let mut done = 0u64;
        for group in chosen.chunks(self.backend().connections().max(2)) {
            let names: Vec<String> = group.iter().map(pack_name).collect();
            let got = self.backend().get_many(&names);
            let found: Vec<Vec<Finding>> = group
                .par_iter()
                .zip(got.into_par_iter())
                .map(|(pack, bytes)| self.verify_pack(pack, bytes))
                .collect::<Result<_>>()?;
            for (pack, f) in group.iter().zip(found) {
                report.findings.extend(f);
                done += stored[pack];
                report.packs_read += 1;
            }
            report.bytes_read = done;
            progress.done(done);
        }
        Ok(())
    }

    /// The plaintexts of deltas' bases, read together; when that fails,
    /// each alone, so that one damaged base names only the deltas on it.
    fn read_bases(&self, bases: &[Id]) -> Vec<std::result::Result<Vec<u8>, String>> {
        match self.read_chunks(bases) {
            Ok(plain) => plain.into_iter().map(Ok).collect(),
            Err(_) => bases.iter().map(|b| self.read_chunk(b).map_err(|e| e.to_string())).collect(),
        }
    }

    /// Reads one pack whole and checks every blob in it.
    fn verify_pack(&self, pack: &Id, bytes: Result<bytes::Bytes>) -> Result<Vec<Finding>> {
        let name = pack_name(pack);
        let entries = match bytes.and_then(|b| read_entries(self.keys(), pack, &b).map(|e| (b, e))) {
            Ok(x) => x,
            Err(e) => return Ok(vec![finding(&name, "the pack", e)?]),
        };
        let (bytes, entries) = entries;
        let mut out = Vec::new();
        let damaged = |e: &PackEntry, why: String| Finding {
            severity: Severity::Damaged,
            object: name.clone(),
            problem: format!("chunk {} {why}", hex_id(&e.id)),
        };
        // Deltas are verified through their bases, read together afterwards.
        let mut deltas: Vec<(&PackEntry, Id, Vec<u8>)> = Vec::new();
        for e in &entries {
            let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            match crate::blob::open_blob(self.keys(), &e.id, sealed, e.raw_len as usize) {
                Ok(Opened::Plain(plain)) if self.keys().chunk_id(&plain) == e.id => {}
                Ok(Opened::Delta { base, frame }) if e.base == Some(base) => deltas.push((e, base, frame)),
                Ok(Opened::Delta { .. }) => {
                    out.push(damaged(e, "is a delta on another base than its pack's trailer says".into()))
                }
                _ => out.push(damaged(e, "does not decrypt to its id".into())),
            }
        }
        let bases: Vec<Id> = deltas.iter().map(|(_, b, _)| *b).collect();
        for ((e, base, frame), plain) in deltas.iter().zip(self.read_bases(&bases)) {
            match plain {
                Ok(p) => {
                    let ok = crate::blob::apply_delta(frame, &p, e.raw_len as usize)
                        .is_ok_and(|plain| self.keys().chunk_id(&plain) == e.id);
                    if !ok {
                        out.push(damaged(e, format!("does not decode to its id through its base {}", hex_id(base))));
                    }
                }
                Err(why) => {
                    out.push(damaged(e, format!("is a delta whose base {} cannot be read: {why}", hex_id(base))))
                }
            }
        }
        Ok(out)
    }
}

/// The file in a repository's cache naming packs `check` found damaged or
/// missing, one hex id a line.
const DAMAGED_PACKS: &str = "damaged-packs";

/// Adds `packs` to the packs this host knows damaged (best effort: it only
/// spares deduplicating against them).
fn remember_damaged(cache_dir: &std::path::Path, packs: &[Id]) {
    if packs.is_empty() {
        return;
    }
    let mut all = known_damaged(cache_dir);
    all.extend(packs.iter().copied());
    let text: String = all.iter().map(|p| format!("{}\n", hex_id(p))).collect();
    let _ = std::fs::write(cache_dir.join(DAMAGED_PACKS), text);
}

/// The packs `check` found damaged or missing on this host, since the last `repair index`.
pub(crate) fn known_damaged(cache_dir: &std::path::Path) -> HashSet<Id> {
    std::fs::read_to_string(cache_dir.join(DAMAGED_PACKS))
        .map(|t| t.lines().filter_map(|l| parse_id(l.trim())).collect())
        .unwrap_or_default()
}

/// Forgets the damaged packs (`repair index` has dropped them from the index).
pub(crate) fn forget_damaged(cache_dir: &std::path::Path) {
    let _ = std::fs::remove_file(cache_dir.join(DAMAGED_PACKS));
}

/// A finding from an error met while reading `what` of `object`; an error
/// that says nothing about the repository (storage unreachable) is returned.
fn finding(object: &str, what: &str, e: Error) -> Result<Finding> {
    Ok(match e {
        Error::Corrupt { object: o, reason } => Finding { severity: Severity::Damaged, object: o, problem: reason },
        Error::Missing(o) => {
            Finding { severity: Severity::Missing, object: o, problem: format!("is missing ({what} of {object})") }
        }
        Error::UnknownChunk(c) => Finding {
            severity: Severity::Missing,
            object: object.to_string(),
            problem: format!("{what}: chunk {c} is not in the index"),
        },
        other => return Err(other),
    })
}
