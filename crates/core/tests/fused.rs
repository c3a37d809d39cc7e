//! Tests of the fused ops (`fp8_core::fused`).
//!
//! The reference is the math the models composed from burn's primitive ops before the ops were
//! fused, differentiated by burn's autodiff on NdArray. Against it: the composed defaults
//! (`Autodiff<NdArray>`: one fused node whose backward is the closed-form default), the Flex
//! kernels (`Autodiff<Flex>`), the decorator (`Precision<Autodiff<Flex>>`) and a checkpointing
//! strategy. Every case checks the forward value and the gradient of `Σ out ⊙ cotangent` with
//! respect to every input.

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::activation;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use burn_autodiff::checkpoint::strategy::BalancedCheckpointing;
use fp8_core::fused::{self, FusedOps};
use fp8_core::Precision;

type Reference = Autodiff<NdArray<f32>>;

/// Deterministic values in `[-scale, scale)`.
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn leaf<B: AutodiffBackend, const D: usize>(v: &[f32], shape: [usize; D]) -> Tensor<B, D> {
    Tensor::<B, D>::from_data(TensorData::new(v.to_vec(), shape), &Default::default())
        .require_grad()
}

fn host<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Forward value and the gradients of `Σ out ⊙ cot` for `inputs`.
struct Outcome {
    value: Vec<f32>,
    grads: Vec<Vec<f32>>,
}

fn backward<B: AutodiffBackend, const D: usize, const E: usize>(
    out: Tensor<B, D>,
    cot: &[f32],
    inputs: &[&Tensor<B, E>],
) -> Vec<Vec<f32>> {
    let shape = out.dims();
    let cot = Tensor::<B, D>::from_data(TensorData::new(cot.to_vec(), shape), &out.device());
    let grads = (out * cot).sum().backward();
    inputs
        .iter()
        .map(|t| host(t.grad(&grads).expect("a gradient for every input")))
        .collect()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * w.abs() + 2e-6 * scale;
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w} (|diff| {} > {tol})",
            (g - w).abs()
        );
    }
}

#[track_caller]
fn assert_same(what: &str, got: &Outcome, want: &Outcome) {
    assert_close(&format!("{what}: value"), &got.value, &want.value);
    assert_eq!(got.grads.len(), want.grads.len());
    for (k, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
        assert_close(&format!("{what}: grad {k}"), g, w);
    }
}

/// Runs `case` on every backend under test and compares each with `reference`.
macro_rules! check_all {
    ($name:literal, $case:ident, $reference:expr) => {{
        let want: Outcome = $reference;
        assert_same(
            concat!($name, " (NdArray defaults)"),
            &$case::<Autodiff<NdArray<f32>>>(),
            &want,
        );
        assert_same(
            concat!($name, " (Flex kernels)"),
            &$case::<Autodiff<Flex>>(),
            &want,
        );
        assert_same(
            concat!($name, " (Precision<Autodiff<Flex>>)"),
            &$case::<Precision<Autodiff<Flex>>>(),
            &want,
        );
        assert_same(
            concat!($name, " (Flex, balanced checkpointing)"),
            &$case::<Autodiff<Flex, BalancedCheckpointing>>(),
            &want,
        );
    }};
}

// ---- softmax -------------------------------------------------------------------------------

const SM: [usize; 4] = [2, 3, 5, 5];

/// The causal mask of the model: true strictly above the diagonal.
fn causal<B: AutodiffBackend>() -> Tensor<B, 4, Bool> {
    let [b, h, t, _] = SM;
    let v: Vec<bool> = (0..b * h * t * t).map(|i| i % t > (i / t) % t).collect();
    Tensor::from_data(TensorData::new(v, SM), &Default::default())
}

fn softmax_inputs() -> (Vec<f32>, Vec<f32>) {
    let n = SM.iter().product();
    (values(n, 1, 4.0), values(n, 2, 1.0))
}

fn softmax_reference() -> Outcome {
    let (x, cot) = softmax_inputs();
    let x = leaf::<Reference, 4>(&x, SM);
    let masked = x.clone().mask_fill(causal(), f32::NEG_INFINITY);
    let y = activation::softmax(masked, 3);
    Outcome {
        value: host(y.clone()),
        grads: backward(y, &cot, &[&x]),
    }
}

