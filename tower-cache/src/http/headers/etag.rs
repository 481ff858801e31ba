//! Entity tags: `ETag`, `If-None-Match`.

use ::http::header::HeaderMap;

/// One entity tag of an `ETag`, `If-None-Match` or `If-Match` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntityTag {
    pub(crate) weak: bool,
    pub(crate) opaque: Vec<u8>,
}

impl EntityTag {
    pub(super) fn parse(s: &[u8]) -> Option<Self> {
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
pub(super) fn split_etag_list(b: &[u8]) -> Vec<&[u8]> {
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
