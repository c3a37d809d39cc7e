//! A third-party recipe: `stochastic_e5m2`, stochastic rounding to E5M2 on every GEMM input,
//! except that the first `warmup` steps stay in f32.
//!
//! Three things make a recipe: a config type that deserializes from RON, an implementation of
//! [`fp8_core::Recipe`], and an `inventory::submit!` of a [`fp8_core::RecipeKind`]. Any binary
//! that links this crate (`use custom_recipe as _;`) then finds the kind by name.

use fp8_core::{Recipe, RecipeKind, Role};
use fp8_formats::{CastSpec, QuantSpec, Rounding, Scaling};
use serde::Deserialize;

/// The RON value: `(kind: "stochastic_e5m2", warmup: 10, seed: 1)`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StochasticE5m2 {
    #[allow(dead_code)]
    kind: String,
    /// Steps kept in f32 before quantization starts.
    #[serde(default)]
    pub warmup: u64,
    #[serde(default)]
    pub seed: u64,
}

impl Recipe for StochasticE5m2 {
    fn spec(&self, _site: &str, role: Role, step: u64) -> Option<QuantSpec> {
        if step < self.warmup || !matches!(role, Role::X | Role::W | Role::Dy) {
            return None;
        }
        Some(QuantSpec {
            cast: CastSpec {
                format: "float8_e5m2".parse().expect("named format"),
                rounding: Rounding::Stochastic,
                // Fresh noise each step: the kernel adds the element index.
                seed: self.seed.wrapping_add(step.wrapping_mul(0x9e37_79b9)),
                saturate: true,
                subnormals: true,
            },
            scaling: Scaling::None,
        })
    }
}

inventory::submit! {
    RecipeKind {
        name: "stochastic_e5m2",
        description: "example crate: stochastic rounding to E5M2 after a f32 warm-up",
        build: |text| Ok(Box::new(ron::from_str::<StochasticE5m2>(text)?)),
    }
}
