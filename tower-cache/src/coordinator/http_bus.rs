//! The HTTP bus: nodes POST signed frames to each other; no extra server.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tower_service::Service;

use super::message::Message;
use super::{Admission, AdmissionTicket, Bus, BusError, BusEvent, FrameGate, Subscription};
use crate::error::BuildError;
use crate::target::MAX_TARGET;

/// The largest frame the endpoint reads.
const MAX_FRAME: usize = 64 + MAX_TARGET + 32;
/// Tries per frame and peer before it is given up (and counted).
const ATTEMPTS: u32 = 6;
/// Frames the endpoint holds for the coordinator in all, when no coordinator's gate
/// bounds them per sender.
const WAITING: usize = 4096;
/// Frames waiting to be sent to one peer; past this a frame is given up at once (and the
/// peer sees the gap).
const PEER_QUEUE: usize = 4096;

/// Builds an [`HttpBus`]; see [`HttpBus::builder`].
#[derive(Debug, Clone)]
pub struct HttpBusBuilder {
    secret: Vec<u8>,
    peers: Vec<String>,
    timeout: Duration,
}

impl HttpBusBuilder {
    /// A peer's endpoint URL, e.g. `http://10.0.0.7:3001/_cache/invalidate`.
    pub fn peer(mut self, url: impl Into<String>) -> Self {
        self.peers.push(url.into());
        self
    }

    /// How long one delivery attempt may take (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Checks the peers and the secret.
    pub fn build(self) -> Result<HttpBus, BuildError> {
        if self.secret.len() < 16 {
            return Err(BuildError::new(
                "http bus: the secret is shorter than 16 bytes; give every node the same longer one",
            ));
        }
        let mut peers = Vec::with_capacity(self.peers.len());
        for p in &self.peers {
            let uri: Uri = p
                .parse()
                .map_err(|e| BuildError::new(format!("http bus: peer `{p}`: {e}")))?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err(BuildError::new(format!(
                    "http bus: peer `{p}` is not an http://host:port/path URL"
                )));
            }
            peers.push(Arc::new(Peer {
                uri,
                up: AtomicBool::new(true),
                failures: AtomicU64::new(0),
            }));
        }
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Ok(HttpBus {
            inner: Arc::new(Inner {
                queues: peers.iter().map(|_| Mutex::default()).collect(),
                peers,
                secret: self.secret,
                client,
                timeout: self.timeout,
                subscribers: Mutex::default(),
                gate: Mutex::default(),
                waiting: Arc::default(),
                counts: Arc::default(),
            }),
        })
    }
}

/// Nodes that POST invalidation frames to each other's [`InvalidateEndpoint`].
///
/// Delivery is **in order per peer**: each peer has one queue (up to 4,096 frames) and
/// one task that sends its frames one after the other, the next only once the last was
/// acknowledged or given up, so a frame never overtakes an earlier one. Delivery is at
/// least once: a frame is retried with exponential backoff (6 tries, 50 ms doubling,
/// within the timeout each) while the peer is unreachable or answers `5xx`, and the
/// receiver skips a frame it has already applied (by sender and sequence number). A frame
/// the peer refuses (`4xx`: another secret, a frame it will never take) is not retried. A
/// frame given up on, or dropped because the peer's queue is full, is counted; the
/// receiver notices the gap in the sender's sequence with the next frame, or with the
/// sender's next digest if it has gone quiet
/// ([`CoordinatorBuilder::digest_interval`](super::CoordinatorBuilder::digest_interval)),
/// and drops its memory tier. A digest is queued only behind an empty queue, dropped if
/// invalidations were queued behind it meanwhile, and tried once, uncounted. Cloning
/// shares the bus. When the last clone drops, each peer's sending task still tries the
/// frames already queued for it (they were published: an invalidation done here is
/// sent), then stops.
#[derive(Clone)]
pub struct HttpBus {
    inner: Arc<Inner>,
}

/// A peer's endpoint and how deliveries to it went.
struct Peer {
    uri: Uri,
    up: AtomicBool,
    failures: AtomicU64,
}

#[derive(Default)]
struct Counts {
    delivered: AtomicU64,
    undelivered: AtomicU64,
    refused: AtomicU64,
}

