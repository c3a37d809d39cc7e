//! Scaling schemes against worked examples computed by hand from docs/DESIGN.md §4.

use fp8_formats::*;

fn q(data: &mut [f32], shape: &[usize], f: Format, scaling: Scaling) -> Stats {
    quantize(
        data,
        shape,
        &QuantSpec {
            cast: CastSpec::new(f),
            scaling,
        },
    )
}

#[test]
fn none_matches_cast_and_stats() {
    // e4m3fn: 0.3 → 0.3125 (spacing 1/32 in [0.25, 0.5)), 1e-4 underflows, 1000 overflows (NaN).
    let mut v = [0.3f32, 1e-4, 1000.0, 2.0];
    let s = q(&mut v, &[4], Format::FLOAT8_E4M3FN, Scaling::None);
    assert_eq!(v[0], 0.3125);
    assert_eq!(v[1], 0.0);
    assert!(v[2].is_nan());
    assert_eq!(s.amax, 1000.0);
    assert_eq!(s.count, 4);
    assert_eq!(s.underflow, 0.25);
    assert_eq!(s.saturation, 0.25);
    // SNR over elements with a finite result: x² = 0.09 + 1e-8 + 4, err² = 0.0125² + 1e-8.
    let want = 10.0 * ((0.3f32 as f64).powi(2) + (1e-4f32 as f64).powi(2) + 4.0).log10()
        - 10.0 * ((0.3125 - 0.3f32 as f64).powi(2) + (1e-4f32 as f64).powi(2)).log10();
    assert!((s.snr_db - want).abs() < 1e-3, "{} vs {want}", s.snr_db);
    let mut exact = [1.0f32, 2.0];
    assert_eq!(
        q(&mut exact, &[2], Format::FLOAT8_E4M3FN, Scaling::None).snr_db,
        f64::INFINITY
    );
}

#[test]
fn tensor_current_and_given() {
    // amax 2 → scale 224; 1.1·224 = 246.4 → e4m3fn 256 (spacing 16 in [128,256) ties... 246.4
    // lies between 240 and 256, nearer 240) → 240/224.
    let mut v = [2.0f32, 1.1, -0.5];
    let s = q(
        &mut v,
        &[3],
        Format::FLOAT8_E4M3FN,
        Scaling::Tensor(TensorScale::Current { pow2: false }),
    );
    assert_eq!(s.scale, 224.0);
    assert_eq!(v, [2.0, 240.0 * (1.0 / 224.0f32), -0.5]); // dequantized with 1/scale
                                                          // pow2 rounds 224 down to 128: 1.1·128 = 140.8 → 144 (spacing 16) → 1.125.
    let mut v = [2.0f32, 1.1];
    let s = q(
        &mut v,
        &[2],
        Format::FLOAT8_E4M3FN,
        Scaling::Tensor(TensorScale::Current { pow2: true }),
    );
    assert_eq!(s.scale, 128.0);
    assert_eq!(v, [2.0, 1.125]);
    // amax 0 → scale 1.
    let mut z = [0.0f32; 4];
    assert_eq!(
        q(
            &mut z,
            &[4],
            Format::FLOAT8_E4M3FN,
            Scaling::Tensor(TensorScale::Current { pow2: false })
        )
        .scale,
        1.0
    );
    // Given scale 4 with saturation: 200·4 = 800 → 448 → 112.
    let mut g = [200.0f32, 0.25];
    let s = q(
        &mut g,
        &[2],
        Format::FLOAT8_E4M3FN,
        Scaling::Tensor(TensorScale::Given(4.0)),
    );
    assert_eq!(g, [112.0, 0.25]);
    assert_eq!(s.saturation, 0.5);
}

