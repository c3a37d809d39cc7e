//! A seeded order-k Markov source whose entropy rate is known exactly.
//!
//! # Why
//!
//! On natural text nobody knows the best achievable loss, so "quantized training ends 0.02 nats
//! worse" cannot be read as "reaches 98% of what is learnable". On this source the floor is
//! computed, not estimated: a model that has learned the source perfectly has expected loss
//! equal to the entropy rate `H`, so `loss − H` is the excess loss, the quantity precision
//! studies care about.
//!
//! # The source
//!
//! The state is the last `k` tokens (`V^k` states). Each state `s` has a *row*: a Zipf law
//! `p(r) ∝ r^(−α_s)` over ranks `r = 1..V`, mapped to tokens by a seeded permutation of the
//! vocabulary that is different for every state. Zipf rows look like language (a few likely
//! continuations, a long tail); per-state permutations mean the model must learn the context.
//! The exponent `α_s` is drawn per state from `[alpha_min, alpha_max]` (quantized to
//! [`ALPHA_LEVELS`] values so rows can share their probability tables), so some contexts are
//! more predictable than others and the stationary distribution matters.
//!
//! # The entropy rate
//!
//! `H = −Σ_s π(s) Σ_t P(t|s) ln P(t|s)` in nats, where `π` is the stationary distribution of the
//! chain on states. `π` is found by power iteration in f64 on the *lazy* chain `½(I + P)`: it
//! has the same stationary distribution, and being aperiodic it converges even for hand-built
//! periodic chains (`[[0, 1], [1, 0]]`). Zipf rows have no zero entries, so the generated chain
//! is irreducible and `π` unique. Samples start from a state drawn from `π`, so every token of
//! a sample, not just the late ones, has expected log-loss `H` under the true model.
//!
//! Memory is `V^(k+1)` u16 (the permutations), capped at [`MAX_TABLE`] entries: `V=256, k=2`
//! fits, `V=50257, k=1` does not.

use super::rng::{hash, SplitMix64};
use super::{DataError, TokenDataset};
use std::fmt;

/// Number of distinct exponents (and hence distinct rows up to permutation).
pub const ALPHA_LEVELS: usize = 16;

/// Most `V^(k+1)` entries the transition table may have.
pub const MAX_TABLE: usize = 1 << 25;

/// Parameters of the synthetic source and of the dataset drawn from it.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticSpec {
    /// Vocabulary size `V` (2..=65536).
    pub vocab: usize,
    /// Markov order `k` (0 gives i.i.d. tokens).
    pub order: usize,
    /// Training tokens; validation gets a separate sample of a tenth as many (at least 1024).
    pub tokens: usize,
    /// Seed of the chain and of both samples.
    pub seed: u64,
    /// Smallest Zipf exponent.
    pub alpha_min: f64,
    /// Largest Zipf exponent.
    pub alpha_max: f64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            vocab: 256,
            order: 1,
            tokens: 1_000_000,
            seed: 0,
            alpha_min: 0.8,
            alpha_max: 1.6,
        }
    }
}

