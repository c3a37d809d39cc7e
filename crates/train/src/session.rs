//! Everything the loop in [`crate::train`] calls out to: opening the run directory (identity
//! check, resume, the files that describe the run), logging, evaluation, the Hessian estimate,
//! checkpoints and the closing summary.

use crate::checkpoint::{self, LoopState};
use crate::config::TrainConfig;
use crate::diagnostics::{cast_extremes, noise_ratio, update_stats, Snapshot};
use crate::eval::evaluate;
use crate::observer::{Evaluated, Observer, RunStarted, StepDone};
use crate::optim::QuantAdamW;
use crate::params::{named_values, nonfinite_params};
use crate::setup::{resolve, Resolved};
use crate::step::{gradients, lock, logs_at};
use anyhow::{bail, Context};
use burn::module::Module;
use burn::optim::{GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use fp8_core::context::{activate, Telemetry};
use fp8_core::FusedAutodiffBackend;
use fp8_core::PrecisionContext;
use fp8_io::data::{Batcher, TokenDataset};
use fp8_io::tensorboard::EventWriter;
use fp8_models::{Diagnostics, Model};
use fp8_stats::divergence::{DivergenceMonitor, DivergenceRule};
use fp8_stats::results::{write_atomic, write_json, Curves, Outcome, Summary};
use fp8_stats::spikes::{count_spikes, SpikeRule};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

type Recorded = BinFileRecorder<FullPrecisionSettings>;

/// Checkpoints kept in a run directory.
const KEEP_CHECKPOINTS: usize = 2;

/// A run in progress: its configuration, model, optimizer, recipe context, data and loop state.
pub struct Session<'o, B: FusedAutodiffBackend, O> {
    pub cfg: TrainConfig,
    pub run_dir: PathBuf,
    pub model: Model<B>,
    pub optim: O,
    pub ctx: Arc<Mutex<PrecisionContext>>,
    pub data: TokenDataset,
    pub batcher: Batcher,
    pub state: LoopState,
    device: B::Device,
    monitor: DivergenceMonitor,
    tb: EventWriter,
    observer: &'o mut dyn Observer,
    segment_start: Instant,
    seconds_before: f64,
    /// Held for the whole run: one writer per run directory.
    _lock: File,
}

/// A divergence the loop stopped at: step and reason.
pub struct Diverged {
    step: u64,
    reason: String,
}

