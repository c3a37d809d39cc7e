//! Number formats for reduced-precision simulation, with no deep-learning dependency.
//!
//! Everything quantizes `f32` data in place: a value goes through
//! quantize → dequantize and comes back as the nearest (by the chosen rounding) value that the
//! target format can hold, after optional scaling. The semantics (formats, special values,
//! scaling formulas) are described in the repository's `docs/DESIGN.md` §2 and §4.
//!
//! The public surface is:
//! - [`Format`]: any `eXmY` with a special-value [`Family`]; named formats parse from the
//!   spellings of ml_dtypes / PyTorch (`float8_e4m3fn`, `bfloat16`, `e8m3`, …).
//! - [`CastSpec`]: format + [`Rounding`] + saturate + subnormals + stochastic seed.
//! - [`Scaling`] and [`QuantSpec`]: how scales are chosen (none, tensor, row, col, block, MX, NVFP4).
//! - [`quantize`]: the slice kernel, returning [`Stats`] (amax, scale, underflow, saturation, SNR).
//! - [`quantize_from`]: the same values read from a shared or strided [`Source`] into a fresh
//!   buffer in one pass, gathering only the statistics a [`Measure`] asks for.
//! - [`rng`]: SplitMix64, and [`cpu`]: the SIMD level of this CPU. They live here, in the lowest
//!   crate of the workspace, so that every crate (fp8-kernels, fp8-io, fp8-models, …) uses the
//!   same single copy: the random streams must agree bit for bit wherever they are drawn, and
//!   one `FP8_SIMD_LEVEL` switch must cap every hot loop of the process.
//!
//! # Layering
//!
//! Each module uses only modules on the lines above it (no import cycles):
//!
//! 1. `format` (bit layout, families, names), `stats` (the [`Stats`] record), [`rng`], [`cpu`]:
//!    leaves.
//! 2. `cast`: one element's cast on its bit pattern ([`CastSpec`], [`cast_scalar`], the
//!    stochastic-rounding hash).
//! 3. `scaling`: the scaling types and the rules that turn a tile's amax into its scale.
//! 4. `simd`: the vectorized loops (plain cast, tiled quantize with statistics, elementwise
//!    copy-and-cast, tile amax) and the fixed work-item size.
//! 5. `quantize` ([`cast_slice`], [`quantize`]) and then `source` ([`quantize_from`],
//!    [`quantize_into`]): the public slice API.

pub mod cpu;
pub mod rng;

mod cast;
mod format;
mod hadamard;
mod inspect;
mod quantize;
mod scaling;
mod simd;
mod source;
mod stats;

pub mod par;

pub use cast::{cast_scalar, CastSpec};
pub use format::{Family, Format, FormatError, Rounding};
pub use hadamard::{RandomHadamard, RHT_SIZE};
pub use inspect::{inspect, DynamicRangeBlocks, Inspection};
pub use quantize::{cast_slice, quantize};
pub use scaling::{floor_log2, mx_shared_exp, BlockAxis, MxRule, QuantSpec, Scaling, TensorScale};
pub use source::{quantize_from, quantize_into, Measure, Source, StridedView};
pub use stats::Stats;
