//! What a stream on stdin is, from its first bytes.
//!
//! Three answers: a format recognised by its magic; a stream that surely is
//! one of these formats but damaged or cut short (refused: committing it as
//! raw bytes would hide a broken backup); and anything else, stored as raw
//! bytes. The second answer needs strong evidence, so that dumps, text and
//! arbitrary binary data are never refused:
//!
//! - an xbstream: at least 8 bytes within 3 bits (or one byte) of the chunk
//!   magic `XBSTCK01` is damaged; a shorter input that is the start of the
//!   magic is cut short;
//! - a tar: a first 512-byte block whose fields have a tar header's shape
//!   (a printable name, octal mode, size and checksum fields, a known type)
//!   but no `ustar` magic is an old-style (v7) tar when its checksum is right
//!   and a damaged one when not; an input shorter than 512 bytes that is the
//!   start of such a header, up to past its name (the name's NUL padding
//!   arrived), is a tar cut short. An input that ends inside the first name
//!   cannot be told from a line of text and is stored raw.
//!
//! An empty input is refused whatever the format: a producer that wrote
//! nothing has not made a backup.

use dedupe_store::Error;
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

/// What an empty input is told.
pub const EMPTY: &str = "the input is empty: nothing to back up (is the producer writing to stdout?)";

/// Refuses an empty input, whatever its format is said to be.
pub fn not_empty(head: &[u8]) -> Result<(), Error> {
    if head.is_empty() {
        return Err(Error::Input(EMPTY.into()));
    }
    Ok(())
}

/// The format of a stream from its first bytes (all of it when shorter than
/// `HEAD`), or why it is refused: `Error::Input` when empty, `Error::Damaged`
/// or `Error::Truncated` naming the format it looks like.
pub fn sniff(head: &[u8]) -> Result<Format, Error> {
    not_empty(head)?;
    let magic = crate::xbstream::MAGIC;
    if head.starts_with(magic) {
        return Ok(Format::Xbstream);
    }
    if head.len() < magic.len() && magic.starts_with(head) {
        return Err(Error::Truncated(format!(
            "the input is {} bytes, the start of an xbstream's chunk magic \"XBSTCK01\": an xbstream cut short",
            head.len()
        )));
    }
    if head.len() >= magic.len() && near(&head[..magic.len()], magic) {
        return Err(Error::Damaged(format!(
            "the input starts with {:?}, a damaged xbstream chunk magic \"XBSTCK01\"{RAW_HINT}",
            String::from_utf8_lossy(&head[..magic.len()])
        )));
    }
    if head.len() >= BLOCK && &head[257..262] == b"ustar" {
        return Ok(Format::Tar);
    }
    if head.starts_with(b"PGDMP") {
        return Ok(Format::PgDumpCustom);
    }
    let text = String::from_utf8_lossy(&head[..head.len().min(4096)]);
    if text.contains("-- MySQL dump") || text.contains("-- MariaDB dump") {
        return Ok(Format::MysqlDump);
    }
    if text.contains("-- PostgreSQL database dump") {
        return Ok(Format::PgDumpPlain);
    }
    match tar_head(head) {
        TarHead::No => Ok(Format::Raw),
        // An old-style (v7, pre-POSIX) header: the tar crate reads those.
        TarHead::Valid => Ok(Format::Tar),
        TarHead::BadChecksum { name, stored, computed } => Err(Error::Damaged(format!(
            "the first 512 bytes look like the tar header of {name:?}, but its checksum is wrong \
             (stored {stored:o}, computed {computed:o}): a tar whose first header is damaged{RAW_HINT}"
        ))),
        TarHead::Cut { name } => Err(Error::Truncated(format!(
            "the input is {} bytes, the start of the tar header of {name:?}: a tar stream cut inside its first header{RAW_HINT}",
            head.len()
        ))),
    }
}

