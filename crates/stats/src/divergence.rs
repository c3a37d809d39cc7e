//! Divergence: the step at which a run is declared lost.
//!
//! # Rule
//!
//! A run diverges at the first step whose training loss is
//! - non-finite (`NaN` or `±inf`), or
//! - greater than `threshold × reference`, where `reference` is the first finite loss of the run
//!   (the loss at initialization, before any update has taken effect).
//!
//! # Why relative to the initial loss, and why 1.5
//!
//! A language model at initialization predicts roughly uniformly, so its loss is about `ln V`
//! (10.8 for GPT-2's 50257 tokens). That is the loss of knowing nothing. A run whose loss climbs
//! well *above* it is confidently wrong: its logits have blown up, which is the failure low
//! precision causes (overflow, saturated softmax), and in practice such runs do not come back.
//! Healthy runs exceed their initial loss only briefly and slightly (a few percent during warm-up),
//! so [`DEFAULT_THRESHOLD`] = 1.5 leaves a wide margin against false alarms, and is still reached
//! well before the loss becomes non-finite in the slow blow-ups, so the step we report is close to
//! where the run actually went wrong. Being relative, the rule needs no vocabulary size and works
//! for any initialization. A run that merely *stalls* at the initial loss is not diverged by this
//! rule; its final loss and loss gap show it.

use serde::{Deserialize, Serialize};

/// Default multiple of the initial loss beyond which a run counts as diverged. See module docs.
pub const DEFAULT_THRESHOLD: f64 = 1.5;

/// Parameters of the divergence rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DivergenceRule {
    /// A loss above `threshold × (first finite loss)` is a divergence. Must be > 1.
    pub threshold: f64,
}

impl Default for DivergenceRule {
    fn default() -> Self {
        DivergenceRule {
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

/// Why a run was declared diverged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DivergenceCause {
    /// The loss was `NaN` or infinite.
    NonFinite,
    /// The loss exceeded `threshold × reference`.
    AboveThreshold {
        /// The first finite loss of the run.
        reference: f64,
    },
}

/// A divergence: the step and the loss that triggered it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Divergence {
    pub step: u64,
    pub loss: f64,
    pub cause: DivergenceCause,
}

/// Streaming form of the rule, for a training loop that wants to stop at the divergence.
#[derive(Debug, Clone)]
pub struct DivergenceMonitor {
    rule: DivergenceRule,
    reference: Option<f64>,
    diverged: Option<Divergence>,
}

impl DivergenceMonitor {
    pub fn new(rule: DivergenceRule) -> Self {
        assert!(
            rule.threshold > 1.0 && rule.threshold.is_finite(),
            "divergence threshold must be a finite multiple > 1 of the initial loss, got {}",
            rule.threshold
        );
        DivergenceMonitor {
            rule,
            reference: None,
            diverged: None,
        }
    }

    /// Feeds the loss of `step`. Returns the divergence when this step triggers it; once diverged,
    /// later calls return `None` and [`Self::diverged`] keeps the first divergence.
    pub fn observe(&mut self, step: u64, loss: f64) -> Option<Divergence> {
        if self.diverged.is_some() {
            return None;
        }
        let cause = if !loss.is_finite() {
            DivergenceCause::NonFinite
        } else {
            let reference = *self.reference.get_or_insert(loss);
            if loss > self.rule.threshold * reference {
                DivergenceCause::AboveThreshold { reference }
            } else {
                return None;
            }
        };
        let d = Divergence { step, loss, cause };
        self.diverged = Some(d);
        Some(d)
    }

    /// The first divergence seen so far.
    pub fn diverged(&self) -> Option<Divergence> {
        self.diverged
    }
}

/// Applies the rule to a whole loss curve of `(step, loss)` points in step order.
pub fn detect_divergence(curve: &[(u64, f64)], rule: &DivergenceRule) -> Option<Divergence> {
    let mut m = DivergenceMonitor::new(*rule);
    curve.iter().find_map(|&(s, l)| m.observe(s, l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_relative_to_first_loss() {
        // Initial loss 10 → threshold 15 at the default 1.5.
        let curve = [(0, 10.0), (1, 12.0), (2, 15.0), (3, 15.1), (4, f64::NAN)];
        let d = detect_divergence(&curve, &DivergenceRule::default()).unwrap();
        assert_eq!(d.step, 3);
        assert_eq!(d.loss, 15.1);
        assert_eq!(d.cause, DivergenceCause::AboveThreshold { reference: 10.0 });
    }

    #[test]
    fn non_finite_diverges_even_first() {
        let rule = DivergenceRule::default();
        let d = detect_divergence(&[(5, f64::INFINITY)], &rule).unwrap();
        assert_eq!((d.step, d.cause), (5, DivergenceCause::NonFinite));
        let d = detect_divergence(&[(0, 3.0), (7, 2.0), (8, f64::NAN)], &rule).unwrap();
        assert_eq!(d.step, 8);
        assert!(d.loss.is_nan());
    }

    #[test]
    fn healthy_curve_does_not_diverge() {
        let curve: Vec<_> = (0..100).map(|s| (s, 10.0 / (1.0 + s as f64))).collect();
        assert_eq!(detect_divergence(&curve, &DivergenceRule::default()), None);
        assert_eq!(detect_divergence(&[], &DivergenceRule::default()), None);
    }

    #[test]
    fn custom_threshold_and_monitor_keeps_first() {
        let mut m = DivergenceMonitor::new(DivergenceRule { threshold: 3.0 });
        assert_eq!(m.observe(0, 2.0), None);
        assert_eq!(m.observe(1, 6.0), None); // equal is not above
        assert!(m.observe(2, 6.5).is_some());
        assert_eq!(m.observe(3, f64::NAN), None);
        assert_eq!(m.diverged().unwrap().step, 2);
    }
}
