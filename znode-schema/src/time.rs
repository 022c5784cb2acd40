//! Timestamps in payloads: RFC 3339, UTC, whole seconds (`2026-11-22T10:00:00Z`).

use std::time::SystemTime;

/// The current time as an RFC 3339 string.
pub fn now() -> String {
    format(SystemTime::now())
}

/// Formats a time as an RFC 3339 string with whole seconds.
pub fn format(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses an RFC 3339 timestamp; `None` when it is not one.
pub fn parse(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let s = format(t);
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(parse(&s), Some(t));
        assert_eq!(parse("yesterday"), None);
    }
}
