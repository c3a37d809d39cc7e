//! The per-backend quantization hook: [`QuantizeBackend`].
//!
//! [`Precision`](super::Precision) decides *what* to quantize (which GEMM operand, which role,
//! forward or backward); the hook decides *how* on a given backend. This is the seam for a
//! device path: a CUDA backend implements `quantize_forward` with a kernel that reads the spec
//! (`crate::context::active_spec`) and records its `Stats` through the context, and nothing
//! else changes. The CPU backends here run the host kernels on the tensor's own `f32` buffer
//! when they can: NdArray through [`crate::context::quantize_host`] (copy-on-write when shared),
//! Flex through [`quantize_flex`] (shared and strided sources read once into a fresh buffer);
//! other dtypes go through [`quantize_via_host`].
//!
//! Because `QuantizeBackend` is defined here, the orphan rule puts its impls for foreign backends
//! in this crate too: a GPU backend is added behind a cargo feature (e.g. `cuda`, implementing it
//! for `burn_cuda::Cuda`), and [`quantize_via_host`] is a correct, slow first version for any
//! backend. Its `Autodiff<B>` impl below is generic and needs no change.

use crate::context::{active_cast, active_spec, quantize_host, record_cast, with_active};
use crate::GemmOps;
use crate::Role;
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray,
};
use burn::backend::{Autodiff, Flex, NdArray};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn_backend::tensor::FloatTensor;
use burn_backend::{read_sync, Backend, Bytes, DType, Shape, TensorData, TensorMetadata};
use fp8_formats::{
    quantize_from, quantize_into, Measure, QuantSpec, RandomHadamard, Rounding, Scaling, Source,
    Stats, StridedView, TensorScale,
};
use std::sync::Arc;

/// A backend that can quantize a float tensor for a (site, role) under the active recipe.
///
/// Both functions must return `t` untouched (no copy, no graph node) when the active recipe
/// gives no spec for `(site, role)`: that is what makes an all-f32 recipe bit-identical to the
/// undecorated backend.
///
/// The decorator computes the GEMMs themselves through [`GemmOps`] (its inner backend's products,
/// forward and backward).
pub trait QuantizeBackend: GemmOps {
    /// Forward: the value is quantized; under autodiff the gradient passes straight through.
    fn quantize_forward(t: FloatTensor<Self>, site: &Arc<str>, role: Role) -> FloatTensor<Self>;

    /// Identity in the forward pass; under autodiff the gradient flowing back through it is
    /// quantized for `role`. A backend without autodiff has no backward pass: identity.
    fn quantize_backward(t: FloatTensor<Self>, site: &Arc<str>, role: Role) -> FloatTensor<Self>;

    /// `h` applied along the token axis of `t` viewed as `[tokens, features]` (all leading
    /// dimensions folded into the tokens): the recipe's Hadamard transform of a wgrad GEMM
    /// operand. The default goes through host memory ([`hadamard_via_host`]).
    fn hadamard_tokens(t: FloatTensor<Self>, h: &RandomHadamard) -> FloatTensor<Self> {
        hadamard_via_host::<Self>(t, h)
    }

    /// The GEMM `y = x·w (+ bias)` of `site` for a recipe that
    /// [requantizes the backward operands](crate::Recipe::requantizes_backward): forward
    /// `y = Q_y(Q_x(x)·Q_w(w))`; under autodiff one node whose backward computes
    /// `dx = Q_dx(Q_dy(g)·Q_w_dgrad(w)ᵀ)` and `dw = Q_dw(Q_x_wgrad(x)ᵀ·Q_dy_wgrad(g))` from the
    /// saved high-precision `x` and `w` (after the recipe's wgrad Hadamard transform, if any).
    /// A backend without autodiff computes the forward pass only.
    fn requantized_gemm(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        site: &Arc<str>,
        kind: GemmKind,
    ) -> FloatTensor<Self> {
        forward_gemm::<Self>(x, w, bias, site, kind)
    }
}

/// The shape of a GEMM, which decides how its backward GEMMs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKind {
    /// burn's `linear`: `x [.., K]`, weight `[K, N]`, optional bias `[N]`.
    Linear,
    /// `float_matmul` with a 2-D right operand `[K, N]` (as `Linear`, no bias).
    MatmulRhs2d,
    /// `float_matmul` of operands with equal batch dimensions `[.., M, K]·[.., K, N]`.
    Batched,
}

