//! Format descriptions: bit layout, special-value family, derived constants, names.

use serde::{Deserialize, Serialize};

/// How a format spends its top codes on special values (docs/DESIGN.md §2).
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
    #[error(
        "unknown format `{name}`; valid names: {valid}, or eXmY with X in 1..=8 and Y in 0..=23"
    )]
    Unknown { name: String, valid: String },
    #[error("unknown rounding `{0}`; valid: nearest, zero, away, stochastic")]
    UnknownRounding(String),
    #[error("invalid format {0}: need exponent bits 1..=8 (2..=8 for IEEE, ..=7 for fnuz), mantissa bits 0..=23, e8m0 only as float8_e8m0fnu")]
    Invalid(String),
}

impl Family {
    /// Does this family encode infinities?
    pub fn has_inf(self) -> bool {
        matches!(self, Family::Ieee)
    }
    /// Does this family encode NaN?
    pub fn has_nan(self) -> bool {
        !matches!(self, Family::NoSpecials)
    }
    /// Does this family encode −0?
    pub fn has_neg_zero(self) -> bool {
        matches!(self, Family::Ieee | Family::Fn | Family::NoSpecials)
    }
}

/// Named formats: canonical name (ml_dtypes / PyTorch spelling) and value.
const NAMED: &[(&str, Format)] = &[
    ("float8_e4m3fn", Format::FLOAT8_E4M3FN),
    ("float8_e5m2", Format::FLOAT8_E5M2),
    ("float8_e4m3fnuz", Format::FLOAT8_E4M3FNUZ),
    ("float8_e5m2fnuz", Format::FLOAT8_E5M2FNUZ),
    ("float8_e4m3", Format::FLOAT8_E4M3),
    ("float8_e3m4", Format::FLOAT8_E3M4),
    ("float6_e3m2fn", Format::FLOAT6_E3M2FN),
    ("float6_e2m3fn", Format::FLOAT6_E2M3FN),
    ("float4_e2m1fn", Format::FLOAT4_E2M1FN),
    ("float8_e8m0fnu", Format::FLOAT8_E8M0FNU),
    ("bfloat16", Format::BFLOAT16),
    ("float16", Format::FLOAT16),
    ("float32", Format::FLOAT32),
];

impl Format {
    pub const FLOAT8_E4M3FN: Format = Format::new_unchecked(4, 3, Family::Fn);
    pub const FLOAT8_E5M2: Format = Format::new_unchecked(5, 2, Family::Ieee);
    pub const FLOAT8_E4M3FNUZ: Format = Format::new_unchecked(4, 3, Family::Fnuz);
    pub const FLOAT8_E5M2FNUZ: Format = Format::new_unchecked(5, 2, Family::Fnuz);
    pub const FLOAT8_E4M3: Format = Format::new_unchecked(4, 3, Family::Ieee);
    pub const FLOAT8_E3M4: Format = Format::new_unchecked(3, 4, Family::Ieee);
    pub const FLOAT6_E3M2FN: Format = Format::new_unchecked(3, 2, Family::NoSpecials);
    pub const FLOAT6_E2M3FN: Format = Format::new_unchecked(2, 3, Family::NoSpecials);
    pub const FLOAT4_E2M1FN: Format = Format::new_unchecked(2, 1, Family::NoSpecials);
    pub const FLOAT8_E8M0FNU: Format = Format::new_unchecked(8, 0, Family::E8m0);
    pub const BFLOAT16: Format = Format::new_unchecked(8, 7, Family::Ieee);
    pub const FLOAT16: Format = Format::new_unchecked(5, 10, Family::Ieee);
    pub const FLOAT32: Format = Format::new_unchecked(8, 23, Family::Ieee);

    const fn new_unchecked(exp_bits: u8, man_bits: u8, family: Family) -> Format {
        Format {
            exp_bits,
            man_bits,
            family,
        }
    }

    /// A checked constructor: exponent bits 1..=8, mantissa bits 0..=23; `E8m0` only as
    /// e8m0; `Fnuz` needs at most 7 exponent bits (its bias 2^(X−1) would put the smallest
    /// normal below f32's, which the f32 kernels cannot represent); `Ieee` needs at least 2.
    pub fn new(exp_bits: u8, man_bits: u8, family: Family) -> Result<Format, FormatError> {
        let f = Format {
            exp_bits,
            man_bits,
            family,
        };
        f.validate()?;
        Ok(f)
    }

