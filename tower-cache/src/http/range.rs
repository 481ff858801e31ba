//! Byte ranges (RFC 9110 section 14): parsing `Range`, `If-Range` and `Content-Range`,
//! and answering a range from a stored response.
//!
//! Every parser takes arbitrary bytes and never panics; a `Range` it cannot read is
//! ignored (the whole response is sent, as section 14.2 allows). What is served:
//!
//! - a single satisfiable range: `206` with `Content-Range: bytes FIRST-LAST/LENGTH`, a
//!   range running past the end clipped to it (section 14.1.2);
//! - none satisfiable: `416` with `Content-Range: bytes */LENGTH` (section 15.5.17);
//! - several satisfiable ranges: the whole `200` (no `multipart/byteranges`);
//! - more than [`MAX_RANGES`] ranges, a unit other than `bytes`, a range whose last
//!   position is before its first, two `Range` lines: the whole `200`.

use std::time::Duration;

use ::http::{HeaderMap, HeaderValue, StatusCode};
use bytes::{Bytes, BytesMut};

use super::headers;

/// The most ranges one `Range` header is read for; a header with more is ignored (the
/// whole response is sent). A client asking for that many pieces of one response is
/// better served by the whole, and the bound keeps the work per request small.
pub(crate) const MAX_RANGES: usize = 16;

/// A byte range within a representation: first and last byte positions, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteRange {
    pub(crate) first: u64,
    pub(crate) last: u64,
}

impl ByteRange {
    /// Its length in bytes (never 0: `last >= first`).
    pub(crate) fn len(self) -> u64 {
        self.last - self.first + 1
    }
}

/// One `byte-range-spec` or `suffix-range` as the client wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-` or `first-last`.
    From(u64, Option<u64>),
    /// `-suffix`: the last `suffix` bytes.
    Suffix(u64),
}

/// What a `Range` header asks of a representation of a known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// Not a `Range` to act on (invalid, another unit, too many ranges): the whole.
    Ignore,
    /// None of its ranges is within the representation.
    Unsatisfiable,
    /// One satisfiable range.
    One(ByteRange),
    /// Several satisfiable ranges: answered with the whole response.
    Several,
}

/// Digits as a `u64`, saturating (a position past any length is past this one's end).
fn number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// The specs of a `bytes=` ranges-specifier; `None` when it is not one, or has more than
/// [`MAX_RANGES`].
fn specs(value: &[u8]) -> Option<Vec<Spec>> {
    let value = value.trim_ascii();
    let eq = value.iter().position(|&b| b == b'=')?;
    // `range-unit "=" range-set`: no whitespace around `=`; the unit is case-insensitive.
    if !value[..eq].eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let mut out = Vec::new();
    // A list (RFC 9110 section 5.6.1): empty elements are allowed and skipped, at least
    // one is not.
    for part in value[eq + 1..].split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() {
            continue;
        }
        if out.len() == MAX_RANGES {
            return None;
        }
        let dash = part.iter().position(|&b| b == b'-')?;
        let (first, last) = (&part[..dash], &part[dash + 1..]);
        let spec = if first.is_empty() {
            Spec::Suffix(number(last)?)
        } else {
            let first = number(first)?;
            let last = if last.is_empty() {
                None
            } else {
                Some(number(last)?)
            };
            // Section 14.1.1: invalid when the last position is before the first.
            if last.is_some_and(|l| l < first) {
                return None;
            }
            Spec::From(first, last)
        };
        out.push(spec);
    }
    (!out.is_empty()).then_some(out)
}

/// The range a spec selects of `len` bytes, if it is satisfiable (section 14.1.2).
fn resolve(spec: Spec, len: u64) -> Option<ByteRange> {
    if len == 0 {
        return None;
    }
    match spec {
        Spec::From(first, _) if first >= len => None,
        Spec::From(first, last) => Some(ByteRange {
            first,
            last: last.map_or(len - 1, |l| l.min(len - 1)),
        }),
        // A suffix of zero selects nothing; one longer than the representation, all of it.
        Spec::Suffix(0) => None,
        Spec::Suffix(n) => Some(ByteRange {
            first: len.saturating_sub(n),
            last: len - 1,
        }),
    }
}

/// What the request's `Range` asks of a representation of `len` bytes. Two `Range`
/// lines (a singleton field) are ignored.
pub(crate) fn asked(req: &HeaderMap, len: u64) -> Asked {
    let mut lines = req.get_all(::http::header::RANGE).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return Asked::Ignore;
    };
    let Some(specs) = specs(line.as_bytes()) else {
        return Asked::Ignore;
    };
    let mut found = None;
    for spec in specs {
        if let Some(r) = resolve(spec, len) {
            if found.is_some() {
                return Asked::Several;
            }
            found = Some(r);
        }
    }
    found.map_or(Asked::Unsatisfiable, Asked::One)
}

