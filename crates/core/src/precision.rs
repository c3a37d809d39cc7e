//! The backend decorator [`Precision`]: applies the active recipe to every GEMM of any burn
//! model, forward and backward, without the model knowing.
//!
//! # What it does
//!
//! `Precision<B>` is a burn backend with exactly `B`'s tensor primitives, device and element
//! types. Every backend op is forwarded to `B` (the forwarders in `forward.rs` are generated
//! from burn's trait definitions, default methods included, so `B`'s optimised kernels and
//! Autodiff's own backward formulas are kept). Two ops differ: `float_matmul` and `linear`. When
//! a site scope is open ([`crate::sites`]) and a precision context is active
//! ([`crate::context`]), they compute (docs/DESIGN.md §3)
//!
//! ```text
//! x̂ = qf(qb(x, dx), x)      ŵ = qf(qb(w, dw), w)
//! y = B::matmul(x̂, ŵ)       out = qb(qf(y, y), dy)
//! ```
//!
//! where `qf(t, role)` quantizes `t` in the forward pass and lets the gradient through
//! unchanged (straight-through), and `qb(t, role)` is the identity in the forward pass and
//! quantizes the gradient that flows back through it. Both are hooks of [`QuantizeBackend`];
//! a role the recipe keeps in f32 inserts nothing at all, so an all-f32 recipe is bit-identical
//! to the undecorated backend.
//!
//! A recipe that [requantizes the backward operands](crate::Recipe::requantizes_backward)
//! (MXFP8, NVFP4, TE block scaling, torchao rowwise: block scales along each GEMM's reduction
//! axis differ between a tensor and its transpose) gets one autodiff node per GEMM instead
//! ([`QuantizeBackend::requantized_gemm`]): it saves the high-precision `x` and `w`, and its
//! backward quantizes `dy` and `w` for dgrad (`Dy`, `WDgrad`) and `x` and `dy` for wgrad
//! (`XWgrad`, `DyWgrad`, after the recipe's Hadamard transform if any) from high precision.
//!
//! # Use
//!
//! ```ignore
//! type Train = Precision<Autodiff<NdArray>>;
//! let ctx = PrecisionContext::new(recipe).shared();
//! let _active = fp8_core::context::activate(ctx.clone());
//! for batch in data {
//!     let loss = model.forward(batch);          // GEMMs inside `sites::scope(..)` are quantized
//!     let grads = loss.backward();              // dy quantized on the way back
//!     model = optim.step(lr, model, GradientsParams::from_grads(grads, &model));
//!     let telemetry = ctx.lock().unwrap().end_step();
//! }
//! let eval_model = model.valid();               // Precision<NdArray>: forward quantization only
//! ```
//!
//! # Why outside `Autodiff`
//!
//! Training uses `Precision<Autodiff<NdArray>>`, not `Autodiff<Precision<NdArray>>`:
//!
//! - Outside, the decorator sees the *model's* GEMM, inside its site scope, once. It hands
//!   Autodiff the quantized operands x̂ and ŵ, which Autodiff's matmul saves for backward, and
//!   the `qb(·, dy)` node quantizes the incoming gradient before Autodiff's matmul backward runs.
//!   That backward then computes `dx = Q(dy)·ŵᵀ` and `dw = x̂ᵀ·Q(dy)` on the inner backend:
//!   exactly the three GEMMs of §3, with the quantized forward operands.
//! - Inside, the decorator would only see the inner backend's GEMMs: the forward one and the
//!   two that Autodiff issues during `backward()` look alike, with no way to tell which is
//!   which or which site they belong to (the model's site scopes are closed by then), and the
//!   operands Autodiff saved would be the unquantized ones.
//!
//! `Precision<A>` implements [`AutodiffBackend`] when `A` does, with
//! `InnerBackend = Precision<A::InnerBackend>`, so burn's optimizers work unchanged and
//! `model.valid()` gives a `Precision<NdArray>` model that quantizes the forward pass only.
//!
//! # Devices
//!
//! Nothing here touches host memory: that is the hook's business. `NdArray` and `Flex`
//! implement [`QuantizeBackend`] on their host `f32` buffers (Flex through [`quantize_flex`],
//! other dtypes through [`quantize_via_host`]); a GPU backend implements it with a device
//! kernel ([`quantize_via_device`]) and reuses the decorator as is.
//!
//! # Limits
//!
//! Only `float_matmul` and `linear` are intercepted. GEMMs that a backend performs inside
//! another op (the default `attention`, convolutions, burn's own quantized `q_matmul`) are not
//! seen: models write attention score/value products as explicit matmuls in their own site
//! scopes.