#[test]
fn row_col_block() {
    // [[1, 0.3], [100, 10]]; rows: scales 448 and 4.48; cols: 4.48 and 44.8.
    let base = [1.0f32, 0.3, 100.0, 10.0];
    let mut r = base;
    q(
        &mut r,
        &[2, 2],
        Format::FLOAT8_E4M3FN,
        Scaling::Row { pow2: true },
    );
    // Row 0 scale 256: 0.3·256 = 76.8 → 80 (spacing 8) → 0.3125. Row 1 scale 4: 100·4 = 400 is
    // the tie between 384 (even) and 416 (spacing 32) → 384 → 96; 10·4 = 40 exact.
    assert_eq!(r, [1.0, 0.3125, 96.0, 10.0]);
    let mut c = base;
    q(
        &mut c,
        &[2, 2],
        Format::FLOAT8_E4M3FN,
        Scaling::Col { pow2: true },
    );
    // Col 0 amax 100 → 4.48 → 4: 1·4 = 4 exact, 100·4 = 400 → 384 → 96. Col 1 amax 10 → 44.8
    // → 32: 0.3·32 = 9.6 → 10 (spacing 1 in [8, 16)) → 0.3125; 10·32 = 320 exact.
    assert_eq!(c, [1.0, 0.3125, 96.0, 10.0]);
    // 1×128 tiles: tile 0 amax 1, tile 1 amax 100; 0.3 in tile 0 (scale 448): 134.4 → 128 → 0.2857…
    let mut b: Vec<f32> = vec![0.0; 256];
    b[0] = 1.0;
    b[1] = 0.3;
    b[128] = 100.0;
    b[129] = 0.3;
    let s = q(
        &mut b,
        &[1, 256],
        Format::FLOAT8_E4M3FN,
        Scaling::Block {
            rows: 1,
            cols: 128,
            pow2: false,
        },
    );
    assert_eq!(b[1], 128.0 / 448.0);
    // tile 1: scale 4.48: 0.3·4.48 = 1.344 → 1.375 → /4.48.
    assert_eq!(b[129], 1.375 / 4.48f32);
    assert!((f64::from(s.scale) - (448.0 + 4.48) / 2.0).abs() < 1e-3);
    // Ragged tails: 3×3 with 2×2 tiles has 4 tiles; each element exact in its own tile scale.
    let mut t = [1.0f32, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
    q(
        &mut t,
        &[3, 3],
        Format::FLOAT8_E4M3FN,
        Scaling::Block {
            rows: 2,
            cols: 2,
            pow2: true,
        },
    );
    assert_eq!(t, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
}

#[test]
fn mx_worked_examples() {
    let mx = |rule| Scaling::Mx {
        block: 32,
        rule,
        axis: BlockAxis::Cols,
    };
    // Block amax 10: floor(log2 10) = 3, emax(E4M3) = 8 → shared_exp −5: 0.1·32 = 3.2 → 3.25.
    let mut v = vec![0.0f32; 32];
    v[0] = 10.0;
    v[1] = 0.1;
    let s = q(&mut v, &[32], Format::FLOAT8_E4M3FN, mx(MxRule::Floor));
    assert_eq!((v[0], v[1]), (10.0, 3.25 / 32.0));
    assert_eq!(s.scale, 32.0);
    // Block amax 500: FLOOR → exp 0 → 500 saturates to 448. RCEIL: 500/448 → 2 → exp 1:
    // 250 → 256 (spacing 16 in [128, 256)) → 512.
    let mut a = vec![500.0f32; 32];
    let s = q(&mut a, &[32], Format::FLOAT8_E4M3FN, mx(MxRule::Floor));
    assert_eq!(a[0], 448.0);
    assert_eq!(s.saturation, 1.0);
    let mut a = vec![500.0f32; 32];
    q(&mut a, &[32], Format::FLOAT8_E4M3FN, mx(MxRule::Rceil));
    assert_eq!(a[0], 512.0);
    assert_eq!(mx_shared_exp(500.0, Format::FLOAT8_E4M3FN, MxRule::Ceil), 1);
    assert_eq!(mx_shared_exp(256.0, Format::FLOAT8_E4M3FN, MxRule::Ceil), 0);
    // EVEN: 15.9 rounds to 16 at 3 mantissa bits → floor log2 = 4 → 4 − 8 = −4.
    assert_eq!(mx_shared_exp(15.9, Format::FLOAT8_E4M3FN, MxRule::Even), -4);
    assert_eq!(
        mx_shared_exp(15.9, Format::FLOAT8_E4M3FN, MxRule::Floor),
        -5
    );
    assert_eq!(
        mx_shared_exp(1e-40, Format::FLOAT8_E4M3FN, MxRule::Floor),
        -127
    );
    // E2M1 (emax 2), two blocks of 32, the second one ragged (8 long) and with its own scale.
    let mut e = vec![0.0f32; 40];
    e[0] = 6.0;
    e[1] = 1.25; // 1.25 → tie between 1 and 1.5 → 1 (even)
    e[32] = 0.75;
    e[33] = 0.1; // amax 0.75: exp floor(log2 .75) − 2 = −3 → 0.8 → e2m1 1.0 → 0.125
    q(&mut e, &[40], Format::FLOAT4_E2M1FN, mx(MxRule::Floor));
    assert_eq!((e[0], e[1], e[32], e[33]), (6.0, 1.0, 0.75, 0.125));
    // Axis Rows: blocks run down the columns; [64, 2] with column 1 ten times column 0.
    let mut m: Vec<f32> = (0..128)
        .map(|i| if i % 2 == 0 { 1.0 } else { 10.0 })
        .collect();
    m[2] = 0.1; // column 0, block amax 1 → exp −8: 0.1·256 = 25.6 → 26 → 0.1015625
    m[3] = 0.1; // column 1, block amax 10 → exp −5: 3.2 → 3.25 → 0.1015625
    q(
        &mut m,
        &[64, 2],
        Format::FLOAT8_E4M3FN,
        Scaling::Mx {
            block: 32,
            rule: MxRule::Floor,
            axis: BlockAxis::Rows,
        },
    );
    assert_eq!((m[2], m[3]), (26.0 / 256.0, 3.25 / 32.0));
}

#[test]
fn nvfp4_worked_example() {
    // Tensor amax 2688 = 448·6 → s_global = 1. Block 0 amax 2688 → block scale 448 (e4m3 exact).
    // Block 1 amax 3 → block scale 0.5: 1.25/0.5 = 2.5 → tie between 2 and 3 → 2 → 1.0;
    // 0.8/0.5 = 1.6 → 1.5 → 0.75.
    let mut v = vec![0.0f32; 32];
    v[0] = 2688.0;
    v[1] = 1000.0; // /448 = 2.23 → 2 → 896
    v[16] = 3.0;
    v[17] = 1.25;
    v[18] = 0.8;
    let s = q(
        &mut v,
        &[32],
        Format::FLOAT4_E2M1FN,
        Scaling::Nvfp4 {
            axis: BlockAxis::Cols,
        },
    );
    assert_eq!(s.scale, 1.0);
    assert_eq!(
        (v[0], v[1], v[16], v[17], v[18]),
        (2688.0, 896.0, 3.0, 1.0, 0.75)
    );
}

/// NVFP4 2-D weight blocks on a ragged [20, 24] tensor: 2×2 tiles of 16×16, the right and bottom
/// ones partial (16×8, 4×16, 4×8), worked by hand. Tensor amax 2688 = 448·6 gives tensor scale 1
/// and block scale `e4m3(tile_amax / 6)`.
#[test]
fn nvfp4_2d_worked_example() {
    let (rows, cols) = (20, 24);
    let mut v = vec![0.0f32; rows * cols];
    let at = |r: usize, c: usize| r * cols + c;
    // Tile (0, 0): amax 2688 → block scale 448. 1000/448 = 2.23 → 2 → 896 (a 1-D block of
    // row 15 would have amax 1000, block scale e4m3(166.7) = 160, and give 6·160 = 960).
    v[at(0, 0)] = 2688.0;
    v[at(15, 15)] = 1000.0;
    // Tile (0, 1), 16×8: amax 3 → block scale 0.5: 1.25 → 2.5 → tie → 2 → 1.0; 0.8 → 1.6 → 1.5
    // → 0.75.
    v[at(0, 16)] = 3.0;
    v[at(15, 23)] = 1.25;
    v[at(7, 20)] = 0.8;
    // Tile (1, 0), 4×16: amax 1e-30 → block scale 1.7e-31 rounds to 0 in E4M3: all zero.
    v[at(19, 0)] = 1e-30;
    v[at(16, 5)] = -1e-31;
    // Tile (1, 1), 4×8: amax 48 → block scale 8: −48 → −6 → −48; 5 → 0.625 → 0.5 → 4.
    v[at(16, 16)] = -48.0;
    v[at(19, 23)] = 5.0;
    let mut w = v.clone();
    let s = q(
        &mut w,
        &[rows, cols],
        Format::FLOAT4_E2M1FN,
        Scaling::Nvfp4 {
            axis: BlockAxis::Square,
        },
    );
    assert_eq!(s.scale, 1.0);
    let got = [
        w[at(0, 0)],
        w[at(15, 15)],
        w[at(0, 16)],
        w[at(15, 23)],
        w[at(7, 20)],
        w[at(19, 0)],
        w[at(16, 5)],
        w[at(16, 16)],
        w[at(19, 23)],
    ];
    assert_eq!(got, [2688.0, 896.0, 3.0, 1.0, 0.75, 0.0, 0.0, -48.0, 4.0]);
    // The 1-D contrast named above.
    let mut one_d = v.clone();
    q(
        &mut one_d,
        &[rows, cols],
        Format::FLOAT4_E2M1FN,
        Scaling::Nvfp4 {
            axis: BlockAxis::Cols,
        },
    );
    assert_eq!(one_d[at(15, 15)], 960.0);
}

/// MX 2-D blocks (32×32, RCEIL) on a ragged [40, 48] tensor: 2×2 tiles, worked by hand.
/// RCEIL: `e = ceil(log2(amax / 448))`, elements scaled by `2^−e`.
#[test]
fn mx_2d_worked_example() {
    let (rows, cols) = (40, 48);
    let mut v = vec![0.0f32; rows * cols];
    let at = |r: usize, c: usize| r * cols + c;
    // Tile (0, 0): amax 100 → 0.223 → 2^−2: scale 4. 400 → tie 384/416 → 384 → 96;
    // 0.01 → 0.04 → 1.25·2^−5 → 0.009765625.
    v[at(31, 31)] = 100.0;
    v[at(0, 0)] = 0.01;
    // Tile (0, 1), 32×16: amax 3 → 0.0067 → 2^−7: scale 128. 3 → 384 exact; 0.1 → 12.8 → 13 →
    // 0.1015625.
    v[at(5, 40)] = 3.0;
    v[at(6, 41)] = 0.1;
    // Tile (1, 0), 8×32: amax 5 → 0.0112 → 2^−6: scale 64. −5 → −320 exact; 0.3 → 19.2 → 20 →
    // 0.3125.
    v[at(39, 0)] = -5.0;
    v[at(33, 1)] = 0.3;
    // Tile (1, 1), 8×16: a NaN (ignored by the amax) and amax 2 → 2^−7: scale 128. 2 → 256
    // exact; 0.05 → 6.4 → 6.5 → 0.05078125.
    v[at(32, 32)] = f32::NAN;
    v[at(35, 35)] = 2.0;
    v[at(39, 47)] = 0.05;
    let s = q(
        &mut v,
        &[rows, cols],
        Format::FLOAT8_E4M3FN,
        Scaling::Mx {
            block: 32,
            rule: MxRule::Rceil,
            axis: BlockAxis::Square,
        },
    );
    let got = [
        v[at(31, 31)],
        v[at(0, 0)],
        v[at(5, 40)],
        v[at(6, 41)],
        v[at(39, 0)],
        v[at(33, 1)],
        v[at(35, 35)],
        v[at(39, 47)],
    ];
    assert_eq!(
        got,
        [
            96.0,
            0.009765625,
            3.0,
            0.1015625,
            -5.0,
            0.3125,
            2.0,
            0.05078125
        ]
    );
    assert!(v[at(32, 32)].is_nan());
    // Mean of the four tile scales 4, 128, 64, 128.
    assert_eq!(s.scale, 81.0);
}

/// A square-tiled tensor and its transpose quantize to transposes of each other (what 2-D weight
/// blocks are for: the forward weight and the dgrad GEMM's transposed copy agree), unlike 1-D
/// blocks.
#[test]
fn square_tiles_commute_with_transposition() {
    let (rows, cols) = (45, 70);
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| ((i as f32) * 0.37).sin() * 2f32.powi((i % 23) as i32 - 11))
        .collect();
    let xt: Vec<f32> = (0..rows * cols)
        .map(|i| x[(i % rows) * cols + i / rows])
        .collect();
    for (f, sc) in [
        (
            Format::FLOAT4_E2M1FN,
            Scaling::Nvfp4 {
                axis: BlockAxis::Square,
            },
        ),
        (
            Format::FLOAT8_E4M3FN,
            Scaling::Mx {
                block: 32,
                rule: MxRule::Rceil,
                axis: BlockAxis::Square,
            },
        ),
    ] {
        let mut a = x.clone();
        q(&mut a, &[rows, cols], f, sc);
        let mut b = xt.clone();
        q(&mut b, &[cols, rows], f, sc);
        let bt: Vec<f32> = (0..rows * cols)
            .map(|i| b[(i % cols) * rows + i / cols])
            .collect();
        assert_eq!(a, bt, "{sc:?}");
    }
    // 1-D blocks along the columns do not commute: the check above can fail.
    let sc = Scaling::Nvfp4 {
        axis: BlockAxis::Cols,
    };
    let mut a = x.clone();
    q(&mut a, &[rows, cols], Format::FLOAT4_E2M1FN, sc);
    let mut b = xt.clone();
    q(&mut b, &[cols, rows], Format::FLOAT4_E2M1FN, sc);
    let bt: Vec<f32> = (0..rows * cols)
        .map(|i| b[(i % cols) * rows + i / cols])
        .collect();
    assert_ne!(a, bt);
}

#[test]
fn stats_independent_of_threads() {
    let data: Vec<f32> = (0..500_000)
        .map(|i| ((i as f32) * 0.013).sin() * 50.0)
        .collect();
    for sc in [
        Scaling::None,
        Scaling::MX,
        Scaling::Col { pow2: false },
        Scaling::Block {
            rows: 128,
            cols: 128,
            pow2: false,
        },
    ] {
        let run = |t: usize| {
            let mut v = data.clone();
            let s = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| q(&mut v, &[500, 1000], Format::FLOAT8_E5M2, sc));
            (v, s)
        };
        let (a, sa) = run(1);
        let (b, sb) = run(2);
        assert_eq!(a, b);
        assert_eq!(sa, sb);
    }
}

