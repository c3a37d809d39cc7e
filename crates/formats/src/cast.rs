//! One element's cast, f32 → format → f32, branch-free on the bit pattern: the [`CastSpec`],
//! the constants derived from it, and [`cast_scalar`]. The loops that apply it to slices are in
//! `simd`.
//!
//! # How a value is rounded
//!
//! Every format here is a subset of f32 (exponent ≤ 8 bits, mantissa ≤ 23 bits), so the cast
//! result is itself an f32 and we never leave f32/u32 arithmetic:
//!
//! - **Normal range of the target** (`|x| ≥ min_normal`): the target keeps the top `m` of the 23
//!   f32 mantissa bits, so rounding is integer arithmetic on the magnitude bits `a` with the
//!   *constant* shift `23 − m`: `kept = a >> sh`, `rem = a & mask`, then `(kept + up) << sh`.
//!   A carry out of the mantissa bumps the exponent, which is exactly right (IEEE bit patterns
//!   of one sign are ordered like the values).
//! - **Subnormal range of the target** (`|x| < min_normal`): the quantum is the constant
//!   `q = min_subnormal`, so `(|x| + M) − M` with `M = q·2^23` rounds `|x|` to a multiple of `q`
//!   in the FPU's own nearest-even mode (the sum lies in `[M, 2M)`, whose f32 spacing is `q`).
//!   Truncation, ties-away and stochastic rounding are corrections of that result. This avoids
//!   a per-element variable shift, which x86 cannot vectorize before AVX2.
//! - **Nearest-even for most formats, in one step**: with `C = 2^(e − m + 23)` for the biased
//!   f32 exponent `e` of `|x|`, raised to `M` below the target's min normal, `(|x| + C) − C`
//!   rounds `|x|` to the target's quantum in either range by the FPU alone (the sum lies in
//!   `[C, 2C)`, whose spacing is that quantum). Five operations replace both paths above; it is
//!   used when it gives the same bits: `m ≥ 1` (with no mantissa the target code's parity is not
//!   the f32 sum's), ties to even (not e8m0's ties up), and a format maximum below `2^(105 + m)`,
//!   so that every `|x|` whose `C` would leave f32's range (`e ≥ 232 + m`) overflows anyway
//!   (there `C` is inf or wraps to a tiny negative, and the result is NaN or `|x|`, above max).
//!   That is every 4-, 6- and 8-bit format; formats with f32's 8 exponent bits keep the
//!   integer path.
//! - **Saturating nearest-even** (scaled casts and TE's satfinite) clamps `|x|` to the format's
//!   max before the one-step rounding: every larger value, inf included, saturates to max
//!   anyway, and max lies on the grid, so no result can overflow and the patches shrink to NaN,
//!   −0 and flush. The saturation flag is a compare with the smallest magnitude that rounds
//!   above max.
//! - Both paths are computed for every element and selected with a mask, then overflow, NaN,
//!   inf, −0 and flush-to-zero are patched with further selects. There are no data-dependent
//!   branches, so LLVM vectorizes the loops over it, which are compiled once per SIMD level
//!   and chosen at run time (see [`crate::cpu`]).
//!
//! # Special values (matching ml_dtypes 0.6 bit for bit for the default rounding)
//!
//! - Overflow (after rounding, magnitude > max): IEEE → ±inf, `fn`/`fnuz` → NaN, no-specials
//!   → ±max. With `saturate` (TE's satfinite) → ±max for every family, ±inf inputs included.
//!   With [`Rounding::TowardZero`] a finite overflow gives ±max (IEEE 754 §7.4: round toward
//!   zero never rounds a finite value to infinity; this is also the paper's "values clamp").
//! - NaN → quiet NaN `0x7fc00000` with the input's sign (`fnuz`: `0xffc00000`, the value of its
//!   single NaN code 0x80 as ml_dtypes decodes it). Formats without NaN: ml_dtypes turns NaN into
//!   a zero of the *opposite* sign; we do the same so the default cast is bit-exact.
//! - `fnuz` has no −0: results that round to zero are +0.
//! - e8m0 (unsigned powers of two, no zero): ties round up (as ml_dtypes does), values below
//!   2^−127 give 2^−127, f32 subnormals round to the nearer of 2^−127 and 2^−126 like every
//!   other value, and zero, negatives, inf and NaN give NaN. It is a scale format, so it takes a simple scalar
//!   path.
//! - Without subnormals, results below min_normal flush to signed zero (the value is rounded
//!   first, so a value that rounds up to min_normal survives).
//!
//! # Stochastic rounding
//!
//! The random bits of element `i` are a counter-based hash of `(seed, i)` (two murmur3
//! finalizer rounds, keyed by [`splitmix64`] of the seed), so results depend only on the seed and the
//! element index: the same for any thread count or chunking. The value rounds away from zero
//! with probability `rem / quantum`, resolved to 2^−31 in the subnormal range and exactly (the
//! `23 − m` dropped bits) in the normal range.

