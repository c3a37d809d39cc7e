//! TransformerEngine-debug-style tensor statistics of one cast (nvidia-dlframework-inspect's
//! `LogTensorStats` / `LogFp8TensorStats`), for the recipe in use or for any other recipe on the
//! same tensor ("what would MXFP8's underflow be here?").
//!
//! Definitions follow `transformer_engine/debug/features/utils/stats_computation.py`:
//! - dynamic range: `log2(amax) − log2(amin)` with `amin` the smallest non-zero magnitude
//!   (`_compute_dynamic_range_top/_bottom`, lines 30–51); 0 for a tensor without non-zeros;
//! - largest per-block dynamic range over 1-D blocks of `size` consecutive elements of each row
//!   or 2-D `size × size` tiles, zero blocks counting 0 (`compute_max_blockwise_dynamic_range`,
//!   lines 54–111); ragged tail blocks count too (TE requires divisibility);
//! - MSE of the cast, `mean((x − q)²)` (`add_mse_stats`, `F.mse_loss`);
//! - underflow %: `100·(nonzero(x) − nonzero(q)) / numel` (`add_underflows_stats`);
//! - overflow %: the share of elements the cast saturated, in percent of all elements;
//! - min and max of the scale inverses (dequantization multipliers) over the tensor's tiles,
//!   zeros excluded from the min (`add_scale_inv_stats`, `nonzero_min`).
//!
//! Non-finite inputs are left out of every statistic but the element count.

use crate::quantize::quantize;
use crate::scaling::{tile_scale, Nvfp4Scales, QuantSpec, Scaling, TensorScale};
use crate::Stats;

/// Block geometry of the per-block dynamic range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DynamicRangeBlocks {
    pub size: usize,
    /// `false`: 1 × size blocks along each row; `true`: size × size tiles.
    pub two_d: bool,
}

/// The statistics of one cast of one tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Inspection {
    pub dynamic_range: f64,
    pub max_block_dynamic_range: f64,
    pub mse: f64,
    pub underflow_pct: f64,
    pub overflow_pct: f64,
    pub scale_inv_min: f32,
    pub scale_inv_max: f32,
    pub count: u64,
    /// The cast's own telemetry (amax, mean scale, …), as [`quantize`] returns it.
    pub cast: Stats,
}

fn log2_range(amax: f32, amin: f32) -> f64 {
    if amax > 0.0 {
        f64::from(amax).log2() - f64::from(amin).log2()
    } else {
        0.0
    }
}

/// `(amax, smallest non-zero)` of finite magnitudes; `(0, ∞)` when there is none.
fn extremes(it: impl Iterator<Item = f32>) -> (f32, f32) {
    it.filter(|v| v.is_finite() && *v != 0.0)
        .fold((0.0f32, f32::INFINITY), |(hi, lo), v| {
            (hi.max(v.abs()), lo.min(v.abs()))
        })
}

/// Quantize a copy of `x` (C order, `shape`) with `spec` and measure what the cast did.
///
/// # Panics
/// If the product of `shape` is not `x.len()` or a block size is 0.
pub fn inspect(
    x: &[f32],
    shape: &[usize],
    spec: &QuantSpec,
    blocks: DynamicRangeBlocks,
) -> Inspection {
    assert!(blocks.size > 0, "inspect: block size must be positive");
    let cols = shape.last().copied().unwrap_or(1).max(1);
    assert_eq!(
        shape.iter().product::<usize>(),
        x.len(),
        "inspect: shape does not match data"
    );
    let rows = x.len() / cols;
    let mut q = x.to_vec();
    let stats = quantize(&mut q, shape, spec);
    let n = x.len().max(1) as f64;

    let (hi, lo) = extremes(x.iter().copied());
    let (mut se, mut finite, mut nz_x, mut nz_q) = (0.0f64, 0u64, 0u64, 0u64);
    for (&a, &b) in x.iter().zip(&q) {
        if a.is_finite() {
            finite += 1;
            let d = f64::from(a) - f64::from(b);
            se += d * d;
            nz_x += u64::from(a != 0.0);
            nz_q += u64::from(b != 0.0);
        }
    }

    let (br, bc) = if blocks.two_d {
        (blocks.size, blocks.size)
    } else {
        (1, blocks.size)
    };
    let mut max_block = 0.0f64;
    for r0 in (0..rows).step_by(br) {
        for c0 in (0..cols).step_by(bc) {
            let cells = (r0..(r0 + br).min(rows))
                .flat_map(|r| (c0..(c0 + bc).min(cols)).map(move |c| x[r * cols + c]));
            let (bh, bl) = extremes(cells);
            max_block = max_block.max(log2_range(bh, bl));
        }
    }

    let (smin, smax) = scale_inv_range(x, rows, cols, spec);
    Inspection {
        dynamic_range: log2_range(hi, lo),
        max_block_dynamic_range: max_block,
        mse: se / finite.max(1) as f64,
        underflow_pct: 100.0 * nz_x.saturating_sub(nz_q) as f64 / n,
        overflow_pct: 100.0 * stats.saturation * finite as f64 / n,
        scale_inv_min: smin,
        scale_inv_max: smax,
        count: x.len() as u64,
        cast: stats,
    }
}

