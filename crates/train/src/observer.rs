//! How a run reports progress: the trainer calls an [`Observer`]; what to show, and how, is the
//! caller's (the `fp8` CLI draws a progress bar; [`Silent`] shows nothing).

use fp8_stats::results::Summary;
use std::path::Path;

/// A run has started (fresh or resumed).
#[derive(Clone, Debug)]
pub struct RunStarted<'a> {
    pub run_dir: &'a Path,
    /// The run's identity id (see [`crate::identity`]).
    pub id: &'a str,
    /// The step it starts at (0, or the resumed checkpoint's).
    pub start_step: u64,
    pub total_steps: u64,
    /// What the data is, in words.
    pub data: &'a str,
    /// The data's entropy rate when known.
    pub entropy_floor: Option<f64>,
}

/// One optimizer step has finished.
#[derive(Clone, Copy, Debug)]
pub struct StepDone {
    /// Steps done so far (this step included).
    pub done: u64,
    pub total: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
}

/// An evaluation has finished (after `done` steps).
#[derive(Clone, Copy, Debug)]
pub struct Evaluated {
    pub done: u64,
    pub val_loss: f64,
    pub sharpness: f64,
}

/// Receives a run's progress. Every method has an empty default.
pub trait Observer {
    fn started(&mut self, _run: &RunStarted) {}
    fn step(&mut self, _step: &StepDone) {}
    fn evaluated(&mut self, _eval: &Evaluated) {}
    /// Anything else worth a line: resuming, a damaged checkpoint skipped, a Hessian estimate.
    fn note(&mut self, _line: &str) {}
    fn finished(&mut self, _summary: &Summary) {}
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Observer for Silent {}
