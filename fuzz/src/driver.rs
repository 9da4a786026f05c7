//! The stable driver: runs a target on its seed corpus, then on mutations
//! of it for a time or a number of runs, and reports what broke the three
//! properties every target must keep:
//!
//! - no panic (in the target's thread or any thread it starts),
//! - no hang (a watchdog saves the input and exits the process after `timeout`),
//! - bounded memory (peak heap growth during one input above `mem_limit`;
//!   a single request above `hard_cap` exits at once, see `crate::alloc`).
//!
//! Each finding's input is saved under `artifacts/<target>/`. With coverage
//! instrumentation (`crate::cov`) an input that reaches a new edge joins the
//! in-memory corpus (and `save_corpus`, when given); without it the driver
//! only mutates the seeds.

use crate::alloc;
use crate::cov::{self, Coverage};
use crate::fuzz_targets::Target;
use crate::mutate::{self, Rng};
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

pub struct Options {
    pub target: &'static Target,
    /// Stop after this long (the seed corpus is always run whole first).
    pub seconds: f64,
    /// Stop after this many runs, if sooner.
    pub iterations: Option<u64>,
    pub seed: u64,
    /// Directories whose files are the seed corpus.
    pub corpus: Vec<PathBuf>,
    /// Where inputs that reached new coverage are written.
    pub save_corpus: Option<PathBuf>,
    /// Findings go to `<artifacts>/<target>/`.
    pub artifacts: PathBuf,
    /// Peak heap growth allowed while one input runs.
    pub mem_limit: usize,
    /// A single allocation larger than this exits the process.
    pub hard_cap: usize,
    pub timeout: Duration,
    /// Inputs are cut to this length; 0 picks twice the largest seed, at least 64 KiB.
    pub max_len: usize,
    /// How often a progress line is printed (never when zero).
    pub report_every: Duration,
}

impl Options {
    pub fn new(target: &'static Target) -> Options {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        Options {
            target,
            seconds: 10.0,
            iterations: None,
            seed: 1,
            corpus: vec![here.join("corpus").join(target.name)],
            save_corpus: None,
            artifacts: here.join("artifacts"),
            mem_limit: 64 << 20,
            hard_cap: 1 << 30,
            timeout: Duration::from_secs(10),
            max_len: 0,
            report_every: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Panic,
    Memory,
}

#[derive(Debug)]
pub struct Finding {
    pub kind: Kind,
    pub message: String,
    pub artifact: PathBuf,
}

#[derive(Debug)]
pub struct Report {
    pub target: &'static str,
    pub execs: u64,
    pub seconds: f64,
    pub seeds: usize,
    pub corpus: usize,
    pub edges: usize,
    pub instrumented: usize,
    pub slowest: Duration,
    pub peak_heap: usize,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn summary(&self) -> String {
        format!(
            "{}: {} execs in {:.1} s = {:.0} exec/s; corpus {} ({} seeds); coverage {}; slowest input {} ms; \
             peak heap {:.1} MiB; {} findings",
            self.target,
            self.execs,
            self.seconds,
            self.execs as f64 / self.seconds.max(1e-9),
            self.corpus,
            self.seeds,
            if self.instrumented == 0 {
                "none (not instrumented)".to_string()
            } else {
                format!("{} of {} edges", self.edges, self.instrumented)
            },
            self.slowest.as_millis(),
            self.peak_heap as f64 / (1 << 20) as f64,
            self.findings.len()
        )
    }
}

/// The last panic of any thread, as "message at file:line:col".
static PANIC: Mutex<Option<String>> = Mutex::new(None);

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                s.to_string()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "a panic".to_string()
            };
            let at = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())).unwrap_or_default();
            if let Ok(mut p) = PANIC.lock() {
                p.get_or_insert(format!("{msg} at {at}"));
            }
        }));
    });
}

fn take_panic() -> Option<String> {
    PANIC.lock().ok().and_then(|mut p| p.take())
}

/// The files of `dirs`, sorted by name, empty ones included.
pub fn load_corpus(dirs: &[PathBuf]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
        files.sort();
        out.extend(files.iter().filter_map(|f| std::fs::read(f).ok()));
    }
    out
}

