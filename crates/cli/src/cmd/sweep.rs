//! `fp8 sweep`: run a grid of training runs in parallel worker processes.

use crate::progress::SweepProgress;
use fp8_train::sweep::{run_workers, Shard, SweepFile};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Sweep file (RON): `recipes`, `learning_rates`, `seeds`, `steps`, and optionally `models`,
    /// `data`, `baseline` and `train` (other `fp8 train` options).
    pub sweep: PathBuf,
    /// Worker processes running at once (default: the number of CPU cores on the CPU; 1 when the
    /// sweep's `train.device` is a GPU, which the workers would otherwise share).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Run only grid points whose index is i modulo n (`i/n`), for cluster job arrays.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Output directory (default `sweeps/out/<sweep file stem>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sweep = SweepFile::from_file(&args.sweep)?;
    let out = args.out.unwrap_or_else(|| {
        PathBuf::from("sweeps/out").join(args.sweep.file_stem().unwrap_or_default())
    });
    let jobs = args.jobs.unwrap_or_else(|| sweep.default_jobs());
    let exe = std::env::current_exe()?;
    let shard = args.shard.unwrap_or(Shard::all());
    let report = run_workers(&sweep, &out, shard, jobs, &exe, &mut SweepProgress)?;
    eprintln!(
        "sweep: {} finished now, {} were already done, {} failed, {} duplicate(s) dropped; \
         results in {}",
        report.finished,
        report.skipped,
        report.failed.len(),
        report.duplicates,
        out.join("results.jsonl").display()
    );
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
