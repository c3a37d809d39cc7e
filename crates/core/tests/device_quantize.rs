//! The device quantization path (`fp8_core::precision::device`) against the fp8-formats slice
//! kernel, bit for bit, on the CPU backends.
//!
//! The device path is what runs on a GPU, where nothing checks it; running the very same burn
//! ops on NdArray and Flex and comparing with the host kernel is what keeps it honest. With
//! `--features cuda` and `FP8_TEST_DEVICE=cuda:N` the same comparisons also run on that GPU
//! (scripts/gpu-check.sh does this).
//!
//! Values are compared by `to_bits()`; NaN results by NaN-ness only (payloads may differ), and a
//! NaN input in a format without NaN by "is zero" (the device cannot see a NaN's sign; see the
//! device module docs).

use burn::backend::{Flex, NdArray};
use burn::tensor::{Tensor, TensorData};
use burn_backend::Backend;
use fp8_core::context::{activate, PrecisionContext};
use fp8_core::precision::device::{device_supports, quantize_tensor, Unsupported};
use fp8_core::precision::{quantize_via_device, quantize_via_host};
use fp8_core::{Recipe, Role};
use fp8_formats::rng::SplitMix64;
use fp8_formats::{
    BlockAxis, CastSpec, Family, Format, MxRule, QuantSpec, Rounding, Scaling, Stats, TensorScale,
};

/// Test inputs from the workspace's SplitMix64, so the tests need no extra dependency.
struct Rng(SplitMix64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn pow2(e: i32) -> f32 {
    2f64.powi(e) as f32
}

/// Edge values of `f` (both signs): zeros, subnormals and their midpoints, min normal, max and
/// around it, midpoints between neighbours across the range, f32 values beyond the range,
/// f32 subnormals, ±inf and NaN; then random values of every magnitude near the format's range
/// and random f32 bit patterns (positive NaNs only: see the module docs).
fn values(f: Format, seed: u64, n_random: usize) -> Vec<f32> {
    let m = i32::from(f.man_bits);
    let max = f.max();
    let minn = f.min_normal();
    let mins = f.min_subnormal();
    let mut v = vec![
        0.0,
        mins,
        mins * 0.5,
        mins * 0.75,
        mins * 0.25,
        mins * 1.5,
        mins * 2.5,
        mins * 3.0,
        minn,
        minn * (1.0 - f32::EPSILON),
        minn * (1.0 + f32::EPSILON),
        minn * 0.5,
        minn - mins * 0.5,
        max,
        max * (1.0 + f32::EPSILON),
        max * (1.0 - f32::EPSILON),
        max * (1.0 + f.epsilon() * 0.25),
        max * (1.0 + f.epsilon() * 0.5),
        (f64::from(max) * (1.0 + 2f64.powi(-m - 1))) as f32,
        (f64::from(max) * (1.0 + 2f64.powi(-m - 2))) as f32,
        max * 2.0,
        1e30,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::MIN_POSITIVE * 0.5,
        1e-40,
        1e-45,
        1.0,
        1.5,
        1.0 + f.epsilon() * 0.5,
        1.0 + f.epsilon() * 1.5,
        3.0,
        f32::INFINITY,
    ];
    // Neighbours and midpoints over the exponent range (m ≤ 22 keeps midpoints exact in f32).
    let (emin, emax) = (f.emin().max(-126), (max.log2().floor() as i32).min(127));
    let mut e = emin;
    while e <= emax {
        for k in [0u32, 1, 2, 3] {
            let ulp = 2f64.powi(e - m);
            let lo = 2f64.powi(e) + f64::from(k) * ulp;
            v.push(lo as f32);
            if m <= 22 {
                v.push((lo + ulp * 0.5) as f32);
                v.push((lo + ulp * 0.25) as f32);
            }
        }
        e += 1.max((emax - emin) / 40);
    }
    let mut rng = Rng::new(seed);
    for _ in 0..n_random {
        let e = emin - m - 4 + rng.below((emax - emin + m + 10) as u64) as i32;
        let e = e.clamp(-149, 127);
        let mant = 1.0 + (rng.below(1 << 23) as f64) * 2f64.powi(-23);
        v.push((mant * 2f64.powi(e)) as f32);
    }
    for _ in 0..n_random / 4 {
        v.push(f32::from_bits(rng.next() as u32 & 0x7fff_ffff));
    }
    let neg: Vec<f32> = v.iter().map(|x| -x).collect();
    v.extend(neg);
    v.push(f32::NAN);
    v.push(pow2(-3));
    v
}

/// Compare `got` (device) with `want` (host) element by element.
fn assert_same(what: &str, f: Format, input: &[f32], got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
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
            "{what}: element {i}: input {x:e} ({:#010x}): device {g:e} ({:#010x}), host {w:e} ({:#010x})",
            x.to_bits(),
            g.to_bits(),
            w.to_bits()
        );
    }
}

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
    // SNR: the sums are f32 reductions in another order; a few tenths of a dB at most (and
    // both exact or both not).
    assert!(
        close(got.snr_db, want.snr_db, 1e-2) || (got.snr_db > 150.0 && want.snr_db > 150.0),
        "{what}: snr {} vs {}",
        got.snr_db,
        want.snr_db
    );
}

