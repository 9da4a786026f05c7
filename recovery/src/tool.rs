//! Running the database's own tools (mariabackup, mariadb-binlog,
//! pg_waldump): found on PATH, run with their output kept for the error.

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::process::Command;

/// The first of `names` found on PATH.
pub fn which(names: &[&str]) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    names.iter().find_map(|n| std::env::split_paths(&paths).map(|d| d.join(n)).find(|p| p.is_file()))
}

/// The name of the first of `names` installed, or an error naming them all.
pub fn require(names: &[&str]) -> Result<String> {
    names
        .iter()
        .find(|n| which(&[n]).is_some())
        .map(|n| n.to_string())
        .ok_or_else(|| Error::Tool(format!("{} is not installed", names.join(" or "))))
}

/// Runs `tool` to completion; a failure names the command and its last line of stderr.
pub fn run(tool: &str, args: &[String]) -> Result<()> {
    let out = dedupe_ingest::secrets::scrub(&mut Command::new(tool))
        .args(args)
        .output()
        .map_err(|e| Error::Tool(format!("cannot run {tool} (is it installed?): {e}")))?;
    if !out.status.success() {
        let last = dedupe_ingest::producer::last_line(&out.stderr);
        return Err(Error::Tool(format!("{tool} {} failed ({}): {last}", args.join(" "), out.status)));
    }
    Ok(())
}
