//! The report's early-warning section and `diagnostics.svg`: does each stability diagnostic
//! ([`crate::diagnostics`]) cross its threshold before a run diverges, and how often in runs
//! that never fail?
//!
//! Failed runs are the diverged ones, each failing at its divergence step. Healthy runs are the
//! converged ones. Stalled runs are neither: they never blew up, so there is no failure step to
//! lead, yet they are no healthy control either; they are left out of both rates.
//!
//! The plot has one panel per diagnostic: up to [`MAX_FAILED`] diverged runs (thin red lines,
//! each ending at its divergence step) next to one healthy run (the first diverged run's recipe
//! and seed at the largest learning rate where it converged, else the baseline at the same rate
//! and seed, else the first converged run), with the threshold dashed. The y axis of the
//! ratio-like diagnostics is logarithmic.

use super::{layout, Area, PlotResult, FONT};
use crate::diagnostics::{Diagnostic, DIAGNOSTICS};
use crate::early_warning::{evaluate_warning, lead_time, Direction, RunSeries};
use crate::outcomes::RunOutcome;
use crate::results::RunResult;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

pub(super) const FILE: &str = "diagnostics.svg";

/// Diverged runs drawn per panel.
const MAX_FAILED: usize = 6;

/// One run's diagnostic series, as the trainer left them in `curves.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDiagnosticSeries {
    pub recipe: String,
    pub lr: f64,
    pub seed: u64,
    pub series: std::collections::BTreeMap<String, Vec<(u64, f64)>>,
}

/// For each result, its diagnostics (when given) and its failure step when it diverged; `None`
/// for stalled runs.
fn runs<'a>(
    results: &'a [RunResult],
    outcomes: &[RunOutcome],
    diags: &'a [RunDiagnosticSeries],
) -> Vec<Run<'a>> {
    results
        .iter()
        .zip(outcomes)
        .filter_map(|(r, o)| {
            let d = diags
                .iter()
                .find(|d| d.recipe == r.recipe && d.lr == r.lr && d.seed == r.seed)?;
            let failure = match o {
                RunOutcome::Diverged => Some(r.diverged_step.unwrap_or(r.steps)),
                RunOutcome::Converged => None,
                RunOutcome::Stalled => return None,
            };
            Some((r, failure, d))
        })
        .collect()
}

fn fmt_rate(k: u64, n: u64, iv: (f64, f64)) -> String {
    if n == 0 {
        "–".into()
    } else {
        format!("{k}/{n} [{:.0}–{:.0} %]", 100.0 * iv.0, 100.0 * iv.1)
    }
}

fn threshold_text(d: &Diagnostic) -> String {
    let op = match d.threshold.direction {
        Direction::Above => ">",
        Direction::Below => "<",
    };
    let v = d.threshold.value;
    if (v - 3f64.sqrt()).abs() < 1e-12 {
        format!("{op} √3 ≈ 1.732")
    } else {
        format!("{op} {v}")
    }
}

