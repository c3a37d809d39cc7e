//! Wilson score interval for a binomial proportion (divergence rate over seeds).
//!
//! Sweeps run a handful of seeds per (recipe, learning rate), so the observed divergence rate
//! `k/n` is coarse. The normal ("Wald") interval collapses to zero width at `k = 0` or `k = n`,
//! exactly the cells we care most about; the Wilson interval (Wilson 1927) stays honest there and
//! has close to nominal coverage for small `n`:
//!
//! ```text
//! p = k/n,   c = (p + z²/2n) / (1 + z²/n),   h = z/(1 + z²/n) · √(p(1−p)/n + z²/4n²)
//! interval = [c − h, c + h]  (clamped to [0, 1])
//! ```
//!
//! with `z = 1.959963984540054` for 95 %. With no trials (`n = 0`) nothing is known and the
//! interval is `[0, 1]`.

/// The two-sided 95 % normal quantile.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval `(lo, hi)` for `k` successes in `n` trials at normal quantile `z`.
///
/// # Panics
/// When `k > n`.
pub fn wilson_interval(k: u64, n: u64, z: f64) -> (f64, f64) {
    assert!(
        k <= n,
        "wilson_interval: {k} successes out of only {n} trials"
    );
    if n == 0 {
        return (0.0, 1.0);
    }
    let nf = n as f64;
    let p = k as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let center = (p + z2 / (2.0 * nf)) / denom;
    let half = z / denom * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    // At k = 0 (k = n) the lower (upper) end is exactly 0 (1); clamp away rounding noise.
    let lo = if k == 0 {
        0.0
    } else {
        (center - half).max(0.0)
    };
    let hi = if k == n {
        1.0
    } else {
        (center + half).min(1.0)
    };
    (lo, hi)
}

/// [`wilson_interval`] at 95 %.
pub fn wilson95(k: u64, n: u64) -> (f64, f64) {
    wilson_interval(k, n, Z95)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: (f64, f64), b: (f64, f64)) {
        assert!(
            (a.0 - b.0).abs() < 5e-5 && (a.1 - b.1).abs() < 5e-5,
            "{a:?} vs {b:?}"
        );
    }

    #[test]
    fn hand_computed() {
        // k=0, n=10: c = (z²/20)/(1+z²/10) = 0.192079/1.384146 = 0.138771 = h → [0, 0.277542].
        close(wilson95(0, 10), (0.0, 0.2775));
        // k=5, n=10: c = 0.5, h = 1.959964/1.384146 · √(0.025 + 0.009604) = 0.263386.
        close(wilson95(5, 10), (0.2366, 0.7634));
        // Symmetry: k=10 of 10 mirrors k=0.
        close(wilson95(10, 10), (0.7225, 1.0));
        // k=1, n=1: c = (1 + z²/2)/(1 + z²) = 0.5963, h = z/(1+z²)·√(z²/4) = 0.4037 → [0.2065, 1].
        close(wilson95(1, 1), (0.2065, 1.0));
        // k=2, n=5 (a typical 5-seed cell): [0.1176, 0.7693].
        close(wilson95(2, 5), (0.1176, 0.7693));
    }

    #[test]
    fn no_trials_is_uninformative() {
        assert_eq!(wilson95(0, 0), (0.0, 1.0));
    }

    #[test]
    #[should_panic(expected = "out of only")]
    fn more_successes_than_trials_panics() {
        wilson95(3, 2);
    }
}
