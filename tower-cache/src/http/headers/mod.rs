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

mod cache_control;
mod date;
mod etag;
#[cfg(test)]
mod tests;
mod vary;

use std::time::{Duration, SystemTime};

use ::http::header::{HeaderMap, HeaderName};

pub(crate) use self::cache_control::*;
pub(crate) use self::date::*;
pub(crate) use self::etag::*;
pub(crate) use self::vary::*;

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

/// Seconds between two times, zero when `later` is earlier.
pub(crate) fn secs_between(earlier: SystemTime, later: SystemTime) -> u64 {
    later
        .duration_since(earlier)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
