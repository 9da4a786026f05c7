//! One database session held open by a client process (`mariadb` or
//! `psql`) fed statements on its stdin: what the snapshot lock
//! (`mysql_lock`) and the PostgreSQL backup window (`pg_backup`) need, a
//! session that outlives single statements. Each statement is followed by
//! a marker `SELECT`, so its output ends where the marker appears. The
//! session ends with the process: when this one dies, the client sees its
//! stdin close and quits, and the server releases what the session held.
//!
//! A client process rather than a driver crate: the server's own client
//! reads the DBA's option files and socket defaults as every other tool does.

use crate::error::{Error, Result};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub(crate) struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    step: u32,
    /// What the session is for, for errors ("the snapshot lock").
    what: &'static str,
}

impl Session {
    /// Starts `cmd` (a client printing one row per line) as the session.
    pub(crate) fn start(mut cmd: Command, what: &'static str) -> Result<Session> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Tool(format!("cannot run {program}: {e}")))?;
        let (stdin, stdout) = (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"));
        Ok(Session { child, stdin, stdout: BufReader::new(stdout), step: 0, what })
    }

    /// Runs one statement and returns its output lines.
    pub(crate) fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        self.step += 1;
        let marker = format!("dedupe-step-{}", self.step);
        let sent = writeln!(self.stdin, "{sql};\nSELECT '{marker}';").and_then(|()| self.stdin.flush());
        if sent.is_err() {
            return Err(self.failed(sql));
        }
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return Err(self.failed(sql)),
                Ok(_) => {}
            }
            let line = line.trim_end_matches('\n').to_string();
            if line == marker {
                return Ok(lines);
            }
            lines.push(line);
        }
    }

    /// The client's own words for why it stopped.
    fn failed(&mut self, sql: &str) -> Error {
        let _ = self.child.kill();
        let mut err = Vec::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_end(&mut e, &mut err);
        }
        let _ = self.child.wait();
        Error::Tool(format!(
            "the server session for {} failed at `{sql}`: {}",
            self.what,
            dedupe_ingest::producer::last_line(&err)
        ))
    }
}

impl Drop for Session {
    /// Ends the session: the server releases what it held.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