/// The forward GEMM with quantized operands and output.
fn forward_gemm<B: QuantizeBackend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    site: &Arc<str>,
    kind: GemmKind,
) -> FloatTensor<B> {
    let x = B::quantize_forward(x, site, Role::X);
    let w = B::quantize_forward(w, site, Role::W);
    let y = match kind {
        GemmKind::Linear => B::gemm_linear(x, w, bias),
        GemmKind::MatmulRhs2d | GemmKind::Batched => B::gemm_matmul(x, w),
    };
    B::quantize_forward(y, site, Role::Y)
}

/// dgrad: `dx = Q_dx(Q_dy(g)·Q_w_dgrad(w)ᵀ)`.
fn dgrad<B: QuantizeBackend>(
    w: FloatTensor<B>,
    g: FloatTensor<B>,
    site: &Arc<str>,
    kind: GemmKind,
) -> FloatTensor<B> {
    let g = B::quantize_forward(g, site, Role::Dy);
    let w = B::quantize_forward(w, site, Role::WDgrad);
    let dx = match kind {
        GemmKind::Linear | GemmKind::MatmulRhs2d => {
            B::gemm_linear_backward(None, Some(w), g, false).0
        }
        GemmKind::Batched => B::gemm_matmul_backward(None, Some(w), g).0,
    }
    .expect("the input gradient was asked for");
    B::quantize_forward(dx, site, Role::Dx)
}

/// wgrad: `dw = Q_dw(Q_x_wgrad(T·x)ᵀ·Q_dy_wgrad(T·g))`, `T` the recipe's Hadamard transform
/// along the tokens (identity when it has none).
fn wgrad<B: QuantizeBackend>(
    x: FloatTensor<B>,
    g: FloatTensor<B>,
    site: &Arc<str>,
    kind: GemmKind,
) -> FloatTensor<B> {
    let rht = with_active(|c| c.recipe().wgrad_hadamard(site, c.step())).flatten();
    let (x, g) = match rht {
        Some(h) => (B::hadamard_tokens(x, &h), B::hadamard_tokens(g, &h)),
        None => (x, g),
    };
    let x = B::quantize_forward(x, site, Role::XWgrad);
    let g = B::quantize_forward(g, site, Role::DyWgrad);
    let dw = match kind {
        GemmKind::Linear | GemmKind::MatmulRhs2d => {
            B::gemm_linear_backward(Some(x), None, g, false).1
        }
        GemmKind::Batched => B::gemm_matmul_backward(Some(x), None, g).1,
    }
    .expect("the weight gradient was asked for");
    B::quantize_forward(dw, site, Role::Dw)
}

/// [`QuantizeBackend::hadamard_tokens`] for any backend, through host memory.
pub fn hadamard_via_host<B: Backend>(t: FloatTensor<B>, h: &RandomHadamard) -> FloatTensor<B> {
    let device = B::float_device(&t);
    let dtype = t.dtype();
    let data = read_sync(B::float_into_data(t)).expect("reading a float tensor to host");
    let shape = data.shape.clone();
    let mut values: Vec<f32> = if dtype == DType::F32 {
        data.into_vec::<f32>()
    } else {
        data.convert::<f32>().into_vec::<f32>()
    }
    .expect("float tensor data converts to f32");
    let cols = shape.last().copied().unwrap_or(1).max(1);
    let rows = values.len() / cols;
    h.apply(&mut values, rows, cols);
    let mut data = TensorData::new(values, shape);
    if dtype != DType::F32 {
        data = data.convert_dtype(dtype);
    }
    B::float_from_data(data, &device)
}

/// Hand a high-precision tensor about to be cast to the context's inspection (TE-debug
/// statistics for the active recipe and its counterfactuals), on logging steps only: the one
/// check costs nothing otherwise.
fn inspect_cast<B: Backend>(t: &FloatTensor<B>, site: &str, role: Role) {
    if !with_active(|c| c.wants_inspection()).unwrap_or(false) {
        return;
    }
    let data = read_sync(B::float_into_data(t.clone())).expect("reading a float tensor to host");
    let shape = data.shape.clone();
    let Ok(values) = data.convert::<f32>().into_vec::<f32>() else {
        return;
    };
    with_active(|c| c.inspect(site, role, &values, shape.as_slice()));
}

