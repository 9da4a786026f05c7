//! Criterion benchmarks for each stage of the store and for the whole pipeline.
//!
//! Every input is generated from a seeded ChaCha RNG, so two runs measure the
//! same bytes and a before/after comparison means something. Throughput is
//! reported in plaintext bytes, the number a user's backup window depends on.
//!
//! - `chunker/fastcdc`, `chunker/fixed16k`: `Chunker` over 64 MiB of random
//!   bytes with the default CDC parameters and with 16 KiB pages. The reader
//!   thread does this alone, so it bounds the pipeline whatever the core count.
//! - `id_hash/1MiB`: the keyed BLAKE3 chunk id. Every chunk, new or
//!   duplicate, pays it: it is the whole cost of a duplicate chunk.
//! - `seal_chunk/compressible`, `seal_chunk/incompressible`: zstd level 1 plus
//!   XChaCha20-Poly1305 on 1 MiB, the per-new-chunk cost on the workers. The
//!   compressible input is database-like pages (about 2.7x at level 1); the
//!   incompressible one shows the path where zstd is tried and the chunk is
//!   stored raw. `open_chunk/compressible` is the per-chunk cost of restore.
//! - `pipeline/backup_new`: a 256 MiB database-like stream backed up into a
//!   fresh in-memory repository each iteration, so every chunk is new: reader,
//!   workers, pack writer and uploader together, without disk or network.
//! - `pipeline/backup_dedup`: the same stream into a repository that already
//!   holds it, so every chunk is a duplicate: chunking, hashing and index
//!   probes, the cost of a nightly backup of data that barely changed.
//! - `pipeline/restore`: `Indexed::read_file` of that file into a sink that
//!   discards the bytes: fetch, authenticate, decompress, in order.
//!
//! Sample counts are small so `cargo bench --bench store` takes a few minutes
//! on a two-core machine.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use dedupe_ingest::StreamSource;
use dedupe_store::backend::{Backend, ObjectStoreBackend};
use dedupe_store::internals::{open_chunk, seal_chunk, Chunker, Keys};
use dedupe_store::{BackupOptions, Chunking, Indexed, KdfParams, Manifest, NodeKind, Piece, Repository};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const MIB: usize = 1024 * 1024;
const CHUNKER_INPUT: usize = 64 * MIB;
const CHUNK: usize = MIB;
const STREAM: usize = 256 * MIB;
const PAGE: usize = 16 * 1024;
const LEVEL: i32 = 1;
const PASSWORD: &[u8] = b"bench";
/// Argon2id at its cheapest: the benches measure the data path, not unlocking.
const KDF: KdfParams = KdfParams { memory_kib: 1024, iterations: 1, parallelism: 1 };

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// `len` bytes of 16 KiB pages of fixed-width order rows, roughly what a
/// table file or a physical backup stream holds. Ids and timestamps climb,
/// most fields come from small domains, and each row carries a 16-byte random
/// key, which is what keeps zstd level 1 near 2.7x rather than 10x: a bench on
/// text-like data would flatter compression and understate the cipher's share.
fn db_pages(len: usize, seed: u64) -> Vec<u8> {
    const ROW: usize = 96;
    const NAMES: [&str; 16] = [
        "Ada Lovelace",
        "Alan Turing",
        "Grace Hopper",
        "Edsger Dijkstra",
        "Barbara Liskov",
        "Donald Knuth",
        "Ken Thompson",
        "Dennis Ritchie",
        "Frances Allen",
        "John Backus",
        "Leslie Lamport",
        "Tony Hoare",
        "Niklaus Wirth",
        "Margaret Hamilton",
        "Jim Gray",
        "Michael Stonebraker",
    ];
    const STATUS: [&[u8; 8]; 4] = [b"pending ", b"paid    ", b"shipped ", b"refunded"];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len.next_multiple_of(PAGE));
    let mut row_id = 1u64;
    let mut page_no = 0u32;
    while out.len() < len {
        let page_start = out.len();
        // Page header: number, LSN, checksum, free-space offset.
        out.extend_from_slice(&page_no.to_le_bytes());
        out.extend_from_slice(&rng.random::<u64>().to_le_bytes());
        out.extend_from_slice(&rng.random::<u32>().to_le_bytes());
        out.extend_from_slice(&[0u8; 8]);
        // Pages are not all full: up to a tenth is left free (zeros).
        let fill = PAGE - rng.random_range(0..PAGE / 10);
        while out.len() - page_start + ROW <= fill {
            let row_start = out.len();
            out.extend_from_slice(&row_id.to_le_bytes());
            out.extend_from_slice(&rng.random_range(0..50_000u32).to_le_bytes()); // customer
            out.extend_from_slice(&rng.random_range(100..100_000u32).to_le_bytes()); // cents
            out.extend_from_slice(&rng.random_range(1..20u16).to_le_bytes()); // quantity
            out.extend_from_slice(STATUS[rng.random_range(0..STATUS.len())]);
            let created = 1_700_000_000_000_000u64 + row_id * 1_000 + rng.random_range(0..1_000u64);
            out.extend_from_slice(&created.to_le_bytes());
            let name = NAMES[rng.random_range(0..NAMES.len())].as_bytes();
            out.extend_from_slice(name);
            out.resize(out.len() + 24 - name.len(), b' ');
            out.extend_from_slice(format!("SKU-{:08X}", rng.random_range(0..1u32 << 20)).as_bytes());
            let mut key = [0u8; 16];
            rng.fill_bytes(&mut key);
            out.extend_from_slice(&key);
            out.resize(row_start + ROW, 0); // null bitmap and padding
            row_id += 1;
        }
        out.resize(page_start + PAGE, 0);
        page_no += 1;
    }
    out.truncate(len);
    out
}

