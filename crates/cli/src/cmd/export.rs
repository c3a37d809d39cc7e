//! `fp8 export --checkpoint RUN_DIR --hf OUT_DIR`: a run's trained model as a Hugging Face
//! checkpoint (`config.json` and an F32 `model.safetensors`) that `transformers` loads as
//! `GPT2LMHeadModel` or `LlamaForCausalLM`.
//!
//! `RUN_DIR` is a run directory (its newest intact checkpoint is used) or one of its
//! `checkpoints/step-NNNNNNNN/` directories, as for `fp8 sharpness`. The architecture is the
//! run's `model.ron`. Models the HF classes cannot express (QK-norm, grouped-query attention on
//! GPT-2) are refused before anything is written.

use anyhow::{bail, Context};
use burn::module::Module;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::Backend;
use fp8_models::{Model, ModelConfig};
use fp8_train::TrainConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run directory (uses its newest intact checkpoint) or a checkpoints/step-N directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The directory to write config.json and model.safetensors into (created; must be empty
    /// if it exists).
    #[arg(long)]
    pub hf: PathBuf,
}

/// A model saved by `fp8 train`, with where it came from.
pub struct SavedModel<B: Backend> {
    pub model: Model<B>,
    pub config: ModelConfig,
    /// The checkpoint directory the weights were read from.
    pub checkpoint: PathBuf,
    /// Its optimizer step.
    pub step: u64,
}

/// The model in a run directory's newest intact checkpoint, or in one checkpoint directory.
pub fn load_run_model<B: Backend>(dir: &Path, device: &B::Device) -> anyhow::Result<SavedModel<B>> {
    let (run_dir, ckpt, state) = crate::cmd::sharpness::locate(dir)?;
    let model_file = run_dir.join("model.ron");
    let config = if model_file.is_file() {
        ModelConfig::from_preset_or_file(&model_file.to_string_lossy())?
    } else {
        // Runs keep their resolved model in model.ron; older ones only name it.
        let cfg = TrainConfig::from_file(&run_dir.join("config.ron"))?;
        ModelConfig::from_preset_or_file(&cfg.model)?
    };
    let record = BinFileRecorder::<FullPrecisionSettings>::new()
        .load(ckpt.join("model"), device)
        .with_context(|| format!("loading the model from {}", ckpt.display()))?;
    Ok(SavedModel {
        model: config.init::<B>(device).load_record(record),
        config,
        checkpoint: ckpt,
        step: state.step,
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.hf.exists() {
        let full = std::fs::read_dir(&args.hf)
            .with_context(|| format!("--hf {}: cannot read the directory", args.hf.display()))?
            .next()
            .is_some();
        if full {
            bail!(
                "--hf {}: the directory is not empty; export into a new or empty directory",
                args.hf.display()
            );
        }
    }
    let saved = load_run_model::<fp8_train::backend::Cpu>(&args.checkpoint, &Default::default())?;
    saved
        .model
        .export_hf(&args.hf)
        .with_context(|| format!("--hf {}", args.hf.display()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "checkpoint": saved.checkpoint.display().to_string(),
            "step": saved.step,
            "hf": args.hf.display().to_string(),
            "files": ["config.json", "model.safetensors"],
        }))?
    );
    Ok(ExitCode::SUCCESS)
}
