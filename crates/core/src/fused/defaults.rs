//! The composed bodies of [`FusedOps`](super::FusedOps): ordinary burn ops, any backend.
//!
//! The forward functions are the model's math op for op (so a backend without kernels computes
//! what the model computed before the ops were fused); the backward functions are the closed-form
//! gradients. Rows are the last dimension; inputs are viewed as `[rows, cols]` and the results
//! reshaped back.

use super::{float, tensor, AdamWOutput, AdamWStep, NormGrads, NormOutput};
use burn::tensor::{Bool, IndexingUpdateOp, Int, Shape, Tensor, TensorData, TensorMetadata};
use burn_backend::tensor::{FloatTensor, IntTensor};
use burn_backend::Backend;

/// `(rows, cols)` of `shape` viewed as rows of its last dimension.
pub(crate) fn rows_cols(shape: &Shape) -> (usize, usize) {
    let dims = shape.as_slice();
    let cols = *dims.last().expect("a tensor of rank ≥ 1");
    let rows = dims[..dims.len() - 1].iter().product();
    (rows, cols)
}

/// `shape` with its last dimension set to 1: the shape of a per-row statistic.
pub(crate) fn stat_shape(shape: &Shape) -> Shape {
    let mut dims = shape.as_slice().to_vec();
    *dims.last_mut().expect("a tensor of rank ≥ 1") = 1;
    Shape::from(dims)
}

fn as_rows<B: Backend>(t: FloatTensor<B>) -> (Tensor<B, 2>, Shape) {
    let shape = t.shape();
    let (rows, cols) = rows_cols(&shape);
    (tensor::<B, 2>(t).reshape([rows, cols]), shape)
}

fn reshaped<B: Backend, const D: usize>(t: Tensor<B, D>, shape: Shape) -> FloatTensor<B> {
    B::float_reshape(float(t), shape)
}

/// `B::softmax` over the last dimension (`burn::tensor::activation::softmax`).
pub fn softmax<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let last = x.shape().num_dims() - 1;
    B::softmax(x, last)
}

/// `y ⊙ (dy − Σ_last(dy ⊙ y))`.
pub fn softmax_backward<B: Backend>(y: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let (y, shape) = as_rows::<B>(y);
    let (dy, _) = as_rows::<B>(dy);
    let s = (dy.clone() * y.clone()).sum_dim(1);
    reshaped(y * (dy - s), shape)
}

/// `(b, t, heads)` of a fused projection `qkv [b, t, heads·head_dim]` read as heads.
///
/// # Panics
/// If `qkv` is not 3-D, its last dimension not a multiple of `head_dim`, or it has fewer than
/// `first + n` heads.
pub(crate) fn heads_dims(shape: &Shape, first: usize, n: usize, head_dim: usize) -> [usize; 3] {
    let dims = shape.as_slice();
    assert!(
        dims.len() == 3 && head_dim > 0 && dims[2].is_multiple_of(head_dim),
        "heads: qkv must be [b, t, heads·head_dim] with head_dim {head_dim}, got {dims:?}"
    );
    let heads = dims[2] / head_dim;
    assert!(
        first + n <= heads,
        "heads: heads {first}..{} of {heads}",
        first + n
    );
    [dims[0], dims[1], heads]
}

/// Heads `first..first + n` of `qkv` as `[b, n, t, head_dim]`: reshape, swap, narrow (views).
pub fn heads<B: Backend>(
    qkv: FloatTensor<B>,
    first: usize,
    n: usize,
    head_dim: usize,
) -> FloatTensor<B> {
    let [b, t, heads] = heads_dims(&qkv.shape(), first, n, head_dim);
    let x = tensor::<B, 3>(qkv)
        .reshape([b, t, heads, head_dim])
        .swap_dims(1, 2)
        .narrow(1, first, n);
    float(x)
}

/// `dy [b, n, t, head_dim]` placed at heads `first..first + n` of a zero `[b, t, heads·head_dim]`.
pub fn heads_backward<B: Backend>(
    dy: FloatTensor<B>,
    first: usize,
    heads: usize,
) -> FloatTensor<B> {
    let dy = tensor::<B, 4>(dy);
    let [b, n, t, hd] = dy.dims();
    let (device, dtype) = (dy.device(), dy.dtype());
    let zeros = |h: usize| {
        tensor::<B, 4>(B::float_zeros(
            Shape::from([b, h, t, hd]),
            &device,
            dtype.into(),
        ))
    };
    let mut parts = Vec::with_capacity(3);
    if first > 0 {
        parts.push(zeros(first));
    }
    parts.push(dy);
    if first + n < heads {
        parts.push(zeros(heads - first - n));
    }
    float(
        Tensor::cat(parts, 1)
            .swap_dims(1, 2)
            .reshape([b, t, heads * hd]),
    )
}