mod convert;
#[cfg(feature = "cuda")]
mod cuda;
pub mod device;
mod forward;
mod hook;
#[cfg(feature = "wgpu")]
pub mod wgpu;

pub use device::quantize_via_device;
pub use hook::{hadamard_via_host, quantize_flex, quantize_via_host, GemmKind, QuantizeBackend};

use crate::{sites, Role};
use burn_backend::backend::{AutodiffBackend, Backend, BackendTypes, ExecutionError};
use burn_backend::ops::{TransactionOps, TransactionPrimitive, TransactionPrimitiveData};
use burn_backend::tensor::{BoolTensor, FloatTensor, IntTensor, QuantizedTensor};
use burn_backend::{DTypeUsageSet, TensorData, TensorMetadata};
use core::future::Future;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// A backend decorator that applies the active recipe to the GEMMs of the model; see the
/// [module docs](self).
pub struct Precision<B>(PhantomData<B>);

// Written by hand so that they do not require `B: Copy` etc. (derives would add bounds).
impl<B> Clone for Precision<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B> Copy for Precision<B> {}
impl<B> Default for Precision<B> {
    fn default() -> Self {
        Precision(PhantomData)
    }
}
impl<B> fmt::Debug for Precision<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Precision<{}>", std::any::type_name::<B>())
    }
}

impl<B: Backend> BackendTypes for Precision<B> {
    type Device = B::Device;
    type FloatTensorPrimitive = B::FloatTensorPrimitive;
    type FloatElem = B::FloatElem;
    type IntTensorPrimitive = B::IntTensorPrimitive;
    type IntElem = B::IntElem;
    type BoolTensorPrimitive = B::BoolTensorPrimitive;
    type BoolElem = B::BoolElem;
    type QuantizedTensorPrimitive = B::QuantizedTensorPrimitive;
}

impl<B: QuantizeBackend> Backend for Precision<B> {
    fn ad_enabled(device: &Self::Device) -> bool {
        B::ad_enabled(device)
    }

    fn memory_persistent_allocations<
        Output: Send,
        Input: Send,
        Func: Fn(Input) -> Output + Send,
    >(
        device: &Self::Device,
        input: Input,
        func: Func,
    ) -> Output {
        B::memory_persistent_allocations(device, input, func)
    }

    fn memory_cleanup(device: &Self::Device) {
        B::memory_cleanup(device)
    }

    fn name(device: &Self::Device) -> String {
        format!("precision<{}>", B::name(device))
    }

    fn seed(device: &Self::Device, seed: u64) {
        B::seed(device, seed)
    }

    fn sync(device: &Self::Device) -> Result<(), ExecutionError> {
        B::sync(device)
    }

    fn staging<'a, Iter>(data: Iter, device: &Self::Device)
    where
        Iter: Iterator<Item = &'a mut TensorData>,
    {
        B::staging(data, device)
    }

    fn supports_dtype(device: &Self::Device, dtype: burn_backend::DType) -> bool {
        B::supports_dtype(device, dtype)
    }

    fn dtype_usage(device: &Self::Device, dtype: burn_backend::DType) -> DTypeUsageSet {
        B::dtype_usage(device, dtype)
    }

    fn device_count(type_id: u16) -> usize {
        B::device_count(type_id)
    }
}

impl<B: QuantizeBackend> TransactionOps<Self> for Precision<B> {
    fn tr_execute(
        t: TransactionPrimitive<Self>,
    ) -> impl Future<Output = Result<TransactionPrimitiveData, ExecutionError>> + Send {
        B::tr_execute(TransactionPrimitive::new(
            t.read_floats,
            t.read_qfloats,
            t.read_ints,
            t.read_bools,
        ))
    }
}

/// The site whose recipe applies now: the innermost open scope, if a context is active.
fn active_site() -> Option<Arc<str>> {
    let site = sites::current()?;
    crate::context::with_active(|_| ()).map(|()| site)
}

/// Whether the active recipe quantizes each backward GEMM operand afresh.
fn requantizes_backward() -> bool {
    crate::context::with_active(|c| c.recipe().requantizes_backward()).unwrap_or(false)
}

impl<B: QuantizeBackend> Precision<B> {
    /// `qf(qb(t, grad_role), role)`: a GEMM input as the inner GEMM sees it.
    fn gemm_input(
        t: FloatTensor<B>,
        site: &Arc<str>,
        role: Role,
        grad_role: Role,
    ) -> FloatTensor<B> {
        B::quantize_forward(B::quantize_backward(t, site, grad_role), site, role)
    }