use crate::format::{Family, Format, Rounding};
use crate::rng::splitmix64;
use serde::{Deserialize, Serialize};

/// Everything an element-wise cast needs (no scaling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CastSpec {
    pub format: Format,
    pub rounding: Rounding,
    /// Seed for [`Rounding::Stochastic`]; ignored otherwise.
    pub seed: u64,
    /// Overflow clamps to ±max for every family (TE's "satfinite").
    pub saturate: bool,
    /// Keep subnormals; when false they flush to (signed) zero.
    pub subnormals: bool,
}

impl CastSpec {
    /// Nearest-even, no saturation, subnormals kept, seed 0: the ml_dtypes `astype` cast.
    pub fn new(format: Format) -> CastSpec {
        CastSpec {
            format,
            rounding: Rounding::NearestEven,
            seed: 0,
            saturate: false,
            subnormals: true,
        }
    }
    /// Builder: set the rounding.
    pub fn with_rounding(mut self, rounding: Rounding) -> CastSpec {
        self.rounding = rounding;
        self
    }
    /// Builder: set the stochastic-rounding seed.
    pub fn with_seed(mut self, seed: u64) -> CastSpec {
        self.seed = seed;
        self
    }
    /// Builder: set saturation.
    pub fn with_saturate(mut self, saturate: bool) -> CastSpec {
        self.saturate = saturate;
        self
    }
    /// Builder: keep or flush subnormals.
    pub fn with_subnormals(mut self, subnormals: bool) -> CastSpec {
        self.subnormals = subnormals;
        self
    }
}

const SIGN: u32 = 0x8000_0000;
const ABS: u32 = 0x7fff_ffff;
const INF: u32 = 0x7f80_0000;
const QNAN: u32 = 0x7fc0_0000;

pub(crate) const R_NEAREST: u8 = 0;
pub(crate) const R_ZERO: u8 = 1;
pub(crate) const R_AWAY: u8 = 2;
pub(crate) const R_STOCH: u8 = 3;
/// Nearest-even by the FPU in one step (see the module docs), for the formats where it gives
/// the bits of [`R_NEAREST`].
pub(crate) const R_NEAREST_FPU: u8 = 4;
/// [`R_NEAREST_FPU`] for a saturating cast: the magnitude is clamped to the format's max before
/// rounding (see the module docs), so nothing can overflow and only NaN, −0 and flush are
/// patched.
pub(crate) const R_NEAREST_SAT: u8 = 5;
/// Stochastic rounding of a saturating cast to a format [`R_NEAREST_FPU`] serves, by the FPU in
/// both ranges (see the module docs): the bits of [`R_STOCH`] in fewer operations.
pub(crate) const R_STOCH_SAT: u8 = 6;

