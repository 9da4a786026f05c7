//! Changed database pages stored as deltas on their previous version
//! (format-spec §7.2, §7.5): every generation restores byte for byte,
//! prune keeps the bases that kept deltas need, copy and check read
//! through them, and a damaged base fails its deltas loudly, never with
//! other bytes. (The real servers' tests, `mariadb.rs` and `postgres.rs`,
//! restore and start several generations too.)

use dedupe_suite::*;
use std::path::{Path, PathBuf};

const CORRUPT: i32 = 7;
/// A page of rows here is 16 KiB (two PostgreSQL pages); relation files
/// are chunked in blocks of 256 KiB (format-spec §8.2).
const PAGE: usize = 16384;
const PAGES: usize = 256;
const BLOCKS: usize = PAGES * PAGE / (256 << 10);

/// A data directory of one PostgreSQL-named relation file: pages of rows.
struct Table {
    rows: Vec<(u32, u64)>,
}

impl Table {
    fn new() -> Table {
        Table { rows: (0..PAGES as u32 * 160).map(|i| (i, i as u64 * 37)).collect() }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PAGES * PAGE);
        for page in self.rows.chunks(160) {
            let mut p: Vec<u8> = page
                .iter()
                .flat_map(|(id, bal)| format!("{id:08}|cust-{:06}|{bal:012}\n", id * 7).into_bytes())
                .collect();
            p.resize(PAGE, 0);
            out.extend(p);
        }
        out
    }

    /// Updates one row in each of most pages, as a day of writes does.
    fn write_a_day(&mut self, prng: &mut Prng) {
        for page in 0..PAGES {
            if prng.bytes(1)[0] < 200 {
                let row = page * 160 + prng.bytes(1)[0] as usize % 160;
                self.rows[row].1 += 1 + prng.bytes(1)[0] as u64;
            }
        }
    }

    fn write_to(&self, dir: &Path) {
        std::fs::create_dir_all(dir.join("base/5")).unwrap();
        std::fs::write(dir.join("base/5/16384"), self.bytes()).unwrap();
        std::fs::write(dir.join("PG_VERSION"), b"16\n").unwrap();
    }
}