/// Resolve `cfg`, check the run directory (see [`crate::train::train`]), build the model,
/// optimizer and recipe, and restore the newest intact checkpoint when resuming.
pub fn open<'o, B: FusedAutodiffBackend>(
    cfg: &TrainConfig,
    device: &B::Device,
    resume: bool,
    observer: &'o mut dyn Observer,
) -> anyhow::Result<Session<'o, B, impl Optimizer<Model<B>, B>>> {
    let resolved = resolve(cfg)?;
    let data = resolved.load_data()?;
    let run_dir = resolved.run_dir();
    // The model before the run directory: a checkpoint that fails to load leaves nothing.
    B::seed(device, cfg.seed);
    let mut model: Model<B> = resolved.init_model(device)?;
    let lock = open_run_dir(&resolved, &run_dir, resume)?;
    describe_run(&resolved, &run_dir)?;

    let ctx = resolved.context()?;
    // The recipe's `optimizer:` section; without one, plain AdamW (the fused kernel, burn's bits).
    let precision = ctx.recipe().optimizer().unwrap_or_default();
    let mut optim = QuantAdamW::init::<B, Model<B>>(&cfg.adamw(), precision);
    let ctx = ctx.shared();

    let mut state = LoopState::default();
    if resume {
        let mut damaged = Vec::new();
        let found = checkpoint::newest_intact(&run_dir, &mut |p, e| {
            damaged.push(format!("{}: {e:#}", p.display()))
        })?;
        for d in &damaged {
            observer.note(&format!("warning: skipping damaged checkpoint {d}"));
        }
        match found {
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
                let mut c = lock_ctx(&ctx);
                c.recipe_mut()
                    .restore(saved.recipe_state.clone())
                    .with_context(|| format!("restoring recipe state from {}", path.display()))?;
                c.restore_counterfactuals(saved.counterfactual_states.clone())
                    .with_context(|| {
                        format!("restoring counterfactual recipes from {}", path.display())
                    })?;
                drop(c);
                observer.note(&format!(
                    "resuming {} at step {}",
                    run_dir.display(),
                    saved.step
                ));
                state = saved;
            }
            None if !damaged.is_empty() => bail!(
                "{}: no intact checkpoint to resume from (all {} damaged); remove the \
                 checkpoints directory to start over",
                run_dir.display(),
                damaged.len()
            ),
            None => observer.note(&format!(
                "no checkpoint in {}: starting fresh",
                run_dir.display()
            )),
        }
    }

    let mut tb = EventWriter::create(&run_dir)
        .with_context(|| format!("creating TensorBoard events in {}", run_dir.display()))?;
    if let Some(h) = data.entropy_floor {
        tb.add_scalar("val/entropy_floor", h as f32, state.step as i64)
            .with_context(|| format!("writing TensorBoard events in {}", run_dir.display()))?;
    }
    observer.started(&RunStarted {
        run_dir: &run_dir,
        id: &resolved.identity.id(),
        start_step: state.step,
        total_steps: cfg.steps,
        data: &data.description,
        entropy_floor: data.entropy_floor,
    });
    let mut monitor = DivergenceMonitor::new(DivergenceRule {
        threshold: cfg.divergence_threshold,
    });
    for &(step, loss) in &state.losses {
        monitor.observe(step, loss);
    }
    let seconds_before = state.train_seconds;
    Ok(Session {
        cfg: cfg.clone(),
        run_dir,
        model,
        optim,
        ctx,
        data,
        batcher: Batcher::new(cfg.seed),
        state,
        device: device.clone(),
        monitor,
        tb,
        observer,
        segment_start: Instant::now(),
        seconds_before,
        _lock: lock,
    })
}

/// Create and lock the run directory, and refuse to reuse it for anything but this run: a
/// stored identity must equal this one, and without `resume` the directory must be empty.
fn open_run_dir(resolved: &Resolved, run_dir: &Path, resume: bool) -> anyhow::Result<File> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("creating run directory {}", run_dir.display()))?;
    // One writer per run directory: a sweep restarted while an orphaned worker still trains
    // here waits for it instead of interleaving checkpoints.
    let lock_path = run_dir.join(".lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        eprintln!("waiting for another fp8 train using {}", run_dir.display());
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
    }
    let known = resolved.identity.check_against_stored(run_dir)?;
    let holds = |name: &str| run_dir.join(name).exists();
    if !resume {
        let mut others = Vec::new();
        for entry in std::fs::read_dir(run_dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name != ".lock" {
                others.push(name);
            }
        }
        if !others.is_empty() {
            others.sort();
            bail!(
                "run directory {} is not empty (it holds {}); continue the run in it with \
                 --resume, or choose a new directory with --run-dir",
                run_dir.display(),
                others.join(", ")
            );
        }
    } else if !known && (holds("checkpoints") || holds("summary.json")) {
        bail!(
            "{} holds a run without {} (written by an older fp8, or damaged), so its settings \
             cannot be verified; choose a new directory with --run-dir",
            run_dir.display(),
            crate::identity::FILE
        );
    }
    Ok(lock)
}

/// Write the files that say what the run is: its identity, resolved configuration, model and
/// recipe (each atomically).
fn describe_run(resolved: &Resolved, run_dir: &Path) -> anyhow::Result<()> {
    resolved.identity.store(run_dir)?;
    let config = ron::ser::to_string_pretty(&resolved.cfg, Default::default())?;
    write_atomic(&run_dir.join("config.ron"), config.as_bytes())?;
    write_atomic(
        &run_dir.join("model.ron"),
        resolved.model.to_ron().as_bytes(),
    )?;
    write_atomic(&run_dir.join("recipe.ron"), resolved.recipe_text.as_bytes())?;
    Ok(())
}

