//! A standalone caching reverse proxy; see [`examples::cache_proxy`] for what it does.
//!
//! ```sh
//! cargo run --release -p examples --example cache_proxy -- \
//!     --listen 127.0.0.1:8080 --upstream http://127.0.0.1:8000 [--memory-mb 256] [--disk-dir DIR] \
//!     [--header-read-timeout-ms 30000] [--idle-timeout-ms 60000] [--max-connections 10000]
//! ```
//!
//! At the edge it refuses (400) requests with a missing, doubled or invalid `Host`,
//! strips hop-by-hop and client-sent forwarding fields before the cache reads a request,
//! and bounds header reads, idle connections and the number of connections; the module
//! docs list every guarantee and default.

fn main() {
    examples::cache_proxy::main();
}
