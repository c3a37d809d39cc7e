//! Drive the engine from Rust: one run, then a sweep, in this process; then the same sweep as
//! worker processes of an `fp8` binary when one is given.
//!
//! ```sh
//! cargo run --release -p fp8-train --example train_and_sweep -- [OUT_DIR] [PATH/TO/fp8]
//! ```

use fp8_train::backend::CpuTrain;
use fp8_train::observer::{Observer, StepDone};
use fp8_train::sweep::{run_in_process, run_workers, Shard, SweepFile};
use fp8_train::{train, Silent, TrainConfig};
use std::path::PathBuf;

/// Prints every tenth step.
struct Every10;

impl Observer for Every10 {
    fn step(&mut self, s: &StepDone) {
        if s.done.is_multiple_of(10) {
            println!("step {}/{}: loss {:.4}", s.done, s.total, s.loss);
        }
    }
    fn note(&mut self, line: &str) {
        println!("{line}");
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "runs/example".into()));
    let recipes = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let device = Default::default();

    // One run.
    let cfg = TrainConfig {
        recipe: recipes.join("bit_reduction_e8m4.ron"),
        model: "tiny".into(),
        data: "synthetic:vocab=64,order=1,tokens=50000".into(),
        steps: 40,
        batch: 8,
        seq: 16,
        lr: 1e-2,
        warmup: 5,
        run_dir: Some(out.join("one-run")),
        ..TrainConfig::default()
    };
    // `resume: true` continues the run if this example ran before (same settings only).
    let summary = train::<CpuTrain>(&cfg, &device, true, &mut Every10)?;
    println!(
        "{}: {} after {} steps",
        cfg.recipe_name(),
        summary.outcome,
        summary.steps
    );

    // A sweep: two recipes × two seeds, with the run's other options.
    let sweep = SweepFile {
        recipes: vec![
            recipes.join("fp32.ron"),
            recipes.join("bit_reduction_e8m4.ron"),
        ],
        learning_rates: vec![cfg.lr],
        seeds: vec![0, 1],
        steps: cfg.steps,
        models: vec![cfg.model.clone()],
        data: vec![cfg.data.clone()],
        baseline: None,
        train: Some(cfg.clone()),
        slurm: None,
    };
    let report = run_in_process::<CpuTrain>(
        &sweep,
        &out.join("sweep"),
        Shard::all(),
        &device,
        &mut Silent,
    )?;
    println!(
        "sweep: {} run now, {} already done; results in {}",
        report.finished,
        report.skipped,
        out.join("sweep/results.jsonl").display()
    );

    // The same grid as worker processes (each point is then trained by `fp8 train`).
    if let Some(fp8) = args.next() {
        let report = run_workers(
            &sweep,
            &out.join("sweep-workers"),
            Shard::all(),
            2,
            fp8.as_ref(),
            &mut Silent,
        )?;
        println!(
            "workers: {} run, {} failed",
            report.finished,
            report.failed.len()
        );
    }
    Ok(())
}
