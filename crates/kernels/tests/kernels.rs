//! Each kernel against a plain f64 reference, gradients against central finite differences of
//! that reference, hand-computed values, and bit-identity across rayon thread counts.

use fp8_formats::rng::SplitMix64;
use fp8_kernels as k;

/// Deterministic test inputs from the workspace's SplitMix64.
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    fn targets(&mut self, rows: usize, cols: usize) -> Vec<i64> {
        (0..rows)
            .map(|_| (self.next() % cols as u64) as i64)
            .collect()
    }
}

/// |got − want| in units of the f32 spacing at `want` (a correctly rounded result is ≤ 0.5).
fn ulps(got: f32, want: f64) -> f64 {
    let w = want.abs().max(f32::MIN_POSITIVE as f64);
    let ulp = 2f64.powi(w.log2().floor() as i32 - 23);
    (got as f64 - want).abs() / ulp
}

/// Asserts |got − want| ≤ atol + rtol·|want| elementwise.
fn assert_close(name: &str, got: &[f32], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = atol + rtol * w.abs();
        assert!(
            (g as f64 - w).abs() <= tol,
            "{name}[{i}]: got {g}, want {w} (tolerance {tol})"
        );
    }
}

// ---------- f64 references ----------

fn ref_softmax(x: &[f32], cols: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for r in x.chunks(cols) {
        let m = r.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        if m == f64::NEG_INFINITY {
            y.extend(std::iter::repeat_n(0.0, cols));
            continue;
        }
        let e: Vec<f64> = r.iter().map(|&v| (v as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        y.extend(e.iter().map(|v| v / s));
    }
    y
}

fn ref_gelu(x: f64) -> f64 {
    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    0.5 * x * (1.0 + u.tanh())
}

/// (y, mean, rstd) of LayerNorm / RMSNorm in f64.
fn ref_norm(
    x: &[f64],
    cols: usize,
    w: &[f64],
    b: Option<&[f64]>,
    eps: f64,
    rms: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut y, mut mean, mut rstd) = (vec![], vec![], vec![]);
    for r in x.chunks(cols) {
        let n = cols as f64;
        let m = if rms { 0.0 } else { r.iter().sum::<f64>() / n };
        let var = r.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
        let rs = 1.0 / (var + eps).sqrt();
        for c in 0..cols {
            y.push((r[c] - m) * rs * w[c] + b.map_or(0.0, |b| b[c]));
        }
        mean.push(m);
        rstd.push(rs);
    }
    (y, mean, rstd)
}

fn ref_lse(x: &[f64]) -> f64 {
    let m = x.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

fn ref_ce(x: &[f64], cols: usize, t: &[i64]) -> f64 {
    x.chunks(cols)
        .zip(t)
        .map(|(r, &t)| ref_lse(r) - r[t as usize])
        .sum()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Central finite difference of `f` at `x` in every coordinate.
fn fd_grad(x: &[f64], f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let h = 1e-6 * x[i].abs().max(1.0);
            let v = x[i];
            x[i] = v + h;
            let p = f(&x);
            x[i] = v - h;
            let m = f(&x);
            x[i] = v;
            (p - m) / (2.0 * h)
        })
        .collect()
}

// ---------- exp ----------

#[test]
fn exp_within_2_ulp() {
    let mut rng = Rng::new(1);
    // A dense sweep of [−87, 88], random points, and values around 0.
    let mut xs: Vec<f32> = (0..1 << 21)
        .map(|i| -87.0 + 175.0 * i as f32 / (1 << 21) as f32)
        .collect();
    xs.extend(rng.vec(1 << 20, -87.0, 88.0));
    xs.extend(rng.vec(1 << 16, -1e-3, 1e-3));
    xs.extend((0..4096).map(|i| f32::from_bits(0x3400_0000 + i * 0x1000)));
    let mut ys = xs.clone();
    k::exp_slice(&mut ys);
    let mut worst = (0.0f64, 0.0f32);
    for (&x, &y) in xs.iter().zip(&ys) {
        let e = ulps(y, (x as f64).exp());
        if e > worst.0 {
            worst = (e, x);
        }
    }
    eprintln!("exp_slice: max error {:.3} ulp at x = {}", worst.0, worst.1);
    assert!(worst.0 <= 2.0, "exp error {} ulp at {}", worst.0, worst.1);
}

#[test]
fn exp_special_values() {
    let mut x = [
        0.0,
        -0.0,
        1.0,
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::NAN,
        -88.0,
        -100.0,
        -1e30,
        88.5,
        89.0,
        1e30,
    ];
    k::exp_slice(&mut x);
    assert_eq!(x[0], 1.0);
    assert_eq!(x[1], 1.0);
    assert!(ulps(x[2], std::f64::consts::E) <= 1.0);
    assert_eq!(x[3], 0.0);
    assert_eq!(x[4], f32::INFINITY);
    assert!(x[5].is_nan());
    assert_eq!(
        &x[6..9],
        &[0.0, 0.0, 0.0],
        "below f32::MIN_POSITIVE flushes to 0"
    );
    assert!(ulps(x[9], 88.5f64.exp()) <= 2.0, "exp(88.5) = {}", x[9]);
    assert_eq!(x[10], f32::INFINITY);
    assert_eq!(x[11], f32::INFINITY);
    // The ends of the normal range.
    let mut x = [-87.33, 88.72];
    k::exp_slice(&mut x);
    assert!(
        ulps(x[0], (-87.33f32 as f64).exp()) <= 2.0,
        "exp(-87.33) = {}",
        x[0]
    );
    assert!(
        ulps(x[1], (88.72f32 as f64).exp()) <= 2.0,
        "exp(88.72) = {}",
        x[1]
    );
}

// ---------- softmax ----------

#[test]
fn softmax_hand_values() {
    let x = [0.0, 2f32.ln(), f32::NEG_INFINITY];
    let mut y = [9.0; 3];
    k::softmax(&x, 3, &mut y);
    assert_close("softmax", &y, &[1.0 / 3.0, 2.0 / 3.0, 0.0], 1e-6, 0.0);
    let x = [f32::NEG_INFINITY; 4];
    let mut y = [9.0; 4];
    k::softmax(&x, 4, &mut y);
    assert_eq!(y, [0.0; 4], "an all −∞ row gives zeros");
}

#[test]
fn softmax_matches_reference() {
    let mut rng = Rng::new(2);
    for cols in [1, 5, 16, 17, 50, 333] {
        let rows = 7;
        let mut x = rng.vec(rows * cols, -20.0, 20.0);
        // Causal-style masking in row 1 and a fully masked row 3.
        for c in cols / 2..cols {
            x[cols + c] = f32::NEG_INFINITY;
        }
        x[3 * cols..4 * cols].fill(f32::NEG_INFINITY);
        let mut y = vec![0.0; x.len()];
        k::softmax(&x, cols, &mut y);
        assert_close("softmax", &y, &ref_softmax(&x, cols), 1e-5, 1e-9);
    }
}

#[test]
fn softmax_backward_matches_finite_differences() {
    let mut rng = Rng::new(3);
    let cols = 19;
    let x = rng.vec(3 * cols, -3.0, 3.0);
    let dy = rng.vec(x.len(), -1.0, 1.0);
    let mut y = vec![0.0; x.len()];
    k::softmax(&x, cols, &mut y);
    let mut dx = vec![0.0; x.len()];
    k::softmax_backward(&y, &dy, cols, &mut dx);
    let dyd = f64s(&dy);
    let want = fd_grad(&f64s(&x), |x| {
        // Σ softmax(x) ⊙ dy, in f64.
        let mut s = 0.0;
        for (r, d) in x.chunks(cols).zip(dyd.chunks(cols)) {
            let l = ref_lse(r);
            s += r.iter().zip(d).map(|(v, d)| (v - l).exp() * d).sum::<f64>();
        }
        s
    });
    assert_close("softmax dx", &dx, &want, 1e-4, 1e-6);
}

// ---------- GELU ----------

#[test]
fn gelu_hand_values() {
    let x = [0.0, 1.0, -1.0, 20.0, -20.0, 1e20, -1e20];
    let mut y = [9.0; 7];
    k::gelu_tanh(&x, &mut y);
    assert_eq!(y[0], 0.0);
    assert!((y[1] - 0.841_192).abs() < 1e-6, "gelu(1) = {}", y[1]);
    assert!((y[2] + 0.158_808).abs() < 1e-6, "gelu(-1) = {}", y[2]);
    assert_eq!(y[3], 20.0);
    assert!(y[4].abs() < 1e-30);
    assert_eq!(y[5], 1e20);
    assert_eq!(y[6], 0.0);
    let mut d = [9.0; 7];
    k::gelu_tanh_backward(&x, &[1.0; 7], &mut d);
    assert!((d[0] - 0.5).abs() < 1e-7);
    assert!(d.iter().all(|v| v.is_finite()), "{d:?}");
    assert_eq!(d[3], 1.0);
    assert_eq!(d[5], 1.0);
    assert!(d[4].abs() < 1e-20 && d[6].abs() < 1e-20);
}

#[test]
fn gelu_matches_reference_and_finite_differences() {
    let mut rng = Rng::new(4);
    let mut x = rng.vec(10_001, -12.0, 12.0);
    x.extend(rng.vec(1000, -1e-3, 1e-3));
    let mut y = vec![0.0; x.len()];
    k::gelu_tanh(&x, &mut y);
    let want: Vec<f64> = x.iter().map(|&v| ref_gelu(v as f64)).collect();
    assert_close("gelu", &y, &want, 2e-6, 1e-7);

    let dy = rng.vec(x.len(), -2.0, 2.0);
    let mut dx = vec![0.0; x.len()];
    k::gelu_tanh_backward(&x, &dy, &mut dx);
    let want: Vec<f64> = x
        .iter()
        .zip(&dy)
        .map(|(&v, &d)| {
            let h = 1e-6;
            let v = v as f64;
            d as f64 * (ref_gelu(v + h) - ref_gelu(v - h)) / (2.0 * h)
        })
        .collect();
    assert_close("gelu dx", &dx, &want, 1e-5, 1e-6);
}

// ---------- LayerNorm / RMSNorm ----------

#[test]
fn norm_matches_reference() {
    let mut rng = Rng::new(5);
    for (cols, rms, bias) in [
        (1, false, true),
        (7, false, true),
        (64, true, false),
        (200, false, false),
        (333, true, true),
    ] {
        let rows = 9;
        // An offset makes the two-pass variance matter.
        let x = rng.vec(rows * cols, 2.0, 6.0);
        let w = rng.vec(cols, 0.5, 1.5);
        let b = rng.vec(cols, -1.0, 1.0);
        let b = bias.then_some(&b[..]);
        let (mut y, mut mean, mut rstd) = (vec![0.0; x.len()], vec![9.0; rows], vec![0.0; rows]);
        k::norm(&x, cols, &w, b, 1e-5, rms, &mut y, &mut mean, &mut rstd);
        let bd = b.map(f64s);
        let (yr, mr, rr) = ref_norm(&f64s(&x), cols, &f64s(&w), bd.as_deref(), 1e-5, rms);
        assert_close("norm y", &y, &yr, 2e-5, 2e-5);
        assert_close("norm mean", &mean, &mr, 1e-6, 0.0);
        assert_close("norm rstd", &rstd, &rr, 1e-5, 0.0);
        if rms {
            assert!(mean.iter().all(|&m| m == 0.0));
        }
    }
}

#[test]
fn norm_backward_matches_finite_differences() {
    let mut rng = Rng::new(6);
    for (cols, rms, bias) in [
        (5, false, true),
        (21, true, false),
        (33, false, false),
        (18, true, true),
    ] {
        let rows = 4;
        let eps = 1e-5;
        let x = rng.vec(rows * cols, -2.0, 2.0);
        let w = rng.vec(cols, 0.5, 1.5);
        let b = rng.vec(cols, -1.0, 1.0);
        let dy = rng.vec(x.len(), -1.0, 1.0);
        let (mut y, mut mean, mut rstd) = (vec![0.0; x.len()], vec![0.0; rows], vec![0.0; rows]);
        let bo = bias.then_some(&b[..]);
        k::norm(&x, cols, &w, bo, eps, rms, &mut y, &mut mean, &mut rstd);
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![9.0; cols], vec![9.0; cols]);
        k::norm_backward(
            &x,
            cols,
            &w,
            &mean,
            &rstd,
            rms,
            &dy,
            &mut dx,
            &mut dw,
            bias.then_some(&mut db[..]),
        );
        let (xd, wd, bd, dyd) = (f64s(&x), f64s(&w), f64s(&b), f64s(&dy));
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let (y, _, _) = ref_norm(x, cols, w, bias.then_some(b), eps as f64, rms);
            y.iter().zip(&dyd).map(|(a, b)| a * b).sum::<f64>()
        };
        let case = format!("cols {cols} rms {rms} bias {bias}");
        let gx = fd_grad(&xd, |x| loss(x, &wd, &bd));
        assert_close(&format!("norm dx ({case})"), &dx, &gx, 1e-4, 1e-5);
        let gw = fd_grad(&wd, |w| loss(&xd, w, &bd));
        assert_close(&format!("norm dweight ({case})"), &dw, &gw, 1e-4, 1e-5);
        if bias {
            let gb = fd_grad(&bd, |b| loss(&xd, &wd, b));
            assert_close(&format!("norm dbias ({case})"), &db, &gb, 1e-4, 1e-5);
        } else {
            assert_eq!(db, vec![9.0; cols], "dbias untouched when None");
        }
    }
}

