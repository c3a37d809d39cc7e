//! Paired comparison of a recipe with the baseline: loss gap, failure rates, detectable effects.
//!
//! A sweep runs every recipe with the same seeds and learning rates, and a seed fixes the
//! initialization and the data order. So a recipe's run and the baseline's run with the same seed
//! and rate form a **pair** that differs only in the recipe, and comparing within pairs removes
//! the seed-to-seed noise that a comparison of two unpaired means would carry.
//!
//! # Loss gap
//!
//! `d = L_final(recipe) − L_final(baseline)` per pair, over the pairs where neither run failed
//! (diverged or stalled) and both final losses are finite: the gap says how much worse a recipe
//! trains *when it trains*; how often it fails is compared separately, below. Reported: the mean
//! `d̄`, the **paired t interval** `d̄ ± t_{1−α/2, n−1} · s/√n` (`s` the sample standard deviation
//! of the `d`, `n ≥ 2` pairs), and the **smallest detectable mean gap**
//! `(z_{1−α/2} + z_{power}) · s/√n` — the true mean gap a two-sided level-α test of these `n`
//! pairs finds with the given power, in the normal approximation (2.80 · SE for α = 0.05 and
//! power 0.8).
//!
//! # Failure rates
//!
//! A run fails when it diverged or stalled ([`crate::outcomes`]). Over the runs that have a
//! partner, `x₁` of the recipe's `n₁` runs and `x₀` of the baseline's `n₀` runs failed:
//!
//! - **Fisher's exact test**, two-sided, on the 2×2 table `[[x₁, n₁−x₁], [x₀, n₀−x₀]]`: the
//!   probability, under the hypergeometric null with all margins fixed, of a table no more likely
//!   than the observed one (as `scipy.stats.fisher_exact`; computed by `statrs`).
//! - **Newcombe's hybrid score interval** for `p₁ − p₀` (Newcombe 1998, method 10): with Wilson
//!   intervals `(l₁, u₁)`, `(l₀, u₀)` ([`crate::wilson`]),
//!   `[d − √((p₁−l₁)² + (u₀−p₀)²),  d + √((u₁−p₁)² + (p₀−l₀)²)]`.
//! - **Smallest detectable increase**: the least `Δ` such that a recipe with failure rate
//!   `p₀ + Δ` against a baseline with rate `p₀` (the baseline's observed rate) is detected by the
//!   two-sided Fisher test at level α with at least the given power at these sample sizes. The
//!   power is computed *exactly*: the sum over every outcome `(x₁, x₀)` of
//!   `Binom(x₁; n₁, p₀+Δ) · Binom(x₀; n₀, p₀)` over the outcomes the test rejects. `None` when
//!   even `Δ = 1 − p₀` does not reach the power (e.g. 3 against 3 runs: Fisher's smallest
//!   two-sided p is 0.1).
//!
//! The Fisher test treats the runs as independent rather than paired; with few failures per
//! cell that is the usual, conservative choice.

use crate::wilson::{wilson_interval, Z95};
use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, ContinuousCDF, Discrete, Normal, StudentsT};
use statrs::stats_tests::{fishers_exact, Alternative};

/// Level and power of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairedParams {
    /// Two-sided significance level α, in `(0, 1)`; the intervals have coverage `1 − α`.
    pub alpha: f64,
    /// Power of the detectable-effect statements, in `(0, 1)`.
    pub power: f64,
}

impl Default for PairedParams {
    fn default() -> Self {
        PairedParams {
            alpha: 0.05,
            power: 0.8,
        }
    }
}

impl PairedParams {
    /// Checks the parameters; the message names the field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [("alpha", self.alpha), ("power", self.power)] {
            if !(v > 0.0 && v < 1.0) {
                return Err(format!(
                    "paired comparison: {name} must be in (0, 1), got {v}"
                ));
            }
        }
        Ok(())
    }

    fn z(&self) -> f64 {
        if self.alpha == 0.05 {
            Z95
        } else {
            normal_quantile(1.0 - self.alpha / 2.0)
        }
    }
}

fn normal_quantile(p: f64) -> f64 {
    Normal::standard().inverse_cdf(p)
}

/// The paired loss gap (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossGap {
    /// Pairs with finite losses.
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation of the differences (`NaN` for one pair).
    pub sd: f64,
    /// Paired t interval at `1 − α`; `None` with fewer than two pairs.
    pub interval: Option<(f64, f64)>,
    /// `(z_{1−α/2} + z_power) · sd/√n`; `None` with fewer than two pairs.
    pub min_detectable: Option<f64>,
}

