//! The GPU code path on burn's wgpu backend (`--features wgpu`): device quantization against the
//! host kernel bit for bit, the host fallback, and the fused ops against Flex.
//!
//! In CI this runs on lavapipe, Mesa's software Vulkan 1.3 device (`scripts/install-vulkan.sh`),
//! so the CubeCL kernels the CUDA build also uses are exercised on every commit without a GPU.
//!
//! Without a wgpu adapter every test prints why and returns, except under `CI=true`, where a
//! missing adapter is a failure: CI installs one, so its absence is a broken setup, not a pass.
//!
//! Values are compared by `to_bits()`; NaN results by NaN-ness only (payloads may differ), and a
//! NaN input in a format without NaN by "is zero" (the device path cannot see a NaN's sign; see
//! the `fp8_core::precision::device` docs).

#![cfg(feature = "wgpu")]

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, Int, Tensor, TensorData, TensorPrimitive};
use burn_backend::Backend;
use fp8_core::context::{activate, PrecisionContext};
use fp8_core::fused::{self, FusedOps};
use fp8_core::precision::device::{device_supports, quantize_tensor};
use fp8_core::precision::wgpu::{adapters, device, Wgpu, WgpuDevice};
use fp8_core::precision::{quantize_via_device, quantize_via_host};
use fp8_core::{Recipe, Role};
use fp8_formats::{
    BlockAxis, CastSpec, Family, Format, MxRule, QuantSpec, Rounding, Scaling, Stats, TensorScale,
};
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

// ---- Inputs ----------------------------------------------------------------------------------

/// A small counter-based generator (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn pow2(e: i32) -> f32 {
    2f64.powi(e) as f32
}

/// Edge values of `f` (both signs): ±0, subnormals and their midpoints, min normal, max and
/// around it (ties to overflow), f32 values beyond the range, f32 subnormals, ±inf, NaN,
/// neighbours and midpoints across the exponent range, then random values near the range and
/// random positive-sign f32 bit patterns (NaNs among them).
fn values(f: Format, seed: u64, n_random: usize) -> Vec<f32> {
    let m = i32::from(f.man_bits);
    let (max, minn, mins) = (f.max(), f.min_normal(), f.min_subnormal());
    let mut v = vec![
        0.0,
        mins,
        mins * 0.5,
        mins * 0.75,
        mins * 0.25,
        mins * 1.5,
        mins * 2.5,
        minn,
        minn * (1.0 - f32::EPSILON),
        minn * 0.5,
        minn - mins * 0.5,
        max,
        max * (1.0 + f32::EPSILON),
        max * (1.0 + f.epsilon() * 0.25),
        max * (1.0 + f.epsilon() * 0.5),
        (f64::from(max) * (1.0 + 2f64.powi(-m - 1))) as f32,
        max * 2.0,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::MIN_POSITIVE * 0.5,
        1e-45,
        1.0,
        1.0 + f.epsilon() * 0.5,
        1.0 + f.epsilon() * 1.5,
        f32::INFINITY,
    ];
    let (emin, emax) = (f.emin().max(-126), (max.log2().floor() as i32).min(127));
    let mut e = emin;
    while e <= emax {
        for k in [0u32, 1, 3] {
            let ulp = 2f64.powi(e - m);
            let lo = 2f64.powi(e) + f64::from(k) * ulp;
            v.push(lo as f32);
            if m <= 22 {
                v.push((lo + ulp * 0.5) as f32);
            }
        }
        e += 1.max((emax - emin) / 40);
    }
    let mut rng = Rng(seed);
    for _ in 0..n_random {
        let e = (emin - m - 4 + rng.below((emax - emin + m + 10) as u64) as i32).clamp(-149, 127);
        let mant = 1.0 + (rng.below(1 << 23) as f64) * 2f64.powi(-23);
        v.push((mant * 2f64.powi(e)) as f32);
    }
    for _ in 0..n_random / 4 {
        v.push(f32::from_bits(rng.next() as u32 & 0x7fff_ffff));
    }
    let neg: Vec<f32> = v.iter().map(|x| -x).collect();
    v.extend(neg);
    v.push(f32::NAN);
    v
}

