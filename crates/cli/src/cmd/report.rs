//! `fp8 report DIR`: `report.md` and SVG plots from a sweep directory.
//!
//! Reads `DIR/results.jsonl` and, for each result, the `curves.json` the trainer left in the
//! result's `run_dir` (relative to `DIR`, or absolute). A run without readable curves still counts
//! in the divergence table; it only has no loss or sharpness curve (a warning says which).

use anyhow::Context;
use fp8_stats::report::{
    write_report_with_diagnostics, Curve, CurveKind, ReportOptions, RunDiagnosticSeries,
};
use fp8_stats::results::{read_results, RunResult};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Sweep output directory holding `results.jsonl` (e.g. sweeps/out/paper).
    pub dir: PathBuf,
    /// Where to write report.md and the plots (default: DIR).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Baseline recipe name (default: the first of fp32, bf16, baseline present).
    #[arg(long)]
    pub baseline: Option<String>,
    /// Learning rate of the loss and sharpness plots (default: chosen by the report).
    #[arg(long)]
    pub curve_lr: Option<f64>,
    /// Heading of report.md.
    #[arg(long)]
    pub title: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.dir.join("results.jsonl");
    if !path.exists() {
        anyhow::bail!(
            "{} does not exist: run `fp8 sweep` into {} first",
            path.display(),
            args.dir.display()
        );
    }
    let read = read_results(&path)?;
    for w in &read.warnings {
        eprintln!("warning: {w}");
    }
    let (curves, diagnostics) = load_curves(&args.dir, &read.results);
    let mut opts = ReportOptions {
        baseline: args.baseline,
        curve_lr: args.curve_lr,
        ..Default::default()
    };
    if let Some(t) = args.title {
        opts.title = t;
    }
    let out = args.out.unwrap_or(args.dir);
    write_report_with_diagnostics(&out, &read.results, &curves, &diagnostics, &opts)
        .with_context(|| format!("writing the report into {}", out.display()))?;
    eprintln!(
        "report: {} runs, {} curves; wrote {}",
        read.results.len(),
        curves.len(),
        out.join("report.md").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The loss and sharpness curves, and the stability diagnostics, of every result whose
/// `curves.json` is readable.
pub fn load_curves(dir: &Path, results: &[RunResult]) -> (Vec<Curve>, Vec<RunDiagnosticSeries>) {
    let mut curves = Vec::new();
    let mut diagnostics = Vec::new();
    for r in results {
        let c = match fp8_stats::results::Curves::read(&dir.join(&r.run_dir)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("warning: no curves for {}: {e:#}", r.run_dir);
                continue;
            }
        };
        if !c.diagnostics.is_empty() {
            diagnostics.push(RunDiagnosticSeries {
                recipe: r.recipe.clone(),
                lr: r.lr,
                seed: r.seed,
                series: c.diagnostics,
            });
        }
        for (kind, points) in [
            (CurveKind::Loss, c.losses),
            (CurveKind::Sharpness, c.sharpness),
        ] {
            if !points.is_empty() {
                curves.push(Curve {
                    recipe: r.recipe.clone(),
                    lr: r.lr,
                    seed: r.seed,
                    kind,
                    points,
                });
            }
        }
    }
    (curves, diagnostics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_with_null_losses_load_as_nan() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("runs/a");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            run.join("curves.json"),
            r#"{"losses":[[0,5.0],[1,null]],"val_losses":[],"sharpness":[[0,0.5]]}"#,
        )
        .unwrap();
        let r = RunResult {
            recipe: "fp32".into(),
            model: "tiny".into(),
            lr: 0.1,
            seed: 1,
            outcome: fp8_stats::results::Outcome::Diverged,
            diverged_step: Some(1),
            final_loss: f64::NAN,
            best_loss: 5.0,
            initial_loss: Some(5.0),
            spike_count: 0,
            loss_gap: None,
            max_sharpness: None,
            steps: 1,
            run_dir: "runs/a".into(),
        };
        let missing = RunResult {
            run_dir: "runs/missing".into(),
            ..r.clone()
        };
        let (c, _) = load_curves(dir.path(), &[r, missing]);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].kind, CurveKind::Loss);
        assert_eq!(c[0].points[0], (0, 5.0));
        assert!(c[0].points[1].1.is_nan());
        assert_eq!(c[1].kind, CurveKind::Sharpness);
    }
}
