//! Which burn backend runs training. On CPU: burn's Flex backend under Autodiff, wrapped in the
//! [`Precision`] decorator (outside Autodiff, so it sees exact GEMM roles).
//!
//! Why Flex: it is burn's maintained pure-Rust CPU backend (NdArray is marked legacy), needs no
//! system library (no BLAS to install), reads strided views in its GEMMs (the attention heads are
//! never copied), and its tensors expose their buffer, so the decorator quantizes in place
//! ([`fp8_core::QuantizeBackend`]). It must be built with its `simd` and `rayon` features (and
//! `x86-v4` for AVX-512 GEMM kernels): `burn`'s `flex` feature alone gives scalar, single-threaded
//! kernels, 2–4× slower here. The workspace Cargo.toml turns them on. Worker threads are rayon's:
//! `RAYON_NUM_THREADS`, or `fp8 bench train --threads`.

use burn::backend::{Autodiff, Flex};
use fp8_core::Precision;

/// The CPU compute backend.
pub type Cpu = Flex;
/// What `fp8 train` runs on the CPU.
pub type CpuTrain = Precision<Autodiff<Cpu>>;

// ---- CUDA (cargo feature `cuda`) -------------------------------------------------------------
// Commands choose their backend with `train_device` + `with_train_backend!`, where CUDA is one
// more match arm.

#[cfg(feature = "cuda")]
#[path = "backend_cuda.rs"]
pub mod cuda;
#[cfg(feature = "cuda")]
pub use cuda::{CudaBf16Train, CudaTrain};

/// The element type parameters, activations and GEMMs are computed in (`--compute-dtype`).
/// This is burn's real compute type, unlike the `bf16` *recipe*, which simulates bf16 casts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ComputeDtype {
    #[default]
    F32,
    /// bfloat16 compute: CUDA only (burn-cuda's native bf16).
    Bf16,
}

impl std::str::FromStr for ComputeDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(ComputeDtype::F32),
            "bf16" => Ok(ComputeDtype::Bf16),
            other => Err(format!("unknown compute dtype `{other}`; valid: f32, bf16")),
        }
    }
}

impl std::fmt::Display for ComputeDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ComputeDtype::F32 => "f32",
            ComputeDtype::Bf16 => "bf16",
        })
    }
}

/// A training backend and its device, chosen by `--device` and `--compute-dtype`.
pub enum TrainDevice {
    Cpu(<Cpu as burn::tensor::backend::BackendTypes>::Device),
    #[cfg(feature = "cuda")]
    Cuda(cuda::CudaDevice),
    #[cfg(feature = "cuda")]
    CudaBf16(cuda::CudaDevice),
}

/// Parse `--device` and `--compute-dtype` into a [`TrainDevice`].
pub fn train_device(spec: &str, dtype: ComputeDtype) -> anyhow::Result<TrainDevice> {
    match (spec, dtype) {
        ("cpu", ComputeDtype::F32) => Ok(TrainDevice::Cpu(Default::default())),
        ("cpu", ComputeDtype::Bf16) => anyhow::bail!(
            "--compute-dtype bf16 is not supported on the CPU backend (burn's CPU backends compute in f32); \
             use --device cuda:N, or simulate bf16 with --recipe recipes/bf16.ron"
        ),
        #[cfg(feature = "cuda")]
        (s, dtype) if s.starts_with("cuda") => {
            let d = cuda::parse(s)?;
            Ok(match dtype {
                ComputeDtype::F32 => TrainDevice::Cuda(d),
                ComputeDtype::Bf16 => TrainDevice::CudaBf16(d),
            })
        }
        #[cfg(not(feature = "cuda"))]
        (s, _) if s.starts_with("cuda") => anyhow::bail!(
            "--device {s}: this fp8 was built without the `cuda` feature; rebuild with `cargo build --release --features cuda`"
        ),
        (s, _) => anyhow::bail!("unknown --device `{s}`; valid: cpu, cuda:N (with the `cuda` feature)"),
    }
}

/// Check a `device` option without starting anything on it.
pub fn check_device(spec: &str) -> anyhow::Result<()> {
    train_device(spec, ComputeDtype::F32)
        .map(drop)
        .map_err(|e| anyhow::anyhow!("`device` = {spec:?}: {e}"))
}

/// `with_train_backend!(train_device, |B, d| body)`: run `body` with the type `B` bound to the
/// training backend and `d` to its device (a value of `B::Device`). Defined once per build of
/// this crate, so its arms follow this crate's `cuda` feature, not the caller's.
#[cfg(not(feature = "cuda"))]
#[macro_export]
macro_rules! with_train_backend {
    ($dev:expr, |$B:ident, $d:ident| $body:expr) => {
        match $dev {
            $crate::backend::TrainDevice::Cpu($d) => {
                type $B = $crate::backend::CpuTrain;
                $body
            }
        }
    };
}

/// `with_train_backend!(train_device, |B, d| body)`: run `body` with the type `B` bound to the
/// training backend and `d` to its device (a value of `B::Device`).
#[cfg(feature = "cuda")]
#[macro_export]
macro_rules! with_train_backend {
    ($dev:expr, |$B:ident, $d:ident| $body:expr) => {
        match $dev {
            $crate::backend::TrainDevice::Cpu($d) => {
                type $B = $crate::backend::CpuTrain;
                $body
            }
            $crate::backend::TrainDevice::Cuda($d) => {
                type $B = $crate::backend::CudaTrain;
                $body
            }
            $crate::backend::TrainDevice::CudaBf16($d) => {
                type $B = $crate::backend::CudaBf16Train;
                $body
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_compute_on_cpu_is_a_clear_error() {
        let e = train_device("cpu", ComputeDtype::Bf16)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("--compute-dtype bf16") && e.contains("cuda"),
            "{e}"
        );
        assert!(matches!(
            train_device("cpu", ComputeDtype::F32),
            Ok(TrainDevice::Cpu(_))
        ));
    }

    #[test]
    fn cuda_device_needs_the_feature_or_parses() {
        let r = train_device("cuda:1", ComputeDtype::F32);
        #[cfg(not(feature = "cuda"))]
        assert!(r.err().unwrap().to_string().contains("`cuda` feature"));
        #[cfg(feature = "cuda")]
        assert!(matches!(r, Ok(TrainDevice::Cuda(_))));
        assert!(train_device("tpu", ComputeDtype::F32).is_err());
    }
}
