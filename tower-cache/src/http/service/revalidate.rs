//! What a `304` does to a stored response: whether it names it (RFC 9111 section
//! 4.3.4), and the response it updates it to (section 4.3.4's field update).

use std::time::SystemTime;

use ::http::{HeaderMap, Method};

use super::super::entry::HttpEntry;
use super::super::headers;
use super::super::layer::HttpCacheLayer;
use super::super::policy;

/// Whether a `304` may update the stored `entry` (RFC 9111 section 4.3.4): its entity
/// tag (one, well formed) is the stored one (strongly when its own is strong); without
/// one, its
/// `Last-Modified` is the stored one; a `304` with neither (a bare answer to the cache's
/// own conditional request, which many origins send) updates it. A `304` for another
/// representation updates nothing.
pub(in crate::http) fn updates(not_modified: &HeaderMap, entry: &HttpEntry) -> bool {
    let named = not_modified.contains_key(::http::header::ETAG);
    let Some(new) = headers::etag(not_modified) else {
        if named {
            // An entity tag the cache cannot read (or two) names no stored response.
            return false;
        }
        let modified = not_modified.get(::http::header::LAST_MODIFIED);
        return modified
            .is_none_or(|m| entry.headers.get(::http::header::LAST_MODIFIED) == Some(m));
    };
    headers::etag(&entry.headers).is_some_and(|old| {
        if new.weak {
            old.weak_eq(&new)
        } else {
            !old.weak && old.opaque == new.opaque
        }
    })
}

/// The stored response updated by a `304` (RFC 9111 section 4.3.4): the 304's fields
/// replace the stored ones of the same name, and the freshness is computed anew; and
/// whether the updated response may be stored. One that may not still answers the
/// request that was validated.
pub(in crate::http) fn freshen(
    config: &HttpCacheLayer,
    entry: HttpEntry,
    not_modified: &HeaderMap,
    req: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> (HttpEntry, bool) {
    let mut headers = entry.headers;
    let mut fresh = not_modified.clone();
    headers::strip_hop_by_hop(&mut fresh);
    fresh.remove(::http::header::CONTENT_LENGTH);
    if let Some(name) = &config.status_header {
        fresh.remove(name);
    }
    for name in fresh.keys() {
        headers.remove(name);
    }
    for (name, value) in &fresh {
        headers.append(name.clone(), value.clone());
    }
    // The stored response's own request made it storable; the conditional one may carry
    // the client's credentials, which a 304 does not make shareable.
    let decision = policy::storable(
        &config.policy,
        &Method::GET,
        req,
        entry.status,
        &headers,
        request_time,
        response_time,
    );
    let storable = decision.is_ok();
    // Not storable: answered once, with the age the 304 gives.
    let freshness = decision.unwrap_or(policy::Freshness {
        response_time: policy::unix_ms(response_time),
        initial_age: headers::age(not_modified).unwrap_or(0),
        lifetime: 0,
        must_revalidate: true,
        no_cache: true,
        validator: false,
        stale_while_revalidate: 0,
        stale_if_error: 0,
    });
    let entry = HttpEntry {
        headers,
        freshness,
        ..entry
    };
    (entry, storable)
}
