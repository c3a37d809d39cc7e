//! The device quantization test tables, shared by `device_quantize.rs` (the device path on the
//! CPU backends) and `wgpu_device.rs` (on a wgpu device): inputs, the specs to run, and the
//! bit-for-bit comparison with the host kernel (`fp8_formats::quantize`).
//!
//! Values are compared by `to_bits()`; NaN results by NaN-ness only (payloads may differ), and a
//! NaN input in a format without NaN by "is zero" (the device path cannot see a NaN's sign; see
//! the `fp8_core::precision::device` docs).

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_backend::Backend;
use fp8_core::context::{activate, PrecisionContext};
use fp8_core::precision::device::{device_supports, quantize_tensor, Unsupported};
use fp8_core::precision::{quantize_via_device, quantize_via_host};
use fp8_core::{Recipe, Role};
use fp8_formats::rng::SplitMix64;
use fp8_formats::{
    BlockAxis, CastSpec, Family, Format, MxRule, QuantSpec, Rounding, Scaling, Stats, TensorScale,
};

// ---- Inputs ----------------------------------------------------------------------------------

/// Test inputs from the workspace's SplitMix64, so the tests need no extra dependency.
pub struct Rng(SplitMix64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }
    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub fn pow2(e: i32) -> f32 {
    2f64.powi(e) as f32
}

