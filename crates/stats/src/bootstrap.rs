//! The nonparametric bootstrap over seeds: resample indices and percentile intervals.
//!
//! A sweep has a handful of seeds per recipe, and a statistic like the learning-rate sensitivity
//! is a nonlinear function of all of them at once, so its sampling error has no closed form. The
//! bootstrap (Efron 1979) estimates it by recomputing the statistic on `B` samples of the seeds
//! drawn *with replacement*; the percentile interval is the `(1−level)/2` and `(1+level)/2`
//! quantiles of the `B` recomputed values.
//!
//! Resampling is deterministic: [`resample_indices`] draws from ChaCha8 seeded with
//! [`Bootstrap::rng_seed`], so a report is reproducible bit for bit, and the indices are exposed
//! so another implementation can recompute the same resamples. Quantiles interpolate linearly
//! between order statistics, as numpy's default `percentile` does (Hyndman & Fan type 7).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Default number of resamples: enough that the 2.5 % and 97.5 % quantiles move by well under a
/// tenth of the interval width between RNG seeds, cheap for a few hundred runs.
pub const DEFAULT_RESAMPLES: usize = 2000;
/// Default RNG seed (any fixed value; fixed so reports are reproducible).
pub const DEFAULT_RNG_SEED: u64 = 0x5EED_F008;

/// Parameters of a percentile bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bootstrap {
    /// `B`, the number of resamples. `≥ 1`.
    pub resamples: usize,
    /// Seed of the ChaCha8 generator that draws the resamples.
    pub rng_seed: u64,
    /// Coverage of the interval, in `(0, 1)`.
    pub level: f64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            resamples: DEFAULT_RESAMPLES,
            rng_seed: DEFAULT_RNG_SEED,
            level: 0.95,
        }
    }
}

impl Bootstrap {
    /// Checks the parameters; the message names the field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if self.resamples == 0 {
            return Err("bootstrap: resamples must be at least 1, got 0".into());
        }
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(format!(
                "bootstrap: level must be in (0, 1), got {}",
                self.level
            ));
        }
        Ok(())
    }
}

/// `b` resamples of `n` indices drawn uniformly with replacement from `0..n`, from ChaCha8 seeded
/// with `rng_seed`. Empty when `n == 0`.
pub fn resample_indices(n: usize, b: usize, rng_seed: u64) -> Vec<Vec<usize>> {
    if n == 0 {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(rng_seed);
    (0..b)
        .map(|_| (0..n).map(|_| rng.random_range(0..n)).collect())
        .collect()
}

/// The `q`-quantile (`q` in `[0, 1]`) of `values` by linear interpolation between order
/// statistics (numpy's default). Non-finite values are ignored; `None` when none is left.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    Some(v[lo] + (h - lo as f64) * (v[hi] - v[lo]))
}

/// The percentile interval at `level` of bootstrap replicates.
pub fn percentile_interval(replicates: &[f64], level: f64) -> Option<(f64, f64)> {
    let a = (1.0 - level) / 2.0;
    Some((quantile(replicates, a)?, quantile(replicates, 1.0 - a)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy_linear() {
        // numpy.percentile([4, 1, 3, 2], [0, 25, 50, 90, 100]) = [1, 1.75, 2.5, 3.7, 4].
        let v = [4.0, 1.0, 3.0, 2.0];
        let got: Vec<f64> = [0.0, 0.25, 0.5, 0.9, 1.0]
            .iter()
            .map(|&q| quantile(&v, q).unwrap())
            .collect();
        for (g, e) in got.iter().zip([1.0, 1.75, 2.5, 3.7, 4.0]) {
            assert!((g - e).abs() < 1e-12, "{got:?}");
        }
        assert_eq!(quantile(&[f64::NAN], 0.5), None);
        assert_eq!(quantile(&[5.0], 0.975), Some(5.0));
        assert_eq!(percentile_interval(&[], 0.95), None);
    }

    #[test]
    fn resamples_are_reproducible_in_range_and_uniform() {
        let a = resample_indices(5, 4000, 7);
        assert_eq!(a, resample_indices(5, 4000, 7));
        assert_ne!(a, resample_indices(5, 4000, 8));
        assert!(a.iter().all(|r| r.len() == 5 && r.iter().all(|&i| i < 5)));
        // 20000 draws of 5 values: each count ~ Binomial(20000, 0.2), sd 56.6; allow 5 sd.
        let mut counts = [0usize; 5];
        a.iter().flatten().for_each(|&i| counts[i] += 1);
        assert!(counts.iter().all(|&c| c.abs_diff(4000) < 283), "{counts:?}");
        assert!(resample_indices(0, 10, 1).is_empty());
    }
}
