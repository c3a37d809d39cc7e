//! Quantization with burn tensor operations, on the tensor's own device: the GPU path.
//!
//! [`quantize_via_host`](super::quantize_via_host) copies a tensor to host memory, runs the
//! fp8-formats slice kernel and copies it back. On a GPU that round trip dominates a step, so
//! this module expresses the same quantize → dequantize with burn ops that run where the tensor
//! lives, and reads back only a handful of scalars of telemetry.
//!
//! # Why arithmetic, not bit manipulation
//!
//! The host kernel rounds on the f32 bit pattern. burn 0.21 has no float↔int *bitcast* (only
//! value conversions), so here every step is exact f32 arithmetic instead:
//!
//! - **Exponent.** `p = 2^floor(log2 |y|)` and `t = |y| / p ∈ [1, 2)` come from a ladder of
//!   compare-and-scale steps by constant powers of two (64, 32, …, 1 down; 64, 64, 32, …, 1 up),
//!   each of which is exact. `log2` is not used: it is not exact at powers of two on every
//!   device, and one wrong exponent would be a wrong value.
//! - **Rounding.** In the target's normal range the result is `r(t·2^m) · 2^−m · p`; below it
//!   the quantum is the constant `q = 2^(emin−m)` and the result is `r(|y|/q) · q`. Both
//!   arguments of `r` are exact, and `r` is built from `floor` and the exact fraction
//!   `d = v − floor(v)`: toward zero keeps `floor(v)`, nearest-away rounds up when `d ≥ ½`,
//!   nearest-even when `d > ½` or `d = ½` and the target code is odd (the parity of `floor(v)`,
//!   or of the exponent code when the format has no mantissa bits). burn's own `round` is not
//!   relied on, so backends that round halves differently cannot change results.
//! - **Specials** are patched with selects in the host kernel's order: zero sign, overflow,
//!   ±inf, NaN. The sign of a zero result is that of `y·0`, which keeps −0.
//!
//! On the CPU backends this path equals [`fp8_formats::quantize`] bit for bit (values; NaN
//! payloads aside): `crates/core/tests/device_quantize.rs` checks every named format, rounding,
//! saturation, subnormal and scaling combination covered here.
//!
//! # What falls back to the host
//!
//! [`device_supports`] says why a spec is not handled; [`quantize_via_device`] then uses the
//! host path, so results are always right, only slower:
//! - stochastic rounding (its counter-based hash needs wrapping 32-bit integer multiplies,
//!   which burn's int tensors do not guarantee: NdArray's are i64 with overflow checks in debug
//!   builds and CUDA's i32);
//! - the e8m0 element format (a scale format, cast by a scalar path on the host too);
//! - NVFP4 scaling and the MX `Even` rule;
//! - ragged tiles (a block size that does not divide the view's rows or columns).
//!
//! # Known differences
//!
//! - The sign of a NaN is invisible without a bitcast: formats without NaN (float6/float4)
//!   map NaN to a zero of the opposite sign on the host; here to −0 (right for the usual
//!   positive NaN).
//! - Telemetry sums (underflow and saturation counts, SNR) are device reductions in f32, in the
//!   device's order: equal to the host's up to rounding, not bit for bit. `amax` is exact.

use crate::context::{active_spec, with_active};
use crate::Role;
use burn::tensor::{Bool, Tensor, TensorPrimitive};
use burn_backend::tensor::FloatTensor;
use burn_backend::{Backend, DType, Shape, TensorMetadata};
use fp8_formats::{Family, Format, MxRule, QuantSpec, Rounding, Scaling, Stats, TensorScale};

/// Why a spec (or shape) is not quantized on the device; [`quantize_via_device`] then falls back
/// to the host kernel.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Unsupported {
    #[error("rounding {0} is not implemented on the device")]
    Rounding(Rounding),
    #[error("format {0} (e8m0) is not implemented on the device")]
    E8m0(Format),
    #[error("scaling {0:?} is not implemented on the device")]
    Scaling(Scaling),
    #[error("tiles of {tile:?} do not divide the [rows, cols] view {view:?}")]
    Ragged {
        tile: (usize, usize),
        view: (usize, usize),
    },
}

