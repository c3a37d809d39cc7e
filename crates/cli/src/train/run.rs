//! The loop itself, generic over the (decorated, autodiff) backend.

use super::checkpoint::{self, LoopState};
use super::params::{clip_grad_norm, named_values};
use super::TrainConfig;
use anyhow::{bail, Context};
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use fp8_core::context::activate;
use fp8_core::FusedAutodiffBackend;
use fp8_core::PrecisionContext;
use fp8_io::data::{Batcher, DataSpec, TokenDataset};
use fp8_io::tensorboard::EventWriter;
use fp8_models::{Model, ModelConfig};
use fp8_stats::divergence::{DivergenceMonitor, DivergenceRule};
use fp8_stats::spikes::{count_spikes, SpikeRule};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    Converged,
    Diverged { step: u64, reason: String },
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub outcome: Outcome,
    pub steps: u64,
    pub final_train_loss: Option<f64>,
    pub best_train_loss: Option<f64>,
    pub final_val_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    pub entropy_floor: Option<f64>,
    pub spike_count: u64,
    pub max_sharpness: Option<f64>,
    pub tokens_per_s: f64,
    pub wall_seconds: f64,
    pub recipe: String,
    pub model: String,
    pub lr: f64,
    pub seed: u64,
}

impl Summary {
    pub fn diverged(&self) -> bool {
        matches!(self.outcome, Outcome::Diverged { .. })
    }
}

type Recorded = BinFileRecorder<FullPrecisionSettings>;

