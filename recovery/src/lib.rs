//! Database recovery as a library: the log archive (binlogs and WAL),
//! point-in-time plans, incremental chains, the timeline, and copying
//! snapshots with their logs to another repository.
//!
//! It decides; it does not print or parse arguments. A plan, a chain or a
//! timeline is a value built from the catalogue's manifests, so a test can
//! build one from manifests in memory (`Catalogue::in_memory`) and check it
//! in milliseconds. Running the database's own tools (mariabackup
//! --prepare, mariadb-binlog) also lives here, behind functions that return
//! errors instead of printing them.

pub mod archive;
pub mod chain;
pub mod copy;
pub mod drill;
mod error;
pub mod fssnap;
pub mod mysql_lock;
pub mod pg_backup;
pub mod pgbin;
pub mod pgcopy;
pub mod plan;
pub mod prepare;
pub mod replay;
pub mod retention;
mod session;
pub mod time;
pub mod timeline;
mod tool;
pub mod wal;

pub use error::{Error, Result};
pub use plan::{plan, Plan, Start, Stop};
pub use timeline::{timeline, Gap, Span, Timeline};
