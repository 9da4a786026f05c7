//! Which files are arrays of pages, and how to chunk them.
//!
//! An InnoDB tablespace is an array of pages (16 KiB by default) and a
//! PostgreSQL relation file an array of 8 KiB blocks, both updated in place:
//! a changed page never shifts its neighbours, so chunking at page
//! boundaries finds every unchanged page again, where content-defined chunks
//! of ~1 MiB would be lost whenever any page inside them changed. Every
//! other file keeps FastCDC.

use dedupe_store::Chunking;

/// The block InnoDB tablespaces are chunked in: 128 KiB, eight pages (a
/// page larger than that is a block of its own). Before changed pages were
/// stored as deltas (`format-spec` §7.5) two pages per block deduplicated
/// best; with deltas, a block in which a few rows changed costs about what
/// the rows cost whatever its size, while larger blocks compress better and
/// cost zstd and the cipher less per byte. Measured on both workloads
/// (format-spec §8.2): against two pages, the first backup is 30-45% faster
/// and 2-21% smaller, day 2 grows 10-50% less, and a restore is 10-50%
/// faster. InnoDB's pages gain little from 256 KiB (1% smaller, slower to
/// back up); they compress best and fastest at zstd level 1.
pub const INNODB_BLOCK_BYTES: u32 = 128 << 10;

/// The block PostgreSQL relation files are chunked in: 256 KiB, 32 pages,
/// compressed at zstd level 2 (`POSTGRES_LEVEL`). Their pages are alike
/// (the same tuple layout row after row), so a larger block finds more to
/// match: on the pgbench workload's base backup the blocks compress to
/// 97.6 MB at 128 KiB and level 1, 94.2 MB at level 3, and 91.8 MB at
/// 256 KiB and level 2, at 85% of level 1's speed (format-spec §8.2).
pub const POSTGRES_BLOCK_BYTES: u32 = 256 << 10;
pub const POSTGRES_LEVEL: i32 = 2;

/// The block for pages of `page` bytes: whole pages, `block` or one page.
fn block_of(page: u32, block: u32) -> u32 {
    page * (block / page).max(1)
}

/// The page size of an InnoDB tablespace, from the FSP flags of its first
/// page (`FSP_SPACE_FLAGS` at byte 54), or `None` if the bytes are too short.
pub fn innodb_page_size(first_page: &[u8]) -> Option<u32> {
    let flags = u32::from_be_bytes(first_page.get(54..58)?.try_into().ok()?);
    // MariaDB 10.5+ "full_crc32" format: marker bit 4, page size in bits 0..3.
    let ssize = if flags & (1 << 4) != 0 { flags & 0xf } else { (flags >> 6) & 0xf };
    Some(match ssize {
        0 => 16384,
        3..=7 => 512 << ssize,
        _ => return None,
    })
}

/// True for InnoDB files that are arrays of pages: tablespaces, the system
/// tablespace and undo tablespaces.
pub fn is_innodb_paged(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".ibd")
        || (name.starts_with("ibdata") && name.len() > 6 && name[6..].bytes().all(|b| b.is_ascii_digit()))
        || (name.starts_with("undo") && name.len() > 4 && name[4..].bytes().all(|b| b.is_ascii_digit()))
}

/// True for PostgreSQL relation files: `base/<db>/<relfilenode>[_fsm|_vm][.N]`,
/// `global/<relfilenode>...`, and the same under `pg_tblspc/`.
pub fn is_postgres_relation(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let name = parts.last().copied().unwrap_or_default();
    let in_place = matches!(parts.as_slice(), ["base", _, _] | ["global", _])
        || (parts.first() == Some(&"pg_tblspc") && parts.len() >= 4);
    if !in_place {
        return false;
    }
    let stem = name.split('.').next().unwrap_or_default();
    let stem = stem
        .strip_suffix("_fsm")
        .or_else(|| stem.strip_suffix("_vm"))
        .or_else(|| stem.strip_suffix("_init"))
        .unwrap_or(stem);
    !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit())
}

/// How to chunk the file `path` whose content starts with `head`.
pub fn chunking_for(path: &str, head: &[u8], default: Chunking) -> Chunking {
    if is_innodb_paged(path) {
        if let Some(page) = innodb_page_size(head) {
            return Chunking::Fixed { size: block_of(page, INNODB_BLOCK_BYTES), level: None };
        }
    }
    if is_postgres_relation(path) {
        return Chunking::Fixed { size: block_of(8192, POSTGRES_BLOCK_BYTES), level: Some(POSTGRES_LEVEL) };
    }
    default
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn innodb_names() {
        assert!(is_innodb_paged("sbtest/sbtest1.ibd"));
        assert!(is_innodb_paged("ibdata1"));
        assert!(is_innodb_paged("undo001"));
        assert!(!is_innodb_paged("ib_logfile0"));
        assert!(!is_innodb_paged("mysql/db.MAD"));
        assert!(!is_innodb_paged("ibdata"));
    }

    #[test]
    fn postgres_names() {
        assert!(is_postgres_relation("base/16384/16385"));
        assert!(is_postgres_relation("base/16384/16385.1"));
        assert!(is_postgres_relation("base/16384/16385_fsm"));
        assert!(is_postgres_relation("global/1262"));
        assert!(is_postgres_relation("pg_tblspc/16390/PG_15_202209061/16384/16391"));
        assert!(!is_postgres_relation("base/16384/PG_VERSION"));
        assert!(!is_postgres_relation("pg_wal/000000010000000000000001"));
        assert!(!is_postgres_relation("backup_label"));
    }

    #[test]
    fn page_size_from_fsp_flags() {
        let mut page = vec![0u8; 16384];
        assert_eq!(innodb_page_size(&page), Some(16384));
        // full_crc32 marker with ssize 5 (16 KiB) and 4 (8 KiB)
        page[54..58].copy_from_slice(&(0x10u32 | 5).to_be_bytes());
        assert_eq!(innodb_page_size(&page), Some(16384));
        page[54..58].copy_from_slice(&(0x10u32 | 4).to_be_bytes());
        assert_eq!(innodb_page_size(&page), Some(8192));
        // original format, ssize 7 (64 KiB) in bits 6..9
        page[54..58].copy_from_slice(&(7u32 << 6).to_be_bytes());
        assert_eq!(innodb_page_size(&page), Some(65536));
        assert_eq!(innodb_page_size(&page[..50]), None);
    }
}
