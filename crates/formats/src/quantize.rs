//! The slice entry points: [`cast_slice`] (a plain cast) and [`quantize`] (scale, cast,
//! unscale, with statistics).
//!
//! [`quantize`] does every [`Scaling`] scheme with one engine in two passes:
//!
//! 1. tile amax (largest finite |x|), rows in parallel, merged with `max` (order-free, exact);
//! 2. per tile `scale` (multiplier applied before the cast) and `inv` (applied after), from the
//!    rules in `scaling`, then `q = cast(x · scale) · inv` with statistics, over fixed 64
//!    Ki-element work items whose partial sums are merged in index order, so results do not
//!    depend on the thread count.
//!
//! 1-row tiles that fit whole in a loop block (MX, per-row, 1×K blocks) skip pass 1: their amax
//! and scale are computed inside pass 2, from the block in cache.

use crate::cast::{CastSpec, Consts};
use crate::par::{self, Chunks};
use crate::scaling::{tile_scales, Nvfp4Scales, QuantSpec, Scaling, TensorScale, TileRule};
use crate::simd::{
    cast_plain, dispatch, Acc, Amax, ColumnAmax, ColumnScaled, Layout, TileAmax, Tiled, BLOCK,
    CHUNK, PAR_MIN,
};
use crate::source::Measure;
use crate::stats::Stats;
use std::mem::MaybeUninit;

/// Cast a slice in place; `offset` is the element index of `data[0]` (for stochastic rounding).
pub fn cast_slice(data: &mut [f32], spec: &CastSpec, offset: u64) {
    let k = Consts::new(spec);
    if k.identity {
        return;
    }
    if data.len() >= PAR_MIN {
        let chunks = Chunks::new(data, CHUNK);
        par::for_each(chunks.count(), |i| {
            // SAFETY: task `i` is the only one that takes chunk `i`.
            let c = unsafe { chunks.get(i) };
            cast_plain(c, &k, offset + (i * CHUNK) as u64);
        });
    } else {
        cast_plain(data, &k, offset);
    }
}

/// View `shape` as `[rows, cols]`: the last dimension is `cols`, the rest fold into `rows`.
fn view2d(shape: &[usize], len: usize) -> (usize, usize) {
    let cols = shape.last().copied().unwrap_or(1).max(1);
    let prod: usize = shape.iter().product();
    assert_eq!(
        prod, len,
        "quantize: shape {shape:?} does not match data length {len}"
    );
    (len / cols, cols)
}

/// Quantize `data` (C order, `shape`) in place: scale, cast, unscale. Returns the telemetry.
///
/// # Panics
/// If the product of `shape` is not `data.len()`, or a block size is 0.
pub fn quantize(data: &mut [f32], shape: &[usize], spec: &QuantSpec) -> Stats {
    // SAFETY: same layout, and every element stays initialized (written with `f32`s only).
    let dst = unsafe { &mut *(data as *mut [f32] as *mut [MaybeUninit<f32>]) };
    quantize_measured(None, dst, shape, spec, Measure::Full)
}

