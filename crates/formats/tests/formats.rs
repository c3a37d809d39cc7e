//! Expectations derived from the format definitions, not from the code under test.

use fp8_formats::*;

/// (name, exp bits, man bits, bias, family) written out by hand from docs/DESIGN.md §2 / ml_dtypes.
const TABLE: &[(&str, u32, u32, i32, Family)] = &[
    ("float8_e4m3fn", 4, 3, 7, Family::Fn),
    ("float8_e5m2", 5, 2, 15, Family::Ieee),
    ("float8_e4m3fnuz", 4, 3, 8, Family::Fnuz),
    ("float8_e5m2fnuz", 5, 2, 16, Family::Fnuz),
    ("float8_e4m3", 4, 3, 7, Family::Ieee),
    ("float8_e3m4", 3, 4, 3, Family::Ieee),
    ("float6_e3m2fn", 3, 2, 3, Family::NoSpecials),
    ("float6_e2m3fn", 2, 3, 1, Family::NoSpecials),
    ("float4_e2m1fn", 2, 1, 1, Family::NoSpecials),
    ("float8_e8m0fnu", 8, 0, 127, Family::E8m0),
    ("bfloat16", 8, 7, 127, Family::Ieee),
    ("float16", 5, 10, 15, Family::Ieee),
];

/// Reference decoder: value of code `c` straight from the definition (f64, NaN for NaN codes).
fn decode(c: u32, e: u32, m: u32, bias: i32, fam: Family) -> f64 {
    if fam == Family::E8m0 {
        return if c == 0xff {
            f64::NAN
        } else {
            2f64.powi(c as i32 - 127)
        };
    }
    let sign = if (c >> (e + m)) & 1 == 1 { -1.0 } else { 1.0 };
    let ex = (c >> m) & ((1 << e) - 1);
    let man = c & ((1 << m) - 1);
    let all_e = (1 << e) - 1;
    match fam {
        Family::Ieee if ex == all_e => {
            return if man == 0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            }
        }
        Family::Fn if ex == all_e && man == (1 << m) - 1 => return f64::NAN,
        Family::Fnuz if c == 1 << (e + m) => return f64::NAN,
        _ => {}
    }
    let frac = f64::from(man) / f64::from(1u32 << m);
    if ex == 0 {
        sign * frac * 2f64.powi(1 - bias)
    } else {
        sign * (1.0 + frac) * 2f64.powi(ex as i32 - bias)
    }
}

fn ne(f: Format) -> CastSpec {
    CastSpec::new(f)
}

fn all_codes(name: &str) -> (Format, Vec<(u32, f64)>) {
    let &(_, e, m, bias, fam) = TABLE.iter().find(|t| t.0 == name).unwrap();
    let f: Format = name.parse().unwrap();
    let bits = if fam == Family::E8m0 { 8 } else { 1 + e + m };
    (
        f,
        (0..1u32 << bits)
            .map(|c| (c, decode(c, e, m, bias, fam)))
            .collect(),
    )
}

