//! The `fp8` command line: argument parsing, dispatch and presentation. The training and sweep
//! engine is the `fp8-train` library; this crate turns flags into its configuration and renders
//! its progress. Third-party binaries (see `examples/custom-recipe`) call [`main`] to get the
//! whole CLI with their own recipes linked.

// Link the built-in recipes into every binary that runs `fp8_cli::main`: they register
// themselves with `inventory`, and an unreferenced crate would be dropped by the linker.
use fp8_recipes as _;

mod alloc;
mod app;
pub mod cmd;
pub mod progress;

pub use app::main;
