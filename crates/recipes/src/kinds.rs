//! The RON schema of each built-in kind and its compilation into a [`Plan`].
//!
//! Every field has a default, so a file names only what differs from the reference recipe
//! (TransformerEngine's defaults for the scaled kinds, the paper's protocol for `bit_reduction`).
//! Unknown fields are errors, and bad values name the field and what it allows.

use crate::delayed::{AmaxAlgo, DelayedScaling};
use crate::plan::{Plan, RhtRule, RoleRule, ScaleRule};
use crate::targeting::{Override, Targeting};
use fp8_core::{OptimizerPrecision, Recipe, RecipeKind, Role};
use fp8_formats::{
    BlockAxis, CastSpec, Family, Format, MxRule, QuantSpec, Rounding, Scaling, TensorScale,
};
use serde::{de, Deserialize, Deserializer};
use std::collections::BTreeMap;

/// A format name in a RON file.
#[derive(Clone, Copy, Debug)]
struct FormatName(Format);

impl<'de> Deserialize<'de> for FormatName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(FormatName).map_err(de::Error::custom)
    }
}

/// A rounding name in a RON file: `nearest`, `zero`, `away` or `stochastic`.
#[derive(Clone, Copy, Debug)]
struct RoundingName(Rounding);

impl<'de> Deserialize<'de> for RoundingName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(RoundingName).map_err(de::Error::custom)
    }
}

/// `hybrid` (E4M3 forward, E5M2 gradients, as TE's `Format.HYBRID`) or one format for all roles.
#[derive(Clone, Copy, Debug)]
enum Formats {
    Hybrid,
    All(Format),
}

impl<'de> Deserialize<'de> for Formats {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.eq_ignore_ascii_case("hybrid") {
            return Ok(Formats::Hybrid);
        }
        s.parse()
            .map(Formats::All)
            .map_err(|e| de::Error::custom(format!("{e}, or `hybrid`")))
    }
}

impl Formats {
    fn for_role(self, role: Role) -> Format {
        match self {
            Formats::All(f) => f,
            Formats::Hybrid if !role.is_gradient() => {
                "float8_e4m3fn".parse().expect("named format")
            }
            Formats::Hybrid => "float8_e5m2".parse().expect("named format"),
        }
    }
}

fn default_roles() -> Vec<Role> {
    vec![Role::X, Role::W, Role::Dy]
}
fn yes() -> bool {
    true
}
fn nearest() -> RoundingName {
    RoundingName(Rounding::NearestEven)
}
fn toward_zero() -> RoundingName {
    RoundingName(Rounding::TowardZero)
}
fn hybrid() -> Formats {
    Formats::Hybrid
}
fn e4m3() -> Formats {
    Formats::All("float8_e4m3fn".parse().expect("named format"))
}

/// Fields every kind shares: which tensors, and how elements round.
macro_rules! recipe_struct {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty,)* } rounding = $rd:literal, saturate = $sat:literal) => {
        $(#[$m])*
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            #[allow(dead_code)]
            kind: String,
            $($(#[$fm])* $f: $t,)*
            /// Roles quantized (default `[x, w, dy]`).
            #[serde(default = "default_roles")]
            roles: Vec<Role>,
            /// Quantize the attention products `*.attn.scores` and `*.attn.values`.
            #[serde(default = "yes")]
            attention: bool,
            /// Per-site overrides by glob; the first match wins.
            #[serde(default)]
            overrides: Vec<Override>,
            #[serde(default = $rd)]
            rounding: RoundingName,
            #[serde(default = $sat)]
            saturate: bool,
            #[serde(default = "yes")]
            subnormals: bool,
            /// Seed for stochastic rounding.
            #[serde(default)]
            seed: u64,
            /// Per-role rules that replace parts of the kind's rule for those roles (and add
            /// the roles if the kind does not quantize them).
            #[serde(default)]
            role_rules: Vec<RoleRuleFile>,
            /// Quantize each backward GEMM operand afresh from the high-precision tensor
            /// (default: when a backward copy role `x_wgrad`, `w_dgrad` or `dy_wgrad` is
            /// named in `roles` or `role_rules`).
            #[serde(default)]
            requantize: Option<bool>,
            /// The precision of AdamW's moments and of the master weights.
            #[serde(default)]
            optimizer: Option<OptimizerFile>,
        }

        impl $name {
            fn common(&self) -> Common {
                Common {
                    roles: self.roles.clone(),
                    attention: self.attention,
                    overrides: self.overrides.clone(),
                    rounding: self.rounding.0,
                    saturate: self.saturate,
                    subnormals: self.subnormals,
                    seed: self.seed,
                    role_rules: self.role_rules.clone(),
                    requantize: self.requantize,
                    optimizer: self.optimizer.clone(),
                }
            }
        }
    };
}

fn saturate_on() -> bool {
    true
}
fn saturate_off() -> bool {
    false
}

struct Common {
    roles: Vec<Role>,
    attention: bool,
    overrides: Vec<Override>,
    rounding: Rounding,
    saturate: bool,
    subnormals: bool,
    seed: u64,
    role_rules: Vec<RoleRuleFile>,
    requantize: Option<bool>,
    optimizer: Option<OptimizerFile>,
}

/// The `optimizer:` section: formats of AdamW's moments (stored with one current scale per
/// tensor, `fmt_max / amax`, unless `moment_scaling: none` or `expand(G)`) and of the master
/// weights. Defaults keep everything in f32.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptimizerFile {
    #[serde(default = "f32_name")]
    first_moment: FormatName,
    #[serde(default = "f32_name")]
    second_moment: FormatName,
    #[serde(default)]
    moment_scaling: MomentScaling,
    #[serde(default = "f32_name")]
    master_weights: FormatName,
    #[serde(default = "nearest")]
    master_rounding: RoundingName,
    /// Seed of the master weights' stochastic rounding.
    #[serde(default)]
    seed: u64,
}

