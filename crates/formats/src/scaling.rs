//! Scaling schemes: none, per tensor, per row/column, block tiles, OCP MX, NVFP4.
//!
//! Every scheme is "tiles of `tr × tc` elements over the 2-D view, one scale per tile": the
//! tensor is one tile, a row is `1 × cols`, a column `rows × 1`, MX along the columns `1 × 32`,
//! and so on. Ragged tail tiles are shorter. So one engine does all of them in two passes:
//!
//! 1. tile amax (largest finite |x|), rows in parallel, merged with `max` (order-free, exact);
//! 2. per tile `scale` (multiplier applied before the cast) and `inv` (applied after), then
//!    `q = cast(x · scale) · inv` with statistics, over fixed 64 Ki-element work items whose
//!    partial sums are merged in index order, so results do not depend on the thread count.
//!
//! Conventions (DESIGN.md §4):
//! - `Tensor(Given(s))`: `q = cast(x·s) · (1/s)`; the inverse is computed once in f32, as
//!   delayed scaling dequantizes with `1/scale`.
//! - Current scaling (tensor, row, col, block): `scale = fmt_max / amax`; amax 0 → 1; an
//!   infinite scale (tiny amax) → `f32::MAX`; `pow2` rounds the scale *down* to a power of two.
//! - Every scaled scheme casts with saturation (TE's satfinite), whatever `cast.saturate` says:
//!   scaling is meant to keep values in range and a stale delayed scale must not produce NaN.
//!   `Scaling::None` honours `cast.saturate`.
//! - MX: `shared_exp` from the block amax by [`MxRule`], clamped to [−127, 127];
//!   `scale = 2^−shared_exp` exactly. An all-zero (or all non-finite) block uses exponent 0.
//! - NVFP4: `s_global = amax/(448·fmt_max)` (amax 0 → 1); block decode scale
//!   `s_b = e4m3fn(block_amax / fmt_max / s_global) · s_global`, `scale = 1/s_b`, `inv = s_b`
//!   (a zero `s_b` maps the block to zero). The element format is the spec's (E2M1 normally).
//! - [`Stats::scale`] is the tensor scale for `None` (1), `Tensor` and NVFP4 (`1/s_global`);
//!   for row/col/block/MX it is the arithmetic mean of the tile scales.

use crate::kernel::{Consts, CHUNK, PAR_MIN};
use crate::simd::{dispatch, exp2i, Acc, Layout, TileAmax, TileRule, Tiled, BLOCK};
use crate::{CastSpec, Format, Stats};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Which axis of a 2-D view blocks run along. Tensors are viewed as `[rows, cols]` with all
/// leading dimensions folded into `rows` (C order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockAxis {
    /// Blocks run along the last (contiguous) dimension: 1×K tiles lie within a row.
    #[default]
    Cols,
    /// Blocks run down the rows: K×1 tiles lie within a column.
    Rows,
}

/// How the shared exponent of an MX block is chosen from the block amax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MxRule {
    /// OCP MX v1.0: `floor(log2(amax)) - emax_elem`; may saturate.
    #[default]
    Floor,
    /// Round `amax / fmt_max` up to a power of two; never saturates.
    Rceil,
    /// `ceil(log2(amax)) - emax_elem`.
    Ceil,
    /// Round the amax mantissa to even first, then floor.
    Even,
}

/// A per-tensor scale.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum TensorScale {
    /// Multiply by this scale before the cast, divide after (delayed scaling supplies it).
    Given(f32),
    /// `fmt_max / amax` of this tensor now (amax 0/NaN/inf → 1), optionally rounded down to a
    /// power of two.
    Current { pow2: bool },
}

/// How scales are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Scaling {
    None,
    Tensor(TensorScale),
    /// One current-amax scale per row of the 2-D view.
    Row {
        pow2: bool,
    },
    /// One current-amax scale per column of the 2-D view.
    Col {
        pow2: bool,
    },
    /// Tiles of `rows × cols` elements, one current-amax scale each (DeepSeek-V3: 1×128, 128×128).
    Block {
        rows: usize,
        cols: usize,
        pow2: bool,
    },
    /// OCP MX: blocks of `block` along `axis`, E8M0 shared exponent chosen by `rule`.
    Mx {
        block: usize,
        rule: MxRule,
        axis: BlockAxis,
    },
    /// NVFP4: 16-element blocks (along `axis`) of E2M1 with E4M3 block scales and an FP32
    /// tensor scale.
    Nvfp4 {
        axis: BlockAxis,
    },
}

/// A cast plus its scaling: everything needed to quantize one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantSpec {
    pub cast: CastSpec,
    pub scaling: Scaling,
}

impl QuantSpec {
    /// A plain cast, no scaling.
    pub fn cast(cast: CastSpec) -> QuantSpec {
        QuantSpec {
            cast,
            scaling: Scaling::None,
        }
    }
}