/// The rounding code of `r` for format `f`.
pub(crate) fn rounding_code(r: Rounding, f: Format) -> u8 {
    match r {
        Rounding::NearestEven => {
            let m = u32::from(f.man_bits);
            let small_range = f.max().to_bits() < ((232 + m) << 23);
            if (1..=22).contains(&m) && f.family != Family::E8m0 && small_range {
                R_NEAREST_FPU
            } else {
                R_NEAREST
            }
        }
        Rounding::TowardZero => R_ZERO,
        Rounding::NearestAway => R_AWAY,
        Rounding::Stochastic => R_STOCH,
    }
}

/// A special-value output: `mag | ((sign & keep) ^ flip)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Special {
    mag: u32,
    keep: u32,
    flip: u32,
}

impl Special {
    const fn signed(mag: u32) -> Special {
        Special {
            mag,
            keep: SIGN,
            flip: 0,
        }
    }
    #[inline(always)]
    fn apply(self, sign: u32) -> u32 {
        self.mag | ((sign & self.keep) ^ self.flip)
    }
}

/// Per-call constants, derived once from a [`CastSpec`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Consts {
    /// `23 − m`: dropped mantissa bits in the normal range.
    sh: u32,
    mask: u32,
    /// Half of the quantum in `rem` units (2 when `sh == 0`, so that nothing rounds).
    half: u32,
    /// XOR into `kept` to get the parity of the target code (only matters when m = 0).
    parity_flip: u32,
    /// Biased f32 exponent of the target's min normal; smaller exponents take the subnormal path.
    e_min: u32,
    /// `q·2^23`, `q` = min subnormal.
    magic: f32,
    q: f32,
    /// `2^31 / q` as two factors (the product can exceed f32's range).
    frac_c1: f32,
    frac_c2: f32,
    pub(crate) max_bits: u32,
    flush_below: u32,
    zero_sign_keep: u32,
    overflow: Special,
    inf: Special,
    nan: Special,
    pub(crate) key: (u32, u32),
    pub(crate) e8m0: bool,
    pub(crate) identity: bool,
    /// The target's smallest normal exponent is f32's (8 exponent bits), so its subnormal
    /// quantum `2^(emin − m)` is exactly what the integer rounding of the normal path gives an
    /// f32 subnormal (`2^−149 · 2^(23 − m)`): the subnormal path can be skipped, with the same
    /// bits, for every rounding but stochastic (whose random bits are used differently there).
    pub(crate) sub_free: bool,
    pub(crate) rounding: u8,
    /// `(23 − m) << 23`: added to the exponent bits of `|x|` gives `C` of [`R_NEAREST_FPU`].
    fpu_shift: u32,
    /// The smallest magnitude (as bits) that rounds to nearest-even above the format's max: a
    /// finite input from here up overflows (the saturation count of [`R_NEAREST_SAT`]).
    over_from: u32,
    pub(crate) saturate: bool,
    nearest_ties_up: bool,
}

fn pow2(e: i32) -> f32 {
    2f64.powi(e) as f32
}

