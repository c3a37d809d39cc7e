//! Logit sharpness: how much the loss can grow under a small, relative perturbation of the logits.
//!
//! Lee et al. 2024 (§3.1) adapt Keskar et al.'s (2017) ε-sharpness to autoregressive language
//! models by perturbing the *logits of the last token* instead of the weights. With `x` the logits
//! (length V), `t` the target token and `f(x) = logsumexp(x) − x_t` the cross-entropy:
//!
//! ```text
//! φ = 100 · (max_{|y_i| ≤ ε(|x_i|+1)} f(x+y) − f(x)) / (1 + f(x))
//! ```
//!
//! # Why a closed form
//!
//! `∂f/∂x_i = softmax(x)_i > 0` for every `i ≠ t` and `∂f/∂x_t = softmax(x)_t − 1 < 0`, at *every*
//! point, so `f` is monotone along each coordinate over the whole box. The maximum therefore sits at
//! the corner `y_i = +ε(|x_i|+1)` (i ≠ t), `y_t = −ε(|x_t|+1)`. Keskar et al. needed an inner
//! optimizer (L-BFGS-B) because their perturbation acts on the weights; on the logits the answer is
//! exact and costs one O(V) pass. The tests check this against a numerical box-constrained
//! maximizer and against exhaustive vertex enumeration (`f` is convex, so its maximum over a box is
//! at a vertex).
//!
//! # Numerics
//!
//! Everything is accumulated in f64 with a max-shifted log-sum-exp, so logits of magnitude 1e4 or a
//! vocabulary of 10^6 entries are fine. Non-finite logits give `NaN` (the metric is undefined; a run
//! with non-finite logits is caught by the divergence rule anyway).
//!
//! # ε
//!
//! [`DEFAULT_EPS`] is `1e-3`, the box size Keskar et al. report their main results with (they also
//! use `5e-4`). We could not find the value Lee et al. use in the text available to us, so treat
//! the default as ours and pass ε explicitly when comparing against the paper's figures; φ scales
//! roughly linearly with ε for small ε.

/// Default box size ε (relative to `|x_i| + 1`), after Keskar et al. 2017. See the module docs.
pub const DEFAULT_EPS: f64 = 1e-3;

/// Cross-entropy `f(x) = logsumexp(x) − x_t` in f64 with a max shift.
///
/// `NaN` when any logit is non-finite.
///
/// # Panics
/// When `target >= logits.len()`.
pub fn cross_entropy(logits: &[f32], target: usize) -> f64 {
    cross_entropy_with(logits.len(), target, |i| logits[i] as f64)
}

/// Cross-entropy of an f64 logit vector (used by the tests' numerical maximizer too).
pub fn cross_entropy_f64(logits: &[f64], target: usize) -> f64 {
    cross_entropy_with(logits.len(), target, |i| logits[i])
}

fn cross_entropy_with(v: usize, target: usize, x: impl Fn(usize) -> f64) -> f64 {
    assert!(
        target < v,
        "target token {target} is out of range for {v} logits"
    );
    let mut max = f64::NEG_INFINITY;
    for i in 0..v {
        let xi = x(i);
        if !xi.is_finite() {
            return f64::NAN;
        }
        max = max.max(xi);
    }
    let sum: f64 = (0..v).map(|i| (x(i) - max).exp()).sum();
    max + sum.ln() - x(target)
}

/// The worst-case corner of the ε-box: `x_i + ε(|x_i|+1)` for `i ≠ t`, `x_t − ε(|x_t|+1)`.
fn corner(x: f64, is_target: bool, eps: f64) -> f64 {
    let r = eps * (x.abs() + 1.0);
    if is_target {
        x - r
    } else {
        x + r
    }
}

/// Logit sharpness φ of one logit vector (the last token's logits) with its target. See the module
/// docs for the exact definition. Returns `NaN` for non-finite logits.
///
/// # Panics
/// When `target >= logits.len()` or `eps` is negative or non-finite.
pub fn logit_sharpness(logits: &[f32], target: usize, eps: f64) -> f64 {
    assert!(
        eps.is_finite() && eps >= 0.0,
        "sharpness box size eps must be finite and >= 0, got {eps}"
    );
    let f0 = cross_entropy(logits, target);
    if !f0.is_finite() {
        return f64::NAN;
    }
    let f1 = cross_entropy_with(logits.len(), target, |i| {
        corner(logits[i] as f64, i == target, eps)
    });
    100.0 * (f1 - f0) / (1.0 + f0)
}