/// The TensorBoard scalars of one inspection (`inspect/…` and `counterfactual/…` tags), named
/// as TransformerEngine's debug tools name them.
fn inspection_scalars(i: &fp8_formats::Inspection) -> impl Iterator<Item = (&'static str, f32)> {
    // In the order of the names the TensorBoard layout charts.
    let values = [
        i.dynamic_range as f32,
        i.max_block_dynamic_range as f32,
        i.mse as f32,
        i.underflow_pct as f32,
        i.overflow_pct as f32,
        i.scale_inv_min,
        i.scale_inv_max,
    ];
    fp8_io::tensorboard::custom_scalars::INSPECT_STATS
        .into_iter()
        .zip(values)
}

fn lock_ctx(ctx: &Mutex<PrecisionContext>) -> std::sync::MutexGuard<'_, PrecisionContext> {
    lock(ctx)
}

impl<B: FusedAutodiffBackend, O: Optimizer<Model<B>, B>> Session<'_, B, O> {
    fn tb_context(&self) -> String {
        format!("writing TensorBoard events in {}", self.run_dir.display())
    }

    /// Feed `loss` to the divergence rule; `Some` when the run must stop here.
    pub fn check_divergence(&mut self, step: u64, loss: f64) -> Option<Diverged> {
        let d = self.monitor.observe(step, loss)?;
        let reason = if loss.is_finite() {
            format!(
                "loss {loss:.4} above {}× the initial loss",
                self.cfg.divergence_threshold
            )
        } else {
            format!("non-finite loss ({loss})")
        };
        self.state.losses.push((step, loss));
        Some(Diverged {
            step: d.step,
            reason,
        })
    }

    /// Weight and gradient histograms, every `histogram_every` steps.
    pub fn log_histograms(&mut self, step: u64, grads: &GradientsParams) -> anyhow::Result<()> {
        let every = self.cfg.histogram_every;
        if every == 0 || !step.is_multiple_of(every) {
            return Ok(());
        }
        let ctx = self.tb_context();
        for (name, values) in named_values::<B, _>(&self.model, Some(grads)) {
            self.tb
                .add_histogram(&format!("grads/{name}"), &values, step as i64)
                .context(ctx.clone())?;
        }
        for (name, values) in named_values::<B, _>(&self.model, None) {
            self.tb
                .add_histogram(&format!("weights/{name}"), &values, step as i64)
                .context(ctx.clone())?;
        }
        Ok(())
    }

    /// Count the finished step, log its scalars and telemetry (every `log_every` steps) and
    /// tell the observer.
    pub fn record_step(
        &mut self,
        step: u64,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        telemetry: &Telemetry,
        started: Instant,
    ) -> anyhow::Result<()> {
        let cfg = &self.cfg;
        let tokens_per_step = (cfg.batch * cfg.seq * cfg.grad_accum) as u64;
        if !grad_norm.is_finite() && self.state.nonfinite_grads_at.is_none() {
            self.state.nonfinite_grads_at = Some(step);
        }
        self.state.losses.push((step, loss));
        self.state.tokens += tokens_per_step;
        self.state.step += 1;
        let tokens_per_s = tokens_per_step as f64 / started.elapsed().as_secs_f64();
        if logs_at(cfg, step) {
            let s = step as i64;
            let inspections = lock(&self.ctx).take_inspections();
            let tb = &mut self.tb;
            let write = (|| {
                tb.add_scalar("train/loss", loss as f32, s)?;
                tb.add_scalar("train/lr", lr as f32, s)?;
                tb.add_scalar("train/grad_norm", grad_norm as f32, s)?;
                tb.add_scalar("train/tokens_per_s", tokens_per_s as f32, s)?;
                for ((site, role), st) in telemetry {
                    let tag = |stat: &str| format!("precision/{site}/{role}/{stat}");
                    tb.add_scalar(&tag("amax"), st.amax, s)?;
                    tb.add_scalar(&tag("scale"), st.scale, s)?;
                    tb.add_scalar(&tag("underflow"), st.underflow as f32, s)?;
                    tb.add_scalar(&tag("saturation"), st.saturation as f32, s)?;
                    tb.add_scalar(&tag("snr_db"), st.snr_db as f32, s)?;
                }
                for ((site, role, recipe), i) in &inspections {
                    let prefix = if recipe.is_empty() {
                        format!("inspect/{site}/{role}")
                    } else {
                        format!("counterfactual/{recipe}/{site}/{role}")
                    };
                    for (stat, v) in inspection_scalars(i) {
                        tb.add_scalar(&format!("{prefix}/{stat}"), v, s)?;
                    }
                }
                tb.flush()
            })();
            write.with_context(|| self.tb_context())?;
        }
        self.observer.step(&StepDone {
            done: self.state.step,
            total: self.cfg.steps,
            loss,
            lr,
            grad_norm,
            tokens_per_s,
        });
        Ok(())
    }

    /// The forward pass's, the optimizer step's and the casts' stability diagnostics of a
    /// logging step, to TensorBoard (`stability/…`) and the run's series (see
    /// [`crate::diagnostics`]). `before` is the snapshot of the weights before the step.
    pub fn record_diagnostics(
        &mut self,
        step: u64,
        forward: Option<Diagnostics>,
        before: Snapshot,
        noise: Option<f64>,
        telemetry: &Telemetry,
    ) -> anyhow::Result<()> {
        use fp8_stats::diagnostics as d;
        let mut scalars: Vec<(String, f64)> = Vec::new();
        let mut series: Vec<(&str, f64)> = Vec::new();
        if let Some(f) = forward {
            for (i, v) in f.max_attn_logit.iter().enumerate() {
                scalars.push((format!("stability/attn_logit_max/h{i}"), *v as f64));
            }
            let top = f.max_attn_logit.iter().copied().map(f64::from);
            if let Some(m) = top.reduce(|a, b| {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.max(b)
                }
            }) {
                series.push((d::ATTN_LOGIT_MAX, m));
            }
            scalars.push(("stability/log_z_mean".into(), f.log_z_mean as f64));
            series.push((d::LOG_Z_MAX, f.log_z_max as f64));
        }
        let update = update_stats(&before, &named_values::<B, _>(&self.model, None));
        for (g, r) in &update.ratio {
            scalars.push((format!("stability/update_ratio/{g}"), *r));
        }
        if let Some(m) = update.ratio.values().copied().reduce(f64::max) {
            series.push((d::UPDATE_RATIO_MAX, m));
        }
        series.push((d::STAGNATION, update.stagnation));
        if let Some(r) = noise {
            series.push((d::GRAD_NOISE_RATIO, r));
        }
        if let Some((u, sat)) = cast_extremes(telemetry) {
            series.push((d::UNDERFLOW_MAX, u));
            series.push((d::SATURATION_MAX, sat));
        }
        for (name, v) in &series {
            scalars.push((format!("stability/{name}"), *v));
            let s = self.state.diagnostics.entry(name.to_string()).or_default();
            s.push((step, *v));
        }
        let tb = &mut self.tb;
        let write = (|| {
            for (tag, v) in &scalars {
                tb.add_scalar(tag, *v as f32, step as i64)?;
            }
            tb.flush()
        })();
        write.with_context(|| self.tb_context())
    }

    /// Every `grad_noise_every` steps, the gradient's quantization noise
    /// ([`crate::diagnostics::noise_ratio`]): `grads` (the step's, before clipping) against the
    /// same batch's gradient with every cast off.
    pub fn gradient_noise(
        &mut self,
        step: u64,
        grads: &GradientsParams,
    ) -> anyhow::Result<Option<f64>> {
        let every = self.cfg.grad_noise_every;
        // Under data parallelism `grads` is the group's reduced gradient and an unquantized one
        // would need a second all-reduce every rank takes part in: not measured there.
        let parallel = crate::parallel::rank_and_world().is_some_and(|(_, n)| n > 1);
        if every == 0 || !step.is_multiple_of(every) || parallel {
            return Ok(None);
        }
        let exact = {
            let plain = PrecisionContext::new(fp8_core::recipe::from_ron_str(
                "(kind: \"fp32\")",
                "the unquantized reference",
            )?);
            let _off = activate(plain.shared());
            let (_, g) = gradients(
                &self.model,
                &self.data.train,
                &self.batcher,
                &self.cfg,
                step,
                &self.device,
            )?;
            g
        };
        Ok(noise_ratio::<B, _>(&self.model, grads, &exact))
    }

    /// Evaluate every `eval_every` steps and after the last.
    pub fn eval_due(&self) -> bool {
        let (done, every) = (self.state.step, self.cfg.eval_every);
        (every > 0 && done.is_multiple_of(every)) || done == self.cfg.steps
    }

    /// Validation loss and logit sharpness, logged and recorded.
    pub fn evaluate(&mut self) -> anyhow::Result<()> {
        let step = self.state.step - 1;
        let (val, sharp) = evaluate(
            &self.model,
            &self.data,
            &self.batcher,
            &self.cfg,
            &self.device,
            &self.ctx,
        )?;
        self.state.val_losses.push((step, val));
        self.state.sharpness.push((step, sharp));
        let ctx = self.tb_context();
        self.tb
            .add_scalar("val/loss", val as f32, step as i64)
            .context(ctx.clone())?;
        self.tb
            .add_scalar("stability/sharpness", sharp as f32, step as i64)
            .context(ctx)?;
        self.observer.evaluated(&Evaluated {
            done: self.state.step,
            val_loss: val,
            sharpness: sharp,
        });
        Ok(())
    }

    /// Estimate the Hessian's top eigenvalue every `hessian_every` steps.
    pub fn hessian_due(&self) -> bool {
        let every = self.cfg.hessian_every;
        every > 0 && self.state.step.is_multiple_of(every)
    }

    /// The Hessian estimate, logged as `stability/hessian_top_eig`.
    pub fn estimate_hessian(&mut self) -> anyhow::Result<()> {
        let step = self.state.step - 1;
        let est = crate::hessian::model_top_eigenvalue(
            &self.model,
            &self.data.val,
            &self.batcher,
            &self.cfg,
            &self.device,
            &self.ctx,
        )?;
        self.tb
            .add_scalar(
                "stability/hessian_top_eig",
                est.eigenvalue as f32,
                step as i64,
            )
            .with_context(|| self.tb_context())?;
        self.observer.note(&format!(
            "step {}: Hessian top eigenvalue {:.4} ({} iterations)",
            self.state.step, est.eigenvalue, est.iterations
        ));
        Ok(())
    }

    /// Checkpoint every `checkpoint_every` steps and after the last.
    pub fn checkpoint_due(&self) -> bool {
        let (done, every) = (self.state.step, self.cfg.checkpoint_every);
        (every > 0 && done.is_multiple_of(every)) || done == self.cfg.steps
    }

    /// Write a checkpoint, unless the weights or the optimizer state are not finite: such a
    /// checkpoint could only be resumed into the same blow-up, and would hide the last good one.
    pub fn checkpoint(&mut self) -> anyhow::Result<()> {
        if !crate::parallel::writes_checkpoints() {
            return Ok(()); // data parallelism: rank 0 writes the run's checkpoints
        }
        let bad = nonfinite_params::<B, _>(&self.model);
        let why_not = if !bad.is_empty() {
            Some(format!("non-finite weights in {}", bad.join(", ")))
        } else {
            self.state
                .nonfinite_grads_at
                .map(|s| format!("the optimizer state absorbed non-finite gradients at step {s}"))
        };
        if let Some(why) = why_not {
            self.observer.note(&format!(
                "warning: step {}: no checkpoint written ({why})",
                self.state.step
            ));
            return Ok(());
        }
        self.state.train_seconds = self.seconds_before + self.segment_start.elapsed().as_secs_f64();
        {
            let ctx = lock(&self.ctx);
            self.state.recipe_state = ctx.recipe().state();
            self.state.counterfactual_states = ctx.counterfactual_states();
        }
        let (model, optim) = (&self.model, &self.optim);
        checkpoint::save(&self.run_dir, &self.state, KEEP_CHECKPOINTS, |dir| {
            let rec = Recorded::new();
            rec.record(model.clone().into_record(), dir.join("model"))
                .with_context(|| format!("writing the model checkpoint into {}", dir.display()))?;
            rec.record(optim.to_record(), dir.join("optim"))
                .with_context(|| {
                    format!("writing the optimizer checkpoint into {}", dir.display())
                })?;
            Ok(())
        })?;
        Ok(())
    }

    /// Close the run: flush the logs, write `curves.json` and then `summary.json` (whose
    /// presence marks the run finished), tell the observer.
    pub fn finish(mut self, diverged: Option<Diverged>) -> anyhow::Result<Summary> {
        if let (Some(d), Some(&(step, loss))) = (&diverged, self.state.losses.last()) {
            if d.step == step {
                self.tb
                    .add_scalar("train/loss", loss as f32, step as i64)
                    .with_context(|| self.tb_context())?;
            }
        }
        self.tb.flush().with_context(|| self.tb_context())?;
        self.state.train_seconds = self.seconds_before + self.segment_start.elapsed().as_secs_f64();
        let mut summary = summarize(&self.cfg, &self.state, diverged, self.data.entropy_floor);
        let curves = Curves {
            losses: self.state.losses.clone(),
            val_losses: self.state.val_losses.clone(),
            sharpness: self.state.sharpness.clone(),
            diagnostics: all_diagnostics(&self.state),
        };
        write_atomic(
            &self.run_dir.join(Curves::FILE),
            &serde_json::to_vec(&curves)?,
        )?;
        summary.diagnostics = curves
            .diagnostics
            .iter()
            .filter_map(|(name, pts)| {
                let dir = fp8_stats::diagnostics::find(name)?.threshold.direction;
                Some((name.clone(), fp8_stats::diagnostics::worst(pts, dir)?))
            })
            .collect();
        write_json(&self.run_dir.join("summary.json"), &summary)?;
        self.observer.finished(&summary);
        Ok(summary)
    }
}

