//! A real S3-compatible server on loopback for the tests: `s3s-fs`
//! (`cargo install s3s-fs@0.14.1 --features binary`; `scripts/test.sh`
//! installs it).
//!
//! Chosen over `moto[server]` by measurement and for two properties the
//! tests need: it keeps objects as plain files under `<root>/<bucket>/<key>`
//! (so a test can damage or remove an object exactly as on a local
//! repository, and a stopped server comes back with its data, which the
//! "server stopped mid-backup" test relies on), and it answers conditional
//! writes (`If-None-Match: *`), which `init` needs. On 400 MB of random
//! data, backup 2.6 s against moto's 4.0 s.
//!
//! `DEDUPE_TEST_BACKEND=s3` makes every `Repo` of a test binary live in
//! one such server, started once per test process by a thread that waits
//! on it: the server gets SIGKILL from the kernel (PR_SET_PDEATHSIG) when
//! that thread ends, so no server outlives its test process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "dedupe-test";
pub const SECRET_KEY: &str = "dedupe-test-secret";
pub const BUCKET: &str = "dedupe-test";

/// One running server.
pub struct Server {
    pub endpoint: String,
    /// Where its buckets live as directories.
    pub root: PathBuf,
    pub port: u16,
    pid: u32,
}

/// True when this run's repositories go to S3 (`DEDUPE_TEST_BACKEND=s3`).
pub fn enabled() -> bool {
    std::env::var("DEDUPE_TEST_BACKEND").is_ok_and(|v| v == "s3")
}

/// The binary, from `S3S_FS` or the PATH (cargo's bin directory included).
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("S3S_FS") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join("s3s-fs")).find(|p| p.is_file())
}

/// The server every `Repo` of this process uses in S3 mode.
pub fn shared() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("dedupe-s3-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        Server::start(&root, crate::mariadb::free_port())
    })
}

impl Server {
    /// Starts a server on `port` keeping its data in `root` (made if
    /// missing, with the test bucket in it), and waits until it answers.
    pub fn start(root: &Path, port: u16) -> Server {
        let bin = binary()
            .expect("s3s-fs is not installed: run scripts/test.sh, or cargo install s3s-fs@0.14.1 --features binary");
        std::fs::create_dir_all(root.join(BUCKET)).expect("make the bucket directory");
        let args: Vec<String> = [
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            ACCESS_KEY,
            "--secret-key",
            SECRET_KEY,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([root.display().to_string()])
        .collect();
        Server::spawn(&bin, &args, root, port)
    }

    /// Runs `bin args` as a server on `port`, and waits until it listens.
    fn spawn(bin: &Path, args: &[String], root: &Path, port: u16) -> Server {
        let (tx, rx) = std::sync::mpsc::channel();
        let (bin2, args) = (bin.to_path_buf(), args.to_vec());
        // The thread that forks the server must outlive the tests using it:
        // the kernel kills the server when that thread ends, at process exit
        // at the latest.
        std::thread::spawn(move || {
            use std::os::unix::process::CommandExt;
            let mut cmd = Command::new(bin2);
            cmd.args(&args).stdout(Stdio::null()).stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe and touches no memory of ours.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = cmd.spawn().expect("start the S3 server");
            tx.send(child.id()).expect("report the pid");
            // Lives as long as the server (so the kernel can kill it when the process ends).
            let _ = child.wait();
        });
        let pid = rx.recv().expect("s3s-fs started");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not listen on port {port}", bin.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { endpoint: format!("http://127.0.0.1:{port}"), root: root.to_path_buf(), port, pid }
    }

    /// Stops the server at once (SIGKILL), as a crash or a lost network would.
    pub fn kill(&self) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The environment a `dedupe` command needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// The `--repo` URL of a repository under `prefix`, and the directory its objects are in.
    pub fn repo(&self, prefix: &str) -> (String, PathBuf) {
        (format!("s3://{BUCKET}/{prefix}"), self.root.join(BUCKET).join(prefix))
    }
}

/// A `moto_server` (`pip install 'moto[server]'`) with the test bucket,
/// for the one property s3s-fs lacks: its conditional writes are atomic
/// (s3s-fs checks for the object, then writes it, so two racing
/// `If-None-Match: *` puts can both succeed; AWS S3 and moto let one win).
/// In memory only: it loses everything when stopped.
pub fn start_moto() -> Option<Server> {
    let dirs: Vec<PathBuf> = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    let bin = dirs.into_iter().map(|d| d.join("moto_server")).find(|p| p.is_file())?;
    let port = crate::mariadb::free_port();
    let root = std::env::temp_dir().join(format!("dedupe-moto-{port}"));
    let server = Server::spawn(&bin, &["-H".into(), "127.0.0.1".into(), "-p".into(), port.to_string()], &root, port);
    // An unsigned request: moto does not check signatures unless asked to.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    use std::io::{Read, Write};
    write!(s, "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    assert!(answer.starts_with("HTTP/1.1 200"), "moto did not create the bucket: {answer}");
    Some(server)
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
