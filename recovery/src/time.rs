//! Times as users give and read them. A time given in whole seconds means
//! "as the database was at the end of that second": MariaDB replays events
//! stamped before the next second, PostgreSQL recovers commits before it
//! (recovery_target_inclusive off). A time with a fraction is taken as it is.

use crate::error::{Error, Result};
use jiff::Timestamp;

/// The instant replay stops before (exclusive), from "YYYY-MM-DD HH:MM:SS"
/// (local time) or RFC 3339.
pub fn parse_until(s: &str) -> Result<Timestamp> {
    let ts = parse_time(s)?;
    if ts.subsec_nanosecond() != 0 {
        return Ok(ts);
    }
    ts.checked_add(jiff::SignedDuration::from_secs(1)).map_err(|_| bad_time(s))
}

/// An instant as given, from "YYYY-MM-DD HH:MM:SS" (local time) or RFC 3339.
pub fn parse_time(s: &str) -> Result<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let dt: jiff::civil::DateTime = s.trim().parse().map_err(|_| bad_time(s))?;
    Ok(dt.to_zoned(jiff::tz::TimeZone::system()).map_err(|_| bad_time(s))?.timestamp())
}

fn bad_time(s: &str) -> Error {
    Error::Usage(format!("cannot read the time {s:?}: use \"YYYY-MM-DD HH:MM:SS\" (local time) or RFC 3339"))
}

/// A duration as restic writes it: `14d`, `36h`, `2w`, `1y6m` (`y` years,
/// `m` months, `w` weeks, `d` days, `h` hours), counted in the calendar.
pub fn parse_duration(s: &str) -> Result<jiff::Span> {
    let bad = || Error::Usage(format!("cannot read the duration {s:?}: write it as 14d, 36h, 2w, 1y6m or 30s"));
    let mut span = jiff::Span::new();
    let mut digits = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = std::mem::take(&mut digits).parse().map_err(|_| bad())?;
        span = match c {
            'y' => span.try_years(n),
            'm' => span.try_months(n),
            'w' => span.try_weeks(n),
            'd' => span.try_days(n),
            'h' => span.try_hours(n),
            's' => span.try_seconds(n),
            _ => return Err(bad()),
        }
        .map_err(|_| bad())?;
    }
    if !digits.is_empty() || span.is_zero() {
        return Err(bad());
    }
    Ok(span)
}

/// `span` before `t`, in the local calendar (a month back from March 31 is
/// February's last day); the earliest time when that is out of range.
pub fn before(t: Timestamp, span: jiff::Span) -> Timestamp {
    t.to_zoned(jiff::tz::TimeZone::system()).checked_sub(span).map(|z| z.timestamp()).unwrap_or(Timestamp::MIN)
}

/// "YYYY-MM-DD HH:MM:SS ZONE" in the machine's time zone ("2026-11-21
/// 12:54:23 CET"): every time a person reads. JSON has RFC 3339 instead.
pub fn shown(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S %Z").to_string()
}

/// "YYYY-MM-DD HH:MM:SS" in the machine's time zone, without the zone: the
/// form `mariadb-binlog --stop-datetime` takes.
pub fn local(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string()
}

/// A manifest's time (RFC 3339); the epoch if it cannot be read.
pub fn manifest_time(m: &dedupe_store::Manifest) -> Timestamp {
    m.time.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Unix seconds as a timestamp.
pub fn unix(s: i64) -> Option<Timestamp> {
    Timestamp::from_second(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_second_means_its_end() {
        let t = parse_until("2026-11-21T12:54:23Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-21T12:54:24Z");
        let t = parse_until("2026-11-21T12:54:23.5Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-21T12:54:23.5Z");
        assert!(parse_until("yesterday").is_err());
    }

    #[test]
    fn durations_read_as_restic_writes_them() {
        let t: Timestamp = "2026-03-31T12:00:00Z".parse().unwrap();
        let back = |s: &str| before(t, parse_duration(s).unwrap());
        assert_eq!(back("14d"), "2026-03-17T12:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(back("36h"), "2026-03-30T00:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(back("2w"), "2026-03-17T12:00:00Z".parse::<Timestamp>().unwrap());
        assert!(back("1y6m") < "2024-10-01T00:00:00Z".parse::<Timestamp>().unwrap());
        for bad in ["", "14", "d", "3x", "-1d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
