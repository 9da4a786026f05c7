//! `dedupe lsn`: the LSN the next incremental mariabackup starts from (--incremental-lsn).

use crate::ctx::{short, Ctx};
use crate::exit::{self, Failure, R};
use dedupe_ingest::facts::SnapshotFacts;
use serde_json::json;

pub(crate) fn run(ctx: &Ctx, name: Option<&str>) -> R {
    let repo = ctx.listed()?;
    let (id, m) = repo.find_snapshot("latest", name)?;
    let lsn = SnapshotFacts::of(&m).mysql.and_then(|my| my.to_lsn).ok_or_else(|| {
        Failure::new(
            exit::NO_SNAPSHOT,
            format!("snapshot {} has no InnoDB LSN (not a mariabackup/xtrabackup backup)", short(&id)),
        )
    })?;
    if ctx.json {
        outln!("{}", json!({"snapshot": id, "name": m.name, "to_lsn": lsn}));
    } else {
        outln!("{lsn}");
    }
    Ok(())
}