/// What raw input looks like, for the producer's user: a compression's name
/// (the usual reason a database stream is not recognised: `pg_basebackup
/// -z`, `mysqldump | gzip`), else its first line or first bytes.
pub fn describe(head: &[u8]) -> String {
    const COMPRESSED: &[(&[u8], &str)] = &[
        (b"\x1f\x8b", "gzip"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"BZh", "bzip2"),
        (b"\x04\x22\x4d\x18", "lz4"),
    ];
    if let Some((_, name)) = COMPRESSED.iter().find(|(magic, _)| head.starts_with(magic)) {
        return format!("{name}-compressed data: dedupe cannot look inside it nor deduplicate it across backups; drop the producer's compression (dedupe compresses)");
    }
    let first = &head[..head.len().min(60)];
    let line = first.split(|&b| b == b'\n').next().unwrap_or_default();
    match std::str::from_utf8(line) {
        Ok(text) if !text.trim().is_empty() && !text.chars().any(|c| c.is_control() && c != '\t') => {
            format!("text starting {text:?}")
        }
        _ => format!(
            "bytes starting {}",
            first.iter().take(16).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
        ),
    }
}

/// For the refusals that rest on a likeness: the way to store the bytes anyway.
const RAW_HINT: &str = " (if it is not, --format raw stores it as it is)";

/// Within 3 bits, or one byte, of `magic`.
fn near(bytes: &[u8], magic: &[u8]) -> bool {
    let bits: u32 = bytes.iter().zip(magic).map(|(a, b)| (a ^ b).count_ones()).sum();
    let differing = bytes.iter().zip(magic).filter(|(a, b)| a != b).count();
    bits <= 3 || differing <= 1
}

const BLOCK: usize = 512;

/// The first block (or what arrived of it) read as a tar header without the
/// `ustar` magic check.
#[derive(Debug, PartialEq, Eq)]
enum TarHead {
    /// Not shaped like a tar header, or too little of one to tell.
    No,
    /// A whole header with a right checksum.
    Valid,
    /// A whole header with a wrong one.
    BadChecksum { name: String, stored: u32, computed: u32 },
    /// Fewer than 512 bytes, all of them the start of a header.
    Cut { name: String },
}

fn tar_head(b: &[u8]) -> TarHead {
    let b = &b[..b.len().min(BLOCK)];
    let whole = b.len() == BLOCK;
    // The part of field `start..end` that arrived.
    let field = |start: usize, end: usize| &b[start.min(b.len())..end.min(b.len())];
    let full = |end: usize| b.len() >= end;
    let Some(name_len) = text_field(field(0, 100), full(100)) else { return TarHead::No };
    // An input that ends inside the name is a line of text as much as a tar.
    if name_len == 0 || b.len() <= name_len {
        return TarHead::No;
    }
    let shaped = octal_field(field(100, 108), full(108), false, true)
        && octal_field(field(108, 116), full(116), true, false)
        && octal_field(field(116, 124), full(124), true, false)
        && octal_field(field(124, 136), full(136), true, true)
        && octal_field(field(136, 148), full(148), true, false)
        && octal_field(field(148, 156), full(156), false, true)
        && field(156, 157).iter().all(|&t| t == 0 || t.is_ascii_digit() || t.is_ascii_alphabetic())
        && text_field(field(157, 257), full(257)).is_some()
        && magic_slot(field(257, 263))
        && field(263, 265).iter().all(|&c| c == 0 || c == b' ' || c.is_ascii_digit())
        && text_field(field(265, 297), full(297)).is_some()
        && text_field(field(297, 329), full(329)).is_some()
        && octal_field(field(329, 337), full(337), false, false)
        && octal_field(field(337, 345), full(345), false, false);
    if !shaped {
        return TarHead::No;
    }
    let name = String::from_utf8_lossy(&b[..name_len]).into_owned();
    // The checksum field counts as eight spaces; bytes not yet arrived as zeros.
    let computed =
        b.iter().enumerate().map(|(i, &c)| if (148..156).contains(&i) { 0 } else { u32::from(c) }).sum::<u32>()
            + 8 * u32::from(b' ');
    let stored = full(156).then(|| octal(field(148, 156))).flatten();
    if whole {
        let stored = stored.unwrap_or(u32::MAX);
        return if stored == computed { TarHead::Valid } else { TarHead::BadChecksum { name, stored, computed } };
    }
    // What is missing can add at most 255 a byte.
    let room = 255 * (BLOCK - b.len()) as u32;
    match stored {
        Some(s) if s < computed || s > computed + room => TarHead::No,
        _ => TarHead::Cut { name },
    }
}

