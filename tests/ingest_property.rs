//! Damaged input is refused or read exactly as the reference tool reads it.
//!
//! For single-bit flips and cuts of a small valid xbstream (made by
//! `mbstream -c`), tar (GNU tar: a file, directories, a symlink, a hard link)
//! and binlog (real MariaDB binlogs from `ingest/testdata/binlog/`):
//!
//! - xbstream and tar, `dedupe backup --format F -` on stdin either refuses
//!   (non-zero exit, and `dedupe snapshots --json` shows nothing new), or
//!   what `dedupe restore` writes is what `mbstream -x` / `tar -x` extract
//!   from the same bytes: the same files with the same sizes and bytes, the
//!   same symlinks and directories. Where the reference tool refuses, dedupe
//!   must refuse too.
//! - binlogs, `dedupe binlog push` (the damaged file closed: another file
//!   follows it in the index) either refuses, or what it recorded agrees with
//!   `mariadb-binlog --verify-binlog-checksum`: where that reads the file
//!   (exit 0), the end of the last event it prints is `end_position`; where
//!   it refuses, dedupe must have refused or marked the file partial.
//!
//! Which bytes: every byte of every chunk, member or event header gets one
//! random bit flipped (the tar headers' name fields only sampled), plus a
//! sample of payload bytes; cuts at every header boundary and its
//! neighbours, plus a sample. The randomness is seeded: a failure repeats.
//! Every failing case is listed with its position in the assertion message.

use dedupe_suite::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn need(tool: &str) {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().unwrap().status.success();
    assert!(found, "{tool} is missing: scripts/test.sh installs it (mariadb-backup, mariadb-client, tar)");
}

/// One damaged input.
struct Case {
    what: String,
    bytes: Vec<u8>,
}

fn flip(seed: &[u8], at: usize, rng: &mut ChaCha8Rng, region: &str) -> Case {
    let bit = rng.random_range(0..8);
    let mut bytes = seed.to_vec();
    bytes[at] ^= 1 << bit;
    Case { what: format!("bit {bit} of byte {at} flipped ({region})"), bytes }
}

fn cut(seed: &[u8], len: usize) -> Case {
    Case { what: format!("cut to {len} of {} bytes", seed.len()), bytes: seed[..len].to_vec() }
}

/// Flips of every byte in `headers` (each a range and its name), `payload_samples`
/// random bytes elsewhere; cuts at each header's start and end ±1 and `cut_samples` more.
fn cases(
    seed: &[u8],
    headers: &[(std::ops::Range<usize>, String)],
    payload_samples: usize,
    cut_samples: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Case> {
    let mut out = Vec::new();
    let mut in_header = vec![false; seed.len()];
    for (r, name) in headers {
        for at in r.clone() {
            in_header[at] = true;
            out.push(flip(seed, at, rng, name));
        }
    }
    let payload: Vec<usize> = (0..seed.len()).filter(|&i| !in_header[i]).collect();
    for _ in 0..payload_samples.min(payload.len()) {
        let at = payload[rng.random_range(0..payload.len())];
        out.push(flip(seed, at, rng, "payload"));
    }
    let mut cuts = BTreeSet::new();
    for (r, _) in headers {
        for p in [r.start, r.end] {
            for c in [p.saturating_sub(1), p, p + 1] {
                cuts.insert(c.min(seed.len() - 1));
            }
        }
    }
    for _ in 0..cut_samples {
        cuts.insert(rng.random_range(0..seed.len()));
    }
    out.extend(cuts.into_iter().map(|c| cut(seed, c)));
    out
}

/// What an extracted directory holds: files (bytes), symlinks (targets), directories.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File(Vec<u8>),
    Symlink(PathBuf),
    Dir,
}

