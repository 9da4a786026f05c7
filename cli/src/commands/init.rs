//! `dedupe init`: a new repository.

use crate::ctx::{short, Ctx};
use crate::exit::{self, Failure, R};
use crate::password::new_password;
use dedupe_store::backend::Location;
use dedupe_store::{KdfParams, Repository};
use serde_json::json;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Let the repository directory's group read it (0750/0640 instead of
    /// 0700/0600): for a database server's archive_command running as
    /// another user of that group. Members can then read every backup in it
    /// whose password they have.
    #[arg(long)]
    group_readable: bool,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> R {
    // Refused before a password is asked or anything created.
    let kdf = KdfParams::from_env().map_err(Failure::usage)?;
    let password = if ctx.password_file.is_some()
        || ctx.password_command.is_some()
        || std::env::var_os("DEDUPE_PASSWORD").is_some()
    {
        ctx.password()?
    } else {
        new_password(None, "DEDUPE_PASSWORD")?
    };
    // An empty password file (or command output) is a mistake, not a password.
    if password.is_empty() {
        return Err(Failure::usage(
            "the password is empty: put the password on the first line of the file (or have the command print it)",
        ));
    }
    if let Location::Local(dir) = &ctx.location {
        use std::os::unix::fs::PermissionsExt;
        let failed = |e: std::io::Error| Failure::new(exit::STORAGE, format!("cannot create {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(failed)?;
        // Every object and folder inside takes its mode from this one (LocalBackend).
        let mode = if a.group_readable { 0o750 } else { 0o700 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(failed)?;
    }
    let repo = Repository::init(ctx.backend()?, password.as_bytes(), kdf)?;
    let location = ctx.location.display();
    if ctx.json {
        outln!("{}", json!({"repository": location, "id": repo.config.id}));
    }
    ctx.say(format!("created repository {} at {location}", short(&repo.config.id)));
    Ok(())
}
