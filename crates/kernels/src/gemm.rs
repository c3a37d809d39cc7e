//! f32 matrix products for the training step: `gemm`'s micro-kernels, one single-threaded call
//! per tile, the tiles spread over the team of [`crate::par`] ([`run`]).
//!
//! # Why not a plain `gemm::gemm` call with its own threading
//!
//! `gemm`'s threading goes through rayon (see [`crate::par`] for what that costs when the caller
//! is not a rayon worker) and only starts above a fixed amount of work per reduction block, so a
//! transformer of modest width runs most of its GEMMs on one thread. Here every product is cut
//! into tiles by its shape, and the tiles of several products (the two gradient GEMMs of a
//! layer, and its bias gradient) run in one parallel loop.
//!
//! # Same bits for any thread count
//!
//! Each tile is one single-threaded `gemm` call over whole rows of the reduction: an output
//! element's value depends only on `k` and on how `gemm` blocks the reduction, which is chosen
//! from `k` and the cache sizes (gemm-common 0.19, `gemm_basic_generic` / `kernel_params`), not
//! from the tile's extent. So results are the same however a product is cut, for 1 or 16 threads,
//! and equal to one `gemm` call over the whole product (tests check both). Tiles are at least
//! [`MIN_EDGE`] rows or columns, so a tile never drops into `gemm`'s small-matrix path when the
//! whole product would not.
//!
//! How many tiles: enough for the team to share ([`PIECES_PER_THREAD`] per thread at most), no
//! more. One thread runs each matrix of a product as one call: every extra tile is another call
//! (its set-up, its packing buffers) and packs its share of the operands again.
//!
//! Outputs are written in full by `gemm` (`read_dst = false`: `gemm` never reads the destination
//! then), so they need no zero-fill; the bias, if any, is added to each tile right after its
//! product, while it is in cache.

use crate::par;
use std::mem::MaybeUninit;

/// A tile is cut to about this many multiply-adds (≈ 50–150 µs on one core).
const TILE_WORK: usize = 4 << 20;
/// At most this many tiles per matrix.
const MAX_PIECES: usize = 64;
/// At most this many tiles per matrix per thread of the team: enough for the dynamic hand-out
/// of [`par::for_each`] to even out tiles that run at different speeds.
const PIECES_PER_THREAD: usize = 4;
/// Smallest number of rows (or columns) a product is cut into.
pub const MIN_EDGE: usize = 128;
/// Row and column tile extents are multiples of these (whole micro-kernel panels for f32 on
/// AVX2 and AVX-512).
const ROW_ALIGN: usize = 16;
const COL_ALIGN: usize = 48;
/// Rows per partial sum in [`ColumnSums`]: fixed, so the sum does not depend on the threads.
pub const SUM_BLOCK: usize = 64;
/// Column-sum blocks per task.
const SUM_BLOCKS_PER_TASK: usize = 8;

/// One operand of a (batched) product: element `(i, j)` of matrix `b` is
/// `data[offsets[b] + i·row_stride + j·col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    /// Offset of element (0, 0) of each matrix of the batch.
    pub offsets: &'a [usize],
    pub row_stride: isize,
    pub col_stride: isize,
}

/// `out[b] = lhs[b] · rhs[b] (+ bias)` for every matrix `b` of the batch: `lhs` is `m × k`,
/// `rhs` is `k × n`, `out` is `batch × m × n` row-major, `bias` (length `n`) is added to every
/// row.
#[derive(Clone, Copy, Debug)]
pub struct Product<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lhs: Operand<'a>,
    pub rhs: Operand<'a>,
    pub bias: Option<&'a [f32]>,
}

impl Product<'_> {
    /// Number of matrices in the batch.
    pub fn batch(&self) -> usize {
        self.lhs.offsets.len()
    }

    /// Length of the output: `batch · m · n`.
    pub fn out_len(&self) -> usize {
        self.batch() * self.m * self.n
    }

    fn check(&self, out_len: usize) {
        assert_eq!(
            self.lhs.offsets.len(),
            self.rhs.offsets.len(),
            "gemm: lhs has {} matrices, rhs {}",
            self.lhs.offsets.len(),
            self.rhs.offsets.len()
        );
        assert_eq!(out_len, self.out_len(), "gemm: output length");
        if let Some(b) = self.bias {
            assert_eq!(b.len(), self.n, "gemm: bias length");
        }
        check_operand("lhs", &self.lhs, self.m, self.k);
        check_operand("rhs", &self.rhs, self.k, self.n);
    }
}

