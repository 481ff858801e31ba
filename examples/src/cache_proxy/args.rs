//! The proxy's settings, from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Uri};

/// The proxy's settings, from the command line.
#[derive(Debug, Clone)]
pub struct Args {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The upstream's base URL, `http://host:port`.
    pub upstream: Uri,
    /// The memory tier's byte bound, in MiB.
    pub memory_mb: u64,
    /// A directory for the disk tier, if any.
    pub disk_dir: Option<PathBuf>,
    /// How long to wait for the upstream's response head.
    pub upstream_timeout: Duration,
    /// The bearer token purges need; no purges without it.
    pub purge_token: Option<String>,
    /// The secret the proxies share to sign invalidations.
    pub secret: Option<String>,
    /// Other proxies' invalidation endpoints.
    pub peers: Vec<String>,
    /// A Redis server whose pub/sub carries purges between proxies, instead of
    /// `--peer` (feature `redis`).
    pub redis: Option<String>,
    /// How long a connection may take to send a whole request head.
    pub header_read_timeout: Duration,
    /// How long a connection may move no byte, with no request in progress, before it
    /// is shut down.
    pub idle_timeout: Duration,
    /// How many connections are served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Key on the forwarding fields clients send (`X-Forwarded-*`, `Forwarded`, ...)
    /// instead of removing them.
    pub key_forwarded: bool,
    /// The targeted cache-control fields obeyed (RFC 9213), most specific first.
    pub target_fields: Vec<HeaderName>,
    /// The cap of heuristic freshness; `None` when it is off.
    pub heuristic_max: Option<Duration>,
    /// The most variants stored per URL.
    pub max_variants: usize,
    /// Whether `Accept-Encoding` and `Accept-Language` are keyed by meaning.
    pub normalize_negotiation: bool,
}

/// Default of `--header-read-timeout-ms`: 30 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `--idle-timeout-ms`: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `--max-connections`: 10,000.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default of `--heuristic-max-secs`: a day, as many deployed caches cap it.
pub const DEFAULT_HEURISTIC_MAX: Duration = Duration::from_secs(86_400);
/// The share of the time since `Last-Modified` a response is heuristically fresh for.
pub const HEURISTIC_FRACTION: f64 = 0.1;

/// The value of `--target-fields` (one flag value, a list).
#[derive(Debug, Clone)]
pub(crate) struct TargetList(Vec<HeaderName>);

/// `--target-fields`: comma-separated field names, or `none`.
pub(crate) fn target_fields(v: &str) -> Result<TargetList, String> {
    if v.trim().eq_ignore_ascii_case("none") {
        return Ok(TargetList(Vec::new()));
    }
    v.split(',')
        .map(str::trim)
        .map(|name| {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!("{name:?} is not a field name; give names separated by commas, or none")
            })
        })
        .collect::<Result<_, _>>()
        .map(TargetList)
}

pub(crate) fn heuristic_max_secs(v: &str) -> Result<Duration, String> {
    match v.parse::<u64>() {
        Ok(0) => Err("give at least 1 second, or --no-heuristic-freshness".into()),
        Ok(n) if n > u64::from(u32::MAX) => Err(format!("give at most {} seconds", u32::MAX)),
        Ok(n) => Ok(Duration::from_secs(n)),
        Err(e) => Err(format!("{e}; give whole seconds")),
    }
}

pub(crate) fn max_variants(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(0) => Err("give at least 1".into()),
        Ok(n) if n > usize::from(u16::MAX) => Err(format!("give at most {}", u16::MAX)),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}; give a whole number")),
    }
}

/// A duration flag in milliseconds, at least 1.
pub(crate) fn millis(v: &str) -> Result<Duration, String> {
    let ms: u64 = v
        .parse()
        .map_err(|e| format!("{e}; give whole milliseconds"))?;
    if ms == 0 {
        return Err("give at least 1 millisecond".into());
    }
    Ok(Duration::from_millis(ms))
}

pub(crate) fn upstream_url(v: &str) -> Result<Uri, String> {
    let uri: Uri = v.parse().map_err(|e| format!("{e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err("give an http://host:port URL (https is not supported)".into());
    }
    Ok(uri)
}

pub(crate) fn memory_mb(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(0) => Err("give the memory tier at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}; give a whole number")),
    }
}

pub(crate) fn max_connections(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=tokio::sync::Semaphore::MAX_PERMITS).contains(&n) => Ok(n),
        Ok(_) => Err(format!(
            "give at least 1 and at most {}",
            tokio::sync::Semaphore::MAX_PERMITS
        )),
        Err(e) => Err(format!("{e}; give a whole number")),
    }
}

