//! `dedupe log SNAPSHOT`: the producer's output kept with a snapshot made with --command.

use crate::ctx::{short, Ctx};
use crate::exit::{self, Failure, R};
use std::io::Write;

pub(crate) fn run(ctx: &Ctx, spec: &str, name: Option<&str>) -> R {
    let repo = ctx.indexed()?;
    let (id, manifest) = repo.find_snapshot(spec, name)?;
    let Some(bytes) = repo.producer_log(&manifest)? else {
        return Err(Failure::new(
            exit::NO_SNAPSHOT,
            format!("snapshot {} has no producer log (it was not made with --command)", short(&id)),
        ));
    };
    if ctx.json {
        outln!("{}", serde_json::json!({"snapshot": id, "log": String::from_utf8_lossy(&bytes)}));
        return Ok(());
    }
    if let Err(e) = std::io::stdout().write_all(&bytes) {
        exit::output_failed(e);
    }
    Ok(())
}
