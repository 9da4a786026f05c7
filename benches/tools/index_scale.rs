//! The index at scale without the data (`benches/index-scale.sh`): real,
//! sealed index objects naming synthetic packs, and lookups against the
//! cache a command builds from them.
//!
//!   index-scale generate REPO ENTRIES      # index objects of 2^18 records; prints seconds
//!   index-scale lookups REPO CACHE N       # opens the index as a command does; hits and misses per second
//!
//! The password is `DEDUPE_PASSWORD`. Chunk ids are BLAKE3 of the entry's
//! number under a fixed key, so `lookups` knows which ids are there; the
//! packs named do not exist (nothing here reads a blob).

use dedupe_store::backend::{open, Location, Options};
use dedupe_store::internals::{seal_index_object, PackEntry};
use dedupe_store::{Reads, Repository};
use std::path::Path;
use std::time::Instant;

/// Records per index object, as prune compacts them.
const PER_OBJECT: u64 = 1 << 18;
/// Records per synthetic pack (a 32 MiB pack of 16 KiB pages holds about 2000).
const PER_PACK: u64 = 2048;

fn id_of(n: u64) -> [u8; 32] {
    *blake3::keyed_hash(&[7; 32], &n.to_le_bytes()).as_bytes()
}

fn password() -> Vec<u8> {
    std::env::var("DEDUPE_PASSWORD").expect("DEDUPE_PASSWORD").into_bytes()
}

fn repository(repo: &str) -> Repository {
    let backend = open(&Location::parse(repo).expect("a location"), &Options::default()).expect("the repository");
    Repository::open(backend).expect("a repository")
}

fn generate(repo: &str, entries: u64) {
    let unlocked = repository(repo).unlock(&password()).expect("the password");
    let started = Instant::now();
    let mut n = 0u64;
    while n < entries {
        let end = (n + PER_OBJECT).min(entries);
        let mut packs: Vec<([u8; 32], Vec<PackEntry>)> = Vec::new();
        for i in n..end {
            if i % PER_PACK == 0 || packs.is_empty() {
                let pack = *blake3::keyed_hash(&[8; 32], &(i / PER_PACK).to_le_bytes()).as_bytes();
                packs.push((pack, Vec::new()));
            }
            let offset = ((i % PER_PACK) * 16_400) as u32;
            packs.last_mut().expect("one").1.push(PackEntry {
                id: id_of(i),
                offset,
                length: 16_400,
                raw_len: 16_384,
                base: None,
            });
        }
        // Stamped two days ago: a repository compacted earlier, not new objects.
        let at = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
        let (name, sealed) = seal_index_object(unlocked.keys(), &packs, at);
        unlocked.backend().put(&name, sealed.into()).expect("put an index object");
        n = end;
    }
    unlocked.backend().flush().expect("flush");
    println!("{:.1}", started.elapsed().as_secs_f64());
}

fn lookups(repo: &str, cache: &Path, entries: u64) {
    let started = Instant::now();
    let indexed = repository(repo)
        .unlock_and_list(&password(), cache, Reads::Chunks)
        .and_then(|l| l.indexed())
        .expect("the index");
    let open = started.elapsed().as_secs_f64();
    let rounds = 1_000_000u64;
    let t = Instant::now();
    let mut found = 0u64;
    for k in 0..rounds {
        // Spread over the whole index: a multiplicative hash of k.
        let n = (k.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % entries;
        found += indexed.locate(&id_of(n)).is_ok() as u64;
    }
    let hits = rounds as f64 / t.elapsed().as_secs_f64();
    assert_eq!(found, rounds, "every generated id is found");
    let t = Instant::now();
    let mut found = 0u64;
    for k in 0..rounds {
        found += indexed.locate(&id_of(entries + 1 + k)).is_ok() as u64;
    }
    let misses = rounds as f64 / t.elapsed().as_secs_f64();
    assert_eq!(found, 0, "no absent id is found");
    println!("open {open:.2} s, {hits:.0} hits/s, {misses:.0} misses/s");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("generate") if args.len() == 4 => generate(&args[2], args[3].parse().expect("ENTRIES")),
        Some("lookups") if args.len() == 5 => lookups(&args[2], Path::new(&args[3]), args[4].parse().expect("N")),
        _ => {
            eprintln!("usage: index-scale generate REPO ENTRIES | index-scale lookups REPO CACHE ENTRIES");
            std::process::exit(2);
        }
    }
}
