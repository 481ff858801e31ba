//! What a request must be before a shared cache keys it: one validated authority,
//! `Connection` options that name only hop-by-hop fields, no hop-by-hop fields left, and
//! no forwarding fields from the client unless the cache keys on them.
//!
//! [`HttpCacheLayer`](super::HttpCacheLayer) applies these rules to every request before
//! it looks at anything else, and answers `400 Bad Request` to a request that breaks
//! them. A server that routes some requests around the cache (a purge endpoint, say)
//! calls [`prepare_request`] first, so that every route sees the same request.
//!
//! ```
//! use http::Request;
//! use tower_cache::http::{prepare_request, ForwardedFields};
//!
//! let mut req = Request::get("/page")
//!     .header("host", "Example.test:8080")
//!     .header("connection", "x-trace")
//!     .header("x-trace", "1")
//!     .header("x-forwarded-host", "attacker.test")
//!     .body(())
//!     .unwrap();
//! prepare_request(&mut req, ForwardedFields::Drop).unwrap();
//! assert!(req.headers().get("x-trace").is_none());
//! assert!(req.headers().get("x-forwarded-host").is_none());
//!
//! let mut two_hosts = Request::get("/page")
//!     .header("host", "a.test")
//!     .header("host", "b.test")
//!     .body(())
//!     .unwrap();
//! assert!(prepare_request(&mut two_hosts, ForwardedFields::Drop).is_err());
//! ```

use std::fmt;

use ::http::{HeaderMap, HeaderName, Request};

/// The longest authority accepted: a 255-byte host name and a port.
const MAX_AUTHORITY: usize = 255 + 6;

/// What the cache does with the fields a client may send to steer the origin to another
/// host, scheme or URL (`Forwarded`, `X-Forwarded-*`, `X-Original-URL`,
/// `X-Rewrite-URL`, `X-Real-IP`, method overrides and the like), which an origin may
/// reflect in its response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedFields {
    /// Removed from every request before it is keyed and forwarded (the default): a
    /// client can neither steer the origin with them nor poison an entry others read.
    #[default]
    Drop,
    /// Kept, passed to the origin, and made part of the cache key, so that responses to
    /// different values are stored apart. For a cache behind a trusted proxy that sets
    /// them. A `PURGE` of a URL then removes only the entry for the values it carries
    /// (give [`PurgeService::forwarded_fields`](crate::PurgeService::forwarded_fields)
    /// the same setting).
    Key,
}

/// Why a request was refused: it is answered `400 Bad Request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRefused {
    reason: &'static str,
}

impl RequestRefused {
    pub(crate) fn new(reason: &'static str) -> Self {
        Self { reason }
    }
}

impl fmt::Display for RequestRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for RequestRefused {}

/// Checks a request and removes what a shared cache must not see, in place:
///
/// - exactly one authority: one `Host` field, or the target URI's authority (the
///   `:authority` of an HTTP/2 request); when both are present they must be equal; it
///   must be an RFC 3986 host with an optional port (no `/`, `?`, `#`, `@`, whitespace
///   or control bytes);
/// - `Connection` options must be tokens and may not name an end-to-end field (`Host`,
///   `Content-Length`, `Authorization`, `Cookie`, `Cache-Control`, forwarding fields,
///   ...); the fields they name and the hop-by-hop fields (`Connection`, `Keep-Alive`,
///   `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`,
///   `Proxy-Authorization`) are removed;
/// - forwarding fields are removed under [`ForwardedFields::Drop`], and their
///   underscore spellings always;
/// - the authority is lower-cased, in `Host` and in the target URI, as the key has it.
///
/// Applying it twice changes nothing more. A request it accepted carries a mark of it (an
/// extension only this crate can make), so [`HttpCacheLayer`](super::HttpCacheLayer)
/// behind an edge that called it does not do the work again; fields the caller adds
/// afterwards are the caller's to vouch for.
pub fn prepare_request<B>(
    req: &mut Request<B>,
    forwarded: ForwardedFields,
) -> Result<(), RequestRefused> {
    prepare(req, forwarded)?;
    req.extensions_mut().insert(Prepared(forwarded));
    Ok(())
}

