//! `float8_e8m0fnu` round to nearest (ties up, as ml_dtypes): every positive f32 pattern of the
//! subnormal binade and of selected normal binades (both ends of the range and around 1),
//! plus the two mantissas either side of the rounding boundary in every binade, against an
//! expectation computed from the bit pattern in integer arithmetic alone.

use fp8_formats::{cast_scalar, cast_slice, CastSpec, Format};

/// The e8m0 value `x = f32::from_bits(u)` (u > 0, finite) rounds to, as f32 bits: the nearer of
/// the two powers of two around it, the upper one on a tie, clamped below at 2^−127; NaN past
/// 2^127.
fn expected(u: u32) -> u32 {
    let (e, m) = (u >> 23, u & 0x7f_ffff);
    // 2^p as f32 bits, p in −127..=127.
    let pow2 = |p: i32| {
        if p == -127 {
            0x0040_0000
        } else {
            ((p + 127) as u32) << 23
        }
    };
    if e == 0 {
        // x = m · 2^−149 with 2^−127 = 2^22 · 2^−149 and 2^−126 = 2^23 · 2^−149: the midpoint
        // 1.5 · 2^−127 is m = 3 · 2^21. Below 2^−127 everything clamps up to it.
        return if m < 3 << 21 { pow2(-127) } else { pow2(-126) };
    }
    // x = (1 + m/2^23) · 2^(e−127): the midpoint between 2^(e−127) and 2^(e−126) is m = 2^22.
    let p = e as i32 - 127 + i32::from(m >= 1 << 22);
    if p > 127 {
        f32::NAN.to_bits()
    } else {
        pow2(p)
    }
}

fn check(patterns: &[u32]) {
    let spec = CastSpec::new(Format::FLOAT8_E8M0FNU);
    let mut v: Vec<f32> = patterns.iter().map(|&u| f32::from_bits(u)).collect();
    // The slice kernel (threads, SIMD dispatch) and the scalar path must both agree.
    cast_slice(&mut v, &spec, 0);
    for (&u, &got) in patterns.iter().zip(&v) {
        let want = expected(u);
        let x = f32::from_bits(u);
        assert_eq!(
            got.to_bits(),
            want,
            "x = {x:e} (bits {u:#010x}): got {got:e}"
        );
    }
    for &u in patterns.iter().step_by(4099) {
        let got = cast_scalar(f32::from_bits(u), &spec, 0).to_bits();
        assert_eq!(got, expected(u), "scalar, bits {u:#010x}");
    }
}

#[test]
fn every_f32_subnormal_rounds_to_the_nearer_power_of_two() {
    // All 2^23 − 1 positive subnormals, among them (2^−127, 1.5·2^−127), which must give 2^−127.
    let patterns: Vec<u32> = (1..1u32 << 23).collect();
    check(&patterns);
    let spec = CastSpec::new(Format::FLOAT8_E8M0FNU);
    let lo = 2f32.powi(-127);
    assert_eq!(cast_scalar(1.25 * lo, &spec, 0), lo);
    assert_eq!(cast_scalar(1.5 * lo, &spec, 0), 2.0 * lo);
}

#[test]
fn whole_normal_binades_and_every_boundary() {
    for e in [1u32, 2, 126, 127, 128, 253, 254] {
        let patterns: Vec<u32> = (0..1u32 << 23).map(|m| (e << 23) | m).collect();
        check(&patterns);
    }
    // Every binade: the two mantissas either side of the midpoint and the binade's ends.
    let edges: Vec<u32> = (1..255u32)
        .flat_map(|e| {
            [0, (1 << 22) - 1, 1 << 22, (1 << 22) + 1, (1 << 23) - 1].map(|m| (e << 23) | m)
        })
        .collect();
    check(&edges);
}
