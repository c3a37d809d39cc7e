//! One optimizer step's pieces, shared by the loop, `fp8 bench train` and the Hessian estimate.

use crate::config::TrainConfig;
use crate::params::clip_grad_norm;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use fp8_core::FusedAutodiffBackend;
use fp8_core::PrecisionContext;
use fp8_io::data::Batcher;
use fp8_models::{Diagnostics, Model};
use std::sync::Mutex;

/// Forward and backward over step `step`'s `cfg.grad_accum` micro-batches of `train` (under the
/// active precision context): the mean loss and the accumulated gradients.
pub fn gradients<B: FusedAutodiffBackend>(
    model: &Model<B>,
    train: &[u32],
    batcher: &Batcher,
    cfg: &TrainConfig,
    step: u64,
    device: &B::Device,
) -> anyhow::Result<(f64, GradientsParams)> {
    let (loss, grads, _) = gradients_watched(model, train, batcher, cfg, step, device, false)?;
    Ok((loss, grads))
}

/// [`gradients`], and with `watch` the forward pass's stability diagnostics of the first
/// micro-batch (the same loss, bit for bit: the probe only reads activations).
pub fn gradients_watched<B: FusedAutodiffBackend>(
    model: &Model<B>,
    train: &[u32],
    batcher: &Batcher,
    cfg: &TrainConfig,
    step: u64,
    device: &B::Device,
    watch: bool,
) -> anyhow::Result<(f64, GradientsParams, Option<Diagnostics>)> {
    let mut accumulator = GradientsAccumulator::<Model<B>>::new();
    let mut loss_value = 0.0;
    let mut diagnostics = None;
    // Data parallelism: this rank's share of the step's micro-batches (all of them otherwise).
    for micro in crate::parallel::local_micro_batches(cfg.grad_accum) {
        let (inputs, targets) = batcher.batch(train, cfg.batch, cfg.seq, step, micro as u64)?;
        let (inputs, targets) = (
            int_tensor(&inputs, cfg, device),
            int_tensor(&targets, cfg, device),
        );
        let loss = if watch && diagnostics.is_none() {
            let (loss, d) = model.loss_with_diagnostics(inputs, targets);
            diagnostics = Some(d);
            loss
        } else {
            model.loss(inputs, targets)
        };
        let loss = loss.div_scalar(cfg.grad_accum as f64);
        loss_value += loss.clone().into_scalar().elem::<f64>();
        let grads = GradientsParams::from_grads(loss.backward(), model);
        accumulator.accumulate(model, grads);
    }
    Ok((loss_value, accumulator.grads(), diagnostics))
}

/// One whole optimizer step as the loop above takes it, minus logging and the divergence check:
/// [`gradients`], the recipe's end of step, global-norm clipping, the AdamW update. Returns the
/// updated model, the loss and the gradient norm before clipping. `fp8 bench train` times this.
#[allow(clippy::too_many_arguments)]
pub fn optimizer_step<B: FusedAutodiffBackend, O: Optimizer<Model<B>, B>>(
    model: Model<B>,
    optim: &mut O,
    train: &[u32],
    batcher: &Batcher,
    cfg: &TrainConfig,
    step: u64,
    device: &B::Device,
    ctx: &Mutex<PrecisionContext>,
) -> anyhow::Result<(Model<B>, f64, f64)> {
    begin_step(ctx, cfg, step);
    let (loss, mut grads) = gradients(&model, train, batcher, cfg, step, device)?;
    lock(ctx).end_step();
    let grad_norm = clip_grad_norm::<B, _>(&model, &mut grads, cfg.clip);
    Ok((optim.step(cfg.lr_at(step), model, grads), loss, grad_norm))
}

/// Whether the loop writes step `step`'s scalars and precision telemetry; the casts of other
/// steps gather only what the recipe needs (`PrecisionContext::set_telemetry`).
pub fn logs_at(cfg: &TrainConfig, step: u64) -> bool {
    step.is_multiple_of(cfg.log_every) || step + 1 == cfg.steps
}

pub(crate) fn lock(ctx: &Mutex<PrecisionContext>) -> std::sync::MutexGuard<'_, PrecisionContext> {
    ctx.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn int_tensor<B: Backend>(
    tokens: &[u32],
    cfg: &TrainConfig,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    Tensor::<B, 1, Int>::from_ints(data.as_slice(), device)
        .reshape([tokens.len() / cfg.seq, cfg.seq])
}

/// Tell the precision context which step runs next and whether its casts gather telemetry.
pub fn begin_step(ctx: &Mutex<PrecisionContext>, cfg: &TrainConfig, step: u64) {
    let mut c = lock(ctx);
    c.set_step(step);
    c.set_telemetry(logs_at(cfg, step));
}
