//! Argument parsing and dispatch for the `fp8` binary. Subcommands are listed in [`Command`];
//! each lives in its own module under `cmd/` with `Args` and `run`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "fp8", version, about, long_about = None, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the registered precision recipe kinds, or check recipe files.
    Recipes(crate::cmd::recipes::Args),
    /// Train a model under a precision recipe; writes TensorBoard events, checkpoints and
    /// summary.json into the run directory. Exit code 3 means the run diverged.
    Train(Box<crate::cmd::train::Args>),
    /// Run a grid of recipes × learning rates × seeds in parallel worker processes; resumable.
    Sweep(crate::cmd::sweep::Args),
    /// Write report.md and SVG plots (divergence rates, loss and sharpness curves) from a sweep
    /// directory's results.jsonl and its runs' curves.json.
    Report(crate::cmd::report::Args),
    /// Logit sharpness (Lee et al. 2024 §3.1) of a checkpoint on validation batches, as JSON;
    /// optionally dump the last-token logits and targets as .npy.
    Sharpness(crate::cmd::sharpness::Args),
    /// Logits of a Hugging Face checkpoint or a trained run for token ids from a .npy file,
    /// optionally under a recipe's forward casts; writes float32 .npy [B, T, V].
    Logits(crate::cmd::logits::Args),
    /// Export a run's trained model as a Hugging Face checkpoint (config.json and
    /// model.safetensors) that transformers loads.
    Export(crate::cmd::export::Args),
    /// Inspect a model config: parameter count, FLOPs per token, GEMM site names.
    Model(crate::cmd::model::Args),
    /// List the named number formats with their bias, range, epsilon and special values.
    Formats(crate::cmd::formats::Args),
    /// Quantize a float32 .npy file through a format (and scaling); writes float32 .npy.
    Cast(crate::cmd::cast::Args),
    /// Micro-benchmarks (`fp8 bench cast`).
    Bench(crate::cmd::bench::Args),
}

/// Parse the command line, run the subcommand, and turn errors into `error: …` and exit code 2.
/// Call it first thing in a binary's `main`: it sets allocator options before any thread exists.
pub fn main() -> ExitCode {
    crate::alloc::tune_malloc();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Recipes(a) => crate::cmd::recipes::run(a),
        Command::Train(a) => crate::cmd::train::run(*a),
        Command::Sweep(a) => crate::cmd::sweep::run(a),
        Command::Report(a) => crate::cmd::report::run(a),
        Command::Sharpness(a) => crate::cmd::sharpness::run(a),
        Command::Logits(a) => crate::cmd::logits::run(a),
        Command::Export(a) => crate::cmd::export::run(a),
        Command::Model(a) => crate::cmd::model::run(a),
        Command::Formats(a) => crate::cmd::formats::run(a),
        Command::Cast(a) => crate::cmd::cast::run(a),
        Command::Bench(a) => crate::cmd::bench::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
