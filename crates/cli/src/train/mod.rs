//! `fp8 train`: the training loop, reading top to bottom as nanoGPT's does.
//!
//! One step: for each micro-batch, forward and backward under the recipe (the [`Precision`]
//! decorator quantizes every GEMM); the recipe then updates its scales; the loss is checked for
//! divergence; gradients are clipped by their global norm; AdamW steps with the scheduled learning
//! rate. Around that: logging, evaluation with the paper's logit sharpness, checkpoints.
//!
//! [`Precision`]: fp8_core::Precision

pub mod checkpoint;
pub mod config;
mod params;
mod run;

pub use config::TrainConfig;
pub use run::{eval_batches, EvalBatch};
pub use run::{gradients, logs_at, optimizer_step, train, Outcome, Summary};