impl Consts {
    pub(crate) fn new(spec: &CastSpec) -> Consts {
        let f = spec.format;
        let m = u32::from(f.man_bits.min(23));
        let sh = 23 - m;
        let emin = f.emin().max(-126);
        let max_bits = f.max().to_bits();
        let sat = spec.saturate;
        let fam = f.family;
        let max = Special::signed(max_bits);
        let nan = Special::signed(QNAN);
        let overflow = if sat || spec.rounding == Rounding::TowardZero {
            max
        } else {
            match fam {
                Family::Ieee => Special::signed(INF),
                Family::Fn | Family::E8m0 => nan,
                Family::Fnuz => Special {
                    mag: 0xffc0_0000,
                    keep: 0,
                    flip: 0,
                },
                Family::NoSpecials => max,
            }
        };
        let inf = if sat {
            max
        } else {
            match fam {
                Family::Ieee => Special::signed(INF),
                _ => overflow,
            }
        };
        let nan = match fam {
            Family::Ieee | Family::Fn => nan,
            Family::Fnuz => Special {
                mag: 0xffc0_0000,
                keep: 0,
                flip: 0,
            },
            Family::NoSpecials => Special {
                mag: 0,
                keep: SIGN,
                flip: SIGN,
            },
            Family::E8m0 => Special {
                mag: QNAN,
                keep: 0,
                flip: 0,
            },
        };
        let parity_flip = if m == 0 {
            ((f.bias() - 127) & 1) as u32
        } else {
            0
        };
        let k = 31 + m as i32 - (emin - m as i32) - m as i32; // log2(2^31 / q) = 31 − (emin − m)
        let k = k.max(0);
        let k1 = k.min(120);
        let seed_mix = splitmix64(spec.seed);
        Consts {
            sh,
            mask: (1u32 << sh) - 1,
            half: if sh == 0 { 2 } else { 1 << (sh - 1) },
            parity_flip,
            e_min: (emin + 127) as u32,
            magic: pow2(emin - m as i32 + 23),
            q: pow2(emin - m as i32),
            frac_c1: pow2(k1),
            frac_c2: pow2(k - k1),
            max_bits,
            flush_below: if spec.subnormals {
                0
            } else {
                pow2(emin).to_bits()
            },
            zero_sign_keep: if fam.has_neg_zero() { SIGN } else { 0 },
            overflow,
            inf,
            nan,
            key: (seed_mix as u32, (seed_mix >> 32) as u32),
            e8m0: fam == Family::E8m0,
            identity: f == Format::FLOAT32 && spec.subnormals && !sat,
            sub_free: emin == -126 && fam != Family::E8m0 && spec.rounding != Rounding::Stochastic,
            rounding: match rounding_code(spec.rounding, f) {
                R_NEAREST_FPU if sat => R_NEAREST_SAT,
                R_STOCH if sat && rounding_code(Rounding::NearestEven, f) == R_NEAREST_FPU => {
                    R_STOCH_SAT
                }
                r => r,
            },
            fpu_shift: sh << 23,
            over_from: nearest_over_from(f),
            saturate: sat,
            nearest_ties_up: fam == Family::E8m0,
        }
    }
}

/// `over_from` of [`Consts`]: the midpoint between `f`'s max and the next value its exponent
/// would give, which itself rounds up (overflows) when max has an odd code, else stays.
fn nearest_over_from(f: Format) -> u32 {
    let max = f64::from(f.max());
    if !(max.is_finite() && max > 0.0) {
        return INF;
    }
    let quantum = 2f64.powi(max.log2().floor() as i32 - i32::from(f.man_bits.min(23)));
    let mid = (max + quantum / 2.0) as f32;
    let odd = (max / quantum) as u64 % 2 == 1;
    if f64::from(mid) != max + quantum / 2.0 {
        return INF; // not representable: a format as wide as f32 (never FPU-rounded)
    }
    if odd {
        mid.to_bits()
    } else {
        mid.to_bits() + 1
    }
}

#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// 32 random bits for element `index` (counter-based: no state).
#[inline(always)]
pub(crate) fn rand32(key: (u32, u32), index: u64) -> u32 {
    rand32_split(key.0, hi_key(key, index), index as u32)
}

/// The part of the hash that depends on the high half of the index (constant over 2^32 runs).
#[inline(always)]
pub(crate) fn hi_key(key: (u32, u32), index: u64) -> u32 {
    ((index >> 32) as u32).wrapping_mul(0x9E37_79B9) ^ key.1
}

/// [`rand32`] with the high-half part precomputed (what the vector loops use).
#[inline(always)]
pub(crate) fn rand32_split(k0: u32, hk: u32, lo: u32) -> u32 {
    fmix32(fmix32(lo ^ k0) ^ hk)
}

