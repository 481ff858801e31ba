//! A standalone caching reverse proxy; see [`examples::cache_proxy`] for what it does.
//!
//! ```sh
//! cargo run --release -p examples --example cache_proxy -- \
//!     --listen 127.0.0.1:8080 --upstream http://127.0.0.1:8000 [--memory-mb 256] [--disk-dir DIR]
//! ```

fn main() {
    examples::cache_proxy::main();
}
