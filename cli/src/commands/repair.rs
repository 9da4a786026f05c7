//! `dedupe repair index`: the index rebuilt from the packs' own trailers,
//! leaving out lost and damaged packs (each reported). `dedupe repair
//! snapshots`: the snapshots and logs that lost chunks, and with
//! `--forget`, their manifests removed.

use crate::ctx::Ctx;
use crate::exit::{self, Failure, R};

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Rebuild the index from the packs' trailers, checking every pack;
    /// lost and damaged packs are left out (the next backup stores their chunks again).
    Index,
    /// List the snapshots and archived logs that cannot be restored whole
    /// (run `repair index` first); exits 8 when there are some.
    Snapshots {
        /// Remove them (their manifests), so that prune and new backups can go on.
        #[arg(long)]
        forget: bool,
    },
}

pub(crate) fn run(ctx: &Ctx, command: Command) -> R {
    match command {
        Command::Index => index(ctx),
        Command::Snapshots { forget } => snapshots(ctx, forget),
    }
}

fn index(ctx: &Ctx) -> R {
    let repo = ctx.unlocked()?;
    let bar = ctx.progress();
    let report = repo.repair_index(&bar);
    bar.finish();
    let report = report?;
    repo.forget_damaged_packs(ctx.cache_base());
    // The old cache names index objects that are gone now; it rebuilds itself on open.
    let _ = repo.list(ctx.cache_base())?.indexed()?;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        for d in &report.dropped {
            ctx.say(format!("dropped: {} {}", d.object, d.problem));
        }
    }
    ctx.say(format!(
        "index rebuilt from {} packs ({} chunks): {} index objects written, {} removed{}",
        report.packs,
        report.chunks,
        report.index_objects_written,
        report.index_objects_removed,
        match report.dropped.len() {
            0 => String::new(),
            n => format!("; {n} packs left out or cut down: run `dedupe repair snapshots`"),
        }
    ));
    Ok(())
}

fn snapshots(ctx: &Ctx, forget: bool) -> R {
    let repo = ctx.indexed()?;
    let broken = repo.broken_snapshots(forget)?;
    if ctx.json {
        outln!("{}", serde_json::json!({"forgotten": forget, "broken": broken}));
    } else {
        for b in &broken {
            ctx.say(format!("{}: {} {}", if forget { "forgotten" } else { "broken" }, b.object, b.problem));
        }
    }
    match (broken.len(), forget) {
        (0, _) => {
            ctx.say("every snapshot and archived log can be restored whole");
            Ok(())
        }
        (n, true) => {
            ctx.say(format!("{n} snapshots and logs that had lost chunks were forgotten"));
            Ok(())
        }
        (n, false) => Err(Failure::new(
            exit::MISSING,
            format!("{n} snapshots and logs have lost chunks: back up again, then `dedupe repair snapshots --forget`"),
        )),
    }
}