fn f32_name() -> FormatName {
    FormatName(Format::FLOAT32)
}

/// `tensor` (one current scale per tensor, Fishman et al.), `none` (a plain cast) or
/// `expand(G)`: COAT's dynamic range expansion with one scale per group of `G` consecutive
/// elements (Xi et al., arXiv 2410.19313; the paper quantizes per group of 128).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum MomentScaling {
    #[default]
    Tensor,
    None,
    Expand(usize),
}

impl OptimizerFile {
    fn compile(&self) -> Result<OptimizerPrecision, String> {
        let moment = |name: &str, f: FormatName| -> Result<Option<QuantSpec>, String> {
            let f = f.0;
            if f == Format::FLOAT32 {
                return Ok(None);
            }
            if f.family == Family::E8m0 {
                return Err(format!(
                    "field `optimizer.{name}`: {f} has no zero and no sign, so it cannot hold \
                     a moment; use a format such as float8_e4m3fn or float8_e5m2"
                ));
            }
            Ok(Some(QuantSpec {
                cast: CastSpec::new(f).with_saturate(true),
                scaling: match self.moment_scaling {
                    MomentScaling::Tensor => Scaling::Tensor(TensorScale::Current { pow2: false }),
                    // The expansion scales each group itself.
                    MomentScaling::None | MomentScaling::Expand(_) => Scaling::None,
                },
            }))
        };
        let master = match self.master_weights.0 {
            f if f == Format::FLOAT32 => None,
            f if f == Format::BFLOAT16 => Some(CastSpec {
                format: f,
                rounding: self.master_rounding.0,
                seed: self.seed,
                saturate: false,
                subnormals: true,
            }),
            f => {
                return Err(format!(
                    "field `optimizer.master_weights`: {f} is not allowed; master weights are \
                     float32 or bfloat16"
                ))
            }
        };
        let expansion_group = match self.moment_scaling {
            MomentScaling::Expand(0) => {
                return Err(
                    "field `optimizer.moment_scaling`: expand(0) has no elements per \
                            group; use a group size of at least 1, e.g. expand(128)"
                        .into(),
                )
            }
            MomentScaling::Expand(g) => Some(g),
            _ => None,
        };
        Ok(OptimizerPrecision {
            first_moment: moment("first_moment", self.first_moment)?,
            second_moment: moment("second_moment", self.second_moment)?,
            master,
            expansion_group,
        })
    }
}

/// One entry of `role_rules`: what changes for `roles`. Unset fields keep the kind's choice
/// (or, for a role the kind does not quantize, nearest-even E4M3 with no scaling).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleRuleFile {
    roles: Vec<Role>,
    #[serde(default)]
    format: Option<FormatName>,
    #[serde(default)]
    scaling: Option<ScalingFile>,
    #[serde(default)]
    rounding: Option<RoundingName>,
    #[serde(default)]
    saturate: Option<bool>,
    /// Keep these roles in high precision.
    #[serde(default)]
    keep: bool,
}

