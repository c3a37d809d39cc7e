//! Writes a report from a synthetic sweep, to look at the plots:
//! `cargo run -p fp8-stats --example demo_report -- /tmp/report`.

use fp8_stats::report::{Curve, CurveKind};
use fp8_stats::results::{Outcome, RunResult};
use fp8_stats::{detect_divergence, DivergenceRule};

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "report-demo".into());
    let (results, curves) = fp8_stats_demo::sweep();
    fp8_stats::write_report(std::path::Path::new(&dir), &results, &curves)?;
    println!("wrote {dir}/report.md");
    Ok(())
}

mod fp8_stats_demo {
    use super::*;
    use fp8_formats::rng::splitmix64 as hash;

    /// A deterministic fake sweep: recipes get less stable at higher learning rates, the more so
    /// the fewer bits they keep; the most fragile one also stalls for some seeds at the smallest
    /// rate.
    pub fn sweep() -> (Vec<RunResult>, Vec<Curve>) {
        let recipes = [
            ("fp32", 0.0),
            ("bf16", 0.1),
            ("e4m3-delayed", 0.5),
            ("e5m2-bitmask", 1.0),
        ];
        let lrs: [f64; 5] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2];
        let mut results = Vec::new();
        let mut curves = Vec::new();
        for (ri, (recipe, fragility)) in recipes.iter().enumerate() {
            for (li, &lr) in lrs.iter().enumerate() {
                for seed in 0..5u64 {
                    let h = hash(ri as u64 * 1000 + li as u64 * 10 + seed);
                    // Divergence probability grows with lr and fragility.
                    let p = ((li as f64 - 2.5 + 2.0 * fragility) / 2.0).clamp(0.0, 1.0);
                    let diverges = (h % 1000) as f64 / 1000.0 < p;
                    let div_at = 200 + h % 500;
                    let mut loss = Vec::new();
                    let mut sharp = Vec::new();
                    for step in (0..1000u64).step_by(5) {
                        let t = step as f64;
                        let base = 3.0 + 7.8 * (-t / (150.0 / (lr / 1e-3).sqrt())).exp();
                        let noise = 0.05 * ((hash(step + seed * 7919) % 1000) as f64 / 500.0 - 1.0);
                        let mut l = base + noise + 0.05 * fragility;
                        // The most fragile recipe barely learns at the smallest rate: stalled.
                        if *fragility >= 1.0 && li == 0 && seed % 2 == 0 {
                            l = 10.8 - 0.3 * t / 1000.0 + noise;
                        }
                        if diverges && step >= div_at {
                            l = if step > div_at + 100 {
                                f64::NAN
                            } else {
                                l * (1.0 + (t - div_at as f64) / 20.0)
                            };
                        }
                        loss.push((step, l));
                        if step % 50 == 0 {
                            let s = 0.4
                                + 0.3 * fragility * t / 1000.0
                                + 0.02 * noise
                                + if diverges && step >= div_at { 5.0 } else { 0.0 };
                            sharp.push((step, s));
                        }
                    }
                    let d = detect_divergence(&loss, &DivergenceRule::default());
                    let finite: Vec<f64> =
                        loss.iter().map(|p| p.1).filter(|v| v.is_finite()).collect();
                    results.push(RunResult {
                        recipe: recipe.to_string(),
                        model: "gpt2-tiny".into(),
                        lr,
                        seed,
                        outcome: if d.is_some() {
                            Outcome::Diverged
                        } else {
                            Outcome::Converged
                        },
                        diverged_step: d.map(|d| d.step),
                        final_loss: loss.last().unwrap().1,
                        best_loss: finite.iter().cloned().fold(f64::INFINITY, f64::min),
                        initial_loss: None,
                        spike_count: fp8_stats::count_spikes(&loss, &Default::default()),
                        loss_gap: Some(0.05 * fragility),
                        max_sharpness: sharp.iter().map(|p| p.1).reduce(f64::max),
                        steps: d.map_or(1000, |d| d.step + 1),
                        run_dir: format!("runs/{recipe}-lr{lr:e}-s{seed}"),
                    });
                    curves.push(Curve {
                        recipe: recipe.to_string(),
                        lr,
                        seed,
                        kind: CurveKind::Loss,
                        points: loss,
                    });
                    curves.push(Curve {
                        recipe: recipe.to_string(),
                        lr,
                        seed,
                        kind: CurveKind::Sharpness,
                        points: sharp,
                    });
                }
            }
        }
        (results, curves)
    }
}
