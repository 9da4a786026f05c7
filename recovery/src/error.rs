//! One error type for recovery. Each variant is one thing a user can act on;
//! the command line maps each to a documented exit code.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] dedupe_store::Error),
    /// The archive cannot bring a server where asked: a gap, a time outside
    /// what the bases and logs cover, a broken incremental chain.
    #[error("{0}")]
    NotRestorable(String),
    /// The file asked for is not archived (PostgreSQL probes for files that
    /// may not exist: a plain non-zero exit is the answer).
    #[error("{0}")]
    NotArchived(String),
    /// The same file name is archived with other bytes.
    #[error("{0}")]
    Conflict(String),
    /// No snapshot to plan from.
    #[error("{0}")]
    NoSnapshot(String),
    /// The request is incomplete or malformed: say what to pass.
    #[error("{0}")]
    Usage(String),
    /// A log file is not what its format says (a bad checksum, an event its
    /// own tool cannot read).
    #[error("{0}")]
    Damaged(String),
    /// A log file or a restored directory could not be read.
    #[error("{0}")]
    Input(String),
    /// A file could not be written where recovery puts it.
    #[error("{0}")]
    Storage(String),
    /// An external tool (mariabackup, mariadb-binlog) is missing or failed.
    #[error("{0}")]
    Tool(String),
    /// The database's programs found are of another major version than the
    /// data: never reported as damage.
    #[error("{0}")]
    WrongVersion(String),
    /// A WAL file of another cluster (its system identifier) than the one
    /// archived under this name.
    #[error("{0}")]
    OtherCluster(String),
    /// The repository's records contradict themselves.
    #[error("{0}")]
    Corrupt(String),
    /// Whoever read the output stopped reading (`binlog replay | head`):
    /// not a failure of ours, and nothing to say about it.
    #[error("the output was closed by its reader")]
    OutputClosed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
