//! The seed corpora in `fuzz/corpus/<target>/`: small valid inputs, made by
//! `regenerate` below from the real tools (`mbstream -c`, GNU tar), the real
//! binlogs in `ingest/testdata/binlog/` and the frozen repository of
//! `format-spec/vectors/`. The test that runs by default checks that each
//! seed is still accepted by its parser: a seed the parser refuses only
//! teaches the fuzzer the first few bytes.
//!
//! `cargo test --release -p dedupe-fuzz --test seeds -- --ignored regenerate`
//! rewrites them (needs `mbstream` from mariadb-backup and GNU tar).

use dedupe_fuzz::driver::load_corpus;
use dedupe_fuzz::fuzz_targets::{keys, TARGETS};
use dedupe_ingest::tar::TarSource;
use dedupe_ingest::xbstream::{XbstreamSource, XbstreamWriter};
use dedupe_store::backend::{LocalBackend, ObjectKind};
use dedupe_store::internals::{
    encode_entries, encode_records, load_index_segment, open_chunk, open_index_object, open_manifest, parse_id,
    read_entries, PackEntry, INDEX_AAD, MANIFEST_AAD, TRAILER_AAD,
};
use dedupe_store::{Chunking, Manifest, Repository, Source, Tree};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    load_corpus(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target)])
}

fn drained(src: &mut dyn Source) -> Result<usize, String> {
    let mut n = 0;
    while src.next_event().map_err(|e| e.to_string())?.is_some() {
        n += 1;
    }
    Ok(n)
}

fn name(prefix: &str, bytes: &[u8]) -> String {
    format!("{prefix}{}", blake3::hash(bytes).to_hex())
}

#[test]
fn every_target_has_seeds_that_its_parser_accepts() {
    let k = keys();
    let mut total = 0;
    for t in TARGETS {
        let seeds = corpus(t.name);
        assert!(!seeds.is_empty(), "fuzz/corpus/{} is empty", t.name);
        total += seeds.iter().map(Vec::len).sum::<usize>();
        for (i, s) in seeds.iter().enumerate() {
            let why = format!("seed {i} of {}", t.name);
            match t.name {
                "xbstream" => {
                    let mut src = XbstreamSource::new(Box::new(Cursor::new(s.clone())), Chunking::DEFAULT_CDC, false);
                    assert!(drained(&mut src).unwrap_or_else(|e| panic!("{why}: {e}")) > 0, "{why}");
                }
                "tar" => {
                    let mut src = TarSource::new(Box::new(Cursor::new(s.clone())), Chunking::DEFAULT_CDC);
                    assert!(drained(&mut src).unwrap_or_else(|e| panic!("{why}: {e}")) > 0, "{why}");
                }
                "binlog" => {
                    let f = dedupe_ingest::binlog::parse(&s[..]).unwrap_or_else(|e| panic!("{why}: {e}"));
                    assert!(f.events > 0 && !f.truncated_tail, "{why}: {f:?}");
                }
                "manifest" => {
                    let sealed = k.seal(MANIFEST_AAD, s);
                    let as_manifest = open_manifest(k, &name("snapshots/", &sealed), &sealed).is_ok();
                    let as_tree = serde_json::from_slice::<Tree>(s).is_ok();
                    let as_records = s.len() % 40 == 0 && !s.is_empty();
                    assert!(as_manifest || as_tree || as_records, "{why}");
                }
                "pack" => {
                    let body_len = u32::from_le_bytes(s[..4].try_into().unwrap()) as usize;
                    let (body, trailer) = s[4..].split_at(body_len);
                    let sealed = k.seal(TRAILER_AAD, trailer);
                    let mut pack = body.to_vec();
                    pack.extend_from_slice(&sealed);
                    pack.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
                    let entries = read_entries(k, blake3::hash(&pack).as_bytes(), &pack).unwrap();
                    for e in &entries {
                        let blob = &body[e.offset as usize..(e.offset + e.length) as usize];
                        open_chunk(k, &e.id, blob, e.raw_len as usize).unwrap_or_else(|e| panic!("{why}: {e:?}"));
                    }
                    assert!(!entries.is_empty(), "{why}");
                }
                "chunk" => {
                    let raw_len = u32::from_le_bytes(s[..4].try_into().unwrap()) as usize;
                    let id = k.chunk_id(&s[4..]);
                    let sealed = k.seal(&id, &s[4..]);
                    open_chunk(k, &id, &sealed, raw_len).unwrap_or_else(|e| panic!("{why}: {e:?}"));
                }
                "index" => {
                    let sealed = k.seal(INDEX_AAD, s);
                    assert!(!open_index_object(k, &name("index/", &sealed), &sealed).unwrap().is_empty(), "{why}");
                }
                "index_cache" => {
                    let dir = tempfile::tempdir().unwrap();
                    std::fs::write(dir.path().join("seg.bin"), s).unwrap();
                    let ix = load_index_segment(&dir.path().join("seg.bin")).unwrap().expect("a segment file");
                    assert!(ix.iter_ids().count() > 0, "{why}");
                }
                _ => {}
            }
        }
    }
    assert!(total < 100 << 10, "the seed corpora hold {total} bytes: keep them small");
}