/// Mean, paired t interval and smallest detectable mean of the differences `diffs` (non-finite
/// ones are dropped). `None` when no finite difference is left.
pub fn paired_loss_gap(diffs: &[f64], params: &PairedParams) -> Option<LossGap> {
    let d: Vec<f64> = diffs.iter().copied().filter(|x| x.is_finite()).collect();
    let n = d.len();
    if n == 0 {
        return None;
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Some(LossGap {
            n,
            mean,
            sd: f64::NAN,
            interval: None,
            min_detectable: None,
        });
    }
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let se = sd / (n as f64).sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .expect("n − 1 ≥ 1 degrees of freedom")
        .inverse_cdf(1.0 - params.alpha / 2.0);
    let mde = (params.z() + normal_quantile(params.power)) * se;
    Some(LossGap {
        n,
        mean,
        sd,
        interval: Some((mean - t * se, mean + t * se)),
        min_detectable: Some(mde),
    })
}

/// Two-sided Fisher exact test p-value for `x1` of `n1` against `x0` of `n0`. Counts beyond the
/// totals are clamped to them.
pub fn fisher_two_sided(x1: u64, n1: u64, x0: u64, n0: u64) -> f64 {
    let (x1, x0) = (x1.min(n1), x0.min(n0));
    // Only an all-zero table fails statrs' checks, and it carries no evidence.
    fishers_exact(&[x1, n1 - x1, x0, n0 - x0], Alternative::TwoSided).unwrap_or(1.0)
}

/// Newcombe's hybrid score interval (method 10) for `x1/n1 − x0/n0` at normal quantile `z`. With
/// an empty side its proportion is unknown: the interval is the widest `[−1, 1]`.
pub fn newcombe_interval(x1: u64, n1: u64, x0: u64, n0: u64, z: f64) -> (f64, f64) {
    if n1 == 0 || n0 == 0 {
        return (-1.0, 1.0);
    }
    let (x1, x0) = (x1.min(n1), x0.min(n0));
    let (p1, p0) = (x1 as f64 / n1 as f64, x0 as f64 / n0 as f64);
    let (l1, u1) = wilson_interval(x1, n1, z);
    let (l0, u0) = wilson_interval(x0, n0, z);
    let d = p1 - p0;
    let lo = d - ((p1 - l1).powi(2) + (u0 - p0).powi(2)).sqrt();
    let hi = d + ((u1 - p1).powi(2) + (p0 - l0).powi(2)).sqrt();
    (lo.max(-1.0), hi.min(1.0))
}

/// Which outcomes `(x1, x0)` the two-sided Fisher test rejects at `alpha`: `reject[x1][x0]`.
fn rejection_region(n1: u64, n0: u64, alpha: f64) -> Vec<Vec<bool>> {
    (0..=n1)
        .map(|x1| {
            (0..=n0)
                .map(|x0| fisher_two_sided(x1, n1, x0, n0) <= alpha)
                .collect()
        })
        .collect()
}

fn binom_pmfs(n: u64, p: f64) -> Vec<f64> {
    let b = Binomial::new(p.clamp(0.0, 1.0), n).expect("p in [0, 1]");
    (0..=n).map(|k| b.pmf(k)).collect()
}

fn power_in(reject: &[Vec<bool>], n1: u64, p1: f64, base: &[f64]) -> f64 {
    let f1 = binom_pmfs(n1, p1);
    reject
        .iter()
        .zip(&f1)
        .map(|(row, w1)| {
            w1 * row
                .iter()
                .zip(base)
                .filter(|(r, _)| **r)
                .map(|(_, w0)| w0)
                .sum::<f64>()
        })
        .sum()
}

/// Exact power of the two-sided Fisher test at `alpha` for `n1` recipe runs failing with
/// probability `p1` against `n0` baseline runs failing with probability `p0` (module docs).
pub fn fisher_power(n1: u64, p1: f64, n0: u64, p0: f64, alpha: f64) -> f64 {
    let reject = rejection_region(n1, n0, alpha);
    power_in(&reject, n1, p1, &binom_pmfs(n0, p0))
}

