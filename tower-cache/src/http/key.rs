//! The keys of stored responses: the URL (from validated parts) and its variants.

use std::hash::Hasher;
use std::time::SystemTime;

use ::http::{HeaderMap, HeaderName, Request};

use super::edge::{self, ForwardedFields, RequestRefused};
use super::headers;
use super::layer::*;

/// The key the HTTP cache stores a request's URL under: `http:` then the authority
/// (validated, lower-cased), then the path with query (method-independent: a HEAD is
/// answered from a stored GET). Invalidating this key removes the URL's stored response
/// and every variant of it.
///
/// A request whose authority is missing, doubled, invalid or contradicted by its target
/// (the requests [`HttpCacheLayer`] refuses) gets `"http:"`, a key under which nothing is
/// ever stored. [`try_url_key`] says why instead.
pub fn url_key<B>(req: &Request<B>) -> String {
    try_url_key(req).unwrap_or_else(|_| String::from("http:"))
}

/// The key [`url_key`] gives, or why the request cannot be keyed.
///
/// The parts cannot run into one another: a validated authority holds no `/` and the
/// path starts with one, so the first `/` ends the authority.
pub fn try_url_key<B>(req: &Request<B>) -> Result<String, RequestRefused> {
    let host = edge::authority(req)?;
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if !path.starts_with('/') {
        return Err(RequestRefused::new("the request target is not a path"));
    }
    // No scheme: a server sees origin-form requests (no scheme), a proxy absolute-form
    // ones, and both must find the same entry.
    Ok(format!("http:{host}{path}"))
}

/// The primary key of a request under `config`: the URL key, and under
/// [`ForwardedFields::Key`] the forwarding fields the request carries (names and
/// hex-encoded values, so that no value can imitate another's).
pub(super) fn primary_key<B>(
    config: &HttpCacheLayer,
    req: &Request<B>,
) -> Result<String, RequestRefused> {
    keyed_url(req, config.forwarded)
}

/// The primary key of a request when forwarding fields are treated as `forwarded` says
/// (what a purge of the request's URL removes).
pub(crate) fn keyed_url<B>(
    req: &Request<B>,
    forwarded: ForwardedFields,
) -> Result<String, RequestRefused> {
    let mut key = try_url_key(req)?;
    if forwarded == ForwardedFields::Key {
        let mut names: Vec<&HeaderName> = req
            .headers()
            .keys()
            .filter(|n| edge::is_forwarding_field(n))
            .collect();
        if !names.is_empty() {
            names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            key.push_str("\u{1f}f");
            for name in names {
                key.push_str(name.as_str());
                for v in req.headers().get_all(name) {
                    key.push('=');
                    for b in v.as_bytes() {
                        key.push_str(&format!("{b:02x}"));
                    }
                }
                key.push(';');
            }
        }
    }
    Ok(key)
}

/// The key of one variant of a URL: its index's epoch and a hash of the request's values
/// of the headers the responses vary on (the values themselves are stored and compared).
pub(super) fn variant_key(
    primary: &str,
    epoch: u64,
    values: &[(HeaderName, Option<Vec<u8>>)],
) -> String {
    variant_key_of(primary, epoch, variant_hash(values))
}

/// The key of the variant whose values hash to `hash` ([`variant_hash`]).
pub(super) fn variant_key_of(primary: &str, epoch: u64, hash: u64) -> String {
    format!("{primary}\u{1f}v{epoch:x}.{hash:016x}")
}

/// The hash of a variant's values that its key ends with (and its URL's index lists).
pub(super) fn variant_hash(values: &[(HeaderName, Option<Vec<u8>>)]) -> u64 {
    // FNV-1a: stable across builds, so keys on disk survive an upgrade.
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for (name, value) in values {
        h.write(name.as_str().as_bytes());
        match value {
            Some(v) => {
                h.write(&[1]);
                h.write(&(v.len() as u64).to_le_bytes());
                h.write(v);
            }
            None => h.write(&[0]),
        }
    }
    h.finish()
}

pub(super) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// The request's values of the fields `names`, as variants are keyed and matched by;
/// with `negotiation`, `Accept-Encoding` and `Accept-Language` in one spelling per
/// meaning.
pub(super) fn vary_values(
    req: &HeaderMap,
    names: &[HeaderName],
    negotiation: bool,
) -> Vec<(HeaderName, Option<Vec<u8>>)> {
    names
        .iter()
        .map(|n| (n.clone(), headers::vary_value(req, n, negotiation)))
        .collect()
}

/// A random epoch for a new index.
pub(super) fn new_epoch() -> u64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut h = Fnv(t);
    h.write(&std::process::id().to_le_bytes());
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    h.write(
        &NEXT
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    h.finish()
}
