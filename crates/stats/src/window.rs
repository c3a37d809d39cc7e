//! Stable learning-rate window: the range of learning rates a recipe tolerates.
//!
//! The paper's argument is that a cheaper precision is only a drop-in replacement if it keeps the
//! baseline's hyperparameter robustness. We measure that as the **widest contiguous range of swept
//! learning rates (in sorted order) where every seed converged**. "Contiguous" is over the swept
//! grid: one learning rate with a diverged seed splits the window, because an unstable rate inside
//! a range makes the range unsafe to tune in.
//!
//! Width is `ln(hi/lo)` when all rates are positive (sweeps are log-spaced, so this counts decades
//! rather than favouring the large rates), otherwise `hi − lo`. Ties go to the window with more
//! swept rates, then to the lower one. A single stable rate is a window of width 0, `(lr, lr)`.
//! Learning rates are grouped by exact value, which is what a sweep grid produces.

use crate::results::{Outcome, RunResult};

/// The stable window of one recipe from `(lr, converged)` observations (one per seed and rate).
/// Returns `(lo, hi)` or `None` when no rate had all of its seeds converge.
pub fn stable_lr_window(observations: &[(f64, bool)]) -> Option<(f64, f64)> {
    // Sorted unique rates with "all converged".
    let mut obs: Vec<(f64, bool)> = observations
        .iter()
        .filter(|o| !o.0.is_nan())
        .copied()
        .collect();
    obs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut grid: Vec<(f64, bool)> = Vec::new();
    for (lr, ok) in obs {
        match grid.last_mut() {
            Some(last) if last.0 == lr => last.1 &= ok,
            _ => grid.push((lr, ok)),
        }
    }
    let positive = grid.iter().all(|g| g.0 > 0.0);
    let width = |lo: f64, hi: f64| {
        if positive {
            (hi / lo).ln()
        } else {
            hi - lo
        }
    };
    // (width, count, lo, hi) of the best window so far.
    let mut best: Option<(f64, usize, f64, f64)> = None;
    let mut i = 0;
    while i < grid.len() {
        if !grid[i].1 {
            i += 1;
            continue;
        }
        let mut j = i;
        while j + 1 < grid.len() && grid[j + 1].1 {
            j += 1;
        }
        let (lo, hi) = (grid[i].0, grid[j].0);
        let cand = (width(lo, hi), j - i + 1, lo, hi);
        let better = match best {
            None => true,
            Some(b) => cand.0 > b.0 || (cand.0 == b.0 && cand.1 > b.1),
        };
        if better {
            best = Some(cand);
        }
        i = j + 1;
    }
    best.map(|b| (b.2, b.3))
}

/// The stable window of `recipe` over the results of a sweep.
pub fn recipe_window(results: &[RunResult], recipe: &str) -> Option<(f64, f64)> {
    let obs: Vec<(f64, bool)> = results
        .iter()
        .filter(|r| r.recipe == recipe)
        .map(|r| (r.lr, r.outcome == Outcome::Converged))
        .collect();
    stable_lr_window(&obs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widest_contiguous_in_log_space() {
        // Rates (unsorted, two seeds each): 1e-4 ok, 3e-4 ok, 1e-3 one seed diverged, 3e-3 ok,
        // 1e-2 ok, 3e-2 ok. Windows: [1e-4, 3e-4] (ln 3) and [3e-3, 3e-2] (ln 10) → the second.
        let obs = [
            (1e-2, true),
            (1e-4, true),
            (3e-4, true),
            (1e-3, true),
            (1e-3, false),
            (3e-3, true),
            (1e-4, true),
            (3e-2, true),
            (3e-3, true),
        ];
        assert_eq!(stable_lr_window(&obs), Some((3e-3, 3e-2)));
    }

    #[test]
    fn single_rate_and_none() {
        assert_eq!(
            stable_lr_window(&[(1e-3, false), (2e-3, true), (4e-3, false)]),
            Some((2e-3, 2e-3))
        );
        assert_eq!(stable_lr_window(&[(1e-3, false), (2e-3, false)]), None);
        assert_eq!(stable_lr_window(&[]), None);
    }

    #[test]
    fn ties_prefer_more_rates_then_lower() {
        // Both windows span ln 4; the first has 3 swept rates.
        let obs = [
            (1.0, true),
            (2.0, true),
            (4.0, true),
            (8.0, false),
            (16.0, true),
            (64.0, true),
        ];
        assert_eq!(stable_lr_window(&obs), Some((1.0, 4.0)));
        let obs = [
            (1.0, true),
            (2.0, true),
            (3.0, false),
            (4.0, true),
            (8.0, true),
        ];
        assert_eq!(stable_lr_window(&obs), Some((1.0, 2.0)));
    }
}
