//! `dedupe`: the command line. Parses arguments, opens the repository in the
//! state each command needs, shows progress on a terminal, prints a summary
//! (or JSON), and maps every failure to one sentence and an exit code.

mod commands;
mod exit;
mod password;
mod prepare;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "dedupe", version, about = "Deduplicating, encrypted backups for databases")]
pub struct Cli {
    /// Repository: a local directory (created by `dedupe init`).
    #[arg(long, env = "DEDUPE_REPO", global = true)]
    repo: Option<PathBuf>,
    /// Read the password from this file (first line).
    #[arg(long, env = "DEDUPE_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "DEDUPE_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Local cache (index, never the only copy of anything).
    #[arg(long, env = "DEDUPE_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Print a machine-readable JSON summary on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars, no summary (errors still go to stderr).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository.
    Init,
    /// Back up a directory (a mounted snapshot) or a stream on stdin (`-`).
    Backup {
        /// A directory (a mounted snapshot), or `-` for stdin; omit with --command.
        source: Option<String>,
        /// Run this producer and back up its output, e.g. 'mariabackup --backup --stream=xbstream';
        /// unlike a pipe, its failure is seen and nothing is committed.
        #[arg(long)]
        command: Option<String>,
        /// What the stream is: auto (sniffed), xbstream, tar, mysqldump, pg_dump, pg_dump_custom, raw.
        #[arg(long, default_value = "auto")]
        format: String,
        /// Keep the files that arrived when an xbstream ends early, instead of committing nothing.
        #[arg(long)]
        allow_partial: bool,
        /// The server this backup is of; `latest` and unchanged-file detection work per name.
        #[arg(long)]
        name: Option<String>,
        /// File name a stdin stream gets inside the snapshot.
        #[arg(long, default_value = "stdin")]
        filename: String,
        /// Read every file, even those unchanged since the previous snapshot of this name.
        #[arg(long)]
        force_read: bool,
        /// zstd level for new chunks (0 stores raw).
        #[arg(long)]
        compression: Option<i32>,
    },
    /// Restore a snapshot into a directory, or a file of it to stdout.
    Restore {
        /// Snapshot id (or a unique prefix), or `latest`.
        snapshot: String,
        /// With `latest`: the newest snapshot of this name.
        #[arg(long)]
        name: Option<String>,
        /// Directory to restore into (created if missing; must be empty unless --force).
        #[arg(long, conflicts_with = "stdout", required_unless_present = "stdout")]
        target: Option<PathBuf>,
        /// Write the file content to stdout (for a stream backup, the stream).
        #[arg(long)]
        stdout: bool,
        /// Restore only this path (and what is below it).
        #[arg(long)]
        path: Option<String>,
        /// Restore into a non-empty directory, replacing files of the same names.
        #[arg(long)]
        force: bool,
        /// After restoring a mariabackup snapshot, run `mariabackup --prepare` on the target.
        #[arg(long)]
        prepare: bool,
    },
    /// Print the producer's log kept with a snapshot made with --command.
    Log {
        snapshot: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List snapshots, oldest first.
    Snapshots {
        #[arg(long)]
        name: Option<String>,
    },
    /// List the files of a snapshot.
    Ls {
        snapshot: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Repository size, deduplication and compression.
    Stats,
    /// Manage the passwords that open the repository.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Rebuild derived data from the repository's own objects.
    Repair {
        #[command(subcommand)]
        command: RepairCommand,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Add a password (the new one from --new-password-file, DEDUPE_NEW_PASSWORD, or a prompt).
    Add {
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// List key objects.
    List,
    /// Remove a key by id (or unique prefix); not the one in use.
    Remove { id: String },
}

#[derive(Subcommand)]
enum RepairCommand {
    /// Rebuild the index from the packs' trailers, checking every pack.
    Index,
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    match commands::run(cli) {
        Ok(()) => {}
        Err(f) => {
            eprintln!("dedupe: {}", f.message);
            std::process::exit(f.code);
        }
    }
}
