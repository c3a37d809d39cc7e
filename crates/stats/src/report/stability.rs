//! The report's stability sections (outcomes, learning-rate sensitivity, paired comparison) and
//! their plots (`final_loss.svg`, `lr_sensitivity.svg`, `outcomes.svg`).
//!
//! Plot conventions, as in the rest of the report: the legend lives in its own strip, so it hides
//! no data; every run is a point, nudged sideways by recipe and seed on the log-x axis and drawn
//! with a marker shape per recipe, so no seed hides another; where recipes overlap, a second
//! panel shows the paired difference to the baseline, which is what the eye would otherwise try
//! to read off two nearly equal clouds.

use super::{color, draw_legend, fmt_lr, layout, Area, PlotResult, FONT, SIZE};
use crate::analysis::SweepAnalysis;
use crate::outcomes::RunOutcome;
use crate::report::ReportOptions;
use crate::results::RunResult;
use crate::sensitivity::LrRun;
use crate::wilson::wilson95;
use plotters::coord::ranged1d::{AsRangedCoord, SegmentValue, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use statrs::distribution::{ContinuousCDF, Normal};
use std::fmt::Write as _;
use std::path::Path;

pub(super) const FINAL_LOSS_SVG: &str = "final_loss.svg";
pub(super) const SENSITIVITY_SVG: &str = "lr_sensitivity.svg";
pub(super) const OUTCOMES_SVG: &str = "outcomes.svg";

const CONVERGED: RGBColor = RGBColor(44, 160, 44);
const STALLED: RGBColor = RGBColor(255, 187, 60);
const DIVERGED: RGBColor = RGBColor(214, 39, 40);

fn fmt_p(p: f64) -> String {
    if p < 0.001 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

/// Three decimals, or three significant digits for magnitudes below 0.01 (loss gaps of close
/// recipes are that small, and `0.000` would hide them).
fn fmt_loss(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_interval(iv: Option<(f64, f64)>) -> String {
    iv.map_or("–".into(), |(lo, hi)| {
        format!("[{}, {}]", fmt_loss(lo), fmt_loss(hi))
    })
}

fn fmt_window(win: Option<(f64, f64)>) -> (String, String) {
    match win {
        None => ("none".into(), "–".into()),
        Some((lo, hi)) => (
            format!("{} – {}", fmt_lr(lo), fmt_lr(hi)),
            format!("{:.2}", super::decades(lo, hi)),
        ),
    }
}

/// Appends the outcome, sensitivity and paired-comparison sections to `w`.
pub(super) fn write_sections(
    w: &mut String,
    recipes: &[String],
    lrs: &[f64],
    baseline: Option<&str>,
    a: &SweepAnalysis,
    opts: &ReportOptions,
) {
    let p = &opts.analysis;
    let _ = writeln!(w, "\n## Outcomes\n");
    let _ = writeln!(
        w,
        "Every run is exactly one of *converged*, *diverged* (the divergence rule fired) or \
         *stalled*: it did not diverge, but its best loss closed less than f = {:.2} of the gap \
         between its initial loss and the best loss any run of the same model reached, or lies \
         less than {:.0} % below its initial loss (`fp8_stats::outcomes`). Failed = diverged + \
         stalled, with the Wilson 95 % interval of the rate.\n",
        p.stall.min_progress,
        p.stall.min_drop * 100.0
    );
    if !a.stall_rule_applied {
        let _ = writeln!(
            w,
            "**Some model's runs had no initial loss (no loss curves), so their stalls could not \
             be judged: their non-diverged runs count as converged.**\n"
        );
    }
    let _ = writeln!(
        w,
        "| recipe | runs | converged | diverged | stalled | failed |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for recipe in recipes {
        let Some(c) = a.counts.get(recipe) else {
            continue;
        };
        let (lo, hi) = wilson95(c.failed(), c.total());
        let _ = writeln!(
            w,
            "| `{recipe}` | {} | {} | {} | {} | {}/{} [{:.0}–{:.0} %] |",
            c.total(),
            c.converged,
            c.diverged,
            c.stalled,
            c.failed(),
            c.total(),
            lo * 100.0,
            hi * 100.0
        );
    }
    let _ = writeln!(
        w,
        "\nPer learning rate: converged / diverged / stalled seeds.\n"
    );
    let _ = write!(w, "| recipe |");
    for lr in lrs {
        let _ = write!(w, " lr {} |", fmt_lr(*lr));
    }
    let _ = write!(w, "\n|---|");
    for _ in lrs {
        let _ = write!(w, "---|");
    }
    let _ = writeln!(w);
    for recipe in recipes.iter().filter(|r| a.counts.contains_key(*r)) {
        let _ = write!(w, "| `{recipe}` |");
        for lr in lrs {
            match a.cell_counts.get(&(recipe.clone(), lr.to_bits())) {
                None => {
                    let _ = write!(w, " – |");
                }
                Some(c) => {
                    let _ = write!(w, " {}/{}/{} |", c.converged, c.diverged, c.stalled);
                }
            }
        }
        let _ = writeln!(w);
    }

    let b = &p.sensitivity.bootstrap;
    let _ = writeln!(w, "\n## Learning-rate sensitivity\n");
    let _ = writeln!(
        w,
        "S = mean over the swept rates η of L(η) − min L, where L(η) is the mean over seeds of \
         min(final loss, initial loss) — a non-finite final loss counts as the initial loss — \
         and min L is the recipe's own best (Wortsman et al. 2023, arXiv 2309.14322; \
         `fp8_stats::sensitivity`). Lower is more robust. Interval: percentile bootstrap over \
         seeds, B = {} resamples (ChaCha8, seed {:#x}), {:.0} %; none with a single seed. Loss \
         window: the widest contiguous stretch of rates with L(η) within δ = {} nats of the best \
         and no seed diverged or stalled.\n",
        b.resamples,
        b.rng_seed,
        b.level * 100.0,
        p.sensitivity.delta
    );
    let _ = writeln!(
        w,
        "| recipe | seeds | S | {:.0} % interval | best lr | L(best lr) | loss window | width (decades) |",
        b.level * 100.0
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for recipe in recipes {
        let Some(s) = a.sensitivity.get(recipe) else {
            continue;
        };
        let (range, width) = fmt_window(s.window);
        let _ = writeln!(
            w,
            "| `{recipe}` | {} | {:.3} | {} | {} | {:.3} | {range} | {width} |",
            s.seeds,
            s.sensitivity,
            fmt_interval(s.interval),
            fmt_lr(s.best_lr),
            s.best_loss,
        );
    }
    if a.sensitivity.is_empty() {
        let _ = writeln!(w, "\nNo run with a usable final or initial loss.");
    }

    let _ = writeln!(w, "\n## Paired comparison with the baseline\n");
    let Some(base) = baseline else {
        let _ = writeln!(w, "No baseline recipe identified, so no paired comparison.");
        return;
    };
    let pp = &p.paired;
    let std_normal = Normal::standard();
    let factor = std_normal.inverse_cdf(1.0 - pp.alpha / 2.0) + std_normal.inverse_cdf(pp.power);
    let level = (1.0 - pp.alpha) * 100.0;
    let _ = writeln!(
        w,
        "Pairs: a recipe's run and `{base}`'s with the same model, seed and learning rate. \
         **Gap**: recipe − baseline final loss over the pairs where neither run failed (diverged or \
         stalled): how much worse the recipe trains when it trains; mean \
         with the paired t {level:.0} % interval. **Detectable gap**: \
         (z_(1−α/2) + z_power)·s/√n = {factor:.2}·SE, the true mean gap a two-sided test at \
         α = {} detects with power {} at this many pairs. **Failures** (diverged or stalled) \
         over the paired runs: difference of the failure rates with Newcombe's hybrid score \
         {level:.0} % interval, and Fisher's exact test (two-sided). **Detectable increase**: the \
         smallest rise over the baseline's observed failure rate that Fisher's test at α = {} \
         detects with power {}, by exact enumeration of the binomial outcomes; \"none\" when even \
         certain failure would not be detected (`fp8_stats::paired`).\n",
        pp.alpha, pp.power, pp.alpha, pp.power
    );
    let _ = writeln!(
        w,
        "| recipe | pairs | mean gap [{level:.0} %] | detectable gap | failed: recipe / baseline | difference [{level:.0} %] | Fisher p | detectable increase |"
    );
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    for recipe in recipes {
        let Some(c) = a.paired.get(recipe) else {
            continue;
        };
        let gap = c.loss_gap.map_or("–".into(), |g| {
            let sign = if g.mean > 0.0 { "+" } else { "" };
            format!("{sign}{} {}", fmt_loss(g.mean), fmt_interval(g.interval))
        });
        let mde = c
            .loss_gap
            .and_then(|g| g.min_detectable)
            .map_or("–".into(), fmt_loss);
        let f = &c.failures;
        let inc = f
            .min_detectable_increase
            .map_or("none".into(), |d| format!("+{:.0} pp", d * 100.0));
        let _ = writeln!(
            w,
            "| `{recipe}` | {} | {gap} | {mde} | {}/{} / {}/{} | {:+.0} pp [{:+.0}, {:+.0}] | {} | {inc} |",
            c.pairs,
            f.recipe_failed,
            f.recipe_runs,
            f.baseline_failed,
            f.baseline_runs,
            f.difference * 100.0,
            f.interval.0 * 100.0,
            f.interval.1 * 100.0,
            fmt_p(f.fisher_p),
        );
    }
    if a.paired.is_empty() {
        let _ = writeln!(w, "\nNo recipe has runs paired with `{base}`'s.");
    }
}

/// Draws the stability plots into `dir` and links them from `w`. `lrs` is not empty.
pub(super) fn write_plots(
    w: &mut String,
    dir: &Path,
    recipes: &[String],
    lrs: &[f64],
    baseline: Option<&str>,
    results: &[RunResult],
    a: &SweepAnalysis,
) -> PlotResult {
    plot_final_loss(
        &dir.join(FINAL_LOSS_SVG),
        recipes,
        lrs,
        baseline,
        results,
        a,
    )?;
    let _ = writeln!(
        w,
        "![Final loss vs learning rate, every seed, and the paired difference to the baseline]({FINAL_LOSS_SVG})\n"
    );
    if !a.sensitivity.is_empty() {
        plot_sensitivity(&dir.join(SENSITIVITY_SVG), recipes, a)?;
        let _ = writeln!(
            w,
            "![Learning-rate sensitivity per recipe with bootstrap intervals]({SENSITIVITY_SVG})\n"
        );
    }
    plot_outcomes(&dir.join(OUTCOMES_SVG), recipes, lrs, a)?;
    let _ = writeln!(
        w,
        "![Outcomes per recipe and learning rate]({OUTCOMES_SVG})\n"
    );
    Ok(())
}

/// Marker outlines in pixels around the point, one shape per recipe (cycled).
fn shape(i: usize) -> Vec<(i32, i32)> {
    match i % 5 {
        0 => (0..12)
            .map(|k| {
                let t = k as f64 * std::f64::consts::TAU / 12.0;
                (
                    (5.5 * t.cos()).round() as i32,
                    (5.5 * t.sin()).round() as i32,
                )
            })
            .collect(),
        1 => vec![(0, -6), (6, 5), (-6, 5)],
        2 => vec![(-5, -5), (5, -5), (5, 5), (-5, 5)],
        3 => vec![(0, -7), (6, 0), (0, 7), (-6, 0)],
        _ => vec![(0, 6), (6, -5), (-6, -5)],
    }
}

/// A point to draw: x, y, filled.
type Dot = (f64, f64, bool);

/// Spreads the points at one grid rate sideways: slot `k` of `slots` moves by up to ±0.3 of the
/// grid step (a factor `step` in log space, or an additive one on a linear axis).
fn nudge(lr: f64, k: usize, slots: usize, step: f64, log: bool) -> f64 {
    let off = 0.6 * (k as f64 + 0.5 - slots as f64 / 2.0) / slots.max(1) as f64;
    if log {
        lr * step.powf(off)
    } else {
        lr + step * off
    }
}

fn plot_final_loss(
    path: &Path,
    recipes: &[String],
    lrs: &[f64],
    baseline: Option<&str>,
    results: &[RunResult],
    a: &SweepAnalysis,
) -> PlotResult {
    let log = lrs[0] > 0.0;
    let (lo, hi) = (lrs[0], lrs[lrs.len() - 1]);
    // One grid step (ratio or difference); padding of half a step keeps end points off the frame.
    let step = if lrs.len() > 1 {
        if log {
            (hi / lo).powf(1.0 / (lrs.len() - 1) as f64).max(1.1)
        } else {
            (hi - lo) / (lrs.len() - 1) as f64
        }
    } else if log {
        4.0
    } else {
        1.0
    };
    let mut seeds: Vec<u64> = results.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let slots = recipes.len() * seeds.len();
    let slot = |ri: usize, seed: u64| ri * seeds.len() + seeds.binary_search(&seed).unwrap_or(0);

    // Top: capped final loss per run; bottom: paired difference to the baseline.
    let mut top: Vec<(usize, Vec<Dot>)> = Vec::new();
    let mut bottom: Vec<(usize, Vec<Dot>)> = Vec::new();
    for (ri, recipe) in recipes.iter().enumerate() {
        let dots: Vec<Dot> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| &r.recipe == recipe && r.lr.is_finite())
            .filter_map(|(i, r)| {
                let y = LrRun {
                    lr: r.lr,
                    seed: r.seed,
                    final_loss: r.final_loss,
                    initial_loss: a.initial_losses[i].unwrap_or(f64::NAN),
                    failed: a.outcomes[i].failed(),
                }
                .capped_loss()?;
                let x = nudge(r.lr, slot(ri, r.seed), slots, step, log);
                Some((x, y, a.outcomes[i] == RunOutcome::Converged))
            })
            .collect();
        if !dots.is_empty() {
            top.push((ri, dots));
        }
        if let Some(diffs) = a.pair_diffs.get(recipe) {
            let dots: Vec<Dot> = diffs
                .iter()
                .filter_map(|d| {
                    d.diff
                        .map(|y| (nudge(d.lr, slot(ri, d.seed), slots, step, log), y, true))
                })
                .collect();
            if !dots.is_empty() {
                bottom.push((ri, dots));
            }
        }
    }
    let root = SVGBackend::new(path, (SIZE.0, if bottom.is_empty() { SIZE.1 } else { 900 }))
        .into_drawing_area();
    let (plot, legend) = layout(&root, "Final loss vs learning rate, every seed")?;
    let (x_lo, x_hi) = if log {
        (lo / step.sqrt(), hi * step.sqrt())
    } else {
        (lo - step / 2.0, hi + step / 2.0)
    };
    let mean_lines: Vec<(usize, Vec<(f64, f64)>)> = recipes
        .iter()
        .enumerate()
        .filter_map(|(ri, r)| {
            a.sensitivity
                .get(r)
                .map(|s| (ri, s.per_lr.iter().map(|p| (p.lr, p.mean_loss)).collect()))
        })
        .collect();
    let (upper, lower) = if bottom.is_empty() {
        (plot, None)
    } else {
        let (_, h) = plot.dim_in_pixel();
        let (u, l) = plot.split_vertically(h * 3 / 5);
        (u, Some(l))
    };
    let top_panel = Panel {
        dots: &top,
        lines: &mean_lines,
        y_desc: "final loss, capped at the initial loss",
        zero_line: false,
        log_x: log,
    };
    if log {
        draw_panel(&upper, (x_lo..x_hi).log_scale(), recipes, &top_panel)?;
    } else {
        draw_panel(&upper, x_lo..x_hi, recipes, &top_panel)?;
    }
    if let Some(lower) = lower {
        let base = baseline.unwrap_or("baseline");
        let desc = format!("final loss − {base} (same seed, lr)");
        let diff_means: Vec<(usize, Vec<(f64, f64)>)> = bottom
            .iter()
            .map(|(ri, _)| {
                let diffs = &a.pair_diffs[&recipes[*ri]];
                let line = lrs
                    .iter()
                    .filter_map(|&lr| {
                        let v: Vec<f64> = diffs
                            .iter()
                            .filter(|d| d.lr == lr)
                            .filter_map(|d| d.diff)
                            .collect();
                        (!v.is_empty()).then(|| (lr, v.iter().sum::<f64>() / v.len() as f64))
                    })
                    .collect();
                (*ri, line)
            })
            .collect();
        let panel = Panel {
            dots: &bottom,
            lines: &diff_means,
            y_desc: &desc,
            zero_line: true,
            log_x: log,
        };
        if log {
            draw_panel(&lower, (x_lo..x_hi).log_scale(), recipes, &panel)?;
        } else {
            draw_panel(&lower, x_lo..x_hi, recipes, &panel)?;
        }
    }
    let shown: Vec<usize> = top.iter().map(|t| t.0).collect();
    draw_marker_legend(
        &legend,
        recipes,
        &shown,
        "filled: converged\nhollow: diverged or\nstalled (diverged at\nthe initial loss)\nline: mean over seeds\npoints nudged sideways\nby recipe and seed\n\nlower panel: paired\ndifference to the\nbaseline, 0 = equal",
    )?;
    root.present()?;
    Ok(())
}

struct Panel<'a> {
    dots: &'a [(usize, Vec<Dot>)],
    lines: &'a [(usize, Vec<(f64, f64)>)],
    y_desc: &'a str,
    zero_line: bool,
    log_x: bool,
}

fn draw_panel<X>(area: &Area, x: X, recipes: &[String], p: &Panel) -> PlotResult
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let ys = p
        .dots
        .iter()
        .flat_map(|d| d.1.iter().map(|p| p.1))
        .chain(p.zero_line.then_some(0.0));
    let (y_lo, y_hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    let (y_lo, y_hi) = if y_lo.is_finite() && y_hi > y_lo {
        let pad = 0.06 * (y_hi - y_lo);
        (y_lo - pad, y_hi + pad)
    } else if y_lo.is_finite() {
        (y_lo - 1.0, y_lo + 1.0)
    } else {
        (0.0, 1.0)
    };
    let mut chart = ChartBuilder::on(area)
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d(x, y_lo..y_hi)?;
    let fmt_x = |v: &f64| fmt_lr(*v);
    chart
        .configure_mesh()
        .x_desc(if p.log_x {
            "peak learning rate (log scale)"
        } else {
            "peak learning rate"
        })
        .y_desc(p.y_desc)
        .x_label_formatter(&fmt_x)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;
    if p.zero_line {
        let (x0, x1) = (chart.x_range().start, chart.x_range().end);
        chart.draw_series(LineSeries::new(
            [(x0, 0.0), (x1, 0.0)],
            BLACK.stroke_width(1),
        ))?;
    }
    for (ri, line) in p.lines {
        let c = color(recipes, &recipes[*ri]);
        chart.draw_series(LineSeries::new(
            line.iter().copied(),
            c.mix(0.6).stroke_width(2),
        ))?;
    }
    for (ri, dots) in p.dots {
        let c = color(recipes, &recipes[*ri]);
        let s = shape(*ri);
        chart.draw_series(dots.iter().filter(|d| d.2).map(|d| {
            EmptyElement::at((d.0, d.1)) + Polygon::new(s.clone(), c.mix(0.85).filled())
        }))?;
        chart.draw_series(dots.iter().filter(|d| !d.2).map(|d| {
            let mut closed = s.clone();
            closed.push(s[0]);
            EmptyElement::at((d.0, d.1)) + PathElement::new(closed, c.stroke_width(2))
        }))?;
    }
    Ok(())
}

/// A legend of marker shapes (one per recipe shown) and a note.
fn draw_marker_legend(area: &Area, recipes: &[String], shown: &[usize], note: &str) -> PlotResult {
    let x0 = 10;
    let mut y = 40;
    area.draw(&Text::new(
        "recipe".to_string(),
        (x0, y),
        (FONT, 17).into_font().style(FontStyle::Bold),
    ))?;
    y += 30;
    for &ri in shown {
        let c = color(recipes, &recipes[ri]);
        let pts: Vec<(i32, i32)> = shape(ri)
            .iter()
            .map(|(dx, dy)| (x0 + 12 + dx, y + dy))
            .collect();
        area.draw(&Polygon::new(pts, c.filled()))?;
        let style = TextStyle::from((FONT, 16)).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(recipes[ri].clone(), (x0 + 36, y), style))?;
        y += 26;
    }
    y += 10;
    for line in note.lines() {
        area.draw(&Text::new(line.to_string(), (x0, y), (FONT, 14)))?;
        y += 20;
    }
    Ok(())
}

fn plot_sensitivity(path: &Path, recipes: &[String], a: &SweepAnalysis) -> PlotResult {
    let shown: Vec<&String> = recipes
        .iter()
        .filter(|r| a.sensitivity.contains_key(*r))
        .collect();
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let (plot, legend) = layout(&root, "Learning-rate sensitivity per recipe")?;
    let y_hi = shown
        .iter()
        .map(|r| {
            let s = &a.sensitivity[*r];
            s.interval.map_or(s.sensitivity, |i| i.1.max(s.sensitivity))
        })
        .fold(0.0f64, f64::max);
    let y_hi = if y_hi > 0.0 { y_hi * 1.15 } else { 1.0 };
    let n = shown.len() as i32;
    let mut chart = ChartBuilder::on(&plot)
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d((0..(n - 1).max(0)).into_segmented(), 0.0..y_hi)?;
    let name = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => shown
            .get(*i as usize)
            .map_or(String::new(), |r| r.to_string()),
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .x_desc("recipe")
        .y_desc("sensitivity S (nats; lower is more robust)")
        .x_label_formatter(&name)
        .x_labels(shown.len())
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .disable_x_mesh()
        .draw()?;
    for (i, r) in shown.iter().enumerate() {
        let s = &a.sensitivity[*r];
        let c = color(recipes, r);
        let x = SegmentValue::CenterOf(i as i32);
        if let Some((lo, hi)) = s.interval {
            chart.draw_series(std::iter::once(ErrorBar::new_vertical(
                x.clone(),
                lo,
                s.sensitivity,
                hi,
                c.stroke_width(2),
                16,
            )))?;
        }
        chart.draw_series(std::iter::once(Circle::new(
            (x, s.sensitivity),
            6,
            c.filled(),
        )))?;
    }
    let entries: Vec<(String, RGBColor)> = shown
        .iter()
        .map(|r| (r.to_string(), color(recipes, r)))
        .collect();
    draw_legend(
        &legend,
        "recipe",
        &entries,
        Some("dot: S over the swept\nrates (own best as\nreference)\nbar: bootstrap 95%\ninterval over seeds\n(none: one seed)"),
    )?;
    root.present()?;
    Ok(())
}

fn plot_outcomes(path: &Path, recipes: &[String], lrs: &[f64], a: &SweepAnalysis) -> PlotResult {
    let rows: Vec<&String> = recipes
        .iter()
        .filter(|r| a.counts.contains_key(*r))
        .collect();
    // Rows of at most 70 px; the canvas shrinks to fit them (but keeps room for the legend).
    let height = (200 + 70 * rows.len() as u32).clamp(380, SIZE.1);
    let root = SVGBackend::new(path, (SIZE.0, height)).into_drawing_area();
    let (plot, legend) = layout(&root, "Outcomes per recipe and learning rate")?;
    let (w, h) = plot.dim_in_pixel();
    let (left, top, bottom, right) = (170i32, 30i32, 70i32, 20i32);
    let cols = lrs.len().max(1) as i32;
    let cell_w = ((w as i32 - left - right) / cols).max(1);
    let cell_h = ((h as i32 - top - bottom) / (rows.len().max(1) as i32)).clamp(1, 70);
    let label = TextStyle::from((FONT, 16)).pos(Pos::new(HPos::Right, VPos::Center));
    let centred =
        |size: i32| TextStyle::from((FONT, size)).pos(Pos::new(HPos::Center, VPos::Center));
    for (ri, recipe) in rows.iter().enumerate() {
        let y0 = top + ri as i32 * cell_h;
        plot.draw(&Text::new(
            recipe.to_string(),
            (left - 10, y0 + cell_h / 2),
            label.clone(),
        ))?;
        for (ci, lr) in lrs.iter().enumerate() {
            let x0 = left + ci as i32 * cell_w;
            let (x1, y1) = (x0 + cell_w - 3, y0 + cell_h - 3);
            match a.cell_counts.get(&((*recipe).clone(), lr.to_bits())) {
                None => {
                    plot.draw(&Rectangle::new(
                        [(x0, y0), (x1, y1)],
                        RGBColor(235, 235, 235).filled(),
                    ))?;
                    plot.draw(&Text::new("–", ((x0 + x1) / 2, (y0 + y1) / 2), centred(16)))?;
                }
                Some(c) => {
                    // Converged, stalled, diverged from left to right, widths ∝ counts.
                    let total = c.total().max(1) as f64;
                    let mut x = x0;
                    for (k, col) in [
                        (c.converged, CONVERGED),
                        (c.stalled, STALLED),
                        (c.diverged, DIVERGED),
                    ] {
                        if k == 0 {
                            continue;
                        }
                        let xe = x + ((x1 - x0) as f64 * k as f64 / total).round() as i32;
                        let xe = xe.min(x1);
                        plot.draw(&Rectangle::new([(x, y0), (xe, y1)], col.filled()))?;
                        if xe - x >= 14 {
                            plot.draw(&Text::new(
                                k.to_string(),
                                ((x + xe) / 2, (y0 + y1) / 2),
                                centred(15),
                            ))?;
                        }
                        x = xe;
                    }
                }
            }
        }
    }
    let y_axis = top + rows.len() as i32 * cell_h + 14;
    for (ci, lr) in lrs.iter().enumerate() {
        let x = left + ci as i32 * cell_w + cell_w / 2;
        plot.draw(&Text::new(fmt_lr(*lr), (x, y_axis), centred(15)))?;
    }
    plot.draw(&Text::new(
        "peak learning rate",
        (left + cols * cell_w / 2, y_axis + 28),
        centred(18),
    ))?;
    let entries = vec![
        ("converged".to_string(), CONVERGED),
        ("stalled".to_string(), STALLED),
        ("diverged".to_string(), DIVERGED),
    ];
    draw_legend(
        &legend,
        "outcome",
        &entries,
        Some("cell: one recipe and\nrate; widths ∝ seeds,\nnumbers = seed counts\ngrey: not run"),
    )?;
    root.present()?;
    Ok(())
}
