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

/// The `Age` header in seconds; an invalid one is ignored (RFC 9111 section 5.1). Several
/// lines: the first valid one.
pub(crate) fn age(headers: &HeaderMap) -> Option<u64> {
    headers.get_all(::http::header::AGE).iter().find_map(|v| {
        match Delta::parse(Some(v.as_bytes().trim_ascii())) {
            Delta::Secs(s) => Some(s),
            Delta::Invalid => None,
        }
    })
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
    Some(
        first
            .to_str()
            .ok()
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
            .ok_or(()),
    )
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
pub(crate) fn vary_value(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
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
                &::http::header::ACCEPT_ENCODING
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
        assert_eq!(age(&headers(&[("age", b"\xe9"), ("age", b" 7 ")])), Some(7));
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
        assert_eq!(age(&h), Some(7));
        assert_eq!(date(&h, ::http::header::LAST_MODIFIED), None);
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
                        let _ = vary_value(&v, n);
                    }
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