/// A scaling in a RON file.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ScalingFile {
    /// Straight cast.
    None,
    /// One current-amax scale per tensor (`fmt_max / amax`).
    Tensor {
        #[serde(default)]
        pow2: bool,
    },
    /// TE delayed scaling (only in a `delayed_scaling` recipe).
    Delayed,
    /// One scale per row of the `[rows, cols]` view.
    Row {
        #[serde(default)]
        pow2: bool,
    },
    /// One scale per column.
    Col {
        #[serde(default)]
        pow2: bool,
    },
    /// `rows × cols` tiles.
    Block {
        rows: usize,
        cols: usize,
        #[serde(default)]
        pow2: bool,
    },
    /// OCP MX blocks with E8M0 scales: `block: 32` (1-D, along `axis`) or a tile
    /// `block: (32, 32)` (TE's 2-D MXFP8 weight blocks).
    Mx {
        #[serde(default = "mx_block_shape")]
        block: BlockShape,
        #[serde(default)]
        rule: MxRuleName,
        #[serde(default)]
        axis: Option<AxisName>,
    },
    /// NVFP4 blocks: `block: 16` (1-D, along `axis`, the default) or `block: (16, 16)` (TE's 2-D
    /// weight tiles).
    Nvfp4 {
        #[serde(default)]
        block: Option<BlockShape>,
        #[serde(default)]
        axis: Option<AxisName>,
    },
}

fn mx_block_shape() -> BlockShape {
    BlockShape::Len(32)
}

/// A block in a RON file: a length `K` (a 1-D block along the scaling's `axis`) or a tile
/// `(rows, cols)` of the `[rows, cols]` view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockShape {
    Len(usize),
    Tile(usize, usize),
}

impl<'de> Deserialize<'de> for BlockShape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = BlockShape;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a block length such as 16, or a tile (rows, cols) such as (16, 16)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<BlockShape, E> {
                usize::try_from(v)
                    .map(BlockShape::Len)
                    .map_err(|_| E::custom(format!("block length {v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<BlockShape, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("block length {v} is negative")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<BlockShape, A::Error> {
                let r: usize = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let c: usize = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<usize>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(BlockShape::Tile(r, c))
            }
        }
        d.deserialize_any(V)
    }
}

impl std::fmt::Display for BlockShape {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            BlockShape::Len(k) => write!(f, "{k}"),
            BlockShape::Tile(r, c) => write!(f, "({r}, {c})"),
        }
    }
}

impl BlockShape {
    /// The block length and axis of a block scheme whose tiles may be `1 × K`, `K × 1` or, when
    /// `square` allows it, `K × K`. A length takes `axis` (default along the columns); a tile
    /// names its own orientation, so `axis` with a tile is an error. `what` names the scheme
    /// and the shapes it takes, for the error.
    fn resolve(self, axis: Option<AxisName>, what: &str) -> Result<(usize, BlockAxis), String> {
        let bad = || format!("field `role_rules.scaling.block`: {self} is not a block {what}");
        let (k, axis) = match (self, axis) {
            (BlockShape::Len(k), a) => (k, a.unwrap_or_default().into()),
            (BlockShape::Tile(..), Some(_)) => {
                return Err(format!(
                    "field `role_rules.scaling.axis`: block {self} is a tile and names its own \
                     orientation; give `axis` only with a block length"
                ))
            }
            (BlockShape::Tile(1, k), None) => (k, BlockAxis::Cols),
            (BlockShape::Tile(k, 1), None) => (k, BlockAxis::Rows),
            (BlockShape::Tile(r, c), None) if r == c => (r, BlockAxis::Square),
            (BlockShape::Tile(..), None) => return Err(bad()),
        };
        if k == 0 {
            return Err(bad());
        }
        Ok((k, axis))
    }
}

/// `cols` (blocks within a row) or `rows` (blocks down a column).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AxisName {
    #[default]
    Cols,
    Rows,
}

impl From<AxisName> for BlockAxis {
    fn from(a: AxisName) -> Self {
        match a {
            AxisName::Cols => BlockAxis::Cols,
            AxisName::Rows => BlockAxis::Rows,
        }
    }
}

