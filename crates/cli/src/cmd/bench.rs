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
    /// Minimum measuring time per kernel, in seconds (the kernels are timed in interleaved
    /// rounds).
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.which {
        BenchWhich::Cast(a) => cast(a),
        BenchWhich::Train(a) => crate::cmd::bench_train::run(a),
    }
}

/// Median seconds per call of each kernel, timed in interleaved rounds (one call of each per
/// round, after a warm-up round) for at least `min_s` seconds and 5 rounds, plus the median over
/// rounds of each kernel's time divided by the first kernel's time in the same round. On a
/// shared, noisy machine the per-round ratio is steadier than a ratio of separate runs.
fn time_rounds<const K: usize>(min_s: f64, fs: &mut [&mut dyn FnMut(); K]) -> ([f64; K], [f64; K]) {
    for f in fs.iter_mut() {
        f();
    }
    let mut times: [Vec<f64>; K] = std::array::from_fn(|_| Vec::new());
    let start = Instant::now();
    while times[0].len() < 5 || start.elapsed().as_secs_f64() < min_s * K as f64 {
        for (f, t) in fs.iter_mut().zip(times.iter_mut()) {
            let s = Instant::now();
            f();
            t.push(s.elapsed().as_secs_f64());
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratios: [f64; K] = std::array::from_fn(|k| {
        median(times[k].iter().zip(&times[0]).map(|(t, b)| t / b).collect())
    });
    (times.map(median), ratios)
}

fn cast(a: CastArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.elements > 0, "--elements must be positive");
    anyhow::ensure!(a.threads > 0, "--threads must be positive");
    anyhow::ensure!(
        a.seconds.is_finite() && a.seconds > 0.0,
        "--seconds {}: must be a finite number > 0",
        a.seconds
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()
        .context("building the thread pool")?;
    // Deterministic pseudo-normal data spread over the format's range (a few values overflow).
    let spread = a.format.max() / 8.0;
    let mut src = buffer(a.elements)?;
    src.extend((0..a.elements as u64).map(|i| {
        let h = fp8_formats::rng::splitmix64(i);
        let u = (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        let v = ((h >> 8) & 0xffff) as f32 / 65536.0 - 0.5;
        (u + v) * spread
    }));
    let mut dst = buffer(a.elements)?;
    dst.resize(a.elements, 0.0);
    let mut work = buffer(a.elements)?;
    work.extend_from_slice(&src);
    let cast_spec = CastSpec::new(a.format)
        .with_rounding(a.rounding)
        .with_seed(1);
    let qspec = QuantSpec {
        cast: cast_spec,
        scaling: a.scaling,
    };
    let shape = [a.elements];
    let threads = a.threads;
    let (med, ratio) = pool.install(|| {
        let mut copy = || {
            if threads > 1 {
                dst.par_chunks_mut(1 << 16)
                    .zip(src.par_chunks(1 << 16))
                    .for_each(|(d, s)| d.copy_from_slice(s));
            } else {
                dst.copy_from_slice(&src);
            }
            std::hint::black_box(&mut dst);
        };
        // The quantize and cast kernels work in place on `work` (a cast output is its own
        // fixed point, so every call does the same, data-independent work).
        let work = std::cell::RefCell::new(work);
        let mut quant = || {
            std::hint::black_box(quantize(&mut work.borrow_mut(), &shape, &qspec));
        };
        let mut cast = || {
            cast_slice(&mut work.borrow_mut(), &cast_spec, 0);
            std::hint::black_box(&mut work.borrow_mut());
        };
        time_rounds(a.seconds, &mut [&mut copy, &mut quant, &mut cast])
    });
    let [copy_s, quant_s, cast_s] = med;
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
        "quantize_time_over_copy": ratio[1],
        "cast_slice_time_over_copy": ratio[2],
        "note": "quantize = scaling + cast + stats in one pass, in place; cast_slice = plain cast without scaling or stats; copy = memcpy of the same buffer (GB/s counts read + write); *_melem_s from the median time per call; *_vs_copy = kernel throughput / copy throughput (from those medians); *_time_over_copy = median over interleaved rounds of kernel time / copy time in the same round (<= 2 means within 2x of copy)",
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// An empty buffer with room for `n` f32, or an error (instead of an allocation abort) when the
/// memory cannot be had.
fn buffer(n: usize) -> anyhow::Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|e| {
        anyhow::anyhow!(
            "--elements {n}: cannot allocate {:.1} GiB for each of the benchmark's three buffers ({e})",
            n as f64 * 4.0 / (1u64 << 30) as f64
        )
    })?;
    Ok(v)
}