/// Tile scaling (fused into the cast pass or not) against a scalar reference written from
/// docs/DESIGN.md §4: per-tile amax, scale, `cast(x·s)·inv` element by element, and the statistics.
#[test]
fn tiles_match_scalar_reference() {
    let f = Format::FLOAT8_E4M3FN;
    let fmt_max = f.max();
    let current = move |amax: f32, pow2: bool| {
        let mut s = if amax > 0.0 && amax.is_finite() {
            fmt_max / amax
        } else {
            1.0
        };
        if !s.is_finite() {
            s = f32::MAX;
        }
        if pow2 {
            s = f32::from_bits(s.to_bits() & 0xff80_0000).max(f32::MIN_POSITIVE);
        }
        (s, 1.0 / s)
    };
    let mx = move |amax: f32| {
        let e = mx_shared_exp(amax, f, MxRule::Floor);
        (2f64.powi(-e) as f32, 2f64.powi(e) as f32)
    };
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for shape in [
        [1usize, 5000],
        [1, 1000],
        [3, 100],
        [7, 96],
        [40, 64],
        [130, 33],
        [600, 128],
    ] {
        let (rows, cols) = (shape[0], shape[1]);
        let n = rows * cols;
        let data: Vec<f32> = (0..n)
            .map(|i| {
                let h = next();
                let mag = f32::from_bits(((h >> 40) as u32 & 0x7f_ffff) | 0x3f80_0000);
                let e = ((h >> 8) & 31) as i32 - 16;
                let v = mag * 2f32.powi(e) * if h & 1 == 0 { 1.0 } else { -1.0 };
                match i % 97 {
                    5 => 0.0,
                    6 => f32::NAN,
                    7 => f32::INFINITY,
                    8 => 1e-30,
                    _ => v,
                }
            })
            .collect();
        type Rule = Box<dyn Fn(f32) -> (f32, f32)>;
        let schemes: Vec<(Scaling, usize, usize, Rule)> = vec![
            (Scaling::MX, 1, 32, Box::new(mx)),
            (
                Scaling::Mx {
                    block: 32,
                    rule: MxRule::Floor,
                    axis: BlockAxis::Rows,
                },
                32,
                1,
                Box::new(mx),
            ),
            (
                Scaling::Block {
                    rows: 1,
                    cols: 128,
                    pow2: false,
                },
                1,
                128,
                Box::new(move |a| current(a, false)),
            ),
            (
                Scaling::Block {
                    rows: 4,
                    cols: 8,
                    pow2: true,
                },
                4,
                8,
                Box::new(move |a| current(a, true)),
            ),
            (
                Scaling::Row { pow2: false },
                1,
                usize::MAX,
                Box::new(move |a| current(a, false)),
            ),
            (
                Scaling::Col { pow2: false },
                usize::MAX,
                1,
                Box::new(move |a| current(a, false)),
            ),
        ];
        for (sc, tr, tc, rule) in schemes {
            let (tr, tc) = (tr.min(rows), tc.min(cols));
            let (n_tr, n_tc) = (rows.div_ceil(tr), cols.div_ceil(tc));
            let mut amax = vec![0f32; n_tr * n_tc];
            for (i, &x) in data.iter().enumerate() {
                let t = (i / cols / tr) * n_tc + (i % cols) / tc;
                if x.is_finite() {
                    amax[t] = amax[t].max(x.abs());
                }
            }
            let scales: Vec<(f32, f32)> = amax.iter().map(|&a| rule(a)).collect();
            let cast = CastSpec::new(f).with_saturate(true);
            let want: Vec<f32> = data
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    let (s, inv) = scales[(i / cols / tr) * n_tc + (i % cols) / tc];
                    cast_scalar(x * s, &cast, i as u64) * inv
                })
                .collect();
            let mut got = data.clone();
            let st = q(&mut got, &shape, f, sc);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                    "{sc:?} {shape:?} [{i}]: {:e} → {g:e}, want {w:e}",
                    data[i]
                );
            }
            // Statistics over finite inputs, in f64.
            let fin = || data.iter().zip(&want).filter(|(x, _)| x.is_finite());
            let amax_all = fin().fold(0f32, |m, (x, _)| m.max(x.abs()));
            let under = fin().filter(|(x, q)| **x != 0.0 && **q == 0.0).count();
            let (mut sx2, mut se2) = (0f64, 0f64);
            for (&x, &q) in fin().filter(|(_, q)| q.is_finite()) {
                sx2 += f64::from(x * x);
                se2 += f64::from((x - q) * (x - q));
            }
            let mean_scale =
                scales.iter().map(|&(s, _)| f64::from(s)).sum::<f64>() / scales.len() as f64;
            assert_eq!(st.amax, amax_all, "{sc:?} {shape:?}");
            assert_eq!(st.count, n as u64);
            assert_eq!(st.underflow, under as f64 / n as f64, "{sc:?} {shape:?}");
            let snr = 10.0 * (sx2 / se2).log10();
            assert!(
                (st.snr_db - snr).abs() < 1e-3,
                "{sc:?} {shape:?}: {} vs {snr}",
                st.snr_db
            );
            assert!(
                (f64::from(st.scale) / mean_scale - 1.0).abs() < 1e-5,
                "{sc:?} {shape:?}: {} vs {mean_scale}",
                st.scale
            );
        }
    }
}

