//! The sweep report: `report.md` and three SVG plots, written from `results.jsonl` and curves.
//!
//! What the paper's argument needs, in order:
//! 1. **Divergence rate** per recipe × learning rate, `k/n` diverged seeds with a Wilson 95 %
//!    interval (few seeds per cell, so the interval matters more than the point estimate).
//! 2. **Stable learning-rate window** per recipe ([`crate::window`]) next to the baseline's: a
//!    recipe that narrows the window is not a drop-in replacement even if its best run is fine.
//! 3. **Outcomes** per recipe and per recipe × learning rate: converged, diverged or stalled
//!    ([`crate::outcomes`]).
//! 4. **Learning-rate sensitivity** per recipe with its bootstrap interval, the best rate and the
//!    stable window on the loss ([`crate::sensitivity`]).
//! 5. **Paired comparison with the baseline** ([`crate::paired`]): mean final-loss gap with its
//!    paired t interval, failure rates with Fisher's exact test and Newcombe's interval, and the
//!    smallest gap and failure-rate increase the sweep could detect.
//! 6. Plots: divergence rate vs learning rate with interval bars (`divergence_rate.svg`), final
//!    loss vs learning rate with every seed and the paired difference to the baseline
//!    (`final_loss.svg`), sensitivity with interval bars (`lr_sensitivity.svg`), the outcome map
//!    (`outcomes.svg`), loss curves per recipe at one learning rate (`loss_curves.svg`, raw and
//!    EMA-smoothed), their smoothed difference to the baseline (`loss_gap_curves.svg`), and logit
//!    sharpness over steps (`sharpness.svg`).
//! 7. **Early warning** from the runs' stability diagnostics ([`crate::diagnostics`]): each
//!    diagnostic's hit rate, false-alarm rate and lead time, every diverged run's lead times, and
//!    the diagnostics of diverged runs next to a healthy one (`diagnostics.svg`).
//!
//! A run's initial loss (for the stall rule and the sensitivity's cap) is the first finite point
//! of its loss curve; runs without a curve take the median of their model's runs.
//!
//! Plots are SVG: text stays text, so no system fonts are needed to *write* them (plotters' `ttf`
//! feature is off; label sizes are estimated) and any browser renders them. Every plot has a
//! title, axis labels and a legend, so it reads without `report.md`.
//!
//! The baseline recipe is [`ReportOptions::baseline`], else the first of `fp32`, `bf16`,
//! `baseline` that appears in the results. The curves' learning rate is
//! [`ReportOptions::curve_lr`], else the top of the baseline's stable window (the baseline is still
//! fine there and the recipes' differences show most), else the swept rate with loss curves for
//! the most recipes (ties: the largest rate).
//!
//! Loss plots take their y range from the healthy curves (up to 1.15 × the largest initial loss),
//! sharpness plots up to 1.1 × the 99th percentile; a curve leaving the range is cut at the top
//! edge and, if it never returns, marked with ×, so one blow-up does not flatten everything else.

use crate::analysis::{analyze, AnalysisParams};
use crate::loss_gap::ema;
use crate::outcomes::RunOutcome;
use crate::results::{Outcome, RunResult};
use crate::wilson::wilson95;
use crate::window::stable_lr_window;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;
use std::path::Path;

mod gap_curves;
mod stability;
mod warnings;

pub use warnings::RunDiagnosticSeries;

/// What a curve measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CurveKind {
    /// Training loss per step.
    Loss,
    /// Logit sharpness φ per evaluation step.
    Sharpness,
}

/// One run's time series, `(step, value)` in step order; values may be non-finite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub recipe: String,
    pub lr: f64,
    pub seed: u64,
    pub kind: CurveKind,
    pub points: Vec<(u64, f64)>,
}

