//! `dedupe catalogue rebuild`: the local catalogue thrown away and read again.

use crate::ctx::Ctx;
use crate::exit::R;

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Throw the local catalogue away and rebuild it from the repository.
    Rebuild,
}

pub(crate) fn run(ctx: &Ctx, command: Command) -> R {
    match command {
        Command::Rebuild => {
            ctx.unlocked()?.list_afresh(ctx.cache_base())?;
            ctx.say("catalogue rebuilt from the repository");
            Ok(())
        }
    }
}