/// MX scaling fused into the cast pass (1-row tiles of 16, 32, 64 and 128 along a row), every
/// rule, against a scalar reference: zero blocks, blocks holding NaN/±inf (alone or with finite
/// values), subnormal-only blocks, huge and tiny amaxes, and a ragged last block.
#[test]
fn mx_fused_all_rules_match_scalar_reference() {
    let mut seed = 0x0bad_cafe_dead_beefu64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let n = 4096 + 1000 + 7;
    let data: Vec<f32> = (0..n)
        .map(|i| {
            let h = next();
            let mag = f32::from_bits(((h >> 40) as u32 & 0x7f_ffff) | 0x3f80_0000);
            let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
            // The kind of block element `i` sits in (blocks of 16; larger blocks mix kinds).
            match (i / 16) % 11 {
                0 => 0.0 * sign,
                1 => [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][i % 3],
                2 if i % 5 == 0 => [f32::NAN, f32::NEG_INFINITY][i % 2],
                3 => f32::from_bits((h >> 20) as u32 & 0x7f_ffff) * sign,
                4 => mag * 2f32.powi(((h >> 8) & 63) as i32 + 60) * sign,
                5 => mag * 2f32.powi(-(((h >> 8) & 15) as i32) - 110) * sign,
                6 if i % 16 == 3 => 1.0,
                6 => 0.0,
                7 => f32::from_bits(0x7f7f_ffff) * sign,
                _ => mag * 2f32.powi(((h >> 8) & 31) as i32 - 16) * sign,
            }
        })
        .collect();
    for f in [
        Format::FLOAT8_E4M3FN,
        Format::FLOAT8_E5M2,
        Format::FLOAT4_E2M1FN,
        Format::FLOAT6_E2M3FN,
    ] {
        for rule in [MxRule::Floor, MxRule::Rceil, MxRule::Ceil, MxRule::Even] {
            for block in [16usize, 32, 64, 128] {
                for shape in [vec![n], vec![4096 / 256, 256]] {
                    let len: usize = shape.iter().product();
                    let src = &data[..len];
                    let sc = Scaling::Mx {
                        block,
                        rule,
                        axis: BlockAxis::Cols,
                    };
                    let cast = CastSpec::new(f).with_saturate(true);
                    let want: Vec<f32> = src
                        .chunks(block)
                        .enumerate()
                        .flat_map(|(b, blk)| {
                            let amax = blk
                                .iter()
                                .filter(|x| x.is_finite())
                                .fold(0f32, |m, x| m.max(x.abs()));
                            let e = mx_shared_exp(amax, f, rule);
                            let (s, inv) = (2f64.powi(-e) as f32, 2f64.powi(e) as f32);
                            blk.iter().enumerate().map(move |(j, &x)| {
                                cast_scalar(x * s, &cast, (b * block + j) as u64) * inv
                            })
                        })
                        .collect();
                    let mut got = src.to_vec();
                    q(&mut got, &shape, f, sc);
                    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                            "{f} {sc:?} {shape:?} [{i}]: {:e} → {g:e}, want {w:e}",
                            src[i]
                        );
                    }
                }
            }
        }
    }
}

