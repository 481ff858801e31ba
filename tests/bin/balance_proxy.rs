//! The `balance_proxy` example as a binary of this package, so that tests can run it as
//! a child process (`CARGO_BIN_EXE_balance-proxy`).

fn main() {
    examples::balance_proxy::main();
}
