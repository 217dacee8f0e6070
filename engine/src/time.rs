//! RFC 3339 rendering of the engine's nanosecond timestamps, without a calendar dependency. Not
//! used by the state machine (which never looks at what time it is, only compares stamps); here
//! because every crate that shows an engine timestamp to a person needs the same rendering.

use crate::command::Timestamp;

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

/// The inverse of [`rfc3339`] for what it writes (`YYYY-MM-DDTHH:MM:SS.fffffffffZ`, any number of
/// fraction digits up to nine, or none); `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-');
    let year: u64 = date_parts.next()?.parse().ok()?;
    let month: u64 = date_parts.next()?.parse().ok()?;
    let day: u64 = date_parts.next()?.parse().ok()?;
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock_parts = clock.splitn(3, ':');
    let hour: u64 = clock_parts.next()?.parse().ok()?;
    let minute: u64 = clock_parts.next()?.parse().ok()?;
    let second: u64 = clock_parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
        || fraction.len() > 9
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let nanos: u64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<u64>().ok()? * 10u64.pow(9 - u32::try_from(fraction.len()).ok()?)
    };
    let days = days_from_civil(year, month, day)?;
    let seconds = days.checked_mul(86_400)?.checked_add(hour * 3_600 + minute * 60 + second)?;
    Some(Timestamp(seconds.checked_mul(1_000_000_000)?.checked_add(nanos)?))
}

/// Days since 1970-01-01 of a Gregorian date (the inverse of [`civil_from_days`]); `None` before
/// 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let year = if month <= 2 { year.checked_sub(1)? } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).checked_sub(719_468)
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
    fn renders_known_instants() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29 (a leap day in a year divisible by 400) 12:34:56.000000007
        assert_eq!(rfc3339(Timestamp(951_827_696_000_000_007)), "2000-02-29T12:34:56.000000007Z");
        assert_eq!(rfc3339(Timestamp(1_795_330_550_000_000_000)), "2026-11-22T06:55:50.000000000Z");
    }

    #[test]
    fn parses_what_it_renders() {
        for nanos in
            [0, 951_827_696_000_000_007, 1_795_330_550_123_456_789, 4_102_444_800_000_000_000]
        {
            assert_eq!(parse_rfc3339(&rfc3339(Timestamp(nanos))), Some(Timestamp(nanos)));
        }
        assert_eq!(
            parse_rfc3339("2026-11-22T06:55:50Z"),
            Some(Timestamp(1_795_330_550_000_000_000))
        );
        assert_eq!(
            parse_rfc3339("2026-11-22T06:55:50.5Z"),
            Some(Timestamp(1_795_330_550_500_000_000))
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T06:55:50",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