impl Scaling {
    /// OCP MX v1.0 defaults: 32-element blocks along the columns, `Floor` rule.
    pub const MX: Scaling = Scaling::Mx {
        block: 32,
        rule: MxRule::Floor,
        axis: BlockAxis::Cols,
    };
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

fn bits_to_f32(b: u32) -> f32 {
    f32::from_bits(b)
}

/// `fmt_max / amax`, amax 0 → 1, inf → f32::MAX, optionally rounded down to a power of two.
pub(crate) fn current_scale(fmt_max: f32, amax: f32, pow2: bool) -> f32 {
    let mut s = if amax > 0.0 && amax.is_finite() {
        fmt_max / amax
    } else {
        1.0
    };
    if !s.is_finite() {
        s = f32::MAX;
    }
    if pow2 {
        s = f32::from_bits(s.to_bits() & 0xff80_0000);
        if s == 0.0 {
            s = f32::from_bits(0x0080_0000);
        }
    }
    s
}

/// floor(log2(x)) for positive finite x (subnormals included), exact from the bit pattern.
pub fn floor_log2(x: f32) -> i32 {
    let b = x.to_bits() & 0x7fff_ffff;
    let e = (b >> 23) as i32;
    if e == 0 {
        -127 - (b.leading_zeros() as i32 - 9)
    } else {
        e - 127
    }
}

/// Is x an exact power of two (positive, finite)?
fn is_pow2(x: f32) -> bool {
    let b = x.to_bits();
    if b >> 23 == 0 {
        b.is_power_of_two()
    } else {
        b & 0x7f_ffff == 0
    }
}

/// The MX shared exponent of a block with largest magnitude `amax`.
pub fn mx_shared_exp(amax: f32, elem: Format, rule: MxRule) -> i32 {
    MxConsts::new(elem, rule).shared_exp(amax)
}

/// What [`mx_shared_exp`] needs from the element format, computed once per tensor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MxConsts {
    rule: MxRule,
    fmax: f32,
    emax: i32,
    /// Half an ulp of the element mantissa in f32 mantissa units ([`MxRule::Even`]).
    even_add: u32,
}

impl MxConsts {
    pub(crate) fn new(elem: Format, rule: MxRule) -> MxConsts {
        let fmax = elem.max();
        let m = u32::from(elem.man_bits.min(23));
        MxConsts {
            rule,
            fmax,
            emax: floor_log2(fmax),
            even_add: if m < 23 { 1u32 << (22 - m) } else { 0 },
        }
    }

    /// `emax` when the rule is [`MxRule::Floor`] and `emax ≥ 0`: then every subnormal amax
    /// gives the clamp −127, so the exponent is a few integer operations on the amax bits
    /// (see `simd::fused_block`).
    pub(crate) fn floor_emax(&self) -> Option<i32> {
        (self.rule == MxRule::Floor && self.emax >= 0).then_some(self.emax)
    }

    #[inline]
    pub(crate) fn shared_exp(&self, amax: f32) -> i32 {
        if !(amax > 0.0 && amax.is_finite()) {
            return 0;
        }
        let emax = self.emax;
        let e = match self.rule {
            MxRule::Floor => floor_log2(amax) - emax,
            MxRule::Ceil => floor_log2(amax) + i32::from(!is_pow2(amax)) - emax,
            MxRule::Even => {
                // Round the amax to the element's mantissa width (half up, carrying into the
                // exponent), then floor: torchao's `ScaleCalculationMode.EVEN`.
                let b = amax.to_bits();
                floor_log2(
                    f32::from_bits((b + self.even_add) & 0xff80_0000)
                        .max(f32::MIN_POSITIVE.min(amax)),
                ) - emax
            }
            MxRule::Rceil => {
                let r = amax / self.fmax;
                if r == 0.0 {
                    -127
                } else {
                    floor_log2(r) + i32::from(!is_pow2(r))
                }
            }
        };
        e.clamp(-127, 127)
    }
}