struct Inner {
    peers: Vec<Arc<Peer>>,
    /// Each peer's queue, its sending task started on the first publish (on the runtime
    /// that publishes; again on the next publish if that runtime shut down). Dropping the
    /// bus drops the queues, which ends the tasks.
    queues: Vec<Mutex<Option<mpsc::Sender<Outgoing>>>>,
    secret: Vec<u8>,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    /// Where the endpoint hands frames: each subscription's queue (bounded by the gate's
    /// bound on waiting frames, or by `waiting`).
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<Queued>>>>,
    /// The receiving coordinator's checks, once it has started.
    gate: Mutex<Option<FrameGate>>,
    /// Frames queued and not yet taken by every subscription.
    waiting: Arc<AtomicUsize>,
    counts: Arc<Counts>,
}

/// A frame the endpoint queued; its place in the bounds is freed when every subscription
/// has moved past it.
struct Queued {
    frame: Bytes,
    _ticket: Option<AdmissionTicket>,
    _slot: Slot,
}

/// One place in the endpoint's own bound on waiting frames.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

use crate::util::lock;

impl fmt::Debug for HttpBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBus")
            .field(
                "peers",
                &self.inner.peers.iter().map(|p| &p.uri).collect::<Vec<_>>(),
            )
            .field("counts", &self.counts())
            .finish()
    }
}

impl HttpBus {
    /// A bus signing with `secret` (the one the [`Coordinator`](super::Coordinator) has).
    pub fn builder(secret: &[u8]) -> HttpBusBuilder {
        HttpBusBuilder {
            secret: secret.to_vec(),
            peers: Vec::new(),
            timeout: Duration::from_secs(2),
        }
    }

    /// The service other nodes POST to; mount it at the path the peers' URLs name.
    pub fn endpoint(&self) -> InvalidateEndpoint {
        InvalidateEndpoint {
            inner: self.inner.clone(),
        }
    }

    /// Frames delivered to a peer, given up on, and refused by the endpoint (bad
    /// signature, malformed).
    pub fn counts(&self) -> (u64, u64, u64) {
        let c = &self.inner.counts;
        (
            c.delivered.load(Ordering::Relaxed),
            c.undelivered.load(Ordering::Relaxed),
            c.refused.load(Ordering::Relaxed),
        )
    }
}

impl HttpBus {
    /// Peer `i`'s queue, its sending task started on `runtime` if it has none yet (or its
    /// runtime shut down).
    fn queue(
        &self,
        i: usize,
        runtime: &tokio::runtime::Handle,
    ) -> std::sync::MutexGuard<'_, Option<mpsc::Sender<Outgoing>>> {
        let inner = &self.inner;
        let mut queue = lock(&inner.queues[i]);
        if queue.as_ref().is_none_or(mpsc::Sender::is_closed) {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            runtime.spawn(send_in_order(Sender {
                peer: inner.peers[i].clone(),
                client: inner.client.clone(),
                timeout: inner.timeout,
                counts: inner.counts.clone(),
                queue: rx,
            }));
            *queue = Some(tx);
        }
        queue
    }
}

