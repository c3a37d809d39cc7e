//! Fused non-GEMM ops: softmax, GELU-tanh, LayerNorm/RMSNorm and cross-entropy as single backend
//! ops, forward and backward ([`FusedOps`]).
//!
//! # Why
//!
//! Composed from burn's primitive ops, each of these is a chain of small elementwise passes and
//! reductions, each a separate autodiff node that saves its inputs and allocates its output:
//! LayerNorm alone is ~10 nodes, cross-entropy over a `[b·t, vocab]` logits tensor runs `exp` over
//! it twice (forward, and autodiff's `exp` backward) plus several full-size temporaries. PyTorch
//! runs each as one kernel forward and one backward. Here each is one backend op and, under
//! [`Autodiff`], one graph node whose backward is one backend op.
//!
//! # Backends
//!
//! Every method has a default body composed from ordinary burn ops with the model's math (the
//! [`defaults`] functions), so any backend works unchanged with an empty `impl FusedOps for X {}`
//! (NdArray, CUDA). [`Flex`](burn::backend::Flex), the CPU training backend, overrides them with
//! the row kernels of `fp8-kernels` for `f32` tensors. `Autodiff<B>` records one node per op and
//! calls `B`'s fused backward; the [`Precision`](crate::Precision) decorator forwards to its
//! inner backend (these are not GEMMs: recipes do not apply to them).
//!
//! One op is the optimizer's: [`FusedOps::fused_adamw`], a whole AdamW update of one parameter
//! tensor (the [`adamw`] optimizer calls it), one pass on Flex where burn's `AdamW` makes about
//! a dozen.
//!
//! Models use the tensor-level helpers [`softmax`], [`gelu_tanh`], [`norm`] and
//! [`cross_entropy`]. One more op is about layout, not math: [`contiguous`] copies a strided view
//! (attention heads) to contiguous memory forward and does the same for its gradient backward,
//! with a sequential row copy on Flex, whose own copy of such views goes element by element.
//!
//! # Shapes
//!
//! Softmax and the norms work over the last dimension of a tensor of any rank. The norms' saved
//! statistics `mean` and `rstd` have the input's shape with the last dimension 1 (RMSNorm's
//! `mean` is zeros). Cross-entropy takes `logits [n, v]` and `targets [n]` and returns the mean
//! loss `[1]` and the per-row log-sum-exp `[n]`.

pub mod adamw;
mod autodiff;
pub mod defaults;
pub(crate) mod flex;

use crate::Precision;
use crate::QuantizeBackend;
use burn::backend::ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray,
};
use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorPrimitive};
use burn_backend::backend::AutodiffBackend;
use burn_backend::tensor::{FloatTensor, IntTensor};
use burn_backend::Backend;
pub use fp8_kernels::adamw::AdamWStep;

/// [`FusedOps::fused_norm`]'s output: `(y, mean, rstd)`.
pub type NormOutput<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// [`FusedOps::fused_adamw`]'s output: `(param, moment_1, moment_2)`.
pub type AdamWOutput<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// [`FusedOps::fused_norm_backward`]'s output: `(dx, dweight, dbias)`.
pub type NormGrads<B> = (FloatTensor<B>, FloatTensor<B>, Option<FloatTensor<B>>);

/// A backend with fused softmax, GELU-tanh, LayerNorm/RMSNorm and cross-entropy; see the
/// [module docs](self). Every method has a composed default ([`defaults`]).
pub trait FusedOps: Backend {
    /// `x` laid out contiguously (row-major), forward and backward: the output and the gradient
    /// passed back to `x` are both contiguous copies when their input is a strided view. A layout
    /// hint for backends whose generic copies of strided views are slow; values are unchanged.
    /// Default: `x` itself (no copy, no graph node).
    fn fused_contiguous(x: FloatTensor<Self>) -> FloatTensor<Self> {
        x
    }

    /// Heads `first..first + n` of `qkv [b, t, heads·head_dim]` (a fused projection's output)
    /// as `[b, n, t, head_dim]`: a view forward (reshape, swap, narrow). Backward, the gradient
    /// of `qkv` is written in one contiguous pass, zero outside those heads; autodiff's own
    /// narrow fills a padded tensor with zeros, copies the gradient in and leaves a permuted view.
    ///
    /// # Panics
    /// If `qkv` is not 3-D with a last dimension a multiple of `head_dim` that has `first + n`
    /// heads.
    fn fused_heads(
        qkv: FloatTensor<Self>,
        first: usize,
        n: usize,
        head_dim: usize,
    ) -> FloatTensor<Self> {
        defaults::heads::<Self>(qkv, first, n, head_dim)
    }

