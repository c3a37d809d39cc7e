//! The per-row loops behind the public kernels. Each function takes a run of whole rows, is
//! `#[inline(always)]` so that it is compiled inside a [`dispatch`](crate::simd::dispatch) copy, and
//! does every reduction of a row in one fixed order (see [`crate::simd`]).

use crate::simd::{exp1, max, sum_map, sum_map2, L};

pub(crate) const SQRT_2_OVER_PI: f32 = 0.797_884_6;
pub(crate) const GELU_C: f32 = 0.044_715;

#[inline(always)]
pub(crate) fn exp_inplace(x: &mut [f32]) {
    for v in x {
        *v = exp1(*v);
    }
}

#[inline(always)]
pub(crate) fn softmax(x: &[f32], cols: usize, y: &mut [f32]) {
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        yr.copy_from_slice(xr);
        softmax_row(yr);
    }
}

/// Causal softmax of rows of `t` scores, the first of them query `q0` (mod `t`) of its matrix:
/// `y = softmax(mask(scale·x))`, with key `j > i` masked (−∞) in query `i`'s row. The same
/// arithmetic as `mask_fill` then [`softmax`], so the same bits.
#[inline(always)]
pub(crate) fn causal_softmax(x: &[f32], t: usize, q0: usize, scale: f32, y: &mut [f32]) {
    for (r, (xr, yr)) in x.chunks_exact(t).zip(y.chunks_exact_mut(t)).enumerate() {
        let seen = (q0 + r) % t + 1;
        for (o, &v) in yr[..seen].iter_mut().zip(&xr[..seen]) {
            *o = v * scale;
        }
        yr[seen..].fill(f32::NEG_INFINITY);
        softmax_row(yr);
    }
}

/// Softmax of one row in place (a row of −∞ gives zeros).
#[inline(always)]
fn softmax_row(yr: &mut [f32]) {
    let m = max(yr);
    if m == f32::NEG_INFINITY {
        yr.fill(0.0);
        return;
    }
    // exp and sum in one pass, storing e^(x−m); the row is still in cache for the scaling.
    let mut acc = [0.0f32; L];
    let (yb, yt) = yr.as_chunks_mut::<L>();
    for b in yb.iter_mut() {
        for i in 0..L {
            let e = exp1(b[i] - m);
            b[i] = e;
            acc[i] += e;
        }
    }
    let mut s = crate::simd::hsum(acc);
    for b in yt.iter_mut() {
        let e = exp1(*b - m);
        *b = e;
        s += e;
    }
    let inv = 1.0 / s;
    for v in yr.iter_mut() {
        *v *= inv;
    }
}

#[inline(always)]
pub(crate) fn softmax_backward(y: &[f32], dy: &[f32], cols: usize, dx: &mut [f32]) {
    for ((yr, dyr), dxr) in y
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
    {
        let s = sum_map2(yr, dyr, |a, b| a * b);
        for ((o, &a), &b) in dxr.iter_mut().zip(yr).zip(dyr) {
            *o = a * (b - s);
        }
    }
}

/// Gradient of [`causal_softmax`] given its output: `dx = (y ⊙ (dy − Σ dy ⊙ y))·scale`, `+0`
/// at the masked keys (what `softmax_backward`, then `mask_fill`'s and the scaling's backward
/// give, operation for operation).
#[inline(always)]
pub(crate) fn causal_softmax_backward(
    y: &[f32],
    dy: &[f32],
    t: usize,
    q0: usize,
    scale: f32,
    dx: &mut [f32],
) {
    for (r, ((yr, dyr), dxr)) in y
        .chunks_exact(t)
        .zip(dy.chunks_exact(t))
        .zip(dx.chunks_exact_mut(t))
        .enumerate()
    {
        let seen = (q0 + r) % t + 1;
        let s = sum_map2(yr, dyr, |a, b| a * b);
        for ((o, &a), &b) in dxr[..seen].iter_mut().zip(yr).zip(dyr) {
            *o = a * (b - s) * scale;
        }
        dxr[seen..].fill(0.0);
    }
}

/// ½(1 + tanh u) = σ(2u) = 1/(1 + e^(−2u)), so gelu(x) = x / (1 + e^(−2u)): one `exp`, one
/// division, and no NaN at the extremes (e^(−2u) = ∞ gives x/∞ = ±0).
#[inline(always)]
pub(crate) fn gelu_tanh(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        let u = SQRT_2_OVER_PI * (v + GELU_C * v * v * v);
        *o = v / (1.0 + exp1(-2.0 * u));
    }
}

/// d/dx [x·σ(2u)] = s + 2x·s(1−s)·u′ with s = σ(2u), 1−s = e·s, e = e^(−2u), u′ = √(2/π)(1 + 3c·x²).
/// x is clamped to ±30 (beyond it the derivative is 1 or 0 to f32 precision) and e to e^80, so
/// that no ∞·0 appears.
#[inline(always)]
pub(crate) fn gelu_tanh_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
        let v = v.clamp(-30.0, 30.0);
        let u = SQRT_2_OVER_PI * (v + GELU_C * v * v * v);
        let a = -2.0 * u;
        let e = exp1(if a > 80.0 { 80.0 } else { a });
        let s = 1.0 / (1.0 + e);
        let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * v * v);
        *o = g * (s + 2.0 * v * s * (e * s) * du);
    }
}

