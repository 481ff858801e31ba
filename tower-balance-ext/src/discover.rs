//! Discovery sources: where a [`Balancer`](crate::Balancer) learns which endpoints
//! exist. Each yields `tower::discover::Change`s, so any `Discover` works as well.
//!
//! - [`fixed`]: a list known up front;
//! - [`channel`]: endpoints inserted and removed by code, e.g. a scaling manager that
//!   inserts an instance once it is ready and removes it before draining it;
//! - [`dns`]: a name re-resolved on an interval, through the system's resolver
//!   ([`SystemResolver`], `/etc/hosts` included) or hickory-resolver
//!   (`HickoryResolver`, feature `dns`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tower::ServiceExt;
//! use tower_balance_ext::{discover, BalancerBuilder, Pick};
//!
//! let (endpoints, discovery) = discover::channel();
//! let balancer = BalancerBuilder::new(Pick::RoundRobin).build(discovery).unwrap();
//! endpoints.insert("a", tower::service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) }));
//! assert_eq!(balancer.clone().oneshot(7).await.unwrap(), 7);
//! endpoints.remove("a");
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tower::discover::Change;

/// The sending side of [`channel`]: cheap to clone.
pub struct Sender<K, S> {
    tx: mpsc::UnboundedSender<Change<K, S>>,
}

impl<K, S> Clone for Sender<K, S> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<K, S> fmt::Debug for Sender<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

impl<K, S> Sender<K, S> {
    /// Adds an endpoint (or replaces the one under `key`). Returns false if the
    /// balancer is gone.
    pub fn insert(&self, key: K, service: S) -> bool {
        self.tx.send(Change::Insert(key, service)).is_ok()
    }

    /// Removes an endpoint; requests already sent to it finish. Returns false if the
    /// balancer is gone.
    pub fn remove(&self, key: K) -> bool {
        self.tx.send(Change::Remove(key)).is_ok()
    }
}

/// A `Discover` fed by a [`Sender`]; it ends when every sender is dropped (the
/// balancer keeps the endpoints it has).
pub struct Receiver<K, S> {
    rx: mpsc::UnboundedReceiver<Change<K, S>>,
}

impl<K, S> fmt::Debug for Receiver<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl<K, S> Stream for Receiver<K, S> {
    type Item = Result<Change<K, S>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

impl<K, S> Unpin for Receiver<K, S> {}

/// A discovery channel: endpoints inserted and removed through the [`Sender`].
pub fn channel<K, S>() -> (Sender<K, S>, Receiver<K, S>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Sender { tx }, Receiver { rx })
}

/// A fixed list of endpoints under their keys (tower's `ServiceList` numbers them
/// instead).
pub fn fixed<K, S>(endpoints: impl IntoIterator<Item = (K, S)>) -> Receiver<K, S> {
    let (tx, rx) = channel();
    for (k, s) in endpoints {
        tx.insert(k, s);
    }
    rx
}

// === DNS ===

/// Resolves a host name to addresses, for [`dns`].
pub trait Resolve: Send + Sync + 'static {
    /// The host's addresses now.
    fn resolve<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<
        Box<
            dyn std::future::Future<Output = Result<Vec<std::net::IpAddr>, crate::BoxError>>
                + Send
                + 'a,
        >,
    >;
}

/// The operating system's resolver (`getaddrinfo`, so `/etc/hosts` applies), through
/// tokio's `lookup_host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<
        Box<
            dyn std::future::Future<Output = Result<Vec<std::net::IpAddr>, crate::BoxError>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// hickory-resolver's resolver (feature `dns`): DNS over UDP/TCP to the name servers
/// you configure, with its own cache honouring the records' TTLs.
#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
#[derive(Clone)]
pub struct HickoryResolver(pub hickory_resolver::TokioResolver);

#[cfg(feature = "dns")]
impl fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HickoryResolver").finish()
    }
}

#[cfg(feature = "dns")]
impl HickoryResolver {
    /// A resolver asking the name server at `server` only (e.g. a cluster's DNS, or
    /// one on 127.0.0.1 in tests).
    pub fn with_server(server: std::net::SocketAddr) -> Self {
        use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
        let group = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
        let config = ResolverConfig::from_parts(None, Vec::new(), group);
        let resolver = hickory_resolver::Resolver::builder_with_config(
            config,
            hickory_resolver::name_server::TokioConnectionProvider::default(),
        )
        .build();
        Self(resolver)
    }
}

#[cfg(feature = "dns")]
impl Resolve for HickoryResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<
        Box<
            dyn std::future::Future<Output = Result<Vec<std::net::IpAddr>, crate::BoxError>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            match self.0.lookup_ip(host).await {
                Ok(ips) => Ok(ips.iter().collect()),
                // A name with no address records: none (not a failure to resolve).
                Err(e) if e.is_no_records_found() => Ok(Vec::new()),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// Endpoints from a DNS name, re-resolved every `interval`: an address that appears is
/// inserted (its service made by `make`), one that is gone is removed. A failed
/// resolution keeps the endpoints known (and is logged); an answer with no address
/// removes them all. The resolving task stops when the balancer drops the stream.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use tower_balance_ext::discover::{self, SystemResolver};
/// use tower_balance_ext::{BalancerBuilder, Pick};
///
/// let endpoints = discover::dns(SystemResolver, "localhost", 3000, Duration::from_secs(5), |addr| {
///     tower::service_fn(move |_req: ()| async move { Ok::<_, std::convert::Infallible>(addr) })
/// });
/// let balancer = BalancerBuilder::new(Pick::RoundRobin).build(endpoints).unwrap();
/// # }
/// ```
pub fn dns<R, S, M>(
    resolver: R,
    host: &str,
    port: u16,
    interval: Duration,
    make: M,
) -> Receiver<std::net::SocketAddr, S>
where
    R: Resolve,
    S: Send + 'static,
    M: Fn(std::net::SocketAddr) -> S + Send + 'static,
{
    let (tx, rx) = channel();
    let host = host.to_owned();
    let interval = interval.max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut known: std::collections::BTreeSet<std::net::SocketAddr> = Default::default();
        loop {
            match resolver.resolve(&host).await {
                Ok(ips) => {
                    let now: std::collections::BTreeSet<std::net::SocketAddr> = ips
                        .into_iter()
                        .map(|ip| std::net::SocketAddr::new(ip, port))
                        .collect();
                    for gone in known.difference(&now) {
                        if !tx.remove(*gone) {
                            return;
                        }
                    }
                    for new in now.difference(&known) {
                        if !tx.insert(*new, make(*new)) {
                            return;
                        }
                    }
                    known = now;
                }
                Err(e) => {
                    tracing::warn!(%host, error = %e, "DNS resolution failed; keeping the endpoints known");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = tx.tx.closed() => return,
            }
        }
    });
    rx
}
