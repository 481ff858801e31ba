//! The Redis bus: Redis pub/sub, reconnecting with backoff.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};

use super::{Admission, Bus, BusError, BusEvent, FrameGate, Subscription};
use crate::error::BuildError;

/// Frames waiting to be published while Redis is away; past this they are dropped (and
/// the receivers see the gap).
const PUBLISH_QUEUE: usize = 4096;

/// Invalidation frames over Redis pub/sub (cargo feature `redis`).
///
/// One task keeps a subscription and one a connection for publishing, each reconnecting
/// with exponential backoff (50 ms doubling to 2 s). When the subscription drops and comes
/// back, the node cannot know what it missed: subscribers get [`BusEvent::Lost`], and the
/// [`Coordinator`](super::Coordinator) drops its memory tier.
///
/// A subscription can also go quiet without dropping: across a network partition (or a
/// paused server) its TCP connection stays open, frames wait in it and arrive on TCP's
/// retransmission backoff, seconds after the network heals. So the subscriber sends a
/// `PING` on the subscription's own connection every
/// [`ping_interval`](RedisBusBuilder::ping_interval) (1 s by default); one unanswered
/// within [`ping_timeout`](RedisBusBuilder::ping_timeout) (2 s) ends the connection as
/// lost (counted, [`RedisBus::liveness_failures`]), and a new one is made. Frames published while
/// Redis is away wait in a bounded queue. Each frame that arrives is checked with the
/// receiving coordinator's [`FrameGate`] before it is queued, so duplicates (one frame
/// published again thousands of times), stale and unsigned frames are dropped there and
/// cannot make the queue lag. Cloning shares the bus; the tasks stop when the last clone
/// drops.
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

struct Inner {
    tx: broadcast::Sender<BusEvent>,
    publish: mpsc::Sender<Bytes>,
    state: Arc<State>,
    channel: String,
    dropped: AtomicU64,
    gate: Gate,
    tasks: Vec<tokio::task::AbortHandle>,
}

/// The receiving coordinator's checks, once it has started (shared with the subscriber).
type Gate = Arc<Mutex<Option<FrameGate>>>;

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("connected", &self.is_connected())
            .field("reconnects", &self.reconnects())
            .field("dropped", &self.inner.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

/// Settings of a [`RedisBus`]; [`RedisBus::builder`].
#[derive(Debug, Clone)]
pub struct RedisBusBuilder {
    url: String,
    channel: String,
    ping_interval: Duration,
    ping_timeout: Duration,
}

impl RedisBusBuilder {
    /// How often the subscriber checks that its connection still answers (1 s).
    pub fn ping_interval(mut self, every: Duration) -> Self {
        self.ping_interval = every;
        self
    }

    /// How long an answer to that check may take before the connection is taken as
    /// lost (2 s).
    pub fn ping_timeout(mut self, within: Duration) -> Self {
        self.ping_timeout = within;
        self
    }

    /// Starts the bus. Connecting happens in the background; an unreachable server is
    /// retried.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub fn connect(self) -> Result<RedisBus, BuildError> {
        let Self {
            url,
            channel,
            ping_interval,
            ping_timeout,
        } = self;
        let client = redis::Client::open(url.as_str())
            .map_err(|e| BuildError::new(format!("redis bus: `{url}`: {e}")))?;
        if channel.is_empty() {
            return Err(BuildError::new("redis bus: the channel name is empty"));
        }
        if ping_interval.is_zero() || ping_timeout.is_zero() {
            return Err(BuildError::new(
                "redis bus: ping_interval and ping_timeout must be above zero",
            ));
        }
        let (tx, _) = broadcast::channel(4096);
        let (publish, queue) = mpsc::channel(PUBLISH_QUEUE);
        let state = Arc::new(State {
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            liveness_failures: AtomicU64::new(0),
            ping_interval,
            ping_timeout,
        });
        let gate = Gate::default();
        let sub = tokio::spawn(subscriber(
            client.clone(),
            channel.clone(),
            tx.clone(),
            state.clone(),
            gate.clone(),
        ));
        let publ = tokio::spawn(publisher(client, channel.clone(), queue));
        Ok(RedisBus {
            inner: Arc::new(Inner {
                tx,
                publish,
                state,
                channel,
                dropped: AtomicU64::new(0),
                gate,
                tasks: vec![sub.abort_handle(), publ.abort_handle()],
            }),
        })
    }
}

impl RedisBus {
    /// Settings for a bus on `channel` of the Redis server at `url`
    /// (`redis://127.0.0.1:6379/`), ending in [`RedisBusBuilder::connect`].
    pub fn builder(url: &str, channel: &str) -> RedisBusBuilder {
        RedisBusBuilder {
            url: url.to_owned(),
            channel: channel.to_owned(),
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(2),
        }
    }

    /// A bus on `channel` of the Redis server at `url` with the default settings: the
    /// same as `RedisBus::builder(url, channel).connect()`.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub fn connect(url: &str, channel: &str) -> Result<Self, BuildError> {
        Self::builder(url, channel).connect()
    }

    /// Times the subscription's connection stayed open but did not answer a check in
    /// time, and was replaced.
    pub fn liveness_failures(&self) -> u64 {
        self.inner.state.liveness_failures.load(Ordering::Relaxed)
    }

    /// Whether the subscription is up.
    pub fn is_connected(&self) -> bool {
        self.inner.state.connected.load(Ordering::Relaxed)
    }

    /// Times the subscription was re-established after a loss.
    pub fn reconnects(&self) -> u64 {
        self.inner.state.reconnects.load(Ordering::Relaxed)
    }

    /// Frames dropped because Redis was away too long.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