/// A `[rows, cols]` matrix whose rows differ in magnitude (so tiles get different scales), with
/// ±0, NaN, +inf and a value far below the rest.
fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    let mut v: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let e = (i / cols) as i32 % 9 * 3 - 12 + rng.below(8) as i32;
            let mant = 1.0 + rng.below(1 << 23) as f64 * 2f64.powi(-23);
            let s = if rng.below(2) == 0 { 1.0 } else { -1.0 };
            (s * mant * 2f64.powi(e)) as f32
        })
        .collect();
    v[3] = 0.0;
    v[5] = -0.0;
    v[cols + 1] = f32::NAN;
    v[2 * cols + 7] = f32::INFINITY;
    v[4 * cols + 2] = 1e-30;
    v
}

// ---- Comparisons -----------------------------------------------------------------------------

fn assert_same_bits(what: &str, f: Format, input: &[f32], got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &x)) in got.iter().zip(want).zip(input).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if x.is_nan() && f.family == Family::NoSpecials {
            g == 0.0 && w == 0.0
        } else {
            g.to_bits() == w.to_bits()
        };
        assert!(
            ok,
            "{what}: element {i}: input {x:e} ({:#010x}): wgpu {g:e} ({:#010x}), host {w:e} ({:#010x})",
            x.to_bits(),
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Telemetry: counts and amax exact; the f32 device reductions (fractions, SNR) close.
fn assert_stats(what: &str, got: &Stats, want: &Stats) {
    assert_eq!(got.count, want.count, "{what}: count");
    assert_eq!(got.amax.to_bits(), want.amax.to_bits(), "{what}: amax");
    let close = |a: f64, b: f64, tol: f64| {
        (a.is_nan() && b.is_nan())
            || (a.is_infinite() && b.is_infinite() && a.signum() == b.signum())
            || (a - b).abs() <= tol * (1.0 + b.abs())
    };
    assert!(
        close(f64::from(got.scale), f64::from(want.scale), 1e-5),
        "{what}: scale {} vs {}",
        got.scale,
        want.scale
    );
    assert!(
        close(got.underflow, want.underflow, 1e-6),
        "{what}: underflow {} vs {}",
        got.underflow,
        want.underflow
    );
    assert!(
        close(got.saturation, want.saturation, 1e-6),
        "{what}: saturation {} vs {}",
        got.saturation,
        want.saturation
    );
    assert!(
        close(got.snr_db, want.snr_db, 1e-2) || (got.snr_db > 150.0 && want.snr_db > 150.0),
        "{what}: snr {} vs {}",
        got.snr_db,
        want.snr_db
    );
}

/// Quantize on the wgpu device and with the host kernel; compare values and telemetry.
fn check(dev: &WgpuDevice, what: &str, data: &[f32], shape: [usize; 2], spec: &QuantSpec) {
    let t = Tensor::<W, 2>::from_data(TensorData::new(data.to_vec(), shape), dev);
    let (q, stats) = quantize_tensor(t, spec)
        .unwrap_or_else(|e| panic!("{what}: device_supports accepted it, but: {e}"));
    let got = q.into_data().convert::<f32>().into_vec::<f32>().unwrap();
    let mut want = data.to_vec();
    let want_stats = fp8_formats::quantize(&mut want, &shape, spec);
    assert_same_bits(what, spec.cast.format, data, &got, &want);
    assert_stats(what, &stats, &want_stats);
}

// ---- Device quantization ---------------------------------------------------------------------

/// Every named format × every rounding the device supports × saturation × subnormals, unscaled.
/// Formats or roundings it does not support are checked through the fallback test below.
#[test]
fn casts_match_host_kernel_on_wgpu() {
    let Some(dev) = wgpu_or_skip("casts_match_host_kernel_on_wgpu") else {
        return;
    };
    let (mut checked, mut fell_back) = (0, Vec::new());
    for (name, f) in Format::named() {
        let v = values(
            f,
            7 + u64::from(f.exp_bits) * 31 + u64::from(f.man_bits),
            500,
        );
        let n = v.len();
        for rounding in [
            Rounding::NearestEven,
            Rounding::TowardZero,
            Rounding::NearestAway,
            Rounding::Stochastic,
        ] {
            for saturate in [false, true] {
                for subnormals in [true, false] {
                    let spec = QuantSpec::cast(
                        CastSpec::new(f)
                            .with_rounding(rounding)
                            .with_saturate(saturate)
                            .with_subnormals(subnormals),
                    );
                    let what = format!("{name} {rounding} sat={saturate} sub={subnormals}");
                    if let Err(why) = device_supports(&spec, &[1, n]) {
                        // The hook falls back to the host kernel: same values as on the CPU.
                        let (got, _) = hook::<W>(&dev, &v, [1, n], spec, true);
                        let (want, _) =
                            hook::<NdArray>(&Default::default(), &v, [1, n], spec, false);
                        assert_same_bits(&what, f, &v, &got, &want);
                        fell_back.push(format!("{what} ({why})"));
                        continue;
                    }
                    check(&dev, &what, &v, [1, n], &spec);
                    checked += 1;
                }
            }
        }
    }
    eprintln!("on the host (checked against the CPU hook): {fell_back:#?}");
    // Every named format but e8m0, the three deterministic roundings, 2 × 2 flags, on the device.
    let formats = Format::named()
        .filter(|(_, f)| f.family != Family::E8m0)
        .count();
    assert_eq!(
        checked,
        formats * 3 * 4,
        "the device path should cover these casts"
    );
}

fn schemes() -> Vec<(&'static str, Scaling)> {
    vec![
        ("given 3.7", Scaling::Tensor(TensorScale::Given(3.7))),
        (
            "given 2^-10",
            Scaling::Tensor(TensorScale::Given(pow2(-10))),
        ),
        ("given 1e30", Scaling::Tensor(TensorScale::Given(1e30))),
        (
            "current",
            Scaling::Tensor(TensorScale::Current { pow2: false }),
        ),
        (
            "current pow2",
            Scaling::Tensor(TensorScale::Current { pow2: true }),
        ),
        ("row", Scaling::Row { pow2: false }),
        ("col pow2", Scaling::Col { pow2: true }),
        (
            "block 1x16",
            Scaling::Block {
                rows: 1,
                cols: 16,
                pow2: false,
            },
        ),
        (
            "block 4x32 pow2",
            Scaling::Block {
                rows: 4,
                cols: 32,
                pow2: true,
            },
        ),
        (
            "block 128x128 (clamped)",
            Scaling::Block {
                rows: 128,
                cols: 128,
                pow2: false,
            },
        ),
        ("mx floor", Scaling::MX),
        (
            "mx ceil",
            Scaling::Mx {
                block: 32,
                rule: MxRule::Ceil,
                axis: BlockAxis::Cols,
            },
        ),
        (
            "mx rceil",
            Scaling::Mx {
                block: 32,
                rule: MxRule::Rceil,
                axis: BlockAxis::Cols,
            },
        ),
        (
            "mx rows",
            Scaling::Mx {
                block: 4,
                rule: MxRule::Floor,
                axis: BlockAxis::Rows,
            },
        ),
    ]
}

/// Every scaling scheme the device supports, on the fp8/fp6/fp4/bf16 element formats, with a
/// tile of zeros (scale of an all-zero tile) and specials in the data.
#[test]
fn scalings_match_host_kernel_on_wgpu() {
    let Some(dev) = wgpu_or_skip("scalings_match_host_kernel_on_wgpu") else {
        return;
    };
    let (rows, cols) = (12, 64);
    let data = matrix(rows, cols, 3);
    let mut zero_tile = data.clone();
    zero_tile[..32].iter_mut().for_each(|x| *x = 0.0);
    let formats = [
        Format::FLOAT8_E4M3FN,
        Format::FLOAT8_E5M2,
        Format::FLOAT8_E4M3FNUZ,
        Format::FLOAT6_E3M2FN,
        Format::FLOAT6_E2M3FN,
        Format::FLOAT4_E2M1FN,
        Format::BFLOAT16,
    ];
    for (label, scaling) in schemes() {
        for f in formats {
            for rounding in [Rounding::NearestEven, Rounding::TowardZero] {
                for d in [&data, &zero_tile] {
                    let spec = QuantSpec {
                        cast: CastSpec::new(f).with_rounding(rounding),
                        scaling,
                    };
                    assert_eq!(device_supports(&spec, &[rows, cols]), Ok(()), "{label}");
                    check(
                        &dev,
                        &format!("{label} {f} {rounding}"),
                        d,
                        [rows, cols],
                        &spec,
                    );
                }
            }
        }
    }
}

/// One spec for every (site, role).
struct Fixed(QuantSpec);
impl Recipe for Fixed {
    fn spec(&self, _: &str, _: Role, _: u64) -> Option<QuantSpec> {
        Some(self.0)
    }
}

/// The recipe hook's result on backend `B`: `device_path` picks `quantize_via_device` (the GPU
/// backends' hook) or `quantize_via_host`.
fn hook<B: Backend>(
    dev: &B::Device,
    data: &[f32],
    shape: [usize; 2],
    spec: QuantSpec,
    device_path: bool,
) -> (Vec<f32>, Stats) {
    let ctx = PrecisionContext::new(Box::new(Fixed(spec))).shared();
    let _g = activate(ctx.clone());
    let t = Tensor::<B, 2>::from_data(TensorData::new(data.to_vec(), shape), dev);
    let p = t.into_primitive().tensor();
    let q = if device_path {
        quantize_via_device::<B>(p, "s", Role::X)
    } else {
        quantize_via_host::<B>(p, "s", Role::X)
    };
    let q = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(q));
    let tel = ctx.lock().unwrap().end_step();
    (
        q.into_data().into_vec::<f32>().unwrap(),
        tel[&("s".to_string(), Role::X)],
    )
}

