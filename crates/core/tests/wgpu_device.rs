//! The GPU code path on burn's wgpu backend (`--features wgpu`): device quantization against the
//! host kernel bit for bit, the host fallback, and the fused ops against Flex.
//!
//! In CI this runs on lavapipe, Mesa's software Vulkan 1.3 device (`scripts/install-vulkan.sh`),
//! so the CubeCL kernels the CUDA build also uses are exercised on every commit without a GPU.
//!
//! Without a wgpu adapter every test prints why and returns, except under `CI=true`, where a
//! missing adapter is a failure: CI installs one, so its absence is a broken setup, not a pass.
//!
//! The quantization tables (inputs, specs, the bit-for-bit comparison) are `common/mod.rs`,
//! shared with `device_quantize.rs`, which runs them on the CPU backends.

#![cfg(feature = "wgpu")]

mod common;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Int, Tensor, TensorData, TensorPrimitive};
use burn_backend::Backend;
use common::{
    assert_same_bits, assert_stats, casts_on, fallback_specs, generic_formats_on, hook, matrix,
    scalings_on, schemes, Fixed, Rng,
};
use fp8_core::context::{activate, PrecisionContext};
use fp8_core::fused::{self, FusedOps};
use fp8_core::precision::device::device_supports;
use fp8_core::precision::quantize_via_device;
use fp8_core::precision::wgpu::{adapters, device, Wgpu, WgpuDevice};
use fp8_core::Role;
use fp8_formats::{BlockAxis, CastSpec, Format, MxRule, QuantSpec, Rounding, Scaling, TensorScale};
use std::time::Instant;

type W = Wgpu<f32, i32, u32>;

/// The default wgpu device, or `None` (with the reason printed) when there is no adapter and
/// this is not CI. Under `CI=true` a missing adapter panics.
fn wgpu_or_skip(test: &str) -> Option<WgpuDevice> {
    match device(None) {
        Ok(d) => {
            eprintln!("{test}: wgpu adapters: {:?}", adapters());
            Some(d)
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: CI=true but no wgpu adapter: {e}")
        }
        Err(e) => {
            eprintln!("{test}: SKIPPED, not run on a device: {e}");
            None
        }
    }
}

// ---- Device quantization (the tables are in common/mod.rs) -----------------------------------

/// Every named format × every rounding × saturation × subnormals, unscaled: the device path's
/// casts bit for bit equal to the host kernel, and the specs it leaves to the host (e8m0
/// elements, stochastic rounding) through the wgpu hook equal to the CPU hook's.
#[test]
fn casts_match_host_kernel_on_wgpu() {
    let Some(dev) = wgpu_or_skip("casts_match_host_kernel_on_wgpu") else {
        return;
    };
    let mut fell_back = Vec::new();
    casts_on::<W>(&dev, 500, &mut |what, spec, v, why| {
        let shape = [1, v.len()];
        let (got, _) = hook::<W>(&dev, v, shape, spec, true);
        let (want, _) = hook::<NdArray>(&Default::default(), v, shape, spec, false);
        assert_same_bits(what, spec.cast.format, v, &got, &want);
        fell_back.push(format!("{what} ({why})"));
    });
    eprintln!("on the host (checked against the CPU hook): {fell_back:#?}");
}

/// Generic formats the named list lacks (no mantissa bits, wide exponents, 23 mantissa bits …).
#[test]
fn generic_formats_match_host_kernel_on_wgpu() {
    let Some(dev) = wgpu_or_skip("generic_formats_match_host_kernel_on_wgpu") else {
        return;
    };
    generic_formats_on::<W>(&dev);
}

/// Every scaling scheme the device supports, on the fp8/fp6/fp4/bf16 element formats.
#[test]
fn scalings_match_host_kernel_on_wgpu() {
    let Some(dev) = wgpu_or_skip("scalings_match_host_kernel_on_wgpu") else {
        return;
    };
    scalings_on::<W>(&dev);
}

