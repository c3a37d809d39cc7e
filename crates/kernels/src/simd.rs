//! Runtime ISA dispatch, the lane-parallel `exp`, and fixed-order lane reductions.
//!
//! Every kernel body is `#[inline(always)]` code over plain `f32` lanes that LLVM vectorises; it
//! is compiled three times (baseline, AVX2+FMA, AVX-512F) and [`dispatch`] picks one per call.
//! All copies compute the same bits: Rust never contracts `a * b + c` into an FMA, and reductions
//! run in [`L`] independent accumulators combined in a fixed tree, so the order of additions is
//! fixed by the row layout alone, never by the vector width or the thread count.

/// Number of independent accumulators per reduction (one AVX-512 register, two AVX2 ones).
pub(crate) const L: usize = 16;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Which compiled copy this CPU runs: 0 baseline, 1 AVX2+FMA, 2 AVX-512F. Detected once;
/// `FP8_SIMD_LEVEL=0|1` caps it (to exercise the other copies on a newer CPU), as in fp8-formats.
#[cfg(target_arch = "x86_64")]
fn level() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static LEVEL: AtomicU8 = AtomicU8::new(u8::MAX);
    let l = LEVEL.load(Ordering::Relaxed);
    if l != u8::MAX {
        return l;
    }
    let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    let l = if avx2 && std::is_x86_feature_detected!("avx512f") {
        2
    } else if avx2 {
        1
    } else {
        0
    };
    let cap = std::env::var("FP8_SIMD_LEVEL")
        .ok()
        .and_then(|v| v.parse::<u8>().ok())
        .unwrap_or(2);
    let l = l.min(cap);
    LEVEL.store(l, Ordering::Relaxed);
    l
}

/// Run `f` compiled for the best vector ISA this CPU has. Pass an `#[inline(always)]` closure
/// that calls only `#[inline(always)]` code: anything LLVM leaves out of line is compiled for the
/// baseline ISA (a plain closure was, and ran 2–4× slower).
#[inline(always)]
pub(crate) fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            // SAFETY: the CPU supports these features (checked by `level`).
            2 => return unsafe { run_avx512(f) },
            // SAFETY: as above.
            1 => return unsafe { run_avx2(f) },
            _ => {}
        }
    }
    f()
}

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
