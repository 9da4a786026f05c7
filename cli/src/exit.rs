//! Exit codes: one per kind of failure a script may want to tell apart.
//! Documented in README.md; keep the two in step.

use dedupe_store::Error;

pub const OK: i32 = 0;
pub const ERROR: i32 = 1;
pub const USAGE: i32 = 2;
pub const NO_REPOSITORY: i32 = 3;
pub const WRONG_PASSWORD: i32 = 4;
pub const NO_SNAPSHOT: i32 = 5;
pub const INPUT_FAILED: i32 = 6;
pub const CORRUPT: i32 = 7;
pub const MISSING: i32 = 8;
pub const STORAGE_FULL: i32 = 9;
pub const STORAGE: i32 = 10;
pub const TARGET_NOT_EMPTY: i32 = 11;
pub const REPOSITORY_EXISTS: i32 = 12;
pub const TRUNCATED: i32 = 13;
pub const PRODUCER_FAILED: i32 = 14;
pub const CONFLICT: i32 = 15;
pub const NOT_RESTORABLE: i32 = 16;

/// A failure with the exit code it ends the process with.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(USAGE, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = if e.is_storage_full() {
            STORAGE_FULL
        } else {
            match &e {
                Error::NoRepository(_) => NO_REPOSITORY,
                Error::RepositoryExists(_) => REPOSITORY_EXISTS,
                Error::WrongPassword => WRONG_PASSWORD,
                Error::Corrupt { .. } => CORRUPT,
                Error::Missing(_) | Error::UnknownChunk(_) => MISSING,
                Error::NoSnapshot(_) | Error::AmbiguousSnapshot(_) => NO_SNAPSHOT,
                Error::Input(_) => INPUT_FAILED,
                Error::Truncated(_) => TRUNCATED,
                Error::Producer(_) => PRODUCER_FAILED,
                Error::Storage { .. } | Error::Io { .. } => STORAGE,
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
