//! Run outcomes: every run is exactly one of converged, diverged or stalled.
//!
//! A divergence rate alone rewards a recipe that never moves: a run whose loss sits on the
//! uniform-guess plateau (`≈ ln V`) never blows up, yet it learned nothing. So a run that did not
//! diverge is still a failure when it did not *learn*, and that needs a yardstick: what the best
//! run of the same model and data reached.
//!
//! # Rule
//!
//! For one run with initial loss `L₀` (its first finite training loss) and best loss `L_best`
//! (its lowest finite training loss), in a group of runs of the same model and data whose lowest
//! best loss is `L*`:
//!
//! 1. **diverged** when the divergence rule fired ([`crate::divergence`]: a non-finite loss or a
//!    loss above a multiple of `L₀`), or when the run never had a finite loss;
//! 2. else **stalled** when
//!    - its *progress* `(L₀ − L_best) / (L₀ − L*)` is below [`StallRule::min_progress`] `f`
//!      (a gap `L₀ − L* ≤ 0` counts as progress 0: no run of the group ever got below this run's
//!      start), or
//!    - its own drop `L₀ − L_best` is below [`StallRule::min_drop`] `× |L₀|`, which keeps a group
//!      where *every* run stayed on the plateau from calling its least bad run converged;
//! 3. else **converged**.
//!
//! `L*` is taken over every run of the group, diverged ones included (a run that learned and then
//! blew up still shows what the model can reach).
//!
//! # Why f = 0.2 and a 5 % drop
//!
//! A run stuck on the plateau has progress ≈ 0; healthy runs at the edge of the stable window
//! typically close well over half the gap. 0.2 sits far from both, so noise in `L*` (one lucky
//! seed) does not flip healthy runs, while a run that only nudged its loss is caught. The 5 %
//! drop is far below anything that counts as learning (from `ln 50257 ≈ 10.8`, 0.54 nats; even a
//! unigram model gets three nats) and far above the noise of a flat curve.
//!
//! # Missing initial losses
//!
//! A run without a known `L₀` takes the median `L₀` of the group's runs that have one (runs of the
//! same model and data start at the same loss up to seed noise). When no run of the group has one,
//! the stall rule cannot be applied and a non-diverged run counts as converged;
//! [`classify_group`] says so in [`GroupOutcomes::stall_rule_applied`].

use serde::{Deserialize, Serialize};

/// Default [`StallRule::min_progress`]. See module docs.
pub const DEFAULT_MIN_PROGRESS: f64 = 0.2;
/// Default [`StallRule::min_drop`]. See module docs.
pub const DEFAULT_MIN_DROP: f64 = 0.05;

/// Parameters of the stall rule (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StallRule {
    /// `f`: a run must close at least this fraction of the gap between its initial loss and the
    /// group's best loss. In `[0, 1]`.
    pub min_progress: f64,
    /// A run's best loss must lie at least this fraction of its initial loss below it. `≥ 0`.
    pub min_drop: f64,
}

impl Default for StallRule {
    fn default() -> Self {
        StallRule {
            min_progress: DEFAULT_MIN_PROGRESS,
            min_drop: DEFAULT_MIN_DROP,
        }
    }
}

impl StallRule {
    /// Checks the parameters; the message names the field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.min_progress) {
            return Err(format!(
                "stall rule: min_progress must be a fraction in [0, 1], got {}",
                self.min_progress
            ));
        }
        if !(self.min_drop >= 0.0 && self.min_drop.is_finite()) {
            return Err(format!(
                "stall rule: min_drop must be a finite fraction ≥ 0, got {}",
                self.min_drop
            ));
        }
        Ok(())
    }
}

/// How a run ended, with stalls told apart from convergence: the same type as the one
/// `results.jsonl` records (a run itself records only converged or diverged; the stall rule here
/// assigns `Stalled`, which needs the other runs of the sweep).
pub use crate::results::Outcome as RunOutcome;

/// What the rule needs to know about one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunLosses {
    /// The divergence rule fired during the run.
    pub diverged: bool,
    /// First finite training loss, if known.
    pub initial_loss: Option<f64>,
    /// Lowest finite training loss (non-finite when the run never had one).
    pub best_loss: f64,
}

/// Progress of a run: the fraction of the gap `initial − group_best` its best loss closed. A gap
/// that is not positive (or not finite) gives 0; the result may exceed 1 only if `best` is below
/// `group_best`, which [`classify_group`] never passes.
pub fn progress(initial: f64, best: f64, group_best: f64) -> f64 {
    let gap = initial - group_best;
    if gap > 0.0 && gap.is_finite() && best.is_finite() {
        (initial - best) / gap
    } else {
        0.0
    }
}

/// Classifies one run against a known group best (module docs). `initial` is the run's initial
/// loss (or the group fallback); `None` skips the stall rule.
pub fn classify_run(
    diverged: bool,
    initial: Option<f64>,
    best: f64,
    group_best: f64,
    rule: &StallRule,
) -> RunOutcome {
    if diverged || !best.is_finite() {
        return RunOutcome::Diverged;
    }
    let Some(l0) = initial.filter(|v| v.is_finite()) else {
        return RunOutcome::Converged;
    };
    let drop = l0 - best;
    if progress(l0, best, group_best) < rule.min_progress || drop < rule.min_drop * l0.abs() {
        RunOutcome::Stalled
    } else {
        RunOutcome::Converged
    }
}