/// `[m, t, t]` views of a stack of square score matrices, and their shape.
fn as_squares<B: Backend>(x: FloatTensor<B>) -> (Tensor<B, 3>, Shape) {
    let shape = x.shape();
    let t = causal_len(&shape);
    let m = shape.num_elements() / (t * t).max(1);
    (
        tensor::<B, 3>(B::float_reshape(x, Shape::from([m, t, t]))),
        shape,
    )
}

/// `t` of a tensor of `[t, t]` score matrices.
///
/// # Panics
/// If its last two dimensions are not equal.
pub(crate) fn causal_len(shape: &Shape) -> usize {
    let dims = shape.as_slice();
    let n = dims.len();
    assert!(
        n >= 2 && dims[n - 1] == dims[n - 2],
        "causal softmax: the last two dimensions must be equal (queries × keys), got {dims:?}"
    );
    dims[n - 1]
}

/// The causal mask of `[m, t, t]` (true where key `j > i`, query `i`), as the model built it.
fn future<B: Backend>(like: &Tensor<B, 3>) -> Tensor<B, 3, Bool> {
    let [m, t, _] = like.dims();
    let v: Vec<bool> = (0..m * t * t).map(|i| i % t > (i / t) % t).collect();
    Tensor::from_data(TensorData::new(v, [m, t, t]), &like.device())
}

/// `softmax(mask_fill(x · scale, future, −∞))`: the scaling, mask and softmax the model wrote.
pub fn causal_softmax<B: Backend>(x: FloatTensor<B>, scale: f32) -> FloatTensor<B> {
    let (x, shape) = as_squares::<B>(x);
    let mask = future(&x);
    let masked = (x * scale).mask_fill(mask, f32::NEG_INFINITY);
    reshaped(burn::tensor::activation::softmax(masked, 2), shape)
}

/// [`softmax_backward`], zero at the masked keys, times `scale`.
pub fn causal_softmax_backward<B: Backend>(
    y: FloatTensor<B>,
    dy: FloatTensor<B>,
    scale: f32,
) -> FloatTensor<B> {
    let shape = y.shape();
    let (dx, _) = as_squares::<B>(softmax_backward::<B>(y, dy));
    let mask = future(&dx);
    reshaped(dx.mask_fill(mask, 0.0) * scale, shape)
}

/// 2·√(2/π).
const GELU_C2: f64 = 2.0 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2;
const GELU_A: f64 = 0.044715;

fn flat<B: Backend>(t: FloatTensor<B>) -> (Tensor<B, 1>, Shape) {
    let shape = t.shape();
    let n = shape.num_elements();
    (tensor::<B, 1>(t).reshape([n]), shape)
}

/// `x·σ(2u)`, `2u = x·(c + c·0.044715·x²)`, `c = 2·√(2/π)`: GELU-tanh, since
/// `½(1 + tanh u) = σ(2u)`.
pub fn gelu_tanh<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let (x, shape) = flat::<B>(x);
    let two_u = (x.clone() * x.clone() * (GELU_C2 * GELU_A) + GELU_C2) * x.clone();
    reshaped(x * burn::tensor::activation::sigmoid(two_u), shape)
}

/// `dy · (s + x·s·(1 − s)·(c + 3c·0.044715·x²))` with `s = σ(2u)` as in [`gelu_tanh`].
pub fn gelu_tanh_backward<B: Backend>(x: FloatTensor<B>, dy: FloatTensor<B>) -> FloatTensor<B> {
    let (x, shape) = flat::<B>(x);
    let (dy, _) = flat::<B>(dy);
    let x2 = x.clone() * x.clone();
    let two_u = (x2.clone() * (GELU_C2 * GELU_A) + GELU_C2) * x.clone();
    let s = burn::tensor::activation::sigmoid(two_u);
    let d_two_u = x2 * (3.0 * GELU_C2 * GELU_A) + GELU_C2;
    let ds = s.clone() * (s.clone().neg() + 1.0) * d_two_u;
    reshaped(dy * (s + x * ds), shape)
}

/// The model's LayerNorm/RMSNorm: `(x − mean)/√(var + eps)` or `x/√(mean(x²) + eps)`, times
/// `weight`, plus `bias`; also returns `mean` (zeros for RMSNorm) and `rstd = 1/√(· + eps)`.
pub fn norm<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    eps: f64,
    rms: bool,
) -> NormOutput<B> {
    let (x, shape) = as_rows::<B>(x);
    let stat = stat_shape(&shape);
    let (y, mean, denom) = if rms {
        let ms = x.clone().square().mean_dim(1);
        let denom = (ms + eps).sqrt();
        let mean = denom.zeros_like();
        (x / denom.clone(), mean, denom)
    } else {
        let mean = x.clone().mean_dim(1);
        let xc = x - mean.clone();
        let var = xc.clone().square().mean_dim(1);
        let denom = (var + eps).sqrt();
        (xc / denom.clone(), mean, denom)
    };
    let y = y * tensor::<B, 1>(weight).unsqueeze::<2>();
    let y = match bias {
        Some(b) => y + tensor::<B, 1>(b).unsqueeze::<2>(),
        None => y,
    };
    (
        reshaped(y, shape),
        reshaped(mean, stat.clone()),
        reshaped(denom.recip(), stat),
    )
}