/// Choices the report would otherwise make itself (see module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportOptions {
    /// Heading of `report.md`.
    pub title: String,
    /// The reference recipe for the window comparison.
    pub baseline: Option<String>,
    /// Learning rate of the loss and sharpness plots.
    pub curve_lr: Option<f64>,
    /// Stall rule, sensitivity and paired-comparison parameters.
    pub analysis: AnalysisParams,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            title: "Precision stability sweep".into(),
            baseline: None,
            curve_lr: None,
            analysis: AnalysisParams::default(),
        }
    }
}

/// Names tried, in order, when no baseline is given.
pub const BASELINE_CANDIDATES: [&str; 3] = ["fp32", "bf16", "baseline"];

const DIVERGENCE_SVG: &str = "divergence_rate.svg";
const LOSS_SVG: &str = "loss_curves.svg";
const SHARPNESS_SVG: &str = "sharpness.svg";
const SIZE: (u32, u32) = (1000, 620);
/// EMA decay of the drawn loss curves (≈ 10 logged points of memory), the same smoothing as the
/// loss gap ([`crate::loss_gap`]).
const CURVE_EMA_BETA: f64 = crate::loss_gap::DEFAULT_GAP_BETA;
const FONT: &str = "sans-serif";

/// Tableau 10: distinct, colour-blind-friendlier than plotters' default palette.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Writes `report.md` and the plots into `dir` (created if missing) with default options.
pub fn write_report(dir: &Path, results: &[RunResult], curves: &[Curve]) -> io::Result<()> {
    write_report_with(dir, results, curves, &ReportOptions::default())
}

/// [`write_report`] with explicit choices.
pub fn write_report_with(
    dir: &Path,
    results: &[RunResult],
    curves: &[Curve],
    opts: &ReportOptions,
) -> io::Result<()> {
    write_report_with_diagnostics(dir, results, curves, &[], opts)
}