/// `[rows, cols]`: the last dimension is `cols`, the rest fold into `rows` (as fp8-formats).
fn view2d(shape: &[usize]) -> (usize, usize) {
    let cols = shape.last().copied().unwrap_or(1).max(1);
    let n: usize = shape.iter().product();
    (n / cols, cols)
}

/// The tile `(tr, tc)` of a scaling scheme over the view, clamped as the host kernel does.
fn tile(scaling: &Scaling, rows: usize, cols: usize) -> Result<(usize, usize), Unsupported> {
    let (tr, tc) = match *scaling {
        Scaling::None | Scaling::Tensor(_) => (rows, cols),
        Scaling::Row { .. } => (1, cols),
        Scaling::Col { .. } => (rows, 1),
        Scaling::Block {
            rows: br, cols: bc, ..
        } => (br, bc),
        Scaling::Mx {
            rule: MxRule::Even, ..
        }
        | Scaling::Nvfp4 { .. } => return Err(Unsupported::Scaling(*scaling)),
        Scaling::Mx { block, axis, .. } => axis.tile(block),
    };
    let (tr, tc) = (tr.min(rows).max(1), tc.min(cols).max(1));
    if !rows.is_multiple_of(tr) || !cols.is_multiple_of(tc) {
        return Err(Unsupported::Ragged {
            tile: (tr, tc),
            view: (rows, cols),
        });
    }
    Ok((tr, tc))
}

/// Can `spec` be applied on the device to a tensor of `shape`?
pub fn device_supports(spec: &QuantSpec, shape: &[usize]) -> Result<(), Unsupported> {
    let c = &spec.cast;
    if c.format.family == Family::E8m0 {
        return Err(Unsupported::E8m0(c.format));
    }
    if c.rounding == Rounding::Stochastic {
        return Err(Unsupported::Rounding(c.rounding));
    }
    let (rows, cols) = view2d(shape);
    tile(&spec.scaling, rows, cols).map(|_| ())
}

fn pow2(e: i32) -> f32 {
    2f64.powi(e) as f32
}

/// A special output value; `neg` is where the sign is negative.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Special {
    SignedMax,
    SignedInf,
    Nan,
    /// Zero with the sign opposite to the input's (NaN in formats without NaN; see module docs).
    FlippedZero,
}

/// Per-spec constants of the element cast (host scalars).
#[derive(Clone, Copy, Debug)]
struct Plan {
    m: i32,
    bias: i32,
    rounding: Rounding,
    max: f32,
    /// `2^emin` (emin clamped to f32's −126): below it the quantum is constant.
    min_normal: f32,
    /// `2^(m − emin)` in two exact factors (their product can exceed f32's range).
    sub_c1: f32,
    sub_c2: f32,
    /// `q = 2^(emin − m)`.
    q: f32,
    flush: bool,
    neg_zero: bool,
    overflow: Special,
    inf: Special,
    nan: Special,
}

impl Plan {
    fn new(spec: &fp8_formats::CastSpec) -> Plan {
        let f = spec.format;
        let m = i32::from(f.man_bits.min(23));
        let emin = f.emin().max(-126);
        let sat = spec.saturate;
        let overflow = if sat || spec.rounding == Rounding::TowardZero {
            Special::SignedMax
        } else {
            match f.family {
                Family::Ieee => Special::SignedInf,
                Family::Fn | Family::Fnuz | Family::E8m0 => Special::Nan,
                Family::NoSpecials => Special::SignedMax,
            }
        };
        let inf = if sat {
            Special::SignedMax
        } else if f.family == Family::Ieee {
            Special::SignedInf
        } else {
            overflow
        };
        let nan = match f.family {
            Family::NoSpecials => Special::FlippedZero,
            _ => Special::Nan,
        };
        let k = m - emin;
        let k1 = k.min(120);
        Plan {
            m,
            bias: f.bias(),
            rounding: spec.rounding,
            max: f.max(),
            min_normal: pow2(emin),
            sub_c1: pow2(k1),
            sub_c2: pow2(k - k1),
            q: pow2(emin - m),
            flush: !spec.subnormals,
            neg_zero: f.family.has_neg_zero(),
            overflow,
            inf,
            nan,
        }
    }
}

