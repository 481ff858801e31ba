//! Field values: lists, tokens, lengths, authorities.
/// The header names listed in `Connection` headers (lowercase).
pub(super) fn connection_tokens(headers: &[httparse::Header<'_>]) -> Vec<Vec<u8>> {
    let mut tokens = Vec::new();
    for h in headers {
        if h.name.eq_ignore_ascii_case("connection") {
            for t in h.value.split(|b| *b == b',') {
                let t = t.trim_ascii();
                if !t.is_empty() {
                    tokens.push(t.to_ascii_lowercase());
                }
            }
        }
    }
    tokens
}

/// Headers meant for one connection only, which a proxy does not pass on.
pub(super) fn hop_by_hop(name: &str, connection: &[Vec<u8>]) -> bool {
    // RFC 9110 §7.6.1's list, less Transfer-Encoding, which frames a response body
    // and is written by the forwarder itself.
    const HOP: [&str; 5] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || connection
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

pub(super) fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

pub(super) fn last_token(value: &[u8]) -> &[u8] {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .rfind(|t| !t.is_empty())
        .unwrap_or(b"")
}

/// A Content-Length value: digits only (a list of equal values is accepted).
pub(super) fn parse_length(value: &[u8]) -> Option<u64> {
    let mut found: Option<u64> = None;
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// Writes a `content-length` field with `n`, without a formatter.
pub(super) fn push_length(out: &mut Vec<u8>, n: u64) {
    push_header(
        out,
        b"content-length",
        itoa::Buffer::new().format(n).as_bytes(),
    );
}

pub(super) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Fields a request's `Connection` may not name (lowercase). A proxy drops the fields
/// `Connection` names, so naming one of these would make the request reach the
/// upstream without its framing (`Content-Length`, `Transfer-Encoding`: the body would
/// be read as a second request), without its `Host`, or without what identifies the
/// client or what the proxy itself sets. Such requests are refused with 400.
pub const UNSAFE_CONNECTION_OPTIONS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "host",
    "authorization",
    "proxy-authorization",
    "cookie",
    "content-type",
    "content-encoding",
    "content-range",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "via",
];

/// Whether `name` is one of [`UNSAFE_CONNECTION_OPTIONS`].
pub(super) fn unsafe_connection_option(name: &[u8]) -> bool {
    UNSAFE_CONNECTION_OPTIONS
        .iter()
        .any(|u| u.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether every line of `head` ends in CRLF: no bare LF, no bare CR.
pub(super) fn lines_end_in_crlf(head: &[u8]) -> bool {
    head.iter().enumerate().all(|(i, b)| match b {
        b'\n' => i > 0 && head[i - 1] == b'\r',
        b'\r' => head.get(i + 1) == Some(&b'\n'),
        _ => true,
    })
}

/// Whether `value` is an authority a request may name (RFC 3986 §3.2.2-3.2.3, stricter):
/// a host (a registered name of letters, digits, `-`, `.`, `_` and `~`, or an IPv4
/// address, or an IPv6 address in brackets) and an optional port of 1-5 digits up to
/// 65535. No userinfo (`@`), path, query, fragment, percent-escapes, spaces or controls.
pub(super) fn valid_authority(value: &[u8]) -> bool {
    if value.is_empty() || value.len() > 261 {
        return false;
    }
    let (host, port) = if value[0] == b'[' {
        let Some(end) = value.iter().position(|b| *b == b']') else {
            return false;
        };
        let inside = &value[1..end];
        let ok = inside
            .iter()
            .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.')
            && std::str::from_utf8(inside)
                .ok()
                .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
                .is_some();
        if !ok {
            return false;
        }
        match &value[end + 1..] {
            [] => (&value[..=end], None),
            [b':', port @ ..] => (&value[..=end], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().position(|b| *b == b':') {
            Some(i) => (&value[..i], Some(&value[i + 1..])),
            None => (value, None),
        }
    };
    let host_ok = host.starts_with(b"[")
        || (!host.is_empty()
            && host.len() <= 255
            && host
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')));
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(p)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .is_some_and(|n| n <= 65535)
    });
    host_ok && port_ok
}

/// The elements of a comma-separated list, commas inside quoted strings kept (as in
/// `Forwarded: for="[2001:db8::1]:80", for=a`), each trimmed, empty ones left out.
pub(super) fn list_elements(value: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, b) in value.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                out.push(value[start..i].trim_ascii());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim_ascii());
    out.retain(|e| !e.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_values() {
        assert_eq!(parse_length(b"42"), Some(42));
        assert_eq!(parse_length(b" 42 "), Some(42));
        assert_eq!(parse_length(b"42, 42"), Some(42));
        for bad in [
            &b"42, 43"[..],
            b"-1",
            b"+1",
            b"",
            b"4 2",
            b"0x10",
            b"99999999999999999999",
        ] {
            assert_eq!(
                parse_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn hop_by_hop_headers_and_connection_tokens() {
        let headers = [
            httparse::Header {
                name: "Connection",
                value: b"keep-alive, X-Secret",
            },
            httparse::Header {
                name: "x-secret",
                value: b"1",
            },
        ];
        let tokens = connection_tokens(&headers);
        assert!(hop_by_hop("X-SECRET", &tokens));
        assert!(hop_by_hop("keep-alive", &tokens));
        assert!(hop_by_hop("TE", &tokens));
        assert!(!hop_by_hop("x-other", &tokens));
        assert_eq!(last_token(b"gzip, chunked "), b"chunked");
        assert!(has_token(b"Keep-Alive, Close", b"close"));
    }

    #[test]
    fn authorities() {
        for good in [
            &b"a"[..],
            b"a.example",
            b"a-b_c~d.example:8080",
            b"127.0.0.1:1",
            b"[::1]",
            b"[2001:db8::1]:65535",
        ] {
            assert!(valid_authority(good), "{:?}", String::from_utf8_lossy(good));
        }
        for bad in [
            &b""[..],
            b"a/b",
            b"a?b",
            b"a#b",
            b"u@a",
            b"a b",
            b"a\tb",
            b"a:",
            b"a:x",
            b"a:65536",
            b"a:123456",
            b"a%2f",
            b"[::1",
            b"[nothex]",
            b"[::1]x",
            b"[::1%25eth0]",
            b":80",
        ] {
            assert!(!valid_authority(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(!valid_authority(&[b'a'; 300]));
    }

    #[test]
    fn line_ends_and_list_elements() {
        assert!(lines_end_in_crlf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!lines_end_in_crlf(b"GET / HTTP/1.1\nHost: a\r\n\r\n"));
        assert!(!lines_end_in_crlf(b"GET / HTTP/1.1\r\nHost: a\r\r\n"));
        assert!(!lines_end_in_crlf(b"\n"));
        assert_eq!(
            list_elements(br#"for=a, for="[::1]:80, x";proto=https,, for=b"#),
            vec![&b"for=a"[..], br#"for="[::1]:80, x";proto=https"#, b"for=b"]
        );
        assert_eq!(
            list_elements(br#"a="\", b", c"#),
            vec![&br#"a="\", b""#[..], b"c"]
        );
        assert!(unsafe_connection_option(b"Content-Length"));
        assert!(!unsafe_connection_option(b"keep-alive"));
    }
}
