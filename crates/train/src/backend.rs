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

// ---- GPU backends (cargo features `cuda`, `wgpu`) --------------------------------------------
// This file is the one place that decides which backends exist: each is a `TrainDevice` variant,
// an arm of `train_device` and an arm of `with_train_backend!`. Commands never name a backend.

#[cfg(feature = "cuda")]
#[path = "backend_cuda.rs"]
pub mod cuda;
#[cfg(feature = "cuda")]
pub use cuda::{CudaBf16Train, CudaTrain};

#[cfg(feature = "wgpu")]
#[path = "backend_wgpu.rs"]
pub mod wgpu;
#[cfg(feature = "wgpu")]
pub use wgpu::WgpuTrain;

/// The device of a backend this build does not include. It has no values, so the
/// [`TrainDevice`] variant that holds it is never constructed, and `with_train_backend!`'s arm for
/// it is an empty `match` instead of a body instantiated for a backend that was not compiled.
#[derive(Clone, Copy, Debug)]
pub enum NotBuilt {}

#[cfg(feature = "cuda")]
type CudaDevice = cuda::CudaDevice;
#[cfg(not(feature = "cuda"))]
type CudaDevice = NotBuilt;
#[cfg(feature = "wgpu")]
type WgpuDevice = wgpu::WgpuDevice;
#[cfg(not(feature = "wgpu"))]
type WgpuDevice = NotBuilt;

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

/// A training backend and its device, chosen by `--device` and `--compute-dtype`. Variants of
/// backends this build lacks hold [`NotBuilt`] and cannot be constructed.
pub enum TrainDevice {
    Cpu(<Cpu as burn::tensor::backend::BackendTypes>::Device),
    /// `cuda:N`, f32 compute (feature `cuda`).
    Cuda(CudaDevice),
    /// `cuda:N` with `--compute-dtype bf16` (feature `cuda`).
    CudaBf16(CudaDevice),
    /// `wgpu` or `wgpu:N`, f32 compute (feature `wgpu`).
    Wgpu(WgpuDevice),
}

/// The `--device` values, for error messages.
const VALID_DEVICES: &str =
    "cpu, cuda or cuda:N (with the `cuda` feature), wgpu or wgpu:N (with the `wgpu` feature)";

