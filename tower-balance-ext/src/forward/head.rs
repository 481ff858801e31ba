//! Request and response heads: checked, then rewritten from what was parsed.

use std::net::IpAddr;

use super::body::Framing;
use super::chunked::Chunked;
use super::fields::{
    connection_tokens, has_token, hop_by_hop, last_token, lines_end_in_crlf, list_elements,
    parse_length, push_header, push_length, unsafe_connection_option, valid_authority,
};
use super::Exchange;

/// A client's request that is answered by the proxy itself.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) status: u16,
    pub(super) message: &'static str,
}

/// A parsed request head.
#[derive(Debug)]
pub(super) struct RequestHead {
    pub(super) len: usize,
    pub(super) body: usize,
    pub(super) close: bool,
    pub(super) exchange_head: Vec<u8>,
    pub(super) head_request: bool,
    pub(super) idempotent: bool,
    /// An HTTP/1.0 request: sent upstream as HTTP/1.0, so that the answer comes
    /// without chunked framing, which an HTTP/1.0 client cannot read.
    pub(super) http10: bool,
}

/// Who sent a request, as far as the forwarder can tell; made once per connection, with
/// the client's address already written as the forwarding fields give it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer {
    /// How many proxies of the operator's stand in front (`ForwardConfig::trusted_hops`).
    pub(super) trusted_hops: usize,
    /// The address as `X-Forwarded-For` gives it (`192.0.2.7`, `2001:db8::1`, `unknown`).
    xff: Text,
    /// The address as a `Forwarded` element gives it (`for=192.0.2.7`,
    /// `for="[2001:db8::1]"`, `for=unknown`).
    forwarded: Text,
}

impl Peer {
    pub(super) fn new(ip: Option<IpAddr>, trusted_hops: usize) -> Self {
        use std::io::Write;
        let (mut xff, mut forwarded) = (Text::default(), Text::default());
        // At most 45 + 9 bytes: an IPv6 address with an embedded IPv4 one, quoted.
        let _ = match ip {
            Some(IpAddr::V4(v4)) => write!(xff, "{v4}").and(write!(forwarded, "for={v4}")),
            Some(IpAddr::V6(v6)) => write!(xff, "{v6}").and(write!(forwarded, "for=\"[{v6}]\"")),
            None => write!(xff, "unknown").and(write!(forwarded, "for=unknown")),
        };
        Self {
            trusted_hops,
            xff,
            forwarded,
        }
    }
}

/// A short text on the stack (the peer's address, written once per connection).
#[derive(Clone, Copy)]
struct Text {
    buf: [u8; 64],
    len: usize,
}

impl Default for Text {
    fn default() -> Self {
        Self {
            buf: [0; 64],
            len: 0,
        }
    }
}

impl Text {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl std::io::Write for Text {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        if n < bytes.len() {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The fields that say who the client is, how it came or what it asked for before a
/// rewrite, which a client may forge and applications read (frameworks and libraries
/// look for the client's address in several of them). Dropped unless a trusted proxy
/// sent them.
const FORWARDING_FIELDS: &[&str] = &[
    "x-forwarded-for",
    "forwarded",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-prefix",
    "x-forwarded",
    "forwarded-for",
    "x-original-forwarded-for",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "front-end-https",
];

fn forwarding_field(name: &str) -> bool {
    FORWARDING_FIELDS
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
}

/// A request target, split.
struct Target<'a> {
    /// What the upstream receives: origin-form (or `*`).
    path: &'a [u8],
    /// The authority of an absolute-form target.
    authority: Option<&'a [u8]>,
    /// An absolute-form target with an empty path (`OPTIONS http://h` becomes `*`).
    empty_path: bool,
}

fn split_target<'a>(method: &str, target: &'a str) -> Result<Target<'a>, Refusal> {
    let bad = |message| {
        Err(Refusal {
            status: 400,
            message,
        })
    };
    let t = target.as_bytes();
    if t.contains(&b'#') {
        return bad("a request target may not hold a fragment");
    }
    if t.first() == Some(&b'/') {
        return Ok(Target {
            path: t,
            authority: None,
            empty_path: false,
        });
    }
    if t == b"*" {
        if method == "OPTIONS" {
            return Ok(Target {
                path: t,
                authority: None,
                empty_path: false,
            });
        }
        return bad("the target * is for OPTIONS only");
    }
    let rest = if t.len() > 7 && t[..7].eq_ignore_ascii_case(b"http://") {
        &t[7..]
    } else if t.len() > 8 && t[..8].eq_ignore_ascii_case(b"https://") {
        &t[8..]
    } else {
        return bad("a request target must be a path, or absolute with http or https");
    };
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?'))
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if !valid_authority(authority) {
        return bad("the authority of an absolute-form target is not a host and port");
    }
    Ok(Target {
        path,
        authority: Some(authority),
        empty_path: path.is_empty(),
    })
}

