//! How old a response already is when it arrives (RFC 9111 §4.2.3).
//!
//! ```text
//! apparent_age          = max(0, response_time - date_value)
//! corrected_age_value   = age_value + response_delay
//! corrected_initial_age = max(apparent_age, corrected_age_value)
//! ```
//!
//! A stored object's `epoch` is `response_time - corrected_initial_age`, so
//! `current_age = now - epoch` (what `Age` says on a hit) and it is fresh
//! while `current_age < freshness_lifetime`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// The largest delta-seconds a cache keeps (RFC 9111 §1.2.2): bigger
/// values, and sums that would pass it, are this.
pub const MAX_DELTA_SECONDS: u64 = 2_147_483_648;

/// The `Age` field in seconds: the first value when it is a non-negative
/// integer (clamped to [`MAX_DELTA_SECONDS`]); anything else is ignored (0).
pub fn age_value(headers: &HeaderMap) -> u64 {
    let Some(v) = headers.get(http::header::AGE).and_then(|v| v.to_str().ok()) else {
        return 0;
    };
    let v = v.split(',').next().unwrap_or_default().trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    // All digits: only overflow can fail, and that is "very large".
    v.parse::<u64>()
        .unwrap_or(MAX_DELTA_SECONDS)
        .min(MAX_DELTA_SECONDS)
}

/// The `Date` field, if it is a valid HTTP-date (RFC 9110 §5.6.7).
pub fn date_value(headers: &HeaderMap) -> Option<SystemTime> {
    let v = headers.get(http::header::DATE)?.to_str().ok()?;
    httpdate::parse_http_date(v.trim()).ok()
}

/// `corrected_initial_age` of a response received at `response_time`
/// whose request went out `response_delay` earlier.
pub fn corrected_initial_age(
    headers: &HeaderMap,
    response_time: SystemTime,
    response_delay: Duration,
) -> Duration {
    let apparent = date_value(headers)
        .and_then(|d| response_time.duration_since(d).ok())
        .unwrap_or_default();
    let corrected_age_value =
        Duration::from_secs(age_value(headers)).saturating_add(response_delay);
    apparent
        .max(corrected_age_value)
        .min(Duration::from_secs(MAX_DELTA_SECONDS))
}

/// `response_time - age`, or the Unix epoch when that is earlier.
pub fn epoch(response_time: SystemTime, age: Duration) -> SystemTime {
    response_time
        .checked_sub(age)
        .filter(|t| *t >= SystemTime::UNIX_EPOCH)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn age_values_that_are_not_non_negative_integers_are_ignored() {
        for (v, want) in [
            ("7200", 7200),
            (" 12 ", 12),
            ("0", 0),
            ("-5", 0),
            ("1.5", 0),
            ("abc", 0),
            ("", 0),
            ("+3", 0),
            ("0x10", 0),
            ("99999999999999999999999999", MAX_DELTA_SECONDS),
            ("4294967296", MAX_DELTA_SECONDS),
            ("5, 9", 5),
        ] {
            assert_eq!(age_value(&headers(&[("age", v)])), want, "Age: {v:?}");
        }
        assert_eq!(age_value(&headers(&[])), 0);
    }

    #[test]
    fn corrected_initial_age_is_the_larger_of_apparent_and_reported() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let date = httpdate::fmt_http_date(now - Duration::from_secs(100));
        let h = headers(&[("date", &date), ("age", "30")]);
        assert_eq!(
            corrected_initial_age(&h, now, Duration::from_secs(2)),
            Duration::from_secs(100)
        );
        let h = headers(&[("date", &date), ("age", "300")]);
        assert_eq!(
            corrected_initial_age(&h, now, Duration::from_secs(2)),
            Duration::from_secs(302)
        );
        // A Date from the future (clock skew) counts as no apparent age.
        let future = httpdate::fmt_http_date(now + Duration::from_secs(50));
        let h = headers(&[("date", &future)]);
        assert_eq!(
            corrected_initial_age(&h, now, Duration::ZERO),
            Duration::ZERO
        );
        // Garbage Date is ignored; a huge Age is clamped, never overflows.
        let h = headers(&[("date", "yesterday"), ("age", "18446744073709551615")]);
        assert_eq!(
            corrected_initial_age(&h, now, Duration::from_secs(u64::MAX)),
            Duration::from_secs(MAX_DELTA_SECONDS)
        );
        assert_eq!(
            epoch(now, Duration::from_secs(u64::MAX / 4)),
            SystemTime::UNIX_EPOCH
        );
    }
}
