//! The Redis bus against a real `redis-server` child process on a free loopback port
//! (cargo feature `redis`; `.ci/run` installs redis-server when missing).
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use tower_cache::coordinator::{Coordinator, RedisBus};
use tower_cache::{Cache, MemoryTier, WriteTiers};

const TTL: Duration = Duration::from_secs(600);
const SECRET: &[u8] = b"sixteen+ bytes of shared secret";

struct Redis {
    child: std::process::Child,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        // Until it accepts connections.
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn until(mut ok: impl FnMut() -> bool) {
    while !ok() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_redis_survive_a_server_restart() {
    let _w = common::watchdog("redis_bus", common::LIMIT);
    let port = support_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let mut redis = Some(Redis::start(port));
    let mut nodes = Vec::new();
    let mut buses = Vec::new();
    for i in 1..=3 {
        let bus = RedisBus::connect(&url, "tower-cache:test").unwrap();
        buses.push(bus.clone());
        let cache = Cache::new(MemoryTier::builder().build().unwrap());
        nodes.push(
            Coordinator::builder(cache, bus)
                .node_id(i)
                .secret(SECRET)
                .start()
                .unwrap(),
        );
    }
    let buses2 = buses.clone();
    tokio::time::timeout(
        Duration::from_secs(20),
        until(|| buses2.iter().all(|b| b.is_connected())),
    )
    .await
    .expect("subscribed");
    for n in &nodes {
        n.cache()
            .set("provider:1", "v".into(), TTL, WriteTiers::ALL)
            .await
            .unwrap();
    }
    nodes[0].invalidate_pattern("provider:*").await.unwrap();
    for n in &nodes[1..] {
        tokio::time::timeout(Duration::from_secs(20), n.applied(1))
            .await
            .expect("propagated over redis");
        assert!(n.cache().get("provider:1").await.is_none());
    }

    // The server goes away: every node drops its memory tier, since it cannot know what
    // it misses meanwhile.
    for n in &nodes {
        n.cache()
            .set("kept-until-the-outage", "v".into(), TTL, WriteTiers::ALL)
            .await
            .unwrap();
    }
    drop(redis.take());
    let nodes2 = nodes.clone();
    tokio::time::timeout(
        Duration::from_secs(20),
        until(|| nodes2.iter().all(|n| n.status().memory_flushes >= 1)),
    )
    .await
    .expect("every node noticed the lost connection");
    for n in &nodes {
        assert!(n.cache().get("kept-until-the-outage").await.is_none());
    }
    tokio::time::timeout(
        Duration::from_secs(20),
        until(|| nodes2.iter().all(|n| !n.status().links[0].up)),
    )
    .await
    .expect("the status shows the link down");

    // It comes back on the same port: the nodes resubscribe and invalidations flow again.
    let _redis = Redis::start(port);
    let buses2 = buses.clone();
    tokio::time::timeout(
        Duration::from_secs(20),
        until(|| {
            buses2
                .iter()
                .all(|b| b.is_connected() && b.reconnects() >= 1)
        }),
    )
    .await
    .expect("resubscribed");
    for n in &nodes {
        let links = n.status().links;
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].target, "redis channel tower-cache:test");
        assert!(links[0].up && links[0].failures >= 1, "{links:?}");
    }
    for n in &nodes {
        n.cache()
            .set("user:1", "v".into(), TTL, WriteTiers::ALL)
            .await
            .unwrap();
    }
    nodes[2].invalidate("user:1").await.unwrap();
    // Node 1 applied one remote message before (node 0 sent the first), node 0 none.
    for (n, applied) in nodes[..2].iter().zip([1, 2]) {
        tokio::time::timeout(Duration::from_secs(20), n.applied(applied))
            .await
            .expect("propagated after the restart");
        assert!(n.cache().get("user:1").await.is_none());
    }
}

fn support_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_bad_url_is_a_build_error() {
    let e = RedisBus::connect("not a url", "c").unwrap_err();
    assert!(e.to_string().contains("redis bus"), "{e}");
    let e = RedisBus::connect("redis://127.0.0.1:1/", "").unwrap_err();
    assert!(e.to_string().contains("channel"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_one_replayed_frame_over_redis_cannot_flush_a_node() {
    use tower_cache::coordinator::{Bus, BusEvent};
    let _w = common::watchdog("redis_flood", Duration::from_secs(120));
    let port = support_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let _redis = Redis::start(port);
    let (bus_a, bus_b) = (
        RedisBus::connect(&url, "flood").unwrap(),
        RedisBus::connect(&url, "flood").unwrap(),
    );
    let mut tap = bus_b.subscribe();
    let node = |bus: RedisBus, id| {
        Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
            .node_id(id)
            .secret(SECRET)
            .start()
            .unwrap()
    };
    let (a, b) = (node(bus_a.clone(), 1), node(bus_b.clone(), 2));
    tokio::time::timeout(
        Duration::from_secs(20),
        until(|| bus_a.is_connected() && bus_b.is_connected()),
    )
    .await
    .expect("subscribed");
    a.invalidate("k").await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), b.applied(1))
        .await
        .unwrap();
    let frame = match tap.next().await.unwrap() {
        BusEvent::Frame(f) => f,
        e => panic!("{e:?}"),
    };
    drop(tap);
    b.cache()
        .set("unrelated", "v".into(), TTL, WriteTiers::ALL)
        .await
        .unwrap();

    // 16 x 1,000 copies, pipelined.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for _ in 0..16 {
        let mut pipe = redis::pipe();
        for _ in 0..1_000 {
            pipe.cmd("PUBLISH")
                .arg("flood")
                .arg(frame.as_ref())
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    a.invalidate("after").await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), b.applied(2))
        .await
        .unwrap();
    let s = b.status();
    assert_eq!(s.memory_flushes, 0, "{s:?}");
    assert_eq!(b.cache().get("unrelated").await.unwrap(), "v");
}