fn softmax_fused<B: AutodiffBackend + FusedOps>() -> Outcome {
    let (x, cot) = softmax_inputs();
    let x = leaf::<B, 4>(&x, SM);
    let y = fused::softmax(x.clone().mask_fill(causal(), f32::NEG_INFINITY));
    Outcome {
        value: host(y.clone()),
        grads: backward(y, &cot, &[&x]),
    }
}

#[test]
fn masked_softmax_matches_the_composed_softmax() {
    check_all!("softmax", softmax_fused, softmax_reference());
}

/// A non-contiguous input (a transposed view): read through a contiguous copy.
fn softmax_strided<B: AutodiffBackend + FusedOps>() -> Outcome {
    let (x, cot) = softmax_inputs();
    let x = leaf::<B, 4>(&x, SM);
    let y = fused::softmax(x.clone().swap_dims(1, 3));
    Outcome {
        value: host(y.clone()),
        grads: backward(y, &cot, &[&x]),
    }
}

#[test]
fn softmax_of_a_strided_view() {
    let reference = {
        let (x, cot) = softmax_inputs();
        let x = leaf::<Reference, 4>(&x, SM);
        let y = activation::softmax(x.clone().swap_dims(1, 3), 3);
        Outcome {
            value: host(y.clone()),
            grads: backward(y, &cot, &[&x]),
        }
    };
    check_all!("strided softmax", softmax_strided, reference);
}

// ---- attention heads of a fused projection ------------------------------------------------

/// `qkv [b, t, (3 + 1 + 1)·hd]`, grouped-query style: 3 query heads, one key and one value head.
const QKV: [usize; 3] = [2, 5, 20];
const HD: usize = 4;
const SPLIT: [(usize, usize); 3] = [(0, 3), (3, 1), (4, 1)];

/// `Σ_part Σ part ⊙ cot_part` over the three parts, and each part's value.
fn heads_case<B: AutodiffBackend + FusedOps>(
    shape: [usize; 3],
    part: impl Fn(Tensor<B, 3>, usize, usize) -> Tensor<B, 4>,
) -> Outcome {
    let n = shape.iter().product();
    let qkv = leaf::<B, 3>(&values(n, 3, 2.0), shape);
    let mut value = Vec::new();
    let mut loss = None;
    for (i, &(first, heads)) in SPLIT.iter().enumerate() {
        let y = part(qkv.clone(), first, heads);
        value.extend(host(y.clone()));
        let cot = values(y.dims().iter().product(), 10 + i as u64, 1.0);
        let cot = Tensor::<B, 4>::from_data(TensorData::new(cot, y.dims()), &y.device());
        let term = (y * cot).sum();
        loss = Some(match loss {
            None => term,
            Some(l) => l + term,
        });
    }
    let grads = loss.expect("three parts").backward();
    Outcome {
        value,
        grads: vec![host(qkv.grad(&grads).expect("a gradient for qkv"))],
    }
}

/// The model's split before the fused op: reshape, swap, narrow.
fn heads_composed<B: AutodiffBackend>(qkv: Tensor<B, 3>, first: usize, n: usize) -> Tensor<B, 4> {
    let [b, t, w] = qkv.dims();
    qkv.reshape([b, t, w / HD, HD])
        .swap_dims(1, 2)
        .narrow(1, first, n)
}

fn heads_fused<B: AutodiffBackend + FusedOps>() -> Outcome {
    heads_case::<B>(QKV, |qkv, first, n| fused::heads(qkv, first, n, HD))
}

#[test]
fn heads_match_the_narrowed_views() {
    check_all!(
        "heads",
        heads_fused,
        heads_case::<Reference>(QKV, heads_composed)
    );
    // Bit for bit on Flex: the same views forward, the same sums of zero-padded parts backward;
    // also split over tasks whose runs of tokens cross sequences (2100 tokens of 700).
    let bits = |o: &Outcome| {
        let all = o.value.iter().chain(o.grads.iter().flatten());
        all.map(|x| x.to_bits()).collect::<Vec<_>>()
    };
    for shape in [QKV, [3, 700, 20]] {
        let fused = heads_case::<Autodiff<Flex>>(shape, |x, f, n| fused::heads(x, f, n, HD));
        let composed = heads_case::<Autodiff<Flex>>(shape, heads_composed);
        assert_eq!(bits(&fused), bits(&composed), "{shape:?}");
    }
}

#[test]
#[should_panic(expected = "heads 4..6 of 5")]
fn heads_refuses_heads_out_of_range() {
    let x = Tensor::<Flex, 3>::zeros(QKV, &Default::default());
    let _ = fused::heads(x, 4, 2, HD);
}

