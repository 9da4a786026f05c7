//! `dedupe prune`: deletes the data no snapshot or archived log needs any
//! more, without a lock, beside running backups and log pushes. Packs are
//! first marked and deleted by a later prune once the mark is older than
//! `--keep-delete` (format-spec §20); packs mostly unused are repacked.

use crate::ctx::{human, Ctx};
use crate::exit::{Failure, R};
use dedupe_recovery::time::{before, parse_duration};
use dedupe_store::PruneOptions;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// How long a pack stays marked as unused before a later prune deletes
    /// it (at least 5s): longer than any backup or restore takes.
    #[arg(long, value_name = "DURATION", default_value = "1d")]
    keep_delete: String,
    /// Repack packs until at most this share of the kept bytes is unused (0% to 100%).
    #[arg(long, value_name = "PERCENT", default_value = "5%")]
    max_unused: String,
    /// Say what would be marked, deleted and repacked; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> R {
    let span = parse_duration(&a.keep_delete)?;
    let now = jiff::Timestamp::now();
    let keep_delete = std::time::Duration::try_from(now.duration_since(before(now, span)))
        .map_err(|_| Failure::usage(format!("--keep-delete {}: give a positive duration", a.keep_delete)))?;
    let max_unused = a
        .max_unused
        .trim()
        .trim_end_matches('%')
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .ok_or_else(|| Failure::usage(format!("--max-unused {}: give a percentage from 0% to 100%", a.max_unused)))?;
    let repo = ctx.indexed_whole()?;
    crate::interrupt::say("prune was cut short: nothing is lost; run it again to finish");
    let bar = ctx.progress();
    let report = repo.prune(&PruneOptions { keep_delete, max_unused: max_unused / 100.0, dry_run: a.dry_run }, &bar)?;
    bar.finish();
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&report).expect("json"));
        return Ok(());
    }
    let would = if a.dry_run { "would be " } else { "" };
    ctx.say(format!(
        "{} packs deleted ({} freed), {} marked ({}), {} repacked ({} copied), {} recovered, {} waiting; {}unused left: {}",
        report.packs_deleted,
        human(report.bytes_freed),
        report.packs_marked,
        human(report.bytes_marked),
        report.packs_repacked,
        human(report.bytes_repacked),
        report.packs_recovered,
        report.packs_waiting,
        would,
        human(report.unused_bytes_left),
    ));
    if a.dry_run {
        ctx.say("dry run: nothing was changed");
    }
    Ok(())
}
