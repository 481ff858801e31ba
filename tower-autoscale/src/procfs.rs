//! CPU and memory of local processes, from `/proc` (Linux), normalised to what the
//! processes may use: CPU per core of the host or of the cgroup v2 CPU quota
//! (`cpu.max`), memory per the cgroup's `memory.max` or the host's RAM.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One process's use since the previous sample.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ProcessUse {
    /// CPU used over the interval, as a share of the cores it may use (0 to 1).
    pub cpu: f64,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
    /// Resident memory as a share of the memory limit (0 to 1).
    pub memory: f64,
}

/// Samples processes' CPU and memory; keeps the previous CPU times to take deltas.
#[derive(Debug)]
pub struct ProcessSampler {
    proc_root: PathBuf,
    cores: f64,
    memory_limit: u64,
    ticks_per_sec: f64,
    page_size: u64,
    last: HashMap<u32, (u64, Instant)>,
}

impl Default for ProcessSampler {
    fn default() -> Self {
        Self::new()
    }
}

/// The cgroup v2 CPU quota in cores from a `cpu.max` text (`"max 100000"`: none).
pub fn cpu_quota_cores(cpu_max: &str) -> Option<f64> {
    let mut it = cpu_max.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next()?.parse().ok()?;
    if quota == "max" || period <= 0.0 {
        return None;
    }
    let q: f64 = quota.parse().ok()?;
    (q > 0.0).then_some(q / period)
}

/// The directory of this process's cgroup v2, if it has one.
fn own_cgroup(proc_root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(proc_root.join("self/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')))
}

impl ProcessSampler {
    /// A sampler of this host's `/proc`, normalised to this process's cgroup limits.
    pub fn new() -> Self {
        let proc_root = PathBuf::from("/proc");
        let host_cores = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        let cgroup = own_cgroup(&proc_root);
        let quota = cgroup
            .as_ref()
            .and_then(|c| std::fs::read_to_string(c.join("cpu.max")).ok())
            .and_then(|t| cpu_quota_cores(&t));
        let cores = quota.map_or(host_cores, |q| q.min(host_cores)).max(0.01);
        let mem_cgroup = cgroup
            .as_ref()
            .and_then(|c| std::fs::read_to_string(c.join("memory.max")).ok())
            .and_then(|t| t.trim().parse::<u64>().ok());
        let mem_total = std::fs::read_to_string(proc_root.join("meminfo"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map(|kb| kb * 1024);
        let memory_limit = match (mem_cgroup, mem_total) {
            (Some(c), Some(t)) => c.min(t),
            (Some(c), None) => c,
            (None, Some(t)) => t,
            (None, None) => u64::MAX,
        };
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .unwrap_or(100) as f64;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .filter(|p| *p > 0)
            .unwrap_or(4096) as u64;
        Self {
            proc_root,
            cores,
            memory_limit,
            ticks_per_sec: ticks,
            page_size: page,
            last: HashMap::new(),
        }
    }

    /// The cores the processes may use (host cores, or fewer under a cgroup quota).
    pub fn cores(&self) -> f64 {
        self.cores
    }

    /// The memory limit memory shares are taken of.
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
    }

    /// CPU ticks (user + system) and resident pages of `pid`.
    fn read(&self, pid: u32) -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string(self.proc_root.join(format!("{pid}/stat"))).ok()?;
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state); utime is field 14, stime 15, rss 24.
        let utime: u64 = f.get(11)?.parse().ok()?;
        let stime: u64 = f.get(12)?.parse().ok()?;
        let rss: u64 = f.get(21)?.parse().ok()?;
        Some((utime + stime, rss))
    }

    /// `pid`'s use since the previous call for it (the first call gives 0 CPU);
    /// `None` if the process is gone.
    pub fn sample(&mut self, pid: u32) -> Option<ProcessUse> {
        let (ticks, pages) = self.read(pid)?;
        let now = Instant::now();
        let cpu = match self.last.insert(pid, (ticks, now)) {
            Some((t0, at)) => {
                let secs = now.duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    let used = ticks.saturating_sub(t0) as f64 / self.ticks_per_sec;
                    (used / secs / self.cores).clamp(0.0, 1.0)
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        let rss_bytes = pages.saturating_mul(self.page_size);
        Some(ProcessUse {
            cpu,
            rss_bytes,
            memory: (rss_bytes as f64 / self.memory_limit as f64).clamp(0.0, 1.0),
        })
    }

    /// Forgets processes not in `alive`.
    pub fn retain(&mut self, alive: &[u32]) {
        self.last.retain(|pid, _| alive.contains(pid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse() {
        assert_eq!(cpu_quota_cores("max 100000"), None);
        assert_eq!(cpu_quota_cores("200000 100000\n"), Some(2.0));
        assert_eq!(cpu_quota_cores("50000 100000"), Some(0.5));
        assert_eq!(cpu_quota_cores("garbage"), None);
        assert_eq!(cpu_quota_cores("0 100000"), None);
    }

    #[test]
    fn a_busy_process_shows_cpu_and_memory() {
        let mut s = ProcessSampler::new();
        let me = std::process::id();
        assert_eq!(s.sample(me).unwrap().cpu, 0.0);
        // Burn CPU for a while on this thread.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let u = s.sample(me).unwrap();
        // One busy thread of this process: about 1 / cores of the whole.
        // (Lenient: other tests may share the cores.)
        assert!(u.cpu > 0.05 / s.cores(), "{u:?} over {} cores", s.cores());
        assert!(u.rss_bytes > 1 << 20, "{u:?}");
        assert!(u.memory > 0.0 && u.memory < 1.0);
        assert!(
            s.sample(u32::MAX - 1).is_none(),
            "a pid that does not exist"
        );
    }
}
