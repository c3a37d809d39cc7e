//! Scaling schemes: none, per tensor, per row/column, block tiles, OCP MX, NVFP4.

use crate::{CastSpec, Stats};
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
    Row { pow2: bool },
    /// One current-amax scale per column of the 2-D view.
    Col { pow2: bool },
    /// Tiles of `rows × cols` elements, one current-amax scale each (DeepSeek-V3: 1×128, 128×128).
    Block { rows: usize, cols: usize, pow2: bool },
    /// OCP MX: blocks of `block` along `axis`, E8M0 shared exponent chosen by `rule`.
    Mx { block: usize, rule: MxRule, axis: BlockAxis },
    /// NVFP4: 16-element blocks (along `axis`) of E2M1 with E4M3 block scales and an FP32
    /// tensor scale.
    Nvfp4 { axis: BlockAxis },
}

/// A cast plus its scaling: everything needed to quantize one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantSpec {
    pub cast: CastSpec,
    pub scaling: Scaling,
}

/// Quantize `data` (C order, `shape`) in place: scale, cast, unscale. Returns the telemetry.
pub fn quantize(data: &mut [f32], shape: &[usize], spec: &QuantSpec) -> Stats {
    let _ = (data, shape, spec);
    todo!("formats helper implements")
}