// ---- causal softmax ------------------------------------------------------------------------

/// `1/sqrt(head_dim)` for a head of 32, as the model computes it.
const SCALE: f32 = 0.176_776_7;

/// The model's math before the fusion: scale, mask the future with −∞, softmax.
fn causal_composed<B: AutodiffBackend + FusedOps>(
    x: Tensor<B, 4>,
    fused_softmax: bool,
) -> Tensor<B, 4> {
    let [b, h, t, _] = x.dims();
    let v: Vec<bool> = (0..b * h * t * t).map(|i| i % t > (i / t) % t).collect();
    let future = Tensor::<B, 4, Bool>::from_data(TensorData::new(v, [b, h, t, t]), &x.device());
    let masked = (x * SCALE).mask_fill(future, f32::NEG_INFINITY);
    if fused_softmax {
        fused::softmax(masked)
    } else {
        activation::softmax(masked, 3)
    }
}

fn causal_reference() -> Outcome {
    let (x, cot) = softmax_inputs();
    let x = leaf::<Reference, 4>(&x, SM);
    let y = causal_composed(x.clone(), false);
    Outcome {
        value: host(y.clone()),
        grads: backward(y, &cot, &[&x]),
    }
}

fn causal_fused<B: AutodiffBackend + FusedOps>() -> Outcome {
    let (x, cot) = softmax_inputs();
    let x = leaf::<B, 4>(&x, SM);
    let y = fused::causal_softmax(x.clone(), SCALE);
    Outcome {
        value: host(y.clone()),
        grads: backward(y, &cot, &[&x]),
    }
}

#[test]
fn causal_softmax_matches_the_composed_softmax() {
    check_all!("causal softmax", causal_fused, causal_reference());
}

/// On Flex the fused op gives the bits of the scaling, `mask_fill` and fused softmax it
/// replaces, forward and backward: small (one thread) and large enough to be split over tasks
/// that start in the middle of a score matrix (t = 100 does not divide the rows per task).
#[test]
fn causal_softmax_is_bit_identical_to_the_ops_it_fuses() {
    type F = Autodiff<Flex>;
    for shape in [[2, 3, 5, 5], [2, 2, 100, 100], [1, 1, 1, 1]] {
        let n: usize = shape.iter().product();
        let (x, cot) = (values(n, 7, 6.0), values(n, 8, 1.0));
        let run = |fused: bool| {
            let leaf = leaf::<F, 4>(&x, shape);
            let y = if fused {
                fused::causal_softmax(leaf.clone(), SCALE)
            } else {
                causal_composed(leaf.clone(), true)
            };
            let value = host(y.clone());
            let grad = backward(y, &cot, &[&leaf]).remove(0);
            (value, grad)
        };
        let (want, got) = (run(false), run(true));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.0), bits(&want.0), "{shape:?}: forward");
        assert_eq!(bits(&got.1), bits(&want.1), "{shape:?}: gradient");
        // The masked keys get exactly +0 forward and backward.
        let t = shape[3];
        for (i, (y, g)) in got.0.iter().zip(&got.1).enumerate() {
            if i % t > (i / t) % t {
                assert_eq!((y.to_bits(), g.to_bits()), (0, 0), "{shape:?}[{i}]");
            }
        }
    }
}

#[test]
#[should_panic(expected = "last two dimensions must be equal")]
fn causal_softmax_refuses_non_square_scores() {
    let x = Tensor::<Flex, 3>::zeros([2, 3, 4], &Default::default());
    let _ = fused::causal_softmax(x, 1.0);
}

// ---- GELU ----------------------------------------------------------------------------------

const GE: [usize; 3] = [3, 4, 16];

fn gelu_inputs() -> (Vec<f32>, Vec<f32>) {
    let n = GE.iter().product();
    (values(n, 3, 5.0), values(n, 4, 1.0))
}

/// GELU-tanh as written: `½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
fn gelu_reference() -> Outcome {
    let (x, cot) = gelu_inputs();
    let x = leaf::<Reference, 3>(&x, GE);
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let u = (x.clone() + x.clone().powi_scalar(3) * 0.044715) * c;
    let y = x.clone() * (u.tanh() + 1.0) * 0.5;
    Outcome {
        value: host(y.clone()),
        grads: backward(y, &cot, &[&x]),
    }
}

