//! `fp8 bench …`: micro-benchmarks. `fp8 bench cast` measures the quantize kernels against a
//! plain memory copy of the same buffer in the same run, so the ratio says how close the kernel
//! is to memory bandwidth on this machine.

use crate::cmd::cast::parse_scaling;
use anyhow::Context;
use fp8_formats::{cast_slice, quantize, CastSpec, Format, QuantSpec, Rounding, Scaling};
use rayon::prelude::*;
use std::process::ExitCode;
use std::time::Instant;

/// Micro-benchmarks.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub which: BenchWhich,
}

/// Which benchmark to run.
#[derive(clap::Subcommand, Debug)]
pub enum BenchWhich {
    /// Quantize throughput (Melem/s) against a memory-copy baseline; prints JSON.
    Cast(CastArgs),
    /// Training throughput (tokens/s, step time) under a recipe, and its step-time ratio to a
    /// baseline recipe measured in the same process; prints JSON.
    Train(crate::cmd::bench_train::TrainArgs),
}

/// Options of `fp8 bench cast`.
#[derive(clap::Args, Debug)]
pub struct CastArgs {
    /// Target format (name from `fp8 formats`, or eXmY).
    #[arg(long, default_value = "float8_e4m3fn", value_parser = |s: &str| s.parse::<Format>().map_err(|e| e.to_string()))]
    pub format: Format,
    /// Number of f32 elements in the buffer.
    #[arg(long, default_value_t = 1 << 24)]
    pub elements: usize,
    /// Worker threads (1 = single-threaded kernels).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Rounding: nearest, zero, away, stochastic.
    #[arg(long, default_value = "nearest", value_parser = |s: &str| s.parse::<Rounding>().map_err(|e| e.to_string()))]
    pub rounding: Rounding,
    /// Scaling, as for `fp8 cast --scaling` (none, tensor, row, col, block:RxC, mx, …).
    #[arg(long, default_value = "none", value_parser = parse_scaling)]
    pub scaling: Scaling,
    /// Minimum measuring time per kernel, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.which {
        BenchWhich::Cast(a) => cast(a),
        BenchWhich::Train(a) => crate::cmd::bench_train::run(a),
    }
}

/// Median seconds per call of `f`, over at least `min_s` seconds and 5 calls (after a warm-up).
fn time(min_s: f64, mut f: impl FnMut()) -> f64 {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || start.elapsed().as_secs_f64() < min_s {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn cast(a: CastArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.elements > 0, "--elements must be positive");
    anyhow::ensure!(a.threads > 0, "--threads must be positive");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()
        .context("building the thread pool")?;
    // Deterministic pseudo-normal data spread over the format's range (a few values overflow).
    let spread = a.format.max() / 8.0;
    let src: Vec<f32> = (0..a.elements as u64)
        .map(|i| {
            let h = fp8_hash(i);
            let u = (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let v = ((h >> 8) & 0xffff) as f32 / 65536.0 - 0.5;
            (u + v) * spread
        })
        .collect();
    let mut dst = vec![0f32; a.elements];
    let mut work = src.clone();
    let cast_spec = CastSpec::new(a.format)
        .with_rounding(a.rounding)
        .with_seed(1);
    let qspec = QuantSpec {
        cast: cast_spec,
        scaling: a.scaling,
    };
    let shape = [a.elements];
    let (copy_s, quant_s, cast_s) = pool.install(|| {
        let copy_s = time(a.seconds, || {
            if a.threads > 1 {
                dst.par_chunks_mut(1 << 16)
                    .zip(src.par_chunks(1 << 16))
                    .for_each(|(d, s)| d.copy_from_slice(s));
            } else {
                dst.copy_from_slice(&src);
            }
            std::hint::black_box(&mut dst);
        });
        let quant_s = time(a.seconds, || {
            std::hint::black_box(quantize(&mut work, &shape, &qspec));
        });
        let cast_s = time(a.seconds, || {
            cast_slice(&mut work, &cast_spec, 0);
            std::hint::black_box(&mut work);
        });
        (copy_s, quant_s, cast_s)
    });
    let n = a.elements as f64;
    let melem = |s: f64| n / s / 1e6;
    let out = serde_json::json!({
        "bench": "cast",
        "format": a.format.to_string(),
        "rounding": a.rounding.to_string(),
        "scaling": format!("{:?}", a.scaling),
        "elements": a.elements,
        "threads": a.threads,
        "quantize_melem_s": melem(quant_s),
        "cast_slice_melem_s": melem(cast_s),
        "copy_melem_s": melem(copy_s),
        "copy_gb_s": n * 8.0 / copy_s / 1e9,
        "quantize_vs_copy": copy_s / quant_s,
        "cast_slice_vs_copy": copy_s / cast_s,
        "note": "quantize = scaling + cast + stats in one pass, in place; cast_slice = plain cast without scaling or stats; copy = memcpy of the same buffer (GB/s counts read + write); *_vs_copy = kernel throughput / copy throughput",
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

fn fp8_hash(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
