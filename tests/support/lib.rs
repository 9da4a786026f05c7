//! Helpers for the integration tests in `tests/`: a throwaway repository
//! driven through the real `dedupe` binary, and deterministic data.
//!
//! The binary is the one cargo built next to the test executable
//! (`target/<profile>/dedupe`); `.ci/run` builds the workspace first.

pub mod btrfs;
pub mod mariadb;
pub mod mount;
pub mod postgres;
pub mod proxy;
pub mod s3;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const PASSWORD: &str = "correct horse battery staple";

/// Path of the `dedupe` binary built alongside this test.
pub fn dedupe_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DEDUPE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/..");
    let bin = dir.join("dedupe");
    assert!(bin.exists(), "{} is missing: run `cargo build --release --workspace` before the tests", bin.display());
    bin
}

/// What a `dedupe` command needs in its environment to reach this run's
/// repositories: the S3 server's endpoint and credentials in S3 mode.
pub fn storage_env() -> Vec<(&'static str, String)> {
    if s3::enabled() {
        s3::shared().env()
    } else {
        Vec::new()
    }
}

/// A repository in a temporary directory with its own cache; with
/// `DEDUPE_TEST_BACKEND=s3`, in the test process's S3 server instead
/// (`s3`), whose files for it are still under `path`.
pub struct Repo {
    pub tmp: tempfile::TempDir,
    /// Where the repository's objects are on this machine's disk.
    pub path: PathBuf,
    /// What `--repo` is given: `path`, or an `s3://` URL.
    pub url: String,
    pub cache: PathBuf,
    /// The S3 server's endpoint and credentials; empty for a local repository.
    s3_env: Vec<(&'static str, String)>,
    /// `PASSWORD` unless `with_password` says otherwise.
    password: String,
}

impl Repo {
    /// A new, initialised repository.
    pub fn new() -> Repo {
        let r = Repo::uninitialised();
        let out = r.run(&["init"]);
        assert!(out.status.success(), "init failed: {}", String::from_utf8_lossy(&out.stderr));
        r
    }

    pub fn uninitialised() -> Repo {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = tmp.path().join("cache");
        if s3::enabled() {
            return Repo::uninitialised_in(s3::shared());
        }
        let path = tmp.path().join("repo");
        Repo { tmp, url: path.display().to_string(), path, cache, s3_env: Vec::new(), password: PASSWORD.into() }
    }

    /// A repository (not initialised) in a local directory, whatever the run's backend.
    pub fn uninitialised_local() -> Repo {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (path, cache) = (tmp.path().join("repo"), tmp.path().join("cache"));
        Repo { tmp, url: path.display().to_string(), path, cache, s3_env: Vec::new(), password: PASSWORD.into() }
    }

    /// The same repository opened with another password.
    pub fn with_password(mut self, password: &str) -> Repo {
        self.password = password.into();
        self
    }

    /// The environment variables that reach this repository (its S3 server's), for another command.
    pub fn storage_env(&self) -> &[(&'static str, String)] {
        &self.s3_env
    }

    /// A repository (not initialised) under a prefix of its own in `server`.
    pub fn uninitialised_in(server: &s3::Server) -> Repo {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = tmp.path().join("cache");
        let prefix = tmp.path().file_name().expect("a name").to_string_lossy().into_owned();
        let (url, path) = server.repo(&prefix);
        Repo { tmp, path, url, cache, s3_env: server.env(), password: PASSWORD.into() }
    }

    /// The same repository reached through another endpoint (a `proxy`).
    pub fn through(mut self, endpoint: &str) -> Repo {
        for (k, v) in &mut self.s3_env {
            if *k == "AWS_ENDPOINT_URL" {
                *v = endpoint.to_string();
            }
        }
        self
    }

    /// True when this repository lives in an S3 server.
    pub fn is_s3(&self) -> bool {
        !self.s3_env.is_empty()
    }

    /// A scratch path inside this test's temporary directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `dedupe --repo R ...` with the password in the environment and a cheap KDF.
    pub fn cmd<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&self, args: I) -> Command {
        let mut c = Command::new(dedupe_bin());
        c.arg("--repo").arg(&self.url).args(args);
        c.envs(self.s3_env.iter().map(|(k, v)| (k, v)));
        c.env("DEDUPE_PASSWORD", &self.password)
            .env("DEDUPE_CACHE_DIR", &self.cache)
            .env("DEDUPE_KDF_MEMORY_KIB", "1024")
            .env_remove("DEDUPE_REPO")
            .env_remove("DEDUPE_NAME")
            .env_remove("DEDUPE_PASSWORD_FILE")
            .env_remove("DEDUPE_PASSWORD_COMMAND")
            .env_remove("DEDUPE_NEW_PASSWORD")
            .env_remove("DEDUPE_PG_BIN");
        c
    }

    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().expect("run dedupe")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Vec<u8> {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "dedupe {:?} failed ({}): {}",
            args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Runs with `--json` and parses stdout.
    pub fn json<S: AsRef<OsStr>>(&self, args: &[S]) -> serde_json::Value {
        let mut a: Vec<&OsStr> = vec![OsStr::new("--json")];
        a.extend(args.iter().map(|s| s.as_ref()));
        let out = self.ok(&a);
        serde_json::from_slice(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out)))
    }

