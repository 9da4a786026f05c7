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
    ctx.say(format!(
        "{} snapshots, {} in all; {} unique chunks ({}), stored in {} packs as {}\ndeduplication {:.2}x, compression {:.2}x",
        s.snapshots,
        human(s.logical_bytes),
        s.unique_chunks,
        human(s.unique_bytes),
        s.packs,
        human(s.stored_bytes),
        s.dedup_ratio,
        s.compression_ratio
    ));
    Ok(())
}
