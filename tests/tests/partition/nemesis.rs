//! The nemesis: a seeded schedule of partitions, pauses and kills, and its run.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;

/// One fault of the nemesis.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// nftables drop rules between the node and its peers (on the HTTP bus the origin
    /// still reaches it; on the Redis bus, whose server is the origin, it is cut off from
    /// that too); the test's clients still reach it.
    Partition,
    /// The node's link down: it reaches nobody and nobody reaches it.
    Isolate,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// SIGKILL, then a new process with the same id and address.
    Kill,
}

/// The nemesis's schedule: (victim, fault, how long it lasts, quiet time after).
pub(crate) fn schedule(rng: &mut Rng, total: Duration) -> Vec<(usize, Fault, Duration, Duration)> {
    let mut out = Vec::new();
    let mut at = Duration::from_millis(1500);
    while at < total {
        let victim = rng.below(NODES as u64) as usize;
        let fault = match rng.below(4) {
            0 => Fault::Partition,
            1 => Fault::Isolate,
            2 => Fault::Pause,
            _ => Fault::Kill,
        };
        // From well under to well over the time the bus gives a frame up after.
        let hold = Duration::from_millis(500 + rng.below(5500));
        let quiet = Duration::from_millis(500 + rng.below(2000));
        at += hold + quiet;
        out.push((victim, fault, hold, quiet));
    }
    out
}

pub(crate) async fn nemesis(
    cluster: &Cluster,
    plan: &[(usize, Fault, Duration, Duration)],
    t0: Instant,
) -> Instant {
    let mut last_heal = Instant::now();
    for &(victim, fault, hold, quiet) in plan {
        tokio::time::sleep(quiet).await;
        let node = victim + 1;
        let at = t0.elapsed().as_secs_f64();
        say(format_args!(
            "[{at:6.2}s] nemesis: {fault:?} node {node} for {:.2}s",
            hold.as_secs_f64()
        ));
        match fault {
            Fault::Partition => {
                let mut others: Vec<Ipv4Addr> = (0..NODES)
                    .filter(|&j| j != victim)
                    .map(|j| cluster.lab.host(j).addr)
                    .collect();
                if cluster.bus == BusKind::Redis {
                    others.push(cluster.redis_addr());
                }
                cluster.lab.partition(victim, &others).unwrap();
                tokio::time::sleep(hold).await;
                cluster.lab.heal(victim).unwrap();
            }
            Fault::Isolate => {
                cluster.lab.link(victim, false).unwrap();
                tokio::time::sleep(hold).await;
                cluster.lab.link(victim, true).unwrap();
            }
            Fault::Pause => {
                cluster.signal(victim, nix::sys::signal::Signal::SIGSTOP);
                tokio::time::sleep(hold).await;
                cluster.signal(victim, nix::sys::signal::Signal::SIGCONT);
            }
            Fault::Kill => {
                let pid = cluster.pids.lock().unwrap()[victim];
                cluster.lab.kill(pid);
                tokio::time::sleep(hold).await;
                cluster.start_node(victim);
                cluster.wait_ready(victim).await;
            }
        }
        last_heal = Instant::now();
        say(format_args!(
            "[{:6.2}s] nemesis: healed node {node}",
            t0.elapsed().as_secs_f64()
        ));
    }
    last_heal
}
