//! `dedupe check`: is the repository whole, and can every snapshot and
//! archived log be read back? Every manifest is read afresh (the catalogue
//! is rebuilt), every referenced chunk looked up, every pack's presence and
//! size checked; `--read-data` reads packs whole and verifies every blob.
//! The archived logs are checked for gaps. Each finding is a line on
//! stdout; stderr gets the one-line verdict.

use crate::ctx::Ctx;
use crate::exit::{self, Failure, R};
use dedupe_store::{Repository, Severity, Subset};
use serde_json::json;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Also read every pack whole and verify every blob in it.
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read part of the packs: `K/N` (parts 1/N … N/N together read every
    /// pack once, so a nightly check can cover the repository in N nights) or `P%`.
    #[arg(long, value_name = "K/N|P%")]
    read_data_subset: Option<String>,
}

fn parse_subset(s: &str) -> Option<Subset> {
    if let Some(p) = s.strip_suffix('%') {
        let p: f64 = p.trim().parse().ok()?;
        return (p > 0.0 && p <= 100.0).then_some(Subset::Percent(p));
    }
    let (k, n) = s.split_once('/')?;
    let (k, n): (u64, u64) = (k.trim().parse().ok()?, n.trim().parse().ok()?);
    (n >= 1 && (1..=n).contains(&k)).then_some(Subset::Part { k, n })
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> R {
    let subset = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => Some(parse_subset(s).ok_or_else(|| {
            Failure::usage(format!("--read-data-subset {s}: give K/N with 1 <= K <= N (2/7), or a percentage (10%)"))
        })?),
        (None, true) => Some(Subset::ALL),
        (None, false) => None,
    };
    // Every manifest read again: damage on storage since it was catalogued is found.
    let repo = Repository::open(ctx.backend()?)?.unlock(ctx.password()?.as_bytes())?;
    let repo = repo.list_afresh(ctx.cache_base())?.indexed_whole()?;
    let bar = ctx.progress();
    let report = repo.check(subset, &bar)?;
    bar.finish();
    let timelines = dedupe_recovery::timeline(repo.catalogue(), None)?;
    let gaps: Vec<String> = timelines
        .iter()
        .flat_map(|t| {
            t.gaps.iter().map(move |g| format!("{}: {} missing from the archive", t.name, g.missing.join(", ")))
        })
        .collect();
    let problems = report.findings.iter().filter(|f| f.severity != Severity::Note).count();
    if ctx.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "whole": report.is_whole() && gaps.is_empty(),
                "snapshots": report.snapshots,
                "logs": report.logs,
                "chunks_referenced": report.chunks_referenced,
                "packs": report.packs,
                "packs_read": report.packs_read,
                "bytes_read": report.bytes_read,
                "findings": report.findings,
                "log_gaps": gaps,
            }))
            .expect("json")
        );
    } else {
        for f in &report.findings {
            let tag = match f.severity {
                Severity::Damaged => "damaged",
                Severity::Missing => "missing",
                Severity::Note => "note",
            };
            ctx.say(format!("{tag}: {} {}", f.object, f.problem));
        }
        for g in &gaps {
            ctx.say(format!("gap: {g}"));
        }
        ctx.say(format!(
            "checked {} snapshots, {} archived logs, {} chunks in {} packs{}",
            report.snapshots,
            report.logs,
            report.chunks_referenced,
            report.packs,
            if subset.is_some() {
                format!("; read {} packs ({})", report.packs_read, crate::ctx::human(report.bytes_read))
            } else {
                String::new()
            }
        ));
    }
    if problems > 0 {
        let damaged = report.findings.iter().any(|f| f.severity == Severity::Damaged);
        let first = report.findings.iter().find(|f| f.severity != Severity::Note).expect("a problem");
        return Err(Failure::new(
            if damaged { exit::CORRUPT } else { exit::MISSING },
            format!(
                "the repository is not whole: {problems} problem(s), the first: {} {} (`dedupe repair index` rebuilds the index from the packs; a new backup stores lost chunks again)",
                first.object, first.problem
            ),
        ));
    }
    if !gaps.is_empty() {
        return Err(Failure::new(
            exit::NOT_RESTORABLE,
            format!(
                "the log archive has {} gap(s), the first: {} (push the missing files if the server still has them)",
                gaps.len(),
                gaps[0]
            ),
        ));
    }
    Ok(())
}