/// Min (non-zero) and max of the tiles' dequantization multipliers, from the same rules the cast
/// uses.
fn scale_inv_range(x: &[f32], rows: usize, cols: usize, spec: &QuantSpec) -> (f32, f32) {
    let (tr, tc) = spec.scaling.tile_shape(rows, cols);
    let (tr, tc) = (tr.min(rows).max(1), tc.min(cols).max(1));
    let tile_amax = |r0: usize, c0: usize| {
        let cells = (r0..(r0 + tr).min(rows))
            .flat_map(|r| (c0..(c0 + tc).min(cols)).map(move |c| x[r * cols + c]));
        extremes(cells).0
    };
    let mut amaxes = Vec::new();
    for r0 in (0..rows).step_by(tr) {
        for c0 in (0..cols).step_by(tc) {
            amaxes.push(tile_amax(r0, c0));
        }
    }
    let invs: Vec<f32> = match spec.scaling {
        Scaling::None => vec![1.0],
        Scaling::Tensor(TensorScale::Given(s)) => vec![1.0 / s],
        Scaling::Nvfp4 { .. } => {
            let amax = amaxes.iter().copied().fold(0.0f32, f32::max);
            let nv = Nvfp4Scales::new(spec.cast.format.max(), amax);
            amaxes.iter().map(|a| nv.block(a.to_bits()).1).collect()
        }
        other => {
            let rule = other
                .tile_rule(spec.cast.format)
                .expect("every other scheme has a per-tile rule");
            amaxes
                .iter()
                .map(|a| tile_scale(rule, a.to_bits()).1)
                .collect()
        }
    };
    let max = invs.iter().copied().fold(0.0f32, f32::max);
    let min = invs
        .iter()
        .copied()
        .filter(|v| *v != 0.0)
        .fold(f32::INFINITY, f32::min);
    (if min.is_finite() { min } else { 0.0 }, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockAxis, CastSpec, Format, MxRule};

    fn e4m3(scaling: Scaling) -> QuantSpec {
        QuantSpec {
            cast: CastSpec::new(Format::FLOAT8_E4M3FN).with_saturate(true),
            scaling,
        }
    }

    /// Worked by hand: x = [8, 0.5, 0, 2^-12, −1, 3, 0, 0.25] as two rows of four.
    #[test]
    fn hand_worked_statistics() {
        let x = [8.0, 0.5, 0.0, 2f32.powi(-12), -1.0, 3.0, 0.0, 0.25];
        let blocks = DynamicRangeBlocks {
            size: 4,
            two_d: false,
        };
        let s = inspect(&x, &[2, 4], &e4m3(Scaling::None), blocks);
        // log2(8) − log2(2^-12) = 3 + 12.
        assert_eq!(s.dynamic_range, 15.0);
        // Row 0: 8 / 2^-12 → 15; row 1: 3 / 0.25 → log2(12).
        assert_eq!(s.max_block_dynamic_range, 15.0);
        // 2^-12 is below E4M3's smallest subnormal 2^-9 / 2 → 0: one of six non-zeros lost.
        assert_eq!(s.underflow_pct, 100.0 / 8.0);
        assert_eq!(s.mse, (2f64.powi(-12)).powi(2) / 8.0);
        assert_eq!(
            (s.scale_inv_min, s.scale_inv_max, s.overflow_pct),
            (1.0, 1.0, 0.0)
        );
        // Per-tensor current scaling: 448/8 = 56 → inverse 1/56; 1000 saturates nowhere.
        let s = inspect(
            &x,
            &[2, 4],
            &e4m3(Scaling::Tensor(TensorScale::Current { pow2: false })),
            blocks,
        );
        assert_eq!(s.scale_inv_max, 1.0 / 56.0);
        // A given scale of 100 pushes 8 → 800 > 448: one element of eight overflows.
        let s = inspect(
            &x,
            &[2, 4],
            &e4m3(Scaling::Tensor(TensorScale::Given(100.0))),
            blocks,
        );
        assert_eq!(s.overflow_pct, 12.5);
    }

    /// MX per-block scale inverses: rows with amax 8 and 3 under RCEIL: 8/448 → 2^-5, 3/448 →
    /// 2^-7 (ceil of log2 0.0067 = −7.2 → −7).
    #[test]
    fn mx_scale_inverse_range_and_zero_tensor() {
        let x = [8.0, 0.5, 0.0, 1.0, -1.0, 3.0, 0.0, 0.25];
        let mx = e4m3(Scaling::Mx {
            block: 4,
            rule: MxRule::Rceil,
            axis: BlockAxis::Cols,
        });
        let s = inspect(
            &x,
            &[2, 4],
            &mx,
            DynamicRangeBlocks {
                size: 2,
                two_d: true,
            },
        );
        assert_eq!(
            (s.scale_inv_min, s.scale_inv_max),
            (2f32.powi(-7), 2f32.powi(-5))
        );
        // 2×2 tiles: [8, .5; −1, 3] → log2 16 = 4; [0, 1; 0, .25] → 2.
        assert_eq!(s.max_block_dynamic_range, 4.0);
        let z = inspect(
            &[0.0; 8],
            &[2, 4],
            &mx,
            DynamicRangeBlocks {
                size: 4,
                two_d: false,
            },
        );
        assert_eq!(
            (z.dynamic_range, z.max_block_dynamic_range, z.underflow_pct),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(z.count, 8);
    }
}
