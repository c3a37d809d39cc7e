//! CPU kernels for the non-GEMM ops of a GPT-2/Llama training step (softmax, GELU-tanh,
//! LayerNorm/RMSNorm, cross-entropy), on contiguous row-major f32 slices.
//!
//! `rows = x.len() / cols` everywhere; all slices contiguous row-major; outputs fully overwritten.

/// In-place `exp` of every element.
pub fn exp_slice(x: &mut [f32]) {
    for v in x {
        *v = v.exp();
    }
}

/// Softmax over each row. Entries may be -inf (masked); a row whose entries are all -inf gives all zeros.
pub fn softmax(x: &[f32], cols: usize, y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for (xr, yr) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)) {
        let m = xr.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        if m == f32::NEG_INFINITY {
            yr.fill(0.0);
            continue;
        }
        let mut s = 0.0f32;
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - m).exp();
            s += *o;
        }
        let inv = 1.0 / s;
        for o in yr.iter_mut() {
            *o *= inv;
        }
    }
}

/// dx = y ⊙ (dy − Σ_row(dy ⊙ y)).
pub fn softmax_backward(y: &[f32], dy: &[f32], cols: usize, dx: &mut [f32]) {
    for ((yr, dyr), dxr) in y
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
    {
        let s: f32 = yr.iter().zip(dyr).map(|(a, b)| a * b).sum();
        for ((o, &a), &b) in dxr.iter_mut().zip(yr).zip(dyr) {
            *o = a * (b - s);
        }
    }
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// GPT-2 GELU (tanh approximation, HF gelu_new): ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
pub fn gelu_tanh(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        let u = SQRT_2_OVER_PI * (v + GELU_C * v * v * v);
        *o = 0.5 * v * (1.0 + u.tanh());
    }
}

/// dx = dy · d/dx gelu_tanh(x).
pub fn gelu_tanh_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((o, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
        let u = SQRT_2_OVER_PI * (v + GELU_C * v * v * v);
        let t = u.tanh();
        let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * v * v);
        *o = g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du);
    }
}

/// LayerNorm (rms = false: (x − mean)·rstd, biased variance) or RMSNorm (rms = true: x·rstd, rstd = 1/sqrt(mean(x²)+eps), mean written as 0) over each row, then ·weight (+ bias).
/// Writes y [rows·cols], mean [rows], rstd [rows].
#[allow(clippy::too_many_arguments)]
pub fn norm(
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
    for (r, (xr, yr)) in x.chunks_exact(cols).zip(y.chunks_exact_mut(cols)).enumerate() {
        let m = if rms {
            0.0
        } else {
            xr.iter().sum::<f32>() / cols as f32
        };
        let var = xr.iter().map(|&v| (v - m) * (v - m)).sum::<f32>() / cols as f32;
        let rs = 1.0 / (var + eps).sqrt();
        mean[r] = m;
        rstd[r] = rs;
        for (c, (o, &v)) in yr.iter_mut().zip(xr).enumerate() {
            *o = (v - m) * rs * weight[c] + bias.map_or(0.0, |b| b[c]);
        }
    }
}

/// Backward of `norm` given its saved mean/rstd: writes dx [rows·cols], dweight [cols], dbias [cols] (if Some) — dweight/dbias are overwritten (not accumulated) with the sums over rows.
#[allow(clippy::too_many_arguments)]
pub fn norm_backward(
    x: &[f32],
    cols: usize,
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    rms: bool,
    dy: &[f32],
    dx: &mut [f32],
    dweight: &mut [f32],
    mut dbias: Option<&mut [f32]>,
) {
    dweight.fill(0.0);
    if let Some(db) = dbias.as_deref_mut() {
        db.fill(0.0);
    }
    let n = cols as f32;
    for (r, ((xr, dyr), dxr)) in x
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
        .enumerate()
    {
        let (m, rs) = (mean[r], rstd[r]);
        let mut sg = 0.0f32;
        let mut sgx = 0.0f32;
        for c in 0..cols {
            let xh = (xr[c] - m) * rs;
            let g = dyr[c] * weight[c];
            sg += g;
            sgx += g * xh;
            dweight[c] += dyr[c] * xh;
            if let Some(db) = dbias.as_deref_mut() {
                db[c] += dyr[c];
            }
        }
        let (mg, mgx) = (if rms { 0.0 } else { sg / n }, sgx / n);
        for c in 0..cols {
            let xh = (xr[c] - m) * rs;
            dxr[c] = rs * (dyr[c] * weight[c] - mg - xh * mgx);
        }
    }
}

/// Cross-entropy per row against integer targets: writes lse [rows] (log Σ exp of the row) and returns Σ_rows (lse − x[row, target]) in f64. Panics (assert) on a target ≥ cols or < 0 with a clear message.
pub fn cross_entropy(logits: &[f32], cols: usize, targets: &[i64], lse: &mut [f32]) -> f64 {
    let mut loss = 0.0f64;
    for (r, xr) in logits.chunks_exact(cols).enumerate() {
        let t = targets[r];
        assert!(
            t >= 0 && (t as usize) < cols,
            "cross_entropy: target {t} of row {r} is outside [0, {cols})"
        );
        let m = xr.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let s: f32 = xr.iter().map(|&v| (v - m).exp()).sum();
        lse[r] = m + s.ln();
        loss += (lse[r] - xr[t as usize]) as f64;
    }
    loss
}

/// dlogits = scale · (softmax(row) − onehot(target)), softmax recomputed from logits and lse.
pub fn cross_entropy_backward(
    logits: &[f32],
    cols: usize,
    targets: &[i64],
    lse: &[f32],
    scale: f32,
    dlogits: &mut [f32],
) {
    for (r, (xr, dr)) in logits
        .chunks_exact(cols)
        .zip(dlogits.chunks_exact_mut(cols))
        .enumerate()
    {
        for (o, &v) in dr.iter_mut().zip(xr) {
            *o = scale * (v - lse[r]).exp();
        }
        dr[targets[r] as usize] -= scale;
    }
}
