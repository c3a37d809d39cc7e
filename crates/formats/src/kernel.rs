//! Element-wise cast kernels: f32 → format → f32, branch-free on the bit pattern.

use crate::{Format, Rounding};
use serde::{Deserialize, Serialize};

/// Everything an element-wise cast needs (no scaling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CastSpec {
    pub format: Format,
    pub rounding: Rounding,
    /// Seed for [`Rounding::Stochastic`]; ignored otherwise.
    pub seed: u64,
    /// Overflow clamps to ±max for every family (TE's "satfinite").
    pub saturate: bool,
    /// Keep subnormals; when false they flush to (signed) zero.
    pub subnormals: bool,
}

/// Cast one value (element index `index` seeds stochastic rounding).
pub fn cast_scalar(x: f32, spec: &CastSpec, index: u64) -> f32 {
    let _ = (x, spec, index);
    todo!("formats helper implements")
}

/// Cast a slice in place; `offset` is the element index of `data[0]` (for stochastic rounding).
pub fn cast_slice(data: &mut [f32], spec: &CastSpec, offset: u64) {
    let _ = (data, spec, offset);
    todo!("formats helper implements")
}
