//! A child process for the cache tests.
//!
//! `cache-writer DIR loop` writes `k0`, `k1`, ... to the disk tier in `DIR`, printing
//! `acked N` once write `N` is committed, until it is killed (or a million writes).
//! `cache-writer DIR range PREFIX COUNT` writes `PREFIX0` .. `PREFIX{COUNT-1}` and exits.

use std::io::Write;
use std::time::Duration;

use tower_cache::DiskTier;

/// The value the writer stores under `key`; tests check it byte for byte.
fn value_of(key: &str) -> bytes::Bytes {
    format!("value-of-{key}|").repeat(100).into()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: cache-writer DIR (loop | range PREFIX COUNT)";
    let dir = args.get(1).ok_or(usage)?;
    let disk = DiskTier::builder(dir).map_size(256 << 20).open()?;
    let ttl = Duration::from_secs(3600);
    let mut out = std::io::stdout().lock();
    match args.get(2).map(String::as_str) {
        Some("loop") => {
            writeln!(out, "ready")?;
            for n in 0..1_000_000u64 {
                let key = format!("k{n}");
                disk.set(&key, value_of(&key), ttl).await?;
                writeln!(out, "acked {n}")?;
                out.flush()?;
            }
        }
        Some("range") => {
            let prefix = args.get(3).ok_or(usage)?;
            let count: u64 = args.get(4).ok_or(usage)?.parse()?;
            for n in 0..count {
                let key = format!("{prefix}{n}");
                disk.set(&key, value_of(&key), ttl).await?;
            }
            disk.close().await;
            writeln!(out, "done {count}")?;
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
