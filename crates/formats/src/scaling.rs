//! Scaling schemes and their scale rules: which scale each tile of a tensor gets.
//!
//! This module holds the *types* of scaling ([`Scaling`], [`QuantSpec`], …) and the *rules* that
//! turn a tile's amax into its `(scale, inverse)` pair; the loops that apply them are in
//! `simd`, and the slice entry point `quantize` is in the module of that name.
//!
//! Every scheme is "tiles of `tr × tc` elements over the 2-D view, one scale per tile": the
//! tensor is one tile, a row is `1 × cols`, a column `rows × 1`, MX along the columns `1 × 32`,
//! 2-D weight blocks `16 × 16` (NVFP4) or `32 × 32` (MX), and so on. Ragged tail tiles are
//! shorter (and narrower).
//!
//! Conventions (docs/DESIGN.md §4):
//! - `Tensor(Given(s))`: `q = cast(x·s) · (1/s)`; the inverse is computed once in f32, as
//!   delayed scaling dequantizes with `1/scale`.
//! - Current scaling (tensor, row, col, block): `scale = fmt_max / amax`; amax 0 → 1; an
//!   infinite scale (tiny amax) → `f32::MAX`; `pow2` rounds the scale *down* to a power of two.
//! - Every scaled scheme casts with saturation (TE's satfinite), whatever `cast.saturate` says:
//!   scaling is meant to keep values in range and a stale delayed scale must not produce NaN.
//!   `Scaling::None` honours `cast.saturate`.
//! - MX: `shared_exp` from the block amax by [`MxRule`], clamped to [−127, 127];
//!   `scale = 2^−shared_exp` exactly. An all-zero (or all non-finite) block uses exponent 0.
//! - NVFP4, in TransformerEngine's order of operations (see `Nvfp4Scales`): tensor encode scale
//!   `g = min(448·fmt_max/amax, FLT_MAX)`; block scale `s_b = e4m3fn(block_amax·(g·(1/fmt_max)))`;
//!   `inv = s_b·(1/g)`, `scale = 1/inv` (a zero `s_b` maps the block to zero). The element format
//!   is the spec's (E2M1 normally).
//! - [`Stats::scale`](crate::Stats::scale) is the tensor scale for `None` (1), `Tensor` and NVFP4
//!   (`g`); for row/col/block/MX it is the arithmetic mean of the tile scales.

use crate::cast::{cast_one, CastSpec, Consts};
use crate::format::Format;
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
    /// 2-D square tiles of K×K elements: one scale covers a tile of the tensor and of its
    /// transpose alike, so a weight and its transposed copy quantize to the same values
    /// (TransformerEngine's 2-D weight quantization: NVFP4 16×16, `fp4_2d_quantization` in
    /// transformer_engine/common/recipe/__init__.py:600-604; MXFP8 32×32,
    /// `enable_2d_quantization`, same file :364-373, whose kernel takes one amax over the 32×32
    /// tile before `float_to_e8m0`: common/cast/mxfp8/quantize_mxfp8.cuh:421-444). Ragged edge tiles are partial and take the
    /// amax of the elements they hold, as TE's zero padding does
    /// (pytorch/custom_recipes/reference_nvfp4.py:780-812 `_pad_tensor`).
    Square,
}

impl BlockAxis {
    /// The `(rows, cols)` tile of `block`-element blocks along this axis.
    pub fn tile(self, block: usize) -> (usize, usize) {
        match self {
            BlockAxis::Cols => (1, block),
            BlockAxis::Rows => (block, 1),
            BlockAxis::Square => (block, block),
        }
    }
}

/// How the shared exponent of an MX block is chosen from the block amax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MxRule {
    /// OCP MX v1.0: `floor(log2(amax)) - emax_elem`; may saturate.
    #[default]
    Floor,
    /// Round `amax · (1/fmt_max)` up to a power of two (TE, torchao, cuBLAS); saturates only
    /// when that product rounds down onto a power of two.
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
    Row {
        pow2: bool,
    },
    /// One current-amax scale per column of the 2-D view.
    Col {
        pow2: bool,
    },
    /// Tiles of `rows × cols` elements, one current-amax scale each (DeepSeek-V3: 1×128, 128×128).
    Block {
        rows: usize,
        cols: usize,
        pow2: bool,
    },
    /// OCP MX: blocks of `block` along `axis` (or `block`×`block` tiles), E8M0 shared exponent
    /// chosen by `rule`.
    Mx {
        block: usize,
        rule: MxRule,
        axis: BlockAxis,
    },
    /// NVFP4: 16-element blocks (along `axis`, or 16×16 tiles) of E2M1 with E4M3 block scales
    /// and an FP32 tensor scale.
    Nvfp4 {
        axis: BlockAxis,
    },
}