/// Sends `signal` (`STOP`, `CONT`) to a process with kill(1).
fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// A server that stops answering but keeps its connections open (paused here; a
/// partition does the same): the subscription is not dropped, so only a check that it
/// still answers finds out. The node must hear of it (`Lost`, so it drops its memory
/// tier) and subscribe again once the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_stops_answering_is_taken_as_lost_and_made_again() {
    use tower_cache::coordinator::{Bus, BusEvent};
    let _w = common::watchdog("redis_liveness", common::LIMIT);
    let port = support_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let redis = Redis::start(port);
    let bus = RedisBus::builder(&url, "tower-cache:liveness")
        .ping_interval(Duration::from_millis(100))
        .ping_timeout(Duration::from_millis(300))
        .connect()
        .unwrap();
    let mut events = bus.subscribe();
    tokio::time::timeout(Duration::from_secs(20), until(|| bus.is_connected()))
        .await
        .expect("subscribed");
    signal(redis.child.id(), "STOP");
    let lost = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.next().await {
                Some(BusEvent::Lost) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    signal(redis.child.id(), "CONT");
    assert_eq!(lost, Ok(true), "a silent subscription went unnoticed");
    assert!(bus.liveness_failures() >= 1);
    tokio::time::timeout(
        Duration::from_secs(20),
        until(|| bus.is_connected() && bus.reconnects() >= 1),
    )
    .await
    .expect("subscribed again once the server answers");
    let e = RedisBus::builder(&url, "c")
        .ping_timeout(Duration::ZERO)
        .connect()
        .unwrap_err();
    assert!(e.to_string().contains("ping_timeout"), "{e}");
}

/// Bursts of invalidations with quiet pauses for digests between them, one frame
/// published while the server is paused (its digest queued behind it): no digest
/// overtakes the frame it numbers, so none shows a gap that is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_over_redis_never_overtake_the_frame_they_number() {
    let _w = common::watchdog("redis_digest_order", common::LIMIT);
    let port = support_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let redis = Redis::start(port);
    // Pings wait long: the pause below is not a lost subscription.
    let bus = || {
        RedisBus::builder(&url, "digests")
            .ping_timeout(Duration::from_secs(30))
            .connect()
            .unwrap()
    };
    let (bus_a, bus_b) = (bus(), bus());
    let node = |bus: RedisBus, id| {
        Coordinator::builder(Cache::new(MemoryTier::builder().build().unwrap()), bus)
            .node_id(id)
            .secret(SECRET)
            .digest_interval(Duration::from_millis(10))
            .start()
            .unwrap()
    };
    let (a, b) = (node(bus_a.clone(), 1), node(bus_b.clone(), 2));
    tokio::time::timeout(
        Duration::from_secs(20),
        until(|| bus_a.is_connected() && bus_b.is_connected()),
    )
    .await
    .expect("subscribed");
    b.cache()
        .set("unrelated", "v".into(), TTL, WriteTiers::ALL)
        .await
        .unwrap();
    let mut sent = 0;
    for burst in 0..10 {
        if burst == 5 {
            // Until a digest is queued behind a frame waiting to be published (a digest
            // made just as the server paused may be the one waiting instead).
            let mut behind = false;
            for _ in 0..20 {
                signal(redis.child.id(), "STOP");
                a.invalidate("while-paused").await.unwrap();
                sent += 1;
                let before = a.status().digests_sent;
                behind = tokio::time::timeout(
                    Duration::from_millis(300),
                    until(|| a.status().digests_sent > before),
                )
                .await
                .is_ok();
                signal(redis.child.id(), "CONT");
                if behind {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            assert!(behind, "no digest was ever queued behind a waiting frame");
        }
        for i in 0..=burst % 3 {
            a.invalidate(&format!("k{burst}-{i}")).await.unwrap();
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    tokio::time::timeout(Duration::from_secs(30), b.applied(sent))
        .await
        .unwrap_or_else(|_| panic!("{:?}", b.status()));
    tokio::time::timeout(
        Duration::from_secs(20),
        until(|| b.status().digests_received > 0),
    )
    .await
    .expect("digests arrive");
    let s = b.status();
    assert_eq!(
        (s.applied, s.sequence_gaps, s.memory_flushes),
        (sent, 0, 0),
        "{s:?}"
    );
    assert_eq!(b.cache().get("unrelated").await.unwrap(), "v");
}