#[test]
fn table_fields_and_ranges() {
    // max, min normal, min subnormal by hand.
    let hand: &[(&str, f64, f64, f64)] = &[
        ("float8_e4m3fn", 448.0, 2f64.powi(-6), 2f64.powi(-9)),
        ("float8_e5m2", 57344.0, 2f64.powi(-14), 2f64.powi(-16)),
        ("float8_e4m3fnuz", 240.0, 2f64.powi(-7), 2f64.powi(-10)),
        ("float8_e5m2fnuz", 57344.0, 2f64.powi(-15), 2f64.powi(-17)),
        ("float8_e4m3", 240.0, 2f64.powi(-6), 2f64.powi(-9)),
        ("float8_e3m4", 15.5, 0.25, 2f64.powi(-6)),
        ("float6_e3m2fn", 28.0, 0.25, 2f64.powi(-4)),
        ("float6_e2m3fn", 7.5, 1.0, 0.125),
        ("float4_e2m1fn", 6.0, 1.0, 0.5),
        (
            "float8_e8m0fnu",
            2f64.powi(127),
            2f64.powi(-127),
            2f64.powi(-127),
        ),
        (
            "bfloat16",
            3.3895313892515355e38,
            2f64.powi(-126),
            2f64.powi(-133),
        ),
        ("float16", 65504.0, 2f64.powi(-14), 2f64.powi(-24)),
        (
            "float32",
            f64::from(f32::MAX),
            2f64.powi(-126),
            2f64.powi(-149),
        ),
    ];
    for &(name, max, mn, ms) in hand {
        let f: Format = name.parse().unwrap();
        assert_eq!(f64::from(f.max()), max, "{name} max");
        assert_eq!(f64::from(f.min_normal()), mn, "{name} min normal");
        assert_eq!(f64::from(f.min_subnormal()), ms, "{name} min subnormal");
        assert_eq!(f.to_string(), name);
        assert_eq!(name.to_uppercase().parse::<Format>().unwrap(), f);
    }
    for &(name, e, m, bias, fam) in TABLE {
        let f: Format = name.parse().unwrap();
        assert_eq!(
            (
                u32::from(f.exp_bits),
                u32::from(f.man_bits),
                f.bias(),
                f.family
            ),
            (e, m, bias, fam),
            "{name}"
        );
    }
    assert_eq!("e8m7".parse::<Format>().unwrap(), Format::BFLOAT16);
    assert_eq!("e5m2".parse::<Format>().unwrap().to_string(), "float8_e5m2");
    for g in ["e8m3", "e7m7", "e3m3fn", "e5m4fnuz", "e4m4ns"] {
        assert_eq!(g.parse::<Format>().unwrap().to_string(), g);
    }
    let err = "float8_e9m9".parse::<Format>().unwrap_err().to_string();
    assert!(
        err.contains("float8_e4m3fn") && err.contains("bfloat16"),
        "{err}"
    );
    assert!("e9m1".parse::<Format>().is_err() && "e4m24".parse::<Format>().is_err());
}

#[test]
fn float32_is_identity() {
    let spec = ne(Format::FLOAT32);
    for x in [
        1.0f32,
        f32::MIN_POSITIVE / 3.0,
        f32::MAX,
        -0.0,
        f32::INFINITY,
        f32::from_bits(0x0001_5e3f),
    ] {
        assert_eq!(cast_scalar(x, &spec, 0).to_bits(), x.to_bits());
    }
}

#[test]
fn every_code_round_trips() {
    for &(name, ..) in TABLE {
        let (f, codes) = all_codes(name);
        for spec in [
            ne(f),
            ne(f).with_rounding(Rounding::TowardZero),
            ne(f).with_rounding(Rounding::NearestAway),
        ] {
            for &(c, v) in &codes {
                let x = v as f32;
                assert!(
                    v.is_nan() || f64::from(x) == v,
                    "{name} code {c:#x} not exact in f32"
                );
                let y = cast_scalar(x, &spec, c.into());
                if v.is_nan() {
                    assert!(y.is_nan(), "{name} {c:#x}");
                } else {
                    assert_eq!(
                        y.to_bits(),
                        x.to_bits(),
                        "{name} code {c:#x} value {v} gave {y}"
                    );
                    assert!(f.is_representable(x));
                }
            }
        }
    }
}

#[test]
fn sixteen_bit_formats_match_half() {
    for c in 0..=u16::MAX {
        let b = half::bf16::from_bits(c).to_f32();
        let h = half::f16::from_bits(c).to_f32();
        for (f, x) in [(Format::BFLOAT16, b), (Format::FLOAT16, h)] {
            let y = cast_scalar(x, &ne(f), 0);
            if x.is_nan() {
                assert!(y.is_nan());
            } else {
                assert_eq!(y.to_bits(), x.to_bits(), "{f} {c:#x}");
            }
        }
    }
    // And rounding from f32 agrees with half's (nearest-even) conversion.
    let mut z = 0x1234_5678u64;
    for _ in 0..200_000 {
        z = z
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let x = f32::from_bits((z >> 32) as u32);
        if x.is_nan() {
            continue;
        }
        assert_eq!(
            cast_scalar(x, &ne(Format::BFLOAT16), 0).to_bits(),
            half::bf16::from_f32(x).to_f32().to_bits(),
            "{x:e}"
        );
        assert_eq!(
            cast_scalar(x, &ne(Format::FLOAT16), 0).to_bits(),
            half::f16::from_f32(x).to_f32().to_bits(),
            "{x:e}"
        );
    }
}

