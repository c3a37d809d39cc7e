//! `fp8 bench train`: training throughput under a recipe, and its cost relative to a baseline
//! recipe measured in the same process.
//!
//! Why a ratio: this tool runs on shared machines where absolute step times drift by tens of
//! percent from minute to minute. Two models (same init, same batches), one per recipe, take their
//! optimizer steps alternately, so a burst of load from elsewhere hits both; the *ratio* of their
//! median step times is then a stable figure even when tokens/s is not. Each step is the training
//! loop's own [`optimizer_step`](fp8_train::optimizer_step) (forward, backward, the recipe's
//! end of step, global-norm clipping, AdamW with the recipe's `optimizer:` section), without
//! logging, evaluation or checkpoints. As in training, the casts gather precision telemetry only on the steps training would log
//! ([`logs_at`](fp8_train::logs_at), every `log_every` = 10 steps by default) and
//! otherwise only what the recipe needs.
//!
//! CPU utilisation is the process's CPU time (all threads) over the wall time of the timed steps
//! only, so model set-up and warm-up do not dilute it. The team's helper threads poll for the next
//! parallel loop for a moment before they sleep (`fp8_kernels::par::SPIN`), and that polling
//! counts as busy here, as an OpenMP runtime's does for PyTorch.

use anyhow::Context;
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use fp8_core::context::activate;
use fp8_core::FusedAutodiffBackend;
use fp8_core::PrecisionContext;
use fp8_io::data::{Batcher, DataSpec};
use fp8_models::{HfCheckpoint, Model, ModelConfig};
use fp8_train::optim::QuantAdamW;
use fp8_train::{optimizer_step, TrainConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Options of `fp8 bench train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Model preset, model RON file, or hf:DIR (a Hugging Face checkpoint, weights loaded).
    #[arg(long, default_value = "gpt2-mini")]
    pub model: String,
    /// The recipe to measure (RON).
    #[arg(long)]
    pub recipe: PathBuf,
    /// The recipe it is compared with, stepped alternately in the same process; `none` skips it.
    #[arg(long, default_value = "recipes/fp32.ron")]
    pub baseline_recipe: PathBuf,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Measured optimizer steps (per recipe).
    #[arg(long, default_value_t = 20)]
    pub steps: u64,
    /// Unmeasured steps first (per recipe): allocator, caches and thread pools warm up.
    #[arg(long, default_value_t = 3)]
    pub warmup_steps: u64,
    /// Worker threads for the CPU backend (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Data, as for `fp8 train --data`.
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// Device: cpu, cuda:N (built with `--features cuda`) or wgpu[:N] (`--features wgpu`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// One recipe's model, optimizer and precision context, stepped by [`Runner::step`].
struct Runner<B: AutodiffBackend, O> {
    name: String,
    model: Option<Model<B>>,
    optim: O,
    ctx: Arc<Mutex<PrecisionContext>>,
    times: Vec<f64>,
    /// Process CPU seconds spent during the timed steps.
    cpu_seconds: f64,
}

impl<B: FusedAutodiffBackend, O: Optimizer<Model<B>, B>> Runner<B, O> {
    /// One timed optimizer step (`step` selects the data and the learning rate).
    fn step(
        &mut self,
        step: u64,
        train: &[u32],
        batcher: &Batcher,
        cfg: &TrainConfig,
        device: &B::Device,
    ) -> anyhow::Result<(f64, f64)> {
        let _active = activate(self.ctx.clone());
        let model = self
            .model
            .take()
            .expect("the model is put back after each step");
        let cpu_start = process_cpu_seconds();
        let start = Instant::now();
        let (model, loss, _) = optimizer_step(
            model,
            &mut self.optim,
            train,
            batcher,
            cfg,
            step,
            device,
            &self.ctx,
        )?;
        // The loss was read back to the host, so the step's work is done (CPU backends are
        // synchronous; `sync` makes it so on any backend).
        B::sync(device).context("synchronizing the device")?;
        let seconds = start.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds() - cpu_start;
        self.model = Some(model);
        anyhow::ensure!(
            loss.is_finite(),
            "recipe {}: non-finite loss at step {step}",
            self.name
        );
        Ok((seconds, cpu))
    }
}

/// CPU time used so far by all threads of this process, in seconds (`CLOCK_PROCESS_CPUTIME_ID`,
/// nanosecond resolution; `/proc`'s tick counts are too coarse for 100 ms steps).
fn process_cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write; the clock id is a constant the OS defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    if rc != 0 {
        return f64::NAN;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Throughput and step-time statistics of the timed steps, with the CPU utilisation over them.
fn summary(times: &[f64], cpu_seconds: f64, tokens_per_step: f64) -> serde_json::Value {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let mean = sorted.iter().sum::<f64>() / n as f64;
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    serde_json::json!({
        "tokens_per_s": tokens_per_step / mean,
        "tokens_per_s_median": tokens_per_step / median,
        "mean_step_s": mean,
        "median_step_s": median,
        "min_step_s": sorted[0],
        "max_step_s": sorted[n - 1],
        "cpu_utilisation": cpu_seconds / times.iter().sum::<f64>(),
    })
}

/// `fp8 bench train`.
pub fn run(a: TrainArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.steps > 0, "--steps must be at least 1");
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(threads > 0, "--threads must be positive");
    let device =
        fp8_train::backend::train_device(&a.device, fp8_train::backend::ComputeDtype::F32)?;
    // Step on this thread with rayon's global pool, as `fp8 train` does. Not inside a pool's
    // `install`: the steps would then run on a pool worker, whose allocations come from a
    // per-thread malloc arena that glibc unmaps and maps again as its heaps empty and refill,
    // every step (page faults the main thread's heap does not take), so the bench would time
    // allocator churn that training does not have.
    let global = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .is_ok()
        || rayon::current_num_threads() == threads;
    if global {
        return fp8_train::with_train_backend!(device, |B, d| bench::<B>(&a, threads, &d));
    }
    // The global pool exists with another size (a caller that ran rayon before us): a pool of
    // the size asked for, at the cost above.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("building the thread pool")?;
    fp8_train::with_train_backend!(device, |B, d| pool.install(|| bench::<B>(&a, threads, &d)))
}

fn bench<B: FusedAutodiffBackend>(
    a: &TrainArgs,
    threads: usize,
    device: &B::Device,
) -> anyhow::Result<ExitCode> {
    let cfg = TrainConfig {
        recipe: a.recipe.clone(),
        model: a.model.clone(),
        data: a.data.clone(),
        batch: a.batch,
        seq: a.seq,
        steps: a.warmup_steps + a.steps,
        device: a.device.clone(),
        ..TrainConfig::default()
    };
    cfg.validate()?;
    let hf = fp8_models::hf::spec_dir(&cfg.model)
        .map(HfCheckpoint::open)
        .transpose()?;
    let mut model_cfg = match &hf {
        Some(ckpt) => ckpt.config.clone(),
        None => ModelConfig::from_preset_or_file(&cfg.model)?,
    };
    model_cfg.seed = cfg.seed;
    anyhow::ensure!(
        cfg.seq <= model_cfg.context,
        "--seq {} exceeds the model's context of {} tokens",
        cfg.seq,
        model_cfg.context
    );
    let data = DataSpec::parse(&cfg.data)?.load()?;
    fp8_train::setup::check_data(&data, &model_cfg, cfg.seq)?;
    let batcher = Batcher::new(cfg.seed);

    let mut recipes = vec![a.recipe.clone()];
    if a.baseline_recipe.as_os_str() != "none" {
        recipes.push(a.baseline_recipe.clone());
    }
    let mut runners = Vec::new();
    for path in &recipes {
        let recipe = fp8_core::recipe::from_file(path)?;
        // As in training: the recipe's `optimizer:` section decides the moments' and master
        // weights' precision.
        let precision = recipe.optimizer().unwrap_or_default();
        B::seed(device, cfg.seed);
        runners.push(Runner {
            name: fp8_train::config::recipe_stem(path),
            model: Some(match &hf {
                Some(ckpt) => ckpt.load::<B>(device)?,
                None => model_cfg.init::<B>(device),
            }),
            optim: QuantAdamW::init::<B, Model<B>>(&cfg.adamw(), precision),
            ctx: PrecisionContext::for_sites(recipe, &model_cfg.sites())?.shared(),
            times: Vec::new(),
            cpu_seconds: 0.0,
        });
    }

    // Alternate the recipes step by step so that load from elsewhere hits both alike.
    for step in 0..cfg.steps {
        for r in &mut runners {
            let (seconds, cpu) = r.step(step, &data.train, &batcher, &cfg, device)?;
            if step >= a.warmup_steps {
                r.times.push(seconds);
                r.cpu_seconds += cpu;
            }
        }
    }

    let tokens_per_step = (cfg.batch * cfg.seq * cfg.grad_accum) as f64;
    let measured = summary(&runners[0].times, runners[0].cpu_seconds, tokens_per_step);
    let mut out = serde_json::json!({
        "bench": "train",
        "backend": B::name(device),
        "model": a.model,
        "batch": a.batch,
        "seq": a.seq,
        "tokens_per_step": tokens_per_step,
        "steps": a.steps,
        "warmup_steps": a.warmup_steps,
        "threads": threads,
        "recipe": runners[0].name,
        "tokens_per_s": measured["tokens_per_s"],
        "mean_step_s": measured["mean_step_s"],
        "median_step_s": measured["median_step_s"],
        "cpu_utilisation": measured["cpu_utilisation"],
        "measured": measured,
    });
    if let Some(base) = runners.get(1) {
        let baseline = summary(&base.times, base.cpu_seconds, tokens_per_step);
        let ratio = |key: &str| {
            out["measured"][key].as_f64().unwrap_or(f64::NAN)
                / baseline[key].as_f64().unwrap_or(f64::NAN)
        };
        let (median, mean) = (ratio("median_step_s"), ratio("mean_step_s"));
        out["baseline_recipe"] = base.name.clone().into();
        out["baseline"] = baseline;
        out["ratio"] = median.into();
        out["ratio_mean"] = mean.into();
    }
    out["note"] = "step = forward + backward + recipe end of step + clip + AdamW; \
        times after warm-up; the recipes step alternately in one process; \
        ratio = median step time (recipe) / median step time (baseline); \
        cpu_utilisation = process CPU time / wall time, over the timed steps"
        .into();
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