/// A cast plus its scaling: everything needed to quantize one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantSpec {
    pub cast: CastSpec,
    pub scaling: Scaling,
}

impl QuantSpec {
    /// A plain cast, no scaling.
    pub fn cast(cast: CastSpec) -> QuantSpec {
        QuantSpec {
            cast,
            scaling: Scaling::None,
        }
    }
}

impl Scaling {
    /// OCP MX v1.0 defaults: 32-element blocks along the columns, `Floor` rule.
    pub const MX: Scaling = Scaling::Mx {
        block: 32,
        rule: MxRule::Floor,
        axis: BlockAxis::Cols,
    };

    /// The `(rows, cols)` of this scheme's tiles over a `[rows, cols]` view (before clipping to
    /// the view).
    ///
    /// # Panics
    /// If a block size is 0.
    pub(crate) fn tile_shape(&self, rows: usize, cols: usize) -> (usize, usize) {
        match *self {
            Scaling::None | Scaling::Tensor(_) => (rows, cols),
            Scaling::Row { .. } => (1, cols),
            Scaling::Col { .. } => (rows, 1),
            Scaling::Block {
                rows: br, cols: bc, ..
            } => {
                assert!(br > 0 && bc > 0, "quantize: block size must be positive");
                (br, bc)
            }
            Scaling::Mx { block, axis, .. } => {
                assert!(block > 0, "quantize: MX block size must be positive");
                axis.tile(block)
            }
            Scaling::Nvfp4 { axis } => axis.tile(16),
        }
    }

    /// The rule that scales each tile from its own amax, for the schemes that have one
    /// (current scaling and MX, with element format `elem`); `None` for no scaling, a given
    /// scale and NVFP4 (whose block scales also depend on the tensor amax).
    pub(crate) fn tile_rule(&self, elem: Format) -> Option<TileRule> {
        let fmt_max = elem.max();
        match *self {
            Scaling::Tensor(TensorScale::Current { pow2 })
            | Scaling::Row { pow2 }
            | Scaling::Col { pow2 }
            | Scaling::Block { pow2, .. } => Some(TileRule::Current { fmt_max, pow2 }),
            Scaling::Mx { rule, .. } => Some(TileRule::Mx(MxConsts::new(elem, rule))),
            Scaling::None | Scaling::Tensor(TensorScale::Given(_)) | Scaling::Nvfp4 { .. } => None,
        }
    }
}

/// `fmt_max / amax`, amax 0 → 1, inf → f32::MAX, optionally rounded down to a power of two.
pub(crate) fn current_scale(fmt_max: f32, amax: f32, pow2: bool) -> f32 {
    let mut s = if amax > 0.0 && amax.is_finite() {
        fmt_max / amax
    } else {
        1.0
    };
    if !s.is_finite() {
        s = f32::MAX;
    }
    if pow2 {
        s = f32::from_bits(s.to_bits() & 0xff80_0000);
        if s == 0.0 {
            s = f32::from_bits(0x0080_0000);
        }
    }
    s
}

/// floor(log2(x)) for positive finite x (subnormals included), exact from the bit pattern.
pub fn floor_log2(x: f32) -> i32 {
    let b = x.to_bits() & 0x7fff_ffff;
    let e = (b >> 23) as i32;
    if e == 0 {
        -127 - (b.leading_zeros() as i32 - 9)
    } else {
        e - 127
    }
}

/// Is x an exact power of two (positive, finite)?
fn is_pow2(x: f32) -> bool {
    let b = x.to_bits();
    if b >> 23 == 0 {
        b.is_power_of_two()
    } else {
        b & 0x7f_ffff == 0
    }
}