/// Every element of every matrix of `op` lies inside `op.data`.
fn check_operand(name: &str, op: &Operand<'_>, rows: usize, cols: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    let span = |extent: usize, stride: isize| {
        let reach = (extent as i128 - 1) * stride as i128;
        (reach.min(0), reach.max(0))
    };
    let (r_lo, r_hi) = span(rows, op.row_stride);
    let (c_lo, c_hi) = span(cols, op.col_stride);
    for &o in op.offsets {
        let (lo, hi) = (o as i128 + r_lo + c_lo, o as i128 + r_hi + c_hi);
        assert!(
            lo >= 0 && hi < op.data.len() as i128,
            "gemm: {name} matrix at offset {o} ({rows} × {cols}, strides {}, {}) reaches \
             [{lo}, {hi}] outside its buffer of {}",
            op.row_stride,
            op.col_stride,
            op.data.len()
        );
    }
}

/// Column sums of a row-major `rows × cols` matrix: `out[j] = Σ_i x[i·cols + j]`, summed in
/// blocks of [`SUM_BLOCK`] rows (each in row order) whose partials are then added in block order.
pub struct ColumnSums<'a> {
    pub x: &'a [f32],
    pub cols: usize,
    pub out: &'a mut [f32],
}

/// An output pointer shared by tiles that write disjoint parts of it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tiles write disjoint ranges (see `run`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// How one matrix of a product is cut: `rows` × `cols` tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cut {
    rows: usize,
    cols: usize,
}

impl Cut {
    /// The cut of an `m × n` (reduction `k`) matrix for a team of `width` threads.
    fn of(m: usize, n: usize, k: usize, width: usize) -> Cut {
        let whole = Cut { rows: m, cols: n };
        if width <= 1 {
            return whole;
        }
        let work = m.saturating_mul(n).saturating_mul(k);
        let pieces = work
            .div_ceil(TILE_WORK)
            .next_power_of_two()
            .min(MAX_PIECES)
            .min(PIECES_PER_THREAD * width);
        if pieces <= 1 {
            return whole;
        }
        // Cut the dimension whose operand is larger, so that the smaller one is what every tile
        // reads (and `gemm` packs) again.
        let (extent, align) = if n <= m {
            (m, ROW_ALIGN)
        } else {
            (n, COL_ALIGN)
        };
        let edge = extent
            .div_ceil(pieces)
            .next_multiple_of(align)
            .max(MIN_EDGE);
        if edge >= extent {
            return whole;
        }
        if n <= m {
            Cut {
                rows: edge,
                cols: n,
            }
        } else {
            Cut {
                rows: m,
                cols: edge,
            }
        }
    }

    fn tiles(&self, m: usize, n: usize) -> usize {
        m.div_ceil(self.rows.max(1)) * n.div_ceil(self.cols.max(1))
    }
}