impl ScalingFile {
    fn compile(self) -> Result<ScaleRule, String> {
        let positive = |v: usize, what: &str| {
            if v == 0 {
                Err(format!(
                    "field `role_rules.scaling`: {what} must be at least 1"
                ))
            } else {
                Ok(())
            }
        };
        Ok(match self {
            ScalingFile::None => ScaleRule::None,
            ScalingFile::Delayed => ScaleRule::Delayed,
            ScalingFile::Tensor { pow2 } => {
                ScaleRule::Fixed(Scaling::Tensor(TensorScale::Current { pow2 }))
            }
            ScalingFile::Row { pow2 } => ScaleRule::Fixed(Scaling::Row { pow2 }),
            ScalingFile::Col { pow2 } => ScaleRule::Fixed(Scaling::Col { pow2 }),
            ScalingFile::Block { rows, cols, pow2 } => {
                positive(rows, "`rows`")?;
                positive(cols, "`cols`")?;
                ScaleRule::Fixed(Scaling::Block { rows, cols, pow2 })
            }
            ScalingFile::Mx { block, rule, axis } => {
                let (block, axis) = block.resolve(
                    axis,
                    "MX takes: a length K ≥ 1 (OCP MX uses 32), (1, K), (K, 1) or a square \
                     tile (K, K) such as TE's 2-D MXFP8 weight blocks (32, 32)",
                )?;
                ScaleRule::Fixed(Scaling::Mx {
                    block,
                    rule: rule.into(),
                    axis,
                })
            }
            ScalingFile::Nvfp4 { block, axis } => {
                let what = "NVFP4 takes: 16, (1, 16), (16, 1) or TE's 2-D weight tile (16, 16)";
                let (k, axis) = block.unwrap_or(BlockShape::Len(16)).resolve(axis, what)?;
                if k != 16 {
                    return Err(format!(
                        "field `role_rules.scaling.block`: {} is not a block {what}",
                        block.unwrap_or(BlockShape::Len(k))
                    ));
                }
                ScaleRule::Fixed(Scaling::Nvfp4 { axis })
            }
        })
    }
}

/// The backward operand copies: naming one asks for requantized backward GEMMs.
fn is_copy(role: Role) -> bool {
    matches!(role, Role::XWgrad | Role::WDgrad | Role::DyWgrad)
}

impl Common {
    /// One rule per role from a format choice and a per-role scaling.
    fn plan(
        &self,
        formats: impl Fn(Role) -> Format,
        scale: impl Fn(Role) -> ScaleRule,
        rounding: impl Fn(Role) -> Rounding,
    ) -> Result<Plan, String> {
        let rules: BTreeMap<Role, RoleRule> = self
            .roles
            .iter()
            .map(|&role| {
                let cast = CastSpec {
                    format: formats(role),
                    rounding: rounding(role),
                    seed: self.seed,
                    saturate: self.saturate,
                    subnormals: self.subnormals,
                };
                (
                    role,
                    RoleRule {
                        cast,
                        scale: scale(role),
                    },
                )
            })
            .collect();
        let mut rules = rules;
        for rr in &self.role_rules {
            if rr.roles.is_empty() {
                return Err("field `role_rules.roles`: name at least one role".into());
            }
            let scale = rr.scaling.map(ScalingFile::compile).transpose()?;
            for &role in &rr.roles {
                if rr.keep {
                    rules.remove(&role);
                    continue;
                }
                let rule = rules.entry(role).or_insert(RoleRule {
                    cast: CastSpec {
                        format: "float8_e4m3fn".parse().expect("named format"),
                        rounding: Rounding::NearestEven,
                        seed: self.seed,
                        saturate: self.saturate,
                        subnormals: self.subnormals,
                    },
                    scale: ScaleRule::None,
                });
                if let Some(f) = rr.format {
                    rule.cast.format = f.0;
                }
                if let Some(r) = rr.rounding {
                    rule.cast.rounding = r.0;
                }
                if let Some(sat) = rr.saturate {
                    rule.cast.saturate = sat;
                }
                if let Some(sc) = scale {
                    rule.scale = sc;
                }
            }
        }
        let named_copy = self.roles.iter().copied().any(is_copy)
            || self
                .role_rules
                .iter()
                .any(|r| r.roles.iter().copied().any(is_copy));
        Ok(Plan {
            rules,
            targeting: Targeting::new(self.attention, &self.overrides)?,
            schedule: Vec::new(),
            delayed: None,
            requantize: self.requantize.unwrap_or(named_copy),
            rht: None,
            optimizer: self
                .optimizer
                .as_ref()
                .map(OptimizerFile::compile)
                .transpose()?,
        })
    }

