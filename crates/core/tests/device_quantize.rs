//! The device quantization path (`fp8_core::precision::device`) against the fp8-formats slice
//! kernel, bit for bit, on the CPU backends.
//!
//! The device path is what runs on a GPU, where nothing checks it; running the very same burn
//! ops on NdArray and Flex and comparing with the host kernel is what keeps it honest. The tables
//! (inputs, specs, comparisons) are in `common/mod.rs`, shared with `wgpu_device.rs`, which runs
//! them on a wgpu device. With `--features cuda` and `FP8_TEST_DEVICE=cuda:N` the same
//! comparisons also run on that GPU (scripts/gpu-check.sh does this).

mod common;

use burn::backend::{Flex, NdArray};
use burn::tensor::{Tensor, TensorData};
use burn_backend::Backend;
use common::{
    assert_same_bits, assert_stats, casts_on, fallback_specs, generic_formats_on, hook, matrix,
    scalings_on,
};
use fp8_core::precision::device::{device_supports, quantize_tensor, Unsupported};
use fp8_formats::{CastSpec, Family, Format, QuantSpec, Rounding, Scaling, TensorScale};

/// The casts table on `B`; the specs it leaves to the host are e8m0 elements and stochastic
/// rounding, for exactly those reasons.
fn casts_and_reasons_on<B: Backend>(device: &B::Device) {
    casts_on::<B>(device, 2000, &mut |what, spec, _, why| match why {
        Unsupported::E8m0(_) => assert_eq!(spec.cast.format.family, Family::E8m0, "{what}"),
        Unsupported::Rounding(r) => assert_eq!(r, Rounding::Stochastic, "{what}"),
        other => panic!("{what}: unexpected reason {other}"),
    });
}

#[test]
fn casts_match_host_kernel_ndarray() {
    casts_and_reasons_on::<NdArray>(&Default::default());
}

#[test]
fn casts_match_host_kernel_flex() {
    casts_and_reasons_on::<Flex>(&Default::default());
}

#[test]
fn generic_formats_match_host_kernel_ndarray() {
    generic_formats_on::<NdArray>(&Default::default());
}

#[test]
fn scalings_match_host_kernel_ndarray() {
    scalings_on::<NdArray>(&Default::default());
}

#[test]
fn scalings_match_host_kernel_flex() {
    scalings_on::<Flex>(&Default::default());
}

#[test]
fn higher_rank_and_empty_tensors() {
    let device = Default::default();
    let data = matrix(6, 32, 11);
    let spec = QuantSpec {
        cast: CastSpec::new(Format::FLOAT8_E4M3FN),
        scaling: Scaling::MX,
    };
    let t = Tensor::<NdArray, 3>::from_data(TensorData::new(data.clone(), [2, 3, 32]), &device);
    let (q, _) = quantize_tensor(t, &spec).unwrap();
    assert_eq!(q.dims(), [2, 3, 32]);
    let got = q.into_data().into_vec::<f32>().unwrap();
    let mut want = data.clone();
    fp8_formats::quantize(&mut want, &[2, 3, 32], &spec);
    assert_same_bits("rank 3", spec.cast.format, &data, &got, &want);

    let e = Tensor::<NdArray, 2>::from_data(TensorData::new(Vec::<f32>::new(), [0, 4]), &device);
    let (q, s) = quantize_tensor(e, &spec).unwrap();
    assert_eq!(q.dims(), [0, 4]);
    assert_eq!(s.count, 0);
}

/// Every spec of the fallback table is rejected by `device_supports`, for the reason its label
/// names.
#[test]
fn unsupported_specs_are_reported() {
    for (label, spec, shape) in fallback_specs() {
        let why = device_supports(&spec, &shape).expect_err(label);
        let expected = match why {
            Unsupported::Rounding(_) => label.starts_with("stochastic"),
            Unsupported::E8m0(_) => label.starts_with("e8m0"),
            Unsupported::Scaling(_) => label.starts_with("nvfp4") || label.starts_with("mx even"),
            Unsupported::Ragged { .. } => label.starts_with("ragged"),
        };
        assert!(expected, "{label}: {why}");
    }
}

/// The hook-level entry point records the same telemetry as the host path, and falls back to
/// the host for what the device does not do (stochastic rounding, ragged MX).
#[test]
fn hook_matches_host_hook_and_falls_back() {
    let device = Default::default();
    let data = matrix(8, 40, 5);
    let c = CastSpec::new(Format::FLOAT8_E4M3FN);
    for spec in [
        QuantSpec {
            cast: c,
            scaling: Scaling::Tensor(TensorScale::Current { pow2: false }),
        },
        QuantSpec::cast(c.with_rounding(Rounding::Stochastic).with_seed(9)),
        QuantSpec {
            cast: c,
            scaling: Scaling::MX,
        },
    ] {
        let (got, gs) = hook::<NdArray>(&device, &data, [8, 40], spec, true);
        let (want, ws) = hook::<NdArray>(&device, &data, [8, 40], spec, false);
        assert_same_bits("hook", c.format, &data, &got, &want);
        assert_stats("hook", &gs, &ws);
    }
}

/// On a GPU build, `FP8_TEST_DEVICE=cuda:N` runs the same comparisons on that device.
#[cfg(feature = "cuda")]
#[test]
fn matches_host_kernel_on_cuda_when_asked() {
    let Ok(dev) = std::env::var("FP8_TEST_DEVICE") else {
        eprintln!("FP8_TEST_DEVICE not set: skipping the CUDA comparison");
        return;
    };
    let index: usize = dev
        .strip_prefix("cuda:")
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("FP8_TEST_DEVICE={dev}: expected cuda:N"));
    type C = burn_cuda::Cuda<f32, i32>;
    let device = burn_cuda::CudaDevice::new(index);
    casts_and_reasons_on::<C>(&device);
    generic_formats_on::<C>(&device);
    scalings_on::<C>(&device);
}
