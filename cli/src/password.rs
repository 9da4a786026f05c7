//! Where the passphrase comes from: `--password-file`, `--password-command`,
//! `DEDUPE_PASSWORD`, or a prompt when stdin is a terminal; in that order.

use crate::exit::{Failure, USAGE};
use std::io::IsTerminal;
use std::path::Path;
use std::process::Command;

pub(crate) struct PasswordSource<'a> {
    pub(crate) file: Option<&'a Path>,
    pub(crate) command: Option<&'a str>,
    /// The variable holding the password itself (`DEDUPE_PASSWORD`, or
    /// `DEDUPE_FROM_PASSWORD` for `copy`'s source).
    pub(crate) env: &'a str,
}

fn trim_newline(mut s: String) -> String {
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    s
}

impl PasswordSource<'_> {
    pub(crate) fn get(&self) -> Result<String, Failure> {
        if let Some(f) = self.file {
            let s = std::fs::read_to_string(f)
                .map_err(|e| Failure::usage(format!("cannot read the password file {}: {e}", f.display())))?;
            warn_if_world_readable(f);
            // The first line, as --password-file says.
            return Ok(trim_newline(s.lines().next().unwrap_or_default().to_string()));
        }
        if let Some(c) = self.command {
            let out = dedupe_ingest::secrets::scrub(&mut Command::new("sh"))
                .arg("-c")
                .arg(c)
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| Failure::usage(format!("cannot run the password command: {e}")))?;
            if !out.status.success() {
                return Err(Failure::usage(format!("the password command failed ({})", out.status)));
            }
            return Ok(trim_newline(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        if let Ok(p) = std::env::var(self.env) {
            return Ok(p);
        }
        let source = self.env.starts_with("DEDUPE_FROM");
        if std::io::stdin().is_terminal() {
            let prompt = if source { "source repository password: " } else { "repository password: " };
            return rpassword::prompt_password(prompt)
                .map_err(|e| Failure::usage(format!("cannot read the password: {e}")));
        }
        let flags = if source {
            "--from-password-file or --from-password-command"
        } else {
            "--password-file or --password-command"
        };
        Err(Failure::new(USAGE, format!("no password given: set {}, or pass {flags}", self.env)))
    }
}

/// A new passphrase (init, key add): from a file, `env_var`, or asked twice on a terminal.
pub(crate) fn new_password(file: Option<&Path>, env_var: &str) -> Result<String, Failure> {
    if let Some(f) = file {
        return PasswordSource { file: Some(f), command: None, env: env_var }.get();
    }
    if let Ok(p) = std::env::var(env_var) {
        if !p.is_empty() {
            return Ok(p);
        }
    }
    if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("new password: ").map_err(|e| Failure::usage(e.to_string()))?;
        let b = rpassword::prompt_password("again: ").map_err(|e| Failure::usage(e.to_string()))?;
        if a != b {
            return Err(Failure::usage("the two passwords differ"));
        }
        if a.is_empty() {
            return Err(Failure::usage("an empty password protects nothing"));
        }
        return Ok(a);
    }
    Err(Failure::usage(format!("no new password given: set {env_var} or pass a password file")))
}

/// A password file every user of the machine can read is worth a word: the
/// repository is only as private as it.
fn warn_if_world_readable(f: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(f) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o004 != 0 {
            eprintln!(
                "dedupe: warning: every user can read the password file {} (mode {mode:o}): chmod o-r it",
                f.display()
            );
        }
    }
}