fn backup(repo: &Repo, src: &Path) -> serde_json::Value {
    let out = repo.cmd(["--json", "backup", "--name", "pg"]).arg(src).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn restored(repo: &Repo, id: &str, name: &str) -> Vec<u8> {
    let target: PathBuf = repo.scratch(name);
    repo.ok(&["restore".as_ref(), id.as_ref(), "--target".as_ref(), target.as_os_str()]);
    std::fs::read(target.join("base/5/16384")).unwrap()
}

/// Six generations with writes between: from the second on, the changed
/// blocks are deltas, stored in a small fraction of their size.
fn generations(repo: &Repo, n: usize) -> Vec<(String, Vec<u8>)> {
    let src = repo.scratch("src");
    let mut table = Table::new();
    let mut prng = Prng::new(12);
    let mut out = Vec::new();
    for g in 0..n {
        if g > 0 {
            table.write_a_day(&mut prng);
        }
        table.write_to(&src);
        let v = backup(repo, &src);
        if g > 0 {
            let (deltas, stored, raw) = (
                v["delta_chunks"].as_u64().unwrap(),
                v["new_bytes_stored"].as_u64().unwrap(),
                v["new_bytes"].as_u64().unwrap(),
            );
            assert!(deltas as usize > BLOCKS / 2, "generation {g}: {v}");
            assert!(stored * 20 < raw, "generation {g}: {stored} bytes stored for {raw} new: {v}");
        }
        out.push((v["snapshot"].as_str().unwrap().to_string(), table.bytes()));
    }
    out
}

#[test]
fn changed_pages_are_stored_as_deltas_and_every_generation_restores_exactly() {
    let repo = Repo::new();
    let gens = generations(&repo, 6);
    for (i, (id, want)) in gens.iter().enumerate() {
        assert!(restored(&repo, id, &format!("r{i}")) == *want, "generation {i} restores byte for byte");
    }
    let v = repo.json(&["check", "--read-data"]);
    assert_eq!(v["whole"], true, "{v}");
    let stats = repo.json(&["stats"]);
    assert!(stats["delta_chunks"].as_u64().unwrap() > 0, "{stats}");

    // A copy makes its own deltas in the target, against the target's parents.
    let offsite = Repo::uninitialised().with_password("another password");
    offsite.ok(&["init"]);
    let mut c = offsite.cmd(["--json", "copy", "--from-repo", &repo.url, "--name", "pg"]);
    let out =
        c.env("DEDUPE_FROM_PASSWORD", PASSWORD).envs(repo.storage_env().iter().map(|(k, v)| (k, v))).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let copied = offsite.json(&["stats"]);
    assert!(copied["delta_chunks"].as_u64().unwrap() > 0, "{copied}");
    assert!(restored(&offsite, "latest", "copied") == gens.last().unwrap().1);
    assert_eq!(offsite.json(&["check", "--read-data"])["whole"], true);
}

#[test]
fn prune_keeps_the_bases_the_kept_deltas_need() {
    let repo = Repo::new();
    let gens = generations(&repo, 4);
    repo.ok(&["forget", "--keep-last", "1"]);
    // Packs younger than the grace period are not judged; the second run
    // deletes what the first marked.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let first = repo.json(&["prune", "--keep-delete", "5s", "--max-unused", "0%"]);
    std::thread::sleep(std::time::Duration::from_secs(5));
    let second = repo.json(&["prune", "--keep-delete", "5s", "--max-unused", "0%"]);
    assert!(
        first["packs_repacked"].as_u64().unwrap() + second["packs_deleted"].as_u64().unwrap() > 0,
        "prune freed something: {first} {second}"
    );
    let (id, want) = gens.last().unwrap();
    assert!(restored(&repo, id, "after-prune") == *want, "the newest generation still restores");
    let v = repo.json(&["check", "--read-data"]);
    assert_eq!(v["whole"], true, "{v}");
}

#[test]
fn a_damaged_base_fails_every_delta_on_it_naming_the_base_pack() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    let mut table = Table::new();
    table.write_to(&src);
    backup(&repo, &src);
    let day1: Vec<PathBuf> = repo.packs();
    table.write_a_day(&mut Prng::new(3));
    table.write_to(&src);
    let v = backup(&repo, &src);
    assert!(v["delta_chunks"].as_u64().unwrap() > 0, "{v}");
    // Day 1's blobs are day 2's bases: damage one byte in the middle of them.
    assert_eq!(day1.len(), 1);
    let mut bytes = std::fs::read(&day1[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&day1[0], &bytes).unwrap();
    let base_pack = day1[0].file_name().unwrap().to_string_lossy().into_owned();

    let target = repo.scratch("out");
    let out = repo.run(&["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), target.as_os_str()]);
    assert_eq!(out.status.code(), Some(CORRUPT), "{}", String::from_utf8_lossy(&out.stderr));
    let err = one_line_error(&out);
    assert!(err.contains(&base_pack), "the error names the base's pack: {err}");
    let written = std::fs::read(target.join("base/5/16384")).unwrap_or_default();
    let want = table.bytes();
    assert!(written.len() < want.len() || written != want, "never the whole file from a damaged base");

    let check = repo.run(&["--json", "check", "--read-data"]);
    let v: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(v["whole"], false);
    let text = v.to_string();
    assert!(text.contains("whose base") && text.contains(&base_pack), "check names the deltas and the base: {v}");
}

/// Prune beside a backup that keeps making deltas (format-spec §20.3): the
/// bases a backup chooses are watched by its guard, and a prune keeps every
/// base a stored delta names, so every snapshot left restores exactly.
#[test]
fn prune_beside_backups_that_make_deltas_loses_nothing() {
    let repo = Repo::new();
    let src = repo.scratch("src");
    let done = std::sync::atomic::AtomicBool::new(false);
    let kept: Vec<(String, Vec<u8>)> = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut table = Table::new();
            let mut prng = Prng::new(40);
            let mut all = Vec::new();
            for _ in 0..24 {
                table.write_a_day(&mut prng);
                table.write_to(&src);
                let v = backup(&repo, &src);
                all.push((v["snapshot"].as_str().unwrap().to_string(), table.bytes()));
                std::thread::sleep(std::time::Duration::from_millis(600));
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            all
        });
        let mut prunes = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            repo.ok(&["forget", "--keep-last", "2"]);
            let out = repo.run(&["prune", "--keep-delete", "5s", "--max-unused", "0%"]);
            assert!(out.status.success(), "prune: {}", String::from_utf8_lossy(&out.stderr));
            prunes += 1;
            std::thread::sleep(std::time::Duration::from_millis(1500));
        }
        assert!(prunes >= 3, "prune ran beside the backups");
        writer.join().unwrap()
    });
    let left: Vec<String> =
        repo.json(&["snapshots"]).as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert!(!left.is_empty());
    for id in &left {
        let want = &kept.iter().find(|(k, _)| k == id).expect("a snapshot this test made").1;
        assert!(restored(&repo, id, &format!("r-{}", &id[..8])) == *want, "snapshot {id} restores exactly");
    }
    // And once the last prune's marks are old enough to delete what they name.
    std::thread::sleep(std::time::Duration::from_secs(6));
    repo.ok(&["prune", "--keep-delete", "5s", "--max-unused", "0%"]);
    for id in &left {
        let want = &kept.iter().find(|(k, _)| k == id).unwrap().1;
        assert!(restored(&repo, id, &format!("s-{}", &id[..8])) == *want, "snapshot {id} after the last prune");
    }
    assert_eq!(repo.json(&["check", "--read-data"])["whole"], true);
}