/// Parse `--device` and `--compute-dtype` into a [`TrainDevice`].
pub fn train_device(spec: &str, dtype: ComputeDtype) -> anyhow::Result<TrainDevice> {
    let backend = spec.split(':').next().unwrap_or(spec);
    match (backend, dtype) {
        ("cpu", ComputeDtype::F32) if spec == "cpu" => Ok(TrainDevice::Cpu(Default::default())),
        ("cpu", ComputeDtype::Bf16) if spec == "cpu" => anyhow::bail!(
            "--compute-dtype bf16 is not supported on the CPU backend (burn's CPU backends compute in f32); \
             use --device cuda:N, or simulate bf16 with --recipe recipes/bf16.ron"
        ),
        ("cuda", _) => cuda_device(spec, dtype),
        ("wgpu", ComputeDtype::F32) => wgpu_device(spec),
        ("wgpu", ComputeDtype::Bf16) => anyhow::bail!(
            "--device {spec} --compute-dtype bf16: wgpu has no bf16 (f32 only); use --device cuda:N, \
             or simulate bf16 with --recipe recipes/bf16.ron"
        ),
        _ => anyhow::bail!("unknown --device `{spec}`; valid: {VALID_DEVICES}"),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(spec: &str, dtype: ComputeDtype) -> anyhow::Result<TrainDevice> {
    let d = cuda::parse(spec)?;
    Ok(match dtype {
        ComputeDtype::F32 => TrainDevice::Cuda(d),
        ComputeDtype::Bf16 => TrainDevice::CudaBf16(d),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(spec: &str, _: ComputeDtype) -> anyhow::Result<TrainDevice> {
    anyhow::bail!(
        "--device {spec}: this fp8 was built without the `cuda` feature; rebuild with \
         `cargo build --release -p fp8-cli --features cuda`"
    )
}

#[cfg(feature = "wgpu")]
fn wgpu_device(spec: &str) -> anyhow::Result<TrainDevice> {
    Ok(TrainDevice::Wgpu(wgpu::parse(spec)?))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(spec: &str) -> anyhow::Result<TrainDevice> {
    anyhow::bail!(
        "--device {spec}: this fp8 was built without the `wgpu` feature; rebuild with \
         `cargo build --release -p fp8-cli --features wgpu`"
    )
}

/// Check a `device` option without starting anything on it.
pub fn check_device(spec: &str) -> anyhow::Result<()> {
    train_device(spec, ComputeDtype::F32)
        .map(drop)
        .map_err(|e| anyhow::anyhow!("`device` = {spec:?}: {e}"))
}

/// `with_train_backend!(train_device, |B, d| body)`: run `body` with the type `B` bound to the
/// training backend and `d` to its device (a value of `B::Device`). The arm of a backend that
/// this crate was built without is an empty match on [`NotBuilt`] (through `__train_arm_*!`,
/// defined by this crate's features, not the caller's), so `body` is never instantiated for it.
#[macro_export]
macro_rules! with_train_backend {
    ($dev:expr, |$B:ident, $d:ident| $body:expr) => {
        match $dev {
            $crate::backend::TrainDevice::Cpu($d) => {
                type $B = $crate::backend::CpuTrain;
                $body
            }
            $crate::backend::TrainDevice::Cuda($d) => {
                $crate::__train_arm_cuda!($d, $B, CudaTrain, $body)
            }
            $crate::backend::TrainDevice::CudaBf16($d) => {
                $crate::__train_arm_cuda!($d, $B, CudaBf16Train, $body)
            }
            $crate::backend::TrainDevice::Wgpu($d) => {
                $crate::__train_arm_wgpu!($d, $B, WgpuTrain, $body)
            }
        }
    };
}

/// An arm of [`with_train_backend!`] for a backend that is built: bind `B`, run `body`.
#[cfg(feature = "cuda")]
#[doc(hidden)]
#[macro_export]
macro_rules! __train_arm_cuda {
    ($d:ident, $B:ident, $ty:ident, $body:expr) => {{
        type $B = $crate::backend::$ty;
        $body
    }};
}

/// An arm of [`with_train_backend!`] for a backend that is not built: its device is [`NotBuilt`].
#[cfg(not(feature = "cuda"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __train_arm_cuda {
    ($d:ident, $B:ident, $ty:ident, $body:expr) => {
        match $d {}
    };
}

/// An arm of [`with_train_backend!`] for a backend that is built: bind `B`, run `body`.
#[cfg(feature = "wgpu")]
#[doc(hidden)]
#[macro_export]
macro_rules! __train_arm_wgpu {
    ($d:ident, $B:ident, $ty:ident, $body:expr) => {{
        type $B = $crate::backend::$ty;
        $body
    }};
}

/// An arm of [`with_train_backend!`] for a backend that is not built: its device is [`NotBuilt`].
#[cfg(not(feature = "wgpu"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __train_arm_wgpu {
    ($d:ident, $B:ident, $ty:ident, $body:expr) => {
        match $d {}
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

    #[test]
    fn wgpu_device_needs_the_feature_or_parses() {
        let r = train_device("wgpu", ComputeDtype::F32);
        #[cfg(not(feature = "wgpu"))]
        {
            let e = r.err().unwrap().to_string();
            assert!(
                e.contains("`wgpu` feature") && e.contains("--features wgpu"),
                "{e}"
            );
        }
        // With the feature, `wgpu` parses when an adapter exists and otherwise says there is none.
        #[cfg(feature = "wgpu")]
        match r {
            Ok(d) => assert!(matches!(d, TrainDevice::Wgpu(_))),
            Err(e) => assert!(e.to_string().contains("no "), "{e}"),
        }
        let e = train_device("wgpu", ComputeDtype::Bf16)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("bf16"), "{e}");
        for bad in ["wgpu:x", "wgpux", "cpu:0", "gpu"] {
            assert!(train_device(bad, ComputeDtype::F32).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_macro_runs_the_body_on_the_cpu() {
        let dev = train_device("cpu", ComputeDtype::F32).unwrap();
        let name = crate::with_train_backend!(dev, |B, d| {
            <B as burn::tensor::backend::Backend>::name(&d)
        });
        assert!(!name.is_empty());
    }
}