/// NVFP4 along the rows (1×16 tiles scaled from the grid of two-level scales, one broadcast per
/// tile) on ragged shapes with zeros, NaN, ±inf and values that underflow: the statistics
/// against a recomputation from the inputs and the quantized values, and the same values with
/// and without them.
#[test]
fn nvfp4_rows_stats_match_a_recomputation() {
    let mut z = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        z ^= z << 13;
        z ^= z >> 7;
        z ^= z << 17;
        z
    };
    for shape in [[1usize, 1000], [3, 48], [130, 32], [64, 160]] {
        let n = shape[0] * shape[1];
        let data: Vec<f32> = (0..n)
            .map(|i| {
                let h = next();
                let v = ((h >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                    * 2f32.powi((h % 24) as i32 - 12);
                match i % 89 {
                    3 => 0.0,
                    4 => f32::NAN,
                    5 => f32::NEG_INFINITY,
                    6 => 1e-9,
                    _ => v,
                }
            })
            .collect();
        let spec = QuantSpec {
            cast: CastSpec::new(Format::FLOAT4_E2M1FN),
            scaling: Scaling::Nvfp4 {
                axis: BlockAxis::Cols,
            },
        };
        let mut got = data.clone();
        let st = quantize(&mut got, &shape, &spec);
        let mut plain = vec![0.0; n];
        quantize_from(
            Source::Slice(&data),
            &mut plain,
            &shape,
            &spec,
            Measure::Nothing,
        );
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&plain),
            bits(&got),
            "{shape:?}: values without statistics"
        );
        let fin = || data.iter().zip(&got).filter(|(x, _)| x.is_finite());
        let amax = fin().fold(0f32, |m, (x, _)| m.max(x.abs()));
        let under = fin().filter(|(x, q)| **x != 0.0 && **q == 0.0).count();
        let (mut sx2, mut se2) = (0f64, 0f64);
        for (&x, &q) in fin().filter(|(_, q)| q.is_finite()) {
            sx2 += f64::from(x * x);
            se2 += f64::from((x - q) * (x - q));
        }
        assert!(under > 0, "{shape:?}: the data has underflows to count");
        assert_eq!(st.amax, amax, "{shape:?}");
        assert_eq!(st.count, n as u64);
        assert_eq!(st.underflow, under as f64 / n as f64, "{shape:?}");
        let snr = 10.0 * (sx2 / se2).log10();
        assert!(
            (st.snr_db - snr).abs() < 1e-3,
            "{shape:?}: {} vs {snr}",
            st.snr_db
        );
    }
}