/// The flags, as clap reads them (with `--help`'s descriptions and defaults).
#[derive(Debug, clap::Parser)]
#[command(
    name = "cache_proxy",
    about = "A caching reverse proxy (RFC 9111) in front of one HTTP/1.1 upstream, with purges spread between proxies"
)]
pub(crate) struct Flags {
    /// Where clients connect (HOST:PORT).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The upstream's base URL, http://HOST:PORT.
    #[arg(long, value_parser = upstream_url)]
    upstream: Option<Uri>,
    /// The memory tier's bound, in MiB.
    #[arg(long, default_value = "256", value_parser = memory_mb)]
    memory_mb: u64,
    /// A directory for the disk tier (LMDB); memory only without it.
    #[arg(long)]
    disk_dir: Option<PathBuf>,
    /// How long the upstream may take to send its response head, in milliseconds.
    #[arg(long, default_value = "30000", value_parser = millis)]
    upstream_timeout_ms: Duration,
    /// How long a connection may take to send a whole request head, in milliseconds.
    #[arg(long, default_value = "30000", value_parser = millis)]
    header_read_timeout_ms: Duration,
    /// How long an idle kept-alive connection stays open, in milliseconds.
    #[arg(long, default_value = "60000", value_parser = millis)]
    idle_timeout_ms: Duration,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, default_value = "10000", value_parser = max_connections)]
    max_connections: usize,
    /// Key on the forwarding fields clients send (X-Forwarded-*, Forwarded, ...)
    /// instead of removing them.
    #[arg(long)]
    key_forwarded: bool,
    /// The targeted cache-control fields obeyed (RFC 9213), most specific first,
    /// separated by commas; none for none.
    #[arg(long, default_value = "CDN-Cache-Control", value_parser = target_fields)]
    target_fields: TargetList,
    /// Store no response on heuristic freshness (Last-Modified without max-age).
    #[arg(long)]
    no_heuristic_freshness: bool,
    /// The longest heuristic freshness, in seconds.
    #[arg(long, default_value = "86400", value_parser = heuristic_max_secs)]
    heuristic_max_secs: Duration,
    /// The most variants (Vary) stored per URL; storing more drops the oldest.
    #[arg(long, default_value = "64", value_parser = max_variants)]
    max_variants: usize,
    /// Key Accept-Encoding and Accept-Language variants on the fields as sent, not on
    /// their meaning.
    #[arg(long)]
    exact_vary: bool,
    /// The bearer token purges need; no purges without it.
    #[arg(long)]
    purge_token: Option<String>,
    /// The secret every proxy shares to sign invalidations (with --peer or --redis).
    #[arg(long)]
    secret: Option<String>,
    /// Another proxy's invalidation endpoint (http://HOST:PORT/_cache/invalidate);
    /// repeat for each.
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// A Redis server whose pub/sub carries purges between proxies, instead of --peer
    /// (a build with --features redis).
    #[arg(long)]
    redis: Option<String>,
}