/// The recorded diagnostics' series plus the sharpness growth `φ/φ₀` (relative to the first
/// finite, non-zero sharpness), which only the whole sharpness curve gives.
fn all_diagnostics(st: &LoopState) -> BTreeMap<String, Vec<(u64, f64)>> {
    let mut all = st.diagnostics.clone();
    let first = st
        .sharpness
        .iter()
        .map(|p| p.1)
        .find(|v| v.is_finite() && *v != 0.0);
    if let Some(f0) = first {
        let growth = st.sharpness.iter().map(|&(s, v)| (s, v / f0)).collect();
        all.insert(fp8_stats::diagnostics::SHARPNESS_GROWTH.into(), growth);
    }
    all
}

fn summarize(
    cfg: &TrainConfig,
    st: &LoopState,
    diverged: Option<Diverged>,
    floor: Option<f64>,
) -> Summary {
    let finite_min = |v: &[(u64, f64)]| {
        v.iter()
            .map(|p| p.1)
            .filter(|l| l.is_finite())
            .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.min(l))))
    };
    let (outcome, diverged_step, reason) = match diverged {
        Some(d) => (Outcome::Diverged, Some(d.step), Some(d.reason)),
        None => (Outcome::Converged, None, None),
    };
    Summary {
        outcome,
        diverged_step,
        reason,
        steps: st.step,
        initial_loss: st.losses.first().map(|p| p.1),
        final_train_loss: st.losses.last().map(|p| p.1),
        best_train_loss: finite_min(&st.losses),
        final_val_loss: st.val_losses.last().map(|p| p.1),
        best_val_loss: finite_min(&st.val_losses),
        entropy_floor: floor,
        spike_count: count_spikes(&st.losses, &SpikeRule::default()),
        max_sharpness: st
            .sharpness
            .iter()
            .map(|p| p.1)
            .filter(|s| s.is_finite())
            .reduce(f64::max),
        diagnostics: BTreeMap::new(),
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
