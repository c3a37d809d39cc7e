//! `fp8 formats`: the table of named formats and their derived constants.

use fp8_formats::Format;
use serde::Serialize;
use std::process::ExitCode;

/// Print bits, exponent/mantissa widths, bias, range and special values of every named format.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    name: &'static str,
    bits: u32,
    exp_bits: u8,
    man_bits: u8,
    bias: i32,
    max: f32,
    min_normal: f32,
    min_subnormal: f32,
    epsilon: f32,
    inf: bool,
    nan: bool,
    neg_zero: bool,
}

fn rows() -> Vec<Row> {
    Format::named()
        .map(|(name, f)| Row {
            name,
            bits: f.bits(),
            exp_bits: f.exp_bits,
            man_bits: f.man_bits,
            bias: f.bias(),
            max: f.max(),
            min_normal: f.min_normal(),
            min_subnormal: f.min_subnormal(),
            epsilon: f.epsilon(),
            inf: f.family.has_inf(),
            nan: f.family.has_nan(),
            neg_zero: f.family.has_neg_zero(),
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rows = rows();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:>4} {:>3} {:>3} {:>5} {:>13} {:>13} {:>13} {:>11}  specials",
        "name", "bits", "exp", "man", "bias", "max", "min_normal", "min_subnormal", "epsilon"
    );
    for r in rows {
        let yn = |b: bool| if b { "yes" } else { "no" };
        println!(
            "{:<16} {:>4} {:>3} {:>3} {:>5} {:>13e} {:>13e} {:>13e} {:>11e}  inf {} nan {} -0 {}",
            r.name,
            r.bits,
            r.exp_bits,
            r.man_bits,
            r.bias,
            r.max,
            r.min_normal,
            r.min_subnormal,
            r.epsilon,
            yn(r.inf),
            yn(r.nan),
            yn(r.neg_zero)
        );
    }
    Ok(ExitCode::SUCCESS)
}
