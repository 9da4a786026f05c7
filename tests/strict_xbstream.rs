//! An xbstream is checked at least as strictly as `mbstream -x` checks it:
//! the chunk CRC does not cover the header, so a flipped offset would give a
//! file with shifted content or a "sparse" file of petabytes. Such a stream
//! is refused (exit 17) and nothing is committed; what mbstream extracts,
//! dedupe restores byte for byte.

use dedupe_suite::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const DAMAGED: i32 = 17;

/// One chunk of a stream: where it lies, whose it is, and where its offset field is.
struct Chunk {
    range: std::ops::Range<usize>,
    path: String,
    /// Position and value of the offset field ('P' chunks only).
    offset: Option<(usize, u64)>,
}

/// Splits a stream of 'P' and 'E' chunks (what `mbstream -c` writes).
fn chunks(s: &[u8]) -> Vec<Chunk> {
    let u32_at = |i: usize| u32::from_le_bytes(s[i..i + 4].try_into().unwrap()) as usize;
    let u64_at = |i: usize| u64::from_le_bytes(s[i..i + 8].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = 0;
    while at < s.len() {
        assert_eq!(&s[at..at + 8], b"XBSTCK01");
        let kind = s[at + 9];
        let path_len = u32_at(at + 10);
        let path = String::from_utf8(s[at + 14..at + 14 + path_len].to_vec()).unwrap();
        let mut end = at + 14 + path_len;
        let mut offset = None;
        match kind {
            b'E' => {}
            b'P' => {
                let len = u64_at(end) as usize;
                offset = Some((end + 8, u64_at(end + 8)));
                end += 8 + 8 + 4 + len;
            }
            other => panic!("mbstream -c wrote a chunk of type {other:#x}"),
        }
        out.push(Chunk { range: at..end, path, offset });
        at = end;
    }
    out
}

fn mbstream_create(dir: &Path, files: &[&str]) -> Vec<u8> {
    let out =
        Command::new("mbstream").arg("-c").args(files).current_dir(dir).output().expect("mbstream (mariadb-backup)");
    assert!(out.status.success(), "mbstream -c: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// `mbstream -x` of `stream` into `into`; its output, for its exit status and messages.
fn mbstream_extract(stream: &[u8], into: &Path) -> Output {
    std::fs::create_dir_all(into).unwrap();
    // mbstream stops reading at the first bad chunk: a broken pipe is expected.
    let mut c = Command::new("mbstream");
    c.arg("-x").arg("-C").arg(into);
    run_with_stdin(c, stream)
}

fn backup(repo: &Repo, name: &str, stream: &[u8]) -> Output {
    run_with_stdin(repo.cmd(["--json", "backup", "--name", name, "-"]), stream)
}

fn files_under(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn go(root: &Path, d: &Path, v: &mut Vec<(PathBuf, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                go(root, &e.path(), v);
            } else {
                v.push((e.path().strip_prefix(root).unwrap().to_path_buf(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    let mut v = Vec::new();
    go(root, root, &mut v);
    v.sort();
    v
}

/// Restores the latest snapshot into a new directory and checks it holds
/// exactly what `mbstream -x` extracted from `stream`.
fn restores_like_mbstream(repo: &Repo, stream: &[u8], tag: &str) {
    let by_mbstream = repo.scratch(&format!("mbstream-{tag}"));
    let out = mbstream_extract(stream, &by_mbstream);
    assert!(out.status.success(), "mbstream -x: {}", String::from_utf8_lossy(&out.stderr));
    let by_dedupe = repo.scratch(&format!("dedupe-{tag}"));
    repo.ok(&["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), by_dedupe.as_os_str()]);
    let (a, b) = (files_under(&by_mbstream), files_under(&by_dedupe));
    assert_eq!(a.iter().map(|f| &f.0).collect::<Vec<_>>(), b.iter().map(|f| &f.0).collect::<Vec<_>>());
    for ((path, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{} differs from what mbstream extracts", path.display());
    }
}

/// Three files as `mbstream -c` streams them (a 21 MiB one in three chunks of
/// up to 10 MiB, a small one, an empty one), then interleaved as
/// `mariabackup --parallel` interleaves files: each file's chunks keep their
/// order.
fn interleaved_stream(repo: &Repo) -> Vec<u8> {
    let src = repo.scratch("src");
    std::fs::create_dir_all(src.join("shop")).unwrap();
    std::fs::write(src.join("shop/orders.MAD"), Prng::new(8).bytes(21 << 20)).unwrap();
    std::fs::write(src.join("shop/orders.frm"), b"a small file of one chunk").unwrap();
    std::fs::write(src.join("aria_log_control"), b"").unwrap();
    let serial = mbstream_create(&src, &["shop/orders.MAD", "shop/orders.frm", "aria_log_control"]);
    let c = chunks(&serial);
    let kinds: Vec<(&str, bool)> = c.iter().map(|c| (c.path.as_str(), c.offset.is_some())).collect();
    assert_eq!(
        kinds,
        [
            ("shop/orders.MAD", true),
            ("shop/orders.MAD", true),
            ("shop/orders.MAD", true),
            ("shop/orders.MAD", false),
            ("shop/orders.frm", true),
            ("shop/orders.frm", false),
            ("aria_log_control", false),
        ],
        "mbstream -c chunked the files differently"
    );
    [0, 4, 1, 6, 5, 2, 3].iter().flat_map(|&i| serial[c[i].range.clone()].to_vec()).collect()
}

#[test]
fn a_flipped_offset_is_refused_like_mbstream_refuses_it() {
    let repo = Repo::new();
    let stream = interleaved_stream(&repo);

    // As it is: accepted by both, and restored to what mbstream extracts.
    let out = backup(&repo, "good", &stream);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    restores_like_mbstream(&repo, &stream, "good");
    let snapshots = repo.ok(&["--json", "snapshots"]);

    // Every byte of every offset field, one bit each (a different bit per
    // byte, so low bytes move the offset by a little and high ones by petabytes).
    let mut expected = std::collections::HashMap::new();
    let mut tried = 0;
    for c in chunks(&stream) {
        let want = *expected.entry(c.path.clone()).or_insert(0u64);
        let Some((field, offset)) = c.offset else { continue };
        assert_eq!(offset, want, "the unflipped stream is in order");
        *expected.get_mut(&c.path).unwrap() += (c.range.end - field - 12) as u64;
        for byte in 0..8 {
            let mut bad = stream.clone();
            bad[field + byte] ^= 1 << byte;
            let flipped = u64::from_le_bytes(bad[field..field + 8].try_into().unwrap());
            let tag = format!("{}@{field}+{byte}", c.path);

            let mb = mbstream_extract(&bad, &repo.scratch(&format!("mb-{}-{byte}", field)));
            let out = backup(&repo, "bad", &bad);
            if mb.status.success() {
                // mbstream took it: dedupe must too, and restore the same bytes.
                assert!(out.status.success(), "{tag}: mbstream accepts what dedupe refuses");
                restores_like_mbstream(&repo, &bad, &tag.replace('/', "_"));
                continue;
            }
            assert!(
                String::from_utf8_lossy(&mb.stderr).contains("out-of-order chunk"),
                "{tag}: mbstream refused for another reason: {}",
                String::from_utf8_lossy(&mb.stderr)
            );
            assert_eq!(out.status.code(), Some(DAMAGED), "{tag}: {}", String::from_utf8_lossy(&out.stderr));
            let err = one_line_error(&out);
            let names = format!("xbstream chunk of {} at offset {flipped}, where {want} was expected", c.path);
            assert!(err.contains(&names), "{tag}: {err}");
            assert!(err.contains("nothing was committed"), "{err}");
            assert_eq!(repo.ok(&["--json", "snapshots"]), snapshots, "{tag}: a snapshot was committed");
            tried += 1;
        }
    }
    // Four payload chunks: three of the big file, one of the small one.
    assert_eq!(tried, 32);
}

#[test]
fn a_path_repeated_after_its_end_chunk_is_refused() {
    // mbstream -x cannot create a file twice (O_EXCL): it stops extracting
    // there ("failed to create file"), even where it still exits 0.
    let repo = Repo::new();
    let src = repo.scratch("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"first").unwrap();
    std::fs::write(src.join("b"), b"second").unwrap();
    let once = mbstream_create(&src, &["a", "b"]);
    let twice = [once.clone(), once].concat();
    let mb = mbstream_extract(&twice, &repo.scratch("mb"));
    assert!(String::from_utf8_lossy(&mb.stderr).contains("failed to create file"), "{mb:?}");

    let out = backup(&repo, "twice", &twice);
    assert_eq!(out.status.code(), Some(DAMAGED), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(one_line_error(&out).contains("xbstream chunk of a at offset 0 after the file's end chunk"));
    assert!(repo.json(&["snapshots"]).as_array().unwrap().is_empty());
}

/// One 'S' chunk (xtrabackup's sparse chunk; MariaDB's mbstream has none).
fn sparse_chunk(path: &str, map: &[(u32, u32)], offset: u64, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    for (skip, len) in map {
        m.extend_from_slice(&skip.to_le_bytes());
        m.extend_from_slice(&len.to_le_bytes());
    }
    let mut s = b"XBSTCK01\0S".to_vec();
    s.extend_from_slice(&(path.len() as u32).to_le_bytes());
    s.extend_from_slice(path.as_bytes());
    s.extend_from_slice(&(map.len() as u32).to_le_bytes());
    s.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    s.extend_from_slice(&offset.to_le_bytes());
    s.extend_from_slice(&crc32fast::hash(&[&m[..], payload].concat()).to_le_bytes());
    s.extend_from_slice(&m);
    s.extend_from_slice(payload);
    s
}

#[test]
fn a_sparse_chunk_restores_with_its_holes_and_a_bad_map_is_refused() {
    let repo = Repo::new();
    let end = b"XBSTCK01\0E\x01\0\0\0f".to_vec();
    // 4 bytes, a 100-byte hole, 2 bytes, then a 50-byte hole that ends the file.
    let good = [sparse_chunk("f", &[(0, 4), (100, 2), (50, 0)], 0, b"AAAABB"), end.clone()].concat();
    let out = backup(&repo, "sparse", &good);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let target = repo.scratch("restored");
    repo.ok(&["restore".as_ref(), "latest".as_ref(), "--target".as_ref(), target.as_os_str()]);
    let mut want = b"AAAA".to_vec();
    want.extend_from_slice(&[0; 100]);
    want.extend_from_slice(b"BB");
    want.extend_from_slice(&[0; 50]);
    assert_eq!(std::fs::read(target.join("f")).unwrap(), want);
    let snapshots = repo.ok(&["--json", "snapshots"]);

    // A map that places less than its payload, or more.
    for map in [&[(0u32, 4u32), (100, 1)][..], &[(0, 4), (100, 3)]] {
        let bad = [sparse_chunk("f", map, 0, b"AAAABB"), end.clone()].concat();
        let out = backup(&repo, "bad", &bad);
        assert_eq!(out.status.code(), Some(DAMAGED), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(one_line_error(&out).contains("bytes of a 6-byte payload"));
        assert_eq!(repo.ok(&["--json", "snapshots"]), snapshots);
    }
}
