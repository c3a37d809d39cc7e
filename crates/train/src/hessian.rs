//! The Hessian's top eigenvalue by power iteration on finite-difference Hessian-vector products.
//!
//! burn 0.21 has no double backward, so `Hv` cannot come from differentiating `∇L·v`. Instead,
//! with one fixed batch and `g(θ) = ∇L(θ)`, the central difference
//!
//! ```text
//! Hv ≈ (g(θ + r·v) − g(θ − r·v)) / 2r        (‖v‖ = 1)
//! ```
//!
//! is exact for a quadratic loss and has an O(r²) truncation error otherwise. Power iteration
//! (`v ← Hv/‖Hv‖`) then converges to the eigenvector of the eigenvalue of largest magnitude; the
//! estimate reported is the Rayleigh quotient `vᵀHv`, so a dominant *negative* eigenvalue comes out
//! negative (as in PyHessian). Each iteration costs two forward+backward passes of the batch.
//!
//! # The radius r
//!
//! `r = rel_radius · ‖θ‖` (all float parameters, norms and biases included; `rel_radius` defaults
//! to [`DEFAULT_REL_RADIUS`] = 1e-3, floored at `rel_radius` when ‖θ‖ < 1). Relative because a
//! fixed r is either lost in f32 rounding for large models or leaves the quadratic region for
//! small ones: with ‖v‖ = 1 spread over N parameters, each moves by about `1e-3·|θ_i|`, a thousand
//! times f32's relative precision, while the gradient difference stays far above the gradients'
//! own f32 rounding noise.
//!
//! # Under a reduced-precision recipe
//!
//! The trainer computes the gradients under the run's recipe (the casts stay on; recording is off,
//! so scaling state and telemetry are untouched). A format with a coarse mantissa makes the
//! forward piecewise constant in the weights at a scale far above `r`, so the difference then
//! also sees rounding jumps: read the estimate as the curvature *of the network the recipe
//! trains*, noisy where the casts are coarse, and compare it against the fp32 run's.
//!
//! Everything runs on a clone of the model; the training model, optimizer and data order are not
//! affected.

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fp8_core::FusedAutodiffBackend;
use fp8_core::PrecisionContext;
use fp8_io::data::Batcher;
use fp8_models::Model;
use serde::Serialize;
use std::sync::Mutex;

use crate::config::TrainConfig;

/// Default `r / ‖θ‖` of the finite difference (see the module docs).
pub const DEFAULT_REL_RADIUS: f64 = 1e-3;
/// Default power-iteration cap.
pub const DEFAULT_ITERS: usize = 20;
/// Default relative change of the estimate between iterations that ends the iteration early.
pub const DEFAULT_TOL: f64 = 1e-3;

/// How to run the power iteration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerOptions {
    /// Most iterations (each costs two gradient evaluations).
    pub iters: usize,
    /// Stop once `|λ_k − λ_{k−1}| ≤ tol·|λ_k|`.
    pub tol: f64,
    /// `r / ‖θ‖` of the finite difference.
    pub rel_radius: f64,
    /// Seed of the random start vector.
    pub seed: u64,
}

impl Default for PowerOptions {
    fn default() -> Self {
        PowerOptions {
            iters: DEFAULT_ITERS,
            tol: DEFAULT_TOL,
            rel_radius: DEFAULT_REL_RADIUS,
            seed: 0,
        }
    }
}

/// What the power iteration found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// The Rayleigh quotient `vᵀHv` of the last iterate: the eigenvalue of largest magnitude.
    pub eigenvalue: f64,
    /// Iterations run.
    pub iterations: usize,
    /// Whether the tolerance was met before the cap.
    pub converged: bool,
    /// The finite-difference radius `r` used (0 for an exact `Hv`).
    pub radius: f64,
}

