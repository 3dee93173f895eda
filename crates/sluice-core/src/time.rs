//! Wall-clock helpers: the store keeps times as Unix milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// RFC 3339 rendering of a Unix-milliseconds time, to the second.
pub fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Parses either RFC 3339 (`2026-11-26T10:00:00Z`) or a duration ago (`2h`).
pub fn parse_time_or_ago(s: &str) -> Option<i64> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return t
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as i64);
    }
    humantime::parse_duration(s)
        .ok()
        .map(|d| now_ms() - d.as_millis() as i64)
}
