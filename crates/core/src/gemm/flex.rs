//! [`GemmOps`] for [`Flex`]: `fp8_kernels::gemm`'s tiled products on the tensors' own `f32`
//! buffers.
//!
//! Operands are read in place through their strides (transposed and sliced views included, as
//! burn-flex's own matmul does); views with negative strides are copied first. Outputs are
//! fresh contiguous buffers that the products write once. Other dtypes take the composed
//! defaults.

use super::{composed, GemmOps, LinearGrads};
use crate::fused::flex::dense;
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::Flex;
use burn::tensor::{DType, Shape};
use burn_backend::tensor::FloatTensor;
use burn_backend::Bytes;
use fp8_kernels::gemm::{self as kernels, ColumnSums, Operand, Product};
use std::mem::MaybeUninit;

fn is_f32(ts: &[&FlexTensor]) -> bool {
    ts.iter().all(|t| t.dtype() == DType::F32)
}

fn positive_strides(t: &FlexTensor) -> bool {
    t.layout().strides().iter().all(|&s| s >= 0)
}

/// `t` if its strides are all non-negative, else a contiguous copy.
fn readable(t: FlexTensor) -> FlexTensor {
    if positive_strides(&t) {
        t
    } else {
        dense(t)
    }
}

/// The matrices of a tensor `[.., rows, cols]` (or their transposes), batch dimensions
/// broadcast to a given batch shape.
struct Matrices {
    offsets: Vec<usize>,
    row_stride: isize,
    col_stride: isize,
}

