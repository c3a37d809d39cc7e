//! The training loop, reading top to bottom as nanoGPT's does.
//!
//! One step: for each micro-batch, forward and backward under the recipe (the [`Precision`]
//! decorator quantizes every GEMM); the recipe then updates its scales; the loss is checked for
//! divergence; gradients are clipped by their global norm; AdamW steps with the scheduled learning
//! rate. On logging steps the stability diagnostics ([`crate::diagnostics`]) watch the forward
//! pass and the update, without changing either. Everything around that (opening the run directory, logging, evaluation, checkpoints, the
//! summary) is a call into [`Session`](crate::session::Session).
//!
//! [`Precision`]: fp8_core::Precision

use crate::config::TrainConfig;
use crate::diagnostics::Snapshot;
use crate::observer::Observer;
use crate::params::clip_grad_norm;
use crate::session::open;
use crate::step::{begin_step, gradients_watched, lock, logs_at};
use burn::optim::Optimizer;
use fp8_core::context::activate;
use fp8_core::FusedAutodiffBackend;
use fp8_stats::results::Summary;
use std::time::Instant;

/// Train under `cfg` on backend `B` (a [`fp8_core::Precision`] over `Autodiff<…>`), reporting
/// progress to `observer`. With `resume`, continue from the run directory's newest intact
/// checkpoint (after checking that the directory holds this very run); without it the run
/// directory must be new or empty.
pub fn train<B: FusedAutodiffBackend>(
    cfg: &TrainConfig,
    device: &B::Device,
    resume: bool,
    observer: &mut dyn Observer,
) -> anyhow::Result<Summary> {
    let mut run = open::<B>(cfg, device, resume, observer)?;
    let _active = activate(run.ctx.clone());
    crate::parallel::attach(&run.ctx); // data parallelism: gather amaxes for the reduction
    let cfg = run.cfg.clone();
    while run.state.step < cfg.steps {
        let step = run.state.step;
        let started = Instant::now();
        let lr = cfg.lr_at(step);
        begin_step(&run.ctx, &cfg, step);

        let watch = logs_at(&cfg, step);
        let (loss, mut grads, forward) = gradients_watched(
            &run.model,
            &run.data.train,
            &run.batcher,
            &cfg,
            step,
            device,
            watch,
        )?;
        // Data parallelism: sum gradients and loss, max-reduce amaxes over the ranks.
        let loss =
            crate::parallel::all_reduce_step::<B, _>(&run.model, loss, &mut grads, &run.ctx)?;
        let telemetry = lock(&run.ctx).end_step();
        if let Some(divergence) = run.check_divergence(step, loss) {
            return run.finish(Some(divergence));
        }
        let noise = run.gradient_noise(step, &grads)?;
        let grad_norm = clip_grad_norm::<B, _>(&run.model, &mut grads, cfg.clip);
        run.log_histograms(step, &grads)?;
        let before = watch.then(|| Snapshot::of(&run.model));
        run.model = run.optim.step(lr, run.model, grads);

        run.record_step(step, loss, lr, grad_norm, &telemetry, started)?;
        if let Some(before) = before {
            run.record_diagnostics(step, forward, before, noise, &telemetry)?;
        }
        if run.eval_due() {
            run.evaluate()?;
        }
        if run.hessian_due() {
            run.estimate_hessian()?;
        }
        if run.checkpoint_due() {
            run.checkpoint()?;
        }
    }
    run.finish(None)
}
