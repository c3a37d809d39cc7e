//! [`QuantizeBackend`] for burn's CUDA backend (cargo feature `cuda`).
//!
//! The orphan rule puts these impls here, next to the trait. They use the device path
//! ([`quantize_via_device`]): the recipe's quantize → dequantize runs as burn tensor ops on the
//! GPU and only a few telemetry scalars come back to the host; specs the device path does not
//! cover fall back to the host kernel (see [`super::device`]). `Autodiff<Cuda<..>>` is covered
//! by the generic `Autodiff` impl in `hook.rs`.
//!
//! Implemented for the element types training uses: `f32` (the default) and `bf16`/`f16` (a
//! `--compute-dtype` run); the int element is burn-cuda's default `i32`. burn-cuda's `fusion`
//! feature is off in this crate, so `Cuda<F, I>` is the plain `CubeBackend`.

use super::{quantize_via_device, QuantizeBackend};
use crate::Role;
use burn::tensor::{bf16, f16};
use burn_backend::tensor::FloatTensor;
use burn_cuda::Cuda;
use std::sync::Arc;

macro_rules! cuda_quantize_backend {
    ($($f:ty),*) => {$(
        impl QuantizeBackend for Cuda<$f, i32> {
            fn quantize_forward(
                t: FloatTensor<Self>,
                site: &Arc<str>,
                role: Role,
            ) -> FloatTensor<Self> {
                quantize_via_device::<Self>(t, site, role)
            }

            fn quantize_backward(
                t: FloatTensor<Self>,
                _site: &Arc<str>,
                _role: Role,
            ) -> FloatTensor<Self> {
                t
            }
        }
    )*};
}

cuda_quantize_backend!(f32, bf16, f16);
