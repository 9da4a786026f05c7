//! The test vectors of `format-spec/`: fixed keys, inputs and object bytes,
//! and a small frozen repository that any implementation must read.
//!
//! `cargo test --release --test format_vectors -- --ignored regenerate`
//! rewrites them (only when the format changes on purpose).

use dedupe_store::backend::LocalBackend;
use dedupe_store::drills::{drills, DrillRecord, DRILL_AAD};
use dedupe_store::internals::{
    apply_delta, open_blob, open_index_object, seal_chunk_against, seal_index_object, Compaction, Opened, PackEntry,
    PackWriter, COMPACTION_AAD, INDEX_AAD, INDEX_AAD_V1, TRAILER_AAD,
};
use dedupe_store::internals::{
    indexed_packs, open_chunk, open_mark, pack_name, parse_id, read_entries, seal_chunk, seal_mark, Chunker, Keys,
    MARK_AAD,
};
use dedupe_store::{Chunking, Piece, Repository};
use dedupe_suite::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const ID_CONTEXT: &str = "dedupe 2026-11-21 chunk id";
const ENC_CONTEXT: &str = "dedupe 2026-11-21 object encryption";
const VECTOR_PASSWORD: &str = "dedupe test vector";

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors")
}

fn load() -> Value {
    let s = std::fs::read(vectors_dir().join("vectors.json")).expect("format-spec/vectors/vectors.json");
    serde_json::from_slice(&s).expect("vectors.json is JSON")
}

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

fn key32(v: &Value) -> [u8; 32] {
    h(v).try_into().expect("32 bytes")
}

#[test]
fn derived_keys_and_chunk_ids_match_the_vectors() {
    let v = load();
    let master = key32(&v["master_key"]);
    assert_eq!(blake3::derive_key(ID_CONTEXT, &master), key32(&v["id_key"]));
    assert_eq!(blake3::derive_key(ENC_CONTEXT, &master), key32(&v["encryption_key"]));
    let keys = Keys::from_master(master);
    for c in v["chunk_ids"].as_array().unwrap() {
        let input = h(&c["input"]);
        assert_eq!(keys.chunk_id(&input).to_vec(), h(&c["id"]), "chunk id of {:?}", c["input"]);
    }
}

#[test]
fn sealed_chunks_open_to_their_plaintext() {
    let v = load();
    let keys = Keys::from_master(key32(&v["master_key"]));
    for s in v["sealed_chunks"].as_array().unwrap() {
        let id: [u8; 32] = h(&s["id"]).try_into().unwrap();
        let plain = h(&s["plaintext"]);
        let opened = open_chunk(&keys, &id, &h(&s["sealed"]), plain.len()).expect("vector opens");
        assert_eq!(opened, plain);
        // One flipped bit anywhere is refused.
        let mut bad = h(&s["sealed"]);
        bad[30] ^= 1;
        assert!(open_chunk(&keys, &id, &bad, plain.len()).is_err());
    }
}

