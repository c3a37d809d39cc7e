//! `fp8`: measure how reduced floating-point precision changes LLM training stability.
//! Subcommands are declared in `app.rs`.

// `fp8_cli` links the built-in recipes (they register themselves with `inventory`).

fn main() -> std::process::ExitCode {
    fp8_cli::main()
}