#[inline(always)]
fn sel(c: bool, a: u32, b: u32) -> u32 {
    // Written as a mask blend so that LLVM keeps it branch-free and vectorizes it.
    let m = 0u32.wrapping_sub(u32::from(c));
    (a & m) | (b & !m)
}

#[inline(always)]
fn self32(c: bool, a: f32, b: f32) -> f32 {
    f32::from_bits(sel(c, a.to_bits(), b.to_bits()))
}

/// Result of casting one value: output bits and whether a finite input overflowed.
#[inline(always)]
pub(crate) fn cast_bits<const R: u8>(x: u32, k: &Consts, rnd: u32) -> (u32, bool) {
    cast_bits_sub::<R, true>(x, k, rnd)
}

/// [`cast_bits`], with the subnormal path compiled out when `SUB` is false: only valid when
/// [`Consts::sub_free`] holds.
#[inline(always)]
pub(crate) fn cast_bits_sub<const R: u8, const SUB: bool>(
    x: u32,
    k: &Consts,
    rnd: u32,
) -> (u32, bool) {
    let sign = x & SIGN;
    let a = x & ABS;
    let e = a >> 23;

    if R == R_NEAREST_SAT {
        // Clamped first: every larger finite value and inf saturate to max anyway, and max is
        // a grid point, so the rounded value never exceeds it (NaN bits clamp too, and are
        // patched last).
        let ac = a.min(k.max_bits);
        let (af, c) = (f32::from_bits(ac), fpu_c(ac, k));
        let over = ((a as i32) >= (k.over_from as i32)) & ((a as i32) < (INF as i32));
        return (finish_saturated(((af + c) - c).to_bits(), sign, a, k), over);
    }
    if R == R_STOCH_SAT {
        // Clamped as for `R_NEAREST_SAT` (max rounds to itself: its remainder is 0). `C` as for
        // the one-step nearest gives the quantum `q = C·2^−23` of `|x|` in either range; `lo`
        // is `|x|` rounded down to it, and `(|x| − lo)·2^31/q` its 31-bit fraction, exact in
        // the normal range (`rem·2^(31−sh)`, so comparing it with `rnd >> 1` is comparing
        // `rem` with the top `sh` bits) and the subnormal path's own fraction below it.
        // `2^31/q = 2^54/C` is an integer subtraction on the bits.
        let ac = a.min(k.max_bits);
        let (af, c) = (f32::from_bits(ac), fpu_c(ac, k));
        // q = C·2^−23, and 2^31/q = 2^54/C.
        let q = c * f32::from_bits(104 << 23);
        let inv_q = f32::from_bits(((127 + 54 + 127) << 23) - c.to_bits());
        let rn = (af + c) - c;
        let lo = self32(rn > af, rn - q, rn);
        // SAFETY: `0 ≤ |x| − lo < q` for the finite, clamped `|x|`, so the product is in
        // [0, 2^31) and fits in i32.
        let frac = unsafe { ((af - lo) * inv_q).to_int_unchecked::<i32>() };
        let mag = self32(((rnd >> 1) as i32) < frac, lo + q, lo).to_bits();
        let out = finish_saturated(mag, sign, a, k);
        // Overflow is decided on the unclamped value, by the normal-range rule (only values
        // above max overflow, and those are normal); unused, it costs nothing.
        let up = ((rnd >> 1) >> (31 - k.sh)) < (a & k.mask);
        let rounded = ((a >> k.sh) + u32::from(up)) << k.sh;
        let over = ((a as i32) < (INF as i32)) & (rounded > k.max_bits);
        return (out, over);
    }
    if R == R_NEAREST_FPU {
        let af = f32::from_bits(a);
        let c = fpu_c(a, k);
        return finish(((af + c) - c).to_bits(), sign, a, k);
    }

    // Normal range: integer rounding with a constant shift.
    let kept = a >> k.sh;
    let rem = a & k.mask;
    let up = match R {
        R_NEAREST => {
            let lsb = ((kept ^ k.parity_flip) | u32::from(k.nearest_ties_up)) & 1;
            // rem > half, or rem == half with an odd kept part: rem + lsb > half.
            rem + lsb > k.half
        }
        R_ZERO => false,
        R_AWAY => rem >= k.half,
        _ => ((rnd >> 1) >> (31 - k.sh)) < rem,
    };
    let normal = (kept + u32::from(up)) << k.sh;

    if !SUB {
        return finish(normal, sign, a, k);
    }

    // Subnormal range: constant quantum q, rounded by the FPU then corrected.
    let af = f32::from_bits(a);
    let rn = (af + k.magic) - k.magic;
    let sub = match R {
        R_NEAREST => rn,
        _ => {
            let lo = self32(rn > af, rn - k.q, rn);
            let hi = lo + k.q;
            match R {
                R_ZERO => lo,
                R_AWAY => self32((af - lo) * 2.0 >= k.q, hi, lo), // 2·d is exact; q/2 may underflow
                _ => {
                    let f = (af - lo) * k.frac_c1 * k.frac_c2; // in [0, 2^31) when finite
                                                               // `as i32` saturates, which LLVM does lane by lane on x86; make the value
                                                               // safe (NaN or out of range → 0, only for non-finite x whose result is
                                                               // patched below) and convert without the checks.
                    #[allow(clippy::manual_range_contains)] // `&`: no short-circuit branch
                    let f = self32((f >= 0.0) & (f < 2147483648.0), f, 0.0);
                    // SAFETY: f is finite and in [0, 2^31), so it fits in i32.
                    let frac = unsafe { f.to_int_unchecked::<i32>() } as u32;
                    self32((rnd >> 1) < frac, hi, lo)
                }
            }
        }
    };
    let mag = sel(e < k.e_min, sub.to_bits(), normal);
    finish(mag, sign, a, k)
}