    /// `qb(qf(y, Y), Dy)`: a GEMM output as the rest of the model sees it.
    fn gemm_output(y: FloatTensor<B>, site: &Arc<str>) -> FloatTensor<B> {
        B::quantize_backward(B::quantize_forward(y, site, Role::Y), site, Role::Dy)
    }

    pub(crate) fn float_matmul_with_recipe(
        lhs: FloatTensor<B>,
        rhs: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let Some(site) = active_site() else {
            return B::gemm_matmul(lhs, rhs);
        };
        if requantizes_backward() {
            let (l, r) = (lhs.shape(), rhs.shape());
            let kind = if r.num_dims() == 2 {
                Some(GemmKind::MatmulRhs2d)
            } else if l.num_dims() == r.num_dims()
                && l.as_slice()[..l.num_dims() - 2] == r.as_slice()[..r.num_dims() - 2]
            {
                Some(GemmKind::Batched)
            } else {
                None
            };
            // Broadcast batch dimensions keep the saved-operand path (no model here has them).
            if let Some(kind) = kind {
                return B::requantized_gemm(lhs, rhs, None, &site, kind);
            }
        }
        let x = Self::gemm_input(lhs, &site, Role::X, Role::Dx);
        let w = Self::gemm_input(rhs, &site, Role::W, Role::Dw);
        Self::gemm_output(B::gemm_matmul(x, w), &site)
    }

    pub(crate) fn linear_with_recipe(
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        bias: Option<FloatTensor<B>>,
    ) -> FloatTensor<B> {
        let Some(site) = active_site() else {
            return B::gemm_linear(x, weight, bias);
        };
        if requantizes_backward() {
            return B::requantized_gemm(x, weight, bias, &site, GemmKind::Linear);
        }
        let x = Self::gemm_input(x, &site, Role::X, Role::Dx);
        let w = Self::gemm_input(weight, &site, Role::W, Role::Dw);
        // The bias is added inside `B::gemm_linear`, before the output quantizers: `y` is the
        // layer's output, as in TransformerEngine's fused linear.
        Self::gemm_output(B::gemm_linear(x, w, bias), &site)
    }
}

impl<A> AutodiffBackend for Precision<A>
where
    A: AutodiffBackend + QuantizeBackend,
    A::InnerBackend: QuantizeBackend,
{
    type InnerBackend = Precision<A::InnerBackend>;
    type Gradients = A::Gradients;

    fn backward(tensor: FloatTensor<Self>) -> Self::Gradients {
        A::backward(tensor)
    }

    fn grad(
        tensor: &FloatTensor<Self>,
        grads: &Self::Gradients,
    ) -> Option<FloatTensor<Self::InnerBackend>> {
        A::grad(tensor, grads)
    }

    fn grad_remove(
        tensor: &FloatTensor<Self>,
        grads: &mut Self::Gradients,
    ) -> Option<FloatTensor<Self::InnerBackend>> {
        A::grad_remove(tensor, grads)
    }

    fn grad_replace(
        tensor: &FloatTensor<Self>,
        grads: &mut Self::Gradients,
        grad: FloatTensor<Self::InnerBackend>,
    ) {
        A::grad_replace(tensor, grads, grad)
    }

    fn inner(tensor: FloatTensor<Self>) -> FloatTensor<Self::InnerBackend> {
        A::inner(tensor)
    }

    fn int_inner(tensor: IntTensor<Self>) -> IntTensor<Self::InnerBackend> {
        A::int_inner(tensor)
    }

    fn bool_inner(tensor: BoolTensor<Self>) -> BoolTensor<Self::InnerBackend> {
        A::bool_inner(tensor)
    }

    fn q_inner(tensor: QuantizedTensor<Self>) -> QuantizedTensor<Self::InnerBackend> {
        A::q_inner(tensor)
    }

    fn from_inner(tensor: FloatTensor<Self::InnerBackend>) -> FloatTensor<Self> {
        A::from_inner(tensor)
    }

    fn int_from_inner(tensor: IntTensor<Self::InnerBackend>) -> IntTensor<Self> {
        A::int_from_inner(tensor)
    }

    fn bool_from_inner(tensor: BoolTensor<Self::InnerBackend>) -> BoolTensor<Self> {
        A::bool_from_inner(tensor)
    }

    fn q_from_inner(tensor: QuantizedTensor<Self::InnerBackend>) -> QuantizedTensor<Self> {
        A::q_from_inner(tensor)
    }
}
