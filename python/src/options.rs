//! The keyword arguments of `fp8.quantize`, turned into a [`QuantSpec`].
//!
//! Formats and roundings go through fp8-formats' own parsers, so every spelling `fp8 cast`
//! accepts works here with the same error text. The scaling mini-language (`none`, `tensor`,
//! `row`, `col`, `block:RxC`, `mx`, `mx:rceil`, `mx:ceil`, `mx:even`, `nvfp4`, options `,pow2`
//! `,rows`) is parsed by `fp8 cast` in the CLI crate, which this module cannot depend on (it
//! pulls in burn); [`parse_scaling`] repeats that thin mapping, with the same names and
//! messages, plus the MX block size that `fp8 cast` fixes at 32.

use fp8_formats::{BlockAxis, CastSpec, Format, MxRule, QuantSpec, Rounding, Scaling, TensorScale};

/// Everything `fp8.quantize` accepts besides the array, as given by the caller.
pub struct Options<'a> {
    pub format: &'a str,
    pub rounding: &'a str,
    pub scaling: &'a str,
    pub block: usize,
    pub seed: u64,
    pub saturate: Option<bool>,
    pub subnormals: bool,
}

/// Check the options and build the spec; the error is the message of a `ValueError`.
pub fn spec(o: &Options<'_>) -> Result<QuantSpec, String> {
    let format: Format = o
        .format
        .parse()
        .map_err(|e: fp8_formats::FormatError| e.to_string())?;
    let rounding: Rounding = o
        .rounding
        .parse()
        .map_err(|e: fp8_formats::FormatError| e.to_string())?;
    let scaling = parse_scaling(o.scaling, o.block)?;
    if matches!(scaling, Scaling::Nvfp4 { .. }) && format != Format::FLOAT4_E2M1FN {
        return Err(format!(
            "scaling 'nvfp4' needs format 'float4_e2m1fn' (got '{}')",
            o.format
        ));
    }
    // Scaled casts always saturate (fp8-formats: a scale exists to keep values in range), so an
    // explicit `saturate=False` cannot be honoured there; `None` means "the default".
    if o.saturate == Some(false) && scaling != Scaling::None {
        return Err(format!(
            "saturate=False is not possible with scaling '{}': scaled casts always saturate; \
             leave saturate=None",
            o.scaling
        ));
    }
    let cast = CastSpec::new(format)
        .with_rounding(rounding)
        .with_seed(o.seed)
        .with_saturate(o.saturate.unwrap_or(false))
        .with_subnormals(o.subnormals);
    Ok(QuantSpec { cast, scaling })
}

/// `fp8 cast --scaling` names; `block` is the MX block size (other schemes reject a
/// non-default one rather than ignore it).
pub fn parse_scaling(s: &str, block: usize) -> Result<Scaling, String> {
    let lower = s.trim().to_ascii_lowercase();
    let mut parts = lower.split(',');
    let head = parts.next().unwrap_or("");
    let opts: Vec<&str> = parts.collect();
    let pow2 = opts.contains(&"pow2");
    let axis = if opts.contains(&"rows") {
        BlockAxis::Rows
    } else {
        BlockAxis::Cols
    };
    if let Some(o) = opts
        .iter()
        .find(|o| !matches!(**o, "pow2" | "rows" | "cols"))
    {
        return Err(format!(
            "unknown scaling option '{o}' in '{s}'; options: pow2, rows, cols"
        ));
    }
    let (kind, arg) = head
        .split_once(':')
        .map_or((head, None), |(k, a)| (k, Some(a)));
    let bad = || {
        format!(
            "unknown scaling '{s}'; valid: none, tensor, row, col, block:RxC, mx, mx:rceil, \
             mx:ceil, mx:even, nvfp4 (options: ,pow2 ,rows)"
        )
    };
    if block == 0 {
        return Err("block must be a positive MX block size (got 0)".to_string());
    }
    if block != 32 && kind != "mx" {
        return Err(format!(
            "block={block} applies only to mx scalings (got scaling '{s}'; block:RxC sets its \
             own tile, nvfp4 uses 16)"
        ));
    }
    Ok(match (kind, arg) {
        ("none", None) => Scaling::None,
        ("tensor", None) => Scaling::Tensor(TensorScale::Current { pow2 }),
        ("row", None) => Scaling::Row { pow2 },
        ("col", None) => Scaling::Col { pow2 },
        ("block", Some(a)) => {
            let (r, c) = a.split_once('x').ok_or_else(bad)?;
            let r: usize = r.parse().map_err(|_| bad())?;
            let c: usize = c.parse().map_err(|_| bad())?;
            if r == 0 || c == 0 {
                return Err(format!("block size must be positive in '{s}'"));
            }
            Scaling::Block {
                rows: r,
                cols: c,
                pow2,
            }
        }
        ("mx", rule) => {
            let rule = match rule {
                None | Some("floor") => MxRule::Floor,
                Some("rceil") => MxRule::Rceil,
                Some("ceil") => MxRule::Ceil,
                Some("even") => MxRule::Even,
                _ => return Err(bad()),
            };
            Scaling::Mx { block, rule, axis }
        }
        ("nvfp4", None) => Scaling::Nvfp4 { axis },
        _ => return Err(bad()),
    })
}