fn short_hash(data: &[u8]) -> String {
    blake3::hash(data).to_hex()[..16].to_string()
}

fn save(dir: &Path, prefix: &str, data: &[u8]) -> PathBuf {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("{prefix}{}", short_hash(data)));
    if let Err(e) = std::fs::write(&path, data) {
        eprintln!("dedupe-fuzz: cannot save {}: {e}", path.display());
    }
    path
}

/// Milliseconds since `epoch` at which the running input started; 0 when idle.
struct Watchdog {
    started: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
}

impl Watchdog {
    /// `running` must stay allocated, unmoved, for the run: the watchdog reads it on a timeout.
    fn spawn(timeout: Duration, dir: PathBuf, target: &'static str, running: (usize, Arc<AtomicU64>)) -> Watchdog {
        let started = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        let (s, st) = (started.clone(), stop.clone());
        std::thread::spawn(move || {
            let (ptr, len) = running;
            while !st.load(Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let t = s.load(Relaxed);
                if t != 0 && epoch.elapsed().as_millis() as u64 > t - 1 + timeout.as_millis() as u64 {
                    // SAFETY: the driver's input buffer never reallocates and outlives this thread's use of it;
                    // its length was stored before the input started.
                    let data = unsafe { std::slice::from_raw_parts(ptr as *const u8, len.load(Relaxed) as usize) };
                    let path = save(&dir, "timeout-", data);
                    eprintln!(
                        "dedupe-fuzz: FINDING timeout in {target}: an input ran for more than {} s; saved to {}",
                        timeout.as_secs_f64(),
                        path.display()
                    );
                    // SAFETY: ends the process at once; the target's thread is stuck.
                    unsafe { libc::_exit(70) };
                }
            }
        });
        Watchdog { started, stop, epoch }
    }

    fn begin(&self) {
        self.started.store(self.epoch.elapsed().as_millis() as u64 + 1, Relaxed);
    }

