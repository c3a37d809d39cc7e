//! The sweep's stability analysis in one pass over `results.jsonl`: outcomes, learning-rate
//! sensitivity and the paired comparison of every recipe with the baseline.
//!
//! This only wires the definitions of [`crate::outcomes`], [`crate::sensitivity`] and
//! [`crate::paired`] to [`RunResult`]s; see those modules for the rules and their parameters.
//!
//! - **Groups for the stall rule**: runs of the same model (`results.jsonl` names no data set, and
//!   a sweep trains every run on the same data).
//! - **Initial losses** are passed in, one per result (the report takes them from the loss
//!   curves); a run without one takes the median of its group (see [`crate::outcomes`]).
//! - **Pairs**: a recipe's run and the baseline's run with the same model, learning rate and seed.
//!   Several runs with one such key (a repeated run) pair by their first occurrence.

use crate::outcomes::{classify_group, median, OutcomeCounts, RunLosses, RunOutcome, StallRule};
use crate::paired::{compare_pairs, PairSide, PairedComparison, PairedParams};
use crate::results::{Outcome, RunResult};
use crate::sensitivity::{lr_sensitivity, LrRun, LrSensitivity, SensitivityParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// All parameters of the analysis.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisParams {
    pub stall: StallRule,
    pub sensitivity: SensitivityParams,
    pub paired: PairedParams,
}

impl AnalysisParams {
    /// Checks every parameter; the message names the field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        self.stall.validate()?;
        self.sensitivity.validate()?;
        self.paired.validate()
    }
}

/// One recipe–baseline pair, for plotting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairDiff {
    pub lr: f64,
    pub seed: u64,
    /// Recipe final loss − baseline final loss; `None` when either run failed (diverged or
    /// stalled) or a loss is non-finite.
    pub diff: Option<f64>,
}

/// What [`analyze`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepAnalysis {
    /// Outcome of every result, in input order.
    pub outcomes: Vec<RunOutcome>,
    /// The initial loss each run was judged by (its own or its group's median), in input order.
    pub initial_losses: Vec<Option<f64>>,
    /// Whether every group had an initial loss to judge stalls by.
    pub stall_rule_applied: bool,
    pub counts: BTreeMap<String, OutcomeCounts>,
    /// (recipe, lr bits) → counts.
    pub cell_counts: BTreeMap<(String, u64), OutcomeCounts>,
    pub sensitivity: BTreeMap<String, LrSensitivity>,
    /// Every recipe but the baseline, when a baseline with results is given.
    pub paired: BTreeMap<String, PairedComparison>,
    pub pair_diffs: BTreeMap<String, Vec<PairDiff>>,
}

/// The divergence verdict as `results.jsonl` records it. Only divergence is taken from the file:
/// the stall rule re-judges every run that did not diverge against the whole sweep, which a single
/// run cannot do.
fn diverged_in_results(r: &RunResult) -> bool {
    r.outcome == Outcome::Diverged
}