/// Power iteration on a Hessian-vector product `hvp(v) = Hv` of dimension `dim`.
pub fn power_iteration(
    dim: usize,
    mut hvp: impl FnMut(&[f64]) -> anyhow::Result<Vec<f64>>,
    opts: &PowerOptions,
) -> anyhow::Result<Estimate> {
    anyhow::ensure!(dim > 0, "the Hessian of no parameters has no eigenvalue");
    let mut v = gaussian(dim, opts.seed);
    normalize(&mut v);
    let (mut lambda, mut iterations, mut converged) = (f64::NAN, 0, false);
    for k in 0..opts.iters.max(1) {
        let hv = hvp(&v)?;
        anyhow::ensure!(
            hv.len() == dim,
            "Hessian-vector product of length {} for {dim} parameters",
            hv.len()
        );
        let next = dot(&v, &hv);
        iterations = k + 1;
        let done = k > 0 && (next - lambda).abs() <= opts.tol * next.abs();
        lambda = next;
        let norm = dot(&hv, &hv).sqrt();
        if done || !(norm.is_finite() && norm > 0.0) {
            converged = done;
            break;
        }
        v = hv.into_iter().map(|x| x / norm).collect();
    }
    Ok(Estimate {
        eigenvalue: lambda,
        iterations,
        converged,
        radius: 0.0,
    })
}

/// Top Hessian eigenvalue of `loss(model)` with respect to every float parameter of `model`, by
/// finite-difference HVPs around the model's current parameters. `model` itself is not changed.
pub fn top_eigenvalue<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    loss: impl Fn(&M) -> Tensor<B, 1>,
    opts: &PowerOptions,
) -> anyhow::Result<Estimate> {
    let theta = Flatten::<B>::params(model);
    let norm = dot(&theta.values, &theta.values).sqrt();
    let r = opts.rel_radius * norm.max(1.0);
    anyhow::ensure!(
        r.is_finite() && r > 0.0,
        "finite-difference radius {r} (‖θ‖ = {norm}): parameters are not finite"
    );
    let grad_at = |v: &[f64], sign: f64| -> Vec<f64> {
        let shifted = model.clone().map(&mut Shift::<B> {
            delta: v,
            scale: sign * r,
            offset: 0,
            _b: Default::default(),
        });
        let grads = GradientsParams::from_grads(loss(&shifted).backward(), &shifted);
        Flatten::<B>::grads(&shifted, &grads)
    };
    let mut est = power_iteration(
        theta.values.len(),
        |v| {
            let plus = grad_at(v, 1.0);
            let minus = grad_at(v, -1.0);
            Ok(plus
                .iter()
                .zip(&minus)
                .map(|(p, m)| (p - m) / (2.0 * r))
                .collect())
        },
        opts,
    )?;
    est.radius = r;
    Ok(est)
}

/// The trainer's measurement: the top eigenvalue of the loss on validation batch 0 (the
/// evaluation's first batch, fixed for the whole run), on a clone of `model`, under the active
/// recipe's casts with recording off.
pub fn model_top_eigenvalue<B: FusedAutodiffBackend>(
    model: &Model<B>,
    val: &[u32],
    batcher: &Batcher,
    cfg: &TrainConfig,
    device: &B::Device,
    ctx: &Mutex<PrecisionContext>,
) -> anyhow::Result<Estimate> {
    let (inputs, targets) = batcher.val_batch(val, cfg.batch, cfg.seq, 0)?;
    let ints = |t: &[u32]| {
        let data: Vec<i64> = t.iter().map(|&x| x as i64).collect();
        Tensor::<B, 1, Int>::from_ints(data.as_slice(), device)
            .reshape([t.len() / cfg.seq, cfg.seq])
    };
    let (inputs, targets) = (ints(&inputs), ints(&targets));
    let set_recording = |on: bool| {
        ctx.lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_recording(on)
    };
    set_recording(false);
    let est = top_eigenvalue(
        model,
        |m: &Model<B>| m.loss(inputs.clone(), targets.clone()),
        &PowerOptions {
            seed: cfg.seed,
            ..Default::default()
        },
    );
    set_recording(true);
    est
}

