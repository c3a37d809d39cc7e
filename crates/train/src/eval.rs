//! Evaluation: validation loss and the paper's logit sharpness, on the inner (non-autodiff)
//! backend under the recipe's casts with recording off.

use crate::config::TrainConfig;
use crate::step::{int_tensor, lock};
use burn::module::AutodiffModule;
use burn::prelude::*;
use fp8_core::FusedAutodiffBackend;
use fp8_core::PrecisionContext;
use fp8_io::data::{Batcher, TokenDataset};
use fp8_models::Model;
use std::sync::Mutex;

/// Validation loss and mean last-token logit sharpness, with the recipe's casts applied but not
/// recorded.
pub fn evaluate<B: FusedAutodiffBackend>(
    model: &Model<B>,
    data: &TokenDataset,
    batcher: &Batcher,
    cfg: &TrainConfig,
    device: &B::Device,
    ctx: &Mutex<PrecisionContext>,
) -> anyhow::Result<(f64, f64)> {
    let batches = eval_batches(
        model,
        &data.val,
        batcher,
        cfg,
        cfg.eval_batches,
        device,
        ctx,
    )?;
    let n = batches.len() as f64;
    let loss: f64 = batches.iter().map(|b| b.loss).sum();
    let sharp: f64 = batches
        .iter()
        .map(|b| {
            fp8_stats::sharpness::mean_sharpness(&b.last_logits, &b.last_targets, cfg.sharpness_eps)
        })
        .sum();
    Ok((loss / n, sharp / n))
}

/// One validation batch as the evaluation sees it.
pub struct EvalBatch {
    /// Mean next-token cross-entropy over every position of the batch.
    pub loss: f64,
    /// The last position's logits, `[batch, vocab]` row-major.
    pub last_logits: Vec<f32>,
    /// The last position's target token of each sequence.
    pub last_targets: Vec<usize>,
}

/// Validation batches `0..n` of `val` (`Batcher::val_batch`, `cfg.batch × cfg.seq`) through
/// `model` on the inner (non-autodiff) backend, under the active recipe's casts with recording
/// off, so the recipe's scaling state and telemetry are untouched. `fp8 sharpness` uses it too.
pub fn eval_batches<B: FusedAutodiffBackend>(
    model: &Model<B>,
    val: &[u32],
    batcher: &Batcher,
    cfg: &TrainConfig,
    n: usize,
    device: &B::Device,
    ctx: &Mutex<PrecisionContext>,
) -> anyhow::Result<Vec<EvalBatch>> {
    lock(ctx).set_recording(false);
    let valid = model.valid();
    let out = (0..n)
        .map(|i| {
            let (inputs, targets) = batcher.val_batch(val, cfg.batch, cfg.seq, i as u64)?;
            let tokens = int_tensor::<B::InnerBackend>(&inputs, cfg, device);
            let logits = valid.forward(tokens);
            let [b, t, v] = logits.dims();
            let tgt = int_tensor::<B::InnerBackend>(&targets, cfg, device);
            let loss = fp8_models::cross_entropy(logits.clone(), tgt)
                .into_scalar()
                .elem::<f64>();
            let last_logits: Vec<f32> = logits
                .slice([0..b, t - 1..t, 0..v])
                .into_data()
                .convert::<f32>()
                .into_vec()
                .unwrap_or_default();
            let last_targets: Vec<usize> = (0..b)
                .map(|i| targets[i * cfg.seq + t - 1] as usize)
                .collect();
            Ok(EvalBatch {
                loss,
                last_logits,
                last_targets,
            })
        })
        .collect();
    lock(ctx).set_recording(true);
    out
}
