//! Stability metrics, sweep statistics and the report writer for the fp8 project.
//!
//! This crate turns what training runs log (loss curves, last-token logits) into the numbers the
//! study compares recipes by (Lee et al. 2024, "To FP8 and Back Again"; see docs/DESIGN.md §5):
//!
//! - [`sharpness`]: the paper's logit sharpness, in closed form;
//! - [`divergence`], [`spikes`], [`loss_gap`]: per-run stability of the loss curve;
//! - [`wilson`], [`window`]: per-sweep statistics (divergence rate with a confidence interval, the
//!   stable learning-rate window);
//! - [`outcomes`]: converged, diverged or stalled (a run that failed to learn);
//! - [`sensitivity`], [`bootstrap`]: learning-rate sensitivity (Wortsman et al. 2023) with a
//!   bootstrap interval over seeds, the best rate and the stable window on the loss;
//! - [`paired`]: a recipe against the baseline, pair by pair: loss gap, Fisher's exact test and
//!   Newcombe's interval for failure rates, and the smallest effects the sweep can detect;
//! - [`analysis`]: all of the above over a sweep's `results.jsonl`;
//! - [`early_warning`]: lead time, hit rate and false-alarm rate of a diagnostic's threshold;
//! - [`results`]: the `results.jsonl` line format and its reader/appender;
//! - [`report`]: `report.md` plus SVG plots.
//!
//! It deliberately has no `burn` dependency: everything here works on plain slices, so it builds in
//! seconds, can be tested exhaustively, and can be reused by any tool that reads run directories.

pub mod analysis;
pub mod bootstrap;
pub mod diagnostics;
pub mod divergence;
pub mod early_warning;
pub mod loss_gap;
pub mod outcomes;
pub mod paired;
pub mod report;
pub mod results;
pub mod sensitivity;
pub mod sharpness;
pub mod spikes;
pub mod wilson;
pub mod window;

pub use divergence::{detect_divergence, Divergence, DivergenceMonitor, DivergenceRule};
pub use loss_gap::{loss_gap, loss_gap_series};
pub use outcomes::{classify_group, OutcomeCounts, RunOutcome, StallRule};
pub use report::{write_report, write_report_with, Curve, CurveKind, ReportOptions};
pub use results::{append_result, read_results, Outcome, ReadResults, ResultsError, RunResult};
pub use sensitivity::{lr_sensitivity, LrSensitivity, SensitivityParams};
pub use sharpness::{logit_sharpness, mean_sharpness};
pub use spikes::{count_spikes, detect_spikes, Spike, SpikeDetector, SpikeRule};
pub use wilson::{wilson95, wilson_interval};
pub use window::{recipe_window, stable_lr_window};
