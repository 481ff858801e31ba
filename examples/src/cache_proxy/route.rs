//! One request at the edge: checks, purges and invalidations, then the cache and the
//! upstream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use tower_cache::http::{prepare_request, ForwardedFields};
use tower_cache::PurgeService;

use super::*;

pub(crate) fn full(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut res = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *res.status_mut() = status;
    res
}

/// The address of the client a request came from, put in its extensions at the edge.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(SocketAddr);

/// Announces content of unknown length (an HTTP/1 chunked body, or an HTTP/2 body
/// without `Content-Length`) with `Transfer-Encoding: chunked`, which the edge removed as
/// hop-by-hop: the cache then sees that the request has content, and the HTTP/1.1
/// client frames it anew. Without it the client sends a GET's or HEAD's body as empty.
pub(crate) fn announce_unsized_content<B: hyper::body::Body>(req: &mut Request<B>) {
    if !req.body().is_end_stream() && !req.headers().contains_key(http::header::CONTENT_LENGTH) {
        req.headers_mut().insert(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
}

/// The request as the upstream must see it: HTTP/1.1 whatever the client spoke, its URL
/// on the upstream, the client's authority as `Host` (an HTTP/2 request's `:authority`),
/// hop-by-hop fields removed, and the client's address in the forwarding fields.
pub(crate) fn to_upstream(
    upstream: &Uri,
    forwarded: ForwardedFields,
    mut req: Request<ProxyBody>,
) -> Result<Request<ProxyBody>, ()> {
    // The edge checked the request and removed these fields before the cache read it; a
    // request the cache makes on its own (a background refresh) carries none either.
    // Checked again here so that this function alone is a correct forwarder.
    prepare_request(&mut req, forwarded).map_err(drop)?;
    announce_unsized_content(&mut req);
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = Uri::builder()
        .scheme("http")
        .authority(upstream.authority().ok_or(())?.clone())
        .path_and_query(path)
        .build()
        .map_err(drop)?;
    if !req.headers().contains_key(http::header::HOST) {
        let authority = req.uri().authority().ok_or(())?.as_str();
        let host = HeaderValue::from_str(authority).map_err(drop)?;
        req.headers_mut().insert(http::header::HOST, host);
    }
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    if let Some(ClientAddr(peer)) = req.extensions().get::<ClientAddr>().copied() {
        let ip = peer.ip();
        let headers = req.headers_mut();
        let xff = match headers.get("x-forwarded-for").map(|v| v.to_str()) {
            Some(Ok(prior)) => format!("{prior}, {ip}"),
            _ => ip.to_string(),
        };
        let node = match ip {
            std::net::IpAddr::V4(v4) => format!("for={v4};proto=http"),
            std::net::IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto=http"),
        };
        let fwd = match headers.get("forwarded").map(|v| v.to_str()) {
            Some(Ok(prior)) => format!("{prior}, {node}"),
            _ => node,
        };
        for (name, value) in [("x-forwarded-for", xff), ("forwarded", fwd)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        if !headers.contains_key("x-forwarded-proto") {
            headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        }
    }
    Ok(req)
}

/// What every response of the proxy carries.
pub(crate) type AnyBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A short plain-text answer of the edge itself.
pub(crate) fn refuse(status: StatusCode, text: String) -> Response<AnyBody> {
    let mut res = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// The largest body the invalidation endpoint's request is read into memory with; the
/// endpoint applies its own, smaller bound.
pub(crate) const MAX_CONTROL_BODY: usize = 64 << 10;

/// The request with its whole body read within `within`, or the answer to send instead:
/// `408` (and the connection closed) when the body stalls, `413` when it is too large,
/// `400` when it breaks off.
pub(crate) async fn read_body_within(
    req: Request<hyper::body::Incoming>,
    within: Duration,
) -> Result<Request<Full<Bytes>>, Response<AnyBody>> {
    let (parts, body) = req.into_parts();
    let read = http_body_util::Limited::new(body, MAX_CONTROL_BODY).collect();
    match tokio::time::timeout(within, read).await {
        Ok(Ok(body)) => Ok(Request::from_parts(parts, Full::new(body.to_bytes()))),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n".into(),
        )),
        Ok(Err(_)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "bad request: the body broke off\n".into(),
        )),
        Err(_) => {
            let mut res = refuse(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n".into(),
            );
            res.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            Err(res)
        }
    }
}

/// Checks a request at the edge (see the module docs), then sends it to the
/// invalidation endpoint, the purge service or the cache.
pub(crate) async fn route<C>(
    cache: C,
    purge: Option<PurgeService>,
    endpoint: Option<tower_cache::coordinator::InvalidateEndpoint>,
    client: SocketAddr,
    forwarded: ForwardedFields,
    body_timeout: Duration,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<AnyBody>, Infallible>
where
    C: tower::Service<
        Request<ProxyBody>,
        Response = Response<tower_cache::http::HttpCacheBody<ProxyBody>>,
        Error = Infallible,
    >,
{
    use tower::ServiceExt;
    // RFC 9112 section 3.2: an HTTP/1.1 request without Host is refused; an HTTP/2
    // request's `:authority` stands for it (checked with the rest below).
    if req.version() == Version::HTTP_11 && !req.headers().contains_key(http::header::HOST) {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            "bad request: no Host field\n".into(),
        ));
    }
    if let Err(why) = prepare_request(&mut req, forwarded) {
        return Ok(refuse(
            StatusCode::BAD_REQUEST,
            format!("bad request: {why}\n"),
        ));
    }
    // The edge removed `Transfer-Encoding` (hop-by-hop): content of unknown length is
    // announced again so that the cache sees the request has content.
    announce_unsized_content(&mut req);
    req.extensions_mut().insert(ClientAddr(client));
    let never = |never: Infallible| -> Box<dyn std::error::Error + Send + Sync> { match never {} };
    if let Some(e) = endpoint.filter(|_| req.uri().path() == "/_cache/invalidate") {
        // A request in progress is never idle: the body is read within the header-read
        // timeout, or the connection is answered 408 and closed.
        let req = match read_body_within(req, body_timeout).await {
            Ok(req) => req,
            Err(res) => return Ok(res),
        };
        let res = e.oneshot(req).await?;
        return Ok(res.map(|b| b.map_err(never).boxed_unsync()));
    }
    if let Some(p) = purge.filter(|_| PurgeService::is_purge(&req)) {
        let res = p.oneshot(req).await?;
        return Ok(res.map(|b| b.map_err(never).boxed_unsync()));
    }
    let res = cache.oneshot(req.map(BodyExt::boxed)).await?;
    Ok(res.map(BodyExt::boxed_unsync))
}