/// Many rows (several 64-row blocks), so dweight/dbias go through the block partials.
#[test]
fn norm_backward_weight_sums_over_blocks() {
    let mut rng = Rng::new(7);
    let (rows, cols) = (150, 40);
    let x = rng.vec(rows * cols, -2.0, 2.0);
    let w = rng.vec(cols, 0.5, 1.5);
    let dy = rng.vec(x.len(), -1.0, 1.0);
    let (mut y, mut mean, mut rstd) = (vec![0.0; x.len()], vec![0.0; rows], vec![0.0; rows]);
    k::norm(
        &x, cols, &w, None, 1e-5, false, &mut y, &mut mean, &mut rstd,
    );
    let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; cols], vec![0.0; cols]);
    k::norm_backward(
        &x,
        cols,
        &w,
        &mean,
        &rstd,
        false,
        &dy,
        &mut dx,
        &mut dw,
        Some(&mut db),
    );
    let (_, m, r) = ref_norm(&f64s(&x), cols, &f64s(&w), None, 1e-5, false);
    let (mut ww, mut wb) = (vec![0.0f64; cols], vec![0.0f64; cols]);
    for row in 0..rows {
        for c in 0..cols {
            let i = row * cols + c;
            ww[c] += dy[i] as f64 * (x[i] as f64 - m[row]) * r[row];
            wb[c] += dy[i] as f64;
        }
    }
    assert_close("dweight", &dw, &ww, 1e-4, 1e-4);
    assert_close("dbias", &db, &wb, 1e-4, 1e-4);
}