/// Quantize any backend's float tensor through host memory: read it as `f32`, run
/// [`quantize_host`], write it back in the original dtype on the original device.
///
/// Skips the round trip entirely when the recipe keeps `(site, role)` in f32.
pub fn quantize_via_host<B: Backend>(t: FloatTensor<B>, site: &str, role: Role) -> FloatTensor<B> {
    if active_spec(site, role).is_none() {
        return t;
    }
    let device = B::float_device(&t);
    let dtype = t.dtype();
    let data = read_sync(B::float_into_data(t)).expect("reading a float tensor to host");
    let shape = data.shape.clone();
    let mut values: Vec<f32> = if dtype == DType::F32 {
        data.into_vec::<f32>()
    } else {
        data.convert::<f32>().into_vec::<f32>()
    }
    .expect("float tensor data converts to f32");
    quantize_host(site, role, &mut values, shape.as_slice());
    let mut data = TensorData::new(values, shape);
    if dtype != DType::F32 {
        data = data.convert_dtype(dtype);
    }
    B::float_from_data(data, &device)
}

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> QuantizeBackend
    for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    /// Fast path for the common case, a C-contiguous `f32` array: quantize it in place (the
    /// array is copied first only if it is shared), no round trip through `TensorData`.
    fn quantize_forward(t: FloatTensor<Self>, site: &Arc<str>, role: Role) -> FloatTensor<Self> {
        if active_spec(site, role).is_none() {
            return t;
        }
        inspect_cast::<Self>(&t, site, role);
        match t {
            NdArrayTensor::F32(storage) => {
                let mut array = storage.into_shared();
                if !array.is_standard_layout() {
                    return quantize_via_host::<Self>(NdArrayTensor::from(array), site, role);
                }
                let shape = array.shape().to_vec();
                let data = array
                    .as_slice_mut()
                    .expect("a standard-layout array is a slice");
                quantize_host(site, role, data, &shape);
                NdArrayTensor::from(array)
            }
            other => quantize_via_host::<Self>(other, site, role),
        }
    }

    fn quantize_backward(t: FloatTensor<Self>, _site: &Arc<str>, _role: Role) -> FloatTensor<Self> {
        t
    }
}

impl QuantizeBackend for Flex {
    /// `f32` tensors are quantized on their own buffer when nothing else holds it, else into a
    /// fresh one straight from the shared or strided source (one pass, no copy first); see
    /// [`quantize_flex`]. Other dtypes go through [`quantize_via_host`].
    fn quantize_forward(t: FloatTensor<Self>, site: &Arc<str>, role: Role) -> FloatTensor<Self> {
        let Some((spec, measure)) = active_cast(site, role) else {
            return t;
        };
        if measure == Measure::Full {
            inspect_cast::<Self>(&t, site, role);
        }
        if t.dtype() != DType::F32 {
            return quantize_via_host::<Self>(t, site, role);
        }
        let (t, stats) = quantize_flex(t, &spec, measure);
        record_cast(site, role, &stats, measure);
        t
    }

    /// On the tensor's own buffer: a C-contiguous `f32` tensor that nothing else holds is
    /// transformed in place; a shared one (autodiff keeps the activation) is transformed into
    /// a fresh buffer in the same pass that reads it; any other layout is first made a
    /// C-contiguous copy of its own. Each gives the C-order values of the host path and so the
    /// same bits.
    fn hadamard_tokens(t: FloatTensor<Self>, h: &RandomHadamard) -> FloatTensor<Self> {
        if t.dtype() != DType::F32 {
            return hadamard_via_host::<Self>(t, h);
        }
        let mut t = t.to_contiguous();
        let n = t.layout().num_elements();
        let cols = t.layout().shape().last().copied().unwrap_or(1).max(1);
        if t.is_unique() {
            h.apply(&mut t.storage_mut::<f32>()[..n], n / cols, cols);
            return t;
        }
        let mut out: Vec<f32> = Vec::with_capacity(n);
        h.apply_into(
            &t.storage::<f32>()[..n],
            &mut out.spare_capacity_mut()[..n],
            n / cols,
            cols,
        );
        // SAFETY: `apply_into` initialized the first `n` elements.
        unsafe { out.set_len(n) };
        let shape = Shape::from(t.layout().shape().to_vec());
        FlexTensor::new(
            Bytes::from_elems(out),
            Layout::contiguous(shape),
            DType::F32,
        )
    }

    fn quantize_backward(t: FloatTensor<Self>, _site: &Arc<str>, _role: Role) -> FloatTensor<Self> {
        t
    }
}

