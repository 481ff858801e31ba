//! Test endpoints: services with a settable latency, readiness and failure mode.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;

pub mod balance;
#[cfg(feature = "http1-forward")]
pub mod forward;

/// Every test bounds itself: the whole body within this.
pub const LIMIT: Duration = Duration::from_secs(60);

/// What an endpoint does, shared by its clones and the test.
#[derive(Debug, Default)]
pub struct Knobs {
    pub id: u32,
    /// Milliseconds each call takes (tokio time).
    pub latency_ms: AtomicU64,
    /// `poll_ready` pends while this is false.
    pub closed: AtomicBool,
    /// `poll_ready` fails this many more times.
    pub ready_errors: AtomicU32,
    /// Calls answer an error while this is true.
    pub failing: AtomicBool,
    /// Calls answer 503 (a response, not an error) while this is true.
    pub unavailable: AtomicBool,
    pub calls: AtomicU64,
    pub clones_alive: AtomicU64,
    pub opened: Notify,
}

impl Knobs {
    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The response: which endpoint answered, and a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub id: u32,
    pub status: u16,
}

pub struct Ep {
    pub knobs: Arc<Knobs>,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Ep {
    pub fn new(id: u32) -> (Ep, Arc<Knobs>) {
        let knobs = Arc::new(Knobs {
            id,
            ..Default::default()
        });
        knobs.clones_alive.fetch_add(1, Ordering::SeqCst);
        (
            Ep {
                knobs: knobs.clone(),
                wait: None,
            },
            knobs,
        )
    }
}

impl Ep {
    /// Another service sharing `knobs` (as an endpoint that left and came back).
    pub fn with_knobs(knobs: &Arc<Knobs>) -> Ep {
        knobs.clones_alive.fetch_add(1, Ordering::SeqCst);
        Ep {
            knobs: knobs.clone(),
            wait: None,
        }
    }
}

impl std::fmt::Debug for Ep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ep").field("id", &self.knobs.id).finish()
    }
}

impl Clone for Ep {
    fn clone(&self) -> Self {
        self.knobs.clones_alive.fetch_add(1, Ordering::SeqCst);
        Ep {
            knobs: self.knobs.clone(),
            wait: None,
        }
    }
}

impl Drop for Ep {
    fn drop(&mut self) {
        self.knobs.clones_alive.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
pub struct Failed(pub u32);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "endpoint {} failed", self.0)
    }
}

impl std::error::Error for Failed {}

impl<R> tower::Service<R> for Ep {
    type Response = Answer;
    type Error = Failed;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Failed>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failed>> {
        let k = &self.knobs;
        if k.ready_errors
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Poll::Ready(Err(Failed(k.id)));
        }
        loop {
            if !k.closed.load(Ordering::SeqCst) {
                self.wait = None;
                return Poll::Ready(Ok(()));
            }
            if self.wait.is_none() {
                let knobs = k.clone();
                self.wait = Some(Box::pin(async move {
                    let n = knobs.opened.notified();
                    tokio::pin!(n);
                    n.as_mut().enable();
                    if knobs.closed.load(Ordering::SeqCst) {
                        n.await;
                    }
                }));
            }
            match self.wait.as_mut().unwrap().as_mut().poll(cx) {
                Poll::Ready(()) => self.wait = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn call(&mut self, _: R) -> Self::Future {
        let k = self.knobs.clone();
        k.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let ms = k.latency_ms.load(Ordering::SeqCst);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if k.failing.load(Ordering::SeqCst) {
                return Err(Failed(k.id));
            }
            let status = if k.unavailable.load(Ordering::SeqCst) {
                503
            } else {
                200
            };
            Ok(Answer { id: k.id, status })
        })
    }
}

/// `n` endpoints with ids 0..n, as a discovery channel's first inserts.
pub fn endpoints(n: u32) -> (Vec<Ep>, Vec<Arc<Knobs>>) {
    (0..n).map(Ep::new).unzip()
}

/// Waits (in small steps of tokio time) until `ok` holds.
pub async fn until(mut ok: impl FnMut() -> bool) {
    while !ok() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
