//! The one-pass AdamW update (`fp8_kernels::adamw`) against hand-computed values and an f64
//! reference of the AdamW formulas, and the same bits for 1 and 2 threads. (That it gives the
//! bits of burn's own `AdamW` is checked in fp8-core's tests, which have burn.)

use fp8_kernels::adamw::{adamw, AdamWStep};

/// Deterministic values in `[-1, 1)`.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[test]
fn first_step_moves_by_the_learning_rate_against_the_gradient() {
    // Step 1: m̂ = g and v̂ = g², so the step is lr·g/(|g| + ε) = lr·sign(g) to f32 precision,
    // and decay multiplies the old value by 1 − lr·wd first.
    let s = AdamWStep::new(0.9, 0.999, 1e-8, 0.5, 1e-2, 1);
    assert!(s.first);
    assert_eq!(s.decay, Some(1.0 - 1e-2 * 0.5));
    let mut p = [1.0f32, -2.0, 0.5];
    let g = [2.0f32, -0.25, 0.0];
    let (mut m, mut v) = ([f32::NAN; 3], [f32::NAN; 3]);
    adamw(&s, &mut p, &g, &mut m, &mut v);
    assert_eq!(
        m,
        [2.0 * (1.0 - 0.9f32), -0.25 * (1.0 - 0.9f32), 0.0],
        "m = (1 − β₁)·g"
    );
    let f2 = 1.0 - 0.999f32;
    assert_eq!(v, [4.0 * f2, 0.0625 * f2, 0.0], "v = (1 − β₂)·g²");
    let want = [1.0 * 0.995 - 0.01, -2.0 * 0.995 + 0.01, 0.5 * 0.995];
    for (got, want) in p.iter().zip(want) {
        assert!((got - want).abs() < 1e-6, "{p:?} vs {want:?}");
    }
}

#[test]
fn steps_follow_an_f64_reference() {
    let n = 1000;
    let (b1, b2, eps, wd) = (0.9f32, 0.95f32, 1e-8f32, 0.1f32);
    let mut p = values(n, 1);
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut p64: Vec<f64> = p.iter().map(|&x| x as f64).collect();
    let (mut m64, mut v64) = (vec![0.0f64; n], vec![0.0f64; n]);
    for t in 1..=5usize {
        let lr = 1e-3 * t as f64;
        let g = values(n, 100 + t as u64);
        adamw(
            &AdamWStep::new(b1, b2, eps, wd, lr, t),
            &mut p,
            &g,
            &mut m,
            &mut v,
        );
        for i in 0..n {
            let gi = g[i] as f64;
            m64[i] = b1 as f64 * m64[i] + (1.0 - b1 as f64) * gi;
            v64[i] = b2 as f64 * v64[i] + (1.0 - b2 as f64) * gi * gi;
            let mh = m64[i] / (1.0 - (b1 as f64).powi(t as i32));
            let vh = v64[i] / (1.0 - (b2 as f64).powi(t as i32));
            p64[i] = p64[i] * (1.0 - lr * wd as f64) - lr * mh / (vh.sqrt() + eps as f64);
        }
    }
    for i in 0..n {
        assert!(
            (p[i] as f64 - p64[i]).abs() < 1e-5,
            "element {i}: {} vs {}",
            p[i],
            p64[i]
        );
        assert!((m[i] as f64 - m64[i]).abs() < 1e-6, "m[{i}]");
        assert!((v[i] as f64 - v64[i]).abs() < 1e-6, "v[{i}]");
    }
}

#[test]
fn same_bits_with_1_and_2_threads() {
    // Large enough to be split into parallel tasks, with a short last one.
    let n = 100_003;
    let run = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                let mut p = values(n, 7);
                let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
                for t in 1..=3 {
                    let s = AdamWStep::new(0.9, 0.999, 1e-5, 0.01, 1e-3, t);
                    adamw(&s, &mut p, &values(n, 50 + t as u64), &mut m, &mut v);
                }
                [p, m, v].map(|x| x.iter().map(|f| f.to_bits()).collect::<Vec<u32>>())
            })
    };
    assert!(run(1) == run(2), "1 and 2 threads differ");
}

#[test]
#[should_panic(expected = "adamw: param 3, grad 2")]
fn unequal_lengths_are_refused() {
    let s = AdamWStep::new(0.9, 0.999, 1e-8, 0.0, 1e-3, 1);
    adamw(&s, &mut [0.0; 3], &[0.0; 2], &mut [0.0; 3], &mut [0.0; 3]);
}