fn gelu_fused<B: AutodiffBackend + FusedOps>() -> Outcome {
    let (x, cot) = gelu_inputs();
    let x = leaf::<B, 3>(&x, GE);
    let y = fused::gelu_tanh(x.clone());
    Outcome {
        value: host(y.clone()),
        grads: backward(y, &cot, &[&x]),
    }
}

#[test]
fn gelu_tanh_matches_the_formula() {
    check_all!("gelu_tanh", gelu_fused, gelu_reference());
}

/// A narrowed (offset, strided) view of a bigger tensor, as Llama's `gate | up` split makes.
fn gelu_narrowed<B: AutodiffBackend + FusedOps>() -> Outcome {
    let (x, cot) = gelu_inputs();
    let [a, b, c] = GE;
    let wide = leaf::<B, 3>(&[x.clone(), x].concat(), [a, b, 2 * c]);
    let y = fused::gelu_tanh(wide.clone().narrow(2, c, c));
    Outcome {
        value: host(y.clone()),
        grads: backward(y, &cot, &[&wide]),
    }
}

#[test]
fn gelu_tanh_of_a_narrowed_view() {
    let reference = {
        let (x, cot) = gelu_inputs();
        let [a, b, c] = GE;
        let wide = leaf::<Reference, 3>(&[x.clone(), x].concat(), [a, b, 2 * c]);
        let x = wide.clone().narrow(2, c, c);
        let k = (2.0 / std::f64::consts::PI).sqrt();
        let u = (x.clone() + x.clone().powi_scalar(3) * 0.044715) * k;
        let y = x * (u.tanh() + 1.0) * 0.5;
        Outcome {
            value: host(y.clone()),
            grads: backward(y, &cot, &[&wide]),
        }
    };
    check_all!("narrowed gelu_tanh", gelu_narrowed, reference);
}

// ---- LayerNorm / RMSNorm ---------------------------------------------------------------------

const NO: [usize; 3] = [2, 3, 24];
const EPS: f64 = 1e-5;

struct NormInputs {
    x: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    cot: Vec<f32>,
}

fn norm_inputs() -> NormInputs {
    let n = NO.iter().product();
    let c = NO[2];
    // An offset mean, so the centring matters.
    let x = values(n, 5, 3.0).iter().map(|v| v + 1.5).collect();
    let weight = values(c, 6, 1.0).iter().map(|v| v + 1.0).collect();
    NormInputs {
        x,
        weight,
        bias: values(c, 7, 0.5),
        cot: values(n, 8, 1.0),
    }
}

/// The models' `Norm::forward` before fusion.
fn norm_composed<B: AutodiffBackend>(
    x: Tensor<B, 3>,
    w: Tensor<B, 1>,
    b: Option<Tensor<B, 1>>,
    rms: bool,
) -> Tensor<B, 3> {
    let x = if rms {
        let ms = x.clone().square().mean_dim(2);
        x / (ms + EPS).sqrt()
    } else {
        let xc = x.clone() - x.mean_dim(2);
        let var = xc.clone().square().mean_dim(2);
        xc / (var + EPS).sqrt()
    };
    let y = x * w.unsqueeze::<3>();
    match b {
        Some(b) => y + b.unsqueeze::<3>(),
        None => y,
    }
}

fn norm_case<B: AutodiffBackend + FusedOps>(rms: bool, fused: bool) -> Outcome {
    let i = norm_inputs();
    let x = leaf::<B, 3>(&i.x, NO);
    let w = leaf::<B, 1>(&i.weight, [NO[2]]);
    let b = leaf::<B, 1>(&i.bias, [NO[2]]);
    let bias = (!rms).then(|| b.clone());
    let y = if fused {
        fused::norm(x.clone(), w.clone(), bias, EPS, rms)
    } else {
        norm_composed(x.clone(), w.clone(), bias, rms)
    };
    let value = host(y.clone());
    let shape = y.dims();
    let cot = Tensor::<B, 3>::from_data(TensorData::new(i.cot, shape), &y.device());
    let grads = (y * cot).sum().backward();
    let mut g = vec![host(x.grad(&grads).unwrap()), host(w.grad(&grads).unwrap())];
    if !rms {
        g.push(host(b.grad(&grads).unwrap()));
    } else {
        assert!(b.grad(&grads).is_none(), "RMSNorm has no bias");
    }
    Outcome { value, grads: g }
}

fn layer_norm_fused<B: AutodiffBackend + FusedOps>() -> Outcome {
    norm_case::<B>(false, true)
}

