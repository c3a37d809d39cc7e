//! Deterministic parameter init, independent of the backend.
//!
//! burn's `Tensor::random` draws from a per-backend global RNG: two backends (say `NdArray` and
//! `Precision<NdArray>`) or two tests running in parallel would not see the same weights. For a
//! precision study we want the *same* starting point under every recipe, so weights are drawn on
//! the host from a small counter-free generator (SplitMix64 + Box–Muller) whose stream is keyed by
//! the config seed and the parameter's name, then uploaded.

/// SplitMix64 (Steele et al. 2014): tiny, fast, good enough for init noise.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1], never 0 (so `ln` is finite).
    fn next_open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// FNV-1a of the parameter name, mixed with the seed: one independent stream per parameter, so
/// adding a parameter does not shift the values of the others.
fn stream_key(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    let mut mix = SplitMix64(h ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    mix.next_u64()
}

/// `n` samples of `N(0, std²)` for the parameter `name`.
pub(crate) fn normal(seed: u64, name: &str, n: usize, std: f64) -> Vec<f32> {
    let mut rng = SplitMix64(stream_key(seed, name));
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (u1, u2) = (rng.next_open01(), rng.next_open01());
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        if out.len() < n {
            out.push((r * t.sin()) as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_is_deterministic_and_roughly_standard() {
        let a = normal(7, "wte", 20_001, 1.0);
        assert_eq!(a, normal(7, "wte", 20_001, 1.0));
        assert_ne!(a[..10], normal(7, "wpe", 10, 1.0)[..]);
        assert_ne!(a[..10], normal(8, "wte", 10, 1.0)[..]);
        let n = a.len() as f64;
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }
}
