//! Loss spikes: short excursions of the training loss far above its recent level.
//!
//! The paper counts spikes but gives no rule, so ours is explicit and every parameter is in
//! [`SpikeRule`].
//!
//! # Rule
//!
//! We track an exponential moving average `m` and exponentially weighted variance `v` of the loss
//! (decay `beta`, the incremental form of West 1979):
//!
//! ```text
//! δ = l − m;   m ← m + (1−β)·δ;   v ← β·(v + (1−β)·δ²)        (m₀ = first loss, v₀ = 0)
//! ```
//!
//! A step with loss `l` is a **spike step** when, measured against the statistics *before* it,
//!
//! ```text
//! l > m + max(k·√v, min_rise·|m|)      or l is non-finite,
//! ```
//!
//! except during the first `warmup` observed steps, which only feed the statistics (the loss falls
//! fastest there and the variance estimate is not yet meaningful). Spike steps do **not** update
//! `m` and `v`, so a spike cannot hide itself or inflate the threshold for the next one. A run of
//! consecutive spike steps is **one spike**.
//!
//! `min_rise` guards against a near-zero variance on a very smooth curve turning tiny wiggles into
//! "spikes". Defaults: `beta = 0.98` (≈ 50-step memory), `k = 4` (a Gaussian false-alarm rate of
//! ~3e-5 per step), `warmup = 50`, `min_rise = 0.02` (2 % above the average).

use serde::{Deserialize, Serialize};

/// Parameters of the spike rule; see the module docs for the definition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpikeRule {
    /// EMA decay of the running mean and variance, in `[0, 1)`.
    pub beta: f64,
    /// Number of running standard deviations above the mean that makes a spike step.
    pub k: f64,
    /// Observed steps at the start that only feed the statistics.
    pub warmup: usize,
    /// Minimum rise above the running mean, as a fraction of it.
    pub min_rise: f64,
}

impl Default for SpikeRule {
    fn default() -> Self {
        SpikeRule {
            beta: 0.98,
            k: 4.0,
            warmup: 50,
            min_rise: 0.02,
        }
    }
}

/// One spike: a maximal run of consecutive spike steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    /// First spike step.
    pub start: u64,
    /// Last spike step (inclusive).
    pub end: u64,
    /// Largest loss inside the spike (`NaN`/`inf` if one was non-finite).
    pub peak: f64,
}

/// Streaming spike detector.
#[derive(Debug, Clone)]
pub struct SpikeDetector {
    rule: SpikeRule,
    seen: usize,
    mean: f64,
    var: f64,
    open: Option<Spike>,
    spikes: Vec<Spike>,
}

impl SpikeDetector {
    pub fn new(rule: SpikeRule) -> Self {
        assert!(
            (0.0..1.0).contains(&rule.beta),
            "spike rule beta must be in [0, 1), got {}",
            rule.beta
        );
        assert!(
            rule.k >= 0.0 && rule.min_rise >= 0.0,
            "spike rule k and min_rise must be >= 0"
        );
        SpikeDetector {
            rule,
            seen: 0,
            mean: 0.0,
            var: 0.0,
            open: None,
            spikes: Vec::new(),
        }
    }

    /// The threshold the next loss is compared with (`None` before the first finite loss).
    pub fn threshold(&self) -> Option<f64> {
        (self.seen > 0).then(|| {
            self.mean + (self.rule.k * self.var.sqrt()).max(self.rule.min_rise * self.mean.abs())
        })
    }

    /// Feeds one loss; returns whether this step is a spike step.
    pub fn observe(&mut self, step: u64, loss: f64) -> bool {
        let in_warmup = self.seen < self.rule.warmup;
        let is_spike = if !loss.is_finite() {
            // Before any statistics exist, or in warm-up, a non-finite loss is still a spike:
            // it is the strongest one possible (the divergence rule reports it as well).
            true
        } else if in_warmup || self.seen == 0 {
            false
        } else {
            loss > self.threshold().expect("seen > 0")
        };
        if is_spike {
            match &mut self.open {
                Some(s) => {
                    s.end = step;
                    // A NaN loss always becomes the peak: it is the worst a spike can get.
                    if loss.is_nan() || loss > s.peak {
                        s.peak = loss;
                    }
                }
                None => {
                    self.open = Some(Spike {
                        start: step,
                        end: step,
                        peak: loss,
                    })
                }
            }
            return true;
        }
        if let Some(s) = self.open.take() {
            self.spikes.push(s);
        }
        if self.seen == 0 {
            self.mean = loss;
            self.var = 0.0;
        } else {
            let b = self.rule.beta;
            let d = loss - self.mean;
            self.mean += (1.0 - b) * d;
            self.var = b * (self.var + (1.0 - b) * d * d);
        }
        self.seen += 1;
        false
    }

