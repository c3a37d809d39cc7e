//! Stability metrics, sweep statistics and the report writer for the fp8 project.
//!
//! This crate turns what training runs log (loss curves, last-token logits) into the numbers the
//! study compares recipes by (Lee et al. 2024, "To FP8 and Back Again"; see docs/DESIGN.md §5):
//!
//! - [`sharpness`]: the paper's logit sharpness, in closed form;
//! - [`divergence`], [`spikes`], [`loss_gap`]: per-run stability of the loss curve;
//! - [`wilson`], [`window`]: per-sweep statistics (divergence rate with a confidence interval, the
//!   stable learning-rate window);
//! - [`results`]: the `results.jsonl` line format and its reader/appender;
//! - [`report`]: `report.md` plus SVG plots.
//!
//! It deliberately has no `burn` dependency: everything here works on plain slices, so it builds in
//! seconds, can be tested exhaustively, and can be reused by any tool that reads run directories.

pub mod divergence;
pub mod loss_gap;
pub mod report;
pub mod results;
pub mod sharpness;
pub mod spikes;
pub mod wilson;
pub mod window;

pub use divergence::{detect_divergence, Divergence, DivergenceMonitor, DivergenceRule};
pub use loss_gap::{loss_gap, loss_gap_series};
pub use report::{write_report, write_report_with, Curve, CurveKind, ReportOptions};
pub use results::{append_result, read_results, Outcome, ReadResults, ResultsError, RunResult};
pub use sharpness::{logit_sharpness, mean_sharpness};
pub use spikes::{count_spikes, detect_spikes, Spike, SpikeDetector, SpikeRule};
pub use wilson::{wilson95, wilson_interval};
pub use window::{recipe_window, stable_lr_window};