impl Matrices {
    /// The matrices of `t` over its last two dimensions (transposed if `transpose`), one per
    /// entry of `batch` (row-major), with stride 0 along the dimensions `t` broadcasts.
    fn of(t: &FlexTensor, batch: &[usize], transpose: bool) -> Matrices {
        let layout = t.layout();
        let dims = layout.shape().as_slice();
        let strides = layout.strides();
        let r = dims.len();
        let (mut row_stride, mut col_stride) = (strides[r - 2], strides[r - 1]);
        if transpose {
            std::mem::swap(&mut row_stride, &mut col_stride);
        }
        // The stride of each batch dimension of `batch`, 0 where `t` has no such dimension
        // or size 1 there.
        let lead = batch.len() - (r - 2);
        let bstrides: Vec<usize> = (0..batch.len())
            .map(|i| match i.checked_sub(lead) {
                Some(j) if dims[j] > 1 => strides[j] as usize,
                _ => 0,
            })
            .collect();
        let count: usize = batch.iter().product();
        let mut offsets = Vec::with_capacity(count);
        let mut index = vec![0usize; batch.len()];
        for _ in 0..count {
            let off: usize = index.iter().zip(&bstrides).map(|(i, s)| i * s).sum();
            offsets.push(layout.start_offset() + off);
            for d in (0..batch.len()).rev() {
                index[d] += 1;
                if index[d] < batch[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Matrices {
            offsets,
            row_stride,
            col_stride,
        }
    }

    fn operand<'a>(&'a self, t: &'a FlexTensor) -> Operand<'a> {
        Operand {
            data: t.storage::<f32>(),
            offsets: &self.offsets,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }
}

/// The broadcast batch shape of two tensors' leading dimensions, `None` if they do not
/// broadcast.
fn batch_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let pad = |d: &[usize], i: usize| i.checked_sub(n - d.len()).map_or(1, |j| d[j]);
    (0..n)
        .map(|i| match (pad(a, i), pad(b, i)) {
            (x, y) if x == y || y == 1 => Some(x),
            (1, y) => Some(y),
            _ => None,
        })
        .collect()
}

/// A fresh output of `n` elements for [`kernels::run`], which writes all of them.
fn output(n: usize) -> Vec<f32> {
    Vec::with_capacity(n)
}

/// `v`, whose first `len` elements `kernels::run` wrote, as a contiguous tensor.
fn finish(mut v: Vec<f32>, dims: Vec<usize>) -> FlexTensor {
    let shape = Shape::from(dims);
    let n = shape.num_elements();
    // SAFETY: `kernels::run` wrote all `n` elements (its contract).
    unsafe { v.set_len(n) };
    FlexTensor::new(Bytes::from_elems(v), Layout::contiguous(shape), DType::F32)
}

fn spare(v: &mut Vec<f32>, n: usize) -> &mut [MaybeUninit<f32>] {
    &mut v.spare_capacity_mut()[..n]
}

/// A tensor `[.., cols]` as `rows × cols` with one row stride: `(rows, cols, row_stride,
/// col_stride)`, when its leading dimensions collapse into one (any contiguous tensor, and
/// most views); `None` otherwise.
fn as_rows(t: &FlexTensor) -> Option<(usize, usize, isize, isize)> {
    let layout = t.layout();
    let dims = layout.shape().as_slice();
    let strides = layout.strides();
    let r = dims.len();
    let cols = dims[r - 1];
    let mut rows = 1usize;
    let mut row_stride: Option<isize> = None;
    // Walk the leading dimensions from the innermost out; each must step over the rows of the
    // dimensions inside it.
    let mut expect: Option<isize> = None;
    for d in (0..r - 1).rev() {
        if dims[d] == 1 {
            continue;
        }
        match expect {
            None => row_stride = Some(strides[d]),
            Some(e) if e == strides[d] => {}
            Some(_) => return None,
        }
        expect = Some(strides[d] * dims[d] as isize);
        rows *= dims[d];
    }
    Some((
        rows,
        cols,
        row_stride.unwrap_or(cols as isize),
        strides[r - 1],
    ))
}

/// `t` viewed as rows (a copy if its leading dimensions do not collapse), with its row view.
fn rows_of(t: FlexTensor) -> (FlexTensor, (usize, usize, isize, isize)) {
    let t = readable(t);
    if let Some(v) = as_rows(&t) {
        return (t, v);
    }
    let t = dense(t);
    let v = as_rows(&t).expect("a contiguous tensor's leading dimensions collapse");
    (t, v)
}

/// A single-matrix operand.
fn single<'a>(
    t: &'a FlexTensor,
    offsets: &'a [usize],
    row_stride: isize,
    col_stride: isize,
) -> Operand<'a> {
    Operand {
        data: t.storage::<f32>(),
        offsets,
        row_stride,
        col_stride,
    }
}

impl GemmOps for Flex {
    fn gemm_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let (ls, rs) = (
            lhs.layout().shape().as_slice(),
            rhs.layout().shape().as_slice(),
        );
        let (lr, rr) = (ls.len(), rs.len());
        let usable = is_f32(&[&lhs, &rhs]) && lr >= 2 && rr >= 2 && ls[lr - 1] == rs[rr - 2];
        let batch = usable
            .then(|| batch_shape(&ls[..lr - 2], &rs[..rr - 2]))
            .flatten();
        let Some(batch) = batch else {
            return composed::matmul::<Self>(lhs, rhs);
        };
        let (m, k, n) = (ls[lr - 2], ls[lr - 1], rs[rr - 1]);
        let (lhs, rhs) = (readable(lhs), readable(rhs));
        let (a, b) = (
            Matrices::of(&lhs, &batch, false),
            Matrices::of(&rhs, &batch, false),
        );
        let p = Product {
            m,
            n,
            k,
            lhs: a.operand(&lhs),
            rhs: b.operand(&rhs),
            bias: None,
        };
        let len = p.out_len();
        let mut out = output(len);
        kernels::run(&[p], &mut [spare(&mut out, len)], None);
        let mut dims = batch;
        dims.extend([m, n]);
        finish(out, dims)
    }

