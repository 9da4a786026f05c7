//! Input that only looks like a backup is refused, not committed: a stream
//! whose first bytes are a damaged or cut xbstream or tar, an empty stream,
//! a tar whose hard link points at nothing; and a binlog copy without its
//! end is archived as partial, so that its complete copy can replace it.

use dedupe_suite::*;
use std::process::{Command, Output, Stdio};

const INPUT_FAILED: i32 = 6;
const TRUNCATED: i32 = 13;
const DAMAGED: i32 = 17;

/// `dedupe backup --name db [args] -` with `input` on stdin.
fn backup(repo: &Repo, args: &[&str], input: &[u8]) -> Output {
    let path = repo.scratch("stdin");
    std::fs::write(&path, input).unwrap();
    let mut a = vec!["backup", "--name", "db"];
    a.extend_from_slice(args);
    a.push("-");
    repo.cmd(a).stdin(std::fs::File::open(&path).unwrap()).output().unwrap()
}

/// Backs up `input`, expecting a refusal with `code`; returns the message.
fn refused(repo: &Repo, args: &[&str], input: &[u8], code: i32, what: &str) -> String {
    let out = backup(repo, args, input);
    assert_eq!(out.status.code(), Some(code), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    one_line_error(&out)
}

fn snapshots(repo: &Repo) -> usize {
    repo.json(&["snapshots"]).as_array().unwrap().len()
}

/// CRC-32 (ISO 3309), as xbstream chunks carry it.
/// A small valid xbstream of one file: from `mbstream -c` (mariadb-backup)
/// when it is installed, else written by hand as ingest/src/xbstream.rs says.
fn small_xbstream(repo: &Repo) -> Vec<u8> {
    let dir = repo.scratch("xb");
    std::fs::create_dir_all(&dir).unwrap();
    let content = b"[mysqld]\ndatadir=/var/lib/mysql\n";
    std::fs::write(dir.join("backup-my.cnf"), content).unwrap();
    if let Ok(out) = Command::new("mbstream").arg("-c").arg("backup-my.cnf").current_dir(&dir).output() {
        if out.status.success() && out.stdout.starts_with(b"XBSTCK01") {
            return out.stdout;
        }
    }
    let path = b"backup-my.cnf";
    let mut s = Vec::new();
    for chunk_type in [b'P', b'E'] {
        s.extend_from_slice(b"XBSTCK01");
        s.push(0);
        s.push(chunk_type);
        s.extend_from_slice(&(path.len() as u32).to_le_bytes());
        s.extend_from_slice(path);
        if chunk_type == b'P' {
            s.extend_from_slice(&(content.len() as u64).to_le_bytes());
            s.extend_from_slice(&0u64.to_le_bytes());
            s.extend_from_slice(&crc32fast::hash(content).to_le_bytes());
            s.extend_from_slice(content);
        }
    }
    s
}

#[test]
fn a_flipped_bit_in_the_xbstream_magic_is_refused_as_damaged() {
    let repo = Repo::new();
    let stream = small_xbstream(&repo);
    for bit in 0..64 {
        let mut damaged = stream.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        let msg = refused(&repo, &[], &damaged, DAMAGED, &format!("bit {bit}"));
        assert!(msg.contains("xbstream") && msg.contains("nothing was committed"), "{msg}");
    }
    assert_eq!(snapshots(&repo), 0);
    // Undamaged, it is an xbstream; as --format raw, the damaged bytes are stored on purpose.
    let out = backup(&repo, &[], &stream);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut damaged = stream.clone();
    damaged[0] ^= 1;
    let out = backup(&repo, &["--format", "raw"], &damaged);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let formats: Vec<String> =
        repo.json(&["snapshots"]).as_array().unwrap().iter().map(|s| s["metadata"]["format"].to_string()).collect();
    assert_eq!(formats, ["\"xbstream\"", "\"raw\""]);
}

#[test]
fn an_xbstream_cut_inside_its_first_magic_is_refused_as_truncated() {
    let repo = Repo::new();
    let stream = small_xbstream(&repo);
    // Cut inside the magic (1..7 bytes) and just after it (8).
    for n in 1..=8 {
        let msg = refused(&repo, &[], &stream[..n], TRUNCATED, &format!("{n} bytes"));
        assert!(msg.contains("xbstream") && msg.contains("nothing was committed"), "{n} bytes: {msg}");
        if n < 8 {
            assert!(!msg.contains("--allow-partial"), "nothing arrived to keep: {msg}");
        }
    }
    let msg = refused(&repo, &[], &stream[..6], TRUNCATED, "6 bytes");
    assert!(msg.contains("6 bytes"), "{msg}");
    assert_eq!(snapshots(&repo), 0);
}

#[test]
fn a_tar_cut_inside_its_first_header_is_refused_as_truncated() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    std::fs::create_dir_all(src.join("pgdata")).unwrap();
    std::fs::write(src.join("pgdata/PG_VERSION"), b"16\n").unwrap();
    let out = Command::new("tar").arg("-C").arg(&src).args(["-cf", "-", "pgdata"]).output().unwrap();
    assert!(out.status.success());
    let tar = out.stdout;
    assert_eq!(&tar[257..262], b"ustar");
    let name_len = tar.iter().position(|&b| b == 0).unwrap();
    assert_eq!(&tar[..name_len], b"pgdata/");
    // Once the cut is past the first member's name, the bytes are the start
    // of a tar header and nothing else.
    for n in name_len + 1..512 {
        let msg = refused(&repo, &[], &tar[..n], TRUNCATED, &format!("cut at {n}"));
        assert!(msg.contains("tar") && msg.contains(&format!("{n} bytes")), "cut at {n}: {msg}");
    }
    assert_eq!(snapshots(&repo), 0);
    // The whole tar is a tar.
    let out = backup(&repo, &[], &tar);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(repo.json(&["snapshots"])[0]["metadata"]["format"], "tar");

    // A cut inside the name itself ("pgda") is a line of text as much as a
    // tar: stored as raw bytes, like any short text.
    let other = Repo::new();
    for n in 1..=name_len {
        let out = backup(&other, &[], &tar[..n]);
        assert!(out.status.success(), "cut at {n}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let snaps = other.json(&["snapshots"]);
    assert!(snaps.as_array().unwrap().iter().all(|s| s["metadata"]["format"] == "raw"), "{snaps}");
}

#[test]
fn an_empty_input_is_refused_whatever_the_format() {
    let repo = Repo::new();
    for args in [&[][..], &["--format", "raw"], &["--format", "xbstream"], &["--format", "tar"]] {
        let msg = refused(&repo, args, b"", INPUT_FAILED, &format!("{args:?}"));
        assert_eq!(msg, "dedupe: the input is empty: nothing to back up (is the producer writing to stdout?)");
    }
    // A producer that succeeds without writing anything.
    let out = repo.cmd(["backup", "--name", "db", "--command", "true"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(INPUT_FAILED), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(one_line_error(&out).contains("is the producer writing to stdout?"));
    // One that fails without writing anything is a failed producer.
    let out = repo.cmd(["backup", "--name", "db", "--command", "exit 3"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(14), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(snapshots(&repo), 0);
    // `latest` stays the last real backup.
    let out = backup(&repo, &[], b"rows");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = repo.cmd(["backup", "--name", "db", "--command", "true"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(INPUT_FAILED));
    assert_eq!(repo.ok(&["restore", "latest", "--name", "db", "--stdout"]), b"rows");

    // --allow-empty commits it as an empty file, whatever --format says.
    for args in [&["--allow-empty"][..], &["--allow-empty", "--format", "xbstream"]] {
        let out = repo.cmd(["backup", "--name", "quiet", "--command", "true"]).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(repo.ok(&["restore", "latest", "--name", "quiet", "--stdout"]), b"");
    }
    let quiet = repo.json(&["snapshots", "--name", "quiet"]);
    assert!(quiet.as_array().unwrap().iter().all(|s| s["metadata"]["format"] == "raw"), "{quiet}");
}

#[test]
fn text_and_random_bytes_are_still_stored_raw() {
    let repo = Repo::new();
    let inputs: Vec<Vec<u8>> = vec![
        b"x".to_vec(),
        b"secret rows".to_vec(),
        b"CREATE TABLE t (id INT);\nINSERT INTO t VALUES (1);\n".to_vec(),
        Prng::new(8).bytes(300),
        Prng::new(9).bytes(100_000),
    ];
    for input in &inputs {
        let out = backup(&repo, &[], input);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let snaps = repo.json(&["snapshots"]);
    assert!(snaps.as_array().unwrap().iter().all(|s| s["metadata"]["format"] == "raw"), "{snaps}");
    assert_eq!(snaps.as_array().unwrap().len(), inputs.len());

    // From a producer, raw output is said so, with what it looks like
    // (under the compression it was in, which comes off first).
    let out = repo.cmd(["backup", "--name", "gz", "--command", "echo rows | gzip"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the output of `echo rows | gzip` is no xbstream, tar or dump (text starting \"rows\")"),
        "{err}"
    );
    assert_eq!(repo.json(&["snapshots", "--name", "gz"])[0]["metadata"]["compression"], "gzip");
    let out = repo.cmd(["--json", "backup", "--name", "text", "--command", "echo rows"]).output().unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["warnings"][0].as_str().unwrap().contains("(text starting \"rows\")"), "{summary}");
}

fn binlog_fixture(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ingest/testdata/binlog").join(name)).unwrap()
}

#[test]
fn a_closed_binlog_cut_short_is_archived_partial_and_replaced_by_its_complete_copy() {
    let full = binlog_fixture("mysql-bin.000001");
    assert_eq!(full.len(), 1182);
    // Inside an event (the GTID event 903..945, the annotate event 945..1009,
    // the rotate event 1135..1182) and between events, before the rotate.
    for cut in [920, 945, 1000, 1135, 1170, 1181] {
        let repo = Repo::new();
        let dir = repo.scratch("binlogs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("mysql-bin.000001"), &full[..cut]).unwrap();
        // 000002 follows in the index, still open: 000001 is not the active file.
        std::fs::write(dir.join("mysql-bin.000002"), binlog_fixture("mysql-bin.000002.active")).unwrap();
        std::fs::write(dir.join("mysql-bin.index"), "./mysql-bin.000001\n./mysql-bin.000002\n").unwrap();
        let push = || {
            repo.json(&[
                "binlog".as_ref(),
                "push".as_ref(),
                "--name".as_ref(),
                "db".as_ref(),
                "--binlog-dir".as_ref(),
                dir.as_os_str(),
            ])
        };
        let list = || repo.json(&["binlog", "list", "--name", "db"]);

        let pushed = push();
        assert_eq!(pushed.as_array().unwrap().len(), 2, "cut at {cut}: {pushed}");
        assert_eq!(pushed[0]["file"], "mysql-bin.000001");
        assert!(pushed[1]["status"].as_str().unwrap().starts_with("skipped: the active file"), "{pushed}");
        assert_eq!(pushed[0]["status"], "stored (partial)", "cut at {cut}: {pushed}");
        assert_eq!(pushed[0]["bytes"], cut);
        let rows = list();
        assert_eq!(rows[0]["partial"], true, "cut at {cut}: {rows}");
        assert_eq!(push()[0]["status"], "already archived");

        // The complete file arrives (copied again, or the server finished
        // writing it): it replaces the partial copy instead of conflicting.
        std::fs::write(dir.join("mysql-bin.000001"), &full).unwrap();
        let pushed = push();
        assert_eq!(pushed[0]["status"], "stored", "cut at {cut}: {pushed}");
        let rows = list();
        assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
        assert_eq!(rows[0]["partial"], false, "cut at {cut}: {rows}");
        assert_eq!(rows[0]["size"], full.len());
        assert_eq!(rows[0]["end_position"], full.len());
        assert_eq!(push()[0]["status"], "already archived");
        // A cut copy seen again after the complete one adds nothing.
        std::fs::write(dir.join("mysql-bin.000001"), &full[..cut]).unwrap();
        assert_eq!(push()[0]["status"], "already archived");
        assert_eq!(list()[0]["partial"], false);
    }
}

/// A member's name, type flag and link target.
type Member<'a> = (&'a str, u8, &'a str);

/// One ustar member: header (and `data`, padded to a block).
fn ustar_member(out: &mut Vec<u8>, name: &str, typeflag: u8, link: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = width - 1);
        h[at..at + width].copy_from_slice(s.as_bytes());
    };
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h, 100, 8, if typeflag == b'5' { 0o755 } else { 0o644 });
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, data.len() as u64);
    octal(&mut h, 136, 12, 1_700_000_000);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

#[test]
fn a_tar_hard_link_to_anything_but_an_earlier_file_is_refused_as_damaged() {
    let repo = Repo::new();
    let cases: [(&[Member], &str); 4] = [
        (&[("ibdata1", b'0', ""), ("ib_logfile0", b'1', "ib_logfile9")], "a link to nothing"),
        (&[("ib_logfile0", b'1', "ibdata1"), ("ibdata1", b'0', "")], "a link to a later member"),
        (&[("mysql", b'5', ""), ("ib_logfile0", b'1', "mysql")], "a link to a directory"),
        (
            &[("ibdata1", b'0', ""), ("ib_link", b'2', "ibdata1"), ("ib_logfile0", b'1', "ib_link")],
            "a link to a symlink",
        ),
    ];
    for (members, what) in cases {
        let mut tar = Vec::new();
        for &(name, typeflag, link) in members {
            let data: &[u8] = if typeflag == b'0' { b"InnoDB pages" } else { b"" };
            ustar_member(&mut tar, name, typeflag, link, data);
        }
        tar.resize(tar.len() + 1024, 0);
        let target = members.iter().find(|m| m.1 == b'1').unwrap().2;
        let msg = refused(&repo, &[], &tar, DAMAGED, what);
        assert!(msg.contains("\"ib_logfile0\"") && msg.contains(&format!("{target:?}")), "{what}: {msg}");
        assert!(msg.contains("nothing was committed"), "{msg}");
    }
    assert_eq!(snapshots(&repo), 0);

    // GNU tar's own hard links name an earlier file: kept, and restored as links.
    let src = repo.scratch("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ibdata1"), b"InnoDB pages").unwrap();
    std::fs::hard_link(src.join("ibdata1"), src.join("ibdata1.link")).unwrap();
    let out = Command::new("tar").arg("-C").arg(&src).args(["-cf", "-", "ibdata1", "ibdata1.link"]).output().unwrap();
    assert!(out.status.success());
    let backed_up = backup(&repo, &[], &out.stdout);
    assert!(backed_up.status.success(), "{}", String::from_utf8_lossy(&backed_up.stderr));
    let target = repo.scratch("restored");
    repo.ok(&["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), target.as_os_str()]);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(target.join("ibdata1.link")).unwrap().ino(),
        std::fs::metadata(target.join("ibdata1")).unwrap().ino()
    );
}
