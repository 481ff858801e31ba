//! One evaluation, in the HPA's order (see the [module docs](super)): proposals, the
//! vote, panic, forecast, stabilisation, rate limits, a manual hold, bounds.

use std::time::Duration;

use tokio::time::Instant;

use super::proposal::{per_instance_proposal, sane, service_proposal};
use super::rate::rate_limit;
use super::{Action, Decision, Keep, Reason, SampleSummary, ServiceState, FORECAST_PERSISTS};
use crate::policy::Select;
use crate::sample::LoadSample;

pub(super) fn decide(
    name: &str,
    st: &mut ServiceState,
    sample: &LoadSample,
    now: Instant,
    dry_run: bool,
) -> Decision {
    let p = st.policy.clone();
    let current = sample.instances;
    let mut reasons = Vec::new();
    let mut proposals = Vec::new();
    for t in &p.metrics {
        let prop = if t.metric.is_per_instance() {
            per_instance_proposal(t, sample, current, p.tolerance, p.warm_up, &mut reasons)
        } else {
            service_proposal(t, sample, current, p.tolerance, &mut reasons)
        };
        proposals.extend(prop);
    }
    // Scale-up-only metrics vote only when they ask for more; the others always. Within
    // the down window after a scale-down they vote only at the panic threshold (no
    // reversal on a burst of noise, but a real surge still counts).
    let went_down_lately = st.events.iter().any(|(at, change)| {
        *change < 0 && now.saturating_duration_since(*at) < p.scale_down.stabilization_window
    });
    let surging = |ratio: f64| p.panic.as_ref().is_some_and(|pn| ratio >= pn.threshold);
    let votes = proposals.iter().filter(|pr| {
        !pr.metric.is_scale_up_only()
            || (pr.ratio > 1.0 + p.tolerance && (!went_down_lately || surging(pr.ratio)))
    });
    let mut desired = match votes.map(|pr| pr.instances).max() {
        Some(d) => d,
        None => {
            if proposals.is_empty() {
                reasons.push(Reason::NoMetrics);
            }
            current
        }
    };

    // Panic mode.
    let max_ratio = proposals.iter().map(|p| p.ratio).fold(0.0f64, f64::max);
    let mut panicking = false;
    if let Some(panic) = &p.panic {
        if max_ratio >= panic.threshold && desired > current {
            panicking = true;
            st.panic_until = now.checked_add(panic.hold);
            reasons.push(Reason::Panic { ratio: max_ratio });
        }
        if let Some(until) = st.panic_until {
            if now < until && desired < current {
                reasons.push(Reason::PanicBlocksScaleDown {
                    seconds_left: until.saturating_duration_since(now).as_secs_f64(),
                });
                desired = current;
            } else if now >= until {
                st.panic_until = None;
            }
        }
    }

    // Forecast over throughput: may only raise. The load one instance carries at its
    // target comes from the per-instance metrics (CPU, memory, in flight) only.
    let capacity_ratio = proposals
        .iter()
        .filter(|pr| pr.metric.is_per_instance())
        .map(|pr| pr.ratio)
        .fold(0.0f64, f64::max);
    if let (Some(f), Some(tp)) = (&p.forecast, sane(sample.throughput)) {
        st.holt.update(tp, f.alpha, f.beta);
        if let Some(predicted) = st.holt.predict(f.horizon) {
            let ready = sample.per_instance.iter().filter(|i| i.ready).count().max(
                if sample.per_instance.is_empty() {
                    current
                } else {
                    0
                },
            );
            // Hysteresis, so that noise does not become flips: the forecast acts only
            // when the predicted throughput rises beyond the tolerance band and the
            // predicted load on the instances running now leaves the band too (as a
            // metric must); only once that has held for FORECAST_PERSISTS evaluations
            // in a row; only for a count beyond the band above what the metrics ask
            // for; and never within the down window after a scale-down.
            let per_instance = if tp > 0.0 && capacity_ratio > 0.0 && ready > 0 {
                tp / ready as f64 / capacity_ratio
            } else {
                0.0
            };
            let band = 1.0 + p.tolerance;
            let rising = per_instance > 0.0
                && predicted > tp * band
                && predicted / (per_instance * current.max(1) as f64) > band;
            st.forecast_streak = if rising {
                st.forecast_streak.saturating_add(1)
            } else {
                0
            };
            if rising && st.forecast_streak >= FORECAST_PERSISTS && !went_down_lately {
                let need = (predicted / per_instance).ceil() as usize;
                if need > desired && need as f64 > desired as f64 * band {
                    reasons.push(Reason::Forecast {
                        predicted_throughput: predicted,
                        instances: need,
                    });
                    desired = need;
                }
            }
        }
    }

    // Stabilisation over recent recommendations. Beyond the HPA: a service's first
    // evaluation counts its current count as a recent recommendation, so a freshly
    // started autoscaler does not shrink a service before its down window saw it.
    if st.recommendations.is_empty() {
        st.recommendations.push_back((now, current));
    }
    st.recommendations.push_back((now, desired));
    let longest = p
        .scale_up
        .stabilization_window
        .max(p.scale_down.stabilization_window);
    while st
        .recommendations
        .front()
        .is_some_and(|(at, _)| now.saturating_duration_since(*at) > longest)
    {
        st.recommendations.pop_front();
    }
    // The recommendations younger than the window; with a zero window, this one only.
    let recent = |w: Duration| {
        let older = st
            .recommendations
            .iter()
            .take(st.recommendations.len().saturating_sub(1))
            .filter(move |(at, _)| now.saturating_duration_since(*at) < w)
            .map(|(_, r)| *r);
        older.chain(std::iter::once(desired))
    };
    let up_rec = recent(p.scale_up.stabilization_window)
        .min()
        .unwrap_or(desired);
    let down_rec = recent(p.scale_down.stabilization_window)
        .max()
        .unwrap_or(desired);
    let recommended = desired;
    let mut stabilized = current;
    if stabilized < up_rec {
        stabilized = up_rec;
    }
    if stabilized > down_rec {
        stabilized = down_rec;
    }
    if panicking {
        // Panic skips the up window.
        stabilized = stabilized.max(recommended);
    }
    if recommended > current && stabilized < recommended {
        reasons.push(Reason::StabilizedUp {
            window_seconds: p.scale_up.stabilization_window.as_secs_f64(),
            recommended,
            allowed: stabilized,
        });
    }
    if recommended < current && stabilized > recommended {
        reasons.push(Reason::StabilizedDown {
            window_seconds: p.scale_down.stabilization_window.as_secs_f64(),
            recommended,
            allowed: stabilized,
        });
    }
    desired = stabilized;

    // Rate limits.
    while st
        .events
        .front()
        .is_some_and(|(at, _)| now.saturating_duration_since(*at) > Duration::from_secs(3600))
    {
        st.events.pop_front();
    }
    if desired > current {
        if p.scale_up.select == Select::Disabled {
            reasons.push(Reason::DirectionDisabled {
                direction: "scale_up",
            });
            desired = current;
        } else if !panicking {
            // Never below the current count: a limit only slows a change.
            let limit = rate_limit(&p.scale_up, &st.events, now, current, true).max(current);
            if desired > limit {
                reasons.push(Reason::RateLimited {
                    direction: "scale_up",
                    limit,
                });
                desired = limit;
            }
        }
    } else if desired < current {
        if p.scale_down.select == Select::Disabled {
            reasons.push(Reason::DirectionDisabled {
                direction: "scale_down",
            });
            desired = current;
        } else {
            // Never above the current count: a limit only slows a change.
            let limit = rate_limit(&p.scale_down, &st.events, now, current, false).min(current);
            if desired < limit {
                reasons.push(Reason::RateLimited {
                    direction: "scale_down",
                    limit,
                });
                desired = limit;
            }
        }
    }

    // A manual scale's hold.
    if let Some((until, hold)) = &st.hold {
        if now >= *until {
            st.hold = None;
        } else {
            let held = match hold.keep {
                Keep::AtLeast => desired < hold.instances,
                Keep::AtMost => desired > hold.instances && !panicking,
            };
            if held {
                reasons.push(Reason::ManualHold {
                    instances: hold.instances,
                    keep: hold.keep,
                    seconds_left: until.saturating_duration_since(now).as_secs(),
                });
                desired = hold.instances;
            }
        }
    }

    // Bounds, always.
    if desired > p.max_instances {
        reasons.push(Reason::ClampedToMax {
            max: p.max_instances,
        });
        desired = p.max_instances;
    }
    if desired < p.min_instances {
        reasons.push(Reason::ClampedToMin {
            min: p.min_instances,
        });
        desired = p.min_instances;
    }
    let action = match desired.cmp(&current) {
        std::cmp::Ordering::Greater => Action::ScaleUp(desired - current),
        std::cmp::Ordering::Less => Action::ScaleDown(current - desired),
        std::cmp::Ordering::Equal => Action::Hold,
    };
    if dry_run {
        reasons.push(Reason::DryRun);
    } else if action != Action::Hold {
        st.events.push_back((now, desired as i64 - current as i64));
    }
    Decision {
        service: name.to_owned(),
        at_unix_ms: crate::util::unix_ms(),
        current,
        desired,
        action,
        proposals,
        reasons,
        input: SampleSummary {
            instances: sample.instances,
            ready: sample.per_instance.iter().filter(|i| i.ready).count(),
            in_flight: sample.in_flight,
            waiting: sample.waiting,
            throughput: sample.throughput,
            p99_ms: sample.p99.map(|d| d.as_secs_f64() * 1e3),
            error_rate: sample.error_rate,
        },
    }
}