/// `C` of the one-step rounding for the magnitude bits `a`: its exponent bits plus `23 − m`,
/// raised to the subnormal magic (outside f32's range for `|x|` above every format's max that
/// takes this path, see the module docs).
#[inline(always)]
fn fpu_c(a: u32, k: &Consts) -> f32 {
    f32::from_bits((a & INF).wrapping_add(k.fpu_shift).max(k.magic.to_bits()))
}

/// [`finish`] for a magnitude `mag` rounded from `|x|` clamped to max (bits `a` unclamped),
/// which cannot overflow: flush, signed zero and NaN. Signed compares are exact here, as every
/// operand is below 2^31.
#[inline(always)]
fn finish_saturated(mag: u32, sign: u32, a: u32, k: &Consts) -> u32 {
    let mag = sel((mag as i32) < (k.flush_below as i32), 0, mag);
    let out = sel(mag == 0, sign & k.zero_sign_keep, mag | sign);
    sel((a as i32) > (INF as i32), k.nan.apply(sign), out)
}

/// The rounded magnitude `mag` of `|x|` (bits `a`, sign bit `sign`) to output bits: flush,
/// overflow, signed zero and the special values.
#[inline(always)]
fn finish(mag: u32, sign: u32, a: u32, k: &Consts) -> (u32, bool) {
    // Flush: `flush_below` is min_normal when flushing, else 0 (nothing is below 0).
    let mag = sel(mag < k.flush_below, 0, mag);

    let over = (a < INF) & (mag > k.max_bits);
    let zero_sign = sign & k.zero_sign_keep;
    let mut out = sel(mag == 0, zero_sign, mag | sign);
    out = sel(over, k.overflow.apply(sign), out);
    out = sel(a == INF, k.inf.apply(sign), out);
    out = sel(a > INF, k.nan.apply(sign), out);
    (out, over)
}