/// The smallest increase `Δ` of the failure rate over `p0` that the two-sided Fisher test at
/// `alpha` detects with at least `power` (module docs), to within 1e-6. `None` when no `Δ ≤ 1 − p0`
/// does, or a side has no runs.
pub fn min_detectable_increase(n1: u64, n0: u64, p0: f64, alpha: f64, power: f64) -> Option<f64> {
    if n1 == 0 || n0 == 0 || !(0.0..=1.0).contains(&p0) {
        return None;
    }
    let reject = rejection_region(n1, n0, alpha);
    let base = binom_pmfs(n0, p0);
    let pw = |p1: f64| power_in(&reject, n1, p1, &base);
    // Scan a grid first: the power of a two-sided exact test need not be monotone near p0, and
    // the first grid point that reaches the power brackets the answer for the bisection.
    const GRID: usize = 400;
    let at = |i: usize| p0 + (1.0 - p0) * i as f64 / GRID as f64;
    let first = (1..=GRID).find(|&i| pw(at(i)) >= power)?;
    let (mut lo, mut hi) = (at(first - 1), at(first));
    while hi - lo > 1e-7 {
        let mid = 0.5 * (lo + hi);
        if pw(mid) >= power {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi - p0)
}

/// Failure counts of a recipe and the baseline over their paired runs, and what they show.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FailureComparison {
    pub recipe_failed: u64,
    pub recipe_runs: u64,
    pub baseline_failed: u64,
    pub baseline_runs: u64,
    /// Two-sided Fisher exact p-value.
    pub fisher_p: f64,
    /// Recipe rate − baseline rate.
    pub difference: f64,
    /// Newcombe hybrid score interval of the difference at `1 − α`.
    pub interval: (f64, f64),
    /// Smallest detectable increase over the baseline's observed rate.
    pub min_detectable_increase: Option<f64>,
}

/// [`FailureComparison`] from counts.
pub fn compare_failures(
    recipe_failed: u64,
    recipe_runs: u64,
    baseline_failed: u64,
    baseline_runs: u64,
    params: &PairedParams,
) -> FailureComparison {
    let (x1, n1) = (recipe_failed.min(recipe_runs), recipe_runs);
    let (x0, n0) = (baseline_failed.min(baseline_runs), baseline_runs);
    let rate = |x: u64, n: u64| {
        if n == 0 {
            f64::NAN
        } else {
            x as f64 / n as f64
        }
    };
    let p0 = rate(x0, n0);
    FailureComparison {
        recipe_failed: x1,
        recipe_runs: n1,
        baseline_failed: x0,
        baseline_runs: n0,
        fisher_p: fisher_two_sided(x1, n1, x0, n0),
        difference: rate(x1, n1) - p0,
        interval: newcombe_interval(x1, n1, x0, n0, params.z()),
        min_detectable_increase: min_detectable_increase(n1, n0, p0, params.alpha, params.power),
    }
}

/// One side of a pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairSide {
    pub final_loss: f64,
    /// Diverged or stalled.
    pub failed: bool,
}

/// The full comparison of a recipe with the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedComparison {
    pub pairs: usize,
    pub loss_gap: Option<LossGap>,
    pub failures: FailureComparison,
}

