//! Damage injected as a tester would, found by `check`, named, and repaired:
//! `repair index` leaves lost and damaged packs out, `repair snapshots`
//! lists and forgets what lost chunks, backups stop building on damaged
//! packs, and damaged local caches rebuild themselves.

use dedupe_suite::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::process::Stdio;

const CORRUPT: i32 = 7;
const MISSING: i32 = 8;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for f in files_under(from) {
        let dest = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at % b.len();
    b[i] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

fn name_of(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap().to_string_lossy().into_owned()
}

/// Six snapshots, each in packs of its own, with their index objects.
fn filled() -> (Repo, Vec<(String, Vec<u8>)>) {
    let repo = Repo::new();
    let mut prng = Prng::new(61);
    let mut snaps = Vec::new();
    for i in 0..6 {
        let data = prng.bytes(1 << 20);
        let v = repo.backup_bytes(&format!("h{i}"), &data);
        snaps.push((v["snapshot"].as_str().unwrap().to_string(), data));
    }
    (repo, snaps)
}

/// Thirty damages of random kinds in random objects (byte flips,
/// truncations, deleted packs and index objects), each on a fresh copy of
/// one repository: `check --read-data` finds every one and names the
/// object (a deleted index object through the packs it leaves unindexed).
#[test]
fn check_finds_thirty_random_damages_and_names_each_object() {
    let (repo, _) = filled();
    if repo.is_s3() {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(62);
    for round in 0..30 {
        let copy = repo.scratch(&format!("copy{round}"));
        copy_dir(&repo.path, &copy);
        let pick = |folder: &str, rng: &mut ChaCha8Rng| {
            let all = files_under(&copy.join(folder));
            all[rng.random_range(0..all.len())].clone()
        };
        let (what, expect): (String, String) = match rng.random_range(0..6) {
            0 => {
                let p = pick("data", &mut rng);
                flip(&p, rng.random::<u32>() as usize);
                ("flipped pack".into(), name_of(&copy, &p))
            }
            1 => {
                let p = pick("data", &mut rng);
                let len = std::fs::metadata(&p).unwrap().len();
                std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(rng.random_range(0..len)).unwrap();
                ("truncated pack".into(), name_of(&copy, &p))
            }
            2 => {
                let p = pick("data", &mut rng);
                std::fs::remove_file(&p).unwrap();
                ("deleted pack".into(), name_of(&copy, &p))
            }
            3 => {
                let p = pick("index", &mut rng);
                flip(&p, rng.random::<u32>() as usize);
                ("flipped index object".into(), name_of(&copy, &p))
            }
            4 => {
                let p = pick("snapshots", &mut rng);
                flip(&p, rng.random::<u32>() as usize);
                ("flipped manifest".into(), name_of(&copy, &p))
            }
            _ => {
                // A deleted index object: its packs are then in no index.
                let p = pick("index", &mut rng);
                std::fs::remove_file(&p).unwrap();
                ("deleted index object".into(), "data/".into())
            }
        };
        let out = std::process::Command::new(dedupe_bin())
            .args(["--json", "--repo"])
            .arg(&copy)
            .args(["check", "--read-data"])
            .env("DEDUPE_PASSWORD", PASSWORD)
            .env("DEDUPE_CACHE_DIR", repo.scratch(&format!("cache{round}")))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["whole"], false, "round {round}, {what}: {v}");
        assert!([CORRUPT, MISSING].contains(&out.status.code().unwrap()), "round {round}, {what}: {}", out.status);
        let named =
            v["findings"].as_array().unwrap().iter().any(|f| f["object"].as_str().unwrap().starts_with(&expect));
        assert!(named, "round {round}, {what}: {expect} is not named in {v}");
        std::fs::remove_dir_all(&copy).unwrap();
    }
}

/// A pack deleted: check names it, `repair index` leaves it out, the next
/// backup stores its chunks again and restores; `repair snapshots` lists
/// the snapshot that lost it, `--forget` removes it, and check passes.
#[test]
fn a_lost_pack_is_repaired_by_repair_index_and_the_next_backup() {
    let (repo, snaps) = filled();
    if repo.is_s3() {
        return;
    }
    // The pack holding the data of h2's snapshot.
    let before: Vec<PathBuf> = repo.packs();
    let lost = before[2].clone();
    std::fs::remove_file(&lost).unwrap();
    let lost_name = name_of(&repo.path, &lost);
    let out = repo.run(&["check"]);
    assert_eq!(out.status.code(), Some(MISSING));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&lost_name), "check names {lost_name}");

    let report = repo.json(&["repair", "index"]);
    let dropped = report["dropped"].as_array().unwrap();
    assert!(dropped.iter().any(|d| d["object"] == lost_name.as_str()), "{report}");

    // Which snapshots lost chunks; then every snapshot backed up again.
    let broken = repo.run(&["--json", "repair", "snapshots"]);
    assert_eq!(broken.status.code(), Some(MISSING), "{}", one_line_error(&broken));
    let v: serde_json::Value = serde_json::from_slice(&broken.stdout).unwrap();
    let broken_ids: Vec<String> =
        v["broken"].as_array().unwrap().iter().map(|b| b["object"].as_str().unwrap().to_string()).collect();
    assert!(!broken_ids.is_empty());
    for (i, (_, data)) in snaps.iter().enumerate() {
        let again = repo.backup_bytes(&format!("h{i}"), data);
        let id = again["snapshot"].as_str().unwrap();
        assert!(repo.ok(&["restore", id, "--stdout"]) == *data, "the new snapshot of h{i} restores");
    }
    let forgot = repo.json(&["repair", "snapshots", "--forget"]);
    assert_eq!(forgot["broken"].as_array().unwrap().len(), broken_ids.len(), "{forgot}");
    let v = repo.json(&["check", "--read-data"]);
    assert_eq!(v["whole"], true, "{v}");
}

