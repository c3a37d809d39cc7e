//! [`FusedOps`] for [`Flex`]: the `fp8-kernels` row kernels on the tensors' own `f32` buffers.
//!
//! Inputs are read in place when contiguous (any view whose elements are one dense range of its
//! buffer), else copied to a contiguous buffer once. Outputs are fresh contiguous buffers that
//! the kernels write in full. Other dtypes take the composed [`defaults`](super::defaults).

use super::defaults::{self, rows_cols, stat_shape};
use super::{FusedOps, NormGrads, NormOutput};
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

/// A zeroed output buffer of `n` elements (the kernels overwrite all of it). `vec![0.0; n]`
/// allocates zeroed memory (`calloc`), which fresh pages get for free.
fn buffer(n: usize) -> Vec<f32> {
    vec![0.0; n]
}

fn tensor(v: Vec<f32>, shape: Shape) -> FlexTensor {
    debug_assert_eq!(v.len(), shape.num_elements());
    FlexTensor::new(Bytes::from_elems(v), Layout::contiguous(shape), DType::F32)
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
        let mut y = buffer(shape.num_elements());
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
        let mut dx = buffer(shape.num_elements());
        fp8_kernels::softmax_backward(values(&y), values(&dy), cols, &mut dx);
        tensor(dx, shape)
    }

    fn fused_gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&[&x]) {
            return defaults::gelu_tanh::<Self>(x);
        }
        let x = dense(x);
        let shape = x.shape();
        let mut y = buffer(shape.num_elements());
        fp8_kernels::gelu_tanh(values(&x), &mut y);
        tensor(y, shape)
    }

    fn fused_gelu_tanh_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&[&x, &dy]) {
            return defaults::gelu_tanh_backward::<Self>(x, dy);
        }
        let (x, dy) = (dense(x), dense(dy));
        let shape = x.shape();
        let mut dx = buffer(shape.num_elements());
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
        let (mut y, mut mean, mut rstd) = (buffer(rows * cols), buffer(rows), buffer(rows));
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
        let (mut dx, mut dweight) = (buffer(rows * cols), buffer(cols));
        let mut dbias = has_bias.then(|| buffer(cols));
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
        let mut lse = buffer(rows);
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
        let mut dlogits = buffer(rows * cols);
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
}