impl SyntheticSpec {
    /// Parse `key=value,…` with keys `vocab`, `order`, `tokens`, `seed`, `alpha_min`,
    /// `alpha_max`, and `alpha` (sets both); unnamed keys keep their defaults.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut spec = SyntheticSpec::default();
        for kv in s.split(',').filter(|kv| !kv.trim().is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got `{kv}`"))?;
            let (k, v) = (k.trim(), v.trim());
            let int = || {
                v.replace('_', "")
                    .parse::<u64>()
                    .map_err(|e| format!("{k}=`{v}`: {e}"))
            };
            let float = || v.parse::<f64>().map_err(|e| format!("{k}=`{v}`: {e}"));
            match k {
                "vocab" => spec.vocab = int()? as usize,
                "order" => spec.order = int()? as usize,
                "tokens" => spec.tokens = int()? as usize,
                "seed" => spec.seed = int()?,
                "alpha_min" => spec.alpha_min = float()?,
                "alpha_max" => spec.alpha_max = float()?,
                "alpha" => (spec.alpha_min, spec.alpha_max) = (float()?, float()?),
                _ => {
                    return Err(format!(
                        "unknown key `{k}` (known: vocab, order, tokens, seed, alpha, \
                         alpha_min, alpha_max)"
                    ))
                }
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), String> {
        if !(2..=65536).contains(&self.vocab) {
            return Err(format!("vocab={} must be in 2..=65536", self.vocab));
        }
        let table = self.vocab.checked_pow(self.order as u32 + 1);
        if table.is_none_or(|t| t > MAX_TABLE) {
            return Err(format!(
                "vocab^(order+1) = {}^{} exceeds {MAX_TABLE} table entries; lower vocab or order",
                self.vocab,
                self.order + 1
            ));
        }
        if !(self.alpha_min.is_finite()
            && self.alpha_max.is_finite()
            && 0.0 <= self.alpha_min
            && self.alpha_min <= self.alpha_max)
        {
            return Err(format!(
                "need 0 <= alpha_min <= alpha_max, got {} and {}",
                self.alpha_min, self.alpha_max
            ));
        }
        if self.tokens <= self.order {
            return Err(format!("tokens={} must exceed order", self.tokens));
        }
        Ok(())
    }

    /// Build the source and draw the training and validation samples.
    pub fn load(&self) -> Result<TokenDataset, DataError> {
        self.validate().map_err(DataError::Synthetic)?;
        let src = MarkovSource::zipf(
            self.vocab,
            self.order,
            self.alpha_min,
            self.alpha_max,
            self.seed,
        )?;
        let train = src.sample(self.tokens, hash(&[self.seed, 1]));
        let val = src.sample((self.tokens / 10).max(1024), hash(&[self.seed, 2]));
        Ok(TokenDataset {
            train,
            val,
            vocab_size: self.vocab,
            entropy_floor: Some(src.entropy_rate_nats()),
            description: format!(
                "synthetic order-{} Markov source, vocab {}, Zipf alpha in [{}, {}], seed {}: \
                 entropy rate {:.6} nats/token",
                self.order,
                self.vocab,
                self.alpha_min,
                self.alpha_max,
                self.seed,
                src.entropy_rate_nats()
            ),
        })
    }
}

impl fmt::Display for SyntheticSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vocab={},order={},tokens={},seed={},alpha_min={},alpha_max={}",
            self.vocab, self.order, self.tokens, self.seed, self.alpha_min, self.alpha_max
        )
    }
}

/// One distinct row: probabilities by rank, their cumulative sums, entropy and variance of the
/// log-loss.
#[derive(Clone, Debug)]
struct Row {
    p: Vec<f64>,
    cdf: Vec<f64>,
    entropy: f64,
    loss_var: f64,
}

impl Row {
    fn new(p: Vec<f64>) -> Self {
        let mut acc = 0.0;
        let cdf = p
            .iter()
            .map(|&x| {
                acc += x;
                acc
            })
            .collect();
        let nll = |x: f64| if x > 0.0 { -x.ln() } else { 0.0 };
        let entropy: f64 = p.iter().map(|&x| x * nll(x)).sum();
        let second: f64 = p.iter().map(|&x| x * nll(x) * nll(x)).sum();
        Row {
            p,
            cdf,
            entropy,
            loss_var: (second - entropy * entropy).max(0.0),
        }
    }

    fn sample(&self, u: f64) -> usize {
        // Scale by the total so rounding in the sums never lets u fall past the end.
        let u = u * self.cdf[self.cdf.len() - 1];
        self.cdf.partition_point(|&c| c <= u).min(self.p.len() - 1)
    }
}

/// An order-k Markov chain over tokens with known stationary distribution and entropy rate.
#[derive(Clone, Debug)]
pub struct MarkovSource {
    vocab: usize,
    order: usize,
    n_states: usize,
    rows: Vec<Row>,
    /// Row of each state.
    row_of: Vec<u32>,
    /// `perm[s * V + r]`: the token of rank `r` in state `s`. Empty means identity.
    perm: Vec<u16>,
    stationary: Vec<f64>,
    state_cdf: Vec<f64>,
    entropy_rate: f64,
}