fn next_up(x: f32) -> f32 {
    f32::from_bits(x.to_bits() + 1)
}
fn next_down(x: f32) -> f32 {
    f32::from_bits(x.to_bits() - 1)
}

#[test]
fn midpoints_round_correctly() {
    for &(name, _e, _m, _b, fam) in TABLE {
        if fam == Family::E8m0 {
            continue; // ties go up there (ml_dtypes); checked in `e8m0_rules`
        }
        let (f, codes) = all_codes(name);
        // Non-negative finite values with their codes, ascending.
        let mut pos: Vec<(u32, f64)> = codes
            .into_iter()
            .filter(|&(_, v)| v.is_finite() && v.is_sign_positive())
            .collect();
        pos.sort_by(|a, b| a.1.total_cmp(&b.1));
        for w in pos.windows(2) {
            let ((clo, lo), (chi, hi)) = (w[0], w[1]);
            let mid = ((lo + hi) / 2.0) as f32;
            assert_eq!(f64::from(mid), (lo + hi) / 2.0);
            let even = if clo % 2 == 0 { lo } else { hi };
            assert!(clo % 2 != chi % 2);
            for sgn in [1.0f32, -1.0] {
                let r = |x: f32, rd| f64::from(cast_scalar(sgn * x, &ne(f).with_rounding(rd), 0));
                let s = f64::from(sgn);
                assert_eq!(r(mid, Rounding::NearestEven), s * even, "{name} mid {mid}");
                assert_eq!(
                    r(next_up(mid), Rounding::NearestEven),
                    s * hi,
                    "{name} above mid {mid}"
                );
                assert_eq!(
                    r(next_down(mid), Rounding::NearestEven),
                    s * lo,
                    "{name} below mid {mid}"
                );
                assert_eq!(r(mid, Rounding::NearestAway), s * hi, "{name} away {mid}");
                assert_eq!(
                    r(next_down(hi as f32), Rounding::TowardZero),
                    s * lo,
                    "{name} rtz"
                );
            }
        }
    }
}

#[test]
fn overflow_nan_zero_per_family() {
    let c = |name: &str, x: f32| cast_scalar(x, &ne(name.parse().unwrap()), 0);
    let sat =
        |name: &str, x: f32| cast_scalar(x, &ne(name.parse().unwrap()).with_saturate(true), 0);
    // IEEE: overflow → inf; the rounding boundary is max + half an ulp (ties to even → inf).
    assert_eq!(c("float8_e5m2", 61440.0), f32::INFINITY);
    assert_eq!(c("float8_e5m2", next_down(61440.0)), 57344.0);
    assert_eq!(c("float8_e5m2", -1e9), f32::NEG_INFINITY);
    assert_eq!(c("float8_e4m3", 248.0), f32::INFINITY);
    // FN: overflow → NaN, 464 is the tie between 448 and the NaN code → 448 (even).
    assert!(c("float8_e4m3fn", 465.0).is_nan());
    assert_eq!(c("float8_e4m3fn", 464.0), 448.0);
    assert!(c("float8_e4m3fn", f32::INFINITY).is_nan());
    // FNUZ: no −0, single NaN (decodes to the negative quiet NaN).
    assert_eq!(c("float8_e4m3fnuz", -0.0).to_bits(), 0);
    assert_eq!(c("float8_e4m3fnuz", -1e-6).to_bits(), 0);
    assert_eq!(c("float8_e4m3fnuz", 1e6).to_bits(), 0xffc0_0000);
    assert_eq!(c("float8_e4m3fn", -1e-6).to_bits(), 0x8000_0000);
    // No specials: overflow and inf saturate.
    assert_eq!(c("float4_e2m1fn", 100.0), 6.0);
    assert_eq!(c("float6_e3m2fn", f32::NEG_INFINITY), -28.0);
    // Saturating mode clamps everything finite-or-inf.
    for n in ["float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz"] {
        let f: Format = n.parse().unwrap();
        assert_eq!(sat(n, 1e30), f.max());
        assert_eq!(sat(n, f32::NEG_INFINITY), -f.max());
        assert!(sat(n, f32::NAN).is_nan());
    }
    // Toward zero never overflows to inf/NaN.
    let rtz = ne(Format::FLOAT8_E5M2).with_rounding(Rounding::TowardZero);
    assert_eq!(cast_scalar(1e9, &rtz, 0), 57344.0);
    // NaN keeps its sign.
    assert_eq!(c("float8_e4m3fn", -f32::NAN).to_bits(), 0xffc0_0000);
    // Subnormals off: flush to signed zero, but values rounding up to min normal survive.
    let ftz = ne(Format::FLOAT8_E4M3FN).with_subnormals(false);
    assert_eq!(cast_scalar(-0.01, &ftz, 0).to_bits(), 0x8000_0000);
    assert_eq!(cast_scalar(next_down(0.015625), &ftz, 0), 0.015625);
    assert_eq!(
        cast_scalar(0.01, &ne(Format::FLOAT8_E4M3FN), 0),
        0.009765625
    );
}

