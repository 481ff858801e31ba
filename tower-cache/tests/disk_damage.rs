//! A damaged data file never crashes the process.
//!
//! Each damaged file is opened and read in a child process (this test binary run again
//! with one test selected), so a SIGBUS fails the test instead of killing the test run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use tower_cache::{DiskTier, OnDamage};

const CHILD_DIR: &str = "TOWER_CACHE_DAMAGED_DIR";
const CHILD_MODE: &str = "TOWER_CACHE_DAMAGED_MODE";
const KEYS: usize = 600;

fn value(i: usize) -> Bytes {
    // Incompressible enough to take real pages.
    Bytes::from(
        (0..1500)
            .map(|j| ((i * 31 + j * 7) % 251) as u8)
            .collect::<Vec<_>>(),
    )
}

fn builder(dir: &Path) -> tower_cache::DiskTierBuilder {
    DiskTier::builder(dir).map_size(64 << 20)
}

/// The child's side: open the damaged environment, read every key, write and read one.
/// Does nothing unless run by the parent.
#[test]
fn child_opens_and_reads_a_damaged_environment() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let fail = std::env::var(CHILD_MODE).is_ok_and(|m| m == "fail");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opened = builder(&dir)
            .on_damage(if fail {
                OnDamage::Fail
            } else {
                OnDamage::MoveAside
            })
            .open();
        let disk = match opened {
            Ok(disk) => disk,
            Err(e) => {
                println!("OPEN-FAILED: {e}");
                return;
            }
        };
        let mut found = 0;
        for i in 0..KEYS {
            if let Some(v) = disk.get(&format!("k{i}")) {
                assert_eq!(v, value(i), "a value read back must be the one written");
                found += 1;
            }
        }
        disk.set("after", "works".into(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(disk.get("after").unwrap(), "works");
        println!("FOUND {found} DAMAGED {}", disk.stats().damaged_files);
    });
}

/// Writes `KEYS` entries into a fresh environment and closes it; returns the data file's
/// bytes and its page size.
fn healthy_file() -> (Vec<u8>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let disk = builder(dir.path()).open().unwrap();
        for i in 0..KEYS {
            disk.try_set(
                &format!("k{i}"),
                value(i),
                Duration::from_secs(600),
                Default::default(),
            )
            .unwrap();
        }
        disk.flush().await.unwrap();
        disk.close().await;
    });
    let bytes = std::fs::read(dir.path().join("data.mdb")).unwrap();
    (bytes, page_size())
}

fn page_size() -> usize {
    4096
}

struct ChildRun {
    stdout: String,
    dir: tempfile::TempDir,
}

fn run_child(file: &[u8], mode: &str) -> ChildRun {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.mdb"), file).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_opens_and_reads_a_damaged_environment",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_MODE, mode)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the child crashed or failed ({:?}) on a damaged file of {} bytes:\n{stdout}\n{}",
        out.status,
        file.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    ChildRun { stdout, dir }
}

fn moved_aside(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("data.mdb.damaged-")
        })
        .count()
}

#[test]
fn truncated_files_are_moved_aside_and_the_tier_starts_empty() {
    let _w = common::watchdog("truncated_files", common::LIMIT);
    let (file, page) = healthy_file();
    assert!(file.len() > 100 * page, "the file must span many pages");
    // The healthy file reads back whole.
    let whole = run_child(&file, "move");
    assert!(
        whole.stdout.contains(&format!("FOUND {KEYS} DAMAGED 0")),
        "{}",
        whole.stdout
    );
    for cut in [
        file.len() - page,
        file.len() / 2,
        file.len() / 5,
        2 * page + 100,
        page + 10,
        100,
    ] {
        let run = run_child(&file[..cut], "move");
        assert!(
            run.stdout.contains("FOUND 0 DAMAGED 1"),
            "cut at {cut}: {}",
            run.stdout
        );
        assert_eq!(moved_aside(run.dir.path()), 1, "cut at {cut}");
    }
}

#[test]
fn garbage_and_a_zeroed_meta_page_never_crash() {
    let _w = common::watchdog("garbage_files", common::LIMIT);
    let (file, page) = healthy_file();
    let garbage: Vec<u8> = (0..file.len()).map(|i| (i * 7919 % 256) as u8).collect();
    let run = run_child(&garbage, "move");
    assert!(run.stdout.contains("FOUND 0 DAMAGED 1"), "{}", run.stdout);
    // One meta page zeroed: LMDB falls back on the other one, which the check accepts.
    let mut one_meta = file.clone();
    one_meta[..page].fill(0);
    let run = run_child(&one_meta, "move");
    assert!(run.stdout.contains("FOUND"), "{}", run.stdout);
}

#[test]
fn fail_mode_reports_the_damage_and_keeps_the_file() {
    let _w = common::watchdog("fail_mode", common::LIMIT);
    let (file, _) = healthy_file();
    let run = run_child(&file[..file.len() / 2], "fail");
    assert!(
        run.stdout.contains("OPEN-FAILED") && run.stdout.contains("damaged"),
        "{}",
        run.stdout
    );
    assert_eq!(moved_aside(run.dir.path()), 0);
    assert!(run.dir.path().join("data.mdb").exists());
}
