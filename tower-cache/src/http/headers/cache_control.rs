//! `Cache-Control` (and targeted fields) as structured-field dictionaries or directive
//! lists, and delta-seconds.

use ::http::header::{HeaderMap, HeaderName};

use super::is_tchar;

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
    pub(super) fn parse(v: Option<&[u8]>) -> Delta {
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
pub(super) enum SfValue {
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
pub(super) fn sf_dictionary(mut s: &[u8]) -> Option<Vec<(&[u8], SfValue)>> {
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

pub(super) fn sf_key<'a>(s: &mut &'a [u8]) -> Option<&'a [u8]> {
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

pub(super) fn sf_parameters(s: &mut &[u8]) -> Option<()> {
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

pub(super) fn sf_inner_list(s: &mut &[u8]) -> Option<()> {
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

pub(super) fn sf_bare_item(s: &mut &[u8]) -> Option<SfValue> {
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
pub(super) fn directives(line: &[u8]) -> Option<Vec<Directive<'_>>> {
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
pub(super) fn quoted_end(s: &[u8]) -> Option<usize> {
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
