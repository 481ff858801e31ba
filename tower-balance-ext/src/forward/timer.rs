//! One timer per connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::Instant;

/// A timer set once and moved forward only when it fires: a wait with a later deadline
/// than the last costs no timer operation, where a fresh timeout per request would add
/// one and remove one every time (about 8% of the forwarder's CPU time per request).
pub(super) struct Timer(Pin<Box<tokio::time::Sleep>>);

impl Timer {
    pub(super) fn new(deadline: Instant) -> Self {
        Self(Box::pin(tokio::time::sleep_until(deadline)))
    }

    /// `fut`'s output, or `None` once `deadline` has passed.
    pub(super) async fn run<F: Future>(&mut self, deadline: Instant, fut: F) -> Option<F::Output> {
        self.arm(deadline);
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if self.poll_passed(deadline, cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Makes the timer fire by `deadline` (moved only if it is set later).
    pub(super) fn arm(&mut self, deadline: Instant) {
        if self.0.deadline() > deadline {
            self.0.as_mut().reset(deadline);
        }
    }

    /// Whether `deadline` has passed; if not, `cx` is woken when the timer fires.
    /// The timer must have been [armed](Self::arm) for `deadline`.
    pub(super) fn poll_passed(&mut self, deadline: Instant, cx: &mut Context<'_>) -> bool {
        while self.0.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return true;
            }
            // Set for an earlier wait: move it to this one's deadline.
            self.0.as_mut().reset(deadline);
        }
        false
    }
}
