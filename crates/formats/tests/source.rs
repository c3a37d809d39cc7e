//! `quantize_from` (shared and strided sources, partial measures) against `quantize` on a
//! contiguous copy: the same values bit for bit, the same statistics with `Measure::Full`, the
//! same amax with `Measure::Amax`.

use fp8_formats::*;

/// Deterministic test data with every kind of value: normals over a wide range, subnormals,
/// zeros of both signs, ±inf and NaN.
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            match i % 97 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                3 => -0.0,
                4 => f32::from_bits((s as u32) & 0x007f_ffff),
                _ => {
                    let m = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    m * 2f32.powi(((s >> 8) % 40) as i32 - 20)
                }
            }
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn specs() -> Vec<QuantSpec> {
    let e4m3 = Format::FLOAT8_E4M3FN;
    let e5m2 = Format::FLOAT8_E5M2;
    let e8m3: Format = "e8m3".parse().unwrap();
    let cast = |f: Format| CastSpec::new(f);
    let mut v = vec![
        QuantSpec::cast(cast(e4m3)),
        QuantSpec::cast(
            cast(e8m3)
                .with_rounding(Rounding::TowardZero)
                .with_saturate(true),
        ),
        QuantSpec::cast(cast(e5m2).with_rounding(Rounding::Stochastic).with_seed(7)),
        QuantSpec::cast(cast(Format::FLOAT8_E8M0FNU)),
        QuantSpec {
            cast: cast(e4m3),
            scaling: Scaling::Tensor(TensorScale::Given(3.5)),
        },
        QuantSpec {
            cast: cast(e5m2).with_rounding(Rounding::Stochastic).with_seed(1),
            scaling: Scaling::Tensor(TensorScale::Given(1e-3)),
        },
        QuantSpec {
            cast: cast(e4m3),
            scaling: Scaling::Tensor(TensorScale::Current { pow2: false }),
        },
        QuantSpec {
            cast: cast(e4m3),
            scaling: Scaling::MX,
        },
        QuantSpec {
            cast: cast(e4m3),
            scaling: Scaling::Block {
                rows: 4,
                cols: 8,
                pow2: true,
            },
        },
    ];
    v.push(QuantSpec {
        cast: cast(e4m3),
        scaling: Scaling::Col { pow2: false },
    });
    // The production recipes' schemes: MX down the rows (the column-wise copies), NVFP4 along
    // and down the rows, with stochastic rounding as on NVIDIA's gradients.
    v.push(QuantSpec {
        cast: cast(e4m3),
        scaling: Scaling::Mx {
            block: 32,
            rule: MxRule::Rceil,
            axis: BlockAxis::Rows,
        },
    });
    let e2m1 = Format::FLOAT4_E2M1FN;
    v.push(QuantSpec {
        cast: cast(e2m1),
        scaling: Scaling::Nvfp4 {
            axis: BlockAxis::Cols,
        },
    });
    v.push(QuantSpec {
        cast: cast(e2m1).with_rounding(Rounding::Stochastic).with_seed(3),
        scaling: Scaling::Nvfp4 {
            axis: BlockAxis::Rows,
        },
    });
    v
}

/// The C-order copy of a strided view.
fn gather(data: &[f32], offset: usize, shape: &[usize], strides: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|mut f| {
            let mut at = offset;
            for d in (0..shape.len()).rev() {
                at += (f % shape[d]) * strides[d];
                f /= shape[d];
            }
            data[at]
        })
        .collect()
}

/// Check every measure of `src` against `quantize` of `want_input` (its C-order elements).
fn check(src: Source<'_>, want_input: &[f32], shape: &[usize], what: &str) {
    for spec in specs() {
        let mut want = want_input.to_vec();
        let want_stats = quantize(&mut want, shape, &spec);
        for measure in [Measure::Nothing, Measure::Amax, Measure::Full] {
            let mut got = match src {
                Source::InPlace => want_input.to_vec(),
                _ => vec![f32::NAN; want_input.len()],
            };
            let stats = quantize_from(src, &mut got, shape, &spec, measure);
            assert_eq!(
                bits(&got),
                bits(&want),
                "{what}: values, {spec:?}, {measure:?}"
            );
            assert_eq!(stats.count, want_stats.count, "{what}: count");
            match measure {
                Measure::Full => assert_eq!(
                    format!("{stats:?}"),
                    format!("{want_stats:?}"),
                    "{what}: stats, {spec:?}"
                ),
                Measure::Amax => {
                    assert_eq!(stats.amax, want_stats.amax, "{what}: amax, {spec:?}")
                }
                Measure::Nothing => {}
            }
            if measure != Measure::Full
                && matches!(
                    spec.scaling,
                    Scaling::None | Scaling::Tensor(TensorScale::Given(_))
                )
            {
                assert_eq!(stats.scale, want_stats.scale, "{what}: scale, {spec:?}");
            }
        }
    }
}

#[test]
fn in_place_and_slice_equal_quantize() {
    // Small (one thread), several chunks (parallel, ragged tail).
    for (n, cols) in [(1usize, 1usize), (37, 37), (1000, 40), (1600 * 123, 123)] {
        let x = data(n, n as u64);
        let shape = [n / cols, cols];
        check(Source::InPlace, &x, &shape, &format!("in place {n}"));
        check(Source::Slice(&x), &x, &shape, &format!("slice {n}"));
    }
}

