//! Parsing the header fields the HTTP cache reads: `Cache-Control`, `Pragma`, `Age`,
//! dates, `Vary`, entity tags, `Connection`.
//!
//! Every parser takes arbitrary bytes and never panics. Where the RFCs leave room for
//! malformed or conflicting input, the choice made is the one that can only make the
//! cache store or serve *less*:
//!
//! - an unparsable or negative `max-age` / `s-maxage` makes the response stale
//!   (RFC 9111 section 4.2.1 allows treating conflicting values as stale);
//! - a duplicated directive with different values: the response is treated as stale;
//! - a qualified `private="..."` or `no-cache="..."` is treated as the unqualified one
//!   (RFC 9111 sections 5.2.2.4 and 5.2.2.7 let a cache do so);
//! - an invalid `Expires` (including "0") is a time in the past (RFC 9111 section 5.3);
//! - an invalid `Age` is ignored (RFC 9111 section 5.1);
//! - delta-seconds past 2^31 are 2^31 (RFC 9111 section 1.2.2).

use std::time::{Duration, SystemTime};

use ::http::header::{AsHeaderName, HeaderMap, HeaderName};

/// The largest delta-seconds value (RFC 9111 section 1.2.2).
pub(crate) const DELTA_MAX: u64 = 1 << 31;

/// A delta-seconds value as a directive gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delta {
    Secs(u64),
    /// Present but not a valid number (or given twice with different values).
    Invalid,
}

impl Delta {
    fn parse(v: Option<&[u8]>) -> Delta {
        let Some(v) = v else { return Delta::Invalid };
        let v = v
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(v);
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return Delta::Invalid;
        }
        // Saturate: "the cache MUST consider the value to be 2147483648". Digits only,
        // so the text is ASCII.
        Delta::Secs(
            std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(DELTA_MAX, |n| n.min(DELTA_MAX)),
        )
    }

    /// The value, if valid.
    pub(crate) fn secs(self) -> Option<u64> {
        match self {
            Delta::Secs(s) => Some(s),
            Delta::Invalid => None,
        }
    }

    /// The value, with an invalid one read as `invalid`.
    pub(crate) fn or(self, invalid: u64) -> u64 {
        match self {
            Delta::Secs(s) => s,
            Delta::Invalid => invalid,
        }
    }
}

/// The `Cache-Control` directives the cache acts on, request and response alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) private: bool,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) only_if_cached: bool,
    pub(crate) max_age: Option<Delta>,
    pub(crate) s_maxage: Option<Delta>,
    /// `max-stale` without a value accepts any staleness: `Some(Secs(DELTA_MAX))`.
    pub(crate) max_stale: Option<Delta>,
    pub(crate) min_fresh: Option<Delta>,
    pub(crate) stale_while_revalidate: Option<Delta>,
    pub(crate) stale_if_error: Option<Delta>,
    /// `must-understand` (RFC 9111 section 5.2.2.3): store only with a status the cache
    /// understands, and then regardless of `no-store`.
    pub(crate) must_understand: bool,
    /// A field line that is not a valid directive list: nothing it says can be known
    /// (it may have held a `private` or a `no-store`), so the message is neither stored
    /// nor answered from the cache.
    pub(crate) malformed: bool,
}

impl CacheControl {
    /// Parses every `Cache-Control` field line of `headers`, as bytes (RFC 9110 section
    /// 5.5: a field value may hold obs-text, which is no reason to skip the line).
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut cc = CacheControl::default();
        for line in headers.get_all(::http::header::CACHE_CONTROL) {
            let Some(list) = directives(line.as_bytes()) else {
                cc.malformed = true;
                continue;
            };
            for (name, value) in list {
                let set = |slot: &mut Option<Delta>, d: Delta| {
                    *slot = match *slot {
                        // A directive given twice with different values: distrust both.
                        Some(old) if old != d => Some(Delta::Invalid),
                        _ => Some(d),
                    };
                };
                match name.to_ascii_lowercase().as_slice() {
                    b"no-store" => cc.no_store = true,
                    b"no-cache" => cc.no_cache = true,
                    b"private" => cc.private = true,
                    b"public" => cc.public = true,
                    b"must-revalidate" => cc.must_revalidate = true,
                    b"proxy-revalidate" => cc.proxy_revalidate = true,
                    b"only-if-cached" => cc.only_if_cached = true,
                    b"must-understand" => cc.must_understand = true,
                    b"max-age" => set(&mut cc.max_age, Delta::parse(value)),
                    b"s-maxage" => set(&mut cc.s_maxage, Delta::parse(value)),
                    b"max-stale" => set(
                        &mut cc.max_stale,
                        match value {
                            None => Delta::Secs(DELTA_MAX),
                            v => Delta::parse(v),
                        },
                    ),
                    b"min-fresh" => set(&mut cc.min_fresh, Delta::parse(value)),
                    b"stale-while-revalidate" => {
                        set(&mut cc.stale_while_revalidate, Delta::parse(value))
                    }
                    b"stale-if-error" => set(&mut cc.stale_if_error, Delta::parse(value)),
                    _ => {}
                }
            }
        }
        cc
    }
}