/// Walks float parameters (and optionally their gradients) into one flat f64 vector, in the
/// module's visiting order (the same order [`Shift`] maps them in).
struct Flatten<'a, B: AutodiffBackend> {
    grads: Option<&'a GradientsParams>,
    values: Vec<f64>,
    _b: std::marker::PhantomData<B>,
}

impl<'a, B: AutodiffBackend> Flatten<'a, B> {
    fn params<M: AutodiffModule<B>>(m: &M) -> Self {
        let mut f = Flatten {
            grads: None,
            values: Vec::new(),
            _b: Default::default(),
        };
        m.visit(&mut f);
        f
    }

    fn grads<M: AutodiffModule<B>>(m: &M, grads: &'a GradientsParams) -> Vec<f64> {
        let mut f = Flatten {
            grads: Some(grads),
            values: Vec::new(),
            _b: Default::default(),
        };
        m.visit(&mut f);
        f.values
    }
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let data = match self.grads {
            None => param.val().into_data(),
            Some(g) => match g.get::<B::InnerBackend, D>(param.id) {
                Some(t) => t.into_data(),
                // A parameter the loss does not reach has a zero gradient.
                None => {
                    let n = param.val().shape().num_elements();
                    self.values.extend(std::iter::repeat_n(0.0, n));
                    return;
                }
            },
        };
        let v = data
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("float parameters convert to f32");
        self.values.extend(v.into_iter().map(f64::from));
    }
}

