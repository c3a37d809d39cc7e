//! Tiny deterministic randomness: SplitMix64, both as a stream and as a counter-based hash.
//! No `rand` dependency: the streams must stay bit-identical across dependency upgrades, or
//! synthetic datasets and batch orders would silently change under old run configs. The
//! generator and its mixing function are the workspace's one copy, `fp8_formats::rng`; this
//! module adds what only the data pipeline needs (hashing a tuple of words, a bounded draw).

use fp8_formats::rng::mix64 as mix;
pub(crate) use fp8_formats::rng::SplitMix64;

/// Hash a sequence of words into one. Each word is folded in after the previous state went
/// through the full-avalanche `mix`, so (a, b) and (b, a) differ, and so do prefixes.
pub(crate) fn hash(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(0x6a09_e667_f3bc_c909, |h, &w| mix(h ^ mix(w)))
}

/// Map a uniform u64 to `0..n` by multiply-high (Lemire). The bias is at most `n / 2^64`,
/// irrelevant for token counts.
pub(crate) fn below(x: u64, n: u64) -> u64 {
    ((x as u128 * n as u128) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (reference implementation by Vigna).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn hash_is_order_sensitive() {
        assert_ne!(hash(&[1, 2]), hash(&[2, 1]));
        assert_ne!(hash(&[1]), hash(&[1, 0]));
        assert!(below(u64::MAX, 10) < 10);
    }
}