/// `x - 2·floor(x/2) == 1` for integer-valued `x`: exact.
fn is_odd<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D, Bool> {
    let half = x.clone().mul_scalar(0.5).floor();
    x.sub(half.mul_scalar(2.0)).equal_elem(1.0)
}

/// For positive `a` (f32 subnormals included; 0, inf and NaN give garbage the caller masks):
/// `(t, p, e)` with `p = 2^floor(log2 a)`, `t = a / p ∈ [1, 2)`, `e = floor(log2 a)`, all exact
/// (see the module docs). `e` is only built when asked for.
fn frexp<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    want_e: bool,
) -> (Tensor<B, D>, Tensor<B, D>, Option<Tensor<B, D>>) {
    let mut t = a;
    let mut p = t.ones_like();
    let mut e = want_e.then(|| t.zeros_like());
    for k in [64, 32, 16, 8, 4, 2, 1] {
        let c = t.clone().greater_equal_elem(pow2(k));
        t = t.clone().mask_where(c.clone(), t.mul_scalar(pow2(-k)));
        p = p.clone().mask_where(c.clone(), p.mul_scalar(pow2(k)));
        e = e.map(|e| e.clone().mask_where(c, e.add_scalar(k as f32)));
    }
    for k in [64, 64, 32, 16, 8, 4, 2, 1] {
        let c = t.clone().lower_elem(pow2(1 - k));
        t = t.clone().mask_where(c.clone(), t.mul_scalar(pow2(k)));
        p = p.clone().mask_where(c.clone(), p.mul_scalar(pow2(-k)));
        e = e.map(|e| e.clone().mask_where(c, e.sub_scalar(k as f32)));
    }
    (t, p, e)
}

/// `2^e` for integer-valued `e` in [−149, 127], exactly.
fn exp2_int<B: Backend, const D: usize>(e: Tensor<B, D>) -> Tensor<B, D> {
    let mut p = e.ones_like();
    let mut r = e.clone().abs();
    let neg = e.lower_elem(0.0);
    for k in [64, 64, 32, 16, 8, 4, 2, 1] {
        let c = r.clone().greater_equal_elem(k as f32);
        let up = p.clone().mul_scalar(pow2(k));
        let down = p.clone().mul_scalar(pow2(-k));
        let step = up.mask_where(neg.clone(), down);
        p = p.mask_where(c.clone(), step);
        r = r.clone().mask_where(c, r.sub_scalar(k as f32));
    }
    p
}

/// Round the non-negative, exact `v` to an integer by `plan.rounding`; `odd_code` says, for
/// nearest-even when the format has no mantissa bits, whether the lower neighbour's code is odd.
fn round_int<B: Backend, const D: usize>(
    v: Tensor<B, D>,
    rounding: Rounding,
    odd_code: Option<Tensor<B, D, Bool>>,
) -> Tensor<B, D> {
    let f = v.clone().floor();
    if rounding == Rounding::TowardZero {
        return f;
    }
    let d = v.sub(f.clone());
    let up = match rounding {
        Rounding::NearestAway => d.greater_equal_elem(0.5),
        _ => {
            let odd = odd_code.unwrap_or_else(|| is_odd(f.clone()));
            let tie = d.clone().equal_elem(0.5).bool_and(odd);
            d.greater_elem(0.5).bool_or(tie)
        }
    };
    f.clone().mask_where(up, f.add_scalar(1.0))
}