/// Quantize an `f32` Flex tensor for `spec`, gathering what `measure` asks for.
///
/// Three cases, cheapest first:
///
/// - The cast gives each element a value that depends on that element alone (no tiles, no
///   stochastic rounding: see `layout_free`). Then the result keeps the source's order of
///   dimensions in memory: a view that covers its buffer exactly (contiguous or a permutation,
///   such as a transposed key) is quantized in place when the tensor owns the buffer, or read
///   once into a fresh buffer with the same strides; any other view (a head of a fused QKV
///   projection, a narrowed slice) is gathered in memory order, whole rows at a time, into a
///   dense buffer with its dimensions in that order. The GEMMs read strided operands directly,
///   so nothing is reordered.
/// - Otherwise the result is C-contiguous, as scaling tiles and stochastic-rounding indices are
///   defined on the C order: in place when the tensor owns an exactly covering contiguous
///   buffer, else read once from the slice or strided view.
/// - Negative strides (flipped views) are made contiguous by Flex first.
///
/// The layout of the result depends on `spec` and the layout of `t` only, never on `measure`:
/// a GEMM's summation order can depend on its operands' strides, and a step that logs telemetry
/// must compute what any other step would.
///
/// In every case the values are those of `fp8_formats::quantize` on the C-order copy of `t`,
/// bit for bit, and with `Measure::Full` so are the statistics (they sum in C order: a result
/// kept in another memory order has them computed from a C-order copy, on logging steps only).
pub fn quantize_flex(mut t: FlexTensor, spec: &QuantSpec, measure: Measure) -> (FlexTensor, Stats) {
    let layout = t.layout().clone();
    let n = layout.num_elements();
    let shape = layout.shape().to_vec();
    let Some(strides) = layout
        .strides()
        .iter()
        .map(|&s| usize::try_from(s).ok())
        .collect::<Option<Vec<usize>>>()
    else {
        let mut t = t.to_contiguous();
        let data = &mut t.storage_mut::<f32>()[..n];
        let stats = quantize_from(Source::InPlace, data, &shape, spec, measure);
        return (t, stats);
    };
    let offset = layout.start_offset();
    let covers = offset == 0 && t.bytes().len() == n * std::mem::size_of::<f32>();

    // The dimensions in the order of the result's memory: the source's own order when the cast
    // allows, else C order.
    let mut order: Vec<usize> = (0..shape.len()).collect();
    if layout_free(spec) {
        order.sort_by_key(|&d| std::cmp::Reverse(strides[d]));
    }
    let mem_shape: Vec<usize> = order.iter().map(|&d| shape[d]).collect();
    let mem_strides: Vec<usize> = order.iter().map(|&d| strides[d]).collect();
    let c_order = order.iter().filter(|&&d| shape[d] > 1).is_sorted();
    // Statistics sum in a fixed order: in C order, as for any other layout.
    let (measure, c_stats) = if measure == Measure::Full && !c_order {
        let view = StridedView {
            data: t.storage::<f32>(),
            offset,
            shape: &shape,
            strides: &strides,
        };
        let mut scratch: Vec<f32> = Vec::with_capacity(n);
        let scratch = &mut scratch.spare_capacity_mut()[..n];
        let stats = quantize_into(Source::Strided(view), scratch, &shape, spec, measure);
        (Measure::Nothing, Some(stats))
    } else {
        (measure, None)
    };

    let dense = covers && is_dense(&mem_shape, &mem_strides);
    if dense && t.is_unique() {
        let data = &mut t.storage_mut::<f32>()[..n];
        let stats = quantize_from(Source::InPlace, data, &mem_shape, spec, measure);
        return (t, c_stats.unwrap_or(stats));
    }
    let src = t.storage::<f32>();
    let source = if dense {
        Source::Slice(&src[..n])
    } else {
        Source::Strided(StridedView {
            data: src,
            offset,
            shape: &mem_shape,
            strides: &mem_strides,
        })
    };
    // A fresh buffer, not zeroed: `quantize_into` writes every element.
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let stats = quantize_into(
        source,
        &mut out.spare_capacity_mut()[..n],
        &mem_shape,
        spec,
        measure,
    );
    // SAFETY: `quantize_into` initialized the first `n` elements.
    unsafe { out.set_len(n) };
    // Dense strides in memory order, mapped back to the logical dimensions.
    let mut out_strides = vec![0isize; shape.len()];
    let mut acc = 1usize;
    for &d in order.iter().rev() {
        out_strides[d] = acc as isize;
        acc *= shape[d];
    }
    let layout = Layout::new(Shape::from(shape), out_strides, 0);
    let out = FlexTensor::new(Bytes::from_elems(out), layout, DType::F32);
    (out, c_stats.unwrap_or(stats))
}

/// Whether quantizing with `spec` gives each element a value that depends on that element
/// alone, not on its position: no tiles (no scaling or one given tensor scale) and no
/// stochastic rounding (whose random bits are indexed by C-order position). Then any memory
/// order gives the same values.
fn layout_free(spec: &QuantSpec) -> bool {
    spec.cast.rounding != Rounding::Stochastic
        && matches!(
            spec.scaling,
            Scaling::None | Scaling::Tensor(TensorScale::Given(_))
        )
}

