//! Fast, deterministic CPU kernels for the non-GEMM ops of a GPT-2/Llama training step
//! (softmax, GELU-tanh, LayerNorm/RMSNorm, cross-entropy), on contiguous row-major f32 slices.
//!
//! Why a crate of its own: on CPU these ops were a large share of step time, mostly scalar libm
//! `expf` and one memory pass per elementwise op. Here each row is done in as few passes as
//! possible over cache-resident data, with a vectorised `exp` (`simd.rs`), and rows are spread over
//! the threads of [`par`] when there is enough work. [`gemm`] has the step's matrix products,
//! [`adamw`] the optimizer's update in one pass.
//!
//! Why this crate runs its own parallel loops rather than rayon's: see [`par`].
//!
//! Results are bit-identical whatever the thread count, chunking or vector ISA: every row's
//! reductions run in one fixed order inside one task, and the only sums across rows (norm weight
//! and bias gradients, the cross-entropy total) go through fixed row blocks added in order.
//!
//! `rows = x.len() / cols` everywhere; all slices contiguous row-major; outputs fully overwritten.

pub mod adamw;
pub mod gemm;
/// The fork-join team of every parallel loop of a step; it lives in fp8-formats, whose casts
/// run on it too.
pub use fp8_formats::par;
mod rows;
mod simd;

use par::Chunks;
use simd::dispatch;

/// Below this many elements a kernel runs on the calling thread (a parallel loop costs more).
const PAR_MIN: usize = 32 * 1024;
/// Elements per task, rounded to whole rows.
const TASK: usize = 16 * 1024;
/// Rows per partial sum in `norm_backward`; fixed so the result does not depend on threads.
const NORM_BLOCK: usize = 64;

fn check_rows(name: &str, len: usize, cols: usize) -> usize {
    assert!(cols > 0, "{name}: cols must be > 0");
    assert!(
        len.is_multiple_of(cols),
        "{name}: input length {len} is not a multiple of cols = {cols}"
    );
    len / cols
}

fn check_len(name: &str, what: &str, got: usize, want: usize) {
    assert!(
        got == want,
        "{name}: {what} has length {got}, expected {want}"
    );
}

/// Rows per task for rows of `cols` elements.
fn task_rows(cols: usize) -> usize {
    (TASK / cols).max(1)
}

/// `task(r, rows)` over `out` (rows of `cols`) split into runs of whole rows, `r` the range of
/// elements each run covers: on the calling thread below [`PAR_MIN`], else one run per task of
/// the team.
fn by_rows(out: &mut [f32], cols: usize, task: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync) {
    if out.len() < PAR_MIN {
        task(0..out.len(), out);
        return;
    }
    let (n, len) = (task_rows(cols) * cols, out.len());
    let chunks = Chunks::new(out, n);
    par::for_each(chunks.count(), |i| {
        // SAFETY: task i takes chunk i only.
        task(i * n..((i + 1) * n).min(len), unsafe { chunks.get(i) })
    });
}

/// In-place vectorised `exp` of every element: within 1 ulp of the exact result on [−87, 88]
/// (measured); results below `f32::MIN_POSITIVE` are 0, above `f32::MAX` +∞, NaN stays NaN.
pub fn exp_slice(x: &mut [f32]) {
    if x.len() < PAR_MIN {
        dispatch(
            #[inline(always)]
            || rows::exp_inplace(x),
        );
    } else {
        let x = Chunks::new(x, TASK);
        par::for_each(x.count(), |i| {
            // SAFETY: task i takes chunk i only.
            let c = unsafe { x.get(i) };
            dispatch(
                #[inline(always)]
                || rows::exp_inplace(c),
            )
        });
    }
}

/// Softmax over each row. Entries may be -inf (masked); a row whose entries are all -inf gives all zeros.
pub fn softmax(x: &[f32], cols: usize, y: &mut [f32]) {
    check_rows("softmax", x.len(), cols);
    check_len("softmax", "y", y.len(), x.len());
    by_rows(y, cols, |r, y| {
        dispatch(
            #[inline(always)]
            || rows::softmax(&x[r.clone()], cols, y),
        )
    });
}