/// `value` where `mask`, with the sign of `y` for signed specials.
fn apply_special<B: Backend, const D: usize>(
    out: Tensor<B, D>,
    mask: Tensor<B, D, Bool>,
    special: Special,
    neg: &Tensor<B, D, Bool>,
    max: f32,
) -> Tensor<B, D> {
    let signed = |v: f32| out.full_like(v).mask_fill(neg.clone(), -v);
    let value = match special {
        Special::SignedMax => signed(max),
        Special::SignedInf => signed(f32::INFINITY),
        Special::Nan => out.full_like(f32::NAN),
        Special::FlippedZero => out.full_like(-0.0),
    };
    out.mask_where(mask, value)
}

/// Cast `y` (f32) element-wise: the device twin of the host kernel's `cast_bits`. Returns the
/// result and where a finite input overflowed.
fn cast<B: Backend, const D: usize>(
    y: Tensor<B, D>,
    plan: &Plan,
) -> (Tensor<B, D>, Tensor<B, D, Bool>) {
    let a = y.clone().abs();
    let finite = a.clone().is_finite();
    let nan = y.clone().is_nan();
    let inf = a.clone().is_inf();

    // Normal range of the target.
    let want_e = plan.m == 0 && plan.rounding == Rounding::NearestEven;
    let (t, p, e) = frexp(a.clone(), want_e);
    let odd_code = e.map(|e| is_odd(e.add_scalar(plan.bias as f32)));
    let v = t.mul_scalar(pow2(plan.m));
    let normal = round_int(v, plan.rounding, odd_code)
        .mul_scalar(pow2(-plan.m))
        .mul(p);

    // Subnormal range of the target: constant quantum.
    let v = a.clone().mul_scalar(plan.sub_c1).mul_scalar(plan.sub_c2);
    let sub = round_int(v, plan.rounding, None).mul_scalar(plan.q);

    let is_sub = a.clone().lower_elem(plan.min_normal);
    let mut mag = normal.mask_where(is_sub, sub);
    if plan.flush {
        let below = mag.clone().lower_elem(plan.min_normal);
        mag = mag.mask_fill(below, 0.0);
    }

    let over = finite.bool_and(mag.clone().greater_elem(plan.max));
    let neg = y.clone().lower_elem(0.0);
    let is_zero = mag.clone().equal_elem(0.0);
    let zero = if plan.neg_zero {
        // Signed zero: y·0 keeps the sign of y (finite here; other lanes are replaced below).
        y.clone().mul_scalar(0.0)
    } else {
        mag.zeros_like()
    };
    let mut out = mag
        .clone()
        .mask_where(neg.clone(), mag.neg())
        .mask_where(is_zero, zero);
    out = apply_special(out, over.clone(), plan.overflow, &neg, plan.max);
    out = apply_special(out, inf, plan.inf, &neg, plan.max);
    out = apply_special(out, nan, plan.nan, &neg, plan.max);
    (out, over)
}