/// [`write_report_with`] plus the early-warning section from the runs' stability diagnostics.
pub fn write_report_with_diagnostics(
    dir: &Path,
    results: &[RunResult],
    curves: &[Curve],
    diagnostics: &[RunDiagnosticSeries],
    opts: &ReportOptions,
) -> io::Result<()> {
    opts.analysis
        .validate()
        .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
    std::fs::create_dir_all(dir)?;
    let recipes = recipe_order(results, curves, opts);
    let baseline = opts.baseline.clone().or_else(|| {
        BASELINE_CANDIDATES
            .iter()
            .find(|c| recipes.iter().any(|r| r == *c))
            .map(|c| c.to_string())
    });
    let lrs = sorted_lrs(results.iter().map(|r| r.lr));
    let cells = divergence_cells(results);
    let initial = initial_losses(results, curves);
    let analysis = analyze(results, &initial, baseline.as_deref(), &opts.analysis);

    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# {}\n", opts.title);
    let models: BTreeSet<&str> = results.iter().map(|r| r.model.as_str()).collect();
    let seeds: BTreeSet<u64> = results.iter().map(|r| r.seed).collect();
    let _ =
        writeln!(
        w,
        "{} runs: {} recipes × {} learning rates, {} seeds; model(s): {}. Baseline recipe: {}.\n",
        results.len(),
        recipes.len(),
        lrs.len(),
        seeds.len(),
        if models.is_empty() {
            "—".to_string()
        } else {
            models.into_iter().collect::<Vec<_>>().join(", ")
        },
        baseline.as_deref().map_or("none identified".into(), |b| format!("`{b}`"))
    );

    // (a) Divergence table.
    let _ = writeln!(w, "## Divergence rate\n");
    let _ = writeln!(
        w,
        "Cells: diverged seeds / seeds, then the Wilson 95 % interval of the rate. A run diverges \
         at its first non-finite loss or loss above a multiple of its initial loss (see \
         `fp8_stats::divergence`). Bold: every seed converged.\n"
    );
    let _ = write!(w, "| recipe |");
    for lr in &lrs {
        let _ = write!(w, " lr {} |", fmt_lr(*lr));
    }
    let _ = write!(w, "\n|---|");
    for _ in &lrs {
        let _ = write!(w, "---|");
    }
    let _ = writeln!(w);
    for recipe in &recipes {
        let _ = write!(w, "| `{recipe}` |");
        for lr in &lrs {
            match cells.get(&(recipe.clone(), lr.to_bits())) {
                None => {
                    let _ = write!(w, " – |");
                }
                Some(&(k, n)) => {
                    let (lo, hi) = wilson95(k, n);
                    let frac = format!("{k}/{n}");
                    let frac = if k == 0 { format!("**{frac}**") } else { frac };
                    let _ = write!(w, " {frac} [{:.0}–{:.0} %] |", lo * 100.0, hi * 100.0);
                }
            }
        }
        let _ = writeln!(w);
    }

    // (b) Stable windows.
    let _ = writeln!(w, "\n## Stable learning-rate window\n");
    let _ = writeln!(
        w,
        "The widest contiguous range of swept learning rates where every seed converged, i.e. \
         neither diverged nor stalled (`fp8_stats::window`, outcomes below); width in decades, \
         log10(hi/lo).\n"
    );
    let windows: BTreeMap<&str, Option<(f64, f64)>> = recipes
        .iter()
        .map(|r| {
            let obs: Vec<(f64, bool)> = results
                .iter()
                .zip(&analysis.outcomes)
                .filter(|(x, _)| &x.recipe == r)
                .map(|(x, o)| (x.lr, !o.failed()))
                .collect();
            (r.as_str(), stable_lr_window(&obs))
        })
        .collect();
    let base_win = baseline
        .as_deref()
        .and_then(|b| windows.get(b).copied().flatten());
    let _ = writeln!(w, "| recipe | window | width (decades) | vs baseline |");
    let _ = writeln!(w, "|---|---|---|---|");
    for recipe in &recipes {
        let win = windows[recipe.as_str()];
        let (range, width) = match win {
            None => ("none".to_string(), "–".to_string()),
            Some((lo, hi)) => (
                format!("{} – {}", fmt_lr(lo), fmt_lr(hi)),
                format!("{:.2}", decades(lo, hi)),
            ),
        };
        let vs = if Some(recipe.as_str()) == baseline.as_deref() {
            "(baseline)".to_string()
        } else {
            compare_windows(win, base_win)
        };
        let _ = writeln!(w, "| `{recipe}` | {range} | {width} | {vs} |");
    }

    // Per-recipe summary of the other run statistics.
    let _ = writeln!(w, "\n## Per-recipe summary\n");
    let _ = writeln!(
        w,
        "Over all learning rates. Loss gap: EMA-smoothed loss minus the baseline's, same seed \
         and step (`fp8_stats::loss_gap`), median over converged (not stalled) runs. Spikes: \
         `fp8_stats::spikes` rule.\n"
    );
    let _ = writeln!(
        w,
        "| recipe | runs | diverged | median best loss (converged) | median loss gap | spikes / run | max sharpness |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    for recipe in &recipes {
        let rs: Vec<&RunResult> = results.iter().filter(|r| &r.recipe == recipe).collect();
        let conv: Vec<&RunResult> = results
            .iter()
            .zip(&analysis.outcomes)
            .filter(|(r, o)| &r.recipe == recipe && **o == RunOutcome::Converged)
            .map(|(r, _)| r)
            .collect();
        let best = median(conv.iter().map(|r| r.best_loss));
        let gap = median(conv.iter().filter_map(|r| r.loss_gap));
        let spikes = if rs.is_empty() {
            f64::NAN
        } else {
            rs.iter().map(|r| r.spike_count as f64).sum::<f64>() / rs.len() as f64
        };
        let sharp = rs
            .iter()
            .filter_map(|r| r.max_sharpness)
            .filter(|v| v.is_finite())
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let _ = writeln!(
            w,
            "| `{recipe}` | {} | {} | {} | {} | {} | {} |",
            rs.len(),
            analysis.counts.get(recipe).map_or(0, |c| c.diverged),
            fmt_opt(best, 3),
            fmt_opt(gap, 3),
            fmt_opt((!spikes.is_nan()).then_some(spikes), 2),
            fmt_opt(sharp, 3),
        );
    }

    stability::write_sections(w, &recipes, &lrs, baseline.as_deref(), &analysis, opts);
    warnings::write_section(
        w,
        dir,
        results,
        &analysis.outcomes,
        diagnostics,
        baseline.as_deref(),
    )
    .map_err(plot_err)?;

    // Plots.
    let _ = writeln!(w, "\n## Plots\n");
    if lrs.is_empty() {
        let _ = writeln!(w, "No results, so no divergence plot.\n");
    } else {
        plot_divergence(&dir.join(DIVERGENCE_SVG), &recipes, &lrs, &cells).map_err(plot_err)?;
        let _ = writeln!(
            w,
            "![Divergence rate vs learning rate per recipe]({DIVERGENCE_SVG})\n"
        );
        stability::write_plots(
            w,
            dir,
            &recipes,
            &lrs,
            baseline.as_deref(),
            results,
            &analysis,
        )
        .map_err(plot_err)?;
    }
    // Default: the top of the baseline's stable window, where the baseline is still fine and the
    // recipes' differences show most.
    let has_loss_at = |lr: f64| {
        curves
            .iter()
            .any(|c| c.kind == CurveKind::Loss && c.lr == lr)
    };
    let curve_lr = opts
        .curve_lr
        .or_else(|| base_win.map(|w| w.1).filter(|&lr| has_loss_at(lr)))
        .or_else(|| pick_curve_lr(curves));
    match curve_lr {
        None => {
            let _ = writeln!(w, "No loss curves given, so no loss or sharpness plots.\n");
        }
        Some(lr) => {
            for (kind, file, what) in [
                (CurveKind::Loss, LOSS_SVG, "Training loss"),
                (CurveKind::Sharpness, SHARPNESS_SVG, "Logit sharpness"),
            ] {
                let sel: Vec<&Curve> = curves
                    .iter()
                    .filter(|c| c.kind == kind && c.lr == lr)
                    .collect();
                if sel.is_empty() {
                    let _ = writeln!(w, "No {what} curves at lr {}.\n", fmt_lr(lr));
                    continue;
                }
                plot_curves(&dir.join(file), &recipes, &sel, kind, lr).map_err(plot_err)?;
                let _ = writeln!(w, "![{what} per recipe at lr {}]({file})\n", fmt_lr(lr));
                if kind == CurveKind::Loss {
                    if let Some(base) = baseline.as_deref() {
                        let failed: gap_curves::FailedRuns = results
                            .iter()
                            .zip(&analysis.outcomes)
                            .filter(|(_, o)| o.failed())
                            .map(|(r, _)| (r.recipe.as_str(), r.lr.to_bits(), r.seed))
                            .collect();
                        let file = dir.join(gap_curves::FILE);
                        if gap_curves::plot(&file, &recipes, &sel, base, lr, &failed)
                            .map_err(plot_err)?
                        {
                            let _ = writeln!(
                                w,
                                "![Smoothed loss gap to `{base}` per recipe at lr {}]({})\n",
                                fmt_lr(lr),
                                gap_curves::FILE
                            );
                        }
                    }
                }
            }
        }
    }
    std::fs::write(dir.join("report.md"), md)
}