    /// All spikes so far, including one still open at the last step.
    pub fn spikes(&self) -> Vec<Spike> {
        let mut v = self.spikes.clone();
        v.extend(self.open);
        v
    }
}

/// Applies the rule to a whole `(step, loss)` curve in step order.
pub fn detect_spikes(curve: &[(u64, f64)], rule: &SpikeRule) -> Vec<Spike> {
    let mut d = SpikeDetector::new(*rule);
    for &(s, l) in curve {
        d.observe(s, l);
    }
    d.spikes()
}

/// The number of spikes in a curve (what `results.jsonl` records as `spike_count`).
pub fn count_spikes(curve: &[(u64, f64)], rule: &SpikeRule) -> u64 {
    detect_spikes(curve, rule).len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> SpikeRule {
        SpikeRule {
            beta: 0.5,
            k: 2.0,
            warmup: 2,
            min_rise: 0.1,
        }
    }

    #[test]
    fn hand_computed_statistics() {
        // β = 0.5. Losses 4, 6, 4:
        //   after 4: m = 4, v = 0
        //   after 6: δ = 2, m = 5, v = 0.5·(0 + 0.5·4) = 1
        //   after 4: δ = −1, m = 4.5, v = 0.5·(1 + 0.5·1) = 0.75
        // threshold = 4.5 + max(2·√0.75, 0.1·4.5) = 4.5 + 1.7320508 = 6.2320508
        let mut d = SpikeDetector::new(rule());
        for (s, l) in [(0, 4.0), (1, 6.0), (2, 4.0)] {
            assert!(!d.observe(s, l));
        }
        let th = d.threshold().unwrap();
        assert!((th - (4.5 + 3f64.sqrt())).abs() < 1e-12, "{th}");
        assert!(!d.observe(3, 6.23)); // just below: normal, updates stats
                                      // after 6.23: δ = 1.73, m = 5.365, v = 0.5·(0.75 + 0.5·2.9929) = 1.123225
        let th = d.threshold().unwrap();
        assert!(
            (th - (5.365 + 2.0 * 1.123225f64.sqrt())).abs() < 1e-12,
            "{th}"
        );
    }

    #[test]
    fn consecutive_spike_steps_are_one_spike() {
        // Stats after 4, 6, 4 as above: threshold 6.232. Steps 3 and 4 are above it (and do not
        // update the stats), step 5 is back to normal, step 6 spikes again alone.
        let curve = [
            (0, 4.0),
            (1, 6.0),
            (2, 4.0),
            (3, 9.0),
            (4, 7.0),
            (5, 4.5),
            (6, 20.0),
        ];
        let spikes = detect_spikes(&curve, &rule());
        assert_eq!(
            spikes,
            vec![
                Spike {
                    start: 3,
                    end: 4,
                    peak: 9.0
                },
                Spike {
                    start: 6,
                    end: 6,
                    peak: 20.0
                },
            ]
        );
    }

    #[test]
    fn warmup_is_never_flagged_and_min_rise_applies() {
        // A huge jump inside warm-up is not a spike.
        assert!(detect_spikes(&[(0, 1.0), (1, 100.0)], &rule()).is_empty());
        // Constant curve: v = 0, so only min_rise (10 %) protects: 1.05 is not a spike, 1.11 is.
        let r = rule();
        let curve = [(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.05), (4, 1.0), (5, 1.11)];
        // Hand trace (β = 0.5, k = 2, min_rise = 0.1):
        //   1, 1, 1 → m = 1, v = 0; step 3: threshold 1 + max(0, 0.1) = 1.1 > 1.05 → normal,
        //   m = 1.025, v = 0.5·(0.5·0.05²) = 0.000625;
        //   step 4 (1.0, normal): m = 1.0125, v = 0.5·(0.000625 + 0.5·0.025²) = 0.00046875;
        //   step 5: threshold 1.0125 + max(2·√v = 0.0433, 0.10125) = 1.11375 > 1.11 → normal.
        assert_eq!(count_spikes(&curve, &r), 0);
        let curve = [(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0), (4, 1.11)];
        assert_eq!(count_spikes(&curve, &r), 1);
    }

    #[test]
    fn non_finite_is_a_spike() {
        let curve = [(0, 4.0), (1, 4.0), (2, 4.0), (3, f64::NAN), (4, f64::NAN)];
        let s = detect_spikes(&curve, &rule());
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].start, s[0].end), (3, 4));
        assert!(s[0].peak.is_nan());
    }
}
