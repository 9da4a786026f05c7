//! `dedupe`: the command line. Parses arguments, opens the repository in the
//! state each command needs (`ctx`), shows progress on a terminal, prints a
//! summary (or JSON), and maps every failure to one sentence and an exit
//! code (`exit`). Each command is a module of its own under `commands/`;
//! what they decide lives in the store, ingest and recovery crates.

/// `println!` for the command's output: a reader that closed the pipe
/// (`dedupe ls … | head`) ends the command quietly with exit 141, as a shell
/// reports SIGPIPE, instead of a panic.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($t)*) {
            $crate::exit::output_failed(e)
        }
    }};
}

mod commands;
mod ctx;
mod exit;
mod password;
mod progress;

use clap::{Parser, Subcommand};
use commands::*;
use dedupe_store::backend::{Location, Options};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "dedupe", version, about = "Deduplicating, encrypted backups for databases")]
struct Cli {
    /// Repository: a local directory, or s3://bucket/prefix, gs://bucket/prefix, az://container/prefix.
    #[arg(long, env = "DEDUPE_REPO", global = true)]
    repo: Option<String>,
    /// Transfers in flight at once to a remote repository [default: 8].
    #[arg(long, env = "DEDUPE_CONNECTIONS", global = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    connections: Option<u16>,
    /// Upload at most this many bytes a second (K, M, G suffixes: 1024-based).
    #[arg(long, env = "DEDUPE_LIMIT_UPLOAD", global = true, value_parser = ctx::parse_rate)]
    limit_upload: Option<u64>,
    /// Download at most this many bytes a second (K, M, G suffixes: 1024-based).
    #[arg(long, env = "DEDUPE_LIMIT_DOWNLOAD", global = true, value_parser = ctx::parse_rate)]
    limit_download: Option<u64>,
    /// Seconds a failing storage request is retried before the command gives up [default: 120].
    #[arg(long, env = "DEDUPE_STORAGE_TIMEOUT", global = true)]
    storage_timeout: Option<u64>,
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
    Init(init::Args),
    /// Back up a directory (a mounted snapshot) or a stream on stdin (`-`).
    Backup(backup::Args),
    /// Restore a snapshot into a directory, or a file of it to stdout.
    Restore(restore::Args),
    /// MySQL/MariaDB binary logs: archive, list, replay.
    Binlog {
        #[command(subcommand)]
        command: binlog::Command,
    },
    /// PostgreSQL WAL: archive_command and restore_command.
    Wal {
        #[command(subcommand)]
        command: wal::Command,
    },
    /// Copy snapshots and archived logs from another repository (--from-repo) into this one.
    Copy(copy::Args),
    /// Remove the snapshots and archived logs a retention policy does not keep (their data goes at `prune`).
    Forget(forget::Args),
    /// Verify the repository: manifests, index, packs, and with --read-data every blob.
    Check(check::Args),
    /// The local catalogue of snapshots and archived logs.
    Catalogue {
        #[command(subcommand)]
        command: catalogue::Command,
    },
    /// The spans of time each server can be restored to, and the gaps.
    Timeline {
        #[arg(long, env = "DEDUPE_NAME")]
        name: Option<String>,
    },
    /// The LSN to pass to the next incremental mariabackup (--incremental-lsn).
    Lsn {
        #[arg(long, env = "DEDUPE_NAME")]
        name: Option<String>,
    },
    /// Print the producer's log kept with a snapshot made with --command.
    Log {
        snapshot: String,
        #[arg(long, env = "DEDUPE_NAME")]
        name: Option<String>,
    },
    /// List snapshots, oldest first.
    Snapshots {
        #[arg(long, env = "DEDUPE_NAME")]
        name: Option<String>,
    },
    /// List the files of a snapshot.
    Ls {
        snapshot: String,
        #[arg(long, env = "DEDUPE_NAME")]
        name: Option<String>,
    },
    /// Repository size, deduplication and compression.
    Stats,
    /// Manage the passwords that open the repository.
    Key {
        #[command(subcommand)]
        command: key::Command,
    },
    /// Rebuild derived data from the repository's own objects.
    Repair {
        #[command(subcommand)]
        command: repair::Command,
    },
}

fn run(cli: Cli) -> exit::R {
    let repo = cli.repo.ok_or_else(|| exit::Failure::usage("no repository given: pass --repo or set DEDUPE_REPO"))?;
    let location = Location::parse(&repo).map_err(|e| exit::Failure::usage(e.to_string()))?;
    let ctx = ctx::Ctx {
        location,
        storage: Options {
            connections: cli.connections.map(usize::from),
            limit_upload: cli.limit_upload,
            limit_download: cli.limit_download,
            retry_for: cli.storage_timeout.map(std::time::Duration::from_secs),
        },
        password_file: cli.password_file,
        password_command: cli.password_command,
        cache_dir: cli.cache_dir.unwrap_or_else(ctx::default_cache),
        json: cli.json,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Backup(args) => backup::run(&ctx, args),
        Command::Restore(args) => restore::run(&ctx, args),
        Command::Binlog { command } => binlog::run(&ctx, command),
        Command::Wal { command } => wal::run(&ctx, command),
        Command::Copy(args) => copy::run(&ctx, args),
        Command::Forget(args) => forget::run(&ctx, args),
        Command::Check(args) => check::run(&ctx, args),
        Command::Catalogue { command } => catalogue::run(&ctx, command),
        Command::Timeline { name } => timeline::run(&ctx, name.as_deref()),
        Command::Lsn { name } => lsn::run(&ctx, name.as_deref()),
        Command::Log { snapshot, name } => log::run(&ctx, &snapshot, name.as_deref()),
        Command::Snapshots { name } => snapshots::run(&ctx, name.as_deref()),
        Command::Ls { snapshot, name } => ls::run(&ctx, &snapshot, name.as_deref()),
        Command::Stats => stats::run(&ctx),
        Command::Key { command } => key::run(&ctx, command),
        Command::Repair { command } => repair::run(&ctx, command),
    }
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
    if let Err(f) = run(cli) {
        // A reader that closed the pipe is not told anything.
        if f.code != exit::CLOSED_PIPE {
            eprintln!("dedupe: {}", f.message);
        }
        std::process::exit(f.code);
    }
}