    fn end(&self) {
        self.started.store(0, Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

struct Runner {
    target: &'static Target,
    cov: Coverage,
    watchdog: Watchdog,
    running: Vec<u8>,
    running_len: Arc<AtomicU64>,
    mem_limit: usize,
    dir: PathBuf,
    signatures: HashSet<String>,
    findings: Vec<Finding>,
    slowest: Duration,
    peak_heap: usize,
}

impl Runner {
    /// Runs one input; true if it reached new coverage.
    fn exec(&mut self, data: &[u8]) -> bool {
        self.running.clear();
        self.running.extend_from_slice(data);
        self.running_len.store(data.len() as u64, Relaxed);
        alloc::set_current(&self.running);
        let base = alloc::reset();
        let t0 = Instant::now();
        self.watchdog.begin();
        self.cov.start();
        let result = catch_unwind(AssertUnwindSafe(|| (self.target.run)(&self.running)));
        let new = self.cov.finish();
        self.watchdog.end();
        let took = t0.elapsed();
        let (peak, largest) = alloc::measured();
        let grew = peak.saturating_sub(base);
        self.slowest = self.slowest.max(took);
        self.peak_heap = self.peak_heap.max(grew);
        if let Some(msg) = take_panic().or_else(|| result.is_err().then(|| "a panic".to_string())) {
            let sig = msg.rsplit(" at ").next().unwrap_or(&msg).to_string();
            self.found(Kind::Panic, sig, format!("panic: {msg}"), data);
        } else if grew > self.mem_limit {
            let msg = format!(
                "memory: heap grew by {:.1} MiB for a {}-byte input (largest single allocation {:.1} MiB)",
                grew as f64 / (1 << 20) as f64,
                data.len(),
                largest as f64 / (1 << 20) as f64
            );
            self.found(Kind::Memory, "memory".into(), msg, data);
        }
        new
    }

    fn found(&mut self, kind: Kind, signature: String, message: String, data: &[u8]) {
        if !self.signatures.insert(signature) {
            return;
        }
        let prefix = match kind {
            Kind::Panic => "crash-",
            Kind::Memory => "oom-",
        };
        let artifact = save(&self.dir, prefix, data);
        eprintln!("dedupe-fuzz: FINDING in {}: {message}\n  input saved to {}", self.target.name, artifact.display());
        self.findings.push(Finding { kind, message, artifact });
    }
}

/// Runs one target; see the module doc.
pub fn run(opts: &Options) -> Report {
    install_panic_hook();
    let target = opts.target;
    let dir = opts.artifacts.join(target.name);
    let mut corpus = load_corpus(&opts.corpus);
    let seeds = corpus.len();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let max_len = if opts.max_len > 0 {
        opts.max_len
    } else {
        (2 * corpus.iter().map(Vec::len).max().unwrap_or(0)).max(64 << 10)
    };
    for c in &mut corpus {
        c.truncate(max_len);
    }
    let running = Vec::with_capacity(max_len);
    let running_len = Arc::new(AtomicU64::new(0));
    let _ = std::fs::create_dir_all(&dir);
    alloc::set_hard_cap(opts.hard_cap, &dir.join("oom-over-hard-cap"));
    let watchdog =
        Watchdog::spawn(opts.timeout, dir.clone(), target.name, (running.as_ptr() as usize, running_len.clone()));
    let mut r = Runner {
        target,
        cov: Coverage::new(),
        watchdog,
        running,
        running_len,
        mem_limit: opts.mem_limit,
        dir,
        signatures: HashSet::new(),
        findings: Vec::new(),
        slowest: Duration::ZERO,
        peak_heap: 0,
    };
    let start = Instant::now();
    let mut execs = 0u64;
    for input in &corpus {
        r.exec(input);
        execs += 1;
    }
    let mut rng = Rng::new(opts.seed);
    let mut input = Vec::with_capacity(2 * max_len + 4096);
    let mut words = cov::words();
    let mut last_report = Instant::now();
    let deadline = Duration::from_secs_f64(opts.seconds);
    loop {
        if opts.iterations.is_some_and(|n| execs >= n) || (execs.is_multiple_of(64) && start.elapsed() >= deadline) {
            break;
        }
        if r.findings.len() >= 32 {
            eprintln!("dedupe-fuzz: 32 distinct findings: stopping");
            break;
        }
        // Newer corpus entries (new coverage) are picked more often.
        let pick = if corpus.len() > seeds && rng.chance(2) {
            seeds + rng.below(corpus.len() - seeds)
        } else {
            rng.below(corpus.len())
        };
        input.clear();
        input.extend_from_slice(&corpus[pick]);
        let other = &corpus[rng.below(corpus.len())];
        mutate::mutate(&mut rng, &mut input, other, &words, max_len);
        if r.exec(&input) {
            if let Some(d) = &opts.save_corpus {
                save(d, "", &input);
            }
            corpus.push(input.clone());
        }
        execs += 1;
        if execs.is_multiple_of(4096) {
            words = cov::words();
        }
        if !opts.report_every.is_zero() && last_report.elapsed() >= opts.report_every {
            last_report = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "#{execs} {}: {:.0} exec/s, corpus {}, edges {}, findings {}",
                target.name,
                execs as f64 / secs,
                corpus.len(),
                r.cov.edges,
                r.findings.len()
            );
        }
    }
    Report {
        target: target.name,
        execs,
        seconds: start.elapsed().as_secs_f64(),
        seeds,
        corpus: corpus.len(),
        edges: r.cov.edges,
        instrumented: r.cov.size(),
        slowest: r.slowest,
        peak_heap: r.peak_heap,
        findings: r.findings,
    }
}

/// Runs each file once (to reproduce a finding); returns the findings.
pub fn replay(target: &'static Target, files: &[PathBuf], mem_limit: usize) -> Vec<Finding> {
    let mut opts = Options::new(target);
    opts.corpus = Vec::new();
    let mut all = Vec::new();
    for f in files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        opts.seconds = 0.0;
        opts.iterations = Some(0);
        opts.mem_limit = mem_limit;
        opts.artifacts = std::env::temp_dir().join("dedupe-fuzz-replay");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("input"), &data).expect("write");
        opts.corpus = vec![dir.path().to_path_buf()];
        let report = run(&opts);
        let verdict = report.findings.first().map(|f| f.message.as_str()).unwrap_or("ok");
        eprintln!("{}: {verdict}", f.display());
        all.extend(report.findings);
    }
    all
}
