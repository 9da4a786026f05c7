//! PostgreSQL WAL files: what a name says (timeline, segment number, LSN
//! range), segment sizes, and the commit times inside a segment, read with
//! the server's own pg_waldump.

use dedupe_ingest::facts::{WalFacts, WalFileType};
use std::path::Path;

/// The segment size when nothing says otherwise (initdb's default).
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// What a WAL archive file name says: segments `TTTTTTTTXXXXXXXXYYYYYYYY`,
/// timeline history `TTTTTTTT.history`, backup history `…​.backup`,
/// `…​.partial`. `size` is the file's size: a full segment's size is the
/// cluster's segment size (a power of two, 1 MiB to 1 GiB); other files,
/// and the planner, pass the archive's segment size in.
pub fn name_facts(file: &str, size: u64) -> WalFacts {
    let hex8 = |s: &str| u64::from_str_radix(s, 16).ok();
    if let Some(tl) = file.strip_suffix(".history").and_then(hex8) {
        return WalFacts { kind: WalFileType::History, timeline: Some(tl), ..WalFacts::other() };
    }
    let (seg, kind) = match file.split_once('.') {
        Some((seg, rest)) if rest.ends_with("backup") => (seg, WalFileType::Backup),
        Some((seg, "partial")) => (seg, WalFileType::Partial),
        Some(_) => return WalFacts::other(),
        None => (file, WalFileType::Segment),
    };
    if seg.len() != 24 || !seg.bytes().all(|b| b.is_ascii_hexdigit()) {
        return WalFacts::other();
    }
    let (tl, log, segno) =
        (hex8(&seg[..8]).unwrap_or(0), hex8(&seg[8..16]).unwrap_or(0), hex8(&seg[16..]).unwrap_or(0));
    let seg_size =
        if size.is_power_of_two() && (1 << 20..=1 << 30).contains(&size) { size } else { DEFAULT_SEGMENT_SIZE };
    let per_log = 0x1_0000_0000u64 / seg_size;
    let start = (log * per_log + segno) * seg_size;
    let lsn = |v: u64| format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff);
    WalFacts {
        kind,
        timeline: Some(tl),
        segment: Some(log * per_log + segno),
        segment_size: Some(seg_size),
        start_lsn: Some(lsn(start)),
        end_lsn: Some(lsn(start + seg_size)),
        system_identifier: None,
        first_commit_time: None,
        last_commit_time: None,
    }
}

/// The segment number a segment file name stands for, under `seg_size`.
pub fn segment_number(file: &str, seg_size: u64) -> Option<u64> {
    name_facts(file, seg_size).segment
}

/// The file name of segment number `seg` on `timeline`.
pub fn segment_name(timeline: u64, seg: u64, seg_size: u64) -> String {
    let per_log = 0x1_0000_0000u64 / seg_size;
    format!("{timeline:08X}{:08X}{:08X}", seg / per_log, seg % per_log)
}

/// The facts of a WAL file about to be archived: its name's, its cluster's
/// system identifier, and for a segment the commit times pg_waldump finds
/// in it (`pg_bin`: `--pg-bin`, whose pg_waldump is tried first).
pub fn file_facts(path: &Path, file: &str, len: u64, pg_bin: Option<&Path>) -> WalFacts {
    let mut facts = name_facts(file, len);
    if matches!(facts.kind, WalFileType::Segment | WalFileType::Partial) {
        facts.system_identifier = system_identifier(path).map(|id| id.to_string());
        // Null when pg_waldump found no commit; absent when it could not look.
        if let Some(times) = commit_times_of(path, pg_bin) {
            facts.first_commit_time = Some(times.map(|t| t.0));
            facts.last_commit_time = Some(times.map(|t| t.1));
        }
    }
    facts
}

