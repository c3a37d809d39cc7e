//! The `fp8` command line: training, sweeps, reports and format tools.
//!
//! The library half holds everything the subcommands share (data, logging, the training loop)
//! so integration tests and third-party binaries (see `examples/custom-recipe`) can drive it.

// Link the built-in recipes into every binary that runs `fp8_cli::main`: they register
// themselves with `inventory`, and an unreferenced crate would be dropped by the linker.
use fp8_recipes as _;

mod alloc;
mod app;
pub mod backend;
pub mod cmd;
pub mod hessian;
pub mod npy;
pub mod sweep;
pub mod train;

pub use app::main;