/// What [`prepare_request`] did to a request: put on it as an extension.
#[derive(Debug, Clone, Copy)]
struct Prepared(ForwardedFields);

/// [`prepare_request`], unless it was already done with the same or a stricter
/// treatment of forwarding fields. Leaves no mark (the layer's own check needs none).
pub(crate) fn prepare_once<B>(
    req: &mut Request<B>,
    forwarded: ForwardedFields,
) -> Result<(), RequestRefused> {
    match req.extensions().get::<Prepared>() {
        Some(Prepared(done)) if *done == ForwardedFields::Drop || *done == forwarded => Ok(()),
        _ => prepare(req, forwarded),
    }
}

fn prepare<B>(req: &mut Request<B>, forwarded: ForwardedFields) -> Result<(), RequestRefused> {
    authority_bytes(req)?;
    lower_case_authority(req);
    strip_connection_options(req.headers_mut())?;
    // An origin behind a CGI-style interface reads `X_Forwarded_Host` as
    // `X-Forwarded-Host`: the underscore spellings of the fields above go too, whatever
    // `forwarded` says (a trusted proxy sets the dashed ones).
    let aliases: Vec<HeaderName> = req
        .headers()
        .keys()
        .filter(|n| is_underscore_alias(n))
        .cloned()
        .collect();
    for name in aliases {
        req.headers_mut().remove(name);
    }
    if forwarded == ForwardedFields::Drop {
        let found: Vec<HeaderName> = req
            .headers()
            .keys()
            .filter(|n| is_forwarding_field(n))
            .cloned()
            .collect();
        for name in found {
            req.headers_mut().remove(name);
        }
    }
    Ok(())
}

/// Lower-cases a validated authority in the `Host` field and the target URI, so that
/// the origin gets the authority the cache keys (one client's spelling of the host,
/// reflected in a response, is not stored for everyone's).
fn lower_case_authority<B>(req: &mut Request<B>) {
    if let Some(host) = req.headers().get(::http::header::HOST) {
        if host.as_bytes().iter().any(u8::is_ascii_uppercase) {
            let lower = host.as_bytes().to_ascii_lowercase();
            if let Ok(v) = ::http::HeaderValue::from_bytes(&lower) {
                req.headers_mut().insert(::http::header::HOST, v);
            }
        }
    }
    let upper = req
        .uri()
        .authority()
        .is_some_and(|a| a.as_str().bytes().any(|b| b.is_ascii_uppercase()));
    if upper {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = parts
            .authority
            .and_then(|a| a.as_str().to_ascii_lowercase().parse().ok());
        if let Ok(uri) = ::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// Whether a request's header fields announce content: a `Content-Length` other than
/// 0, or any `Transfer-Encoding`. Read before [`prepare_request`], which removes
/// `Transfer-Encoding`.
pub(crate) fn carries_content(headers: &HeaderMap) -> bool {
    headers.contains_key(::http::header::TRANSFER_ENCODING)
        || headers
            .get_all(::http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| !v.as_bytes().trim_ascii().iter().all(|&b| b == b'0'))
}

/// The request's authority, validated and lower-cased, as the cache keys it.
pub(crate) fn authority<B>(req: &Request<B>) -> Result<String, RequestRefused> {
    // Validated: ASCII only, so nothing is replaced.
    Ok(String::from_utf8_lossy(authority_bytes(req)?).to_ascii_lowercase())
}

/// The request's authority as sent, validated.
fn authority_bytes<B>(req: &Request<B>) -> Result<&[u8], RequestRefused> {
    let mut hosts = req.headers().get_all(::http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(RequestRefused::new("more than one Host field"));
    }
    let target = req.uri().authority().map(|a| a.as_str().as_bytes());
    let chosen = match (host.map(|h| h.as_bytes()), target) {
        (Some(h), Some(t)) if !h.eq_ignore_ascii_case(t) => {
            return Err(RequestRefused::new(
                "the Host field differs from the request target's authority",
            ));
        }
        (_, Some(t)) => t,
        (Some(h), None) => h,
        (None, None) => return Err(RequestRefused::new("no Host field")),
    };
    validate_authority(chosen)?;
    Ok(chosen)
}

/// An RFC 3986 `host [ ":" port ]`: a bracketed IP literal, or a reg-name (which covers
/// IPv4 addresses) of unreserved characters, sub-delims and percent-escapes; a port of
/// 1 to 5 digits up to 65535.
fn validate_authority(a: &[u8]) -> Result<(), RequestRefused> {
    let bad = || RequestRefused::new("the Host is not a valid host and port");
    if a.is_empty() || a.len() > MAX_AUTHORITY {
        return Err(bad());
    }
    let port = if let Some(rest) = a.strip_prefix(b"[") {
        let close = rest.iter().position(|&b| b == b']').ok_or_else(bad)?;
        let literal = &rest[..close];
        let ok = match literal {
            [] => false,
            [b'v' | b'V', future @ ..] => {
                !future.is_empty()
                    && future
                        .iter()
                        .all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':')
            }
            ipv6 => ipv6
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
        };
        if !ok {
            return Err(bad());
        }
        match &rest[close + 1..] {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return Err(bad()),
        }
    } else {
        let (host, port) = match a.iter().position(|&b| b == b':') {
            Some(i) => (&a[..i], Some(&a[i + 1..])),
            None => (a, None),
        };
        if host.is_empty() {
            return Err(bad());
        }
        let mut i = 0;
        while i < host.len() {
            let b = host[i];
            if b == b'%' {
                let escape = host.get(i + 1..i + 3).ok_or_else(bad)?;
                if !escape.iter().all(u8::is_ascii_hexdigit) {
                    return Err(bad());
                }
                i += 3;
            } else if is_unreserved(b) || is_sub_delim(b) {
                i += 1;
            } else {
                return Err(bad());
            }
        }
        port
    };
    if let Some(port) = port {
        let digits = !port.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit);
        let in_range = digits
            && std::str::from_utf8(port)
                .ok()
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|p| p <= 65_535);
        if !in_range {
            return Err(bad());
        }
    }
    Ok(())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// Fields a `Connection` option may not name: removing them would change how the