/// The system identifier in a segment's first page header (the long
/// header: `xlp_info` has `XLP_LONG_HEADER`, and `xlp_sysid` follows the
/// 24-byte short header), the same number as in the cluster's pg_control.
/// `None` when the file does not start with one.
pub fn system_identifier(path: &Path) -> Option<u64> {
    let mut head = [0u8; 40];
    std::io::Read::read_exact(&mut std::fs::File::open(path).ok()?, &mut head).ok()?;
    system_identifier_in(&head)
}

fn system_identifier_in(head: &[u8; 40]) -> Option<u64> {
    const XLP_LONG_HEADER: u16 = 0x0002;
    let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
    let info = u16::from_le_bytes([head[2], head[3]]);
    let (seg_size, block) = (u32_at(32), u32_at(36));
    // A long header names the segment and page sizes: powers of two in range.
    let sane = seg_size.is_power_of_two() && (1 << 20..=1 << 30).contains(&seg_size) && block.is_power_of_two();
    (info & XLP_LONG_HEADER != 0 && sane).then(|| u64::from_le_bytes(head[24..32].try_into().expect("8 bytes")))
}

/// First and last commit times in a WAL segment (unix seconds), read with
/// pg_waldump: WAL records are PostgreSQL's own format, and its own tool
/// reads them across versions. `Some(None)` when it read the segment and
/// found no commit; `None` when it could not tell (no pg_waldump of the
/// segment's version, no record read at all, a time it could not read).
fn commit_times_of(path: &Path, pg_bin: Option<&Path>) -> Option<Option<(i64, i64)>> {
    crate::pgbin::waldumps(pg_bin).into_iter().find_map(|tool| {
        // pg_waldump prints times in its local zone with the zone's abbreviation
        // (CEST, IST, AEST...), which is no zone name: in UTC it says "UTC".
        // (It exits 1 at the end of an ordinary segment: the output is what counts.)
        let out = dedupe_ingest::secrets::scrub(&mut std::process::Command::new(tool))
            .arg(path)
            .env("TZ", "UTC")
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        commit_times(&String::from_utf8_lossy(&out.stdout))
    })
}

/// The commit times in pg_waldump's output (see `commit_times_of`).
fn commit_times(text: &str) -> Option<Option<(i64, i64)>> {
    let mut first = None;
    let mut last = None;
    let mut records = 0usize;
    for line in text.lines() {
        if line.starts_with("rmgr: ") {
            records += 1;
        }
        // Every record recovery can stop at: "desc: COMMIT 2026-11-21 05:00:00.123456 UTC; ...",
        // "desc: ABORT ...", and "desc: COMMIT_PREPARED 725: 2026-..." (ABORT_PREPARED).
        let Some(rest) = ["desc: COMMIT ", "desc: ABORT ", "desc: COMMIT_PREPARED ", "desc: ABORT_PREPARED "]
            .iter()
            .find_map(|k| line.find(k).map(|i| &line[i + k.len()..]))
        else {
            continue;
        };
        let rest = match rest.split_once(": ") {
            Some((xid, time)) if !xid.is_empty() && xid.bytes().all(|b| b.is_ascii_digit()) => time,
            _ => rest,
        };
        let end = rest.find(';').unwrap_or(rest.len());
        let t = parse_pg_time(rest[..end].trim())?;
        first.get_or_insert(t);
        last = Some(t);
    }
    // Nothing read (another major version's pg_waldump, a damaged file) is not "no commit".
    if records == 0 {
        return None;
    }
    Some(first.zip(last))
}

/// `2026-11-21 05:00:00.123456 UTC` (or another zone name jiff knows).
fn parse_pg_time(s: &str) -> Option<i64> {
    let (dt, zone) = s.rsplit_once(' ')?;
    let dt: jiff::civil::DateTime = dt.parse().ok()?;
    let tz = jiff::tz::TimeZone::get(zone).ok()?;
    Some(dt.to_zoned(tz).ok()?.timestamp().as_second())
}