/// e8m0: unsigned powers of two 2^−127..2^127, no zero, NaN = 0xFF (see module docs).
pub(crate) fn cast_e8m0(x: f32, k: &Consts, index: u64) -> (u32, bool) {
    if x.is_nan() || x <= 0.0 {
        return (QNAN, false);
    }
    if x.is_infinite() {
        return (if k.saturate { k.max_bits } else { QNAN }, false);
    }
    let v = f64::from(x);
    let e = v.log2().floor() as i32;
    let lo = 2f64.powi(e);
    let up = match k.rounding {
        R_NEAREST | R_AWAY => v >= 1.5 * lo, // ties up, as ml_dtypes
        R_ZERO => false,
        _ => {
            let p = (v - lo) / lo;
            f64::from(rand32(k.key, index)) < p * 4294967296.0
        }
    };
    let e = if up { e + 1 } else { e };
    if e < -127 {
        return (pow2(-127).to_bits(), false);
    }
    if e > 127 {
        let sat = k.saturate || k.rounding == R_ZERO;
        return (if sat { k.max_bits } else { QNAN }, true);
    }
    (pow2(e).to_bits(), false)
}

/// Cast one value (element index `index` seeds stochastic rounding).
pub fn cast_scalar(x: f32, spec: &CastSpec, index: u64) -> f32 {
    let k = Consts::new(spec);
    f32::from_bits(cast_one(x, &k, index).0)
}