impl Bus for HttpBus {
    fn publish(&self, frame: Bytes) -> Result<(), BusError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| BusError::new("http bus: publish needs a tokio runtime"))?;
        let inner = &self.inner;
        for (i, peer) in inner.peers.iter().enumerate() {
            let queue = self.queue(i, &runtime);
            let Some(queue) = queue.as_ref() else {
                continue;
            };
            if let Err(e) = queue.try_send(Outgoing {
                frame: frame.clone(),
                digest: false,
            }) {
                inner.counts.undelivered.fetch_add(1, Ordering::Relaxed);
                peer.up.store(false, Ordering::Relaxed);
                peer.failures.fetch_add(1, Ordering::Relaxed);
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "its queue is full",
                    // The runtime it was started on has shut down.
                    mpsc::error::TrySendError::Closed(_) => "its sending task has stopped",
                };
                tracing::warn!(peer = %peer.uri, why, "invalidation not sent; the peer will see a gap");
            }
        }
        Ok(())
    }

    /// Queued for each peer whose queue is empty: behind frames still waiting it would
    /// say nothing they will not (and a peer away long would fill its queue with them).
    /// A peer's sending task is started here as on a publish, so that a node that has
    /// published nothing since it started is heard too. An error when no peer's queue
    /// took it.
    fn publish_digest(&self, frame: Bytes) -> Result<(), BusError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| BusError::new("http bus: publish needs a tokio runtime"))?;
        let mut queued = false;
        for i in 0..self.inner.peers.len() {
            let queue = self.queue(i, &runtime);
            if let Some(queue) = queue.as_ref() {
                if queue.capacity() == queue.max_capacity() {
                    queued |= queue
                        .try_send(Outgoing {
                            frame: frame.clone(),
                            digest: true,
                        })
                        .is_ok();
                }
            }
        }
        if queued {
            Ok(())
        } else {
            Err(BusError::new(
                "http bus: digest not queued (no peer, or frames wait for every peer)",
            ))
        }
    }

    fn links(&self) -> Vec<super::LinkState> {
        self.inner
            .peers
            .iter()
            .map(|p| {
                super::LinkState::new(
                    p.uri.to_string(),
                    p.up.load(Ordering::Relaxed),
                    p.failures.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    fn subscribe(&self) -> Box<dyn Subscription> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.subscribers).push(tx);
        Box::new(HttpSubscription { rx, current: None })
    }

    fn attach(&self, gate: FrameGate) {
        *lock(&self.inner.gate) = Some(gate);
    }
}

/// A subscription to an [`HttpBus`]: it holds the frame it handed out last (and so its
/// place in the bounds) until it is asked for the next.
struct HttpSubscription {
    rx: mpsc::UnboundedReceiver<Arc<Queued>>,
    current: Option<Arc<Queued>>,
}

impl Subscription for HttpSubscription {
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Option<BusEvent>> + Send + '_>> {
        Box::pin(async move {
            self.current = None;
            let queued = self.rx.recv().await?;
            let frame = queued.frame.clone();
            self.current = Some(queued);
            Some(BusEvent::Frame(frame))
        })
    }
}

/// What one peer's sending task holds (not the bus itself, so that dropping the bus ends
/// the task).
struct Sender {
    peer: Arc<Peer>,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    counts: Arc<Counts>,
    queue: mpsc::Receiver<Outgoing>,
}

/// A frame waiting to be sent to a peer.
struct Outgoing {
    frame: Bytes,
    /// A digest is tried once, neither counted nor logged: the next one replaces it.
    digest: bool,
}

/// Sends one peer's frames one at a time, in the order they were published.
async fn send_in_order(mut s: Sender) {
    while let Some(frame) = s.queue.recv().await {
        if frame.digest {
            // Invalidations queued behind it while it waited show any gap themselves: it
            // would only delay them.
            if s.queue.is_empty() {
                deliver_digest(&s, frame.frame).await;
            }
        } else {
            deliver(&s, frame.frame).await;
        }
    }
}

/// Whether a peer's answer means the frame will never be taken (so retrying is useless).
fn refused_for_good(status: StatusCode) -> bool {
    status.is_client_error()
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
}

/// One try; the answer only says whether the peer is up. A peer that answers it is busy
/// (`503`, `429`: too many frames wait there) is up: it took the invalidations before.
async fn deliver_digest(s: &Sender, frame: Bytes) {
    let req = Request::post(s.peer.uri.clone())
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(Full::new(frame));
    let Ok(req) = req else { return };
    let up = match tokio::time::timeout(s.timeout, s.client.request(req)).await {
        Ok(Ok(res)) if res.status().is_success() => true,
        Ok(Ok(res))
            if res.status() == StatusCode::SERVICE_UNAVAILABLE
                || res.status() == StatusCode::TOO_MANY_REQUESTS =>
        {
            return;
        }
        _ => false,
    };
    s.peer.up.store(up, Ordering::Relaxed);
}