/// Train under `cfg` on backend `B` (a [`fp8_core::Precision`] over `Autodiff<…>`).
/// With `resume`, continue from the run directory's latest checkpoint.
pub fn train<B>(cfg: &TrainConfig, device: &B::Device, resume: bool) -> anyhow::Result<Summary>
where
    B: FusedAutodiffBackend,
{
    cfg.validate()?;
    let run_dir = cfg.resolved_run_dir();
    let recipe = fp8_core::recipe::from_file(&cfg.recipe)?;
    let mut model_cfg = ModelConfig::from_preset_or_file(&cfg.model)?;
    // The run's seed draws the initial weights too, so a seed sweep varies initialization.
    model_cfg.seed = cfg.seed;
    let data = DataSpec::parse(&cfg.data)?.load()?;
    check_fit(cfg, &model_cfg, &data)?;

    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("creating run directory {}", run_dir.display()))?;
    // One writer per run directory: a sweep restarted while an orphaned worker still trains
    // here waits for it instead of interleaving checkpoints.
    let lock_file = std::fs::File::create(run_dir.join(".lock"))?;
    if lock_file.try_lock().is_err() {
        eprintln!("waiting for another fp8 train using {}", run_dir.display());
        lock_file.lock()?;
    }
    std::fs::write(
        run_dir.join("config.ron"),
        ron::ser::to_string_pretty(cfg, Default::default())?,
    )?;
    std::fs::write(run_dir.join("model.ron"), model_cfg.to_ron())?;
    if let Ok(text) = std::fs::read_to_string(&cfg.recipe) {
        std::fs::write(run_dir.join("recipe.ron"), text)?;
    }

    B::seed(device, cfg.seed);
    let mut model: Model<B> = model_cfg.init(device);
    let mut optim = AdamWConfig::new()
        .with_beta_1(cfg.beta1 as f32)
        .with_beta_2(cfg.beta2 as f32)
        .with_epsilon(cfg.adam_eps as f32)
        .with_weight_decay(cfg.weight_decay as f32)
        .init::<B, Model<B>>();
    let ctx: Arc<Mutex<PrecisionContext>> = PrecisionContext::new(recipe).shared();

    let mut state = LoopState::default();
    if resume {
        match checkpoint::latest(&run_dir)? {
            Some((path, saved)) => {
                let rec = Recorded::new();
                model = model.load_record(
                    rec.load(path.join("model"), device)
                        .with_context(|| format!("loading model from {}", path.display()))?,
                );
                optim = optim.load_record(
                    rec.load(path.join("optim"), device)
                        .with_context(|| format!("loading optimizer from {}", path.display()))?,
                );
                lock(&ctx)
                    .recipe_mut()
                    .restore(saved.recipe_state.clone())?;
                eprintln!("resuming {} at step {}", run_dir.display(), saved.step);
                state = saved;
            }
            None => eprintln!("no checkpoint in {}: starting fresh", run_dir.display()),
        }
    }

    let mut tb = EventWriter::create(&run_dir)
        .with_context(|| format!("creating TensorBoard events in {}", run_dir.display()))?;
    if let Some(h) = data.entropy_floor {
        tb.add_scalar("val/entropy_floor", h as f32, state.step as i64)?;
        if state.step == 0 {
            eprintln!(
                "data: {} (entropy floor {h:.4} nats/token)",
                data.description
            );
        }
    }

    let _active = activate(ctx.clone());
    let batcher = Batcher::new(cfg.seed);
    let mut monitor = DivergenceMonitor::new(DivergenceRule {
        threshold: cfg.divergence_threshold,
    });
    for &(step, loss) in &state.losses {
        monitor.observe(step, loss);
    }
    let progress = Progress::new(cfg.steps, state.step);
    let tokens_per_step = (cfg.batch * cfg.seq * cfg.grad_accum) as u64;
    let mut outcome = Outcome::Converged;
    let segment_start = Instant::now();
    let seconds_before = state.train_seconds;

    while state.step < cfg.steps {
        let step = state.step;
        let step_start = Instant::now();
        lock(&ctx).set_step(step);
        lock(&ctx).set_telemetry(logs_at(cfg, step));
        let lr = cfg.lr_at(step);

        let (loss_value, mut grads) = gradients(&model, &data.train, &batcher, cfg, step, device)?;
        let telemetry = lock(&ctx).end_step();

        if let Some(d) = monitor.observe(step, loss_value) {
            let reason = if loss_value.is_finite() {
                format!(
                    "loss {loss_value:.4} above {}× the initial loss",
                    cfg.divergence_threshold
                )
            } else {
                format!("non-finite loss ({loss_value})")
            };
            state.losses.push((step, loss_value));
            tb.add_scalar("train/loss", loss_value as f32, step as i64)?;
            outcome = Outcome::Diverged {
                step: d.step,
                reason,
            };
            break;
        }

        let grad_norm = clip_grad_norm::<B, _>(&model, &mut grads, cfg.clip);
        if cfg.histogram_every > 0 && step % cfg.histogram_every == 0 {
            for (name, values) in named_values::<B, _>(&model, Some(&grads)) {
                tb.add_histogram(&format!("grads/{name}"), &values, step as i64)?;
            }
            for (name, values) in named_values::<B, _>(&model, None) {
                tb.add_histogram(&format!("weights/{name}"), &values, step as i64)?;
            }
        }
        model = optim.step(lr, model, grads);

        state.losses.push((step, loss_value));
        state.tokens += tokens_per_step;
        state.step += 1;
        let step_seconds = step_start.elapsed().as_secs_f64();

        if logs_at(cfg, step) {
            let s = step as i64;
            tb.add_scalar("train/loss", loss_value as f32, s)?;
            tb.add_scalar("train/lr", lr as f32, s)?;
            tb.add_scalar("train/grad_norm", grad_norm as f32, s)?;
            tb.add_scalar(
                "train/tokens_per_s",
                (tokens_per_step as f64 / step_seconds) as f32,
                s,
            )?;
            for ((site, role), st) in &telemetry {
                let tag = |stat: &str| format!("precision/{site}/{role}/{stat}");
                tb.add_scalar(&tag("amax"), st.amax, s)?;
                tb.add_scalar(&tag("scale"), st.scale, s)?;
                tb.add_scalar(&tag("underflow"), st.underflow as f32, s)?;
                tb.add_scalar(&tag("saturation"), st.saturation as f32, s)?;
                tb.add_scalar(&tag("snr_db"), st.snr_db as f32, s)?;
            }
            tb.flush()?;
        }
        progress.step(
            state.step,
            loss_value,
            tokens_per_step as f64 / step_seconds,
        );

        let eval_now =
            (cfg.eval_every > 0 && state.step % cfg.eval_every == 0) || state.step == cfg.steps;
        if eval_now {
            let (val, sharp) = evaluate(&model, &data, &batcher, cfg, device, &ctx)?;
            state.val_losses.push((step, val));
            state.sharpness.push((step, sharp));
            tb.add_scalar("val/loss", val as f32, step as i64)?;
            tb.add_scalar("stability/sharpness", sharp as f32, step as i64)?;
            progress.note(&format!(
                "step {}: val loss {val:.4}, sharpness {sharp:.4}",
                state.step
            ));
        }

        if cfg.hessian_every > 0 && state.step % cfg.hessian_every == 0 {
            let est = crate::hessian::model_top_eigenvalue(
                &model, &data.val, &batcher, cfg, device, &ctx,
            )?;
            tb.add_scalar(
                "stability/hessian_top_eig",
                est.eigenvalue as f32,
                step as i64,
            )?;
            progress.note(&format!(
                "step {}: Hessian top eigenvalue {:.4} ({} iterations)",
                state.step, est.eigenvalue, est.iterations
            ));
        }

        let ckpt_now = (cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0)
            || state.step == cfg.steps;
        if ckpt_now {
            state.train_seconds = seconds_before + segment_start.elapsed().as_secs_f64();
            state.recipe_state = lock(&ctx).recipe().state();
            save_checkpoint(&run_dir, &state, &model, &optim)?;
        }
    }
    progress.finish();
    tb.flush()?;

    state.train_seconds = seconds_before + segment_start.elapsed().as_secs_f64();
    let summary = summarize(cfg, &state, outcome, data.entropy_floor);
    std::fs::write(
        run_dir.join("summary.json"),
        serde_json::to_vec_pretty(&summary)?,
    )?;
    let curves = crate::sweep::Curves {
        losses: state.losses.clone(),
        val_losses: state.val_losses.clone(),
        sharpness: state.sharpness.clone(),
    };
    std::fs::write(run_dir.join("curves.json"), serde_json::to_vec(&curves)?)?;
    Ok(summary)
}

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
    let mut accumulator = GradientsAccumulator::<Model<B>>::new();
    let mut loss_value = 0.0;
    for micro in 0..cfg.grad_accum {
        let (inputs, targets) = batcher.batch(train, cfg.batch, cfg.seq, step, micro as u64)?;
        let loss = model.loss(
            int_tensor(&inputs, cfg, device),
            int_tensor(&targets, cfg, device),
        );
        let loss = loss.div_scalar(cfg.grad_accum as f64);
        loss_value += loss.clone().into_scalar().elem::<f64>();
        let grads = GradientsParams::from_grads(loss.backward(), model);
        accumulator.accumulate(model, grads);
    }
    Ok((loss_value, accumulator.grads()))
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
    lock(ctx).set_step(step);
    lock(ctx).set_telemetry(logs_at(cfg, step));
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