/// A targeted cache-control field's member value (RFC 9213 section 2.2: the field is a
/// Structured Fields Dictionary, RFC 8941 section 3.2), as far as the cache reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SfValue {
    /// A bare key, or `?1`.
    True,
    /// `?0`: the directive is absent.
    False,
    /// A non-negative Integer.
    Count(u64),
    /// Anything else: a negative Integer, a Decimal, a String, a Token, a Byte Sequence
    /// or an Inner List.
    Other,
}

impl CacheControl {
    /// The directives of the targeted field `name` (RFC 9213), or `None` when the field
    /// is absent, empty or not a valid Dictionary: such a field is ignored as if it were
    /// not there (section 2.2). Directives with the `Cache-Control` meaning; where a
    /// member's value is not of the type its directive needs (`max-age="60"`, `max-age=-1`,
    /// `max-age=1.5`), the directive is invalid, which makes the response stale, as an
    /// unparsable `max-age` in `Cache-Control` does. A member given twice: the last one
    /// (RFC 8941 section 4.2.2). Parameters are ignored.
    pub(crate) fn parse_targeted(headers: &HeaderMap, name: &HeaderName) -> Option<Self> {
        let mut lines = headers.get_all(name).iter().peekable();
        lines.peek()?;
        // Field lines are combined with commas (RFC 8941 section 4.2).
        let mut text = Vec::new();
        for line in lines {
            if !text.is_empty() {
                text.extend_from_slice(b", ");
            }
            text.extend_from_slice(line.as_bytes());
        }
        let members = sf_dictionary(text.trim_ascii())?;
        if members.is_empty() {
            return None;
        }
        let mut cc = CacheControl::default();
        for (key, value) in members {
            let flag = value != SfValue::False;
            let delta = match value {
                SfValue::Count(n) => Some(Delta::Secs(n.min(DELTA_MAX))),
                SfValue::False => None,
                _ => Some(Delta::Invalid),
            };
            match key {
                b"no-store" => cc.no_store = flag,
                // A field-name list (a String) is read as the unqualified directive, as in
                // `Cache-Control`.
                b"no-cache" => cc.no_cache = flag,
                b"private" => cc.private = flag,
                b"public" => cc.public = flag,
                b"must-revalidate" => cc.must_revalidate = flag,
                b"proxy-revalidate" => cc.proxy_revalidate = flag,
                b"must-understand" => cc.must_understand = flag,
                b"max-age" => cc.max_age = delta,
                b"s-maxage" => cc.s_maxage = delta,
                b"stale-while-revalidate" => cc.stale_while_revalidate = delta,
                b"stale-if-error" => cc.stale_if_error = delta,
                _ => {}
            }
        }
        Some(cc)
    }
}

/// The members of a Structured Fields Dictionary (RFC 8941 section 4.2.2), keys and
/// values; `None` on any parse error.
fn sf_dictionary(mut s: &[u8]) -> Option<Vec<(&[u8], SfValue)>> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let key = sf_key(&mut s)?;
        let value = if let Some(rest) = s.strip_prefix(b"=") {
            s = rest;
            if s.first() == Some(&b'(') {
                sf_inner_list(&mut s)?;
                SfValue::Other
            } else {
                sf_bare_item(&mut s)?
            }
        } else {
            SfValue::True
        };
        sf_parameters(&mut s)?;
        out.push((key, value));
        s = s.trim_ascii_start();
        if s.is_empty() {
            break;
        }
        s = s.strip_prefix(b",")?.trim_ascii_start();
        if s.is_empty() {
            // A trailing comma.
            return None;
        }
    }
    Some(out)
}

fn sf_key<'a>(s: &mut &'a [u8]) -> Option<&'a [u8]> {
    let first = *s.first()?;
    if !(first.is_ascii_lowercase() || first == b'*') {
        return None;
    }
    let len = s
        .iter()
        .position(|&b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b)))
        .unwrap_or(s.len());
    let (key, rest) = s.split_at(len);
    *s = rest;
    Some(key)
}

fn sf_parameters(s: &mut &[u8]) -> Option<()> {
    while let Some(rest) = s.strip_prefix(b";") {
        *s = rest.trim_ascii_start();
        sf_key(s)?;
        if let Some(rest) = s.strip_prefix(b"=") {
            *s = rest;
            sf_bare_item(s)?;
        }
    }
    Some(())
}

fn sf_inner_list(s: &mut &[u8]) -> Option<()> {
    *s = s.strip_prefix(b"(")?;
    loop {
        *s = s.trim_ascii_start();
        if let Some(rest) = s.strip_prefix(b")") {
            *s = rest;
            return sf_parameters(s);
        }
        sf_bare_item(s)?;
        sf_parameters(s)?;
        if !matches!(s.first(), Some(b' ' | b')')) {
            return None;
        }
    }
}