/// The outcomes of one group (same model and data), in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupOutcomes {
    pub outcomes: Vec<RunOutcome>,
    /// `L*`, the lowest finite best loss of the group (`None`: no run had a finite loss).
    pub group_best: Option<f64>,
    /// False when no run of the group had an initial loss, so stalls could not be judged.
    pub stall_rule_applied: bool,
}

/// Classifies every run of one group of runs of the same model and data (module docs).
pub fn classify_group(runs: &[RunLosses], rule: &StallRule) -> GroupOutcomes {
    let group_best = runs
        .iter()
        .map(|r| r.best_loss)
        .filter(|v| v.is_finite())
        .min_by(f64::total_cmp);
    let fallback = median(
        runs.iter()
            .filter_map(|r| r.initial_loss)
            .filter(|v| v.is_finite()),
    );
    let outcomes = runs
        .iter()
        .map(|r| {
            let l0 = r.initial_loss.filter(|v| v.is_finite()).or(fallback);
            classify_run(
                r.diverged,
                l0,
                r.best_loss,
                group_best.unwrap_or(f64::NAN),
                rule,
            )
        })
        .collect();
    GroupOutcomes {
        outcomes,
        group_best,
        stall_rule_applied: fallback.is_some(),
    }
}

/// Median (mean of the middle two for an even count); `None` when empty.
pub(crate) fn median(it: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = it.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// How many runs ended which way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    pub converged: u64,
    pub diverged: u64,
    pub stalled: u64,
}

impl OutcomeCounts {
    pub fn add(&mut self, o: RunOutcome) {
        match o {
            RunOutcome::Converged => self.converged += 1,
            RunOutcome::Diverged => self.diverged += 1,
            RunOutcome::Stalled => self.stalled += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.converged + self.diverged + self.stalled
    }

    /// Diverged plus stalled.
    pub fn failed(&self) -> u64 {
        self.diverged + self.stalled
    }

    pub fn of(outcomes: impl IntoIterator<Item = RunOutcome>) -> Self {
        let mut c = OutcomeCounts::default();
        for o in outcomes {
            c.add(o);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(diverged: bool, initial: Option<f64>, best: f64) -> RunLosses {
        RunLosses {
            diverged,
            initial_loss: initial,
            best_loss: best,
        }
    }

    #[test]
    fn hand_classified_group() {
        // L* = 2.0 (run 0). Gap from 10: 8. Progress: run 1 (10 → 8.5) 1.5/8 = 0.1875 < 0.2 →
        // stalled; run 2 (10 → 8.3) 1.7/8 = 0.2125 → converged; run 3 diverged whatever its
        // best; run 4 stays at its start → stalled; run 5 has no initial loss and takes the
        // median of {10, 10, 10, 10, 10} = 10 → progress 1.0 → converged.
        let runs = [
            run(false, Some(10.0), 2.0),
            run(false, Some(10.0), 8.5),
            run(false, Some(10.0), 8.3),
            run(true, Some(10.0), 3.0),
            run(false, Some(10.0), 10.0),
            run(false, None, 2.0),
        ];
        let g = classify_group(&runs, &StallRule::default());
        use RunOutcome::*;
        assert_eq!(
            g.outcomes,
            vec![Converged, Stalled, Converged, Diverged, Stalled, Converged]
        );
        assert_eq!(g.group_best, Some(2.0));
        assert!(g.stall_rule_applied);
        let c = OutcomeCounts::of(g.outcomes);
        assert_eq!(
            (c.converged, c.diverged, c.stalled, c.failed()),
            (3, 1, 2, 3)
        );
    }

    #[test]
    fn all_on_the_plateau_is_all_stalled() {
        // Nobody learned: the best run closes 100 % of a 0.01-nat gap but drops only 0.1 % of
        // its initial loss (< 5 %), so it is not converged either.
        let runs = [run(false, Some(10.0), 9.99), run(false, Some(10.0), 9.995)];
        let g = classify_group(&runs, &StallRule::default());
        assert_eq!(g.outcomes, vec![RunOutcome::Stalled; 2]);
        // A single run that never improved: gap 0 → progress 0.
        let g = classify_group(&[run(false, Some(4.0), 4.0)], &StallRule::default());
        assert_eq!(g.outcomes, vec![RunOutcome::Stalled]);
    }

    #[test]
    fn edge_cases_do_not_panic() {
        let rule = StallRule::default();
        let g = classify_group(&[], &rule);
        assert!(g.outcomes.is_empty() && g.group_best.is_none() && !g.stall_rule_applied);
        // Never a finite loss → diverged; no initial loss anywhere → stall rule not applied.
        let g = classify_group(&[run(false, None, f64::NAN), run(false, None, 3.0)], &rule);
        assert_eq!(
            g.outcomes,
            vec![RunOutcome::Diverged, RunOutcome::Converged]
        );
        assert!(!g.stall_rule_applied);
        assert_eq!(progress(f64::INFINITY, 1.0, 0.5), 0.0);
        assert!(StallRule {
            min_progress: 1.5,
            ..rule
        }
        .validate()
        .unwrap_err()
        .contains("1.5"));
        assert!(StallRule {
            min_drop: -1.0,
            ..rule
        }
        .validate()
        .is_err());
        assert!(rule.validate().is_ok());
    }
}