fn lock(ctx: &Mutex<PrecisionContext>) -> std::sync::MutexGuard<'_, PrecisionContext> {
    ctx.lock().unwrap_or_else(|p| p.into_inner())
}

fn int_tensor<B: Backend>(
    tokens: &[u32],
    cfg: &TrainConfig,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    Tensor::<B, 1, Int>::from_ints(data.as_slice(), device)
        .reshape([tokens.len() / cfg.seq, cfg.seq])
}

fn check_fit(cfg: &TrainConfig, model: &ModelConfig, data: &TokenDataset) -> anyhow::Result<()> {
    if cfg.seq > model.context {
        bail!(
            "--seq {} exceeds the model's context of {} tokens",
            cfg.seq,
            model.context
        );
    }
    if data.vocab_size > model.vocab_size {
        bail!(
            "the data uses {} token ids but the model's vocabulary has {}: pick a model with a larger vocab_size",
            data.vocab_size,
            model.vocab_size
        );
    }
    for (name, split) in [("train", &data.train), ("validation", &data.val)] {
        if split.len() <= cfg.seq + 1 {
            bail!(
                "the {name} split has {} tokens, too few for --seq {}",
                split.len(),
                cfg.seq
            );
        }
    }
    Ok(())
}

/// Validation loss and mean last-token logit sharpness, with the recipe's casts applied but not
/// recorded.
fn evaluate<B: FusedAutodiffBackend>(
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

fn save_checkpoint<B: AutodiffBackend, O: Optimizer<Model<B>, B>>(
    run_dir: &Path,
    state: &LoopState,
    model: &Model<B>,
    optim: &O,
) -> anyhow::Result<()> {
    checkpoint::save(run_dir, state, 2, |dir| {
        let rec = Recorded::new();
        rec.record(model.clone().into_record(), dir.join("model"))
            .context("writing model checkpoint")?;
        rec.record(optim.to_record(), dir.join("optim"))
            .context("writing optimizer checkpoint")?;
        Ok(())
    })?;
    Ok(())
}

fn summarize(cfg: &TrainConfig, st: &LoopState, outcome: Outcome, floor: Option<f64>) -> Summary {
    let finite = |v: &[(u64, f64)]| {
        v.iter()
            .map(|p| p.1)
            .filter(|l| l.is_finite())
            .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.min(l))))
    };
    Summary {
        outcome,
        steps: st.step,
        final_train_loss: st.losses.last().map(|p| p.1),
        best_train_loss: finite(&st.losses),
        final_val_loss: st.val_losses.last().map(|p| p.1),
        best_val_loss: finite(&st.val_losses),
        entropy_floor: floor,
        spike_count: count_spikes(&st.losses, &SpikeRule::default()),
        max_sharpness: st
            .sharpness
            .iter()
            .map(|p| p.1)
            .filter(|s| s.is_finite())
            .reduce(f64::max),
        tokens_per_s: if st.train_seconds > 0.0 {
            st.tokens as f64 / st.train_seconds
        } else {
            0.0
        },
        wall_seconds: st.train_seconds,
        recipe: cfg.recipe_name(),
        model: cfg.model.clone(),
        lr: cfg.lr,
        seed: cfg.seed,
    }
}

/// A progress bar on a terminal, periodic plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
}

impl Progress {
    fn new(total: u64, start: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}<{eta_precise}]",
                )
                .expect("valid template"),
            );
            b.set_position(start);
            b
        });
        Progress { bar, total }
    }

    fn step(&self, done: u64, loss: f64, tokens_per_s: f64) {
        match &self.bar {
            Some(b) => {
                b.set_position(done);
                b.set_message(format!("loss {loss:.4}  {tokens_per_s:.0} tok/s"));
            }
            None => {
                let every = (self.total / 20).max(1);
                if done.is_multiple_of(every) || done == self.total {
                    eprintln!(
                        "step {done}/{}: loss {loss:.4}, {tokens_per_s:.0} tokens/s",
                        self.total
                    );
                }
            }
        }
    }

    fn note(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