impl Args {
    /// Parses the flags the module docs list (`--help` shows them); the message of an
    /// error says what to change.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        use clap::Parser;
        let f = Flags::try_parse_from(std::iter::once("cache_proxy".to_owned()).chain(args))
            .map_err(crate::flags::flag_error)?;
        if let Some(url) = &f.redis {
            if !cfg!(feature = "redis") {
                return Err(format!(
                    "--redis {url}: this build has no Redis bus; rebuild with --features redis"
                ));
            }
        }
        let Flags {
            listen,
            upstream,
            memory_mb,
            disk_dir,
            upstream_timeout_ms,
            header_read_timeout_ms,
            idle_timeout_ms,
            max_connections,
            key_forwarded,
            target_fields,
            no_heuristic_freshness,
            heuristic_max_secs,
            max_variants,
            exact_vary,
            purge_token,
            secret,
            peers,
            redis,
        } = f;
        let peers_given = peers.clone();
        let redis_given = redis.is_some();
        Ok(Self {
            listen: listen.ok_or("--listen is required, e.g. --listen 127.0.0.1:8080")?,
            upstream: upstream
                .ok_or("--upstream is required, e.g. --upstream http://127.0.0.1:8000")?,
            memory_mb,
            disk_dir,
            upstream_timeout: upstream_timeout_ms,
            peers: if !peers.is_empty() && secret.is_none() {
                return Err("--peer needs --secret, the same on every proxy".into());
            } else if !peers.is_empty() && redis.is_some() {
                return Err("give either --peer or --redis, not both".into());
            } else {
                peers
            },
            redis: if redis.is_some() && secret.is_none() {
                return Err("--redis needs --secret, the same on every proxy".into());
            } else {
                redis
            },
            purge_token: if purge_token.is_none()
                && (secret.is_some() || !peers_given.is_empty() || redis_given)
            {
                // Without a token no purge service and no invalidation endpoint exist:
                // peers' purges would go to the upstream as ordinary requests.
                return Err(
                    "--secret, --peer and --redis need --purge-token TOKEN: without it no \
                     invalidation endpoint is mounted and purges do not spread; add \
                     --purge-token"
                        .into(),
                );
            } else {
                purge_token
            },
            secret,
            header_read_timeout: header_read_timeout_ms,
            idle_timeout: idle_timeout_ms,
            max_connections,
            key_forwarded,
            target_fields: target_fields.0,
            heuristic_max: (!no_heuristic_freshness).then_some(heuristic_max_secs),
            max_variants,
            normalize_negotiation: !exact_vary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Args;

    fn parse(extra: &[&str]) -> Result<Args, String> {
        let base = [
            "--listen",
            "127.0.0.1:8080",
            "--upstream",
            "http://127.0.0.1:8000",
        ];
        Args::parse(base.iter().chain(extra).map(|s| s.to_string()))
    }

    #[test]
    fn bad_flags_say_what_to_change() {
        assert!(parse(&[]).is_ok());
        let e = parse(&["--peer", "http://x/_cache/invalidate"]).unwrap_err();
        assert!(e.contains("--peer needs --secret"), "{e}");
        let e = parse(&["--memory-mb", "0"]).unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = parse(&["--bogus"]).unwrap_err();
        assert!(e.contains("unknown flag --bogus"), "{e}");
        let e = Args::parse(["--listen".to_string()]).unwrap_err();
        assert!(e.contains("--listen needs a value"), "{e}");
    }

    #[test]
    fn a_secret_or_peers_without_a_purge_token_are_refused() {
        let peer = "http://x/_cache/invalidate";
        for flags in [&["--secret", "s"][..], &["--secret", "s", "--peer", peer]] {
            let e = parse(flags).unwrap_err();
            assert!(e.contains("need --purge-token"), "{e}");
        }
        assert!(parse(&["--purge-token", "t", "--secret", "s", "--peer", peer]).is_ok());
    }

    #[test]
    fn limits_have_defaults_and_refuse_zero() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.header_read_timeout, super::DEFAULT_HEADER_READ_TIMEOUT);
        assert_eq!(a.idle_timeout, super::DEFAULT_IDLE_TIMEOUT);
        assert_eq!(a.max_connections, super::DEFAULT_MAX_CONNECTIONS);
        assert!(!a.key_forwarded);
        for flag in [
            "--header-read-timeout-ms",
            "--idle-timeout-ms",
            "--max-connections",
        ] {
            let e = parse(&[flag, "0"]).unwrap_err();
            assert!(e.contains(flag), "{e}");
        }
        let a = parse(&["--header-read-timeout-ms", "500", "--key-forwarded"]).unwrap();
        assert_eq!(a.header_read_timeout, std::time::Duration::from_millis(500));
        assert!(a.key_forwarded);
    }

    #[test]
    fn the_caching_policy_has_edge_defaults_and_flags_to_change_them() {
        let a = parse(&[]).unwrap();
        assert_eq!(
            a.target_fields,
            [http::HeaderName::from_static("cdn-cache-control")]
        );
        assert_eq!(a.heuristic_max, Some(super::DEFAULT_HEURISTIC_MAX));
        assert_eq!(a.max_variants, 64);
        assert!(a.normalize_negotiation);
        let a = parse(&[
            "--target-fields",
            "Edge-Cache-Control, CDN-Cache-Control",
            "--no-heuristic-freshness",
            "--max-variants",
            "8",
            "--exact-vary",
        ])
        .unwrap();
        assert_eq!(a.target_fields.len(), 2);
        assert_eq!(a.target_fields[0], "edge-cache-control");
        assert_eq!(a.heuristic_max, None);
        assert_eq!(a.max_variants, 8);
        assert!(!a.normalize_negotiation);
        assert!(parse(&["--target-fields", "none"])
            .unwrap()
            .target_fields
            .is_empty());
        let a = parse(&["--heuristic-max-secs", "3600"]).unwrap();
        assert_eq!(a.heuristic_max, Some(std::time::Duration::from_secs(3600)));
        for (flag, value) in [
            ("--target-fields", "bad name"),
            ("--heuristic-max-secs", "0"),
            ("--max-variants", "0"),
            ("--max-variants", "x"),
        ] {
            let e = parse(&[flag, value]).unwrap_err();
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn redis_needs_the_feature_a_secret_and_no_peers() {
        let url = "redis://127.0.0.1:6379/";
        let e = parse(&["--redis", url]).unwrap_err();
        if cfg!(feature = "redis") {
            assert!(e.contains("--redis needs --secret"), "{e}");
            let ok = parse(&["--purge-token", "t", "--secret", "s", "--redis", url]).unwrap();
            assert_eq!(ok.redis.as_deref(), Some(url));
            let e = parse(&["--secret", "s", "--redis", url, "--peer", "http://x/"]).unwrap_err();
            assert!(e.contains("either --peer or --redis"), "{e}");
        } else {
            assert!(e.contains("rebuild with --features redis"), "{e}");
        }
    }
}
