//! The closed-form logit sharpness against numerical box-constrained maximizers.
//!
//! If the corner argument in `fp8_stats::sharpness` were wrong, some search below would find a point
//! in the box with a larger loss than the corner.

use fp8_formats::rng::SplitMix64;
use fp8_stats::sharpness::{cross_entropy_f64, logit_sharpness};

/// Test inputs from the workspace's SplitMix64.
struct Rng(SplitMix64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0.next_f64()
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

fn phi_of(f0: f64, f: f64) -> f64 {
    100.0 * (f - f0) / (1.0 + f0)
}

/// Projected gradient ascent on f(x + y) over the box |y_i| ≤ r_i, from a random start.
fn projected_gradient_ascent(x: &[f64], t: usize, r: &[f64], rng: &mut Rng, iters: usize) -> f64 {
    let v = x.len();
    let mut y: Vec<f64> = r.iter().map(|&ri| rng.range(-ri, ri)).collect();
    let mut best = f64::NEG_INFINITY;
    let mut z = vec![0.0; v];
    for it in 0..iters {
        for i in 0..v {
            z[i] = x[i] + y[i];
        }
        best = best.max(cross_entropy_f64(&z, t));
        // ∇f(z) = softmax(z) − e_t.
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|zi| (zi - m).exp()).sum();
        // Step proportional to the box size so every coordinate can move across its interval.
        let eta = 0.5 / (1.0 + it as f64).sqrt();
        for i in 0..v {
            let g = (z[i] - m).exp() / s - if i == t { 1.0 } else { 0.0 };
            y[i] = (y[i] + eta * r[i] * g.signum() * g.abs().sqrt().max(1e-3)).clamp(-r[i], r[i]);
        }
    }
    for i in 0..v {
        z[i] = x[i] + y[i];
    }
    best.max(cross_entropy_f64(&z, t))
}

/// Coordinate-wise search: random vertex, then flip single coordinates while that helps.
fn coordinate_search(x: &[f64], t: usize, r: &[f64], rng: &mut Rng) -> f64 {
    let v = x.len();
    let mut y: Vec<f64> = r
        .iter()
        .map(|&ri| if rng.unit() < 0.5 { -ri } else { ri })
        .collect();
    let eval = |y: &[f64]| {
        let z: Vec<f64> = x.iter().zip(y).map(|(a, b)| a + b).collect();
        cross_entropy_f64(&z, t)
    };
    let mut cur = eval(&y);
    loop {
        let mut improved = false;
        for i in 0..v {
            // Also try interior points of the coordinate, not only the other end.
            for cand in [-r[i], -0.5 * r[i], 0.0, 0.5 * r[i], r[i]] {
                let old = y[i];
                y[i] = cand;
                let f = eval(&y);
                if f > cur + 1e-15 {
                    cur = f;
                    improved = true;
                } else {
                    y[i] = old;
                }
            }
        }
        if !improved {
            return cur;
        }
    }
}

fn random_logits(rng: &mut Rng, v: usize, scale: f64) -> Vec<f32> {
    (0..v).map(|_| rng.range(-scale, scale) as f32).collect()
}

#[test]
fn closed_form_is_the_box_maximum() {
    let mut rng = Rng::new(0x5eed);
    for case in 0..60 {
        let v = 2 + (rng.next_u64() % 30) as usize;
        let scale = [0.1, 1.0, 5.0, 20.0][case % 4];
        let eps = [1e-3, 1e-2, 5e-2][case % 3];
        let logits = random_logits(&mut rng, v, scale);
        let t = (rng.next_u64() % v as u64) as usize;
        let x: Vec<f64> = logits.iter().map(|&l| l as f64).collect();
        let r: Vec<f64> = x.iter().map(|xi| eps * (xi.abs() + 1.0)).collect();
        let f0 = cross_entropy_f64(&x, t);
        let closed = logit_sharpness(&logits, t, eps);

        let mut best = f64::NEG_INFINITY;
        for _ in 0..20 {
            let f = projected_gradient_ascent(&x, t, &r, &mut rng, 200);
            let phi = phi_of(f0, f);
            assert!(
                phi <= closed + 1e-9,
                "case {case}: gradient ascent found {phi} > closed form {closed}"
            );
            best = best.max(phi);
            let f = coordinate_search(&x, t, &r, &mut rng);
            let phi = phi_of(f0, f);
            assert!(
                phi <= closed + 1e-9,
                "case {case}: coordinate search found {phi} > closed form {closed}"
            );
            best = best.max(phi);
        }
        // The searches reach the corner.
        assert!(
            (closed - best).abs() <= 1e-6 * closed.abs().max(1e-3),
            "case {case}: best numerical {best} vs closed form {closed}"
        );
    }
}

#[test]
fn closed_form_matches_exhaustive_vertex_enumeration() {
    // f is convex (log-sum-exp minus a linear term), so its maximum over a box is attained at one of
    // the 2^V vertices: enumerating them all is an exact check for small V.
    let mut rng = Rng::new(42);
    for case in 0..40 {
        let v = 2 + case % 9; // up to 10 → 1024 vertices
        let logits = random_logits(&mut rng, v, 4.0);
        let t = (rng.next_u64() % v as u64) as usize;
        let eps = 0.02;
        let x: Vec<f64> = logits.iter().map(|&l| l as f64).collect();
        let f0 = cross_entropy_f64(&x, t);
        let mut best = f64::NEG_INFINITY;
        for mask in 0u32..(1 << v) {
            let z: Vec<f64> = x
                .iter()
                .enumerate()
                .map(|(i, xi)| {
                    let r = eps * (xi.abs() + 1.0);
                    if mask >> i & 1 == 1 {
                        xi + r
                    } else {
                        xi - r
                    }
                })
                .collect();
            best = best.max(cross_entropy_f64(&z, t));
        }
        let closed = logit_sharpness(&logits, t, eps);
        let phi = phi_of(f0, best);
        assert!(
            (phi - closed).abs() < 1e-9,
            "case {case}: vertex max {phi} vs closed form {closed}"
        );
    }
}
