//! `dedupe ls SNAPSHOT`: the files of a snapshot.

use crate::ctx::Ctx;
use crate::exit::R;
use dedupe_store::NodeKind;

pub(crate) fn run(ctx: &Ctx, spec: &str, name: Option<&str>) -> R {
    let repo = ctx.indexed()?;
    let (_, manifest) = repo.find_snapshot(spec, name)?;
    let tree = repo.read_tree(&manifest)?;
    if ctx.json {
        // The nodes as stored, with the modification time in RFC 3339 beside
        // the exact nanoseconds, as every time in JSON.
        let nodes: Vec<serde_json::Value> = tree
            .nodes
            .iter()
            .map(|n| {
                let mut v = serde_json::to_value(n).expect("json");
                let t = jiff::Timestamp::from_nanosecond(n.mtime_ns as i128).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                v["mtime"] = serde_json::json!(t.to_string());
                v
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&nodes).expect("json"));
        return Ok(());
    }
    for n in &tree.nodes {
        let kind = match n.kind {
            NodeKind::Dir => 'd',
            NodeKind::Symlink => 'l',
            NodeKind::Hardlink => 'h',
            NodeKind::File => '-',
        };
        let extra = n.target.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default();
        outln!("{kind}{:04o} {:>6} {:>6} {:>14} {}{}", n.mode, n.uid, n.gid, n.size, n.path, extra);
    }
    Ok(())
}