/// Per-tile scales over the 4-D tile view `[n_tr, tr, n_tc, tc]`, as `(scale, inverse)` of
/// shape `[n_tr, 1, n_tc, 1]`, computed from the tile amax as the host kernel does.
fn tile_scales<B: Backend>(
    amax: Tensor<B, 4>,
    scaling: &Scaling,
    format: Format,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let fmt_max = format.max();
    let positive = amax.clone().greater_elem(0.0);
    match *scaling {
        Scaling::Mx { rule, .. } => {
            let emax = fp8_formats::floor_log2(fmt_max);
            let shared = match rule {
                MxRule::Rceil => {
                    // `amax · (1/fmt_max)`, as the host kernel (and TE, torchao).
                    let r = amax.clone().mul_scalar(1.0 / fmt_max);
                    let (_, p, e) = frexp(r.clone(), true);
                    let e = e.expect("asked for e");
                    let not_pow2 = r.clone().not_equal(p);
                    let e = e.clone().mask_where(not_pow2, e.add_scalar(1.0));
                    let r_zero = r.equal_elem(0.0);
                    e.mask_fill(r_zero, -127.0)
                }
                _ => {
                    let (_, p, e) = frexp(amax.clone(), true);
                    let mut e = e.expect("asked for e").sub_scalar(emax as f32);
                    if rule == MxRule::Ceil {
                        let not_pow2 = amax.clone().not_equal(p);
                        e = e.clone().mask_where(not_pow2, e.add_scalar(1.0));
                    }
                    e
                }
            };
            let shared = shared
                .mask_fill(positive.bool_not(), 0.0)
                .clamp(-127.0, 127.0);
            let scale = exp2_int(shared.clone().neg());
            let inv = exp2_int(shared);
            (scale, inv)
        }
        Scaling::Tensor(TensorScale::Current { pow2: p2 })
        | Scaling::Row { pow2: p2 }
        | Scaling::Col { pow2: p2 }
        | Scaling::Block { pow2: p2, .. } => {
            // amax holds finite values only (the caller zeroed the others): fmt_max / amax,
            // amax 0 → 1, an infinite quotient → f32::MAX.
            let s = amax
                .full_like(fmt_max)
                .div(amax.clone())
                .mask_fill(positive.bool_not(), 1.0);
            let s = s.clone().mask_fill(s.is_inf(), f32::MAX);
            let s = if p2 {
                let (_, p, _) = frexp(s, false);
                let tiny = p.clone().lower_elem(f32::MIN_POSITIVE);
                p.mask_fill(tiny, f32::MIN_POSITIVE)
            } else {
                s
            };
            let inv = s.clone().recip();
            (s, inv)
        }
        _ => unreachable!("tile_scales: only current-amax and MX schemes have tile scales"),
    }
}

/// How many lanes of `mask` are set, as a one-element f32 tensor shaped like `like`'s reductions.
fn count<B: Backend, const D: usize>(
    like: &Tensor<B, D>,
    mask: Tensor<B, D, Bool>,
) -> Tensor<B, 1> {
    like.zeros_like().mask_fill(mask, 1.0).sum()
}

/// Quantize `t` by `spec` with burn tensor ops on its own device; see the [module docs](self).
///
/// Returns the quantized tensor (same shape and dtype) and its telemetry, or why the spec is
/// not supported on the device (nothing was computed then).
pub fn quantize_tensor<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    spec: &QuantSpec,
) -> Result<(Tensor<B, D>, Stats), Unsupported> {
    let shape = t.shape();
    let (prim, stats) =
        quantize_primitive::<B>(t.into_primitive().tensor(), shape.as_slice(), spec)?;
    Ok((Tensor::from_primitive(TensorPrimitive::Float(prim)), stats))
}