/// A pack with a flipped byte: `check --read-data` names it, and from then
/// on backups on this host do not deduplicate against it; `repair index`
/// keeps the chunks of it that still verify.
#[test]
fn backups_stop_deduplicating_against_a_pack_check_found_damaged() {
    let (repo, snaps) = filled();
    if repo.is_s3() {
        return;
    }
    let pack = repo.packs()[3].clone();
    let size = std::fs::metadata(&pack).unwrap().len() as usize;
    flip(&pack, size / 2);
    let out = repo.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(CORRUPT));
    let damaged = name_of(&repo.path, &pack);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&damaged));
    // Every snapshot again: the one whose data sat in the damaged pack is stored anew.
    let mut stored_anew = 0;
    for (i, (_, data)) in snaps.iter().enumerate() {
        let v = repo.backup_bytes(&format!("h{i}"), data);
        if v["new_bytes"].as_u64().unwrap() >= 1 << 20 {
            stored_anew += 1;
        }
        assert!(repo.ok(&["restore", v["snapshot"].as_str().unwrap(), "--stdout"]) == *data);
    }
    assert_eq!(stored_anew, 1, "only the damaged pack's data is stored again");
    let report = repo.json(&["repair", "index"]);
    let d = report["dropped"].as_array().unwrap().iter().find(|d| d["object"] == damaged.as_str()).cloned();
    assert!(d.is_some(), "{report}");
}

/// A damaged index object is named by check, and the chunks it listed are
/// reported missing by the snapshots that need them, not as a mystery.
#[test]
fn a_damaged_index_object_is_named() {
    let (repo, _) = filled();
    if repo.is_s3() {
        return;
    }
    let index = files_under(&repo.path.join("index"));
    flip(&index[0], 40);
    let out = repo.run(&["--json", "check"]);
    assert_eq!(out.status.code(), Some(CORRUPT));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = name_of(&repo.path, &index[0]);
    assert!(v["findings"].as_array().unwrap().iter().any(|f| f["object"] == name.as_str()), "{v}");
    repo.ok(&["repair", "index"]);
    assert_eq!(repo.json(&["check"])["whole"], true);
}

/// The local caches are caches: damaged, they are rebuilt, and the next
/// command works as if nothing happened.
#[test]
fn damaged_local_caches_rebuild_themselves() {
    let (repo, snaps) = filled();
    let cache_dir = std::fs::read_dir(&repo.cache).unwrap().next().unwrap().unwrap().path();
    let catalogue = cache_dir.join("catalogue.sqlite");
    let mut rng = ChaCha8Rng::seed_from_u64(63);
    for round in 0..14 {
        // A segment of the index cache, or the list that names them.
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(cache_dir.join("index"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
            .collect();
        files.sort();
        files.push(cache_dir.join("index/segments"));
        let index = &files[rng.random_range(0..files.len())];
        let len = std::fs::metadata(index).unwrap().len() as usize;
        flip(index, rng.random_range(0..len));
        let (id, data) = &snaps[round % snaps.len()];
        assert!(repo.ok(&["restore", id, "--stdout"]) == *data, "round {round}: restore with a damaged index cache");
    }
    // The catalogue's header damaged: not a database any more.
    flip(&catalogue, 3);
    let v = repo.json(&["snapshots"]);
    assert_eq!(v.as_array().unwrap().len(), snaps.len(), "{v}");
    let (id, data) = &snaps[0];
    assert!(repo.ok(&["restore", id, "--stdout"]) == *data);
}

/// A damaged log manifest is reported as damage by what looks for the log
/// (named, exit 7), not as a log that was never archived.
#[test]
fn a_damaged_log_manifest_is_reported_as_damage() {
    let repo = Repo::new();
    if repo.is_s3() {
        return;
    }
    let wal = repo.scratch("wal");
    std::fs::create_dir_all(&wal).unwrap();
    let seg = wal.join("000000010000000000000001");
    std::fs::write(&seg, Prng::new(64).bytes(100_000)).unwrap();
    repo.ok(&["wal", "push", "--name", "pg", seg.to_str().unwrap()]);
    let log = files_under(&repo.path.join("logs"))[0].clone();
    flip(&log, 30);
    // A fresh cache: the manifest is read (and found damaged) again.
    let out = repo
        .cmd(["wal", "fetch", "--name", "pg", "000000010000000000000001"])
        .arg(repo.scratch("out"))
        .env("DEDUPE_CACHE_DIR", repo.scratch("fresh-cache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(CORRUPT), "{}", one_line_error(&out));
    assert!(one_line_error(&out).contains(&name_of(&repo.path, &log)), "{}", one_line_error(&out));
}