/// Where the device path does not apply, the wgpu hook still gives the host kernel's result:
/// bit for bit the CPU hook's, telemetry included. Prints which specs fell back and why.
#[test]
fn unsupported_specs_fall_back_to_the_host_result_on_wgpu() {
    let Some(dev) = wgpu_or_skip("unsupported_specs_fall_back_to_the_host_result_on_wgpu") else {
        return;
    };
    for (label, spec, shape) in fallback_specs() {
        let why = device_supports(&spec, &shape).expect_err(label);
        eprintln!("falls back to the host on wgpu: {label}: {why}");
        let data = matrix(shape[0], shape[1], 5);
        let (got, gs) = hook::<W>(&dev, &data, shape, spec, true);
        let (want, ws) = hook::<NdArray>(&Default::default(), &data, shape, spec, false);
        assert_same_bits(label, spec.cast.format, &data, &got, &want);
        assert_stats(label, &gs, &ws);
    }
}

/// The hook on a supported spec goes through the device path and records the host's telemetry.
#[test]
fn device_hook_matches_host_hook_on_wgpu() {
    let Some(dev) = wgpu_or_skip("device_hook_matches_host_hook_on_wgpu") else {
        return;
    };
    let data = matrix(8, 64, 6);
    for (label, scaling) in schemes() {
        let spec = QuantSpec {
            cast: CastSpec::new(Format::FLOAT8_E4M3FN),
            scaling,
        };
        let (got, gs) = hook::<W>(&dev, &data, [8, 64], spec, true);
        let (want, ws) = hook::<NdArray>(&Default::default(), &data, [8, 64], spec, false);
        assert_same_bits(label, spec.cast.format, &data, &got, &want);
        assert_stats(label, &gs, &ws);
    }
}

// ---- Fused ops -------------------------------------------------------------------------------

/// Deterministic values in `[-scale, scale)`.
fn uniform(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| ((rng.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
        .collect()
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Forward value and the gradients of `Σ out ⊙ cot` with respect to every input.
#[derive(Debug)]
struct Outcome {
    value: Vec<f32>,
    grads: Vec<Vec<f32>>,
}

fn leaf<B: AutodiffBackend, const D: usize>(
    v: &[f32],
    shape: [usize; D],
    dev: &B::Device,
) -> Tensor<B, D> {
    Tensor::<B, D>::from_data(TensorData::new(v.to_vec(), shape), dev).require_grad()
}

fn outcome<B: AutodiffBackend, const D: usize, const E: usize>(
    out: Tensor<B, D>,
    seed: u64,
    inputs: &[&Tensor<B, E>],
) -> Outcome {
    let shape = out.dims();
    let n = shape.iter().product();
    let cot =
        Tensor::<B, D>::from_data(TensorData::new(uniform(n, seed, 1.0), shape), &out.device());
    let value = host(out.clone());
    let grads = (out * cot).sum().backward();
    let grads = inputs
        .iter()
        .map(|t| host(t.grad(&grads).expect("a gradient for every input")))
        .collect();
    Outcome { value, grads }
}

/// f32 tolerance: `|got − want| ≤ 1e-5·|want| + 1e-5·max|want|`. The device's `exp`, `tanh` and
/// reductions are not the CPU's (other order, other polynomial), so bit equality is not expected;
/// a few ulp relative to the largest value of the output are.
#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * w.abs() + 1e-5 * scale;
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: wgpu {g}, flex {w} (|diff| {} > {tol})",
            (g - w).abs()
        );
    }
}

#[track_caller]
fn assert_same_outcome(what: &str, got: &Outcome, want: &Outcome) {
    assert_close(&format!("{what}: value"), &got.value, &want.value);
    assert_eq!(got.grads.len(), want.grads.len());
    for (k, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
        assert_close(&format!("{what}: grad {k}"), g, w);
    }
}

const SM: [usize; 4] = [2, 3, 7, 7];

fn softmax_case<B: AutodiffBackend + FusedOps>(dev: &B::Device) -> Outcome {
    let n = SM.iter().product();
    let x = leaf::<B, 4>(&uniform(n, 1, 6.0), SM, dev);
    let [b, h, t, _] = SM;
    let mask: Vec<bool> = (0..b * h * t * t).map(|i| i % t > (i / t) % t).collect();
    let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(mask, SM), dev);
    let y = fused::softmax(x.clone().mask_fill(mask, f32::NEG_INFINITY));
    outcome(y, 2, &[&x])
}

