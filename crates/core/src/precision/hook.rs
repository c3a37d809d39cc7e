//! The per-backend quantization hook: [`QuantizeBackend`].
//!
//! [`Precision`](super::Precision) decides *what* to quantize (which GEMM operand, which role,
//! forward or backward); the hook decides *how* on a given backend. This is the seam for a
//! device path: a CUDA backend implements `quantize_forward` with a kernel that reads the spec
//! (`crate::context::active_spec`) and records its `Stats` through the context, and nothing
//! else changes. The CPU backends here (NdArray, Flex) run [`crate::context::quantize_host`] on
//! the tensor's own `f32` buffer (copy-on-write when it is shared); other dtypes go through
//! [`quantize_via_host`].
//!
//! Because `QuantizeBackend` is defined here, the orphan rule puts its impls for foreign backends
//! in this crate too: a GPU backend is added behind a cargo feature (e.g. `cuda`, implementing it
//! for `burn_cuda::Cuda`), and [`quantize_via_host`] is a correct, slow first version for any
//! backend. Its `Autodiff<B>` impl below is generic and needs no change.

use crate::context::{active_spec, quantize_host};
use crate::Role;
use burn::backend::ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray,
};
use burn::backend::{Autodiff, Flex, NdArray};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn_backend::tensor::FloatTensor;
use burn_backend::{read_sync, Backend, DType, TensorData, TensorMetadata};
use std::sync::Arc;

/// A backend that can quantize a float tensor for a (site, role) under the active recipe.
///
/// Both functions must return `t` untouched (no copy, no graph node) when the active recipe
/// gives no spec for `(site, role)`: that is what makes an all-f32 recipe bit-identical to the
/// undecorated backend.
pub trait QuantizeBackend: Backend {
    /// Forward: the value is quantized; under autodiff the gradient passes straight through.
    fn quantize_forward(t: FloatTensor<Self>, site: &Arc<str>, role: Role) -> FloatTensor<Self>;

    /// Identity in the forward pass; under autodiff the gradient flowing back through it is
    /// quantized for `role`. A backend without autodiff has no backward pass: identity.
    fn quantize_backward(t: FloatTensor<Self>, site: &Arc<str>, role: Role) -> FloatTensor<Self>;
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
    /// Fast path for `f32`: quantize the tensor's own buffer in place when nothing else holds it,
    /// else a private copy (Flex's copy-on-write `storage_mut`, so the input another tensor still
    /// reads is never written through), with no round trip through `TensorData`. Views that do
    /// not cover their buffer exactly (strided, offset, narrowed) are made contiguous first.
    fn quantize_forward(t: FloatTensor<Self>, site: &Arc<str>, role: Role) -> FloatTensor<Self> {
        if active_spec(site, role).is_none() {
            return t;
        }
        if t.dtype() != DType::F32 {
            return quantize_via_host::<Self>(t, site, role);
        }
        let n = t.layout().num_elements();
        let exact = t.is_contiguous()
            && t.layout().start_offset() == 0
            && t.bytes().len() == n * std::mem::size_of::<f32>();
        let mut t = if exact { t } else { t.to_contiguous() };
        let shape = t.layout().shape().to_vec();
        let data = t.storage_mut::<f32>();
        quantize_host(site, role, &mut data[..n], &shape);
        t
    }

    fn quantize_backward(t: FloatTensor<Self>, _site: &Arc<str>, _role: Role) -> FloatTensor<Self> {
        t
    }
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

impl<B: QuantizeBackend, C: CheckpointStrategy> QuantizeBackend for Autodiff<B, C> {
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