/// [`quantize`] from `src` into `dst` (in place when `src` is `None`, and then every element of
/// `dst` must be initialized), gathering only what `measure` asks for: the values are the same
/// bits whatever it is, and below [`Measure::Full`] the pass skips the error and count
/// statistics (most of its work on a training step that logs nothing). Every element of `dst`
/// is initialized when it returns.
pub(crate) fn quantize_measured(
    src: Option<&[f32]>,
    dst: &mut [MaybeUninit<f32>],
    shape: &[usize],
    spec: &QuantSpec,
    measure: Measure,
) -> Stats {
    let (rows, cols) = view2d(shape, dst.len());
    if dst.is_empty() {
        return Stats {
            scale: 1.0,
            snr_db: f64::INFINITY,
            ..Stats::default()
        };
    }
    let mut cast = spec.cast;
    let fmt_max = cast.format.max();
    let (tr, tc) = spec.scaling.tile_shape(rows, cols);
    if spec.scaling != Scaling::None {
        cast.saturate = true;
    }
    let k = Consts::new(&cast);
    let (tr, tc) = (tr.min(rows).max(1), tc.min(cols).max(1));
    let n_tr = rows.div_ceil(tr);
    let n_tc = cols.div_ceil(tc);

    // 1-row tiles that tile the flat index periodically and fit whole in a block get their
    // amax and scale inside the quantize pass itself: one pass over memory instead of two.
    let periodic = tr == 1 && (rows == 1 || cols.is_multiple_of(tc)) && BLOCK.is_multiple_of(tc);
    // Narrow tiles a few rows tall (MX, current-scaled and NVFP4 blocks down the columns, as in
    // the column-wise copies of the backward GEMMs' operands) go by bands of whole tile rows.
    let banded = (2..=64).contains(&tr) && tc < 16 && n_tc > 1;
    let rule = match spec.scaling {
        // NVFP4's block scales need the tensor amax: one read of the tensor for it, then the
        // blocks as any other rule's, in the same pass as the cast.
        Scaling::Nvfp4 { .. } if periodic || banded => {
            // SAFETY: in place, `dst` is initialized (the caller's promise).
            let input = src.unwrap_or_else(|| unsafe {
                &*(&*dst as *const [MaybeUninit<f32>] as *const [f32])
            });
            let amax = f32::from_bits(tensor_amax(input));
            Some(TileRule::Nvfp4(Nvfp4Scales::new(fmt_max, amax)))
        }
        _ => spec.scaling.tile_rule(cast.format),
    };
    // (A tensor scale is reported as such, not as a mean of tile scales: not fused.)
    let tensor = matches!(spec.scaling, Scaling::Tensor(_));
    let fused = rule.filter(|_| periodic && !tensor);
    if let Some(rule) = rule.filter(|_| !tensor && banded) {
        let t = Tiles {
            rows,
            cols,
            tr,
            tc,
            n_tc,
        };
        return bands(src, dst, t, rule, &k, measure);
    }
    let needs_amax = fused.is_none()
        && !matches!(
            spec.scaling,
            Scaling::None | Scaling::Tensor(TensorScale::Given(_))
        );
    let amax_grid = if needs_amax {
        // SAFETY: in place, `dst` is initialized (the caller's promise).
        let input = src
            .unwrap_or_else(|| unsafe { &*(&*dst as *const [MaybeUninit<f32>] as *const [f32]) });
        tile_amax(input, rows, cols, tr, tc, n_tr, n_tc)
    } else {
        Vec::new()
    };

    let mut tensor_scale = None;
    let grid: Vec<(f32, f32)> = match spec.scaling {
        Scaling::None => vec![(1.0, 1.0)],
        Scaling::Tensor(TensorScale::Given(s)) => {
            tensor_scale = Some(s);
            vec![(s, 1.0 / s)]
        }
        Scaling::Nvfp4 { .. } => {
            let amax = amax_grid.iter().copied().max().map_or(0.0, f32::from_bits);
            let nv = Nvfp4Scales::new(fmt_max, amax);
            tensor_scale = Some(nv.tensor_scale());
            nv.blocks(&amax_grid)
        }
        // Current scaling and MX: each tile by its own rule.
        _ => {
            let rule = rule.expect("every other scheme has a per-tile rule");
            tile_scales(rule, &amax_grid)
        }
    };
    if matches!(spec.scaling, Scaling::Tensor(TensorScale::Current { .. })) {
        tensor_scale = Some(grid[0].0);
    }
    let scale_report = tensor_scale.unwrap_or_else(|| {
        (grid.iter().map(|&(s, _)| f64::from(s)).sum::<f64>() / grid.len() as f64) as f32
    });

    // Narrow tiles (fewer than 16 columns, e.g. per-column or MX down the rows) use one
    // expanded per-column scale vector per tile row instead of many tiny segments.
    let percol: Option<Vec<(Vec<f32>, Vec<f32>)>> =
        (fused.is_none() && tc < 16 && n_tc > 1).then(|| {
            (0..n_tr)
                .map(|t| per_column(&grid[t * n_tc..(t + 1) * n_tc], tc, cols))
                .collect()
        });
    if let Some(pc) = percol.as_deref().filter(|_| measure != Measure::Full) {
        // Narrow tiles without statistics: whole rows with their per-column scales, in bands of
        // whole tile rows.
        let per_band = (CHUNK / (tr * cols)).max(1);
        let chunks = Chunks::new(dst, per_band * tr * cols);
        let run = |i: usize| {
            // SAFETY: task `i` is the only one that takes band `i`.
            let out = unsafe { chunks.get(i) };
            let start = i * per_band * tr * cols;
            dispatch(ColumnScaled {
                src: src.map(|s| &s[start..start + out.len()]),
                dst: out,
                cols,
                tr,
                percol: &pc[i * per_band..],
                k: &k,
                start,
            })
        };
        let n = chunks.count();
        if rows * cols >= PAR_MIN {
            par::for_each(n, run);
        } else {
            (0..n).for_each(run);
        }
        let acc = Acc {
            amax_bits: amax_grid.iter().copied().max().unwrap_or(0),
            ..Acc::default()
        };
        return report(&acc, scale_report, measure, rows * cols);
    }
    let layout = Layout {
        cols,
        tr,
        tc,
        n_tc,
        grid: &grid,
        percol: percol.as_deref(),
        none: spec.scaling == Scaling::None,
        fused,
        periodic,
        tile_row0: 0,
    };

    let run = |(i, chunk): (usize, &mut [MaybeUninit<f32>])| {
        let start = i * CHUNK;
        dispatch(Tiled {
            src: src.map(|s| &s[start..start + chunk.len()]),
            dst: chunk,
            start,
            layout: &layout,
            k: &k,
            stats: measure == Measure::Full,
        })
    };
    let n = dst.len();
    let accs: Vec<Acc> = if n >= PAR_MIN {
        let chunks = Chunks::new(dst, CHUNK);
        // SAFETY: task `i` is the only one that takes chunk `i`.
        par::map(chunks.count(), |i| run((i, unsafe { chunks.get(i) })))
    } else {
        dst.chunks_mut(CHUNK).enumerate().map(run).collect()
    };
    let mut acc = Acc::default();
    for a in &accs {
        acc.merge(a);
    }
    let scale_report = if let Some(rule) = fused {
        debug_assert_eq!(acc.tiles, (n_tr * n_tc) as u64);
        rule.tensor_scale()
            .unwrap_or((acc.scale_sum / acc.tiles.max(1) as f64) as f32)
    } else {
        // Without statistics the pass leaves the amax to the tiles.
        if measure != Measure::Full {
            acc.amax_bits = amax_grid.iter().copied().max().unwrap_or(0);
        }
        scale_report
    };
    report(&acc, scale_report, measure, n)
}