/// The initial loss of every result, in order: the first finite point of its loss curve (same
/// recipe, learning rate and seed), `None` without one.
fn initial_losses(results: &[RunResult], curves: &[Curve]) -> Vec<Option<f64>> {
    let mut first: BTreeMap<(&str, u64, u64), f64> = BTreeMap::new();
    for c in curves.iter().filter(|c| c.kind == CurveKind::Loss) {
        if let Some(v) = c.points.iter().map(|p| p.1).find(|v| v.is_finite()) {
            first
                .entry((c.recipe.as_str(), c.lr.to_bits(), c.seed))
                .or_insert(v);
        }
    }
    results
        .iter()
        .map(|r| {
            // The recorded first loss; results written before it was recorded fall back to
            // the curve's first point.
            r.initial_loss.or_else(|| {
                first
                    .get(&(r.recipe.as_str(), r.lr.to_bits(), r.seed))
                    .copied()
            })
        })
        .collect()
}

fn plot_err<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(format!("drawing a report plot failed: {e}"))
}

/// Baseline first, then the other recipes alphabetically; recipes only in curves come last.
fn recipe_order(results: &[RunResult], curves: &[Curve], opts: &ReportOptions) -> Vec<String> {
    let mut set: BTreeSet<String> = results.iter().map(|r| r.recipe.clone()).collect();
    set.extend(curves.iter().map(|c| c.recipe.clone()));
    let mut v: Vec<String> = set.into_iter().collect();
    let base = opts.baseline.clone().or_else(|| {
        BASELINE_CANDIDATES
            .iter()
            .find(|c| v.iter().any(|r| r == *c))
            .map(|c| c.to_string())
    });
    if let Some(b) = base {
        if let Some(i) = v.iter().position(|r| *r == b) {
            let r = v.remove(i);
            v.insert(0, r);
        }
    }
    v
}

