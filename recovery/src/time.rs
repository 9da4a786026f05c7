//! Times as users give and read them. A time given in whole seconds means
//! "as the database was at the end of that second": MariaDB replays events
//! stamped before the next second, PostgreSQL recovers commits before it
//! (recovery_target_inclusive off). A time with a fraction is taken as it is.

use crate::error::{Error, Result};
use jiff::Timestamp;

/// The instant replay stops before (exclusive), from "YYYY-MM-DD HH:MM:SS"
/// (local time) or RFC 3339.
pub fn parse_until(s: &str) -> Result<Timestamp> {
    let bad =
        || Error::Usage(format!("cannot read the time {s:?}: use \"YYYY-MM-DD HH:MM:SS\" (local time) or RFC 3339"));
    let (ts, whole) = if let Ok(t) = s.parse::<Timestamp>() {
        (t, t.subsec_nanosecond() == 0)
    } else {
        let dt: jiff::civil::DateTime = s.trim().parse().map_err(|_| bad())?;
        let z = dt.to_zoned(jiff::tz::TimeZone::system()).map_err(|_| bad())?;
        (z.timestamp(), dt.subsec_nanosecond() == 0)
    };
    Ok(if whole { ts.checked_add(jiff::SignedDuration::from_secs(1)).map_err(|_| bad())? } else { ts })
}

/// "YYYY-MM-DD HH:MM:SS" in the machine's time zone: every time a person reads.
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
}
