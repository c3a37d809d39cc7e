//! Early-warning evaluation: does a diagnostic cross its threshold before a run fails, and how
//! often does it cry wolf on runs that never fail?
//!
//! A diagnostic (gradient norm, logit sharpness, saturation fraction, …) is useful as a warning
//! only if it moves *before* the loss does. Given per-step series of the diagnostic in failed and
//! healthy runs and a threshold, this module measures:
//!
//! - **Crossing**: the first step at which the value is beyond the threshold: `v > t` for
//!   [`Direction::Above`], `v < t` for [`Direction::Below`]; a non-finite value also counts (the
//!   diagnostic has certainly left its healthy range).
//! - **Lead time** of a failed run: `failure_step − crossing_step`, considering only points at
//!   steps strictly before the failure step, so a lead time is always ≥ 1. A diagnostic that first
//!   crosses at or after the failure step gave no warning.
//! - **Hit rate**: the fraction of failed runs with a lead time.
//! - **False-alarm rate**: the fraction of runs that did not fail whose series crosses at any
//!   step.
//!
//! Both rates come with Wilson 95 % intervals ([`crate::wilson`]), since there are few runs.
//! Everything here is a pure function over plain data: the training loop produces the series.

use crate::wilson::wilson95;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which side of the threshold is the alarm side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Alarm when the value exceeds the threshold (gradient norm, sharpness).
    Above,
    /// Alarm when the value falls below the threshold (e.g. a quantization SNR).
    Below,
}

/// A threshold on one diagnostic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub value: f64,
    pub direction: Direction,
}

impl Threshold {
    pub fn above(value: f64) -> Self {
        Threshold {
            value,
            direction: Direction::Above,
        }
    }

    pub fn below(value: f64) -> Self {
        Threshold {
            value,
            direction: Direction::Below,
        }
    }

    /// Whether `v` is on the alarm side (non-finite values always are).
    pub fn crossed_by(&self, v: f64) -> bool {
        !v.is_finite()
            || match self.direction {
                Direction::Above => v > self.value,
                Direction::Below => v < self.value,
            }
    }
}

/// The first step of `series` (`(step, value)` in step order) on the alarm side, looking only at
/// steps before `before` when given.
pub fn first_crossing(series: &[(u64, f64)], t: &Threshold, before: Option<u64>) -> Option<u64> {
    series
        .iter()
        .take_while(|(s, _)| before.is_none_or(|b| *s < b))
        .find(|(_, v)| t.crossed_by(*v))
        .map(|(s, _)| *s)
}

/// Steps from the first crossing to `failure_step` (≥ 1), or `None` when the diagnostic did not
/// cross before the failure.
pub fn lead_time(series: &[(u64, f64)], t: &Threshold, failure_step: u64) -> Option<u64> {
    first_crossing(series, t, Some(failure_step)).map(|s| failure_step - s)
}

/// One run's series of one diagnostic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSeries {
    /// The step the run failed (diverged or stalled), `None` for a healthy run.
    pub failure_step: Option<u64>,
    pub points: Vec<(u64, f64)>,
}

/// How a diagnostic did as a warning over a set of runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarningEval {
    /// Failed runs, and those where the diagnostic crossed before failing.
    pub failed_runs: u64,
    pub hits: u64,
    /// Healthy runs, and those where it crossed anyway.
    pub healthy_runs: u64,
    pub false_alarms: u64,
    /// `hits / failed_runs` (`NaN` without failed runs) and its Wilson 95 % interval.
    pub hit_rate: f64,
    pub hit_interval: (f64, f64),
    /// `false_alarms / healthy_runs` (`NaN` without healthy runs) and its Wilson 95 % interval.
    pub false_alarm_rate: f64,
    pub false_alarm_interval: (f64, f64),
    /// Lead times of the hits, in input order.
    pub lead_times: Vec<u64>,
    /// Median of `lead_times` (mean of the middle two for an even count).
    pub median_lead_time: Option<f64>,
}

fn rate(k: u64, n: u64) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        k as f64 / n as f64
    }
}

/// Evaluates one diagnostic at one threshold over `runs` (module docs).
pub fn evaluate_warning(runs: &[RunSeries], t: &Threshold) -> WarningEval {
    let mut lead_times = Vec::new();
    let (mut failed, mut healthy, mut alarms) = (0u64, 0u64, 0u64);
    for r in runs {
        match r.failure_step {
            Some(f) => {
                failed += 1;
                lead_times.extend(lead_time(&r.points, t, f));
            }
            None => {
                healthy += 1;
                alarms += first_crossing(&r.points, t, None).is_some() as u64;
            }
        }
    }
    let hits = lead_times.len() as u64;
    let mut sorted = lead_times.clone();
    sorted.sort_unstable();
    let n = sorted.len();
    let median_lead_time = (n > 0).then(|| {
        if n % 2 == 1 {
            sorted[n / 2] as f64
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0
        }
    });
    WarningEval {
        failed_runs: failed,
        hits,
        healthy_runs: healthy,
        false_alarms: alarms,
        hit_rate: rate(hits, failed),
        hit_interval: wilson95(hits, failed),
        false_alarm_rate: rate(alarms, healthy),
        false_alarm_interval: wilson95(alarms, healthy),
        lead_times,
        median_lead_time,
    }
}

