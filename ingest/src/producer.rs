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
    let mut child = crate::secrets::scrub(&mut Command::new("sh"))
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

/// What a failed producer's output says went wrong, in one line: its lines
/// that look like errors (`Error`, `ERROR`, `FATAL`, `failed`), the last
/// few of them; else its last 20 lines. A tool often ends with a usage
/// listing or a summary, so its last line alone may not be the reason.
pub fn what_failed(log: &[u8]) -> String {
    const MARKS: [&str; 5] = ["Error", "ERROR", "error:", "FATAL", "failed"];
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut why: Vec<&str> = lines.iter().copied().filter(|l| MARKS.iter().any(|m| l.contains(m))).collect();
    if why.is_empty() {
        return lines[lines.len().saturating_sub(20)..].join(" | ");
    }
    why.drain(..why.len().saturating_sub(5));
    why.join(" | ")
}

/// The error the producer's stream ends in when the producer failed:
/// readers that wrap the stream (a decompressor) pass it on as it is.
#[derive(Debug)]
pub struct Failed(pub String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

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
            let m = format!("the producer `{}` failed ({status}): {}", self.command, last_line(&rep.log));
            Err(io::Error::other(Failed(m)))
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

/// The command as it may be stored and shown: passwords in it replaced by
/// `***` (`--password=…`, `--passwd=…`, `PGPASSWORD=…`, `MYSQL_PWD=…`,
/// `password=…` in a libpq connection string, `user:…@` in a URL, and
/// `-p…` for MySQL/MariaDB tools, where `-p` is the password and not, as
/// for PostgreSQL's tools, the port). The command itself runs unmasked.
pub fn masked(command: &str) -> String {
    let mysql = ["mariabackup", "xtrabackup", "mysqldump", "mariadb-dump", "mysql", "mariadb", "mydumper"]
        .iter()
        .any(|t| command.contains(t));
    let mut out = String::with_capacity(command.len());
    let mut rest = command;
    loop {
        let ws = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..ws]);
        rest = &rest[ws..];
        if rest.is_empty() {
            return out;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        out.push_str(&mask_word(&rest[..end], mysql));
        rest = &rest[end..];
    }
}

fn mask_word(word: &str, mysql: bool) -> String {
    const STARS: &str = "***";
    for key in ["--password=", "--passwd=", "PGPASSWORD=", "MYSQL_PWD=", "password="] {
        if let Some(i) = word.find(key) {
            // The value runs to a closing quote, if the word has one after it.
            let value_end = word[i + key.len()..].find(['\'', '"']).map_or(word.len(), |q| i + key.len() + q);
            return format!("{}{key}{STARS}{}", &word[..i], &word[value_end..]);
        }
    }
    if mysql && word.len() > 2 && word.starts_with("-p") {
        return format!("-p{STARS}");
    }
    if let (Some(scheme), Some(at)) = (word.find("://"), word.find('@')) {
        let creds = &word[scheme + 3..at];
        if let Some(colon) = creds.find(':') {
            return format!("{}{STARS}{}", &word[..scheme + 3 + colon + 1], &word[at..]);
        }
    }
    word.to_string()
}

#[cfg(test)]
mod mask_tests {
    use super::{masked, what_failed};

    #[test]
    fn a_failure_is_told_by_its_error_lines_else_by_its_last_lines() {
        let mut log = String::new();
        for i in 0..14 {
            log.push_str(&format!("[00] 2026-12-07 info line {i}\n"));
        }
        log.push_str("[00] Error: missing required privilege RELOAD on *.*\n");
        for i in 0..15 {
            log.push_str(&format!("GRANT SELECT ON t{i} TO backup\n"));
        }
        assert_eq!(what_failed(log.as_bytes()), "[00] Error: missing required privilege RELOAD on *.*");
        let quiet: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let told = what_failed(quiet.as_bytes());
        assert!(told.starts_with("line 10 | ") && told.ends_with("line 29"), "{told}");
    }

    #[test]
    fn passwords_in_a_producer_command_are_masked_and_the_rest_kept() {
        let cases = [
            (
                "mariabackup --backup --stream=xbstream --user=backup --password=s3cret --target-dir=/t",
                "mariabackup --backup --stream=xbstream --user=backup --password=*** --target-dir=/t",
            ),
            ("mysqldump -uroot -ps3cret --all-databases", "mysqldump -uroot -p*** --all-databases"),
            ("PGPASSWORD=s3cret pg_basebackup -D - -Ft -p 5433", "PGPASSWORD=*** pg_basebackup -D - -Ft -p 5433"),
            ("pg_dump -d 'host=db password=s3cret user=x' -Fc", "pg_dump -d 'host=db password=*** user=x' -Fc"),
            ("pg_dump postgresql://app:s3cret@db:5432/shop", "pg_dump postgresql://app:***@db:5432/shop"),
            ("MYSQL_PWD=s3cret  mariadb-dump  shop", "MYSQL_PWD=***  mariadb-dump  shop"),
            ("pg_basebackup -D - -Ft -X fetch -p5433", "pg_basebackup -D - -Ft -X fetch -p5433"),
        ];
        for (given, stored) in cases {
            assert_eq!(masked(given), stored, "{given}");
        }
    }
}