fn sf_bare_item(s: &mut &[u8]) -> Option<SfValue> {
    let take = |s: &mut &[u8], n: usize| *s = &s[n..];
    match *s.first()? {
        b'-' | b'0'..=b'9' => {
            let negative = s[0] == b'-';
            let digits = &s[usize::from(negative)..];
            let int_len = digits
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(digits.len());
            if int_len == 0 {
                return None;
            }
            if digits.get(int_len) == Some(&b'.') {
                let frac = &digits[int_len + 1..];
                let frac_len = frac
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .unwrap_or(frac.len());
                if int_len > 12 || !(1..=3).contains(&frac_len) {
                    return None;
                }
                take(s, usize::from(negative) + int_len + 1 + frac_len);
                return Some(SfValue::Other);
            }
            if int_len > 15 {
                return None;
            }
            let n = digits[..int_len]
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            take(s, usize::from(negative) + int_len);
            Some(if negative {
                SfValue::Other
            } else {
                SfValue::Count(n)
            })
        }
        b'"' => {
            let mut i = 1;
            loop {
                match *s.get(i)? {
                    b'"' => break,
                    b'\\' => match *s.get(i + 1)? {
                        b'"' | b'\\' => i += 2,
                        _ => return None,
                    },
                    0x20..=0x7e => i += 1,
                    _ => return None,
                }
            }
            take(s, i + 1);
            Some(SfValue::Other)
        }
        b'?' => {
            let v = match s.get(1)? {
                b'0' => SfValue::False,
                b'1' => SfValue::True,
                _ => return None,
            };
            take(s, 2);
            Some(v)
        }
        b':' => {
            let body = &s[1..];
            let len = body
                .iter()
                .position(|&b| !(b.is_ascii_alphanumeric() || b"+/=".contains(&b)))
                .unwrap_or(body.len());
            if body.get(len) != Some(&b':') {
                return None;
            }
            take(s, len + 2);
            Some(SfValue::Other)
        }
        b if b.is_ascii_alphabetic() || b == b'*' => {
            let len = s
                .iter()
                .position(|&b| !(is_tchar(b) || b == b':' || b == b'/'))
                .unwrap_or(s.len());
            take(s, len);
            Some(SfValue::Other)
        }
        _ => None,
    }
}

/// A directive's name and value, as bytes.
type Directive<'a> = (&'a [u8], Option<&'a [u8]>);

/// Splits a `Cache-Control` line into `(name, value)` pairs (RFC 9111 section 5.2:
/// `token [ "=" ( token / quoted-string ) ]`, comma-separated, empty elements allowed); a
/// quoted value may hold commas, escapes and obs-text, and is given without its quotes.
/// `None` when the line is not such a list.
fn directives(line: &[u8]) -> Option<Vec<Directive<'_>>> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_ascii_start();
        let Some(&first) = rest.first() else {
            return Some(out);
        };
        if first == b',' {
            rest = &rest[1..];
            continue;
        }
        let name_len = rest
            .iter()
            .position(|&b| !is_tchar(b))
            .unwrap_or(rest.len());
        if name_len == 0 {
            return None;
        }
        let name = &rest[..name_len];
        rest = rest[name_len..].trim_ascii_start();
        let mut value = None;
        if let Some(after) = rest.strip_prefix(b"=") {
            let after = after.trim_ascii_start();
            if after.first() == Some(&b'"') {
                let end = quoted_end(after)?;
                value = Some(&after[1..end - 1]);
                rest = &after[end..];
            } else {
                let len = after
                    .iter()
                    .position(|&b| !is_tchar(b))
                    .unwrap_or(after.len());
                if len == 0 {
                    return None;
                }
                value = Some(&after[..len]);
                rest = &after[len..];
            }
        }
        out.push((name, value));
        rest = rest.trim_ascii_start();
        match rest.first() {
            None => return Some(out),
            Some(b',') => rest = &rest[1..],
            Some(_) => return None,
        }
    }
}

/// The length of the quoted-string `s` starts with, quotes included (RFC 9110 section
/// 5.6.4); `None` when it is not closed or holds a byte a quoted-string may not.
fn quoted_end(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let next = *s.get(i + 1)?;
                if !(next == b'\t' || next == b' ' || next.is_ascii_graphic() || next >= 0x80) {
                    return None;
                }
                i += 2;
            }
            b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
    None
}

pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `Pragma: no-cache`, which a request without `Cache-Control` treats as `no-cache`
/// (RFC 9111 section 5.4).
pub(crate) fn pragma_no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(::http::header::PRAGMA)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
}