/// [`quantize_tensor`] on a backend primitive of any rank.
pub fn quantize_primitive<B: Backend>(
    t: FloatTensor<B>,
    shape: &[usize],
    spec: &QuantSpec,
) -> Result<(FloatTensor<B>, Stats), Unsupported> {
    device_supports(spec, shape)?;
    let n: usize = shape.iter().product();
    if n == 0 {
        let stats = Stats {
            scale: 1.0,
            snr_db: f64::INFINITY,
            ..Stats::default()
        };
        return Ok((t, stats));
    }
    let (rows, cols) = view2d(shape);
    let (tr, tc) = tile(&spec.scaling, rows, cols)?;
    let (n_tr, n_tc) = (rows / tr, cols / tc);

    let dtype = t.dtype();
    let x = B::float_reshape(t, Shape::new([n_tr, tr, n_tc, tc]));
    let x = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
    let x = if dtype == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    };

    let mut cast_spec = spec.cast;
    if spec.scaling != Scaling::None {
        cast_spec.saturate = true;
    }
    let plan = Plan::new(&cast_spec);
    let finite_x = x.clone().is_finite();

    // Scales: none, a given scalar, or one per tile.
    let (y, inv, scale_mean, tensor_scale) = match spec.scaling {
        Scaling::None => (x.clone(), None, None, Some(1.0)),
        Scaling::Tensor(TensorScale::Given(s)) => (
            x.clone().mul_scalar(s),
            Some(Inv::Scalar(1.0 / s)),
            None,
            Some(s),
        ),
        ref scaling => {
            let amax = x
                .clone()
                .abs()
                .mask_fill(finite_x.clone().bool_not(), 0.0)
                .max_dim(3)
                .max_dim(1);
            let (s, inv) = tile_scales(amax, scaling, cast_spec.format);
            // The mean of the tile scales (what the host reports), summed pre-divided so that
            // scales near f32::MAX do not overflow the f32 sum.
            let sum = s.clone().div_scalar((n_tr * n_tc) as f32).sum();
            (x.clone().mul(s), Some(Inv::Tiles(inv)), Some(sum), None)
        }
    };
    let y_nonfinite = y.clone().is_finite().bool_not();
    let (qc, over) = cast(y, &plan);
    let q = match inv {
        None => qc,
        Some(Inv::Scalar(i)) => qc.mul_scalar(i),
        Some(Inv::Tiles(i)) => qc.mul(i),
    };

    // Telemetry as a few reductions, read back together.
    let ax = x.clone().abs().mask_fill(finite_x.clone().bool_not(), 0.0);
    let qa = q.clone().abs();
    let q_zero = qa.clone().equal_elem(0.0);
    let under = count(
        &x,
        finite_x
            .clone()
            .bool_and(ax.clone().not_equal_elem(0.0))
            .bool_and(q_zero),
    );
    let sat = count(&x, finite_x.clone().bool_and(over.bool_or(y_nonfinite)));
    let used = finite_x.bool_and(qa.is_finite()).bool_not();
    let x0 = x.clone().mask_fill(used.clone(), 0.0);
    let e0 = x.sub(q.clone()).mask_fill(used, 0.0);
    let sx2 = x0.clone().mul(x0).sum();
    let se2 = e0.clone().mul(e0).sum();
    let amax = ax.max().reshape([1]);
    let scale_mean = scale_mean.unwrap_or_else(|| amax.zeros_like());
    let scalars = Tensor::cat(vec![amax, under, sat, sx2, se2, scale_mean], 0)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("telemetry scalars read back as f32");
    let [amax, under, sat, sx2, se2, scale_mean]: [f32; 6] =
        scalars.try_into().expect("six telemetry scalars");
    let scale = tensor_scale.unwrap_or(scale_mean);
    let nf = n as f64;
    let stats = Stats {
        amax,
        scale,
        underflow: f64::from(under) / nf,
        saturation: f64::from(sat) / nf,
        snr_db: if se2 == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (f64::from(sx2) / f64::from(se2)).log10()
        },
        count: n as u64,
    };

    let q = if dtype == DType::F32 {
        q
    } else {
        q.cast(dtype)
    };
    let q = B::float_reshape(q.into_primitive().tensor(), Shape::from(shape.to_vec()));
    Ok((q, stats))
}

enum Inv<B: Backend> {
    Scalar(f32),
    Tiles(Tensor<B, 4>),
}

/// The device twin of [`quantize_via_host`](super::quantize_via_host): quantize a backend
/// tensor for `(site, role)` under the active recipe with [`quantize_primitive`], record the
/// telemetry in the active context, and fall back to the host kernel when the spec is not
/// supported on the device. Returns `t` untouched when the recipe keeps `(site, role)` in f32.
pub fn quantize_via_device<B: Backend>(
    t: FloatTensor<B>,
    site: &str,
    role: Role,
) -> FloatTensor<B> {
    let Some(spec) = active_spec(site, role) else {
        return t;
    };
    let shape = t.shape().to_vec();
    if device_supports(&spec, &shape).is_err() {
        return super::quantize_via_host::<B>(t, site, role);
    }
    let (q, stats) = quantize_primitive::<B>(t, &shape, &spec).expect("device_supports said yes");
    with_active(|c| c.record(site, role, &stats));
    q
}
