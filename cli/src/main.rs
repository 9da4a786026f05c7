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
mod cowfs;
mod ctx;
mod exit;
mod interrupt;
mod mountfs;
mod password;
mod progress;
mod report;

use clap::{Parser, Subcommand};
use commands::*;
use dedupe_store::backend::{Location, Options};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "dedupe", version, about = "Deduplicating, encrypted backups for databases")]
struct Cli {
    /// Repository: a local directory, or s3://bucket/prefix, gs://bucket/prefix, az://container/prefix.
    #[arg(long, short = 'r', env = "DEDUPE_REPO", global = true, help_heading = "Global options")]
    repo: Option<String>,
    /// Transfers in flight at once to a remote repository [default: 8].
    #[arg(long, env = "DEDUPE_CONNECTIONS", global = true, help_heading = "Global options", value_parser = clap::value_parser!(u16).range(1..=64))]
    connections: Option<u16>,
    /// Upload at most this many bytes a second (K, M, G suffixes: 1024-based).
    #[arg(long, env = "DEDUPE_LIMIT_UPLOAD", global = true, help_heading = "Global options", value_parser = ctx::parse_rate)]
    limit_upload: Option<u64>,
    /// Download at most this many bytes a second (K, M, G suffixes: 1024-based).
    #[arg(long, env = "DEDUPE_LIMIT_DOWNLOAD", global = true, help_heading = "Global options", value_parser = ctx::parse_rate)]
    limit_download: Option<u64>,
    /// Seconds a failing storage request is retried before the command gives up [default: 120].
    #[arg(long, env = "DEDUPE_STORAGE_TIMEOUT", global = true, help_heading = "Global options")]
    storage_timeout: Option<u64>,
    /// Read the password from this file (first line).
    #[arg(long, env = "DEDUPE_PASSWORD_FILE", global = true, help_heading = "Global options")]
    password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "DEDUPE_PASSWORD_COMMAND", global = true, help_heading = "Global options")]
    password_command: Option<String>,
    /// Local cache (index, never the only copy of anything).
    #[arg(long, env = "DEDUPE_CACHE_DIR", global = true, help_heading = "Global options")]
    cache_dir: Option<PathBuf>,
    /// Print a machine-readable JSON summary on stdout.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    /// No progress bars, no summary (errors still go to stderr).
    #[arg(long, short, global = true, help_heading = "Global options")]
    quiet: bool,
    /// After a backup, a push or a drill: write its figures (or its failure)
    /// into this Prometheus text file, for node_exporter's textfile collector.
    #[arg(long, env = "DEDUPE_METRICS_FILE", global = true, help_heading = "Global options")]
    metrics_file: Option<PathBuf>,
    /// When a backup, a push or a drill fails: run this shell command, with
    /// DEDUPE_ERROR, DEDUPE_EXIT_CODE, DEDUPE_COMMAND and DEDUPE_NAME set.
    #[arg(long, env = "DEDUPE_ON_FAILURE", global = true, help_heading = "Global options")]
    on_failure: Option<String>,
    /// The directory of the PostgreSQL programs (pg_ctl, pg_waldump...) of the
    /// data's major version, where neither /usr/lib/postgresql/N/bin nor PATH has them.
    #[arg(long, env = "DEDUPE_PG_BIN", global = true, help_heading = "Global options")]
    pg_bin: Option<PathBuf>,
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
    /// Restore drill: restore a snapshot into a scratch directory, start a
    /// throwaway server on it, check every table, report the times; removed afterwards.
    Drill(drill::Args),
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
    /// Remove the snapshots and archived logs a retention policy does not keep (manifests only: their data stays).
    Forget(forget::Args),
    /// Delete the data no snapshot or archived log needs (after `forget`), safely beside running backups.
    Prune(prune::Args),
    /// Verify the repository: manifests, index, packs, and with --read-data every blob.
    Check(check::Args),
    /// Print a shell completion script: `dedupe completion bash > /etc/bash_completion.d/dedupe`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print a manual page (roff): `dedupe man > /usr/local/share/man/man1/dedupe.1`,
    /// `dedupe man backup > …/dedupe-backup.1`.
    Man {
        /// The command whose page to print, e.g. `backup` or `binlog push` (default: the top-level page).
        command: Vec<String>,
    },
    /// The local catalogue of snapshots and archived logs.
    Catalogue {
        #[command(subcommand)]
        command: catalogue::Command,
    },
    /// The spans of time each server can be restored to, and the gaps.
    Timeline {
        /// Only the server backed up under this name (default: every name).
        #[arg(long, env = "DEDUPE_NAME")]
        name: Option<String>,
    },
    /// The LSN to pass to the next incremental mariabackup (--incremental-lsn).
    Lsn {
        /// The server backed up under this name (needed when the repository holds several).
        #[arg(long, env = "DEDUPE_NAME")]
        name: Option<String>,
    },
    /// Print the producer's log kept with a snapshot made with --command.
    Log {
        /// Snapshot id (or a unique prefix), or `latest`.
        snapshot: String,
        /// With `latest`: the newest snapshot of this name.
        #[arg(long, env = "DEDUPE_NAME")]
        name: Option<String>,
    },
    /// List snapshots, oldest first.
    Snapshots {
        /// Only the snapshots of this name.
        #[arg(long, env = "DEDUPE_NAME")]
        name: Option<String>,
    },
    /// List the files of a snapshot.
    Ls {
        /// Snapshot id (or a unique prefix), or `latest`.
        snapshot: String,
        /// With `latest`: the newest snapshot of this name.
        #[arg(long, env = "DEDUPE_NAME")]
        name: Option<String>,
    },
    /// Every snapshot as a read-only filesystem (FUSE): by-id/<id>/…,
    /// by-name/<name>/<time>/… and by-name/<name>/latest. Runs until unmounted
    /// (`fusermount3 -u MOUNTPOINT`) or interrupted.
    Mount {
        /// An existing, empty directory.
        mountpoint: std::path::PathBuf,
        /// Only the snapshots of this name.
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
    // Generated from the same definitions as the parser, and need no repository.
    match &cli.command {
        Command::Completion { .. } | Command::Man { .. } if cli.json => {
            return Err(exit::Failure::usage("completion and man print a script or a page, not JSON: drop --json"));
        }
        Command::Completion { shell } => {
            // Into a buffer first: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut <Cli as clap::CommandFactory>::command(), "dedupe", &mut script);
            return write_out(&script);
        }
        Command::Man { command } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            cmd.build();
            let mut name = "dedupe".to_string();
            for word in command {
                cmd = cmd
                    .find_subcommand(word)
                    .ok_or_else(|| exit::Failure::usage(format!("no command `{word}` in {name}: see dedupe help")))?
                    .clone();
                name = format!("{name}-{word}");
            }
            let mut page = Vec::new();
            clap_mangen::Man::new(
                cmd.name(name.clone()).bin_name(name.replace('-', " ")).version(env!("CARGO_PKG_VERSION")),
            )
            .render(&mut page)
            .expect("rendering into memory");
            return write_out(&page);
        }
        _ => {}
    }
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
        typed: std::sync::OnceLock::new(),
        metrics_file: cli.metrics_file,
        on_failure: cli.on_failure,
        pg_bin: cli.pg_bin,
    };
    match cli.command {
        Command::Init(args) => init::run(&ctx, args),
        Command::Backup(args) => backup::run(&ctx, args),
        Command::Restore(args) => restore::run(&ctx, args),
        Command::Drill(args) => drill::run(&ctx, args),
        Command::Binlog { command } => binlog::run(&ctx, command),
        Command::Wal { command } => wal::run(&ctx, command),
        Command::Copy(args) => copy::run(&ctx, args),
        Command::Forget(args) => forget::run(&ctx, args),
        Command::Prune(args) => prune::run(&ctx, args),
        Command::Check(args) => check::run(&ctx, args),
        Command::Completion { .. } | Command::Man { .. } => unreachable!("answered before a repository is needed"),
        Command::Catalogue { command } => catalogue::run(&ctx, command),
        Command::Timeline { name } => timeline::run(&ctx, name.as_deref()),
        Command::Lsn { name } => lsn::run(&ctx, name.as_deref()),
        Command::Log { snapshot, name } => log::run(&ctx, &snapshot, name.as_deref()),
        Command::Snapshots { name } => snapshots::run(&ctx, name.as_deref()),
        Command::Ls { snapshot, name } => ls::run(&ctx, &snapshot, name.as_deref()),
        Command::Mount { mountpoint, name } => mount::run(&ctx, &mountpoint, name.as_deref()),
        Command::Stats => stats::run(&ctx),
        Command::Key { command } => key::run(&ctx, command),
        Command::Repair { command } => repair::run(&ctx, command),
    }
}

/// Bytes to stdout, a closed pipe ending the process quietly (`exit::output_failed`).
fn write_out(bytes: &[u8]) -> exit::R {
    use std::io::Write;
    if let Err(e) = std::io::stdout().write_all(bytes) {
        exit::output_failed(e);
    }
    Ok(())
}

/// Keeps freed buffers for reuse instead of returning them to the kernel.
/// Restores and backups move megabytes a batch through buffers that live a
/// few milliseconds; glibc gave each one back (`munmap`, or trimming the
/// heap) and the next one faulted in fresh zeroed pages: a third of a
/// PostgreSQL restore's system time (0.91 s → 0.81 s for 1.1 GB). Memory
/// stays bounded by the batches in flight, as before.
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

fn main() {
    keep_freed_memory();
    interrupt::install();
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

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every argument of every command says what it is for.
    #[test]
    fn every_argument_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "dedupe", &mut missing);
        assert!(missing.is_empty(), "arguments without a description: {missing:?}");
        Cli::command().debug_assert();
    }
}