/// Writes the "Early warning" section, and the plot when there are diagnostics.
pub(super) fn write_section(
    w: &mut String,
    dir: &Path,
    results: &[RunResult],
    outcomes: &[RunOutcome],
    diags: &[RunDiagnosticSeries],
    baseline: Option<&str>,
) -> PlotResult {
    let _ = writeln!(w, "\n## Early warning\n");
    let runs = runs(results, outcomes, diags);
    if runs.is_empty() {
        let _ = writeln!(
            w,
            "No run left stability diagnostics (runs trained before fp8 recorded them have none)."
        );
        return Ok(());
    }
    let _ = writeln!(
        w,
        "Each diagnostic is measured on logging steps; it *warns* when it crosses its threshold \
         at a step before the divergence (lead time = divergence step − first crossing). Hit \
         rate: diverged runs warned of; false alarms: converged runs in which it crossed at any \
         step; stalled runs count in neither. Wilson 95 % intervals. Thresholds were fixed before \
         any sweep ran (`fp8_stats::diagnostics`), not fitted to these runs.\n"
    );
    let _ = writeln!(
        w,
        "| diagnostic | alarm when | warned of divergence | median lead (steps) | false alarms |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|");
    for d in &DIAGNOSTICS {
        let series: Vec<RunSeries> = runs
            .iter()
            .filter_map(|(_, f, s)| {
                s.series.get(d.name).map(|p| RunSeries {
                    failure_step: *f,
                    points: p.clone(),
                })
            })
            .collect();
        let e = evaluate_warning(&series, &d.threshold);
        let _ = writeln!(
            w,
            "| `{}` ({}) | {} | {} | {} | {} |",
            d.name,
            d.what,
            threshold_text(d),
            fmt_rate(e.hits, e.failed_runs, e.hit_interval),
            e.median_lead_time.map_or("–".into(), |m| format!("{m:.0}")),
            fmt_rate(e.false_alarms, e.healthy_runs, e.false_alarm_interval),
        );
    }
    let _ = writeln!(w, "\nWhy these thresholds:\n");
    for d in &DIAGNOSTICS {
        let _ = writeln!(w, "- `{}` {}: {}.", d.name, threshold_text(d), d.why);
    }

    let failed: Vec<_> = runs.iter().filter(|r| r.1.is_some()).collect();
    let _ = writeln!(w, "\n### Lead time of every diverged run\n");
    if failed.is_empty() {
        let _ = writeln!(w, "No run diverged.");
    } else {
        let _ = writeln!(
            w,
            "Steps from the first crossing to the divergence; – = no warning before it, · = not \
             measured in this run.\n"
        );
        let _ = write!(w, "| recipe | lr | seed | diverged at |");
        for d in &DIAGNOSTICS {
            let _ = write!(w, " `{}` |", d.name);
        }
        let _ = write!(w, "\n|---|---|---|---|");
        for _ in &DIAGNOSTICS {
            let _ = write!(w, "---|");
        }
        let _ = writeln!(w);
        for (r, f, s) in &failed {
            let f = f.unwrap_or(r.steps);
            let _ = write!(
                w,
                "| `{}` | {} | {} | {f} |",
                r.recipe,
                super::fmt_lr(r.lr),
                r.seed
            );
            for d in &DIAGNOSTICS {
                let cell = match s.series.get(d.name) {
                    None => "·".to_string(),
                    Some(p) => {
                        lead_time(p, &d.threshold, f).map_or("–".into(), |l| l.to_string())
                    }
                };
                let _ = write!(w, " {cell} |");
            }
            let _ = writeln!(w);
        }
    }

    // The healthy run to compare with: the first diverged run's recipe and seed at the largest
    // rate where it converged (the same casts, so every diagnostic has a line), else the
    // baseline at the same rate and seed, else the first converged run.
    let converged = |h: &&Run| h.1.is_none();
    let healthy = failed
        .first()
        .and_then(|(r, _, _)| {
            let same_recipe = runs
                .iter()
                .filter(converged)
                .filter(|(h, _, _)| h.recipe == r.recipe && h.seed == r.seed)
                .max_by(|a, b| a.0.lr.total_cmp(&b.0.lr));
            same_recipe.or_else(|| {
                runs.iter().filter(converged).find(|(h, _, _)| {
                    Some(h.recipe.as_str()) == baseline && h.lr == r.lr && h.seed == r.seed
                })
            })
        })
        .or_else(|| runs.iter().find(converged));
    let shown: Vec<_> = failed.iter().take(MAX_FAILED).map(|r| **r).collect();
    if shown.is_empty() && healthy.is_none() {
        return Ok(());
    }
    plot(&dir.join(FILE), &shown, healthy.copied())?;
    let _ = writeln!(
        w,
        "\n![Stability diagnostics of diverged runs next to a healthy one]({FILE})\n"
    );
    Ok(())
}

type Run<'a> = (&'a RunResult, Option<u64>, &'a RunDiagnosticSeries);

fn label(r: &RunResult) -> String {
    format!("{} lr {} s{}", r.recipe, super::fmt_lr(r.lr), r.seed)
}

fn plot(path: &Path, failed: &[Run], healthy: Option<Run>) -> PlotResult {
    const FAILED: RGBColor = RGBColor(214, 39, 40);
    const HEALTHY: RGBColor = RGBColor(31, 119, 180);
    let root = SVGBackend::new(path, (1400, 900)).into_drawing_area();
    let (body, legend) = layout(
        &root,
        "Stability diagnostics: diverged runs and a healthy one",
    )?;
    let panels = body.split_evenly((2, 4));
    for (d, area) in DIAGNOSTICS.iter().zip(panels.iter()) {
        panel(area, d, failed, healthy, FAILED, HEALTHY)?;
    }
    draw_runs_legend(&legend, failed, healthy, FAILED, HEALTHY)?;
    root.present()?;
    Ok(())
}

