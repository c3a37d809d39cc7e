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
        ..Default::default()
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

/// A run with explicit losses (best = final when finite, as for a run that ends at its best).
fn run_with(recipe: &str, lr: f64, seed: u64, final_loss: f64, diverged: bool) -> RunResult {
    let mut r = run(recipe, lr, seed, diverged);
    r.final_loss = final_loss;
    r.best_loss = if final_loss.is_finite() {
        final_loss
    } else {
        4.0
    };
    r
}

#[test]
fn stability_sections_by_hand() {
    // fp32 (baseline) and e5m2 at lr 1e-3 and 1e-2, seeds 0–2, every initial loss 10.
    //   fp32: 3.0 3.1 3.2 | 3.5 3.6 3.7          (all converged)
    //   e5m2: 3.1 3.3 3.5 | NaN (diverged), 9.9 (stalled: progress 0.1/7 < 0.2), 3.8
    let fp32 = [[3.0, 3.1, 3.2], [3.5, 3.6, 3.7]];
    let e5m2 = [[3.1, 3.3, 3.5], [f64::NAN, 9.9, 3.8]];
    let mut results = Vec::new();
    let mut curves = Vec::new();
    for (li, &lr) in [1e-3, 1e-2].iter().enumerate() {
        for seed in 0..3u64 {
            let s = seed as usize;
            results.push(run_with("fp32", lr, seed, fp32[li][s], false));
            results.push(run_with(
                "e5m2",
                lr,
                seed,
                e5m2[li][s],
                e5m2[li][s].is_nan(),
            ));
            for recipe in ["fp32", "e5m2"] {
                curves.push(Curve {
                    recipe: recipe.into(),
                    lr,
                    seed,
                    kind: CurveKind::Loss,
                    points: vec![(0, 10.0), (1, 5.0)],
                });
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    write_report(dir.path(), &results, &curves).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    let has = |line: &str| assert!(md.contains(line), "missing {line:?} in\n{md}");
    // Outcomes: 2 of 6 failed, Wilson [10, 70] %.
    has("| `e5m2` | 6 | 4 | 1 | 1 | 2/6 [10–70 %] |");
    has("| `fp32` | 6 | 6 | 0 | 0 | 0/6 [0–39 %] |");
    has("| `e5m2` | 3/0/0 | 1/1/1 |");
    // The loss window of the divergence section now also excludes the stall.
    has("| `e5m2` | 1e-3 – 1e-3 | 0.00 |");
    // Sensitivity: e5m2 L = 3.3, (10 + 9.9 + 3.8)/3 = 7.9 → S = 2.3; fp32 L = 3.1, 3.6 → 0.25.
    assert!(md.contains("| `e5m2` | 3 | 2.300 | ["), "{md}");
    assert!(md.contains("| 1e-3 | 3.300 | 1e-3 – 1e-3 | 0.00 |"), "{md}");
    assert!(md.contains("| `fp32` | 3 | 0.250 | ["), "{md}");
    // Paired: gaps 0.1, 0.2, 0.3 (1e-3) and 0.1 (1e-2, seed 2): mean 0.175, t interval
    // [0.023, 0.327], detectable 2.80·SE = 0.134. Failures 2/6 v 0/6: +33 pp, Newcombe
    // [−12, +70] pp, Fisher p = 30/66 = 0.455; at 6 v 6 from p0 = 0 only x ≥ 5 of 6 rejects, so
    // the power 6p⁵(1−p) + p⁶ reaches 0.8 at p = 0.8601 → +86 pp.
    has("| `e5m2` | 6 | +0.175 [0.023, 0.327] | 0.134 | 2/6 / 0/6 | +33 pp [-12, +70] | 0.455 | +86 pp |");
    for (file, title) in [
        ("final_loss.svg", "Final loss vs learning rate, every seed"),
        ("lr_sensitivity.svg", "Learning-rate sensitivity per recipe"),
        ("outcomes.svg", "Outcomes per recipe and learning rate"),
        // Curves at the top of fp32's window, 1e-2, where only seed 2 of e5m2 trained.
        ("loss_gap_curves.svg", "Loss gap to fp32 at lr 1e-2"),
    ] {
        let svg = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(svg.contains(title), "{file} lacks its title");
        assert!(!svg.contains("NaN"), "{file} has NaN coordinates");
        let has = |t: &str| svg.lines().any(|l| l.trim() == t);
        let names = if file == "loss_gap_curves.svg" {
            vec!["e5m2"]
        } else {
            vec!["fp32", "e5m2"]
        };
        assert!(names.iter().all(|n| has(n)), "{file} lacks the recipes");
        assert!(
            md.contains(&format!("]({file})")),
            "report.md does not link {file}"
        );
    }
}

#[test]
fn edge_cases_write_without_panicking() {
    // One seed, everything diverged, non-finite losses, no curves, a baseline with no pairs.
    let dir = tempfile::tempdir().unwrap();
    let results = vec![
        run_with("fp32", 1e-3, 0, f64::NAN, true),
        run_with("fp32", 1e-2, 0, f64::INFINITY, true),
        run_with("b", 1e-4, 7, 3.0, false),
    ];
    write_report(dir.path(), &results, &[]).unwrap();
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("could not be judged"), "{md}");
    assert!(
        md.contains("No recipe has runs paired with `fp32`'s."),
        "{md}"
    );
    // No results at all.
    write_report(dir.path(), &[], &[]).unwrap();
    // Bad parameters are an error naming the field, not a panic.
    let mut opts = ReportOptions::default();
    opts.analysis.stall.min_progress = 2.0;
    let err = write_report_with(dir.path(), &results, &[], &opts).unwrap_err();
    assert!(err.to_string().contains("min_progress"), "{err}");
}