fn gelu_case<B: AutodiffBackend + FusedOps>(dev: &B::Device) -> Outcome {
    let shape = [3, 5, 16];
    let x = leaf::<B, 3>(&uniform(240, 3, 6.0), shape, dev);
    outcome(fused::gelu_tanh(x.clone()), 4, &[&x])
}

fn norm_case<B: AutodiffBackend + FusedOps>(dev: &B::Device, rms: bool) -> Outcome {
    let (rows, c) = (6, 48);
    let mut xs = uniform(rows * c, 5, 3.0);
    xs.iter_mut().take(c).for_each(|v| *v += 10.0); // a row with a large mean
    let x = leaf::<B, 3>(&xs, [2, 3, c], dev);
    let w = leaf::<B, 1>(&uniform(c, 6, 1.5), [c], dev);
    if rms {
        outcome(
            fused::norm(x.clone(), w.clone(), None, 1e-5, true),
            7,
            &[&x],
        )
    } else {
        let bias = leaf::<B, 1>(&uniform(c, 8, 0.5), [c], dev);
        let y = fused::norm(x.clone(), w.clone(), Some(bias.clone()), 1e-5, false);
        let o = outcome(y, 7, &[&x]);
        // The weight and bias gradients, from a second pass (inputs of another rank).
        let y = fused::norm(x.clone(), w.clone(), Some(bias.clone()), 1e-5, false);
        let p = outcome(y, 7, &[&w, &bias]);
        Outcome {
            value: o.value,
            grads: [o.grads, p.grads].concat(),
        }
    }
}

fn cross_entropy_case<B: AutodiffBackend + FusedOps>(dev: &B::Device) -> Outcome {
    let (n, v) = (10, 67);
    let logits = leaf::<B, 2>(&uniform(n * v, 9, 8.0), [n, v], dev);
    let targets: Vec<i64> = (0..n as i64).map(|i| (i * 13 + 5) % v as i64).collect();
    let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [n]), dev);
    let loss = fused::cross_entropy(logits.clone(), targets);
    outcome(loss, 10, &[&logits])
}

/// softmax (causal mask, −inf entries), GELU-tanh, LayerNorm (with bias), RMSNorm and
/// cross-entropy: value and gradients under `Autodiff<Wgpu>` (the composed defaults, on the
/// device) against `Autodiff<Flex>` (the CPU kernels).
#[test]
fn fused_ops_match_flex_on_wgpu() {
    let Some(dev) = wgpu_or_skip("fused_ops_match_flex_on_wgpu") else {
        return;
    };
    type G = Autodiff<W>;
    type C = Autodiff<Flex>;
    let cpu = Default::default();
    assert_same_outcome(
        "softmax",
        &softmax_case::<G>(&dev),
        &softmax_case::<C>(&cpu),
    );
    assert_same_outcome("gelu_tanh", &gelu_case::<G>(&dev), &gelu_case::<C>(&cpu));
    assert_same_outcome(
        "layer norm",
        &norm_case::<G>(&dev, false),
        &norm_case::<C>(&cpu, false),
    );
    assert_same_outcome(
        "rms norm",
        &norm_case::<G>(&dev, true),
        &norm_case::<C>(&cpu, true),
    );
    assert_same_outcome(
        "cross_entropy",
        &cross_entropy_case::<G>(&dev),
        &cross_entropy_case::<C>(&cpu),
    );
}

// ---- Timings (information only) --------------------------------------------------------------

/// Median wall time of `f` over `n` runs, after one warm-up run (kernel compilation).
fn median_ms(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[n / 2]
}