/// Rows of `norm`; `mean`/`rstd` hold one entry per row of `x`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn norm(
    x: &[f32],
    cols: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    eps: f32,
    rms: bool,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let n = cols as f32;
    for (((xr, yr), mo), ro) in x
        .chunks_exact(cols)
        .zip(y.chunks_exact_mut(cols))
        .zip(mean.iter_mut())
        .zip(rstd.iter_mut())
    {
        // Two passes (mean, then Σ(x−mean)²) over a cache-resident row: no cancellation.
        let m = if rms { 0.0 } else { sum_map(xr, |v| v) / n };
        let var = sum_map(xr, |v| (v - m) * (v - m)) / n;
        let rs = 1.0 / (var + eps).sqrt();
        *mo = m;
        *ro = rs;
        match bias {
            Some(b) => {
                for (((o, &v), &w), &bc) in yr.iter_mut().zip(xr).zip(weight).zip(b) {
                    *o = (v - m) * rs * w + bc;
                }
            }
            None => {
                for ((o, &v), &w) in yr.iter_mut().zip(xr).zip(weight) {
                    *o = (v - m) * rs * w;
                }
            }
        }
    }
}

/// Rows of `norm_backward` for one block: writes `dx` and the block's partial sums `pw`
/// (Σ dy·x̂) and `pb` (Σ dy), accumulated over the block's rows in order.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn norm_backward(
    x: &[f32],
    cols: usize,
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    rms: bool,
    dy: &[f32],
    dx: &mut [f32],
    pw: &mut [f32],
    mut pb: Option<&mut [f32]>,
) {
    pw.fill(0.0);
    if let Some(pb) = pb.as_deref_mut() {
        pb.fill(0.0);
    }
    let n = cols as f32;
    for ((((xr, dyr), dxr), &m), &rs) in x
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
        .zip(mean)
        .zip(rstd)
    {
        // Pass 1: Σg and Σg·x̂ (g = dy·w, x̂ = (x−mean)·rstd) and the weight/bias partials.
        let (mut ag, mut agx) = ([0.0f32; L], [0.0f32; L]);
        let (xb, xt) = xr.as_chunks::<L>();
        let (dyb, dyt) = dyr.as_chunks::<L>();
        let (wb, wt) = weight.as_chunks::<L>();
        let (pwb, pwt) = pw.as_chunks_mut::<L>();
        for (((xc, dc), wc), pc) in xb.iter().zip(dyb).zip(wb).zip(pwb) {
            for i in 0..L {
                let xh = (xc[i] - m) * rs;
                let g = dc[i] * wc[i];
                ag[i] += g;
                agx[i] += g * xh;
                pc[i] += dc[i] * xh;
            }
        }
        let (mut sg, mut sgx) = (crate::simd::hsum(ag), crate::simd::hsum(agx));
        for (((&xv, &d), &w), p) in xt.iter().zip(dyt).zip(wt).zip(pwt) {
            let xh = (xv - m) * rs;
            let g = d * w;
            sg += g;
            sgx += g * xh;
            *p += d * xh;
        }
        if let Some(pb) = pb.as_deref_mut() {
            for (p, &d) in pb.iter_mut().zip(dyr) {
                *p += d;
            }
        }
        // Pass 2: dx = rstd·(g − mean(g) − x̂·mean(g·x̂)); RMSNorm has no mean(g) term.
        let mg = if rms { 0.0 } else { sg / n };
        let mgx = sgx / n;
        for (((o, &xv), &d), &w) in dxr.iter_mut().zip(xr).zip(dyr).zip(weight) {
            let xh = (xv - m) * rs;
            *o = rs * (d * w - mg - xh * mgx);
        }
    }
}

/// Rows of `cross_entropy`: log Σ exp of each row.
#[inline(always)]
pub(crate) fn logsumexp(logits: &[f32], cols: usize, lse: &mut [f32]) {
    for (xr, o) in logits.chunks_exact(cols).zip(lse.iter_mut()) {
        let m = max(xr);
        let s = sum_map(xr, |v| exp1(v - m));
        *o = m + s.ln();
    }
}

/// Rows of `cross_entropy_backward`.
#[inline(always)]
pub(crate) fn cross_entropy_backward(
    logits: &[f32],
    cols: usize,
    targets: &[i64],
    lse: &[f32],
    scale: f32,
    dlogits: &mut [f32],
) {
    for (((xr, dr), &t), &l) in logits
        .chunks_exact(cols)
        .zip(dlogits.chunks_exact_mut(cols))
        .zip(targets)
        .zip(lse)
    {
        for (o, &v) in dr.iter_mut().zip(xr) {
            *o = scale * exp1(v - l);
        }
        dr[t as usize] -= scale;
    }
}