/// With `x̂ = (x − mean)·rstd` (`x·rstd` for RMSNorm) and `g = dy ⊙ weight`:
/// `dx = rstd·(g − mean(g) − x̂·mean(g ⊙ x̂))` (no `mean(g)` term for RMSNorm),
/// `dweight = Σ_rows dy ⊙ x̂`, `dbias = Σ_rows dy`.
#[allow(clippy::type_complexity)]
pub fn norm_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    mean: FloatTensor<B>,
    rstd: FloatTensor<B>,
    rms: bool,
    dy: FloatTensor<B>,
    has_bias: bool,
) -> NormGrads<B> {
    let (x, shape) = as_rows::<B>(x);
    let (dy, _) = as_rows::<B>(dy);
    let (mean, _) = as_rows::<B>(mean);
    let (rstd, _) = as_rows::<B>(rstd);
    let cols = shape.as_slice()[shape.num_dims() - 1];
    let xhat = if rms {
        x * rstd.clone()
    } else {
        (x - mean) * rstd.clone()
    };
    let g = dy.clone() * tensor::<B, 1>(weight).unsqueeze::<2>();
    let mgx = (g.clone() * xhat.clone()).mean_dim(1);
    let inner = if rms {
        g - xhat.clone() * mgx
    } else {
        g.clone() - g.mean_dim(1) - xhat.clone() * mgx
    };
    let dx = inner * rstd;
    let dweight = (dy.clone() * xhat).sum_dim(0).reshape([cols]);
    let dbias = has_bias.then(|| float(dy.sum_dim(0).reshape([cols])));
    (reshaped(dx, shape), float(dweight), dbias)
}

/// The model's cross-entropy: `shifted = logits − max`, `lse' = ln Σ exp(shifted)`,
/// `loss = mean(lse' − shifted[target])`; `lse = lse' + max`.
pub fn cross_entropy<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let logits = tensor::<B, 2>(logits);
    let [n, _] = logits.dims();
    let targets = Tensor::<B, 1, Int>::from_primitive(targets).reshape([n, 1]);
    let max = logits.clone().max_dim(1);
    let shifted = logits - max.clone();
    let lse = shifted.clone().exp().sum_dim(1).log();
    let target_logit = shifted.gather(1, targets);
    let loss = (lse.clone() - target_logit).mean();
    (float(loss), float((lse + max).reshape([n])))
}

/// `dloss/n · (exp(logits − lse) − onehot(targets))`.
pub fn cross_entropy_backward<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    lse: FloatTensor<B>,
    dloss: FloatTensor<B>,
) -> FloatTensor<B> {
    let logits = tensor::<B, 2>(logits);
    let [n, _] = logits.dims();
    let targets = Tensor::<B, 1, Int>::from_primitive(targets).reshape([n, 1]);
    let lse = tensor::<B, 1>(lse).reshape([n, 1]);
    let p = (logits - lse.clone()).exp();
    let onehot = p
        .zeros_like()
        .scatter(1, targets, lse.ones_like(), IndexingUpdateOp::Add);
    let scale = tensor::<B, 1>(dloss).reshape([1, 1]) / n as f64;
    float((p - onehot) * scale)
}

/// burn 0.21's `AdamW::step` op for op (its `AdaptiveMomentumW::transform`, then the decoupled
/// decay and the step), on the flattened tensors.
pub fn adamw<B: Backend>(
    param: FloatTensor<B>,
    grad: FloatTensor<B>,
    moments: Option<(FloatTensor<B>, FloatTensor<B>)>,
    s: &AdamWStep,
) -> AdamWOutput<B> {
    let (factor_1, factor_2) = (1.0 - s.beta_1, 1.0 - s.beta_2);
    let (grad, shape) = flat::<B>(grad);
    let (param, _) = flat::<B>(param);
    let (m, v) = match moments {
        Some((m, v)) => (
            flat::<B>(m)
                .0
                .mul_scalar(s.beta_1)
                .add(grad.clone().mul_scalar(factor_1)),
            flat::<B>(v)
                .0
                .mul_scalar(s.beta_2)
                .add(grad.square().mul_scalar(factor_2)),
        ),
        None => (
            grad.clone().mul_scalar(factor_1),
            grad.square().mul_scalar(factor_2),
        ),
    };
    let m_hat = m.clone().div_scalar(s.correction_1);
    let v_hat = v.clone().div_scalar(s.correction_2);
    let delta = m_hat.div(v_hat.sqrt().add_scalar(s.epsilon));
    let decayed = match s.decay {
        Some(d) => param.mul_scalar(d),
        None => param,
    };
    let param = decayed - delta.mul_scalar(s.lr);
    (
        reshaped(param, shape.clone()),
        reshaped(m, shape.clone()),
        reshaped(v, shape),
    )
}
