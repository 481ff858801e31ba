//! End-to-end tests of the whole fleet (`examples::fleet`), run as a real child process
//! (the `fleet` binary of this package) whose training instances are real child
//! processes of it, driven over real sockets through its gateway. Each test bounds
//! itself in time.
//!
//! One module per topic; what they share is in `helpers`.

mod api;
mod caching;
mod edge;
mod helpers;
mod lifecycle;
mod rate_limits;
mod scaling;