#[test]
fn fastcdc_cut_points_match_the_vectors() {
    let v = load();
    let c = &v["fastcdc"];
    let data = Prng::new(c["prng_seed"].as_u64().unwrap()).bytes(c["length"].as_u64().unwrap() as usize);
    let lens: Vec<u64> = Chunker::new(&data[..], Chunking::DEFAULT_CDC).map(|c| c.unwrap().len() as u64).collect();
    let want: Vec<u64> = c["chunk_lengths"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(lens, want);
}

#[test]
fn the_frozen_repository_reads_back_exactly() {
    let v = load();
    let r = &v["repository"];
    let backend = Arc::new(LocalBackend::new(&vectors_dir().join("repo")).unwrap());
    let repo = Repository::open(backend).unwrap();
    let unlocked = repo.unlock(r["password"].as_str().unwrap().as_bytes()).expect("vector password opens");
    assert_eq!(unlocked.keys().master(), &key32(&v["master_key"]));
    let cache = tempfile::tempdir().unwrap();
    let repo = unlocked.list(cache.path()).unwrap().indexed().unwrap();
    // Every pack checks against its name and its trailer lists its chunks.
    for p in indexed_packs(&repo) {
        let bytes = repo.backend().get(&pack_name(&p)).unwrap();
        assert!(!read_entries(repo.keys(), &p, &bytes).unwrap().is_empty());
    }
    let (id, m) = repo.find_snapshot("latest", None).unwrap();
    assert_eq!(id, r["snapshot"].as_str().unwrap());
    let tree = repo.read_tree(&m).unwrap();
    let files = r["files"].as_object().unwrap();
    let mut seen = 0;
    for node in &tree.nodes {
        let Some(want) = files.get(&node.path) else { continue };
        seen += 1;
        assert_eq!(json!(node.kind).as_str().unwrap(), want["type"].as_str().unwrap(), "{}", node.path);
        if let Some(t) = want.get("target") {
            assert_eq!(node.target.as_deref(), t.as_str());
        }
        if let Some(b3) = want.get("blake3") {
            let mut hasher = blake3::Hasher::new();
            repo.read_file(node, &mut |p| {
                match p {
                    Piece::Data(d) => {
                        hasher.update(d);
                    }
                    Piece::Hole(n) => {
                        hasher.update(&vec![0u8; n as usize]);
                    }
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(hasher.finalize().to_hex().as_str(), b3.as_str().unwrap(), "{}", node.path);
        }
    }
    assert_eq!(seen, files.len());
    assert!(parse_id(&m.tree).is_some());
}

/// A mark object (format-spec §20.1): named by its hash, sealed with its
/// own associated data, and saying when, how long, and which packs.
#[test]
fn a_mark_object_opens_to_its_fields() {
    let v: Value = serde_json::from_slice(&std::fs::read(vectors_dir().join("mark.json")).unwrap()).unwrap();
    let keys = Keys::from_master(key32(&load()["master_key"]));
    let (name, sealed) = (v["name"].as_str().unwrap(), h(&v["sealed"]));
    assert_eq!(name, format!("marks/{}", blake3::hash(&sealed).to_hex()));
    assert_eq!(keys.open(MARK_AAD, &sealed).expect("opens"), v["plaintext"].as_str().unwrap().as_bytes());
    let m = open_mark(&keys, name, &sealed).unwrap();
    let secs = m.time.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs, v["time_unix"].as_u64().unwrap());
    assert_eq!(m.keep_delete.as_secs(), v["keep_delete"].as_u64().unwrap());
    let packs: Vec<String> = m.packs.iter().map(hex::encode).collect();
    assert_eq!(packs, v["packs"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect::<Vec<_>>());
    let mut bad = sealed.clone();
    bad[40] ^= 1;
    assert!(open_mark(&keys, name, &bad).is_err(), "a flipped bit is refused");
}

fn write_mark_vector(dir: &Path, master: [u8; 32]) {
    let keys = Keys::from_master(master);
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
    let packs = [[0x11u8; 32], [0xa7u8; 32]];
    let (name, sealed) = seal_mark(&keys, time, std::time::Duration::from_secs(86_400), &packs);
    let plaintext = String::from_utf8(keys.open(MARK_AAD, &sealed).unwrap()).unwrap();
    let v = json!({
        "comment": "format-spec §20.1: a mark sealed with the master key of vectors.json",
        "name": name,
        "sealed": hex::encode(&sealed),
        "plaintext": plaintext,
        "time_unix": 1_795_000_000u64,
        "keep_delete": 86_400,
        "packs": packs.iter().map(hex::encode).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("mark.json"), serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
}

/// A stamped index object (format-spec §10.1, §10.5) and a compaction
/// record (§10.6) naming it: names, sealed bytes and what they hold.
#[test]
fn a_stamped_index_object_and_a_compaction_record_open_to_their_fields() {
    let v: Value = serde_json::from_slice(&std::fs::read(vectors_dir().join("compaction.json")).unwrap()).unwrap();
    let keys = Keys::from_master(key32(&load()["master_key"]));
    let ix = &v["index_object"];
    let (name, sealed) = (ix["name"].as_str().unwrap(), h(&ix["sealed"]));
    let stamp = ix["stamp_unix"].as_u64().unwrap();
    assert_eq!(name, format!("index/{stamp:010}-{}", blake3::hash(&sealed).to_hex()));
    // Written before deltas (v1); a regenerated one is v2.
    let plain = keys.open(INDEX_AAD_V1, &sealed).or_else(|| keys.open(INDEX_AAD, &sealed));
    assert_eq!(plain.expect("opens"), h(&ix["plaintext"]));
    let packs = open_index_object(&keys, name, &sealed).unwrap();
    assert_eq!(packs.len(), 1);
    assert_eq!(hex::encode(packs[0].0), ix["pack"].as_str().unwrap());
    let entries: Vec<Value> =
        packs[0].1.iter().map(|e| json!([hex::encode(e.id), e.offset, e.length, e.raw_len])).collect();
    assert_eq!(Value::from(entries), ix["entries"]);

    let r = &v["record"];
    let (name, sealed) = (r["name"].as_str().unwrap(), h(&r["sealed"]));
    assert_eq!(name, format!("compactions/{}", blake3::hash(&sealed).to_hex()));
    let plain: Value = serde_json::from_slice(&keys.open(COMPACTION_AAD, &sealed).expect("opens")).unwrap();
    assert_eq!(plain, r["plaintext"]);
    let c = Compaction::open(&keys, name, &sealed).unwrap();
    assert_eq!(c.sequence, plain["sequence"].as_u64().unwrap());
    assert!(!c.reset);
    assert_eq!(c.objects[0].0, ix["name"].as_str().unwrap());
    let deleted: Vec<String> = c.deleted_packs.iter().map(hex::encode).collect();
    assert_eq!(Value::from(deleted), plain["deleted_packs"]);
    let mut bad = sealed.clone();
    bad[40] ^= 1;
    assert!(Compaction::open(&keys, name, &bad).is_err(), "a flipped bit is refused");
}

fn write_compaction_vector(dir: &Path, master: [u8; 32]) {
    let keys = Keys::from_master(master);
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_040_000);
    let pack = [0x5cu8; 32];
    let entries: Vec<PackEntry> = (0..2u32)
        .map(|i| PackEntry { id: keys.chunk_id(&[i as u8]), offset: i * 60, length: 60, raw_len: 1, base: None })
        .collect();
    let (name, sealed) = seal_index_object(&keys, &[(pack, entries.clone())], at);
    let record = Compaction {
        sequence: 7,
        time: Some(at),
        deleted_packs: vec![[0x11u8; 32]],
        objects: vec![(name.clone(), vec![[0x21u8; 32], [0x22u8; 32]])],
        ..Default::default()
    };
    let (rname, rsealed) = record.seal(&keys);
    let v = json!({
        "comment": "format-spec §10.1, §10.5, §10.6: a stamped index object and a compaction record sealed with the master key of vectors.json",
        "index_object": {
            "name": name,
            "stamp_unix": 1_796_040_000u64,
            "sealed": hex::encode(&sealed),
            "plaintext": hex::encode(keys.open(INDEX_AAD, &sealed).unwrap()),
            "pack": hex::encode(pack),
            "entries": entries.iter().map(|e| json!([hex::encode(e.id), e.offset, e.length, e.raw_len])).collect::<Vec<_>>(),
        },
        "record": {
            "name": rname,
            "sealed": hex::encode(&rsealed),
            "plaintext": serde_json::from_slice::<Value>(&keys.open(COMPACTION_AAD, &rsealed).unwrap()).unwrap(),
        },
    });
    std::fs::write(dir.join("compaction.json"), serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
}

/// A drill record (format-spec §18.2): its name, sealed bytes and fields,
/// read back by the reader `dedupe snapshots` uses.
#[test]
fn a_drill_record_opens_to_its_fields() {
    let v: Value = serde_json::from_slice(&std::fs::read(vectors_dir().join("drill.json")).unwrap()).unwrap();
    let keys = Keys::from_master(key32(&load()["master_key"]));
    let (name, sealed) = (v["name"].as_str().unwrap(), h(&v["sealed"]));
    assert_eq!(name, format!("drills/{}", blake3::hash(&sealed).to_hex()));
    let plain: Value = serde_json::from_slice(&keys.open(DRILL_AAD, &sealed).expect("opens")).unwrap();
    assert_eq!(plain, v["plaintext"]);
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path()).unwrap();
    use dedupe_store::backend::Backend;
    backend.put(name, sealed.clone().into()).unwrap();
    let (records, damaged) = drills(&backend, &keys).unwrap();
    assert!(damaged.is_empty());
    assert_eq!(records.len(), 1);
    assert_eq!(serde_json::to_value(&records[0].1).unwrap(), plain);
    assert_eq!(records[0].1.tables_checked, 32);
    let mut bad = sealed;
    bad[40] ^= 1;
    backend.put(name, bad.into()).unwrap();
    let (records, damaged) = drills(&backend, &keys).unwrap();
    assert!(records.is_empty() && damaged.len() == 1, "a flipped bit is reported, not read");
}

fn write_drill_vector(dir: &Path, master: [u8; 32]) {
    let keys = Keys::from_master(master);
    let record = DrillRecord {
        snapshot: "5f".repeat(32),
        name: "db".into(),
        time: "2026-11-30T03:12:09Z".into(),
        hostname: "db1".into(),
        until: Some("2026-11-29 23:59:00".into()),
        ok: true,
        error: None,
        restore_seconds: 41.5,
        prepare_seconds: 3.25,
        start_seconds: 1.75,
        check_seconds: 12.0,
        tables_checked: 32,
    };
    let sealed = keys.seal(DRILL_AAD, &serde_json::to_vec(&record).unwrap());
    let v = json!({
        "comment": "format-spec §18.2: a drill record sealed with the master key of vectors.json",
        "name": format!("drills/{}", blake3::hash(&sealed).to_hex()),
        "sealed": hex::encode(&sealed),
        "plaintext": serde_json::to_value(&record).unwrap(),
    });
    std::fs::write(dir.join("drill.json"), serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
}

/// A database page (§7.2): its base stored whole, its changed version as a
/// delta on it; the pack holding both (§9.1, a v2 trailer naming the
/// base) and the index object listing that pack (§10.1, v2).
#[test]
fn a_delta_blob_reads_through_its_base_and_its_pack_and_index_object_name_the_base() {
    let v: Value = serde_json::from_slice(&std::fs::read(vectors_dir().join("delta.json")).unwrap()).unwrap();
    let keys = Keys::from_master(key32(&load()["master_key"]));
    let (base, changed) = (h(&v["base"]["plaintext"]), h(&v["changed"]["plaintext"]));
    let (base_id, id): ([u8; 32], [u8; 32]) = (keys.chunk_id(&base), keys.chunk_id(&changed));
    assert_eq!(hex::encode(base_id), v["base"]["id"].as_str().unwrap());
    assert_eq!(hex::encode(id), v["changed"]["id"].as_str().unwrap());
    let base_blob = h(&v["base"]["sealed"]);
    assert_eq!(open_chunk(&keys, &base_id, &base_blob, base.len()).unwrap(), base);
    let delta = h(&v["changed"]["sealed"]);
    let payload = keys.open(&id, &delta).expect("the delta authenticates with its chunk id");
    assert_eq!(payload[0], 2, "flag 2: a delta");
    assert_eq!(payload[1..33], base_id, "then the base's id");
    assert_eq!(hex::encode(&payload[33..]), v["changed"]["frame"].as_str().unwrap());
    let Opened::Delta { base: named, frame } = open_blob(&keys, &id, &delta, changed.len()).unwrap() else {
        panic!("a delta")
    };
    assert_eq!(named, base_id);
    assert_eq!(apply_delta(&frame, &base, changed.len()).unwrap(), changed);
    assert!(delta.len() * 8 < changed.len(), "the delta is small: {} bytes", delta.len());

    let pack = h(&v["pack"]["bytes"]);
    let pack_id: [u8; 32] = h(&v["pack"]["id"]).try_into().unwrap();
    let n = pack.len();
    let tlen = u32::from_le_bytes(pack[n - 4..].try_into().unwrap()) as usize;
    let trailer = keys.open(TRAILER_AAD, &pack[n - 4 - tlen..n - 4]).expect("a v2 trailer");
    assert_eq!(hex::encode(&trailer), v["pack"]["trailer_plaintext"].as_str().unwrap());
    let entries = read_entries(&keys, &pack_id, &pack).unwrap();
    assert_eq!(entries.iter().map(|e| e.base).collect::<Vec<_>>(), vec![None, Some(base_id)]);
    assert_eq!(&pack[entries[1].offset as usize..][..entries[1].length as usize], &delta[..]);

    let ix = &v["index_object"];
    let (name, sealed) = (ix["name"].as_str().unwrap(), h(&ix["sealed"]));
    assert_eq!(hex::encode(keys.open(INDEX_AAD, &sealed).expect("v2")), ix["plaintext"].as_str().unwrap());
    assert_eq!(open_index_object(&keys, name, &sealed).unwrap(), vec![(pack_id, entries)]);
}

fn write_delta_vector(dir: &Path, master: [u8; 32]) {
    let keys = Keys::from_master(master);
    // A 2 KiB page of rows; the next version changes one row.
    let base: Vec<u8> = (0..32)
        .flat_map(|i| format!("row {i:04} name=customer-{:08} balance={:012}\n", i * 7919, i * 31).into_bytes())
        .take(2048)
        .collect();
    let mut changed = base.clone();
    changed[700..712].copy_from_slice(b"balance=0042");
    let (base_id, id) = (keys.chunk_id(&base), keys.chunk_id(&changed));
    let (base_blob, _) = seal_chunk_against(&keys, &base_id, &base, None, 1);
    let (delta, is_delta) = seal_chunk_against(&keys, &id, &changed, Some((&base_id, &base)), 1);
    assert!(is_delta);
    let mut w = PackWriter::with_buffer(Vec::new(), 1 << 20);
    w.add(base_id, &base_blob, base.len(), None);
    w.add(id, &delta, changed.len(), Some(base_id));
    let pack = w.finish(&keys);
    let n = pack.bytes.len();
    let tlen = u32::from_le_bytes(pack.bytes[n - 4..].try_into().unwrap()) as usize;
    let trailer = keys.open(TRAILER_AAD, &pack.bytes[n - 4 - tlen..n - 4]).unwrap();
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_126_400);
    let (name, sealed) = seal_index_object(&keys, &[(pack.id, pack.entries.clone())], at);
    let v = json!({
        "comment": "format-spec §7.2, §9.1, §10.1: a delta blob on a base, their pack and its index object, sealed with the master key of vectors.json",
        "base": {"id": hex::encode(base_id), "plaintext": hex::encode(&base), "sealed": hex::encode(&base_blob)},
        "changed": {
            "id": hex::encode(id),
            "plaintext": hex::encode(&changed),
            "sealed": hex::encode(&delta),
            "frame": hex::encode(&keys.open(&id, &delta).unwrap()[33..]),
        },
        "pack": {"id": hex::encode(pack.id), "bytes": hex::encode(&pack.bytes), "trailer_plaintext": hex::encode(&trailer)},
        "index_object": {"name": name, "sealed": hex::encode(&sealed), "plaintext": hex::encode(keys.open(INDEX_AAD, &sealed).unwrap())},
    });
    std::fs::write(dir.join("delta.json"), serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
}

/// Writes only format-spec/vectors/drill.json (added after the others).
#[test]
#[ignore]
fn regenerate_drill() {
    write_drill_vector(&vectors_dir(), key32(&load()["master_key"]));
}

/// Writes only format-spec/vectors/delta.json (added after the others).
#[test]
#[ignore]
fn regenerate_delta() {
    write_delta_vector(&vectors_dir(), key32(&load()["master_key"]));
}

/// Writes only format-spec/vectors/compaction.json (added after the others).
#[test]
#[ignore]
fn regenerate_compaction() {
    write_compaction_vector(&vectors_dir(), key32(&load()["master_key"]));
}

/// Writes only format-spec/vectors/mark.json (added after the others).
#[test]
#[ignore]
fn regenerate_mark() {
    write_mark_vector(&vectors_dir(), key32(&load()["master_key"]));
}

/// Rewrites format-spec/vectors/. Run by hand when the format changes.
#[test]
#[ignore]
fn regenerate() {
    let dir = vectors_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // The frozen repository, made by the real binary from a small tree.
    let src = tempfile::tempdir().unwrap();
    let db = src.path().join("db");
    std::fs::create_dir_all(db.join("empty-dir")).unwrap();
    std::fs::write(db.join("hello.txt"), b"Hello, dedupe!\n").unwrap();
    std::fs::write(db.join("pages.ibd"), b"0123456789abcdef".repeat(4096)).unwrap();
    std::fs::write(db.join("random.bin"), Prng::new(4).bytes(300 * 1024)).unwrap();
    std::os::unix::fs::symlink("hello.txt", db.join("link")).unwrap();
    let repo_dir = dir.join("repo");
    let cache = tempfile::tempdir().unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(dedupe_bin())
            .arg("--repo")
            .arg(&repo_dir)
            .args(args)
            .env("DEDUPE_PASSWORD", VECTOR_PASSWORD)
            .env("DEDUPE_CACHE_DIR", cache.path())
            .env("DEDUPE_KDF_MEMORY_KIB", "1024")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    run(&["init".as_ref()]);
    let backup = ["--json".as_ref(), "backup".as_ref(), "--name".as_ref(), "vector".as_ref(), db.as_os_str()];
    let summary: Value = serde_json::from_slice(&run(&backup)).unwrap();

    // The master key is random: read it back through the password.
    let backend = Arc::new(LocalBackend::new(&repo_dir).unwrap());
    let unlocked = Repository::open(backend).unwrap().unlock(VECTOR_PASSWORD.as_bytes()).unwrap();
    let keys = unlocked.keys();
    let master = *keys.master();

    let inputs: Vec<Vec<u8>> = vec![b"".to_vec(), b"hello".to_vec(), Prng::new(1).bytes(1000)];
    let chunk_ids: Vec<Value> =
        inputs.iter().map(|i| json!({"input": hex::encode(i), "id": hex::encode(keys.chunk_id(i))})).collect();
    let plaintexts = [b"id=1 name=alice; id=2 name=bob; id=3 name=carol; ".repeat(8), Prng::new(2).bytes(64)];
    let sealed: Vec<Value> = plaintexts
        .iter()
        .map(|p| {
            let id = keys.chunk_id(p);
            json!({"id": hex::encode(id), "plaintext": hex::encode(p), "sealed": hex::encode(seal_chunk(keys, &id, p, 1))})
        })
        .collect();
    let cdc_data = Prng::new(3).bytes(12 << 20);
    let lens: Vec<u64> = Chunker::new(&cdc_data[..], Chunking::DEFAULT_CDC).map(|c| c.unwrap().len() as u64).collect();
    let b3 = |p: &str| blake3::hash(&std::fs::read(db.join(p)).unwrap()).to_hex().to_string();
    let v = json!({
        "comment": "See format-spec/README.md, section Test vectors. Prng is xorshift64* as in tests/support/lib.rs.",
        "master_key": hex::encode(master),
        "id_key": hex::encode(blake3::derive_key(ID_CONTEXT, &master)),
        "encryption_key": hex::encode(blake3::derive_key(ENC_CONTEXT, &master)),
        "chunk_ids": chunk_ids,
        "sealed_chunks": sealed,
        "fastcdc": {"prng_seed": 3, "length": cdc_data.len(), "min": 262144, "avg": 1048576, "max": 4194304, "chunk_lengths": lens},
        "repository": {
            "path": "repo",
            "password": VECTOR_PASSWORD,
            "snapshot": summary["snapshot"],
            "files": {
                "hello.txt": {"type": "file", "blake3": b3("hello.txt")},
                "pages.ibd": {"type": "file", "blake3": b3("pages.ibd")},
                "random.bin": {"type": "file", "blake3": b3("random.bin")},
                "link": {"type": "symlink", "target": "hello.txt"},
                "empty-dir": {"type": "dir"},
            }
        }
    });
    std::fs::write(dir.join("vectors.json"), serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    write_mark_vector(&dir, master);
    write_compaction_vector(&dir, master);
    write_delta_vector(&dir, master);
    write_drill_vector(&dir, master);
}
