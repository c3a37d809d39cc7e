//! The wgpu training backend (cargo feature `wgpu`): burn-wgpu's plain CubeCL backend under
//! `Autodiff`, wrapped in the [`Precision`] decorator, whose GEMM operands are quantized on the
//! device (`fp8_core::precision::device`) as on CUDA.
//!
//! wgpu reaches any GPU with a Vulkan (Linux, Windows) or Metal (macOS) driver: AMD, Intel and
//! Apple GPUs as well as NVIDIA's, and lavapipe, Mesa's software Vulkan device, on a machine
//! without one (the tests run there). Only f32 compute: wgpu has no bf16.

use burn::backend::Autodiff;
use fp8_core::Precision;

pub use fp8_core::precision::wgpu::{Wgpu, WgpuDevice};

/// f32 compute on a wgpu device.
pub type WgpuTrain = Precision<Autodiff<Wgpu<f32, i32, u32>>>;

/// Parse `wgpu` or `wgpu:N` into a device, checking that the adapter exists (an index that
/// names none is an error listing the adapters, not a panic inside the runtime).
pub fn parse(spec: &str) -> anyhow::Result<WgpuDevice> {
    Ok(fp8_core::precision::wgpu::parse(spec)?)
}