// ---------- cross-entropy ----------

#[test]
fn cross_entropy_uniform_is_ln_v() {
    let (rows, cols) = (3, 50_257);
    let x = vec![0.25f32; rows * cols];
    let mut lse = vec![0.0; rows];
    let loss = k::cross_entropy(&x, cols, &[0, 17, 50_256], &mut lse);
    let want = 3.0 * (cols as f64).ln();
    assert!(
        (loss - want).abs() < 1e-5 * want,
        "loss {loss}, want {want}"
    );
}

#[test]
fn cross_entropy_matches_reference_and_finite_differences() {
    let mut rng = Rng::new(8);
    for cols in [1, 2, 17, 100, 1000] {
        let rows = 6;
        let x = rng.vec(rows * cols, -15.0, 15.0);
        let t = rng.targets(rows, cols);
        let mut lse = vec![0.0; rows];
        let loss = k::cross_entropy(&x, cols, &t, &mut lse);
        let xd = f64s(&x);
        let want = ref_ce(&xd, cols, &t);
        assert!(
            (loss - want).abs() <= 1e-5 * want.abs() + 1e-5,
            "cols {cols}: {loss} vs {want}"
        );
        let wl: Vec<f64> = xd.chunks(cols).map(ref_lse).collect();
        assert_close("lse", &lse, &wl, 1e-6, 1e-6);

        let scale = 0.37;
        let mut d = vec![9.0; x.len()];
        k::cross_entropy_backward(&x, cols, &t, &lse, scale, &mut d);
        if cols <= 100 {
            let g: Vec<f64> = fd_grad(&xd, |x| scale as f64 * ref_ce(x, cols, &t));
            assert_close("dlogits", &d, &g, 1e-4, 1e-6);
        }
        // The gradient of each row sums to 0.
        for r in d.chunks(cols) {
            assert!(r.iter().map(|&v| v as f64).sum::<f64>().abs() < 1e-5);
        }
    }
}

