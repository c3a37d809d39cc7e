//! `fp8 train`: train one model under one recipe.

use crate::progress::TrainProgress;
use fp8_train::backend::ComputeDtype;
use fp8_train::{train, TrainConfig};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code of a run that diverged (it still wrote its logs and summary).
pub const EXIT_DIVERGED: u8 = 3;

#[derive(clap::Args, Debug, Default)]
// A flag given twice takes its last value, so scripts can append overrides.
#[command(args_override_self = true)]
pub struct Args {
    /// Recipe file (RON), e.g. recipes/delayed_scaling.ron.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// A RON file holding any of the options below; flags given on the command line win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model preset (tiny, gpt2-mini, gpt2-124m, llama-120m, llama2-7b), model RON file, or hf:DIR
    /// (a Hugging Face checkpoint to fine-tune: architecture from config.json, weights loaded).
    #[arg(long)]
    pub model: Option<String>,
    /// Data: `synthetic[:vocab=V,order=K,tokens=N,seed=S]`, a text file or directory
    /// (byte-level), `bpe:PATH[:VOCAB]`, or a directory with nanoGPT train.bin/val.bin.
    #[arg(long)]
    pub data: Option<String>,
    /// Optimizer steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Tokens per sequence.
    #[arg(long)]
    pub seq: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warm-up steps.
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Learning rate at the end of the cosine decay.
    #[arg(long)]
    pub min_lr: Option<f64>,
    /// AdamW decoupled weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clip (0 turns it off).
    #[arg(long)]
    pub clip: Option<f64>,
    /// Micro-batches accumulated per optimizer step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Seed for initialization and data order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluate (validation loss, sharpness) every N steps.
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Log training scalars every N steps.
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Write a checkpoint every N steps.
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Estimate the Hessian's top eigenvalue every N steps (0 = never; costs up to 40
    /// forward+backward passes each), logged as `stability/hessian_top_eig`.
    #[arg(long)]
    pub hessian_every: Option<u64>,
    /// Log weight and gradient histograms every N steps (0 = never).
    #[arg(long)]
    pub histogram_every: Option<u64>,
    /// Validation batches per evaluation.
    #[arg(long)]
    pub eval_batches: Option<usize>,
    /// ε of the logit sharpness (the box is |y_i| ≤ ε(|x_i|+1)).
    #[arg(long)]
    pub sharpness_eps: Option<f64>,
    /// A loss above this multiple of the first loss counts as divergence (must be > 1).
    #[arg(long)]
    pub divergence_threshold: Option<f64>,
    /// Run directory (default runs/<recipe>-<model>-lr<lr>-s<seed>-<id>, where <id> is the hash
    /// of the resolved configuration).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue from the run directory's newest intact checkpoint, after checking that the
    /// directory holds a run with exactly these settings. Without it the directory must be new
    /// or empty.
    #[arg(long)]
    pub resume: bool,
    /// Device: cpu, or cuda:N when built with the `cuda` feature.
    #[arg(long)]
    pub device: Option<String>,
    /// burn's compute element type: f32, or bf16 (CUDA only; real bf16 compute, unlike the
    /// simulated recipes/bf16.ron).
    #[arg(long, default_value = "f32")]
    pub compute_dtype: ComputeDtype,
}

impl Args {
    /// Defaults, then `--config`, then flags.
    pub fn resolve(&self) -> anyhow::Result<TrainConfig> {
        let mut c = match &self.config {
            Some(path) => TrainConfig::from_file(path)?,
            None => TrainConfig::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = &self.$f { c.$f = v.clone(); })* };
        }
        set!(
            recipe,
            model,
            data,
            steps,
            batch,
            seq,
            lr,
            warmup,
            min_lr,
            weight_decay,
            clip
        );
        set!(
            grad_accum,
            seed,
            eval_every,
            log_every,
            checkpoint_every,
            hessian_every,
            device
        );
        set!(
            histogram_every,
            eval_batches,
            sharpness_eps,
            divergence_threshold
        );
        if let Some(d) = &self.run_dir {
            c.run_dir = Some(d.clone());
        }
        if self.recipe.is_none() && self.config.is_none() {
            anyhow::bail!("give a recipe: --recipe FILE.ron (see `fp8 recipes` and recipes/)");
        }
        Ok(c)
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = args.resolve()?;
    let dev = fp8_train::backend::train_device(&cfg.device, args.compute_dtype)?;
    let mut progress = TrainProgress::default();
    let summary = fp8_train::with_train_backend!(dev, |B, d| train::<B>(
        &cfg,
        &d,
        args.resume,
        &mut progress
    ))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(if summary.diverged() {
        ExitCode::from(EXIT_DIVERGED)
    } else {
        ExitCode::SUCCESS
    })
}
