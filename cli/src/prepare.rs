//! `restore --prepare`: makes a restored physical backup ready to start.
//!
//! A mariabackup/xtrabackup backup holds data files copied while the server
//! ran, plus the redo log written meanwhile; `mariabackup --prepare` applies
//! that log. We run the tool the backup was made with rather than
//! reimplementing crash recovery.

use crate::exit::{self, Failure};
use dedupe_store::Manifest;
use std::path::Path;
use std::process::Command;

pub fn prepare(ctx: &crate::commands::Ctx, manifest: &Manifest, target: &Path) -> Result<(), Failure> {
    let database = manifest.metadata.get("database").and_then(|v| v.as_str()).unwrap_or_default();
    match database {
        "mariadb" | "mysql" => {}
        "postgresql" => {
            ctx.note("PostgreSQL needs no prepare step: start the server on the restored directory");
            return Ok(());
        }
        _ => {
            return Err(Failure::usage("--prepare is for mariabackup/xtrabackup snapshots; this one is not"));
        }
    }
    let tool = manifest
        .metadata
        .get("mysql")
        .and_then(|m| m.get("tool_name"))
        .and_then(|v| v.as_str())
        .filter(|t| *t == "xtrabackup")
        .unwrap_or("mariabackup");
    let out = Command::new(tool)
        .arg("--prepare")
        .arg(format!("--target-dir={}", target.display()))
        .output()
        .map_err(|e| Failure::new(exit::ERROR, format!("cannot run {tool} --prepare (is it installed?): {e}")))?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stderr);
        let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        return Err(Failure::new(exit::ERROR, format!("{tool} --prepare failed ({}): {last}", out.status)));
    }
    ctx.note(&format!("prepared {} with {tool} --prepare", target.display()));
    Ok(())
}
