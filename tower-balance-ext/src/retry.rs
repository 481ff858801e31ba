//! The retry budget: retries may add at most a ratio of the requests, plus a floor per
//! second, over a sliding window, so retries cannot multiply an outage (Finagle's and
//! linkerd's budget). Uses tokio's clock, so tests can pause it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const SLOTS: usize = 10;

#[derive(Debug)]
pub(crate) struct Budget {
    ratio: f64,
    floor: f64,
    slot_len: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    deposits: [u64; SLOTS],
    withdrawals: [u64; SLOTS],
    index: usize,
    slot_start: Instant,
}

impl Budget {
    /// `ratio` retries per request, plus `min_per_sec` each second, over `window`.
    pub(crate) fn new(ratio: f64, min_per_sec: u32, window: Duration) -> Self {
        Self {
            ratio,
            floor: f64::from(min_per_sec) * window.as_secs_f64(),
            slot_len: window / SLOTS as u32,
            state: Mutex::new(State {
                deposits: [0; SLOTS],
                withdrawals: [0; SLOTS],
                index: 0,
                slot_start: Instant::now(),
            }),
        }
    }

    fn rotate(&self, s: &mut State, now: Instant) {
        let mut elapsed = now.saturating_duration_since(s.slot_start);
        let mut steps = 0;
        while elapsed >= self.slot_len && steps < SLOTS {
            s.index = (s.index + 1) % SLOTS;
            s.deposits[s.index] = 0;
            s.withdrawals[s.index] = 0;
            elapsed -= self.slot_len;
            steps += 1;
        }
        if steps == SLOTS {
            s.slot_start = now;
        } else {
            s.slot_start += self.slot_len * steps as u32;
        }
    }

    pub(crate) fn deposit(&self, now: Instant) {
        let mut s = crate::util::lock(&self.state);
        self.rotate(&mut s, now);
        let i = s.index;
        s.deposits[i] += 1;
    }

    /// Takes one retry from the budget if there is one.
    pub(crate) fn withdraw(&self, now: Instant) -> bool {
        let mut s = crate::util::lock(&self.state);
        self.rotate(&mut s, now);
        let deposits: u64 = s.deposits.iter().sum();
        let withdrawals: u64 = s.withdrawals.iter().sum();
        let allowed = self.floor + self.ratio * deposits as f64;
        if (withdrawals + 1) as f64 <= allowed {
            let i = s.index;
            s.withdrawals[i] += 1;
            true
        } else {
            false
        }
    }
}

/// Whether an HTTP method may be sent twice with the effect of once (RFC 9110 section
/// 9.2.2): GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
pub fn is_idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::TRACE
            | http::Method::PUT
            | http::Method::DELETE
    )
}

/// A copy of an HTTP request for a retry, if its method is idempotent: method, URI,
/// version, headers and the (buffered, so cloneable) body. Extensions are not copied.
pub fn clone_idempotent<B: Clone>(req: &http::Request<B>) -> Option<http::Request<B>> {
    if !is_idempotent(req.method()) {
        return None;
    }
    let mut copy = http::Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_the_floor_plus_a_ratio_of_requests() {
        // 20% of requests, plus 1 per second over 10 s: 10 + 0.2 x 100 = 30.
        let b = Budget::new(0.2, 1, Duration::from_secs(10));
        for _ in 0..100 {
            b.deposit(Instant::now());
        }
        let granted = (0..1000).filter(|_| b.withdraw(Instant::now())).count();
        assert_eq!(granted, 30);
        // After the window, the old deposits and withdrawals are gone: the floor again.
        tokio::time::advance(Duration::from_secs(11)).await;
        let granted = (0..1000).filter(|_| b.withdraw(Instant::now())).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn only_idempotent_requests_are_copied() {
        let get = http::Request::get("/x")
            .header("a", "b")
            .body("body")
            .unwrap();
        let copy = clone_idempotent(&get).unwrap();
        assert_eq!(copy.uri(), "/x");
        assert_eq!(copy.headers()["a"], "b");
        assert_eq!(*copy.body(), "body");
        let post = http::Request::post("/x").body("body").unwrap();
        assert!(clone_idempotent(&post).is_none());
    }
}
