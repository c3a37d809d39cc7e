//! The [`Recipe`] trait and the link-time registry of recipe kinds.
//!
//! A recipe is a small declarative value (docs/DESIGN.md §7): given a GEMM site, a tensor role and the
//! optimizer step it answers with a [`QuantSpec`] or "leave this tensor in f32". Recipes that keep
//! state (amax histories) expose it through [`Recipe::state`] / [`Recipe::restore`] so that
//! checkpoints carry it.
//!
//! Recipe kinds register themselves with [`inventory`]: a crate that defines a kind writes
//!
//! ```ignore
//! inventory::submit! {
//!     fp8_core::RecipeKind {
//!         name: "my_recipe",
//!         description: "one line for `fp8 recipes`",
//!         build: |ron_text| Ok(Box::new(ron::from_str::<MyRecipe>(ron_text)?)),
//!     }
//! }
//! ```
//!
//! and any binary that links the crate (`use my_recipes as _;`) finds it by name.

use crate::Role;
use fp8_formats::{CastSpec, Measure, QuantSpec, RandomHadamard, Stats};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// The precision of AdamW's state and of the master weights.
///
/// After each AdamW step (computed in f32 from the stored moments), the moments are stored
/// quantized (`q = cast(m·s)·(1/s)` with the spec's scaling, e.g. one per-tensor scale as in
/// Fishman et al., arXiv 2409.12517: first moment E4M3, second E5M2) and the updated weights are
/// rounded to `master` (bf16 with nearest or stochastic rounding). `None` keeps f32.
///
/// With `expansion_group`, the moments are instead stored with COAT's dynamic range expansion
/// (Xi et al., arXiv 2410.19313): in every group of that many consecutive elements,
/// `sign(x)·|x|^k` with `k` chosen so the group's dynamic range becomes the format's, one scale
/// per group, and the inverse power after the cast (see `fp8_train::optim`). The moments'
/// specs then give only the element format and its rounding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OptimizerPrecision {
    pub first_moment: Option<QuantSpec>,
    pub second_moment: Option<QuantSpec>,
    pub master: Option<CastSpec>,
    #[serde(default)]
    pub expansion_group: Option<usize>,
}

/// How one training run quantizes its GEMMs.
pub trait Recipe: Send {
    /// The quantization for `role` of `site` at optimizer step `step`, or `None` to keep f32.
    fn spec(&self, site: &str, role: Role, step: u64) -> Option<QuantSpec>;

    /// Told what a cast did; delayed scaling records the amax here.
    ///
    /// In data-parallel training it is called once more per (site, role) before
    /// [`end_step`](Recipe::end_step), with the amax max-reduced over every rank and `count` 0
    /// (`PrecisionContext::observe_reduced_amaxes`).
    ///
    /// On steps that log no telemetry the casts measure only what
    /// [`observe_needs`](Recipe::observe_needs) asks for, and the fields of `stats` beyond it are
    /// not meaningful.
    fn observe(&mut self, _site: &str, _role: Role, _stats: &Stats) {}

    /// Which statistics [`observe`](Recipe::observe) reads, on every step: `Amax` for delayed
    /// scaling, `Nothing` for a recipe without scaling state (casts then skip the statistics
    /// pass on steps that log no telemetry). The default, `Full`, is always correct.
    fn observe_needs(&self) -> Measure {
        Measure::Full
    }

    /// Called once after each optimizer step's backward pass: update scales, roll histories.
    fn end_step(&mut self) {}

    /// Whether the backward GEMMs quantize their operands afresh from the high-precision
    /// tensors under [`Role::WDgrad`] (dgrad's `wᵀ`), [`Role::XWgrad`] (wgrad's `xᵀ`) and
    /// [`Role::DyWgrad`] (wgrad's `dy`), with [`Role::Dy`] as dgrad's `dy`; a role without a
    /// spec then stays in high precision. The default, `false`, reuses the forward-quantized
    /// `x̂`, `ŵ` and the once-quantized `dŷ` in both backward GEMMs.
    fn requantizes_backward(&self) -> bool {
        false
    }

