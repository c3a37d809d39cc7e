//! The tensor roles of a GEMM site (docs/DESIGN.md §3), and the three backward operand copies that
//! recipes with direction-dependent scaling need.
//!
//! A linear site computes three GEMMs: forward `y = x·w`, dgrad `dx = dy·wᵀ` and wgrad
//! `dw = xᵀ·dy`. By default the backward GEMMs reuse the operands quantized once (`x̂`, `ŵ`,
//! `dŷ`). Block-scaled recipes (MXFP8, NVFP4, TE `Float8BlockScaling`, torchao rowwise) quantize
//! along the reduction axis of each GEMM, which differs between them, so they quantize a second
//! copy of each operand from the high-precision tensor (TransformerEngine's "columnwise usage",
//! `transformer_engine/common/recipe/__init__.py`, docstring of `MXFP8BlockScaling`): those are
//! [`Role::XWgrad`], [`Role::WDgrad`] and [`Role::DyWgrad`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One operand or result of a GEMM site, forward or backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Forward input activation (the forward GEMM's left operand).
    X,
    /// Forward weight (or right-hand operand).
    W,
    /// Forward output.
    Y,
    /// Gradient arriving at the output (the dgrad GEMM's left operand; also the wgrad GEMM's
    /// right operand unless the recipe requantizes it as [`Role::DyWgrad`]).
    Dy,
    /// Gradient with respect to the input.
    Dx,
    /// Gradient with respect to the weight.
    Dw,
    /// `x` as the wgrad GEMM's operand `xᵀ`, quantized afresh from the high-precision `x`.
    XWgrad,
    /// `w` as the dgrad GEMM's operand `wᵀ`, quantized afresh from the high-precision `w`.
    WDgrad,
    /// `dy` as the wgrad GEMM's operand, quantized afresh from the high-precision `dy`.
    DyWgrad,
}

impl Role {
    pub const ALL: [Role; 9] = [
        Role::X,
        Role::W,
        Role::Y,
        Role::Dy,
        Role::Dx,
        Role::Dw,
        Role::XWgrad,
        Role::WDgrad,
        Role::DyWgrad,
    ];

    /// The roles of a site whose backward GEMMs reuse the forward-quantized operands.
    pub const SAVED: [Role; 6] = [Role::X, Role::W, Role::Y, Role::Dy, Role::Dx, Role::Dw];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::X => "x",
            Role::W => "w",
            Role::Y => "y",
            Role::Dy => "dy",
            Role::Dx => "dx",
            Role::Dw => "dw",
            Role::XWgrad => "x_wgrad",
            Role::WDgrad => "w_dgrad",
            Role::DyWgrad => "dy_wgrad",
        }
    }

    /// Forward roles are quantized during the forward pass, backward roles during backward.
    pub fn is_forward(self) -> bool {
        matches!(self, Role::X | Role::W | Role::Y)
    }

    /// Whether the tensor is a gradient (`dy`, `dx`, `dw` and the wgrad copy of `dy`): recipes
    /// such as TE's `HYBRID` format or NVFP4's stochastic rounding treat gradients differently
    /// from activations and weights, whichever pass quantizes them.
    pub fn is_gradient(self) -> bool {
        matches!(self, Role::Dy | Role::Dx | Role::Dw | Role::DyWgrad)
    }

    /// The tensor this role quantizes: the backward copies map to `x`, `w` and `dy`.
    pub fn tensor(self) -> Role {
        match self {
            Role::XWgrad => Role::X,
            Role::WDgrad => Role::W,
            Role::DyWgrad => Role::Dy,
            r => r,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown role `{s}`; valid: x, w, y, dy, dx, dw, x_wgrad, w_dgrad, dy_wgrad"
                )
            })
    }
}