fn rms_norm_fused<B: AutodiffBackend + FusedOps>() -> Outcome {
    norm_case::<B>(true, true)
}

#[test]
fn layer_norm_matches_the_composed_norm() {
    check_all!(
        "layer_norm",
        layer_norm_fused,
        norm_case::<Reference>(false, false)
    );
}

#[test]
fn rms_norm_matches_the_composed_norm() {
    check_all!(
        "rms_norm",
        rms_norm_fused,
        norm_case::<Reference>(true, false)
    );
}

/// Only the input requires a gradient (frozen gain and shift): one tracked parent of three.
fn layer_norm_frozen<B: AutodiffBackend + FusedOps>(fused: bool) -> Outcome {
    let i = norm_inputs();
    let x = leaf::<B, 3>(&i.x, NO);
    let dev = Default::default();
    let w = Tensor::<B, 1>::from_data(TensorData::new(i.weight, [NO[2]]), &dev);
    let b = Tensor::<B, 1>::from_data(TensorData::new(i.bias, [NO[2]]), &dev);
    let y = if fused {
        fused::norm(x.clone(), w, Some(b), EPS, false)
    } else {
        norm_composed(x.clone(), w, Some(b), false)
    };
    Outcome {
        value: host(y.clone()),
        grads: backward(y, &i.cot, &[&x]),
    }
}

fn layer_norm_frozen_fused<B: AutodiffBackend + FusedOps>() -> Outcome {
    layer_norm_frozen::<B>(true)
}

#[test]
fn layer_norm_with_frozen_parameters() {
    check_all!(
        "frozen layer_norm",
        layer_norm_frozen_fused,
        layer_norm_frozen::<Reference>(false)
    );
}

// ---- cross-entropy ---------------------------------------------------------------------------

const CE: [usize; 2] = [12, 37];

/// Logits, targets, and a loss multiplier (the incoming `dloss`).
fn ce_inputs() -> (Vec<f32>, Vec<i64>, f32) {
    let [n, v] = CE;
    let targets = values(n, 9, 1.0)
        .iter()
        .map(|u| (((u + 1.0) / 2.0 * v as f32) as i64).min(v as i64 - 1))
        .collect();
    (values(n * v, 10, 6.0), targets, 2.5)
}

/// The models' `cross_entropy` before fusion.
fn ce_case<B: AutodiffBackend + FusedOps>(fused: bool) -> Outcome {
    let (logits, targets, k) = ce_inputs();
    let [n, _] = CE;
    let x = leaf::<B, 2>(&logits, CE);
    let t = Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [n]), &Default::default());
    let loss = if fused {
        fused::cross_entropy(x.clone(), t)
    } else {
        let max = x.clone().max_dim(1).detach();
        let shifted = x.clone() - max;
        let lse = shifted.clone().exp().sum_dim(1).log();
        let target_logit = shifted.gather(1, t.reshape([n, 1]));
        (lse - target_logit).mean()
    };
    assert_eq!(loss.dims(), [1]);
    Outcome {
        value: host(loss.clone()),
        grads: backward(loss, &[k], &[&x]),
    }
}

fn ce_fused<B: AutodiffBackend + FusedOps>() -> Outcome {
    ce_case::<B>(true)
}

#[test]
fn cross_entropy_matches_the_composed_loss() {
    check_all!("cross_entropy", ce_fused, ce_case::<Reference>(false));
}

// ---- a chain, and the inner backend ----------------------------------------------------------

/// norm → GELU → softmax → cross-entropy, so fused nodes feed fused nodes (and a checkpointing
/// strategy has to find each saved input).
fn chain<B: AutodiffBackend + FusedOps>() -> Outcome {
    let i = norm_inputs();
    let x = leaf::<B, 3>(&i.x, NO);
    let w = leaf::<B, 1>(&i.weight, [NO[2]]);
    let b = leaf::<B, 1>(&i.bias, [NO[2]]);
    let h = fused::norm(x.clone(), w.clone(), Some(b.clone()), EPS, false);
    let h = fused::gelu_tanh(h * 2.0);
    let p = fused::softmax(h.clone() * 3.0);
    let [a, s, c] = NO;
    let logits = (p + h).reshape([a * s, c]);
    let targets: Vec<i64> = (0..a * s).map(|r| ((r * 7) % c) as i64).collect();
    let t = Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [a * s]), &Default::default());
    let loss = fused::cross_entropy(logits, t);
    let value = host(loss.clone());
    let grads = loss.backward();
    Outcome {
        value,
        grads: vec![
            host(x.grad(&grads).unwrap()),
            host(w.grad(&grads).unwrap()),
            host(b.grad(&grads).unwrap()),
        ],
    }
}