fn sorted_lrs(it: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = it.filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// (recipe, lr bits) → (diverged, total).
fn divergence_cells(results: &[RunResult]) -> BTreeMap<(String, u64), (u64, u64)> {
    let mut m = BTreeMap::new();
    for r in results {
        let e = m
            .entry((r.recipe.clone(), r.lr.to_bits()))
            .or_insert((0, 0));
        e.0 += (r.outcome == Outcome::Diverged) as u64;
        e.1 += 1;
    }
    m
}

fn pick_curve_lr(curves: &[Curve]) -> Option<f64> {
    let mut by_lr: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for c in curves.iter().filter(|c| c.kind == CurveKind::Loss) {
        by_lr
            .entry(c.lr.to_bits())
            .or_default()
            .insert(c.recipe.as_str());
    }
    by_lr
        .into_iter()
        .map(|(bits, set)| (set.len(), f64::from_bits(bits)))
        .max_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|x| x.1)
}

fn decades(lo: f64, hi: f64) -> f64 {
    if lo > 0.0 {
        (hi / lo).log10()
    } else {
        f64::NAN
    }
}

fn compare_windows(win: Option<(f64, f64)>, base: Option<(f64, f64)>) -> String {
    match (win, base) {
        (_, None) => "no baseline window".into(),
        (None, Some(_)) => "**no stable rate**".into(),
        (Some((lo, hi)), Some((blo, bhi))) => {
            let d = decades(lo, hi) - decades(blo, bhi);
            let cover = if lo <= blo && hi >= bhi {
                "covers baseline window"
            } else {
                "**misses part of baseline window**"
            };
            format!("{d:+.2} decades; {cover}")
        }
    }
}

fn median(it: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = it.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// `1e-3`, `3e-4`, `2.5e-4`: how sweeps are written.
pub fn fmt_lr(lr: f64) -> String {
    format!("{lr:e}")
}

fn color(recipes: &[String], recipe: &str) -> RGBColor {
    let i = recipes.iter().position(|r| r == recipe).unwrap_or(0);
    COLORS[i % COLORS.len()]
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Width of the legend strip right of each plot. The legend lives outside the plotting area so it
/// can never hide data.
const LEGEND_W: u32 = 200;

/// Titles the whole canvas and splits it into the plot area and the legend strip.
fn layout<'a>(
    root: &Area<'a>,
    title: &str,
) -> Result<(Area<'a>, Area<'a>), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let body = root.titled(title, (FONT, 26))?;
    let (w, _) = body.dim_in_pixel();
    Ok(body.split_horizontally(w.saturating_sub(LEGEND_W)))
}