    /// Backs up `data` from stdin; returns the JSON summary.
    pub fn backup_bytes(&self, name: &str, data: &[u8]) -> serde_json::Value {
        let mut child = self
            .cmd(["--json", "backup", "--name", name, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn backup");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        let feeder = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().expect("wait");
        feeder.join().expect("feeder").expect("write stdin");
        assert!(out.status.success(), "backup failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("backup JSON")
    }

    /// Spawns `dedupe backup` reading stdin from a pipe the caller writes.
    pub fn spawn_backup(&self, name: &str) -> Child {
        self.cmd(["--json", "backup", "--name", name, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn backup")
    }

    /// Total bytes of the repository's objects.
    pub fn size(&self) -> u64 {
        dir_size(&self.path)
    }

    /// Every pack object's path (not the temporary files of a pack being written).
    pub fn packs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.path.join("data"), &mut out);
        out.retain(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')));
        out.sort();
        out
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        if self.is_s3() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

impl Default for Repo {
    fn default() -> Self {
        Repo::new()
    }
}

fn walk(p: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(p) else { return };
    for e in rd.flatten() {
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            walk(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

pub fn dir_size(p: &Path) -> u64 {
    let mut files = Vec::new();
    walk(p, &mut files);
    files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum()
}

/// A deterministic, incompressible byte stream (xorshift64*), fast enough for GiBs.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// Writes `total` bytes of `Prng(seed)` to `w` in 1 MiB pieces; returns their BLAKE3.
pub fn write_stream(w: &mut dyn Write, seed: u64, total: u64) -> std::io::Result<blake3::Hash> {
    let mut rng = Prng::new(seed);
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = total;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(h.finalize())
}

/// BLAKE3 and length of everything `r` yields.
pub fn hash_reader(r: &mut dyn std::io::Read) -> (blake3::Hash, u64) {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).expect("read");
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    (h.finalize(), n)
}

/// The stderr of a failed command, checked to be one line naming its cause.
pub fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(err.lines().count(), 1, "expected a one-line error, got: {err:?}");
    assert!(err.starts_with("dedupe: "), "error does not start with 'dedupe: ': {err:?}");
    err
}

/// Runs `cmd` with `data` on its stdin and waits for it. A command that
/// stops reading early (a refused stream) closes the pipe: not an error
/// here, its exit status and stderr tell why.
pub fn run_with_stdin(mut cmd: Command, data: &[u8]) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::scope(|s| {
        let feeder = s.spawn(move || {
            let _ = stdin.write_all(data);
        });
        let out = child.wait_with_output().expect("wait");
        feeder.join().expect("stdin feeder");
        out
    })
}

/// Seconds since the epoch, with their fraction.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Sleeps until `frac` seconds into the next whole second; returns that second.
pub fn next_second(frac: f64) -> i64 {
    let t = now_secs();
    let next = t.floor() + 1.0;
    std::thread::sleep(std::time::Duration::from_secs_f64(next + frac - t));
    next as i64
}

/// Unix seconds as local time, "YYYY-MM-DD HH:MM:SS": what a DBA types for `--until`.
pub fn local_time(secs: i64) -> String {
    let t: libc::time_t = secs;
    // SAFETY: localtime_r fills the zeroed tm it is given.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        assert!(!libc::localtime_r(&t, &mut tm).is_null());
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}
