//! Learning-rate sensitivity (Wortsman et al. 2023, "Small-scale proxies for large-scale
//! Transformer training instabilities", arXiv 2309.14322, §3.2), the best rate and the stable
//! window on the loss.
//!
//! A recipe is robust when it trains well over a wide range of learning rates, not just at its
//! best one. Wortsman et al. measure that as
//!
//! ```text
//! S = mean_η [ min(L(η), L_init) − min_η' L(η') ]
//! ```
//!
//! over the swept (log-spaced) rates `η`. Lower is more robust; 0 means every rate reached the
//! best loss. Our definitions:
//!
//! - `L(η)` is the mean over seeds of the *capped* final loss `min(L_final, L_init)` of each run
//!   at rate `η`, where `L_init` is that run's initial loss and a non-finite final loss counts as
//!   `L_init` (a run that blew up learned nothing, and capping keeps one blow-up from dominating).
//!   Capping per run before averaging makes `min(L(η), L_init)` of the formula hold term by term.
//!   A run whose initial loss is unknown keeps its final loss if finite and is left out if not.
//! - `min_η' L(η')` is the recipe's **own** best mean loss, as in the paper: S measures the shape
//!   of a recipe's learning-rate curve, not its level. How the levels differ is the paired
//!   comparison's job ([`crate::paired`]).
//! - **Interval**: percentile bootstrap over seeds ([`crate::bootstrap`]): each resample draws the
//!   recipe's `n` seeds with replacement (the same draw applies to every rate, since a seed's runs
//!   share their initialization and data order), recomputes every `L(η)` over the drawn seeds (a
//!   seed drawn twice counts twice; a rate with none of the drawn seeds is left out of that
//!   resample) and then S. With fewer than two seeds there is nothing to resample and no
//!   interval.
//! - **Best learning rate**: the rate with the lowest `L(η)` (ties: the larger rate, which a
//!   practitioner would rather use).
//! - **Stable window on the loss**: the rates with `L(η) ≤ L(η_best) + δ` at which no seed diverged
//!   or stalled ([`crate::outcomes`]); reported as the widest contiguous stretch of such rates on
//!   the swept grid ([`crate::window::stable_lr_window`]). Default δ = [`DEFAULT_DELTA`] nats.

use crate::bootstrap::{percentile_interval, resample_indices, Bootstrap};
use crate::window::stable_lr_window;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Default δ of the loss window, in nats per token: about the seed-to-seed spread of final losses
/// of small language models, so rates inside it are indistinguishable from the best by eye.
pub const DEFAULT_DELTA: f64 = 0.1;

/// Parameters of [`lr_sensitivity`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensitivityParams {
    /// δ of the loss window (nats). `≥ 0`.
    pub delta: f64,
    pub bootstrap: Bootstrap,
}

impl Default for SensitivityParams {
    fn default() -> Self {
        SensitivityParams {
            delta: DEFAULT_DELTA,
            bootstrap: Bootstrap::default(),
        }
    }
}

impl SensitivityParams {
    /// Checks the parameters; the message names the field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.delta >= 0.0 && self.delta.is_finite()) {
            return Err(format!(
                "sensitivity: delta must be a finite loss difference ≥ 0, got {}",
                self.delta
            ));
        }
        self.bootstrap.validate()
    }
}

/// One run of a recipe, as the sensitivity needs it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrRun {
    pub lr: f64,
    pub seed: u64,
    /// Final training loss (may be non-finite).
    pub final_loss: f64,
    /// Initial loss of the run (non-finite when unknown).
    pub initial_loss: f64,
    /// Diverged or stalled.
    pub failed: bool,
}

impl LrRun {
    /// `min(final, initial)`, a non-finite final counting as `initial`; `None` when neither is
    /// usable.
    pub fn capped_loss(&self) -> Option<f64> {
        match (self.final_loss.is_finite(), self.initial_loss.is_finite()) {
            (true, true) => Some(self.final_loss.min(self.initial_loss)),
            (true, false) => Some(self.final_loss),
            (false, true) => Some(self.initial_loss),
            (false, false) => None,
        }
    }
}

/// One swept rate of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrPoint {
    pub lr: f64,
    /// `L(η)`: mean capped final loss over seeds.
    pub mean_loss: f64,
    /// Runs that entered the mean.
    pub runs: usize,
    /// Some seed diverged or stalled here.
    pub any_failed: bool,
}

