//! Number formats for reduced-precision simulation, with no deep-learning dependency.
//!
//! Everything quantizes `f32` data in place: a value goes through
//! quantize → dequantize and comes back as the nearest (by the chosen rounding) value that the
//! target format can hold, after optional scaling. See `../shared/DESIGN.md` §2 and §4.
//!
//! The public surface is:
//! - [`Format`]: any `eXmY` with a special-value [`Family`]; named formats parse from the
//!   spellings of ml_dtypes / PyTorch (`float8_e4m3fn`, `bfloat16`, `e8m3`, …).
//! - [`CastSpec`]: format + [`Rounding`] + saturate + subnormals + stochastic seed.
//! - [`Scaling`] and [`QuantSpec`]: how scales are chosen (none, tensor, row, col, block, MX, NVFP4).
//! - [`quantize`]: the slice kernel, returning [`Stats`] (amax, scale, underflow, saturation, SNR).
//! - [`quantize_from`]: the same values read from a shared or strided [`Source`] into a fresh
//!   buffer in one pass, gathering only the statistics a [`Measure`] asks for.

mod format;
mod hadamard;
mod kernel;
mod scaling;
mod simd;
mod source;
mod stats;

pub use format::{Family, Format, FormatError, Rounding};
pub use hadamard::{RandomHadamard, RHT_SIZE};
pub use kernel::{cast_scalar, cast_slice, CastSpec};
pub use scaling::{
    floor_log2, mx_shared_exp, quantize, BlockAxis, MxRule, QuantSpec, Scaling, TensorScale,
};
pub use source::{quantize_from, quantize_into, Measure, Source, StridedView};
pub use stats::Stats;