/// Quantize `data` (C order, `shape`) in place: scale, cast, unscale. Returns the telemetry.
///
/// # Panics
/// If the product of `shape` is not `data.len()`, or a block size is 0.
pub fn quantize(data: &mut [f32], shape: &[usize], spec: &QuantSpec) -> Stats {
    let (rows, cols) = view2d(shape, data.len());
    if data.is_empty() {
        return Stats {
            scale: 1.0,
            snr_db: f64::INFINITY,
            ..Stats::default()
        };
    }
    let mut cast = spec.cast;
    let fmt_max = cast.format.max();
    // (tile rows, tile cols) and how each tile's scale follows from its amax.
    let (tr, tc) = match spec.scaling {
        Scaling::None | Scaling::Tensor(_) => (rows, cols),
        Scaling::Row { .. } => (1, cols),
        Scaling::Col { .. } => (rows, 1),
        Scaling::Block {
            rows: br, cols: bc, ..
        } => {
            assert!(br > 0 && bc > 0, "quantize: block size must be positive");
            (br, bc)
        }
        Scaling::Mx { block, axis, .. } => {
            assert!(block > 0, "quantize: MX block size must be positive");
            match axis {
                crate::BlockAxis::Cols => (1, block),
                crate::BlockAxis::Rows => (block, 1),
            }
        }
        Scaling::Nvfp4 { axis } => match axis {
            crate::BlockAxis::Cols => (1, 16),
            crate::BlockAxis::Rows => (16, 1),
        },
    };
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
    let fused = match spec.scaling {
        _ if !periodic => None,
        Scaling::Mx { rule, .. } => Some(TileRule::Mx(MxConsts::new(cast.format, rule))),
        Scaling::Row { pow2 } | Scaling::Col { pow2 } | Scaling::Block { pow2, .. } => {
            Some(TileRule::Current { fmt_max, pow2 })
        }
        _ => None,
    };
    let needs_amax = fused.is_none()
        && !matches!(
            spec.scaling,
            Scaling::None | Scaling::Tensor(TensorScale::Given(_))
        );
    let amax_grid = if needs_amax {
        tile_amax(data, rows, cols, tr, tc, n_tr, n_tc)
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
        Scaling::Tensor(TensorScale::Current { pow2 })
        | Scaling::Row { pow2 }
        | Scaling::Col { pow2 }
        | Scaling::Block { pow2, .. } => amax_grid
            .iter()
            .map(|&a| {
                let s = current_scale(fmt_max, bits_to_f32(a), pow2);
                (s, 1.0 / s)
            })
            .collect(),
        Scaling::Mx { rule, .. } => amax_grid
            .iter()
            .map(|&a| {
                let e = mx_shared_exp(bits_to_f32(a), cast.format, rule);
                (exp2i(-e), exp2i(e))
            })
            .collect(),
        Scaling::Nvfp4 { .. } => {
            let amax = amax_grid.iter().copied().max().map_or(0.0, bits_to_f32);
            let s_global = if amax > 0.0 {
                amax / (448.0 * fmt_max)
            } else {
                1.0
            };
            tensor_scale = Some(1.0 / s_global);
            let e4m3 = Consts::new(&CastSpec::new(Format::FLOAT8_E4M3FN).with_saturate(true));
            amax_grid
                .iter()
                .map(|&a| {
                    let sb = bits_to_f32(a) / fmt_max / s_global;
                    let sb = f32::from_bits(crate::kernel::cast_one(sb, &e4m3, 0).0);
                    let dec = sb * s_global;
                    if dec > 0.0 && dec.is_finite() {
                        (1.0 / dec, dec)
                    } else {
                        (0.0, 0.0)
                    }
                })
                .collect()
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
                .map(|t| {
                    let row = &grid[t * n_tc..(t + 1) * n_tc];
                    (0..cols).map(|c| row[c / tc]).unzip()
                })
                .collect()
        });
    let layout = Layout {
        cols,
        tr,
        tc,
        n_tc,
        grid: &grid,
        percol: percol.as_deref(),
        none: spec.scaling == Scaling::None,
        fused,
    };

    let run = |(i, chunk): (usize, &mut [f32])| {
        dispatch(Tiled {
            data: chunk,
            start: i * CHUNK,
            layout: &layout,
            k: &k,
        })
    };
    let accs: Vec<Acc> = if data.len() >= PAR_MIN {
        data.par_chunks_mut(CHUNK).enumerate().map(run).collect()
    } else {
        data.chunks_mut(CHUNK).enumerate().map(run).collect()
    };
    let mut acc = Acc::default();
    for a in &accs {
        acc.merge(a);
    }
    let scale_report = if fused.is_some() {
        debug_assert_eq!(acc.tiles, (n_tr * n_tc) as u64);
        (acc.scale_sum / acc.tiles.max(1) as f64) as f32
    } else {
        scale_report
    };
    stats_from(&acc, scale_report)
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
    let items: Vec<(usize, Vec<u32>)> = data
        .par_chunks(rows_per_item * cols)
        .enumerate()
        .map(|(i, chunk)| {
            let r0 = i * rows_per_item;
            let t0 = r0 / tr;
            let r1 = r0 + chunk.len() / cols;
            let t1 = (r1 - 1) / tr;
            let mut part = vec![0u32; (t1 - t0 + 1) * n_tc];
            for (j, row) in chunk.chunks(cols).enumerate() {
                let t = (r0 + j) / tr - t0;
                dispatch(TileAmax {
                    row,
                    tc,
                    out: &mut part[t * n_tc..(t + 1) * n_tc],
                });
            }
            (t0, part)
        })
        .collect();
    let mut grid = vec![0u32; n_tr * n_tc];
    for (t0, part) in items {
        for (g, p) in grid[t0 * n_tc..].iter_mut().zip(part) {
            *g = (*g).max(p);
        }
    }
    let _ = rows;
    grid
}