    fn uniform(&self, formats: Formats, scale: impl Fn(Role) -> ScaleRule) -> Result<Plan, String> {
        self.plan(|r| formats.for_role(r), scale, |_| self.rounding)
    }
}

/// The axis a role's blocks run along: the reduction axis of the GEMM it feeds. Inputs `x` are
/// `[…, K]` (blocks along columns); weights are `[K, N]` (blocks down rows); `dy` is `[…, N]` and
/// feeds `dx = dy·wᵀ`, which reduces over its columns.
///
/// The backward copies run along their own GEMM's reduction axis: `x_wgrad` and `dy_wgrad`
/// (`dw = xᵀ·dy` reduces over the tokens) down the rows, `w_dgrad` (`dx = dy·wᵀ` reduces over
/// `N`) along the columns.
fn reduction_axis(role: Role) -> BlockAxis {
    match role {
        Role::W | Role::Dw | Role::XWgrad | Role::DyWgrad => BlockAxis::Rows,
        _ => BlockAxis::Cols,
    }
}

recipe_struct! {
    /// `fp32`: nothing is quantized.
    Fp32File {} rounding = "nearest", saturate = "saturate_off"
}

recipe_struct! {
    /// `cast`: a plain cast to `format` (e.g. `bfloat16`), no scaling.
    CastFile { format: FormatName, } rounding = "nearest", saturate = "saturate_off"
}

recipe_struct! {
    /// `bit_reduction`: the paper's simulation — truncation, reduced exponent range (values
    /// beyond it clamp), no scaling, every GEMM input forward and backward.
    BitReductionFile { format: FormatName, } rounding = "toward_zero", saturate = "saturate_on"
}

recipe_struct! {
    /// `delayed_scaling`: TE `DelayedScaling` (defaults HYBRID, history 1024, `max`, margin 0).
    DelayedFile {
        #[serde(default = "hybrid")] format: Formats,
        #[serde(default = "default_history")] history: usize,
        #[serde(default)] algo: AmaxAlgo,
        #[serde(default)] margin: i32,
    } rounding = "nearest", saturate = "saturate_on"
}

fn default_history() -> usize {
    1024
}

recipe_struct! {
    /// `current_scaling`: per-tensor scale from the tensor's own amax.
    CurrentFile {
        #[serde(default = "hybrid")] format: Formats,
        #[serde(default)] pow2: bool,
    } rounding = "nearest", saturate = "saturate_on"
}

recipe_struct! {
    /// `mx`: OCP MX block scaling with E8M0 shared exponents.
    MxFile {
        #[serde(default = "e4m3")] format: Formats,
        #[serde(default = "mx_block")] block: usize,
        #[serde(default)] rule: MxRuleName,
    } rounding = "nearest", saturate = "saturate_on"
}

fn mx_block() -> usize {
    32
}

/// `floor` (OCP v1.0), `rceil`, `ceil` or `even`.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum MxRuleName {
    #[default]
    Floor,
    Rceil,
    Ceil,
    Even,
}

impl From<MxRuleName> for MxRule {
    fn from(r: MxRuleName) -> Self {
        match r {
            MxRuleName::Floor => MxRule::Floor,
            MxRuleName::Rceil => MxRule::Rceil,
            MxRuleName::Ceil => MxRule::Ceil,
            MxRuleName::Even => MxRule::Even,
        }
    }
}

recipe_struct! {
    /// `blockwise`: DeepSeek-V3 tiles — 1×`tile` for activations and gradients, `tile`×`tile`
    /// for weights, one scale per tile.
    BlockwiseFile {
        #[serde(default = "e4m3")] format: Formats,
        #[serde(default = "tile")] tile: usize,
        #[serde(default)] pow2: bool,
    } rounding = "nearest", saturate = "saturate_on"
}

fn tile() -> usize {
    128
}

recipe_struct! {
    /// `nvfp4`: E2M1 elements in 16-element blocks with E4M3 block scales and an FP32 tensor
    /// scale. Gradients round stochastically by default (`grad_rounding`), as NVIDIA's recipe does.
    Nvfp4File {
        #[serde(default = "stochastic")] grad_rounding: RoundingName,
        #[serde(default)] rht: bool,
        #[serde(default)] rht_signs: RhtSigns,
        #[serde(default)] rht_seed: u64,
        #[serde(default)] rht_resample_every: u64,
    } rounding = "nearest", saturate = "saturate_on"
}

