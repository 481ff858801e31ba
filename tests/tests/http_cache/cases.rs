//! The RFC 9111 cases, each naming the section it checks; run by `conformance`.

use std::time::Duration;

use tower_cache::http::HttpPolicy;

use super::conformance::*;

pub(crate) const CASES: &[Case] = &[
    // --- storing (RFC 9111 section 3) ---
    case(
        "max-age is stored and served",
        "9111 3, 4.2.1",
        &[
            checked(get("/a/x?cc=max-age%3D60", true), x_cache_miss),
            checked(get("/a/x?cc=max-age%3D60", false), x_cache_hit),
        ],
    ),
    case(
        "a hit carries Age",
        "9111 5.1",
        &[
            get("/b/x?cc=max-age%3D60", true),
            checked(get("/b/x?cc=max-age%3D60", false), has_age),
        ],
    ),
    case(
        "s-maxage is stored",
        "9111 5.2.2.10",
        &[
            get("/c/x?cc=s-maxage%3D60", true),
            get("/c/x?cc=s-maxage%3D60", false),
        ],
    ),
    case(
        "s-maxage wins over max-age=0 in a shared cache",
        "9111 5.2.2.10",
        &[
            get("/d/x?cc=max-age%3D0,s-maxage%3D60", true),
            get("/d/x?cc=max-age%3D0,s-maxage%3D60", false),
        ],
    ),
    case(
        "s-maxage=0 wins over max-age",
        "9111 5.2.2.10",
        &[
            get("/e/x?cc=max-age%3D60,s-maxage%3D0", true),
            get("/e/x?cc=max-age%3D60,s-maxage%3D0", true),
        ],
    ),
    case(
        "Expires in the future is stored",
        "9111 5.3",
        &[get("/f/x?exp=60", true), get("/f/x?exp=60", false)],
    ),
    case(
        "Expires in the past is not served",
        "9111 5.3",
        &[get("/g/x?exp=-60", true), get("/g/x?exp=-60", true)],
    ),
    case(
        "Expires: 0 is a time in the past",
        "9111 5.3",
        &[get("/h/x?exp=0", true), get("/h/x?exp=0", true)],
    ),
    case(
        "max-age wins over Expires",
        "9111 5.3",
        &[
            get("/i/x?cc=max-age%3D60&exp=-60", true),
            get("/i/x?cc=max-age%3D60&exp=-60", false),
        ],
    ),
    case(
        "no-store is never stored",
        "9111 5.2.2.5",
        &[
            checked(get("/j/x?cc=no-store,max-age%3D60", true), x_cache_pass),
            get("/j/x?cc=no-store,max-age%3D60", true),
        ],
    ),
    case(
        "private is never stored by a shared cache",
        "9111 5.2.2.7",
        &[
            get("/k/x?cc=private,max-age%3D60", true),
            get("/k/x?cc=private,max-age%3D60", true),
        ],
    ),
    case(
        "qualified private is treated as private",
        "9111 5.2.2.7",
        &[
            get("/l/x?cc=private%3D%22set-cookie%22,max-age%3D60", true),
            get("/l/x?cc=private%3D%22set-cookie%22,max-age%3D60", true),
        ],
    ),
    case(
        "no-cache responses are not served without validation",
        "9111 5.2.2.4",
        &[
            get("/m/x?cc=no-cache,max-age%3D60", true),
            get("/m/x?cc=no-cache,max-age%3D60", true),
        ],
    ),
    case(
        "max-age=0 is not served without validation",
        "9111 4.2.1",
        &[
            get("/n/x?cc=max-age%3D0", true),
            get("/n/x?cc=max-age%3D0", true),
        ],
    ),
    case(
        "no freshness information: not stored by default",
        "9111 4.2.2",
        &[get("/o/x", true), get("/o/x", true)],
    ),
    case(
        "Last-Modified without freshness: validated on every use",
        "9111 4.2.2",
        &[get("/p/x?lm=-3600", true), get("/p/x?lm=-3600", true)],
    ),
    Case {
        name: "heuristic freshness when turned on",
        rfc: "9111 4.2.2",
        policy: || HttpPolicy::new().heuristic(0.1, Duration::from_secs(3600)),
        steps: &[get("/q/x?lm=-36000", true), get("/q/x?lm=-36000", false)],
    },
    Case {
        name: "a default TTL when turned on",
        rfc: "9111 4.2.2",
        policy: || HttpPolicy::new().default_ttl(Duration::from_secs(60)),
        steps: &[get("/r/x", true), get("/r/x", false)],
    },
    case(
        "404 with max-age is stored",
        "9110 15.1, 9111 3",
        &[
            with("GET", "/s/x?status=404&cc=max-age%3D60", &[], true, 404),
            with("GET", "/s/x?status=404&cc=max-age%3D60", &[], false, 404),
        ],
    ),
    case(
        "500 with explicit max-age is stored",
        "9111 3",
        &[
            with("GET", "/t/x?status=500&cc=max-age%3D60", &[], true, 500),
            with("GET", "/t/x?status=500&cc=max-age%3D60", &[], false, 500),
        ],
    ),
    Case {
        name: "500 without freshness is not stored even with a default TTL",
        rfc: "9110 15.1",
        policy: || HttpPolicy::new().default_ttl(Duration::from_secs(60)),
        steps: &[
            with("GET", "/u/x?status=500", &[], true, 500),
            with("GET", "/u/x?status=500", &[], true, 500),
        ],
    },
    case(
        "Set-Cookie responses are not stored",
        "9111 7.3 (security)",
        &[
            get("/v/x?cc=max-age%3D60&cookie=1", true),
            get("/v/x?cc=max-age%3D60&cookie=1", true),
        ],
    ),
    Case {
        name: "Set-Cookie responses are stored when configured",
        rfc: "9111 3",
        policy: || HttpPolicy::new().store_set_cookie(true),
        steps: &[
            get("/w/x?cc=max-age%3D60&cookie=1", true),
            get("/w/x?cc=max-age%3D60&cookie=1", false),
        ],
    },
    case(
        "duplicate conflicting max-age is treated as stale",
        "9111 4.2.1",
        &[
            get("/x/x?cc=max-age%3D60,max-age%3D120", true),
            get("/x/x?cc=max-age%3D60,max-age%3D120", true),
        ],
    ),
    case(
        "an invalid max-age is stale",
        "9111 1.2.2",
        &[
            get("/y/x?cc=max-age%3Dabc", true),
            get("/y/x?cc=max-age%3Dabc", true),
        ],
    ),
    // --- methods ---
    case(
        "HEAD is answered from a stored GET",
        "9111 4, 9110 9.3.2",
        &[
            get("/z/x?cc=max-age%3D60", true),
            checked(
                with("HEAD", "/z/x?cc=max-age%3D60", &[], false, 200),
                empty_body,
            ),
        ],
    ),
    case(
        "a HEAD miss does not store",
        "9111 3",
        &[
            with("HEAD", "/aa/x?cc=max-age%3D60", &[], true, 200),
            get("/aa/x?cc=max-age%3D60", true),
        ],
    ),
    case(
        "POST is passed through",
        "9111 3",
        &[
            with("POST", "/ab/x?cc=max-age%3D60", &[], true, 200),
            with("POST", "/ab/x?cc=max-age%3D60", &[], true, 200),
        ],
    ),
    case(
        "POST invalidates the stored GET",
        "9111 4.4",
        &[
            get("/ac/x?cc=max-age%3D60", true),
            get("/ac/x?cc=max-age%3D60", false),
            with("POST", "/ac/x?cc=max-age%3D60", &[], true, 200),
            get("/ac/x?cc=max-age%3D60", true),
        ],
    ),
    case(
        "DELETE invalidates, a failed one does not",
        "9111 4.4",
        &[
            get("/ad/x?cc=max-age%3D60", true),
            with("DELETE", "/ad/x?cc=max-age%3D60&status=500", &[], true, 500),
            get("/ad/x?cc=max-age%3D60", false),
            with("DELETE", "/ad/x?cc=max-age%3D60", &[], true, 200),
            get("/ad/x?cc=max-age%3D60", true),
        ],
    ),
    case(
        "PUT invalidates a same-origin Location",
        "9111 4.4",
        &[
            get("/ae/target?cc=max-age%3D60", true),
            get("/ae/target?cc=max-age%3D60", false),
            with(
                "PUT",
                "/ae/other?loc=%2Fae%2Ftarget%3Fcc%3Dmax-age%253D60",
                &[],
                true,
                200,
            ),
            get("/ae/target?cc=max-age%3D60", true),
        ],
    ),
    case(
        "a cross-origin Location is not invalidated",
        "9111 4.4",
        &[
            get("/af/target?cc=max-age%3D60", true),
            with(
                "PUT",
                "/af/other?loc=http%3A%2F%2Fevil.example%2Faf%2Ftarget%3Fcc%3Dmax-age%253D60",
                &[],
                true,
                200,
            ),
            get("/af/target?cc=max-age%3D60", false),
        ],
    ),
    // --- ranges ---
    // (The range cases are in `range.rs`.)
    case(
        "a range is answered from the stored response",
        "9110 14.2",
        &[
            get("/ag/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/ag/x?cc=max-age%3D60",
                &[("range", "bytes=0-1")],
                false,
                206,
            ),
        ],
    ),
    case(
        "206 is not stored",
        "9111 3.3",
        &[
            with("GET", "/ah/x?cc=max-age%3D60&status=206", &[], true, 206),
            with("GET", "/ah/x?cc=max-age%3D60&status=206", &[], true, 206),
        ],
    ),
    // --- Authorization (RFC 9111 section 3.5) ---
    case(
        "Authorization: not stored without permission",
        "9111 3.5",
        &[
            with(
                "GET",
                "/ai/x?cc=max-age%3D60",
                &[("authorization", "Bearer alice")],
                true,
                200,
            ),
            with(
                "GET",
                "/ai/x?cc=max-age%3D60",
                &[("authorization", "Bearer bob")],
                true,
                200,
            ),
            get("/ai/x?cc=max-age%3D60", true),
        ],
    ),
    case(
        "Authorization: stored with public",
        "9111 3.5",
        &[
            with(
                "GET",
                "/aj/x?cc=public,max-age%3D60",
                &[("authorization", "Bearer alice")],
                true,
                200,
            ),
            get("/aj/x?cc=public,max-age%3D60", false),
        ],
    ),
    case(
        "Authorization: stored with s-maxage",
        "9111 3.5",
        &[
            with(
                "GET",
                "/ak/x?cc=s-maxage%3D60",
                &[("authorization", "Bearer alice")],
                true,
                200,
            ),
            get("/ak/x?cc=s-maxage%3D60", false),
        ],
    ),
    case(
        "Authorization: stored with must-revalidate",
        "9111 3.5",
        &[
            with(
                "GET",
                "/al/x?cc=must-revalidate,max-age%3D60",
                &[("authorization", "Bearer alice")],
                true,
                200,
            ),
            get("/al/x?cc=must-revalidate,max-age%3D60", false),
        ],
    ),
    // --- Vary (RFC 9111 section 4.1) ---
    case(
        "Vary selects by the listed request header",
        "9111 4.1",
        &[
            checked(
                with(
                    "GET",
                    "/am/x?cc=max-age%3D60&vary=accept-encoding",
                    &[("accept-encoding", "gzip")],
                    true,
                    200,
                ),
                gzip_variant,
            ),
            checked(
                with(
                    "GET",
                    "/am/x?cc=max-age%3D60&vary=accept-encoding",
                    &[("accept-encoding", "br")],
                    true,
                    200,
                ),
                br_variant,
            ),
            checked(
                with(
                    "GET",
                    "/am/x?cc=max-age%3D60&vary=accept-encoding",
                    &[("accept-encoding", "gzip")],
                    false,
                    200,
                ),
                gzip_variant,
            ),
            checked(
                with(
                    "GET",
                    "/am/x?cc=max-age%3D60&vary=accept-encoding",
                    &[("accept-encoding", "br")],
                    false,
                    200,
                ),
                br_variant,
            ),
        ],
    ),
    case(
        "Vary: an absent header is its own variant",
        "9111 4.1",
        &[
            with(
                "GET",
                "/an/x?cc=max-age%3D60&vary=accept-encoding",
                &[("accept-encoding", "gzip")],
                true,
                200,
            ),
            get("/an/x?cc=max-age%3D60&vary=accept-encoding", true),
            get("/an/x?cc=max-age%3D60&vary=accept-encoding", false),
        ],
    ),
    case(
        "Vary normalises whitespace in lists",
        "9111 4.1",
        &[
            with(
                "GET",
                "/ao/x?cc=max-age%3D60&vary=accept-encoding",
                &[("accept-encoding", "gzip, br")],
                true,
                200,
            ),
            with(
                "GET",
                "/ao/x?cc=max-age%3D60&vary=accept-encoding",
                &[("accept-encoding", "gzip,br")],
                false,
                200,
            ),
        ],
    ),
    case(
        "Vary: * is never served from the cache",
        "9111 4.1",
        &[
            get("/ap/x?cc=max-age%3D60&vary=*", true),
            get("/ap/x?cc=max-age%3D60&vary=*", true),
        ],
    ),
    case(
        "Vary: Cookie keeps users apart",
        "9111 4.1",
        &[
            with(
                "GET",
                "/aq/x?cc=max-age%3D60&vary=cookie",
                &[("cookie", "user=alice")],
                true,
                200,
            ),
            with(
                "GET",
                "/aq/x?cc=max-age%3D60&vary=cookie",
                &[("cookie", "user=bob")],
                true,
                200,
            ),
            with(
                "GET",
                "/aq/x?cc=max-age%3D60&vary=cookie",
                &[("cookie", "user=alice")],
                false,
                200,
            ),
        ],
    ),
    case(
        "Vary on two headers",
        "9111 4.1",
        &[
            with(
                "GET",
                "/ar/x?cc=max-age%3D60&vary=accept-encoding,accept-language",
                &[("accept-encoding", "gzip"), ("accept-language", "fr")],
                true,
                200,
            ),
            with(
                "GET",
                "/ar/x?cc=max-age%3D60&vary=accept-encoding,accept-language",
                &[("accept-encoding", "gzip"), ("accept-language", "de")],
                true,
                200,
            ),
            with(
                "GET",
                "/ar/x?cc=max-age%3D60&vary=accept-encoding,accept-language",
                &[("accept-encoding", "gzip"), ("accept-language", "fr")],
                false,
                200,
            ),
        ],
    ),
    // --- request directives (RFC 9111 section 5.2.1) ---
    case(
        "request no-store bypasses",
        "9111 5.2.1.5",
        &[
            get("/as/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/as/x?cc=max-age%3D60",
                &[("cache-control", "no-store")],
                true,
                200,
            ),
        ],
    ),
    case(
        "request no-cache goes to the origin",
        "9111 5.2.1.4",
        &[
            get("/at/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/at/x?cc=max-age%3D60",
                &[("cache-control", "no-cache")],
                true,
                200,
            ),
        ],
    ),
    case(
        "Pragma: no-cache without Cache-Control",
        "9111 5.4",
        &[
            get("/au/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/au/x?cc=max-age%3D60",
                &[("pragma", "no-cache")],
                true,
                200,
            ),
        ],
    ),
    case(
        "Pragma is ignored when Cache-Control is present",
        "9111 5.4",
        &[
            get("/av/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/av/x?cc=max-age%3D60",
                &[("pragma", "no-cache"), ("cache-control", "max-stale=0")],
                false,
                200,
            ),
        ],
    ),
    case(
        "request max-age=0 goes to the origin",
        "9111 5.2.1.1",
        &[
            get("/aw/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/aw/x?cc=max-age%3D60",
                &[("cache-control", "max-age=0")],
                true,
                200,
            ),
        ],
    ),
    case(
        "request max-age above the age is served",
        "9111 5.2.1.1",
        &[
            get("/ax/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/ax/x?cc=max-age%3D60",
                &[("cache-control", "max-age=30")],
                false,
                200,
            ),
        ],
    ),
    case(
        "request min-fresh beyond what is left goes to the origin",
        "9111 5.2.1.3",
        &[
            get("/ay/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/ay/x?cc=max-age%3D60",
                &[("cache-control", "min-fresh=120")],
                true,
                200,
            ),
        ],
    ),
    case(
        "only-if-cached with nothing stored is 504",
        "9111 5.2.1.7",
        &[with(
            "GET",
            "/az/x?cc=max-age%3D60",
            &[("cache-control", "only-if-cached")],
            false,
            504,
        )],
    ),
    case(
        "only-if-cached with a stored response is served",
        "9111 5.2.1.7",
        &[
            get("/ba/x?cc=max-age%3D60", true),
            with(
                "GET",
                "/ba/x?cc=max-age%3D60",
                &[("cache-control", "only-if-cached")],
                false,
                200,
            ),
        ],
    ),
    // --- age and staleness (RFC 9111 section 4.2) ---
    case(
        "an Age past max-age arrives stale: not served",
        "9111 4.2.3",
        &[
            get("/bb/x?cc=max-age%3D60&age=100", true),
            get("/bb/x?cc=max-age%3D60&age=100", true),
        ],
    ),
    case(
        "a stale response is served to max-stale",
        "9111 5.2.1.2",
        &[
            get("/bc/x?cc=max-age%3D60&age=100", true),
            checked(
                with(
                    "GET",
                    "/bc/x?cc=max-age%3D60&age=100",
                    &[("cache-control", "max-stale=3600")],
                    false,
                    200,
                ),
                age_at_least_100,
            ),
        ],
    ),
    case(
        "max-stale with too little allowance goes to the origin",
        "9111 5.2.1.2",
        &[
            get("/bd/x?cc=max-age%3D60&age=100", true),
            with(
                "GET",
                "/bd/x?cc=max-age%3D60&age=100",
                &[("cache-control", "max-stale=10")],
                true,
                200,
            ),
        ],
    ),
    case(
        "must-revalidate is never served stale",
        "9111 5.2.2.2",
        &[
            get("/be/x?cc=max-age%3D60,must-revalidate&age=30", true),
            get("/be/x?cc=max-age%3D60,must-revalidate&age=30", false),
        ],
    ),
    case(
        "proxy-revalidate arriving stale is not stored",
        "9111 5.2.2.8",
        &[
            get("/bf/x?cc=max-age%3D60,proxy-revalidate&age=100", true),
            with(
                "GET",
                "/bf/x?cc=max-age%3D60,proxy-revalidate&age=100",
                &[("cache-control", "max-stale")],
                true,
                200,
            ),
        ],
    ),
    case(
        "an old Date ages the response",
        "9111 4.2.3",
        &[
            get("/bg/x?cc=max-age%3D60&date=-100", true),
            get("/bg/x?cc=max-age%3D60&date=-100", true),
        ],
    ),
    // --- validation from the client (RFC 9110 section 13) ---
    case(
        "If-None-Match matching a fresh entry is 304",
        "9110 13.1.2",
        &[
            get("/bh/x?cc=max-age%3D60&etag=%22v1%22", true),
            checked(
                with(
                    "GET",
                    "/bh/x?cc=max-age%3D60&etag=%22v1%22",
                    &[("if-none-match", "\"v0\", \"v1\"")],
                    false,
                    304,
                ),
                empty_body,
            ),
        ],
    ),
    case(
        "If-None-Match weak comparison",
        "9110 8.8.3.2",
        &[
            get("/bi/x?cc=max-age%3D60&etag=W%2F%22v1%22", true),
            with(
                "GET",
                "/bi/x?cc=max-age%3D60&etag=W%2F%22v1%22",
                &[("if-none-match", "\"v1\"")],
                false,
                304,
            ),
        ],
    ),
    case(
        "If-None-Match not matching is a full response",
        "9110 13.1.2",
        &[
            get("/bj/x?cc=max-age%3D60&etag=%22v1%22", true),
            with(
                "GET",
                "/bj/x?cc=max-age%3D60&etag=%22v1%22",
                &[("if-none-match", "\"v2\"")],
                false,
                200,
            ),
        ],
    ),
    case(
        "If-Modified-Since after Last-Modified is 304",
        "9110 13.1.3",
        &[
            get("/bk/x?cc=max-age%3D60&lm=-3600", true),
            with(
                "GET",
                "/bk/x?cc=max-age%3D60&lm=-3600",
                &[("if-modified-since", "Sun, 06 Nov 2033 08:49:37 GMT")],
                false,
                304,
            ),
        ],
    ),
    // --- headers on the way out ---
    case(
        "hop-by-hop headers are not replayed",
        "9110 7.6.1, 9111 3.1",
        &[
            get("/bl/x?cc=max-age%3D60&hop=1", true),
            checked(get("/bl/x?cc=max-age%3D60&hop=1", false), no_hop_by_hop),
        ],
    ),
    case(
        "bodies over the limit stream through unstored",
        "9111 3.1",
        &[
            get("/bm/x?cc=max-age%3D60&len=3000000", true),
            get("/bm/x?cc=max-age%3D60&len=3000000", true),
        ],
    ),
    // --- validation (RFC 9111 section 4.3) ---
    case("a stale entry with an ETag is revalidated with If-None-Match", "9111 4.3.1, 4.3.3", &[
        get("/ca/x?cc=max-age%3D1&age=5&etag=%22e1%22", true),
        checked(get("/ca/x?cc=max-age%3D1&age=5&etag=%22e1%22", true), revalidated_first_call),
    ]),
    case("a stale entry with Last-Modified is revalidated with If-Modified-Since", "9111 4.3.1", &[
        get("/cb/x?cc=max-age%3D1&age=5&lm=-3600", true),
        checked(get("/cb/x?cc=max-age%3D1&age=5&lm=-3600", true), revalidated_first_call),
    ]),
    case("no-cache with a validator is stored and validated on every use", "9111 5.2.2.4", &[
        get("/cc/x?cc=no-cache&etag=%22e1%22", true),
        checked(get("/cc/x?cc=no-cache&etag=%22e1%22", true), revalidated_first_call),
        checked(get("/cc/x?cc=no-cache&etag=%22e1%22", true), revalidated_first_call),
    ]),
    case("a 304 updates the stored header fields", "9111 4.3.4", &[
        get("/cd/x?cc=max-age%3D0&etag=%22e1%22&upd=1", true),
        checked(get("/cd/x?cc=max-age%3D0&etag=%22e1%22&upd=1", true), updated_by_304),
    ]),
    case("a 304 with fresh max-age makes the entry fresh again", "9111 4.3.4", &[
        get("/ce/x?cc=max-age%3D60&age=100&etag=%22e1%22", true),
        checked(get("/ce/x?cc=max-age%3D60&age=100&etag=%22e1%22", true), revalidated_first_call),
    ]),
    case("request no-cache revalidates a fresh entry", "9111 5.2.1.4", &[
        get("/cf/x?cc=max-age%3D60&etag=%22e1%22", true),
        checked(with("GET", "/cf/x?cc=max-age%3D60&etag=%22e1%22", &[("cache-control", "no-cache")], true, 200), revalidated_first_call),
    ]),
    // --- serving stale (RFC 5861) ---
    case("stale-while-revalidate serves stale at once", "5861 3", &[
        get("/cg/x?cc=max-age%3D1,stale-while-revalidate%3D600&age=5", true),
        in_background(checked(get("/cg/x?cc=max-age%3D1,stale-while-revalidate%3D600&age=5", false), stale_first_call)),
    ]),
    case("stale-while-revalidate does not apply with must-revalidate", "5861 3, 9111 5.2.2.2", &[
        get("/ch/x?cc=max-age%3D1,must-revalidate,stale-while-revalidate%3D600&age=5&etag=%22e%22", true),
        checked(get("/ch/x?cc=max-age%3D1,must-revalidate,stale-while-revalidate%3D600&age=5&etag=%22e%22", true), revalidated_first_call),
    ]),
    case("stale-if-error serves stale when the origin answers 5xx", "5861 4", &[
        get("/ci/x?cc=max-age%3D1,stale-if-error%3D600&age=5", true),
        checked(with("GET", "/ci/x?cc=max-age%3D1,stale-if-error%3D600&age=5", &[("x-fail", "1")], true, 200), stale_first_call),
    ]),
    case("a request's stale-if-error applies too", "5861 4", &[
        get("/cj/x?cc=max-age%3D1&age=5&etag=%22e%22", true),
        checked(with("GET", "/cj/x?cc=max-age%3D1&age=5&etag=%22e%22", &[("x-fail", "1"), ("cache-control", "stale-if-error=600")], true, 200), stale_first_call),
    ]),
    case("without stale-if-error a 5xx is passed on", "5861 4", &[
        get("/ck/x?cc=max-age%3D1&age=5&etag=%22e%22", true),
        with("GET", "/ck/x?cc=max-age%3D1&age=5&etag=%22e%22", &[("x-fail", "1")], true, 500),
    ]),
    case(
        "a revalidation that may not be stored still answers a plain GET in full (cookie)",
        "9111 4.3.3, 9110 15.4.5",
        &[
            get("/cz/x?cc=max-age%3D1&age=5&etag=%22e%22", true),
            checked(
                with("GET", "/cz/x?cc=max-age%3D1&age=5&etag=%22e%22", &[("cookie", "u=1")], true, 200),
                whole_first_call,
            ),
        ],
    ),
    case(
        "a revalidation whose 304 sets a cookie still answers a plain GET in full",
        "9111 4.3.3, 9110 15.4.5",
        &[
            get("/da/x?cc=max-age%3D1&age=5&etag=%22e%22&c304", true),
            checked(get("/da/x?cc=max-age%3D1&age=5&etag=%22e%22&c304", true), whole_first_call),
        ],
    ),
    case(
        "a private variant is passed alone; the stored variants stay served",
        "9111 4.1",
        &[
            with("GET", "/db/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "fr")], true, 200),
            with("GET", "/db/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "de")], true, 200),
            with("GET", "/db/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "fr")], false, 200),
            with("GET", "/db/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "de")], true, 200),
        ],
    ),
    case(
        "a private variant first: the variants that follow are stored",
        "9111 4.1",
        &[
            with("GET", "/dc/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "de")], true, 200),
            with("GET", "/dc/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "fr")], true, 200),
            with("GET", "/dc/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "fr")], false, 200),
            with("GET", "/dc/x?cc=max-age%3D60&vary=accept-language&pfor=de", &[("accept-language", "de")], true, 200),
        ],
    ),
    case(
        "queries are part of the key",
        "9111 2",
        &[
            get("/bn/x?cc=max-age%3D60&v=1", true),
            get("/bn/x?cc=max-age%3D60&v=2", true),
            get("/bn/x?cc=max-age%3D60&v=1", false),
        ],
    ),
];