/// What the background tasks report.
struct State {
    connected: AtomicBool,
    reconnects: AtomicU64,
    liveness_failures: AtomicU64,
    ping_interval: Duration,
    ping_timeout: Duration,
}

async fn subscriber(
    client: redis::Client,
    channel: String,
    tx: broadcast::Sender<BusEvent>,
    state: Arc<State>,
    gate: Gate,
) {
    let mut backoff = Duration::from_millis(50);
    let mut ever_connected = false;
    loop {
        let pubsub = async {
            let mut p = client.get_async_pubsub().await?;
            p.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(p)
        };
        // Bounded too: a server that accepts connections but does not answer (paused,
        // or behind a partition that lets the handshake through) is retried.
        let pubsub = async {
            match tokio::time::timeout(state.ping_timeout, pubsub).await {
                Ok(r) => r,
                Err(_) => Err(redis::RedisError::from((
                    redis::ErrorKind::IoError,
                    "no answer to SUBSCRIBE in time",
                ))),
            }
        };
        match pubsub.await {
            Ok(p) => {
                backoff = Duration::from_millis(50);
                state.connected.store(true, Ordering::Relaxed);
                tracing::debug!("redis bus: subscribed");
                if ever_connected {
                    // Whatever was published while we were away is lost to us.
                    state.reconnects.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(BusEvent::Lost);
                }
                ever_connected = true;
                let (mut sink, mut messages) = p.split();
                let mut check = tokio::time::interval(state.ping_interval);
                check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                check.tick().await;
                let why = loop {
                    tokio::select! {
                        msg = messages.next() => {
                            let Some(msg) = msg else { break "subscription lost" };
                            if let Ok(payload) = msg.get_payload::<Vec<u8>>() {
                                let gate =
                                    crate::util::lock(&gate).clone();
                                // Pub/sub cannot ask a publisher to wait: a frame to take
                                // is queued at once (its place in the gate's bound freed
                                // with it).
                                let take = gate.is_none_or(|g| {
                                    matches!(g.admit(&payload), Admission::New(_))
                                });
                                if take {
                                    let _ = tx.send(BusEvent::Frame(Bytes::from(payload)));
                                }
                            }
                        }
                        _ = check.tick() => {
                            let ping = sink.ping::<redis::Value>();
                            match tokio::time::timeout(state.ping_timeout, ping).await {
                                Ok(Ok(_)) => tracing::trace!("redis bus: pong"),
                                Ok(Err(_)) => break "subscription lost",
                                Err(_) => {
                                    state.liveness_failures.fetch_add(1, Ordering::Relaxed);
                                    break "subscription did not answer a ping in time";
                                }
                            }
                        }
                    }
                };
                state.connected.store(false, Ordering::Relaxed);
                tracing::warn!("redis bus: {why}; reconnecting");
                let _ = tx.send(BusEvent::Lost);
            }
            Err(e) => {
                tracing::debug!(error = %e, "redis bus: cannot subscribe; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn publisher(client: redis::Client, channel: String, mut queue: mpsc::Receiver<Bytes>) {
    let mut backoff = Duration::from_millis(50);
    let mut conn = None;
    while let Some(frame) = queue.recv().await {
        loop {
            if conn.is_none() {
                match client.get_multiplexed_async_connection().await {
                    Ok(c) => {
                        conn = Some(c);
                        backoff = Duration::from_millis(50);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "redis bus: cannot connect to publish; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let sent: Result<(), redis::RedisError> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(frame.as_ref())
                .query_async(c)
                .await;
            match sent {
                Ok(()) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "redis bus: publish failed; reconnecting");
                    conn = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

impl Bus for RedisBus {
    fn publish(&self, frame: Bytes) -> Result<(), BusError> {
        self.inner.publish.try_send(frame).map_err(|_| {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
            BusError::new("redis bus: publish queue full (Redis away too long); frame dropped")
        })
    }

    /// Queued only when no frame waits to be published (Redis away, a digest already
    /// waiting): the frames waiting say as much, and another digest follows. An error
    /// when it was not queued.
    fn publish_digest(&self, frame: Bytes) -> Result<(), BusError> {
        let queue = &self.inner.publish;
        if queue.capacity() == queue.max_capacity() && queue.try_send(frame).is_ok() {
            return Ok(());
        }
        Err(BusError::new(
            "redis bus: digest not queued (frames wait to be published)",
        ))
    }

    fn subscribe(&self) -> Box<dyn Subscription> {
        Box::new(EventSubscription(self.inner.tx.subscribe()))
    }

    fn attach(&self, gate: FrameGate) {
        *crate::util::lock(&self.inner.gate) = Some(gate);
    }

    /// One link: the subscription (named by channel; the URL may hold a password).
    fn links(&self) -> Vec<super::LinkState> {
        vec![super::LinkState::new(
            format!("redis channel {}", self.inner.channel),
            self.is_connected(),
            self.reconnects(),
        )]
    }
}

struct EventSubscription(broadcast::Receiver<BusEvent>);

impl Subscription for EventSubscription {
    fn next(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<BusEvent>> + Send + '_>> {
        Box::pin(async move {
            match self.0.recv().await {
                Ok(e) => Some(e),
                Err(broadcast::error::RecvError::Lagged(_)) => Some(BusEvent::Lost),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }
}