/// Device cast vs host fallback on a `[1024, 1024]` tensor, for docs/gpu.md. Ignored: it
/// measures, it does not check. `cargo test -p fp8-core --release --features wgpu --test
/// wgpu_device -- --ignored --nocapture`.
#[test]
#[ignore]
fn timings() {
    let Some(dev) = wgpu_or_skip("timings") else {
        return;
    };
    let (r, c) = (1024, 1024);
    let data = matrix(r, c, 1);
    let e4 = CastSpec::new(Format::FLOAT8_E4M3FN);
    let cases = [
        (
            "e4m3 current scaling (device)",
            QuantSpec {
                cast: e4,
                scaling: Scaling::Tensor(TensorScale::Current { pow2: false }),
            },
        ),
        (
            "mxfp8 floor (device)",
            QuantSpec {
                cast: e4,
                scaling: Scaling::MX,
            },
        ),
        (
            "e4m3 stochastic (host fallback)",
            QuantSpec::cast(e4.with_rounding(Rounding::Stochastic)),
        ),
        (
            "mxfp8 even (host fallback)",
            QuantSpec {
                cast: e4,
                scaling: Scaling::Mx {
                    block: 32,
                    rule: MxRule::Even,
                    axis: BlockAxis::Cols,
                },
            },
        ),
        (
            "nvfp4 (host fallback)",
            QuantSpec {
                cast: CastSpec::new(Format::FLOAT4_E2M1FN),
                scaling: Scaling::Nvfp4 {
                    axis: BlockAxis::Cols,
                },
            },
        ),
    ];
    let x = Tensor::<W, 2>::from_data(TensorData::new(data.clone(), [r, c]), &dev);
    let copy = median_ms(5, || {
        let _ = (x.clone() * 1.0).into_data();
    });
    println!("wgpu [{r}, {c}] f32: multiply by 1 and read back: {copy:.1} ms");
    for (label, spec) in cases {
        let ctx = PrecisionContext::new(Box::new(Fixed(spec))).shared();
        let _g = activate(ctx.clone());
        let ms = median_ms(5, || {
            let p = x.clone().into_primitive().tensor();
            let q = quantize_via_device::<W>(p, "s", Role::X);
            let _ = Tensor::<W, 2>::from_primitive(TensorPrimitive::Float(q)).into_data();
            ctx.lock().unwrap().end_step();
        });
        println!("wgpu [{r}, {c}] {label}: {ms:.1} ms (incl. read back)");
    }
    let a = Tensor::<W, 2>::from_data(
        TensorData::new(uniform(512 * 512, 2, 1.0), [512, 512]),
        &dev,
    );
    let mm = median_ms(5, || {
        let _ = a.clone().matmul(a.clone()).into_data();
    });
    println!("wgpu matmul [512, 512] x [512, 512]: {mm:.1} ms");
}

// ---- Device choice ---------------------------------------------------------------------------

/// `--device wgpu[:N]`: bad spellings and indexes past the adapter list are errors naming the
/// problem; `wgpu` and `wgpu:0` choose a device when there is an adapter.
#[test]
fn device_spellings_and_indexes() {
    use fp8_core::precision::wgpu::{parse, DeviceError};
    for bad in ["wgpu:", "wgpu:x", "wgpu:-1", "wgpu0", "gpu:0", "wgpu:0:1"] {
        assert_eq!(
            parse(bad),
            Err(DeviceError::Spelling(bad.to_string())),
            "{bad}"
        );
    }
    let n = adapters().len();
    match parse(&format!("wgpu:{n}")) {
        Err(DeviceError::NoSuchIndex { index, count, .. }) => assert_eq!((index, count), (n, n)),
        Err(DeviceError::NoAdapter { .. }) => assert_eq!(n, 0),
        other => panic!("wgpu:{n} with {n} adapters: {other:?}"),
    }
    if wgpu_or_skip("device_spellings_and_indexes").is_none() {
        return;
    }
    assert_eq!(parse("wgpu"), Ok(WgpuDevice::DefaultDevice));
    let first = parse("wgpu:0").expect("adapter 0 exists");
    let kind = &adapters()[0].kind;
    let want = match kind.as_str() {
        "DiscreteGpu" => WgpuDevice::DiscreteGpu(0),
        "IntegratedGpu" => WgpuDevice::IntegratedGpu(0),
        "VirtualGpu" => WgpuDevice::VirtualGpu(0),
        "Cpu" => WgpuDevice::Cpu,
        other => panic!("adapter 0 is of kind {other}"),
    };
    assert_eq!(first, want);
    // The device chosen by index runs a kernel.
    let t = Tensor::<W, 1>::from_data(TensorData::new(vec![1.5f32, -2.0], [2]), &first);
    assert_eq!(host(t * 2.0), vec![3.0, -4.0]);
}