/// Quantize on device `B` and on the host; compare values and telemetry.
fn check<B: Backend>(
    device: &B::Device,
    what: &str,
    data: &[f32],
    shape: [usize; 2],
    spec: &QuantSpec,
) {
    let t = Tensor::<B, 2>::from_data(TensorData::new(data.to_vec(), shape), device);
    let (q, stats) = match quantize_tensor(t, spec) {
        Ok(r) => r,
        Err(e) => panic!("{what}: not supported on the device: {e}"),
    };
    let got = q.into_data().convert::<f32>().into_vec::<f32>().unwrap();
    let mut want = data.to_vec();
    let want_stats = fp8_formats::quantize(&mut want, &shape, spec);
    assert_same(what, spec.cast.format, data, &got, &want);
    assert_stats(what, &stats, &want_stats);
}

/// Every named format (but e8m0), nearest-even / toward-zero / nearest-away, saturation and
/// subnormals on and off, no scaling.
fn casts_on<B: Backend>(device: &B::Device) {
    for (name, f) in Format::named() {
        let cast = CastSpec::new(f);
        if f.family == Family::E8m0 {
            assert!(matches!(
                device_supports(&QuantSpec::cast(cast), &[4]),
                Err(Unsupported::E8m0(_))
            ));
            continue;
        }
        let v = values(
            f,
            7 + u64::from(f.exp_bits) * 31 + u64::from(f.man_bits),
            2000,
        );
        let n = v.len();
        for rounding in [
            Rounding::NearestEven,
            Rounding::TowardZero,
            Rounding::NearestAway,
        ] {
            for saturate in [false, true] {
                for subnormals in [true, false] {
                    let spec = QuantSpec::cast(
                        cast.with_rounding(rounding)
                            .with_saturate(saturate)
                            .with_subnormals(subnormals),
                    );
                    let what = format!("{name} {rounding} sat={saturate} sub={subnormals}");
                    check::<B>(device, &what, &v, [1, n], &spec);
                }
            }
        }
    }
}

/// Generic formats the named list lacks: no mantissa bits (exponent-parity ties), wide
/// exponents, 23 mantissa bits with a short exponent, no-specials and fn variants.
fn generic_formats_on<B: Backend>(device: &B::Device) {
    for name in [
        "e5m0", "e4m0fn", "e3m0", "e8m3", "e8m1", "e6m5", "e3m23", "e2m5ns", "e5m4fnuz", "e7m2fn",
        "e8m22",
    ] {
        let f: Format = name.parse().unwrap();
        let v = values(f, 99, 1000);
        let n = v.len();
        for rounding in [Rounding::NearestEven, Rounding::TowardZero] {
            for saturate in [false, true] {
                for subnormals in [true, false] {
                    let spec = QuantSpec::cast(
                        CastSpec::new(f)
                            .with_rounding(rounding)
                            .with_saturate(saturate)
                            .with_subnormals(subnormals),
                    );
                    let what = format!("{name} {rounding} sat={saturate} sub={subnormals}");
                    check::<B>(device, &what, &v, [1, n], &spec);
                }
            }
        }
    }
}

