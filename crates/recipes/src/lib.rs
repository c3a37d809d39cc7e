//! The built-in precision recipes, registered with `inventory` under the names used in RON files.
//!
//! Every kind compiles its RON value into one [`Plan`]: per tensor role a cast and a scaling rule,
//! plus the site targeting (which roles, attention products on or off, per-site overrides by
//! glob). One engine then answers [`fp8_core::Recipe::spec`] for all kinds, so the kinds differ
//! only in data — TransformerEngine's "a recipe is a small declarative value".
//!
//! | kind | what it simulates |
//! |---|---|
//! | `fp32` | nothing quantized (the baseline) |
//! | `cast` | a plain cast of every GEMM input (e.g. `bfloat16`), no scaling |
//! | `bit_reduction` | the paper: mantissa truncation, reduced exponent range, no scaling |
//! | `delayed_scaling` | TE `DelayedScaling`: per-tensor scales from an amax history |
//! | `current_scaling` | per-tensor scales from the tensor's own amax |
//! | `mx` | OCP MX block scaling (MXFP8 …) |
//! | `blockwise` | DeepSeek-V3 tiles: 1×128 activations and gradients, 128×128 weights |
//! | `nvfp4` | NVFP4: E2M1 with E4M3 block scales and an FP32 tensor scale |
//! | `progressive` | the format changes with the step |

mod delayed;
mod kinds;
mod plan;
mod targeting;

pub use delayed::{AmaxAlgo, DelayedScaling};
pub use plan::{Plan, RoleRule, ScaleRule};
pub use targeting::{Override, Targeting};
