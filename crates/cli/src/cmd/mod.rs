//! One module per subcommand; each has `Args` (clap) and `run`.

pub mod recipes;
pub mod train;
pub mod sweep;
pub mod formats;
pub mod cast;
pub mod bench;
pub mod model;