/// Compares `(recipe, baseline)` pairs (module docs).
pub fn compare_pairs(pairs: &[(PairSide, PairSide)], params: &PairedParams) -> PairedComparison {
    let diffs: Vec<f64> = pairs
        .iter()
        .filter(|(r, b)| !r.failed && !b.failed)
        .map(|(r, b)| r.final_loss - b.final_loss)
        .collect();
    let n = pairs.len() as u64;
    let xr = pairs.iter().filter(|p| p.0.failed).count() as u64;
    let xb = pairs.iter().filter(|p| p.1.failed).count() as u64;
    PairedComparison {
        pairs: pairs.len(),
        loss_gap: paired_loss_gap(&diffs, params),
        failures: compare_failures(xr, n, xb, n, params),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() < tol, "{a} vs {b}");
    }

    #[test]
    fn loss_gap_by_hand() {
        // d = 1, 2, 3, 4: mean 2.5, s = √(5/3) = 1.290994, SE = 0.645497, t_{0.975,3} = 3.182446
        // → 2.5 ± 2.054262; MDE = (1.959964 + 0.841621) · 0.645497 = 1.808413.
        let g = paired_loss_gap(&[1.0, 2.0, f64::NAN, 3.0, 4.0], &PairedParams::default()).unwrap();
        assert_eq!(g.n, 4);
        close(g.mean, 2.5, 1e-12);
        close(g.sd, 1.290994, 1e-6);
        let (lo, hi) = g.interval.unwrap();
        close(lo, 0.445738, 1e-5);
        close(hi, 4.554262, 1e-5);
        close(g.min_detectable.unwrap(), 1.808413, 1e-5);
        let one = paired_loss_gap(&[0.5], &PairedParams::default()).unwrap();
        assert_eq!(
            (one.mean, one.interval, one.min_detectable),
            (0.5, None, None)
        );
        assert_eq!(paired_loss_gap(&[], &PairedParams::default()), None);
    }

    #[test]
    fn fisher_by_enumeration() {
        // [[3, 1], [1, 3]]: hypergeometric(8, 4, 4) pmf of x = 0..4 is
        // (1, 16, 36, 16, 1)/70; P(x=3) = 16/70; as or less likely: x ∈ {0, 1, 3, 4} → 34/70.
        close(fisher_two_sided(3, 4, 1, 4), 34.0 / 70.0, 1e-12);
        // [[3, 0], [0, 3]]: C(6,3) = 20 tables, extremes 1/20 each → 0.1 (the smallest p at 3 v 3).
        close(fisher_two_sided(3, 3, 0, 3), 0.1, 1e-12);
        assert_eq!(fisher_two_sided(0, 5, 0, 5), 1.0);
        assert_eq!(fisher_two_sided(0, 0, 0, 0), 1.0);
        assert_eq!(fisher_two_sided(5, 5, 5, 5), 1.0);
    }

    #[test]
    fn newcombe_matches_the_paper() {
        // Newcombe (1998), Table II, method 10 (lower, upper), to the 4 decimals printed there.
        for (x1, n1, x0, n0, lo, hi) in [
            (56, 70, 48, 80, 0.0524, 0.3339),
            (9, 10, 3, 10, 0.1705, 0.8090),
            (6, 7, 2, 7, 0.0582, 0.8062),
            (5, 56, 0, 29, -0.0381, 0.1926),
            (0, 10, 0, 20, -0.1611, 0.2775),
            (0, 10, 0, 10, -0.2775, 0.2775),
            (10, 10, 0, 20, 0.6791, 1.0000),
            (10, 10, 0, 10, 0.6075, 1.0000),
        ] {
            let (l, h) = newcombe_interval(x1, n1, x0, n0, Z95);
            close(l, lo, 6e-5);
            close(h, hi, 6e-5);
        }
        assert_eq!(newcombe_interval(0, 0, 1, 2, Z95), (-1.0, 1.0));
    }

    #[test]
    fn exact_power_by_hand() {
        // 3 v 3 runs: no outcome reaches p ≤ 0.05, so nothing is detectable.
        assert_eq!(fisher_power(3, 1.0, 3, 0.0, 0.05), 0.0);
        assert_eq!(min_detectable_increase(3, 3, 0.0, 0.05, 0.8), None);
        // 4 v 4 at p0 = 0: only [[4,0],[0,4]] rejects (p = 2/70 = 0.0286); [[3,1],[0,4]] has
        // p = 0.1429. Power = p1⁴ ≥ 0.8 ⇔ p1 ≥ 0.8^(1/4) = 0.945742.
        close(fisher_power(4, 0.9, 4, 0.0, 0.05), 0.9f64.powi(4), 1e-12);
        close(
            min_detectable_increase(4, 4, 0.0, 0.05, 0.8).unwrap(),
            0.8f64.powf(0.25),
            1e-6,
        );
        assert_eq!(min_detectable_increase(0, 4, 0.0, 0.05, 0.8), None);
        assert_eq!(min_detectable_increase(4, 4, 1.0, 0.05, 0.8), None);
    }

    #[test]
    fn compare_pairs_counts_and_drops_failures_from_the_gap() {
        let s = |l: f64, f: bool| PairSide {
            final_loss: l,
            failed: f,
        };
        let pairs = [
            (s(3.5, false), s(3.0, false)),
            (s(3.8, false), s(3.2, false)),
            (s(9.7, true), s(3.2, false)), // stalled recipe: a failure, not in the gap
            (s(f64::NAN, true), s(3.1, false)), // diverged: likewise
        ];
        let c = compare_pairs(&pairs[1..], &PairedParams::default());
        assert_eq!(c.pairs, 3);
        let g = c.loss_gap.unwrap();
        assert_eq!(g.n, 1);
        close(g.mean, 0.6, 1e-12);
        let c = compare_pairs(&pairs, &PairedParams::default());
        assert_eq!(c.pairs, 4);
        assert_eq!(c.loss_gap.unwrap().n, 2);
        close(c.loss_gap.unwrap().mean, 0.55, 1e-12);
        let c = compare_pairs(&pairs[1..], &PairedParams::default());
        assert_eq!(
            (c.failures.recipe_failed, c.failures.baseline_failed),
            (2, 0)
        );
        close(c.failures.difference, 2.0 / 3.0, 1e-12);
        // [[2,1],[0,3]]: 2 failures in all; P(recipe has k) = C(3,k)·C(3,2−k)/C(6,2) =
        // (3, 9, 3)/15; as or less likely than k = 2: k ∈ {0, 2} → 6/15 = 0.4.
        close(c.failures.fisher_p, 0.4, 1e-12);
    }
}
