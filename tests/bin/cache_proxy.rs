//! The `cache_proxy` example as a binary of this package, so that tests can run it as a
//! child process (`CARGO_BIN_EXE_cache-proxy`).

fn main() {
    examples::cache_proxy::main();
}