/// The [`Stats`] of a pass: everything for [`Measure::Full`]; else, as `source::elementwise`
/// reports, the amax if asked for and no more.
fn report(acc: &Acc, scale: f32, measure: Measure, n: usize) -> Stats {
    match measure {
        Measure::Full => stats_from(acc, scale),
        Measure::Amax | Measure::Nothing => Stats {
            amax: if measure == Measure::Amax {
                f32::from_bits(acc.amax_bits)
            } else {
                0.0
            },
            scale,
            underflow: 0.0,
            saturation: 0.0,
            snr_db: f64::NAN,
            count: n as u64,
        },
    }
}

/// The 2-D view and its tiles: `tr × tc` tiles, `n_tc` of them per tile row.
#[derive(Clone, Copy)]
struct Tiles {
    rows: usize,
    cols: usize,
    tr: usize,
    tc: usize,
    n_tc: usize,
}

/// [`quantize_measured`] for tiles a few rows tall and narrow: each work item is a band of whole
/// tile rows (about [`CHUNK`] elements) whose tile amaxes, scales and cast are done one after
/// the other while the band is in cache, so the tensor is read from memory once, not twice.
/// Work items are merged in order, so the result does not depend on the thread count.
fn bands(
    src: Option<&[f32]>,
    dst: &mut [MaybeUninit<f32>],
    t: Tiles,
    rule: TileRule,
    k: &Consts,
    measure: Measure,
) -> Stats {
    let Tiles {
        rows,
        cols,
        tr,
        tc,
        n_tc,
    } = t;
    let n = dst.len();
    let per_band = (CHUNK / (tr * cols)).max(1);
    let band_len = per_band * tr * cols;
    let chunks = Chunks::new(dst, band_len);
    let run = |i: usize| -> (Acc, f64) {
        // SAFETY: task `i` is the only one that takes band `i`.
        let out = unsafe { chunks.get(i) };
        let start = i * band_len;
        let src = src.map(|s| &s[start..start + out.len()]);
        let band_tiles = (out.len() / cols).div_ceil(tr);
        let mut amax = vec![0u32; band_tiles * n_tc];
        {
            // SAFETY: in place, `out` is initialized (the caller's promise); this view ends
            // before `out` is written.
            let input = src.unwrap_or_else(|| unsafe {
                &*(&*out as *const [MaybeUninit<f32>] as *const [f32])
            });
            for (t, rows) in input.chunks(tr * cols).enumerate() {
                rows_amax(rows, cols, tc, &mut amax[t * n_tc..(t + 1) * n_tc]);
            }
        }
        let grid = tile_scales(rule, &amax);
        let percol: Vec<(Vec<f32>, Vec<f32>)> = grid
            .chunks(n_tc)
            .map(|row| per_column(row, tc, cols))
            .collect();
        let scale_sum: f64 = grid.iter().map(|&(s, _)| f64::from(s)).sum();
        if measure != Measure::Full {
            dispatch(ColumnScaled {
                src,
                dst: out,
                cols,
                tr,
                percol: &percol,
                k,
                start,
            });
            let acc = Acc {
                amax_bits: amax.iter().copied().max().unwrap_or(0),
                ..Acc::default()
            };
            return (acc, scale_sum);
        }
        let layout = Layout {
            cols,
            tr,
            tc,
            n_tc,
            grid: &grid,
            percol: Some(&percol),
            none: false,
            fused: None,
            periodic: false,
            tile_row0: i * per_band,
        };
        let acc = dispatch(Tiled {
            dst: out,
            src,
            start,
            layout: &layout,
            k,
            stats: true,
        });
        (acc, scale_sum)
    };
    let items: Vec<(Acc, f64)> = if n >= PAR_MIN {
        par::map(chunks.count(), run)
    } else {
        (0..chunks.count()).map(run).collect()
    };
    let mut acc = Acc::default();
    let mut scale_sum = 0f64;
    for (a, s) in &items {
        acc.merge(a);
        scale_sum += s;
    }
    let n_tiles = rows.div_ceil(tr) * n_tc;
    let scale = rule
        .tensor_scale()
        .unwrap_or((scale_sum / n_tiles as f64) as f32);
    report(&acc, scale, measure, n)
}