#[inline(always)]
pub(crate) fn cast_one(x: f32, k: &Consts, index: u64) -> (u32, bool) {
    if k.e8m0 {
        return cast_e8m0(x, k, index);
    }
    match k.rounding {
        R_NEAREST_SAT => cast_bits::<R_NEAREST_SAT>(x.to_bits(), k, 0),
        R_NEAREST_FPU => cast_bits::<R_NEAREST_FPU>(x.to_bits(), k, 0),
        R_NEAREST => cast_bits::<R_NEAREST>(x.to_bits(), k, 0),
        R_ZERO => cast_bits::<R_ZERO>(x.to_bits(), k, 0),
        R_AWAY => cast_bits::<R_AWAY>(x.to_bits(), k, 0),
        R_STOCH_SAT => cast_bits::<R_STOCH_SAT>(x.to_bits(), k, rand32(k.key, index)),
        _ => cast_bits::<R_STOCH>(x.to_bits(), k, rand32(k.key, index)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The named formats and some others of every width the one-step rounding takes (and two
    /// without mantissa bits, which it does not).
    fn formats() -> Vec<Format> {
        let mut formats: Vec<Format> = Format::named().map(|(_, f)| f).collect();
        for (e, m) in [
            (5, 10),
            (3, 4),
            (6, 2),
            (7, 1),
            (2, 2),
            (4, 6),
            (3, 0),
            (5, 0),
        ] {
            formats.push(Format::new(e, m, Family::Ieee).unwrap());
            formats.push(Format::new(e, m, Family::NoSpecials).unwrap());
        }
        formats
    }

    /// Every finite non-negative value of `f` (as f32 bits), ascending: the normal ones are
    /// the f32s with `f`'s mantissa width in its exponent range, the subnormal ones multiples
    /// of its smallest subnormal.
    fn values(f: Format) -> Vec<u32> {
        let step = 1usize << (23 - u32::from(f.man_bits.min(23)));
        let mut v: Vec<u32> = (f.min_normal().to_bits()..=f.max().to_bits())
            .step_by(step)
            .collect();
        let mut sub = f.min_subnormal();
        while sub < f.min_normal() {
            v.push(sub.to_bits());
            sub += f.min_subnormal();
        }
        v.push(0);
        v.sort_unstable();
        v
    }

    /// The saturating one-step cast against the integer nearest-even path (itself checked
    /// against ml_dtypes code by code): the same bits and the same overflow flag for every
    /// format that takes it, with and without subnormals, on every sign, exponent and top
    /// 11 mantissa bits with the low bits at the rounding-relevant patterns, and around every
    /// value of the format, each midpoint between them and the overflow threshold.
    #[test]
    fn saturating_one_step_matches_the_integer_path() {
        let mut checked = 0;
        for f in formats() {
            for subnormals in [true, false] {
                let spec = CastSpec::new(f)
                    .with_saturate(true)
                    .with_subnormals(subnormals);
                let k = Consts::new(&spec);
                if k.rounding != R_NEAREST_SAT {
                    continue;
                }
                checked += 1;
                let check = |x: u32| {
                    let want = cast_bits::<R_NEAREST>(x, &k, 0);
                    let got = cast_bits::<R_NEAREST_SAT>(x, &k, 0);
                    assert_eq!(
                        got,
                        want,
                        "{f:?} subnormals {subnormals}: {:e} ({x:#010x})",
                        f32::from_bits(x)
                    );
                };
                for hi in 0..1u32 << 20 {
                    for lo in [0, 1, 0x7ff, 0x800, 0x801, 0xfff] {
                        check(hi << 12 | lo);
                    }
                }
                let values = values(f);
                let mids: Vec<u32> = values
                    .windows(2)
                    .map(|w| ((f32::from_bits(w[0]) + f32::from_bits(w[1])) / 2.0).to_bits())
                    .collect();
                for &b in values.iter().chain(&mids).chain(&[k.over_from]) {
                    for d in 0..=4u32 {
                        for sign in [0, SIGN] {
                            check(b.wrapping_add(d) | sign);
                            check(b.wrapping_sub(d) | sign);
                        }
                    }
                }
                for x in [INF, INF | SIGN, QNAN, QNAN | SIGN, 0x7f80_0001, 0xffff_ffff] {
                    check(x);
                }
            }
        }
        assert!(
            checked >= 16,
            "only {checked} formats took the saturating path"
        );
    }

    /// The saturating FPU stochastic rounding against the general one, as above, each input
    /// with several random words (including the extremes, which decide the boundaries).
    #[test]
    fn saturating_stochastic_matches_the_general_path() {
        let mut checked = 0;
        let mut z = 0x243f_6a88_85a3_08d3u64;
        for f in formats() {
            for subnormals in [true, false] {
                let spec = CastSpec::new(f)
                    .with_rounding(Rounding::Stochastic)
                    .with_saturate(true)
                    .with_subnormals(subnormals);
                let k = Consts::new(&spec);
                if k.rounding != R_STOCH_SAT {
                    continue;
                }
                checked += 1;
                let mut check = |x: u32| {
                    z = splitmix64(z);
                    for rnd in [
                        0,
                        1,
                        u32::MAX,
                        u32::MAX - 1,
                        0x8000_0000,
                        z as u32,
                        (z >> 32) as u32,
                    ] {
                        let want = cast_bits::<R_STOCH>(x, &k, rnd);
                        let got = cast_bits::<R_STOCH_SAT>(x, &k, rnd);
                        assert_eq!(
                            got,
                            want,
                            "{f:?} subnormals {subnormals}: {:e} ({x:#010x}) rnd {rnd:#010x}",
                            f32::from_bits(x)
                        );
                    }
                };
                for hi in 0..1u32 << 18 {
                    for lo in [0, 1, 0x1fff, 0x2000, 0x2001, 0x3fff] {
                        check(hi << 14 | lo);
                    }
                }
                for b in values(f) {
                    for d in 0..=3u32 {
                        for sign in [0, SIGN] {
                            check(b.wrapping_add(d) | sign);
                            check(b.wrapping_sub(d) | sign);
                        }
                    }
                }
                for x in [
                    INF,
                    INF | SIGN,
                    QNAN,
                    QNAN | SIGN,
                    0x7f80_0001,
                    0xffff_ffff,
                    0,
                    SIGN,
                ] {
                    check(x);
                }
            }
        }
        assert!(
            checked >= 16,
            "only {checked} formats took the saturating stochastic path"
        );
    }
}
