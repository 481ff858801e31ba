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

use ::http::header::{AsHeaderName, HeaderMap, HeaderName, HeaderValue};

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
    fn parse(v: Option<&str>) -> Delta {
        let Some(v) = v else { return Delta::Invalid };
        let v = v.trim_matches('"');
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Delta::Invalid;
        }
        // Saturate: "the cache MUST consider the value to be 2147483648".
        Delta::Secs(v.parse::<u64>().map_or(DELTA_MAX, |n| n.min(DELTA_MAX)))
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
}

impl CacheControl {
    /// Parses every `Cache-Control` field line of `headers`.
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut cc = CacheControl::default();
        for line in headers.get_all(::http::header::CACHE_CONTROL) {
            let Ok(line) = std::str::from_utf8(line.as_bytes()) else {
                continue;
            };
            for (name, value) in directives(line) {
                let set = |slot: &mut Option<Delta>, d: Delta| {
                    *slot = match *slot {
                        // A directive given twice with different values: distrust both.
                        Some(old) if old != d => Some(Delta::Invalid),
                        _ => Some(d),
                    };
                };
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" => cc.must_revalidate = true,
                    "proxy-revalidate" => cc.proxy_revalidate = true,
                    "only-if-cached" => cc.only_if_cached = true,
                    "max-age" => set(&mut cc.max_age, Delta::parse(value)),
                    "s-maxage" => set(&mut cc.s_maxage, Delta::parse(value)),
                    "max-stale" => set(
                        &mut cc.max_stale,
                        match value {
                            None => Delta::Secs(DELTA_MAX),
                            v => Delta::parse(v),
                        },
                    ),
                    "min-fresh" => set(&mut cc.min_fresh, Delta::parse(value)),
                    "stale-while-revalidate" => {
                        set(&mut cc.stale_while_revalidate, Delta::parse(value))
                    }
                    "stale-if-error" => set(&mut cc.stale_if_error, Delta::parse(value)),
                    _ => {}
                }
            }
        }
        cc
    }
}

/// Splits a `Cache-Control` line into `(name, value)` pairs; a quoted value may hold
/// commas. Malformed pieces are skipped.
fn directives(line: &str) -> Vec<(&str, Option<&str>)> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        // Find the end of this directive: a comma outside quotes.
        let mut in_quotes = false;
        let mut escaped = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let piece = rest[..end].trim();
        rest = rest.get(end + 1..).unwrap_or("");
        if piece.is_empty() {
            continue;
        }
        let (name, value) = match piece.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (piece, None),
        };
        if !name.is_empty() && name.bytes().all(is_tchar) {
            out.push((name, value));
        }
    }
    out
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `Pragma: no-cache`, which a request without `Cache-Control` treats as `no-cache`
/// (RFC 9111 section 5.4).
pub(crate) fn pragma_no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(::http::header::PRAGMA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("no-cache"))
}

/// The `Age` header in seconds; an invalid one is ignored (RFC 9111 section 5.1). Several
/// lines: the first valid one.
pub(crate) fn age(headers: &HeaderMap) -> Option<u64> {
    headers.get_all(::http::header::AGE).iter().find_map(|v| {
        match Delta::parse(v.to_str().ok().map(str::trim)) {
            Delta::Secs(s) => Some(s),
            Delta::Invalid => None,
        }
    })
}

/// An HTTP date header; `None` if absent, `Some(Err(()))` if present and invalid.
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

/// The header names a `Vary` lists, lower-cased; `None` for `Vary: *`.
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
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
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

/// A header value as text, when it is one.
pub(crate) fn text(v: &HeaderValue) -> Option<&str> {
    v.to_str().ok()
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
