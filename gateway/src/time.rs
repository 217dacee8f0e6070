//! RFC 3339 rendering of the engine's nanosecond timestamps, without a calendar dependency.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// `2026-11-22T06:55:50.123456789Z` for a timestamp in nanoseconds since the Unix epoch.
pub fn rfc3339(at: Timestamp) -> String {
    let seconds = at.0 / 1_000_000_000;
    let nanos = at.0 % 1_000_000_000;
    let days = seconds / 86_400;
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
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

/// Gregorian date of a count of days since 1970-01-01 (the proleptic calendar algorithm that counts
/// in 400-year eras of 146 097 days, with years starting on 1 March so leap days fall last).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
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

    #[test]
    fn renders_known_instants() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29 (a leap day in a year divisible by 400) 12:34:56.000000007
        assert_eq!(rfc3339(Timestamp(951_827_696_000_000_007)), "2000-02-29T12:34:56.000000007Z");
        assert_eq!(rfc3339(Timestamp(1_795_330_550_000_000_000)), "2026-11-22T06:55:50.000000000Z");
    }
}
