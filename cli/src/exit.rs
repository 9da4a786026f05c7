//! Exit codes: one per kind of failure a script may want to tell apart.
//! Documented in README.md; keep the two in step.

use dedupe_store::Error;

/// What every command returns.
pub(crate) type R<T = ()> = Result<T, Failure>;

pub(crate) const OK: i32 = 0;
pub(crate) const ERROR: i32 = 1;
pub(crate) const USAGE: i32 = 2;
pub(crate) const NO_REPOSITORY: i32 = 3;
pub(crate) const WRONG_PASSWORD: i32 = 4;
pub(crate) const NO_SNAPSHOT: i32 = 5;
pub(crate) const INPUT_FAILED: i32 = 6;
pub(crate) const CORRUPT: i32 = 7;
pub(crate) const MISSING: i32 = 8;
pub(crate) const STORAGE_FULL: i32 = 9;
pub(crate) const STORAGE: i32 = 10;
pub(crate) const TARGET_NOT_EMPTY: i32 = 11;
pub(crate) const REPOSITORY_EXISTS: i32 = 12;
pub(crate) const TRUNCATED: i32 = 13;
pub(crate) const PRODUCER_FAILED: i32 = 14;
pub(crate) const CONFLICT: i32 = 15;
pub(crate) const NOT_RESTORABLE: i32 = 16;
pub(crate) const DAMAGED_INPUT: i32 = 17;
pub(crate) const MOUNT_FAILED: i32 = 18;
pub(crate) const SNAPSHOT_FAILED: i32 = 19;
pub(crate) const DRILL_FAILED: i32 = 20;
pub(crate) const OTHER_CLUSTER: i32 = 21;
pub(crate) const WRONG_VERSION: i32 = 22;

/// What a shell reports for a process ended by SIGPIPE: the reader of
/// our output went away (`| head`), which is not an error.
pub(crate) const CLOSED_PIPE: i32 = 141;

/// Ends the process after writing to stdout failed: quietly with
/// `CLOSED_PIPE` when the reader went away, else with one line.
pub(crate) fn output_failed(e: std::io::Error) -> ! {
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        eprintln!("dedupe: writing the output: {e}");
        std::process::exit(ERROR);
    }
    std::process::exit(CLOSED_PIPE)
}

/// A failure with the exit code it ends the process with.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure::new(USAGE, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::from(&e)
    }
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Self {
        let code = if e.is_storage_full() {
            STORAGE_FULL
        } else if matches!(e, Error::Io { context, source } if context == "writing the output" && source.kind() == std::io::ErrorKind::BrokenPipe)
        {
            CLOSED_PIPE
        } else {
            match e {
                Error::NoRepository(_) => NO_REPOSITORY,
                Error::RepositoryExists(_) => REPOSITORY_EXISTS,
                Error::WrongPassword => WRONG_PASSWORD,
                Error::Corrupt { .. } => CORRUPT,
                Error::Missing(_) | Error::UnknownChunk(_) => MISSING,
                Error::NoSnapshot(_) | Error::AmbiguousSnapshot(_) => NO_SNAPSHOT,
                Error::AmbiguousName(_) => USAGE,
                Error::Input(_) => INPUT_FAILED,
                Error::Truncated(_) => TRUNCATED,
                Error::Damaged(_) => DAMAGED_INPUT,
                Error::Producer(_) => PRODUCER_FAILED,
                Error::Storage { .. } | Error::Io { .. } => STORAGE,
                Error::Pruned(_) => CONFLICT,
                Error::Invalid(_) => ERROR,
            }
        };
        let message = if code == STORAGE_FULL {
            format!("the storage is full ({e}): free space and run the command again (a backup commits nothing when this happens)")
        } else {
            e.to_string()
        };
        Failure { code, message }
    }
}

impl From<dedupe_recovery::Error> for Failure {
    fn from(e: dedupe_recovery::Error) -> Self {
        use dedupe_recovery::Error as E;
        let e = match e {
            E::Store(inner) => return inner.into(),
            other => other,
        };
        let code = match &e {
            E::Store(_) => unreachable!("returned above"),
            E::NotRestorable(_) => NOT_RESTORABLE,
            E::NotArchived(_) => MISSING,
            E::Conflict(_) => CONFLICT,
            E::NoSnapshot(_) => NO_SNAPSHOT,
            E::Usage(_) => USAGE,
            E::Input(_) => INPUT_FAILED,
            E::Damaged(_) => DAMAGED_INPUT,
            E::Storage(_) => STORAGE,
            E::Tool(_) => ERROR,
            E::WrongVersion(_) => WRONG_VERSION,
            E::OtherCluster(_) => OTHER_CLUSTER,
            E::Corrupt(_) => CORRUPT,
            E::OutputClosed => CLOSED_PIPE,
        };
        Failure { code, message: e.to_string() }
    }
}

/// A log the archive lacks may be one whose manifest is damaged (left out
/// of the catalogue): then the damage is the answer, named, not "not
/// archived".
pub(crate) fn or_damaged_log(repo: &dedupe_store::Listed, e: dedupe_recovery::Error) -> Failure {
    use dedupe_recovery::Error as E;
    if matches!(e, E::NotArchived(_) | E::NotRestorable(_)) {
        let damaged = repo.damaged().find_map(|(k, d)| match (k, d) {
            (dedupe_store::Kind::Log, Error::Corrupt { object, reason }) => Some((object, reason)),
            _ => None,
        });
        if let Some((object, reason)) = damaged {
            return Failure::new(
                CORRUPT,
                format!("{e}; the archived log manifest {object} is damaged ({reason}) and may be that file: run `dedupe check`"),
            );
        }
    }
    e.into()
}