#[test]
fn strided_views_equal_quantize_of_their_copy() {
    let x = data(2 * 3 * 40 * 96 + 5, 11);
    // A [b, t, 3c] buffer with c = 32 split into heads [b, h, t, hd] (h 4, hd 8): the query
    // heads (offset 0), the key heads (offset c) and the key heads transposed [b, h, hd, t].
    let (b, t, h, hd) = (2usize, 40usize, 4usize, 8usize);
    let c = h * hd;
    let q_shape = [b, h, t, hd];
    let q_strides = [t * 3 * c, hd, 3 * c, 1];
    let kt_shape = [b, h, hd, t];
    let kt_strides = [t * 3 * c, hd, 1, 3 * c];
    let views: Vec<(&str, usize, Vec<usize>, Vec<usize>)> = vec![
        ("q heads", 0, q_shape.to_vec(), q_strides.to_vec()),
        ("k heads", c, q_shape.to_vec(), q_strides.to_vec()),
        ("k transposed", c, kt_shape.to_vec(), kt_strides.to_vec()),
        // Contiguous with an offset, a narrowed row range, a plain 2-D transpose, size-1 dims.
        ("offset", 5, vec![b * t, 3 * c], vec![3 * c, 1]),
        ("narrowed", 7, vec![10, 17], vec![96, 1]),
        ("transposed", 0, vec![96, 40], vec![1, 96]),
        ("unit dims", 3, vec![1, 12, 1, 9], vec![999, 50, 7, 2]),
        // A broadcast (stride 0) dimension.
        ("broadcast", 1, vec![6, 50], vec![0, 3]),
    ];
    for (what, offset, shape, strides) in &views {
        let want = gather(&x, *offset, shape, strides);
        let view = StridedView {
            data: &x,
            offset: *offset,
            shape,
            strides,
        };
        check(Source::Strided(view), &want, shape, what);
    }
    // Large enough to be split into parallel chunks, with chunk boundaries inside rows.
    let big = data(300 * 1003, 5);
    let (shape, strides) = ([250usize, 1000], [1003usize, 1]);
    let want = gather(&big, 3, &shape, &strides);
    let view = StridedView {
        data: &big,
        offset: 3,
        shape: &shape,
        strides: &strides,
    };
    check(Source::Strided(view), &want, &shape, "big narrowed");
    let (shape, strides) = ([1000usize, 250], [1usize, 1003]);
    let want = gather(&big, 3, &shape, &strides);
    let view = StridedView {
        data: &big,
        offset: 3,
        shape: &shape,
        strides: &strides,
    };
    check(Source::Strided(view), &want, &shape, "big transposed");
}

#[test]
#[should_panic(expected = "reaches element")]
fn strided_view_out_of_bounds_panics() {
    let x = [0f32; 10];
    let mut out = [0f32; 4];
    let view = StridedView {
        data: &x,
        offset: 4,
        shape: &[2, 2],
        strides: &[5, 1],
    };
    quantize_from(
        Source::Strided(view),
        &mut out,
        &[2, 2],
        &QuantSpec::cast(CastSpec::new(Format::FLOAT8_E4M3FN)),
        Measure::Full,
    );
}

/// Formats with f32's exponent range skip the subnormal path in the elementwise kernel; the
/// results must still be those of the scalar cast, subnormals, boundaries and specials included.
#[test]
fn eight_bit_exponent_formats_match_the_scalar_cast() {
    let mut x: Vec<f32> = (0u32..=0x0080_0100)
        .step_by(997)
        .map(f32::from_bits)
        .collect();
    x.extend((0..=u32::MAX).step_by(65_537).map(f32::from_bits));
    for m in 0u32..=8 {
        // Ties and neighbours in the subnormal range and at the normal boundary.
        for base in [0u32, 0x0080_0000, 0x0040_0000, 0x007f_ffff] {
            let half = 1u32 << (22 - m.min(22));
            for d in [0, 1, half - 1, half, half + 1, 2 * half, 3 * half] {
                x.push(f32::from_bits(base.wrapping_add(d)));
                x.push(f32::from_bits(base.wrapping_sub(d)));
            }
        }
    }
    x.extend([f32::MAX, f32::MIN_POSITIVE, 3.0e38, f32::INFINITY, f32::NAN]);
    x.extend(x.clone().iter().map(|v| -v));
    let names = [
        "e8m3", "e8m1", "e8m5", "e8m7", "bfloat16", "e8m3fn", "e8m0", "e8m6ns", "e8m2fn",
    ];
    for name in names {
        let f: Format = name.parse().unwrap();
        for r in [
            Rounding::NearestEven,
            Rounding::TowardZero,
            Rounding::NearestAway,
        ] {
            for (sat, sub) in [(false, true), (true, true), (true, false)] {
                let cast = CastSpec::new(f)
                    .with_rounding(r)
                    .with_saturate(sat)
                    .with_subnormals(sub);
                let mut got = vec![0f32; x.len()];
                let spec = QuantSpec::cast(cast);
                quantize_from(
                    Source::Slice(&x),
                    &mut got,
                    &[x.len()],
                    &spec,
                    Measure::Nothing,
                );
                for (i, (&v, &g)) in x.iter().zip(&got).enumerate() {
                    let want = cast_scalar(v, &cast, i as u64);
                    assert_eq!(
                        g.to_bits(),
                        want.to_bits(),
                        "{name} {r:?} sat {sat} sub {sub}: {v:e} ({:#x}) → {g:e}, want {want:e}",
                        v.to_bits()
                    );
                }
            }
        }
    }
}