fn chunker(c: &mut Criterion) {
    let data = random_bytes(CHUNKER_INPUT, 1);
    let mut g = c.benchmark_group("chunker");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for (name, chunking) in
        [("fastcdc", Chunking::DEFAULT_CDC), ("fixed16k", Chunking::Fixed { size: 16 * 1024, level: None })]
    {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut total = 0;
                for chunk in Chunker::new(&data[..], chunking) {
                    total += black_box(chunk.expect("reading a slice cannot fail")).len();
                }
                assert_eq!(total, data.len());
            })
        });
    }
    g.finish();
}

fn chunk_stages(c: &mut Criterion) {
    let keys = Keys::from_master([7; 32]);
    let random = random_bytes(CHUNK, 2);
    let pages = db_pages(CHUNK, 3);
    let pages_id = keys.chunk_id(&pages);
    let random_id = keys.chunk_id(&random);
    let sealed = seal_chunk(&keys, &pages_id, &pages, LEVEL);
    eprintln!(
        "database-like pages: {:.2}x at zstd level {LEVEL}; random: {:.3}x",
        pages.len() as f64 / sealed.len() as f64,
        random.len() as f64 / seal_chunk(&keys, &random_id, &random, LEVEL).len() as f64,
    );

    let quick = |g: &mut criterion::BenchmarkGroup<'_, _>| {
        g.throughput(Throughput::Bytes(CHUNK as u64));
        g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    };

    let mut g = c.benchmark_group("id_hash");
    quick(&mut g);
    g.bench_function("1MiB", |b| b.iter(|| keys.chunk_id(black_box(&random))));
    g.finish();

    let mut g = c.benchmark_group("seal_chunk");
    quick(&mut g);
    g.bench_function("compressible", |b| b.iter(|| seal_chunk(&keys, &pages_id, black_box(&pages), LEVEL)));
    g.bench_function("incompressible", |b| b.iter(|| seal_chunk(&keys, &random_id, black_box(&random), LEVEL)));
    g.finish();

    let mut g = c.benchmark_group("open_chunk");
    quick(&mut g);
    g.bench_function("compressible", |b| {
        b.iter(|| open_chunk(&keys, &pages_id, black_box(&sealed), CHUNK).expect("the blob was sealed above"))
    });
    g.finish();
}