fn write(target: &str, file: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), bytes).unwrap();
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The small backup directory the xbstream and tar seeds are made of.
fn backup_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("db")).unwrap();
    std::fs::write(dir.join("backup-my.cnf"), "[mysqld]\ndatadir=/var/lib/mysql\ninnodb_page_size=16384\n").unwrap();
    let frm: Vec<u8> = (0..700u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(dir.join("db/t1.frm"), frm).unwrap();
    std::fs::write(dir.join("db/empty.MYD"), b"").unwrap();
    std::fs::write(
        dir.join("xtrabackup_info"),
        "tool_name = mariabackup\ntool_version = 10.11.19-MariaDB\n\
         binlog_pos = filename 'mysql-bin.000002', position '902', GTID of the last change '0-7-5'\n",
    )
    .unwrap();
}

/// A PostgreSQL-like tree with a regular file, directories, a symlink and a hard link.
fn tar_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("base/1")).unwrap();
    std::fs::write(dir.join("PG_VERSION"), "15\n").unwrap();
    let page: Vec<u8> = (0..700u32).map(|i| (i.wrapping_mul(40503) >> 7) as u8).collect();
    std::fs::write(dir.join("base/1/1259"), page).unwrap();
    std::os::unix::fs::symlink("base/1/1259", dir.join("link")).unwrap();
    std::fs::hard_link(dir.join("PG_VERSION"), dir.join("hard")).unwrap();
}

