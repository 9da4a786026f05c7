//! `dedupe catalogue rebuild`: the local catalogue thrown away and read again.

use crate::ctx::Ctx;
use crate::exit::R;
use dedupe_store::Kind;
use serde_json::json;

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Throw the local catalogue away and rebuild it from the repository.
    Rebuild,
}

pub(crate) fn run(ctx: &Ctx, command: Command) -> R {
    match command {
        Command::Rebuild => {
            let listed = ctx.unlocked()?.list_afresh(ctx.cache_base())?;
            let snapshots = listed.catalogue().list(Kind::Snapshot, None)?.len();
            let logs = listed.catalogue().list(Kind::Log, None)?.len();
            let damaged = listed.damaged().count();
            if ctx.json {
                outln!("{}", json!({"snapshots": snapshots, "logs": logs, "damaged": damaged}));
            }
            ctx.say(format!(
                "catalogue rebuilt from the repository: {snapshots} snapshots, {logs} archived logs{}",
                if damaged > 0 { format!(", {damaged} damaged manifests left out") } else { String::new() }
            ));
            Ok(())
        }
    }
}