#[test]
fn a_chain_of_fused_ops_agrees_across_backends() {
    check_all!("chain", chain, chain::<Reference>());
}

/// Without autodiff (evaluation: `model.valid()`), the inner backends compute the same values.
#[test]
fn inner_backends_agree() {
    fn run<B: burn::tensor::backend::Backend + FusedOps>() -> Vec<Vec<f32>> {
        let i = norm_inputs();
        let dev = Default::default();
        let x = Tensor::<B, 3>::from_data(TensorData::new(i.x, NO), &dev);
        let w = Tensor::<B, 1>::from_data(TensorData::new(i.weight, [NO[2]]), &dev);
        let y = fused::norm(x.clone(), w, None, EPS, true);
        let g = fused::gelu_tanh(y.clone());
        let p = fused::softmax(g.clone());
        let [a, s, c] = NO;
        let t = Tensor::<B, 1, Int>::zeros([a * s], &dev);
        let l = fused::cross_entropy(p.clone().reshape([a * s, c]), t);
        vec![host(y), host(g), host(p), host(l)]
    }
    let want = run::<NdArray<f32>>();
    for (k, (got, want)) in run::<Flex>().iter().zip(&want).enumerate() {
        assert_close(&format!("output {k}"), got, want);
    }
}

// ---- contiguous ------------------------------------------------------------------------------

const CO: [usize; 4] = [2, 5, 3, 4];

/// Views the model makes: heads split from a GEMM output, a narrowed head group, a transposed
/// (key-like) head, a merged one; and `fused::contiguous` of each forward and backward.
fn layouts<B: AutodiffBackend + FusedOps>(fused: bool) -> Outcome {
    let n: usize = CO.iter().product();
    let x = leaf::<B, 4>(&values(n, 11, 2.0), CO);
    let c = |t: Tensor<B, 4>| if fused { fused::contiguous(t) } else { t };
    let split = c(x.clone().swap_dims(1, 2)); // [2, 3, 5, 4]
    let group = c(split.clone().narrow(1, 1, 2)); // [2, 2, 5, 4]
    let keys = c(group.clone().swap_dims(2, 3)); // [2, 2, 4, 5]
    let merged = c(keys
        .clone()
        .swap_dims(1, 3)
        .unsqueeze_dim::<5>(2)
        .squeeze_dim::<4>(2));
    let parts = [split, group, keys, merged];
    let mut value = Vec::new();
    let mut total = None;
    for (i, p) in parts.into_iter().enumerate() {
        value.extend(host(p.clone()));
        let cot = values(p.dims().iter().product(), 20 + i as u64, 1.0);
        let cot = Tensor::<B, 4>::from_data(TensorData::new(cot, p.dims()), &p.device());
        let term = (p * cot).sum();
        total = Some(match total {
            None => term,
            Some(t) => t + term,
        });
    }
    let grads = total.unwrap().backward();
    Outcome {
        value,
        grads: vec![host(x.grad(&grads).unwrap())],
    }
}

fn layouts_fused<B: AutodiffBackend + FusedOps>() -> Outcome {
    layouts::<B>(true)
}

#[test]
fn contiguous_keeps_values_and_gradients() {
    check_all!("contiguous", layouts_fused, layouts::<Reference>(false));
}

#[test]
fn flex_contiguous_copies_strided_views_only() {
    use burn::backend::flex::FlexTensor;
    let prim = |t: Tensor<Flex, 4>| -> FlexTensor { t.into_primitive().tensor() };
    let n: usize = CO.iter().product();
    let x =
        Tensor::<Flex, 4>::from_data(TensorData::new(values(n, 12, 1.0), CO), &Default::default());
    let view = x.clone().swap_dims(2, 3);
    assert!(!prim(view.clone()).is_contiguous());
    let copy = fused::contiguous(view.clone());
    assert_eq!(host(copy.clone()), host(view));
    assert!(prim(copy).is_contiguous());
    // Already contiguous: the same buffer, not a copy.
    let same = prim(fused::contiguous(x.clone()));
    assert!(std::sync::Arc::ptr_eq(
        &same.data_arc(),
        &prim(x).data_arc()
    ));
}