    /// Gradient of [`fused_heads`](Self::fused_heads) for `dy [b, n, t, head_dim]`: `[b, t,
    /// heads·head_dim]`, `dy` at heads `first..first + n` and zero elsewhere.
    fn fused_heads_backward(
        dy: FloatTensor<Self>,
        first: usize,
        heads: usize,
    ) -> FloatTensor<Self> {
        defaults::heads_backward::<Self>(dy, first, heads)
    }

    /// Softmax over the last dimension. Entries may be `-inf` (masked).
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        defaults::softmax::<Self>(x)
    }

    /// Gradient of [`fused_softmax`](Self::fused_softmax) given its output `y`:
    /// `dx = y ⊙ (dy − Σ_last(dy ⊙ y))`.
    fn fused_softmax_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        defaults::softmax_backward::<Self>(y, dy)
    }

    /// Causal attention softmax: `x` is `[.., t, t]` scores (queries × keys) and the result
    /// `softmax(mask(scale·x))`, key `j > i` masked (−∞) in query `i`'s row: what the model
    /// computed as a scaling, a `mask_fill` and [`fused_softmax`](Self::fused_softmax).
    ///
    /// # Panics
    /// If the last two dimensions differ.
    fn fused_causal_softmax(x: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        defaults::causal_softmax::<Self>(x, scale)
    }

    /// Gradient of [`fused_causal_softmax`](Self::fused_causal_softmax) given its output `y`:
    /// `dx = scale · y ⊙ (dy − Σ_last(dy ⊙ y))`, zero at the masked keys.
    fn fused_causal_softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        defaults::causal_softmax_backward::<Self>(y, dy, scale)
    }

    /// GPT-2's GELU, the tanh approximation (HF `gelu_new`), elementwise.
    fn fused_gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        defaults::gelu_tanh::<Self>(x)
    }

    /// Gradient of [`fused_gelu_tanh`](Self::fused_gelu_tanh): `dx = dy · gelu'(x)`.
    fn fused_gelu_tanh_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        defaults::gelu_tanh_backward::<Self>(x, dy)
    }

    /// LayerNorm (`rms == false`: mean-centred, biased variance) or RMSNorm (`rms == true`) over
    /// the last dimension, times `weight [c]`, plus `bias [c]` if given. Returns
    /// `(y, mean, rstd)`, the statistics shaped like `x` with the last dimension 1.
    fn fused_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        eps: f64,
        rms: bool,
    ) -> NormOutput<Self> {
        defaults::norm::<Self>(x, weight, bias, eps, rms)
    }

    /// Gradients of [`fused_norm`](Self::fused_norm) from its saved statistics:
    /// `(dx, dweight, dbias)`, `dbias` only if `has_bias`.
    fn fused_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        rms: bool,
        dy: FloatTensor<Self>,
        has_bias: bool,
    ) -> NormGrads<Self> {
        defaults::norm_backward::<Self>(x, weight, mean, rstd, rms, dy, has_bias)
    }

    /// Mean cross-entropy of `logits [n, v]` against `targets [n]`: `(loss [1], lse [n])`, with
    /// `lse` the per-row `ln Σ exp`.
    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        defaults::cross_entropy::<Self>(logits, targets)
    }

    /// Gradient of [`fused_cross_entropy`](Self::fused_cross_entropy) for the incoming
    /// `dloss [1]`: `dlogits = dloss/n · (softmax(logits) − onehot(targets))`.
    fn fused_cross_entropy_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        dloss: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        defaults::cross_entropy_backward::<Self>(logits, targets, lse, dloss)
    }

    /// One AdamW update of `param` with gradient `grad` (same shape): `moments` are the first
    /// and second moments after the previous step, `None` on the first step (`step.first`).
    /// Returns the new parameter and moments, computed as burn 0.21's `AdamW` computes them.
    fn fused_adamw(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moments: Option<(FloatTensor<Self>, FloatTensor<Self>)>,
        step: &AdamWStep,
    ) -> AdamWOutput<Self> {
        defaults::adamw::<Self>(param, grad, moments, step)
    }
}

// ---- Backends with the composed defaults ----------------------------------------------------

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> FusedOps for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::FusedOps;
    use burn::tensor::{bf16, f16};
    use burn_cuda::Cuda;

    impl FusedOps for Cuda<f32, i32> {}
    impl FusedOps for Cuda<bf16, i32> {}
    impl FusedOps for Cuda<f16, i32> {}
}

#[cfg(feature = "wgpu")]
mod wgpu {
    impl super::FusedOps for burn_wgpu::Wgpu<f32, i32, u32> {}
}

// ---- The decorator: forwarded to the inner backend -------------------------------------------

