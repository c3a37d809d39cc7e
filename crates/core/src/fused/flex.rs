//! [`FusedOps`] for [`Flex`]: the `fp8-kernels` row kernels on the tensors' own `f32` buffers.
//!
//! Inputs are read in place when contiguous (any view whose elements are one dense range of its
//! buffer), else copied to a contiguous buffer once. Outputs are fresh contiguous buffers that
//! the kernels write in full. Other dtypes take the composed [`defaults`](super::defaults).

use super::defaults::{self, rows_cols, stat_shape};
use super::{AdamWOutput, AdamWStep, FusedOps, NormGrads, NormOutput};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::Flex;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_backend::tensor::{FloatTensor, IntTensor};
use burn_backend::Bytes;
use fp8_formats::StridedView;

/// `t` itself if its elements are one dense range of its buffer, else a contiguous copy.
pub(crate) fn dense(t: FlexTensor) -> FlexTensor {
    if t.layout().contiguous_offsets().is_some() {
        return t;
    }
    if t.dtype() == DType::F32 {
        if let Some(copy) = copy_f32(&t) {
            return copy;
        }
    }
    t.to_contiguous()
}

/// A contiguous copy of an `f32` view in one sequential pass over the output
/// ([`StridedView::gather_into`]: whole rows where they are adjacent, else a strided gather).
/// Burn-flex's own `to_contiguous` walks 3-D and 4-D views (attention heads, their gradients)
/// one element at a time through a generic index iterator. `None` for negative strides
/// (flipped views).
fn copy_f32(t: &FlexTensor) -> Option<FlexTensor> {
    let layout = t.layout();
    let strides = layout
        .strides()
        .iter()
        .map(|&s| usize::try_from(s).ok())
        .collect::<Option<Vec<usize>>>()?;
    let shape = layout.shape().clone();
    let n = shape.num_elements();
    let view = StridedView {
        data: t.storage::<f32>(),
        offset: layout.start_offset(),
        shape: shape.as_slice(),
        strides: &strides,
    };
    let mut dst: Vec<f32> = Vec::with_capacity(n);
    view.gather_into(&mut dst.spare_capacity_mut()[..n]);
    // SAFETY: `gather_into` initialized the first `n` elements.
    unsafe { dst.set_len(n) };
    Some(tensor(dst, shape))
}

/// The elements of a dense `f32` tensor in row-major order.
fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("a dense f32 tensor (made so by `dense`)")
}

fn is_f32(ts: &[&FlexTensor]) -> bool {
    ts.iter().all(|t| t.dtype() == DType::F32)
}

/// An output buffer of `n` elements for a kernel to write, left uninitialized.
///
/// Why not zeroed: the training binary keeps freed memory in its heap (`mallopt`, see the CLI),
/// so `calloc` hands back recycled blocks and must clear them, a full memory pass per output
/// (≈ 1.6 % of a one-thread gpt2-mini step) that the kernel then overwrites.
///
/// # Safety
/// The caller passes the buffer only to `fp8-kernels` functions as an output they overwrite in
/// full before reading any of it (their contract, checked by their tests) and uses it only after.
#[allow(clippy::uninit_vec)]
unsafe fn buffer(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: capacity `n`; f32 has no invalid bit patterns and, by the caller's contract, every
    // element is written before it is read.
    unsafe { v.set_len(n) };
    v
}

fn tensor(v: Vec<f32>, shape: Shape) -> FlexTensor {
    debug_assert_eq!(v.len(), shape.num_elements());
    FlexTensor::new(Bytes::from_elems(v), Layout::contiguous(shape), DType::F32)
}

/// `t` as a tensor this op may overwrite: itself when it owns its buffer and its elements are
/// the buffer's first ones in order, else a contiguous copy.
fn owned(t: FlexTensor) -> FlexTensor {
    let n = t.shape().num_elements();
    if t.is_unique() && t.layout().contiguous_offsets() == Some((0, n)) {
        return t;
    }
    let shape = t.shape();
    tensor(values(&dense(t)).to_vec(), shape)
}

/// The first `n` elements of an `f32` tensor's buffer, writable ([`owned`] tensors only).
fn values_mut(t: &mut FlexTensor, n: usize) -> &mut [f32] {
    &mut t.storage_mut::<f32>()[..n]
}

/// Targets as `i64` (Flex's int tensors are `i32` by default).
fn targets_i64(t: IntTensor<Flex>) -> Vec<i64> {
    let t = dense(t);
    match t.dtype() {
        DType::I64 => t.as_slice::<i64>().expect("dense").to_vec(),
        DType::I32 => t
            .as_slice::<i32>()
            .expect("dense")
            .iter()
            .map(|&v| v as i64)
            .collect(),
        _ => t
            .into_data()
            .convert::<i64>()
            .into_vec::<i64>()
            .expect("int targets convert to i64"),
    }
}

