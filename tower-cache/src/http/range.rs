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
mod tests;
