//! Property tests: idempotence, monotonicity, representability, scaled-output sanity.

use fp8_formats::*;
use proptest::prelude::*;

fn formats() -> impl Strategy<Value = Format> {
    prop_oneof![
        Just(Format::FLOAT8_E4M3FN),
        Just(Format::FLOAT8_E5M2),
        Just(Format::FLOAT8_E4M3FNUZ),
        Just(Format::FLOAT8_E3M4),
        Just(Format::FLOAT6_E2M3FN),
        Just(Format::FLOAT4_E2M1FN),
        Just(Format::BFLOAT16),
        Just(Format::FLOAT16),
        (2u8..=8, 0u8..=23).prop_map(|(e, m)| Format::new(e, m, Family::Ieee).unwrap()),
    ]
}

fn roundings() -> impl Strategy<Value = Rounding> {
    prop_oneof![
        Just(Rounding::NearestEven),
        Just(Rounding::TowardZero),
        Just(Rounding::NearestAway),
        Just(Rounding::Stochastic)
    ]
}

fn finite() -> impl Strategy<Value = f32> {
    any::<u32>()
        .prop_map(f32::from_bits)
        .prop_filter("finite", |x| x.is_finite())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn idempotent_and_representable(f in formats(), r in roundings(), x in finite(), i in any::<u64>()) {
        let spec = CastSpec::new(f).with_rounding(r).with_saturate(true);
        let y = cast_scalar(x, &spec, i);
        prop_assert!(f.is_representable(y), "{f} {x:e} → {y:e}");
        prop_assert_eq!(cast_scalar(y, &spec, i.wrapping_add(1)).to_bits(), y.to_bits());
        // The result is one of the two neighbours of x: never further than one quantum.
        if r == Rounding::TowardZero { prop_assert!(y.abs() <= x.abs()); }
    }

    #[test]
    fn monotone(f in formats(), r in prop_oneof![Just(Rounding::NearestEven), Just(Rounding::TowardZero), Just(Rounding::NearestAway)], a in finite(), b in finite()) {
        let spec = CastSpec::new(f).with_rounding(r).with_saturate(true);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(cast_scalar(lo, &spec, 0) <= cast_scalar(hi, &spec, 0));
    }

    #[test]
    fn mx_elements_on_block_grid(v in proptest::collection::vec(-1e3f32..1e3, 1..200)) {
        // Each output, divided by its block's 2^shared_exp, is an E4M3 value (saturated, no NaN).
        let spec = QuantSpec { cast: CastSpec::new(Format::FLOAT8_E4M3FN), scaling: Scaling::MX };
        let mut a = v.clone();
        quantize(&mut a, &[v.len()], &spec);
        for (blk, out) in v.chunks(32).zip(a.chunks(32)) {
            let amax = blk.iter().fold(0f32, |m, x| m.max(x.abs()));
            let e = mx_shared_exp(amax, Format::FLOAT8_E4M3FN, MxRule::Floor);
            for &y in out {
                let z = y / 2f32.powi(e);
                prop_assert!(Format::FLOAT8_E4M3FN.is_representable(z) && !z.is_nan(), "{y} {e}");
            }
        }
    }

    #[test]
    fn quantize_none_equals_cast_slice(v in proptest::collection::vec(any::<u32>().prop_map(f32::from_bits), 1..300), f in formats(), r in roundings()) {
        let cast = CastSpec::new(f).with_rounding(r).with_seed(3);
        let mut a = v.clone();
        let mut b = v.clone();
        quantize(&mut a, &[v.len()], &QuantSpec { cast, scaling: Scaling::None });
        cast_slice(&mut b, &cast, 0);
        // NaN payloads may differ (quantize multiplies by the scale 1, which quiets NaNs).
        let bits = |x: &Vec<f32>| x.iter().map(|y| if y.is_nan() { 0x7fc0_0000 | (y.to_bits() & 0x8000_0000) } else { y.to_bits() }).collect::<Vec<_>>();
        prop_assert_eq!(bits(&a), bits(&b));
    }
}
