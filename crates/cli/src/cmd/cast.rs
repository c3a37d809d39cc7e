//! `fp8 cast`: quantize a float32 `.npy` file through a format (and optional scaling) and write
//! the dequantized float32 result. The default (nearest-even, no saturation, no scaling)
//! equals ml_dtypes' `x.astype(fmt).astype(np.float32)` bit for bit.

use anyhow::{bail, Context};
use fp8_formats::{
    quantize, BlockAxis, CastSpec, Format, MxRule, QuantSpec, Rounding, Scaling, TensorScale,
};
use fp8_io::npy;
use std::path::PathBuf;
use std::process::ExitCode;

/// Quantize a float32 .npy file through a reduced-precision format.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Target format: a name from `fp8 formats` (e.g. float8_e4m3fn, bfloat16) or eXmY.
    #[arg(long, value_parser = parse_format)]
    pub format: Format,
    /// Rounding: nearest (ties to even), zero (truncate), away (ties away), stochastic.
    #[arg(long, default_value = "nearest", value_parser = parse_rounding)]
    pub rounding: Rounding,
    /// Seed for stochastic rounding (element i uses a hash of (seed, i)).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Clamp overflow to ±max instead of inf/NaN (TE's satfinite).
    #[arg(long)]
    pub saturate: bool,
    /// Flush results below the smallest normal to zero.
    #[arg(long)]
    pub no_subnormals: bool,
    /// Scaling: none, tensor, row, col, block:RxC (e.g. block:1x128, block:128x128), mx,
    /// mx:rceil, mx:ceil, mx:even, nvfp4; add `,pow2` to tensor/row/col/block for
    /// power-of-two scales and `,rows` to mx/nvfp4 for blocks down the columns.
    #[arg(long, default_value = "none", value_parser = parse_scaling)]
    pub scaling: Scaling,
    /// Print the quantization statistics (amax, scale, underflow, saturation, SNR) as JSON.
    #[arg(long)]
    pub stats: bool,
    /// Input float32 .npy file (any shape, C order).
    pub input: PathBuf,
    /// Output float32 .npy file (same shape).
    pub output: PathBuf,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
        .map_err(|e: fp8_formats::FormatError| e.to_string())
}

fn parse_rounding(s: &str) -> Result<Rounding, String> {
    s.parse()
        .map_err(|e: fp8_formats::FormatError| e.to_string())
}

/// Parse the `--scaling` mini-language (see [`Args::scaling`]).
pub fn parse_scaling(s: &str) -> Result<Scaling, String> {
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
            "unknown scaling option `{o}` in `{s}`; options: pow2, rows, cols"
        ));
    }
    let (kind, arg) = head
        .split_once(':')
        .map_or((head, None), |(k, a)| (k, Some(a)));
    let bad = || {
        format!(
            "unknown scaling `{s}`; valid: none, tensor, row, col, block:RxC, mx, mx:rceil, mx:ceil, \
             mx:even, nvfp4 (options: ,pow2 ,rows)"
        )
    };
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
                return Err(format!("block size must be positive in `{s}`"));
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
            Scaling::Mx {
                block: 32,
                rule,
                axis,
            }
        }
        ("nvfp4", None) => Scaling::Nvfp4 { axis },
        _ => return Err(bad()),
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut a = npy::read(&args.input)?;
    if matches!(args.scaling, Scaling::Nvfp4 { .. }) && args.format != Format::FLOAT4_E2M1FN {
        bail!(
            "nvfp4 scaling needs --format float4_e2m1fn (got {})",
            args.format
        );
    }
    let cast = CastSpec::new(args.format)
        .with_rounding(args.rounding)
        .with_seed(args.seed)
        .with_saturate(args.saturate)
        .with_subnormals(!args.no_subnormals);
    let spec = QuantSpec {
        cast,
        scaling: args.scaling,
    };
    let shape = if a.shape.is_empty() {
        vec![1]
    } else {
        a.shape.clone()
    };
    let stats = quantize(&mut a.data, &shape, &spec);
    npy::write(&args.output, &a).with_context(|| "writing the output")?;
    if args.stats {
        println!("{}", serde_json::to_string(&stats_json(&stats))?);
    }
    Ok(ExitCode::SUCCESS)
}

/// JSON cannot hold ±inf: the SNR of an exact cast is written as the string "inf".
fn stats_json(s: &fp8_formats::Stats) -> serde_json::Value {
    let num = |x: f64| {
        if x.is_finite() {
            serde_json::json!(x)
        } else {
            serde_json::json!(x.to_string())
        }
    };
    serde_json::json!({
        "amax": num(f64::from(s.amax)),
        "scale": num(f64::from(s.scale)),
        "underflow": num(s.underflow),
        "saturation": num(s.saturation),
        "snr_db": num(s.snr_db),
        "count": s.count,
    })
}