/// The `Age` header in seconds, as RFC 9111 section 5.1 says: a list (`Age: 10, 20`, or
/// several lines) is read as its first member, the others discarded; a first member
/// that is not a non-negative integer (`-5`, `1.5`, `+5`, `10s`, empty) makes the whole
/// field ignored. A value past 2^31 is 2^31 (section 1.2.2): the response is stale.
pub(crate) fn age(headers: &HeaderMap) -> Option<u64> {
    let first = headers.get(::http::header::AGE)?.as_bytes();
    let member = first.split(|&b| b == b',').next().unwrap_or(first);
    let member = member.trim_ascii();
    if member.is_empty() || !member.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Delta::parse(Some(member)).secs()
}

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

const WEEKDAYS: [&[u8]; 7] = [
    b"monday",
    b"tuesday",
    b"wednesday",
    b"thursday",
    b"friday",
    b"saturday",
    b"sunday",
];
const MONTHS: [&[u8]; 12] = [
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

fn is_full_month(lower: &[u8], short: &[u8]) -> bool {
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
fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 4 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u64, day: u64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The Gregorian year `t` falls in (UTC).
fn civil_year(t: SystemTime) -> u64 {
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

/// The header names a `Vary` lists, lower-cased; `None` for `Vary: *`, and for a line
/// that cannot be read (never skipped: a name it hid could be one that keeps users
/// apart).
pub(crate) fn vary(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for line in headers.get_all(::http::header::VARY) {
        let Ok(line) = line.to_str() else {
            // Unreadable: as unpredictable as `*`.
            return None;
        };
        for name in line.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) if !names.contains(&n) => names.push(n),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

/// A request's value of a header named by `Vary`, normalised: every field line, each list
/// element trimmed, joined by ", ". Absent is distinct from empty.
///
/// With `negotiation`, `Accept-Encoding` and `Accept-Language` are normalised further
/// into one spelling per meaning ([`normalized_accept`]), so that requests that accept
/// the same thing share a variant.
pub(crate) fn vary_value(
    headers: &HeaderMap,
    name: &HeaderName,
    negotiation: bool,
) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    if negotiation
        && (name == ::http::header::ACCEPT_ENCODING || name == ::http::header::ACCEPT_LANGUAGE)
    {
        let encoding = name == ::http::header::ACCEPT_ENCODING;
        if let Some(v) =
            normalized_accept(headers.get_all(name).iter().map(|v| v.as_bytes()), encoding)
        {
            return Some(v);
        }
    }
    let mut out = Vec::new();
    for v in values {
        for part in v.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(part);
        }
    }
    Some(out)
}

/// One spelling per meaning of an `Accept-Encoding` (`encoding`) or `Accept-Language`
/// list (RFC 9110 sections 12.5.3 and 12.5.4), or `None` when the list is not one of
/// `token [ ";" "q=" qvalue ]` elements (it is then compared as it is, trimmed):
///
/// - names lower-cased (codings and language tags are case-insensitive), whitespace
///   dropped, elements sorted by name (preference is the q-value's, not the order's);
/// - `q=1` (however written) dropped, other q-values written shortest (`q=0.50` is
///   `q=0.5`);
/// - an element with `q=0` ("not acceptable") dropped, as if not listed, unless the list
///   has a `*` (which the `q=0` then excepts) or the element is `identity` or `*`
///   (whose exclusion an absent element does not say); a list left empty stays present
///   and empty (for `Accept-Encoding`, "identity only", as `gzip;q=0` meant);
/// - a name listed twice: not normalised (its meaning is not defined).
pub(crate) fn normalized_accept<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
    encoding: bool,
) -> Option<Vec<u8>> {
    let mut elements: Vec<(Vec<u8>, u16)> = Vec::new();
    for line in lines {
        for element in line.split(|&b| b == b',') {
            let element = element.trim_ascii();
            if element.is_empty() {
                continue;
            }
            let mut params = element.split(|&b| b == b';');
            let name = params.next()?.trim_ascii().to_ascii_lowercase();
            let name_ok = if encoding {
                name.iter().all(|&b| is_tchar(b))
            } else {
                name.iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
            };
            if name.is_empty() || !name_ok {
                return None;
            }
            let mut q = 1000;
            if let Some(param) = params.next() {
                let (key, value) = param.trim_ascii().split_at_checked(2)?;
                if !key.eq_ignore_ascii_case(b"q=") {
                    return None;
                }
                q = qvalue(value)?;
            }
            if params.next().is_some() {
                return None;
            }
            elements.push((name, q));
        }
    }
    // Sorted, a name listed twice is side by side: linear in the list (a client can send
    // thousands of elements).
    elements.sort();
    if elements.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    let wildcard = elements.iter().any(|(n, _)| n == b"*");
    elements.retain(|(n, q)| *q > 0 || wildcard || n == b"*" || (encoding && n == b"identity"));
    let mut out = Vec::new();
    for (name, q) in elements {
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(&name);
        if q < 1000 {
            let text = format!("{:03}", q);
            out.extend_from_slice(b";q=0");
            let digits = text.trim_end_matches('0');
            if !digits.is_empty() {
                out.push(b'.');
                out.extend_from_slice(digits.as_bytes());
            }
        }
    }
    Some(out)
}

/// A qvalue (RFC 9110 section 12.4.2) in thousandths.
fn qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Header fields never stored nor replayed: the hop-by-hop ones (RFC 9110 section 7.6.1),
/// those `Connection` names, and `Proxy-*`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(::http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        ::http::header::CONNECTION,
        ::http::header::TRANSFER_ENCODING,
        ::http::header::TE,
        ::http::header::TRAILER,
        ::http::header::UPGRADE,
        ::http::header::PROXY_AUTHENTICATE,
        ::http::header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// One entity tag of an `ETag`, `If-None-Match` or `If-Match` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntityTag {
    pub(crate) weak: bool,
    pub(crate) opaque: Vec<u8>,
}

