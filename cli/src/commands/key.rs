//! `dedupe key add|list|remove`: the passwords that open the repository.

use crate::ctx::{short, Ctx};
use crate::exit::{Failure, R};
use crate::password::new_password;
use dedupe_store::KdfParams;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Add a password (the new one from --new-password-file, DEDUPE_NEW_PASSWORD, or a prompt).
    Add {
        /// Read the new password from this file (first line).
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// List key objects.
    List,
    /// Remove a key by id (or unique prefix); not the one in use.
    Remove {
        /// The key's id, or a unique prefix of it (`dedupe key list` shows them).
        id: String,
    },
}

pub(crate) fn run(ctx: &Ctx, command: Command) -> R {
    let repo = ctx.unlocked()?;
    match command {
        Command::Add { new_password_file } => {
            let pw = new_password(new_password_file.as_deref(), "DEDUPE_NEW_PASSWORD")?;
            let id = repo.add_key(pw.as_bytes(), KdfParams::from_env().map_err(Failure::usage)?)?;
            if ctx.json {
                outln!("{}", json!({"id": id}));
            }
            ctx.say(format!("added key {}", short(&id)));
        }
        Command::List => {
            let keys = repo.list_keys()?;
            if ctx.json {
                outln!("{}", serde_json::to_string_pretty(&keys).expect("json"));
            } else if !ctx.quiet {
                for k in keys {
                    outln!(
                        "{} {} {} {}@{}",
                        if k.current { "*" } else { " " },
                        short(&k.id),
                        k.created,
                        k.username,
                        k.hostname
                    );
                }
            }
        }
        Command::Remove { id } => {
            let removed = repo.remove_key(&id)?;
            if ctx.json {
                outln!("{}", json!({"removed": removed}));
            }
            ctx.say(format!("removed key {}", short(&removed)));
        }
    }
    Ok(())
}