fn panel(
    area: &Area,
    d: &Diagnostic,
    failed: &[Run],
    healthy: Option<Run>,
    failed_color: RGBColor,
    healthy_color: RGBColor,
) -> PlotResult {
    let all: Vec<&Run> = failed.iter().chain(healthy.as_ref()).collect();
    let finite = |p: &&(u64, f64)| p.1.is_finite();
    let pts: Vec<(u64, f64)> = all
        .iter()
        .filter_map(|r| r.2.series.get(d.name))
        .flat_map(|s| s.iter().filter(finite).copied())
        .collect();
    let log = matches!(
        d.name,
        crate::diagnostics::UPDATE_RATIO_MAX
            | crate::diagnostics::GRAD_NOISE_RATIO
            | crate::diagnostics::SHARPNESS_GROWTH
            | crate::diagnostics::UNDERFLOW_MAX
            | crate::diagnostics::SATURATION_MAX
    );
    let t = d.threshold.value;
    let ys = pts
        .iter()
        .map(|p| p.1)
        .filter(|v| !log || *v > 0.0)
        .chain([t]);
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let x_hi = pts.iter().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let title = format!("{} ({})", d.name, threshold_text(d));
    let runs = (failed, healthy, failed_color, healthy_color);
    if log {
        let y = (lo.max(1e-12) / 2.0..hi * 2.0).log_scale();
        chart_panel(area, &title, x_hi, y, d, runs, |v| v > 0.0)
    } else {
        let pad = 0.05 * (hi - lo).max(1e-9);
        chart_panel(area, &title, x_hi, (lo - pad)..(hi + pad), d, runs, |_| {
            true
        })
    }
}

/// The failed runs, the healthy one, and their colours.
type PanelRuns<'r, 'a> = (&'r [Run<'a>], Option<Run<'a>>, RGBColor, RGBColor);

/// One panel on the y axis `y` (linear or logarithmic): mesh, the runs' lines (values `keep`
/// accepts) and the dashed threshold.
fn chart_panel<Y>(
    area: &Area,
    title: &str,
    x_hi: f64,
    y: Y,
    d: &Diagnostic,
    (failed, healthy, failed_color, healthy_color): PanelRuns,
    keep: impl Fn(f64) -> bool,
) -> PlotResult
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut c = ChartBuilder::on(area)
        .caption(title, (FONT, 15))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x_hi, y)?;
    c.configure_mesh()
        .x_label_formatter(&|v| format!("{v:.0}"))
        .x_labels(4)
        .y_labels(5)
        .label_style((FONT, 11))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    draw_lines(
        &mut c,
        d,
        failed,
        healthy,
        failed_color,
        healthy_color,
        keep,
    )?;
    let t = d.threshold.value;
    c.draw_series(DashedLineSeries::new(
        [(0.0, t), (x_hi, t)],
        6,
        4,
        BLACK.stroke_width(1),
    ))?;
    Ok(())
}

fn draw_lines<'a, DB, CT>(
    c: &mut ChartContext<'a, DB, CT>,
    d: &Diagnostic,
    failed: &[Run],
    healthy: Option<Run>,
    failed_color: RGBColor,
    healthy_color: RGBColor,
    keep: impl Fn(f64) -> bool,
) -> PlotResult
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate<From = (f64, f64)>,
    <DB as DrawingBackend>::ErrorType: 'static,
{
    let line = |r: &Run| -> Vec<(f64, f64)> {
        r.2.series
            .get(d.name)
            .map(|s| {
                s.iter()
                    .filter(|p| p.1.is_finite() && keep(p.1))
                    .map(|&(s, v)| (s as f64, v))
                    .collect()
            })
            .unwrap_or_default()
    };
    // The healthy run first, so the failing ones are drawn over it where they coincide and
    // both stay visible (different colours and widths).
    if let Some(h) = healthy {
        c.draw_series(LineSeries::new(line(&h), healthy_color.stroke_width(3)))?;
    }
    for r in failed {
        c.draw_series(LineSeries::new(
            line(r),
            failed_color.mix(0.7).stroke_width(1),
        ))?;
    }
    Ok(())
}