/// The sensitivity analysis of one recipe (module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSensitivity {
    /// S.
    pub sensitivity: f64,
    /// Bootstrap percentile interval of S; `None` with fewer than two seeds.
    pub interval: Option<(f64, f64)>,
    pub best_lr: f64,
    /// `L(η_best)`.
    pub best_loss: f64,
    /// Every swept rate, ascending.
    pub per_lr: Vec<LrPoint>,
    /// The stable window on the loss, `(lo, hi)`; `None` when no rate qualifies.
    pub window: Option<(f64, f64)>,
    /// Distinct seeds.
    pub seeds: usize,
}

/// S over the runs whose seed is in `draw` (with multiplicity), from the per-(lr, seed) capped
/// losses. `None` when no rate has a run.
fn sensitivity_of(cells: &BTreeMap<u64, BTreeMap<u64, Vec<f64>>>, draw: &[u64]) -> Option<f64> {
    let means: Vec<f64> = cells
        .values()
        .filter_map(|by_seed| {
            let (sum, n) = draw
                .iter()
                .filter_map(|s| by_seed.get(s))
                .flatten()
                .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
            (n > 0).then(|| sum / n as f64)
        })
        .collect();
    let best = means.iter().copied().min_by(f64::total_cmp)?;
    Some(means.iter().map(|m| m - best).sum::<f64>() / means.len() as f64)
}

/// S of `runs` (one recipe) for every bootstrap resample of its sorted distinct seeds, using the
/// index draws of [`resample_indices`]. Exposed so the resamples can be checked independently.
pub fn bootstrap_replicates(runs: &[LrRun], draws: &[Vec<usize>]) -> Vec<f64> {
    let cells = cells(runs);
    let seeds = seeds_of(&cells);
    draws
        .iter()
        .filter_map(|d| {
            let draw: Vec<u64> = d.iter().filter_map(|&i| seeds.get(i).copied()).collect();
            sensitivity_of(&cells, &draw)
        })
        .collect()
}

/// lr bits (ascending for positive rates) → seed → capped losses.
fn cells(runs: &[LrRun]) -> BTreeMap<u64, BTreeMap<u64, Vec<f64>>> {
    let mut m: BTreeMap<u64, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.lr.is_finite()) {
        if let Some(v) = r.capped_loss() {
            m.entry(r.lr.to_bits())
                .or_default()
                .entry(r.seed)
                .or_default()
                .push(v);
        }
    }
    m
}

fn seeds_of(cells: &BTreeMap<u64, BTreeMap<u64, Vec<f64>>>) -> Vec<u64> {
    let mut s: Vec<u64> = cells.values().flat_map(|m| m.keys().copied()).collect();
    s.sort_unstable();
    s.dedup();
    s
}

