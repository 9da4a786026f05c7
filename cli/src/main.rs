//! `dedupe`: the command line. Parses arguments, opens the repository in the
//! state each command needs, shows progress on a terminal, prints a summary
//! (or JSON), and maps every failure to one sentence and an exit code.

mod commands;
mod exit;
mod logs;
mod password;
mod pitr;
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
        /// Snapshot id (or a unique prefix), or `latest`; omit with --until.
        #[arg(required_unless_present = "until", conflicts_with = "until")]
        snapshot: Option<String>,
        /// Point in time ("2026-11-21 12:54:23" local time, or RFC 3339): picks the
        /// newest base whose archived logs reach it, and sets up the log replay.
        #[arg(long)]
        until: Option<String>,
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
    /// MySQL/MariaDB binary logs: archive, list, replay.
    Binlog {
        #[command(subcommand)]
        command: BinlogCommand,
    },
    /// PostgreSQL WAL: archive_command and restore_command.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// The local catalogue of snapshots and archived logs.
    Catalogue {
        #[command(subcommand)]
        command: CatalogueCommand,
    },
    /// The spans of time each server can be restored to, and the gaps.
    Timeline {
        #[arg(long)]
        name: Option<String>,
    },
    /// The LSN to pass to the next incremental mariabackup (--incremental-lsn).
    Lsn {
        #[arg(long)]
        name: Option<String>,
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
enum BinlogCommand {
    /// Archive every closed binlog file not yet in the repository (run it from cron every minute).
    Push {
        #[arg(long, env = "DEDUPE_NAME")]
        name: String,
        /// The server's binlog directory (holding the *.index file).
        #[arg(long, conflicts_with = "index")]
        binlog_dir: Option<PathBuf>,
        /// The binlog index file (mysql-bin.index).
        #[arg(long)]
        index: Option<PathBuf>,
        /// Also store the active file up to its current end (replaced once it is closed).
        #[arg(long)]
        include_active: bool,
    },
    /// List the archived binlog files, with their time ranges and any gaps.
    List {
        #[arg(long, env = "DEDUPE_NAME")]
        name: String,
    },
    /// Print the SQL that replays the archived binlogs from a restored backup's
    /// position up to a time (pipe it into `mariadb`).
    Replay {
        #[arg(long, env = "DEDUPE_NAME")]
        name: String,
        /// The restored (and prepared) data directory: its binlog info is the start.
        #[arg(long)]
        target: PathBuf,
        /// Stop before this time ("2026-11-21 12:54:23", local time, or RFC 3339).
        #[arg(long, required_unless_present_any = ["until_gtid", "until_position"])]
        until: Option<String>,
        /// Stop at this GTID position instead.
        #[arg(long)]
        until_gtid: Option<String>,
        /// Stop at FILE:POSITION instead.
        #[arg(long)]
        until_position: Option<String>,
    },
}

#[derive(Subcommand)]
enum WalCommand {
    /// Archive one WAL file: `archive_command = 'dedupe wal push --name NAME %p'`.
    Push {
        #[arg(long, env = "DEDUPE_NAME")]
        name: String,
        path: PathBuf,
    },
    /// Fetch one WAL file: `restore_command = 'dedupe wal fetch --name NAME %f %p'`;
    /// exits non-zero when it is not archived.
    Fetch {
        #[arg(long, env = "DEDUPE_NAME")]
        name: String,
        file: String,
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum CatalogueCommand {
    /// Throw the local catalogue away and rebuild it from the repository.
    Rebuild,
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