fn draw_runs_legend(
    area: &Area,
    failed: &[Run],
    healthy: Option<Run>,
    failed_color: RGBColor,
    healthy_color: RGBColor,
) -> PlotResult {
    let mut entries = Vec::new();
    if let Some(h) = healthy {
        entries.push((format!("healthy: {}", label(h.0)), healthy_color));
    }
    for r in failed {
        entries.push((label(r.0), failed_color));
    }
    super::draw_legend(
        area,
        "runs",
        &entries,
        Some("red: diverged runs,\neach line ends at\nits divergence;\ndashed: threshold;\nunsmoothed values\non logging steps"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Outcome;
    use std::collections::BTreeMap;

    fn result(recipe: &str, seed: u64, outcome: Outcome, step: Option<u64>) -> RunResult {
        RunResult {
            recipe: recipe.into(),
            model: "m".into(),
            lr: 0.1,
            seed,
            outcome,
            diverged_step: step,
            final_loss: 1.0,
            best_loss: 1.0,
            initial_loss: Some(5.0),
            spike_count: 0,
            loss_gap: None,
            max_sharpness: None,
            steps: 100,
            run_dir: format!("runs/{recipe}-{seed}"),
        }
    }

    fn diag(recipe: &str, seed: u64, logits: &[f64]) -> RunDiagnosticSeries {
        let pts = logits
            .iter()
            .enumerate()
            .map(|(i, &v)| (10 * i as u64, v))
            .collect();
        RunDiagnosticSeries {
            recipe: recipe.into(),
            lr: 0.1,
            seed,
            series: BTreeMap::from([(crate::diagnostics::ATTN_LOGIT_MAX.to_string(), pts)]),
        }
    }

    #[test]
    fn the_section_counts_hits_false_alarms_and_lead_times_by_hand() {
        // Run a diverges at 40 after the logit crossed 30 at step 20 (lead 20); run b diverges at
        // 20 with no crossing before; c converged and crossed once (a false alarm); d converged
        // below; e stalled and crossed (ignored).
        let results = vec![
            result("a", 0, Outcome::Diverged, Some(40)),
            result("b", 0, Outcome::Diverged, Some(20)),
            result("fp32", 0, Outcome::Converged, None),
            result("d", 0, Outcome::Converged, None),
            result("e", 0, Outcome::Converged, None),
        ];
        let outcomes = vec![
            RunOutcome::Diverged,
            RunOutcome::Diverged,
            RunOutcome::Converged,
            RunOutcome::Converged,
            RunOutcome::Stalled,
        ];
        let diags = vec![
            diag("a", 0, &[5.0, 10.0, 31.0, 50.0]),
            diag("b", 0, &[5.0, 6.0, 40.0]),
            diag("fp32", 0, &[5.0, 35.0, 6.0]),
            diag("d", 0, &[5.0, 6.0, 7.0]),
            diag("e", 0, &[99.0]),
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut md = String::new();
        write_section(
            &mut md,
            dir.path(),
            &results,
            &outcomes,
            &diags,
            Some("fp32"),
        )
        .unwrap();
        let row = md
            .lines()
            .find(|l| l.starts_with("| `attn_logit_max`"))
            .unwrap();
        // 1 of 2 diverged runs warned of, median lead 20, 1 of 2 converged runs alarmed.
        assert!(row.contains("| 1/2 [") && row.contains("| 20 |"), "{row}");
        assert!(row.ends_with("| 1/2 [9–91 %] |"), "{row}");
        let a = md.lines().find(|l| l.starts_with("| `a` |")).unwrap();
        assert!(a.contains("| 40 | 20 |"), "{a}");
        let b = md.lines().find(|l| l.starts_with("| `b` |")).unwrap();
        assert!(b.contains("| 20 | – |"), "{b}");
        // Other diagnostics were not measured in these runs.
        assert!(b.contains(" · |"), "{b}");
        assert!(dir.path().join(FILE).exists());
    }
}
