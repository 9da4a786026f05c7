//! What a stream on stdin is, from its first bytes.

use std::io::{self, Read};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// mariabackup / xtrabackup `--stream=xbstream`.
    Xbstream,
    /// ustar, pax or GNU tar (pg_basebackup `-Ft -D -`).
    Tar,
    /// pg_dump `-Fc`.
    PgDumpCustom,
    /// Plain SQL from pg_dump.
    PgDumpPlain,
    /// Plain SQL from mysqldump or mariadb-dump.
    MysqlDump,
    /// Anything else: stored as one opaque file.
    Raw,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Xbstream => "xbstream",
            Format::Tar => "tar",
            Format::PgDumpCustom => "pg_dump_custom",
            Format::PgDumpPlain => "pg_dump",
            Format::MysqlDump => "mysqldump",
            Format::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "xbstream" => Format::Xbstream,
            "tar" => Format::Tar,
            "pg_dump_custom" => Format::PgDumpCustom,
            "pg_dump" => Format::PgDumpPlain,
            "mysqldump" => Format::MysqlDump,
            "raw" => Format::Raw,
            _ => return None,
        })
    }
}

/// Bytes read ahead to decide (and to find a dump's replication coordinates).
pub const HEAD: usize = 64 * 1024;

pub fn sniff(head: &[u8]) -> Format {
    if head.starts_with(crate::xbstream::MAGIC) {
        return Format::Xbstream;
    }
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Format::Tar;
    }
    if head.starts_with(b"PGDMP") {
        return Format::PgDumpCustom;
    }
    let text = String::from_utf8_lossy(&head[..head.len().min(4096)]);
    if text.contains("-- MySQL dump") || text.contains("-- MariaDB dump") {
        return Format::MysqlDump;
    }
    if text.contains("-- PostgreSQL database dump") {
        return Format::PgDumpPlain;
    }
    Format::Raw
}

/// Reads up to `HEAD` bytes, and gives them back in front of the rest.
pub fn peek(mut r: Box<dyn Read + Send>) -> io::Result<(Vec<u8>, Box<dyn Read + Send>)> {
    let mut head = vec![0u8; HEAD];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    let again = io::Cursor::new(head.clone()).chain(r);
    Ok((head, Box::new(again)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(sniff(b"XBSTCK01\0P"), Format::Xbstream);
        let mut tar = vec![0u8; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(sniff(&tar), Format::Tar);
        assert_eq!(sniff(b"PGDMP\x01\x0e"), Format::PgDumpCustom);
        assert_eq!(sniff(b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19"), Format::MysqlDump);
        assert_eq!(sniff(b"--\n-- PostgreSQL database dump\n--\n"), Format::PgDumpPlain);
        assert_eq!(sniff(b""), Format::Raw);
        assert_eq!(sniff(&[1, 2, 3]), Format::Raw);
    }
}
