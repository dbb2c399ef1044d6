//! RFC 3339 time stamps: the one writer and the one parser of every time
//! column (`window_start`, `first_seen`, ... of the CSV contract, the JSON
//! outputs, the `logs` summary), with the calendar arithmetic of `jiff`.
//!
//! Written form: UTC with microseconds, `2026-11-22T03:45:17.250000Z`, and
//! no fraction when it is zero, `2026-11-22T03:45:17Z`: a syslog stamp of
//! whole seconds is not given a precision it does not have. (Before this
//! module, live CSVs always wrote `.000000`; a live time falls on a whole
//! second once in a million.)
//! Read form: any RFC 3339 stamp (`Z` or an offset, any fraction), and the
//! same without an offset (`2026-11-22T03:45:17`, `2026-11-22 03:45:17`),
//! taken as UTC.

use std::time::SystemTime;

use jiff::{Timestamp, civil::DateTime, tz::Offset};

/// A wall-clock time as RFC 3339 UTC, microseconds (truncated) when not
/// zero. Times outside the years 1 to 9999 are clamped to them.
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    let us = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |b| {
            -b - i64::from(before.duration().subsec_nanos() % 1000 != 0)
        }),
    };
    rfc3339_us(us)
}

/// Microseconds since the epoch (UTC) as [`rfc3339`] writes them.
#[must_use]
pub fn rfc3339_us(us: i64) -> String {
    let ts = Timestamp::from_microsecond(us).unwrap_or(if us < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    if ts.subsec_microsecond() == 0 {
        format!("{ts:.0}")
    } else {
        format!("{ts:.6}")
    }
}

/// Parse a time column: RFC 3339, or a civil date and time without an
/// offset (taken as UTC). `None` when it is neither.
#[must_use]
pub fn parse(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let ts = s.parse::<Timestamp>().ok().or_else(|| {
        let civil: DateTime = s.parse().ok()?;
        Offset::UTC.to_timestamp(civil).ok()
    })?;
    Some(SystemTime::from(ts))
}

/// A civil date and time in UTC (month 1 to 12; second 60, a leap second,
/// counts as the next minute) as microseconds since the epoch. `None` for a
/// date that does not exist (February 30) or a year outside 1 to 9999.
#[must_use]
pub fn civil_us(
    year: i32,
    month: u32,
    day: u32,
    (hour, minute, second): (u32, u32, u32),
    micros: u32,
) -> Option<i64> {
    let small = |v: u32| i8::try_from(v).ok();
    let leap = second == 60;
    let civil = DateTime::new(
        i16::try_from(year).ok().filter(|y| *y >= 1)?,
        small(month)?,
        small(day)?,
        small(hour)?,
        small(minute)?,
        small(if leap { 59 } else { second })?,
        i32::try_from(micros).ok()?.checked_mul(1000)?,
    )
    .ok()?;
    let us = Offset::UTC.to_timestamp(civil).ok()?.as_microsecond();
    Some(if leap { us + 1_000_000 } else { us })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn writes_microseconds_in_utc_and_no_zero_fraction() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123456Z");
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_795_000_000, 500_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.500000Z");
        // Below a microsecond: truncated, so no fraction.
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_795_000_000, 999);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        let before = SystemTime::UNIX_EPOCH - Duration::from_micros(1);
        assert_eq!(rfc3339(before), "1969-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_us(-1), "1969-12-31T23:59:59.999999Z");
        assert!(
            rfc3339_us(i64::MAX).starts_with("9999-12-"),
            "clamped to jiff's last time"
        );
        assert_eq!(rfc3339_us(951_825_600_000_000), "2000-02-29T12:00:00Z");
        assert_eq!(
            rfc3339_us(951_825_600_000_007),
            "2000-02-29T12:00:00.000007Z"
        );
    }

    #[test]
    fn parses_what_it_writes_and_common_variants() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_000);
        assert_eq!(parse(&rfc3339(t)), Some(t));
        let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for s in [
            "2026-11-18T11:06:40Z",
            "2026-11-18T11:06:40.000000Z",
            " 2026-11-18T11:06:40Z\n",
            "2026-11-18T12:06:40+01:00",
            "2026-11-18T11:06:40",
            "2026-11-18 11:06:40",
        ] {
            assert_eq!(parse(s), Some(whole), "{s:?}");
        }
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn civil_dates_to_microseconds() {
        assert_eq!(civil_us(1970, 1, 1, (0, 0, 0), 0), Some(0));
        assert_eq!(
            civil_us(2000, 2, 29, (12, 0, 0), 5),
            Some(951_825_600_000_005)
        );
        assert_eq!(
            civil_us(2016, 12, 31, (23, 59, 60), 0),
            civil_us(2017, 1, 1, (0, 0, 0), 0),
            "leap second"
        );
        assert_eq!(civil_us(2026, 2, 30, (0, 0, 0), 0), None);
        assert_eq!(civil_us(2026, 0, 1, (0, 0, 0), 0), None);
        assert_eq!(civil_us(0, 1, 1, (0, 0, 0), 0), None);
        assert_eq!(civil_us(10_000, 1, 1, (0, 0, 0), 0), None);
    }
}