/// dx = y ⊙ (dy − Σ_row(dy ⊙ y)).
pub fn softmax_backward(y: &[f32], dy: &[f32], cols: usize, dx: &mut [f32]) {
    check_rows("softmax_backward", y.len(), cols);
    check_len("softmax_backward", "dy", dy.len(), y.len());
    check_len("softmax_backward", "dx", dx.len(), y.len());
    by_rows(dx, cols, |r, dx| {
        dispatch(
            #[inline(always)]
            || rows::softmax_backward(&y[r.clone()], &dy[r.clone()], cols, dx),
        )
    });
}

/// The gradient of heads `first..first + n` of a fused projection: `dy [b, n, t, hd]`
/// (contiguous) written into `dx [b, t, heads, hd]` at those heads, zeros at the others. One pass
/// over `dx`, a row of `hd` at a time.
pub fn heads_backward(
    dy: &[f32],
    [b, n, t, hd]: [usize; 4],
    first: usize,
    heads: usize,
    dx: &mut [f32],
) {
    check_len("heads_backward", "dy", dy.len(), b * n * t * hd);
    check_len("heads_backward", "dx", dx.len(), b * t * heads * hd);
    assert!(
        first + n <= heads,
        "heads_backward: heads {first}..{} of {heads}",
        first + n
    );
    let token = heads * hd;
    if token == 0 {
        return;
    }
    // Runs of whole tokens (rows of `heads · hd`).
    by_rows(dx, token, |r, out| {
        for (k, row) in out.chunks_exact_mut(token).enumerate() {
            let at_token = r.start / token + k;
            let (bi, ti) = (at_token / t, at_token % t);
            let (before, rest) = row.split_at_mut(first * hd);
            let (mine, after) = rest.split_at_mut(n * hd);
            before.fill(0.0);
            after.fill(0.0);
            for (h, out) in mine.chunks_exact_mut(hd).enumerate() {
                let at = ((bi * n + h) * t + ti) * hd;
                out.copy_from_slice(&dy[at..at + hd]);
            }
        }
    });
}

/// Causal attention softmax: `x` holds `[t, t]` score matrices (queries by keys), and each
/// becomes `softmax(mask(scale·x))` with key `j > i` masked in query `i`'s row: one pass where
/// the scaling, `mask_fill` and [`softmax`] took three, with the same bits.
pub fn causal_softmax(x: &[f32], t: usize, scale: f32, y: &mut [f32]) {
    check_rows("causal_softmax", x.len(), t * t);
    check_len("causal_softmax", "y", y.len(), x.len());
    by_rows(y, t, |r, y| {
        dispatch(
            #[inline(always)]
            || rows::causal_softmax(&x[r.clone()], t, r.start / t, scale, y),
        )
    });
}

/// Gradient of [`causal_softmax`] given its output `y`:
/// `dx = scale · y ⊙ (dy − Σ_row(dy ⊙ y))`, zero at the masked keys.
pub fn causal_softmax_backward(y: &[f32], dy: &[f32], t: usize, scale: f32, dx: &mut [f32]) {
    check_rows("causal_softmax_backward", y.len(), t * t);
    check_len("causal_softmax_backward", "dy", dy.len(), y.len());
    check_len("causal_softmax_backward", "dx", dx.len(), y.len());
    by_rows(dx, t, |r, dx| {
        dispatch(
            #[inline(always)]
            || {
                let (y, dy) = (&y[r.clone()], &dy[r.clone()]);
                rows::causal_softmax_backward(y, dy, t, r.start / t, scale, dx)
            },
        )
    });
}

/// GPT-2 GELU (tanh approximation, HF gelu_new): ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
pub fn gelu_tanh(x: &[f32], y: &mut [f32]) {
    check_len("gelu_tanh", "y", y.len(), x.len());
    if x.len() < PAR_MIN {
        dispatch(
            #[inline(always)]
            || rows::gelu_tanh(x, y),
        );
    } else {
        let y = Chunks::new(y, TASK);
        par::for_each(y.count(), |i| {
            let x = &x[i * TASK..((i + 1) * TASK).min(x.len())];
            // SAFETY: task i takes chunk i only.
            let y = unsafe { y.get(i) };
            dispatch(
                #[inline(always)]
                || rows::gelu_tanh(x, y),
            )
        });
    }
}