/// The MX shared exponent of a block with largest magnitude `amax`.
pub fn mx_shared_exp(amax: f32, elem: Format, rule: MxRule) -> i32 {
    MxConsts::new(elem, rule).shared_exp(amax)
}

/// What [`mx_shared_exp`] needs from the element format, computed once per tensor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MxConsts {
    rule: MxRule,
    fmax: f32,
    emax: i32,
    /// Half an ulp of the element mantissa in f32 mantissa units ([`MxRule::Even`]).
    even_add: u32,
}

impl MxConsts {
    pub(crate) fn new(elem: Format, rule: MxRule) -> MxConsts {
        let fmax = elem.max();
        let m = u32::from(elem.man_bits.min(23));
        MxConsts {
            rule,
            fmax,
            emax: floor_log2(fmax),
            even_add: if m < 23 { 1u32 << (22 - m) } else { 0 },
        }
    }

    /// `emax` when the rule is [`MxRule::Floor`] and `emax ≥ 0`: then every subnormal amax
    /// gives the clamp −127, so the exponent is a few integer operations on the amax bits
    /// (the loops in `simd` use this for fused MX blocks).
    pub(crate) fn floor_emax(&self) -> Option<i32> {
        (self.rule == MxRule::Floor && self.emax >= 0).then_some(self.emax)
    }

    #[inline]
    pub(crate) fn shared_exp(&self, amax: f32) -> i32 {
        if !(amax > 0.0 && amax.is_finite()) {
            return 0;
        }
        let emax = self.emax;
        let e = match self.rule {
            MxRule::Floor => floor_log2(amax) - emax,
            MxRule::Ceil => floor_log2(amax) + i32::from(!is_pow2(amax)) - emax,
            MxRule::Even => {
                // Round the amax to the element's mantissa width (half up, carrying into the
                // exponent), then floor: torchao's `ScaleCalculationMode.EVEN`.
                let b = amax.to_bits();
                floor_log2(
                    f32::from_bits((b + self.even_add) & 0xff80_0000)
                        .max(f32::MIN_POSITIVE.min(amax)),
                ) - emax
            }
            MxRule::Rceil => {
                // `amax · (1/fmax)`, as TE (`quantize_mxfp8.cuh`: `thread_amax *
                // max_norm_rcp`) and torchao (`mx_tensor.py` `_to_mx_rceil`: `max_abs *
                // (1.0 / max_pos)`) compute it; a division can round to the other side of a
                // power of two.
                let r = amax * (1.0 / self.fmax);
                if r == 0.0 {
                    -127
                } else {
                    floor_log2(r) + i32::from(!is_pow2(r))
                }
            }
        };
        e.clamp(-127, 127)
    }
}

/// `2^e` exactly, for `e` in `[-149, 127]`.
#[inline]
pub(crate) fn exp2i(e: i32) -> f32 {
    if e >= -126 {
        f32::from_bits(((e + 127) as u32) << 23)
    } else {
        f32::from_bits(1u32 << (e + 149))
    }
}

/// How a tile's `(scale, inverse)` follows from its amax: by the tile alone (current scaling
/// and MX), or, for NVFP4, relative to the tensor scale of an amax taken first.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TileRule {
    Mx(MxConsts),
    Current { fmt_max: f32, pow2: bool },
    Nvfp4(Nvfp4Scales),
}

impl TileRule {
    /// What [`Stats::scale`](crate::Stats::scale) reports when it is not the mean of the tile
    /// scales: NVFP4's tensor scale.
    pub(crate) fn tensor_scale(&self) -> Option<f32> {
        match self {
            TileRule::Nvfp4(nv) => Some(nv.tensor_scale()),
            TileRule::Mx(_) | TileRule::Current { .. } => None,
        }
    }
}

/// [`tile_scale`] of every amax in `amax_bits`; NVFP4's through [`Nvfp4Scales::blocks`].
pub(crate) fn tile_scales(rule: TileRule, amax_bits: &[u32]) -> Vec<(f32, f32)> {
    match rule {
        TileRule::Nvfp4(nv) => nv.blocks(amax_bits),
        _ => amax_bits.iter().map(|&a| tile_scale(rule, a)).collect(),
    }
}