/// `recovery_target_time` in a form the server takes: local time with a
/// numeric offset. (It refuses RFC 3339's `Z`, "invalid value for parameter",
/// and does not start.)
pub fn target_time(until: jiff::Timestamp) -> String {
    until.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S%.f%:z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
rmgr: Heap        len (rec/tot):     59/    59, tx:        725, lsn: 0/01516768, prev 0/01516730, desc: INSERT off 1 flags 0x08, blkref #0: rel 1663/5/16384 blk 0
rmgr: Transaction len (rec/tot):     66/    66, tx:        723, lsn: 0/015006D0, prev 0/01500630, desc: COMMIT 2026-11-21 06:07:39.893684 UTC; inval msgs: snapshot 2396
rmgr: Transaction len (rec/tot):    242/   242, tx:        725, lsn: 0/015167A8, prev 0/01516788, desc: PREPARE gid p1: 2026-11-21 06:07:40.163663 UTC
rmgr: Transaction len (rec/tot):     42/    42, tx:          0, lsn: 0/015168A0, prev 0/015167A8, desc: COMMIT_PREPARED 725: 2026-11-21 06:07:41.163981 UTC
rmgr: Transaction len (rec/tot):     42/    42, tx:          0, lsn: 0/01516A08, prev 0/01516910, desc: ABORT_PREPARED 726: 2026-11-21 06:07:42.164514 UTC
";

    #[test]
    fn commits_aborts_and_prepared_ones_are_read() {
        let t = 1_795_241_259; // 2026-11-21 06:07:39 UTC
        assert_eq!(commit_times(DUMP), Some(Some((t, t + 3))));
    }

    #[test]
    fn no_commit_is_not_unknown() {
        let first = DUMP.lines().next().unwrap();
        assert_eq!(commit_times(first), Some(None));
        // Nothing read at all (another version's pg_waldump, a damaged file): unknown.
        assert_eq!(commit_times(""), None);
        // A time in a zone abbreviation that names no zone: unknown, not "no commit".
        assert_eq!(commit_times(&DUMP.replace("UTC", "IST")), None);
    }

    #[test]
    fn the_system_identifier_is_read_from_a_long_page_header() {
        let mut head = [0u8; 40];
        head[2] = 0x02; // XLP_LONG_HEADER (with 0x04, XLP_BKP_REMOVABLE, as servers write it)
        head[2] |= 0x04;
        head[24..32].copy_from_slice(&7_444_123_456_789_012_345u64.to_le_bytes());
        head[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        head[36..40].copy_from_slice(&8192u32.to_le_bytes());
        assert_eq!(system_identifier_in(&head), Some(7_444_123_456_789_012_345));
        // A short header (a page in the middle of a segment) names none.
        let mut short = head;
        short[2] = 0x04;
        assert_eq!(system_identifier_in(&short), None);
        // Sizes that are no sizes: not a header.
        let mut odd = head;
        odd[32..36].copy_from_slice(&12345u32.to_le_bytes());
        assert_eq!(system_identifier_in(&odd), None);
    }

    #[test]
    fn segment_names_follow_the_segment_size() {
        // 16 MiB: 256 segments per 4 GiB "log".
        assert_eq!(segment_name(1, 0x1ff, 16 << 20), "0000000100000001000000FF");
        // 64 MiB: 64 segments per log.
        assert_eq!(segment_name(2, 65, 64 << 20), "000000020000000100000001");
        let f = name_facts("000000020000000100000001", 64 << 20);
        assert_eq!(f.segment, Some(65));
        assert_eq!(f.start_lsn.as_deref(), Some("1/4000000"));
        assert_eq!(name_facts("00000002.history", 40).kind, WalFileType::History);
        assert_eq!(name_facts("000000010000000000000002.00000028.backup", 300).kind, WalFileType::Backup);
        assert_eq!(name_facts("junk", 1).kind, WalFileType::Other);
    }
}