#[test]
#[should_panic(expected = "target 5 of row 1 is outside the class range [0, 5)")]
fn cross_entropy_rejects_target_too_large() {
    let mut lse = [0.0; 2];
    k::cross_entropy(&[0.0; 10], 5, &[0, 5], &mut lse);
}

#[test]
#[should_panic(expected = "target -1 of row 0 is outside")]
fn cross_entropy_backward_rejects_negative_target() {
    let mut d = [0.0; 10];
    k::cross_entropy_backward(&[0.0; 10], 5, &[-1, 0], &[0.0; 2], 1.0, &mut d);
}

// ---------- determinism ----------

/// Every output of every kernel on inputs big enough to be split across threads.
fn run_all(rows: usize, cols: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(9);
    let n = rows * cols;
    let x = rng.vec(n, -6.0, 6.0);
    let dy = rng.vec(n, -1.0, 1.0);
    let w = rng.vec(cols, 0.5, 1.5);
    let b = rng.vec(cols, -1.0, 1.0);
    let t = rng.targets(rows, cols);
    let mut out = vec![];
    let mut y = vec![0.0; n];
    let mut dx = vec![0.0; n];
    k::softmax(&x, cols, &mut y);
    k::softmax_backward(&y, &dy, cols, &mut dx);
    out.extend([y.clone(), dx.clone()]);
    k::gelu_tanh(&x, &mut y);
    k::gelu_tanh_backward(&x, &dy, &mut dx);
    out.extend([y.clone(), dx.clone()]);
    for rms in [false, true] {
        let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
        k::norm(
            &x,
            cols,
            &w,
            Some(&b),
            1e-5,
            rms,
            &mut y,
            &mut mean,
            &mut rstd,
        );
        let (mut dw, mut db) = (vec![0.0; cols], vec![0.0; cols]);
        k::norm_backward(
            &x,
            cols,
            &w,
            &mean,
            &rstd,
            rms,
            &dy,
            &mut dx,
            &mut dw,
            Some(&mut db),
        );
        out.extend([y.clone(), mean, rstd, dx.clone(), dw, db]);
    }
    let mut lse = vec![0.0; rows];
    let loss = k::cross_entropy(&x, cols, &t, &mut lse);
    k::cross_entropy_backward(&x, cols, &t, &lse, 0.5, &mut dx);
    out.extend([
        lse,
        dx.clone(),
        vec![loss as f32, (loss - loss as f32 as f64) as f32],
    ]);
    let mut e = x.clone();
    k::exp_slice(&mut e);
    out.push(e);
    out
}

#[test]
fn same_bits_with_1_and_2_threads() {
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    for (rows, cols) in [(300, 257), (1000, 40)] {
        let one = pool(1).install(|| run_all(rows, cols));
        let two = pool(2).install(|| run_all(rows, cols));
        for (i, (a, b)) in one.iter().zip(&two).enumerate() {
            let (a, b): (Vec<u32>, Vec<u32>) = (
                a.iter().map(|v| v.to_bits()).collect(),
                b.iter().map(|v| v.to_bits()).collect(),
            );
            assert!(
                a == b,
                "output {i} differs between 1 and 2 threads ({rows}×{cols})"
            );
        }
    }
}