async fn deliver(s: &Sender, frame: Bytes) {
    let link = &s.peer;
    let peer = &link.uri;
    let mut backoff = Duration::from_millis(50);
    for attempt in 1..=ATTEMPTS {
        let req = Request::post(peer.clone())
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(frame.clone()));
        let Ok(req) = req else { break };
        match tokio::time::timeout(s.timeout, s.client.request(req)).await {
            Ok(Ok(res)) if res.status().is_success() => {
                s.counts.delivered.fetch_add(1, Ordering::Relaxed);
                link.up.store(true, Ordering::Relaxed);
                return;
            }
            Ok(Ok(res)) if res.status() == StatusCode::UNAUTHORIZED => {
                // The peer has another secret: retrying changes nothing.
                tracing::warn!(%peer, "invalidation refused by a peer (401): secrets differ");
                break;
            }
            Ok(Ok(res)) if refused_for_good(res.status()) => {
                tracing::warn!(%peer, status = %res.status(), "invalidation refused by a peer");
                break;
            }
            other => {
                tracing::debug!(%peer, attempt, ok = other.is_ok(), "invalidation delivery failed; retrying");
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
    s.counts.undelivered.fetch_add(1, Ordering::Relaxed);
    link.up.store(false, Ordering::Relaxed);
    link.failures.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%peer, "invalidation not delivered; the peer will see a gap");
}

/// The endpoint of an [`HttpBus`]: `POST` a signed frame.
///
/// Each frame is checked by the receiving coordinator's [`FrameGate`] before it is
/// queued: `204` when it is taken (it will be applied) or was taken already (a retry or a
/// replay: nothing is queued), `401` when its signature is wrong, `409` when it is signed
/// but stale (older than the replay window, beyond the skew bound, from an earlier start
/// of its sender), `503` when too many of its sender's frames wait or no coordinator
/// receives from the bus (the sender retries),
/// `405` for other methods, `413` for a body over the largest frame, `400` for an
/// unreadable one. Nothing changes on any answer but `204`.
#[derive(Clone)]
pub struct InvalidateEndpoint {
    inner: Arc<Inner>,
}

impl fmt::Debug for InvalidateEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidateEndpoint").finish_non_exhaustive()
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::default());
    *res.status_mut() = code;
    res
}

impl<B> Service<Request<B>> for InvalidateEndpoint
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            if req.method() != Method::POST {
                return Ok(status(StatusCode::METHOD_NOT_ALLOWED));
            }
            let frame = match Limited::new(req.into_body(), MAX_FRAME).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    inner.counts.refused.fetch_add(1, Ordering::Relaxed);
                    return Ok(status(StatusCode::PAYLOAD_TOO_LARGE));
                }
                Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
            };
            let gate = lock(&inner.gate).clone();
            let ticket = match gate {
                Some(gate) => match gate.admit(&frame) {
                    Admission::New(ticket) => Some(ticket),
                    Admission::Duplicate => return Ok(status(StatusCode::NO_CONTENT)),
                    Admission::Unsigned => {
                        inner.counts.refused.fetch_add(1, Ordering::Relaxed);
                        return Ok(status(StatusCode::UNAUTHORIZED));
                    }
                    Admission::Stale => {
                        inner.counts.refused.fetch_add(1, Ordering::Relaxed);
                        return Ok(status(StatusCode::CONFLICT));
                    }
                    Admission::Busy => return Ok(status(StatusCode::SERVICE_UNAVAILABLE)),
                },
                None => {
                    if Message::decode(&frame, &inner.secret).is_none() {
                        inner.counts.refused.fetch_add(1, Ordering::Relaxed);
                        return Ok(status(StatusCode::UNAUTHORIZED));
                    }
                    None
                }
            };
            if inner.waiting.fetch_add(1, Ordering::Relaxed) >= WAITING {
                inner.waiting.fetch_sub(1, Ordering::Relaxed);
                return Ok(status(StatusCode::SERVICE_UNAVAILABLE));
            }
            let queued = Arc::new(Queued {
                frame,
                _ticket: ticket,
                _slot: Slot(inner.waiting.clone()),
            });
            let mut subscribers = lock(&inner.subscribers);
            subscribers.retain(|tx| tx.send(queued.clone()).is_ok());
            if subscribers.is_empty() {
                // Nobody receives (no coordinator, or it stopped): not acknowledged.
                return Ok(status(StatusCode::SERVICE_UNAVAILABLE));
            }
            drop(subscribers);
            Ok(status(StatusCode::NO_CONTENT))
        })
    }
}