/// Draws a legend (one coloured line and name per recipe) into the strip.
fn draw_legend(
    area: &Area,
    heading: &str,
    entries: &[(String, RGBColor)],
    note: Option<&str>,
) -> PlotResult {
    let x0 = 10;
    let mut y = 40;
    area.draw(&Text::new(
        heading.to_string(),
        (x0, y),
        (FONT, 17).into_font().style(FontStyle::Bold),
    ))?;
    y += 30;
    for (name, c) in entries {
        area.draw(&PathElement::new(
            vec![(x0, y), (x0 + 28, y)],
            c.stroke_width(4),
        ))?;
        let style = TextStyle::from((FONT, 16)).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(name.clone(), (x0 + 36, y), style))?;
        y += 26;
    }
    if let Some(note) = note {
        y += 10;
        for line in note.lines() {
            area.draw(&Text::new(line.to_string(), (x0, y), (FONT, 14)))?;
            y += 20;
        }
    }
    Ok(())
}

fn plot_divergence(
    path: &Path,
    recipes: &[String],
    lrs: &[f64],
    cells: &BTreeMap<(String, u64), (u64, u64)>,
) -> PlotResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let title = "Divergence rate vs learning rate";
    let (plot, legend) = layout(&root, title)?;
    let (lo, hi) = (lrs[0], lrs[lrs.len() - 1]);
    let positive = lo > 0.0;
    // Pad the x range by half a step of the grid (in log space) so end points are not on the frame.
    let pad = if lrs.len() > 1 {
        ((hi / lo).powf(0.5 / (lrs.len() - 1) as f64)).max(1.05)
    } else {
        2.0
    };
    let n = recipes.len() as f64;
    // Small horizontal offsets keep overlapping interval bars of different recipes apart.
    let jitter = |i: usize| pad.powf(0.35 * (i as f64 - (n - 1.0) / 2.0) / n.max(1.0));
    if positive {
        let x = (lo / pad..hi * pad).log_scale();
        draw_divergence(&plot, x, recipes, lrs, cells, &jitter)?;
    } else {
        let span = (hi - lo).max(1e-12);
        let x = lo - 0.1 * span..hi + 0.1 * span;
        draw_divergence(&plot, x, recipes, lrs, cells, &|_| 1.0)?;
    }
    let entries: Vec<(String, RGBColor)> = recipes
        .iter()
        .filter(|r| cells.keys().any(|k| &k.0 == *r))
        .map(|r| (r.clone(), color(recipes, r)))
        .collect();
    draw_legend(
        &legend,
        "recipe",
        &entries,
        Some("dot: diverged fraction\nof seeds\nbar: Wilson 95% interval\n(points nudged sideways\nto keep bars apart)"),
    )?;
    root.present()?;
    Ok(())
}

fn draw_divergence<X>(
    root: &Area,
    x: X,
    recipes: &[String],
    lrs: &[f64],
    cells: &BTreeMap<(String, u64), (u64, u64)>,
    jitter: &dyn Fn(usize) -> f64,
) -> PlotResult
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d(x, -0.02f64..1.02f64)?;
    let fmt_x = |v: &f64| fmt_lr(*v);
    let fmt_y = |v: &f64| format!("{:.0}%", v * 100.0);
    chart
        .configure_mesh()
        .x_desc("peak learning rate (log scale)")
        .y_desc("diverged seeds")
        .x_label_formatter(&fmt_x)
        .y_label_formatter(&fmt_y)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    for (i, recipe) in recipes.iter().enumerate() {
        let c = color(recipes, recipe);
        let pts: Vec<(f64, f64, f64, f64)> = lrs
            .iter()
            .filter_map(|lr| {
                cells.get(&(recipe.clone(), lr.to_bits())).map(|&(k, n)| {
                    let (lo, hi) = wilson95(k, n);
                    (lr * jitter(i), k as f64 / n as f64, lo, hi)
                })
            })
            .collect();
        if pts.is_empty() {
            continue;
        }
        chart.draw_series(LineSeries::new(
            pts.iter().map(|p| (p.0, p.1)),
            c.stroke_width(2),
        ))?;
        chart.draw_series(
            pts.iter()
                .map(|p| ErrorBar::new_vertical(p.0, p.2, p.1, p.3, c.stroke_width(2), 10)),
        )?;
        chart.draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 5, c.filled())))?;
    }
    Ok(())
}

