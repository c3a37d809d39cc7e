//! The CUDA training backends (cargo feature `cuda`): burn-cuda's `Cuda` under `Autodiff`,
//! wrapped in the [`Precision`] decorator, whose GEMM operands are quantized on the GPU
//! (`fp8_core::precision::device`).
//!
//! burn-cuda loads the CUDA driver when a device is first used, so a binary built with this
//! feature runs (on CPU) on machines without CUDA; `--device cuda:N` then fails at that point.

use burn::backend::Autodiff;
use burn::tensor::bf16;
use fp8_core::Precision;

pub use burn_cuda::CudaDevice;

/// f32 compute on the GPU (burn-cuda's default element types).
pub type CudaTrain = Precision<Autodiff<burn_cuda::Cuda<f32, i32>>>;
/// `--compute-dtype bf16`: parameters, activations and GEMMs in bfloat16 (burn's native bf16
/// on CUDA), as opposed to the `bf16` *recipe*, which simulates bf16 casts in f32 compute.
pub type CudaBf16Train = Precision<Autodiff<burn_cuda::Cuda<bf16, i32>>>;

/// Parse `cuda` or `cuda:N` into a device.
pub fn parse(spec: &str) -> anyhow::Result<CudaDevice> {
    let index = match spec.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|i| i.parse::<usize>().ok())
            .ok_or_else(|| anyhow::anyhow!("--device {spec}: expected cuda:N, e.g. cuda:0"))?,
        None => anyhow::bail!("--device {spec}: not a CUDA device"),
    };
    Ok(CudaDevice::new(index))
}