impl FusedOps for Flex {
    fn fused_contiguous(x: FloatTensor<Self>) -> FloatTensor<Self> {
        dense(x)
    }

    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&[&x]) {
            return defaults::softmax::<Self>(x);
        }
        let x = dense(x);
        let shape = x.shape();
        let (_, cols) = rows_cols(&shape);
        // SAFETY: the kernel call below writes every element of these outputs.
        let mut y = unsafe { buffer(shape.num_elements()) };
        fp8_kernels::softmax(values(&x), cols, &mut y);
        tensor(y, shape)
    }

    fn fused_softmax_backward(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&[&y, &dy]) {
            return defaults::softmax_backward::<Self>(y, dy);
        }
        let (y, dy) = (dense(y), dense(dy));
        let shape = y.shape();
        let (_, cols) = rows_cols(&shape);
        // SAFETY: the kernel call below writes every element of these outputs.
        let mut dx = unsafe { buffer(shape.num_elements()) };
        fp8_kernels::softmax_backward(values(&y), values(&dy), cols, &mut dx);
        tensor(dx, shape)
    }

    fn fused_heads_backward(
        dy: FloatTensor<Self>,
        first: usize,
        heads: usize,
    ) -> FloatTensor<Self> {
        if !is_f32(&[&dy]) {
            return defaults::heads_backward::<Self>(dy, first, heads);
        }
        let dy = dense(dy);
        let shape = dy.shape();
        let &[b, n, t, hd] = shape.as_slice() else {
            panic!("heads backward: dy must be [b, n, t, head_dim], got {shape:?}");
        };
        // SAFETY: the kernel call below writes every element of these outputs.
        let mut dx = unsafe { buffer(b * t * heads * hd) };
        fp8_kernels::heads_backward(values(&dy), [b, n, t, hd], first, heads, &mut dx);
        tensor(dx, Shape::from([b, t, heads * hd]))
    }

    fn fused_causal_softmax(x: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        if !is_f32(&[&x]) {
            return defaults::causal_softmax::<Self>(x, scale);
        }
        let x = dense(x);
        let shape = x.shape();
        let t = defaults::causal_len(&shape);
        // SAFETY: the kernel call below writes every element of these outputs.
        let mut y = unsafe { buffer(shape.num_elements()) };
        fp8_kernels::causal_softmax(values(&x), t, scale, &mut y);
        tensor(y, shape)
    }

    fn fused_causal_softmax_backward(
        y: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        if !is_f32(&[&y, &dy]) {
            return defaults::causal_softmax_backward::<Self>(y, dy, scale);
        }
        let (y, dy) = (dense(y), dense(dy));
        let shape = y.shape();
        let t = defaults::causal_len(&shape);
        // SAFETY: the kernel call below writes every element of these outputs.
        let mut dx = unsafe { buffer(shape.num_elements()) };
        fp8_kernels::causal_softmax_backward(values(&y), values(&dy), t, scale, &mut dx);
        tensor(dx, shape)
    }

    fn fused_gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&[&x]) {
            return defaults::gelu_tanh::<Self>(x);
        }
        let x = dense(x);
        let shape = x.shape();
        // SAFETY: the kernel call below writes every element of these outputs.
        let mut y = unsafe { buffer(shape.num_elements()) };
        fp8_kernels::gelu_tanh(values(&x), &mut y);
        tensor(y, shape)
    }

    fn fused_gelu_tanh_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&[&x, &dy]) {
            return defaults::gelu_tanh_backward::<Self>(x, dy);
        }
        let (x, dy) = (dense(x), dense(dy));
        let shape = x.shape();
        // SAFETY: the kernel call below writes every element of these outputs.
        let mut dx = unsafe { buffer(shape.num_elements()) };
        fp8_kernels::gelu_tanh_backward(values(&x), values(&dy), &mut dx);
        tensor(dx, shape)
    }

    fn fused_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        eps: f64,
        rms: bool,
    ) -> NormOutput<Self> {
        if !is_f32(&[&x, &weight]) || bias.as_ref().is_some_and(|b| !is_f32(&[b])) {
            return defaults::norm::<Self>(x, weight, bias, eps, rms);
        }
        let (x, weight, bias) = (dense(x), dense(weight), bias.map(dense));
        let shape = x.shape();
        let (rows, cols) = rows_cols(&shape);
        // SAFETY: the kernel call below writes every element of these outputs.
        let (mut y, mut mean, mut rstd) = (
            unsafe { buffer(rows * cols) },
            unsafe { buffer(rows) },
            unsafe { buffer(rows) },
        );
        fp8_kernels::norm(
            values(&x),
            cols,
            values(&weight),
            bias.as_ref().map(values),
            eps as f32,
            rms,
            &mut y,
            &mut mean,
            &mut rstd,
        );
        let stat = stat_shape(&shape);
        (
            tensor(y, shape),
            tensor(mean, stat.clone()),
            tensor(rstd, stat),
        )
    }

    fn fused_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        rms: bool,
        dy: FloatTensor<Self>,
        has_bias: bool,
    ) -> NormGrads<Self> {
        if !is_f32(&[&x, &weight, &mean, &rstd, &dy]) {
            return defaults::norm_backward::<Self>(x, weight, mean, rstd, rms, dy, has_bias);
        }
        let (x, weight, mean, rstd, dy) =
            (dense(x), dense(weight), dense(mean), dense(rstd), dense(dy));
        let shape = x.shape();
        let (rows, cols) = rows_cols(&shape);
        // SAFETY: the kernel call below writes every element of these outputs.
        let (mut dx, mut dweight) = (unsafe { buffer(rows * cols) }, unsafe { buffer(cols) });
        // SAFETY: the kernel call below writes every element of these outputs.
        let mut dbias = has_bias.then(|| unsafe { buffer(cols) });
        fp8_kernels::norm_backward(
            values(&x),
            cols,
            values(&weight),
            values(&mean),
            values(&rstd),
            rms,
            values(&dy),
            &mut dx,
            &mut dweight,
            dbias.as_deref_mut(),
        );
        (
            tensor(dx, shape),
            tensor(dweight, Shape::new([cols])),
            dbias.map(|db| tensor(db, Shape::new([cols]))),
        )
    }

    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !is_f32(&[&logits]) {
            return defaults::cross_entropy::<Self>(logits, targets);
        }
        let logits = dense(logits);
        let (rows, cols) = rows_cols(&logits.shape());
        let targets = targets_i64(targets);
        // SAFETY: the kernel call below writes every element of these outputs.
        let mut lse = unsafe { buffer(rows) };
        let sum = fp8_kernels::cross_entropy(values(&logits), cols, &targets, &mut lse);
        let loss = (sum / rows as f64) as f32;
        (
            tensor(vec![loss], Shape::new([1])),
            tensor(lse, Shape::new([rows])),
        )
    }

    fn fused_cross_entropy_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        dloss: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !is_f32(&[&logits, &lse, &dloss]) {
            return defaults::cross_entropy_backward::<Self>(logits, targets, lse, dloss);
        }
        let (logits, lse, dloss) = (dense(logits), dense(lse), dense(dloss));
        let shape = logits.shape();
        let (rows, cols) = rows_cols(&shape);
        let targets = targets_i64(targets);
        let scale = values(&dloss)[0] / rows as f32;
        // SAFETY: the kernel call below writes every element of these outputs.
        let mut dlogits = unsafe { buffer(rows * cols) };
        fp8_kernels::cross_entropy_backward(
            values(&logits),
            cols,
            &targets,
            values(&lse),
            scale,
            &mut dlogits,
        );
        tensor(dlogits, shape)
    }

    fn fused_adamw(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moments: Option<(FloatTensor<Self>, FloatTensor<Self>)>,
        step: &AdamWStep,
    ) -> AdamWOutput<Self> {
        let moments_f32 = moments.as_ref().is_none_or(|(m, v)| is_f32(&[m, v]));
        if !is_f32(&[&param, &grad]) || !moments_f32 {
            return defaults::adamw::<Self>(param, grad, moments, step);
        }
        let shape = param.shape();
        let n = shape.num_elements();
        let grad = dense(grad);
        let mut param = owned(param);
        let first = moments.is_none();
        let (mut m, mut v) = match moments {
            Some((m, v)) => (owned(m), owned(v)),
            // SAFETY: the kernel call below writes every element of these outputs.
            None => (
                tensor(unsafe { buffer(n) }, shape.clone()),
                tensor(unsafe { buffer(n) }, shape.clone()),
            ),
        };
        let s = AdamWStep { first, ..*step };
        fp8_kernels::adamw::adamw(
            &s,
            values_mut(&mut param, n),
            values(&grad),
            values_mut(&mut m, n),
            values_mut(&mut v, n),
        );
        (param, m, v)
    }
}