/// A fresh in-memory repository, unlocked and indexed; the index cache lives
/// in the returned directory.
fn fresh_repo() -> (Indexed, Arc<dyn Backend>, TempDir) {
    let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::memory().expect("tokio runtime starts"));
    let cache = tempfile::tempdir().expect("temporary directory");
    let repo = Repository::init(backend.clone(), PASSWORD, KDF).expect("init in memory");
    let indexed = repo.unlock(PASSWORD).expect("unlock").list(cache.path()).expect("list").indexed().expect("index");
    (indexed, backend, cache)
}

fn reopen(backend: &Arc<dyn Backend>, cache: &TempDir) -> Indexed {
    Repository::open(backend.clone())
        .and_then(|r| r.unlock(PASSWORD))
        .and_then(|u| u.list(cache.path()))
        .and_then(|l| l.indexed())
        .expect("reopen in memory")
}

/// Backs up `data` as one stream file.
fn backup(repo: &Indexed, data: &Arc<[u8]>) -> Manifest {
    let source = StreamSource::new(Box::new(Cursor::new(data.clone())), "db.ibd", repo.config.chunking);
    let opts = BackupOptions {
        name: "bench".into(),
        source_description: "bench".into(),
        force_read: false,
        compression_level: Some(LEVEL),
        metadata: Default::default(),
        log: None,
        kind: dedupe_store::Kind::Snapshot,
        origin: Default::default(),
    };
    let result = repo.backup(Box::new(source), opts, &()).expect("backup in memory");
    assert_eq!(result.manifest.stats.bytes, data.len() as u64);
    result.manifest
}

fn pipeline(c: &mut Criterion) {
    let data: Arc<[u8]> = db_pages(STREAM, 4).into();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(data.len() as u64));
    // Each iteration takes most of a second: flat sampling runs sample_size
    // iterations rather than the 1+2+...+n of linear sampling.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(10));

    // The repository is returned so that dropping it is not timed.
    g.bench_function("backup_new", |b| {
        b.iter_batched(
            fresh_repo,
            |(repo, backend, cache)| {
                let stored = backup(&repo, &data).stats.new_bytes;
                assert!(stored >= data.len() as u64, "a first backup stored only {stored} bytes");
                (repo, backend, cache)
            },
            BatchSize::PerIteration,
        )
    });

    // An `Indexed` sees the chunks that were in the repository when it was
    // opened, not those its own backups add, so each backup after the first
    // opens the repository again, as each CLI command does.
    let (first, backend, cache) = fresh_repo();
    let manifest = backup(&first, &data);
    drop(first);
    let repo = reopen(&backend, &cache);
    let tree = repo.read_tree(&manifest).expect("tree reads back");
    let node = tree.nodes.into_iter().find(|n| n.kind == NodeKind::File).expect("the stream's file node");
    g.bench_function("backup_dedup", |b| {
        b.iter_batched(
            || reopen(&backend, &cache),
            |repo| {
                // Only the tree is new: its node carries the stream's mtime, which is now.
                let stored = backup(&repo, &data).stats.new_chunks;
                assert!(stored <= 1, "a repeated backup stored {stored} chunks");
                repo
            },
            BatchSize::PerIteration,
        )
    });

    g.bench_function("restore", |b| {
        b.iter(|| {
            let mut restored = 0usize;
            let mut sink = |piece: Piece<'_>| {
                if let Piece::Data(d) = piece {
                    restored += black_box(d).len();
                }
                Ok(())
            };
            repo.read_file(&node, &mut sink).expect("restore in memory");
            assert_eq!(restored, data.len());
        })
    });
    g.finish();
}

criterion_group!(benches, chunker, chunk_stages, pipeline);
criterion_main!(benches);
