//! `fp8`: measure how reduced floating-point precision changes LLM training stability.
//! Subcommands are declared in `app.rs`.

// Keep the built-in recipes linked: they register themselves with `inventory`.
use fp8_recipes as _;

fn main() -> std::process::ExitCode {
    fp8_cli::main()
}