    /// Check the field ranges (see [`Format::new`]).
    pub fn validate(&self) -> Result<(), FormatError> {
        let ok = (1..=8).contains(&self.exp_bits)
            && self.man_bits <= 23
            && match self.family {
                Family::E8m0 => self.exp_bits == 8 && self.man_bits == 0,
                Family::Fnuz => self.exp_bits <= 7,
                Family::Ieee => self.exp_bits >= 2,
                Family::Fn => self.exp_bits + self.man_bits >= 2,
                Family::NoSpecials => true,
            };
        if ok {
            Ok(())
        } else {
            Err(FormatError::Invalid(format!("{self:?}")))
        }
    }

    /// Look up a format by name (case-insensitive); same as `str::parse`.
    pub fn parse(name: &str) -> Result<Format, FormatError> {
        name.parse()
    }

    /// The named formats with their canonical names, in display order.
    pub fn named() -> impl Iterator<Item = (&'static str, Format)> {
        NAMED.iter().copied()
    }

    /// The canonical name if this is one of the named formats.
    pub fn name(&self) -> Option<&'static str> {
        NAMED.iter().find(|(_, f)| f == self).map(|(n, _)| *n)
    }

    /// Total storage bits: sign (absent for e8m0) + exponent + mantissa.
    pub fn bits(&self) -> u32 {
        let sign = u32::from(self.family != Family::E8m0);
        sign + u32::from(self.exp_bits) + u32::from(self.man_bits)
    }

    /// Exponent bias: `2^(X−1) − 1`, plus one for `Fnuz`, 127 for e8m0.
    pub fn bias(&self) -> i32 {
        let b = (1i32 << (self.exp_bits.clamp(1, 8) - 1)) - 1;
        match self.family {
            Family::Fnuz => b + 1,
            Family::E8m0 => 127,
            _ => b,
        }
    }

    /// Unbiased exponent of the smallest normal value (`1 − bias`; −127 for e8m0, whose code 0
    /// is the normal value 2^−127).
    pub fn emin(&self) -> i32 {
        match self.family {
            Family::E8m0 => -127,
            _ => 1 - self.bias(),
        }
    }

    /// Largest finite magnitude code as (unbiased exponent, mantissa field).
    fn max_code(&self) -> (i32, u32) {
        let m = u32::from(self.man_bits);
        let all_e = (1i32 << self.exp_bits) - 1;
        let all_m = (1u32 << m) - 1;
        let (e_code, man) = match self.family {
            Family::Ieee => (all_e - 1, all_m),
            Family::Fn if m == 0 => (all_e - 1, 0),
            Family::Fn => (all_e, all_m - 1),
            Family::Fnuz | Family::NoSpecials => (all_e, all_m),
            Family::E8m0 => (254, 0),
        };
        (e_code, man)
    }

    /// Largest finite value (`f32::MAX` for float32).
    pub fn max(&self) -> f32 {
        let (e_code, man) = self.max_code();
        let m = i32::from(self.man_bits);
        let v = if e_code == 0 && self.family != Family::E8m0 {
            // Only subnormals are finite (e.g. a 1-bit-exponent IEEE format).
            f64::from(man) * 2f64.powi(self.emin() - m)
        } else {
            (1.0 + f64::from(man) * 2f64.powi(-m)) * 2f64.powi(e_code - self.bias())
        };
        v as f32
    }

    /// Smallest positive normal value.
    pub fn min_normal(&self) -> f32 {
        2f64.powi(self.emin()) as f32
    }

    /// Smallest positive subnormal value (equal to [`Format::min_normal`] when the format has
    /// no mantissa bits, so no subnormals).
    pub fn min_subnormal(&self) -> f32 {
        2f64.powi(self.emin() - i32::from(self.man_bits)) as f32
    }

    /// Machine epsilon: the gap between 1 and the next value, `2^−man_bits`.
    pub fn epsilon(&self) -> f32 {
        2f64.powi(-i32::from(self.man_bits)) as f32
    }

    /// Can `x` be held exactly (NaN counts when the format has a NaN, ±inf when it has inf)?
    pub fn is_representable(&self, x: f32) -> bool {
        if x.is_nan() {
            return self.family.has_nan();
        }
        if x.is_infinite() {
            return self.family.has_inf();
        }
        if x == 0.0 {
            return match self.family {
                Family::E8m0 => false,
                f => x.is_sign_positive() || f.has_neg_zero(),
            };
        }
        if self.family == Family::E8m0 && x < 0.0 {
            return false;
        }
        let a = x.abs();
        if a > self.max() || a < self.min_subnormal() {
            return false;
        }
        // Exactly representable iff x is a multiple of its quantum: 2^(max(e, emin) − m).
        let e = (a.to_bits() >> 23) as i32 - 127;
        let q = 2f64.powi(e.max(self.emin()) - i32::from(self.man_bits));
        (f64::from(a) / q).fract() == 0.0
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(n) = self.name() {
            return f.write_str(n);
        }
        let suffix = match self.family {
            Family::Ieee => "",
            Family::Fn => "fn",
            Family::Fnuz => "fnuz",
            Family::NoSpecials => "ns",
            Family::E8m0 => "fnu",
        };
        write!(f, "e{}m{}{}", self.exp_bits, self.man_bits, suffix)
    }
}

