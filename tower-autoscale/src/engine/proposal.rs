//! Step 1 of an evaluation: each metric's proposal, per instance (the HPA's rules for
//! unready and missing instances) or service-wide (scale-up only).

use std::time::Duration;

use super::{Proposal, Reason};
use crate::policy::{Metric, MetricTarget};
use crate::sample::LoadSample;

/// A value a source gave, if it is one: NaN, infinite or negative values count as
/// missing rather than steering the count.
pub(super) fn sane(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite() && *x >= 0.0)
}

fn raw_value(m: Metric, i: &crate::sample::InstanceLoad) -> Option<f64> {
    match m {
        Metric::Cpu => i.cpu,
        Metric::Memory => i.memory,
        Metric::InFlight => i.in_flight,
        _ => None,
    }
}

fn per_instance_value(m: Metric, i: &crate::sample::InstanceLoad) -> Option<f64> {
    sane(raw_value(m, i))
}

/// The HPA's `calcPlainMetricReplicas` for one per-instance metric.
pub(super) fn per_instance_proposal(
    t: &MetricTarget,
    sample: &LoadSample,
    current: usize,
    tolerance: f64,
    warm_up: Duration,
    reasons: &mut Vec<Reason>,
) -> Option<Proposal> {
    let mut ready_values = Vec::new();
    let mut unready = 0usize;
    // Ready instances with no usable value: the HPA's missing pods.
    let mut missing_listed = 0usize;
    let mut unusable = 0usize;
    for i in &sample.per_instance {
        let warming = i.warming_up || i.age.is_some_and(|a| a < warm_up);
        match per_instance_value(t.metric, i) {
            Some(v) if i.ready && !warming => ready_values.push(v),
            Some(_) => unready += 1,
            None if !i.ready || warming => unready += 1,
            None => {
                missing_listed += 1;
                if raw_value(t.metric, i).is_some() {
                    unusable += 1;
                }
            }
        }
    }
    if unusable > 0 {
        reasons.push(Reason::UnusableValues {
            metric: t.metric,
            count: unusable,
        });
    }
    if ready_values.is_empty() {
        reasons.push(Reason::MetricMissing { metric: t.metric });
        return None;
    }
    let missing = missing_listed + current.saturating_sub(sample.per_instance.len());
    let avg = ready_values.iter().sum::<f64>() / ready_values.len() as f64;
    let ratio = avg / t.target;
    let mut proposal = Proposal {
        metric: t.metric,
        value: avg,
        target: t.target,
        ratio,
        instances: current,
    };
    if unready > 0 {
        reasons.push(Reason::InstancesIgnored {
            metric: t.metric,
            count: unready,
        });
    }
    let up_with_unready = unready > 0 && ratio > 1.0;
    if !up_with_unready && missing == 0 {
        if (1.0 - ratio).abs() <= tolerance {
            reasons.push(Reason::WithinTolerance { metric: t.metric });
        } else {
            proposal.instances = (ratio * ready_values.len() as f64).ceil() as usize;
        }
    } else {
        let mut values = ready_values.clone();
        if missing > 0 {
            reasons.push(Reason::MissingInstancesAssumed {
                metric: t.metric,
                count: missing,
            });
            // At exactly the target the HPA leaves them out.
            if ratio < 1.0 {
                values.extend(std::iter::repeat_n(t.target, missing));
            } else if ratio > 1.0 {
                values.extend(std::iter::repeat_n(0.0, missing));
            }
        }
        if up_with_unready {
            values.extend(std::iter::repeat_n(0.0, unready));
        }
        let new_ratio = values.iter().sum::<f64>() / values.len() as f64 / t.target;
        let flipped = (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0);
        if (1.0 - new_ratio).abs() <= tolerance || flipped {
            reasons.push(Reason::UnsureDirection { metric: t.metric });
        } else {
            let n = (new_ratio * values.len() as f64).ceil() as usize;
            if (new_ratio < 1.0 && n > current) || (new_ratio > 1.0 && n < current) {
                reasons.push(Reason::UnsureDirection { metric: t.metric });
            } else {
                proposal.instances = n;
            }
        }
    }
    if let Some(floor) = t.scale_down_below {
        if proposal.instances < current && avg >= floor {
            reasons.push(Reason::ScaleDownFloor {
                metric: t.metric,
                value: avg,
                floor,
            });
            proposal.instances = current;
        }
    }
    Some(proposal)
}

pub(super) fn service_proposal(
    t: &MetricTarget,
    sample: &LoadSample,
    current: usize,
    tolerance: f64,
    reasons: &mut Vec<Reason>,
) -> Option<Proposal> {
    let value = sane(match t.metric {
        Metric::QueueDepth => sample.waiting,
        Metric::P99Ms => sample.p99.map(|d| d.as_secs_f64() * 1e3),
        Metric::ErrorRate => sample.error_rate,
        _ => None,
    });
    let Some(value) = value else {
        reasons.push(Reason::MetricMissing { metric: t.metric });
        return None;
    };
    let ratio = value / t.target;
    let mut instances = current;
    if ratio > 1.0 + tolerance {
        // These signals say "more", not "how many" (a queue or a p99 grows without bound
        // past saturation): at most double per evaluation, from the instances the signal
        // reflects (the ready ones), so instances still starting are not asked for twice.
        let ready = if sample.per_instance.is_empty() {
            current
        } else {
            sample.per_instance.iter().filter(|i| i.ready).count()
        };
        instances = current.max((ready.max(1) as f64 * ratio.min(2.0)).ceil() as usize);
    } else if ratio >= 1.0 - tolerance {
        reasons.push(Reason::WithinTolerance { metric: t.metric });
    } else {
        reasons.push(Reason::BelowScaleUpOnlyTarget { metric: t.metric });
    }
    Some(Proposal {
        metric: t.metric,
        value,
        target: t.target,
        ratio,
        instances,
    })
}