    /// The random Hadamard transform applied to both operands of the wgrad GEMM of `site` at
    /// `step`, along the token axis and before their quantization (NVIDIA's NVFP4 recipe); `None`
    /// where the recipe does not quantize them itself (a layer kept in BF16). Only consulted
    /// when [`requantizes_backward`](Recipe::requantizes_backward) is true.
    fn wgrad_hadamard(&self, _site: &str, _step: u64) -> Option<RandomHadamard> {
        None
    }

    /// Told every GEMM site of the model before training starts (`ModelConfig::sites()`):
    /// overrides by layer range ("the last 8 blocks") need to know how many blocks there are.
    fn bind_sites(&mut self, _sites: &[String]) -> Result<(), RecipeError> {
        Ok(())
    }

    /// How the optimizer keeps its state and the master weights (a recipe's `optimizer:`
    /// section), or `None` for f32 AdamW moments and f32 master weights.
    fn optimizer(&self) -> Option<OptimizerPrecision> {
        None
    }

    /// The recipe's mutable state, for checkpoints. Stateless recipes return `Null`.
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Restore what [`Recipe::state`] returned.
    fn restore(&mut self, _state: serde_json::Value) -> Result<(), RecipeError> {
        Ok(())
    }
}

/// A registered recipe kind: its name in RON files (`kind: "..."`), a line for `fp8 recipes`,
/// and a constructor from the whole RON text of a recipe file.
pub struct RecipeKind {
    pub name: &'static str,
    pub description: &'static str,
    pub build: fn(&str) -> Result<Box<dyn Recipe>, ron::error::SpannedError>,
}

inventory::collect!(RecipeKind);

/// Every registered recipe kind, sorted by name.
pub fn kinds() -> Vec<&'static RecipeKind> {
    let mut v: Vec<_> = inventory::iter::<RecipeKind>.into_iter().collect();
    v.sort_by_key(|k| k.name);
    v
}

/// Why a recipe could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{origin}:{line}:{col}: {msg}")]
    Parse {
        origin: String,
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("{origin}: unknown recipe kind `{kind}`; registered kinds: {registered}")]
    UnknownKind {
        origin: String,
        kind: String,
        registered: String,
    },
    #[error("{origin}: {msg}")]
    Invalid { origin: String, msg: String },
    #[error("cannot read recipe file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("recipe state does not match this recipe: {0}")]
    State(String),
}

impl RecipeError {
    fn parse(origin: &str, e: &ron::error::SpannedError) -> Self {
        RecipeError::Parse {
            origin: origin.to_string(),
            line: e.position.line,
            col: e.position.col,
            msg: e.code.to_string(),
        }
    }
}

/// The RON dialect of every fp8 file: optional fields are written bare (`format: "e8m5"`, not
/// `format: Some("e8m5")`).
pub fn ron_options() -> ron::Options {
    ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
}

/// Build a recipe from RON text; `origin` names it in errors (a file path, say).
pub fn from_ron_str(text: &str, origin: &str) -> Result<Box<dyn Recipe>, RecipeError> {
    #[derive(Deserialize)]
    struct KindOnly {
        kind: String,
    }
    let head: KindOnly = ron_options()
        .from_str(text)
        .map_err(|e| RecipeError::parse(origin, &e))?;
    let kind = kinds()
        .into_iter()
        .find(|k| k.name == head.kind)
        .ok_or_else(|| RecipeError::UnknownKind {
            origin: origin.to_string(),
            kind: head.kind.clone(),
            registered: kinds()
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    (kind.build)(text).map_err(|e| RecipeError::parse(origin, &e))
}

/// Build a recipe from a RON file.
pub fn from_file(path: &Path) -> Result<Box<dyn Recipe>, RecipeError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Io {
        path: path.display().to_string(),
        source,
    })?;
    from_ron_str(&text, &path.display().to_string())
}

impl fmt::Debug for dyn Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<recipe>")
    }
}
