//! The fleet (`examples::fleet::main`), for the end-to-end tests: they start it as a
//! child process with `--port 0` and drive it over its gateway. Its training instances
//! are child processes of this same binary (`--role training --port N`).

#[tokio::main]
async fn main() -> Result<(), examples::fleet::BoxError> {
    examples::fleet::main().await
}