/// `te` (TransformerEngine's fixed sign vector) or `seeded` (drawn from `rht_seed`).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RhtSigns {
    #[default]
    Te,
    Seeded,
}

fn stochastic() -> RoundingName {
    RoundingName(Rounding::Stochastic)
}

recipe_struct! {
    /// `progressive`: the format changes with the step. Either explicit `phases`
    /// (`[(from_step: 0, format: "bfloat16"), (from_step: 500, format: "e8m5")]`) or
    /// `drop_bit_every: K` from `start` (default `e8m7`) down to `min_mantissa` bits.
    ProgressiveFile {
        #[serde(default)] phases: Vec<Phase>,
        #[serde(default)] drop_bit_every: Option<u64>,
        #[serde(default)] start: Option<FormatName>,
        #[serde(default = "min_mantissa")] min_mantissa: u8,
    } rounding = "toward_zero", saturate = "saturate_on"
}

fn min_mantissa() -> u8 {
    3
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Phase {
    from_step: u64,
    format: FormatName,
}

/// Turn a validation message into the error type kinds return; RON has already placed parse
/// errors, so these point at the file's start.
fn invalid(msg: String) -> ron::error::SpannedError {
    ron::error::SpannedError {
        code: ron::Error::Message(msg),
        position: ron::error::Position { line: 1, col: 1 },
    }
}

type Built = Result<Box<dyn Recipe>, ron::error::SpannedError>;

fn boxed(plan: Result<Plan, String>) -> Built {
    let plan = plan.and_then(|p| {
        let delayed_rule = p.rules.values().any(|r| r.scale == ScaleRule::Delayed);
        if delayed_rule && p.delayed.is_none() {
            return Err(
                "field `role_rules.scaling`: `delayed` needs kind `delayed_scaling`, \
                 which keeps the amax histories"
                    .into(),
            );
        }
        Ok(p)
    });
    plan.map(|p| Box::new(p) as Box<dyn Recipe>)
        .map_err(invalid)
}

fn build_fp32(text: &str) -> Built {
    let f: Fp32File = fp8_core::recipe::ron_options().from_str(text)?;
    let mut c = f.common();
    c.roles.clear();
    boxed(c.uniform(Formats::All(Format::FLOAT32), |_| ScaleRule::None))
}

fn build_cast(text: &str) -> Built {
    let f: CastFile = fp8_core::recipe::ron_options().from_str(text)?;
    boxed(
        f.common()
            .uniform(Formats::All(f.format.0), |_| ScaleRule::None),
    )
}

fn build_bit_reduction(text: &str) -> Built {
    let f: BitReductionFile = fp8_core::recipe::ron_options().from_str(text)?;
    boxed(
        f.common()
            .uniform(Formats::All(f.format.0), |_| ScaleRule::None),
    )
}

fn build_delayed(text: &str) -> Built {
    let f: DelayedFile = fp8_core::recipe::ron_options().from_str(text)?;
    if f.history == 0 {
        return Err(invalid("field `history`: must be at least 1".into()));
    }
    let mut plan = f.common().uniform(f.format, |_| ScaleRule::Delayed);
    if let Ok(p) = &mut plan {
        p.delayed = Some(DelayedScaling::new(f.history, f.algo, f.margin));
    }
    boxed(plan)
}

fn build_current(text: &str) -> Built {
    let f: CurrentFile = fp8_core::recipe::ron_options().from_str(text)?;
    let scaling = Scaling::Tensor(TensorScale::Current { pow2: f.pow2 });
    boxed(f.common().uniform(f.format, |_| ScaleRule::Fixed(scaling)))
}

fn build_mx(text: &str) -> Built {
    let f: MxFile = fp8_core::recipe::ron_options().from_str(text)?;
    if f.block == 0 {
        return Err(invalid(
            "field `block`: must be at least 1 (OCP MX uses 32)".into(),
        ));
    }
    let rule = f.rule.into();
    boxed(f.common().uniform(f.format, |role| {
        ScaleRule::Fixed(Scaling::Mx {
            block: f.block,
            rule,
            axis: reduction_axis(role),
        })
    }))
}

fn build_blockwise(text: &str) -> Built {
    let f: BlockwiseFile = fp8_core::recipe::ron_options().from_str(text)?;
    if f.tile == 0 {
        return Err(invalid(
            "field `tile`: must be at least 1 (DeepSeek-V3 uses 128)".into(),
        ));
    }
    let (t, pow2) = (f.tile, f.pow2);
    boxed(f.common().uniform(f.format, |role| {
        let (rows, cols) = match role {
            Role::W | Role::Dw | Role::WDgrad => (t, t),
            Role::XWgrad | Role::DyWgrad => (t, 1),
            _ => (1, t),
        };
        ScaleRule::Fixed(Scaling::Block { rows, cols, pow2 })
    }))
}

fn build_nvfp4(text: &str) -> Built {
    let f: Nvfp4File = fp8_core::recipe::ron_options().from_str(text)?;
    let c = f.common();
    let e2m1: Format = "float4_e2m1fn".parse().expect("named format");
    let plan = c.plan(
        |_| e2m1,
        |role| {
            ScaleRule::Fixed(Scaling::Nvfp4 {
                axis: reduction_axis(role),
            })
        },
        |role| {
            if role.is_gradient() {
                f.grad_rounding.0
            } else {
                c.rounding
            }
        },
    );
    let plan = plan.and_then(|mut p| {
        if f.rht {
            if !p.requantize {
                return Err(
                    "field `rht`: the Hadamard transform applies to the wgrad GEMM's \
                     own copies of x and dy; add `x_wgrad` and `dy_wgrad` to `roles`"
                        .into(),
                );
            }
            p.rht = Some(match f.rht_signs {
                RhtSigns::Te => RhtRule::Te,
                RhtSigns::Seeded => RhtRule::Seeded {
                    seed: f.rht_seed,
                    every: f.rht_resample_every,
                },
            });
        }
        Ok(p)
    });
    boxed(plan)
}

fn build_progressive(text: &str) -> Built {
    let f: ProgressiveFile = fp8_core::recipe::ron_options().from_str(text)?;
    let mut schedule: Vec<(u64, Format)> =
        f.phases.iter().map(|p| (p.from_step, p.format.0)).collect();
    if let Some(every) = f.drop_bit_every {
        if !schedule.is_empty() {
            return Err(invalid(
                "fields `phases` and `drop_bit_every` exclude each other".into(),
            ));
        }
        if every == 0 {
            return Err(invalid("field `drop_bit_every`: must be at least 1".into()));
        }
        let start = f
            .start
            .map_or_else(|| "e8m7".parse().expect("format"), |s| s.0);
        let mut fmt = start;
        let mut step = 0;
        loop {
            schedule.push((step, fmt));
            if fmt.man_bits <= f.min_mantissa {
                break;
            }
            fmt.man_bits -= 1;
            step += every;
        }
    }
    if schedule.is_empty() {
        return Err(invalid("set `phases` or `drop_bit_every`".into()));
    }
    schedule.sort_by_key(|(s, _)| *s);
    let first = schedule[0].1;
    let mut plan = f.common().uniform(Formats::All(first), |_| ScaleRule::None);
    if let Ok(p) = &mut plan {
        p.schedule = schedule;
    }
    boxed(plan)
}

inventory::submit! { RecipeKind { name: "fp32", description: "nothing quantized: the f32 baseline", build: build_fp32 } }
inventory::submit! { RecipeKind { name: "cast", description: "plain cast of GEMM inputs to one format (e.g. bfloat16), no scaling", build: build_cast } }
inventory::submit! { RecipeKind { name: "bit_reduction", description: "the paper's simulation: mantissa truncation and reduced exponent range, no scaling", build: build_bit_reduction } }
inventory::submit! { RecipeKind { name: "delayed_scaling", description: "TransformerEngine DelayedScaling: per-tensor scales from an amax history", build: build_delayed } }
inventory::submit! { RecipeKind { name: "current_scaling", description: "per-tensor scales from each tensor's current amax", build: build_current } }
inventory::submit! { RecipeKind { name: "mx", description: "OCP MX block scaling (32-element blocks, E8M0 shared exponents)", build: build_mx } }
inventory::submit! { RecipeKind { name: "blockwise", description: "DeepSeek-V3 tiles: 1x128 activations and gradients, 128x128 weights", build: build_blockwise } }
inventory::submit! { RecipeKind { name: "nvfp4", description: "NVFP4: E2M1 in 16-element blocks, E4M3 block scales, FP32 tensor scale", build: build_nvfp4 } }
inventory::submit! { RecipeKind { name: "progressive", description: "the format changes with the training step", build: build_progressive } }