/// request is routed, framed, authorised or cached after the cache has read them.
const END_TO_END: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "authorization",
    "cookie",
    "cache-control",
    "pragma",
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "expect",
    "via",
];

/// Fields a client may send to make the origin believe in another host, scheme, client
/// or URL; any `X-Forwarded-*` too.
const FORWARDING: &[&str] = &[
    "forwarded",
    "forwarded-for",
    "x-forwarded",
    "x-forwarded-port",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-original-forwarded-for",
    "x-real-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-arr-ssl",
    "x-original-url",
    "x-original-uri",
    "x-original-host",
    "x-original-method",
    "x-rewrite-url",
    "x-host",
    "x-http-host-override",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-url-scheme",
    "x-scheme",
    "front-end-https",
];

/// Whether `name` is a forwarding field ([`ForwardedFields`]).
pub(crate) fn is_forwarding_field(name: &HeaderName) -> bool {
    is_forwarding_name(name.as_str())
}

fn is_forwarding_name(n: &str) -> bool {
    n.starts_with("x-forwarded-") || FORWARDING.contains(&n)
}

/// Whether `name`, with each `_` read as `-` (as CGI-style servers read it), names a
/// forwarding, hop-by-hop or end-to-end field it is not: a spelling that would reach
/// such an origin as that field without the cache seeing it.
fn is_underscore_alias(name: &HeaderName) -> bool {
    let n = name.as_str();
    if !n.contains('_') {
        return false;
    }
    let dashed = n.replace('_', "-");
    is_forwarding_name(&dashed)
        || HOP_BY_HOP.contains(&dashed.as_str())
        || END_TO_END.contains(&dashed.as_str())
}

/// The hop-by-hop fields of a request, removed whatever `Connection` says.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// [`HOP_BY_HOP`] as header names, made once (a name given as text is parsed on each
/// removal).
static HOP_BY_HOP_NAMES: [HeaderName; 8] = [
    ::http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    ::http::header::TE,
    ::http::header::TRAILER,
    ::http::header::TRANSFER_ENCODING,
    ::http::header::UPGRADE,
    ::http::header::PROXY_AUTHORIZATION,
];