/// One run with several diagnostics, by name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunDiagnostics {
    pub failure_step: Option<u64>,
    pub series: BTreeMap<String, Vec<(u64, f64)>>,
}

/// [`evaluate_warning`] for every named threshold. A run that lacks a diagnostic's series is left
/// out of that diagnostic's counts (it was not measured, so it neither hit nor raised an alarm).
pub fn evaluate_warnings(
    runs: &[RunDiagnostics],
    thresholds: &BTreeMap<String, Threshold>,
) -> BTreeMap<String, WarningEval> {
    thresholds
        .iter()
        .map(|(name, t)| {
            let rs: Vec<RunSeries> = runs
                .iter()
                .filter_map(|r| {
                    r.series.get(name).map(|pts| RunSeries {
                        failure_step: r.failure_step,
                        points: pts.clone(),
                    })
                })
                .collect();
            (name.clone(), evaluate_warning(&rs, t))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(vals: &[f64]) -> Vec<(u64, f64)> {
        vals.iter()
            .enumerate()
            .map(|(i, &v)| (10 * i as u64, v))
            .collect()
    }

    #[test]
    fn lead_times_by_hand() {
        let t = Threshold::above(5.0);
        // Steps 0, 10, 20, 30, 40: crosses at 20 (6 > 5); failure at 50 → lead 30.
        let s = series(&[1.0, 5.0, 6.0, 2.0, 9.0]);
        assert_eq!(first_crossing(&s, &t, None), Some(20));
        assert_eq!(lead_time(&s, &t, 50), Some(30));
        // Equal to the threshold is not a crossing; failure at 20 → only steps 0 and 10 count.
        assert_eq!(lead_time(&s, &t, 20), None);
        assert_eq!(lead_time(&s, &t, 21), Some(1));
        // Non-finite values cross; Below direction.
        assert_eq!(
            first_crossing(&series(&[1.0, f64::NAN]), &t, None),
            Some(10)
        );
        let b = Threshold::below(20.0);
        assert_eq!(
            first_crossing(&series(&[30.0, 25.0, 19.0]), &b, None),
            Some(20)
        );
        assert_eq!(lead_time(&[], &t, 5), None);
    }

    #[test]
    fn rates_over_runs_by_hand() {
        let t = Threshold::above(5.0);
        let runs = [
            // Failed, warned 30 steps ahead.
            RunSeries {
                failure_step: Some(50),
                points: series(&[1.0, 2.0, 6.0]),
            },
            // Failed, warned 10 steps ahead.
            RunSeries {
                failure_step: Some(30),
                points: series(&[1.0, 1.0, 7.0, 8.0]),
            },
            // Failed without warning (crossing only at the failure step).
            RunSeries {
                failure_step: Some(20),
                points: series(&[1.0, 1.0, 9.0]),
            },
            // Healthy, false alarm.
            RunSeries {
                failure_step: None,
                points: series(&[1.0, 5.5]),
            },
            // Healthy, quiet.
            RunSeries {
                failure_step: None,
                points: series(&[1.0, 4.0]),
            },
        ];
        let e = evaluate_warning(&runs, &t);
        assert_eq!(
            (e.failed_runs, e.hits, e.healthy_runs, e.false_alarms),
            (3, 2, 2, 1)
        );
        assert!((e.hit_rate - 2.0 / 3.0).abs() < 1e-12 && e.false_alarm_rate == 0.5);
        assert_eq!(e.lead_times, vec![30, 10]);
        assert_eq!(e.median_lead_time, Some(20.0));
        assert_eq!(e.hit_interval, wilson95(2, 3));
        // No runs: rates undefined, intervals uninformative, no panic.
        let e = evaluate_warning(&[], &t);
        assert!(e.hit_rate.is_nan() && e.false_alarm_rate.is_nan());
        assert_eq!((e.hit_interval, e.median_lead_time), ((0.0, 1.0), None));
    }

    #[test]
    fn several_diagnostics_skip_unmeasured_runs() {
        let mut a = RunDiagnostics {
            failure_step: Some(40),
            ..Default::default()
        };
        a.series.insert("grad_norm".into(), series(&[1.0, 10.0]));
        a.series.insert("sharpness".into(), series(&[1.0, 1.0]));
        let mut b = RunDiagnostics::default();
        b.series.insert("grad_norm".into(), series(&[1.0, 2.0]));
        let th: BTreeMap<String, Threshold> = [
            ("grad_norm".to_string(), Threshold::above(3.0)),
            ("sharpness".to_string(), Threshold::above(3.0)),
        ]
        .into();
        let e = evaluate_warnings(&[a, b], &th);
        assert_eq!(
            (e["grad_norm"].hits, e["grad_norm"].lead_times.clone()),
            (1, vec![30])
        );
        assert_eq!(
            (e["grad_norm"].healthy_runs, e["grad_norm"].false_alarms),
            (1, 0)
        );
        assert_eq!((e["sharpness"].failed_runs, e["sharpness"].hits), (1, 0));
        assert_eq!(e["sharpness"].healthy_runs, 0);
    }
}
