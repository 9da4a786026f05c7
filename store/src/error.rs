//! One error type for the store. Each variant is one thing a user can act on;
//! the CLI maps variants to documented exit codes, so keep them distinct.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no dedupe repository at {0}: run `dedupe init` first, or check --repo")]
    NoRepository(String),
    #[error("a repository already exists at {0}")]
    RepositoryExists(String),
    #[error("wrong password: no key in the repository opens with it")]
    WrongPassword,
    #[error("object {object} is corrupt: {reason}")]
    Corrupt { object: String, reason: String },
    #[error("object {0} is missing from the repository")]
    Missing(String),
    #[error("chunk {0} is not in the index: run `dedupe repair index`, or the chunk's pack is gone")]
    UnknownChunk(String),
    #[error("pack {0} was deleted by a prune while this backup still depended on it (the backup ran longer than the grace period, --keep-delete); nothing was committed: run it again")]
    Pruned(String),
    #[error("no snapshot matches {0}")]
    NoSnapshot(String),
    #[error("snapshot id {0} is ambiguous: give more characters")]
    AmbiguousSnapshot(String),
    /// `latest` without a name where several servers are backed up: which
    /// one's is never guessed.
    #[error("several servers are backed up here ({0}): pass --name to say whose latest snapshot")]
    AmbiguousName(String),
    #[error("reading the input failed: {0}")]
    Input(String),
    /// The input is not what its format says (a bad checksum, an offset out
    /// of order, a link to nothing): refused, as the format's own tool would.
    #[error("the input is damaged: {0}; nothing was committed")]
    Damaged(String),
    #[error("the input stream is truncated: {0}; nothing was committed (--allow-partial keeps what arrived)")]
    Truncated(String),
    #[error("{0}; nothing was committed")]
    Producer(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("storage error on {object}: {message}")]
    Storage { object: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt { object: object.into(), reason: reason.into() }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// A failed read of a backup's input: data a decoder found damaged
    /// (`InvalidData`) is damaged input, a stream that ended early
    /// truncated, anything else a failed input.
    pub fn reading(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::InvalidData => Error::Damaged(e.to_string()),
            io::ErrorKind::UnexpectedEof => Error::Truncated(e.to_string()),
            _ => Error::Input(e.to_string()),
        }
    }

    /// True when the error means the disk (or bucket) has no room left.
    pub fn is_storage_full(&self) -> bool {
        let raw = match self {
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Storage { message, .. } => {
                return message.contains("No space left") || message.contains("Disk quota")
            }
            _ => None,
        };
        matches!(raw, Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }
}
