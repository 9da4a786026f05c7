//! `dedupe-fuzz`: the stable driver of the fuzz targets (see the crate doc).
//!
//! ```text
//! dedupe-fuzz list
//! dedupe-fuzz run TARGET [--seconds S] [--iterations N] [--seed N] [--corpus DIR]...
//!                        [--save-corpus DIR] [--artifacts DIR] [--mem-limit-mb N] [--hard-cap-mb N]
//!                        [--timeout S] [--max-len N] [--report-every S]
//! dedupe-fuzz replay TARGET FILE...
//! ```
//! Exits 0 with no findings, 1 with findings, 2 on a usage error, 70 on a
//! hang and 71 on an allocation above the hard cap (the input is saved first).

use dedupe_fuzz::driver::{self, Options};
use dedupe_fuzz::fuzz_targets::{self, TARGETS};
use std::path::PathBuf;
use std::time::Duration;

fn usage(msg: &str) -> ! {
    eprintln!("dedupe-fuzz: {msg}");
    eprintln!("usage: dedupe-fuzz list | run TARGET [--seconds S] [--iterations N] [--seed N] [--corpus DIR]... [--save-corpus DIR] [--artifacts DIR] [--mem-limit-mb N] [--hard-cap-mb N] [--timeout S] [--max-len N] [--report-every S] | replay TARGET FILE...");
    std::process::exit(2)
}

fn target(name: Option<String>) -> &'static fuzz_targets::Target {
    let name = name.unwrap_or_else(|| usage("no target given"));
    fuzz_targets::find(&name).unwrap_or_else(|| usage(&format!("no target {name:?} (see `dedupe-fuzz list`)")))
}

fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> T {
    v.and_then(|v| v.parse().ok()).unwrap_or_else(|| usage(&format!("{flag} takes a number")))
}

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("list") => {
            for t in TARGETS {
                println!("{:<12} {}", t.name, t.about);
            }
        }
        Some("run") => {
            let mut opts = Options::new(target(args.next()));
            let mut corpus = Vec::new();
            while let Some(flag) = args.next() {
                match flag.as_str() {
                    "--seconds" => opts.seconds = num(&flag, args.next()),
                    "--iterations" => opts.iterations = Some(num(&flag, args.next())),
                    "--seed" => opts.seed = num(&flag, args.next()),
                    "--corpus" => corpus.push(PathBuf::from(args.next().unwrap_or_else(|| usage("--corpus DIR")))),
                    "--save-corpus" => {
                        opts.save_corpus =
                            Some(PathBuf::from(args.next().unwrap_or_else(|| usage("--save-corpus DIR"))))
                    }
                    "--artifacts" => {
                        opts.artifacts = PathBuf::from(args.next().unwrap_or_else(|| usage("--artifacts DIR")))
                    }
                    "--mem-limit-mb" => opts.mem_limit = num::<usize>(&flag, args.next()) << 20,
                    "--hard-cap-mb" => opts.hard_cap = num::<usize>(&flag, args.next()) << 20,
                    "--timeout" => opts.timeout = Duration::from_secs_f64(num(&flag, args.next())),
                    "--max-len" => opts.max_len = num(&flag, args.next()),
                    "--report-every" => opts.report_every = Duration::from_secs_f64(num(&flag, args.next())),
                    other => usage(&format!("unknown option {other}")),
                }
            }
            if !corpus.is_empty() {
                opts.corpus = corpus;
            }
            let report = driver::run(&opts);
            println!("{}", report.summary());
            for f in &report.findings {
                println!("  {:?}: {} ({})", f.kind, f.message, f.artifact.display());
            }
            std::process::exit(if report.findings.is_empty() { 0 } else { 1 });
        }
        Some("replay") => {
            let t = target(args.next());
            let files: Vec<PathBuf> = args.map(PathBuf::from).collect();
            if files.is_empty() {
                usage("replay takes files");
            }
            let findings = driver::replay(t, &files, 64 << 20);
            std::process::exit(if findings.is_empty() { 0 } else { 1 });
        }
        Some(other) => usage(&format!("unknown command {other}")),
        None => usage("no command"),
    }
}
