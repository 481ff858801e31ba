//! One timer per connection.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

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
        if self.0.deadline() > deadline {
            self.0.as_mut().reset(deadline);
        }
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            while self.0.as_mut().poll(cx).is_ready() {
                if Instant::now() >= deadline {
                    return Poll::Ready(None);
                }
                // Set for an earlier wait: move it to this one's deadline.
                self.0.as_mut().reset(deadline);
            }
            Poll::Pending
        })
        .await
    }
}
