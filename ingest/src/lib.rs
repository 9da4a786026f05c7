//! Where backups come from and where restores go.
//!
//! Sources turn something a DBA has (a stream on stdin, a mounted snapshot
//! directory) into the store's shape: a stream of named entries with
//! metadata. Sinks turn a snapshot's entries back into a directory or a
//! byte stream. Nothing here knows about packs or keys.

pub mod binlog;
pub mod decompress;
pub mod dir;
pub mod facts;
pub mod meta;
pub mod pages;
pub mod pgincr;
pub mod producer;
pub mod secrets;
pub mod sink;
pub mod sniff;
pub mod stream;
pub mod tar;
pub mod xbstream;

pub use dir::DirSource;
pub use sink::{restore_as_tar, restore_as_xbstream, restore_to_dir, restore_to_writer, RestoreReport, Selection};
pub use stream::StreamSource;
