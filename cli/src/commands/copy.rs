//! `dedupe copy --from-repo SRC`: snapshots and archived logs from another
//! repository into `--repo` (restic's convention: the target is the one
//! every command names). What is copied and how: `recovery::copy`.

use crate::ctx::{human, short, Ctx};
use crate::exit::{Failure, R};
use crate::password::PasswordSource;
use dedupe_recovery::copy::{copy, Copied, Selection};
use dedupe_store::backend::Location;
use dedupe_store::Kind;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The repository to copy from (a path or a URL, like --repo).
    #[arg(long, env = "DEDUPE_FROM_REPO")]
    from_repo: String,
    /// Read the source repository's password from this file (first line).
    #[arg(long, env = "DEDUPE_FROM_PASSWORD_FILE")]
    from_password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the source's password.
    #[arg(long, env = "DEDUPE_FROM_PASSWORD_COMMAND")]
    from_password_command: Option<String>,
    /// Copy only this server's snapshots and logs (repeatable; default: every name).
    #[arg(long)]
    name: Vec<String>,
    /// Copy only these snapshots (ids, id prefixes or `latest`), without logs.
    snapshots: Vec<String>,
}

pub(crate) fn run(ctx: &Ctx, args: Args) -> R {
    let from_location = Location::parse(&args.from_repo).map_err(|e| Failure::usage(e.to_string()))?;
    let password = PasswordSource {
        file: args.from_password_file.as_deref(),
        command: args.from_password_command.as_deref(),
        env: "DEDUPE_FROM_PASSWORD",
    }
    .get()?;
    let from = ctx.other_indexed(&from_location, &password)?;
    let mut to = ctx.indexed()?;
    if from.config.id == to.config.id {
        return Err(Failure::usage("--from-repo and --repo are the same repository: copy needs two"));
    }
    crate::interrupt::say("what was copied so far stays in the target: run copy again to finish");
    let sel = Selection { names: args.name, ids: args.snapshots };
    let bar = ctx.progress();
    let lines = !ctx.quiet && !ctx.json;
    let mut say = |c: &Copied| {
        if !lines {
            return;
        }
        let what = match c.kind {
            Kind::Snapshot => "snapshot",
            Kind::Log => "log",
        };
        if let Some(id) = &c.target_id {
            bar.say(&format!(
                "copied {what} {} ({}, {}) as {}: {} new of {}",
                short(&c.source_id),
                c.name,
                c.time.parse::<jiff::Timestamp>().map(dedupe_recovery::time::shown).unwrap_or_else(|_| c.time.clone()),
                short(id),
                human(c.new_bytes),
                human(c.bytes)
            ));
        }
    };
    let copied = copy(&from, &mut to, &sel, &bar, &mut say);
    bar.finish();
    let copied = copied?;
    let new: Vec<&Copied> = copied.iter().filter(|c| c.target_id.is_some()).collect();
    if ctx.json {
        let rows: Vec<_> = copied
            .iter()
            .map(|c| {
                json!({
                    "kind": match c.kind { Kind::Snapshot => "snapshot", Kind::Log => "log" },
                    "name": c.name,
                    "time": c.time,
                    "source_id": c.source_id,
                    "target_id": c.target_id,
                    "status": if c.target_id.is_some() { "copied" } else { "already there" },
                    "bytes": c.bytes,
                    "new_bytes": c.new_bytes,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows).expect("json"));
        return Ok(());
    }
    ctx.say(format!(
        "copied {} of {} snapshots and logs from {} ({} new in {}); {} were already there",
        new.len(),
        copied.len(),
        from_location.display(),
        human(new.iter().map(|c| c.new_bytes).sum()),
        ctx.location.display(),
        copied.len() - new.len()
    ));
    Ok(())
}
