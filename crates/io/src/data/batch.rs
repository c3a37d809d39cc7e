//! Deterministic, resumable batching.
//!
//! Each row of a batch is a window of `seq + 1` consecutive tokens starting at a random offset;
//! inputs are its first `seq` tokens, targets the last `seq` (next-token prediction). The offset
//! of row `b` of micro-batch `m` at step `s` is `hash(seed, s, m, b)` reduced to the valid range.
//! Because it is a pure function of those numbers (a counter-based generator) rather than the
//! n-th draw of a stateful RNG, resuming at step `s` reproduces the original batches exactly,
//! and changing the number of micro-batches does not perturb the batches of other steps.
//! Validation batches use a separate hash domain and depend only on the seed and the batch
//! index, so every evaluation of a run (and every run with the same seed) scores the same
//! windows.

use super::rng::{below, hash};
use super::DataError;

/// Hash domains keep training and validation offsets independent (ASCII "train", "val").
const TRAIN_DOMAIN: u64 = 0x0074_7261_696e;
const VAL_DOMAIN: u64 = 0x0076_616c;

/// Produces training and validation batches from a seed; holds no other state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batcher {
    seed: u64,
}

impl Batcher {
    /// A batcher for `seed`.
    pub fn new(seed: u64) -> Self {
        Batcher { seed }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Start offsets of the `batch` windows of training micro-batch `micro` at `step`.
    pub fn offsets(
        &self,
        n_tokens: usize,
        batch: usize,
        seq: usize,
        step: u64,
        micro: u64,
    ) -> Result<Vec<usize>, DataError> {
        self.offsets_in(n_tokens, batch, seq, &[TRAIN_DOMAIN, step, micro])
    }

    /// Training micro-batch `micro` of `step`: `(inputs, targets)`, each `batch * seq` tokens,
    /// row-major.
    pub fn batch(
        &self,
        tokens: &[u32],
        batch: usize,
        seq: usize,
        step: u64,
        micro: u64,
    ) -> Result<(Vec<u32>, Vec<u32>), DataError> {
        let offsets = self.offsets(tokens.len(), batch, seq, step, micro)?;
        Ok(gather(tokens, &offsets, seq))
    }

    /// Validation batch number `index`: fixed windows that depend only on the seed and `index`.
    pub fn val_batch(
        &self,
        tokens: &[u32],
        batch: usize,
        seq: usize,
        index: u64,
    ) -> Result<(Vec<u32>, Vec<u32>), DataError> {
        let offsets = self.offsets_in(tokens.len(), batch, seq, &[VAL_DOMAIN, index])?;
        Ok(gather(tokens, &offsets, seq))
    }

    fn offsets_in(
        &self,
        n_tokens: usize,
        batch: usize,
        seq: usize,
        key: &[u64],
    ) -> Result<Vec<usize>, DataError> {
        if seq == 0 || n_tokens < seq + 1 {
            return Err(DataError::TooSmall {
                what: format!("a window of seq={seq} inputs plus one target"),
                need: seq.max(1) + 1,
                have: n_tokens,
            });
        }
        // Valid starts: 0..=n_tokens-seq-1.
        let range = (n_tokens - seq) as u64;
        let mut words = Vec::with_capacity(key.len() + 2);
        words.push(self.seed);
        words.extend_from_slice(key);
        words.push(0);
        Ok((0..batch as u64)
            .map(|b| {
                *words.last_mut().unwrap() = b;
                below(hash(&words), range) as usize
            })
            .collect())
    }
}

fn gather(tokens: &[u32], offsets: &[usize], seq: usize) -> (Vec<u32>, Vec<u32>) {
    let mut inputs = Vec::with_capacity(offsets.len() * seq);
    let mut targets = Vec::with_capacity(offsets.len() * seq);
    for &o in offsets {
        inputs.extend_from_slice(&tokens[o..o + seq]);
        targets.extend_from_slice(&tokens[o + 1..o + seq + 1]);
    }
    (inputs, targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_shifted_and_in_range() {
        let tokens: Vec<u32> = (0..1000).collect();
        let b = Batcher::new(42);
        let (x, y) = b.batch(&tokens, 4, 16, 7, 1).unwrap();
        assert_eq!(x.len(), 64);
        assert_eq!(y.len(), 64);
        // tokens[i] == i, so targets are inputs + 1 and rows are contiguous.
        assert!(x.iter().zip(&y).all(|(a, b)| b == &(a + 1)));
        // Resume: a fresh batcher with the same seed gives the same batch.
        assert_eq!(
            Batcher::new(42).batch(&tokens, 4, 16, 7, 1).unwrap(),
            (x.clone(), y)
        );
        // Other step, micro or seed: different windows.
        assert_ne!(b.batch(&tokens, 4, 16, 8, 1).unwrap().0, x);
        assert_ne!(b.batch(&tokens, 4, 16, 7, 0).unwrap().0, x);
        assert_ne!(Batcher::new(43).batch(&tokens, 4, 16, 7, 1).unwrap().0, x);
        // Validation batches do not depend on the step.
        assert_eq!(
            b.val_batch(&tokens, 4, 16, 0).unwrap(),
            b.val_batch(&tokens, 4, 16, 0).unwrap()
        );
        assert_ne!(
            b.val_batch(&tokens, 4, 16, 0).unwrap(),
            b.val_batch(&tokens, 4, 16, 1).unwrap()
        );
    }

    #[test]
    fn offsets_cover_the_whole_range() {
        // Smallest possible corpus: exactly one window, offset must be 0.
        let b = Batcher::new(1);
        assert_eq!(b.offsets(5, 3, 4, 0, 0).unwrap(), vec![0, 0, 0]);
        // Every valid start appears, including the last one.
        let (n, seq) = (20, 5);
        let mut seen = vec![false; n - seq];
        for step in 0..200 {
            for o in b.offsets(n, 8, seq, step, 0).unwrap() {
                seen[o] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn too_small_is_an_error() {
        let e = Batcher::new(0).batch(&[1, 2, 3], 1, 3, 0, 0).unwrap_err();
        assert!(
            e.to_string().contains("need at least 4 tokens, have 3"),
            "{e}"
        );
        assert!(Batcher::new(0).batch(&[1, 2, 3], 1, 0, 0, 0).is_err());
    }
}
