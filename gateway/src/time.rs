//! RFC 3339 rendering of the engine's nanosecond timestamps, without a calendar dependency.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The one RFC 3339 renderer, shared with the journal tools and the order projection.
pub use surge_engine::time::{parse_rfc3339, rfc3339};
use surge_engine::Timestamp;

/// Now, as nanoseconds since the Unix epoch (the engine's timestamp unit).
pub fn now() -> Timestamp {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// Now, in RFC 3339.
pub fn now_rfc3339() -> String {
    rfc3339(now())
}

/// RFC 3339 of a Unix time in seconds.
pub fn rfc3339_from_unix(seconds: u64) -> String {
    rfc3339(Timestamp(seconds.saturating_mul(1_000_000_000)))
}

/// Parses `500ms`, `2s`, `10m`, `1h` as the command line writes durations (API.md).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("`{text}` does not start with a number"))?;
    let factor = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        _ => return Err(format!("`{text}`: the unit must be ms, s, m or h")),
    };
    number
        .checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_the_units_of_api_md() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }
}
