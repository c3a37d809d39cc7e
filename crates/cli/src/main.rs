//! `fp8`: measure how reduced floating-point precision changes LLM training stability.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// Keep the built-in recipes linked: they register themselves with `inventory`.
use fp8_recipes as _;

#[derive(Parser)]
#[command(name = "fp8", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<ExitCode> = match cli.command {};
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
