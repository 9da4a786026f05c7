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
    let tool = tool_for(manifest);
    run(tool, &["--prepare".into(), format!("--target-dir={}", target.display())])?;
    ctx.note(&format!("prepared {} with {tool} --prepare", target.display()));
    Ok(())
}

fn tool_for(manifest: &Manifest) -> &'static str {
    match manifest.metadata.get("mysql").and_then(|m| m.get("tool_name")).and_then(|v| v.as_str()) {
        Some("xtrabackup") => "xtrabackup",
        _ => "mariabackup",
    }
}

fn run(tool: &str, args: &[String]) -> Result<(), Failure> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| Failure::new(exit::ERROR, format!("cannot run {tool} (is it installed?): {e}")))?;
    if !out.status.success() {
        let last = dedupe_ingest::producer::last_line(&out.stderr);
        return Err(Failure::new(exit::ERROR, format!("{tool} {} failed ({}): {last}", args.join(" "), out.status)));
    }
    Ok(())
}

/// Restores and prepares an incremental chain into `target`: the full
/// backup, prepared; then each incremental restored beside it and applied
/// with `--prepare --incremental-dir`, in order.
pub fn restore_chain(
    ctx: &crate::commands::Ctx,
    repo: &dedupe_store::Indexed,
    id: &str,
    manifest: &Manifest,
    target: &Path,
) -> Result<(), Failure> {
    let chain = crate::pitr::chain(ctx, repo, id, manifest)?;
    let tool = tool_for(manifest);
    for (i, (sid, m)) in chain.iter().enumerate() {
        let dir = if i == 0 {
            target.to_path_buf()
        } else {
            let parent = target.parent().unwrap_or(Path::new("."));
            parent.join(format!(".dedupe-incremental-{}", &sid[..12]))
        };
        if i > 0 {
            // Left over from an interrupted run.
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| Failure::new(exit::STORAGE, format!("cannot create {}: {e}", dir.display())))?;
        let tree = repo.read_tree(m)?;
        let nodes = dedupe_ingest::Selection::default().apply(tree)?;
        dedupe_ingest::restore_to_dir(repo, &nodes, &dir, &|_| {})?;
        if i == 0 {
            run(tool, &["--prepare".into(), format!("--target-dir={}", target.display())])?;
        } else {
            let r = run(
                tool,
                &[
                    "--prepare".into(),
                    format!("--target-dir={}", target.display()),
                    format!("--incremental-dir={}", dir.display()),
                ],
            );
            let _ = std::fs::remove_dir_all(&dir);
            r?;
        }
        ctx.note(&format!("applied {} ({}/{})", &sid[..8], i + 1, chain.len()));
    }
    Ok(())
}