#[test]
fn e8m0_rules() {
    let s = ne(Format::FLOAT8_E8M0FNU);
    assert_eq!(cast_scalar(0.75, &s, 0), 1.0);
    assert_eq!(cast_scalar(3.0, &s, 0), 4.0);
    assert_eq!(cast_scalar(2.9, &s, 0), 2.0);
    assert!(cast_scalar(0.0, &s, 0).is_nan() && cast_scalar(-2.0, &s, 0).is_nan());
    assert_eq!(cast_scalar(1e-45, &s, 0), 2f32.powi(-127));
}

#[test]
fn stochastic_is_unbiased_and_reproducible() {
    let f = Format::FLOAT8_E4M3FN;
    // One normal-range and one subnormal-range value, each between two neighbours lo < x < hi.
    for (x, lo, hi) in [
        (1.0375f32, 1.0f64, 1.125f64),
        (0.0025, 0.001953125, 0.00390625),
    ] {
        let n = 200_000usize;
        let mut v = vec![x; n];
        cast_slice(
            &mut v,
            &ne(f).with_rounding(Rounding::Stochastic).with_seed(7),
            0,
        );
        let p = (f64::from(x) - lo) / (hi - lo);
        let mean = v.iter().map(|&q| f64::from(q)).sum::<f64>() / n as f64;
        assert!(v.iter().all(|&q| f64::from(q) == lo || f64::from(q) == hi));
        // Each sample is lo + (hi−lo)·Bernoulli(p): standard error (hi−lo)·sqrt(p(1−p)/n).
        let se = (hi - lo) * (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (mean - f64::from(x)).abs() < 5.0 * se,
            "mean {mean} vs {x} (se {se})"
        );
    }
    // Same seed and index → same result, regardless of thread count and chunking.
    let data: Vec<f32> = (0..300_000)
        .map(|i| (i as f32 * 0.001).sin() * 300.0)
        .collect();
    let spec = ne(f).with_rounding(Rounding::Stochastic).with_seed(42);
    let run = |threads: usize| {
        let mut v = data.clone();
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| cast_slice(&mut v, &spec, 0));
        v
    };
    let a = run(1);
    assert_eq!(a, run(2));
    let mut pieces = data.clone();
    let (l, r) = pieces.split_at_mut(12_345);
    cast_slice(l, &spec, 0);
    cast_slice(r, &spec, 12_345);
    assert_eq!(a, pieces);
    for (i, (&x, &q)) in data.iter().zip(&a).enumerate().step_by(997) {
        assert_eq!(cast_scalar(x, &spec, i as u64), q);
    }
    let mut other = data.clone();
    cast_slice(&mut other, &spec.with_seed(43), 0);
    assert_ne!(a, other);
}
