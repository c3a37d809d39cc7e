//! End-to-end: a small sweep in, report.md and three SVGs out.

use fp8_stats::report::{write_report, write_report_with, Curve, CurveKind, ReportOptions};
use fp8_stats::results::{Outcome, RunResult};

fn run(recipe: &str, lr: f64, seed: u64, diverged: bool) -> RunResult {
    RunResult {
        recipe: recipe.into(),
        model: "gpt2-tiny".into(),
        lr,
        seed,
        outcome: if diverged {
            Outcome::Diverged
        } else {
            Outcome::Converged
        },
        diverged_step: diverged.then_some(50),
        final_loss: if diverged { f64::NAN } else { 3.0 },
        best_loss: 3.0,
        initial_loss: None,
        spike_count: diverged as u64,
        loss_gap: Some(0.1),
        max_sharpness: Some(1.0),
        steps: 100,
        run_dir: format!("runs/{recipe}-{lr:e}-{seed}"),
    }
}

fn curve(recipe: &str, lr: f64, seed: u64, kind: CurveKind, diverged: bool) -> Curve {
    let points = (0..100u64)
        .map(|s| {
            let v = 10.0 / (1.0 + s as f64 / 10.0) + 2.0;
            (s, if diverged && s > 60 { f64::NAN } else { v })
        })
        .collect();
    Curve {
        recipe: recipe.into(),
        lr,
        seed,
        kind,
        points,
    }
}

#[test]
fn writes_markdown_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    let mut curves = Vec::new();
    for &lr in &[1e-4, 1e-3, 1e-2] {
        for seed in 0..3 {
            // fp32 diverges only at 1e-2; e5m2 diverges from 1e-3 on (one seed there).
            results.push(run("fp32", lr, seed, lr > 5e-3));
            let d = lr > 5e-3 || (lr > 5e-4 && seed == 0);
            results.push(run("e5m2", lr, seed, d));
            for kind in [CurveKind::Loss, CurveKind::Sharpness] {
                curves.push(curve("fp32", lr, seed, kind, lr > 5e-3));
                curves.push(curve("e5m2", lr, seed, kind, d));
            }
        }
    }
    write_report(dir.path(), &results, &curves).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("Baseline recipe: `fp32`"), "{md}");
    assert!(
        md.contains("| recipe | lr 1e-4 | lr 1e-3 | lr 1e-2 |"),
        "{md}"
    );
    // fp32 first (baseline), 0/3 → [0, 56 %]; e5m2 1/3 at 1e-3 → [6, 79 %].
    assert!(
        md.contains("| `fp32` | **0/3** [0–56 %] | **0/3** [0–56 %] | 3/3 [44–100 %] |"),
        "{md}"
    );
    assert!(
        md.contains("| `e5m2` | **0/3** [0–56 %] | 1/3 [6–79 %] | 3/3 [44–100 %] |"),
        "{md}"
    );
    assert!(
        md.contains("| `fp32` | 1e-4 – 1e-3 | 1.00 | (baseline) |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| `e5m2` | 1e-4 – 1e-4 | 0.00 | -1.00 decades; **misses part of baseline window** |"
        ),
        "{md}"
    );
    // Curves default to the top of the baseline window.
    assert!(
        md.contains("![Training loss per recipe at lr 1e-3](loss_curves.svg)"),
        "{md}"
    );
    for (file, title) in [
        ("divergence_rate.svg", "Divergence rate vs learning rate"),
        ("loss_curves.svg", "Training loss per recipe at lr 1e-3"),
        ("sharpness.svg", "Logit sharpness per recipe at lr 1e-3"),
    ] {
        let svg = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(svg.starts_with("<svg"), "{file}");
        assert!(svg.contains(title), "{file} lacks its title");
        // plotters writes each text's content on its own line.
        let has = |t: &str| svg.lines().any(|l| l.trim() == t);
        assert!(has("fp32") && has("e5m2"), "{file} lacks the legend");
        assert!(!svg.contains("NaN"), "{file} has NaN coordinates");
    }
}

#[test]
fn empty_inputs_and_explicit_options() {
    let dir = tempfile::tempdir().unwrap();
    write_report(dir.path(), &[], &[]).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("No results"));
    assert!(!dir.path().join("divergence_rate.svg").exists());

    let results = vec![run("a", 1e-3, 0, false), run("b", 1e-3, 0, true)];
    let opts = ReportOptions {
        title: "T".into(),
        baseline: Some("b".into()),
        curve_lr: Some(1e-3),
    };
    write_report_with(dir.path(), &results, &[], &opts).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.starts_with("# T\n"));
    assert!(
        md.contains("| `a` | 1e-3 – 1e-3 | 0.00 | no baseline window |"),
        "{md}"
    );
    assert!(md.contains("No Training loss curves at lr 1e-3"), "{md}");
}