/// Whether the request's `If-Range` holds for the stored response's `headers` (RFC 9110
/// section 13.1.5), so that its `Range` is acted on; without `If-Range`, true.
///
/// An entity tag holds when it is strong and equal to a strong stored `ETag` (the strong
/// comparison, section 8.8.3.2); a date holds when it is the stored `Last-Modified`
/// exactly and that date is strong: at least a second before the stored `Date` (section
/// 8.8.2.2). Anything else (a weak tag, two lines, a value that is neither) does not
/// hold: the whole response is sent.
pub(crate) fn if_range_holds(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let mut lines = req.get_all(::http::header::IF_RANGE).iter();
    let Some(line) = lines.next() else {
        return true;
    };
    if lines.next().is_some() {
        return false;
    }
    let v = line.as_bytes().trim_ascii();
    if v.starts_with(b"\"") || v.starts_with(b"W/") {
        let Some(opaque) = strong_tag(v) else {
            return false;
        };
        return headers::etag(stored).is_some_and(|e| !e.weak && e.opaque == opaque);
    }
    let Some(since) = std::str::from_utf8(v)
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
    else {
        return false;
    };
    let (Some(Ok(modified)), Some(Ok(date))) = (
        headers::date(stored, ::http::header::LAST_MODIFIED),
        headers::date(stored, ::http::header::DATE),
    ) else {
        return false;
    };
    let strong = date
        .duration_since(modified)
        .is_ok_and(|d| d >= Duration::from_secs(1));
    strong && since == modified
}

/// The opaque part of a strong entity tag (`"xyz"`); `None` for a weak or invalid one.
fn strong_tag(v: &[u8]) -> Option<&[u8]> {
    let inner = v.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    (!inner.contains(&b'"')).then_some(inner)
}

/// A `Content-Range: bytes FIRST-LAST/LENGTH` of a single-part `206` (section 14.4):
/// the range and the complete length; `None` for anything else (an unknown length `*`,
/// a range past the length, two lines).
pub(crate) fn content_range(res: &HeaderMap) -> Option<(ByteRange, u64)> {
    let mut lines = res.get_all(::http::header::CONTENT_RANGE).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return None;
    };
    let v = line.as_bytes().trim_ascii();
    let sp = v.iter().position(|&b| b == b' ')?;
    if !v[..sp].eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let rest = &v[sp + 1..];
    let slash = rest.iter().position(|&b| b == b'/')?;
    let (range, complete) = (&rest[..slash], &rest[slash + 1..]);
    let dash = range.iter().position(|&b| b == b'-')?;
    let first = number(&range[..dash])?;
    let last = number(&range[dash + 1..])?;
    let complete = number(complete)?;
    (first <= last && last < complete).then_some((ByteRange { first, last }, complete))
}

fn set(headers: &mut HeaderMap, name: ::http::HeaderName, value: String) {
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(name, v);
    }
}

/// Sets the fields of a `206` carrying `range` of `complete` bytes.
fn partial_head(headers: &mut HeaderMap, range: ByteRange, complete: u64) {
    set(
        headers,
        ::http::header::CONTENT_RANGE,
        format!("bytes {}-{}/{complete}", range.first, range.last),
    );
    headers.insert(
        ::http::header::CONTENT_LENGTH,
        HeaderValue::from(range.len()),
    );
}

/// The answer to a `GET` with `Range` from a stored complete `200` (`body` is the whole
/// representation): `206` with the range (a slice of `body`, never a copy), `416`, or
/// the whole `200` when the `Range` is ignored or `If-Range` does not hold. `headers`
/// are the stored response's, updated for the answer.
pub(crate) fn from_complete(
    req: &HeaderMap,
    headers: &mut HeaderMap,
    body: Bytes,
) -> (StatusCode, Bytes) {
    match plan_complete(req, headers, body.len() as u64) {
        Plan::Whole => (StatusCode::OK, body),
        Plan::Unsatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new()),
        // In bounds: `last < len`. Usize fits: `len` is a slice's length.
        Plan::Part(r) => (
            StatusCode::PARTIAL_CONTENT,
            body.slice(r.first as usize..=r.last as usize),
        ),
    }
}

/// What to send from a stored complete `200` of `len` bytes for a `GET` with `Range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The whole `200` (the `Range` is ignored, or `If-Range` does not hold).
    Whole,
    /// `416`, no content.
    Unsatisfiable,
    /// `206` with this range (within `0..len`).
    Part(ByteRange),
}

