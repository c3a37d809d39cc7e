//! Loss gap: how far a run's loss curve sits above the baseline recipe's, same seed, same steps.
//!
//! Per-step losses are noisy (different precision changes the rounding of every batch), so the raw
//! difference at the last step is mostly noise. We take the difference at every step present in
//! *both* curves, `d_s = run_s − base_s`, and smooth it with a bias-free EMA (`g ← d₀`, then
//! `g ← β·g + (1−β)·d_s`). The gap is `g` at the last common step. Because the EMA is linear this
//! equals the difference of the two EMA-smoothed curves. Positive means the run is worse.
//!
//! The comparison stops at the first common step where either loss is non-finite: after that the
//! difference means nothing. A diverged run's gap therefore describes it up to the divergence; its
//! `outcome` says the rest.

/// Default EMA decay of the gap (≈ 10-step memory).
pub const DEFAULT_GAP_BETA: f64 = 0.9;

/// Bias-free exponential moving average of `(step, value)` points: `g ← v₀`, then
/// `g ← β·g + (1−β)·v`, one output point per input point. Used for the gap and to draw smoothed
/// loss curves. `beta` in `[0, 1)`.
pub fn ema(points: impl IntoIterator<Item = (u64, f64)>, beta: f64) -> Vec<(u64, f64)> {
    let mut g: Option<f64> = None;
    points
        .into_iter()
        .map(|(s, v)| {
            let next = g.map_or(v, |g| beta * g + (1.0 - beta) * v);
            g = Some(next);
            (s, next)
        })
        .collect()
}

/// The smoothed gap at every common step, `(step, gap)`. Both curves must be sorted by step.
pub fn loss_gap_series(run: &[(u64, f64)], baseline: &[(u64, f64)], beta: f64) -> Vec<(u64, f64)> {
    assert!(
        (0.0..1.0).contains(&beta),
        "loss gap beta must be in [0, 1), got {beta}"
    );
    let mut diffs = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < run.len() && j < baseline.len() {
        let (sr, lr) = run[i];
        let (sb, lb) = baseline[j];
        if sr < sb {
            i += 1;
        } else if sb < sr {
            j += 1;
        } else {
            if !lr.is_finite() || !lb.is_finite() {
                break;
            }
            diffs.push((sr, lr - lb));
            i += 1;
            j += 1;
        }
    }
    ema(diffs, beta)
}

/// The smoothed gap at the last common finite step, or `None` when there is none.
pub fn loss_gap(run: &[(u64, f64)], baseline: &[(u64, f64)], beta: f64) -> Option<f64> {
    loss_gap_series(run, baseline, beta).last().map(|p| p.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        // Common steps 0, 2, 4 (step 1 only in run, step 3 only in baseline).
        // d = 1.0, 0.5, 2.0; β = 0.5: g = 1.0 → 0.75 → 1.375.
        let run = [(0, 5.0), (1, 9.0), (2, 4.0), (4, 5.0)];
        let base = [(0, 4.0), (2, 3.5), (3, 1.0), (4, 3.0)];
        assert_eq!(
            loss_gap_series(&run, &base, 0.5),
            vec![(0, 1.0), (2, 0.75), (4, 1.375)]
        );
        assert_eq!(loss_gap(&run, &base, 0.5), Some(1.375));
        // β = 0 is the raw last difference.
        assert_eq!(loss_gap(&run, &base, 0.0), Some(2.0));
    }

    #[test]
    fn ema_by_hand() {
        // β = 0.75: 4 → 0.75·4 + 0.25·8 = 5 → 0.75·5 + 0.25·1 = 4.
        assert_eq!(
            ema([(0, 4.0), (5, 8.0), (9, 1.0)], 0.75),
            vec![(0, 4.0), (5, 5.0), (9, 4.0)]
        );
        assert!(ema([], 0.5).is_empty());
    }

    #[test]
    fn stops_at_non_finite_and_none_without_overlap() {
        let run = [(0, 5.0), (1, 4.0), (2, f64::NAN), (3, 1.0)];
        let base = [(0, 4.0), (1, 4.0), (2, 3.0), (3, 3.0)];
        // d = 1, 0 → g = 1 → 0.5, then NaN stops it.
        assert_eq!(loss_gap(&run, &base, 0.5), Some(0.5));
        assert_eq!(loss_gap(&[(0, 1.0)], &[(1, 1.0)], 0.5), None);
        assert_eq!(loss_gap(&[], &base, 0.5), None);
    }
}