#[test]
#[ignore]
fn regenerate() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let _ = std::fs::remove_dir_all(&here);
    let tmp = tempfile::tempdir().unwrap();

    // xbstream: mbstream's own output, and an interleaved stream with a sparse chunk.
    let src = tmp.path().join("xb");
    backup_dir(&src);
    let xbs = run(Command::new("mbstream").arg("-c").current_dir(&src).args([
        "backup-my.cnf",
        "db/t1.frm",
        "db/empty.MYD",
        "xtrabackup_info",
    ]));
    write("xbstream", "mbstream.xbs", &xbs);
    let mut w = XbstreamWriter::new(Vec::new());
    w.payload("db/t1.ibd", 0, &[7u8; 100]).unwrap();
    w.payload("b", 0, b"hello").unwrap();
    w.payload("db/t1.ibd", 100, &[9u8; 60]).unwrap();
    w.end("b").unwrap();
    w.end("db/t1.ibd").unwrap();
    let mut interleaved = w.into_inner();
    // A sparse chunk: 4 bytes at 0, a 100-byte hole, 2 bytes.
    let mut map = Vec::new();
    for (skip, len) in [(0u32, 4u32), (100, 2)] {
        map.extend_from_slice(&skip.to_le_bytes());
        map.extend_from_slice(&len.to_le_bytes());
    }
    let payload = b"AAAABB";
    interleaved.extend_from_slice(b"XBSTCK01\0S");
    interleaved.extend_from_slice(&1u32.to_le_bytes());
    interleaved.extend_from_slice(b"s");
    interleaved.extend_from_slice(&2u32.to_le_bytes());
    interleaved.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    interleaved.extend_from_slice(&0u64.to_le_bytes());
    interleaved.extend_from_slice(&crc32fast::hash(&[&map[..], payload].concat()).to_le_bytes());
    interleaved.extend_from_slice(&map);
    interleaved.extend_from_slice(payload);
    let mut w = XbstreamWriter::new(interleaved);
    w.end("s").unwrap();
    w.payload("xtrabackup_info", 0, b"tool_name = mariabackup\n").unwrap();
    w.end("xtrabackup_info").unwrap();
    write("xbstream", "interleaved-sparse.xbs", &w.into_inner());

    // tar: GNU and pax headers, 512-byte records.
    let src = tmp.path().join("tar");
    tar_dir(&src);
    for format in ["gnu", "pax"] {
        let t = run(Command::new("tar")
            .args([&format!("--format={format}"), "-b1", "--owner=0", "--group=0", "--numeric-owner"])
            .args(["--mtime=2026-11-21 05:54:41", "-cf", "-", "PG_VERSION", "base", "hard", "link"])
            .current_dir(&src));
        write("tar", &format!("{format}.tar"), &t);
    }

    // binlog: the real MariaDB binlogs.
    let binlogs = root().join("ingest/testdata/binlog");
    for f in ["mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000002.active", "mysql-bin.000003"] {
        write("binlog", f, &std::fs::read(binlogs.join(f)).unwrap());
    }

    // sniff: the heads of each format.
    write("sniff", "xbstream", &xbs[..64]);
    let tar = std::fs::read(here.join("tar/gnu.tar")).unwrap();
    write("sniff", "tar", &tar[..1024]);
    write("sniff", "pg_dump_custom", b"PGDMP\x01\x0e\x00\x04\x08\x01\x01\x01");
    write(
        "sniff",
        "mysqldump",
        b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19  Distrib 10.11.19\n",
    );
    write("sniff", "pg_dump", b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n");
    write("sniff", "raw", b"\x1f\x8b\x08\x00\x00\x00\x00\x00");

    // The store's objects: the frozen repository of format-spec/vectors.
    let repo_dir = root().join("format-spec/vectors/repo");
    let backend = Arc::new(LocalBackend::new(&repo_dir).unwrap());
    let unlocked = Repository::open(backend).unwrap().unlock(b"dedupe test vector").unwrap();
    let k = keys();
    assert_eq!(unlocked.keys().master(), k.master(), "the fuzz key is the vector repository's");
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = unlocked.cache_dir(cache.path());
    let repo = unlocked.list(cache.path()).unwrap().indexed().unwrap();
    let b = repo.backend();
    let (snap, _) = b.list(ObjectKind::Snapshot).unwrap().into_iter().next().unwrap();
    let sealed = b.get(&snap).unwrap();
    let manifest: Manifest = open_manifest(k, &snap, &sealed).unwrap();
    write("manifest", "manifest.json", &k.open(MANIFEST_AAD, &sealed).unwrap());
    let tree = repo.read_tree(&manifest).unwrap();
    write("manifest", "tree.json", &serde_json::to_vec(&tree).unwrap());
    let node = tree.nodes.iter().find(|n| n.path == "pages.ibd").unwrap();
    let records: Vec<_> = repo.file_records(node).flat_map(|r| r.unwrap()).collect();
    write("manifest", "list-records", &encode_records(&records[..records.len().min(8)]));
    let (index_name, _) = b.list(ObjectKind::Index).unwrap().into_iter().next().unwrap();
    // The frozen repository predates deltas: its records are written again in today's (v2) layout.
    let mut plain = Vec::new();
    for (pack, entries) in open_index_object(k, &index_name, &b.get(&index_name).unwrap()).unwrap() {
        plain.extend_from_slice(&pack);
        encode_entries(&entries, &mut plain);
    }
    write("index", "index-object", &plain);
    let segment = std::fs::read_dir(cache_dir.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .expect("a segment of the index cache");
    write("index_cache", "segment.bin", &std::fs::read(segment).unwrap());

    // A small pack: the repository's small chunks, re-packed; and chunk blobs' plaintexts.
    let (pack_name, _) = b.list(ObjectKind::Pack).unwrap().into_iter().next().unwrap();
    let pack_id = parse_id(pack_name.rsplit('/').next().unwrap()).unwrap();
    let pack = b.get(&pack_name).unwrap();
    let mut body = Vec::new();
    let mut entries = Vec::new();
    let mut chunks = 0;
    for e in read_entries(k, &pack_id, &pack).unwrap() {
        if e.length > 2048 || chunks == 4 {
            continue;
        }
        let blob = &pack[e.offset as usize..(e.offset + e.length) as usize];
        let plain = k.open(&e.id, blob).unwrap();
        let mut seed = e.raw_len.to_le_bytes().to_vec();
        seed.extend_from_slice(&plain);
        write("chunk", &format!("chunk-{chunks}"), &seed);
        entries.push(PackEntry { offset: body.len() as u32, ..e });
        body.extend_from_slice(blob);
        chunks += 1;
    }
    let mut seed = (body.len() as u32).to_le_bytes().to_vec();
    seed.extend_from_slice(&body);
    encode_entries(&entries, &mut seed);
    write("pack", "small-pack", &seed);
}

#[test]
fn checksum_fixups_leave_valid_seeds_alone() {
    use dedupe_fuzz::fuzz_targets::{binlog_fix_crc, tar_fix_checksums, xbstream_fix_crc};
    for s in corpus("xbstream") {
        assert!(xbstream_fix_crc(&s) == s, "an xbstream seed changed");
    }
    for s in corpus("tar") {
        assert!(tar_fix_checksums(&s) == s, "a tar seed changed");
    }
    // mysql-bin.000003 has no checksums: its last four bytes of each event are data.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/binlog");
    for f in ["mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000002.active"] {
        let s = std::fs::read(dir.join(f)).unwrap();
        assert!(binlog_fix_crc(&s) == s, "{f} changed");
    }
}