/// Decides the answer to a `GET` with `Range` from a stored complete `200` of `len`
/// bytes, and updates the stored `headers` for it (see [`from_complete`]); the body is
/// not needed, only its length, so a body held elsewhere is read only where it is sent.
pub(crate) fn plan_complete(req: &HeaderMap, headers: &mut HeaderMap, len: u64) -> Plan {
    if !if_range_holds(req, headers) {
        return Plan::Whole;
    }
    match asked(req, len) {
        Asked::Ignore | Asked::Several => Plan::Whole,
        Asked::Unsatisfiable => {
            // Section 15.5.17: the current length; no content.
            set(
                headers,
                ::http::header::CONTENT_RANGE,
                format!("bytes */{len}"),
            );
            headers.remove(::http::header::CONTENT_TYPE);
            headers.insert(::http::header::CONTENT_LENGTH, HeaderValue::from(0u64));
            Plan::Unsatisfiable
        }
        Asked::One(r) => {
            partial_head(headers, r, len);
            Plan::Part(r)
        }
    }
}

/// The range a stored `206` (its `Content-Range`, and a body of `len` bytes) answers for
/// the request: one range wholly within the stored piece, with `If-Range` holding (RFC
/// 9111 section 3.3); `None` when the piece cannot answer it (the request then goes to
/// the origin).
pub(crate) fn piece_answers(req: &HeaderMap, stored: &HeaderMap, len: u64) -> Option<ByteRange> {
    let (span, complete) = content_range(stored)?;
    if span.len() != len || !if_range_holds(req, stored) {
        return None;
    }
    match asked(req, complete) {
        Asked::One(r) if r.first >= span.first && r.last <= span.last => Some(r),
        _ => None,
    }
}

/// The answer from a stored `206` piece for a range it covers (see [`piece_answers`]):
/// `206` with that part of the piece, sliced, never copied.
pub(crate) fn from_piece(
    req: &HeaderMap,
    headers: &mut HeaderMap,
    body: Bytes,
) -> Option<(StatusCode, Bytes)> {
    let (from, len) = plan_piece(req, headers, body.len() as u64)?;
    // In bounds: the range is within the piece, whose length is the body's.
    let from = from as usize;
    Some((
        StatusCode::PARTIAL_CONTENT,
        body.slice(from..from + len as usize),
    ))
}

/// Where, in a stored `206` piece of `len` bytes, the range the request asks lies (as
/// offset and length in the piece), with `headers` (the piece's) updated for the answer;
/// `None` when the piece does not cover it (see [`piece_answers`]).
pub(crate) fn plan_piece(req: &HeaderMap, headers: &mut HeaderMap, len: u64) -> Option<(u64, u64)> {
    let r = piece_answers(req, headers, len)?;
    let (span, complete) = content_range(headers)?;
    partial_head(headers, r, complete);
    Some((r.first - span.first, r.len()))
}

/// Whether two stored responses carry the same strong `ETag` (the strong comparison,
/// RFC 9110 section 8.8.3.2): the same representation, byte for byte.
fn same_strong_etag(a: &HeaderMap, b: &HeaderMap) -> bool {
    match (headers::etag(a), headers::etag(b)) {
        (Some(x), Some(y)) => !x.weak && !y.weak && x.opaque == y.opaque,
        _ => false,
    }
}

/// The fields of a stored complete response made from a part's: no `Content-Range`,
/// the complete length.
fn complete_head(mut headers: HeaderMap, complete: u64) -> HeaderMap {
    headers.remove(::http::header::CONTENT_RANGE);
    headers.insert(::http::header::CONTENT_LENGTH, HeaderValue::from(complete));
    headers
}

/// What to store for a part (a `206` with `headers` and a body of `len` bytes) on its
/// own: a complete `200` when it covers the whole representation, else the part;
/// `None` when its `Content-Range` is not one range of a known length, or the body is
/// not that range's length.
pub(crate) fn part_alone(headers: &HeaderMap, len: u64) -> Option<(StatusCode, HeaderMap)> {
    let (span, complete) = content_range(headers)?;
    if span.len() != len {
        return None;
    }
    if span.first == 0 && span.last == complete - 1 {
        return Some((StatusCode::OK, complete_head(headers.clone(), complete)));
    }
    Some((StatusCode::PARTIAL_CONTENT, headers.clone()))
}

