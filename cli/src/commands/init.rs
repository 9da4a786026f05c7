//! `dedupe init`: a new repository.

use crate::ctx::{short, Ctx};
use crate::exit::{self, Failure, R};
use crate::password::new_password;
use dedupe_store::backend::Location;
use dedupe_store::{KdfParams, Repository};
use serde_json::json;

pub(crate) fn run(ctx: &Ctx) -> R {
    let password = if ctx.password_file.is_some()
        || ctx.password_command.is_some()
        || std::env::var_os("DEDUPE_PASSWORD").is_some()
    {
        ctx.password()?
    } else {
        new_password(None, "DEDUPE_PASSWORD")?
    };
    if let Location::Local(dir) = &ctx.location {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::new(exit::STORAGE, format!("cannot create {}: {e}", dir.display())))?;
    }
    let repo = Repository::init(ctx.backend()?, password.as_bytes(), KdfParams::from_env())?;
    let location = ctx.location.display();
    if ctx.json {
        println!("{}", json!({"repository": location, "id": repo.config.id}));
    }
    ctx.say(format!("created repository {} at {location}", short(&repo.config.id)));
    Ok(())
}
