//! `dedupe forget`: removes the snapshots and archived logs a retention
//! policy does not keep (`dedupe_recovery::retention` decides; this prints
//! and deletes). Their data stays until `prune`.

use crate::ctx::{short, Ctx};
use crate::exit::{Failure, R};
use dedupe_recovery::retention::{decide, Decision, Policy, Verdict};
use dedupe_recovery::time::{parse_duration, shown};
use dedupe_store::Kind;
use serde_json::json;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Only the snapshots and logs of this name (default: every name, each on its own).
    #[arg(long, env = "DEDUPE_NAME")]
    name: Option<String>,
    /// Keep the newest N snapshots.
    #[arg(long, value_name = "N")]
    keep_last: Option<usize>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    keep_hourly: Option<usize>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(long, value_name = "N")]
    keep_daily: Option<usize>,
    /// Keep the newest snapshot of each of the last N weeks that have one.
    #[arg(long, value_name = "N")]
    keep_weekly: Option<usize>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<usize>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(long, value_name = "N")]
    keep_yearly: Option<usize>,
    /// Keep the snapshots within DURATION of the newest one (14d, 36h, 2w, 1y6m).
    #[arg(long, value_name = "DURATION")]
    keep_within: Option<String>,
    /// Keep every second of the last DURATION restorable: the base before the
    /// window, every snapshot after it, and the binlogs or WAL from that base on.
    #[arg(long, value_name = "DURATION")]
    keep_pitr: Option<String>,
    /// Show what would go and what stays, and why; delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(crate) fn run(ctx: &Ctx, a: Args) -> R {
    let duration = |s: &Option<String>| s.as_deref().map(parse_duration).transpose();
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: duration(&a.keep_within)?,
        pitr: duration(&a.keep_pitr)?,
    };
    if policy.is_empty() {
        return Err(Failure::usage("give at least one --keep-* rule (forget with none would remove every snapshot)"));
    }
    let repo = ctx.listed()?;
    let decisions = decide(repo.catalogue(), a.name.as_deref(), &policy, jiff::Timestamp::now())?;
    if !a.dry_run {
        crate::interrupt::say("some of what the policy drops may be forgotten already: run forget again to finish");
        // Snapshots first, oldest first, then logs: cut short, what is left
        // is still a restorable history with logs to spare.
        for d in &decisions {
            for v in d.snapshots.iter().filter(|v| !v.kept()) {
                repo.forget(Kind::Snapshot, &v.id)?;
            }
        }
        for d in &decisions {
            for v in d.logs.iter().filter(|v| !v.kept()) {
                repo.forget(Kind::Log, &v.id)?;
            }
        }
        // The drill records of the snapshots that went.
        let gone: std::collections::HashSet<String> =
            decisions.iter().flat_map(|d| d.snapshots.iter().filter(|v| !v.kept()).map(|v| v.id.clone())).collect();
        if !gone.is_empty() {
            repo.forget_drills_of(&gone)?;
        }
    }
    if ctx.json {
        let out: Vec<_> = decisions.iter().map(|d| as_json(d, a.dry_run)).collect();
        outln!("{}", serde_json::to_string_pretty(&out).expect("json"));
        return Ok(());
    }
    for d in &decisions {
        say_decision(ctx, d, a.dry_run);
    }
    Ok(())
}

fn as_json(d: &Decision, dry_run: bool) -> serde_json::Value {
    let snaps: Vec<_> = d
        .snapshots
        .iter()
        .map(|v| json!({"id": v.id, "time": v.label, "keep": v.keep, "forgotten": !v.kept() && !dry_run}))
        .collect();
    let logs: Vec<_> = d
        .logs
        .iter()
        .map(|v| json!({"id": v.id, "file": v.label, "keep": v.keep, "why_forget": v.forget, "forgotten": !v.kept() && !dry_run}))
        .collect();
    json!({"name": d.name, "dry_run": dry_run, "snapshots": snaps, "logs": logs})
}

fn say_decision(ctx: &Ctx, d: &Decision, dry_run: bool) {
    let gone = |v: &[Verdict]| v.iter().filter(|v| !v.kept()).count();
    let (snaps_gone, logs_gone) = (gone(&d.snapshots), gone(&d.logs));
    let verb = if dry_run { "would forget" } else { "forgot" };
    ctx.say(format!(
        "{}: keeps {} of {} snapshots and {} of {} archived logs; {verb} {snaps_gone} snapshots and {logs_gone} logs",
        d.name,
        d.snapshots.len() - snaps_gone,
        d.snapshots.len(),
        d.logs.len() - logs_gone,
        d.logs.len(),
    ));
    for v in &d.snapshots {
        let time = v.label.parse::<jiff::Timestamp>().map(shown).unwrap_or_else(|_| v.label.clone());
        let what = if v.kept() { format!("keep    ({})", v.keep.join(", ")) } else { gone_word(dry_run).into() };
        ctx.say(format!("  {}  {time}  {what}", short(&v.id)));
    }
    // Logs in runs of the same verdict: a WAL archive is thousands of files.
    let mut runs: Vec<(&Verdict, &Verdict, usize)> = Vec::new();
    for v in &d.logs {
        match runs.last_mut() {
            Some((first, last, n)) if first.keep == v.keep && first.forget == v.forget => {
                *last = v;
                *n += 1;
            }
            _ => runs.push((v, v, 1)),
        }
    }
    for (first, last, n) in runs {
        let files =
            if n == 1 { first.label.clone() } else { format!("{} … {} ({n} files)", first.label, last.label) };
        let what = if first.kept() {
            format!("keep    ({})", first.keep.join(", "))
        } else {
            format!("{}  ({})", gone_word(dry_run), first.forget.as_deref().unwrap_or_default())
        };
        ctx.say(format!("  {files}  {what}"));
    }
}

fn gone_word(dry_run: bool) -> &'static str {
    if dry_run {
        "forget"
    } else {
        "forgotten"
    }
}