/// `gemm` for one tile: rows `r0..r0+rows`, columns `c0..c0+cols` of matrix `b`.
///
/// # Safety
/// `p` was checked against `out`'s length, and no other thread writes this tile.
unsafe fn tile(
    p: &Product<'_>,
    out: OutPtr,
    b: usize,
    r0: usize,
    rows: usize,
    c0: usize,
    cols: usize,
) {
    let lhs = p
        .lhs
        .data
        .as_ptr()
        .offset(p.lhs.offsets[b] as isize + r0 as isize * p.lhs.row_stride);
    let rhs = p
        .rhs
        .data
        .as_ptr()
        .offset(p.rhs.offsets[b] as isize + c0 as isize * p.rhs.col_stride);
    let dst = out.0.add(b * p.m * p.n + r0 * p.n + c0);
    gemm::gemm(
        rows,
        cols,
        p.k,
        dst,
        1,
        p.n as isize,
        false,
        lhs,
        p.lhs.col_stride,
        p.lhs.row_stride,
        rhs,
        p.rhs.col_stride,
        p.rhs.row_stride,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
    if let Some(bias) = p.bias {
        let bias = &bias[c0..c0 + cols];
        for r in 0..rows {
            let row = std::slice::from_raw_parts_mut(dst.add(r * p.n), cols);
            for (y, &b) in row.iter_mut().zip(bias) {
                *y += b;
            }
        }
    }
}

/// Compute `products` into `outs` (one output per product, `out_len()` long, every element
/// written) and, if given, the column sums, all in one parallel loop.
pub fn run(
    products: &[Product<'_>],
    outs: &mut [&mut [MaybeUninit<f32>]],
    sums: Option<ColumnSums<'_>>,
) {
    assert_eq!(products.len(), outs.len(), "gemm: one output per product");
    for (p, o) in products.iter().zip(outs.iter()) {
        p.check(o.len());
    }
    let ptrs: Vec<OutPtr> = outs
        .iter_mut()
        .map(|o| OutPtr(o.as_mut_ptr().cast()))
        .collect();
    let width = par::threads();
    let cuts: Vec<Cut> = products
        .iter()
        .map(|p| Cut::of(p.m, p.n, p.k, width))
        .collect();
    // Task ranges: product i owns tasks starts[i]..starts[i + 1].
    let mut starts = Vec::with_capacity(products.len() + 1);
    let mut total = 0;
    for (p, c) in products.iter().zip(&cuts) {
        starts.push(total);
        total += p.batch() * c.tiles(p.m, p.n);
    }
    starts.push(total);

    let sums = sums.map(SumsPlan::new);
    let sum_tasks = sums.as_ref().map_or(0, |s| s.tasks());

    par::for_each(total + sum_tasks, |t| {
        if t >= total {
            if let Some(s) = &sums {
                s.task(t - total);
            }
            return;
        }
        let i = starts.partition_point(|&s| s <= t) - 1;
        let (p, c) = (&products[i], cuts[i]);
        let local = t - starts[i];
        let per_matrix = c.tiles(p.m, p.n);
        let (b, within) = (local / per_matrix, local % per_matrix);
        let col_tiles = p.n.div_ceil(c.cols.max(1));
        let (ri, ci) = (within / col_tiles, within % col_tiles);
        let (r0, c0) = (ri * c.rows, ci * c.cols);
        let rows = c.rows.min(p.m - r0);
        let cols = c.cols.min(p.n - c0);
        // SAFETY: checked above; tiles (b, ri, ci) are disjoint.
        unsafe { tile(p, ptrs[i], b, r0, rows, c0, cols) };
    });

    if let Some(s) = sums {
        s.finish();
    }
}

/// `lhs · rhs (+ bias)` into a fresh vector.
pub fn matmul(p: &Product<'_>) -> Vec<f32> {
    let mut out = Vec::with_capacity(p.out_len());
    run(
        std::slice::from_ref(p),
        &mut [&mut out.spare_capacity_mut()[..p.out_len()]],
        None,
    );
    // SAFETY: `run` wrote all `out_len()` elements.
    unsafe { out.set_len(p.out_len()) };
    out
}

/// The partial sums of [`ColumnSums`], one row of `cols` per block.
struct SumsPlan<'a> {
    x: &'a [f32],
    cols: usize,
    blocks: usize,
    partial: Vec<f32>,
    partial_ptr: OutPtr,
    out: &'a mut [f32],
}

impl<'a> SumsPlan<'a> {
    fn new(s: ColumnSums<'a>) -> Self {
        assert!(s.cols > 0, "gemm: column sums need cols > 0");
        assert!(
            s.x.len().is_multiple_of(s.cols),
            "gemm: column sums: length {} is not a multiple of cols = {}",
            s.x.len(),
            s.cols
        );
        assert_eq!(s.out.len(), s.cols, "gemm: column sums output length");
        let rows = s.x.len() / s.cols;
        let blocks = rows.div_ceil(SUM_BLOCK);
        let mut partial = vec![0.0f32; blocks * s.cols];
        let partial_ptr = OutPtr(partial.as_mut_ptr());
        SumsPlan {
            x: s.x,
            cols: s.cols,
            blocks,
            partial,
            partial_ptr,
            out: s.out,
        }
    }

    fn tasks(&self) -> usize {
        self.blocks.div_ceil(SUM_BLOCKS_PER_TASK)
    }

    fn task(&self, t: usize) {
        let cols = self.cols;
        let first = t * SUM_BLOCKS_PER_TASK;
        for blk in first..(first + SUM_BLOCKS_PER_TASK).min(self.blocks) {
            // SAFETY: block `blk` owns partial[blk·cols ..][..cols]; the buffer outlives the loop.
            let acc =
                unsafe { std::slice::from_raw_parts_mut(self.partial_ptr.0.add(blk * cols), cols) };
            let rows =
                &self.x[blk * SUM_BLOCK * cols..((blk + 1) * SUM_BLOCK * cols).min(self.x.len())];
            for row in rows.chunks_exact(cols) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
        }
    }

    fn finish(self) {
        self.out.fill(0.0);
        for p in self.partial.chunks_exact(self.cols) {
            for (o, &v) in self.out.iter_mut().zip(p) {
                *o += v;
            }
        }
    }
}