/// Where ustar's magic is: NULs (v7), the magic or the start of it, or
/// (a whole slot) a damaged magic.
fn magic_slot(f: &[u8]) -> bool {
    let known = [&b"ustar\0"[..], b"ustar ", &[0; 6]].into_iter().any(|m| m.starts_with(f));
    known || (f.len() == 6 && near(&f[..5], b"ustar"))
}

/// A NUL-padded text field: printable UTF-8 up to the first NUL, NULs after.
/// `full` is false when the input ended inside the field. The text's length,
/// or `None` when the bytes do not fit.
fn text_field(f: &[u8], full: bool) -> Option<usize> {
    let len = f.iter().position(|&c| c == 0).unwrap_or(f.len());
    if f[len..].iter().any(|&c| c != 0) {
        return None;
    }
    let text = match std::str::from_utf8(&f[..len]) {
        Ok(t) => t,
        // A character cut by the end of the input.
        Err(e) if !full && len == f.len() && e.error_len().is_none() => {
            std::str::from_utf8(&f[..e.valid_up_to()]).expect("valid up to")
        }
        Err(_) => return None,
    };
    (!text.chars().any(char::is_control)).then_some(len)
}

/// An octal number field: spaces, octal digits, then spaces and NULs; or,
/// where `base256` allows, GNU's binary form (first byte 0x80 or 0xff).
/// `digit` asks for at least one digit in a field that arrived whole.
fn octal_field(f: &[u8], full: bool, base256: bool, digit: bool) -> bool {
    if base256 && matches!(f.first(), Some(0x80 | 0xff)) {
        return true;
    }
    let lead = f.iter().take_while(|&&c| c == b' ').count();
    let digits = f[lead..].iter().take_while(|c| (b'0'..=b'7').contains(c)).count();
    let rest = &f[lead + digits..];
    rest.iter().all(|&c| c == 0 || c == b' ') && (!full || !digit || digits > 0)
}

