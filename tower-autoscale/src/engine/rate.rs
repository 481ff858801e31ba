//! Step 6 of an evaluation: the rate policies bound a change by the changes made
//! within each policy's period.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::policy::{RateKind, ScalingRules, Select};

fn change_in(events: &VecDeque<(Instant, i64)>, now: Instant, period: Duration, up: bool) -> usize {
    events
        .iter()
        .filter(|(at, _)| now.saturating_duration_since(*at) < period)
        .map(|(_, c)| if up { (*c).max(0) } else { (-*c).max(0) } as usize)
        .sum()
}

/// The HPA's `calculateScaleUpLimitWithScalingRules` / `...ScaleDownLimit...`.
pub(super) fn rate_limit(
    rules: &ScalingRules,
    events: &VecDeque<(Instant, i64)>,
    now: Instant,
    current: usize,
    up: bool,
) -> usize {
    let mut out: Option<usize> = None;
    for p in &rules.policies {
        let changed = change_in(events, now, p.period, up);
        let proposed = if up {
            let start = current.saturating_sub(changed);
            match p.kind {
                RateKind::Instances => start.saturating_add(p.value as usize),
                RateKind::Percent => {
                    (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as usize
                }
            }
        } else {
            let start = current.saturating_add(changed);
            match p.kind {
                RateKind::Instances => start.saturating_sub(p.value as usize),
                RateKind::Percent => (start as f64 * (1.0 - f64::from(p.value) / 100.0)) as usize,
            }
        };
        // Max: the policy allowing the largest change; Min: the smallest.
        let pick_larger_change = rules.select == Select::Max;
        out = Some(match out {
            None => proposed,
            Some(o) => {
                if up == pick_larger_change {
                    o.max(proposed)
                } else {
                    o.min(proposed)
                }
            }
        });
    }
    out.unwrap_or(current)
}
