//! Which PostgreSQL binaries run a data directory: those of its own major
//! version (`PG_VERSION`), never merely the first `pg_ctl` on `PATH`.
//!
//! A server refuses a data directory of another major version, and a
//! `pg_waldump` reads only its own version's WAL. Hosts often have several
//! versions (Debian's `/usr/lib/postgresql/N/bin`, a build under `/opt`, a
//! package's own tree), so the binaries are looked for in this order:
//! `--pg-bin DIR` (`DEDUPE_PG_BIN`), then `/usr/lib/postgresql/N/bin`, then
//! `PATH`; each is asked its version (`pg_ctl --version`). One given
//! explicitly, or the one on `PATH`, of another version is refused in one
//! sentence naming both versions (`Error::WrongVersion`): never taken for a
//! damaged backup.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of PostgreSQL programs of one major version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgBin {
    pub dir: PathBuf,
    pub major: u32,
}

impl PgBin {
    /// The path of `tool` in this directory.
    pub fn tool(&self, tool: &str) -> PathBuf {
        self.dir.join(tool)
    }
}

/// The major version a data directory was made by (its `PG_VERSION`).
pub fn datadir_major(datadir: &Path) -> Result<u32> {
    let p = datadir.join("PG_VERSION");
    let text = std::fs::read_to_string(&p)
        .map_err(|e| Error::Input(format!("cannot read {}: {e} (is it a PostgreSQL data directory?)", p.display())))?;
    parse_major(text.trim())
        .ok_or_else(|| Error::Input(format!("{} says {:?}, not a version", p.display(), text.trim())))
}

/// `18`, `16.2`, `9.6` (the major of 9.x is two numbers; 9.6 reads as 9).
fn parse_major(v: &str) -> Option<u32> {
    v.split(['.', ' ']).next()?.parse().ok()
}

/// The major version a PostgreSQL program says it is: `pg_ctl (PostgreSQL) 18.6`.
pub fn version_of(program: &Path) -> Option<u32> {
    let out = dedupe_ingest::secrets::scrub(&mut Command::new(program)).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split_whitespace().find(|w| w.as_bytes().first().is_some_and(u8::is_ascii_digit))?;
    parse_major(v)
}

/// The binaries for a cluster of `major`, with `tool` among them.
/// `explicit` is `--pg-bin` / `DEDUPE_PG_BIN`.
pub fn find(major: u32, tool: &str, explicit: Option<&Path>) -> Result<PgBin> {
    if let Some(dir) = explicit {
        return check(dir, major, tool, "--pg-bin");
    }
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    if debian.join(tool).is_file() {
        return check(&debian, major, tool, "Debian's");
    }
    match crate::tool::which(&[tool]) {
        Some(p) => check(p.parent().unwrap_or(Path::new("/")), major, tool, "PATH's"),
        None => Err(Error::Tool(format!(
            "{tool} of PostgreSQL {major} is not installed (looked in /usr/lib/postgresql/{major}/bin and PATH): \
             pass --pg-bin with the directory of PostgreSQL {major}'s programs, or set DEDUPE_PG_BIN"
        ))),
    }
}

/// `dir` holds `tool` of `major`, or the error that names both versions.
fn check(dir: &Path, major: u32, tool: &str, whose: &str) -> Result<PgBin> {
    let program = dir.join(tool);
    if !program.is_file() {
        return Err(Error::Tool(format!("{} is missing ({whose} PostgreSQL binaries)", program.display())));
    }
    match version_of(&program) {
        Some(v) if v == major => Ok(PgBin { dir: dir.to_path_buf(), major }),
        Some(v) => Err(Error::WrongVersion(format!(
            "the data directory is PostgreSQL {major} but {} is PostgreSQL {v}: pass --pg-bin with the directory \
             of PostgreSQL {major}'s programs, or set DEDUPE_PG_BIN",
            program.display()
        ))),
        None => Err(Error::Tool(format!("{} --version does not say a PostgreSQL version", program.display()))),
    }
}

/// The binaries for the data directory `datadir`.
pub fn for_datadir(datadir: &Path, tool: &str, explicit: Option<&Path>) -> Result<PgBin> {
    find(datadir_major(datadir)?, tool, explicit)
}

/// Every `pg_waldump` worth trying on a WAL file, best first: the explicit
/// one, the one on PATH, then Debian's per version, newest first. A
/// pg_waldump reads only its own version's WAL; the first that reads a
/// file wins.
pub fn waldumps(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = parse_major(e.file_name().to_str()?)?;
            let p = e.path().join("bin/pg_waldump");
            p.exists().then_some((version, p))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut out: Vec<PathBuf> = explicit.map(|d| d.join("pg_waldump")).into_iter().collect();
    out.extend(crate::tool::which(&["pg_waldump"]));
    out.extend(found.into_iter().map(|(_, p)| p));
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_are_read_from_versions_and_directories() {
        assert_eq!(parse_major("18"), Some(18));
        assert_eq!(parse_major("16.2"), Some(16));
        assert_eq!(parse_major("9.6"), Some(9));
        assert_eq!(parse_major("x"), None);
    }

    /// A fake `pg_ctl` that says it is `version`, in a directory of its own.
    fn fake_bin(version: &str) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pg_ctl");
        std::fs::write(&p, format!("#!/bin/sh\necho 'pg_ctl (PostgreSQL) {version}'\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn an_explicit_directory_of_another_version_is_refused_naming_both() {
        let bin = fake_bin("15.18");
        match find(18, "pg_ctl", Some(bin.path())) {
            Err(Error::WrongVersion(m)) => assert!(m.contains("PostgreSQL 18") && m.contains("PostgreSQL 15"), "{m}"),
            other => panic!("{other:?}"),
        }
        let bin = fake_bin("18.6");
        assert_eq!(find(18, "pg_ctl", Some(bin.path())).unwrap().major, 18);
        // A directory without the tool says so.
        assert!(matches!(find(18, "postgres", Some(bin.path())), Err(Error::Tool(_))));
    }
}