/// Removes the fields `Connection` names and the hop-by-hop ones; refuses an option that
/// is not a token or that names an end-to-end field.
fn strip_connection_options(headers: &mut HeaderMap) -> Result<(), RequestRefused> {
    let mut named = Vec::new();
    for line in headers.get_all(::http::header::CONNECTION) {
        for option in line.as_bytes().split(|&b| b == b',') {
            let option = option.trim_ascii();
            if option.is_empty() {
                continue;
            }
            let name = HeaderName::from_bytes(option)
                .ok()
                .filter(|_| option.iter().all(|&b| super::headers::is_tchar(b)))
                .ok_or_else(|| RequestRefused::new("a Connection option is not a token"))?;
            if END_TO_END.contains(&name.as_str()) || is_forwarding_field(&name) {
                return Err(RequestRefused::new(
                    "a Connection option names an end-to-end field",
                ));
            }
            named.push(name);
        }
    }
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP_NAMES {
        headers.remove(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &[u8])], uri: &str) -> Request<()> {
        let mut b = Request::get(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_hop_by_hop_names_are_the_list() {
        let names: Vec<&str> = HOP_BY_HOP_NAMES.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, HOP_BY_HOP);
    }

    #[test]
    fn a_request_prepared_at_the_edge_is_not_prepared_again_unless_the_layer_is_stricter() {
        let fields: &[(&str, &[u8])] = &[("host", b"a.test"), ("x-forwarded-host", b"evil")];
        // Prepared with forwarding fields kept (for the key): a layer that drops them
        // still drops them.
        let mut r = req(fields, "/x");
        prepare_request(&mut r, ForwardedFields::Key).unwrap();
        assert!(r.headers().contains_key("x-forwarded-host"));
        prepare_once(&mut r, ForwardedFields::Drop).unwrap();
        assert!(!r.headers().contains_key("x-forwarded-host"));
        // Prepared with them dropped: the layer trusts the mark and does nothing (a field
        // added afterwards by the caller stays, as documented).
        let mut r = req(fields, "/x");
        prepare_request(&mut r, ForwardedFields::Drop).unwrap();
        r.headers_mut()
            .insert("x-forwarded-host", ::http::HeaderValue::from_static("own"));
        prepare_once(&mut r, ForwardedFields::Drop).unwrap();
        assert_eq!(r.headers()["x-forwarded-host"], "own");
        // Without a mark, the layer's check does the whole work.
        let mut r = req(fields, "/x");
        prepare_once(&mut r, ForwardedFields::Drop).unwrap();
        assert!(!r.headers().contains_key("x-forwarded-host"));
        let mut two = req(&[("host", b"a.test"), ("host", b"b.test")], "/x");
        assert!(prepare_once(&mut two, ForwardedFields::Drop).is_err());
    }

    #[test]
    fn authorities_are_validated() {
        for good in [
            "example.test",
            "Example.Test:8080",
            "127.0.0.1:1",
            "[::1]:443",
            "[v1.x]",
            "a%20b",
            "h:65535",
        ] {
            assert!(
                validate_authority(good.as_bytes()).is_ok(),
                "{good} must be accepted"
            );
        }
        for bad in [
            "",
            "proxy:8080/static",
            "h/q?a=",
            "h?x",
            "h#f",
            "user@h",
            "h :80",
            "h\t",
            "h:",
            "h:65536",
            "h:123456",
            ":80",
            "[::1",
            "[::1]x",
            "[g::1]",
            "h%2",
            "h%zz",
            "caf\u{e9}",
        ] {
            assert!(
                validate_authority(bad.as_bytes()).is_err(),
                "{bad:?} must be refused"
            );
        }
        assert!(validate_authority(&[b'a'; 300]).is_err());
    }

    #[test]
    fn one_host_and_a_target_that_agrees() {
        assert_eq!(
            authority(&req(&[("host", b"A.test")], "/x")).unwrap(),
            "a.test"
        );
        assert_eq!(authority(&req(&[], "http://a.test/x")).unwrap(), "a.test");
        assert!(authority(&req(&[("host", b"a.test")], "http://a.test/x")).is_ok());
        assert!(authority(&req(&[("host", b"b.test")], "http://a.test/x")).is_err());
        assert!(authority(&req(&[("host", b"a.test"), ("host", b"a.test")], "/x")).is_err());
        assert!(authority(&req(&[], "/x")).is_err());
        assert!(authority(&req(&[("host", b"h\xff")], "/x")).is_err());
    }

    #[test]
    fn connection_options_are_stripped_or_refused() {
        let mut r = req(
            &[
                ("host", b"a.test"),
                ("connection", b"keep-alive, X-V"),
                ("x-v", b"fr"),
                ("keep-alive", b"timeout=5"),
                ("te", b"trailers"),
            ],
            "/x",
        );
        prepare_request(&mut r, ForwardedFields::Drop).unwrap();
        assert_eq!(r.headers().len(), 1, "{:?}", r.headers());
        for named in [
            &b"Host"[..],
            b"content-length",
            b"Authorization",
            b"cookie",
            b"X-Forwarded-For",
            b"forwarded",
            b"close, transfer-encoding",
            b"x-v, caf\xe9",
        ] {
            let mut r = req(&[("host", b"a.test"), ("connection", named)], "/x");
            assert!(
                prepare_request(&mut r, ForwardedFields::Drop).is_err(),
                "{}",
                String::from_utf8_lossy(named)
            );
        }
    }

    #[test]
    fn the_authority_is_forwarded_lower_cased() {
        let mut r = req(&[("host", b"A.TeSt:8080")], "http://a.TEST:8080/P?Q");
        prepare_request(&mut r, ForwardedFields::Drop).unwrap();
        assert_eq!(r.headers()["host"], "a.test:8080");
        assert_eq!(r.uri().to_string(), "http://a.test:8080/P?Q");
    }

    #[test]
    fn content_is_seen_by_length_or_transfer_coding() {
        let has = |fields: &[(&str, &[u8])]| carries_content(req(fields, "/x").headers());
        assert!(!has(&[]));
        assert!(!has(&[("content-length", b"0")]));
        assert!(!has(&[("content-length", b"00")]));
        assert!(has(&[("content-length", b"25")]));
        assert!(has(&[("transfer-encoding", b"chunked")]));
    }

    #[test]
    fn forwarding_fields_are_dropped_unless_keyed() {
        let fields: &[(&str, &[u8])] = &[
            ("host", b"a.test"),
            ("x-forwarded-host", b"evil.test"),
            ("x-forwarded-proto", b"https"),
            ("x-original-url", b"/admin"),
            ("x-rewrite-url", b"/admin"),
            ("forwarded", b"host=evil.test"),
        ];
        let mut r = req(fields, "/x");
        prepare_request(&mut r, ForwardedFields::Drop).unwrap();
        assert_eq!(r.headers().len(), 1);
        let mut r = req(fields, "/x");
        prepare_request(&mut r, ForwardedFields::Key).unwrap();
        assert_eq!(r.headers().len(), fields.len());
    }

    #[test]
    fn underscore_spellings_of_guarded_fields_are_dropped() {
        for mode in [ForwardedFields::Drop, ForwardedFields::Key] {
            let mut r = req(
                &[
                    ("host", b"a.test"),
                    ("x_forwarded_host", b"evil.test"),
                    ("X_Forwarded-Proto", b"https"),
                    ("x_original_url", b"/admin"),
                    ("true_client_ip", b"10.0.0.1"),
                    ("transfer_encoding", b"chunked"),
                    ("if_match", b"\"x\""),
                    ("x_custom_thing", b"kept"),
                ],
                "/x",
            );
            prepare_request(&mut r, mode).unwrap();
            let left: Vec<&str> = r.headers().keys().map(|n| n.as_str()).collect();
            assert_eq!(left, ["host", "x_custom_thing"], "{mode:?}");
        }
        for name in [
            "cf-connecting-ip",
            "x-cluster-client-ip",
            "x-forwarded",
            "forwarded-for",
        ] {
            let mut r = req(&[("host", b"a.test"), (name, b"10.0.0.1")], "/x");
            prepare_request(&mut r, ForwardedFields::Drop).unwrap();
            assert_eq!(r.headers().len(), 1, "{name}");
        }
    }
}