/// Analyzes `results`, with `initial_losses[i]` the initial loss of `results[i]` (`None` when
/// unknown; a shorter slice counts as unknown for the rest).
pub fn analyze(
    results: &[RunResult],
    initial_losses: &[Option<f64>],
    baseline: Option<&str>,
    params: &AnalysisParams,
) -> SweepAnalysis {
    let init = |i: usize| initial_losses.get(i).copied().flatten();
    // Outcomes, group by group.
    let mut by_model: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        by_model.entry(r.model.as_str()).or_default().push(i);
    }
    let mut outcomes = vec![RunOutcome::Converged; results.len()];
    let mut initial: Vec<Option<f64>> = (0..results.len()).map(init).collect();
    let mut stall_rule_applied = true;
    for idx in by_model.values() {
        let losses: Vec<RunLosses> = idx
            .iter()
            .map(|&i| RunLosses {
                diverged: diverged_in_results(&results[i]),
                initial_loss: init(i),
                best_loss: results[i].best_loss,
            })
            .collect();
        let g = classify_group(&losses, &params.stall);
        stall_rule_applied &= g.stall_rule_applied;
        let fallback = median(
            idx.iter()
                .filter_map(|&i| init(i))
                .filter(|v| v.is_finite()),
        );
        for (&i, o) in idx.iter().zip(g.outcomes) {
            outcomes[i] = o;
            initial[i] = init(i).filter(|v| v.is_finite()).or(fallback);
        }
    }

    let mut counts: BTreeMap<String, OutcomeCounts> = BTreeMap::new();
    let mut cell_counts: BTreeMap<(String, u64), OutcomeCounts> = BTreeMap::new();
    for (r, &o) in results.iter().zip(&outcomes) {
        counts.entry(r.recipe.clone()).or_default().add(o);
        cell_counts
            .entry((r.recipe.clone(), r.lr.to_bits()))
            .or_default()
            .add(o);
    }

    let mut sensitivity = BTreeMap::new();
    for recipe in counts.keys() {
        let runs: Vec<LrRun> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| &r.recipe == recipe)
            .map(|(i, r)| LrRun {
                lr: r.lr,
                seed: r.seed,
                final_loss: r.final_loss,
                initial_loss: initial[i].unwrap_or(f64::NAN),
                failed: outcomes[i].failed(),
            })
            .collect();
        if let Some(s) = lr_sensitivity(&runs, &params.sensitivity) {
            sensitivity.insert(recipe.clone(), s);
        }
    }

    let mut paired = BTreeMap::new();
    let mut pair_diffs = BTreeMap::new();
    if let Some(base) = baseline.filter(|b| counts.contains_key(*b)) {
        let mut base_runs: BTreeMap<(&str, u64, u64), usize> = BTreeMap::new();
        for (i, r) in results.iter().enumerate().filter(|(_, r)| r.recipe == base) {
            base_runs
                .entry((r.model.as_str(), r.lr.to_bits(), r.seed))
                .or_insert(i);
        }
        let side = |i: usize| PairSide {
            final_loss: results[i].final_loss,
            failed: outcomes[i].failed(),
        };
        for recipe in counts.keys().filter(|r| r.as_str() != base) {
            let mut seen = BTreeMap::new();
            let mut pairs = Vec::new();
            let mut diffs = Vec::new();
            for (i, r) in results
                .iter()
                .enumerate()
                .filter(|(_, r)| &r.recipe == recipe)
            {
                let key = (r.model.as_str(), r.lr.to_bits(), r.seed);
                let Some(&j) = base_runs.get(&key) else {
                    continue;
                };
                if seen.insert(key, ()).is_some() {
                    continue;
                }
                let (a, b) = (side(i), side(j));
                let d = a.final_loss - b.final_loss;
                diffs.push(PairDiff {
                    lr: r.lr,
                    seed: r.seed,
                    diff: (!a.failed && !b.failed && d.is_finite()).then_some(d),
                });
                pairs.push((a, b));
            }
            if !pairs.is_empty() {
                paired.insert(recipe.clone(), compare_pairs(&pairs, &params.paired));
                pair_diffs.insert(recipe.clone(), diffs);
            }
        }
    }

    SweepAnalysis {
        outcomes,
        initial_losses: initial,
        stall_rule_applied,
        counts,
        cell_counts,
        sensitivity,
        paired,
        pair_diffs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(recipe: &str, lr: f64, seed: u64, final_loss: f64, diverged: bool) -> RunResult {
        RunResult {
            recipe: recipe.into(),
            model: "m".into(),
            lr,
            seed,
            outcome: if diverged {
                Outcome::Diverged
            } else {
                Outcome::Converged
            },
            diverged_step: diverged.then_some(5),
            final_loss,
            best_loss: if final_loss.is_finite() {
                final_loss
            } else {
                3.0
            },
            spike_count: 0,
            loss_gap: None,
            max_sharpness: None,
            steps: 10,
            run_dir: String::new(),
            initial_loss: None,
        }
    }

    #[test]
    fn counts_pairs_and_sensitivity_by_hand() {
        // Baseline b: 3.0, 3.2 at lr 1e-3 (seeds 0, 1). Recipe r: 3.5 (seed 0), 9.9 (seed 1,
        // stalled: progress (10 − 9.9)/(10 − 3) < 0.2), and an unpaired run at 1e-2 (diverged).
        let results = vec![
            run("b", 1e-3, 0, 3.0, false),
            run("b", 1e-3, 1, 3.2, false),
            run("r", 1e-3, 0, 3.5, false),
            run("r", 1e-3, 1, 9.9, false),
            run("r", 1e-2, 0, f64::NAN, true),
        ];
        let init = vec![Some(10.0); 4]; // the fifth run takes the median, 10
        let a = analyze(&results, &init, Some("b"), &AnalysisParams::default());
        use RunOutcome::*;
        assert_eq!(
            a.outcomes,
            vec![Converged, Converged, Converged, Stalled, Diverged]
        );
        assert_eq!(a.initial_losses[4], Some(10.0));
        let c = a.counts["r"];
        assert_eq!((c.converged, c.stalled, c.diverged), (1, 1, 1));
        assert_eq!(
            a.cell_counts[&("r".to_string(), 1e-2f64.to_bits())].diverged,
            1
        );
        let p = a.paired["r"];
        assert_eq!(p.pairs, 2);
        // Gap over the pair where neither failed: 3.5 − 3.0.
        let g = p.loss_gap.unwrap();
        assert!((g.mean - 0.5).abs() < 1e-12 && g.n == 1);
        assert_eq!(
            (p.failures.recipe_failed, p.failures.baseline_failed),
            (1, 0)
        );
        assert_eq!(a.pair_diffs["r"].len(), 2);
        // Sensitivity of r: L(1e-3) = (3.5 + 9.9)/2 = 6.7, L(1e-2) = 10 (capped) → S = 3.3/2.
        let s = &a.sensitivity["r"];
        assert!((s.sensitivity - 1.65).abs() < 1e-12, "{}", s.sensitivity);
        assert_eq!((s.best_lr, s.window), (1e-3, None));
        assert!(!a.paired.contains_key("b"));
    }

    #[test]
    fn empty_and_no_baseline() {
        let a = analyze(&[], &[], Some("b"), &AnalysisParams::default());
        assert!(a.outcomes.is_empty() && a.paired.is_empty() && a.sensitivity.is_empty());
        let a = analyze(
            &[run("x", 1e-3, 0, 3.0, false)],
            &[],
            None,
            &AnalysisParams::default(),
        );
        assert!(!a.stall_rule_applied);
        assert_eq!(a.outcomes, vec![RunOutcome::Converged]);
        assert!(a.paired.is_empty());
    }
}