/// Mean logit sharpness over a batch: `logits` is `[n, V]` row-major (one row per sequence, the
/// row being that sequence's last-token logits), `targets` has length `n`.
///
/// Returns `NaN` if any row is non-finite (so one bad sequence is not averaged away), and `NaN`
/// for an empty batch.
///
/// # Panics
/// When `logits.len()` is not a multiple of `targets.len()`, or a target is out of range.
pub fn mean_sharpness(logits: &[f32], targets: &[usize], eps: f64) -> f64 {
    let n = targets.len();
    if n == 0 {
        return f64::NAN;
    }
    assert!(
        logits.len().is_multiple_of(n) && !logits.is_empty(),
        "mean_sharpness: {} logits do not split into {n} rows (one per target)",
        logits.len()
    );
    let v = logits.len() / n;
    let total: f64 = logits
        .chunks_exact(v)
        .zip(targets)
        .map(|(row, &t)| logit_sharpness(row, t, eps))
        .sum();
    total / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_hand_computed() {
        // x = [0, 0], t = 0, ε = 0.1: f(x) = ln 2; corner z = [-0.1, 0.1];
        // f(z) = ln(e^-0.1 + e^0.1) + 0.1 = ln(2 cosh 0.1) + 0.1 = 0.798138...
        // φ = 100 (0.798138... − 0.693147...) / 1.693147... = 6.20098...
        let phi = logit_sharpness(&[0.0, 0.0], 0, 0.1);
        let expect = 100.0 * ((2.0 * 0.1f64.cosh()).ln() + 0.1 - 2f64.ln()) / (1.0 + 2f64.ln());
        assert!((phi - expect).abs() < 1e-12, "{phi} vs {expect}");
        assert!((phi - 6.200_978).abs() < 1e-5, "{phi}");
    }

    #[test]
    fn v2_nonzero_logits() {
        // x = [2, -1], t = 1, ε = 0.01: z = [2 + 0.03, -1 - 0.02] = [2.03, -1.02].
        // f(x) = ln(e^2 + e^-1) + 1 = 3.048587...; f(z) = ln(e^2.03 + e^-1.02) + 1.02 = 3.097...
        let phi = logit_sharpness(&[2.0, -1.0], 1, 0.01);
        let f0 = (2f64.exp() + (-1f64).exp()).ln() + 1.0;
        let f1 = (2.03f64.exp() + (-1.02f64).exp()).ln() + 1.02;
        assert!((f0 - 3.048_587_351).abs() < 1e-8);
        assert!((phi - 100.0 * (f1 - f0) / (1.0 + f0)).abs() < 1e-12);
    }

    #[test]
    fn zero_eps_is_zero_and_nonfinite_is_nan() {
        assert_eq!(logit_sharpness(&[1.0, 2.0, 3.0], 2, 0.0), 0.0);
        assert!(logit_sharpness(&[1.0, f32::NAN], 0, 1e-3).is_nan());
        assert!(logit_sharpness(&[1.0, f32::INFINITY], 0, 1e-3).is_nan());
    }

    #[test]
    fn large_logits_are_stable() {
        let phi = logit_sharpness(&[1e4, -1e4, 5e3], 0, 1e-3);
        assert!(phi.is_finite() && phi >= 0.0, "{phi}");
    }

    #[test]
    fn mean_over_rows() {
        let logits = [0.0, 0.0, 2.0, -1.0];
        let m = mean_sharpness(&logits, &[0, 1], 0.01);
        let a = logit_sharpness(&[0.0, 0.0], 0, 0.01);
        let b = logit_sharpness(&[2.0, -1.0], 1, 0.01);
        assert!((m - (a + b) / 2.0).abs() < 1e-15);
        assert!(mean_sharpness(&[], &[], 0.01).is_nan());
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn target_out_of_range_panics() {
        logit_sharpness(&[0.0, 0.0], 2, 1e-3);
    }
}