/// The sensitivity, best rate and loss window of one recipe's runs (module docs). `None` when no
/// run has a usable loss at a finite rate.
pub fn lr_sensitivity(runs: &[LrRun], params: &SensitivityParams) -> Option<LrSensitivity> {
    let cells = cells(runs);
    let seeds = seeds_of(&cells);
    let sensitivity = sensitivity_of(&cells, &seeds)?;
    let mut per_lr: Vec<LrPoint> = cells
        .iter()
        .map(|(&bits, by_seed)| {
            let lr = f64::from_bits(bits);
            let vals: Vec<f64> = by_seed.values().flatten().copied().collect();
            LrPoint {
                lr,
                mean_loss: vals.iter().sum::<f64>() / vals.len() as f64,
                runs: vals.len(),
                any_failed: runs.iter().any(|r| r.lr == lr && r.failed),
            }
        })
        .collect();
    per_lr.sort_by(|a, b| a.lr.total_cmp(&b.lr));
    let best = per_lr
        .iter()
        .min_by(|a, b| {
            a.mean_loss
                .total_cmp(&b.mean_loss)
                .then(b.lr.total_cmp(&a.lr))
        })?
        .clone();
    let interval = if seeds.len() >= 2 {
        let b = &params.bootstrap;
        let draws = resample_indices(seeds.len(), b.resamples, b.rng_seed);
        percentile_interval(&bootstrap_replicates(runs, &draws), b.level)
    } else {
        None
    };
    // Rates that failed anywhere (even where no run had a usable loss) never qualify.
    let mut obs: Vec<(f64, bool)> = per_lr
        .iter()
        .map(|p| {
            (
                p.lr,
                !p.any_failed && p.mean_loss <= best.mean_loss + params.delta,
            )
        })
        .collect();
    obs.extend(
        runs.iter()
            .filter(|r| r.failed && r.lr.is_finite())
            .map(|r| (r.lr, false)),
    );
    Some(LrSensitivity {
        sensitivity,
        interval,
        best_lr: best.lr,
        best_loss: best.mean_loss,
        window: stable_lr_window(&obs),
        per_lr,
        seeds: seeds.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(lr: f64, seed: u64, final_loss: f64, failed: bool) -> LrRun {
        LrRun {
            lr,
            seed,
            final_loss,
            initial_loss: 10.0,
            failed,
        }
    }

    #[test]
    fn hand_computed_sensitivity_best_rate_and_window() {
        // Two seeds, four rates, L_init = 10.
        //   1e-4: 4.0, 4.2        → 4.1
        //   1e-3: 3.0, 3.1        → 3.05  (best)
        //   1e-2: 3.1, 3.08       → 3.09  (within δ = 0.1, but seed 1 stalled → not in window)
        //   1e-1: NaN, 12.0       → both capped at 10 → 10
        // S = ((4.1−3.05) + 0 + (3.09−3.05) + (10−3.05)) / 4 = 8.04 / 4 = 2.01.
        let runs = [
            r(1e-4, 0, 4.0, false),
            r(1e-4, 1, 4.2, false),
            r(1e-3, 0, 3.0, false),
            r(1e-3, 1, 3.1, false),
            r(1e-2, 0, 3.1, false),
            r(1e-2, 1, 3.08, true),
            r(1e-1, 0, f64::NAN, true),
            r(1e-1, 1, 12.0, true),
        ];
        let s = lr_sensitivity(&runs, &SensitivityParams::default()).unwrap();
        assert!((s.sensitivity - 2.01).abs() < 1e-12, "{}", s.sensitivity);
        assert_eq!((s.best_lr, s.seeds), (1e-3, 2));
        assert!((s.best_loss - 3.05).abs() < 1e-12);
        assert_eq!(s.window, Some((1e-3, 1e-3)));
        let means: Vec<f64> = s.per_lr.iter().map(|p| p.mean_loss).collect();
        for (m, e) in means.iter().zip([4.1, 3.05, 3.09, 10.0]) {
            assert!((m - e).abs() < 1e-12, "{means:?}");
        }
        // The interval brackets S and lies in [0, max possible].
        let (lo, hi) = s.interval.unwrap();
        assert!(lo <= s.sensitivity && s.sensitivity <= hi, "{lo} {hi}");
        // Without the stall at 1e-2 the window is 1e-3 … 1e-2.
        let mut runs2 = runs;
        runs2[5].failed = false;
        let s2 = lr_sensitivity(&runs2, &SensitivityParams::default()).unwrap();
        assert_eq!(s2.window, Some((1e-3, 1e-2)));
    }

    #[test]
    fn replicate_by_hand() {
        // Drawing seed 0 twice: 1e-4 → 4.0, 1e-3 → 3.0 (best): S = (1.0 + 0) / 2 = 0.5.
        // Drawing seeds (1, 0): the full-sample means 4.1, 3.05: S = 0.525.
        let runs = [
            r(1e-4, 0, 4.0, false),
            r(1e-4, 1, 4.2, false),
            r(1e-3, 0, 3.0, false),
            r(1e-3, 1, 3.1, false),
        ];
        let reps = bootstrap_replicates(&runs, &[vec![0, 0], vec![1, 0]]);
        assert!((reps[0] - 0.5).abs() < 1e-12 && (reps[1] - 0.525).abs() < 1e-12);
    }

    #[test]
    fn ties_one_seed_empty_and_all_failed() {
        let p = SensitivityParams::default();
        assert_eq!(lr_sensitivity(&[], &p), None);
        // One seed, equal losses: S = 0, best is the larger rate, no interval.
        let s = lr_sensitivity(&[r(1e-3, 0, 3.0, false), r(1e-2, 0, 3.0, false)], &p).unwrap();
        assert_eq!((s.sensitivity, s.best_lr, s.interval), (0.0, 1e-2, None));
        assert_eq!(s.window, Some((1e-3, 1e-2)));
        // Everything blew up: every rate sits at L_init, S = 0, no window.
        let s = lr_sensitivity(
            &[r(1e-3, 0, f64::NAN, true), r(1e-2, 1, f64::INFINITY, true)],
            &p,
        )
        .unwrap();
        assert_eq!((s.sensitivity, s.window), (0.0, None));
        assert_eq!(s.interval, Some((0.0, 0.0)));
        // No usable loss at all.
        let mut x = r(1e-3, 0, f64::NAN, true);
        x.initial_loss = f64::NAN;
        assert_eq!(lr_sensitivity(&[x], &p), None);
        assert!(SensitivityParams { delta: -1.0, ..p }.validate().is_err());
    }
}