fn stats_from(acc: &Acc, scale: f32) -> Stats {
    let n = acc.count.max(1) as f64;
    let snr_db = if acc.se2 == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (acc.sx2 / acc.se2).log10()
    };
    Stats {
        amax: f32::from_bits(acc.amax_bits),
        scale,
        underflow: acc.under as f64 / n,
        saturation: acc.sat as f64 / n,
        snr_db,
        count: acc.count,
    }
}

/// One tile row's `(scale, inverse)` pairs, `tc` columns each, expanded to one per column.
fn per_column(row: &[(f32, f32)], tc: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut s, mut inv) = (vec![0f32; cols], vec![0f32; cols]);
    if tc == 1 {
        for ((s, i), &(a, b)) in s.iter_mut().zip(&mut inv).zip(row) {
            (*s, *i) = (a, b);
        }
    } else {
        for ((s, i), &(a, b)) in s.chunks_mut(tc).zip(inv.chunks_mut(tc)).zip(row) {
            s.fill(a);
            i.fill(b);
        }
    }
    (s, inv)
}

/// Largest finite |x| of `data`, as f32 bits.
fn tensor_amax(data: &[f32]) -> u32 {
    if data.len() < PAR_MIN {
        return dispatch(Amax(data));
    }
    let parts = par::map(data.len().div_ceil(CHUNK), |i| {
        dispatch(Amax(&data[i * CHUNK..((i + 1) * CHUNK).min(data.len())]))
    });
    parts.into_iter().fold(0, u32::max)
}

/// Merge the largest finite |x| (as bits) of each `tc`-column tile of `rows` (whole rows of
/// `cols`, all in one tile row) into `out`, one entry per tile column.
fn rows_amax(rows: &[f32], cols: usize, tc: usize, out: &mut [u32]) {
    if tc == 1 {
        dispatch(ColumnAmax { rows, out });
    } else {
        for row in rows.chunks(cols) {
            dispatch(TileAmax {
                row,
                tc,
                out: &mut *out,
            });
        }
    }
}

/// Largest finite |x| per tile, as f32 bits, row-major over tiles.
fn tile_amax(
    data: &[f32],
    rows: usize,
    cols: usize,
    tr: usize,
    tc: usize,
    n_tr: usize,
    n_tc: usize,
) -> Vec<u32> {
    // Work items are groups of whole rows; each produces the partial grid rows it touches.
    let rows_per_item = (CHUNK / cols).max(1);
    let item_len = rows_per_item * cols;
    let items: Vec<(usize, Vec<u32>)> = par::map(data.len().div_ceil(item_len), |i| {
        let chunk = &data[i * item_len..((i + 1) * item_len).min(data.len())];
        let r0 = i * rows_per_item;
        let t0 = r0 / tr;
        let r1 = r0 + chunk.len() / cols;
        let t1 = (r1 - 1) / tr;
        let mut part = vec![0u32; (t1 - t0 + 1) * n_tc];
        // The rows of each tile row in this item, together.
        let mut r = r0;
        while r < r1 {
            let t = r / tr;
            let end = ((t + 1) * tr).min(r1);
            let out = &mut part[(t - t0) * n_tc..(t - t0 + 1) * n_tc];
            rows_amax(&chunk[(r - r0) * cols..(end - r0) * cols], cols, tc, out);
            r = end;
        }
        (t0, part)
    });
    let mut grid = vec![0u32; n_tr * n_tc];
    for (t0, part) in items {
        for (g, p) in grid[t0 * n_tc..].iter_mut().zip(part) {
            *g = (*g).max(p);
        }
    }
    let _ = rows;
    grid
}