    fn gemm_matmul_backward(
        lhs: Option<FloatTensor<Self>>,
        rhs: Option<FloatTensor<Self>>,
        dy: FloatTensor<Self>,
    ) -> (Option<FloatTensor<Self>>, Option<FloatTensor<Self>>) {
        let all_f32 = is_f32(&[&dy]) && lhs.iter().chain(rhs.iter()).all(|t| is_f32(&[t]));
        if !all_f32 {
            return composed::matmul_backward::<Self>(lhs, rhs, dy);
        }
        let dy = readable(dy);
        let ds = dy.layout().shape().as_slice().to_vec();
        let r = ds.len();
        let batch = ds[..r - 2].to_vec();
        let (m, n) = (ds[r - 2], ds[r - 1]);
        let (lhs, rhs) = (lhs.map(readable), rhs.map(readable));
        let g = Matrices::of(&dy, &batch, false);
        // dlhs = dy · rhsᵀ: [m, n]·[n, k]; drhs = lhsᵀ · dy: [k, m]·[m, n].
        let rt = rhs.as_ref().map(|t| Matrices::of(t, &batch, true));
        let lt = lhs.as_ref().map(|t| Matrices::of(t, &batch, true));
        let k = match (&lhs, &rhs) {
            (Some(l), _) => *l.layout().shape().as_slice().last().expect("rank ≥ 2"),
            (_, Some(t)) => t.layout().shape().as_slice()[t.layout().num_dims() - 2],
            (None, None) => return (None, None),
        };
        let mut products = Vec::new();
        if let (Some(t), Some(mt)) = (&rhs, &rt) {
            products.push(Product {
                m,
                n: k,
                k: n,
                lhs: g.operand(&dy),
                rhs: mt.operand(t),
                bias: None,
            });
        }
        if let (Some(t), Some(mt)) = (&lhs, &lt) {
            products.push(Product {
                m: k,
                n,
                k: m,
                lhs: mt.operand(t),
                rhs: g.operand(&dy),
                bias: None,
            });
        }
        let lens: Vec<usize> = products.iter().map(|p| p.out_len()).collect();
        let mut outs: Vec<Vec<f32>> = lens.iter().map(|&l| output(l)).collect();
        let mut views: Vec<&mut [MaybeUninit<f32>]> = outs
            .iter_mut()
            .zip(&lens)
            .map(|(o, &l)| spare(o, l))
            .collect();
        kernels::run(&products, &mut views, None);
        let mut outs = outs.into_iter();
        let with = |rows: usize, cols: usize| {
            let mut d = batch.clone();
            d.extend([rows, cols]);
            d
        };
        let dlhs = rhs
            .is_some()
            .then(|| finish(outs.next().expect("dlhs"), with(m, k)));
        let drhs = lhs
            .is_some()
            .then(|| finish(outs.next().expect("drhs"), with(k, n)));
        (dlhs, drhs)
    }

