//! `dedupe timeline`: the spans of time each server can be restored to, and the gaps.

use crate::ctx::Ctx;
use crate::exit::R;
use dedupe_recovery::time::shown;
use serde_json::json;

pub(crate) fn run(ctx: &Ctx, name: Option<&str>) -> R {
    let repo = ctx.listed()?;
    let timelines = dedupe_recovery::timeline(repo.catalogue(), name)?;
    if ctx.json {
        let out: Vec<_> = timelines
            .iter()
            .map(|t| {
                let windows: Vec<_> = dedupe_recovery::timeline::in_seconds(&t.windows)
                    .iter()
                    .map(|s| json!({"from": s.from.to_string(), "to": s.to.to_string()}))
                    .collect();
                let gaps: Vec<_> = t
                    .gaps
                    .iter()
                    .map(|g| {
                        json!({"missing": g.missing, "after": g.after.map(|t| t.to_string()),
                               "before": g.before.map(|t| t.to_string())})
                    })
                    .collect();
                json!({"name": t.name, "windows": windows, "gaps": gaps})
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return Ok(());
    }
    for t in &timelines {
        ctx.say(format!("{}:", t.name));
        // In the seconds `restore --until` takes: the last is the last it accepts.
        for w in dedupe_recovery::timeline::in_seconds(&t.windows) {
            ctx.say(format!("  restorable from {} to {}", shown(w.from), shown(w.to)));
        }
        for g in &t.gaps {
            ctx.say(format!("  gap: {} missing", g.missing.join(", ")));
        }
    }
    Ok(())
}
