//! Deterministic parameter init, independent of the backend.
//!
//! burn's `Tensor::random` draws from a per-backend global RNG: two backends (say `NdArray` and
//! `Precision<NdArray>`) or two tests running in parallel would not see the same weights. For a
//! precision study we want the *same* starting point under every recipe, so weights are drawn on
//! the host from a small counter-free generator (SplitMix64 + Box–Muller) whose stream is keyed by
//! the config seed and the parameter's name, then uploaded. The generator is the workspace's one
//! copy, `fp8_formats::rng`, so these streams cannot drift from the others.

use fp8_formats::rng::{splitmix64, SplitMix64, GAMMA};

/// Uniform in (0, 1], never 0 (so `ln` is finite): the top 53 bits of the next draw, plus one,
/// times 2^−53.
fn next_open01(rng: &mut SplitMix64) -> f64 {
    ((rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// FNV-1a of the parameter name, mixed with the seed: one independent stream per parameter, so
/// adding a parameter does not shift the values of the others.
fn stream_key(seed: u64, name: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    splitmix64(h ^ seed.wrapping_mul(GAMMA))
}

/// `n` samples of `N(0, std²)` for the parameter `name`.
pub(crate) fn normal(seed: u64, name: &str, n: usize, std: f64) -> Vec<f32> {
    let mut rng = SplitMix64::new(stream_key(seed, name));
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (u1, u2) = (next_open01(&mut rng), next_open01(&mut rng));
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
    fn normal_matches_an_independent_reference() {
        // The first draws of `normal(7, "wte", _, 0.02)`, recomputed outside Rust (Python: FNV-1a
        // of the name, the SplitMix64 stream from Vigna's reference, Box–Muller in f64, rounded
        // to f32). They pin the initial weights of every run: a change here changes every run.
        let want = [
            -0.041_330_755,
            0.020_971_462,
            0.021_867_955,
            -0.024_016_684,
            -0.008_476_536,
            0.022_052_89,
        ];
        let got = normal(7, "wte", 6, 0.02);
        for (g, w) in got.iter().zip(want) {
            // libm's ln/cos/sin may differ by an f64 ulp between platforms, far below f32's.
            assert!((g - w).abs() <= 1e-6 * w.abs(), "{got:?} vs {want:?}");
        }
    }

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