/// The value of a whole octal field.
fn octal(f: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(f).ok()?;
    u32::from_str_radix(s.trim_matches(|c| c == ' ' || c == '\0'), 8).ok()
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

    fn format(head: &[u8]) -> Format {
        sniff(head)
            .unwrap_or_else(|e| panic!("{:?} refused: {e}", String::from_utf8_lossy(&head[..head.len().min(64)])))
    }

    /// A tar as the `tar` crate writes it (GNU headers), one file and one directory.
    fn real_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o640);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "datadir/ibdata1", &b"pages"[..]).unwrap();
        b.into_inner().unwrap()
    }

    /// A pre-POSIX (v7) header: no magic, no owner names.
    fn v7_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_old();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "old.txt", &b"hello"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn formats() {
        assert_eq!(format(b"XBSTCK01\0P"), Format::Xbstream);
        let mut tar = vec![0u8; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(format(&tar), Format::Tar);
        assert_eq!(format(&real_tar()), Format::Tar);
        assert_eq!(format(b"PGDMP\x01\x0e"), Format::PgDumpCustom);
        assert_eq!(format(b"/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19"), Format::MysqlDump);
        assert_eq!(format(b"--\n-- PostgreSQL database dump\n--\n"), Format::PgDumpPlain);
        assert_eq!(format(&[1, 2, 3]), Format::Raw);
    }

    #[test]
    fn raw_input_is_described_for_its_producer() {
        assert!(describe(b"\x1f\x8b\x08\x00rest").starts_with("gzip-compressed data"));
        assert!(describe(b"\x28\xb5\x2f\xfd\x04").starts_with("zstd-compressed data"));
        assert_eq!(describe(b"rows\nmore"), "text starting \"rows\"");
        assert_eq!(describe(b"\x00\x01\xff"), "bytes starting 00 01 ff");
    }

    #[test]
    fn an_empty_input_is_refused() {
        match sniff(b"") {
            Err(Error::Input(m)) => assert_eq!(m, EMPTY),
            other => panic!("{other:?}"),
        }
        assert!(not_empty(b"x").is_ok());
    }

    #[test]
    fn text_dumps_and_random_bytes_are_never_refused() {
        let sql = b"CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(100));\nINSERT INTO t VALUES (1, 'alice');\n";
        assert_eq!(format(sql), Format::Raw);
        assert_eq!(format(&sql.repeat(100)), Format::Raw);
        let dump = "-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)\n--\n-- Host: localhost\n".repeat(20);
        assert_eq!(format(dump.as_bytes()), Format::MysqlDump);
        let pg = "--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n".repeat(30);
        assert_eq!(format(pg.as_bytes()), Format::PgDumpPlain);
        // Short lines of text, as scripts pipe them, with or without a newline.
        for text in [&b"x"[..], b"B", b"rows", b"secret rows", b"hello\n", b"alpha's data", b"d", b"data/", b"./"] {
            assert_eq!(format(text), Format::Raw, "{text:?}");
        }
        // A 100-character line (a tar name field's width) and longer ones.
        for n in [99, 100, 101, 300, 511, 512, 4096] {
            assert_eq!(format(&vec![b'a'; n]), Format::Raw, "{n} letters");
        }
        assert_eq!(format(&[0u8; 10240]), Format::Raw, "zeros (an empty tar is only its end blocks)");
        // Random bytes of every length up to two blocks, and long ones, from a few seeds.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        for n in 1..1100 {
            let bytes = rnd(n);
            // One random byte can be "X", the start of an xbstream's magic.
            if !(n < 8 && crate::xbstream::MAGIC.starts_with(&bytes)) {
                assert_eq!(format(&bytes), Format::Raw, "{bytes:?}");
            }
        }
        for _ in 0..50 {
            assert_eq!(format(&rnd(HEAD)), Format::Raw);
        }
        // Printable random text without newlines.
        for n in [50, 150, 600, 5000] {
            let text: Vec<u8> = rnd(n).into_iter().map(|c| b' ' + c % 95).collect();
            assert_eq!(format(&text), Format::Raw, "{}", String::from_utf8_lossy(&text));
        }
    }

    #[test]
    fn a_damaged_xbstream_magic_is_refused() {
        let stream = b"XBSTCK01\0P\x0c\0\0\0ibdata1";
        for bit in 0..64 {
            let mut damaged = stream.to_vec();
            damaged[bit / 8] ^= 1 << (bit % 8);
            match sniff(&damaged) {
                Err(Error::Damaged(m)) => assert!(m.contains("xbstream"), "{m}"),
                other => panic!("bit {bit}: {other:?}"),
            }
        }
        // One byte overwritten, whatever it became.
        let mut zeroed = stream.to_vec();
        zeroed[3] = 0;
        assert!(matches!(sniff(&zeroed), Err(Error::Damaged(_))));
        // Not near enough: the same letters in lower case.
        assert_eq!(format(b"xbstck01 are letters"), Format::Raw);
    }

    #[test]
    fn an_xbstream_cut_inside_its_magic_is_truncated() {
        for n in 1..8 {
            match sniff(&b"XBSTCK01"[..n]) {
                Err(Error::Truncated(m)) => assert!(m.contains("xbstream") && m.contains(&format!("{n} bytes")), "{m}"),
                other => panic!("{n} bytes: {other:?}"),
            }
        }
    }

    #[test]
    fn a_tar_cut_inside_its_first_header_is_truncated_once_past_the_name() {
        for tar in [real_tar(), v7_tar()] {
            let name_len = tar.iter().position(|&c| c == 0).unwrap();
            for n in 1..512 {
                match (n <= name_len, sniff(&tar[..n])) {
                    (true, Ok(Format::Raw)) => {}
                    (false, Err(Error::Truncated(m))) => {
                        assert!(m.contains("tar") && m.contains(&format!("{n} bytes")))
                    }
                    (_, other) => panic!("cut at {n}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_v7_tar_is_a_tar_and_a_bad_checksum_is_damage() {
        let v7 = v7_tar();
        assert_eq!(&v7[257..263], &[0; 6]);
        assert_eq!(tar_head(&v7), TarHead::Valid);
        assert_eq!(format(&v7), Format::Tar);
        // The tar crate reads it.
        let mut archive = tar::Archive::new(&v7[..]);
        let names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, ["old.txt"]);

        let mut flipped = v7.clone();
        flipped[101] ^= 1; // in the mode field, still an octal digit
        match sniff(&flipped) {
            Err(Error::Damaged(m)) => assert!(m.contains("old.txt") && m.contains("checksum"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A flipped bit in the ustar magic leaves no magic and a wrong checksum.
        let mut tar = real_tar();
        tar[258] ^= 0x04;
        assert!(matches!(sniff(&tar), Err(Error::Damaged(_))));
    }
}
