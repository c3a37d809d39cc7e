//! The model's matrix products as backend ops of their own ([`GemmOps`]): `matmul` and
//! `linear`, forward and backward.
//!
//! # Why
//!
//! The [`Precision`](crate::Precision) decorator computes every GEMM of the model through these
//! ops, and `Autodiff` records one node per product whose backward calls the inner backend's
//! [`gemm_matmul_backward`](GemmOps::gemm_matmul_backward) /
//! [`gemm_linear_backward`](GemmOps::gemm_linear_backward): both gradient products of a layer in
//! one call. That gives a CPU backend the whole of a layer's backward GEMM work at once, to spread
//! over its threads; through burn's own ops (`float_matmul`, `linear`) it sees one product at a
//! time, and burn-flex cuts it over threads by fixed size thresholds (most of a small
//! transformer's GEMMs then run on one thread), zero-fills each output and copies it again to
//! realign it.
//!
//! # Backends
//!
//! Every method has a default body made of burn's ops with the same math, so any backend works
//! with an empty `impl GemmOps for X {}` (NdArray, CUDA) and computes exactly what it computed
//! before these ops existed. [`Flex`](burn::backend::Flex) overrides them for `f32` with the
//! tiled products of `fp8_kernels::gemm` (`flex.rs`): outputs written once, bias added in the
//! product's tiles, a layer's weight gradient one product over all its rows. `Autodiff<B>`
//! records the nodes (`autodiff.rs`).
//!
//! # Results
//!
//! On Flex, results are the same bits for any thread count (`fp8_kernels::gemm`). The forward
//! products and the input gradients are equal to burn-flex's `float_matmul` bit for bit (the
//! same `gemm` calls per element). Two reductions differ from burn's composed `linear` backward,
//! which multiplies per batch entry and then sums over the batch dimensions: the weight gradient
//! is one product over all `b·t` rows, and the bias gradient sums the rows in fixed blocks
//! (`fp8_kernels::gemm::ColumnSums`); both differ from before in the last bits.

mod autodiff;
mod flex;

use burn::backend::ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray,
};
use burn::backend::NdArray;
use burn_backend::tensor::FloatTensor;
use burn_backend::Backend;

/// [`GemmOps::gemm_linear_backward`]'s output: `(dx, dweight, dbias)`, each only if asked for.
pub type LinearGrads<B> = (
    Option<FloatTensor<B>>,
    Option<FloatTensor<B>>,
    Option<FloatTensor<B>>,
);

/// A backend with the model's matrix products as ops of their own; see the
/// [module docs](self). Every method has a default made of burn's ops.
pub trait GemmOps: Backend {
    /// `lhs · rhs` over the last two dimensions, leading (batch) dimensions broadcast, as
    /// `float_matmul`.
    fn gemm_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        composed::matmul::<Self>(lhs, rhs)
    }

    /// The products behind [`gemm_matmul`](Self::gemm_matmul)'s gradients for the output
    /// gradient `dy`: `dy · rhsᵀ` when `rhs` is given (the gradient of `lhs`), `lhsᵀ · dy` when
    /// `lhs` is given (that of `rhs`), each with the batch dimensions of `dy` (the caller sums
    /// over the ones it broadcast).
    fn gemm_matmul_backward(
        lhs: Option<FloatTensor<Self>>,
        rhs: Option<FloatTensor<Self>>,
        dy: FloatTensor<Self>,
    ) -> (Option<FloatTensor<Self>>, Option<FloatTensor<Self>>) {
        composed::matmul_backward::<Self>(lhs, rhs, dy)
    }

    /// `x · weight (+ bias)` for `x [.., d_in]`, `weight [d_in, d_out]`, `bias [d_out]`, as
    /// burn's `linear`.
    fn gemm_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        composed::linear::<Self>(x, weight, bias)
    }

    /// Gradients of [`gemm_linear`](Self::gemm_linear) for the output gradient `dy [.., d_out]`:
    /// `dx = dy · weightᵀ` (shaped like `x`) when `weight` is given, `dweight = Σ_rows xᵀ·dy`
    /// when `x` is given, `dbias = Σ_rows dy` if `bias_grad`.
    fn gemm_linear_backward(
        x: Option<FloatTensor<Self>>,
        weight: Option<FloatTensor<Self>>,
        dy: FloatTensor<Self>,
        bias_grad: bool,
    ) -> LinearGrads<Self> {
        composed::linear_backward::<Self>(x, weight, dy, bias_grad)
    }
}

/// The default bodies: burn's own ops, as burn's `Autodiff` computes these products and their
/// gradients.
mod composed {
    use super::LinearGrads;
    use burn_backend::tensor::FloatTensor;
    use burn_backend::Backend;

    pub(super) fn matmul<B: Backend>(lhs: FloatTensor<B>, rhs: FloatTensor<B>) -> FloatTensor<B> {
        B::float_matmul(lhs, rhs)
    }

    pub(super) fn matmul_backward<B: Backend>(
        lhs: Option<FloatTensor<B>>,
        rhs: Option<FloatTensor<B>>,
        dy: FloatTensor<B>,
    ) -> (Option<FloatTensor<B>>, Option<FloatTensor<B>>) {
        let dlhs = rhs.map(|rhs| B::float_matmul(dy.clone(), B::float_transpose(rhs)));
        let drhs = lhs.map(|lhs| B::float_matmul(B::float_transpose(lhs), dy));
        (dlhs, drhs)
    }

    pub(super) fn linear<B: Backend>(
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        bias: Option<FloatTensor<B>>,
    ) -> FloatTensor<B> {
        B::linear(x, weight, bias)
    }

    pub(super) fn linear_backward<B: Backend>(
        x: Option<FloatTensor<B>>,
        weight: Option<FloatTensor<B>>,
        dy: FloatTensor<B>,
        bias_grad: bool,
    ) -> LinearGrads<B> {
        let dx = weight.map(|w| B::linear_x_backward(w, dy.clone()));
        let dw = x.map(|x| B::linear_weight_backward(x, dy.clone()));
        let db = bias_grad.then(|| B::linear_bias_backward(dy));
        (dx, dw, db)
    }
}

// ---- Backends with the composed defaults ----------------------------------------------------

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> GemmOps for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::GemmOps;
    use burn::tensor::{bf16, f16};
    use burn_cuda::Cuda;

    impl GemmOps for Cuda<f32, i32> {}
    impl GemmOps for Cuda<bf16, i32> {}
    impl GemmOps for Cuda<f16, i32> {}
}

#[cfg(feature = "wgpu")]
mod wgpu {
    impl super::GemmOps for burn_wgpu::Wgpu<f32, i32, u32> {}
}