    fn gemm_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        let ws = weight.layout().shape().as_slice();
        let xs = x.layout().shape().as_slice();
        let usable = is_f32(&[&x, &weight])
            && bias
                .as_ref()
                .is_none_or(|b| is_f32(&[b]) && b.layout().num_dims() == 1)
            && ws.len() == 2
            && xs.len() >= 2
            && xs[xs.len() - 1] == ws[0]
            && bias.as_ref().is_none_or(|b| b.layout().shape()[0] == ws[1]);
        if !usable {
            return composed::linear::<Self>(x, weight, bias);
        }
        let (x, (rows, d_in, x_rs, x_cs)) = rows_of(x);
        let weight = readable(weight);
        let bias = bias.map(dense);
        let d_out = weight.layout().shape()[1];
        let w_strides = weight.layout().strides();
        let (x_off, w_off) = (
            [x.layout().start_offset()],
            [weight.layout().start_offset()],
        );
        let p = Product {
            m: rows,
            n: d_out,
            k: d_in,
            lhs: single(&x, &x_off, x_rs, x_cs),
            rhs: single(&weight, &w_off, w_strides[0], w_strides[1]),
            bias: bias.as_ref().map(|b| b.as_slice::<f32>().expect("dense")),
        };
        let len = p.out_len();
        let mut out = output(len);
        kernels::run(&[p], &mut [spare(&mut out, len)], None);
        let mut dims = x.layout().shape().as_slice().to_vec();
        *dims.last_mut().expect("rank ≥ 2") = d_out;
        finish(out, dims)
    }

    fn gemm_linear_backward(
        x: Option<FloatTensor<Self>>,
        weight: Option<FloatTensor<Self>>,
        dy: FloatTensor<Self>,
        bias_grad: bool,
    ) -> LinearGrads<Self> {
        let all_f32 = is_f32(&[&dy]) && x.iter().chain(weight.iter()).all(|t| is_f32(&[t]));
        let ranks_ok = dy.layout().num_dims() >= 2
            && weight.as_ref().is_none_or(|w| w.layout().num_dims() == 2);
        if !all_f32 || !ranks_ok {
            return composed::linear_backward::<Self>(x, weight, dy, bias_grad);
        }
        let dy_shape = dy.layout().shape().as_slice().to_vec();
        // The bias gradient sums dense rows; the products read any row view.
        let dy = if bias_grad { dense(dy) } else { dy };
        let (dy, (rows, d_out, g_rs, g_cs)) = rows_of(dy);
        let x = x.map(rows_of);
        let weight = weight.map(readable);
        let d_in = match (&x, &weight) {
            (Some((_, (_, c, _, _))), _) => *c,
            (_, Some(w)) => w.layout().shape()[0],
            (None, None) => 0,
        };
        let g_off = [dy.layout().start_offset()];
        let w_off = weight.as_ref().map(|w| [w.layout().start_offset()]);
        let x_off = x.as_ref().map(|(t, _)| [t.layout().start_offset()]);
        let mut products = Vec::new();
        // dx = dy · weightᵀ: [rows, d_out]·[d_out, d_in].
        if let (Some(w), Some(off)) = (&weight, &w_off) {
            let s = w.layout().strides();
            products.push(Product {
                m: rows,
                n: d_in,
                k: d_out,
                lhs: single(&dy, &g_off, g_rs, g_cs),
                rhs: single(w, off, s[1], s[0]),
                bias: None,
            });
        }
        // dweight = xᵀ · dy: [d_in, rows]·[rows, d_out].
        if let (Some((t, (_, _, x_rs, x_cs))), Some(off)) = (&x, &x_off) {
            products.push(Product {
                m: d_in,
                n: d_out,
                k: rows,
                lhs: single(t, off, *x_cs, *x_rs),
                rhs: single(&dy, &g_off, g_rs, g_cs),
                bias: None,
            });
        }
        let lens: Vec<usize> = products.iter().map(|p| p.out_len()).collect();
        let mut outs: Vec<Vec<f32>> = lens.iter().map(|&l| output(l)).collect();
        let mut db = bias_grad.then(|| vec![0.0f32; d_out]);
        {
            let mut views: Vec<&mut [MaybeUninit<f32>]> = outs
                .iter_mut()
                .zip(&lens)
                .map(|(o, &l)| spare(o, l))
                .collect();
            let sums = db.as_mut().map(|out| ColumnSums {
                x: dy.as_slice::<f32>().expect("dense"),
                cols: d_out,
                out,
            });
            kernels::run(&products, &mut views, sums);
        }
        let mut outs = outs.into_iter();
        let dx = weight.is_some().then(|| {
            let mut dims = dy_shape.clone();
            *dims.last_mut().expect("rank ≥ 2") = d_in;
            finish(outs.next().expect("dx"), dims)
        });
        let dw = x
            .is_some()
            .then(|| finish(outs.next().expect("dw"), vec![d_in, d_out]));
        let db = db.map(|v| {
            FlexTensor::new(
                Bytes::from_elems(v),
                Layout::contiguous(Shape::new([d_out])),
                DType::F32,
            )
        });
        (dx, dw, db)
    }
}