/// dx = dy · d/dx gelu_tanh(x).
pub fn gelu_tanh_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    check_len("gelu_tanh_backward", "dy", dy.len(), x.len());
    check_len("gelu_tanh_backward", "dx", dx.len(), x.len());
    if x.len() < PAR_MIN {
        dispatch(
            #[inline(always)]
            || rows::gelu_tanh_backward(x, dy, dx),
        );
    } else {
        let dx = Chunks::new(dx, TASK);
        par::for_each(dx.count(), |i| {
            let r = i * TASK..((i + 1) * TASK).min(x.len());
            // SAFETY: task i takes chunk i only.
            let dx = unsafe { dx.get(i) };
            dispatch(
                #[inline(always)]
                || rows::gelu_tanh_backward(&x[r.clone()], &dy[r.clone()], dx),
            )
        });
    }
}

/// LayerNorm (rms = false: (x − mean)·rstd, biased variance) or RMSNorm (rms = true: x·rstd, rstd = 1/sqrt(mean(x²)+eps), mean written as 0) over each row, then ·weight (+ bias).
/// Writes y `[rows·cols]`, mean `[rows]`, rstd `[rows]`.
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
    let rows = check_rows("norm", x.len(), cols);
    check_len("norm", "weight", weight.len(), cols);
    if let Some(b) = bias {
        check_len("norm", "bias", b.len(), cols);
    }
    check_len("norm", "y", y.len(), x.len());
    check_len("norm", "mean", mean.len(), rows);
    check_len("norm", "rstd", rstd.len(), rows);
    if x.len() < PAR_MIN {
        dispatch(
            #[inline(always)]
            || rows::norm(x, cols, weight, bias, eps, rms, y, mean, rstd),
        );
    } else {
        let tr = task_rows(cols);
        let (y, mean, rstd) = (
            Chunks::new(y, tr * cols),
            Chunks::new(mean, tr),
            Chunks::new(rstd, tr),
        );
        par::for_each(y.count(), |i| {
            let x = &x[i * tr * cols..((i + 1) * tr * cols).min(x.len())];
            // SAFETY: task i takes chunk i of each output only.
            let (y, mean, rstd) = unsafe { (y.get(i), mean.get(i), rstd.get(i)) };
            dispatch(
                #[inline(always)]
                || rows::norm(x, cols, weight, bias, eps, rms, y, mean, rstd),
            )
        });
    }
}

/// Backward of `norm` given its saved mean/rstd: writes dx `[rows·cols]`, dweight `[cols]`, dbias `[cols]` (if Some) — dweight/dbias are overwritten (not accumulated) with the sums over rows.
///
/// The sums over rows are taken per block of 64 rows, then the block partials are added in
/// block order, so they do not depend on the thread count.
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
    dbias: Option<&mut [f32]>,
) {
    let rows = check_rows("norm_backward", x.len(), cols);
    check_len("norm_backward", "weight", weight.len(), cols);
    check_len("norm_backward", "mean", mean.len(), rows);
    check_len("norm_backward", "rstd", rstd.len(), rows);
    check_len("norm_backward", "dy", dy.len(), x.len());
    check_len("norm_backward", "dx", dx.len(), x.len());
    check_len("norm_backward", "dweight", dweight.len(), cols);
    if let Some(b) = dbias.as_deref() {
        check_len("norm_backward", "dbias", b.len(), cols);
    }
    let blocks = rows.div_ceil(NORM_BLOCK);
    let with_bias = dbias.is_some();
    // Per block: Σ dy·x̂ in the first `cols` entries, Σ dy in the next `cols` (if wanted).
    let stride = if with_bias { 2 * cols } else { cols };
    let mut partial = vec![0.0f32; blocks * stride];
    let block =
        |x: &[f32], dy: &[f32], dx: &mut [f32], mean: &[f32], rstd: &[f32], p: &mut [f32]| {
            let (pw, pb) = p.split_at_mut(cols);
            let pb = if with_bias { Some(pb) } else { None };
            dispatch(
                #[inline(always)]
                || rows::norm_backward(x, cols, weight, mean, rstd, rms, dy, dx, pw, pb),
            );
        };
    let n = NORM_BLOCK * cols;
    if x.len() < PAR_MIN {
        x.chunks(n)
            .zip(dy.chunks(n))
            .zip(dx.chunks_mut(n))
            .zip(mean.chunks(NORM_BLOCK))
            .zip(rstd.chunks(NORM_BLOCK))
            .zip(partial.chunks_mut(stride))
            .for_each(|(((((x, dy), dx), m), r), p)| block(x, dy, dx, m, r, p));
    } else {
        // Tasks of several blocks each; every block still sums its own rows.
        let per_task = task_rows(cols).div_ceil(NORM_BLOCK);
        let (dx, parts) = (
            Chunks::new(dx, per_task * n),
            Chunks::new(&mut partial, per_task * stride),
        );
        par::for_each(dx.count(), |i| {
            // SAFETY: task i takes chunk i of each output only.
            let (dx, partial) = unsafe { (dx.get(i), parts.get(i)) };
            let (r0, e0) = (i * per_task * NORM_BLOCK, i * per_task * n);
            let x = &x[e0..e0 + dx.len()];
            let dy = &dy[e0..e0 + dx.len()];
            let rows = dx.len() / cols;
            x.chunks(n)
                .zip(dy.chunks(n))
                .zip(dx.chunks_mut(n))
                .zip(mean[r0..r0 + rows].chunks(NORM_BLOCK))
                .zip(rstd[r0..r0 + rows].chunks(NORM_BLOCK))
                .zip(partial.chunks_mut(stride))
                .for_each(|(((((x, dy), dx), m), r), p)| block(x, dy, dx, m, r, p));
        });
    }
    dweight.fill(0.0);
    for p in partial.chunks_exact(stride) {
        for (o, &v) in dweight.iter_mut().zip(&p[..cols]) {
            *o += v;
        }
    }
    if let Some(db) = dbias {
        db.fill(0.0);
        for p in partial.chunks_exact(stride) {
            for (o, &v) in db.iter_mut().zip(&p[cols..]) {
                *o += v;
            }
        }
    }
}

