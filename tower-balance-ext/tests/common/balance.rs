//! A balancer over test endpoints, and requests to it.

use std::collections::HashMap;

use tower::ServiceExt;
use tower_balance_ext::{discover, BalancerBuilder, Pick};

use super::{until, Answer, Ep};

pub type Bal = tower_balance_ext::Balancer<u32, Ep, u64>;

pub fn build(pick: Pick, eps: Vec<Ep>) -> Bal {
    BalancerBuilder::new(pick)
        .build(discover::fixed(eps.into_iter().map(|e| (e.knobs.id, e))))
        .unwrap()
}

pub async fn settle(b: &Bal, n: usize) {
    until(|| b.endpoints().len() == n).await;
}

pub async fn send(b: &Bal, req: u64) -> Answer {
    b.clone().oneshot(req).await.unwrap()
}

pub async fn tally(b: &Bal, n: usize) -> HashMap<u32, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        *counts.entry(send(b, i as u64).await.id).or_default() += 1;
    }
    counts
}
