//! `dedupe stats`: repository size, deduplication and compression.

use crate::ctx::{human, Ctx};
use crate::exit::R;

pub(crate) fn run(ctx: &Ctx) -> R {
    let repo = ctx.indexed()?;
    let s = repo.stats()?;
    if ctx.json {
        outln!("{}", serde_json::to_string_pretty(&s).expect("json"));
        return Ok(());
    }
    let x = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}x"));
    ctx.say(format!(
        "{} snapshots and {} archived logs, {} in all; {} unique chunks ({}), stored in {} packs as {}\n\
         deduplication {}, compression {}, together {}",
        s.snapshots,
        s.logs,
        human(s.logical_bytes),
        s.unique_chunks,
        human(s.unique_bytes),
        s.packs,
        human(s.stored_bytes),
        x(s.ratios.dedup_ratio),
        x(s.ratios.compression_ratio),
        x(s.ratios.ratio)
    ));
    if s.delta_chunks > 0 {
        ctx.say(format!(
            "{} changed pages stored as deltas on their previous version: {} in {}",
            s.delta_chunks,
            human(s.delta_bytes),
            human(s.delta_bytes_stored)
        ));
    }
    Ok(())
}
