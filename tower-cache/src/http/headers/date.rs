//! HTTP dates in the three forms and the lenient spellings servers send.

use std::time::{Duration, SystemTime};

use ::http::header::{AsHeaderName, HeaderMap};

/// An HTTP date header; `None` if absent, `Some(Err(()))` if present and invalid (a
/// value that is not ASCII is invalid, never skipped: an invalid `Expires` is in the
/// past).
pub(crate) fn date<K: AsHeaderName>(
    headers: &HeaderMap,
    name: K,
) -> Option<Result<SystemTime, ()>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        // Two lines for a single-valued date: invalid.
        return Some(Err(()));
    }
    Some(parse_http_date(first.as_bytes(), SystemTime::now()).ok_or(()))
}

pub(super) const WEEKDAYS: [&[u8]; 7] = [
    b"monday",
    b"tuesday",
    b"wednesday",
    b"thursday",
    b"friday",
    b"saturday",
    b"sunday",
];
pub(super) const MONTHS: [&[u8]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

/// An HTTP-date (RFC 9110 section 5.6.7) in any of its three forms, IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and
/// asctime (`Sun Nov  6 08:49:37 1994`), read as the RFC asks recipients to: robustly.
/// Names in any case; the weekday may be missing, short or long (and is not checked
/// against the date); the zone `GMT`, `UTC`, `UT`, `Z` or a numeric offset (`+0100`, as
/// in RFC 5322 dates), or none (GMT); a two-digit year is in the century that puts it
/// at most 50 years after `now` (section 5.6.7). Years 1 to 9999. `None` for anything
/// else: a field that cannot be read as a date is invalid, never guessed.
pub(crate) fn parse_http_date(value: &[u8], now: SystemTime) -> Option<SystemTime> {
    let mut day = None;
    let mut month = None;
    let mut year: Option<(u64, usize)> = None;
    let mut time = None;
    let mut offset: Option<i64> = None;
    let mut first = true;
    let words = value
        .split(|&b| b == b' ' || b == b'\t' || b == b',')
        .filter(|w| !w.is_empty());
    let mut parts: Vec<&[u8]> = Vec::with_capacity(8);
    for word in words {
        // `06-Nov-94` (RFC 850) is three parts; a zone such as `-0500` is one.
        if word.contains(&b'-') && word.first() != Some(&b'-') {
            parts.extend(word.split(|&b| b == b'-'));
        } else {
            parts.push(word);
        }
        if parts.len() > 8 {
            return None;
        }
    }
    for part in parts {
        let lower = part.to_ascii_lowercase();
        let is_first = std::mem::replace(&mut first, false);
        if part.iter().all(u8::is_ascii_digit) {
            // The first number is the day (IMF-fixdate, RFC 850 and asctime alike), the
            // second the year.
            if day.is_none() && part.len() <= 2 {
                day = Some(digits(part)?);
            } else if year.is_none() && (2..=4).contains(&part.len()) {
                year = Some((digits(part)?, part.len()));
            } else {
                return None;
            }
        } else if part.contains(&b':') {
            if time.is_some() {
                return None;
            }
            let mut hms = part.split(|&b| b == b':');
            let h = digits(hms.next()?)?;
            let m = digits(hms.next()?)?;
            let s = match hms.next() {
                Some(s) => digits(s)?,
                None => 0,
            };
            if hms.next().is_some() || h > 23 || m > 59 || s > 60 {
                return None;
            }
            // A leap second is read as the second before it.
            time = Some(h * 3600 + m * 60 + s.min(59));
        } else if let Some(m) = MONTHS
            .iter()
            .position(|m| lower.as_slice() == *m || is_full_month(&lower, m))
        {
            if month.replace(m as u64 + 1).is_some() {
                return None;
            }
        } else if is_first
            && WEEKDAYS
                .iter()
                .any(|d| lower.as_slice() == *d || lower.as_slice() == &d[..3])
        {
        } else if matches!(lower.as_slice(), b"gmt" | b"utc" | b"ut" | b"z") {
            if offset.replace(0).is_some() {
                return None;
            }
        } else if let [sign @ (b'+' | b'-'), zone @ ..] = part {
            if zone.len() != 4 || offset.is_some() {
                return None;
            }
            let (h, m) = (digits(&zone[..2])?, digits(&zone[2..])?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = (h * 3600 + m * 60) as i64;
            offset = Some(if *sign == b'-' { -secs } else { secs });
        } else {
            return None;
        }
    }
    let (day, month, (year, year_digits), time) = (day?, month?, year?, time?);
    let year = match year_digits {
        2 => {
            // RFC 9110 section 5.6.7: a year that would be more than 50 years in the
            // future is in the century before.
            let this_year = civil_year(now);
            let candidate = this_year - this_year % 100 + year;
            if candidate > this_year + 50 {
                candidate - 100
            } else {
                candidate
            }
        }
        // RFC 5322's obsolete three-digit years count from 1900.
        3 => 1900 + year,
        _ => year,
    };
    if !(1..=9999).contains(&year) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year as i64, month, day);
    let secs = days * 86_400 + time as i64 - offset.unwrap_or(0);
    if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

pub(super) fn is_full_month(lower: &[u8], short: &[u8]) -> bool {
    const FULL: [&[u8]; 12] = [
        b"january",
        b"february",
        b"march",
        b"april",
        b"may",
        b"june",
        b"july",
        b"august",
        b"september",
        b"october",
        b"november",
        b"december",
    ];
    FULL.iter().any(|f| f.starts_with(short) && lower == *f)
}

/// A run of at most four ASCII digits as a number.
pub(super) fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 4 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

pub(super) fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

pub(super) fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar (Howard
/// Hinnant's `days_from_civil`).
pub(super) fn days_from_civil(year: i64, month: u64, day: u64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The Gregorian year `t` falls in (UTC).
pub(super) fn civil_year(t: SystemTime) -> u64 {
    let days = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Hinnant's `civil_from_days`, the year only.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2)) as u64
}