impl std::str::FromStr for Format {
    type Err = FormatError;

    /// Named formats (case-insensitive), or generic `eXmY` (IEEE family) with an optional
    /// family suffix `fn`, `fnuz` or `ns` (no specials) and an optional `floatN_` prefix.
    fn from_str(s: &str) -> Result<Format, FormatError> {
        let lower = s.trim().to_ascii_lowercase();
        if let Some((_, f)) = NAMED.iter().find(|(n, _)| *n == lower) {
            return Ok(*f);
        }
        let unknown = || FormatError::Unknown {
            name: s.to_string(),
            valid: NAMED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        };
        let (prefix_bits, rest) = match lower.strip_prefix("float") {
            Some(r) => {
                let (n, r) = r.split_once('_').ok_or_else(unknown)?;
                (Some(n.parse::<u32>().map_err(|_| unknown())?), r)
            }
            None => (None, lower.as_str()),
        };
        let rest = rest.strip_prefix('e').ok_or_else(unknown)?;
        let (x, rest) = rest.split_once('m').ok_or_else(unknown)?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (y, suffix) = rest.split_at(digits);
        let x: u8 = x.parse().map_err(|_| unknown())?;
        let y: u8 = y.parse().map_err(|_| unknown())?;
        let family = match suffix {
            "" => Family::Ieee,
            "fn" => Family::Fn,
            "fnuz" => Family::Fnuz,
            "ns" => Family::NoSpecials,
            "fnu" if x == 8 && y == 0 => Family::E8m0,
            _ => return Err(unknown()),
        };
        let f = Format::new(x, y, family).map_err(|_| unknown())?;
        if prefix_bits.is_some_and(|b| b != f.bits()) {
            return Err(unknown());
        }
        Ok(f)
    }
}

impl std::fmt::Display for Rounding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rounding::NearestEven => "nearest",
            Rounding::TowardZero => "zero",
            Rounding::NearestAway => "away",
            Rounding::Stochastic => "stochastic",
        })
    }
}

impl std::str::FromStr for Rounding {
    type Err = FormatError;

    /// `nearest` (or `nearest-even`, `rne`), `zero` (`toward-zero`, `truncate`, `rtz`), `away`
    /// (`nearest-away`, `rna`), `stochastic` (`sr`); case-insensitive.
    fn from_str(s: &str) -> Result<Rounding, FormatError> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "nearest" | "nearest-even" | "rne" => Ok(Rounding::NearestEven),
            "zero" | "toward-zero" | "truncate" | "rtz" => Ok(Rounding::TowardZero),
            "away" | "nearest-away" | "rna" => Ok(Rounding::NearestAway),
            "stochastic" | "sr" => Ok(Rounding::Stochastic),
            _ => Err(FormatError::UnknownRounding(s.to_string())),
        }
    }
}
