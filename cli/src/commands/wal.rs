//! `dedupe wal push|fetch`: PostgreSQL's archive_command and restore_command.

use crate::ctx::{human, Ctx};
use crate::exit::R;
use dedupe_recovery::archive::{fetch_wal, push_wal, Outcome, WalFile};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Archive one WAL file: `archive_command = 'dedupe wal push --name NAME %p'`.
    Push {
        /// The server this WAL is of: the `--name` of its base backups.
        #[arg(long, env = "DEDUPE_NAME")]
        name: String,
        /// The WAL file to archive (PostgreSQL's %p).
        path: PathBuf,
        /// Archive a segment older than the oldest base backup kept too (by
        /// default it is skipped, with success: it restores nothing).
        #[arg(long)]
        force: bool,
    },
    /// Fetch one WAL file: `restore_command = 'dedupe wal fetch --name NAME %f %p'`;
    /// exits non-zero when it is not archived.
    Fetch {
        /// The server this WAL is of: the `--name` of its base backups.
        #[arg(long, env = "DEDUPE_NAME")]
        name: String,
        /// The WAL file's name (PostgreSQL's %f).
        file: String,
        /// Where to write it (PostgreSQL's %p).
        path: PathBuf,
    },
}

/// `wal push`: one WAL file, as PostgreSQL's archive_command.
fn push(ctx: &Ctx, name: &str, path: &std::path::Path, force: bool) -> R<Vec<crate::report::Sample>> {
    let wal = WalFile::read(path, ctx.pg_bin.as_deref())?;
    let repo = ctx.indexed_for_logs()?;
    let lost = dedupe_recovery::archive::commit_times_lost(repo.catalogue(), name, &wal)?;
    crate::interrupt::say("the WAL file may not be archived: PostgreSQL retries the archive_command");
    let outcome = push_wal(&repo, name, &wal, force)?;
    if lost && matches!(outcome, Outcome::Stored { .. }) {
        eprintln!(
            "dedupe: warning: no pg_waldump here reads {} (install the server's own version, or pass --pg-bin / set DEDUPE_PG_BIN): \
             without its commit times, `restore --until` places a time in it only by when it was archived",
            wal.file
        );
    }
    if ctx.json {
        let (stored, bytes) = match outcome {
            Outcome::Stored { bytes, .. } => (true, bytes),
            Outcome::AlreadyArchived | Outcome::Skipped(_) => (false, 0),
        };
        outln!("{}", serde_json::json!({"file": wal.file, "stored": stored, "new_bytes": bytes}));
    }
    match outcome {
        Outcome::Stored { bytes, .. } => ctx.say(format!("{}: stored ({})", wal.file, human(bytes))),
        Outcome::AlreadyArchived => ctx.say(format!("{}: already archived", wal.file)),
        Outcome::Skipped(why) => ctx.say(format!("{}: {}", wal.file, why.as_str())),
    }
    // Only when asked: it lists every archived file of the name.
    Ok(if ctx.metrics_file.is_some() {
        crate::report::pushed(&repo, name, dedupe_ingest::facts::LogKind::Wal)
    } else {
        Vec::new()
    })
}

pub(crate) fn run(ctx: &Ctx, command: Command) -> R {
    match command {
        Command::Push { name, path, force } => {
            let pushed = push(ctx, &name, &path, force);
            ctx.report("wal push", &name, pushed)
        }
        Command::Fetch { name, file, path } => {
            let repo = ctx.indexed_for_logs()?;
            fetch_wal(&repo, &name, &file, &path).map_err(|e| crate::exit::or_damaged_log(&repo, e))?;
            if ctx.json {
                outln!("{}", serde_json::json!({"file": file, "path": path}));
            }
            Ok(())
        }
    }
}