fn plot_curves(
    path: &Path,
    recipes: &[String],
    curves: &[&Curve],
    kind: CurveKind,
    lr: f64,
) -> PlotResult {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let finite: Vec<f64> = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .collect();
    let x_max = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x_min = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .min()
        .unwrap_or(0) as f64;
    // The y range follows the healthy curves; a diverging curve is clipped at the top and its
    // divergence marked, otherwise one blow-up to 1e6 would flatten every other curve.
    let (y_lo, y_hi) = match kind {
        CurveKind::Loss => {
            let lo = finite.iter().cloned().fold(f64::INFINITY, f64::min);
            let first_max = curves
                .iter()
                .filter_map(|c| c.points.iter().map(|p| p.1).find(|v| v.is_finite()))
                .fold(f64::NEG_INFINITY, f64::max);
            let hi = finite
                .iter()
                .cloned()
                .fold(f64::NEG_INFINITY, f64::max)
                .min(first_max * 1.15);
            (lo, hi)
        }
        CurveKind::Sharpness => {
            let mut v = finite.clone();
            v.sort_by(f64::total_cmp);
            let lo = v.first().copied().unwrap_or(0.0).min(0.0);
            let hi = v
                .get(((v.len() as f64 * 0.99) as usize).min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or(1.0)
                * 1.1;
            (lo, hi)
        }
    };
    let (y_lo, y_hi) = if y_lo.is_finite() && y_hi.is_finite() && y_hi > y_lo {
        let pad = 0.06 * (y_hi - y_lo);
        (
            if kind == CurveKind::Sharpness && y_lo == 0.0 {
                0.0
            } else {
                y_lo - pad
            },
            y_hi + pad,
        )
    } else if y_lo.is_finite() {
        (y_lo - 1.0, y_lo + 1.0)
    } else {
        (0.0, 1.0)
    };
    let (title, y_desc) = match kind {
        CurveKind::Loss => (
            format!("Training loss per recipe at lr {}", fmt_lr(lr)),
            "training loss (nats/token)",
        ),
        CurveKind::Sharpness => (
            format!("Logit sharpness per recipe at lr {}", fmt_lr(lr)),
            "logit sharpness φ",
        ),
    };
    let (plot, legend) = layout(&root, &title)?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d(x_min..x_max, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc("training step")
        .y_desc(y_desc)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    // Per-step losses are noisy: draw them faint and an EMA of each piece on top (sharpness is
    // measured rarely and drawn as is). All raw lines go first so none covers a smoothed one.
    let smooth = kind == CurveKind::Loss;
    if smooth {
        for recipe in recipes {
            let c = color(recipes, recipe);
            for curve in curves.iter().filter(|cv| &cv.recipe == recipe) {
                for seg in segments(&curve.points, y_hi).0 {
                    chart.draw_series(LineSeries::new(
                        seg.into_iter().map(|(s, v)| (s as f64, v.max(y_lo))),
                        c.mix(0.25).stroke_width(1),
                    ))?;
                }
            }
        }
    }
    let mut entries = Vec::new();
    for recipe in recipes {
        let c = color(recipes, recipe);
        for curve in curves.iter().filter(|cv| &cv.recipe == recipe) {
            let (segments, marker) = segments(&curve.points, y_hi);
            for seg in segments {
                let seg = if smooth {
                    // Keep the last point raw: where a curve leaves the top edge, the smoothed
                    // line must still reach it (and the × there).
                    let last = seg.last().copied();
                    let mut sm = ema(seg, CURVE_EMA_BETA);
                    if let (Some(l), Some(end)) = (last, sm.last_mut()) {
                        if l.1 >= y_hi {
                            *end = l;
                        }
                    }
                    sm
                } else {
                    seg
                };
                chart.draw_series(LineSeries::new(
                    seg.into_iter().map(|(s, v)| (s as f64, v.max(y_lo))),
                    c.mix(0.85).stroke_width(2),
                ))?;
            }
            if entries.last().map(|e: &(String, RGBColor)| &e.0) != Some(recipe) {
                entries.push((recipe.clone(), c));
            }
            if let Some((s, v)) = marker {
                chart.draw_series(std::iter::once(Cross::new(
                    (s as f64, v.clamp(y_lo, y_hi)),
                    8,
                    c.stroke_width(3),
                )))?;
            }
        }
    }
    let note = if smooth {
        "one line per seed:\nEMA (β = 0.9) over the\nlogged points; faint:\nraw loss\n× = diverged: the line\nleaves the top edge or\nbecomes non-finite"
    } else {
        "one line per seed\n× = diverged: the line\nleaves the top edge or\nbecomes non-finite"
    };
    draw_legend(&legend, "recipe", &entries, Some(note))?;
    root.present()?;
    Ok(())
}

type Segment = Vec<(u64, f64)>;

/// Splits a curve into drawable pieces of finite, in-range points. A piece that leaves the range
/// upwards ends *at* the top edge (the crossing point is clipped to `y_hi`), and a new piece starts
/// when the curve comes back. Returns the pieces and, if the curve ends non-finite or above `y_hi`,
/// where to mark the divergence: the first point of that final bad stretch, at the top edge.
fn segments(points: &[(u64, f64)], y_hi: f64) -> (Vec<Segment>, Option<(u64, f64)>) {
    let mut segs: Vec<Segment> = Vec::new();
    let mut cur: Segment = Vec::new();
    let mut bad_since: Option<u64> = None;
    for &(s, v) in points {
        let in_range = v.is_finite() && v <= y_hi;
        if in_range {
            bad_since = None;
            cur.push((s, v));
            continue;
        }
        if bad_since.is_none() {
            bad_since = Some(s);
            if v.is_finite() && !cur.is_empty() {
                cur.push((s, y_hi)); // draw the climb up to the edge
            }
        }
        if !cur.is_empty() {
            segs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        segs.push(cur);
    }
    (segs, bad_since.map(|s| (s, y_hi)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_split_on_non_finite_and_mark_end() {
        let pts = [
            (0, 3.0),
            (1, 2.0),
            (2, f64::NAN),
            (3, 2.5),
            (4, 50.0),
            (5, f64::NAN),
        ];
        let (segs, mark) = segments(&pts, 10.0);
        assert_eq!(
            segs,
            vec![vec![(0, 3.0), (1, 2.0)], vec![(3, 2.5), (4, 10.0)]]
        );
        assert_eq!(mark, Some((4, 10.0)));
        let (_, mark) = segments(&[(0, 3.0), (1, 20.0), (2, 2.0)], 10.0);
        assert_eq!(mark, None);
    }

    #[test]
    fn lr_formatting_and_curve_lr_choice() {
        assert_eq!(fmt_lr(1e-3), "1e-3");
        assert_eq!(fmt_lr(2.5e-4), "2.5e-4");
        let c = |recipe: &str, lr: f64| Curve {
            recipe: recipe.into(),
            lr,
            seed: 0,
            kind: CurveKind::Loss,
            points: vec![],
        };
        let curves = [
            c("a", 1e-3),
            c("b", 1e-3),
            c("a", 1e-2),
            c("b", 1e-2),
            c("a", 1e-4),
        ];
        assert_eq!(pick_curve_lr(&curves), Some(1e-2));
    }
}