/// Checks a request head (`raw` is its bytes, `len` long) and writes the head the
/// upstream receives, or says why the request is refused.
pub(super) fn request_head(
    req: &httparse::Request<'_, '_>,
    raw: &[u8],
    len: usize,
    max_body: usize,
    peer: Peer,
) -> Result<RequestHead, Refusal> {
    let refuse = |status, message| Err(Refusal { status, message });
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return refuse(400, "incomplete request line");
    };
    let http10 = version == 0;
    if !lines_end_in_crlf(&raw[..len.min(raw.len())]) {
        return refuse(400, "a line of the head does not end in CRLF");
    }
    if method == "CONNECT" {
        return refuse(501, "CONNECT is not forwarded");
    }
    let target = split_target(method, path)?;
    let connection = connection_tokens(req.headers);
    if connection.iter().any(|t| unsafe_connection_option(t)) {
        return refuse(
            400,
            "Connection names a field that frames, routes or identifies the request",
        );
    }
    let mut close = false;
    let mut host: Option<&[u8]> = None;
    let mut hosts = 0;
    let mut length: Option<u64> = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.contains('_') && unsafe_connection_option(name.replace('_', "-").as_bytes()) {
            // Some servers read `_` as `-`: `Transfer_Encoding` would frame the body.
            return refuse(
                400,
                "a field name with `_` stands for a framing or routing field",
            );
        }
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            host = Some(h.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_length(h.value) else {
                return refuse(400, "invalid Content-Length");
            };
            if length.is_some_and(|l| l != n) {
                return refuse(400, "two different Content-Lengths");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return refuse(
                501,
                "request bodies with Transfer-Encoding are not forwarded; send a Content-Length",
            );
        } else if name.eq_ignore_ascii_case("expect") {
            return refuse(417, "Expect is not supported; send the body at once");
        } else if name.eq_ignore_ascii_case("connection") && has_token(h.value, b"close") {
            close = true;
        }
    }
    let (1, Some(host)) = (hosts, host) else {
        return refuse(400, "a request needs exactly one Host header");
    };
    if !valid_authority(host) {
        return refuse(400, "the Host header is not a host and port");
    }
    // An absolute-form target names the host; the Host field is replaced by it.
    let host = target.authority.unwrap_or(host);
    let body = match length {
        None => 0,
        Some(n) if n > max_body as u64 => return refuse(413, "request body over the limit"),
        Some(n) => n as usize,
    };

    let mut out = Vec::with_capacity(len + 96);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    match (target.empty_path, method == "OPTIONS") {
        (true, true) => out.push(b'*'),
        (true, false) => out.push(b'/'),
        (false, _) => {
            if target.path.first() == Some(&b'?') {
                out.push(b'/');
            }
            out.extend_from_slice(target.path);
        }
    }
    // An offer to upgrade (`Upgrade: h2c`, `websocket`) is hop-by-hop and dropped: the
    // request goes on as a plain one (RFC 9110 §7.8).
    out.extend_from_slice(if http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            push_header(&mut out, h.name.as_bytes(), host);
        } else if !(hop_by_hop(h.name, &connection)
            || (http10 && h.name.eq_ignore_ascii_case("keep-alive"))
            || h.name.eq_ignore_ascii_case("content-length")
            || forwarding_field(h.name))
        {
            push_header(&mut out, h.name.as_bytes(), h.value);
        }
    }
    if let Some(n) = length {
        push_length(&mut out, n);
    }
    forwarding_fields(req.headers, peer, &mut out);
    if http10 {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(RequestHead {
        len,
        body,
        // An HTTP/1.0 client's connection ends with its answer.
        close: close || http10,
        http10,
        exchange_head: out,
        head_request: method == "HEAD",
        idempotent: http::Method::from_bytes(method.as_bytes())
            .is_ok_and(|m| crate::is_idempotent(&m)),
    })
}

