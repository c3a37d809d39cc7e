//! `fp8 logits --model hf:DIR|RUN_DIR --tokens IN.npy OUT.npy [--recipe R]`: the model's logits
//! for given token ids, to compare with another implementation or to study what a recipe does
//! to a trained model's outputs.
//!
//! `IN.npy` holds int32 or int64 token ids `[B, T]` (T at most the model's context, every id
//! below its vocabulary size); `OUT.npy` gets float32 logits `[B, T, V]`. The model is a
//! Hugging Face checkpoint (`hf:DIR`) or a run directory / checkpoint directory of `fp8 train`
//! (its model as saved). Without `--recipe` the forward pass is plain f32; with one, every GEMM
//! of the forward pass is cast as that recipe casts it in evaluation (the recipe's state as at
//! step 0: delayed scaling's scales are 1 before any history). Runs on the CPU.

use anyhow::{bail, ensure, Context};
use burn::tensor::{Int, Tensor, TensorData};
use fp8_core::context::activate;
use fp8_core::{Precision, PrecisionContext};
use fp8_models::{Model, ModelConfig};
use std::path::PathBuf;
use std::process::ExitCode;

/// The forward pass's backend: the CPU backend behind the precision decorator, which casts
/// nothing unless a recipe's context is active.
type Fwd = Precision<fp8_train::backend::Cpu>;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// hf:DIR (a Hugging Face checkpoint), or a run directory / checkpoints/step-N directory.
    #[arg(long)]
    pub model: String,
    /// Token ids: an int32 or int64 .npy file of shape [B, T].
    #[arg(long)]
    pub tokens: PathBuf,
    /// Where to write the logits: float32 .npy of shape [B, T, vocab].
    pub out: PathBuf,
    /// Cast the forward GEMMs as this recipe file does (default: no casts, f32).
    #[arg(long)]
    pub recipe: Option<PathBuf>,
}

/// The model `spec` names, with its configuration.
fn load(spec: &str) -> anyhow::Result<(Model<Fwd>, ModelConfig)> {
    let device = Default::default();
    if let Some(dir) = fp8_models::hf::spec_dir(spec) {
        let model =
            Model::<Fwd>::load_hf(dir, &device).with_context(|| format!("--model {spec}"))?;
        let config = model.config.clone();
        return Ok((model, config));
    }
    let dir = PathBuf::from(spec);
    if !dir.is_dir() {
        bail!(
            "--model {spec}: expected hf:DIR (a Hugging Face checkpoint) or a run directory of \
             fp8 train, and {spec} is not a directory"
        );
    }
    let saved = crate::cmd::export::load_run_model::<Fwd>(&dir, &device)
        .with_context(|| format!("--model {spec}"))?;
    Ok((saved.model, saved.config))
}

/// The token ids of `--tokens`, checked against the model: `[B, T]` with `T` within the
/// context and every id within the vocabulary.
fn read_tokens(args: &Args, cfg: &ModelConfig) -> anyhow::Result<([usize; 2], Vec<i64>)> {
    let path = args.tokens.display();
    let a = fp8_io::npy::read_ints(&args.tokens).with_context(|| format!("--tokens {path}"))?;
    let &[b, t] = a.shape.as_slice() else {
        bail!(
            "--tokens {path}: shape {:?}; expected two dimensions [batch, tokens]",
            a.shape
        );
    };
    ensure!(
        b > 0 && t > 0,
        "--tokens {path}: shape [{b}, {t}] is empty; expected at least one token"
    );
    ensure!(
        t <= cfg.context,
        "--tokens {path}: {t} tokens per sequence exceed the model's context of {}",
        cfg.context
    );
    if let Some((i, &id)) = a
        .data
        .iter()
        .enumerate()
        .find(|(_, &id)| id < 0 || id >= cfg.vocab_size as i64)
    {
        bail!(
            "--tokens {path}: id {id} at [{}, {}] is outside the vocabulary 0..{}",
            i / t,
            i % t,
            cfg.vocab_size
        );
    }
    Ok(([b, t], a.data))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (model, cfg) = load(&args.model)?;
    let (shape, ids) = read_tokens(&args, &cfg)?;
    // With a recipe, its context is active for the forward pass, with recording off (as in
    // evaluation: no telemetry, no scaling-state updates).
    let _active = match &args.recipe {
        Some(path) => {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--recipe {origin}: cannot read the file"))?;
            fp8_train::recipe_check::check(&text, &origin, &cfg.sites())?;
            let recipe = fp8_core::recipe::from_ron_str(&text, &origin)?;
            let mut ctx = PrecisionContext::for_sites(recipe, &cfg.sites())?;
            ctx.set_recording(false);
            Some(activate(ctx.shared()))
        }
        None => None,
    };
    let device = Default::default();
    let tokens = Tensor::<Fwd, 2, Int>::from_data(TensorData::new(ids, shape), &device);
    let logits = model.forward(tokens);
    let dims = logits.dims();
    let data = logits
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading the logits back: {e:?}"))?;
    fp8_io::npy::write(
        &args.out,
        &fp8_io::npy::Array {
            shape: dims.to_vec(),
            data,
        },
    )?;
    eprintln!(
        "wrote {} (float32 {:?})",
        args.out.display(),
        [dims[0], dims[1], dims[2]]
    );
    Ok(ExitCode::SUCCESS)
}
