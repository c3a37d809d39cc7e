//! The six tensor roles of a GEMM site (docs/DESIGN.md §3).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One operand or result of a GEMM site, forward or backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Forward input activation.
    X,
    /// Forward weight (or right-hand operand).
    W,
    /// Forward output.
    Y,
    /// Gradient arriving at the output.
    Dy,
    /// Gradient with respect to the input.
    Dx,
    /// Gradient with respect to the weight.
    Dw,
}

impl Role {
    pub const ALL: [Role; 6] = [Role::X, Role::W, Role::Y, Role::Dy, Role::Dx, Role::Dw];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::X => "x",
            Role::W => "w",
            Role::Y => "y",
            Role::Dy => "dy",
            Role::Dx => "dx",
            Role::Dw => "dw",
        }
    }

    /// Forward roles are quantized during the forward pass, backward roles during backward.
    pub fn is_forward(self) -> bool {
        matches!(self, Role::X | Role::W | Role::Y)
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
            .ok_or_else(|| format!("unknown role `{s}`; valid: x, w, y, dy, dx, dw"))
    }
}