impl EntityTag {
    fn parse(s: &[u8]) -> Option<Self> {
        let (weak, rest) = match s {
            [b'W', b'/', rest @ ..] => (true, rest),
            rest => (false, rest),
        };
        let inner = rest.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        if inner.contains(&b'"') {
            return None;
        }
        Some(Self {
            weak,
            opaque: inner.to_vec(),
        })
    }

    /// Weak comparison (RFC 9110 section 8.8.3.2), as `If-None-Match` uses.
    pub(crate) fn weak_eq(&self, other: &EntityTag) -> bool {
        self.opaque == other.opaque
    }
}

/// The response's `ETag`, if exactly one valid one.
pub(crate) fn etag(headers: &HeaderMap) -> Option<EntityTag> {
    let mut values = headers.get_all(::http::header::ETAG).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    EntityTag::parse(first.as_bytes().trim_ascii())
}

/// `If-None-Match`: `Some(None)` for `*`, `Some(Some(tags))` for a list (invalid
/// members skipped), `None` when absent.
pub(crate) fn if_none_match(headers: &HeaderMap) -> Option<Option<Vec<EntityTag>>> {
    let mut values = headers
        .get_all(::http::header::IF_NONE_MATCH)
        .iter()
        .peekable();
    values.peek()?;
    let mut tags = Vec::new();
    for v in values {
        for part in split_etag_list(v.as_bytes()) {
            let part = part.trim_ascii();
            if part == b"*" {
                return Some(None);
            }
            if let Some(t) = EntityTag::parse(part) {
                tags.push(t);
            }
        }
    }
    Some(Some(tags))
}

