//! Ready-made checks for resource probes: process memory, process CPU, and a
//! user-supplied pool.
//!
//! Each returns a check for [`Probe::resource`](crate::Probe::resource), or a
//! [`BuildError`] for a limit that cannot work. Memory and CPU read `/proc/self` and so
//! work on Linux; elsewhere the check fails with a message saying it is unsupported.
//!
//! ```
//! use tower_health::{resource, Probe, Probes};
//!
//! let probes = Probes::new();
//! probes.register(Probe::resource("memory", resource::memory_below(2 << 30)?))?;
//! probes.register(Probe::resource("cpu", resource::cpu_below(0.9)?))?;
//! probes.register(Probe::resource("db-pool", resource::pool_below(|| (3, 10), 0.8)?))?;
//! # Ok::<_, tower_health::BuildError>(())
//! ```

use std::future::{ready, Ready};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::BuildError;

/// Bytes per page in `/proc/self/statm` (4 KiB on the platforms this reads).
const PAGE: u64 = 4096;
/// Clock ticks per second in `/proc/self/stat` (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

/// The process's resident set size, from `/proc/self/statm`.
pub fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE)
}

/// CPU seconds (user + system) the process has used, from `/proc/self/stat`.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS)
}

/// Fails while the resident set is above `max_bytes`.
pub fn memory_below(
    max_bytes: u64,
) -> Result<impl Fn() -> Ready<Result<(), String>> + Send + Sync + Clone + 'static, BuildError> {
    if max_bytes == 0 {
        return Err(BuildError::new(
            "memory_below: the limit is 0 bytes; give the process's memory budget",
        ));
    }
    Ok(move || {
        ready(match process_rss_bytes() {
            Some(rss) if rss <= max_bytes => Ok(()),
            Some(rss) => Err(format!("resident memory {rss} bytes is over {max_bytes}")),
            None => Err("process memory is unknown here (no /proc/self/statm)".to_string()),
        })
    })
}

/// Fails while the process used more than `max_fraction` of one core since the previous
/// check (1.0 = one core busy; above 1 allows several cores).
pub fn cpu_below(
    max_fraction: f64,
) -> Result<impl Fn() -> Ready<Result<(), String>> + Send + Sync + Clone + 'static, BuildError> {
    if !(max_fraction > 0.0 && max_fraction.is_finite()) {
        return Err(BuildError::new(format!(
            "cpu_below: the limit {max_fraction} must be a positive fraction of a core, e.g. 0.8"
        )));
    }
    let last: Arc<Mutex<Option<(Instant, f64)>>> = Arc::default();
    Ok(move || {
        let now = Instant::now();
        let Some(cpu) = process_cpu_seconds() else {
            return ready(Err(
                "process CPU is unknown here (no /proc/self/stat)".to_string()
            ));
        };
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        let result = match *last {
            Some((at, before)) => {
                let wall = now.duration_since(at).as_secs_f64();
                let used = if wall > 0.0 {
                    (cpu - before) / wall
                } else {
                    0.0
                };
                if used <= max_fraction {
                    Ok(())
                } else {
                    Err(format!(
                        "CPU use {used:.2} of a core is over {max_fraction}"
                    ))
                }
            }
            // The first check has nothing to compare with.
            None => Ok(()),
        };
        *last = Some((now, cpu));
        ready(result)
    })
}

/// Fails while `in_use / capacity` from `usage` is above `max_fraction` (e.g. a
/// connection pool's checked-out connections over its size).
pub fn pool_below<F>(
    usage: F,
    max_fraction: f64,
) -> Result<impl Fn() -> Ready<Result<(), String>> + Send + Sync + Clone + 'static, BuildError>
where
    F: Fn() -> (usize, usize) + Send + Sync + 'static,
{
    if !(max_fraction > 0.0 && max_fraction <= 1.0) {
        return Err(BuildError::new(format!(
            "pool_below: the limit {max_fraction} must be a fraction in (0, 1], e.g. 0.8"
        )));
    }
    let usage = Arc::new(usage);
    Ok(move || {
        let (in_use, capacity) = usage();
        ready(if capacity == 0 {
            Err("pool has no capacity".to_string())
        } else if in_use as f64 / capacity as f64 <= max_fraction {
            Ok(())
        } else {
            Err(format!(
                "pool {in_use}/{capacity} in use is over {max_fraction}"
            ))
        })
    })
}
