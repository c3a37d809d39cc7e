//! The fp8 training and sweep engine as a library.
//!
//! - [`config`]: [`TrainConfig`], every option of a run, and its validation;
//! - [`setup`]: from a configuration to what a run needs (recipe, model, data, identity), all
//!   checked before any work;
//! - [`identity`]: what makes two runs the same run, and the check on every reuse of a run
//!   directory;
//! - [`train()`]: the loop ([`train`](mod@train)), with logging, evaluation ([`eval`]),
//!   checkpoints ([`checkpoint`]) and the summary as calls into [`session`]; progress goes to an
//!   [`Observer`];
//! - [`hessian`]: the loss Hessian's top eigenvalue;
//! - [`sweep`]: the grid of a sweep file, run in this process or as worker processes, with
//!   [`ladder`]s of formats expanded into recipes, and [`sweep_tb`]: its TensorBoard HParams and
//!   layout;
//! - [`backend`]: the burn backends training runs on.
//!
//! Train one run and a small sweep in-process:
//!
//! ```
//! use fp8_train::backend::CpuTrain;
//! use fp8_train::sweep::{run_in_process, Shard, SweepFile};
//! use fp8_train::{train, Silent, TrainConfig};
//!
//! # fn main() -> anyhow::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! # let recipes = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
//! let cfg = TrainConfig {
//!     recipe: recipes.join("bit_reduction_e8m4.ron"),
//!     model: "tiny".into(),
//!     data: "synthetic:vocab=64,order=1,tokens=20000".into(),
//!     steps: 4,
//!     batch: 4,
//!     seq: 16,
//!     warmup: 1,
//!     run_dir: Some(dir.path().join("one-run")),
//!     ..TrainConfig::default()
//! };
//! let device = Default::default();
//! let summary = train::<CpuTrain>(&cfg, &device, false, &mut Silent)?;
//! assert_eq!(summary.steps, 4);
//!
//! // The same settings as a sweep over two recipes and two seeds.
//! let sweep = SweepFile {
//!     recipes: vec![recipes.join("fp32.ron"), recipes.join("bit_reduction_e8m4.ron")],
//!     learning_rates: vec![3e-3],
//!     seeds: vec![0, 1],
//!     steps: 4,
//!     models: vec!["tiny".into()],
//!     data: vec![cfg.data.clone()],
//!     baseline: None,
//!     train: Some(cfg.clone()),
//!     ..SweepFile::default()
//! };
//! let out = dir.path().join("sweep");
//! let report = run_in_process::<CpuTrain>(&sweep, &out, Shard::all(), &device, &mut Silent)?;
//! assert_eq!((report.finished, report.failed.len()), (4, 0));
//! let results = fp8_stats::results::read_results(&out.join("results.jsonl"))?;
//! assert_eq!(results.results.len(), 4);
//! # Ok(())
//! # }
//! ```
//!
//! [`sweep::run_workers`] runs the same grid as worker processes of an `fp8` binary instead.

// Link the built-in recipes into every program that trains through this crate: they register
// themselves with `inventory`, and an unreferenced crate would be dropped by the linker.
use fp8_recipes as _;

pub mod backend;
pub mod checkpoint;
pub mod claim;
pub mod config;
pub mod diagnostics;
pub mod eval;
pub mod hessian;
pub mod identity;
pub mod ladder;
pub mod observer;
pub mod optim;
pub mod parallel;
mod params;
pub mod recipe_check;
pub mod session;
pub mod setup;
pub mod step;
pub mod sweep;
pub mod sweep_tb;
pub mod train;

pub use config::TrainConfig;
pub use eval::{eval_batches, EvalBatch};
pub use fp8_stats::results::{Curves, Outcome, Summary};
pub use observer::{Observer, Silent};
pub use step::{gradients, logs_at, optimizer_step};
pub use train::train;