/// Scaled data: a [rows, cols] matrix of mixed magnitudes with a few specials.
fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut v: Vec<f32> = (0..rows * cols)
        .map(|i| {
            // Rows of different magnitudes, so tiles get different scales.
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
    v[rows * cols - 1] = 0.0;
    v
}

fn scalings_on<B: Backend>(device: &B::Device) {
    let (rows, cols) = (12, 64);
    let data = matrix(rows, cols, 3);
    let mut zero_tile = data.clone();
    zero_tile[..32].iter_mut().for_each(|x| *x = 0.0);
    let schemes: Vec<(&str, Scaling)> = vec![
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
            "block 128x128",
            Scaling::Block {
                rows: 128,
                cols: 128,
                pow2: false,
            },
        ),
        ("mx", Scaling::MX),
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
    ];
    let formats = [
        Format::FLOAT8_E4M3FN,
        Format::FLOAT8_E5M2,
        Format::FLOAT8_E4M3FNUZ,
        Format::FLOAT6_E3M2FN,
        Format::FLOAT6_E2M3FN,
        Format::FLOAT4_E2M1FN,
        Format::BFLOAT16,
    ];
    for (label, scaling) in &schemes {
        for f in formats {
            for rounding in [Rounding::NearestEven, Rounding::TowardZero] {
                for d in [&data, &zero_tile] {
                    let spec = QuantSpec {
                        cast: CastSpec::new(f).with_rounding(rounding),
                        scaling: *scaling,
                    };
                    let what = format!("{label} {f} {rounding}");
                    check::<B>(device, &what, d, [rows, cols], &spec);
                }
            }
        }
    }
}

#[test]
fn casts_match_host_kernel_ndarray() {
    casts_on::<NdArray>(&Default::default());
}

#[test]
fn casts_match_host_kernel_flex() {
    casts_on::<Flex>(&Default::default());
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
    assert_same("rank 3", spec.cast.format, &data, &got, &want);

    let e = Tensor::<NdArray, 2>::from_data(TensorData::new(Vec::<f32>::new(), [0, 4]), &device);
    let (q, s) = quantize_tensor(e, &spec).unwrap();
    assert_eq!(q.dims(), [0, 4]);
    assert_eq!(s.count, 0);
}

#[test]
fn unsupported_specs_are_reported() {
    let c = CastSpec::new(Format::FLOAT8_E4M3FN);
    let sr = QuantSpec::cast(c.with_rounding(Rounding::Stochastic));
    assert!(matches!(
        device_supports(&sr, &[4, 4]),
        Err(Unsupported::Rounding(_))
    ));
    let ragged = QuantSpec {
        cast: c,
        scaling: Scaling::MX,
    };
    assert!(matches!(
        device_supports(&ragged, &[4, 40]),
        Err(Unsupported::Ragged { .. })
    ));
    let nv = QuantSpec {
        cast: c,
        scaling: Scaling::Nvfp4 {
            axis: BlockAxis::Cols,
        },
    };
    assert!(matches!(
        device_supports(&nv, &[4, 32]),
        Err(Unsupported::Scaling(_))
    ));
}

/// One spec for every (site, role).
struct Fixed(QuantSpec);
impl Recipe for Fixed {
    fn spec(&self, _: &str, _: Role, _: u64) -> Option<QuantSpec> {
        Some(self.0)
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
        let run = |device_path: bool| {
            let ctx = PrecisionContext::new(Box::new(Fixed(spec))).shared();
            let _g = activate(ctx.clone());
            let t =
                Tensor::<NdArray, 2>::from_data(TensorData::new(data.clone(), [8, 40]), &device);
            let p = t.into_primitive().tensor();
            let q = if device_path {
                quantize_via_device::<NdArray>(p, "s", Role::X)
            } else {
                quantize_via_host::<NdArray>(p, "s", Role::X)
            };
            let q = Tensor::<NdArray, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(q));
            let tel = ctx.lock().unwrap().end_step();
            (
                q.into_data().into_vec::<f32>().unwrap(),
                tel[&("s".to_string(), Role::X)],
            )
        };
        let (got, gs) = run(true);
        let (want, ws) = run(false);
        assert_same("hook", c.format, &data, &got, &want);
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
    casts_on::<C>(&device);
    generic_formats_on::<C>(&device);
    scalings_on::<C>(&device);
}