/// Cross-entropy per row against integer targets: writes lse `[rows]` (log Σ exp of the row) and returns Σ_rows (lse − x[row, target]) in f64. Panics (assert) on a target ≥ cols or < 0 with a clear message.
pub fn cross_entropy(logits: &[f32], cols: usize, targets: &[i64], lse: &mut [f32]) -> f64 {
    let rows = check_rows("cross_entropy", logits.len(), cols);
    check_targets("cross_entropy", targets, rows, cols);
    check_len("cross_entropy", "lse", lse.len(), rows);
    if logits.len() < PAR_MIN {
        dispatch(
            #[inline(always)]
            || rows::logsumexp(logits, cols, lse),
        );
    } else {
        let tr = task_rows(cols);
        let out = Chunks::new(lse, tr);
        par::for_each(out.count(), |i| {
            let x = &logits[i * tr * cols..((i + 1) * tr * cols).min(logits.len())];
            // SAFETY: task i takes chunk i only.
            let lse = unsafe { out.get(i) };
            dispatch(
                #[inline(always)]
                || rows::logsumexp(x, cols, lse),
            )
        });
    }
    // The total is a sequential f64 sum in row order, independent of how rows were split.
    lse.iter()
        .zip(targets)
        .enumerate()
        .map(|(r, (&l, &t))| (l - logits[r * cols + t as usize]) as f64)
        .sum()
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
    let rows = check_rows("cross_entropy_backward", logits.len(), cols);
    check_targets("cross_entropy_backward", targets, rows, cols);
    check_len("cross_entropy_backward", "lse", lse.len(), rows);
    check_len(
        "cross_entropy_backward",
        "dlogits",
        dlogits.len(),
        logits.len(),
    );
    if logits.len() < PAR_MIN {
        dispatch(
            #[inline(always)]
            || rows::cross_entropy_backward(logits, cols, targets, lse, scale, dlogits),
        );
    } else {
        let tr = task_rows(cols);
        let out = Chunks::new(dlogits, tr * cols);
        par::for_each(out.count(), |i| {
            // SAFETY: task i takes chunk i only.
            let d = unsafe { out.get(i) };
            let r = i * tr..i * tr + d.len() / cols;
            let x = &logits[r.start * cols..r.end * cols];
            let (t, l) = (&targets[r.clone()], &lse[r]);
            dispatch(
                #[inline(always)]
                || rows::cross_entropy_backward(x, cols, t, l, scale, d),
            )
        });
    }
}

fn check_targets(name: &str, targets: &[i64], rows: usize, cols: usize) {
    check_len(name, "targets", targets.len(), rows);
    for (r, &t) in targets.iter().enumerate() {
        assert!(
            t >= 0 && (t as u64) < cols as u64,
            "{name}: target {t} of row {r} is outside the class range [0, {cols})"
        );
    }
}
