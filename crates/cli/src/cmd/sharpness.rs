//! `fp8 sharpness --checkpoint DIR`: the paper's logit sharpness of a saved model.
//!
//! `DIR` is a run directory (its latest checkpoint is used) or one of its
//! `checkpoints/step-NNNNNNNN/` directories. The run's `config.ron` gives the data, batch and
//! sequence length, `model.ron` the architecture and `recipe.ron` the casts; the checkpoint's
//! `state.json` restores the recipe's scaling state and step, so the forward casts are the ones
//! the run's own evaluation at that step would make. The batches are the trainer's validation
//! batches 0..N (`Batcher::val_batch` with the run's seed), evaluated by the trainer's
//! [`eval_batches`](fp8_train::eval_batches).
//!
//! Prints one JSON object. With `--dump-logits FILE.npy` it also writes the last-token logits as
//! float32 `[n, V]` (n = batches × batch, sequences in batch order) to `FILE.npy`, and their
//! target token ids to `FILE.targets.npy` as float32 `[n]` (exact integers: every vocabulary here
//! is far below 2^24), so the number can be checked in NumPy:
//!
//! ```python
//! from scipy.special import logsumexp
//! x = np.load("l.npy").astype(np.float64); t = np.load("l.targets.npy").astype(np.int64)
//! f = lambda x: logsumexp(x, axis=1) - x[np.arange(len(t)), t]
//! y = x + eps * (abs(x) + 1); y[np.arange(len(t)), t] = x[np.arange(len(t)), t] - eps * (abs(x[np.arange(len(t)), t]) + 1)
//! phi = (100 * (f(y) - f(x)) / (1 + f(x))).mean()
//! ```

