//! `dedupe repair index`: the index rebuilt from the packs' own trailers.

use crate::ctx::Ctx;
use crate::exit::R;

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Rebuild the index from the packs' trailers, checking every pack.
    Index,
}

pub(crate) fn run(ctx: &Ctx, command: Command) -> R {
    let Command::Index = command;
    let repo = ctx.unlocked()?;
    let bar = ctx.progress();
    let report = repo.repair_index(&bar);
    bar.finish();
    let report = report?;
    // The old cache names index objects that are gone now; it rebuilds itself on open.
    let _ = repo.list(ctx.cache_base())?.indexed()?;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&report).expect("json"));
    }
    ctx.say(format!(
        "index rebuilt from {} packs ({} chunks): {} index objects written, {} removed",
        report.packs, report.chunks, report.index_objects_written, report.index_objects_removed
    ));
    Ok(())
}
