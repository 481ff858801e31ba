//! `Vary` and the normalised values of the request fields it names.

use ::http::header::{HeaderMap, HeaderName};

use super::is_tchar;

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
pub(super) fn qvalue(v: &[u8]) -> Option<u16> {
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
