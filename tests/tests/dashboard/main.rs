//! The fleet's dashboard in a real headless Chromium, driven through WebDriver
//! (chromedriver, with the `fantoccini` client): the page loads with no console errors,
//! shows the instances, follows a change made elsewhere within a few seconds, and a
//! scale click with the token changes the instance count (a wrong token does not).
//!
//! Behind the `browser` feature: `.ci/run` installs `chromium` and `chromium-driver`
//! and runs it with `cargo test --workspace --all-features`.
#![cfg(feature = "browser")]

use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use support::FleetProcess;

const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

/// `POST /session/{id}/se/log {"type": "browser"}`: chromedriver's console log.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

fn which(name: &str, fallbacks: &[&str]) -> String {
    std::env::var(name.to_uppercase())
        .ok()
        .or_else(|| {
            fallbacks
                .iter()
                .find(|p| std::path::Path::new(p).exists())
                .map(|p| p.to_string())
        })
        .unwrap_or_else(|| {
            panic!(
                "no {name}: install chromium and chromium-driver (apt-get install -y chromium \
                 chromium-driver), or set {} to its path",
                name.to_uppercase()
            )
        })
}

/// A chromedriver child process on a free loopback port, killed when dropped.
struct Driver {
    _child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let program = which(
            "chromedriver",
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        );
        let port = support::free_port().unwrap();
        let child = tokio::process::Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < end,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

async fn ready_count(c: &fantoccini::Client) -> Option<u64> {
    let v = c
        .execute(
            "const r = document.getElementById('service-training'); \
             return r ? Number(r.dataset.ready) : null;",
            vec![],
        )
        .await
        .ok()?;
    v.as_u64()
}

/// The text of the element `locator` finds.
async fn text_of(c: &fantoccini::Client, locator: Locator<'_>) -> String {
    c.find(locator).await.unwrap().text().await.unwrap()
}

/// Clicks the element with `id`.
async fn click(c: &fantoccini::Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Waits (at most 10 s) until the element `id` shows `needle`.
async fn wait_text(c: &fantoccini::Client, id: &str, needle: &str) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = text_of(c, Locator::Id(id)).await;
        if text.contains(needle) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "#{id} never showed {needle:?}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_ready(c: &fantoccini::Client, n: u64, within: Duration, what: &str) {
    let end = tokio::time::Instant::now() + within;
    loop {
        if ready_count(c).await == Some(n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the dashboard did not show {n} ready training instance(s) within {within:?} ({what}); shows {:?}",
            ready_count(c).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_fleet_follows_changes_and_scales_with_the_token() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let fleet = FleetProcess::start(
            FLEET,
            &["--serve", "--interval", "1h", "--max-instances", "3"],
        )
        .await
        .unwrap();
        let driver = Driver::start().await;
        let profile = tempfile::tempdir().unwrap();
        let chromium = which(
            "chromium",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        );
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        }))
        .unwrap();
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a WebDriver session in headless Chromium");

        c.goto(&format!("http://{}/", fleet.gateway)).await.unwrap();
        assert_eq!(c.title().await.unwrap(), "fleet");
        // The instances, from the first poll.
        wait_ready(&c, 1, Duration::from_secs(10), "at load").await;
        let rows = c
            .find_all(Locator::Css("#instances tr[data-service='training']"))
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        // Each instance's last health check and time in its state; the charts' time axis.
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let row = text_of(&c, Locator::Css("#instances tr[data-service='budget']")).await;
            // "... ready ... <n> s ago <m> s": checked n s ago, ready for m s.
            if row.contains(" s ago ") && row.ends_with(" s") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "no last check or time in state: {row}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let axis = c
            .execute(
                "return document.getElementById('chart-rps').dataset.axis;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            axis.as_str(),
            Some("5 min ago | 4 min ago | 3 min ago | 2 min ago | 1 min ago | now")
        );
        let budget = text_of(&c, Locator::Css("#service-budget")).await;
        assert!(budget.starts_with("budget"), "{budget}");

        // A change made elsewhere (the API) shows within a few seconds.
        let (s, _, body) = fleet
            .call(
                Method::POST,
                "/api/v1/system/scale/training/up",
                Some(&fleet.token),
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(s, StatusCode::OK, "{body}");
        wait_ready(
            &c,
            2,
            Duration::from_secs(5),
            "after a scale through the API",
        )
        .await;

        // No console errors from loading and following the fleet (the log holds what
        // came since the last read).
        let log = c.issue_cmd(BrowserLog).await.unwrap();
        assert!(log.is_array(), "no browser log: {log}");
        let severe: Vec<&Value> = log
            .as_array()
            .map(|l| l.iter().filter(|e| e["level"] == "SEVERE").collect())
            .unwrap_or_default();
        assert!(severe.is_empty(), "console errors: {severe:?}");

        // A click with a wrong token is refused and changes nothing.
        let token = c.find(Locator::Id("token")).await.unwrap();
        token.send_keys("not-the-token").await.unwrap();
        click(&c, "scale-up-training").await;
        wait_text(&c, "scale-message", "401").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(ready_count(&c).await, Some(2));

        // With the token: one more instance.
        token.clear().await.unwrap();
        token.send_keys(&fleet.token).await.unwrap();
        click(&c, "scale-up-training").await;
        wait_ready(&c, 3, Duration::from_secs(30), "after the scale-up click").await;
        wait_text(&c, "scale-message", "3 instance").await;
        // The answer and the services table say how long the autoscaler keeps it.
        wait_text(&c, "scale-message", "keeps at least 3 instances until").await;
        wait_text(&c, "service-training", "manual hold: at least 3 until").await;
        let status = fleet.service("training").await.unwrap();
        assert_eq!(status["ready"], 3, "{status}");
        // The history shows the manual actions; the charts were drawn.
        let history = text_of(&c, Locator::Id("history")).await;
        assert!(history.contains("manual"), "{history}");
        let width = c
            .execute(
                "return document.getElementById('chart-instances').width;",
                vec![],
            )
            .await
            .unwrap();
        assert!(width.as_u64().unwrap_or(0) > 0, "chart not drawn");

        // No console errors since, but Chromium's note of the refused (401) request.
        let log = c.issue_cmd(BrowserLog).await.unwrap();
        let severe: Vec<&Value> = log
            .as_array()
            .map(|l| {
                l.iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .filter(|e| {
                        !e["message"]
                            .as_str()
                            .unwrap_or("")
                            .contains("401 (Unauthorized)")
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert!(severe.is_empty(), "console errors: {severe:?}");
        c.close().await.unwrap();
    })
    .await
    .expect("the dashboard test took over 120 s");
}
