//! The whole fleet on one machine: the README's main command.
//!
//! ```sh
//! cargo run --release -p examples --example fleet                  # the demonstration
//! cargo run --release -p examples --example fleet -- --serve       # serve until Ctrl-C
//! cargo run --release -p examples --example fleet -- --load ramp --duration 60s --chaos kill-one
//! cargo run --release -p examples --example fleet -- --help
//! ```
//!
//! On 127.0.0.1: a gateway on port 3000 (`--port`) with the dashboard at `/`, `/metrics`,
//! `/health/*` and the orchestrator API; the `budget` and `reports` services, each with
//! a two-tier cache (memory, then LMDB) and a coordinator on the invalidation bus; the
//! `training` service as autoscaled child processes of this binary (`--role training
//! --port N`), behind circuit breakers in a latency-aware balancer; the autoscaler loop;
//! and the live view (a full-screen table in a terminal, log lines otherwise).
//!
//! With neither `--load` nor `--serve` it runs a 30-second demonstration (a spike of
//! load that scales training up and back down, one instance killed half-way), prints a
//! summary and stops every child process. The code is in `examples/src/fleet/`.

#[tokio::main]
async fn main() -> Result<(), examples::fleet::BoxError> {
    examples::fleet::main().await
}
