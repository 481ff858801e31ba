//! The disk tier across real processes: a writer killed with SIGKILL mid-loop, and two
//! processes sharing one LMDB environment.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tower_cache::DiskTier;

const WRITER: &str = env!("CARGO_BIN_EXE_cache-writer");
const BOUND: Duration = Duration::from_secs(60);

fn value_of(key: &str) -> String {
    format!("value-of-{key}|").repeat(100)
}

#[tokio::test]
async fn every_write_acknowledged_before_a_sigkill_survives_it() {
    support::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(WRITER)
        .arg(dir.path())
        .arg("loop")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let last_acked = tokio::time::timeout(BOUND, async {
        let mut last = None;
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(n) = line.strip_prefix("acked ") {
                let n: u64 = n.parse().unwrap();
                last = Some(n);
                if n >= 300 {
                    break;
                }
            }
        }
        last.expect("the writer acknowledged writes")
    })
    .await
    .expect("the writer made progress in time");
    // SIGKILL in the middle of the write loop: no destructor, no flush.
    child.start_kill().unwrap();
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the writer was killed, not finished");
    // Acks printed after we stopped reading also count: read what is left in the pipe.
    let mut last_acked = last_acked;
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(n) = line.strip_prefix("acked ").and_then(|n| n.parse().ok()) {
            last_acked = n;
        }
    }

    let disk = DiskTier::builder(dir.path())
        .map_size(256 << 20)
        .open()
        .unwrap();
    for n in 0..=last_acked {
        let key = format!("k{n}");
        let value = disk
            .get(&key)
            .unwrap_or_else(|| panic!("acknowledged write {key} was lost (last ack {last_acked})"));
        assert_eq!(value, value_of(&key).as_bytes(), "{key}");
    }
    // The environment is healthy after the kill: it takes new writes.
    disk.set("after-kill", "ok".into(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(disk.get("after-kill").unwrap(), "ok");
}

#[tokio::test]
async fn two_processes_share_one_environment() {
    support::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    // This process has the environment open the whole time, too.
    let disk = DiskTier::builder(dir.path())
        .map_size(256 << 20)
        .open()
        .unwrap();
    let spawn = |prefix: &str| {
        Command::new(WRITER)
            .arg(dir.path())
            .args(["range", prefix, "500"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .output()
    };
    let (a, b) = tokio::time::timeout(BOUND, async { tokio::join!(spawn("a"), spawn("b")) })
        .await
        .expect("writers finished in time");
    for out in [a.unwrap(), b.unwrap()] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done 500");
    }
    let stats = disk.stats();
    assert_eq!(
        stats.entries, 1000,
        "both writers' commits are visible here"
    );
    for prefix in ["a", "b"] {
        for n in [0, 249, 499] {
            let key = format!("{prefix}{n}");
            assert_eq!(disk.get(&key).unwrap(), value_of(&key).as_bytes());
        }
    }
    assert!(
        stats.stored_bytes > 0 && stats.stored_bytes < stats.logical_bytes,
        "the shared byte count covers both writers' compressed records"
    );
}

/// The folders under `<dir>/spool`, one per open tier.
fn spool_folders(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join("spool")) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    out.sort();
    out
}

/// Spool folders across processes: a tier that opens keeps the folder of a tier open in
/// another process (its lock held), and removes it once that process is killed.
#[tokio::test]
async fn a_tier_keeps_another_process_s_spool_folder_until_that_process_dies() {
    support::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(WRITER)
        .arg(dir.path())
        .arg("loop")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(BOUND, async {
        while lines.next_line().await.unwrap().as_deref() != Some("ready") {}
        let theirs = spool_folders(dir.path());
        assert_eq!(theirs.len(), 1, "{theirs:?}");
        let open = || {
            DiskTier::builder(dir.path())
                .map_size(256 << 20)
                .open()
                .unwrap()
        };
        let disk = open();
        let both = spool_folders(dir.path());
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(both.contains(&theirs[0]), "the live process's folder stays");
        disk.close().await;
        drop(disk);
        while spool_folders(dir.path()) != theirs {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // SIGKILL: the child's lock goes with it, its folder stays until a tier opens.
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        assert_eq!(spool_folders(dir.path()), theirs);
        let disk = open();
        let now = spool_folders(dir.path());
        assert_eq!(now.len(), 1, "{now:?}");
        assert!(
            !now.contains(&theirs[0]),
            "the dead process's folder is removed"
        );
        disk.close().await;
    })
    .await
    .expect("bounded");
}
