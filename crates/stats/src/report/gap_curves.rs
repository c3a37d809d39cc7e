//! `loss_gap_curves.svg`: each recipe's smoothed loss minus the baseline's, same seed and step.
//!
//! Loss curves of recipes that train about equally lie on top of each other, and the eye cannot
//! read a difference of a few hundredths of a nat off two overlapping lines. So this plot draws
//! the difference itself: [`crate::loss_gap::loss_gap_series`] (an EMA with β = 0.9 of the
//! per-step difference, stopping where either run becomes non-finite), one line per seed, with
//! zero marked. Pairs where either run failed (diverged or stalled) are left out: their gap is
//! the failure, which the outcome map shows, and one blow-up would flatten every other line. The
//! plot thus shows how much worse a recipe trains *when it trains*, like the paired loss gap.

use super::{color, draw_legend, layout, Curve, PlotResult, FONT, SIZE};
use crate::loss_gap::{loss_gap_series, DEFAULT_GAP_BETA};
use plotters::prelude::*;
use std::collections::BTreeSet;
use std::path::Path;

/// (recipe, lr bits, seed) of the runs that failed.
pub(super) type FailedRuns<'a> = BTreeSet<(&'a str, u64, u64)>;

pub(super) const FILE: &str = "loss_gap_curves.svg";

/// Draws the plot for the loss `curves` at rate `lr`. Returns `false` (and writes nothing) when no
/// recipe has a curve whose seed the baseline also has, with neither run failed.
pub(super) fn plot(
    path: &Path,
    recipes: &[String],
    curves: &[&Curve],
    baseline: &str,
    lr: f64,
    failed: &FailedRuns,
) -> Result<bool, Box<dyn std::error::Error>> {
    let ok = |c: &Curve| !failed.contains(&(c.recipe.as_str(), c.lr.to_bits(), c.seed));
    let mut lines: Vec<(usize, Vec<(u64, f64)>)> = Vec::new();
    for (ri, recipe) in recipes.iter().enumerate() {
        if recipe == baseline {
            continue;
        }
        for c in curves.iter().filter(|c| &c.recipe == recipe && ok(c)) {
            let Some(b) = curves
                .iter()
                .find(|b| b.recipe == baseline && b.seed == c.seed && ok(b))
            else {
                continue;
            };
            let g = loss_gap_series(&c.points, &b.points, DEFAULT_GAP_BETA);
            if !g.is_empty() {
                lines.push((ri, g));
            }
        }
    }
    if lines.is_empty() {
        return Ok(false);
    }
    draw(path, recipes, &lines, baseline, lr)?;
    Ok(true)
}

fn draw(
    path: &Path,
    recipes: &[String],
    lines: &[(usize, Vec<(u64, f64)>)],
    baseline: &str,
    lr: f64,
) -> PlotResult {
    let values = lines.iter().flat_map(|l| l.1.iter().map(|p| p.1));
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let pad = if hi > lo { 0.08 * (hi - lo) } else { 0.1 };
    let (y_lo, y_hi) = (lo - pad, hi + pad);
    let steps = lines.iter().flat_map(|l| l.1.iter().map(|p| p.0));
    let (x_lo, x_hi) = steps.fold((u64::MAX, 0), |(a, b), s| (a.min(s), b.max(s)));
    let x_hi = x_hi.max(x_lo + 1);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let title = format!("Loss gap to {baseline} at lr {}", super::fmt_lr(lr));
    let (plot, legend) = layout(&root, &title)?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d(x_lo as f64..x_hi as f64, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc("training step")
        .y_desc(format!("smoothed loss − {baseline} (nats/token)"))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    chart.draw_series(LineSeries::new(
        [(x_lo as f64, 0.0), (x_hi as f64, 0.0)],
        BLACK.stroke_width(1),
    ))?;
    let mut entries: Vec<(String, RGBColor)> = Vec::new();
    for (ri, line) in lines {
        let c = color(recipes, &recipes[*ri]);
        chart.draw_series(LineSeries::new(
            line.iter().map(|&(s, v)| (s as f64, v)),
            c.mix(0.85).stroke_width(2),
        ))?;
        if !entries.iter().any(|e| e.0 == recipes[*ri]) {
            entries.push((recipes[*ri].clone(), c));
        }
    }
    draw_legend(
        &legend,
        "recipe",
        &entries,
        Some("one line per seed:\nEMA (β = 0.9) of the\nloss minus the baseline's,\nsame seed and step;\nabove 0 = worse;\npairs with a failed\nrun are left out"),
    )?;
    root.present()?;
    Ok(())
}