impl<B: FusedOps + QuantizeBackend> FusedOps for Precision<B> {
    fn fused_contiguous(x: FloatTensor<Self>) -> FloatTensor<Self> {
        B::fused_contiguous(x)
    }

    fn fused_heads(
        qkv: FloatTensor<Self>,
        first: usize,
        n: usize,
        head_dim: usize,
    ) -> FloatTensor<Self> {
        B::fused_heads(qkv, first, n, head_dim)
    }

    fn fused_heads_backward(
        dy: FloatTensor<Self>,
        first: usize,
        heads: usize,
    ) -> FloatTensor<Self> {
        B::fused_heads_backward(dy, first, heads)
    }

    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        B::fused_softmax(x)
    }

    fn fused_softmax_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        B::fused_softmax_backward(y, dy)
    }

    fn fused_causal_softmax(x: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        B::fused_causal_softmax(x, scale)
    }

    fn fused_causal_softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        B::fused_causal_softmax_backward(y, dy, scale)
    }

    fn fused_gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        B::fused_gelu_tanh(x)
    }

    fn fused_gelu_tanh_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        B::fused_gelu_tanh_backward(x, dy)
    }

    fn fused_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        eps: f64,
        rms: bool,
    ) -> NormOutput<Self> {
        B::fused_norm(x, weight, bias, eps, rms)
    }

    fn fused_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        rms: bool,
        dy: FloatTensor<Self>,
        has_bias: bool,
    ) -> NormGrads<Self> {
        B::fused_norm_backward(x, weight, mean, rstd, rms, dy, has_bias)
    }

    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        B::fused_cross_entropy(logits, targets)
    }

    fn fused_cross_entropy_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        dloss: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        B::fused_cross_entropy_backward(logits, targets, lse, dloss)
    }

    fn fused_adamw(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moments: Option<(FloatTensor<Self>, FloatTensor<Self>)>,
        step: &AdamWStep,
    ) -> AdamWOutput<Self> {
        B::fused_adamw(param, grad, moments, step)
    }
}

// ---- Tensor-level API ------------------------------------------------------------------------

fn float<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// `x` laid out contiguously, forward and backward ([`FusedOps::fused_contiguous`]).
pub fn contiguous<B: FusedOps, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    tensor(B::fused_contiguous(float(x)))
}

/// Heads `first..first + n` of `qkv [b, t, heads·head_dim]` as `[b, n, t, head_dim]`
/// ([`FusedOps::fused_heads`]).
pub fn heads<B: FusedOps>(
    qkv: Tensor<B, 3>,
    first: usize,
    n: usize,
    head_dim: usize,
) -> Tensor<B, 4> {
    tensor(B::fused_heads(float(qkv), first, n, head_dim))
}

/// Softmax over the last dimension ([`FusedOps::fused_softmax`]).
pub fn softmax<B: FusedOps, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    tensor(B::fused_softmax(float(x)))
}

/// Causal attention softmax of `[.., t, t]` scores, `softmax(mask(scale·x))`
/// ([`FusedOps::fused_causal_softmax`]).
pub fn causal_softmax<B: FusedOps, const D: usize>(x: Tensor<B, D>, scale: f32) -> Tensor<B, D> {
    tensor(B::fused_causal_softmax(float(x), scale))
}

/// GPT-2's GELU-tanh, elementwise ([`FusedOps::fused_gelu_tanh`]).
pub fn gelu_tanh<B: FusedOps, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    tensor(B::fused_gelu_tanh(float(x)))
}

/// LayerNorm (`rms == false`) or RMSNorm (`rms == true`) over the last dimension, times
/// `weight`, plus `bias` ([`FusedOps::fused_norm`]).
pub fn norm<B: FusedOps, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Option<Tensor<B, 1>>,
    eps: f64,
    rms: bool,
) -> Tensor<B, D> {
    let (y, _mean, _rstd) = B::fused_norm(float(x), float(weight), bias.map(float), eps, rms);
    tensor(y)
}

/// Mean cross-entropy of `logits [n, v]` against `targets [n]`, shape `[1]`
/// ([`FusedOps::fused_cross_entropy`]).
pub fn cross_entropy<B: FusedOps>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let (loss, _lse) = B::fused_cross_entropy(float(logits), targets.into_primitive());
    tensor(loss)
}

/// A training backend for models that use fused ops: [`AutodiffBackend`] + [`FusedOps`], whose
/// inner (evaluation) backend has them too. Implemented for every such backend, e.g.
/// `Precision<Autodiff<Flex>>`.
pub trait FusedAutodiffBackend: AutodiffBackend<InnerBackend: FusedOps> + FusedOps {}

impl<B> FusedAutodiffBackend for B
where
    B: AutodiffBackend + FusedOps,
    B::InnerBackend: FusedOps,
{
}
