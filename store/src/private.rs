//! The local cache is private: it holds the index and every manifest in
//! the clear (names, paths, binlog positions), so its directories are made
//! 0700 like ssh's. Existing directories keep the mode their owner gave them.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Creates `dir` and its missing parents, readable by their user only.
pub(crate) fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