/// The specs `device_supports` rejects, with a shape that shows why.
fn fallback_specs() -> Vec<(&'static str, QuantSpec, [usize; 2])> {
    let c = CastSpec::new(Format::FLOAT8_E4M3FN);
    let fp4 = CastSpec::new(Format::FLOAT4_E2M1FN);
    vec![
        (
            "stochastic rounding e4m3",
            QuantSpec::cast(c.with_rounding(Rounding::Stochastic).with_seed(9)),
            [8, 64],
        ),
        (
            "stochastic rounding e5m2 sat",
            QuantSpec::cast(
                CastSpec::new(Format::FLOAT8_E5M2)
                    .with_rounding(Rounding::Stochastic)
                    .with_saturate(true)
                    .with_seed(3),
            ),
            [8, 64],
        ),
        (
            "e8m0 elements",
            QuantSpec::cast(CastSpec::new(Format::FLOAT8_E8M0FNU)),
            [8, 64],
        ),
        (
            "nvfp4",
            QuantSpec {
                cast: fp4,
                scaling: Scaling::Nvfp4 {
                    axis: BlockAxis::Cols,
                },
            },
            [8, 64],
        ),
        (
            "mx even",
            QuantSpec {
                cast: c,
                scaling: Scaling::Mx {
                    block: 32,
                    rule: MxRule::Even,
                    axis: BlockAxis::Cols,
                },
            },
            [8, 64],
        ),
        (
            "ragged mx (40 cols)",
            QuantSpec {
                cast: c,
                scaling: Scaling::MX,
            },
            [8, 40],
        ),
        (
            "ragged block 3x16 (8 rows)",
            QuantSpec {
                cast: c,
                scaling: Scaling::Block {
                    rows: 3,
                    cols: 16,
                    pow2: false,
                },
            },
            [8, 64],
        ),
    ]
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
    let mut rng = Rng(seed);
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
