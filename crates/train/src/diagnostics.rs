//! Stability diagnostics of a training step, measured on logging steps without changing what the
//! step computes (definitions and thresholds: [`fp8_stats::diagnostics`]).
//!
//! - From the forward pass ([`fp8_models::Diagnostics`]): the largest attention logit per layer
//!   and the output log-partition.
//! - From the optimizer step ([`UpdateStats`]): per group of weight matrices (the parameter's
//!   path with layer indices removed, so `h.0.attn.c_attn.weight` and `h.1.attn.c_attn.weight`
//!   are one group), `rms(Δθ)/rms(θ)` over the group's elements before the step; and the
//!   fraction of all parameter elements whose bits the step did not change (stagnation). Vectors
//!   (biases, norm gains and shifts) have no ratio: biases and norm shifts start at zero, so
//!   their ratio is large early in every run whatever its fate, and says nothing about stability.
//! - The gradient's quantization noise ([`noise_ratio`]): the step's gradient under the recipe
//!   `g_q` against the same batch's gradient with every cast off `g`: `‖g‖ / ‖g_q − g‖`, global
//!   L2 norms over all parameters, before clipping. A recipe whose casts leave the gradient exact
//!   has no noise and no value.
//! - From the step's telemetry: the largest underflow and saturation fraction over sites.
//!
//! Parameters are read to the host for the update statistics; that costs two copies of the
//! weights per logging step, which is small next to a step for the models fp8 trains on a CPU.

use crate::params::named_values;
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fp8_core::context::Telemetry;
use std::collections::BTreeMap;

/// Every float parameter's path, rank and values before an optimizer step.
pub struct Snapshot(Vec<(String, usize, Vec<f32>)>);

/// Collects `(path, rank)` of every float parameter, in the visit order of [`named_values`].
struct Ranks {
    path: Vec<String>,
    out: Vec<(String, usize)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Ranks {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<B, D>>) {
        self.out.push((self.path.join("."), D));
    }
}

impl Snapshot {
    pub fn of<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> Self {
        let mut ranks = Ranks {
            path: Vec::new(),
            out: Vec::new(),
        };
        model.visit(&mut ranks);
        let values = named_values::<B, M>(model, None);
        Snapshot(
            values
                .into_iter()
                .map(|(name, v)| {
                    let rank = ranks.out.iter().find(|r| r.0 == name).map_or(1, |r| r.1);
                    (name, rank, v)
                })
                .collect(),
        )
    }
}

/// What one optimizer step did to the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateStats {
    /// `rms(Δθ)/rms(θ)` per parameter group.
    pub ratio: BTreeMap<String, f64>,
    /// Fraction of parameter elements left bit-for-bit unchanged.
    pub stagnation: f64,
}

/// The group of a parameter path: its components without the numeric ones (layer indices).
pub fn group(path: &str) -> String {
    path.split('.')
        .filter(|c| !c.chars().all(|ch| ch.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(".")
}

/// Compare the weights after a step with the snapshot taken before it.
pub fn update_stats(before: &Snapshot, after: &[(String, Vec<f32>)]) -> UpdateStats {
    // (Σ Δ², Σ θ²) per group, in f64.
    let mut sums: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let (mut same, mut total) = (0usize, 0usize);
    for ((name, rank, old), (_, new)) in before.0.iter().zip(after) {
        let (mut d2, mut w2) = (0.0, 0.0);
        for (&o, &n) in old.iter().zip(new) {
            let d = n as f64 - o as f64;
            d2 += d * d;
            w2 += o as f64 * o as f64;
            same += (o.to_bits() == n.to_bits()) as usize;
        }
        total += old.len().min(new.len());
        if *rank >= 2 {
            let s = sums.entry(group(name)).or_default();
            s.0 += d2;
            s.1 += w2;
        }
    }
    let ratio = sums
        .into_iter()
        .filter(|(_, (_, w))| *w > 0.0)
        .map(|(g, (d, w))| (g, (d / w).sqrt()))
        .collect();
    UpdateStats {
        ratio,
        stagnation: if total == 0 {
            0.0
        } else {
            same as f64 / total as f64
        },
    }
}

struct Distance<'a> {
    a: &'a GradientsParams,
    b: &'a GradientsParams,
    /// (‖b‖², ‖a − b‖²)
    sums: (f64, f64),
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Distance<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let (Some(a), Some(b)) = (
            self.a.get::<B::InnerBackend, D>(param.id),
            self.b.get::<B::InnerBackend, D>(param.id),
        ) else {
            return;
        };
        self.sums.0 += b.clone().square().sum().into_scalar().elem::<f64>();
        self.sums.1 += (a - b).square().sum().into_scalar().elem::<f64>();
    }
}

/// `‖exact‖ / ‖quantized − exact‖` over all parameters of `model`; `None` when the two are equal
/// (no noise) or the ratio is not a number.
pub fn noise_ratio<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    quantized: &GradientsParams,
    exact: &GradientsParams,
) -> Option<f64> {
    let mut v = Distance {
        a: quantized,
        b: exact,
        sums: (0.0, 0.0),
    };
    model.visit(&mut v);
    let (g2, n2) = v.sums;
    (n2 > 0.0 && !(g2 / n2).is_nan()).then(|| (g2 / n2).sqrt())
}

/// The largest underflow and saturation fractions over the step's casts (`None` without
/// telemetry).
pub fn cast_extremes(t: &Telemetry) -> Option<(f64, f64)> {
    t.values().fold(None, |acc, st| {
        let (u, s) = (st.underflow, st.saturation);
        Some(acc.map_or((u, s), |(mu, ms): (f64, f64)| (mu.max(u), ms.max(s))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_drop_layer_indices() {
        assert_eq!(group("h.0.attn.c_attn.weight"), "h.attn.c_attn.weight");
        assert_eq!(group("h.11.mlp.c_fc.bias"), "h.mlp.c_fc.bias");
        assert_eq!(group("wte.weight"), "wte.weight");
    }

    #[test]
    fn update_stats_by_hand() {
        // Matrices h.w: layer 0 [3, 4] → [3, 4.5], layer 1 [0, 0] → [0, 0]; matrix z stays all
        // zero; vector b: [2] → [3].
        let before = Snapshot(vec![
            ("h.0.w".into(), 2, vec![3.0, 4.0]),
            ("h.1.w".into(), 2, vec![0.0, 0.0]),
            ("z".into(), 2, vec![0.0]),
            ("b".into(), 1, vec![2.0]),
        ]);
        let after = vec![
            ("h.0.w".into(), vec![3.0, 4.5]),
            ("h.1.w".into(), vec![0.0, 0.0]),
            ("z".into(), vec![0.0]),
            ("b".into(), vec![3.0]),
        ];
        let u = update_stats(&before, &after);
        // Σ Δ² = 0.25, Σ θ² = 25 → √(0.01) = 0.1; z has all-zero weights and b is a vector: no
        // ratio for either.
        assert!((u.ratio["h.w"] - 0.1).abs() < 1e-12, "{u:?}");
        assert_eq!(u.ratio.len(), 1, "{u:?}");
        // 4 of 6 elements unchanged.
        assert_eq!(u.stagnation, 4.0 / 6.0);
    }
}
