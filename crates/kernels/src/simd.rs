//! Runtime ISA dispatch, the lane-parallel `exp`, and fixed-order lane reductions.
//!
//! Every kernel body is `#[inline(always)]` code over plain `f32` lanes that LLVM vectorises; it
//! is compiled once per SIMD level of fp8-formats' `cpu` module (baseline, AVX2+FMA, AVX-512) and
//! [`dispatch`] picks one per call.
//! All copies compute the same bits: Rust never contracts `a * b + c` into an FMA, and reductions
//! run in [`L`] independent accumulators combined in a fixed tree, so the order of additions is
//! fixed by the row layout alone, never by the vector width or the thread count.

/// Number of independent accumulators per reduction (one AVX-512 register, two AVX2 ones).
pub(crate) const L: usize = 16;

/// Run `f` compiled for the best vector ISA this CPU has: fp8-formats' [`dispatch`] (one
/// detection and one `FP8_SIMD_LEVEL` cap for the whole process). Pass an `#[inline(always)]`
/// closure that calls only `#[inline(always)]` code: anything LLVM leaves out of line is
/// compiled for the baseline ISA (a plain closure was, and ran 2–4× slower).
///
/// [`dispatch`]: fp8_formats::cpu::dispatch
pub(crate) use fp8_formats::cpu::dispatch;

/// `e^x` in f32 without a libm call, branch-free so that a loop over it vectorises.
///
/// x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite: `LN2_HI` has 9 significant bits, so n·LN2_HI is
/// exact for |n| ≤ 128), e^r by the Cephes `expf` polynomial, then ·2^n built from exponent bits in
/// two halves (n can be 128 just below overflow). Results below `f32::MIN_POSITIVE` flush to 0
/// (x < −87.3365, −∞ included: subnormal arithmetic is very slow on x86, and masked attention
/// logits are −∞); x > 88.8 gives +∞; NaN stays NaN. Measured ≤ 2 ulp against f64 `exp`.
#[inline(always)]
pub(crate) fn exp1(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding 1.5·2^23 rounds to an integer (nearest-even) held in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const LO: f32 = -87.336_54;
    const HI: f32 = 88.8;
    const P0: f32 = 1.987_569_1e-4;
    const P1: f32 = 1.398_199_9e-3;
    const P2: f32 = 8.333_452e-3;
    const P3: f32 = 4.166_579_6e-2;
    const P4: f32 = 1.666_666_5e-1;
    const P5: f32 = 0.5;
    let xc = x.clamp(LO, HI);
    let z = xc * LOG2E + SHIFTER;
    let n = (z.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    let nf = z - SHIFTER;
    let r = (xc - nf * LN2_HI) - nf * LN2_LO;
    let r2 = r * r;
    let p = ((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5;
    let p = p * r2 + r + 1.0;
    let n1 = n >> 1;
    let n2 = n - n1;
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((n2 + 127) as u32) << 23);
    let y = p * s1 * s2;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        y
    }
}

/// Sum of `L` lane accumulators in a fixed tree order.
#[inline(always)]
pub(crate) fn hsum(mut a: [f32; L]) -> f32 {
    let mut w = L / 2;
    while w > 0 {
        for i in 0..w {
            a[i] += a[i + w];
        }
        w /= 2;
    }
    a[0]
}

/// Largest element (−∞ for an empty slice; NaNs are skipped).
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let (body, tail) = x.as_chunks::<L>();
    let mut acc = [f32::NEG_INFINITY; L];
    for c in body {
        for i in 0..L {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(tail) {
        m = if v > m { v } else { m };
    }
    m
}

/// Σ f(a_i) in `L` lanes (lane `i % L`), then the tail in order: the summation order depends
/// only on the length.
#[inline(always)]
pub(crate) fn sum_map(a: &[f32], mut f: impl FnMut(f32) -> f32) -> f32 {
    let (body, tail) = a.as_chunks::<L>();
    let mut acc = [0.0f32; L];
    for c in body {
        for i in 0..L {
            acc[i] += f(c[i]);
        }
    }
    let mut s = hsum(acc);
    for &v in tail {
        s += f(v);
    }
    s
}

/// Σ f(a_i, b_i), in the same order as [`sum_map`].
#[inline(always)]
pub(crate) fn sum_map2(a: &[f32], b: &[f32], mut f: impl FnMut(f32, f32) -> f32) -> f32 {
    assert_eq!(a.len(), b.len());
    let (ab, at) = a.as_chunks::<L>();
    let (bb, bt) = b.as_chunks::<L>();
    let mut acc = [0.0f32; L];
    for (x, y) in ab.iter().zip(bb) {
        for i in 0..L {
            acc[i] += f(x[i], y[i]);
        }
    }
    let mut s = hsum(acc);
    for (&x, &y) in at.iter().zip(bt) {
        s += f(x, y);
    }
    s
}
