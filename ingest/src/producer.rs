//! A producer command run by dedupe itself (`backup --command '...'`), so
//! its exit status is seen before anything is committed: a plain pipe hides
//! it, and a producer that fails halfway may still close its stream cleanly.

use std::io::{self, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

/// What the producer left: its exit status once known, and its stderr.
#[derive(Default)]
pub struct ProducerReport {
    pub status: Option<ExitStatus>,
    pub log: Vec<u8>,
}

/// The producer's stderr kept for the snapshot; beyond this only the tail.
const LOG_LIMIT: usize = 4 << 20;

pub type Shared = Arc<Mutex<ProducerReport>>;

/// The producer's stdout. At its end the producer is waited for, and a
/// non-zero exit turns the end into an error, so no snapshot is committed.
pub struct ProducerOutput {
    child: Child,
    stdout: ChildStdout,
    command: String,
    report: Shared,
    stderr: Option<std::thread::JoinHandle<()>>,
    finished: bool,
}

pub fn spawn(command: &str) -> io::Result<(ProducerOutput, Shared)> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let report: Shared = Arc::default();
    let r = report.clone();
    let stderr = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut rep = r.lock().expect("not poisoned");
            rep.log.extend_from_slice(&buf[..n]);
            if rep.log.len() > LOG_LIMIT {
                let cut = rep.log.len() - LOG_LIMIT / 2;
                rep.log.drain(..cut);
            }
        }
    });
    let out = ProducerOutput {
        child,
        stdout,
        command: command.to_string(),
        report: report.clone(),
        stderr: Some(stderr),
        finished: false,
    };
    Ok((out, report))
}

/// The last non-empty line of a log, for a one-line error.
pub fn last_line(log: &[u8]) -> String {
    String::from_utf8_lossy(log).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_string()
}

impl Read for ProducerOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.finished {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        self.finished = true;
        let status = self.child.wait()?;
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
        let mut rep = self.report.lock().expect("not poisoned");
        rep.status = Some(status);
        if status.success() {
            Ok(0)
        } else {
            Err(io::Error::other(format!("the producer `{}` failed ({status}): {}", self.command, last_line(&rep.log))))
        }
    }
}

impl Drop for ProducerOutput {
    /// A backup that stops early must not leave the producer running.
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
