//! Telemetry gathered in the same pass as the cast.

use serde::{Deserialize, Serialize};

/// What one quantization did to a tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Largest finite |x| of the input (before scaling). NaN/inf inputs do not count.
    pub amax: f32,
    /// The scale the cast used (the tensor scale; for block schemes the mean of block scales).
    pub scale: f32,
    /// Non-zero finite inputs that became zero, as a fraction of all elements.
    pub underflow: f64,
    /// Finite inputs that saturated to ±max or overflowed to inf/NaN, as a fraction of all
    /// elements.
    pub saturation: f64,
    /// 10·log10(Σx² / Σ(x−q)²) over finite inputs; +inf when exact.
    pub snr_db: f64,
    /// Number of elements seen.
    pub count: u64,
}
