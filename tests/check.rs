//! `dedupe check`: a whole repository passes; each kind of damage injected
//! on storage is found and named with its exit code.

use dedupe_suite::*;

const CORRUPT: i32 = 7;
const MISSING: i32 = 8;

/// Flips one byte at `offset` (from the start, or from the end when negative).
fn flip(path: &std::path::Path, offset: i64) {
    let mut b = std::fs::read(path).unwrap();
    let i = if offset < 0 { (b.len() as i64 + offset) as usize } else { offset as usize };
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

/// A repository with a few snapshots spread over several packs.
fn filled() -> Repo {
    let repo = Repo::new();
    let mut prng = Prng::new(5);
    for i in 0..3 {
        repo.backup_bytes(&format!("h{i}"), &prng.bytes(20 << 20));
    }
    assert!(repo.packs().len() >= 3, "several packs: {:?}", repo.packs());
    repo
}

fn object_name(repo: &Repo, p: &std::path::Path) -> String {
    p.strip_prefix(&repo.path).unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_whole_repository_passes_and_subsets_read_every_pack_once() {
    let repo = filled();
    let all = repo.json(&["check", "--read-data"]);
    assert_eq!(all["whole"], true, "{all}");
    assert_eq!(all["snapshots"], 3);
    let packs = all["packs_read"].as_u64().unwrap();
    assert_eq!(packs, repo.packs().len() as u64);
    let parts: u64 = (1..=4)
        .map(|k| repo.json(&["check", "--read-data-subset", &format!("{k}/4")])["packs_read"].as_u64().unwrap())
        .sum();
    assert_eq!(parts, packs, "1/4 … 4/4 together read every pack once");
    let out = repo.run(&["check", "--read-data-subset", "5/4"]);
    assert_eq!(out.status.code(), Some(2), "{}", one_line_error(&out));
}

#[test]
fn a_flipped_byte_in_a_pack_is_found_by_read_data_and_named() {
    let repo = filled();
    // The biggest pack, in the middle of its chunk data (pack sizes differ by backend).
    let pack = repo.packs().into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    let len = std::fs::metadata(&pack).unwrap().len() as i64;
    flip(&pack, len / 2);
    // Without reading data the pack looks whole: same name, same size.
    repo.ok(&["check"]);
    let out = repo.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(CORRUPT), "{}", one_line_error(&out));
    assert!(one_line_error(&out).contains(&object_name(&repo, &pack)), "{}", one_line_error(&out));
}

#[test]
fn a_deleted_pack_is_named_as_missing() {
    let repo = filled();
    let pack = repo.packs()[0].clone();
    std::fs::remove_file(&pack).unwrap();
    let out = repo.run(&["check"]);
    assert_eq!(out.status.code(), Some(MISSING), "{}", one_line_error(&out));
    let err = one_line_error(&out);
    assert!(err.contains(&object_name(&repo, &pack)) && err.contains("repair index"), "{err}");
}

#[test]
fn a_damaged_manifest_and_a_lost_index_object_are_named() {
    let repo = filled();
    let snaps = repo.json(&["snapshots"]);
    let id = snaps[0]["id"].as_str().unwrap().to_string();
    flip(&repo.path.join("snapshots").join(&id), 40);
    let out = repo.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(CORRUPT), "{}", one_line_error(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let named = report["findings"].as_array().unwrap().iter().any(|f| f["object"].as_str().unwrap().contains(&id));
    assert!(named, "{report}");

    // A fresh repository whose index objects are all gone: every chunk is unknown.
    let repo = filled();
    for e in std::fs::read_dir(repo.path.join("index")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let out = repo.run(&["check"]);
    assert_eq!(out.status.code(), Some(MISSING), "{}", one_line_error(&out));
    assert!(one_line_error(&out).contains("not in the index"), "{}", one_line_error(&out));
    // repair index brings it back from the packs.
    repo.ok(&["repair", "index"]);
    repo.ok(&["check", "--read-data"]);
}

/// A WAL segment missing between two archived ones is a gap, named, exit 16.
#[test]
fn a_gap_in_the_wal_archive_is_named() {
    let repo = Repo::new();
    repo.backup_bytes("pg", &Prng::new(9).bytes(10_000));
    let wal = repo.scratch("wal");
    std::fs::create_dir_all(&wal).unwrap();
    for n in [1, 2, 4] {
        let seg = wal.join(format!("0000000100000000000000{n:02X}"));
        std::fs::write(&seg, Prng::new(n).bytes(50_000)).unwrap();
        repo.ok(&["wal".as_ref(), "push".as_ref(), "--name".as_ref(), "pg".as_ref(), seg.as_os_str()]);
    }
    let out = repo.run(&["check"]);
    assert_eq!(out.status.code(), Some(16), "{}", one_line_error(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("000000010000000000000003"), "{said}");
    assert!(!said.contains("000000010000000000000002 "), "{said}");
}
