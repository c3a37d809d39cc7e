//! The core of fp8: tensor roles, the GEMM site scope API, the [`Recipe`] trait and its
//! link-time registry, the precision context a training loop installs, and the backend decorator
//! [`Precision`] that applies the active recipe to every GEMM of any burn model.
//!
//! See `docs/DESIGN.md` §3–§4 for the semantics.

pub mod context;
pub mod fused;
pub mod gemm;
pub mod precision;
pub mod recipe;
pub mod role;
pub mod sites;

pub use context::{Inspections, PrecisionContext, Telemetry};
pub use fused::{FusedAutodiffBackend, FusedOps};
pub use gemm::GemmOps;
pub use precision::{Precision, QuantizeBackend};
pub use recipe::{OptimizerPrecision, Recipe, RecipeError, RecipeKind};
pub use role::Role;