/// Edge values of `f` (both signs): zeros, subnormals and their midpoints, min normal, max and
/// around it, midpoints between neighbours across the range, f32 values beyond the range,
/// f32 subnormals, ±inf and NaN; then random values of every magnitude near the format's range
/// and random f32 bit patterns (positive NaNs only: see the module docs).
pub fn values(f: Format, seed: u64, n_random: usize) -> Vec<f32> {
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

/// Scaled data: a [rows, cols] matrix of mixed magnitudes with a few specials.
pub fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
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

// ---- Comparisons -----------------------------------------------------------------------------

/// Compare `got` (device) with `want` (host) element by element, by bits.
#[track_caller]
pub fn assert_same_bits(what: &str, f: Format, input: &[f32], got: &[f32], want: &[f32]) {
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
            "{what}: element {i}: input {x:e} ({:#010x}): device {g:e} ({:#010x}), host {w:e} ({:#010x})",
            x.to_bits(),
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Telemetry: counts and amax exact; the f32 device reductions (fractions, SNR) close.
#[track_caller]
pub fn assert_stats(what: &str, got: &Stats, want: &Stats) {
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

/// Quantize on device `B` and with the host kernel; compare values and telemetry.
#[track_caller]
pub fn check<B: Backend>(
    device: &B::Device,
    what: &str,
    data: &[f32],
    shape: [usize; 2],
    spec: &QuantSpec,
) {
    let t = Tensor::<B, 2>::from_data(TensorData::new(data.to_vec(), shape), device);
    let (q, stats) = quantize_tensor(t, spec)
        .unwrap_or_else(|e| panic!("{what}: device_supports accepted it, but: {e}"));
    let got = q.into_data().convert::<f32>().into_vec::<f32>().unwrap();
    let mut want = data.to_vec();
    let want_stats = fp8_formats::quantize(&mut want, &shape, spec);
    assert_same_bits(what, spec.cast.format, data, &got, &want);
    assert_stats(what, &stats, &want_stats);
}

// ---- The tables ------------------------------------------------------------------------------

/// The roundings the device path implements; stochastic rounding falls back to the host.
pub const DEVICE_ROUNDINGS: [Rounding; 3] = [
    Rounding::NearestEven,
    Rounding::TowardZero,
    Rounding::NearestAway,
];

/// Called with (label, spec, input, reason) for a cast the device path does not take.
pub type OnUnsupported<'a> = dyn FnMut(&str, QuantSpec, &[f32], Unsupported) + 'a;

/// Every named format × every rounding × saturation × subnormals, unscaled, on `values` with
/// `n_random` random values: what `device_supports` accepts is checked on `B` against the host
/// kernel, the rest is handed to `unsupported` (label, spec, input, reason). Returns how many
/// casts ran on the device, and asserts that these are every named format but e8m0 × the
/// [`DEVICE_ROUNDINGS`] × 2 × 2.
pub fn casts_on<B: Backend>(
    device: &B::Device,
    n_random: usize,
    unsupported: &mut OnUnsupported,
) -> usize {
    let mut checked = 0;
    for (name, f) in Format::named() {
        let v = values(
            f,
            7 + u64::from(f.exp_bits) * 31 + u64::from(f.man_bits),
            n_random,
        );
        let n = v.len();
        for rounding in DEVICE_ROUNDINGS.into_iter().chain([Rounding::Stochastic]) {
            for saturate in [false, true] {
                for subnormals in [true, false] {
                    let spec = QuantSpec::cast(
                        CastSpec::new(f)
                            .with_rounding(rounding)
                            .with_saturate(saturate)
                            .with_subnormals(subnormals),
                    );
                    let what = format!("{name} {rounding} sat={saturate} sub={subnormals}");
                    match device_supports(&spec, &[1, n]) {
                        Ok(()) => {
                            check::<B>(device, &what, &v, [1, n], &spec);
                            checked += 1;
                        }
                        Err(why) => unsupported(what.as_str(), spec, &v[..], why),
                    }
                }
            }
        }
    }
    let formats = Format::named()
        .filter(|(_, f)| f.family != Family::E8m0)
        .count();
    assert_eq!(
        checked,
        formats * DEVICE_ROUNDINGS.len() * 4,
        "the device path should cover these casts"
    );
    checked
}

/// Generic formats the named list lacks: no mantissa bits (exponent-parity ties), wide
/// exponents, 23 mantissa bits with a short exponent, no-specials and fn variants.
pub fn generic_formats_on<B: Backend>(device: &B::Device) {
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

/// The scaling schemes the device path implements.
pub fn schemes() -> Vec<(&'static str, Scaling)> {
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

/// The element formats the scaling table runs on: fp8, fp6, fp4 and bf16.
pub const SCALED_FORMATS: [Format; 7] = [
    Format::FLOAT8_E4M3FN,
    Format::FLOAT8_E5M2,
    Format::FLOAT8_E4M3FNUZ,
    Format::FLOAT6_E3M2FN,
    Format::FLOAT6_E2M3FN,
    Format::FLOAT4_E2M1FN,
    Format::BFLOAT16,
];

/// Every scheme of [`schemes`] on every [`SCALED_FORMATS`] element format, nearest-even and
/// toward-zero, on a `[12, 64]` matrix with specials and on the same with an all-zero tile (the
/// scale of an all-zero tile).
pub fn scalings_on<B: Backend>(device: &B::Device) {
    let (rows, cols) = (12, 64);
    let data = matrix(rows, cols, 3);
    let mut zero_tile = data.clone();
    zero_tile[..32].iter_mut().for_each(|x| *x = 0.0);
    for (label, scaling) in schemes() {
        for f in SCALED_FORMATS {
            for rounding in [Rounding::NearestEven, Rounding::TowardZero] {
                for d in [&data, &zero_tile] {
                    let spec = QuantSpec {
                        cast: CastSpec::new(f).with_rounding(rounding),
                        scaling,
                    };
                    assert_eq!(device_supports(&spec, &[rows, cols]), Ok(()), "{label}");
                    check::<B>(
                        device,
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

// ---- The recipe hook -------------------------------------------------------------------------

/// One spec for every (site, role).
pub struct Fixed(pub QuantSpec);
impl Recipe for Fixed {
    fn spec(&self, _: &str, _: Role, _: u64) -> Option<QuantSpec> {
        Some(self.0)
    }
}

/// The recipe hook's result on backend `B`: `device_path` picks `quantize_via_device` (the GPU
/// backends' hook) or `quantize_via_host`.
pub fn hook<B: Backend>(
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
pub fn fallback_specs() -> Vec<(&'static str, QuantSpec, [usize; 2])> {
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
