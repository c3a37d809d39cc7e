//! One module per subcommand; each has `Args` (clap) and `run`.

pub mod bench;
pub mod bench_train;
pub mod cast;
pub mod export;
pub mod formats;
pub mod logits;
pub mod model;
pub mod recipes;
pub mod report;
pub mod sharpness;
pub mod sweep;
pub mod train;