/// The fields to store for a part (a `206` with `headers`) of the complete response stored
/// before (`old_status`, `old_headers`, a body of `old_len` bytes) when it is of the same
/// representation (RFC 9111 section 3.4: the same strong `ETag`, the complete length the
/// stored body has): the part's fields, as a complete `200`, to go with the stored body.
/// `None` when the part is of another representation.
pub(crate) fn refreshes_complete(
    headers: &HeaderMap,
    old_status: StatusCode,
    old_headers: &HeaderMap,
    old_len: u64,
) -> Option<HeaderMap> {
    let (_, complete) = content_range(headers)?;
    (old_status == StatusCode::OK && same_strong_etag(headers, old_headers) && old_len == complete)
        .then(|| complete_head(headers.clone(), complete))
}

/// How a part (a `206` with `headers`, a body of `len` bytes) extends a stored part of
/// the same representation (`old_headers`, a body of `old_len` bytes) that it overlaps
/// or touches, when the stored body is kept where it is (held by the disk tier) and only
/// the new bytes are added around it (RFC 9111 section 3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Extension {
    /// A complete `200`, or a `206` of the union.
    pub(crate) status: StatusCode,
    /// The part's fields, for the union.
    pub(crate) headers: HeaderMap,
    /// The new body's bytes that go before the stored ones.
    pub(crate) before: std::ops::Range<usize>,
    /// The new body's bytes that go after the stored ones.
    pub(crate) after: std::ops::Range<usize>,
}

/// See [`Extension`]; `None` when the part does not extend the stored one (another
/// representation, no contact, or a part that covers the stored one: it stands alone).
pub(crate) fn extend_part(
    headers: &HeaderMap,
    len: u64,
    old_status: StatusCode,
    old_headers: &HeaderMap,
    old_len: u64,
) -> Option<Extension> {
    let (span, complete) = content_range(headers)?;
    let (old, old_complete) = content_range(old_headers)?;
    let extends = span.len() == len
        && old_status == StatusCode::PARTIAL_CONTENT
        && same_strong_etag(headers, old_headers)
        && old_complete == complete
        && old.len() == old_len
        && old.first <= span.last.saturating_add(1)
        && span.first <= old.last.saturating_add(1)
        && !(span.first <= old.first && span.last >= old.last);
    if !extends {
        return None;
    }
    let union = ByteRange {
        first: old.first.min(span.first),
        last: old.last.max(span.last),
    };
    // In bounds: each range is within the new part (checked above).
    let before = 0..old.first.saturating_sub(span.first) as usize;
    let after = if span.last > old.last {
        (old.last + 1 - span.first) as usize..len as usize
    } else {
        0..0
    };
    let (status, head) = if union.first == 0 && union.last == complete - 1 {
        (StatusCode::OK, complete_head(headers.clone(), complete))
    } else {
        let mut head = headers.clone();
        partial_head(&mut head, union, complete);
        (StatusCode::PARTIAL_CONTENT, head)
    };
    Some(Extension {
        status,
        headers: head,
        before,
        after,
    })
}