/// Splits an entity-tag list on commas outside quotes.
fn split_etag_list(b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => {
                out.push(&b[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&b[start..]);
    out
}

/// Seconds between two times, zero when `later` is earlier.
pub(crate) fn secs_between(earlier: SystemTime, later: SystemTime) -> u64 {
    later
        .duration_since(earlier)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::HeaderValue;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn cache_control_directives_parse_with_quotes_case_and_duplicates() {
        let cc = CacheControl::parse(&headers(&[
            (
                "cache-control",
                b"Public, MAX-AGE=60, private=\"set-cookie, x\"",
            ),
            ("cache-control", b"s-maxage=\"30\", must-revalidate"),
        ]));
        assert!(cc.public && cc.private && cc.must_revalidate);
        assert_eq!(cc.max_age, Some(Delta::Secs(60)));
        assert_eq!(cc.s_maxage, Some(Delta::Secs(30)));
        let cc = CacheControl::parse(&headers(&[("cache-control", b"max-age=60, max-age=61")]));
        assert_eq!(
            cc.max_age,
            Some(Delta::Invalid),
            "conflicting duplicates are distrusted"
        );
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            b"max-age=99999999999999999999",
        )]));
        assert_eq!(cc.max_age, Some(Delta::Secs(DELTA_MAX)));
        let cc = CacheControl::parse(&headers(&[("cache-control", b"max-age=-1, max-stale")]));
        assert_eq!(cc.max_age, Some(Delta::Invalid));
        assert_eq!(cc.max_stale, Some(Delta::Secs(DELTA_MAX)));
    }

    #[test]
    fn vary_lists_normalise_and_star_is_none() {
        assert_eq!(
            vary(&headers(&[
                ("vary", b"Accept-Encoding, accept-language"),
                ("vary", b"accept-encoding")
            ]))
            .unwrap()
            .iter()
            .map(HeaderName::as_str)
            .collect::<Vec<_>>(),
            ["accept-encoding", "accept-language"]
        );
        assert!(vary(&headers(&[("vary", b"accept, *")])).is_none());
        assert_eq!(
            vary_value(
                &headers(&[
                    ("accept-encoding", b" gzip ,br"),
                    ("accept-encoding", b"zstd")
                ]),
                &::http::header::ACCEPT_ENCODING,
                false
            ),
            Some(b"gzip, br, zstd".to_vec())
        );
    }

    #[test]
    fn entity_tags_parse_and_compare_weakly() {
        let h = headers(&[("etag", b"W/\"abc\"")]);
        let e = etag(&h).unwrap();
        assert!(e.weak);
        let inm = if_none_match(&headers(&[("if-none-match", b"\"x\", \"abc\"")]))
            .unwrap()
            .unwrap();
        assert!(inm.iter().any(|t| t.weak_eq(&e)));
        assert_eq!(
            if_none_match(&headers(&[("if-none-match", b"*")])),
            Some(None)
        );
        assert!(
            etag(&headers(&[("etag", b"abc")])).is_none(),
            "unquoted is invalid"
        );
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_stripped() {
        let mut h = headers(&[
            ("connection", b"close, x-secret"),
            ("x-secret", b"1"),
            ("keep-alive", b"timeout=5"),
            ("transfer-encoding", b"chunked"),
            ("proxy-authenticate", b"Basic"),
            ("proxy-foo", b"1"),
            ("content-type", b"text/plain"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(
            h.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["content-type"]
        );
    }

    #[test]
    fn field_values_are_parsed_as_bytes_and_obs_text_loses_nothing() {
        // A legal line: obs-text inside a quoted extension value.
        let cc = CacheControl::parse(&headers(&[(
            "cache-control",
            b"private, ext=\"caf\xe9\", max-age=60",
        )]));
        assert!(cc.private && !cc.malformed);
        assert_eq!(cc.max_age, Some(Delta::Secs(60)));
        let cc = CacheControl::parse(&headers(&[("cache-control", b"no-store, x=\"\xe9\"")]));
        assert!(cc.no_store);
        // Not a directive list: malformed, so neither stored nor served.
        for bad in [
            &b"max-age=60, ext=caf\xe9"[..],
            b"max-age=60, ext=\"open",
            b"max-age=60 private",
            b"max-age=, public",
            b"=60",
        ] {
            let cc = CacheControl::parse(&headers(&[("cache-control", bad)]));
            assert!(cc.malformed, "{}", String::from_utf8_lossy(bad));
        }
        // Empty list elements and spaces are legal.
        let cc = CacheControl::parse(&headers(&[("cache-control", b" , public ,, max-age=5 ,")]));
        assert!(cc.public && !cc.malformed);
        assert!(pragma_no_cache(&headers(&[(
            "pragma",
            b"x=\"\xe9\", no-cache"
        )])));
        assert_eq!(age(&headers(&[("age", b" 7 "), ("age", b"\xe9")])), Some(7));
        assert_eq!(age(&headers(&[("age", b"\xe9"), ("age", b" 7 ")])), None);
        let mut h = headers(&[("connection", b"x-secret, caf\xe9"), ("x-secret", b"1")]);
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn dates_ages_and_invalid_values() {
        let h = headers(&[
            ("expires", b"0"),
            ("date", b"Sun, 06 Nov 1994 08:49:37 GMT"),
            ("age", b"abc"),
            ("age", b"7"),
        ]);
        assert_eq!(date(&h, ::http::header::EXPIRES), Some(Err(())));
        assert!(date(&h, ::http::header::DATE).unwrap().is_ok());
        assert_eq!(age(&h), None, "the first member is invalid: ignored");
        assert_eq!(date(&h, ::http::header::LAST_MODIFIED), None);
    }

    #[test]
    fn targeted_fields_are_structured_dictionaries_rfc_9213_section_2_2() {
        let name = HeaderName::from_static("cdn-cache-control");
        let parse =
            |v: &[u8]| CacheControl::parse_targeted(&headers(&[("cdn-cache-control", v)]), &name);
        // (value, max-age, no-store, private): valid fields.
        let valid: &[(&[u8], Option<Delta>, bool, bool)] = &[
            (b"max-age=60", Some(Delta::Secs(60)), false, false),
            (b"no-store", None, true, false),
            (b"private, max-age=60", Some(Delta::Secs(60)), false, true),
            (b"private=\"set-cookie\"", None, false, true),
            (
                b"no-store=?0, max-age=5",
                Some(Delta::Secs(5)),
                false,
                false,
            ),
            (b"no-store=?1", None, true, false),
            (b"max-age=60;p=1;q", Some(Delta::Secs(60)), false, false),
            (
                b"max-age=60, max-age=30",
                Some(Delta::Secs(30)),
                false,
                false,
            ),
            (
                b"max-age=999999999999999",
                Some(Delta::Secs(DELTA_MAX)),
                false,
                false,
            ),
            (b"max-age=\"60\"", Some(Delta::Invalid), false, false),
            (b"max-age=-1", Some(Delta::Invalid), false, false),
            (b"max-age=1.5", Some(Delta::Invalid), false, false),
            (b"max-age=(1 2)", Some(Delta::Invalid), false, false),
            (b"max-age=tok", Some(Delta::Invalid), false, false),
            (b"max-age=:AQID:", Some(Delta::Invalid), false, false),
            (
                b"x-ext=\"a,b\", max-age=1",
                Some(Delta::Secs(1)),
                false,
                false,
            ),
            (b"max-age=1,\tno-store", Some(Delta::Secs(1)), true, false),
        ];
        for (v, max_age, no_store, private) in valid {
            let cc = parse(v).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(v)));
            assert_eq!(
                (cc.max_age, cc.no_store, cc.private),
                (*max_age, *no_store, *private),
                "{}",
                String::from_utf8_lossy(v)
            );
        }
        // Empty or not a Dictionary: ignored as if absent.
        for v in [
            &b""[..],
            b"   ",
            b"Max-Age=60",
            b"max-age=60,",
            b"max-age = 60",
            b"max-age=60 private",
            b"max-age=1234567890123456",
            b"max-age=\"open",
            b"max-age=\"caf\xe9\"",
            b"1max-age=60",
            b"max-age=?2",
        ] {
            assert_eq!(parse(v), None, "{}", String::from_utf8_lossy(v));
        }
        assert_eq!(CacheControl::parse_targeted(&HeaderMap::new(), &name), None);
        // Two lines are one Dictionary.
        let cc = CacheControl::parse_targeted(
            &headers(&[
                ("cdn-cache-control", b"max-age=60"),
                ("cdn-cache-control", b"private"),
            ]),
            &name,
        )
        .unwrap();
        assert!(cc.private && cc.max_age == Some(Delta::Secs(60)));
    }

    #[test]
    fn http_dates_in_every_form_rfc_9110_section_5_6_7() {
        use std::time::UNIX_EPOCH;
        // 2026-12-02: two-digit years up to 76 are this century.
        let now = UNIX_EPOCH + Duration::from_secs(1_796_169_600);
        let at = |s: u64| Some(UNIX_EPOCH + Duration::from_secs(s));
        let cases: &[(&str, Option<SystemTime>)] = &[
            ("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_777)),
            ("Sunday, 06-Nov-94 08:49:37 GMT", at(784_111_777)),
            ("Sun Nov  6 08:49:37 1994", at(784_111_777)),
            // Robust recipients: case, zone names, no weekday, numeric zones.
            ("sun, 06 nov 1994 08:49:37 gmt", at(784_111_777)),
            ("SUN, 06 NOV 1994 08:49:37 GMT", at(784_111_777)),
            ("Sun, 06 Nov 1994 08:49:37 UTC", at(784_111_777)),
            ("06 Nov 1994 08:49:37 GMT", at(784_111_777)),
            ("Sun, 6 Nov 1994 08:49:37 GMT", at(784_111_777)),
            ("Sun, 06 Nov 1994 09:49:37 +0100", at(784_111_777)),
            ("Sun, 06 Nov 1994 03:49:37 -0500", at(784_111_777)),
            ("Sun, 06 November 1994 08:49:37 GMT", at(784_111_777)),
            ("Mon, 06 Nov 1994 08:49:37 GMT", at(784_111_777)),
            ("  Sun, 06 Nov 1994 08:49:37 GMT  ", at(784_111_777)),
            // Two-digit years: more than 50 years ahead is the century before.
            ("Thursday, 01-Jan-70 00:00:00 GMT", at(3_155_760_000)),
            ("Friday, 01-Jan-76 00:00:00 GMT", at(3_345_062_400)),
            ("Friday, 01-Jan-77 00:00:00 GMT", at(220_924_800)),
            ("Friday, 31-Dec-99 23:59:59 GMT", at(946_684_799)),
            ("Saturday, 01-Jan-00 00:00:00 GMT", at(946_684_800)),
            // Past 2038 and far ahead; before 1970.
            ("Tue, 19 Jan 2038 03:14:08 GMT", at(2_147_483_648)),
            ("Fri, 31 Dec 9999 23:59:59 GMT", at(253_402_300_799)),
            ("Thu, 29 Feb 2024 00:00:00 GMT", at(1_709_164_800)),
            ("Thu, 01 Jan 1970 00:00:00 GMT", at(0)),
            ("Sun, 06 Nov 1994 08:49:60 GMT", at(784_111_799)),
            // Invalid.
            ("0", None),
            ("-1", None),
            ("", None),
            ("Sun, 32 Nov 1994 08:49:37 GMT", None),
            ("Wed, 29 Feb 2023 00:00:00 GMT", None),
            ("Sun, 06 Nov 1994 24:00:00 GMT", None),
            ("Sun, 06 Foo 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 GMT", None),
            ("Sun, 06 Nov 08:49:37 GMT", None),
            ("1994-11-06T08:49:37Z", None),
            ("Sun, 06 Nov 1994 08:49:37 GMT GMT", None),
            ("Sun, 06 Nov 1994 08:49:37 EST", None),
            ("Sun, 06 Nov 19945 08:49:37 GMT", None),
            ("Sun, 06 Nov 0000 08:49:37 GMT", None),
            ("GMT, 06 Nov 1994 08:49:37 Sun", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_http_date(text.as_bytes(), now), *want, "{text:?}");
        }
    }

    #[test]
    fn age_values_as_rfc_9111_section_5_1_reads_them() {
        let cases: &[(&[&[u8]], Option<u64>)] = &[
            (&[b"7"], Some(7)),
            (&[b" 7 "], Some(7)),
            (&[b"0"], Some(0)),
            (&[b"10, 20"], Some(10)),
            (&[b"10", b"20"], Some(10)),
            (&[b"-5"], None),
            (&[b"+5"], None),
            (&[b"1.5"], None),
            (&[b"\"7\""], None),
            (&[b"100s"], None),
            (&[b""], None),
            (&[b"abc, 7"], None),
            (&[b"99999999999999999999999"], Some(DELTA_MAX)),
        ];
        for (lines, want) in cases {
            let mut h = HeaderMap::new();
            for l in *lines {
                h.append(::http::header::AGE, HeaderValue::from_bytes(l).unwrap());
            }
            assert_eq!(age(&h), *want, "{lines:?}");
        }
    }

    #[test]
    fn accept_lists_are_normalised_by_meaning() {
        let norm = |v: &str, encoding: bool| {
            normalized_accept(std::iter::once(v.as_bytes()), encoding)
                .map(|b| String::from_utf8(b).unwrap())
        };
        let ae: &[(&str, Option<&str>)] = &[
            ("gzip, deflate, br", Some("br, deflate, gzip")),
            ("br,deflate,gzip", Some("br, deflate, gzip")),
            ("GZIP , Deflate,br", Some("br, deflate, gzip")),
            (
                "gzip;q=1, br;q=1.0, deflate;Q=1.000",
                Some("br, deflate, gzip"),
            ),
            ("gzip;q=0.50", Some("gzip;q=0.5")),
            ("gzip;q=0.125, br;q=0.1", Some("br;q=0.1, gzip;q=0.125")),
            ("gzip ; q=0.5", Some("gzip;q=0.5")),
            ("gzip, br;q=0", Some("gzip")),
            ("gzip;q=0.000", Some("")),
            ("*, gzip;q=0", Some("*, gzip;q=0")),
            ("identity;q=0, gzip", Some("gzip, identity;q=0")),
            ("", Some("")),
            (" , gzip,, ", Some("gzip")),
            ("gzip, gzip;q=0.5", None),
            ("gzip;level=1", None),
            ("gzip;q=2", None),
            ("gzip;q=1.001", None),
            ("gzip;q=0.1234", None),
            ("gzip;q=", None),
            ("gz\u{e9}p", None),
        ];
        for (v, want) in ae {
            assert_eq!(norm(v, true).as_deref(), *want, "accept-encoding {v:?}");
        }
        let al: &[(&str, Option<&str>)] = &[
            ("en-US, fr;q=0.5", Some("en-us, fr;q=0.5")),
            ("fr;q=0.5,EN-us", Some("en-us, fr;q=0.5")),
            ("de;q=0, *", Some("*, de;q=0")),
            ("en_US", None),
        ];
        for (v, want) in al {
            assert_eq!(norm(v, false).as_deref(), *want, "accept-language {v:?}");
        }
    }

    mod arbitrary_bytes {
        use super::*;
        use proptest::prelude::*;

        fn map_of(name: &'static str, lines: &[Vec<u8>]) -> HeaderMap {
            let mut h = HeaderMap::new();
            for l in lines {
                if let Ok(v) = HeaderValue::from_bytes(l) {
                    h.append(name, v);
                }
            }
            h
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn no_header_parser_panics(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..4)) {
                let cc = map_of("cache-control", &lines);
                let _ = CacheControl::parse(&cc);
                let _ = pragma_no_cache(&map_of("pragma", &lines));
                let _ = age(&map_of("age", &lines));
                let _ = date(&map_of("date", &lines), ::http::header::DATE);
                let v = map_of("vary", &lines);
                if let Some(names) = vary(&v) {
                    for n in &names {
                        let _ = vary_value(&v, n, true);
                    }
                }
                let _ = normalized_accept(lines.iter().map(Vec::as_slice), true);
                let _ = normalized_accept(lines.iter().map(Vec::as_slice), false);
                let _ = parse_http_date(&lines.concat(), SystemTime::now());
                for name in ["cdn-cache-control", "cache-control"] {
                    let _ = CacheControl::parse_targeted(&map_of(name, &lines), &HeaderName::from_static(name));
                }
                let _ = etag(&map_of("etag", &lines));
                let _ = if_none_match(&map_of("if-none-match", &lines));
                let mut hop = map_of("connection", &lines);
                strip_hop_by_hop(&mut hop);
            }

            #[test]
            fn cache_control_text_never_panics(text in "[ -~]{0,120}") {
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&text) {
                    h.insert("cache-control", v);
                }
                let cc = CacheControl::parse(&h);
                // A value it read is never past the RFC's ceiling.
                for d in [cc.max_age, cc.s_maxage, cc.max_stale, cc.min_fresh].into_iter().flatten() {
                    prop_assert!(d.or(0) <= DELTA_MAX);
                }
            }

            #[test]
            fn stored_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                let _ = crate::http::entry::decode(&bytes::Bytes::from(bytes));
            }
        }
    }
}
