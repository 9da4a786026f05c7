//! A raw stream on stdin, backed up and restored through the real binary.

use dedupe_suite::*;
use std::io::Write;
use std::process::Stdio;

fn roundtrip(data: &[u8]) {
    let repo = Repo::new();
    let summary = repo.backup_bytes("db1", data);
    assert_eq!(summary["bytes"], data.len() as u64);
    // To stdout.
    let out = repo.ok(&["restore", "latest", "--stdout"]);
    assert_eq!(out.len(), data.len());
    assert!(out == data, "stdout restore differs");
    // Into a directory, as the file named by --filename (default "stdin").
    let target = repo.scratch("restore");
    repo.ok(&["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), target.as_os_str()]);
    assert!(std::fs::read(target.join("stdin")).expect("restored file") == data, "directory restore differs");
}

#[test]
fn empty_stream_is_refused() {
    // Nothing on stdin is a producer that wrote nothing, not a backup
    // (tests/strict_ingest.rs has the other formats and producers).
    let repo = Repo::new();
    let out = repo.cmd(["backup", "--name", "db1", "-"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(one_line_error(&out).contains("the input is empty"));
    assert!(repo.json(&["snapshots"]).as_array().unwrap().is_empty());
}

#[test]
fn one_byte_roundtrips() {
    roundtrip(&[0x42]);
}

#[test]
fn one_chunk_roundtrips() {
    // Below FastCDC's minimum chunk size: exactly one chunk.
    roundtrip(&Prng::new(1).bytes(200 * 1024));
}

#[test]
fn several_chunks_with_repeats_roundtrip() {
    let a = Prng::new(2).bytes(3 << 20);
    let mut data = a.clone();
    data.extend_from_slice(&vec![0u8; 9 << 20]);
    data.extend_from_slice(&a);
    roundtrip(&data);
}

/// A restore reads a batch of blobs into one buffer and decrypts each where
/// it lies; a chunk repeated within one batch must be opened once and
/// handed out every time, not decrypted twice (which would garble it).
#[test]
fn a_chunk_repeated_within_one_read_batch_roundtrips() {
    let block = Prng::new(3).bytes(1 << 20);
    let mut data = Vec::new();
    for _ in 0..6 {
        data.extend_from_slice(&block);
    }
    let repo = Repo::new();
    repo.backup_bytes("db1", &data);
    assert!(repo.size() < 3 << 20, "the repeats were stored once: {} bytes", repo.size());
    assert!(repo.ok(&["restore", "latest", "--stdout"]) == data, "stdout restore differs");
}

/// Backs up `total` bytes of Prng(seed); returns the JSON summary.
fn backup_stream(repo: &Repo, seed: u64, total: u64) -> serde_json::Value {
    let mut child = repo.spawn_backup("big");
    let mut stdin = child.stdin.take().expect("stdin");
    write_stream(&mut stdin, seed, total).expect("feed backup");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "backup failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn one_gib_stream_is_byte_exact_and_a_second_backup_costs_under_one_percent() {
    const GIB: u64 = 1 << 30;
    let repo = Repo::new();
    let first = backup_stream(&repo, 7, GIB);
    assert_eq!(first["bytes"], GIB);
    let after_first = repo.size();
    assert!(after_first > GIB, "random data cannot shrink: {after_first}");

    let second = backup_stream(&repo, 7, GIB);
    let growth = repo.size() - after_first;
    eprintln!("second backup of 1 GiB grew the repository by {growth} bytes; summary {second}");
    assert!(growth * 100 < GIB, "second backup grew the repository by {growth} bytes");
    assert!(second["new_chunks"].as_u64().unwrap() <= 2, "{second}");

    // Restore to stdout and compare hashes without holding 1 GiB anywhere.
    let mut expected = blake3::Hasher::new();
    let mut rng = Prng::new(7);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..(GIB >> 20) {
        rng.fill(&mut buf);
        expected.update(&buf);
    }
    let mut child = repo.cmd(["restore", "latest", "--stdout"]).stdout(Stdio::piped()).spawn().expect("restore");
    let (hash, n) = hash_reader(child.stdout.as_mut().expect("stdout"));
    assert!(child.wait().expect("wait").success());
    assert_eq!(n, GIB);
    assert_eq!(hash, expected.finalize(), "restored stream differs");
}

#[test]
fn names_keep_latest_apart() {
    let repo = Repo::new();
    repo.backup_bytes("alpha", b"alpha's data");
    repo.backup_bytes("beta", b"beta's data");
    assert_eq!(repo.ok(&["restore", "latest", "--name", "alpha", "--stdout"]), b"alpha's data");
    assert_eq!(repo.ok(&["restore", "latest", "--name", "beta", "--stdout"]), b"beta's data");
    // Without a name, whose latest is never guessed.
    assert_eq!(repo.run(&["restore", "latest", "--stdout"]).status.code(), Some(2));
    let snaps = repo.json(&["snapshots"]);
    let names: Vec<&str> = snaps.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta"]);
    // A snapshot by id prefix.
    let id = snaps[0]["id"].as_str().unwrap()[..8].to_string();
    assert_eq!(repo.ok(&["restore", &id, "--stdout"]), b"alpha's data");
}

#[test]
fn filename_names_the_stream_inside_the_snapshot() {
    let repo = Repo::new();
    let mut child = repo
        .cmd(["backup", "--name", "pg", "--filename", "dump.sql", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"CREATE TABLE t (id int);\n").unwrap();
    assert!(child.wait().unwrap().success());
    let ls = repo.json(&["ls", "latest"]);
    assert_eq!(ls[0]["path"], "dump.sql");
    assert_eq!(ls[0]["size"], 25);
}

/// A dump as a DBA pipes it (`mysqldump | gzip`, `| zstd`, `| xz`): `cmd` run over `data`.
fn compressed_with(cmd: &str, data: &[u8]) -> Vec<u8> {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let owned = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&owned));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd}");
    out.stdout
}

#[test]
fn compressed_dumps_are_stored_decompressed_and_dedup_as_plain_ones() {
    let mut dump = b"-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB\n".to_vec();
    dump.extend(Prng::new(9).bytes(6 << 20).iter().map(|b| b"abcdefghij,()'\n"[(*b % 15) as usize]));
    for (cmd, name) in [("gzip -c", "gzip"), ("zstd -c -q", "zstd"), ("xz -c -1", "xz")] {
        let repo = Repo::new();
        let packed = compressed_with(cmd, &dump);
        let first = repo.backup_bytes("db", &packed);
        // Stored as the dump it is: recognised as one, restored decompressed.
        let snaps = repo.json(&["snapshots"]);
        assert_eq!(snaps[0]["metadata"]["compression"], name, "{snaps}");
        assert_eq!(snaps[0]["metadata"]["format"], "mysqldump", "{snaps}");
        assert!(repo.ok(&["restore", "latest", "--stdout"]) == dump, "{name}");
        // The same dump compressed again (a new night, nothing changed) costs nothing.
        let again = repo.backup_bytes("db", &compressed_with(cmd, &dump));
        assert!(
            again["new_bytes_stored"].as_u64().unwrap() < first["new_bytes_stored"].as_u64().unwrap() / 50,
            "{name}: {again}"
        );
        // A flipped byte in the compressed body: damaged input, nothing committed.
        let mut damaged = packed.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 0x21;
        let mut child = repo.spawn_backup("db");
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(&damaged);
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(17), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(repo.json(&["snapshots"]).as_array().unwrap().len(), 2, "{name}: nothing committed");
    }
}