/// Writes `X-Forwarded-For`, `Forwarded` and `X-Forwarded-Proto` (and, from a trusted
/// peer, its `X-Forwarded-Host` and `X-Real-IP`): what trusted proxies in front said,
/// then the peer this proxy saw. Nothing a client sent is passed as if this proxy had
/// said it.
fn forwarding_fields(headers: &[httparse::Header<'_>], peer: Peer, out: &mut Vec<u8>) {
    let n = peer.trusted_hops;
    let mut xff: Vec<&[u8]> = Vec::new();
    let mut forwarded: Vec<&[u8]> = Vec::new();
    let mut proto: Option<&[u8]> = None;
    if n > 0 {
        for h in headers {
            if h.name.eq_ignore_ascii_case("x-forwarded-for") {
                xff.extend(list_elements(h.value));
            } else if h.name.eq_ignore_ascii_case("forwarded") {
                forwarded.extend(list_elements(h.value));
            } else if h.name.eq_ignore_ascii_case("x-forwarded-proto") {
                proto = Some(last_token(h.value)).filter(|p| !p.is_empty());
            } else if forwarding_field(h.name) {
                push_header(out, h.name.as_bytes(), h.value);
            }
        }
        // The last n entries are the ones the operator's proxies added.
        xff.drain(..xff.len().saturating_sub(n));
        forwarded.drain(..forwarded.len().saturating_sub(n));
    }
    if xff.is_empty() {
        push_header(out, b"x-forwarded-for", peer.xff.as_bytes());
    } else {
        let mut line = Vec::with_capacity(64);
        for e in &xff {
            line.extend_from_slice(e);
            line.extend_from_slice(b", ");
        }
        line.extend_from_slice(peer.xff.as_bytes());
        push_header(out, b"x-forwarded-for", &line);
    }
    let mut line = [0u8; 96];
    let mut n = 0;
    let mut chain = Vec::new();
    let forwarded_line: &[u8] = if forwarded.is_empty() {
        for part in [peer.forwarded.as_bytes(), b";proto=http"] {
            line[n..n + part.len()].copy_from_slice(part);
            n += part.len();
        }
        &line[..n]
    } else {
        for e in &forwarded {
            chain.extend_from_slice(e);
            chain.extend_from_slice(b", ");
        }
        chain.extend_from_slice(peer.forwarded.as_bytes());
        chain.extend_from_slice(b";proto=http");
        &chain
    };
    push_header(out, b"forwarded", forwarded_line);
    push_header(out, b"x-forwarded-proto", proto.unwrap_or(b"http"));
}

/// A response head, parsed.
pub(super) struct ResponseHead {
    pub(super) len: usize,
    pub(super) status: u16,
    pub(super) informational: bool,
    pub(super) framing: Framing,
    pub(super) reusable: bool,
    /// The normalized head for the client.
    pub(super) out: Vec<u8>,
}

/// Checks a response head to `req` and writes the head the client receives, with the
/// framing fields written from the framing decided on.
pub(super) fn response_head(
    res: &httparse::Response<'_, '_>,
    len: usize,
    req: &Exchange,
) -> Result<ResponseHead, &'static str> {
    let status = res.code.ok_or("no status")?;
    if status == 101 {
        return Err("101 Switching Protocols to a request that asked for no upgrade");
    }
    let informational = (100..200).contains(&status);
    let connection = connection_tokens(res.headers);
    let mut close = res.version != Some(1);
    let mut length: Option<u64> = None;
    // The transfer codings of every Transfer-Encoding line, in order.
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut transfer_encoding = false;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value).ok_or("invalid Content-Length in the response")?;
            if length.is_some_and(|l| l != n) {
                return Err("two different Content-Lengths in the response");
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for coding in list_elements(h.value) {
                if !coding
                    .iter()
                    .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\t')
                {
                    return Err("a Transfer-Encoding that is not text");
                }
                codings.push(coding);
            }
        } else if h.name.eq_ignore_ascii_case("connection") && has_token(h.value, b"close") {
            close = true;
        }
    }
    // Both framings, or a Connection that names one: the upstream may frame its next
    // answer otherwise than this proxy reads this one, so its connection is not reused
    // (RFC 9112 §6.3).
    let ambiguous = (transfer_encoding && length.is_some())
        || connection.iter().any(|t| {
            t.eq_ignore_ascii_case(b"content-length")
                || t.eq_ignore_ascii_case(b"transfer-encoding")
        });
    // The last coding decides: chunked ends the message, anything else runs until the
    // connection closes. The client gets the same list, written anew, so it reads the
    // framing as this proxy does.
    let chunked = codings
        .last()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
    if chunked && req.http10 {
        return Err("a chunked answer to an HTTP/1.0 request");
    }
    let bodiless = req.head_request || status == 204 || status == 304 || informational;
    let framing = if bodiless {
        Framing::Length(0)
    } else if transfer_encoding {
        if chunked {
            Framing::Chunked(Chunked::default())
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let until_close = matches!(framing, Framing::UntilClose);
    // 1xx and 204 carry no framing fields at all (RFC 9110 §8.6, §15.3.5).
    let no_framing_fields = informational || status == 204;
    let mut out = Vec::with_capacity(len + 24);
    out.extend_from_slice(b"HTTP/1.1 ");
    // Three digits (httparse checks), written without a formatter.
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            // Written once below, from the parsed number.
            continue;
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Written once below, whatever Connection says: it frames the body.
            continue;
        }
        if !hop_by_hop(h.name, &connection) {
            push_header(&mut out, h.name.as_bytes(), h.value);
        }
    }
    if transfer_encoding && !no_framing_fields && !codings.is_empty() {
        out.extend_from_slice(b"transfer-encoding: ");
        for (i, c) in codings.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(c);
        }
        out.extend_from_slice(b"\r\n");
    }
    if let (Some(n), false, false) = (length, transfer_encoding, no_framing_fields) {
        push_length(&mut out, n);
    }
    if until_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(ResponseHead {
        len,
        status,
        informational,
        framing,
        reusable: !close && !until_close && !ambiguous && !req.http10,
        out,
    })
}