/// NVFP4 along the rows (1×16 blocks, cast in the pass that finds the block amaxes) and down the
/// columns (16×1, by bands of 16 rows), nearest and stochastic, against a scalar reference
/// written from TransformerEngine's definition (docs/DESIGN.md §4): the tensor amax, the tensor
/// scale `g = min(448·6/amax, FLT_MAX)`, each block's E4M3 scale `e4m3(amax_b·g/6)`, then
/// `cast(x·enc)·dec` element by element with the element's C-order index for stochastic
/// rounding. The data has zero blocks, blocks with NaN and ±inf, subnormal-only blocks, huge and
/// tiny blocks and ragged edges; every entry point gives the same bits and the tensor scale.
#[test]
fn nvfp4_rows_and_cols_match_scalar_reference() {
    let mut seed = 0x5eed_0f4b_10c5_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let e4m3 = CastSpec::new(Format::FLOAT8_E4M3FN).with_saturate(true);
    for shape in [
        [1usize, 5000],
        [3, 48],
        [37, 16],
        [130, 32],
        [64, 160],
        [40, 512],
    ] {
        let (rows, cols) = (shape[0], shape[1]);
        let n = rows * cols;
        let data: Vec<f32> = (0..n)
            .map(|i| {
                let h = next();
                let mag = f32::from_bits(((h >> 40) as u32 & 0x7f_ffff) | 0x3f80_0000);
                let sign = if h & 1 == 0 { 1.0 } else { -1.0 };
                // The kind of 16-element run of the flat index element `i` sits in.
                match (i / 16) % 13 {
                    0 => 0.0 * sign,
                    1 if i % 7 == 0 => [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][i % 3],
                    2 => f32::from_bits((h >> 20) as u32 & 0x7f_ffff) * sign,
                    3 => mag * 2f32.powi(((h >> 8) & 15) as i32 + 100) * sign,
                    4 => mag * 2f32.powi(-(((h >> 8) & 15) as i32) - 100) * sign,
                    _ => mag * 2f32.powi(((h >> 8) & 31) as i32 - 16) * sign,
                }
            })
            .collect();
        let amax = data
            .iter()
            .filter(|x| x.is_finite())
            .fold(0f32, |m, x| m.max(x.abs()));
        let mut g_enc = (448.0 * 6.0 / amax).min(f32::MAX);
        if g_enc == 0.0 || g_enc.is_nan() {
            g_enc = 1.0;
        }
        let (g_dec, mult) = (1.0 / g_enc, g_enc * (1.0 / 6.0));
        for (axis, (br, bc)) in [(BlockAxis::Cols, (1, 16)), (BlockAxis::Rows, (16, 1))] {
            for rounding in [Rounding::NearestEven, Rounding::Stochastic] {
                let cast = CastSpec::new(Format::FLOAT4_E2M1FN)
                    .with_rounding(rounding)
                    .with_seed(11)
                    .with_saturate(true);
                let scale_of = |r: usize, c: usize| {
                    let (r0, c0) = (r / br * br, c / bc * bc);
                    let mut b_amax = 0f32;
                    for rr in r0..(r0 + br).min(rows) {
                        for cc in c0..(c0 + bc).min(cols) {
                            let x = data[rr * cols + cc];
                            if x.is_finite() {
                                b_amax = b_amax.max(x.abs());
                            }
                        }
                    }
                    let sb = cast_scalar((b_amax * mult).min(f32::MAX), &e4m3, 0);
                    let dec = sb * g_dec;
                    if sb > 0.0 && dec.is_finite() {
                        ((1.0 / dec).min(f32::MAX), dec)
                    } else {
                        (0.0, 0.0)
                    }
                };
                let want: Vec<f32> = (0..n)
                    .map(|i| {
                        let (enc, dec) = scale_of(i / cols, i % cols);
                        cast_scalar(data[i] * enc, &cast, i as u64) * dec
                    })
                    .collect();
                let spec = QuantSpec {
                    cast: CastSpec {
                        saturate: false,
                        ..cast
                    },
                    scaling: Scaling::Nvfp4 { axis },
                };
                let mut in_place = data.clone();
                let full = quantize(&mut in_place, &shape, &spec);
                let mut sliced = vec![f32::NAN; n];
                let plain = quantize_from(
                    Source::Slice(&data),
                    &mut sliced,
                    &shape,
                    &spec,
                    Measure::Nothing,
                );
                let mut amax_only = data.clone();
                let st = quantize_from(
                    Source::InPlace,
                    &mut amax_only,
                    &shape,
                    &spec,
                    Measure::Amax,
                );
                let what = format!("{axis:?} {rounding:?} {shape:?}");
                for (name, got) in [
                    ("quantize", &in_place),
                    ("slice", &sliced),
                    ("in place", &amax_only),
                ] {
                    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                            "{what} {name} [{i}]: {:e} → {g:e}, want {w:e}",
                            data[i]
                        );
                    }
                }
                for s in [full, plain, st] {
                    assert_eq!(s.scale, g_enc, "{what}: the tensor scale");
                }
                assert_eq!(full.amax, amax, "{what}");
                assert_eq!(st.amax, amax, "{what}");
            }
        }
    }
}