fn contents(dir: &Path) -> BTreeMap<String, Entry> {
    fn walk(base: &Path, p: &Path, out: &mut BTreeMap<String, Entry>) {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let path = e.path();
            let rel = path.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                out.insert(rel, Entry::Symlink(std::fs::read_link(&path).unwrap()));
            } else if ft.is_dir() {
                out.insert(rel, Entry::Dir);
                walk(base, &path, out);
            } else {
                out.insert(rel, Entry::File(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A short account of how two extractions differ.
fn differences(ours: &BTreeMap<String, Entry>, theirs: &BTreeMap<String, Entry>) -> String {
    let mut d = Vec::new();
    for (p, e) in ours {
        match theirs.get(p) {
            None => d.push(format!("{p} only in dedupe's restore")),
            Some(t) if t != e => d.push(match (e, t) {
                (Entry::File(a), Entry::File(b)) => {
                    let first = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
                    format!("{p}: {} bytes vs {} bytes, first difference at {first}", a.len(), b.len())
                }
                _ => format!("{p}: {e:?} vs {t:?}"),
            }),
            _ => {}
        }
    }
    for p in theirs.keys().filter(|p| !ours.contains_key(*p)) {
        d.push(format!("{p} only in the reference extraction"));
    }
    d.join("; ")
}

fn pipe(cmd: Command, input: &[u8]) -> Output {
    run_with_stdin(cmd, input)
}

fn stderr_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_string()
}

fn snapshot_count(repo: &Repo) -> usize {
    repo.json(&["snapshots"]).as_array().expect("a JSON array").len()
}

/// Runs every case of an archive format; returns the failures.
fn check_archive(format: &str, cases: Vec<Case>, reference: &dyn Fn(&Path) -> Command) -> Vec<String> {
    let repo = Repo::new();
    let mut committed = 0;
    let mut failures = Vec::new();
    // Both refused, dedupe alone refused, both read it.
    let (mut both_refused, mut dedupe_refused, mut both_read) = (0, 0, 0);
    for (i, case) in cases.iter().enumerate() {
        let theirs_dir = repo.scratch(&format!("ref-{i}"));
        std::fs::create_dir_all(&theirs_dir).unwrap();
        let reference_out = pipe(reference(&theirs_dir), &case.bytes);
        let reference_ok = reference_out.status.success();
        let ours = pipe(repo.cmd(["--json", "backup", "--format", format, "--name", "t", "-"]), &case.bytes);
        let fail = |why: String| format!("{format}: {}: {why}", case.what);
        if !ours.status.success() {
            if reference_ok {
                dedupe_refused += 1;
            } else {
                both_refused += 1;
            }
            let now = snapshot_count(&repo);
            if now != committed {
                failures.push(fail(format!(
                    "dedupe backup failed ({}) but committed a snapshot: {}",
                    ours.status,
                    stderr_line(&ours)
                )));
                committed = now;
            }
        } else {
            committed += 1;
            if !reference_ok {
                failures.push(fail(format!(
                    "the reference refuses it ({}) but dedupe backup accepted it",
                    stderr_line(&reference_out).trim()
                )));
            } else {
                both_read += 1;
                let summary: serde_json::Value = serde_json::from_slice(&ours.stdout).expect("backup JSON");
                let id = summary["snapshot"].as_str().expect("snapshot id").to_string();
                let ours_dir = repo.scratch(&format!("ours-{i}"));
                let restore = repo.run(&["restore", &id, "--target", ours_dir.to_str().unwrap()]);
                if !restore.status.success() {
                    failures.push(fail(format!("backup accepted but restore failed: {}", stderr_line(&restore))));
                } else {
                    let (a, b) = (contents(&ours_dir), contents(&theirs_dir));
                    if a != b {
                        failures.push(fail(format!("restored files differ: {}", differences(&a, &b))));
                    }
                }
                let _ = std::fs::remove_dir_all(&ours_dir);
            }
        }
        let _ = std::fs::remove_dir_all(&theirs_dir);
    }
    eprintln!(
        "{format}: {} cases: {both_refused} refused by both, {dedupe_refused} by dedupe alone, \
         {both_read} read by both, {} mishandled",
        cases.len(),
        failures.len()
    );
    failures
}

fn report(what: &str, total: usize, failures: Vec<String>) {
    if failures.is_empty() {
        return;
    }
    panic!("{what}: {} of {total} damaged inputs were mishandled:\n{}", failures.len(), failures.join("\n"));
}

// xbstream ----------------------------------------------------------------

/// The header of every chunk (magic to CRC), by file.
fn xbstream_headers(s: &[u8]) -> Vec<(std::ops::Range<usize>, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < s.len() {
        let u32_at = |i: usize| u32::from_le_bytes(s[i..i + 4].try_into().unwrap()) as usize;
        let path_len = u32_at(at + 10);
        let path = String::from_utf8_lossy(&s[at + 14..at + 14 + path_len]).into_owned();
        let kind = s[at + 9];
        let mut end = at + 14 + path_len;
        let mut payload = 0;
        if kind == b'P' {
            payload = u64::from_le_bytes(s[end..end + 8].try_into().unwrap()) as usize;
            end += 20;
        }
        out.push((at..end, format!("{} chunk header of {path}", kind as char)));
        at = end + payload;
    }
    out
}

#[test]
fn damaged_xbstreams_are_refused_or_restored_as_mbstream_extracts_them() {
    need("mbstream");
    let seed = std::fs::read(root().join("fuzz/corpus/xbstream/mbstream.xbs")).unwrap();
    let headers = xbstream_headers(&seed);
    let mut rng = ChaCha8Rng::seed_from_u64(0x8b);
    let cases = cases(&seed, &headers, 40, 60, &mut rng);
    let total = cases.len();
    let failures = check_archive("xbstream", cases, &|dir| {
        let mut c = Command::new("mbstream");
        c.arg("-x").arg("-C").arg(dir);
        c
    });
    report("xbstream", total, failures);
}

// tar ----------------------------------------------------------------------

/// Header blocks: mode to type flag, magic and version whole; one sampled
/// byte of each of name, link name, user and group names and the rest.
fn tar_headers(s: &[u8], rng: &mut ChaCha8Rng) -> Vec<(std::ops::Range<usize>, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= s.len() && s[at..at + 512].iter().any(|&b| b != 0) {
        let h = &s[at..at + 512];
        let name = String::from_utf8_lossy(&h[..h[..100].iter().position(|&b| b == 0).unwrap_or(100)]).into_owned();
        let size_field =
            String::from_utf8_lossy(&h[124..136]).trim_matches(|c: char| c == '\0' || c == ' ').to_string();
        let size = usize::from_str_radix(&size_field, 8).unwrap_or(0);
        out.push((at + 100..at + 157, format!("header of {name}: mode to type flag")));
        out.push((at + 257..at + 265, format!("header of {name}: magic and version")));
        for (field, r) in [("name", 0..100), ("link name", 157..257), ("owner names", 265..329), ("rest", 329..512)] {
            let b = at + rng.random_range(r);
            out.push((b..b + 1, format!("header of {name}: {field}")));
        }
        // GNU long names and links carry their name as data: count it as header.
        let data = if h[156] == b'L' || h[156] == b'K' {
            (at + 512..at + 512 + size, format!("long name of {name}"))
        } else {
            (0..0, String::new())
        };
        if !data.0.is_empty() {
            out.push(data);
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    // The end-of-archive blocks' first bytes.
    if at < s.len() {
        out.push((at..at + 4, "end-of-archive block".into()));
    }
    out
}

#[test]
fn damaged_tars_are_refused_or_restored_as_gnu_tar_extracts_them() {
    need("tar");
    let seed = std::fs::read(root().join("fuzz/corpus/tar/gnu.tar")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0x7a);
    let headers = tar_headers(&seed, &mut rng);
    let cases = cases(&seed, &headers, 40, 60, &mut rng);
    let total = cases.len();
    let failures = check_archive("tar", cases, &|dir| {
        let mut c = Command::new("tar");
        c.arg("-x").arg("-f").arg("-").arg("-C").arg(dir).arg("--no-same-owner");
        c
    });
    report("tar", total, failures);
}

// binlog -------------------------------------------------------------------

/// The event headers of a binlog (19 bytes each, after the 4-byte magic).
fn binlog_headers(s: &[u8]) -> Vec<(std::ops::Range<usize>, String)> {
    let mut out = vec![(0..4, "magic".to_string())];
    let mut at = 4;
    while at + 19 <= s.len() {
        let size = u32::from_le_bytes(s[at + 9..at + 13].try_into().unwrap()) as usize;
        out.push((at..at + 19, format!("header of the type {} event at {at}", s[at + 4])));
        at += size;
    }
    out
}

/// Where the last event `mariadb-binlog` printed ends, or why it refused.
fn mariadb_binlog_end(file: &Path, bytes: &[u8]) -> Result<u64, String> {
    let out = Command::new("mariadb-binlog")
        .args(["--no-defaults", "--verify-binlog-checksum"])
        .arg(file)
        .output()
        .expect("run mariadb-binlog");
    if !out.status.success() {
        return Err(format!("mariadb-binlog exits {}: {}", out.status, stderr_line(&out)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(last) =
        text.lines().filter_map(|l| l.strip_prefix("# at ")).filter_map(|p| p.trim().parse::<usize>().ok()).next_back()
    else {
        return Ok(4);
    };
    // The event it printed last is as long as its header says: that is how it read it.
    let size = bytes.get(last + 9..last + 13).map(|b| u32::from_le_bytes(b.try_into().unwrap())).unwrap_or(0);
    Ok(last as u64 + size as u64)
}

fn check_binlogs(seed_name: &str, cases: Vec<Case>) -> Vec<String> {
    let repo = Repo::new();
    // The server's active file after it (no rotate or stop event yet): not archived.
    let next = std::fs::read(root().join("ingest/testdata/binlog/mysql-bin.000002.active")).unwrap();
    let mut failures = Vec::new();
    // dedupe refused; archived partial; archived complete where mariadb-binlog reads it.
    let (mut refused, mut partial_kept, mut agreed) = (0, 0, 0);
    for (i, case) in cases.iter().enumerate() {
        let dir = repo.scratch(&format!("binlogs-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mysql-bin.000001");
        std::fs::write(&file, &case.bytes).unwrap();
        std::fs::write(dir.join("mysql-bin.000002"), &next).unwrap();
        std::fs::write(dir.join("mysql-bin.index"), "./mysql-bin.000001\n./mysql-bin.000002\n").unwrap();
        let name = format!("c{i}");
        let fail = |why: String| format!("binlog {seed_name}: {}: {why}", case.what);
        let reference = mariadb_binlog_end(&file, &case.bytes);
        let push = repo.run(&["binlog", "push", "--name", &name, "--binlog-dir", dir.to_str().unwrap()]);
        let list = repo.json(&["binlog", "list", "--name", &name]);
        let rows = list.as_array().expect("a JSON array");
        if !push.status.success() {
            refused += 1;
            if !rows.is_empty() {
                failures.push(fail(format!("push failed ({}) but archived {list}", stderr_line(&push))));
            }
        } else if rows.len() != 1 {
            failures.push(fail(format!("push succeeded but the archive lists {} files", rows.len())));
        } else {
            let row = &rows[0];
            let partial = row["partial"] == true;
            let end = row["end_position"].as_u64();
            match reference {
                Ok(want) if !partial && end != Some(want) => failures.push(fail(format!(
                    "dedupe archived it complete with end_position {end:?}; mariadb-binlog reads to {want}"
                ))),
                Err(why) if !partial => failures
                    .push(fail(format!("{why}; dedupe archived it as complete (end_position {end:?}, not partial)"))),
                _ if partial => partial_kept += 1,
                _ => agreed += 1,
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!(
        "binlog {seed_name}: {} cases: {refused} refused, {partial_kept} archived as partial, \
         {agreed} archived complete as mariadb-binlog reads them, {} mishandled",
        cases.len(),
        failures.len()
    );
    failures
}

#[test]
fn damaged_binlogs_are_refused_or_read_as_mariadb_binlog_reads_them() {
    need("mariadb-binlog");
    let mut rng = ChaCha8Rng::seed_from_u64(0xb1);
    let mut failures = Vec::new();
    let mut total = 0;
    // With CRC32 checksums, and without (mysql-bin.000003).
    for (name, payload_samples, cut_samples) in [("mysql-bin.000001", 20, 40), ("mysql-bin.000003", 20, 40)] {
        let seed = std::fs::read(root().join("ingest/testdata/binlog").join(name)).unwrap();
        let headers = binlog_headers(&seed);
        let cases = cases(&seed, &headers, payload_samples, cut_samples, &mut rng);
        total += cases.len();
        failures.extend(check_binlogs(name, cases));
    }
    report("binlog", total, failures);
}