/// The `(scale, inverse)` of a tile with largest finite magnitude `amax_bits` (f32 bits).
#[inline(always)]
pub(crate) fn tile_scale(rule: TileRule, amax_bits: u32) -> (f32, f32) {
    let amax = f32::from_bits(amax_bits);
    match rule {
        TileRule::Mx(mx) => {
            let e = mx.shared_exp(amax);
            (exp2i(-e), exp2i(e))
        }
        TileRule::Current { fmt_max, pow2 } => {
            let s = current_scale(fmt_max, amax, pow2);
            (s, 1.0 / s)
        }
        TileRule::Nvfp4(nv) => nv.block(amax_bits),
    }
}

/// NVFP4's two-level scales for one tensor: an FP32 tensor scale from the tensor amax, then an
/// E4M3 block scale relative to it, in TransformerEngine's order of operations
/// (`transformer_engine/pytorch/custom_recipes/reference_nvfp4.py`, lines 712–773):
/// `g_enc = min(448·fmt_max / amax, FLT_MAX)` (0 → 1), `g_dec = 1/g_enc`;
/// `s_b = e4m3(min(block_amax · (g_enc · (1/fmt_max)), FLT_MAX))` (clamped to ±448, nearest-even);
/// encode `min(1/(s_b · g_dec), FLT_MAX)`, decode `s_b · g_dec`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Nvfp4Scales {
    g_enc: f32,
    g_dec: f32,
    /// `g_enc · (1/fmt_max)`: TE folds the element maximum's reciprocal into the tensor scale.
    mult: f32,
    /// The saturating `float8_e4m3fn` cast of the block scales.
    e4m3: Consts,
}

impl Nvfp4Scales {
    /// The scales of a tensor with element format maximum `fmt_max` and amax `amax`.
    pub(crate) fn new(fmt_max: f32, amax: f32) -> Nvfp4Scales {
        let mut g_enc = (448.0 * fmt_max / amax).min(f32::MAX);
        if g_enc == 0.0 || g_enc.is_nan() {
            g_enc = 1.0;
        }
        Nvfp4Scales {
            g_enc,
            g_dec: 1.0 / g_enc,
            mult: g_enc * (1.0 / fmt_max),
            e4m3: Consts::new(&CastSpec::new(Format::FLOAT8_E4M3FN).with_saturate(true)),
        }
    }

    /// The tensor scale reported in [`Stats::scale`](crate::Stats::scale): `g_enc`.
    pub(crate) fn tensor_scale(&self) -> f32 {
        self.g_enc
    }

    /// `(scale, inverse)` of a block with amax bits `amax_bits`; `(0, 0)` when the block scale
    /// rounds to zero (TE's FLT_MAX encode then clamps and decodes to zero too).
    pub(crate) fn block(&self, amax_bits: u32) -> (f32, f32) {
        let sb = f32::from_bits(cast_one(self.unrounded(amax_bits), &self.e4m3, 0).0);
        self.encode_decode(sb)
    }

    /// [`block`](Self::block) of every block amax, in the vectorized loops the fused cast pass
    /// uses for its blocks (a tensor has one block per 16 elements, so this is no small loop).
    pub(crate) fn blocks(&self, amax_bits: &[u32]) -> Vec<(f32, f32)> {
        let n = amax_bits.len();
        let (mut sc, mut inv) = (vec![0f32; n], vec![0f32; n]);
        crate::simd::dispatch(crate::simd::Nvfp4Blocks {
            nv: self,
            amax: amax_bits,
            sc: &mut sc,
            inv: &mut inv,
        });
        sc.into_iter().zip(inv).collect()
    }

    /// The E4M3 cast of the block scales.
    #[inline(always)]
    pub(crate) fn e4m3(&self) -> &Consts {
        &self.e4m3
    }

    /// A block's scale before its E4M3 cast.
    #[inline(always)]
    pub(crate) fn unrounded(&self, amax_bits: u32) -> f32 {
        (f32::from_bits(amax_bits) * self.mult).min(f32::MAX)
    }

    /// `(scale, inverse)` from a block's E4M3 scale `sb`.
    #[inline(always)]
    pub(crate) fn encode_decode(&self, sb: f32) -> (f32, f32) {
        let dec = sb * self.g_dec;
        if sb > 0.0 && dec.is_finite() {
            ((1.0 / dec).min(f32::MAX), dec)
        } else {
            (0.0, 0.0)
        }
    }
}