use anyhow::{bail, Context};
use burn::module::Module;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use fp8_core::context::activate;
use fp8_core::FusedAutodiffBackend;
use fp8_core::PrecisionContext;
use fp8_io::data::{Batcher, DataSpec};
use fp8_models::{Model, ModelConfig};
use fp8_train::checkpoint::{self, LoopState};
use fp8_train::{eval_batches, TrainConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run directory (uses its latest checkpoint) or a checkpoints/step-N directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Box size ε (default: the run's `sharpness_eps`).
    #[arg(long)]
    pub eps: Option<f64>,
    /// Validation batches to evaluate (default: the run's `eval_batches`).
    #[arg(long)]
    pub batches: Option<usize>,
    /// Write the last-token logits (float32 [n, V]) here, and the targets beside it as
    /// FILE.targets.npy (float32 [n], integer ids).
    #[arg(long)]
    pub dump_logits: Option<PathBuf>,
    /// Device: cpu, cuda:N (built with `--features cuda`) or wgpu[:N] (`--features wgpu`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// What `fp8 sharpness` prints.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub checkpoint: String,
    /// The checkpoint's step (optimizer steps taken).
    pub step: u64,
    pub recipe: String,
    pub eps: f64,
    pub batches: usize,
    /// Sequences (last tokens) averaged over.
    pub sequences: usize,
    /// Mean logit sharpness φ over those sequences.
    pub sharpness: f64,
    /// φ of each batch.
    pub sharpness_per_batch: Vec<f64>,
    /// Mean validation loss of the same batches (every position).
    pub val_loss: f64,
    /// Files written by `--dump-logits`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dumped: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let device =
        fp8_train::backend::train_device(&args.device, fp8_train::backend::ComputeDtype::F32)?;
    let report = fp8_train::with_train_backend!(device, |B, d| measure::<B>(&args, &d))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// The run directory and checkpoint directory `dir` names.
pub(crate) fn locate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, LoopState)> {
    if dir.join("config.ron").is_file() {
        let Some((ckpt, state)) = checkpoint::latest(dir)? else {
            bail!(
                "{} has no checkpoint (checkpoints/latest is missing)",
                dir.display()
            );
        };
        return Ok((dir.to_path_buf(), ckpt, state));
    }
    let state_file = dir.join("state.json");
    if state_file.is_file() {
        let run = dir
            .parent()
            .and_then(Path::parent)
            .filter(|r| r.join("config.ron").is_file())
            .with_context(|| {
                format!(
                    "{} looks like a checkpoint, but two levels up there is no run directory \
                     with config.ron",
                    dir.display()
                )
            })?;
        let state = checkpoint::verify(dir)?;
        return Ok((run.to_path_buf(), dir.to_path_buf(), state));
    }
    bail!(
        "{} is neither a run directory (with config.ron) nor a checkpoint (with state.json)",
        dir.display()
    )
}

fn measure<B: FusedAutodiffBackend>(args: &Args, device: &B::Device) -> anyhow::Result<Report> {
    let (run_dir, ckpt, state) = locate(&args.checkpoint)?;
    let mut cfg = TrainConfig::from_file(&run_dir.join("config.ron"))?;
    let recipe_name = cfg.recipe_name();
    // The run keeps a copy of its recipe and model; prefer them to paths that may have moved.
    let recipe_file = run_dir.join("recipe.ron");
    if recipe_file.is_file() {
        cfg.recipe = recipe_file;
    }
    let model_file = run_dir.join("model.ron");
    let model_cfg = if model_file.is_file() {
        ModelConfig::from_preset_or_file(&model_file.to_string_lossy())?
    } else {
        ModelConfig::from_preset_or_file(&cfg.model)?
    };
    if let Some(n) = args.batches {
        anyhow::ensure!(n > 0, "--batches must be at least 1");
        cfg.eval_batches = n;
    }
    let eps = args.eps.unwrap_or(cfg.sharpness_eps);
    anyhow::ensure!(
        eps.is_finite() && eps > 0.0,
        "--eps {eps}: must be a finite number > 0"
    );
    let data = DataSpec::parse(&cfg.data)?.load()?;

    let recipe = fp8_core::recipe::from_file(&cfg.recipe)?;
    let ctx = PrecisionContext::for_sites(recipe, &model_cfg.sites())?.shared();
    {
        let mut c = ctx.lock().unwrap_or_else(|p| p.into_inner());
        c.recipe_mut().restore(state.recipe_state.clone())?;
        c.set_step(state.step);
    }
    let _active = activate(ctx.clone());

    let model: Model<B> = model_cfg.init(device);
    let record = BinFileRecorder::<FullPrecisionSettings>::new()
        .load(ckpt.join("model"), device)
        .with_context(|| format!("loading the model from {}", ckpt.display()))?;
    let model = model.load_record(record);

    let batches = eval_batches(
        &model,
        &data.val,
        &Batcher::new(cfg.seed),
        &cfg,
        cfg.eval_batches,
        device,
        &ctx,
    )?;
    let per_batch: Vec<f64> = batches
        .iter()
        .map(|b| fp8_stats::sharpness::mean_sharpness(&b.last_logits, &b.last_targets, eps))
        .collect();
    let n = batches.len() as f64;
    let sequences: usize = batches.iter().map(|b| b.last_targets.len()).sum();

    let mut dumped = Vec::new();
    if let Some(path) = &args.dump_logits {
        let logits: Vec<f32> = batches.iter().flat_map(|b| b.last_logits.clone()).collect();
        let vocab = logits.len() / sequences.max(1);
        fp8_io::npy::write(
            path,
            &fp8_io::npy::Array {
                shape: vec![sequences, vocab],
                data: logits,
            },
        )?;
        let targets_path = targets_path(path);
        fp8_io::npy::write(
            &targets_path,
            &fp8_io::npy::Array {
                shape: vec![sequences],
                data: batches
                    .iter()
                    .flat_map(|b| b.last_targets.iter().map(|&t| t as f32))
                    .collect(),
            },
        )?;
        dumped = vec![
            path.display().to_string(),
            targets_path.display().to_string(),
        ];
    }

    Ok(Report {
        checkpoint: ckpt.display().to_string(),
        step: state.step,
        recipe: recipe_name,
        eps,
        batches: batches.len(),
        sequences,
        sharpness: per_batch.iter().sum::<f64>() / n,
        sharpness_per_batch: per_batch,
        val_loss: batches.iter().map(|b| b.loss).sum::<f64>() / n,
        dumped,
    })
}

/// `FILE.npy` → `FILE.targets.npy`.
pub fn targets_path(logits: &Path) -> PathBuf {
    let stem = logits
        .file_stem()
        .map_or_else(|| "logits".into(), |s| s.to_string_lossy().into_owned());
    logits.with_file_name(format!("{stem}.targets.npy"))
}