impl MarkovSource {
    /// The Zipf source described in the module docs.
    pub fn zipf(
        vocab: usize,
        order: usize,
        alpha_min: f64,
        alpha_max: f64,
        seed: u64,
    ) -> Result<Self, DataError> {
        SyntheticSpec {
            vocab,
            order,
            tokens: order + 1,
            seed,
            alpha_min,
            alpha_max,
        }
        .validate()
        .map_err(DataError::Synthetic)?;
        let n_states = vocab.pow(order as u32);
        let levels = if alpha_min == alpha_max {
            1
        } else {
            ALPHA_LEVELS
        };
        let rows: Vec<Row> = (0..levels)
            .map(|l| {
                let a = if levels == 1 {
                    alpha_min
                } else {
                    alpha_min + (alpha_max - alpha_min) * l as f64 / (levels - 1) as f64
                };
                let w: Vec<f64> = (1..=vocab).map(|r| (r as f64).powf(-a)).collect();
                let z: f64 = w.iter().sum();
                Row::new(w.into_iter().map(|x| x / z).collect())
            })
            .collect();
        let mut row_of = Vec::with_capacity(n_states);
        let mut perm = Vec::with_capacity(n_states * vocab);
        for s in 0..n_states {
            let mut rng = SplitMix64::new(hash(&[seed, 0x7a69_7066, s as u64]));
            row_of.push((rng.next_u64() % levels as u64) as u32);
            // Fisher-Yates on 0..V.
            let start = perm.len();
            perm.extend((0..vocab).map(|t| t as u16));
            let p = &mut perm[start..];
            for i in (1..vocab).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                p.swap(i, j);
            }
        }
        Ok(Self::finish(vocab, order, rows, row_of, perm))
    }

    /// A source from explicit rows: `rows[s][t] = P(t | s)` for each of the `V^order` states,
    /// where state `s` is the context read as a base-`V` number (oldest token most significant).
    /// For tests and hand-checked examples. If the chain is reducible, `π` is the limit reached
    /// from the uniform distribution, one of several stationary distributions.
    pub fn from_rows(vocab: usize, order: usize, rows: &[Vec<f64>]) -> Result<Self, DataError> {
        let n_states = vocab
            .checked_pow(order as u32)
            .filter(|&n| n.saturating_mul(vocab) <= MAX_TABLE)
            .ok_or_else(|| DataError::Synthetic("table too large".into()))?;
        if rows.len() != n_states {
            return Err(DataError::Synthetic(format!(
                "{} rows given, vocab^order = {n_states} needed",
                rows.len()
            )));
        }
        for (s, r) in rows.iter().enumerate() {
            let sum: f64 = r.iter().sum();
            if r.len() != vocab || r.iter().any(|&p| !(0.0..=1.0).contains(&p)) {
                return Err(DataError::Synthetic(format!(
                    "row {s} must hold {vocab} probabilities in [0, 1]"
                )));
            }
            if (sum - 1.0).abs() > 1e-9 {
                return Err(DataError::Synthetic(format!(
                    "row {s} sums to {sum}, not 1"
                )));
            }
        }
        let row_of = (0..n_states as u32).collect();
        let rows = rows.iter().map(|r| Row::new(r.clone())).collect();
        Ok(Self::finish(vocab, order, rows, row_of, Vec::new()))
    }

    fn finish(
        vocab: usize,
        order: usize,
        rows: Vec<Row>,
        row_of: Vec<u32>,
        perm: Vec<u16>,
    ) -> Self {
        let n_states = row_of.len();
        let mut src = MarkovSource {
            vocab,
            order,
            n_states,
            rows,
            row_of,
            perm,
            stationary: Vec::new(),
            state_cdf: Vec::new(),
            entropy_rate: 0.0,
        };
        src.stationary = src.power_iteration();
        let mut acc = 0.0;
        src.state_cdf = src
            .stationary
            .iter()
            .map(|&p| {
                acc += p;
                acc
            })
            .collect();
        src.entropy_rate = src
            .stationary
            .iter()
            .zip(&src.row_of)
            .map(|(&pi, &r)| pi * src.rows[r as usize].entropy)
            .sum();
        src
    }

    fn token(&self, state: usize, rank: usize) -> usize {
        if self.perm.is_empty() {
            rank
        } else {
            self.perm[state * self.vocab + rank] as usize
        }
    }

    fn next_state(&self, state: usize, token: usize) -> usize {
        if self.order == 0 {
            0
        } else {
            (state * self.vocab + token) % self.n_states
        }
    }

    /// Stationary distribution of the lazy chain ½(I + P), to an L1 change below 1e-15 per
    /// sweep (or 100 000 sweeps).
    fn power_iteration(&self) -> Vec<f64> {
        let n = self.n_states;
        let mut pi = vec![1.0 / n as f64; n];
        let mut next = vec![0.0; n];
        for _ in 0..100_000 {
            next.iter_mut().for_each(|x| *x = 0.0);
            for (s, &mass) in pi.iter().enumerate() {
                if mass == 0.0 {
                    continue;
                }
                let row = &self.rows[self.row_of[s] as usize];
                for (r, &p) in row.p.iter().enumerate() {
                    next[self.next_state(s, self.token(s, r))] += mass * p;
                }
            }
            let mut change = 0.0;
            let mut total = 0.0;
            for (a, b) in pi.iter_mut().zip(&next) {
                let new = 0.5 * (*a + b);
                change += (new - *a).abs();
                total += new;
                *a = new;
            }
            pi.iter_mut().for_each(|x| *x /= total);
            if change < 1e-15 {
                break;
            }
        }
        pi
    }

    /// Vocabulary size `V`.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Markov order `k`.
    pub fn order(&self) -> usize {
        self.order
    }

    /// Stationary distribution over the `V^k` states.
    pub fn stationary(&self) -> &[f64] {
        &self.stationary
    }

    /// Entropy rate in nats per token: the expected log-loss of the true model.
    pub fn entropy_rate_nats(&self) -> f64 {
        self.entropy_rate
    }

    /// The state index of a context (its last `k` tokens; earlier ones are ignored).
    pub fn state_of(&self, context: &[u32]) -> usize {
        let start = context.len().saturating_sub(self.order);
        context[start..]
            .iter()
            .fold(0, |s, &t| self.next_state(s, t as usize))
    }

    /// Conditional entropy of the next token in `state`, and the variance of its log-loss.
    pub fn state_entropy(&self, state: usize) -> (f64, f64) {
        let row = &self.rows[self.row_of[state] as usize];
        (row.entropy, row.loss_var)
    }

    /// `P(token | state)`. Linear in `V` (it inverts the permutation by search); for tests and
    /// evaluation, not for hot loops.
    pub fn prob(&self, state: usize, token: u32) -> f64 {
        let row = &self.rows[self.row_of[state] as usize];
        (0..self.vocab)
            .find(|&r| self.token(state, r) == token as usize)
            .map_or(0.0, |r| row.p[r])
    }

    /// Draw `n` tokens. The first `k` spell a state drawn from `π`; the rest follow the chain.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<u32> {
        let mut rng = SplitMix64::new(seed);
        let mut out = Vec::with_capacity(n);
        let u = rng.next_f64() * self.state_cdf[self.n_states - 1];
        let mut state = self
            .state_cdf
            .partition_point(|&c| c <= u)
            .min(self.n_states - 1);
        // Spell out the starting state, oldest token first.
        let mut digits = Vec::with_capacity(self.order);
        let mut s = state;
        for _ in 0..self.order {
            digits.push((s % self.vocab) as u32);
            s /= self.vocab;
        }
        out.extend(digits.iter().rev().take(n));
        while out.len() < n {
            let row = &self.rows[self.row_of[state] as usize];
            let t = self.token(state, row.sample(rng.next_f64()));
            out.push(t as u32);
            state = self.next_state(state, t);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_state_chain_by_hand() {
        // P = [[0.9, 0.1], [0.5, 0.5]]: π = (5/6, 1/6),
        // H = 5/6·h(0.1) + 1/6·ln 2 with h the binary entropy = 0.386427007919531…
        let src = MarkovSource::from_rows(2, 1, &[vec![0.9, 0.1], vec![0.5, 0.5]]).unwrap();
        assert!((src.stationary()[0] - 5.0 / 6.0).abs() < 1e-12);
        assert!((src.entropy_rate_nats() - 0.386_427_007_919_531).abs() < 1e-12);
    }

    #[test]
    fn periodic_and_higher_order_chains() {
        // Periodic chain: plain power iteration would oscillate; the lazy chain converges.
        let src = MarkovSource::from_rows(2, 1, &[vec![0.0, 1.0], vec![1.0, 0.0]]).unwrap();
        assert!((src.stationary()[0] - 0.5).abs() < 1e-12);
        assert_eq!(src.entropy_rate_nats(), 0.0);
        let s = src.sample(6, 3);
        assert!(s.windows(2).all(|w| w[0] != w[1]), "{s:?}");

        // Order 2 over {0,1}; state = (previous, current) = 2·prev + cur. Rows: 00 and 01 and
        // 11 are fair coins, 10 always emits 1. Moves: 00→00|01, 01→10|11, 10→01, 11→10|11.
        // Balance: π00 = ½π00 ⇒ 0; π01 = ½π00 + π10; π10 = ½π01 + ½π11; π11 = ½π01 + ½π11
        // ⇒ π11 = π01 = π10 = 1/3, and H = (π01 + π11)·ln 2 = (2/3)·ln 2.
        let rows = vec![
            vec![0.5, 0.5],
            vec![0.5, 0.5],
            vec![0.0, 1.0],
            vec![0.5, 0.5],
        ];
        let src = MarkovSource::from_rows(2, 2, &rows).unwrap();
        assert!(src.stationary()[0] < 1e-12);
        for s in 1..4 {
            assert!((src.stationary()[s] - 1.0 / 3.0).abs() < 1e-12);
        }
        assert!((src.entropy_rate_nats() - 2.0 / 3.0 * 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn uniform_exponent_gives_zipf_entropy() {
        // With one exponent every row is the same Zipf law up to permutation, so H is its
        // entropy whatever π is.
        let (v, a) = (50usize, 1.1f64);
        let w: Vec<f64> = (1..=v).map(|r| (r as f64).powf(-a)).collect();
        let z: f64 = w.iter().sum();
        let h: f64 = w.iter().map(|x| -(x / z) * (x / z).ln()).sum();
        let src = MarkovSource::zipf(v, 2, a, a, 9).unwrap();
        assert!((src.entropy_rate_nats() - h).abs() < 1e-12);
        let pi_sum: f64 = src.stationary().iter().sum();
        assert!((pi_sum - 1.0).abs() < 1e-12);
    }

    #[test]
    fn empirical_log_loss_approaches_entropy_rate_iid_ranks() {
        // Single exponent: the rank of each token in its context's row is i.i.d. Zipf whatever
        // the past, so the per-token losses are i.i.d. with known mean H and variance σ². The
        // mean of N of them is within 5σ/√N of H except with probability < 1e-6.
        let (v, a, n) = (64usize, 1.2f64, 200_000usize);
        let src = MarkovSource::zipf(v, 1, a, a, 5).unwrap();
        let x = src.sample(n, 11);
        let (h, var) = src.state_entropy(0);
        assert!((h - src.entropy_rate_nats()).abs() < 1e-12);
        let loss: f64 = x
            .windows(2)
            .map(|w| -src.prob(src.state_of(&w[..1]), w[1]).ln())
            .sum::<f64>()
            / (n - 1) as f64;
        let tol = 5.0 * (var / (n - 1) as f64).sqrt();
        assert!((loss - h).abs() < tol, "loss {loss}, H {h}, tol {tol}");
    }

    #[test]
    fn empirical_log_loss_approaches_entropy_rate_mixed_exponents() {
        // Varying exponents: split loss − H = (loss − mean of H_s along the path) +
        // (mean of H_s − H). The first is a martingale average with conditional variances
        // var_s, so within 5·sqrt(Σ var_s)/N. The second is an ergodic average of a bounded
        // function of a fast-mixing chain; its standard error is estimated from 50 batch means.
        let (v, k, n) = (32usize, 2usize, 400_000usize);
        let src = MarkovSource::zipf(v, k, 0.6, 1.8, 3).unwrap();
        let x = src.sample(n, 17);
        let (mut loss, mut hs, mut var) = (0.0, Vec::with_capacity(n), 0.0);
        for w in x.windows(k + 1) {
            let s = src.state_of(&w[..k]);
            let (h_s, v_s) = src.state_entropy(s);
            loss += -src.prob(s, w[k]).ln();
            hs.push(h_s);
            var += v_s;
        }
        let m = hs.len() as f64;
        let mean_hs = hs.iter().sum::<f64>() / m;
        let mart_tol = 5.0 * var.sqrt() / m;
        assert!(
            (loss / m - mean_hs).abs() < mart_tol,
            "martingale part {} vs tol {mart_tol}",
            loss / m - mean_hs
        );
        let batches: Vec<f64> = hs
            .chunks(hs.len() / 50)
            .take(50)
            .map(|c| c.iter().sum::<f64>() / c.len() as f64)
            .collect();
        let bm = batches.iter().sum::<f64>() / 50.0;
        let se = (batches.iter().map(|b| (b - bm).powi(2)).sum::<f64>() / 49.0 / 50.0).sqrt();
        let h = src.entropy_rate_nats();
        assert!(
            (mean_hs - h).abs() < 5.0 * se + 1e-9,
            "ergodic part {} vs tol {}",
            mean_hs - h,
            5.0 * se
        );
        // And the whole thing is close in absolute terms.
        assert!((loss / m - h).abs() < 0.01, "loss {} H {h}", loss / m);
    }

    #[test]
    fn spec_dataset_is_deterministic_and_in_vocab() {
        let spec = SyntheticSpec::parse("vocab=16,order=2,tokens=5000,seed=4").unwrap();
        let a = spec.load().unwrap();
        assert_eq!(a, spec.load().unwrap());
        assert_eq!(a.train.len(), 5000);
        assert_eq!(a.val.len(), 1024);
        assert_ne!(a.train[..1024], a.val[..]);
        assert!(a.train.iter().chain(&a.val).all(|&t| t < 16));
        let h = a.entropy_floor.unwrap();
        assert!(h > 0.0 && h < (16f64).ln());
        assert!(SyntheticSpec::parse("vocab=65536,order=2").is_err());
        assert!(SyntheticSpec::parse("alpha_min=2,alpha_max=1").is_err());
        assert_eq!(SyntheticSpec::parse(&spec.to_string()).unwrap(), spec);
    }
}
