//! An HTTP/1.1 load balancer to run; see [`examples::balance_proxy`] for what it does.
//!
//! ```sh
//! cargo run --release -p examples --example balance_proxy -- \
//!     --listen 127.0.0.1:8080 --upstream 127.0.0.1:9001,127.0.0.1:9002 \
//!     --pick round-robin --health-path /healthz --admin 127.0.0.1:8081
//! cargo run --release -p examples --example balance_proxy -- --help
//! ```

fn main() {
    examples::balance_proxy::main();
}