/// What to store for a part (a `206` with `headers` and `body`) given the response
/// stored under its key before (`before`: status, fields, body), RFC 9111 section 3.4:
///
/// - a part whose `Content-Range` is not one range of a known length, or whose body is
///   not that range's length (cut short, or lying), is not stored (`None`);
/// - a part covering the whole representation is stored as a complete `200`;
/// - with the same strong `ETag` and complete length as a stored complete `200`: that
///   body with the part's fields (the newest), as a `200`;
/// - with the same strong `ETag` and complete length as a stored part it overlaps or
///   touches: one part spanning both, at most `limit` bytes, a `200` when it is the
///   whole; the part's fields (the newest) are kept, its `Content-Range` and
///   `Content-Length` set to the span;
/// - otherwise the part alone (it replaces what was stored: one part per key).
pub(crate) fn combine(
    headers: &HeaderMap,
    body: Bytes,
    before: Option<(StatusCode, &HeaderMap, &Bytes)>,
    limit: usize,
) -> Option<(StatusCode, HeaderMap, Bytes)> {
    let (span, complete) = content_range(headers)?;
    let (status, head) = part_alone(headers, body.len() as u64)?;
    if status == StatusCode::OK {
        return Some((status, head, body));
    }
    let alone = || Some((StatusCode::PARTIAL_CONTENT, head.clone(), body.clone()));
    let Some((status, old_headers, old_body)) = before else {
        return alone();
    };
    if !same_strong_etag(headers, old_headers) {
        return alone();
    }
    if status == StatusCode::OK {
        return match refreshes_complete(headers, status, old_headers, old_body.len() as u64) {
            Some(head) => Some((StatusCode::OK, head, old_body.clone())),
            None => alone(),
        };
    }
    let Some((old, old_complete)) = content_range(old_headers) else {
        return alone();
    };
    let touches =
        old.first <= span.last.saturating_add(1) && span.first <= old.last.saturating_add(1);
    if status != StatusCode::PARTIAL_CONTENT
        || old_complete != complete
        || old.len() != old_body.len() as u64
        || !touches
    {
        return alone();
    }
    let union = ByteRange {
        first: old.first.min(span.first),
        last: old.last.max(span.last),
    };
    if union.len() > limit as u64 {
        return alone();
    }
    // In bounds: every offset below is within its own part (checked lengths above).
    let mut out = BytesMut::with_capacity(union.len() as usize);
    if old.first < span.first {
        out.extend_from_slice(&old_body[..(span.first - old.first) as usize]);
    }
    out.extend_from_slice(&body);
    if old.last > span.last {
        out.extend_from_slice(&old_body[(span.last + 1 - old.first) as usize..]);
    }
    let body = out.freeze();
    if union.first == 0 && union.last == complete - 1 {
        return Some((
            StatusCode::OK,
            complete_head(headers.clone(), complete),
            body,
        ));
    }
    let mut head = headers.clone();
    partial_head(&mut head, union, complete);
    Some((StatusCode::PARTIAL_CONTENT, head, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(::http::header::RANGE, HeaderValue::from_str(range).unwrap());
        h
    }

    fn one(first: u64, last: u64) -> Asked {
        Asked::One(ByteRange { first, last })
    }

    #[test]
    fn ranges_of_ten_bytes() {
        // RFC 9110 sections 14.1.1 (syntax), 14.1.2 (satisfiable), 14.2 (ignoring).
        let table: &[(&str, Asked)] = &[
            ("bytes=0-0", one(0, 0)),
            ("bytes=2-5", one(2, 5)),
            ("bytes=7-", one(7, 9)),
            ("bytes=-3", one(7, 9)),
            ("bytes=-30", one(0, 9)),
            ("bytes=5-99", one(5, 9)),
            ("bytes=5-99999999999999999999999", one(5, 9)),
            ("BYTES=1-1", one(1, 1)),
            (" bytes=1-2 ", one(1, 2)),
            ("bytes= 1-2 ,", one(1, 2)),
            ("bytes=,,1-2", one(1, 2)),
            ("bytes=10-", Asked::Unsatisfiable),
            ("bytes=10-20", Asked::Unsatisfiable),
            ("bytes=99999999999999999999999-", Asked::Unsatisfiable),
            ("bytes=-0", Asked::Unsatisfiable),
            ("bytes=10-12,20-30", Asked::Unsatisfiable),
            // One satisfiable of several: a single part.
            ("bytes=20-30,1-2", one(1, 2)),
            ("bytes=0-1,4-5", Asked::Several),
            ("bytes=0-1,1-2", Asked::Several),
            ("bytes=5-4", Asked::Ignore),
            ("bytes=1-2,5-4", Asked::Ignore),
            ("bytes=", Asked::Ignore),
            ("bytes=,", Asked::Ignore),
            ("bytes = 1-2", Asked::Ignore),
            ("items=1-2", Asked::Ignore),
            ("bytes=a-b", Asked::Ignore),
            ("bytes=1", Asked::Ignore),
            ("bytes=-", Asked::Ignore),
            ("bytes=--1", Asked::Ignore),
            ("bytes=+1-2", Asked::Ignore),
            ("bytes=1-2-3", Asked::Ignore),
            ("", Asked::Ignore),
            ("=", Asked::Ignore),
        ];
        for (value, want) in table {
            assert_eq!(asked(&req(value), 10), *want, "{value:?}");
        }
        // Nothing of an empty representation is satisfiable.
        assert_eq!(asked(&req("bytes=-5"), 0), Asked::Unsatisfiable);
    }

    #[test]
    fn the_number_of_ranges_is_bounded_and_two_lines_are_ignored() {
        let many = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| format!("{i}-{i}")).collect();
            format!("bytes=50-50,{}", list.join(","))
        };
        assert_eq!(asked(&req(&many(MAX_RANGES - 1)), 10), Asked::Several);
        assert_eq!(asked(&req(&many(MAX_RANGES)), 10), Asked::Ignore);
        let mut two = req("bytes=1-2");
        two.append(::http::header::RANGE, HeaderValue::from_static("bytes=3-4"));
        assert_eq!(asked(&two, 10), Asked::Ignore);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let alphabet = b"bytes=-,0123456789 \t*/\"W";
        for len in 0..3_000usize {
            let v: Vec<u8> = (0..len % 40)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                let mut h = HeaderMap::new();
                h.insert(::http::header::RANGE, v.clone());
                h.insert(::http::header::CONTENT_RANGE, v.clone());
                h.insert(::http::header::IF_RANGE, v);
                for n in [0, 1, 10, u64::MAX] {
                    let _ = asked(&h, n);
                }
                let _ = content_range(&h);
                let _ = if_range_holds(&h, &h);
                let mut stored = h.clone();
                let _ = from_piece(&h, &mut stored, Bytes::from_static(b"0123456789"));
                let _ = from_complete(&h, &mut stored, Bytes::from_static(b"0123456789"));
            }
        }
    }

    #[test]
    fn content_ranges_of_single_parts() {
        // RFC 9110 section 14.4.
        type Row = (&'static str, Option<(u64, u64, u64)>);
        let table: &[Row] = &[
            ("bytes 0-9/10", Some((0, 9, 10))),
            ("bytes 3-4/100", Some((3, 4, 100))),
            ("BYTES 3-4/100", Some((3, 4, 100))),
            ("bytes 3-4/*", None),
            ("bytes */100", None),
            ("bytes 4-3/100", None),
            ("bytes 3-100/100", None),
            ("items 3-4/100", None),
            ("bytes 3-4", None),
        ];
        for (value, want) in table {
            let mut h = HeaderMap::new();
            h.insert(
                ::http::header::CONTENT_RANGE,
                HeaderValue::from_str(value).unwrap(),
            );
            let got = content_range(&h).map(|(r, c)| (r.first, r.last, c));
            assert_eq!(got, *want, "{value:?}");
        }
    }

    #[test]
    fn if_range_needs_a_strong_match() {
        // RFC 9110 section 13.1.5, with the strong comparison (8.8.3.2) and the strength
        // of a date (8.8.2.2).
        let lm = "Sun, 06 Nov 1994 08:49:37 GMT";
        let one_second_later = "Sun, 06 Nov 1994 08:49:38 GMT";
        let stored = |etag: &str, date: &str| {
            let mut h = HeaderMap::new();
            h.insert("etag", HeaderValue::from_str(etag).unwrap());
            h.insert("last-modified", HeaderValue::from_static(lm));
            h.insert("date", HeaderValue::from_str(date).unwrap());
            h
        };
        let table: &[(&str, &str, &str, bool)] = &[
            ("\"v1\"", "\"v1\"", one_second_later, true),
            ("\"v1\"", "\"v2\"", one_second_later, false),
            // Weak tags never match for If-Range, on either side.
            ("W/\"v1\"", "\"v1\"", one_second_later, false),
            ("\"v1\"", "W/\"v1\"", one_second_later, false),
            (lm, "\"v1\"", one_second_later, true),
            // Last-Modified equal to Date is weak.
            (lm, "\"v1\"", lm, false),
            (
                "Sun, 06 Nov 1994 08:49:36 GMT",
                "\"v1\"",
                one_second_later,
                false,
            ),
            ("not a date", "\"v1\"", one_second_later, false),
            ("\"v1", "\"v1\"", one_second_later, false),
        ];
        for (if_range, etag, date, want) in table {
            let mut req = req("bytes=0-0");
            req.insert("if-range", HeaderValue::from_str(if_range).unwrap());
            assert_eq!(
                if_range_holds(&req, &stored(etag, date)),
                *want,
                "If-Range {if_range} on ETag {etag}, Date {date}"
            );
        }
        // No If-Range: the Range is acted on.
        assert!(if_range_holds(&req("bytes=0-0"), &HeaderMap::new()));
    }

    /// A part's fields: its `Content-Range` of 26 bytes and an `ETag`.
    fn part(first: u64, last: u64, etag: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        set(
            &mut h,
            ::http::header::CONTENT_RANGE,
            format!("bytes {first}-{last}/26"),
        );
        if !etag.is_empty() {
            h.insert("etag", HeaderValue::from_str(etag).unwrap());
        }
        h
    }

    const ABC: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";

    fn slice(first: u64, last: u64) -> Bytes {
        Bytes::from_static(&ABC[first as usize..=last as usize])
    }

    #[test]
    fn parts_of_one_representation_are_combined() {
        // RFC 9111 section 3.4. (new part, stored part or None) => (status, span, body).
        type Part = (u64, u64, &'static str);
        type Row = (
            Part,
            Option<Part>,
            Option<(u16, &'static str, &'static [u8])>,
        );
        let s = "\"v1\"";
        let table: &[Row] = &[
            // Alone.
            ((2, 4, s), None, Some((206, "bytes 2-4/26", b"cde"))),
            // The whole representation in one part: complete.
            ((0, 25, ""), None, Some((200, "", ABC))),
            // Overlapping, touching, containing: one span.
            (
                (2, 6, s),
                Some((5, 9, s)),
                Some((206, "bytes 2-9/26", b"cdefghij")),
            ),
            (
                (5, 9, s),
                Some((2, 6, s)),
                Some((206, "bytes 2-9/26", b"cdefghij")),
            ),
            (
                (2, 4, s),
                Some((5, 9, s)),
                Some((206, "bytes 2-9/26", b"cdefghij")),
            ),
            (
                (5, 9, s),
                Some((2, 4, s)),
                Some((206, "bytes 2-9/26", b"cdefghij")),
            ),
            ((0, 25, s), Some((2, 4, s)), Some((200, "", ABC))),
            (
                (3, 4, s),
                Some((2, 9, s)),
                Some((206, "bytes 2-9/26", b"cdefghij")),
            ),
            // Covering everything together: complete.
            ((0, 12, s), Some((13, 25, s)), Some((200, "", ABC))),
            ((13, 25, s), Some((0, 12, s)), Some((200, "", ABC))),
            // A gap: the newest alone.
            (
                (0, 4, s),
                Some((6, 9, s)),
                Some((206, "bytes 0-4/26", b"abcde")),
            ),
            // Another, a weak or no validator: the newest alone.
            (
                (0, 12, s),
                Some((13, 25, "\"v2\"")),
                Some((206, "bytes 0-12/26", b"abcdefghijklm")),
            ),
            (
                (0, 12, "W/\"v1\""),
                Some((13, 25, "W/\"v1\"")),
                Some((206, "bytes 0-12/26", b"abcdefghijklm")),
            ),
            (
                (0, 12, ""),
                Some((13, 25, "")),
                Some((206, "bytes 0-12/26", b"abcdefghijklm")),
            ),
        ];
        for (new, old, want) in table {
            let old_parts = old.map(|(f, l, e)| (part(f, l, e), slice(f, l)));
            let before = old_parts
                .as_ref()
                .map(|(h, b)| (StatusCode::PARTIAL_CONTENT, h, b));
            let got = combine(
                &part(new.0, new.1, new.2),
                slice(new.0, new.1),
                before,
                1 << 20,
            );
            let got = got.map(|(status, h, body)| {
                let range = h
                    .get("content-range")
                    .map_or(String::new(), |v| v.to_str().unwrap().to_owned());
                if let Some(len) = h.get("content-length") {
                    assert_eq!(len, body.len().to_string().as_str());
                }
                (status.as_u16(), range, body)
            });
            let want = want.map(|(st, r, b)| (st, r.to_owned(), Bytes::from_static(b)));
            assert_eq!(got, want, "new {new:?}, stored {old:?}");
        }
    }

    #[test]
    fn parts_that_lie_or_differ_are_not_combined() {
        let s = "\"v1\"";
        // A body shorter than its Content-Range: not stored.
        assert!(combine(&part(0, 9, s), slice(0, 4), None, 1 << 20).is_none());
        // A multipart or unknown-length 206: not stored.
        let mut h = HeaderMap::new();
        h.insert("content-range", HeaderValue::from_static("bytes 0-4/*"));
        assert!(combine(&h, slice(0, 4), None, 1 << 20).is_none());
        // Another complete length: the newest alone.
        let mut other = HeaderMap::new();
        other.insert("content-range", HeaderValue::from_static("bytes 5-9/30"));
        other.insert("etag", HeaderValue::from_static("\"v1\""));
        let before = Some((StatusCode::PARTIAL_CONTENT, &other, &slice(5, 9)));
        let (st, h, _) = combine(&part(0, 4, s), slice(0, 4), before, 1 << 20).unwrap();
        assert_eq!(st, StatusCode::PARTIAL_CONTENT);
        assert_eq!(h["content-range"], "bytes 0-4/26");
        // A span over the limit: the newest alone.
        let old = (part(5, 9, s), slice(5, 9));
        let before = Some((StatusCode::PARTIAL_CONTENT, &old.0, &old.1));
        let (_, h, _) = combine(&part(0, 4, s), slice(0, 4), before, 9).unwrap();
        assert_eq!(h["content-range"], "bytes 0-4/26");
        // A stored complete 200 of the same representation: its body, the part's fields.
        let mut whole = HeaderMap::new();
        whole.insert("etag", HeaderValue::from_static("\"v1\""));
        let abc = Bytes::from_static(ABC);
        let mut newest = part(0, 4, s);
        newest.insert("x-newest", HeaderValue::from_static("1"));
        let (st, h, body) = combine(
            &newest,
            slice(0, 4),
            Some((StatusCode::OK, &whole, &abc)),
            1 << 20,
        )
        .unwrap();
        assert_eq!((st, body.len()), (StatusCode::OK, 26));
        assert_eq!(h["x-newest"], "1");
        assert!(!h.contains_key("content-range"));
    }

    #[test]
    fn a_range_is_a_slice_of_the_stored_body_not_a_copy() {
        let body = Bytes::from(vec![7u8; 1 << 16]);
        let mut h = HeaderMap::new();
        let (status, part) = from_complete(&req("bytes=1000-1999"), &mut h, body.clone());
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.len(), 1000);
        // The same memory, 1000 bytes in.
        assert_eq!(part.as_ptr(), body[1000..].as_ptr());
        assert_eq!(h["content-range"], "bytes 1000-1999/65536");
        assert_eq!(h["content-length"], "1000");
    }

    mod arbitrary {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn a_range_answered_is_within_the_body_and_described_right(
                range in "(bytes|BYTES|x)?=?[0-9,\\- ]{0,40}",
                len in 0usize..64,
            ) {
                let Ok(v) = HeaderValue::from_str(&range) else { return Ok(()) };
                let mut req = HeaderMap::new();
                req.insert(::http::header::RANGE, v);
                if let Asked::One(r) = asked(&req, len as u64) {
                    prop_assert!(r.first <= r.last && r.last < len as u64);
                }
                let body = Bytes::from(vec![1u8; len]);
                let mut h = HeaderMap::new();
                let (status, part) = from_complete(&req, &mut h, body);
                match status.as_u16() {
                    206 => {
                        prop_assert_eq!(h["content-length"].to_str().ok(), Some(&*part.len().to_string()));
                        let (r, complete) = content_range(&h).unwrap();
                        prop_assert_eq!((r.len(), complete), (part.len() as u64, len as u64));
                    }
                    416 => prop_assert!(part.is_empty()),
                    200 => prop_assert_eq!(part.len(), len),
                    other => prop_assert!(false, "status {}", other),
                }
            }

            #[test]
            fn combining_arbitrary_parts_never_panics_and_stays_consistent(
                a in (0u64..40, 0u64..40, 1u64..40, 0usize..45),
                b in (0u64..40, 0u64..40, 1u64..40, 0usize..45),
                weak in any::<bool>(),
            ) {
                let head = |(first, last, complete, _): (u64, u64, u64, usize)| {
                    let mut h = HeaderMap::new();
                    set(&mut h, ::http::header::CONTENT_RANGE, format!("bytes {first}-{last}/{complete}"));
                    let tag = if weak { "W/\"t\"" } else { "\"t\"" };
                    h.insert("etag", HeaderValue::from_static(tag));
                    h
                };
                let (ha, hb) = (head(a), head(b));
                let (ba, bb) = (Bytes::from(vec![0u8; a.3]), Bytes::from(vec![0u8; b.3]));
                for status in [StatusCode::PARTIAL_CONTENT, StatusCode::OK] {
                    let got = combine(&ha, ba.clone(), Some((status, &hb, &bb)), 32);
                    if let Some((st, h, body)) = got {
                        if st == StatusCode::OK {
                            prop_assert_eq!(h["content-length"].to_str().ok(), Some(&*body.len().to_string()));
                            prop_assert!(!h.contains_key("content-range"));
                        } else {
                            let (r, _) = content_range(&h).unwrap();
                            prop_assert_eq!(r.len(), body.len() as u64);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_range_of_a_decoded_record_points_into_the_record() {
        // What a tier hands back is one record (from the disk tier, the one copy read
        // out of the map); the entry's body and the range are slices of it.
        use super::super::entry::{self, HttpEntry, Record};
        let body = Bytes::from(vec![3u8; 1 << 20]);
        let stored = HttpEntry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body,
            freshness: super::super::policy::Freshness {
                response_time: 0,
                initial_age: 0,
                lifetime: 60,
                must_revalidate: false,
                no_cache: false,
                validator: false,
                stale_while_revalidate: 0,
                stale_if_error: 0,
            },
            vary: Vec::new(),
            on_disk: None,
        };
        let record = entry::encode_entry(&stored).unwrap();
        let Some(Record::Entry(e)) = entry::decode(&record) else {
            panic!("not an entry")
        };
        let mut h = e.headers;
        let (_, part) = from_complete(&req("bytes=-4096"), &mut h, e.body);
        let inside = record.as_ptr_range();
        assert!(inside.contains(&part.as_ptr()) && part.len() == 4096);
        assert_eq!(part.as_ptr(), record[record.len() - 4096..].as_ptr());
    }
}