/// Do `strides` lay `shape` out densely in C order (size-1 dimensions ignored)?
fn is_dense(shape: &[usize], strides: &[usize]) -> bool {
    let mut expect = 1usize;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect *= d;
    }
    true
}

/// Backward of `quantize_forward` under autodiff: straight-through (identity) gradient.
#[derive(Debug)]
struct StraightThrough;

impl<B: Backend> Backward<B, 1> for StraightThrough {
    type State = ();

    fn backward(self, ops: Ops<(), 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<B, _>(ops.parents, ops.node, grads, |grad| grad);
    }
}

/// Backward of `quantize_backward` under autodiff: quantize the gradient for (site, role).
///
/// The op runs inside `backward()`, which burn 0.21's autodiff executes on the calling thread
/// (`GraphMutexClient` walks the graph under a mutex, no worker thread), so the thread-local
/// precision context that was active in the forward pass is still found here. The site scope is
/// not (the model code has returned), hence the site name is kept in the op's state.
#[derive(Debug)]
struct QuantizeGrad;

impl<B: QuantizeBackend> Backward<B, 1> for QuantizeGrad {
    type State = (Arc<str>, Role);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (site, role) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::quantize_forward(grad, &site, role)
        });
    }
}

/// Backward of [`QuantizeBackend::requantized_gemm`] without a bias: parents `[x, w]`.
#[derive(Debug)]
struct RequantizedGemm;

/// What the backward GEMMs need: the high-precision operands, the site and the GEMM's shape.
type GemmState<B> = (FloatTensor<B>, FloatTensor<B>, Arc<str>, GemmKind);

impl<B: QuantizeBackend> Backward<B, 2> for RequantizedGemm {
    type State = GemmState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, w, site, kind) = ops.state;
        if let Some(node) = node_w {
            grads.register::<B>(node.id, wgrad::<B>(x, grad.clone(), &site, kind));
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dgrad::<B>(w, grad, &site, kind));
        }
    }
}

/// Backward of [`QuantizeBackend::requantized_gemm`] with a bias: parents `[x, w, bias]`; the
/// bias gradient is the high-precision `g` summed over the tokens, as in TE.
#[derive(Debug)]
struct RequantizedLinearBias;

impl<B: QuantizeBackend> Backward<B, 3> for RequantizedLinearBias {
    type State = GemmState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, w, site, kind) = ops.state;
        if let Some(node) = node_b {
            let (_, _, db) = B::gemm_linear_backward(None, None, grad.clone(), true);
            grads.register::<B>(node.id, db.expect("the bias gradient was asked for"));
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, wgrad::<B>(x, grad.clone(), &site, kind));
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dgrad::<B>(w, grad, &site, kind));
        }
    }
}

impl<B: QuantizeBackend, C: CheckpointStrategy> QuantizeBackend for Autodiff<B, C> {
    fn requantized_gemm(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        site: &Arc<str>,
        kind: GemmKind,
    ) -> FloatTensor<Self> {
        let y = forward_gemm::<B>(
            x.primitive.clone(),
            w.primitive.clone(),
            bias.as_ref().map(|b| b.primitive.clone()),
            site,
            kind,
        );
        let state = (x.primitive, w.primitive, site.clone(), kind);
        // Compute bound, as the quantizers: recomputing would cast twice.
        match bias {
            Some(b) => match RequantizedLinearBias
                .prepare::<C>([x.node, w.node, b.node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            },
            None => match RequantizedGemm
                .prepare::<C>([x.node, w.node])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(state, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            },
        }
    }

    fn quantize_forward(t: FloatTensor<Self>, site: &Arc<str>, role: Role) -> FloatTensor<Self> {
        if active_spec(site, role).is_none() {
            return t;
        }
        let node = t.node.clone();
        let out = B::quantize_forward(t.primitive, site, role);
        // Compute bound: a checkpointing strategy must keep the quantized value rather than
        // recompute it (recomputing would cast twice and record telemetry twice).
        StraightThrough
            .prepare::<C>([node])
            .compute_bound()
            .stateless(out)
    }

    fn quantize_backward(t: FloatTensor<Self>, site: &Arc<str>, role: Role) -> FloatTensor<Self> {
        if active_spec(site, role).is_none() {
            return t;
        }
        match QuantizeGrad
            .prepare::<C>([t.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((site.clone(), role), t.primitive),
            OpsKind::UnTracked(prep) => prep.finish(t.primitive),
        }
    }
}