/// Adds `scale · delta[offset..]` to each float parameter, in visiting order, as a fresh leaf.
struct Shift<'a, B: AutodiffBackend> {
    delta: &'a [f64],
    scale: f64,
    offset: usize,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Shift<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (delta, scale) = (self.delta, self.scale);
        let start = self.offset;
        let mut end = start;
        let param = param.map(|t| {
            let shape = t.shape();
            end = start + shape.num_elements();
            let d: Vec<f32> = delta[start..end]
                .iter()
                .map(|&x| (x * scale) as f32)
                .collect();
            let d = Tensor::<B, D>::from_data(TensorData::new(d, shape), &t.device());
            (t.detach() + d).detach().require_grad()
        });
        self.offset = end;
        param
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalize(v: &mut [f64]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Standard normal values from SplitMix64 and Box–Muller (deterministic in `seed`).
fn gaussian(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = fp8_formats::rng::SplitMix64::new(seed ^ 0x5EED_4E55_1A2B_3C4D);
    let mut next = || ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    (0..n)
        .map(|_| {
            let (u1, u2) = (next(), next());
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::nn::Linear;

    type B = Autodiff<crate::backend::Cpu>;

    /// Entry `(i, j)` of the normalised 4×4 Hadamard matrix (orthogonal, entries ±½).
    fn hadamard(i: usize, j: usize) -> f64 {
        if (i & j).count_ones().is_multiple_of(2) {
            0.5
        } else {
            -0.5
        }
    }

    #[test]
    fn power_iteration_finds_the_top_eigenvalue_of_a_known_matrix() {
        // A = Q diag(5, -2, 1, 0.5) Qᵀ with Q the normalised 4×4 Hadamard matrix.
        let d = [5.0, -2.0, 1.0, 0.5];
        let a: Vec<f64> = (0..16)
            .map(|k| {
                (0..4)
                    .map(|m| hadamard(k / 4, m) * d[m] * hadamard(k % 4, m))
                    .sum()
            })
            .collect();
        let est = power_iteration(
            4,
            |v| {
                Ok((0..4)
                    .map(|i| (0..4).map(|j| a[i * 4 + j] * v[j]).sum())
                    .collect())
            },
            &PowerOptions {
                iters: 100,
                tol: 1e-12,
                ..Default::default()
            },
        )
        .unwrap();
        assert!((est.eigenvalue - 5.0).abs() < 1e-9, "{est:?}");
        assert!(est.converged);

        // A dominant negative eigenvalue comes out negative.
        let est = power_iteration(
            2,
            |v| Ok(vec![-3.0 * v[0], 1.0 * v[1]]),
            &PowerOptions {
                iters: 200,
                tol: 1e-12,
                ..Default::default()
            },
        )
        .unwrap();
        assert!((est.eigenvalue + 3.0).abs() < 1e-9, "{est:?}");
    }

    /// Least squares `L(w) = mean_n (x_n·w − y_n)²` has Hessian `(2/n)·XᵀX` whatever `w`, so
    /// the finite difference is exact up to rounding. With rows `x_n = s_n·q_n` (`q_n` the rows
    /// of the normalised Hadamard matrix), `XᵀX = Qᵀ diag(s²) Q` has eigenvalues `s_n²`.
    #[test]
    fn finite_difference_hvp_matches_least_squares_hessian() {
        let device = Default::default();
        let s = [3.0f32, 2.0, 1.0, 0.5];
        let x: Vec<f32> = (0..16)
            .map(|k| s[k / 4] * hadamard(k / 4, k % 4) as f32)
            .collect();
        let x = Tensor::<B, 2>::from_data(TensorData::new(x, [4, 4]), &device);
        let y = Tensor::<B, 2>::from_data(
            TensorData::new(vec![1.0f32, -2.0, 0.5, 3.0], [4, 1]),
            &device,
        );
        let model = Linear::<B> {
            weight: Param::from_data(
                TensorData::new(vec![0.3f32, -0.7, 1.1, 0.2], [4, 1]),
                &device,
            ),
            bias: None,
        };
        let loss = |m: &Linear<B>| {
            (m.forward(x.clone()) - y.clone())
                .square()
                .mean()
                .reshape([1])
        };
        let est = top_eigenvalue(&model, loss, &PowerOptions::default()).unwrap();
        let expected = 2.0 / 4.0 * 9.0;
        assert!(
            (est.eigenvalue - expected).abs() < 1e-3 * expected,
            "{est:?}, expected {expected}"
        );
        assert!(est.converged, "{est:?}");
        assert!(est.radius > 0.0);
        // The model itself is untouched.
        let w: Vec<f32> = model.weight.val().into_data().into_vec().unwrap();
        assert_eq!(w, [0.3, -0.7, 1.1, 0.2]);
    }

    /// Under the trainer's decorated backend with an active recipe, the measurement leaves the
    /// recipe's state alone and gives a finite curvature.
    #[test]
    fn model_measurement_under_a_recipe_does_not_touch_scaling_state() {
        use crate::backend::CpuTrain;
        use fp8_recipes as _;
        let device = Default::default();
        let recipe =
            fp8_core::recipe::from_file(std::path::Path::new("../../recipes/delayed_scaling.ron"))
                .unwrap();
        let ctx = PrecisionContext::new(recipe).shared();
        let _active = fp8_core::context::activate(ctx.clone());
        let before = ctx.lock().unwrap().recipe().state();
        let model = fp8_models::ModelConfig::preset("tiny")
            .unwrap()
            .init::<CpuTrain>(&device);
        let cfg = TrainConfig {
            batch: 2,
            seq: 8,
            ..Default::default()
        };
        let val: Vec<u32> = (0..200u32).map(|i| (i * 7 + i / 3) % 64).collect();
        let est =
            model_top_eigenvalue(&model, &val, &Batcher::new(0), &cfg, &device, &ctx).unwrap();
        assert!(est.eigenvalue.is_finite() && est.iterations > 0, "{est:?}");
        let c = ctx.lock().unwrap();
        assert_eq!(c.recipe().state(), before);
        assert!(c.telemetry().is_empty());
    }
}
