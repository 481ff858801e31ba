//! Bearer tokens, as the programs' write and control APIs check them.

/// The token of an `Authorization` value with the `Bearer` scheme, in any case (RFC 9110
/// §11.1: the scheme is case-insensitive).
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Compares two tokens in time that depends only on their lengths.
pub fn same_token(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ e);
    }
    diff == 0
}

/// Whether `value` (an `Authorization` field) carries `expected` as a bearer token.
pub fn authorized(value: Option<&http::HeaderValue>, expected: &str) -> bool {
    value
        .and_then(|v| bearer(v.as_bytes()))
        .is_some_and(|t| same_token(t, expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        for (value, token) in [
            (&b"Bearer abc"[..], Some(&b"abc"[..])),
            (b"bearer abc", Some(b"abc")),
            (b"BEARER  abc ", Some(b"abc")),
            (b"Basic abc", None),
            (b"Bearer ", None),
            (b"Bear", None),
        ] {
            assert_eq!(bearer(value), token, "{:?}", String::from_utf8_lossy(value));
        }
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abd", b"abc"));
        assert!(!same_token(b"ab", b"abc"));
        assert!(!same_token(b"abcd", b"abc"));
        let v = http::HeaderValue::from_static("bearer t0k");
        assert!(authorized(Some(&v), "t0k"));
        assert!(!authorized(Some(&v), "t0"));
        assert!(!authorized(None, "t0k"));
    }
}
