//! One module per command: its arguments (clap) and what it does. Each asks
//! the repository through `Ctx` in the state it needs, calls the store,
//! ingest or recovery, and prints.

pub(crate) mod backup;
pub(crate) mod binlog;
pub(crate) mod catalogue;
pub(crate) mod check;
pub(crate) mod copy;
pub(crate) mod drill;
pub(crate) mod forget;
pub(crate) mod fs_backup;
pub(crate) mod init;
pub(crate) mod key;
pub(crate) mod log;
pub(crate) mod ls;
pub(crate) mod lsn;
pub(crate) mod mount;
pub(crate) mod pg_incremental;
pub(crate) mod prune;
pub(crate) mod repair;
pub(crate) mod restore;
pub(crate) mod snapshots;
pub(crate) mod stats;
pub(crate) mod timeline;
pub(crate) mod wal;
