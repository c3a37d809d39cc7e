//! Format descriptions: bit layout, special-value family, derived constants, names.

use serde::{Deserialize, Serialize};

/// How a format spends its top codes on special values (DESIGN.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    /// IEEE-754 style: top exponent holds inf/NaN; overflow → ±inf.
    Ieee,
    /// `fn` (finite): no inf, only S.1111.111 is NaN; overflow → NaN.
    Fn,
    /// `fnuz`: bias + 1, no inf, no −0, single NaN at 0x80; overflow → NaN.
    Fnuz,
    /// No special values (`float6_*`, `float4_e2m1fn`): overflow saturates.
    NoSpecials,
    /// `float8_e8m0fnu`: unsigned power of two, bias 127, 0xFF = NaN, no zero.
    E8m0,
}

/// A floating-point format: `exp_bits` 1..=8, `man_bits` 0..=23, and a [`Family`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Format {
    pub exp_bits: u8,
    pub man_bits: u8,
    pub family: Family,
}

/// Rounding applied when a value falls between two representable neighbours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rounding {
    /// Round to nearest, ties to even (IEEE default).
    #[default]
    NearestEven,
    /// Truncate the magnitude (the paper's mantissa bit mask).
    TowardZero,
    /// Round to nearest, ties away from zero.
    NearestAway,
    /// Round up with probability equal to the distance from the lower neighbour; reproducible
    /// from the seed and the element index.
    Stochastic,
}

/// A format name or field value that could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("unknown format `{name}`; valid names: {valid}, or eXmY with X in 1..=8 and Y in 0..=23")]
    Unknown { name: String, valid: String },
    #[error("unknown rounding `{0}`; valid: nearest, zero, away, stochastic")]
    UnknownRounding(String),
}
